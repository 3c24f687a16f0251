"""The emulated batch daemons (mbatchd's dispatcher and sbatchd's job runner in one process).

One per state directory, started on demand by the commands and gone a few seconds
(IDLE_EXIT) after the last job ends, or at once on `lsf-emu-ctl stop`. It runs each job as
`/bin/sh -c COMMAND` (or `/bin/sh SCRIPT` for a script read from stdin) in a session of its
own, so that a signal reaches the whole job and what is left of it when its shell exits can be
killed. It is a child subreaper: processes a job leaves behind are reparented to it, reaped
and never pile up as zombies.

The job table (store.py) is the only truth; this process keeps in memory only what a restart
may lose: the wait statuses of its children and the memory samples of running jobs.
"""

import ctypes
import fcntl
import os
import select
import signal
import socket
import sys
import time

from . import texts
from .client import DAEMON_LOCK
from .config import Config
from .store import UNFINISHED, Store, job_env, wake_address

RUNNING = ("RUN", "USUSP", "SSUSP")
MEMORY_SAMPLE_INTERVAL = 0.5
PR_SET_CHILD_SUBREAPER = 36

# The signals of each kind of termination, JOB_TERMINATE_INTERVAL apart.
KILL_SEQUENCES = {
    # bkill, by the owner or an administrator [ibm "TERMINATE action"]
    "owner": (signal.SIGINT, signal.SIGTERM, signal.SIGKILL),
    "admin": (signal.SIGINT, signal.SIGTERM, signal.SIGKILL),
    # bkill -s KILL
    "kill_owner": (signal.SIGKILL,),
    "kill_admin": (signal.SIGKILL,),
    # bkill -r: no time for clean-up
    "force_owner": (signal.SIGKILL,),
    "force_admin": (signal.SIGKILL,),
    # -W reached: real reports say "Exited with exit code 140" (128 + SIGUSR2), so SIGUSR2
    # comes first; the TERMINATE sequence follows for a job that survives it.
    "runlimit": (signal.SIGUSR2, signal.SIGINT, signal.SIGTERM, signal.SIGKILL),
    # -M exceeded: real reports say 137 (128 + SIGKILL), as with cgroup enforcement.
    "memlimit": (signal.SIGKILL,),
    # lsf-emu-ctl zombi: the job dies while its host is unreachable
    "zombie": (signal.SIGKILL,),
}
REASONS = {"owner": "TERM_OWNER", "admin": "TERM_ADMIN", "kill_owner": "TERM_OWNER",
           "kill_admin": "TERM_ADMIN", "force_owner": "TERM_FORCE_OWNER",
           "force_admin": "TERM_FORCE_ADMIN", "runlimit": "TERM_RUNLIMIT",
           "memlimit": "TERM_MEMLIMIT", "zombie": "TERM_ZOMBIE"}


