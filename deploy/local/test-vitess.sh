#!/usr/bin/env bash
# test-vitess.sh - `make test-vitess`: the read model sharded by user on Vitess, through vtgate.
#
# Starts (or reuses) MariaDB + Kafka as make test does, and vttestserver (deploy/local/vitess.sh: the
# keyspace conv in VITESS_SHARDS=2 shards, convmeta in one; the Vitess binaries are built once and
# cached), then runs, through vtgate:
#   - the store's own tests and contract suite (internal/mysql), the differential tests against the
#     reference model (internal/refmodel) and the API's tests (internal/httpapi), in sessions that target
#     one shard (TEST_VITESS_DSN=…/conv:-80; a test's second store gets the other shard);
#   - the sharded tests: the contract suite against the sharded read model (TestShardedContract), two
#     shards' groups losing offset commits, overlapping, with API mutations on one shard while the other
#     commits (TestShardedMatchesModel), vtgate's routing of a sync (TestShardedSyncIsOneShard), and the
#     projector binary, one per shard, killed between shards' commits (internal/e2e
#     TestVitessKillBetweenShardCommits, 3 seeds), convctl purge-user (cmd/convctl TestPurgeUserOnVitess).
# Not through vtgate: the projector's and the other end-to-end tests (they run tests in parallel, each on
# a database of its own, which one vttestserver's shards cannot give them).
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

echo "    TEST_VITESS_DSN=$TEST_VITESS_DSN TEST_VITESS_SHARDS=$TEST_VITESS_SHARDS"
rc=0
if [ $# -gt 0 ]; then
  step "go test -count=1 -p 1 through vtgate: $*"
  go test -count=1 -p 1 -timeout 20m "$@" || rc=$?
else
  # The tests share the shards, one at a time: packages one after the other (-p 1); of the end-to-end
  # tests only the sharded one (the others run their tests in parallel on one database each).
  step "go test -count=1 -p 1 through vtgate: ./internal/mysql/ ./internal/refmodel/ ./internal/httpapi/"
  go test -count=1 -p 1 -timeout 20m ./internal/mysql/ ./internal/refmodel/ ./internal/httpapi/ || rc=$?
  step "go test -count=1 -p 1 -run 'TestVitess|OnVitess' -v through vtgate: ./cmd/convctl/ ./internal/e2e/ (projector processes killed between shard commits)"
  e2e_log="$LOG_DIR/test-vitess-e2e.log"
  mkdir -p "$LOG_DIR"
  go test -count=1 -p 1 -timeout 20m -run 'TestVitess|OnVitess' -v ./cmd/convctl/ ./internal/e2e/ >"$e2e_log" 2>&1 || rc=$?
  grep -E '^(--- |PASS|FAIL|ok)|^ +(--- |vitess_test)' "$e2e_log" || true
  echo "    (whole output: $e2e_log)"
fi
step "go test exit status $rc"
exit "$rc"
