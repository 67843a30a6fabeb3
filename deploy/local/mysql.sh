#!/usr/bin/env bash
# mysql.sh - a MySQL-compatible server on 127.0.0.1:3306 for development and tests.
#
#   mysql.sh start    # reuse a usable server, or install + run our own MariaDB
#   mysql.sh stop     # stop OUR instance only (pid file + command line check)
#   mysql.sh status   # exit 0: ours running, 3: another usable server, 1: none
#
# MYSQL_PORT (default 3306) and CONV_RUN_DIR move it; MYSQL_BUFFER_POOL (default 256M) and
# MYSQL_LOG_FILE_SIZE (default 128M) size InnoDB (make bench-scale runs one with a larger pool).
#
# If a server already answers on 127.0.0.1:3306 and both the app login
# (conv/conv, database conversations) and the test login (convtest/convtest)
# work, it is used as is and never stopped by us. Otherwise Debian's
# mariadb-server (10.11) is installed if needed and our own instance runs with
# all of its state under .run/:
#   .run/mariadb/data      datadir          .run/mariadb/my.cnf   config
#   .run/mariadb/*.sock    socket           .run/mysql.pid        pid file
#   .run/logs/mariadb.log  error log
# Root administers it over the socket (unix_socket auth, no password).
#
# One server of a replicated set (deploy/local/cluster.sh): MYSQL_INSTANCE names its directory, pid
# file and error log (.run/$MYSQL_INSTANCE/, .run/$MYSQL_INSTANCE.pid, .run/logs/$MYSQL_INSTANCE.log),
# MYSQL_SERVER_ID turns the binary log on (row format, GTID strict mode) under that server id, and
# MYSQL_EXTRA_CNF holds more [mariadbd] lines (semi-synchronous replication), and MYSQL_READ_ONLY=1
# makes it a read-only replica (no convtest_* probe database is created on it). Accounts are
# provisioned on each server without being written to the binary log.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PORT="${MYSQL_PORT:-3306}"
INSTANCE="${MYSQL_INSTANCE:-}"
MDIR="$RUN_DIR/${INSTANCE:-mariadb}"
DATADIR="$MDIR/data"
CNF="$MDIR/my.cnf"
PIDFILE="$RUN_DIR/${INSTANCE:-mysql}.pid"
SERVER_PIDFILE="$MDIR/mariadbd.pid" # written by mariadbd itself (must be writable by mysql)
ERRLOG="$LOG_DIR/${INSTANCE:-mariadb}.log"
SERVER_ID="${MYSQL_SERVER_ID:-}"
READ_ONLY="${MYSQL_READ_ONLY:-}"
START_TIMEOUT="${MYSQL_START_TIMEOUT:-90}"
STOP_TIMEOUT="${MYSQL_STOP_TIMEOUT:-60}"

APP_USER=conv APP_PASS=conv APP_DB=conversations
TEST_USER=convtest TEST_PASS=convtest

# A unix socket path must fit in 108 bytes; fall back to /tmp for deep checkouts.
SOCK="$MDIR/mysqld.sock"
if [ "${#SOCK}" -gt 100 ]; then
  SOCK="/tmp/convsync-mysql-$(echo "$MDIR" | sha256sum | cut -c1-12).sock"
fi

client() { if command -v mariadb >/dev/null 2>&1; then echo mariadb; elif command -v mysql >/dev/null 2>&1; then echo mysql; fi; }
admin() { if command -v mariadb-admin >/dev/null 2>&1; then echo mariadb-admin; else echo mysqladmin; fi; }
server_bin() { command -v mariadbd 2>/dev/null || command -v /usr/sbin/mariadbd 2>/dev/null || true; }
install_db_bin() { command -v mariadb-install-db 2>/dev/null || command -v mysql_install_db 2>/dev/null || true; }

