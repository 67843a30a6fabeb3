#!/usr/bin/env bash
# kafka-sasl.sh {start|stop|status} - a second, private broker (state in .run/kafka-sasl/) with a
# SASL_SSL listener, for `make test` when the broker already running on 127.0.0.1:9092 is not ours
# and has no SASL_SSL listener (it was started before that listener existed, or by someone else).
# Ports: plaintext 19092, controller 19093, SASL_SSL 19095. A broker that kafka.sh starts has the
# listener itself, so CI runs one broker.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CONV_RUN_DIR="${CONV_RUN_DIR:-$repo/.run}/kafka-sasl"
export CONV_CACHE_DIR="${CONV_CACHE_DIR:-$repo/.cache}"
export KAFKA_PORT="${KAFKA_SASL_ONLY_PORT:-19092}" KAFKA_CONTROLLER_PORT="${KAFKA_SASL_ONLY_CONTROLLER_PORT:-19093}"
export KAFKA_SASL_PORT="${KAFKA_SASL_ONLY_SASL_PORT:-19095}"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx384m}"
exec "$here/kafka.sh" "$@"
