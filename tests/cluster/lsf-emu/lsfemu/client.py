"""What every emulated LSF command does before its own work: find the state directory, read
the knobs, reach "mbatchd" (or fail as LSF's clients do while it is unreachable), and make
sure the daemon that runs the jobs is up."""

import fcntl
import os
import pwd
import sys
import time

from . import texts
from .config import Config
from .store import Store

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMON_LAUNCHER = os.path.join(PKG_ROOT, "libexec", "lsf-emu-mbatchd")
DAEMON_LOCK = "mbatchd.lock"


def state_dir():
    path = os.environ.get("LSF_EMU_DIR")
    if not path:
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lsf-emu-{os.getuid()}")
    return os.path.abspath(path)


def current_user():
    try:
        entry = pwd.getpwuid(os.getuid())
        return entry.pw_name, entry.pw_dir
    except KeyError:
        return str(os.getuid()), os.environ.get("HOME", "/")


class Client:
    """One invocation of an emulated command."""

    def __init__(self, command):
        self.command = command
        self.dir = state_dir()
        self.config = Config(self.dir)
        self.store = Store(self.dir)
        self.user, self.home = current_user()

    def fail_silently_if_told(self):
        """`lsf-emu-ctl fail-next CMD N`: the next N calls exit 255 printing nothing, as a
        command run over a flaky ssh or killed by a site wrapper does."""
        with self.store.write():
            taken = self.store.take_counter("fail_next:" + self.command)
        if taken:
            sys.exit(255)

    def reach_mbatchd(self):
        """Returns once "mbatchd" answers. During an outage set by `lsf-emu-ctl outage`:
        in `down` mode (mbatchd not running) the client prints LSF's retry line before each
        retry, LSB_API_CONNTIMEOUT seconds apart, and gives up after $LSB_NTRIES retries
        (default: never), returning False; in `hang` mode (mbatchd stopped but its port
        open) it blocks, silent, until the outage ends, as LSF's clients do without a
        receive timeout."""
        tries = 0
        ntries = os.environ.get("LSB_NTRIES")
        max_tries = int(ntries) if ntries and ntries.strip().isdigit() else None
        while True:
            until = float(self.store.meta("outage_until", "0"))
            if time.time() >= until:
                return True
            if self.store.meta("outage_mode", "down") == "hang":
                time.sleep(min(0.2, max(0.0, until - time.time())))
                continue
            if max_tries is not None and tries >= max_tries:
                return False
            sys.stderr.write(texts.STILL_TRYING)
            sys.stderr.flush()
            tries += 1
            time.sleep(self.config["LSB_API_CONNTIMEOUT"])

    def ensure_daemon(self):
        """Starts the job-running daemon unless one holds the state directory's lock."""
        lock_path = os.path.join(self.dir, DAEMON_LOCK)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # running
        finally:
            os.close(fd)
        import subprocess  # here: most calls find the daemon running, and it is slow to load

        log = open(os.path.join(self.dir, "mbatchd.log"), "ab")
        env = dict(os.environ, LSF_EMU_DIR=self.dir)
        # Its own session, no terminal, none of our descriptors: it outlives this command,
        # and must not hold our caller's pipes open.
        subprocess.Popen([sys.executable, "-S", DAEMON_LAUNCHER, self.dir],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                         start_new_session=True, cwd="/", env=env)
        log.close()


def die(message, code=255):
    sys.stderr.write(message)
    sys.exit(code)
