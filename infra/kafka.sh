#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1,
# run from the Apache Kafka jars on Maven Central: no Docker, no Kafka download by hand.
# Needs bash, java (17+), mvn (first run, to resolve the jars) and python3 (readiness check).
#
#   infra/kafka.sh up                start (resolve jars, format once, wait until it serves)
#   infra/kafka.sh down [--purge]    stop the broker this script started; --purge wipes its data
#   infra/kafka.sh down --kill       SIGKILL it at once (chaos tests)
#   infra/kafka.sh restart           down + up, keeping the data
#   infra/kafka.sh status            exit 0 serving, 1 process up but not serving, 3 not running
#   infra/kafka.sh logs [-f] [-n N]  show (or follow) its log
#   infra/kafka.sh jars              only resolve the jars into the cache
#
# TLS + SASL/SCRAM (KAFKA_SASL_SSL=1, single node only): the broker gets a second client
# listener SASL_SSL://127.0.0.1:KAFKA_SASL_PORT (SCRAM-SHA-512; PLAINTEXT stays for the
# controller and inter-broker side on loopback). A CA and a broker certificate for
# 127.0.0.1/localhost are made into RUN_DIR/tls with openssl (keystore broker.p12, PKCS12),
# the SCRAM user is created when data/ is formatted, its password generated into
# RUN_DIR/sasl.password (mode 600).
#   KAFKA_SASL_SSL=1 infra/kafka.sh up   start with the SASL_SSL listener (data formatted with it)
#   infra/kafka.sh sasl-env              print the PIXELPIPE_KAFKA* exports a client needs
#
# Behind a TCP fault proxy (KAFKA_PROXIED_PORT=P KAFKA_ADVERTISED_PROXY_PORT=Q, single node
# only): one more client listener PROXIED://127.0.0.1:P (mapped to PLAINTEXT), advertised as
# 127.0.0.1:Q, the port a proxy (infra/toxiproxy.sh) listens on and forwards to P. Clients
# bootstrapped on Q are told Q for the broker, so all their traffic goes through the proxy;
# the controller and inter-broker side and the PLAINTEXT listener stay direct.
#   KAFKA_PROXIED_PORT=29095 KAFKA_ADVERTISED_PROXY_PORT=29096 infra/kafka.sh up
#
# Three nodes (KAFKA_NODES=3): three combined broker + controller KRaft nodes, one cluster id,
# client ports KAFKA_PORT, +10, +20 (controllers one above each), run dir
# infra/.run/kafka-cluster-PORT/nodeN; replication 3 and min.insync.replicas=2 by default.
#   KAFKA_NODES=3 infra/kafka.sh up|down|restart|status|logs   as above, for every node
#   KAFKA_NODES=3 infra/kafka.sh stop-node N | kill-node N | start-node N   (N = 1..3; chaos)
#   KAFKA_NODES=3 infra/kafka.sh logs [--node N] [-f] [-n N]    every node's log, or one
#
# Environment (all optional):
#   KAFKA_VERSION=3.9.1          Apache Kafka version (3.x and 4.x are both supported)
#   KAFKA_NODES=1                1: the single broker; 3: the three-node cluster
#   KAFKA_PORT=9092              client (PLAINTEXT) port on 127.0.0.1
#   KAFKA_CONTROLLER_PORT        KRaft controller port (default KAFKA_PORT + 1)
#   KAFKA_HOME_DIR               run dir: data, config, pid, log (default infra/.run/kafka-PORT)
#   KAFKA_CACHE_DIR              jar cache (default infra/.cache; jars in kafka-VERSION/)
#   KAFKA_AUTO_CREATE_TOPICS     auto.create.topics.enable (default false: declare topics)
#   KAFKA_OVERRIDES              extra "key=value key=value" broker properties (last wins)
#   KAFKA_HEAP_OPTS              default "-Xms128m -Xmx512m" (3 nodes: -Xmx256m each); KAFKA_JVM_OPTS
#   KAFKA_START_TIMEOUT=120      seconds to wait for metadata; KAFKA_STOP_TIMEOUT=30 before SIGKILL
#   KAFKA_SASL_SSL=0             1: add the SASL_SSL listener (see above)
#   KAFKA_SASL_PORT              its port (default KAFKA_PORT + 2); KAFKA_SASL_USER=pixelpipe
#   KAFKA_PROXIED_PORT           port of the PROXIED listener (unset: no such listener)
#   KAFKA_ADVERTISED_PROXY_PORT  the proxy's listen port it advertises (needed with the above)
#   PYTHON                       interpreter for infra/kafka_ready.py (default python3)
set -Eeuo pipefail

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_VERSION=${KAFKA_VERSION:-3.9.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_HOST=127.0.0.1
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
KAFKA_AUTO_CREATE_TOPICS=${KAFKA_AUTO_CREATE_TOPICS:-false}
KAFKA_NODES=${KAFKA_NODES:-1}
KAFKA_HEAP_OPTS_ENV=${KAFKA_HEAP_OPTS:-}
KAFKA_CONTROLLER_PORT_ENV=${KAFKA_CONTROLLER_PORT:-}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}
KAFKA_OVERRIDES=${KAFKA_OVERRIDES:-}
MDEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
KAFKA_SASL_SSL=${KAFKA_SASL_SSL:-0}
KAFKA_SASL_USER=${KAFKA_SASL_USER:-pixelpipe}
SASL_MECHANISM=SCRAM-SHA-512
SCRAM_ITERATIONS=8192
KAFKA_PROXIED_PORT=${KAFKA_PROXIED_PORT:-}
KAFKA_ADVERTISED_PROXY_PORT=${KAFKA_ADVERTISED_PROXY_PORT:-}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
# shared helpers (die, need, alive, cmdline_of, locks, ...): infra/lib.sh
# shellcheck source=lib.sh
source "$INFRA_DIR/lib.sh"

[[ $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "KAFKA_VERSION must look like 3.9.1, got '$KAFKA_VERSION'"
KAFKA_MAJOR=${KAFKA_VERSION%%.*}
valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 > 0 && $1 < 65536)); }
valid_port "$KAFKA_PORT" || die "bad KAFKA_PORT '$KAFKA_PORT'"
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
valid_port "$KAFKA_CONTROLLER_PORT" || die "bad KAFKA_CONTROLLER_PORT '$KAFKA_CONTROLLER_PORT'"
((KAFKA_CONTROLLER_PORT != KAFKA_PORT)) || die "KAFKA_CONTROLLER_PORT must differ from KAFKA_PORT"

