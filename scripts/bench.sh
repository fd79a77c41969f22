#!/usr/bin/env bash
# Runs rlock's benchmark suite and rewrites docs/benchmarks.md and docs/bench-latency.png.
#
#   scripts/bench.sh            full suite (~4 minutes): rlock and raw hiredis (S1-S5), then the
#                               peers node-redlock and redis-py on the same servers, then S1/S2
#                               again pinned to one CPU
#   scripts/bench.sh --smoke    the C/C++ scenarios only, briefly; exit 1 on any error or overlap
#   scripts/bench.sh ARGS...    extra ARGS go to rlock-bench (see `rlock-bench --help`), e.g.
#                               --scenarios S1,S2 --iters 5000; docs/ is then left alone unless
#                               --docs is given as well
#
# Installs what it needs: the build dependencies (scripts/deps.sh), Debian's python3-redis and
# python3-matplotlib, node/npm if missing, and the npm packages pinned in bench/node/package-lock.json
# into bench/node/node_modules. Builds into build-bench/ (RLOCK_BENCH_BUILD_DIR to change). Results:
# bench/results/results.json and results.md. Exits with rlock-bench's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
docs=auto
args=()
for a in "$@"; do
  case "$a" in
    --smoke) smoke=1 ;;
    --docs) docs=yes ;;
    --no-docs) docs=no ;;
    *) args+=("$a") ;;
  esac
done
if [ "$docs" = auto ]; then
  if [ "${#args[@]}" -eq 0 ] && [ "$smoke" -eq 0 ]; then docs=yes; else docs=no; fi
fi

bash scripts/deps.sh

build="${RLOCK_BENCH_BUILD_DIR:-build-bench}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRLOCK_BUILD_BENCH=ON >/dev/null
cmake --build "$build" --target rlock-bench -j"$(nproc)"
bench_bin="$build/bench/rlock-bench"
export RLOCK_REDIS_SERVER="${RLOCK_REDIS_SERVER:-$(command -v redis-server)}"

if [ "$smoke" -eq 1 ]; then
  exec "$bench_bin" --smoke "${args[@]}"
fi

# ---- peers and the report's tools ---------------------------------------------------------------
apt_install() { # <package>...: installs those not yet installed
  local missing=()
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)" = "ii " ] || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "bench: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q </dev/null
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}
# Debian's python, which sees python3-redis and python3-matplotlib (not a pyenv or venv one).
py=/usr/bin/python3
apt_install python3-redis python3-matplotlib
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm

peers=()
if (cd bench/node && npm ci --no-audit --no-fund --loglevel=error); then
  peers+=(--peer "node bench/peers/node_redlock.js")
else
  echo "bench: npm ci failed; running without node-redlock" >&2
fi
if "$py" -c 'import redis' 2>/dev/null; then
  peers+=(--peer "$py bench/peers/redis_py_lock.py")
else
  echo "bench: python3-redis missing; running without redis-py" >&2
fi

read -r load1 _ </proc/loadavg
echo "bench: load average $load1 before the run (other work on the machine skews the numbers)"

mkdir -p bench/results
status=0
"$bench_bin" --json bench/results/results.json "${peers[@]}" "${args[@]}" || status=$?
one_cpu=()
if [ "$docs" = yes ] && command -v taskset >/dev/null; then
  # S1/S2 again with everything on one CPU: on a small VM, where the scheduler puts the caller
  # relative to redis-server changes the raw baseline by ~3x (idle-vCPU wake-ups); see the doc.
  rm -f bench/results/one-cpu.json
  taskset -c 0 "$bench_bin" --scenarios S1,S2 --iters 5000 --json bench/results/one-cpu.json \
    || status=$?
  one_cpu=(--one-cpu bench/results/one-cpu.json)
fi

"$py" bench/render.py bench/results/results.json --markdown bench/results/results.md \
  --plot bench/results/bench-latency.png --command "scripts/bench.sh"
if [ "$docs" = yes ]; then
  "$py" bench/render.py bench/results/results.json --markdown docs/benchmarks.md \
    --plot docs/bench-latency.png --notes bench/notes.md "${one_cpu[@]}" --command "scripts/bench.sh"
  echo "bench: wrote docs/benchmarks.md and docs/bench-latency.png"
fi
echo "bench: results in bench/results/ (results.json, results.md); rlock-bench exit status $status"
exit "$status"
