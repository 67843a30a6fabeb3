#!/usr/bin/env bash
# kafka.sh - a real single-node Apache Kafka 4.1.1 broker (KRaft, no ZooKeeper,
# no Docker) on 127.0.0.1:9092 for development and tests.
#
#   kafka.sh deps     # Maven copies the broker jars into .cache/kafka-libs (cached by pom hash)
#   kafka.sh start    # deps + format (first time) + start in background + wait until ready
#   kafka.sh stop     # OUR broker only: SIGTERM (controlled shutdown), SIGKILL after a timeout
#   kafka.sh status   # exit 0: ours running, 3: another broker answers on 9092, 1: none
#
# State: .run/kafka/{data,logs,server.properties}, pid file .run/kafka.pid.
#
# One node of a cluster (deploy/local/cluster.sh): KAFKA_INSTANCE names the state directory and pid
# file (.run/$KAFKA_INSTANCE/, .run/$KAFKA_INSTANCE.pid), KAFKA_NODE_ID and KAFKA_QUORUM_VOTERS
# (id@host:controller-port,...) place it in the quorum, and KAFKA_REPLICATION (default 1) is the
# replication factor of the broker's internal topics and of topics created without one, with
# min.insync.replicas 2 when it is 3 or more and unclean leader election off.
# Data survives stop/start (topics created by `migrate` stay); KAFKA_FRESH=1 on
# start wipes it first. Topics are never auto-created (auto.create.topics.enable=false):
# the Go `migrate` command and the tests create them explicitly.
# If a broker that is not ours already answers on 127.0.0.1:9092, it is used and
# never stopped by us.
#
# A second client listener, SASL_SSL on 127.0.0.1:$KAFKA_SASL_PORT (default 9095; set it
# empty to turn it off), takes PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 over TLS, for the
# tests of secure connections. Its certificates are generated once (openssl) under
# .run/kafka/tls: ca.pem is what clients trust. PLAIN knows one user,
# convtest/convtest-secret (local only); SCRAM users are created through the admin API by
# whoever needs them (the tests do).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

POM="$LOCAL_DIR/pom.xml"
LOG4J_CONF="$LOCAL_DIR/log4j2.properties"
LIBS="$CACHE_DIR/kafka-libs"
INSTANCE="${KAFKA_INSTANCE:-kafka}"
KDIR="$RUN_DIR/$INSTANCE"
DATA="$KDIR/data"
KLOGS="$KDIR/logs"
PROPS="$KDIR/server.properties"
PIDFILE="$RUN_DIR/$INSTANCE.pid"

HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${KAFKA_SASL_PORT-9095}"
NODE_ID="${KAFKA_NODE_ID:-1}"
VOTERS="${KAFKA_QUORUM_VOTERS:-$NODE_ID@$HOST:$CONTROLLER_PORT}"
REPLICATION="${KAFKA_REPLICATION:-1}"
if [ "$REPLICATION" -ge 3 ]; then MIN_ISR=2; else MIN_ISR=1; fi
SESSION_TIMEOUT_MS="${KAFKA_BROKER_SESSION_TIMEOUT_MS:-9000}"
HEARTBEAT_MS="${KAFKA_BROKER_HEARTBEAT_MS:-2000}"
TLS_DIR="$KDIR/tls"
TLS_PASS=convtest-keystore
# Any base64url-encoded 16-byte UUID (22 chars). Fixed: the data dir is ours alone.
CLUSTER_ID="${KAFKA_CLUSTER_ID:-4L6g3nShT-eMCtK--X86sw}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
MVN_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"

java_bin() { if [ -n "${JAVA_HOME:-}" ]; then echo "$JAVA_HOME/bin/java"; else command -v java || true; fi; }

our_pid() {
  local pid
  pid="$(read_pid "$PIDFILE")"
  if pid_matches "$pid" " kafka\.Kafka $PROPS"; then echo "$pid"; fi
}

ensure_tools() {
  if [ -z "$(java_bin)" ]; then apt_install openjdk-17-jre-headless; fi
  if ! command -v mvn >/dev/null 2>&1; then apt_install maven; fi
}

