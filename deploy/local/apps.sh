#!/usr/bin/env bash
# apps.sh - run the projector and the API from .run/bin in the background.
#
#   apps.sh start    # (re)start both, wait until both /readyz answer 200
#   apps.sh stop     # stop both (only processes started from .run/bin via our pid files)
#   apps.sh status
#
# Binaries: .run/bin/{projector,api} (make build). Logs: .run/logs/{projector,api}.log
# (appended). Pid files: .run/{projector,api}.pid. Configuration comes from the
# environment (MYSQL_DSN, KAFKA_*, PROJECTOR_HTTP_ADDR, API_HTTP_ADDR, API_TOKEN, ...),
# which the Makefile exports.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN_DIR="$RUN_DIR/bin"
APPS=(projector api)
READY_TIMEOUT="${APPS_READY_TIMEOUT:-60}"
STOP_TIMEOUT="${APPS_STOP_TIMEOUT:-20}"
: "${PROJECTOR_HTTP_ADDR:=127.0.0.1:8081}"
: "${API_HTTP_ADDR:=127.0.0.1:8080}"
export PROJECTOR_HTTP_ADDR API_HTTP_ADDR

addr_of() { case "$1" in projector) echo "$PROJECTOR_HTTP_ADDR" ;; api) echo "$API_HTTP_ADDR" ;; esac; }

# our_pid APP: the pid in .run/APP.pid if it still runs .run/bin/APP; otherwise
# any process started from this checkout's .run/bin/APP (e.g. an interrupted
# earlier run lost its pid file).
our_pid() {
  local pid f
  pid="$(read_pid "$RUN_DIR/$1.pid")"
  if pid_matches "$pid" "^$BIN_DIR/$1 "; then echo "$pid"; return 0; fi
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    if pid_matches "$pid" "^$BIN_DIR/$1 "; then echo "$pid"; return 0; fi
  done
}

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

stop_app() {
  local pid
  pid="$(our_pid "$1")"
  while [ -n "$pid" ]; do
    log "stopping $1 (pid $pid)"
    stop_pid "$pid" "$STOP_TIMEOUT" "$1"
    pid="$(our_pid "$1")"
  done
  rm -f "$RUN_DIR/$1.pid"
}

start_app() {
  local app="$1" addr hostport
  [ -x "$BIN_DIR/$app" ] || die "$BIN_DIR/$app not built (run: make build)"
  stop_app "$app"
  addr="$(addr_of "$app")"
  hostport="$(base_url "$addr")"
  hostport="${hostport#http://}"
  if port_open "${hostport%:*}" "${hostport##*:}"; then
    die "$app: $hostport is already in use by another process (set ${app^^}_HTTP_ADDR?)"
  fi
  mkdir -p "$LOG_DIR"
  echo "==== $(date -u +%FT%TZ) starting $app on $addr" >>"$LOG_DIR/$app.log"
  setsid nohup "$BIN_DIR/$app" >>"$LOG_DIR/$app.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$app.pid"
  log "started $app (pid $!, http $addr, log $LOG_DIR/$app.log)"
}

wait_ready() {
  local app="$1" url pid deadline
  url="$(base_url "$(addr_of "$app")")/readyz"
  pid="$(read_pid "$RUN_DIR/$app.pid")"
  deadline=$((SECONDS + READY_TIMEOUT))
  until [ "$(http_code "$url")" = 200 ]; do
    if ! alive "$pid"; then
      log "---- tail $LOG_DIR/$app.log"; tail -n 40 "$LOG_DIR/$app.log" >&2
      die "$app exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "---- tail $LOG_DIR/$app.log"; tail -n 40 "$LOG_DIR/$app.log" >&2
      die "$app not ready after ${READY_TIMEOUT}s ($url)"
    fi
    sleep 0.3
  done
  log "$app ready ($url)"
}

start() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
  local app
  for app in "${APPS[@]}"; do start_app "$app"; done
  for app in "${APPS[@]}"; do wait_ready "$app"; done
}

stop() {
  local app
  for app in "${APPS[@]}"; do stop_app "$app"; done
}

status() {
  local app pid rc=0
  for app in "${APPS[@]}"; do
    pid="$(our_pid "$app")"
    if [ -n "$pid" ]; then
      echo "$app: running (pid $pid) on $(addr_of "$app"), readyz $(http_code "$(base_url "$(addr_of "$app")")/readyz")"
    else
      echo "$app: not running"; rc=1
    fi
  done
  return "$rc"
}

case "${1:-}" in
  start | stop | status) "$1" ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
