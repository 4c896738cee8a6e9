#!/usr/bin/env bash
# The test suite (offline), without the tests marked slow (under 15 min on 2 cores). Extra
# arguments go to pytest: `-m ""` runs every test (the slow ones too), `-m slow` only those.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
python -m pytest -q -m "not slow" "$@"