deps() {
  local stamp="$LIBS/.pom.sha256" want t0=$SECONDS
  want="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  ensure_tools
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  log "resolving Kafka jars with Maven into $LIBS (first run downloads ~45 MB)"
  local mvnlog="$LOG_DIR/kafka-deps.log"
  mkdir -p "$LOG_DIR"
  # shellcheck disable=SC2086
  if ! mvn -B -Dstyle.color=never -f "$POM" ${KAFKA_MVN_OPTS:-} "$MVN_PLUGIN" \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$mvnlog" 2>&1; then
    rm -rf "$LIBS"
    grep -E 'ERROR|FAIL' "$mvnlog" | head -n 30 >&2 || tail -n 30 "$mvnlog" >&2
    die "maven could not resolve the Kafka jars (log: $mvnlog)"
  fi
  compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null || { rm -rf "$LIBS"; die "kafka_2.13 jar missing in $LIBS"; }
  echo "$want" >"$stamp"
  log "jars ready in $((SECONDS - t0))s"
}

# make_certs: a CA and a broker certificate for 127.0.0.1/localhost signed by it, as a PKCS12
# keystore; kept across restarts so clients' copies of ca.pem stay valid.
make_certs() {
  [ -f "$TLS_DIR/broker.p12" ] && [ -f "$TLS_DIR/ca.pem" ] && return 0
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  rm -rf "$TLS_DIR.tmp"
  mkdir -p "$TLS_DIR.tmp"
  (
    cd "$TLS_DIR.tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=conversations local CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.pem
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout "pass:$TLS_PASS" -out broker.p12
  ) >"$KLOGS/certs.log" 2>&1 || { cat "$KLOGS/certs.log" >&2; die "generating the SASL_SSL certificates failed"; }
  rm -rf "$TLS_DIR"
  mv "$TLS_DIR.tmp" "$TLS_DIR"
  log "generated TLS certificates in $TLS_DIR (clients trust ca.pem)"
}

write_config() {
  mkdir -p "$DATA" "$KLOGS"
  local listeners="PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://$HOST:$PORT"
  local protomap="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [ -n "$SASL_PORT" ]; then
    make_certs
    listeners="$listeners,SASL_SSL://$HOST:$SASL_PORT"
    advertised="$advertised,SASL_SSL://$HOST:$SASL_PORT"
    protomap="$protomap,SASL_SSL:SASL_SSL"
  fi
  cat >"$PROPS.tmp" <<EOF
# Generated by deploy/local/kafka.sh - KRaft broker for local dev / CI.
process.roles=broker,controller
node.id=$NODE_ID
# Static quorum: format WITHOUT --standalone.
controller.quorum.voters=$VOTERS
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protomap
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
num.recovery.threads.per.data.dir=1
num.partitions=1
# Topics are created explicitly (cmd/migrate, tests).
auto.create.topics.enable=false
delete.topic.enable=true
# Replication (KAFKA_REPLICATION): 1 for one broker; on a cluster an acknowledged record of an
# internal topic survives the loss of a broker.
default.replication.factor=$REPLICATION
# How long the controller waits for a broker's heartbeat before fencing it and moving its leaderships:
# what bounds the stall after a kill -9 (default 9000 ms).
broker.session.timeout.ms=$SESSION_TIMEOUT_MS
broker.heartbeat.interval.ms=$HEARTBEAT_MS
min.insync.replicas=$MIN_ISR
unclean.leader.election.enable=false
offsets.topic.replication.factor=$REPLICATION
# 1 instead of 50: the first consumer group comes up much faster
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=$REPLICATION
share.coordinator.state.topic.min.isr=$MIN_ISR
group.initial.rebalance.delay.ms=0
# Small footprint for a 2-core box
num.network.threads=2
num.io.threads=2
background.threads=2
log.cleaner.dedupe.buffer.size=2097152
# Local data: keep it small
log.retention.hours=24
log.segment.bytes=67108864
EOF
  if [ -n "$SASL_PORT" ]; then
    cat >>"$PROPS.tmp" <<EOF
# SASL_SSL listener for the secure-connection tests (local only: fixed test credentials).
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$TLS_PASS
listener.name.sasl_ssl.ssl.key.password=$TLS_PASS
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_convtest="convtest-secret";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  fi
  mv "$PROPS.tmp" "$PROPS"
}

dump_logs() {
  local f
  for f in "$KLOGS/stdout.log" "$KLOGS/server.log"; do
    [ -f "$f" ] && { log "---- tail $f"; tail -n 60 "$f" >&2; }
  done
  return 0
}

