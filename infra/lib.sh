# Helpers shared by infra/kafka.sh, infra/s3.sh and infra/toxiproxy.sh (sourced, not run).
# The sourcing script defines `log` (its own prefix) first; `running_pid` and `tail_log` read
# the script's PID_FILE / LOG_FILE and call its `is_ours`.

die() { log "error: $*"; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH ($2)"; }

# alive PID: the process exists and is not a zombie.
alive() {
  local state=
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r /proc/$1/stat ]]; then
    state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || true
  else
    state=$(ps -o stat= -p "$1" 2>/dev/null | cut -c1) || true
  fi
  [[ $state != Z ]]
}

cmdline_of() {
  if [[ -r /proc/$1/cmdline ]]; then
    tr '\0' ' ' <"/proc/$1/cmdline"
  else
    ps -ww -o args= -p "$1" 2>/dev/null
  fi
}

release_lock() { rm -rf "$LOCK_DIR"; }

# take_lock DIR [TIMEOUT_S]: a mkdir lock (stale holders are detected by pid).
take_lock() {
  local dir=$1 holder deadline=$((SECONDS + ${2:-120}))
  mkdir -p "$(dirname "$dir")"
  until mkdir "$dir" 2>/dev/null; do
    holder=$(cat "$dir/pid" 2>/dev/null || true)
    if [[ -n $holder ]] && ! kill -0 "$holder" 2>/dev/null; then
      rm -rf "$dir"
      continue
    fi
    ((SECONDS < deadline)) || die "timed out waiting for $dir (held by pid ${holder:-?})"
    sleep 0.2
  done
  printf '%s\n' "$$" >"$dir/pid"
}

# running_pid: prints the pid of our server, or fails (and drops a stale pid file).
running_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  if is_ours "$pid"; then
    printf '%s\n' "$pid"
    return 0
  fi
  log "removing stale pid file $PID_FILE (pid '$pid' is not this server)"
  rm -f "$PID_FILE"
  return 1
}

tail_log() {
  local n=${1:-40}
  if [[ -s $LOG_FILE ]]; then
    log "last $n lines of $LOG_FILE:"
    tail -n "$n" "$LOG_FILE" >&2
  fi
}
