#!/usr/bin/env bash
# cluster.sh - `make cluster`: the service on replicated infrastructure, on loopback, with the same
# packages and scripts as `make run` (kafka.sh, mysql.sh):
#
#   three Kafka KRaft nodes (broker+controller)   127.0.0.1:29001-29003 (controllers 29101-29103)
#   a MariaDB primary                              127.0.0.1:23301
#   two MariaDB replicas (GTID, semi-synchronous)  127.0.0.1:23302, 23303
#   two projectors (one consumer group)            http://127.0.0.1:28011, 28012 (health, metrics)
#   two API replicas, API i reading replica i      http://127.0.0.1:28001, 28002
#
#   cluster.sh up       # start whatever is not running (a node killed with kill -9 comes back), migrate
#   cluster.sh down     # stop everything it started (data stays in .run/cluster)
#   cluster.sh status
#   cluster.sh start-node NAME | restart-node NAME   # one node: kafka-N, mariadb-primary, mariadb-replica-N
#
# State, logs and pid files live in .run/cluster/ (CLUSTER_RUN_DIR): kafka-1.pid … kafka-3.pid,
# mariadb-primary.pid, mariadb-replica-1.pid, mariadb-replica-2.pid, projector-1.pid, projector-2.pid,
# api-1.pid, api-2.pid; `.run/cluster/env` names where everything is, in shell syntax. Topics are
# created with replication factor 3 and min.insync.replicas 2; every record the service produces is
# acknowledged by all in-sync replicas.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONV_RUN_DIR="${CLUSTER_RUN_DIR:-$repo/.run/cluster}"
export CONV_CACHE_DIR="${CONV_CACHE_DIR:-$repo/.cache}"
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"
cd "$REPO_ROOT"

KAFKA_PORTS=(29001 29002 29003)
KAFKA_CONTROLLER_PORTS=(29101 29102 29103)
MYSQL_PRIMARY_PORT=23301
MYSQL_REPLICA_PORTS=(23302 23303)
API_PORTS=(28001 28002)
PROJECTOR_PORTS=(28011 28012)
TOPIC=im.messages DLQ_TOPIC=im.messages.dlq CHANGES_TOPIC=im.conversations.changes
GROUP=conversation-projector PARTITIONS=6
REPL_USER=repl REPL_PASS=repl-local
APP_DSN_USER=conv APP_DSN_PASS=conv APP_DB=conversations
# How long the primary waits for a replica's acknowledgement before committing without one (ms); the
# count of such commits is Rpl_semi_sync_master_no_tx, which `make chaos-cluster` reports.
SEMI_SYNC_TIMEOUT_MS="${CLUSTER_SEMI_SYNC_TIMEOUT_MS:-10000}"
BIN="$RUN_DIR/bin"
READY_TIMEOUT="${CLUSTER_READY_TIMEOUT:-90}"

brokers() { local p out=(); for p in "${KAFKA_PORTS[@]}"; do out+=("127.0.0.1:$p"); done; (IFS=,; echo "${out[*]}"); }
voters() { local i out=(); for i in 0 1 2; do out+=("$((i + 1))@127.0.0.1:${KAFKA_CONTROLLER_PORTS[i]}"); done; (IFS=,; echo "${out[*]}"); }
dsn() { echo "$APP_DSN_USER:$APP_DSN_PASS@tcp(127.0.0.1:$1)/$APP_DB"; }
replica_dsns() { local p out=(); for p in "${MYSQL_REPLICA_PORTS[@]}"; do out+=("$(dsn "$p")"); done; echo "${out[*]}"; }

kafka_node() { # kafka_node N ACTION
  local i=$(($1 - 1))
  KAFKA_INSTANCE="kafka-$1" KAFKA_NODE_ID="$1" KAFKA_PORT="${KAFKA_PORTS[i]}" \
    KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORTS[i]}" KAFKA_QUORUM_VOTERS="$(voters)" \
    KAFKA_SASL_PORT="" KAFKA_REPLICATION=3 KAFKA_BROKER_SESSION_TIMEOUT_MS=4000 KAFKA_BROKER_HEARTBEAT_MS=500 KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx384m}" \
    "$LOCAL_DIR/kafka.sh" "$2"
}

