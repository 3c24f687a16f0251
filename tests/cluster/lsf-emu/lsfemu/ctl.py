"""lsf-emu-ctl: what a test does to the emulated cluster that no LSF command does.

    lsf-emu-ctl status                      daemon, jobs per state, outage
    lsf-emu-ctl stop [TIMEOUT]              end every job and the daemon; fails if anything
                                            of a job is still running after TIMEOUT (30 s)
    lsf-emu-ctl wait-idle [TIMEOUT]         wait until no job is left and the daemon is gone
    lsf-emu-ctl set KEY VALUE               change a knob (lsf-emu.conf); `get KEY` shows one
    lsf-emu-ctl outage SECONDS [--down|--hang]
                                            mbatchd unreachable for SECONDS: clients retry and
                                            fail as LSF's do (--hang: they block, silent)
    lsf-emu-ctl outage off
    lsf-emu-ctl fail-next CMD [N] [--after-submit]
                                            the next N calls of CMD (bsub, bjobs, bkill, ...)
                                            exit 255 printing nothing; with --after-submit
                                            bsub submits the job first
    lsf-emu-ctl unkwn JOB [SECONDS]         bjobs shows UNKWN (the job keeps running)
    lsf-emu-ctl clear JOB                   end an UNKWN or ZOMBI display at once
    lsf-emu-ctl zombi JOB [SECONDS]         the job dies while its host is unreachable: ZOMBI
                                            for SECONDS (5), then EXIT with TERM_ZOMBIE
    lsf-emu-ctl ssusp JOB [SECONDS]         LSF suspends the job (SSUSP), for SECONDS or until
    lsf-emu-ctl resume JOB                  resumed

JOB is an id or `ID[INDEX]`.
"""

import fcntl
import os
import signal
import sys
import time

from .client import DAEMON_LOCK, state_dir
from .config import Config, write_conf_value
from .jobview import parse_job_specs
from .store import FINISHED, UNFINISHED, Store, wake_daemon


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0 if argv else 2
    directory = state_dir()
    store = Store(directory)
    cmd, args = argv[0], argv[1:]
    handler = COMMANDS.get(cmd)
    if handler is None:
        sys.stderr.write(f"lsf-emu-ctl: unknown command {cmd} (try --help)\n")
        return 2
    try:
        return handler(directory, store, args) or 0
    except (ValueError, IndexError):
        sys.stderr.write(f"lsf-emu-ctl: bad arguments for {cmd} (try --help)\n")
        return 2


def daemon_pid(directory):
    """The daemon's pid if one holds the lock, else None."""
    path = os.path.join(directory, DAEMON_LOCK)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        text = os.read(fd, 32).decode().strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)


