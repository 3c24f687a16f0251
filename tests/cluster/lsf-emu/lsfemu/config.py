"""The emulated cluster's configuration: the knobs a test turns.

Every knob has a default, can be set in the file ``$LSF_EMU_DIR/lsf-emu.conf`` (``KEY=VALUE``
lines, ``#`` comments; ``lsf-emu-ctl set KEY VALUE`` edits it) and can be overridden for one
process by the environment variable ``LSF_EMU_<KEY>``. Keys named after an LSF parameter mean
what that parameter means in ``lsf.conf`` or ``lsb.params``; the others are the emulator's own.
The file is read again by every command and by the daemon whenever it changes, so a test can
change the cluster while jobs run.
"""

import os
import socket

CONF_NAME = "lsf-emu.conf"

# name -> (default, parser, description); the README's knob table is written from this.
KNOBS = {
    "HOST": ("", str, "host name in outputs and reports (default: this machine's)"),
    "CLUSTER": ("emu", str, "cluster name in job reports"),
    "SLOTS": ("8", int, "job slots of the one emulated host; `-n` above it is refused"),
    "QUEUES": ("normal short long", str, "queue names accepted by `-q`"),
    "DEFAULT_QUEUE": ("normal", str, "queue of jobs submitted without `-q`"),
    "FIRST_JOB_ID": ("1", int, "lowest job id handed out (12345678 for 8-digit ids)"),
    "MAX_JOBID": ("999999", int, "ids wrap to 1 after this (raised to FIRST_JOB_ID's size)"),
    "MAX_JOB_ARRAY_SIZE": ("1000", int, "largest array index"),
    "CLEAN_PERIOD": ("3600", float, "seconds a finished job stays visible to bjobs and bkill"),
    "JOB_TERMINATE_INTERVAL": ("10", float, "seconds between SIGINT, SIGTERM and SIGKILL"),
    "LSB_STDOUT_DIRECT": ("N", str, "Y: output goes straight to -o/-e files; N: spooled, "
                          "copied after the job report at the end"),
    "LSF_UNIT_FOR_LIMITS": ("KB", str, "unit of `-M` and rusage[mem] without a unit"),
    "LSB_BJOBS_CONSISTENT_EXIT_CODE": ("N", str, "bjobs exit codes, as in LSF"),
    "LSB_JOBID_DISP_LENGTH": ("7", int, "width of the default bjobs JOBID column (7 to 10)"),
    "LSB_API_CONNTIMEOUT": ("10", float, "seconds between a client's retries while mbatchd "
                            "is down"),
    "RUNLIMIT_SECONDS_PER_MINUTE": ("60", float, "length of one `-W` minute in seconds "
                                    "(emulator only: short run limits for tests)"),
    "NOT_FOUND_AFTER_SUBMIT": ("0", float, "seconds during which bjobs says a new job is "
                               "not found"),
    "BANNER": ("", str, "esub-style lines bsub prints before `Job <N> is submitted` "
               "(`\\n` separates lines)"),
    "BANNER_STREAM": ("stdout", str, "where the banner goes: stdout or stderr"),
    "IDLE_EXIT": ("2", float, "seconds the daemon lingers once no job is left"),
}


class Config:
    """The knob values seen by one process."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, CONF_NAME)
        self._mtime = None
        self.values = {}
        self.reload()

    def reload(self):
        """Reads the file again if it changed; returns whether anything was read."""
        try:
            st = os.stat(self.path)
            # The inode too: the file is replaced, never rewritten, and two changes can fall
            # within one mtime tick.
            mtime = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime and self.values:
            return False
        self._mtime = mtime
        from_file = read_conf_file(self.path)
        values = {}
        for key, (default, parse, _) in KNOBS.items():
            raw = os.environ.get("LSF_EMU_" + key, from_file.get(key, default))
            try:
                values[key] = parse(raw)
            except ValueError:
                raise SystemExit(f"lsf-emu: knob {key}={raw!r} is not a valid {parse.__name__}")
        if not values["HOST"]:
            values["HOST"] = socket.gethostname()
        if values["FIRST_JOB_ID"] > values["MAX_JOBID"]:
            values["MAX_JOBID"] = 2147483646
        self.values = values
        return True

    def __getitem__(self, key):
        return self.values[key]

    def flag(self, key):
        """A Y/N knob."""
        return str(self.values[key]).strip().upper() in ("Y", "YES", "1", "TRUE")

    def banner_lines(self):
        text = self.values["BANNER"].replace("\\n", "\n")
        return text.split("\n") if text else []


def read_conf_file(path):
    values = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    return values


def write_conf_value(path, key, value):
    """Sets KEY in the file, keeping its other lines; atomic, so readers never see half."""
    if key not in KNOBS:
        raise SystemExit(f"lsf-emu-ctl: unknown knob {key} (known: {', '.join(KNOBS)})")
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = [l for l in f.read().splitlines()
                     if not (l.split("=", 1)[0].strip() == key and "=" in l)]
    except FileNotFoundError:
        pass
    lines.append(f"{key}={value}")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
