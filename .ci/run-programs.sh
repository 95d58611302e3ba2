#!/usr/bin/env bash
# Programs that are not Go, from Debian's packages, under `molt run`:
# gunicorn (which takes its sockets from LISTEN_FDS) and python3's
# http.server (wrapped in .ci/run-programs/httpserver.py to serve the
# inherited sockets; readiness by an HTTP probe). wrk loads each with
# keep-alive and with `Connection: close` clients while the program is
# upgraded UPGRADES times (default 50) by `molt upgrade`, and, in the same
# run, while the same program is stopped and started RESTARTS times
# (default 5). wrk
# counts failed requests by kind: connect, read, write and timeout errors,
# and non-2xx answers. Prints a Markdown table (also to $RESULTS if set).
# Fails if a request failed under molt run, or an upgrade failed.
# Installs gunicorn, wrk, python3 and curl with apt-get if missing (run it
# as root, or with sudo available); idempotent. Needs Go to build molt.
set -euo pipefail
. "$(dirname "$0")/need.sh" # before the cd: $0 may be relative
cd "$(dirname "$0")/.."
UPGRADES=${UPGRADES:-50}
# A stop/start fails requests by the thousand while wrk retries refused
# connections in a tight loop, which starves the restarting program on a
# small machine: fewer of them are enough for the comparison.
RESTARTS=${RESTARTS:-5}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}

need gunicorn:gunicorn wrk:wrk python3:python3 curl:curl

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/molt" ./cmd/molt
molt="$work/molt"
progs="$PWD/.ci/run-programs"
mkdir -p "$work/www"
echo "ok" >"$work/www/index.html"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # URL: wait up to 60 s for a 2xx answer
  for _ in $(seq 600); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

# The command line of each program: under molt run (the socket and the
# readiness probe molt run's), and on its own (binding PORT itself).
gunicorn_args=(--chdir "$progs" --workers 4 --graceful-timeout 20 --log-level warning app:app)
molt_cmd() { # PROGRAM PORT SOCK
  case $1 in
  gunicorn) echo "$molt" run --listen "web=tcp://127.0.0.1:$2" --control "$3" --ready http://instance/healthz --drain 30s \
    --log-level warn -- gunicorn "${gunicorn_args[@]}" ;;
  http.server) echo "$molt" run --listen "web=tcp://127.0.0.1:$2" --control "$3" --ready http://instance/healthz --drain 30s \
    --log-level warn -- python3 "$progs/httpserver.py" ;;
  esac
}
plain_cmd() { # PROGRAM PORT
  case $1 in
  gunicorn) echo gunicorn --bind "127.0.0.1:$2" "${gunicorn_args[@]}" ;;
  http.server) echo python3 "$progs/httpserver.py" "$2" ;;
  esac
}

# stop PID: SIGTERM, and SIGKILL after 30 s, as systemd's TimeoutStopSec=
# would (the stop/start comparison; molt run's --drain does the same).
stop() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

rows=()
molt_failed=0

# run_case PROGRAM METHOD CLIENT: METHOD is "molt run" or "stop/start",
# CLIENT "keep-alive" or "close".
run_case() {
  local prog=$1 method=$2 client=$3
  local port sock pid wrkpid out failed_upgrades=0
  port=$(free_port)
  sock="$work/c.sock"
  rm -f "$sock"
  out="$work/wrk.out"
  (cd "$work/www" && if [ "$method" = "molt run" ]; then exec $(molt_cmd "$prog" "$port" "$sock"); else exec $(plain_cmd "$prog" "$port"); fi) \
    >>"$work/programs.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$port/"
  local header=()
  if [ "$client" = "close" ]; then header=(-H "Connection: close"); fi
  wrk -t"$THREADS" -c"$CONNS" -d3600s "${header[@]}" "http://127.0.0.1:$port/" >"$out" 2>&1 &
  wrkpid=$!
  sleep 1
  local n=$UPGRADES
  if [ "$method" = "stop/start" ]; then n=$RESTARTS; fi
  for _ in $(seq "$n"); do
    if [ "$method" = "molt run" ]; then
      "$molt" upgrade -s "$sock" >>"$work/upgrades.log" 2>&1 || failed_upgrades=$((failed_upgrades + 1))
    else
      stop "$pid"
      (cd "$work/www" && exec $(plain_cmd "$prog" "$port")) >>"$work/programs.log" 2>&1 &
      pid=$!
      pids+=("$pid")
      wait_http "http://127.0.0.1:$port/" >/dev/null
    fi
    sleep 0.2
  done
  sleep 1
  kill -INT "$wrkpid"
  wait "$wrkpid" || true
  stop "$pid"

  local requests connect read write timeout non2xx
  requests=$(awk '/requests in/ {print $1}' "$out")
  read -r connect read write timeout < <(awk '/Socket errors/ {gsub(",", ""); for (i = 1; i < NF; i++) e[$i] = $(i+1); print e["connect"], e["read"], e["write"], e["timeout"]}' "$out") || true
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
  connect=${connect:-0} read=${read:-0} write=${write:-0} timeout=${timeout:-0} non2xx=${non2xx:-0}
  local total=$((connect + read + write + timeout + non2xx))
  rows+=("| $prog | $method | $client | $n | ${requests:-?} | $connect | $read | $write | $timeout | $non2xx | **$total** | $failed_upgrades |")
  if [ "$method" = "molt run" ] && { [ "$total" -ne 0 ] || [ "$failed_upgrades" -ne 0 ]; }; then
    molt_failed=1
    echo "FAIL: $prog under molt run, $client: $total failed requests, $failed_upgrades failed upgrades" >&2
    cat "$out" >&2
  fi
  printf '%s\n' "${rows[-1]}"
}

gunicorn --version 2>/dev/null || true
wrk --version 2>&1 | head -1 || true
python3 --version
echo "| program | restarted by | client | restarts | requests | connect | read | write | timeout | non-2xx | failed | failed upgrades |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for prog in ${PROGRAMS:-gunicorn http.server}; do
  for client in ${CLIENTS:-keep-alive close}; do
    run_case "$prog" "molt run" "$client"
    run_case "$prog" "stop/start" "$client"
  done
done

if [ -n "${RESULTS:-}" ]; then
  {
    echo "| program | restarted by | client | restarts | requests | connect | read | write | timeout | non-2xx | failed | failed upgrades |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
  } >"$RESULTS"
fi
if [ "$molt_failed" -ne 0 ]; then
  echo "programs log:" >&2
  grep -E "level=(WARN|ERROR)" "$work/programs.log" | tail -20 >&2 || true
  tail -50 "$work/programs.log" >&2
  tail -20 "$work/upgrades.log" >&2
  exit 1
fi