RUN_DIR=${KAFKA_HOME_DIR:-$INFRA_DIR/.run/kafka-$KAFKA_PORT}
CACHE_DIR=${KAFKA_CACHE_DIR:-$INFRA_DIR/.cache}
LIB_DIR=$CACHE_DIR/kafka-$KAFKA_VERSION
DATA_DIR=$RUN_DIR/data
PID_FILE=$RUN_DIR/kafka.pid
LOG_FILE=$RUN_DIR/kafka.log
LOCK_DIR=$RUN_DIR/.lock
BOOTSTRAP=$KAFKA_HOST:$KAFKA_PORT
MARKER=-Dpixelpipe.kafka.home=$RUN_DIR
TLS_DIR=$RUN_DIR/tls
SASL_PASSWORD_FILE=$RUN_DIR/sasl.password
# empty unless KAFKA_SASL_SSL=1 (sasl_init): the default configuration stays as it was
SASL_LISTENER= SASL_ADVERTISED= SASL_MAP=
# empty unless KAFKA_PROXIED_PORT is set (proxied_init): the default configuration stays as it was
PROXIED_LISTENER= PROXIED_ADVERTISED= PROXIED_MAP=
SCRAM_FORMAT=0
JAVA=java
[[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]] && JAVA=$JAVA_HOME/bin/java
PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}

# ---------------------------------------------------------------------------------- helpers

# is_ours PID: PID is a live java kafka.Kafka process started for this run dir.
is_ours() {
  local cmd
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  alive "$1" || return 1
  cmd=$(cmdline_of "$1") || return 1
  [[ $cmd == *java* && $cmd == *" kafka.Kafka "* && $cmd == *"$MARKER "* ]]
}

# running_pid: prints the pid of our broker, or fails (and drops a stale pid file).
running_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  if is_ours "$pid"; then
    printf '%s\n' "$pid"
    return 0
  fi
  log "removing stale pid file $PID_FILE (pid '$pid' is not this broker)"
  rm -f "$PID_FILE"
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null; }

# serving [WAIT]: the broker answers a real Metadata request (falls back to the log line).
serving() {
  local wait=${1:-0}
  if [[ -n $PYTHON ]]; then
    "$PYTHON" "$INFRA_DIR/kafka_ready.py" --bootstrap "$BOOTSTRAP" --wait "$wait" --timeout 3 --quiet
  else
    grep -q 'Kafka Server started' "$LOG_FILE" 2>/dev/null && port_in_use "$KAFKA_PORT"
  fi
}

version_lt() { [[ $1 != "$2" && $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1) == "$1" ]]; }

tail_log() {
  local n=${1:-60}
  if [[ -s $LOG_FILE ]]; then
    log "last $n lines of $LOG_FILE:"
    tail -n "$n" "$LOG_FILE" >&2
  fi
}

acquire_lock() {
  mkdir -p "$RUN_DIR"
  take_lock "$LOCK_DIR" $((KAFKA_START_TIMEOUT + KAFKA_STOP_TIMEOUT + 60))
  trap release_lock EXIT
  trap 'exit 130' INT TERM
}

# -------------------------------------------------------------------------------- jars

resolve_jars() {
  local tmp
  [[ -f $LIB_DIR/.complete ]] && return 0
  need mvn "needed once to resolve Kafka $KAFKA_VERSION from Maven Central"
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d "$CACHE_DIR/.kafka-$KAFKA_VERSION.XXXXXX")
  log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR (first run only)"
  if ! mvn -q -B -Dstyle.color=never -f "$INFRA_DIR/pom.xml" \
    "-Dkafka.version=$KAFKA_VERSION" "-Dkafka.major=$KAFKA_MAJOR" \
    "$MDEP_PLUGIN:copy-dependencies" -DincludeScope=runtime "-DoutputDirectory=$tmp" \
    >"$tmp.mvn.log" 2>&1; then
    cat "$tmp.mvn.log" >&2
    rm -rf "$tmp" "$tmp.mvn.log"
    die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is the version on Maven Central?)"
  fi
  [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf "$tmp" "$tmp.mvn.log"; die "kafka_2.13-$KAFKA_VERSION.jar missing after resolution"; }
  rm -f "$tmp.mvn.log"
  touch "$tmp/.complete"
  if [[ -d $LIB_DIR ]]; then
    rm -rf "$tmp" # another run won the race
  else
    mv "$tmp" "$LIB_DIR" 2>/dev/null || rm -rf "$tmp"
  fi
  [[ -f $LIB_DIR/.complete ]] || die "jar cache $LIB_DIR is incomplete; remove it and retry"
}

# ------------------------------------------------------------------------------ config

# Kafka 4.x logs through log4j2, 3.x through the log4j 1.x API (reload4j).
if ((KAFKA_MAJOR >= 4)); then
  LOG_OPT=-Dlog4j2.configurationFile=$RUN_DIR/log4j2.properties
else
  LOG_OPT=-Dlog4j.configuration=file:$RUN_DIR/log4j.properties
fi

write_config() {
  local kv
  mkdir -p "$DATA_DIR"
  {
    echo "# written by infra/kafka.sh on every start: edit KAFKA_OVERRIDES, not this file"
    echo "process.roles=broker,controller"
    echo "node.id=1"
    echo "controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
    echo "listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT$SASL_LISTENER$PROXIED_LISTENER"
    echo "advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT$SASL_ADVERTISED$PROXIED_ADVERTISED"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "controller.listener.names=CONTROLLER"
    echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$SASL_MAP$PROXIED_MAP"
    echo "log.dirs=$DATA_DIR"
    echo "num.partitions=1"
    echo "default.replication.factor=1"
    echo "min.insync.replicas=1"
    echo "auto.create.topics.enable=$KAFKA_AUTO_CREATE_TOPICS"
    echo "offsets.topic.replication.factor=1"
    echo "offsets.topic.num.partitions=1"
    echo "transaction.state.log.replication.factor=1"
    echo "transaction.state.log.min.isr=1"
    echo "transaction.state.log.num.partitions=1"
    echo "group.initial.rebalance.delay.ms=0"
    if ((KAFKA_MAJOR >= 4)); then
      echo "share.coordinator.state.topic.replication.factor=1"
      echo "share.coordinator.state.topic.min.isr=1"
    fi
    if ((KAFKA_SASL_SSL)); then
      sasl_properties
    fi
    for kv in $KAFKA_OVERRIDES; do
      [[ $kv == *=* ]] || die "KAFKA_OVERRIDES item '$kv' is not key=value"
      echo "$kv"
    done
  } >"$RUN_DIR/server.properties"

  write_log_config
}

# write_log_config: the log4j (3.x) or log4j2 (4.x) configuration in $RUN_DIR.
write_log_config() {
  if ((KAFKA_MAJOR >= 4)); then
    cat >"$RUN_DIR/log4j2.properties" <<'EOF'
status = warn
name = pixelpipe-kafka
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  else
    cat >"$RUN_DIR/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
EOF
  fi
}

