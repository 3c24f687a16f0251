"""bkill, bstop and bresume: signal jobs of the emulated cluster, with Lava's messages.

They only record what is asked in the job table (and finish pending jobs at once, as mbatchd
does); the daemon delivers the signals, the INT, TERM, KILL sequence of a kill
JOB_TERMINATE_INTERVAL seconds apart, and the state changes that follow."""

import os
import signal
import sys
import time

from . import texts
from .client import Client, die
from .jobview import JobView, parse_job_specs
from .store import FINISHED, wake_daemon

SIGNALS = {name[3:]: int(sig) for name, sig in signal.Signals.__members__.items()
           if name.startswith("SIG") and not name.startswith("SIG_")}


def parse_signal(text):
    name = text.upper().removeprefix("SIG")
    if name.isdigit():
        return int(name)
    if name in SIGNALS:
        return SIGNALS[name]
    die(f"{text}: Illegal signal value\n")


def parse_args(cmd, argv):
    opts = {"ids": []}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-r", "-b", "-d", "-a") and (cmd == "bkill" or arg in ("-d", "-a")):
            opts[arg] = True
        elif arg in ("-s", "-J", "-u", "-q", "-m") and (cmd == "bkill" or arg != "-s"):
            if not args:
                sys.stderr.write(texts.signal_usage(cmd))
                sys.exit(255)
            opts[arg] = args.pop(0)
        elif arg == "-l" and cmd == "bkill":
            print(" ".join(sorted(SIGNALS, key=SIGNALS.get)))
            sys.exit(255)
        elif arg.startswith("-") and arg != "-":
            sys.stderr.write(f"{cmd}: Illegal option -- {arg.lstrip('-')}\n")
            sys.stderr.write(texts.signal_usage(cmd))
            sys.exit(255)
        else:
            opts["ids"].append(arg)
    return opts


def main(cmd, argv):
    client = Client(cmd)
    opts = parse_args(cmd, argv)
    filters = [k for k in ("-J", "-u", "-q", "-m") if k in opts]
    if not opts["ids"] and not filters:
        sys.stderr.write(texts.NO_JOB_ID)
        sys.stderr.write(texts.signal_usage(cmd))
        sys.exit(255)
    everything = "0" in opts["ids"]
    try:
        specs = parse_job_specs([i for i in opts["ids"] if i != "0"])
    except ValueError as bad:
        die(f"{bad}: Bad job ID\n")
    sig = parse_signal(opts["-s"]) if "-s" in opts else None

    client.fail_silently_if_told()
    targets = select_targets(client, specs, opts, everything or not specs)
    signaled = failed = False
    for spec_text, views in targets:
        if not client.reach_mbatchd():
            sys.stderr.write(texts.signal_failed(spec_text, texts.CONN_REFUSED))
            failed = True
            continue
        if views is None:
            sys.stderr.write(texts.signal_failed(spec_text, texts.NO_MATCHING_JOB))
            failed = True
            continue
        error = act(client, cmd, views, opts, sig)
        if error:
            sys.stderr.write(texts.signal_failed(spec_text, error))
            failed = True
        else:
            sys.stdout.write(texts.signalled(spec_text, verb(cmd, sig)))
            signaled = True
    client.ensure_daemon()
    wake_daemon(client.dir)
    sys.stdout.flush()
    sys.exit(0 if signaled and not failed else 255)


def verb(cmd, sig):
    if cmd == "bstop":
        return "stopped"
    if cmd == "bresume":
        return "resumed"
    return "terminated" if sig in (None, signal.SIGKILL) else "signaled"


def select_targets(client, specs, opts, by_filter):
    """[(text for the messages, [JobView] or None when nothing matches)]."""
    now = time.time()
    clean_before = now - client.config["CLEAN_PERIOD"]
    rows = client.store.jobs("finish_time IS NULL OR finish_time >= ?", (clean_before,))
    views = [JobView(r, client.config, now) for r in rows]
    if not by_filter:
        out = []
        for spec in specs:
            matched = [v for v in views if spec.matches(v)]
            out.append((spec.text, matched or None))
        return out
    # `0` or a filter without ids: jobs of the user (or -u), unfinished
    user = opts.get("-u", client.user)
    pool = [v for v in views if not v.finished and (user == "all" or v.row["user"] == user)]
    if "-J" in opts:
        pool = [v for v in pool if v.name_matches(opts["-J"])]
    if "-q" in opts:
        pool = [v for v in pool if v.row["queue"] == opts["-q"]]
    if "0" not in opts["ids"] and pool:
        # without `0`, a filter picks the last job submitted [ibm bkill]
        last = max(v.id for v in pool)
        pool = [v for v in pool if v.id == last]
    if not pool:
        return [(opts.get("-J", "0"), None)]
    by_job = {}
    for v in pool:
        by_job.setdefault(v.id, []).append(v)
    return [(str(job_id), group) for job_id, group in sorted(by_job.items())]


def act(client, cmd, views, opts, sig):
    """Applies the request to every element; returns an error text or None."""
    store = client.store
    uid = os.getuid()
    now = time.time()
    with store.write():
        rows = [store.job(v.id, v.idx) for v in views]
        unfinished = [r for r in rows if r["stat"] not in FINISHED]
        if not unfinished:
            return texts.ALREADY_FINISHED
        if any(r["uid"] != uid for r in unfinished) and uid != 0:
            return "User permission denied"
        for r in unfinished:
            who = "owner" if r["uid"] == uid else "admin"
            if cmd == "bkill":
                error = kill_one(store, r, who, opts, sig, now)
                if error:
                    return error
            elif cmd == "bstop":
                if r["stat"] == "PEND":
                    store.update(r["id"], r["idx"], stat="PSUSP")
                elif r["stat"] in ("RUN", "SSUSP"):
                    store.update(r["id"], r["idx"], susp_req="USUSP")
            else:
                if r["stat"] == "PSUSP":
                    store.update(r["id"], r["idx"], stat="PEND")
                elif r["stat"] == "USUSP":
                    store.update(r["id"], r["idx"], susp_req="RESUME")
    return None


def kill_one(store, r, who, opts, sig, now):
    pending = r["stat"] in ("PEND", "PSUSP")
    force = bool(opts.get("-r"))
    if sig is not None and sig != signal.SIGKILL and not force:
        if pending:
            return texts.NOT_STARTED
        store.update(r["id"], r["idx"], signal_req=sig, signaled_by=who)
        return None
    if pending:
        reason = ("TERM_FORCE_" if force else "TERM_") + ("OWNER" if who == "owner" else "ADMIN")
        store.update(r["id"], r["idx"], stat="EXIT", exit_reason=reason, finish_time=now,
                     exit_code=None)
        return None
    kind = ("force_" if force else "") + who
    if sig == signal.SIGKILL and not force:
        kind = "kill_" + who  # bkill -s KILL: one SIGKILL, no sequence
    if r["kill_kind"] is None or force:
        store.update(r["id"], r["idx"], kill_kind=kind, kill_step=0, kill_next=now)
    return None
