#!/usr/bin/env bash
# bench.sh - `make bench`: bring up MariaDB and Kafka like test.sh, run
# ./cmd/bench (arguments are passed on), then stop what THIS invocation started.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export TEST_MYSQL_DSN="${TEST_MYSQL_DSN:-convtest:convtest@tcp(127.0.0.1:3306)/}"
export TEST_KAFKA_BROKERS="${TEST_KAFKA_BROKERS:-127.0.0.1:9092}"

services_up
step "go run ./cmd/bench $*"
rc=0
go run ./cmd/bench "$@" || rc=$?
exit "$rc"
