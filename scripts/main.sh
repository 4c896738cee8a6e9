#!/usr/bin/env bash
# The main job on the embedded default: build the default track, generate and score the
# baselines, render the leaderboard. Extra arguments go to `plateau main`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
plateau main "$@"
