#!/usr/bin/env bash
# vitess.sh - Vitess (vttestserver: vtgate + vtcombo tablets over one mysqld) for the sharded read model.
#
#   vitess.sh build    # build vttestserver, vtcombo, mysqlctl (cached; prints the build time)
#   vitess.sh start    # build if needed, then start vttestserver, or reuse ours if it already runs
#   vitess.sh stop     # stop OUR vttestserver only (pid file + command line check) and its mysqld
#   vitess.sh status   # exit 0: ours running and serving, 1: not running
#   vitess.sh env      # print VITESS_* settings for the shell (eval "$(vitess.sh env)")
#
# Keyspaces: conv (VITESS_SHARDS shards, default 2: -80, 80-) holds every per-user and channel-keyed
# table, convmeta (1 shard) the small unsharded ones; their VSchemas are deploy/vitess/vschema/*.json.
# Ports (vttestserver's layout from its --port, default VITESS_PORT=15000): vtcombo's HTTP (/debug/vars,
# /debug/query_plans, /metrics) on 15000, its gRPC on 15001, the one mysqld under all shards on 15002,
# vtgate's MySQL protocol on 15003.
#
# Why a wrapper module: `go install vitess.io/vitess/go/cmd/...@v0.24.4` refuses the module (its
# go.mod has exclude directives). deploy/vitess/go.mod requires it and repeats the exclude.
# Binaries: .cache/vitess/<version>/bin, copied to and from $HOME/.cache/convsync/vitess/<version>
# so another clone on the same machine (CI's fresh clone) skips the ~9 minute cold build.
#
# Vitess 24 targets MySQL 8.0/8.4; here only Debian's MariaDB 10.11 is installable. It runs on it with
# two changes in a copy of Vitess's config/ (used as $VTROOT/config): `super-read-only = false` removed
# from mycnf/test-suite.cnf and the super_read_only lines removed from init_db.sql. mysqlctl refuses to
# run as root, so as root vttestserver runs as the `mysql` user.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VITESS_VERSION=v0.24.4
GO_VERSION="$(go env GOVERSION 2>/dev/null || echo unknown)"
KEY="$VITESS_VERSION-$GO_VERSION"
MODDIR="$REPO_ROOT/deploy/vitess"
VDIR="$CACHE_DIR/vitess/$KEY"
VBIN="$VDIR/bin"
HOME_CACHE="${CONV_VITESS_HOME_CACHE:-${HOME:-/root}/.cache/convsync/vitess/$KEY}"
BINARIES=(vttestserver vtcombo mysqlctl)

PORT="${VITESS_PORT:-15000}"
GATE_PORT=$((PORT + 3))
SHARDS="${VITESS_SHARDS:-2}"
STATE="${VITESS_STATE_DIR:-$RUN_DIR/vitess}"
PIDFILE="$STATE/vttestserver.pid"
LOGFILE="$STATE/vttestserver.log"
START_TIMEOUT="${VITESS_START_TIMEOUT:-240}"
VTROOT_DIR="$VDIR/vtroot"

have_bins() { local b; for b in "${BINARIES[@]}"; do [ -x "$1/$b" ] || return 1; done; }

