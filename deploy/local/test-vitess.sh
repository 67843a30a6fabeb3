#!/usr/bin/env bash
# test-vitess.sh - `make test-vitess`: the read model sharded by user on Vitess, through vtgate.
#
# Starts (or reuses) MariaDB + Kafka as make test does, and vttestserver (deploy/local/vitess.sh: the
# keyspace conv in VITESS_SHARDS=2 shards, convmeta in one; the Vitess binaries are built once and
# cached), then runs, through vtgate:
#   - the store's own tests (internal/mysql) and the differential tests against the reference model
#     (internal/refmodel), in sessions that target one shard (TEST_VITESS_DSN=…/conv:-80);
#   - the sharded tests (TestSharded*, TestVitess*): two shards fed by their own projector groups that
#     crash between shards' commits, rebalances, API mutations on one shard while the other commits,
#     vtgate's routing of every statement of a sync.
# Stops only what it started. Extra arguments go to `go test` (default: the packages above).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export TEST_MYSQL_DSN="${TEST_MYSQL_DSN:-convtest:convtest@tcp(127.0.0.1:3306)/}"
export TEST_KAFKA_BROKERS="${TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
export REQUIRE_INTEGRATION="${REQUIRE_INTEGRATION:-1}"

services_up
started_vitess=0
if ! "$LOCAL_DIR/vitess.sh" status >/dev/null 2>&1; then
  step "starting vitess (vttestserver)"
  started_vitess=1
fi
stop_vitess() {
  if [ "$started_vitess" = 1 ]; then step "stopping vitess (started by this run)"; "$LOCAL_DIR/vitess.sh" stop || true; fi
}
# Vitess stops first, then what services_up started; the exit status is go test's.
trap 'rc=$?; stop_vitess; (exit $rc); _services_cleanup' EXIT
"$LOCAL_DIR/vitess.sh" start
eval "$("$LOCAL_DIR/vitess.sh" env)"
export TEST_VITESS_DSN="$VITESS_DSN:-80" TEST_VITESS_KEYSPACE_DSN="$VITESS_DSN" TEST_VITESS_SHARDS="$VITESS_SHARDS"
export TEST_VITESS_HTTP="$VITESS_HTTP"

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./internal/mysql/ ./internal/refmodel/)
step "go test -count=1 -p 1 through vtgate: ${pkgs[*]}"
echo "    TEST_VITESS_DSN=$TEST_VITESS_DSN TEST_VITESS_SHARDS=$TEST_VITESS_SHARDS"
rc=0
go test -count=1 -p 1 -timeout 20m "${pkgs[@]}" || rc=$?
step "go test exit status $rc"
exit "$rc"
