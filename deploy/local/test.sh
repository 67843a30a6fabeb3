#!/usr/bin/env bash
# test.sh - `make test`: bring up what the integration tests need (MariaDB +
# Kafka), run the whole Go test suite with the race detector, then stop what
# THIS invocation started (services that were already running stay running).
# Exits with go test's status. Extra arguments go to `go test` (default ./...).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

T0=$SECONDS
step() { echo "==> $* (+$((SECONDS - T0))s)"; }

export TEST_MYSQL_DSN="${TEST_MYSQL_DSN:-convtest:convtest@tcp(127.0.0.1:3306)/}"
export TEST_KAFKA_BROKERS="${TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
export REQUIRE_INTEGRATION="${REQUIRE_INTEGRATION:-1}"

STARTED=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$? i
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    step "stopping $(label "${STARTED[i]}") (started by this run)"
    "$LOCAL_DIR/${STARTED[i]}.sh" stop || true
  done
  echo "==> done in $((SECONDS - T0))s (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

label() { case "$1" in mysql) echo mariadb ;; *) echo "$1" ;; esac; }

# svc_up NAME: start deploy/local/NAME.sh unless already up; remember if we started it.
svc_up() {
  local name="$1" before=0
  "$LOCAL_DIR/$name.sh" status >/dev/null 2>&1 || before=$?
  if [ "$before" = 0 ] || [ "$before" = 3 ]; then
    step "$(label "$name") already up, leaving it running: $("$LOCAL_DIR/$name.sh" status 2>/dev/null || true)"
    return 0
  fi
  step "starting $(label "$name")"
  # Record before starting: if start fails half-way, cleanup still stops it.
  STARTED+=("$name")
  "$LOCAL_DIR/$name.sh" start
}

# The race detector needs cgo and a C toolchain.
if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
  step "installing gcc (needed by go test -race)"
  apt_install gcc libc6-dev
fi

svc_up mysql
svc_up kafka

step "go test -race -count=1 ${*:-./...}"
echo "    TEST_MYSQL_DSN=$TEST_MYSQL_DSN TEST_KAFKA_BROKERS=$TEST_KAFKA_BROKERS REQUIRE_INTEGRATION=$REQUIRE_INTEGRATION"
rc=0
CGO_ENABLED=1 go test -race -count=1 "${@:-./...}" || rc=$?
step "go test exit status $rc"
exit "$rc"