def status(directory, store, args):
    pid = daemon_pid(directory)
    print(f"state directory: {directory}")
    print(f"daemon: {'pid ' + str(pid) if pid else 'not running'}")
    counts = dict(store.db.execute("SELECT stat, COUNT(*) FROM jobs GROUP BY stat").fetchall())
    print("jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    until = float(store.meta("outage_until", "0"))
    if until > time.time():
        print(f"outage ({store.meta('outage_mode', 'down')}) for {until - time.time():.1f} s")


def job_processes(store):
    """Pids of live processes in the sessions of jobs that were started (leaders recorded in
    the table with their start time): what must be gone once the cluster is stopped.

    A leader's pid may since belong to another process: the kernel reuses a pid once no process,
    process group or session of that id is left, and with pid_max at 32768 a long test run does.
    A session is the job's only while its leader is gone (then no other process can have taken
    the id while the session has members) or is still the process recorded (same start time)."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = data[data.rfind(")") + 2:].split()
        procs[int(entry)] = (fields[0], int(fields[3]), int(fields[19]))
    leaders = set()
    for pid, ticks in store.db.execute(
            "SELECT pid, start_ticks FROM jobs WHERE pid IS NOT NULL").fetchall():
        now = procs.get(pid)
        if now is None or now[2] == ticks:
            leaders.add(pid)
    return [pid for pid, (state, session, _) in procs.items()
            if state != "Z" and session in leaders]


def stop(directory, store, args):
    timeout = float(args[0]) if args else 30.0
    with store.write():
        store.set_meta("shutdown", "1")
    wake_daemon(directory)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if daemon_pid(directory) is None:
            break
        time.sleep(0.05)
    # Without a daemon (it was killed, or never started) nobody else ends the jobs.
    now = time.time()
    with store.write():
        marks = ",".join("?" * len(UNFINISHED))
        store.db.execute(f"UPDATE jobs SET stat = 'EXIT', finish_time = ?, exit_reason = "
                         f"'TERM_ADMIN' WHERE stat IN ({marks})", (now, *UNFINISHED))
        store.set_meta("shutdown", None)
    while True:
        left = job_processes(store)
        if not left:
            return 0
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.time() >= deadline:
            sys.stderr.write(f"lsf-emu-ctl: job processes still running: {left}\n")
            return 1
        time.sleep(0.05)


def wait_idle(directory, store, args):
    deadline = time.time() + (float(args[0]) if args else 60.0)
    while time.time() < deadline:
        if store.unfinished_count() == 0 and daemon_pid(directory) is None:
            return 0
        time.sleep(0.1)
    sys.stderr.write("lsf-emu-ctl: jobs or the daemon are still there\n")
    return 1


def set_knob(directory, store, args):
    write_conf_value(Config(directory).path, args[0], args[1])
    wake_daemon(directory)


def get_knob(directory, store, args):
    print(Config(directory)[args[0]])


def outage(directory, store, args):
    with store.write():
        if args[0] == "off":
            store.set_meta("outage_until", None)
        else:
            flags = set(args[1:])
            if not flags <= {"--hang", "--down"} or len(flags) > 1:
                raise ValueError(args)
            store.set_meta("outage_until", time.time() + float(args[0]))
            store.set_meta("outage_mode", "hang" if "--hang" in flags else "down")


def fail_next(directory, store, args):
    cmd = args[0]
    rest = [a for a in args[1:] if a != "--after-submit"]
    count = int(rest[0]) if rest else 1
    key = ("fail_after_submit:" if "--after-submit" in args else "fail_next:") + cmd
    with store.write():
        store.set_meta(key, int(store.meta(key, "0")) + count)


def rows_of(store, spec_text):
    spec = parse_job_specs([spec_text])[0]
    rows = [r for r in store.jobs("id = ?", (spec.id,))
            if spec.indices is None or r["idx"] in spec.indices]
    if not rows:
        raise SystemExit(f"lsf-emu-ctl: no job {spec_text}")
    return rows


def unkwn(directory, store, args):
    until = time.time() + float(args[1]) if len(args) > 1 else None
    with store.write():
        for r in rows_of(store, args[0]):
            store.update(r["id"], r["idx"], overlay="UNKWN", overlay_until=until)


def clear(directory, store, args):
    with store.write():
        for r in rows_of(store, args[0]):
            store.update(r["id"], r["idx"], overlay=None, overlay_until=None)


def zombi(directory, store, args):
    seconds = float(args[1]) if len(args) > 1 else 5.0
    with store.write():
        for r in rows_of(store, args[0]):
            if r["stat"] in ("RUN", "USUSP", "SSUSP"):
                store.update(r["id"], r["idx"], overlay="ZOMBI",
                             overlay_until=time.time() + seconds, kill_kind="zombie",
                             kill_step=0, kill_next=time.time())
    wake_daemon(directory)


def ssusp(directory, store, args):
    until = time.time() + float(args[1]) if len(args) > 1 else None
    with store.write():
        for r in rows_of(store, args[0]):
            if r["stat"] in ("RUN", "USUSP"):
                store.update(r["id"], r["idx"], susp_req="SSUSP", susp_until=until)
    wake_daemon(directory)


def resume(directory, store, args):
    with store.write():
        for r in rows_of(store, args[0]):
            if r["stat"] not in FINISHED:
                store.update(r["id"], r["idx"], susp_req="RESUME")
    wake_daemon(directory)


COMMANDS = {"status": status, "stop": stop, "wait-idle": wait_idle, "set": set_knob,
            "get": get_knob, "outage": outage, "fail-next": fail_next, "unkwn": unkwn,
            "clear": clear, "zombi": zombi, "ssusp": ssusp, "resume": resume}
