#!/usr/bin/env bash
# Installs the Debian packages needed to build rlock, run all its tests and run the demo.
# Idempotent: does nothing (and needs no network) when everything is already installed; otherwise
# runs `apt-get update` once and installs only what is missing. Non-interactive, so it works in CI.
#
# No test uses a system Redis: the test fixtures start their own redis-server processes on free
# ports. redis-server is installed for its binary only, and its service is not started where no
# init system runs (a container or CI machine), see below.
set -euo pipefail

packages=(
  build-essential  # gcc, g++, make
  cmake
  pkg-config
  binutils         # nm, readelf (packaging tests)
  libhiredis-dev
  libuv1-dev
  catch2           # Catch2 2.x, the test framework
  redis-server     # started by the test fixtures themselves
  python3          # the Python binding and demo
  abigail-tools    # abidw/abidiff: the ABI guard (tests/packaging, RLOCK_ABI_CHECK)
)

installed() { # <package>
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)" = "ii " ]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "deps: missing ${missing[*]}; run this script as root or install sudo" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Without a running systemd, installing redis-server would start a Redis daemon on port 6379
# through its init script (or fail trying, failing the install). Nothing here wants that service,
# so while apt runs, a policy-rc.d (Debian's mechanism for it, see invoke-rc.d(8)) denies service
# starts, unless one is already there. With systemd running, the package behaves as usual.
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
  if [ "$own_policy" -eq 1 ]; then
    "${sudo[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT
if [ ! -d /run/systemd/system ] && [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# written by rlock scripts/deps.sh while it installs packages\nexit 101\n' \
    | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
fi

"${sudo[@]}" apt-get update -q </dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null

still=()
for p in "${missing[@]}"; do
  installed "$p" || still+=("$p")
done
if [ "${#still[@]}" -ne 0 ]; then
  echo "deps: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
echo "deps: installed ${missing[*]}"
