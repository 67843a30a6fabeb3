# shellcheck shell=bash
# lib.sh - helpers shared by deploy/local/*.sh (sourced, not executed).
#
# Everything the local stack writes lives under the repo's git-ignored .run/
# (processes, data, logs) and .cache/ (downloaded jars, tools).

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LOCAL_DIR/../.." && pwd)"
RUN_DIR="${CONV_RUN_DIR:-$REPO_ROOT/.run}"
# shellcheck disable=SC2034
CACHE_DIR="${CONV_CACHE_DIR:-$REPO_ROOT/.cache}"
# shellcheck disable=SC2034
LOG_DIR="$RUN_DIR/logs"

# log: progress to stderr, prefixed with the script name.
log() { echo "${0##*/}: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# port_open HOST PORT: bash-only TCP probe (no nc needed).
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid_matches PID PATTERN: true if PID is alive and its command line matches
# the (grep -E) PATTERN. Guards against stale pid files pointing at recycled pids.
pid_matches() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] &&
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -Eq -- "$2"
}

# read_pid FILE: the pid stored in FILE, or nothing.
read_pid() { if [ -f "$1" ]; then tr -dc '0-9' <"$1"; fi; }

# alive PID: the process exists and is not a zombie (an orphan's exit is reaped
# by pid 1, which in containers may take a moment).
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [ "$st" != Z ] && [ -n "$st" ]
}

# stop_pid PID TIMEOUT NAME: SIGTERM, wait up to TIMEOUT s, then SIGKILL.
stop_pid() {
  local pid="$1" timeout="$2" name="$3" deadline
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + timeout))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name (pid $pid) still running after ${timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
  done
}

# as_root CMD...: run CMD as root (directly, or via sudo when not root).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# apt_install PKG...: non-interactive, quiet install (output in .run/logs/apt.log,
# shown on failure). Runs `apt-get update` at most once per script invocation
# and waits for a concurrent apt/dpkg to finish.
_APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
  local lock=(-o DPkg::Lock::Timeout=600) aptlog="$LOG_DIR/apt.log"
  mkdir -p "$LOG_DIR"
  if [ -z "$_APT_UPDATED" ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q "${lock[@]}" update >>"$aptlog" 2>&1 ||
      { tail -n 20 "$aptlog" >&2; die "apt-get update failed (log: $aptlog)"; }
    _APT_UPDATED=1
  fi
  log "apt-get install $* (log: $aptlog)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q "${lock[@]}" \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    --no-install-recommends install "$@" >>"$aptlog" 2>&1 ||
    { tail -n 30 "$aptlog" >&2; log "apt-get install $* failed (log: $aptlog)"; return 1; }
}

# base_url ADDR: a URL curl can reach for a listen address (":8080", "0.0.0.0:8080").
base_url() {
  local a="$1"
  case "$a" in :*) a="127.0.0.1$a" ;; 0.0.0.0:*) a="127.0.0.1:${a#0.0.0.0:}" ;; esac
  echo "http://$a"
}

# Services for a command that needs them (make test, make bench): services_up starts MariaDB and Kafka
# unless they are up, remembering which ones THIS script started; the EXIT trap that services_track
# installs stops exactly those, so services that were already running stay running.
T0=$SECONDS
step() { echo "==> $* (+$((SECONDS - T0))s)"; }
_STARTED=()
_svc_label() { case "$1" in mysql) echo mariadb ;; *) echo "$1" ;; esac; }
# shellcheck disable=SC2317  # invoked by the EXIT trap
_services_cleanup() {
  local rc=$? i
  for ((i = ${#_STARTED[@]} - 1; i >= 0; i--)); do
    step "stopping $(_svc_label "${_STARTED[i]}") (started by this run)"
    "$LOCAL_DIR/${_STARTED[i]}.sh" stop || true
  done
  echo "==> done in $((SECONDS - T0))s (exit $rc)"
  exit "$rc"
}
services_up() {
  trap _services_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local name before
  for name in mysql kafka; do
    before=0
    "$LOCAL_DIR/$name.sh" status >/dev/null 2>&1 || before=$?
    if [ "$before" = 0 ] || [ "$before" = 3 ]; then
      step "$(_svc_label "$name") already up, leaving it running: $("$LOCAL_DIR/$name.sh" status 2>/dev/null || true)"
      continue
    fi
    step "starting $(_svc_label "$name")"
    _STARTED+=("$name") # recorded before starting: a half-started service is stopped too
    "$LOCAL_DIR/$name.sh" start
  done
}
