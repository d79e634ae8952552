#!/usr/bin/env bash
# A real TCP fault proxy (Toxiproxy, MIT) on 127.0.0.1, for the network chaos tests: no Docker.
# Built once from source with `go install` into a cache; needs bash and go (first run only).
#
#   infra/toxiproxy.sh up            build (cached), start, wait until its HTTP API answers
#   infra/toxiproxy.sh down          stop the server this script started (SIGTERM, wait)
#   infra/toxiproxy.sh status        exit 0 answering, 1 process up but not answering, 3 not running
#   infra/toxiproxy.sh url           print its API address (http://127.0.0.1:PORT)
#   infra/toxiproxy.sh logs [-n N]   show its log
#   infra/toxiproxy.sh build         only build the binary into the cache (prints its path)
#
# Proxies and toxics are made through the HTTP API (what the tests do), e.g.
#   curl -s -XPOST $URL/proxies -d '{"name":"kafka","listen":"127.0.0.1:29093","upstream":"127.0.0.1:29092"}'
#   curl -s -XPOST $URL/proxies/kafka/toxics -d '{"type":"latency","attributes":{"latency":500}}'
#   curl -s -XPOST $URL/proxies/kafka -d '{"enabled":false}'      # a cut (connection refused)
# The server keeps proxies in memory only: `down` forgets them.
#
# Environment (all optional):
#   TOXIPROXY_VERSION=2.5.0      Toxiproxy release (a tag of github.com/Shopify/toxiproxy/v2)
#   TOXIPROXY_PORT=8474          HTTP API port on 127.0.0.1
#   TOXIPROXY_HOME_DIR           run dir: pid, log (default infra/.run/toxiproxy-PORT)
#   TOXIPROXY_CACHE_DIR          binary and Go caches (default ${XDG_CACHE_HOME:-~/.cache}/pixelpipe)
#   TOXIPROXY_LOG_LEVEL=info     its LOG_LEVEL (trace logs every read and write of every link)
#   TOXIPROXY_START_TIMEOUT=30   seconds to wait until it answers; TOXIPROXY_STOP_TIMEOUT=15 before SIGKILL
set -Eeuo pipefail

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOXIPROXY_VERSION=${TOXIPROXY_VERSION:-2.5.0}
TOXIPROXY_PORT=${TOXIPROXY_PORT:-8474}
TOXIPROXY_HOST=127.0.0.1
TOXIPROXY_START_TIMEOUT=${TOXIPROXY_START_TIMEOUT:-30}
TOXIPROXY_STOP_TIMEOUT=${TOXIPROXY_STOP_TIMEOUT:-15}
TOXIPROXY_LOG_LEVEL=${TOXIPROXY_LOG_LEVEL:-info}

log() { printf 'toxiproxy.sh: %s\n' "$*" >&2; }
# shared helpers (die, need, alive, cmdline_of, locks, ...): infra/lib.sh
# shellcheck source=lib.sh
source "$INFRA_DIR/lib.sh"