mysql_node() { # mysql_node NAME ACTION
  local port id extra
  case "$1" in
    mariadb-primary) port=$MYSQL_PRIMARY_PORT id=1
      extra="rpl_semi_sync_master_enabled = ON
rpl_semi_sync_master_wait_point = AFTER_SYNC
rpl_semi_sync_master_timeout = $SEMI_SYNC_TIMEOUT_MS" ;;
    mariadb-replica-*) local n=${1##*-}; port=${MYSQL_REPLICA_PORTS[n - 1]} id=$((n + 1))
      extra="rpl_semi_sync_slave_enabled = ON
slave_net_timeout = 5" ;;
  esac
  MYSQL_INSTANCE="$1" MYSQL_PORT="$port" MYSQL_SERVER_ID="$id" MYSQL_EXTRA_CNF="$extra" \
    MYSQL_READ_ONLY="$([ "$1" = mariadb-primary ] || echo 1)" \
    "$LOCAL_DIR/mysql.sh" "$2"
}

sock_of() { echo "$RUN_DIR/$1/mysqld.sock"; }
sql_on() { mariadb --no-defaults --socket="$(sock_of "$1")" -uroot -NB; }

# replication: the replication account on the primary, and each replica following it by GTID
# (idempotent: a replica that already follows it is only started if stopped).
replication() {
  sql_on mariadb-primary <<EOF
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '$REPL_USER'@'127.0.0.1' IDENTIFIED BY '$REPL_PASS';
GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'127.0.0.1';
EOF
  local r
  for r in mariadb-replica-1 mariadb-replica-2; do
    if [ -z "$(echo 'SHOW SLAVE STATUS' | sql_on "$r")" ]; then
      log "$r: following the primary (GTID, semi-synchronous)"
      sql_on "$r" <<EOF
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MYSQL_PRIMARY_PORT, MASTER_USER='$REPL_USER',
  MASTER_PASSWORD='$REPL_PASS', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1;
EOF
    fi
    echo 'START SLAVE' | sql_on "$r" 2>/dev/null || true
  done
}

# wait_replicas: both replicas connected and caught up with the primary's binary log position.
wait_replicas() {
  local deadline=$((SECONDS + READY_TIMEOUT)) want r have
  want="$(echo 'SELECT @@gtid_binlog_pos' | sql_on mariadb-primary)"
  for r in mariadb-replica-1 mariadb-replica-2; do
    until have="$(echo "SELECT MASTER_GTID_WAIT('$want', 1)" | sql_on "$r")" && [ "$have" = 0 ]; do
      [ "$SECONDS" -lt "$deadline" ] || { echo 'SHOW SLAVE STATUS\G' | sql_on "$r" >&2 || true; die "$r has not caught up with $want"; }
    done
  done
  log "replicas at the primary's position ${want:-<empty>}; semi-sync clients: $(echo "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'" | sql_on mariadb-primary | cut -f2)"
}

# ---------------------------------------------------------------------------
# The Go processes

app_pid() { # app_pid NAME BIN: the pid in NAME.pid if it still runs BIN
  local pid
  pid="$(read_pid "$RUN_DIR/$1.pid")"
  if pid_matches "$pid" "^$BIN/$2 "; then echo "$pid"; fi
}

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

