#!/usr/bin/env bash
# test.sh - `make test`: bring up what the integration tests need (MariaDB +
# Kafka), run the whole Go test suite with the race detector, then stop what
# THIS invocation started (services that were already running stay running).
# Exits with go test's status. Extra arguments go to `go test` (default ./...).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export TEST_MYSQL_DSN="${TEST_MYSQL_DSN:-convtest:convtest@tcp(127.0.0.1:3306)/}"
export TEST_KAFKA_BROKERS="${TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
export REQUIRE_INTEGRATION="${REQUIRE_INTEGRATION:-1}"

# The race detector needs cgo and a C toolchain.
if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
  step "installing gcc (needed by go test -race)"
  apt_install gcc libc6-dev
fi

services_up

# The secure-connection tests need a SASL_SSL listener of the broker (kafka.sh opens one on
# KAFKA_SASL_PORT, 9095, with certificates under .run/kafka/tls). A broker that is not ours, or that
# was started before the listener existed, has none we can use: then a private second broker runs.
sasl_port="${KAFKA_SASL_PORT-9095}"
if [ -z "${TEST_KAFKA_SASL_BROKERS:-}" ]; then
  if [ -n "$sasl_port" ] && "$LOCAL_DIR/kafka.sh" status >/dev/null 2>&1 && port_open 127.0.0.1 "$sasl_port" &&
    [ -f "$RUN_DIR/kafka/tls/ca.pem" ]; then
    export TEST_KAFKA_SASL_BROKERS="127.0.0.1:$sasl_port" TEST_KAFKA_TLS_CA_FILE="$RUN_DIR/kafka/tls/ca.pem"
  else
    if ! "$LOCAL_DIR/kafka-sasl.sh" status >/dev/null 2>&1; then
      step "starting a private broker with a SASL_SSL listener (the running one has none of ours)"
      _STARTED+=(kafka-sasl)
      "$LOCAL_DIR/kafka-sasl.sh" start
    fi
    export TEST_KAFKA_SASL_BROKERS="127.0.0.1:${KAFKA_SASL_ONLY_SASL_PORT:-19095}"
    export TEST_KAFKA_SASL_ADMIN_BROKERS="127.0.0.1:${KAFKA_SASL_ONLY_PORT:-19092}"
    export TEST_KAFKA_TLS_CA_FILE="$RUN_DIR/kafka-sasl/kafka/tls/ca.pem"
  fi
fi

# Reads from database replicas are tested against a MariaDB primary with a replica (internal/replica):
# a private pair on 127.0.0.1:23311-23312 unless TEST_REPLICA_* name one.
if [ -z "${TEST_REPLICA_DSN:-}" ]; then
  if ! "$LOCAL_DIR/replica-pair.sh" status >/dev/null 2>&1; then
    step "starting a MariaDB primary and replica for the replica-read tests"
    _STARTED+=(replica-pair)
  fi
  eval "$("$LOCAL_DIR/replica-pair.sh" start)"
  export TEST_REPLICA_PRIMARY_DSN TEST_REPLICA_DSN TEST_REPLICA_ADMIN_DSN TEST_REPLICA_PIDFILE
fi

step "go test -race -count=1 -timeout 20m ${*:-./...}"
echo "    TEST_MYSQL_DSN=$TEST_MYSQL_DSN TEST_KAFKA_BROKERS=$TEST_KAFKA_BROKERS REQUIRE_INTEGRATION=$REQUIRE_INTEGRATION"
echo "    TEST_KAFKA_SASL_BROKERS=$TEST_KAFKA_SASL_BROKERS TEST_KAFKA_TLS_CA_FILE=$TEST_KAFKA_TLS_CA_FILE"
echo "    TEST_REPLICA_PRIMARY_DSN=$TEST_REPLICA_PRIMARY_DSN TEST_REPLICA_DSN=$TEST_REPLICA_DSN"
rc=0
CGO_ENABLED=1 go test -race -count=1 -timeout 20m "${@:-./...}" || rc=$?
if [ $# -eq 0 ]; then
  # Its own module (kustomize, k8s.io/api and Prometheus stay out of the service's go.mod).
  step "go test ./... in deploy/validate (Kubernetes manifests, alert rules, dashboard)"
  (cd deploy/validate && go test -count=1 ./...) || rc=$?
fi
step "go test exit status $rc"
exit "$rc"