def main(state_dir):
    os.environ["LSF_EMU_DIR"] = state_dir
    lock_fd = os.open(os.path.join(state_dir, DAEMON_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another daemon has this directory
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    Daemon(state_dir, lock_fd).run()


class Daemon:
    def __init__(self, state_dir, lock_fd):
        self.dir = state_dir
        self.lock_fd = lock_fd
        self.config = Config(state_dir)
        self.store = Store(state_dir)
        self.spool = os.path.join(state_dir, "spool")
        self.mail = os.path.join(state_dir, "mail")
        os.makedirs(self.spool, exist_ok=True)
        os.makedirs(self.mail, exist_ok=True)
        self.children = {}   # pid -> (id, idx) of the jobs this process started
        self.orphans = {}    # (id, idx) -> (pid, start ticks): jobs a previous daemon started
        self.io = {}         # (id, idx) -> how the job's output is written
        self.memory = {}     # (id, idx) -> [max KB, sum KB, samples, max procs, max threads]
        self.next_sample = 0.0
        self.stopping = False
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        self.wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.wake.bind(wake_address(state_dir))
        except OSError as error:
            self.log(f"no wake-up socket ({error}): acting on timers only")
        self.wake.setblocking(False)
        self.sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        with self.store.write():
            self.store.set_meta("shutdown", None)
        self.adopt()

    def on_sigterm(self, *_):
        self.stopping = True

    def log(self, message):
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} mbatchd[{os.getpid()}]: {message}\n")
        sys.stderr.flush()

    # --- the loop ---------------------------------------------------------------------------

    def run(self):
        idle_since = None
        while True:
            self.config.reload()
            now = time.time()
            self.reap()
            if self.stopping or self.store.meta("shutdown"):
                self.stop_all(now)
            self.carry_out_requests(now)
            if now >= self.next_sample:
                self.sample_memory(now)
                self.next_sample = now + MEMORY_SAMPLE_INTERVAL
            self.check_limits(now)
            self.watch_orphans(now)
            self.dispatch(now)
            busy = bool(self.children or self.orphans) or self.store.unfinished_count() > 0
            if busy:
                idle_since = None
            else:
                idle_since = idle_since or now
                quitting = self.stopping or self.store.meta("shutdown")
                if quitting or now - idle_since >= self.config["IDLE_EXIT"]:
                    if self.try_exit():
                        return
            self.wait(0.2 if (self.children or self.orphans) else 0.5)

    def wait(self, timeout):
        try:
            ready, _, _ = select.select([self.wake, self.sig_r], [], [], timeout)
        except InterruptedError:
            return
        for source in ready:
            try:
                if source is self.wake:
                    while self.wake.recv(64):
                        pass
                else:
                    while os.read(self.sig_r, 64):
                        pass
            except (BlockingIOError, OSError):
                pass

    def try_exit(self):
        """Leaves, unless a job came in meanwhile. The lock is let go inside the write
        transaction: a bsub that commits after our check finds no daemon and starts one."""
        with self.store.write():
            if self.store.unfinished_count():
                return False
            os.close(self.lock_fd)
        self.log("no job left: exiting")
        return True

    # --- starting jobs ----------------------------------------------------------------------

    def dispatch(self, now):
        busy = self.store.db.execute(
            "SELECT COALESCE(SUM(slots), 0) FROM jobs WHERE stat IN ('RUN','USUSP','SSUSP')"
        ).fetchone()[0]
        free = self.config["SLOTS"] - busy
        if free <= 0 or self.stopping:
            return
        running_per_array = dict(self.store.db.execute(
            "SELECT id, COUNT(*) FROM jobs WHERE stat IN ('RUN','USUSP','SSUSP') "
            "AND slot_limit IS NOT NULL GROUP BY id").fetchall())
        offset = 0
        while free > 0:
            rows = self.store.db.execute(
                "SELECT * FROM jobs WHERE stat = 'PEND' ORDER BY id, idx LIMIT 200 OFFSET ?",
                (offset,)).fetchall()
            if not rows:
                return
            offset += len(rows)
            for row in rows:
                if row["slots"] > free:
                    return  # first come, first served: nothing overtakes a bigger job
                limit = row["slot_limit"]
                if limit is not None and running_per_array.get(row["id"], 0) >= limit:
                    continue
                if self.start(row, now):
                    free -= row["slots"]
                    if limit is not None:
                        running_per_array[row["id"]] = running_per_array.get(row["id"], 0) + 1
                if free <= 0:
                    return

    def start(self, row, now):
        key = (row["id"], row["idx"])
        with self.store.write():
            current = self.store.job(*key)
            if current is None or current["stat"] != "PEND":
                return False
            self.store.update(*key, stat="RUN", start_time=now)
        env = job_env(row)
        cwd = substitute(row["cwd_spec"], row)
        if not os.path.isdir(cwd):
            with self.store.write():
                self.store.update(*key, stat="EXIT", finish_time=time.time(), exec_cwd=cwd,
                                  exit_reason="TERM_CWD_NOTEXIST", exit_code=None)
            return True
        env["LSB_HOSTS"] = " ".join([self.config["HOST"]] * row["slots"])
        env["LSB_MCPU_HOSTS"] = f"{self.config['HOST']} {row['slots']}"
        io = self.open_output(row, cwd)
        if row["from_stdin"]:
            script = os.path.join(self.spool, f"{row['id']}.{row['idx']}.script")
            with open(script, "w", encoding="utf-8") as f:
                f.write(row["command"])
            argv = ["/bin/sh", script]
        else:
            argv = ["/bin/sh", "-c", row["command"]]
        pid = spawn(argv, env, cwd, io["stdout_fd"], io["stderr_fd"])
        os.close(io["stdout_fd"])
        if io["stderr_fd"] != io["stdout_fd"]:
            os.close(io["stderr_fd"])
        self.children[pid] = key
        self.io[key] = io
        self.memory[key] = [0, 0, 0, 0, 0]
        with self.store.write():
            self.store.update(*key, pid=pid, start_ticks=start_ticks(pid), exec_cwd=cwd,
                              out_path=io["out_path"], err_path=io["err_path"], pids=str(pid))
        return True

    def open_output(self, row, cwd):
        """Where the job's stdout and stderr go. With LSB_STDOUT_DIRECT=Y, straight into the
        -o and -e files; otherwise (LSF's default) into spool files that are copied after the
        job report when the job ends. Without -o the report and output are "mailed": written
        to $LSF_EMU_DIR/mail/ID[.INDEX]."""
        base = os.path.join(self.spool, f"{row['id']}.{row['idx']}")
        out_path = resolve_path(row["out_spec"], row, cwd) if row["out_spec"] else None
        err_path = resolve_path(row["err_spec"], row, cwd) if row["err_spec"] else None
        io = {"out_path": out_path, "err_path": err_path, "direct": False, "open_error": None,
              "spool_out": base + ".out", "spool_err": base + ".err" if err_path else None}
        if out_path and self.config.flag("LSB_STDOUT_DIRECT"):
            try:
                out_fd = open_for_job(out_path, row["out_overwrite"])
                err_fd = open_for_job(err_path, row["err_overwrite"]) if err_path else out_fd
                io.update(direct=True, stdout_fd=out_fd, stderr_fd=err_fd)
                return io
            except OSError as error:
                io["open_error"] = (out_path, error.strerror)
        elif out_path and not writable(out_path):
            # The file is written only when the job ends; whether it can be is known now.
            io["open_error"] = (out_path, "No such file or directory"
                                if not os.path.isdir(os.path.dirname(out_path))
                                else "Permission denied")
        out_fd = open_for_job(io["spool_out"], True)
        err_fd = open_for_job(io["spool_err"], True) if io["spool_err"] else out_fd
        io.update(stdout_fd=out_fd, stderr_fd=err_fd)
        return io

    # --- requests: kills, signals, suspensions ----------------------------------------------

    def carry_out_requests(self, now):
        rows = self.store.db.execute(
            "SELECT * FROM jobs WHERE stat IN ('RUN','USUSP','SSUSP') AND pid IS NOT NULL AND "
            "(kill_kind IS NOT NULL OR signal_req IS NOT NULL OR susp_req IS NOT NULL OR "
            "susp_until IS NOT NULL)").fetchall()
        for row in rows:
            key = (row["id"], row["idx"])
            pid = row["pid"]
            changes = {}
            if row["signal_req"] is not None:
                signal_group(pid, row["signal_req"], row["stat"])
                changes["signal_req"] = None
            if row["susp_req"] == "USUSP" or row["susp_req"] == "SSUSP":
                signal_group(pid, signal.SIGSTOP, "RUN")
                changes.update(stat=row["susp_req"], susp_req=None)
            elif row["susp_req"] == "RESUME":
                signal_group(pid, signal.SIGCONT, "RUN")
                changes.update(stat="RUN", susp_req=None, susp_until=None)
            if row["susp_until"] is not None and row["susp_until"] <= now \
                    and row["stat"] == "SSUSP" and "stat" not in changes:
                signal_group(pid, signal.SIGCONT, "RUN")
                changes.update(stat="RUN", susp_until=None)
            kind = row["kill_kind"]
            if kind and row["kill_next"] is not None and row["kill_next"] <= now:
                sequence = KILL_SEQUENCES[kind]
                step = row["kill_step"] or 0
                if step < len(sequence):
                    signal_group(pid, sequence[step], changes.get("stat", row["stat"]))
                    step += 1
                    changes.update(kill_step=step, kill_next=(
                        now + self.config["JOB_TERMINATE_INTERVAL"]
                        if step < len(sequence) else None))
            if changes:
                with self.store.write():
                    self.store.update(*key, **changes)

    def check_limits(self, now):
        for row in self.store.db.execute(
                "SELECT id, idx, start_time, run_limit_s FROM jobs WHERE stat IN "
                "('RUN','USUSP','SSUSP') AND run_limit_s IS NOT NULL AND kill_kind IS NULL "
                "AND pid IS NOT NULL").fetchall():
            if now - row["start_time"] >= row["run_limit_s"]:
                self.request_kill((row["id"], row["idx"]), "runlimit", now)

    def request_kill(self, key, kind, now):
        with self.store.write():
            row = self.store.job(*key)
            if row["kill_kind"] is None and row["stat"] in RUNNING:
                self.store.update(*key, kill_kind=kind, kill_step=0, kill_next=now)
        self.carry_out_requests(now)

    def sample_memory(self, now):
        """Resident memory, processes and threads of every running job's session, from
        /proc; enforces -M."""
        watched = dict(self.children)  # a job's session id is its leader's pid
        if not watched:
            return
        page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
        totals = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = proc_stat(int(entry))
            if fields is None:
                continue
            session = int(fields[3])
            if session in watched:
                t = totals.setdefault(session, [0, 0, 0, []])
                t[0] += int(fields[21]) * page_kb
                t[1] += 1
                t[2] += int(fields[17])
                t[3].append(entry)
        limits = {}
        if totals:
            marks = ",".join("?" * len(totals))
            for row in self.store.db.execute(
                    f"SELECT id, idx, pid, mem_limit_kb FROM jobs WHERE pid IN ({marks}) AND "
                    "stat IN ('RUN','USUSP','SSUSP')", list(totals)).fetchall():
                limits[row["pid"]] = row["mem_limit_kb"]
        for session, (rss_kb, procs, threads, pids) in totals.items():
            key = watched[session]
            m = self.memory.setdefault(key, [0, 0, 0, 0, 0])
            m[0] = max(m[0], rss_kb)
            m[1] += rss_kb
            m[2] += 1
            m[3] = max(m[3], procs)
            m[4] = max(m[4], threads)
            with self.store.write():
                self.store.update(*key, max_mem_kb=m[0], avg_mem_kb=m[1] / m[2],
                                  pids=",".join(sorted(pids, key=int)))
            limit = limits.get(session)
            if limit and rss_kb > limit:
                self.log(f"job {key}: {rss_kb} KB over its limit of {limit} KB")
                self.request_kill(key, "memlimit", now)

    # --- jobs ending ------------------------------------------------------------------------

    def reap(self):
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            key = self.children.pop(pid, None)
            if key is not None:
                self.finish(key, pid, status, usage)

    def finish(self, key, pid, status, usage):
        kill_session(pid)
        end = time.time()
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code  # as a shell reports a job a signal ended
        row = self.store.job(*key)
        reason = REASONS.get(row["kill_kind"])
        if reason is None and row["signaled_by"] and os.WIFSIGNALED(status):
            reason = "TERM_OWNER" if row["signaled_by"] == "owner" else "TERM_ADMIN"
        done = code == 0
        cpu = usage.ru_utime + usage.ru_stime
        io = self.io.pop(key, None)
        memory = self.memory.pop(key, [0, 0, 0, 0, 0])
        if io is not None:
            try:
                self.write_results(row, io, done, code, None if done else reason, end, cpu,
                                   memory)
            except OSError as error:
                self.log(f"job {key}: could not write its output: {error}")
        with self.store.write():
            self.store.update(*key, stat="DONE" if done else "EXIT", finish_time=end,
                              exit_code=None if done else code,
                              exit_reason=None if done else reason, cpu_time=cpu,
                              kill_kind=None, kill_next=None, susp_req=None, susp_until=None,
                              signal_req=None)

    def write_results(self, row, io, done, code, reason, end, cpu, memory):
        max_kb, sum_kb, samples, procs, threads = memory
        slots = row["slots"]
        host = self.config["HOST"]
        req_mb = row["req_mem_mb"] * slots if row["req_mem_mb"] is not None else None
        max_mb = (max_kb + 512) // 1024 if samples else None
        report = texts.job_report({
            "job_spec": f"{row['id']}[{row['idx']}]" if row["array_name"] is not None
            else str(row["id"]),
            "name": row["name"], "done": done, "host": host,
            "cluster": self.config["CLUSTER"], "from_host": host, "user": row["user"],
            "queue": row["queue"], "exec_hosts": host if slots == 1 else f"{slots}*{host}",
            "home": row["home"], "cwd": io.get("cwd") or row["exec_cwd"] or row["sub_cwd"],
            "submit": row["submit_time"], "start": row["start_time"], "end": end,
            "reported": time.time(), "command": row["command"], "exit_code": code,
            "term_reason": reason, "cpu": cpu,
            "max_mem": f"{max_mb} MB" if samples else "-",
            "avg_mem": f"{sum_kb / samples / 1024:.2f} MB" if samples else "-",
            "req_mem": f"{req_mb:.2f} MB" if req_mb is not None else "-",
            "delta_mem": f"{req_mb - max_mb:.2f} MB" if req_mb is not None and samples
            else "-",
            "max_procs": str(procs) if samples else "-",
            "max_threads": str(threads) if samples else "-",
        })
        ps = []
        if io["direct"]:
            if io["err_path"]:
                ps.append(texts.read_file_for_stderr(io["err_path"]))
            with open(io["out_path"], "a", encoding="utf-8", errors="surrogateescape") as f:
                f.write(texts.DIRECT_SEPARATOR + report + texts.OUTPUT_ABOVE
                        + (texts.postscript(ps) if ps else ""))
            return
        output = read_bytes(io["spool_out"])
        if io["err_path"]:
            try:
                with open(io["err_path"], "wb" if row["err_overwrite"] else "ab") as f:
                    f.write(read_bytes(io["spool_err"]))
                ps.append(texts.read_file_for_stderr(io["err_path"]))
            except OSError as error:
                ps.append(f"Fail to open stderr file {io['err_path']}: {error.strerror}.\n")
        target = io["out_path"]
        note = ""
        if target is None or io["open_error"]:
            if io["open_error"]:
                note = texts.cannot_open_output(*io["open_error"])
            name = f"{row['id']}" + (f".{row['idx']}" if row["array_name"] is not None else "")
            target = os.path.join(self.mail, name)
            overwrite = True
        else:
            overwrite = bool(row["out_overwrite"])
        with open(target, "wb" if overwrite else "ab") as f:
            f.write((note + report + texts.OUTPUT_FOLLOWS).encode())
            f.write(output)
            if ps:
                f.write(texts.postscript(ps).encode())
        for path in (io["spool_out"], io["spool_err"]):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    # --- jobs of a previous daemon ----------------------------------------------------------

    def adopt(self):
        """Jobs a daemon that died left running cannot be waited for: they are watched until
        they are gone, then end as LSF ends jobs whose sbatchd was lost (TERM_ZOMBIE, exit
        code unknown). Jobs it had dispatched but not started go back to PEND."""
        with self.store.write():
            for row in self.store.db.execute(
                    "SELECT * FROM jobs WHERE stat IN ('RUN','USUSP','SSUSP')").fetchall():
                key = (row["id"], row["idx"])
                if row["pid"] is None:
                    self.store.update(*key, stat="PEND", start_time=None)
                else:
                    self.orphans[key] = (row["pid"], row["start_ticks"])
        if self.orphans:
            self.log(f"watching {len(self.orphans)} job(s) a previous daemon started")

    def watch_orphans(self, now):
        for key, (pid, ticks) in list(self.orphans.items()):
            if start_ticks(pid) == ticks:
                continue
            del self.orphans[key]
            with self.store.write():
                self.store.update(*key, stat="EXIT", finish_time=now, exit_code=None,
                                  exit_reason="TERM_ZOMBIE")

    def stop_all(self, now):
        """`lsf-emu-ctl stop` or SIGTERM: every job ends now, pending ones without running."""
        with self.store.write():
            marks = ",".join("?" * len(UNFINISHED))
            for row in self.store.db.execute(
                    f"SELECT * FROM jobs WHERE stat IN ({marks})", UNFINISHED).fetchall():
                key = (row["id"], row["idx"])
                if row["stat"] in ("PEND", "PSUSP"):
                    self.store.update(*key, stat="EXIT", finish_time=now,
                                      exit_reason="TERM_ADMIN", exit_code=None)
                elif row["kill_kind"] not in ("force_admin", "force_owner"):
                    self.store.update(*key, kill_kind="force_admin", kill_step=0,
                                      kill_next=now)
        for key, (pid, ticks) in list(self.orphans.items()):
            if start_ticks(pid) == ticks:
                signal_group(pid, signal.SIGKILL, "RUN")


# --- process helpers -------------------------------------------------------------------------


def spawn(argv, env, cwd, stdout_fd, stderr_fd):
    """fork + exec with the job in a new session, stdin from /dev/null. Not subprocess: it
    would wait for its children itself, and this process reaps every child with wait4."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.chdir(cwd)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(stdout_fd, 1)
            os.dup2(stderr_fd, 2)
            os.closerange(3, 65536)
            # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored in the job
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                        signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execve(argv[0], argv, env)
        except BaseException as error:  # noqa: BLE001 - the child must never return
            try:
                os.write(2, f"lsf-emu: cannot start the job: {error}\n".encode())
            finally:
                os._exit(127)
    return pid


def signal_group(pid, sig, stat):
    try:
        os.killpg(pid, sig)
        if stat in ("USUSP", "SSUSP") and sig not in (signal.SIGSTOP, signal.SIGKILL):
            os.killpg(pid, signal.SIGCONT)  # a stopped job could not act on the signal
    except ProcessLookupError:
        pass


def kill_session(sid):
    """SIGKILL for every process left in the job's session once its shell has exited."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None and int(fields[3]) == sid:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def proc_stat(pid):
    """Fields 3 onwards of /proc/PID/stat (index 0 is field 3, the state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def start_ticks(pid):
    fields = proc_stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def substitute(text, row):
    """%J is the job id, %I the array index (0 for a plain job)."""
    return text.replace("%J", str(row["id"])).replace("%I", str(row["idx"]))


def resolve_path(spec, row, cwd):
    path = substitute(spec, row)
    if not os.path.isabs(path):
        path = os.path.join(cwd, path)
    if os.path.isdir(path):
        path = os.path.join(path, f"{row['id']}.out")
    return path


def open_for_job(path, overwrite):
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_APPEND)
    return os.open(path, flags, 0o644)


def writable(path):
    if os.path.exists(path):
        return os.access(path, os.W_OK)
    parent = os.path.dirname(path) or "."
    return os.path.isdir(parent) and os.access(parent, os.W_OK)


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, TypeError):
        return b""
