#!/usr/bin/env bash
# replica-pair.sh - a MariaDB primary (127.0.0.1:23311) and one replica following it by GTID
# (127.0.0.1:23312), for the tests of reads from database replicas (internal/replica). `make test`
# starts it unless TEST_REPLICA_* are set, and stops it if it started it. State in .run/replica-pair/.
#
#   replica-pair.sh start   # start what is not running; prints the TEST_REPLICA_* variables (shell syntax)
#   replica-pair.sh stop
#   replica-pair.sh status
#
# Replication is asynchronous here (the cluster's is semi-synchronous): the tests freeze the replica
# (SIGSTOP) and stop its applier, and the primary must go on committing meanwhile. The replica has an
# administrative account for that, convadmin/convadmin (local tests only).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONV_RUN_DIR="${REPLICA_PAIR_RUN_DIR:-$repo/.run/replica-pair}"
export CONV_CACHE_DIR="${CONV_CACHE_DIR:-$repo/.cache}"
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"

PRIMARY_PORT="${REPLICA_PAIR_PRIMARY_PORT:-23311}"
REPLICA_PORT="${REPLICA_PAIR_REPLICA_PORT:-23312}"
REPL_USER=repl REPL_PASS=repl-local

node() { # node primary|replica ACTION
  if [ "$1" = primary ]; then
    MYSQL_INSTANCE=pair-primary MYSQL_PORT="$PRIMARY_PORT" MYSQL_SERVER_ID=11 MYSQL_EXTRA_CNF="" MYSQL_READ_ONLY="" \
      "$LOCAL_DIR/mysql.sh" "$2"
  else
    MYSQL_INSTANCE=pair-replica MYSQL_PORT="$REPLICA_PORT" MYSQL_SERVER_ID=12 MYSQL_EXTRA_CNF="slave_net_timeout = 5" \
      MYSQL_READ_ONLY=1 "$LOCAL_DIR/mysql.sh" "$2"
  fi
}

sql_on() { mariadb --no-defaults --socket="$RUN_DIR/pair-$1/mysqld.sock" -uroot -NB; }

start() {
  # A replica a test froze and did not thaw (killed mid-test) would never answer again.
  local pid
  pid="$(read_pid "$RUN_DIR/pair-replica.pid")"
  if [ -n "$pid" ]; then kill -CONT "$pid" 2>/dev/null || true; fi
  node primary start >&2
  node replica start >&2
  if [ ! -S "$RUN_DIR/pair-primary/mysqld.sock" ] || [ ! -S "$RUN_DIR/pair-replica/mysqld.sock" ]; then
    # The ports answer for a pair another checkout started (mysql.sh reuses it): it is set up already.
    log "using the pair already on $PRIMARY_PORT/$REPLICA_PORT (not ours; will not stop it)"
    env_lines
    return 0
  fi
  sql_on primary <<EOF
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS '$REPL_USER'@'127.0.0.1' IDENTIFIED BY '$REPL_PASS';
GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'127.0.0.1';
EOF
  sql_on replica <<EOF
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'convadmin'@'127.0.0.1' IDENTIFIED BY 'convadmin';
GRANT ALL PRIVILEGES ON *.* TO 'convadmin'@'127.0.0.1';
EOF
  if [ -z "$(echo 'SHOW SLAVE STATUS' | sql_on replica)" ]; then
    sql_on replica <<EOF
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$PRIMARY_PORT, MASTER_USER='$REPL_USER',
  MASTER_PASSWORD='$REPL_PASS', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1;
EOF
  fi
  echo 'START SLAVE' | sql_on replica 2>/dev/null || true
  env_lines
}

env_lines() {
  cat <<EOF
TEST_REPLICA_PRIMARY_DSN='convtest:convtest@tcp(127.0.0.1:$PRIMARY_PORT)/'
TEST_REPLICA_DSN='convtest:convtest@tcp(127.0.0.1:$REPLICA_PORT)/'
TEST_REPLICA_ADMIN_DSN='convadmin:convadmin@tcp(127.0.0.1:$REPLICA_PORT)/'
TEST_REPLICA_PIDFILE='$RUN_DIR/pair-replica.pid'
EOF
}

stop() {
  node replica stop
  node primary stop
}

status() {
  local rc=0
  node primary status || rc=1
  node replica status || rc=1
  return "$rc"
}

case "${1:-}" in
  start | stop | status) "$1" ;;
  env) env_lines ;;
  *) echo "usage: $0 {start|stop|status|env}" >&2; exit 2 ;;
esac
