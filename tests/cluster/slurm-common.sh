# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared definitions for the flowrun test-cluster scripts (slurm-up, slurm-down, slurm-ctl).
# Sourced, not run. Everything lives under one private prefix; the only file outside it is
# /etc/slurm/slurm.conf (+ slurmdbd.conf), because Slurm's client commands read that path
# when SLURM_CONF is unset, so the backend under test needs no special environment.

PREFIX=${FLOWRUN_SLURM_PREFIX:-/var/tmp/flowrun-slurm}
CONF_DIR=${FLOWRUN_SLURM_CONF_DIR:-/etc/slurm}
DB_PORT=${FLOWRUN_SLURM_DB_PORT:-13306}
# The node advertises 16 CPUs whatever the machine has (SlurmdParameters=config_overrides),
# so that many trivial test jobs run at once on a 2-core CI machine.
CPUS=${FLOWRUN_SLURM_CPUS:-16}
READY_TIMEOUT=${FLOWRUN_SLURM_TIMEOUT:-90}
RUN="$PREFIX/run"
LOG="$PREFIX/log"
DB_DATA="$PREFIX/mysql"
DB_RUN="$PREFIX/mysql-run"   # owned by the mysql user: socket, pid file, error log

# shellcheck source=tests/cluster/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Sends SIGTERM to the process of PIDFILE (only if it is COMM), then SIGKILL after 15 s.
stop_daemon() {
    local pidfile=$1 comm=$2 pid i
    pid=$(live_pid "$pidfile" "$comm") || { rm -f "$pidfile"; return 0; }
    log "stopping $comm (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_alive "$pid" "$comm" || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$comm (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" "$comm" || break
        sleep 0.1
    done
    rm -f "$pidfile"
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then return 0; fi
    log "starting slurmctld"
    /usr/sbin/slurmctld -f "$CONF_DIR/slurm.conf" || die "slurmctld did not start (see $LOG/slurmctld.log)"
    wait_for "$READY_TIMEOUT" "slurmctld (scontrol ping)" ctld_up
    # Our own pid file must name a live slurmctld: otherwise a foreign controller on the same
    # port would pass the ping.
    live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null ||
        die "our slurmctld is not running (port clash? see $LOG/slurmctld.log)"
}
