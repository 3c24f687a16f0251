# shellcheck shell=bash
# Helpers shared by the test-cluster scripts (slurm-*, sge-*). Sourced, not run.

# Closes every file descriptor above 2 that the caller passed down. The daemons started here
# outlive this script, and would otherwise keep them open: a caller's lock file (for example
# `flock LOCK tests/cluster/slurm-up`) would stay locked until the cluster stops.
close_inherited_fds() {
    local fd
    for fd in "/proc/$$/fd"/*; do
        fd=${fd##*/}
        if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
}

log() { echo "[$(date +%H:%M:%S)] $(basename "$0"): $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Whether PID is a live (non-zombie) process whose command name is COMM. PID 1 on some
# machines reaps orphans slowly, and kill -0 succeeds on zombies, hence /proc/PID/stat.
pid_alive() {
    local pid=$1 comm=$2 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]
}

# The pid recorded in PIDFILE, if that process is alive and is COMM.
live_pid() {
    local pidfile=$1 comm=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    pid_alive "$pid" "$comm" && echo "$pid"
}

# Retries COMMAND every 0.1 s until it succeeds or SECS pass.
wait_for() {
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.1
    done
}
