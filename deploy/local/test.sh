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

step "go test -race -count=1 ${*:-./...}"
echo "    TEST_MYSQL_DSN=$TEST_MYSQL_DSN TEST_KAFKA_BROKERS=$TEST_KAFKA_BROKERS REQUIRE_INTEGRATION=$REQUIRE_INTEGRATION"
rc=0
CGO_ENABLED=1 go test -race -count=1 "${@:-./...}" || rc=$?
step "go test exit status $rc"
exit "$rc"