kafka_java() {
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS / KAFKA_JVM_OPTS are word lists on purpose
  "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS "$LOG_OPT" -Djava.awt.headless=true -cp "$LIB_DIR/*" "$@"
}

# format_once: format the KRaft data dir (static quorum) unless it already is.
format_once() {
  local cluster_id formatted
  if [[ -f $DATA_DIR/meta.properties ]]; then
    formatted=$(cat "$RUN_DIR/formatted.version" 2>/dev/null || echo unknown)
    if [[ $formatted != unknown ]] && version_lt "$KAFKA_VERSION" "$formatted"; then
      die "$DATA_DIR was formatted by Kafka $formatted and cannot be run by older $KAFKA_VERSION: use 'down --purge' or another KAFKA_HOME_DIR"
    fi
    return 0
  fi
  cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE" | tail -n1)
  [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || { tail_log 30; die "StorageTool random-uuid gave '$cluster_id'"; }
  log "formatting $DATA_DIR (cluster id $cluster_id, Kafka $KAFKA_VERSION)"
  local -a format_cmd=(kafka.tools.StorageTool format -t "$cluster_id" -c "$RUN_DIR/server.properties")
  ((SCRAM_FORMAT)) && format_cmd=("@$(scram_args_file "$cluster_id")") # KAFKA_SASL_SSL=1
  if ! kafka_java "${format_cmd[@]}" >>"$LOG_FILE" 2>&1; then
    rm -f "$RUN_DIR/.format.args"
    tail_log 30
    die "formatting $DATA_DIR failed"
  fi
  rm -f "$RUN_DIR/.format.args"
  printf '%s\n' "$KAFKA_VERSION" >"$RUN_DIR/formatted.version"
}

stop_pid() {
  local pid=$1 signal=${2:-TERM} deadline
  kill "-$signal" "$pid" 2>/dev/null || true
  deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while alive "$pid"; do
    if ((SECONDS >= deadline)) && [[ $signal != KILL ]]; then
      log "pid $pid still running after ${KAFKA_STOP_TIMEOUT}s: SIGKILL"
      signal=KILL
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 15))
    elif ((SECONDS >= deadline)); then
      die "pid $pid survived SIGKILL"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------- commands

cmd_up() {
  local pid running_version deadline
  need "$JAVA" "install a Java 17+ runtime"
  resolve_jars
  acquire_lock
  if pid=$(running_pid); then
    running_version=$(cat "$RUN_DIR/running.version" 2>/dev/null || echo unknown)
    if [[ $running_version != "$KAFKA_VERSION" ]]; then
      die "a Kafka $running_version broker (pid $pid) already runs from $RUN_DIR; asked for $KAFKA_VERSION: run 'down' first"
    fi
    if ((KAFKA_SASL_SSL)) && [[ $(cat "$RUN_DIR/running.sasl" 2>/dev/null) != "$KAFKA_SASL_PORT" ]]; then
      die "the broker (pid $pid) from $RUN_DIR runs without a SASL_SSL listener on $KAFKA_HOST:$KAFKA_SASL_PORT: run 'down' first"
    fi
    if [[ -n $PROXIED_LISTENER && $(cat "$RUN_DIR/running.proxied" 2>/dev/null) != "$KAFKA_PROXIED_PORT $KAFKA_ADVERTISED_PROXY_PORT" ]]; then
      die "the broker (pid $pid) from $RUN_DIR runs without a PROXIED listener on $KAFKA_HOST:$KAFKA_PROXIED_PORT advertised as :$KAFKA_ADVERTISED_PROXY_PORT: run 'down' first"
    fi
    if serving "$KAFKA_START_TIMEOUT"; then
      log "already running: Kafka $running_version, pid $pid, bootstrap $BOOTSTRAP ($RUN_DIR)"
      echo "$BOOTSTRAP"
      return 0
    fi
    tail_log
    die "pid $pid runs from $RUN_DIR but does not serve metadata on $BOOTSTRAP"
  fi
  port_in_use "$KAFKA_PORT" && die "$BOOTSTRAP is already taken by another process (not a broker started from $RUN_DIR)"
  port_in_use "$KAFKA_CONTROLLER_PORT" && die "$KAFKA_HOST:$KAFKA_CONTROLLER_PORT (controller port) is already taken by another process"
  if ((KAFKA_SASL_SSL)); then
    port_in_use "$KAFKA_SASL_PORT" && die "$KAFKA_HOST:$KAFKA_SASL_PORT (SASL_SSL port) is already taken by another process"
    sasl_prepare
  fi
  if [[ -n $PROXIED_LISTENER ]]; then
    port_in_use "$KAFKA_PROXIED_PORT" && die "$KAFKA_HOST:$KAFKA_PROXIED_PORT (PROXIED port) is already taken by another process"
  fi

  write_config
  [[ -f $LOG_FILE ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"
  format_once
  if ((KAFKA_SASL_SSL)); then
    [[ -f $RUN_DIR/sasl.formatted ]] || printf '%s %s\n' "$SASL_MECHANISM" "$KAFKA_SASL_USER" >"$RUN_DIR/sasl.formatted"
  fi

  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, run dir $RUN_DIR)"
  local -a launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # shellcheck disable=SC2086 # word lists on purpose
  nohup "${launcher[@]}" "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$RUN_DIR" "$LOG_OPT" "$MARKER" \
    -cp "$LIB_DIR/*" kafka.Kafka "$RUN_DIR/server.properties" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  printf '%s\n' "$KAFKA_VERSION" >"$RUN_DIR/running.version"
  if ((KAFKA_SASL_SSL)); then
    printf '%s\n' "$KAFKA_SASL_PORT" >"$RUN_DIR/running.sasl"
  else
    rm -f "$RUN_DIR/running.sasl"
  fi
  if [[ -n $PROXIED_LISTENER ]]; then
    printf '%s %s\n' "$KAFKA_PROXIED_PORT" "$KAFKA_ADVERTISED_PROXY_PORT" >"$RUN_DIR/running.proxied"
  else
    rm -f "$RUN_DIR/running.proxied"
  fi

  deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    if ! alive "$pid"; then
      rm -f "$PID_FILE"
      tail_log
      die "the broker exited during start-up (log: $LOG_FILE)"
    fi
    if serving 0 && { ((!KAFKA_SASL_SSL)) || port_in_use "$KAFKA_SASL_PORT"; } &&
      { [[ -z $PROXIED_LISTENER ]] || port_in_use "$KAFKA_PROXIED_PORT"; }; then
      break
    fi
    if ((SECONDS >= deadline)); then
      tail_log
      log "not serving metadata on $BOOTSTRAP after ${KAFKA_START_TIMEOUT}s: stopping pid $pid"
      stop_pid "$pid"
      rm -f "$PID_FILE"
      die "start-up timed out"
    fi
    sleep 0.5
  done
  if ! is_ours "$pid"; then
    die "pid $pid serves $BOOTSTRAP but does not look like the broker this script started"
  fi
  log "serving: Kafka $KAFKA_VERSION, pid $pid, bootstrap $BOOTSTRAP in ${SECONDS}s"
  if ((KAFKA_SASL_SSL)); then
    log "SASL_SSL listener: $KAFKA_HOST:$KAFKA_SASL_PORT ($SASL_MECHANISM, user $KAFKA_SASL_USER, CA $TLS_DIR/ca.crt); client settings: infra/kafka.sh sasl-env"
  fi
  if [[ -n $PROXIED_LISTENER ]]; then
    log "PROXIED listener: $KAFKA_HOST:$KAFKA_PROXIED_PORT advertised as $KAFKA_HOST:$KAFKA_ADVERTISED_PROXY_PORT (point a proxy there at it; bootstrap clients on $KAFKA_HOST:$KAFKA_ADVERTISED_PROXY_PORT)"
  fi
  echo "$BOOTSTRAP"
}

cmd_down() {
  local purge=0 signal=TERM pid
  while (($#)); do
    case $1 in
      --purge) purge=1 ;;
      --kill) signal=KILL ;;
      *) die "down: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -d $RUN_DIR ]] || { log "not running (no run dir $RUN_DIR)"; return 0; }
  acquire_lock
  if pid=$(running_pid); then
    log "stopping Kafka pid $pid ($RUN_DIR) with SIG$signal"
    stop_pid "$pid" "$signal"
    rm -f "$PID_FILE" "$RUN_DIR/running.version" "$RUN_DIR/running.sasl" "$RUN_DIR/running.proxied"
    log "stopped"
  else
    log "not running ($RUN_DIR)"
  fi
  if ((purge)); then
    log "purging data in $RUN_DIR"
    rm -rf "$DATA_DIR"
    rm -f "$RUN_DIR/formatted.version" "$RUN_DIR/server.properties" "$RUN_DIR/log4j.properties" "$RUN_DIR/log4j2.properties"
    # the SCRAM user lives in the wiped metadata: its password and the certificates go too
    rm -rf "$TLS_DIR"
    rm -f "$SASL_PASSWORD_FILE" "$RUN_DIR/sasl.formatted" "$RUN_DIR/tls.log" "$RUN_DIR/.format.args"
  fi
}

cmd_status() {
  local pid version
  if ! pid=$(running_pid 2>/dev/null); then
    echo "stopped: no broker started from $RUN_DIR"
    return 3
  fi
  version=$(cat "$RUN_DIR/running.version" 2>/dev/null || echo unknown)
  if serving 0; then
    echo "running: Kafka $version, pid $pid, bootstrap $BOOTSTRAP, run dir $RUN_DIR"
    return 0
  fi
  echo "starting or unhealthy: Kafka $version, pid $pid runs but does not serve metadata on $BOOTSTRAP"
  return 1
}

cmd_logs() {
  local follow=0 lines=200
  while (($#)); do
    case $1 in
      -f | --follow) follow=1 ;;
      -n) lines=${2:?-n needs a number}; shift ;;
      *) die "logs: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -f $LOG_FILE ]] || die "no log yet at $LOG_FILE"
  if ((follow)); then
    exec tail -n "$lines" -F "$LOG_FILE"
  fi
  tail -n "$lines" "$LOG_FILE"
}

# ------------------------------------------------------------- TLS + SASL/SCRAM (KAFKA_SASL_SSL=1)
#
# One more client listener, SASL_SSL://127.0.0.1:KAFKA_SASL_PORT, authenticated with
# SCRAM-SHA-512; PLAINTEXT stays for the controller and the inter-broker side on loopback.
# RUN_DIR/tls: ca.key + ca.crt (a CA made here), broker.key + broker.crt (127.0.0.1 and
# localhost, signed by that CA), broker.p12 (the broker's PKCS12 keystore), truststore.p12
# (the CA, for Java clients), store.password; RUN_DIR/sasl.password: the SCRAM user's password.
# Secrets are mode 600 and never on a command line (StorageTool gets the SCRAM credential in a
# java @argfile; openssl and keytool read passwords from files).

# sasl_init: validate the SASL settings and fill the listener variables write_config uses.
sasl_init() {
  [[ $KAFKA_SASL_SSL == 1 ]] || die "KAFKA_SASL_SSL must be 0 or 1, got '$KAFKA_SASL_SSL'"
  KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
  valid_port "$KAFKA_SASL_PORT" || die "bad KAFKA_SASL_PORT '$KAFKA_SASL_PORT'"
  ((KAFKA_SASL_PORT != KAFKA_PORT && KAFKA_SASL_PORT != KAFKA_CONTROLLER_PORT)) ||
    die "KAFKA_SASL_PORT must differ from KAFKA_PORT and KAFKA_CONTROLLER_PORT"
  [[ $KAFKA_SASL_USER =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "KAFKA_SASL_USER must be 1-64 characters A-Z a-z 0-9 . _ -, got '$KAFKA_SASL_USER'"
  SASL_LISTENER=,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT
  SASL_ADVERTISED=$SASL_LISTENER
  SASL_MAP=,SASL_SSL:SASL_SSL
}

# ------------------------------------------------- behind a TCP fault proxy (KAFKA_PROXIED_PORT)

# proxied_init: validate the proxy ports and fill the listener variables write_config uses.
proxied_init() {
  [[ -n $KAFKA_PROXIED_PORT && -n $KAFKA_ADVERTISED_PROXY_PORT ]] ||
    die "KAFKA_PROXIED_PORT and KAFKA_ADVERTISED_PROXY_PORT go together (the listener's port and the proxy's)"
  valid_port "$KAFKA_PROXIED_PORT" || die "bad KAFKA_PROXIED_PORT '$KAFKA_PROXIED_PORT'"
  valid_port "$KAFKA_ADVERTISED_PROXY_PORT" || die "bad KAFKA_ADVERTISED_PROXY_PORT '$KAFKA_ADVERTISED_PROXY_PORT'"
  local taken=" $KAFKA_PORT $KAFKA_CONTROLLER_PORT ${KAFKA_SASL_PORT:-} "
  [[ $taken != *" $KAFKA_PROXIED_PORT "* ]] ||
    die "KAFKA_PROXIED_PORT must differ from the broker's other ports ($taken)"
  [[ $taken != *" $KAFKA_ADVERTISED_PROXY_PORT "* && $KAFKA_ADVERTISED_PROXY_PORT != "$KAFKA_PROXIED_PORT" ]] ||
    die "KAFKA_ADVERTISED_PROXY_PORT is the proxy's own port: it must differ from the broker's ports"
  PROXIED_LISTENER=,PROXIED://$KAFKA_HOST:$KAFKA_PROXIED_PORT
  PROXIED_ADVERTISED=,PROXIED://$KAFKA_HOST:$KAFKA_ADVERTISED_PROXY_PORT
  PROXIED_MAP=,PROXIED:PLAINTEXT
}

# new_secret: 32 random bytes as 64 hex characters.
new_secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# ensure_tls: the CA, the broker's certificate and its keystore, made once per run dir.
ensure_tls() {
  local tls_log=$RUN_DIR/tls.log
  [[ -s $TLS_DIR/broker.p12 && -s $TLS_DIR/ca.crt && -s $TLS_DIR/store.password ]] && return 0
  need openssl "needed to make the TLS certificates of the SASL_SSL listener"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  log "making a CA and a broker certificate for $KAFKA_HOST/localhost in $TLS_DIR"
  if ! (
    set -e
    umask 077
    cd "$TLS_DIR"
    new_secret >store.password
    openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 825 \
      -subj "/O=pixelpipe infra/kafka.sh/CN=pixelpipe local Kafka CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.crt
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/O=pixelpipe infra/kafka.sh/CN=localhost" \
      -keyout broker.key -out broker.csr
    printf '%s\n' "subjectAltName=IP:$KAFKA_HOST,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(new_secret | cut -c1-30)" \
      -days 825 -sha256 -extfile broker.ext -out broker.crt
    openssl pkcs12 -export -name broker -in broker.crt -inkey broker.key -certfile ca.crt \
      -passout file:store.password -out broker.p12
    if command -v keytool >/dev/null 2>&1; then
      keytool -importcert -noprompt -alias pixelpipe-local-ca -file ca.crt -storetype PKCS12 \
        -keystore truststore.p12 -storepass:file store.password
    fi
    rm -f broker.csr broker.ext
    chmod 644 ca.crt broker.crt
  ) >"$tls_log" 2>&1; then
    cat "$tls_log" >&2
    rm -rf "$TLS_DIR"
    die "making the TLS certificates failed (see above)"
  fi
}

# ensure_password: the SCRAM user's password, generated once (mode 600).
ensure_password() {
  [[ -s $SASL_PASSWORD_FILE ]] && return 0
  (umask 077 && new_secret >"$SASL_PASSWORD_FILE")
}

# scram_args_file CLUSTER_ID: a java @argfile (mode 600) with the whole StorageTool format
# command and its --add-scram credential: the password is never on a command line ps shows.
scram_args_file() {
  local file=$RUN_DIR/.format.args
  (
    umask 077
    printf '%s\n' kafka.tools.StorageTool format -t "$1" -c "\"$RUN_DIR/server.properties\"" --add-scram \
      "$SASL_MECHANISM=[name=$KAFKA_SASL_USER,iterations=$SCRAM_ITERATIONS,password=$(<"$SASL_PASSWORD_FILE")]" >"$file"
  )
  printf '%s\n' "$file"
}

# sasl_prepare: before write_config and format_once (lock held): certificates, password, and
# the SCRAM argument of the format (data formatted without the user cannot get it here).
sasl_prepare() {
  ensure_tls
  ensure_password
  # server.properties holds the keystore password: only the owner reads it
  (umask 077 && : >>"$RUN_DIR/server.properties") && chmod 600 "$RUN_DIR/server.properties"
  if [[ -f $DATA_DIR/meta.properties ]]; then
    [[ $(cat "$RUN_DIR/sasl.formatted" 2>/dev/null) == "$SASL_MECHANISM $KAFKA_SASL_USER" ]] ||
      die "$DATA_DIR was formatted without the $SASL_MECHANISM user '$KAFKA_SASL_USER': 'down --purge' first (or another KAFKA_HOME_DIR)"
    return 0
  fi
  rm -f "$RUN_DIR/sasl.formatted"
  SCRAM_FORMAT=1
}

# sasl_properties: the broker properties of the SASL_SSL listener (in write_config).
sasl_properties() {
  echo "sasl.enabled.mechanisms=$SASL_MECHANISM"
  echo "listener.name.sasl_ssl.sasl.enabled.mechanisms=$SASL_MECHANISM"
  echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
  echo "listener.name.sasl_ssl.ssl.keystore.type=PKCS12"
  echo "listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/broker.p12"
  echo "listener.name.sasl_ssl.ssl.keystore.password=$(<"$TLS_DIR/store.password")"
  echo "listener.name.sasl_ssl.ssl.key.password=$(<"$TLS_DIR/store.password")"
  echo "listener.name.sasl_ssl.ssl.client.auth=none"
  echo "listener.name.sasl_ssl.ssl.enabled.protocols=TLSv1.3,TLSv1.2"
}

# sasl-env: the exports a pixelpipe client needs (the password by file, never printed).
cmd_sasl_env() {
  local port
  [[ -s $SASL_PASSWORD_FILE && -s $TLS_DIR/ca.crt ]] ||
    die "no SASL_SSL set-up in $RUN_DIR: run 'KAFKA_SASL_SSL=1 infra/kafka.sh up' first"
  port=$(cat "$RUN_DIR/running.sasl" 2>/dev/null || true)
  [[ -n $port ]] || port=${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
  printf 'export PIXELPIPE_KAFKA=%q\n' "kafka+ssl://$KAFKA_HOST:$port"
  printf 'export PIXELPIPE_KAFKA_CA_FILE=%q\n' "$TLS_DIR/ca.crt"
  printf 'export PIXELPIPE_KAFKA_USER=%q\n' "$(sed -n 's/^[^ ]* //p' "$RUN_DIR/sasl.formatted" 2>/dev/null || echo "$KAFKA_SASL_USER")"
  printf 'export PIXELPIPE_KAFKA_PASSWORD_FILE=%q\n' "$SASL_PASSWORD_FILE"
  printf 'export PIXELPIPE_KAFKA_SASL_MECHANISM=%q\n' "$SASL_MECHANISM"
}

# ------------------------------------------------------------------ three nodes (KAFKA_NODES=3)
#
# Three combined-mode (broker + controller) KRaft nodes on loopback, one cluster id, node N on
# client port KAFKA_PORT + 10 (N - 1) and controller port one above, in CLUSTER_DIR/nodeN (its
# own data/, server.properties, kafka.pid, kafka.log). The single-node functions above are
# reused per node: `use_node N` points RUN_DIR, PID_FILE, LOG_FILE, MARKER, KAFKA_PORT,
# BOOTSTRAP (...) at node N.

CLUSTER_NODES=3

cluster_init() {
  local n
  [[ -z $KAFKA_CONTROLLER_PORT_ENV ]] ||
    die "KAFKA_CONTROLLER_PORT does not apply with KAFKA_NODES=3 (node N's controller: KAFKA_PORT + 10 (N - 1) + 1)"
  BASE_PORT=$KAFKA_PORT
  valid_port "$((BASE_PORT + 10 * (CLUSTER_NODES - 1) + 1))" || die "KAFKA_PORT $BASE_PORT leaves no room for 3 nodes (+10, +20, controllers +1)"
  KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS_ENV:--Xms128m -Xmx256m}
  CLUSTER_DIR=${KAFKA_HOME_DIR:-$INFRA_DIR/.run/kafka-cluster-$BASE_PORT}
  CLUSTER_ID_FILE=$CLUSTER_DIR/cluster.id
  LOCK_DIR=$CLUSTER_DIR/.lock
  CLUSTER_BOOTSTRAP= VOTERS=
  for ((n = 1; n <= CLUSTER_NODES; n++)); do
    CLUSTER_BOOTSTRAP+=${CLUSTER_BOOTSTRAP:+,}$KAFKA_HOST:$(node_port "$n")
    VOTERS+=${VOTERS:+,}$n@$KAFKA_HOST:$(($(node_port "$n") + 1))
  done
}

node_port() { echo $((BASE_PORT + 10 * ($1 - 1))); }

valid_node() { [[ $1 =~ ^[1-9][0-9]*$ ]] && (($1 <= CLUSTER_NODES)); }

# use_node N: the single-node globals now describe node N.
use_node() {
  NODE=$1
  KAFKA_PORT=$(node_port "$NODE")
  KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
  BOOTSTRAP=$KAFKA_HOST:$KAFKA_PORT
  RUN_DIR=$CLUSTER_DIR/node$NODE
  DATA_DIR=$RUN_DIR/data
  PID_FILE=$RUN_DIR/kafka.pid
  LOG_FILE=$RUN_DIR/kafka.log
  MARKER=-Dpixelpipe.kafka.home=$RUN_DIR
  if ((KAFKA_MAJOR >= 4)); then
    LOG_OPT=-Dlog4j2.configurationFile=$RUN_DIR/log4j2.properties
  else
    LOG_OPT=-Dlog4j.configuration=file:$RUN_DIR/log4j.properties
  fi
}

cluster_lock() {
  mkdir -p "$CLUSTER_DIR"
  RUN_DIR=$CLUSTER_DIR acquire_lock
}

write_node_config() {
  local kv
  mkdir -p "$DATA_DIR"
  {
    echo "# written by infra/kafka.sh (KAFKA_NODES=3, node $NODE) on every start: edit KAFKA_OVERRIDES, not this file"
    echo "process.roles=broker,controller"
    echo "node.id=$NODE"
    echo "controller.quorum.voters=$VOTERS"
    echo "listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT"
    echo "advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "controller.listener.names=CONTROLLER"
    echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    echo "log.dirs=$DATA_DIR"
    echo "num.partitions=1"
    echo "default.replication.factor=3"
    echo "min.insync.replicas=2"
    echo "unclean.leader.election.enable=false"
    echo "auto.create.topics.enable=$KAFKA_AUTO_CREATE_TOPICS"
    echo "offsets.topic.replication.factor=3"
    echo "offsets.topic.num.partitions=3"
    echo "transaction.state.log.replication.factor=3"
    echo "transaction.state.log.min.isr=2"
    echo "transaction.state.log.num.partitions=1"
    echo "group.initial.rebalance.delay.ms=0"
    # A killed node is fenced (out of every ISR, its leaderships moved) after the session
    # timeout: 3 s here instead of 9 s (measured: an acks=all producer stalls ~3 s, not ~12 s).
    echo "broker.session.timeout.ms=3000"
    echo "broker.heartbeat.interval.ms=500"
    # The log cleaner allocates its whole dedupe buffer when it starts (Kafka's default 128 MiB)
    # in a 256 MiB heap that also holds every partition's state: a node restarted with ~250
    # partitions died with "OutOfMemoryError: Java heap space" at "Starting the log cleaner".
    # 16 MiB holds about 600,000 keys per cleaning pass (24 bytes each), far more than the
    # compacted topics here have.
    echo "log.cleaner.dedupe.buffer.size=16777216"
    if ((KAFKA_MAJOR >= 4)); then
      echo "share.coordinator.state.topic.replication.factor=3"
      echo "share.coordinator.state.topic.min.isr=2"
    fi
    for kv in $KAFKA_OVERRIDES; do
      [[ $kv == *=* ]] || die "KAFKA_OVERRIDES item '$kv' is not key=value"
      echo "$kv"
    done
  } >"$RUN_DIR/server.properties"
  write_log_config
}

# cluster_id: the cluster's one id (created once; recovered from a node's meta.properties).
cluster_id() {
  local id n meta
  if [[ -s $CLUSTER_ID_FILE ]]; then
    cat "$CLUSTER_ID_FILE"
    return 0
  fi
  for ((n = 1; n <= CLUSTER_NODES; n++)); do
    meta=$CLUSTER_DIR/node$n/data/meta.properties
    if [[ -f $meta ]]; then
      id=$(sed -n 's/^cluster\.id=//p' "$meta")
      [[ -n $id ]] && { printf '%s\n' "$id" | tee "$CLUSTER_ID_FILE"; return 0; }
    fi
  done
  id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$CLUSTER_DIR/format.log" | tail -n1)
  [[ $id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid gave '$id' (see $CLUSTER_DIR/format.log)"
  printf '%s\n' "$id" | tee "$CLUSTER_ID_FILE"
}

# format_node CLUSTER_ID: format node $NODE's data dir once, with the cluster's id.
format_node() {
  local formatted
  if [[ -f $DATA_DIR/meta.properties ]]; then
    formatted=$(cat "$RUN_DIR/formatted.version" 2>/dev/null || echo unknown)
    if [[ $formatted != unknown ]] && version_lt "$KAFKA_VERSION" "$formatted"; then
      die "$DATA_DIR was formatted by Kafka $formatted and cannot be run by older $KAFKA_VERSION: use 'down --purge' or another KAFKA_HOME_DIR"
    fi
    return 0
  fi
  log "formatting node $NODE: $DATA_DIR (cluster id $1, Kafka $KAFKA_VERSION)"
  if ! kafka_java kafka.tools.StorageTool format -t "$1" -c "$RUN_DIR/server.properties" >>"$LOG_FILE" 2>&1; then
    tail_log 30
    die "formatting node $NODE ($DATA_DIR) failed"
  fi
  printf '%s\n' "$KAFKA_VERSION" >"$RUN_DIR/formatted.version"
}

# launch_node: start node $NODE's JVM detached (as cmd_up starts the single broker).
launch_node() {
  local pid
  local -a launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  log "starting node $NODE: Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT, run dir $RUN_DIR)"
  # shellcheck disable=SC2086 # word lists on purpose
  nohup "${launcher[@]}" "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$RUN_DIR" "$LOG_OPT" "$MARKER" \
    -cp "$LIB_DIR/*" kafka.Kafka "$RUN_DIR/server.properties" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  printf '%s\n' "$KAFKA_VERSION" >"$RUN_DIR/running.version"
}

# registered_ids BOOTSTRAP: the node ids the metadata from BOOTSTRAP lists (unfenced brokers),
# comma separated; fails when nothing answers.
registered_ids() {
  local json
  if [[ -z $PYTHON ]]; then
    port_in_use "${1##*:}" && echo "?"
    return
  fi
  json=$("$PYTHON" "$INFRA_DIR/kafka_ready.py" --bootstrap "$1" --timeout 3 --json 2>/dev/null) || return 1
  "$PYTHON" -c 'import json, sys; print(",".join(str(b["node_id"]) for b in sorted(json.loads(sys.argv[1])["brokers"], key=lambda b: b["node_id"])))' "$json"
}

# node_ready: node $NODE answers metadata on its own port and is registered (listed in it).
node_ready() {
  local ids
  ids=$(registered_ids "$BOOTSTRAP") || return 1
  [[ $ids == "?" || ,$ids, == *",$NODE,"* ]]
}

# start_node: start node $NODE unless it runs (lock held by the caller); does not wait.
start_node() {
  local pid running_version id
  if pid=$(running_pid); then
    running_version=$(cat "$RUN_DIR/running.version" 2>/dev/null || echo unknown)
    [[ $running_version == "$KAFKA_VERSION" ]] ||
      die "node $NODE runs Kafka $running_version (pid $pid); asked for $KAFKA_VERSION: run 'down' first"
    return 0
  fi
  port_in_use "$KAFKA_PORT" && die "$BOOTSTRAP (node $NODE) is already taken by another process"
  port_in_use "$KAFKA_CONTROLLER_PORT" && die "$KAFKA_HOST:$KAFKA_CONTROLLER_PORT (node $NODE's controller port) is already taken by another process"
  write_node_config
  [[ -f $LOG_FILE ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"
  id=$(cluster_id)
  format_node "$id"
  launch_node
}

# wait_nodes DEADLINE N...: until each node is ready; on timeout or a node's death, fail.
wait_nodes() {
  local deadline=$1 n pid pending
  shift
  pending=("$@")
  while ((${#pending[@]})); do
    local -a still=()
    for n in "${pending[@]}"; do
      use_node "$n"
      if ! pid=$(running_pid 2>/dev/null); then
        tail_log
        die "node $n exited during start-up (log: $LOG_FILE)"
      fi
      node_ready || still+=("$n")
    done
    pending=("${still[@]}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      for n in "${pending[@]}"; do use_node "$n"; tail_log 30; done
      die "node(s) ${pending[*]} not serving and registered after ${KAFKA_START_TIMEOUT}s (logs: $CLUSTER_DIR/node*/kafka.log)"
    fi
    sleep 0.5
  done
}

