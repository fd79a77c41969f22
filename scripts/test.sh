#!/usr/bin/env bash
# Runs all of rlock's tests: installs the dependencies (scripts/deps.sh), configures and builds
# into build/ (RelWithDebInfo) and runs ctest; exits with ctest's status. Works from any directory.
# Extra arguments go to ctest, e.g. `scripts/test.sh -R packaging`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRLOCK_BUILD_TESTS=ON
cmake --build build -j"$(nproc)"
exec ctest --test-dir build --output-on-failure -j2 "$@"