# start_app NAME BIN PORT ENV...: start BIN as NAME unless it runs, with ENV (and the shared settings).
start_app() {
  local name="$1" bin="$2" port="$3"
  shift 3
  if [ -n "$(app_pid "$name" "$bin")" ]; then return 0; fi
  if port_open 127.0.0.1 "$port"; then die "$name: 127.0.0.1:$port is in use by a process that is not ours"; fi
  echo "==== $(date -u +%FT%TZ) starting $name" >>"$LOG_DIR/$name.log"
  env MYSQL_DSN="$(dsn $MYSQL_PRIMARY_PORT)" KAFKA_BROKERS="$(brokers)" KAFKA_TOPIC="$TOPIC" \
    KAFKA_DLQ_TOPIC="$DLQ_TOPIC" KAFKA_CHANGES_TOPIC="$CHANGES_TOPIC" KAFKA_GROUP_ID="$GROUP" \
    KAFKA_REPLICATION_FACTOR=3 KAFKA_MIN_INSYNC_REPLICAS=2 KAFKA_ALLOW_UNREPLICATED=false "$@" \
    setsid nohup "$BIN/$bin" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

wait_ready() { # wait_ready NAME PORT
  local deadline=$((SECONDS + READY_TIMEOUT)) pid
  pid="$(read_pid "$RUN_DIR/$1.pid")"
  until [ "$(http_code "http://127.0.0.1:$2/readyz")" = 200 ]; do
    if ! alive "$pid"; then tail -n 30 "$LOG_DIR/$1.log" >&2; die "$1 exited during startup"; fi
    if [ "$SECONDS" -ge "$deadline" ]; then tail -n 30 "$LOG_DIR/$1.log" >&2; die "$1 not ready after ${READY_TIMEOUT}s"; fi
    sleep 0.3
  done
}

stop_app() {
  local pid
  pid="$(app_pid "$1" "$2")"
  if [ -n "$pid" ]; then log "stopping $1 (pid $pid)"; stop_pid "$pid" 20 "$1"; fi
  rm -f "$RUN_DIR/$1.pid"
}

write_env() {
  local api=() proj=() p
  for p in "${API_PORTS[@]}"; do api+=("http://127.0.0.1:$p"); done
  for p in "${PROJECTOR_PORTS[@]}"; do proj+=("http://127.0.0.1:$p"); done
  cat >"$RUN_DIR/env.tmp" <<EOF
# Written by deploy/local/cluster.sh (make cluster): where the cluster's parts are. Source it.
KAFKA_BROKERS='$(brokers)'
KAFKA_TOPIC='$TOPIC'
KAFKA_DLQ_TOPIC='$DLQ_TOPIC'
KAFKA_CHANGES_TOPIC='$CHANGES_TOPIC'
KAFKA_GROUP_ID='$GROUP'
KAFKA_PARTITIONS='$PARTITIONS'
API_URLS='${api[*]}'
PROJECTOR_URLS='${proj[*]}'
MYSQL_PRIMARY_DSN='$(dsn $MYSQL_PRIMARY_PORT)'
MYSQL_REPLICA_DSNS='$(replica_dsns)'
MYSQL_PRIMARY_SOCKET='$(sock_of mariadb-primary)'
MYSQL_REPLICA_SOCKETS='$(sock_of mariadb-replica-1) $(sock_of mariadb-replica-2)'
CLUSTER_RUN_DIR='$RUN_DIR'
EOF
  mv "$RUN_DIR/env.tmp" "$RUN_DIR/env"
}

up() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$BIN"
  step "kafka: three KRaft nodes on $(brokers)"
  "$LOCAL_DIR/kafka.sh" deps
  # Together: a node's client port opens only once a quorum of controllers (2 of 3) has formed.
  local pids=() n rc=0
  for n in 1 2 3; do kafka_node "$n" start & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || rc=$?; done
  [ "$rc" = 0 ] || die "a Kafka node did not start"
  step "mariadb: primary on $MYSQL_PRIMARY_PORT, replicas on ${MYSQL_REPLICA_PORTS[*]}"
  mysql_node mariadb-primary start
  # One at a time: two mariadb-install-db at once collide on their temporary tables.
  mysql_node mariadb-replica-1 start
  mysql_node mariadb-replica-2 start
  replication
  step "building ./cmd/... into $BIN"
  go build -o "$BIN/" ./cmd/...
  step "migrating (primary; topics with replication factor 3, min.insync.replicas 2)"
  MYSQL_DSN="$(dsn $MYSQL_PRIMARY_PORT)" KAFKA_BROKERS="$(brokers)" KAFKA_TOPIC="$TOPIC" \
    KAFKA_DLQ_TOPIC="$DLQ_TOPIC" KAFKA_CHANGES_TOPIC="$CHANGES_TOPIC" KAFKA_PARTITIONS="$PARTITIONS" \
    KAFKA_REPLICATION_FACTOR=3 KAFKA_MIN_INSYNC_REPLICAS=2 KAFKA_ALLOW_UNREPLICATED=false "$BIN/migrate" >>"$LOG_DIR/migrate.log" 2>&1 ||
    { tail -n 20 "$LOG_DIR/migrate.log" >&2; die "migrate failed"; }
  wait_replicas
  step "projectors and API replicas"
  local i
  for i in 1 2; do
    start_app "projector-$i" projector "${PROJECTOR_PORTS[i - 1]}" PROJECTOR_HTTP_ADDR="127.0.0.1:${PROJECTOR_PORTS[i - 1]}"
    start_app "api-$i" api "${API_PORTS[i - 1]}" API_HTTP_ADDR="127.0.0.1:${API_PORTS[i - 1]}" \
      MYSQL_READ_DSNS="$(dsn "${MYSQL_REPLICA_PORTS[i - 1]}")"
  done
  for i in 1 2; do
    wait_ready "projector-$i" "${PROJECTOR_PORTS[i - 1]}"
    wait_ready "api-$i" "${API_PORTS[i - 1]}"
  done
  write_env
  step "cluster up ($RUN_DIR/env)"
  sed -n 's/^\([A-Z_]*\)=/  \1=/p' "$RUN_DIR/env"
  cat <<EOF
  try:  curl -s -X POST http://127.0.0.1:${API_PORTS[0]}/conversation/sync -d '{"uid":"u1","version":0,"msg_count":3}'
  stop: make cluster-down     faults: make chaos-cluster     pids: $RUN_DIR/*.pid
EOF
}

down() {
  local i
  for i in 1 2; do stop_app "api-$i" api; stop_app "projector-$i" projector; done
  for i in 2 1; do mysql_node "mariadb-replica-$i" stop; done
  mysql_node mariadb-primary stop
  for i in 3 2 1; do kafka_node "$i" stop & done
  wait
}

status() {
  local i rc=0 pid
  for i in 1 2 3; do kafka_node "$i" status || rc=1; done
  for i in mariadb-primary mariadb-replica-1 mariadb-replica-2; do mysql_node "$i" status || rc=1; done
  for i in 1 2; do
    for app in projector api; do
      pid="$(app_pid "$app-$i" "$app")"
      if [ -n "$pid" ]; then echo "$app-$i: running (pid $pid)"; else echo "$app-$i: not running"; rc=1; fi
    done
  done
  return "$rc"
}

# start_node NAME: start one node that is not running (kafka-N, mariadb-primary, mariadb-replica-N).
start_node() {
  case "$1" in
    kafka-[123]) kafka_node "${1#kafka-}" start ;;
    mariadb-*) mysql_node "$1" start
      case "$1" in mariadb-replica-*) echo 'START SLAVE' | sql_on "$1" 2>/dev/null || true ;; esac ;;
    *) die "unknown node $1" ;;
  esac
}

# restart_node NAME: stop it (SIGTERM, then SIGKILL after the timeout) and start it.
restart_node() {
  case "$1" in
    kafka-[123]) kafka_node "${1#kafka-}" stop ;;
    mariadb-*) mysql_node "$1" stop ;;
    *) die "unknown node $1" ;;
  esac
  start_node "$1"
}

case "${1:-}" in
  up | down | status) "$1" ;;
  start-node | restart-node) [ -n "${2:-}" ] || die "usage: $0 $1 NAME"; "${1/-/_}" "$2" ;;
  *) echo "usage: $0 {up|down|status|start-node NAME|restart-node NAME}" >&2; exit 2 ;;
esac