cmd_cluster_up() {
  local n ids started=()
  need "$JAVA" "install a Java 17+ runtime"
  resolve_jars
  cluster_lock
  for ((n = 1; n <= CLUSTER_NODES; n++)); do
    use_node "$n"
    if running_pid >/dev/null; then
      continue
    fi
    started+=("$n")
  done
  # every node checks its ports before any starts: fail before leaving half a cluster behind
  for n in "${started[@]}"; do
    use_node "$n"
    port_in_use "$KAFKA_PORT" && die "$BOOTSTRAP (node $n) is already taken by another process (not a node started from $CLUSTER_DIR)"
    port_in_use "$KAFKA_CONTROLLER_PORT" && die "$KAFKA_HOST:$KAFKA_CONTROLLER_PORT (node $n's controller port) is already taken by another process"
  done
  for n in "${started[@]}"; do
    use_node "$n"
    start_node
  done
  wait_nodes $((SECONDS + KAFKA_START_TIMEOUT)) $(seq 1 "$CLUSTER_NODES")
  # registered with each other: the metadata lists every node
  use_node 1
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until ids=$(registered_ids "$CLUSTER_BOOTSTRAP") && [[ $ids == "?" || $ids == "$(seq -s, 1 "$CLUSTER_NODES")" ]]; do
    ((SECONDS < deadline)) || die "the metadata lists nodes '${ids:-}', not all $CLUSTER_NODES"
    sleep 0.5
  done
  if ((${#started[@]})); then
    log "serving: Kafka $KAFKA_VERSION, $CLUSTER_NODES nodes (started ${started[*]}), bootstrap $CLUSTER_BOOTSTRAP in ${SECONDS}s ($CLUSTER_DIR)"
  else
    log "already running: Kafka $KAFKA_VERSION, $CLUSTER_NODES nodes, bootstrap $CLUSTER_BOOTSTRAP ($CLUSTER_DIR)"
  fi
  echo "$CLUSTER_BOOTSTRAP"
}

cmd_cluster_down() {
  local purge=0 signal=TERM n pid pids=() nodes=()
  while (($#)); do
    case $1 in
      --purge) purge=1 ;;
      --kill) signal=KILL ;;
      *) die "down: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -d $CLUSTER_DIR ]] || { log "not running (no run dir $CLUSTER_DIR)"; return 0; }
  cluster_lock
  # signal every node first: stopped one by one, the last ones would wait for a quorum
  for ((n = 1; n <= CLUSTER_NODES; n++)); do
    use_node "$n"
    if pid=$(running_pid); then
      log "stopping node $n (pid $pid) with SIG$signal"
      kill "-$signal" "$pid" 2>/dev/null || true
      pids+=("$pid") nodes+=("$n")
    fi
  done
  for n in "${!pids[@]}"; do
    use_node "${nodes[$n]}"
    stop_pid "${pids[$n]}" "$signal"
    rm -f "$PID_FILE" "$RUN_DIR/running.version"
  done
  if ((${#pids[@]})); then log "stopped nodes ${nodes[*]}"; else log "not running ($CLUSTER_DIR)"; fi
  if ((purge)); then
    log "purging data in $CLUSTER_DIR"
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
      use_node "$n"
      rm -rf "$DATA_DIR"
      rm -f "$RUN_DIR/formatted.version" "$RUN_DIR/server.properties" "$RUN_DIR/log4j.properties" "$RUN_DIR/log4j2.properties"
    done
    rm -f "$CLUSTER_ID_FILE"
  fi
}

# node_command stop|kill|start N
cmd_node() {
  local action=$1 n=${2:-} pid signal=TERM
  valid_node "$n" || die "$action-node needs a node number 1..$CLUSTER_NODES, got '${n}'"
  (($# <= 2)) || die "$action-node takes one node number"
  use_node "$n"
  case $action in
    start)
      need "$JAVA" "install a Java 17+ runtime"
      resolve_jars
      cluster_lock
      use_node "$n"
      if pid=$(running_pid) && node_ready; then
        log "node $n already running (pid $pid, $BOOTSTRAP)"
      else
        start_node
        wait_nodes $((SECONDS + KAFKA_START_TIMEOUT)) "$n"
        log "node $n serving: pid $(<"$PID_FILE"), $BOOTSTRAP, registered in ${SECONDS}s"
      fi
      echo "$BOOTSTRAP"
      ;;
    stop | kill)
      [[ $action == kill ]] && signal=KILL
      [[ -d $RUN_DIR ]] || { log "node $n not running (no run dir $RUN_DIR)"; return 0; }
      cluster_lock
      use_node "$n"
      if pid=$(running_pid); then
        local done_word=stopped
        [[ $action == kill ]] && done_word=killed
        log "${done_word%ed}ing node $n (pid $pid) with SIG$signal"
        stop_pid "$pid" "$signal"
        rm -f "$PID_FILE" "$RUN_DIR/running.version"
        log "node $n $done_word"
      else
        log "node $n not running ($RUN_DIR)"
      fi
      ;;
  esac
}

cmd_cluster_status() {
  local n pid version up=0 ready=0 ids
  for ((n = 1; n <= CLUSTER_NODES; n++)); do
    use_node "$n"
    if ! pid=$(running_pid 2>/dev/null); then
      echo "node $n: stopped ($BOOTSTRAP, run dir $RUN_DIR)"
      continue
    fi
    up=$((up + 1))
    version=$(cat "$RUN_DIR/running.version" 2>/dev/null || echo unknown)
    if node_ready; then
      ready=$((ready + 1))
      echo "node $n: running: Kafka $version, pid $pid, $BOOTSTRAP (controller :$KAFKA_CONTROLLER_PORT), run dir $RUN_DIR"
    else
      echo "node $n: starting or unhealthy: Kafka $version, pid $pid runs but is not serving and registered on $BOOTSTRAP"
    fi
  done
  if ids=$(registered_ids "$CLUSTER_BOOTSTRAP"); then
    echo "cluster: $ready of $CLUSTER_NODES nodes serving; metadata lists nodes [$ids]; bootstrap $CLUSTER_BOOTSTRAP"
  else
    echo "cluster: $ready of $CLUSTER_NODES nodes serving; no node answers metadata; bootstrap $CLUSTER_BOOTSTRAP"
  fi
  ((ready == CLUSTER_NODES)) && return 0
  ((up > 0)) && return 1
  return 3
}

cmd_cluster_logs() {
  local follow=0 lines=200 node= files=() n
  while (($#)); do
    case $1 in
      -f | --follow) follow=1 ;;
      -n) lines=${2:?-n needs a number}; shift ;;
      --node) node=${2:?--node needs a node number}; shift ;;
      *) die "logs: unknown option '$1'" ;;
    esac
    shift
  done
  if [[ -n $node ]]; then
    valid_node "$node" || die "--node needs 1..$CLUSTER_NODES, got '$node'"
    files=("$CLUSTER_DIR/node$node/kafka.log")
  else
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
      [[ -f $CLUSTER_DIR/node$n/kafka.log ]] && files+=("$CLUSTER_DIR/node$n/kafka.log")
    done
  fi
  ((${#files[@]})) && [[ -f ${files[0]} ]] || die "no log yet under $CLUSTER_DIR"
  if ((follow)); then
    exec tail -n "$lines" -F "${files[@]}"
  fi
  tail -n "$lines" "${files[@]}"
}

cluster_main() {
  local cmd=${1:-}
  (($#)) && shift
  cluster_init
  case $cmd in
    up | start) cmd_cluster_up "$@" ;;
    down | stop) cmd_cluster_down "$@" ;;
    restart)
      [[ ${1:-} == --purge ]] && die "restart keeps the data: use 'down --purge' then 'up'"
      cmd_cluster_down "$@"
      release_lock
      trap - EXIT
      cmd_cluster_up
      ;;
    status) cmd_cluster_status "$@" ;;
    logs | log) cmd_cluster_logs "$@" ;;
    stop-node) cmd_node stop "$@" ;;
    kill-node) cmd_node kill "$@" ;;
    start-node) cmd_node start "$@" ;;
    jars) resolve_jars && echo "$LIB_DIR" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

