#!/usr/bin/env bash
# run.sh - the `make run` demo: services up, migrate, build, projector + API in
# the background, demo traffic, wait until user u1 has conversations, print
# ready-to-paste curl commands. Idempotent: a second run restarts the two apps
# and adds another batch of demo events.
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

: "${MYSQL_DSN:=conv:conv@tcp(127.0.0.1:3306)/conversations}"
: "${KAFKA_BROKERS:=127.0.0.1:9092}"
: "${KAFKA_TOPIC:=im.messages}"
: "${KAFKA_DLQ_TOPIC:=im.messages.dlq}"
: "${KAFKA_PARTITIONS:=6}"
: "${API_HTTP_ADDR:=127.0.0.1:8080}"
: "${PROJECTOR_HTTP_ADDR:=127.0.0.1:8081}"
: "${KAFKA_ALLOW_UNREPLICATED:=true}" # one broker (make cluster runs three)
export MYSQL_DSN KAFKA_BROKERS KAFKA_TOPIC KAFKA_DLQ_TOPIC KAFKA_PARTITIONS API_HTTP_ADDR PROJECTOR_HTTP_ADDR \
  KAFKA_ALLOW_UNREPLICATED

DEMO_EVENTS="${DEMO_EVENTS:-400}"
DEMO_USERS="${DEMO_USERS:-20}"
DEMO_GROUPS="${DEMO_GROUPS:-5}"
DEMO_SEED="${DEMO_SEED:-42}"
DEMO_UID=u1
SYNC_TIMEOUT="${DEMO_SYNC_TIMEOUT:-$([ "${DB:-}" = vitess ] && echo 180 || echo 60)}"
BIN="$RUN_DIR/bin"


# DB=vitess: the read model sharded by user on Vitess (vttestserver, 2 shards; a projector per shard).
DB="${DB:-mariadb}"
case "$DB" in mariadb | vitess) ;; *) die "DB=$DB: want mariadb (default) or vitess" ;; esac

step "starting mariadb";  "$LOCAL_DIR/mysql.sh" start
step "starting kafka";    "$LOCAL_DIR/kafka.sh" start
step "building ./cmd/..."
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/...
step "migrating (database + topics)"
"$BIN/migrate"
if [ "$DB" = vitess ]; then
  step "starting vitess (vttestserver; the first run builds Vitess, about 10 minutes)"
  "$LOCAL_DIR/vitess.sh" start
  step "starting one projector per shard and the api on vtgate"
  "$LOCAL_DIR/apps.sh" stop # the single-database apps of an earlier make run, if any
  "$LOCAL_DIR/vitess-apps.sh" start
  eval "$("$LOCAL_DIR/vitess.sh" env)"
  PROJECTOR_HTTP_ADDR="127.0.0.1:${VITESS_PROJECTOR_PORT:-16081}"
  proj_note=" (shard ${VITESS_SHARDS%%,*}; one projector per shard of $VITESS_SHARDS, ports from there up)"
else
  "$LOCAL_DIR/vitess-apps.sh" stop
  step "starting projector and api"
  "$LOCAL_DIR/apps.sh" start
fi

step "producing $DEMO_EVENTS demo events (users u1..u$DEMO_USERS, $DEMO_GROUPS groups, seed $DEMO_SEED)"
"$BIN/trafficgen" -brokers "$KAFKA_BROKERS" -topic "$KAFKA_TOPIC" -events "$DEMO_EVENTS" \
  -users "$DEMO_USERS" -groups "$DEMO_GROUPS" -seed "$DEMO_SEED"

api="$(base_url "$API_HTTP_ADDR")"
auth=()
auth_txt=""
if [ -n "${API_TOKEN:-}" ]; then
  auth=(-H "Authorization: Bearer $API_TOKEN")
  auth_txt=" -H 'Authorization: Bearer $API_TOKEN'"
fi

step "waiting until $DEMO_UID's conversations are projected (non-empty and settled)"
body=""
deadline=$((SECONDS + SYNC_TIMEOUT))
while :; do
  body="$(curl -s -m 5 -X POST "$api/conversation/sync" "${auth[@]}" -H 'Content-Type: application/json' \
    -d "{\"uid\":\"$DEMO_UID\",\"version\":0,\"msg_count\":1}" || true)"
  # Non-empty, and the same highest version twice in a row: batches are applied as records arrive, so
  # the first non-empty answer may come while the rest of the demo traffic is still being applied.
  case "$body" in
    \[\{*)
      ver="$(grep -oE '"version":[0-9]+' <<<"$body" | cut -d: -f2 | sort -n | tail -1)"
      [ "$ver" = "${prev_ver:-}" ] && break
      prev_ver="$ver"
      ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "last response: ${body:-<none>}" >&2
    for f in "$LOG_DIR"/projector*.log; do log "---- tail $f"; tail -n 30 "$f" >&2; done
    die "no conversations for $DEMO_UID after ${SYNC_TIMEOUT}s"
  fi
  sleep 0.5
done

# First conversation of the answer (items start with channel_id, channel_type)
# and the highest version seen, for the follow-up examples.
first="$(grep -oE '^\[\{"channel_id":"[^"]*","channel_type":[0-9]+' <<<"$body" || true)"
ch_id="$(sed -E 's/.*"channel_id":"([^"]*)".*/\1/' <<<"$first")"
ch_type="$(sed -E 's/.*"channel_type":([0-9]+)$/\1/' <<<"$first")"
[ -n "$first" ] || { ch_id=u2; ch_type=1; }
max_ver="$(grep -oE '"version":[0-9]+' <<<"$body" | cut -d: -f2 | sort -n | tail -1)"

cat <<EOF

Ready in $((SECONDS - T0))s (read model: $DB). Projector on $PROJECTOR_HTTP_ADDR${proj_note:-}, API on $API_HTTP_ADDR.

# full sync for $DEMO_UID with the 3 newest messages per conversation
curl -s -X POST $api/conversation/sync$auth_txt -H 'Content-Type: application/json' -d '{"uid":"$DEMO_UID","version":0,"msg_count":3}'

# mark $DEMO_UID's conversation $ch_id (type $ch_type) as read ...
curl -s -X POST $api/conversations/setUnread$auth_txt -H 'Content-Type: application/json' -d '{"uid":"$DEMO_UID","channel_id":"$ch_id","channel_type":$ch_type,"unread":0}'

# ... then an incremental sync returns just the rows changed since version $max_ver
curl -s -X POST $api/conversation/sync$auth_txt -H 'Content-Type: application/json' -d '{"uid":"$DEMO_UID","version":${max_ver:-0},"msg_count":1}'

Logs: $LOG_DIR/{projector*,api,mariadb}.log, $RUN_DIR/kafka/logs/server.log
Metrics: $(base_url "$PROJECTOR_HTTP_ADDR")/metrics, $api/metrics
Stop everything: make down
EOF
