#!/usr/bin/env bash
# Longer run of the quorum safety test under faults (CI runs it for 15 s):
#   scripts/chaos.sh [SECONDS]      (default 300)
# Builds if needed, then runs tests/quorum/test_chaos.cpp against 5 local redis-servers while a
# random minority is killed (restarted after the TTL) or paused; fails on any overlap of holders or
# fencing-token regression.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target test_chaos
RLOCK_CHAOS_SECONDS="${1:-300}" build/tests/test_chaos --success=false
