# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared definitions for the flowrun Grid Engine scripts (sge-up, sge-down, sge-ctl). Sourced,
# not run.
#
# The cluster is Son of Grid Engine 8.1.9 from Debian's gridengine-* packages, single node. The
# packages fix its paths: the cell lives in /var/lib/gridengine/default, the spool in
# /var/spool/gridengine. The scripts keep their own records under $STATE_DIR: which daemon pids
# they started (so sge-down and sge-ctl only ever signal those), and a log.
#
# Why each setting is what it is comes from measurements of this package on a 2-core Debian 12
# machine (project research notes, "gridengine.md"); the comments beside each setting repeat
# the reason.

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
SGE_COMMON="$SGE_ROOT/$SGE_CELL/common"
# Where sge_qmaster really writes its pid (the init script looks elsewhere, which is why its
# `stop` does nothing).
QMASTER_PIDFILE=/var/spool/gridengine/qmaster/qmaster.pid
# Where the init script tells sge_execd to write its pid.
EXECD_PIDFILE=/var/run/gridengine/execd.pid
STATE_DIR=${FLOWRUN_SGE_STATE_DIR:-/var/tmp/flowrun-sge}
# Slots of the one queue instance. More slots than cores is fine for the trivial jobs of the
# tests: the scheduler starts about one job per slot per second.
SLOTS=${FLOWRUN_SGE_SLOTS:-16}
READY_TIMEOUT=${FLOWRUN_SGE_TIMEOUT:-60}
HOST=$(hostname)

# shellcheck source=tests/cluster/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The process start time (clock ticks since boot, field 22 of /proc/PID/stat): with the pid it
# names one process for good, so a recycled pid is never mistaken for a daemon we started.
start_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # The command name (field 2) may hold spaces; what follows its closing parenthesis is
    # field 3 onwards, so field 22 is the 20th word there.
    stat=${stat##*) }
    # shellcheck disable=SC2086  # word splitting is the point
    set -- $stat
    echo "${20}"
}

# Records that we started COMM as PID: sge-down and sge-ctl signal only recorded processes.
record_started() {
    local comm=$1 pid=$2
    mkdir -p "$STATE_DIR"
    echo "$pid $(start_ticks "$pid")" >"$STATE_DIR/$comm.started"
}

# The pid of COMM if it is running and is the very process we started, else fails.
our_pid() {
    local comm=$1 pid ticks rec_pid rec_ticks
    [[ -r $STATE_DIR/$comm.started ]] || return 1
    read -r rec_pid rec_ticks <"$STATE_DIR/$comm.started" || return 1
    pid_alive "$rec_pid" "$comm" || return 1
    ticks=$(start_ticks "$rec_pid") || return 1
    [[ $ticks == "$rec_ticks" ]] && echo "$rec_pid"
}

# Waits up to SECS for PID to exit; fails if it is still there.
wait_gone() {
    local pid=$1 comm=$2 secs=$3 deadline
    deadline=$((SECONDS + secs))
    while pid_alive "$pid" "$comm"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

qmaster_answers() { timeout 10 qconf -sh >/dev/null 2>&1; }

start_qmaster() {
    if live_pid "$QMASTER_PIDFILE" sge_qmaster >/dev/null; then return 0; fi
    log "starting sge_qmaster"
    /etc/init.d/gridengine-master start >/dev/null || die "sge_qmaster did not start"
    wait_for "$READY_TIMEOUT" "sge_qmaster to answer (qconf -sh)" qmaster_answers
    local pid
    pid=$(live_pid "$QMASTER_PIDFILE" sge_qmaster) ||
        die "no live sge_qmaster behind $QMASTER_PIDFILE (see /var/spool/gridengine/qmaster/messages)"
    record_started sge_qmaster "$pid"
}

# Stops a daemon we started: first SGE's own shutdown request (SHUTDOWN_CMD...), then SIGTERM,
# then SIGKILL, each bounded. Leaves alone a daemon this script set did not start.
stop_ours() {
    local comm=$1 pidfile=$2 pid
    shift 2
    if ! pid=$(our_pid "$comm"); then
        if live_pid "$pidfile" "$comm" >/dev/null; then
            log "$comm is running but was not started by sge-up: left alone"
        fi
        rm -f "$STATE_DIR/$comm.started"
        return 0
    fi
    log "stopping $comm (pid $pid)"
    timeout 15 "$@" >/dev/null 2>&1 || true
    if ! wait_gone "$pid" "$comm" 30; then
        log "$comm (pid $pid) still running after its shutdown request: SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$comm" 15; then
            log "$comm (pid $pid) ignored SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" "$comm" 5 || log "$comm (pid $pid) survived SIGKILL"
        fi
    fi
    rm -f "$STATE_DIR/$comm.started"
}
