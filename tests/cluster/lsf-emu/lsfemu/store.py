"""The emulated mbatchd's job table: one SQLite database in the state directory.

Every command opens it; writes happen in short `BEGIN IMMEDIATE` transactions, so a bsub, a
bkill and the daemon never see half of another's change. WAL mode lets bjobs read while the
daemon writes. The file is the only truth: the daemon keeps no state that a restart of it
would lose, except the exit statuses of job processes it has not reaped yet.
"""

import json
import os
import socket
import sqlite3
import time
import zlib

DB_NAME = "mbatchd.db"

# One row per job, or per element of an array (idx 1..N; idx 0 for a plain job).
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,          -- as submitted: -J's value (arrays: "name[1-10]%2") or command
    array_name TEXT,             -- arrays: the name before "["; elements show "name[idx]"
    slot_limit INTEGER,          -- arrays: at most this many elements run at once (%L)
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    queue TEXT NOT NULL,
    queue_given INTEGER NOT NULL,
    project TEXT NOT NULL,
    command TEXT NOT NULL,       -- the command line, or the script read from stdin
    from_stdin INTEGER NOT NULL,
    cwd_spec TEXT NOT NULL,      -- -cwd (may hold %J, %I), else bsub's directory
    sub_cwd TEXT NOT NULL,
    home TEXT NOT NULL,
    env TEXT NOT NULL,           -- JSON object: the job's environment
    out_spec TEXT, out_overwrite INTEGER NOT NULL DEFAULT 0,
    err_spec TEXT, err_overwrite INTEGER NOT NULL DEFAULT 0,
    slots INTEGER NOT NULL,
    mem_limit_kb INTEGER,        -- -M
    run_limit_s REAL,            -- -W
    cpu_limit_s REAL,            -- -c (recorded only)
    res_req TEXT,                -- -R (syntax-checked, recorded)
    req_mem_mb REAL,             -- rusage[mem=...] from -R
    stat TEXT NOT NULL,          -- PEND PSUSP RUN USUSP SSUSP DONE EXIT
    overlay TEXT,                -- UNKWN or ZOMBI shown instead of stat (lsf-emu-ctl)
    overlay_until REAL,
    submit_time REAL NOT NULL,
    start_time REAL,
    finish_time REAL,
    pid INTEGER,                 -- the job's leader, in its own session (pid = sid)
    start_ticks INTEGER,         -- its start time: names the process for good
    exec_cwd TEXT, out_path TEXT, err_path TEXT,
    exit_code INTEGER,           -- EXIT: the exit code (128+signal when a signal ended it)
    exit_reason TEXT,            -- TERM_* keyword
    kill_kind TEXT,              -- a termination in progress: owner admin runlimit memlimit
    kill_step INTEGER,           -- next signal of the sequence to send
    kill_next REAL,              -- when to send it
    signal_req INTEGER,          -- bkill -s: one signal to deliver
    signaled_by TEXT,            -- who delivered a bkill -s signal: owner or admin
    susp_req TEXT,               -- USUSP, SSUSP or RESUME, for the daemon to carry out
    susp_until REAL,             -- SSUSP ends by itself at this time
    cpu_time REAL, max_mem_kb INTEGER, avg_mem_kb REAL, max_procs INTEGER,
    max_threads INTEGER, pids TEXT,
    PRIMARY KEY (id, idx)
);
CREATE INDEX IF NOT EXISTS jobs_by_stat ON jobs (stat);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

UNFINISHED = ("PEND", "PSUSP", "RUN", "USUSP", "SSUSP")
FINISHED = ("DONE", "EXIT")


class Store:
    def __init__(self, state_dir):
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(state_dir, DB_NAME), timeout=60,
                                  isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 60000")
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.executescript(SCHEMA)

    def write(self):
        """A write transaction: `with store.write(): ...`."""
        return _Transaction(self.db)

    def close(self):
        self.db.close()

    # --- meta -------------------------------------------------------------------------------

    def meta(self, key, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key, value):
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                            (key, str(value)))

    def take_counter(self, key):
        """Decrements a positive counter in meta; returns whether one was taken. In a write
        transaction."""
        left = int(self.meta(key, "0"))
        if left <= 0:
            return False
        self.set_meta(key, left - 1 if left > 1 else None)
        return True

    def next_job_id(self, first, maximum):
        """The next free id, as mbatchd hands them out: in sequence, wrapping to 1 after the
        maximum, skipping ids still in the table. In a write transaction."""
        candidate = max(int(self.meta("last_id", "0")) + 1, first)
        for _ in range(maximum):
            if candidate > maximum:
                candidate = 1
            if not self.db.execute("SELECT 1 FROM jobs WHERE id = ? LIMIT 1",
                                   (candidate,)).fetchone():
                self.set_meta("last_id", candidate)
                return candidate
            candidate += 1
        raise SystemExit("lsf-emu: no free job id left")

    # --- jobs -------------------------------------------------------------------------------

    def insert_jobs(self, rows):
        if not rows:
            return
        cols = list(rows[0])
        self.db.executemany(
            f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [tuple(r[c] for c in cols) for r in rows])

    def update(self, job_id, idx, **values):
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND idx = ?",
                        (*values.values(), job_id, idx))

    def job(self, job_id, idx):
        return self.db.execute("SELECT * FROM jobs WHERE id = ? AND idx = ?",
                               (job_id, idx)).fetchone()

    def jobs(self, where="1", params=()):
        return self.db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id, idx",
                               params).fetchall()

    def unfinished_count(self):
        marks = ",".join("?" * len(UNFINISHED))
        return self.db.execute(f"SELECT COUNT(*) FROM jobs WHERE stat IN ({marks})",
                               UNFINISHED).fetchone()[0]


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def job_env(row):
    return json.loads(row["env"])


# --- waking the daemon ---------------------------------------------------------------------
# Commands that change what the daemon must do send it one datagram, so it acts at once
# instead of at its next timer. The address is in the abstract namespace (no file to clean
# up), named after the state directory: a checksum of its path and the path's tail (the
# address may not exceed 107 bytes).


def wake_address(state_dir):
    path = os.path.realpath(state_dir).encode()
    return b"\0lsf-emu-%08x-" % zlib.crc32(path) + path[-80:]


def wake_daemon(state_dir):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"!", wake_address(state_dir))
    except OSError:
        pass  # no daemon listening: whoever starts it will look at the table anyway


def now():
    return time.time()
