#!/usr/bin/env bash
# chaos.sh - `make chaos`: run ./cmd/chaos (arguments are passed on) against a private MariaDB
# (127.0.0.1:13306) and a private Kafka broker (127.0.0.1:19292), state in .run/chaos/, so that chaos
# can restart both without touching the services anything else uses; then stop what THIS invocation
# started. Ports and the directory: CHAOS_MYSQL_PORT, CHAOS_KAFKA_PORT, CHAOS_KAFKA_CONTROLLER_PORT,
# CHAOS_RUN_DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONV_RUN_DIR="${CHAOS_RUN_DIR:-$repo/.run/chaos}"
export CONV_CACHE_DIR="${CONV_CACHE_DIR:-$repo/.cache}"
export MYSQL_PORT="${CHAOS_MYSQL_PORT:-13306}"
export KAFKA_PORT="${CHAOS_KAFKA_PORT:-19292}" KAFKA_CONTROLLER_PORT="${CHAOS_KAFKA_CONTROLLER_PORT:-19293}"
export KAFKA_SASL_PORT="" # no SASL_SSL listener: chaos needs plaintext only
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"
cd "$REPO_ROOT"

services_up
step "building projector, api and chaos into $RUN_DIR/bin"
mkdir -p "$RUN_DIR/bin"
go build -o "$RUN_DIR/bin/" ./cmd/projector ./cmd/api ./cmd/chaos
step "chaos $*"
rc=0
"$RUN_DIR/bin/chaos" -mysql "convtest:convtest@tcp(127.0.0.1:$MYSQL_PORT)/" -brokers "127.0.0.1:$KAFKA_PORT" \
  -bin "$RUN_DIR/bin" -logs "$RUN_DIR/logs/chaos" \
  -db-restart "'$LOCAL_DIR/mysql.sh' stop && '$LOCAL_DIR/mysql.sh' start" \
  -kafka-restart "'$LOCAL_DIR/kafka.sh' stop && '$LOCAL_DIR/kafka.sh' start" "$@" || rc=$?
exit "$rc"