# The OS account mariadbd runs as and the DB account that administers it over
# the socket (unix_socket auth maps OS user -> DB user of the same name).
if [ "$(id -u)" = 0 ]; then RUN_AS=mysql; ADMIN_USER=root; else RUN_AS="$(id -un)"; ADMIN_USER="$RUN_AS"; fi

our_pid() {
  local pid
  pid="$(read_pid "$PIDFILE")"
  if pid_matches "$pid" "(mariadbd|mysqld) .*--defaults-file=$CNF"; then echo "$pid"; fi
}

# tcp_login USER PASS [DB]: can USER log in over TCP?
tcp_login() {
  local c
  c="$(client)"
  [ -n "$c" ] || return 1
  MYSQL_PWD="$2" "$c" --no-defaults --protocol=TCP -h"$HOST" -P"$PORT" -u"$1" --connect-timeout=3 \
    ${3:+"$3"} -NBe 'SELECT 1' >/dev/null 2>&1
}

# The test user must be able to create and drop its own databases.
test_login_works() {
  local c
  c="$(client)"
  [ -n "$c" ] || return 1
  MYSQL_PWD="$TEST_PASS" "$c" --no-defaults --protocol=TCP -h"$HOST" -P"$PORT" -u"$TEST_USER" \
    --connect-timeout=3 -NBe \
    'CREATE DATABASE IF NOT EXISTS convtest_probe; DROP DATABASE convtest_probe;' >/dev/null 2>&1
}

# A read-only replica cannot take the test login's probe database: logging in is enough there.
usable_server() { tcp_login "$APP_USER" "$APP_PASS" "$APP_DB" && { [ -n "$READ_ONLY" ] || test_login_works; }; }

# ---------------------------------------------------------------------------
# Installation