[[ $TOXIPROXY_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "TOXIPROXY_VERSION must look like 2.5.0, got '$TOXIPROXY_VERSION'"
[[ $TOXIPROXY_PORT =~ ^[0-9]{1,5}$ ]] && ((TOXIPROXY_PORT > 0 && TOXIPROXY_PORT < 65536)) || die "bad TOXIPROXY_PORT '$TOXIPROXY_PORT'"

RUN_DIR=${TOXIPROXY_HOME_DIR:-$INFRA_DIR/.run/toxiproxy-$TOXIPROXY_PORT}
CACHE_DIR=${TOXIPROXY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pixelpipe}
GO_BIN_DIR=$CACHE_DIR/go/bin
BIN=$GO_BIN_DIR/toxiproxy-server-$TOXIPROXY_VERSION
PID_FILE=$RUN_DIR/toxiproxy.pid
LOG_FILE=$RUN_DIR/toxiproxy.log
LOCK_DIR=$RUN_DIR/.lock
URL=http://$TOXIPROXY_HOST:$TOXIPROXY_PORT

# ---------------------------------------------------------------------------------- helpers

# is_ours PID: PID is a live toxiproxy-server of this cache listening on this script's port.
is_ours() {
  local cmd
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  alive "$1" || return 1
  cmd=$(cmdline_of "$1") || return 1
  [[ $cmd == "$BIN "* && $cmd == *" -port $TOXIPROXY_PORT "* ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$TOXIPROXY_HOST/$1") 2>/dev/null; }

# answers: GET /version gets an HTTP 200 from the API.
answers() {
  (
    exec 3<>"/dev/tcp/$TOXIPROXY_HOST/$TOXIPROXY_PORT" || exit 1
    printf 'GET /version HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$TOXIPROXY_HOST" "$TOXIPROXY_PORT" >&3
    IFS= read -r -t 3 line <&3 || exit 1
    [[ $line == "HTTP/1."?" 200"* ]]
  ) 2>/dev/null
}

acquire_lock() {
  take_lock "$LOCK_DIR" $((TOXIPROXY_START_TIMEOUT + TOXIPROXY_STOP_TIMEOUT + 60))
  trap release_lock EXIT
  trap 'exit 130' INT TERM
}

# ------------------------------------------------------------------------------- build

# build: `go install .../cmd/server@vVERSION` once (the module's server command is cmd/server
# in v2.5.0), GOBIN a temp dir renamed into place (never half a binary), Go caches in the cache.
build() {
  local tmp build_lock=$CACHE_DIR/.build-toxiproxy-$TOXIPROXY_VERSION.lock started=$SECONDS
  [[ -x $BIN ]] && return 0
  need go "needed once to build Toxiproxy $TOXIPROXY_VERSION (go install)"
  mkdir -p "$GO_BIN_DIR"
  take_lock "$build_lock" 1800
  # shellcheck disable=SC2064 # expand now: the lock path is fixed
  trap "rm -rf '$build_lock'" EXIT
  if [[ ! -x $BIN ]]; then
    tmp=$(mktemp -d "$GO_BIN_DIR/.toxiproxy.XXXXXX")
    log "building Toxiproxy $TOXIPROXY_VERSION with go install into $GO_BIN_DIR (first run only; ~15-60 s cold)"
    if ! GOBIN=$tmp GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build GOFLAGS=-modcacherw \
      go install "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION" >"$tmp.log" 2>&1; then
      cat "$tmp.log" >&2
      rm -rf "$tmp" "$tmp.log"
      die "go install github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION failed"
    fi
    [[ -x $tmp/server ]] || { rm -rf "$tmp" "$tmp.log"; die "go install left no server binary"; }
    mv -f "$tmp/server" "$BIN"
    rm -rf "$tmp" "$tmp.log"
    log "built $BIN in $((SECONDS - started))s"
  fi
  rm -rf "$build_lock"
  trap - EXIT
}

stop_pid() {
  local pid=$1 signal=${2:-TERM} deadline
  kill "-$signal" "$pid" 2>/dev/null || true
  deadline=$((SECONDS + TOXIPROXY_STOP_TIMEOUT))
  while alive "$pid"; do
    if ((SECONDS >= deadline)) && [[ $signal != KILL ]]; then
      log "pid $pid still running after ${TOXIPROXY_STOP_TIMEOUT}s: SIGKILL"
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
      log "already running: toxiproxy pid $pid, $URL ($RUN_DIR)"
      echo "$URL"
      return 0
    fi
    tail_log
    die "pid $pid runs from $RUN_DIR but its API does not answer on $URL"
  fi
  port_in_use "$TOXIPROXY_PORT" && die "$TOXIPROXY_HOST:$TOXIPROXY_PORT is already taken by another process (not a server started from $RUN_DIR)"
  [[ -f $LOG_FILE ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"

  log "starting Toxiproxy $TOXIPROXY_VERSION, API on $URL (run dir $RUN_DIR)"
  began=$SECONDS
  local -a launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  LOG_LEVEL=$TOXIPROXY_LOG_LEVEL nohup "${launcher[@]}" "$BIN" -host "$TOXIPROXY_HOST" -port "$TOXIPROXY_PORT" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"

  deadline=$((SECONDS + TOXIPROXY_START_TIMEOUT))
  until answers; do
    if ! alive "$pid"; then
      rm -f "$PID_FILE"
      tail_log
      die "toxiproxy-server exited during start-up (log: $LOG_FILE)"
    fi
    if ((SECONDS >= deadline)); then
      tail_log
      log "no answer on $URL after ${TOXIPROXY_START_TIMEOUT}s: stopping pid $pid"
      stop_pid "$pid"
      rm -f "$PID_FILE"
      die "start-up timed out"
    fi
    sleep 0.05
  done
  is_ours "$pid" || die "pid $pid answers on $URL but does not look like the server this script started"
  log "serving: Toxiproxy $TOXIPROXY_VERSION, pid $pid, $URL in $((SECONDS - began))s"
  echo "$URL"
}

cmd_down() {
  local pid
  (($# == 0)) || die "down takes no options"
  [[ -d $RUN_DIR ]] || { log "not running (no run dir $RUN_DIR)"; return 0; }
  acquire_lock
  if pid=$(running_pid); then
    log "stopping toxiproxy pid $pid ($RUN_DIR) with SIGTERM"
    stop_pid "$pid" TERM
    rm -f "$PID_FILE"
    log "stopped"
  else
    log "not running ($RUN_DIR)"
  fi
}

cmd_status() {
  local pid
  if ! pid=$(running_pid 2>/dev/null); then
    echo "stopped: no toxiproxy started from $RUN_DIR"
    return 3
  fi
  if answers; then
    echo "running: Toxiproxy $TOXIPROXY_VERSION, pid $pid, $URL, run dir $RUN_DIR"
    return 0
  fi
  echo "starting or unhealthy: toxiproxy pid $pid runs but does not answer on $URL"
  return 1
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

usage() { sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed -n 's/^# \{0,1\}//p'; }

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    up | start) cmd_up "$@" ;;
    down | stop) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    url) echo "$URL" ;;
    logs | log) cmd_logs "$@" ;;
    build) build && echo "$BIN" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
