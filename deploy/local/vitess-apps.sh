#!/usr/bin/env bash
# vitess-apps.sh - the projectors and the API of `make run DB=vitess`, on the read model sharded by user
# (deploy/local/vitess.sh runs vttestserver).
#
#   vitess-apps.sh start    # (re)start one projector per shard and the API, wait until all are ready
#   vitess-apps.sh stop     # stop them (pid files under .run/vitess-apps, command line checked)
#   vitess-apps.sh status
#
# Projector of shard S: VITESS_SHARD=S, MYSQL_DSN=<vtgate>/conv:S, its own consumer group
# ($KAFKA_GROUP_ID.S), no change feed; http 127.0.0.1:16081, 16082, … (VITESS_PROJECTOR_PORT). The API:
# VITESS_SHARDS and MYSQL_DSN=<vtgate>/conv, on API_HTTP_ADDR (127.0.0.1:8080) as in make run.
# Logs: .run/logs/projector-<shard>.log, .run/logs/api.log.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN_DIR="$RUN_DIR/bin"
PIDS="$RUN_DIR/vitess-apps"
READY_TIMEOUT="${APPS_READY_TIMEOUT:-60}"
: "${API_HTTP_ADDR:=127.0.0.1:8080}"
: "${KAFKA_GROUP_ID:=conversation-projector}"
PROJECTOR_PORT="${VITESS_PROJECTOR_PORT:-16081}"
eval "$("$LOCAL_DIR/vitess.sh" env)" # VITESS_DSN, VITESS_SHARDS

# instances: "name binary addr" per line.
instances() {
  local i=0 s
  IFS=, read -ra shards <<<"$VITESS_SHARDS"
  for s in "${shards[@]}"; do
    echo "projector$s projector 127.0.0.1:$((PROJECTOR_PORT + i))"
    i=$((i + 1))
  done
  echo "api api $API_HTTP_ADDR"
}

our_pid() {
  local pid
  pid="$(read_pid "$PIDS/$1.pid")"
  if pid_matches "$pid" "^$BIN_DIR/$2"; then echo "$pid"; fi
}

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

start_one() {
  local name="$1" bin="$2" addr="$3" shard hostport
  [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin not built (run: make build)"
  stop_one "$@"
  hostport="$(base_url "$addr")"; hostport="${hostport#http://}"
  port_open "${hostport%:*}" "${hostport##*:}" && die "$name: $hostport is already in use by another process"
  mkdir -p "$PIDS" "$LOG_DIR"
  echo "==== $(date -u +%FT%TZ) starting $name on $addr" >>"$LOG_DIR/$name.log"
  if [ "$bin" = projector ]; then
    shard="${name#projector}"
    MYSQL_DSN="$VITESS_DSN:$shard" VITESS_SHARD="$shard" KAFKA_GROUP_ID="$KAFKA_GROUP_ID.$shard" \
      KAFKA_CHANGES_TOPIC="" PROJECTOR_HTTP_ADDR="$addr" BATCH_MAX_RECORDS="${VITESS_BATCH_MAX_RECORDS:-500}" \
      setsid nohup "$BIN_DIR/projector" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  else
    MYSQL_DSN="$VITESS_DSN" VITESS_SHARDS="$VITESS_SHARDS" API_HTTP_ADDR="$addr" \
      setsid nohup "$BIN_DIR/api" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  fi
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!, http $addr, log $LOG_DIR/$name.log)"
}

stop_one() {
  local pid
  pid="$(our_pid "$1" "$2")"
  if [ -n "$pid" ]; then log "stopping $1 (pid $pid)"; stop_pid "$pid" 20 "$1"; fi
  rm -f "$PIDS/$1.pid"
}

wait_ready() {
  local name="$1" bin="$2" addr="$3" url deadline
  url="$(base_url "$addr")/readyz"
  deadline=$((SECONDS + READY_TIMEOUT))
  until [ "$(http_code "$url")" = 200 ]; do
    if [ -z "$(our_pid "$name" "$bin")" ]; then tail -n 40 "$LOG_DIR/$name.log" >&2; die "$name exited during startup"; fi
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 40 "$LOG_DIR/$name.log" >&2; die "$name not ready after ${READY_TIMEOUT}s"; }
    sleep 0.3
  done
  log "$name ready ($url)"
}

each() { local line; while read -r line; do "$1" $line; done < <(instances); }

status_one() {
  local pid
  pid="$(our_pid "$1" "$2")"
  if [ -n "$pid" ]; then echo "$1: running (pid $pid) on $3, readyz $(http_code "$(base_url "$3")/readyz")"
  else echo "$1: not running"; fi
}

case "${1:-}" in
  start) each start_one; each wait_ready ;;
  stop) [ -d "$PIDS" ] || exit 0; each stop_one ;;
  status) each status_one ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
