#!/usr/bin/env bash
# The test suite (offline). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
python -m pytest -q "$@"
