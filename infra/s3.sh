#!/usr/bin/env bash
# A real S3-compatible server (versitygw, Apache-2.0, posix backend) on 127.0.0.1: no Docker.
# Built once from source with `go install` into a cache; needs bash and go (first run only).
#
#   infra/s3.sh up                build (cached), generate credentials once, start, wait
#   infra/s3.sh down [--purge]    stop the server this script started (SIGTERM, wait); --purge
#                                 also wipes its data and credentials
#   infra/s3.sh status            exit 0 serving, 1 process up but not answering, 3 not running
#   infra/s3.sh env               the exports a client needs (the only command printing secrets)
#   infra/s3.sh logs [-n N]       show its log
#   infra/s3.sh build             only build the binary into the cache (prints its path)
#
# Environment (all optional):
#   VERSITYGW_VERSION=1.8.0      versitygw release (a tag of github.com/versity/versitygw)
#   S3_PORT=7070                 HTTP port on 127.0.0.1
#   S3_HOME_DIR                  run dir: data/, credentials, pid, log (default infra/.run/s3-PORT)
#   S3_CACHE_DIR                 binary and Go caches (default ${XDG_CACHE_HOME:-~/.cache}/pixelpipe)
#   S3_REGION=us-east-1          region the server signs for
#   S3_BUCKETS=pixelpipe         buckets `up` makes sure exist (space separated; "" for none)
#   S3_START_TIMEOUT=30          seconds to wait until it answers; S3_STOP_TIMEOUT=15 before SIGKILL
set -Eeuo pipefail

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSITYGW_VERSION=${VERSITYGW_VERSION:-1.8.0}
S3_PORT=${S3_PORT:-7070}
S3_HOST=127.0.0.1
S3_REGION=${S3_REGION:-us-east-1}
S3_BUCKETS=${S3_BUCKETS-pixelpipe}
S3_START_TIMEOUT=${S3_START_TIMEOUT:-30}
S3_STOP_TIMEOUT=${S3_STOP_TIMEOUT:-15}

log() { printf 's3.sh: %s\n' "$*" >&2; }
# shared helpers (die, need, alive, cmdline_of, locks, ...): infra/lib.sh
# shellcheck source=lib.sh
source "$INFRA_DIR/lib.sh"