ensure_installed() {
  [ -z "$(server_bin)" ] || [ -z "$(install_db_bin)" ] || [ -z "$(client)" ] || return 0
  local t0=$SECONDS policy=/usr/sbin/policy-rc.d created_policy=
  # Keep the package from starting its own service (it would take port 3306).
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created_policy=1
  fi
  local rc=0
  apt_install mariadb-server mariadb-client || rc=$?
  [ -z "$created_policy" ] || as_root rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get install mariadb-server failed (rc=$rc)"
  # Belt and braces: if the distro service did start anyway, stop and disable it.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now mariadb >/dev/null 2>&1 || true
  elif [ -f /run/mysqld/mysqld.pid ] && command -v service >/dev/null 2>&1; then
    as_root service mariadb stop >/dev/null 2>&1 || true
  fi
  [ -n "$(server_bin)" ] || die "mariadbd still missing after installing mariadb-server"
  log "mariadb-server installed in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------------------
# Our instance

write_config() {
  # Small settings for a 2-core dev/CI box. NOT production settings:
  # innodb_flush_log_at_trx_commit=2 flushes the redo log once a second, so an
  # OS crash (not a mariadbd crash) may lose the last second of commits.
  # Fine for a throwaway local database; production (MySQL 8.4) keeps 1.
  cat >"$CNF.tmp" <<EOF
# Generated by deploy/local/mysql.sh - local development / CI only.
[mariadbd]
datadir                        = $DATADIR
socket                         = $SOCK
pid-file                       = $SERVER_PIDFILE
log-error                      = $ERRLOG
bind-address                   = $HOST
port                           = $PORT
skip-name-resolve
character-set-server           = utf8mb4
collation-server               = utf8mb4_unicode_ci
# MySQL 8.x defaults, so SQL that passes here also passes on MySQL.
sql_mode                       = ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION
max_connections                = 300
innodb_buffer_pool_size        = ${MYSQL_BUFFER_POOL:-256M}
innodb_log_file_size           = ${MYSQL_LOG_FILE_SIZE:-128M}
innodb_flush_log_at_trx_commit = 2
innodb_file_per_table          = 1
performance_schema             = OFF
EOF
  if [ -n "$SERVER_ID" ]; then
    cat >>"$CNF.tmp" <<EOF
# Replication (deploy/local/cluster.sh): GTIDs, row events, replicated changes logged too.
server_id                      = $SERVER_ID
log_bin                        = $MDIR/binlog
binlog_format                  = ROW
gtid_strict_mode               = ON
log_slave_updates              = ON
${READ_ONLY:+read_only                      = ON}
${MYSQL_EXTRA_CNF:-}
EOF
  else
    echo skip-log-bin >>"$CNF.tmp"
  fi
  mv "$CNF.tmp" "$CNF"
}

dump_log() {
  [ -f "$ERRLOG" ] && { log "---- tail $ERRLOG"; tail -n 40 "$ERRLOG" >&2; }
  return 0
}

admin_sql() { "$(client)" --no-defaults --socket="$SOCK" -u"$ADMIN_USER" -NB; }

provision() {
  local hn
  hn="$(hostname 2>/dev/null || echo localhost)"
  # sql_log_bin=0: each server of a replicated set provisions its own accounts; none replicates them.
  admin_sql <<EOF
SET SESSION sql_log_bin = 0;
DROP USER IF EXISTS ''@'localhost';
DROP USER IF EXISTS ''@'$hn';
CREATE DATABASE IF NOT EXISTS \`$APP_DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$APP_USER'@'127.0.0.1' IDENTIFIED BY '$APP_PASS';
CREATE USER IF NOT EXISTS '$APP_USER'@'localhost' IDENTIFIED BY '$APP_PASS';
ALTER USER '$APP_USER'@'127.0.0.1' IDENTIFIED BY '$APP_PASS';
ALTER USER '$APP_USER'@'localhost' IDENTIFIED BY '$APP_PASS';
GRANT ALL PRIVILEGES ON \`$APP_DB\`.* TO '$APP_USER'@'127.0.0.1', '$APP_USER'@'localhost';
CREATE USER IF NOT EXISTS '$TEST_USER'@'127.0.0.1' IDENTIFIED BY '$TEST_PASS';
CREATE USER IF NOT EXISTS '$TEST_USER'@'localhost' IDENTIFIED BY '$TEST_PASS';
ALTER USER '$TEST_USER'@'127.0.0.1' IDENTIFIED BY '$TEST_PASS';
ALTER USER '$TEST_USER'@'localhost' IDENTIFIED BY '$TEST_PASS';
GRANT ALL PRIVILEGES ON \`convtest\\_%\`.* TO '$TEST_USER'@'127.0.0.1', '$TEST_USER'@'localhost';
GRANT ALL PRIVILEGES ON \`$APP_DB\`.* TO '$TEST_USER'@'127.0.0.1', '$TEST_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start() {
  local t0=$SECONDS pid
  pid="$(our_pid)"
  if [ -n "$pid" ]; then
    provision
    log "already running (ours, pid $pid) on $HOST:$PORT"
    return 0
  fi
  rm -f "$PIDFILE"

  if port_open "$HOST" "$PORT"; then
    [ -n "$(client)" ] || apt_install mariadb-client
    if usable_server; then
      log "using the server already on $HOST:$PORT (not ours; will not stop it)"
      return 0
    fi
    die "$HOST:$PORT is taken by a server that is not ours and where $APP_USER/$TEST_USER cannot log in.
  Either stop it, or create the accounts on it (as an admin):
    CREATE DATABASE IF NOT EXISTS $APP_DB;
    CREATE USER '$APP_USER'@'%' IDENTIFIED BY '$APP_PASS';  GRANT ALL ON $APP_DB.* TO '$APP_USER'@'%';
    CREATE USER '$TEST_USER'@'%' IDENTIFIED BY '$TEST_PASS';
    GRANT ALL ON \`convtest\\_%\`.* TO '$TEST_USER'@'%';  GRANT ALL ON $APP_DB.* TO '$TEST_USER'@'%';"
  fi

  ensure_installed

  mkdir -p "$MDIR" "$LOG_DIR"
  touch "$ERRLOG"
  if [ "$RUN_AS" = mysql ]; then
    chown mysql:mysql "$MDIR" "$ERRLOG"
    [ ! -d "$DATADIR" ] || chown -R mysql:mysql "$DATADIR"
    # mysql must be able to reach .run/mariadb (e.g. a checkout under /root is not).
    if ! runuser -u mysql -- test -w "$MDIR"; then
      log "user mysql cannot reach $MDIR; running mariadbd as root instead"
      RUN_AS=root
      chown -R root:root "$MDIR" "$ERRLOG"
    fi
  fi
  write_config

  if [ ! -d "$DATADIR/mysql" ]; then
    log "initialising datadir $DATADIR"
    rm -rf "$DATADIR"
    if ! "$(install_db_bin)" --defaults-file="$CNF" --user="$RUN_AS" --skip-test-db \
      >"$LOG_DIR/${INSTANCE:-mariadb}-install-db.log" 2>&1; then
      tail -n 30 "$LOG_DIR/${INSTANCE:-mariadb}-install-db.log" >&2
      rm -rf "$DATADIR"
      die "mariadb-install-db failed (log: $LOG_DIR/${INSTANCE:-mariadb}-install-db.log)"
    fi
  fi

  log "starting mariadbd on $HOST:$PORT (datadir $DATADIR)"
  local srv
  srv="$(server_bin)"
  # --user is only honoured (and required) when started as root.
  setsid "$srv" --defaults-file="$CNF" --user="$RUN_AS" </dev/null >>"$ERRLOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"

  local deadline=$((SECONDS + START_TIMEOUT))
  until "$(admin)" --no-defaults --socket="$SOCK" -u"$ADMIN_USER" --connect-timeout=2 ping >/dev/null 2>&1; do
    if ! alive "$pid"; then
      rm -f "$PIDFILE"
      dump_log
      die "mariadbd exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      dump_log
      stop_pid "$pid" 20 mariadbd
      rm -f "$PIDFILE"
      die "mariadbd not ready after ${START_TIMEOUT}s"
    fi
    sleep 0.3
  done
  # Record the server's own pid (in case setsid forked).
  local spid
  spid="$(read_pid "$SERVER_PIDFILE")"
  if [ -n "$spid" ] && [ "$spid" != "$pid" ] && pid_matches "$spid" "--defaults-file=$CNF"; then
    pid="$spid"
    echo "$pid" >"$PIDFILE"
  fi
  provision
  tcp_login "$APP_USER" "$APP_PASS" "$APP_DB" || { dump_log; die "started, but $APP_USER cannot log in over TCP"; }
  # A read-only replica gets its databases from the primary.
  [ -n "$READ_ONLY" ] || test_login_works || { dump_log; die "started, but $TEST_USER cannot create convtest_* databases"; }
  log "ready on $HOST:$PORT (pid $pid, $((SECONDS - t0))s)"
}

stop() {
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then
    rm -f "$PIDFILE"
    if port_open "$HOST" "$PORT"; then log "not ours: leaving the server on $HOST:$PORT alone"; else log "not running"; fi
    return 0
  fi
  log "stopping mariadbd (pid $pid)"
  stop_pid "$pid" "$STOP_TIMEOUT" mariadbd
  rm -f "$PIDFILE"
  log "stopped"
}

status() {
  local pid
  pid="$(our_pid)"
  if [ -n "$pid" ]; then
    echo "mariadb: running (ours, pid $pid) on $HOST:$PORT, socket $SOCK, log $ERRLOG"
    return 0
  fi
  if port_open "$HOST" "$PORT"; then
    if usable_server; then echo "mariadb: external server on $HOST:$PORT (usable, not ours)"; return 3; fi
    echo "mariadb: external server on $HOST:$PORT (NOT usable: $APP_USER/$TEST_USER cannot log in)"
    return 4
  fi
  echo "mariadb: not running"
  return 1
}

case "${1:-}" in
  start | stop | status) "$1" ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
