#!/usr/bin/env bash
# Throwaway local redis-servers for demos and manual testing.
#
#   scripts/redis-local.sh start N DIR   start N servers on free 127.0.0.1 ports (no persistence);
#                                        DIR/ports gets one port per line, DIR/redis-<i>.pid the pids,
#                                        DIR/redis-<i>.log the logs. Returns once each answers PING.
#   scripts/redis-local.sh stop DIR      stop exactly the servers recorded in DIR (SIGTERM, then
#                                        SIGKILL after a grace period) and remove their pid files.
#
# REDIS_SERVER / REDIS_CLI override the binaries (default: from PATH). Without redis-cli the PING is
# sent through bash's /dev/tcp.
set -euo pipefail

REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
START_TIMEOUT_S=${REDIS_LOCAL_START_TIMEOUT_S:-10}
STOP_TIMEOUT_S=${REDIS_LOCAL_STOP_TIMEOUT_S:-5}

die() { echo "redis-local.sh: $*" >&2; exit 1; }
usage() { die "usage: $0 start N DIR | stop DIR"; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if a Redis server on 127.0.0.1:$1 answers PING.
answers_ping() {
  local port=$1 reply=""
  if command -v "$REDIS_CLI" >/dev/null 2>&1; then
    reply=$(timeout 2 "$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null) || return 1
  else
    # shellcheck disable=SC2016 # $0 is expanded by the inner bash
    reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "PING\r\n" >&3 &&
                               IFS= read -r line <&3 && printf "%s" "$line"' "$port" 2>/dev/null) ||
      return 1
    reply=${reply%$'\r'}
  fi
  [[ $reply == PONG || $reply == +PONG ]]
}

# True while pid $1 exists and is not a zombie.
alive() {
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Starts server number $1 in $2; prints its port. Retries with another port if the chosen one was
# taken in the meantime (the server then exits at once).
start_one() {
  local i=$1 dir=$2 port pid deadline
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_in_use "$port" && continue
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
      --dir "$dir" </dev/null >>"$dir/redis-$i.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/redis-$i.pid"
    deadline=$(( SECONDS + START_TIMEOUT_S ))
    while alive "$pid" && (( SECONDS < deadline )); do
      if answers_ping "$port"; then
        echo "$port"
        return 0
      fi
      sleep 0.05  # poll interval; the deadline bounds the wait
    done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$dir/redis-$i.pid"
      die "redis-server $i (pid $pid) did not answer PING on port $port within ${START_TIMEOUT_S}s; see $dir/redis-$i.log"
    fi
    rm -f "$dir/redis-$i.pid"  # exited at once: most likely the port was taken; try another
  done
  die "could not start redis-server $i; see $dir/redis-$i.log"
}

cmd_start() {
  local n=$1 dir=$2 i port
  [[ $n =~ ^[1-9][0-9]*$ ]] || usage
  command -v "$REDIS_SERVER" >/dev/null 2>&1 ||
    die "$REDIS_SERVER not found (apt-get install redis-server, or set REDIS_SERVER)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  ls "$dir"/redis-*.pid >/dev/null 2>&1 && die "$dir already has running servers; stop them first"
  : >"$dir/ports"
  for (( i = 1; i <= n; i++ )); do
    if ! port=$(start_one "$i" "$dir"); then
      cmd_stop "$dir"
      exit 1
    fi
    echo "$port" >>"$dir/ports"
    echo "redis-server $i: 127.0.0.1:$port (pid $(cat "$dir/redis-$i.pid"))"
  done
}

cmd_stop() {
  local dir=$1 f pid deadline
  [[ -d $dir ]] || return 0
  for f in "$dir"/redis-*.pid; do
    [[ -e $f ]] || continue
    pid=$(cat "$f")
    # Only signal the pid if it is still the redis-server we started (pids get reused).
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
       tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server; then
      kill -TERM "$pid" 2>/dev/null || true
      deadline=$(( SECONDS + STOP_TIMEOUT_S ))
      while alive "$pid" && (( SECONDS < deadline )); do sleep 0.05; done
      if alive "$pid"; then
        echo "redis-local.sh: pid $pid ignored SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$f"
  done
}

case "${1:-}" in
  start) [[ $# -eq 3 ]] || usage; cmd_start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
  *) usage ;;
esac