[[ $VERSITYGW_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "VERSITYGW_VERSION must look like 1.8.0, got '$VERSITYGW_VERSION'"
[[ $S3_PORT =~ ^[0-9]{1,5}$ ]] && ((S3_PORT > 0 && S3_PORT < 65536)) || die "bad S3_PORT '$S3_PORT'"
for bucket in $S3_BUCKETS; do
  [[ $bucket =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "S3_BUCKETS: '$bucket' is not a valid bucket name"
done

RUN_DIR=${S3_HOME_DIR:-$INFRA_DIR/.run/s3-$S3_PORT}
CACHE_DIR=${S3_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pixelpipe}
BIN_DIR=$CACHE_DIR/versitygw-$VERSITYGW_VERSION
BIN=$BIN_DIR/versitygw
DATA_DIR=$RUN_DIR/data
CRED_FILE=$RUN_DIR/credentials
PID_FILE=$RUN_DIR/versitygw.pid
LOG_FILE=$RUN_DIR/versitygw.log
LOCK_DIR=$RUN_DIR/.lock
ENDPOINT=http://$S3_HOST:$S3_PORT

# ---------------------------------------------------------------------------------- helpers

# is_ours PID: PID is a live versitygw serving this run dir's data directory.
is_ours() {
  local cmd
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  alive "$1" || return 1
  cmd=$(cmdline_of "$1") || return 1
  [[ $cmd == *versitygw* && $cmd == *" posix $DATA_DIR "* ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$S3_HOST/$1") 2>/dev/null; }

# answers: an HTTP response from the server (an anonymous request gets 403: still an answer).
answers() {
  (
    exec 3<>"/dev/tcp/$S3_HOST/$S3_PORT" || exit 1
    printf 'GET / HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$S3_HOST" "$S3_PORT" >&3
    IFS= read -r -t 3 line <&3 || exit 1
    [[ $line == HTTP/1.* ]]
  ) 2>/dev/null
}

acquire_lock() {
  take_lock "$LOCK_DIR" $((S3_START_TIMEOUT + S3_STOP_TIMEOUT + 60))
  trap release_lock EXIT
  trap 'exit 130' INT TERM
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# ------------------------------------------------------------------------------- build

build() {
  local tmp build_lock=$CACHE_DIR/.build-$VERSITYGW_VERSION.lock started=$SECONDS
  [[ -x $BIN ]] && return 0
  need go "needed once to build versitygw $VERSITYGW_VERSION (go install)"
  mkdir -p "$BIN_DIR"
  take_lock "$build_lock" 1800
  # shellcheck disable=SC2064 # expand now: the lock path is fixed
  trap "rm -rf '$build_lock'" EXIT
  if [[ ! -x $BIN ]]; then
    tmp=$(mktemp -d "$BIN_DIR/.bin.XXXXXX")
    log "building versitygw $VERSITYGW_VERSION with go install into $BIN_DIR (first run only; ~3 min cold)"
    if ! GOBIN=$tmp GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build GOFLAGS=-modcacherw \
      go install "github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION" >"$tmp.log" 2>&1; then
      cat "$tmp.log" >&2
      rm -rf "$tmp" "$tmp.log"
      die "go install github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION failed"
    fi
    [[ -x $tmp/versitygw ]] || { rm -rf "$tmp" "$tmp.log"; die "go install left no versitygw binary"; }
    mv -f "$tmp/versitygw" "$BIN"
    rm -rf "$tmp" "$tmp.log"
    log "built $BIN in $((SECONDS - started))s"
  fi
  rm -rf "$build_lock"
  trap - EXIT
}

# ------------------------------------------------------------------------- credentials

# The root credentials: generated once per run dir, mode 600, read only by `up` and `env`.
ensure_credentials() {
  [[ -s $CRED_FILE ]] && return 0
  (
    umask 077
    printf 'ROOT_ACCESS_KEY_ID=%s\nROOT_SECRET_ACCESS_KEY=%s\n' \
      "pp$(random_hex 9)" "$(random_hex 20)" >"$CRED_FILE.tmp"
    mv -f "$CRED_FILE.tmp" "$CRED_FILE"
  )
}

read_credentials() {
  local line
  ACCESS_KEY=
  SECRET_KEY=
  [[ -s $CRED_FILE ]] || return 1
  while IFS= read -r line; do
    case $line in
      ROOT_ACCESS_KEY_ID=*) ACCESS_KEY=${line#*=} ;;
      ROOT_SECRET_ACCESS_KEY=*) SECRET_KEY=${line#*=} ;;
    esac
  done <"$CRED_FILE"
  [[ -n $ACCESS_KEY && -n $SECRET_KEY ]]
}

# In posix mode a bucket is a top-level directory of the data dir, owned by the root account.
ensure_buckets() {
  local bucket
  for bucket in $S3_BUCKETS; do
    mkdir -p "$DATA_DIR/$bucket"
  done
}

stop_pid() {
  local pid=$1 signal=${2:-TERM} deadline
  kill "-$signal" "$pid" 2>/dev/null || true
  deadline=$((SECONDS + S3_STOP_TIMEOUT))
  while alive "$pid"; do
    if ((SECONDS >= deadline)) && [[ $signal != KILL ]]; then
      log "pid $pid still running after ${S3_STOP_TIMEOUT}s: SIGKILL"
      signal=KILL
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 15))
    elif ((SECONDS >= deadline)); then
      die "pid $pid survived SIGKILL"
    fi
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------- commands

cmd_up() {
  local pid deadline began
  build
  acquire_lock
  if pid=$(running_pid); then
    if answers; then
      log "already running: versitygw pid $pid, $ENDPOINT ($RUN_DIR)"
      echo "$ENDPOINT"
      return 0
    fi
    tail_log
    die "pid $pid runs from $RUN_DIR but does not answer on $ENDPOINT"
  fi
  port_in_use "$S3_PORT" && die "$S3_HOST:$S3_PORT is already taken by another process (not a server started from $RUN_DIR)"
  mkdir -p "$DATA_DIR"
  ensure_credentials
  read_credentials || die "$CRED_FILE is unreadable: remove it (or 'down --purge') and retry"
  ensure_buckets
  [[ -f $LOG_FILE ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"

  log "starting versitygw $VERSITYGW_VERSION on $ENDPOINT (posix $DATA_DIR, run dir $RUN_DIR)"
  began=$SECONDS
  local -a launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # the credentials go in the environment, never on the command line (ps shows that)
  ROOT_ACCESS_KEY_ID=$ACCESS_KEY ROOT_SECRET_ACCESS_KEY=$SECRET_KEY \
    nohup "${launcher[@]}" "$BIN" --port "$S3_HOST:$S3_PORT" --region "$S3_REGION" --quiet \
    posix "$DATA_DIR" >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"

  deadline=$((SECONDS + S3_START_TIMEOUT))
  until answers; do
    if ! alive "$pid"; then
      rm -f "$PID_FILE"
      tail_log
      die "versitygw exited during start-up (log: $LOG_FILE)"
    fi
    if ((SECONDS >= deadline)); then
      tail_log
      log "no answer on $ENDPOINT after ${S3_START_TIMEOUT}s: stopping pid $pid"
      stop_pid "$pid"
      rm -f "$PID_FILE"
      die "start-up timed out"
    fi
    sleep 0.05
  done
  is_ours "$pid" || die "pid $pid answers on $ENDPOINT but does not look like the server this script started"
  log "serving: versitygw $VERSITYGW_VERSION, pid $pid, $ENDPOINT in $((SECONDS - began))s"
  echo "$ENDPOINT"
}

cmd_down() {
  local purge=0 pid
  while (($#)); do
    case $1 in
      --purge) purge=1 ;;
      *) die "down: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -d $RUN_DIR ]] || { log "not running (no run dir $RUN_DIR)"; return 0; }
  acquire_lock
  if pid=$(running_pid); then
    log "stopping versitygw pid $pid ($RUN_DIR) with SIGTERM"
    stop_pid "$pid" TERM
    rm -f "$PID_FILE"
    log "stopped"
  else
    log "not running ($RUN_DIR)"
  fi
  if ((purge)); then
    log "purging data and credentials in $RUN_DIR"
    rm -rf "$DATA_DIR" "$CRED_FILE"
  fi
}

cmd_status() {
  local pid
  if ! pid=$(running_pid 2>/dev/null); then
    echo "stopped: no versitygw started from $RUN_DIR"
    return 3
  fi
  if answers; then
    echo "running: versitygw, pid $pid, $ENDPOINT, run dir $RUN_DIR"
    return 0
  fi
  echo "starting or unhealthy: versitygw pid $pid runs but does not answer on $ENDPOINT"
  return 1
}

cmd_env() {
  read_credentials || die "no credentials in $RUN_DIR yet: run 'infra/s3.sh up' first"
  printf 'export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=%s PIXELPIPE_S3_ENDPOINT=%s\n' \
    "$ACCESS_KEY" "$SECRET_KEY" "$S3_REGION" "$ENDPOINT"
}

cmd_logs() {
  local lines=200
  while (($#)); do
    case $1 in
      -n) lines=${2:?-n needs a number}; shift ;;
      *) die "logs: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -f $LOG_FILE ]] || die "no log yet at $LOG_FILE"
  tail -n "$lines" "$LOG_FILE"
}

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed -e 's/^# \{0,1\}//'; }

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    up | start) cmd_up "$@" ;;
    down | stop) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    logs | log) cmd_logs "$@" ;;
    build) build && echo "$BIN" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
