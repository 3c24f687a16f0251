"""bjobs: shows the emulated cluster's jobs, in LSF's default, wide, -o and -json formats."""

import re
import sys
import time

from . import texts
from .client import Client, die
from .jobview import JobView, parse_job_specs

# -o fields: name -> (header, how to get the text; None means empty: "-" in text, "" in JSON)
FIELDS = {
    "jobid": ("JOBID", lambda v: str(v.id)),
    "jobindex": ("JOBINDEX", lambda v: str(v.idx)),
    "stat": ("STAT", lambda v: v.stat),
    "user": ("USER", lambda v: v.row["user"]),
    "queue": ("QUEUE", lambda v: v.row["queue"]),
    "job_name": ("JOB_NAME", lambda v: v.display_name),
    "proj_name": ("PROJ_NAME", lambda v: v.row["project"]),
    "command": ("COMMAND", lambda v: v.row["command"]),
    "exit_code": ("EXIT_CODE", lambda v: v.exit_code_text),
    "exit_reason": ("EXIT_REASON", lambda v: v.exit_reason_text),
    "from_host": ("FROM_HOST", lambda v: v.host),
    "exec_host": ("EXEC_HOST", lambda v: ":".join(v.exec_hosts) or None),
    "first_host": ("FIRST_HOST", lambda v: v.exec_hosts[0] if v.exec_hosts else None),
    "submit_time": ("SUBMIT_TIME", lambda v: texts.short_time(v.row["submit_time"])),
    "start_time": ("START_TIME", lambda v: v.time_text("start_time")),
    "finish_time": ("FINISH_TIME", lambda v: v.finish_time_text),
    "cpu_used": ("CPU_USED", lambda v: v.cpu_used_text),
    "run_time": ("RUN_TIME", lambda v: v.run_time_text),
    "max_mem": ("MAX_MEM", lambda v: v.mem_text("max_mem_kb")),
    "avg_mem": ("AVG_MEM", lambda v: v.mem_text("avg_mem_kb")),
    "memlimit": ("MEMLIMIT", lambda v: v.mem_limit_text),
    "slots": ("SLOTS", lambda v: str(v.row["slots"])),
    "nreq_slot": ("NREQ_SLOT", lambda v: str(v.row["slots"])),
    "nalloc_slot": ("NALLOC_SLOT", lambda v: str(v.row["slots"]) if v.exec_hosts else None),
    "pids": ("PIDS", lambda v: v.row["pids"]),
    "sub_cwd": ("SUB_CWD", lambda v: v.row["sub_cwd"]),
    "exec_cwd": ("EXEC_CWD", lambda v: v.row["exec_cwd"]),
    "exec_home": ("EXEC_HOME", lambda v: v.row["home"] if v.exec_hosts else None),
    "output_file": ("OUTPUT_FILE", lambda v: v.row["out_path"] or v.row["out_spec"]),
    "error_file": ("ERROR_FILE", lambda v: v.row["err_path"] or v.row["err_spec"]),
    "pend_reason": ("PEND_REASON", lambda v: v.pend_reason),
}
ALIASES = {"id": "jobid", "name": "job_name", "proj": "proj_name", "project": "proj_name",
           "cmd": "command"}


def parse_format(spec):
    """`"jobid stat:5 exit_code:-4 delimiter='|'"` -> ([(field, width, right)], delimiter)."""
    delimiter = " "
    m = re.search(r"delimiter=(?:(['\"])(.*?)\1|(\S+))", spec)
    if m:
        delimiter = m.group(2) if m.group(1) else m.group(3)
        if len(delimiter) != 1:
            die("lsf-emu: bjobs -o: the delimiter must be one character\n")
        spec = spec[:m.start()] + spec[m.end():]
    fields = []
    for item in spec.split():
        parts = item.split(":")
        name = ALIASES.get(parts[0].lower(), parts[0].lower())
        if name not in FIELDS:
            die(f"lsf-emu: bjobs -o field {parts[0]} is not emulated "
                f"(known: {' '.join(FIELDS)})\n")
        width, right = None, False
        if len(parts) > 1 and parts[1]:
            wm = re.fullmatch(r"(-?)(\d+)", parts[1])
            if not wm:
                die(f"lsf-emu: bjobs -o: bad width in {item}\n")
            right, width = bool(wm.group(1)), int(wm.group(2))
        fields.append((name, width, right))
    if not fields:
        die("lsf-emu: bjobs -o needs at least one field\n")
    return fields, delimiter


def fit(text, width, right, is_name):
    if width is None:
        return text
    if len(text) > width:
        text = texts.trunc_name(text, width) if is_name else text[:width]
    return f"{text:>{width}}" if right else f"{text:<{width}}"


def parse_args(argv):
    opts = {"ids": []}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-a", "-d", "-r", "-p", "-s", "-w", "-noheader", "-json", "-X"):
            opts[arg] = True
        elif arg in ("-o", "-J", "-u", "-q", "-P", "-m"):
            if not args:
                die(f"bjobs: option requires an argument -- {arg.lstrip('-')}\n")
            opts[arg] = args.pop(0)
        elif arg.startswith("-"):
            die(f"lsf-emu: bjobs option {arg} is not emulated\n")
        else:
            opts["ids"].append(arg)
    return opts


