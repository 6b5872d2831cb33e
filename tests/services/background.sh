# Background jobs of `./dev test` (docs/testing.md), sourced by ./dev.
#
# Each job runs in its own process group (setsid); $BG/<name>.pid, .log and
# .started are written at its start, .status (its exit code) atomically once it
# has ended. tests/services/background.py reads the same files, so a test
# fixture can wait for a build the suite needs ($REPLICATOR_BACKGROUND names
# the directory). Needs a `log` function from the caller.

BG=""

background() {  # name priority(normal|idle) command...: start it, return at once
  local name=$1 prio=$2; shift 2
  if [ -z "$BG" ]; then
    BG=$(mktemp -d "${TMPDIR:-/tmp}/replicator-dev.XXXXXX")
    export REPLICATOR_BACKGROUND="$BG"
    trap stop_background EXIT
  fi
  local run=()
  # idle: the build only gets CPU the tests leave unused, so it cannot slow them
  # (SCHED_IDLE where chrt exists, else nice 19).
  if [ "$prio" = idle ]; then
    run=(nice -n 19)
    command -v chrt >/dev/null && run+=(chrt --idle 0)
  fi
  date +%s >"$BG/$name.started"
  setsid bash -c '"$@"; echo $? >"$0.status.tmp"; mv "$0.status.tmp" "$0.status"' \
    "$BG/$name" "${run[@]}" "$@" </dev/null >"$BG/$name.log" 2>&1 &
  echo $! >"$BG/$name.pid"
}

background_failed() {  # name: true if it has ended with a non-zero status (does not wait)
  [ -f "$BG/$1.status" ] && [ "$(cat "$BG/$1.status")" != 0 ]
}

join_background() {  # name what: wait for it; a failure ends the run with its log
  local name=$1 what=$2 pid; pid=$(cat "$BG/$name.pid")
  while [ ! -f "$BG/$name.status" ] && kill -0 "$pid" 2>/dev/null; do sleep 1; done
  local rc; rc=$(cat "$BG/$name.status" 2>/dev/null || echo "died")
  local ended; ended=$(stat -c %Y "$BG/$name.status" 2>/dev/null || date +%s)
  local took=$(( ended - $(cat "$BG/$name.started") ))
  if [ "$rc" != 0 ]; then
    printf '\033[1;31m==> %s FAILED (exit %s) after %s s; last lines of %s:\033[0m\n' \
      "$what" "$rc" "$took" "$BG/$name.log" >&2
    tail -n 30 "$BG/$name.log" >&2
    return 1
  fi
  log "$what: done (took $took s)"
}

stop_background() {  # on exit: end every job still running; keep the logs only of failures
  local pidfile pid keep=""
  for pidfile in "$BG"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ ! -f "${pidfile%.pid}.status" ] && kill -0 "$pid" 2>/dev/null; then
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true  # not yet its own group
      keep=1
    elif [ "$(cat "${pidfile%.pid}.status" 2>/dev/null)" != 0 ]; then
      keep=1
    fi
  done
  if [ -z "$keep" ]; then rm -rf "$BG"; fi
}
