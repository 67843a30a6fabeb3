#!/usr/bin/env bash
# bench-scale.sh - `make bench-scale`: run ./cmd/bench -only scale (arguments are passed on) against a
# private MariaDB (127.0.0.1:14306, state in .run/scale/, InnoDB buffer pool SCALE_BUFFER_POOL, default
# 1G) that holds the preloaded read model of 1M users and 10M conversation rows, so that loading it never
# slows the shared server; Kafka is the shared broker (started if none is up). The preloaded database is
# kept in .run/scale/ and reused by the next run (-scale-reload loads it again); the server is stopped
# again if this invocation started it. Ports and the directory: SCALE_MYSQL_PORT, SCALE_RUN_DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONV_RUN_DIR="${SCALE_RUN_DIR:-$repo/.run/scale}"
export CONV_CACHE_DIR="${CONV_CACHE_DIR:-$repo/.cache}"
export MYSQL_PORT="${SCALE_MYSQL_PORT:-14306}"
export MYSQL_BUFFER_POOL="${SCALE_BUFFER_POOL:-1G}" MYSQL_LOG_FILE_SIZE="${SCALE_LOG_FILE_SIZE:-512M}"
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"
cd "$REPO_ROOT"

services_up
export TEST_MYSQL_DSN="convtest:convtest@tcp(127.0.0.1:$MYSQL_PORT)/"
export TEST_KAFKA_BROKERS="${TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
BENCH_DB_PID="$(tr -dc '0-9' <"$RUN_DIR/mysql.pid" 2>/dev/null || true)"
export BENCH_DB_PID BENCH_BUFFER_POOL="$MYSQL_BUFFER_POOL"
step "go run ./cmd/bench -only scale $* (MariaDB on $MYSQL_PORT, buffer pool $MYSQL_BUFFER_POOL)"
rc=0
go run ./cmd/bench -only scale "$@" || rc=$?
exit "$rc"