build() {
  if have_bins "$VBIN"; then log "vitess $VITESS_VERSION binaries cached in $VBIN"; return 0; fi
  mkdir -p "$VBIN"
  if have_bins "$HOME_CACHE/bin"; then
    log "copying vitess binaries from $HOME_CACHE/bin"
    cp "$HOME_CACHE"/bin/* "$VBIN"/
    return 0
  fi
  local t0=$SECONDS b
  log "building vitess $VITESS_VERSION (${BINARIES[*]}; CGO_ENABLED=0; about 9 minutes cold on 2 cores)"
  for b in "${BINARIES[@]}"; do
    local t1=$SECONDS
    (cd "$MODDIR" && CGO_ENABLED=0 go build -trimpath -o "$VBIN/$b.tmp" "vitess.io/vitess/go/cmd/$b")
    mv "$VBIN/$b.tmp" "$VBIN/$b"
    log "built $b in $((SECONDS - t1))s"
  done
  log "vitess build took $((SECONDS - t0))s"
  mkdir -p "$HOME_CACHE/bin" && cp "$VBIN"/* "$HOME_CACHE/bin/" 2>/dev/null || true
}

# vtroot: $VTROOT for vttestserver (bin/ and the patched config/, readable by the mysql user).
vtroot() {
  local src
  src="$(cd "$MODDIR" && go list -m -f '{{.Dir}}' vitess.io/vitess)/config"
  [ -d "$src" ] || die "vitess config not found in the module cache ($src)"
  if [ ! -f "$VTROOT_DIR/config/.patched" ]; then
    rm -rf "$VTROOT_DIR/config"
    mkdir -p "$VTROOT_DIR"
    cp -r "$src" "$VTROOT_DIR/config"
    chmod -R u+w "$VTROOT_DIR/config"
    # MariaDB 10.11 has no super_read_only: drop the setting and the lines of init_db.sql that use it.
    sed -i '/^super-read-only/d' "$VTROOT_DIR/config/mycnf/test-suite.cnf"
    sed -i '/super_read_only/d' "$VTROOT_DIR/config/init_db.sql"
    touch "$VTROOT_DIR/config/.patched"
  fi
  rm -rf "$VTROOT_DIR/bin"
  mkdir -p "$VTROOT_DIR/bin"
  cp "$VBIN"/* "$VTROOT_DIR/bin/"
}

# schema: one directory per keyspace with the Up sections of migrations/ and the VSchema.
schema() {
  local dir="$STATE/schema" ks f
  rm -rf "$dir"
  for ks in conv convmeta; do
    mkdir -p "$dir/$ks"
    cp "$REPO_ROOT/deploy/vitess/vschema/$ks.json" "$dir/$ks/vschema.json"
  done
  for f in "$REPO_ROOT"/migrations/*.sql; do
    awk '/^-- \+goose Up/{up=1; next} /^-- \+goose Down/{up=0} up' "$f" >"$dir/conv/$(basename "$f")"
  done
  {
    cat "$REPO_ROOT/deploy/vitess/convmeta.sql"
    for f in "$REPO_ROOT"/migrations/*.sql; do
      f="$(basename "$f")"
      echo "INSERT INTO schema_migrations (version, file) VALUES (${f%%_*} + 0, '$f');"
    done
  } >"$dir/convmeta/00000_convmeta.sql"
}

our_pid() {
  local pid
  pid="$(read_pid "$PIDFILE")"
  if pid_matches "$pid" "vttestserver .*--port $PORT"; then echo "$pid"; fi
}

gate_ready() {
  local c
  c="$(command -v mariadb || command -v mysql || true)"
  [ -n "$c" ] || die "no mariadb/mysql client"
  "$c" --no-defaults --protocol=TCP -h127.0.0.1 -P"$GATE_PORT" -uroot --connect-timeout=3 -NBe \
    'SELECT COUNT(*) FROM conv.user_versions' >/dev/null 2>&1
}

start() {
  if [ -n "$(our_pid)" ] && gate_ready; then
    log "vttestserver already running (pid $(our_pid)), vtgate on 127.0.0.1:$GATE_PORT"; return 0
  fi
  [ -z "$(our_pid)" ] || stop
  port_open 127.0.0.1 "$GATE_PORT" && die "port $GATE_PORT is taken by another process"
  command -v mariadbd >/dev/null 2>&1 || command -v /usr/sbin/mariadbd >/dev/null 2>&1 || apt_install mariadb-server mariadb-client
  build
  vtroot
  mkdir -p "$STATE" "$LOG_DIR"
  schema
  # The store sets no isolation per transaction on Vitess (a session setting would reserve a tablet
  # connection): the tablets' MySQL runs READ COMMITTED, as the store's transactions need.
  printf '[mysqld]\ntransaction-isolation = READ-COMMITTED\n' >"$STATE/extra.cnf"
  local data="$STATE/data" user=()
  rm -rf "$data"; mkdir -p "$data/cluster"
  # mysqlctl refuses to run as root.
  if [ "$(id -u)" = 0 ]; then
    chown -R mysql: "$STATE" "$VTROOT_DIR"
    user=(runuser -u mysql --)
  fi
  log "starting vttestserver (keyspaces conv: $SHARDS shards, convmeta: 1) on ports $PORT-$GATE_PORT; log $LOGFILE"
  local t0=$SECONDS
  (cd "$STATE" && exec setsid "${user[@]}" env VTROOT="$VTROOT_DIR" VTDATAROOT="$data" VT_MYSQL_ROOT=/usr \
    PATH="/usr/sbin:/usr/bin:/sbin:/bin" HOME="$STATE" \
    "$VTROOT_DIR/bin/vttestserver" --port "$PORT" --keyspaces conv,convmeta --num-shards "$SHARDS,1" \
    --replica-count 1 --rdonly-count 0 --schema-dir "$STATE/schema" --data-dir "$data/cluster" --extra-my-cnf "$STATE/extra.cnf" \
    --mysql-bind-host 127.0.0.1 --vtcombo-bind-host 127.0.0.1 --tablet-hostname 127.0.0.1 \
    --enable-system-settings=true --queryserver-config-transaction-timeout 60s \
    >"$LOGFILE" 2>&1 </dev/null) &
  echo $! >"$PIDFILE"
  while ! gate_ready; do
    if ! alive "$(read_pid "$PIDFILE")"; then tail -n 40 "$LOGFILE" >&2; die "vttestserver exited (log: $LOGFILE)"; fi
    [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ] || { tail -n 40 "$LOGFILE" >&2; die "vtgate not ready after ${START_TIMEOUT}s"; }
    sleep 1
  done
  log "vtgate ready on 127.0.0.1:$GATE_PORT after $((SECONDS - t0))s (vtcombo http 127.0.0.1:$PORT)"
}

stop() {
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then log "vttestserver not running (ours)"; return 0; fi
  log "stopping vttestserver (pid $pid)"
  stop_pid "$pid" 60 vttestserver
  # vttestserver stops its mysqld on TERM; a SIGKILLed one leaves it: stop the one of our data dir.
  local m
  for m in $(pgrep -f "mysqld.*$STATE/data" || true); do stop_pid "$m" 30 mysqld; done
  rm -f "$PIDFILE"
}

status() {
  if [ -n "$(our_pid)" ] && gate_ready; then echo "vitess: vttestserver pid $(our_pid), vtgate 127.0.0.1:$GATE_PORT"; return 0; fi
  echo "vitess: not running"; return 1
}

# shard_names: the shards vttestserver makes of the keyspace conv (SHARDS, a power of two up to 256).
shard_names() {
  local i names="" lo hi
  for ((i = 0; i < SHARDS; i++)); do
    lo=$([ "$i" = 0 ] || printf '%02x' $((i * 256 / SHARDS)))
    hi=$([ "$i" = $((SHARDS - 1)) ] || printf '%02x' $(((i + 1) * 256 / SHARDS)))
    names="$names${names:+,}$lo-$hi"
  done
  echo "$names"
}

env_() {
  echo "VITESS_DSN='root@tcp(127.0.0.1:$GATE_PORT)/conv'"
  echo "VITESS_SHARDS=$(shard_names)"
  echo "VITESS_HTTP=http://127.0.0.1:$PORT"
}

case "${1:-}" in
  build) t0=$SECONDS; build; log "build step: $((SECONDS - t0))s" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_ ;;
  *) echo "usage: $0 build|start|stop|status|env" >&2; exit 2 ;;
esac