def main(argv):
    client = Client("bjobs")
    config = client.config
    opts = parse_args(argv)
    if opts.get("-json") and "-o" not in opts:
        die("lsf-emu: bjobs -json needs -o, as in LSF\n")
    if opts.get("-json") and opts.get("-noheader"):
        die("lsf-emu: bjobs -json cannot be combined with -noheader\n")
    fields = parse_format(opts["-o"]) if "-o" in opts else None
    try:
        specs = parse_job_specs(opts["ids"])
    except ValueError as bad:
        die(f"{bad}: Bad job ID\n")

    client.fail_silently_if_told()
    if not client.reach_mbatchd():
        die(texts.CONN_REFUSED + "\n")

    now = time.time()
    views = visible_jobs(client, now)
    errors, shown = [], []
    if specs:
        wanted = set()
        for spec in specs:
            matched = [v for v in views if spec.matches(v)]
            if not matched:
                errors.append(texts.job_not_found(spec.text))
            wanted.update(v.key for v in matched)
        shown = [v for v in views if v.key in wanted]
    else:
        shown = [v for v in views if state_selected(v, opts)]
    # Jobs named by id show whoever owns them; the others are the user's (or -u's).
    user = opts.get("-u", None if specs else client.user)
    if user not in (None, "all"):
        shown = [v for v in shown if v.row["user"] == user]
    if "-q" in opts:
        shown = [v for v in shown if v.row["queue"] == opts["-q"]]
    if "-P" in opts:
        shown = [v for v in shown if v.row["project"] == opts["-P"]]
    if "-J" in opts:
        pattern = opts["-J"]
        shown = [v for v in shown if v.name_matches(pattern)]
        if not shown and not specs:
            errors.append(texts.job_not_found(pattern))
    shown.sort(key=display_order)

    out = []
    if fields is not None:
        out.append(format_custom(shown, fields, opts))
    elif shown:
        out.append(format_default(shown, config, wide=bool(opts.get("-w")),
                                  header=not opts.get("-noheader")))
    if not shown and not specs and not ("-J" in opts):
        errors.append(nothing_found_message(opts))
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    sys.stderr.write("".join(errors))

    consistent = config.flag("LSB_BJOBS_CONSISTENT_EXIT_CODE")
    missing = bool(specs) and any(e.startswith("Job <") for e in errors)
    if consistent:
        code = 255 if (missing or not shown) else 0
    else:
        # [ibm] with the default N: 255 only when the ids asked for do not exist
        code = 255 if (specs and not shown) else 0
    sys.exit(code)


def visible_jobs(client, now):
    """Every job mbatchd still holds: finished ones for CLEAN_PERIOD, new ones only once
    NOT_FOUND_AFTER_SUBMIT has passed."""
    config = client.config
    clean_before = now - config["CLEAN_PERIOD"]
    hidden_after = now - config["NOT_FOUND_AFTER_SUBMIT"]
    rows = client.store.jobs("(finish_time IS NULL OR finish_time >= ?) AND submit_time <= ?",
                             (clean_before, hidden_after))
    return [JobView(r, config, now) for r in rows]


def state_selected(view, opts):
    finished = view.finished
    if opts.get("-d"):
        return finished
    if opts.get("-a"):
        return True
    if opts.get("-r"):
        return view.stat == "RUN"
    if opts.get("-p"):
        return view.stat in ("PEND", "PSUSP")
    if opts.get("-s"):
        return view.stat in ("PSUSP", "USUSP", "SSUSP")
    return not finished


def nothing_found_message(opts):
    if opts.get("-d"):
        return texts.NO_DONE_JOB
    if opts.get("-a"):
        return texts.NO_JOB
    if opts.get("-r"):
        return texts.NO_RUNNING_JOB
    if opts.get("-p"):
        return texts.NO_PENDING_JOB
    if opts.get("-s"):
        return texts.NO_SUSPENDED_JOB
    return texts.NO_UNFINISHED_JOB


def display_order(view):
    """Running jobs first, then pending, then finished ones, each by id and index (the order
    of mbatchd's job lists)."""
    group = 2 if view.finished else (1 if view.stat in ("PEND", "PSUSP") else 0)
    return (group, view.id, view.idx)


def format_default(views, config, wide, header):
    id_width = max(7, min(10, config["LSB_JOBID_DISP_LENGTH"]))
    out = [texts.default_header(id_width)] if header else []
    for v in views:
        id_text = str(v.id) if wide else texts.job_id_column(v.id, id_width)
        submit = texts.short_time(v.row["submit_time"])
        if wide:
            exec_host = ":".join(v.exec_hosts) if v.exec_hosts else (
                "   -    " if v.stat in ("PEND", "PSUSP") else "   -   ")
            out.append(texts.wide_row(id_text, id_width, v.row["user"], v.stat, v.row["queue"],
                                      v.host, exec_host, v.display_name, submit))
            continue
        if v.exec_hosts:
            exec_host = v.exec_hosts[0]
        else:
            exec_host = "" if v.stat in ("PEND", "PSUSP") else "   -   "
        out.append(texts.default_row(id_text, id_width, v.row["user"], v.stat, v.row["queue"],
                                     v.host, exec_host, texts.trunc_name(v.display_name, 10),
                                     submit))
        out += [texts.extra_exec_host_row(h) for h in v.exec_hosts[1:]]
    return "".join(out)


def format_custom(views, spec, opts):
    fields, delimiter = spec
    if opts.get("-json"):
        records = []
        for v in views:
            record = []
            for name, _, _ in fields:
                header, get = FIELDS[name]
                value = get(v)
                record.append((header, "" if value is None else value))
            records.append(record)
        return texts.json_document(records)
    lines = []
    if not opts.get("-noheader") and views:
        lines.append(delimiter.join(fit(FIELDS[n][0], w, r, False) for n, w, r in fields))
    for v in views:
        cells = []
        for name, width, right in fields:
            value = FIELDS[name][1](v)
            cells.append(fit("-" if value in (None, "") else value, width, right,
                             name == "job_name"))
        lines.append(delimiter.join(cells))
    return "".join(line + "\n" for line in lines)