start() {
  local t0=$SECONDS pid
  pid="$(our_pid)"
  if [ -n "$pid" ] && port_open "$HOST" "$PORT"; then
    log "already running (ours, pid $pid) on $HOST:$PORT"
    return 0
  fi
  if [ -n "$pid" ]; then
    log "our broker (pid $pid) is not answering on $PORT: restarting it"
    stop_pid "$pid" "$STOP_TIMEOUT" kafka
  fi
  rm -f "$PIDFILE"

  if port_open "$HOST" "$PORT"; then
    log "using the broker already on $HOST:$PORT (not ours; will not stop it)"
    return 0
  fi
  if port_open "$HOST" "$CONTROLLER_PORT"; then
    die "$HOST:$CONTROLLER_PORT (controller port) is in use by another process"
  fi
  if [ -n "$SASL_PORT" ] && port_open "$HOST" "$SASL_PORT"; then
    die "$HOST:$SASL_PORT (SASL_SSL port, KAFKA_SASL_PORT) is in use by another process"
  fi

  deps
  local java lopts cp="$LIBS/*"
  java="$(java_bin)"
  lopts="-Dlog4j2.configurationFile=$LOG4J_CONF -Dkafka.logs.dir=$KLOGS"
  if [ -n "${KAFKA_FRESH:-}" ]; then
    log "KAFKA_FRESH set: wiping $DATA"
    rm -rf "$DATA"
  fi
  write_config

  # Format the log dir once (writes meta.properties + bootstrap checkpoint).
  if [ ! -f "$DATA/meta.properties" ]; then
    log "formatting $DATA (cluster id $CLUSTER_ID)"
    # shellcheck disable=SC2086
    if ! "$java" -Xmx256m $lopts -cp "$cp" kafka.tools.StorageTool format \
      -t "$CLUSTER_ID" -c "$PROPS" >"$KLOGS/format.out" 2>&1; then
      cat "$KLOGS/format.out" >&2
      die "kafka storage format failed"
    fi
  fi

  log "starting broker on $HOST:$PORT (controller $CONTROLLER_PORT, data $DATA)"
  # setsid: own session, so a Ctrl-C in the calling terminal does not kill it.
  # shellcheck disable=SC2086
  setsid "$java" $HEAP_OPTS $JVM_OPTS $lopts -cp "$cp" kafka.Kafka "$PROPS" \
    >>"$KLOGS/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"

  # The client port opens only once the broker is unfenced and serving requests.
  local deadline=$((SECONDS + START_TIMEOUT))
  until port_open "$HOST" "$PORT"; do
    if ! alive "$pid"; then
      rm -f "$PIDFILE"
      dump_logs
      die "broker exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      dump_logs
      stop_pid "$pid" "$STOP_TIMEOUT" kafka
      rm -f "$PIDFILE"
      die "broker not ready after ${START_TIMEOUT}s"
    fi
    sleep 0.3
  done
  if [ -n "$SASL_PORT" ]; then
    until port_open "$HOST" "$SASL_PORT"; do
      [ "$SECONDS" -lt "$deadline" ] || { dump_logs; die "SASL_SSL listener $HOST:$SASL_PORT not open"; }
      sleep 0.2
    done
  fi
  log "ready on $HOST:$PORT${SASL_PORT:+ and SASL_SSL $HOST:$SASL_PORT} (pid $pid, $((SECONDS - t0))s; logs $KLOGS)"
}

stop() {
  local pid
  pid="$(our_pid)"
  if [ -z "$pid" ]; then
    rm -f "$PIDFILE"
    if port_open "$HOST" "$PORT"; then log "not ours: leaving the broker on $HOST:$PORT alone"; else log "not running"; fi
    return 0
  fi
  log "stopping broker (pid $pid)"
  stop_pid "$pid" "$STOP_TIMEOUT" kafka
  rm -f "$PIDFILE"
  log "stopped"
}

status() {
  local pid
  pid="$(our_pid)"
  if [ -n "$pid" ]; then
    echo "kafka: running (ours, pid $pid) on $HOST:$PORT, port $(port_open "$HOST" "$PORT" && echo open || echo closed), logs $KLOGS"
    return 0
  fi
  if port_open "$HOST" "$PORT"; then echo "kafka: external broker on $HOST:$PORT (not ours)"; return 3; fi
  echo "kafka: not running"
  return 1
}

case "${1:-}" in
  deps) deps ;;
  start | stop | status) "$1" ;;
  *) echo "usage: $0 {deps|start|stop|status}" >&2; exit 2 ;;
esac
