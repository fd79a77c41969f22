#!/usr/bin/env bash
# Builds rlock-demo and runs it against three throwaway local redis-servers.
#
#   scripts/demo.sh            (from any directory; on a fresh Debian 12 machine)
#
# 1. scripts/deps.sh, if present, installs the build dependencies and redis-server;
# 2. configures and builds the rlock-demo target into build/ (RLOCK_BUILD_DIR overrides the place);
# 3. starts 3 redis-servers on free loopback ports in a temporary directory (stopped again on exit);
# 4. runs build/examples/rlock-demo over the three and exits with its status.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${RLOCK_BUILD_DIR:-$ROOT/build}

if [[ -f $ROOT/scripts/deps.sh ]]; then
  echo "== scripts/deps.sh"
  bash "$ROOT/scripts/deps.sh"
fi

echo "== build ($BUILD)"
cmake -S "$ROOT" -B "$BUILD" -DRLOCK_BUILD_EXAMPLES=ON
cmake --build "$BUILD" -j"$(nproc)" --target rlock-demo

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rlock-demo.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  "$ROOT/scripts/redis-local.sh" stop "$RUN_DIR" || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== starting 3 local redis-servers"
"$ROOT/scripts/redis-local.sh" start 3 "$RUN_DIR"
URIS=()
while read -r port; do
  URIS+=("redis://127.0.0.1:$port")
done <"$RUN_DIR/ports"

echo "== $BUILD/examples/rlock-demo ${URIS[*]}"
status=0
"$BUILD/examples/rlock-demo" "${URIS[@]}" || status=$?
exit "$status"