usage() { sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed -n 's/^# \{0,1\}//p'; }

main() {
  local cmd=${1:-}
  if [[ $KAFKA_SASL_SSL != 0 ]]; then
    [[ $KAFKA_NODES == 1 ]] || die "KAFKA_SASL_SSL=1 is for the single broker (KAFKA_NODES=1), not KAFKA_NODES=$KAFKA_NODES"
    sasl_init
  fi
  if [[ -n $KAFKA_PROXIED_PORT || -n $KAFKA_ADVERTISED_PROXY_PORT ]]; then
    [[ $KAFKA_NODES == 1 ]] || die "KAFKA_PROXIED_PORT is for the single broker (KAFKA_NODES=1), not KAFKA_NODES=$KAFKA_NODES"
    proxied_init
  fi
  case $KAFKA_NODES in
    1) ;;
    3) cluster_main "$@"; return ;;
    *) die "KAFKA_NODES must be 1 (the single broker) or 3 (the three-node cluster), got '$KAFKA_NODES'" ;;
  esac
  (($#)) && shift
  case $cmd in
    up | start) cmd_up "$@" ;;
    down | stop) cmd_down "$@" ;;
    restart)
      [[ ${1:-} == --purge ]] && die "restart keeps the data: use 'down --purge' then 'up'"
      cmd_down "$@"
      release_lock
      trap - EXIT
      cmd_up
      ;;
    status) cmd_status "$@" ;;
    logs | log) cmd_logs "$@" ;;
    jars) resolve_jars && echo "$LIB_DIR" ;;
    sasl-env) cmd_sasl_env "$@" ;;
    stop-node | kill-node | start-node) log "error: $cmd needs KAFKA_NODES=3 (the single broker: down, down --kill, up)"; exit 2 ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
