#!/usr/bin/env bash
# chaos-cluster.sh - `make chaos-cluster`: cmd/chaos on the topology of `make cluster` (three brokers, a
# MariaDB primary with two replicas the API replicas read): besides make chaos's kills of projector and
# API replicas, the broker leading the most partitions is killed with -9 while events flow and started
# again, a database replica is frozen (SIGSTOP) for 10 s and resumed, and the primary is restarted.
# It brings the cluster up first (make cluster) and leaves it running. Arguments go to cmd/chaos.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
"$here/cluster.sh" up
export CONV_RUN_DIR="${CLUSTER_RUN_DIR:-$repo/.run/cluster}"
# shellcheck source=deploy/local/lib.sh
. "$here/lib.sh"
cd "$REPO_ROOT"
# shellcheck disable=SC1091
. "$RUN_DIR/env"
step "building chaos into $RUN_DIR/bin"
go build -o "$RUN_DIR/bin/" ./cmd/projector ./cmd/api ./cmd/chaos
read_dsns="convtest:convtest@tcp(127.0.0.1:23302)/ convtest:convtest@tcp(127.0.0.1:23303)/"
step "chaos on the cluster $*"
"$RUN_DIR/bin/chaos" -mysql "convtest:convtest@tcp(127.0.0.1:23301)/" -brokers "$KAFKA_BROKERS" \
  -bin "$RUN_DIR/bin" -logs "$RUN_DIR/logs/chaos" -read-dsns "$read_dsns" \
  -replica-pidfiles "$RUN_DIR/mariadb-replica-1.pid $RUN_DIR/mariadb-replica-2.pid" \
  -broker-pidfile "$RUN_DIR/kafka-%d.pid" -broker-start "'$here/cluster.sh' start-node kafka-%d" \
  -db-restart "'$here/cluster.sh' restart-node mariadb-primary" "$@"
