"""bsub: submits a job or an array to the emulated cluster."""

import json
import os
import re
import shlex
import sys
import time

from . import texts
from .client import Client, die
from .store import wake_daemon

# Options taking a value, and flags; a few are accepted and ignored because they change
# nothing on a one-host emulated cluster (say so in the README when adding one).
VALUE_OPTIONS = {"-J", "-o", "-oo", "-e", "-eo", "-q", "-n", "-R", "-M", "-W", "-c", "-cwd",
                 "-env", "-P", "-G", "-u", "-g", "-Jd", "-sp", "-m", "-app", "-L", "-i"}
FLAG_OPTIONS = {"-H", "-x", "-B", "-N", "-r", "-rn"}
NOT_EMULATED = {"-K", "-I", "-Ip", "-Is", "-w", "-E", "-Ep", "-b", "-t", "-outdir", "-f",
                "-k", "-a", "-data", "-gpu", "-ti", "-wa", "-wt", "-XF", "-Zs", "-ext",
                "-D", "-F", "-p", "-S", "-T", "-v", "-C", "-U", "-hl", "-is", "-tty"}

RESREQ_SECTIONS = {"select", "rusage", "span", "order", "same", "cu", "affinity"}
ARRAY_RE = re.compile(r"^(?P<name>[^\[\]]*)\[(?P<indices>[^\]]*)\](?:%(?P<limit>\d+))?$")


class Refused(Exception):
    """A submission LSF would refuse: the message is LSF's."""


def parse_args(argv):
    """Options before the first non-option argument; the rest is the command."""
    opts, rest = {}, list(argv)
    while rest and rest[0].startswith("-") and rest[0] != "-":
        arg = rest.pop(0)
        if arg == "--":
            break
        if arg in NOT_EMULATED:
            die(f"lsf-emu: bsub option {arg} is not emulated\n")
        if arg in FLAG_OPTIONS:
            opts[arg] = True
            continue
        name, value = arg, None
        if arg not in VALUE_OPTIONS:
            # getopt style: -n4, -q short
            if arg[:2] in VALUE_OPTIONS and len(arg) > 2:
                name, value = arg[:2], arg[2:]
            else:
                die(f"bsub: illegal option -- {arg.lstrip('-')}\n"
                    "lsf-emu: see tests/cluster/lsf-emu/README.md for the options it knows\n")
        if value is None:
            if not rest:
                die(f"bsub: option requires an argument -- {name.lstrip('-')}\n")
            value = rest.pop(0)
        if name == "-R":
            opts.setdefault("-R", []).append(value)
        else:
            opts[name] = value
    return opts, rest


def embedded_options(script):
    """`#BSUB` lines of a script read from stdin, up to its first command line."""
    args = []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if stripped.startswith("#BSUB"):
            args += shlex.split(stripped[len("#BSUB"):], comments=True)
    return args


def lava_command_line(argv):
    """The job's command line as LSF's bsub builds it from its arguments (CopyCommand in
    Lava's cmd.sub.c): the first argument verbatim (so `bsub "sleep 10"` runs `sleep 10`),
    the others quoted when they hold spaces and with \\ " ' ( ) escaped."""
    parts = [argv[0]]
    for arg in argv[1:]:
        if " " in arg:
            quote = "'" if ('"' in arg or "$" in arg) else '"'
            parts.append(quote + arg + quote)
            continue
        out = []
        for ch in arg:
            out.append("\\" + ch if ch in "\\\"'()" else ch)
        text = "".join(out)
        parts.append(f"'{text}'" if arg.startswith("$") else text)
    return " ".join(parts)


def parse_array(name, max_size):
    """`name[1-10:2,20]%5` -> (name, [1, 3, ..., 20], 5); None for a plain job name."""
    if "[" not in name and "]" not in name:
        return None
    m = ARRAY_RE.match(name)
    if not m:
        raise Refused(texts.not_submitted(texts.BAD_JOB_NAME))
    indices = []
    for item in m.group("indices").split(","):
        im = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", item.strip())
        if not im:
            raise Refused(texts.not_submitted(texts.ARRAY_INDEX_ERROR))
        start = int(im.group(1))
        end = int(im.group(2)) if im.group(2) else start
        step = int(im.group(3)) if im.group(3) else 1
        if start < 1 or end < start or step < 1:
            raise Refused(texts.not_submitted(texts.ARRAY_INDEX_ERROR))
        if end > max_size:
            raise Refused(texts.not_submitted(texts.ARRAY_INDEX_TOO_LARGE))
        indices += range(start, end + 1, step)
    indices = sorted(set(indices))
    limit = int(m.group("limit")) if m.group("limit") else None
    if limit == 0:
        raise Refused(texts.not_submitted(texts.ARRAY_INDEX_ERROR))
    return m.group("name"), indices, limit


def parse_mem(text, default_unit):
    """-M or rusage[mem=] value in KB: `4000` (in LSF_UNIT_FOR_LIMITS), `4GB`, `512M`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if not m:
        return None
    unit = (m.group(2) or default_unit[:1]).upper()
    return float(m.group(1)) * {"K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3}[unit]


def parse_resreq(strings, default_unit):
    """Checks the syntax of -R strings; returns (joined text, rusage[mem] in MB or None)."""
    req_mem_kb = None
    for text in strings:
        rest = text.strip()
        if not rest:
            raise Refused(texts.not_submitted(texts.BAD_RESREQ))
        if "[" not in rest:
            continue  # a bare selection string, e.g. "mem>4000"
        while rest:
            m = re.match(r"\s*(\w+)\[", rest)
            if not m or m.group(1) not in RESREQ_SECTIONS:
                raise Refused(texts.not_submitted(texts.BAD_RESREQ))
            depth, end = 0, None
            for i in range(m.end() - 1, len(rest)):
                depth += {"[": 1, "]": -1}.get(rest[i], 0)
                if depth == 0:
                    end = i
                    break
            if end is None or end == m.end():
                raise Refused(texts.not_submitted(texts.BAD_RESREQ))
            body = rest[m.end():end]
            if m.group(1) == "rusage":
                mm = re.search(r"(?:^|[,:\s])mem\s*=\s*([\d.]+\s*[KMGTkmgt]?[Bb]?)", body)
                if mm:
                    req_mem_kb = parse_mem(mm.group(1), default_unit)
                    if req_mem_kb is None:
                        raise Refused(texts.not_submitted(texts.BAD_RESREQ))
            rest = rest[end + 1:].strip()
    return " ".join(strings) if strings else None, (
        req_mem_kb / 1024 if req_mem_kb is not None else None)


def parse_run_limit(text, seconds_per_minute):
    """-W [hour:]minute[/host_spec] -> seconds."""
    text = text.split("/", 1)[0]
    m = re.fullmatch(r"(?:(\d+):)?(\d+)", text.strip())
    if not m:
        return None
    minutes = int(m.group(2)) + 60 * int(m.group(1) or 0)
    return minutes * seconds_per_minute


def parse_env(spec, environ):
    """-env "all" | "none" | "all, VAR=v, ..." | "VAR1, VAR2=v": the job's environment."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise Refused(texts.not_submitted(texts.BAD_ARGUMENT))
    head = items[0].lower()
    env = dict(environ) if head == "all" else {}
    if head in ("all", "none"):
        items = items[1:]
    for item in items:
        if "=" in item:
            key, value = item.split("=", 1)
            env[key.strip()] = value
        elif item.startswith("~"):
            env.pop(item[1:], None)
        elif item in environ:
            env[item] = environ[item]
    return env


def main(argv):
    client = Client("bsub")
    config = client.config
    opts, command_args = parse_args(argv)

    from_stdin = not command_args
    if from_stdin:
        if sys.stdin.isatty():
            die("lsf-emu: bsub reads a job script from stdin; interactive input is not emulated\n")
        script = sys.stdin.read()
        if not script.strip():
            die(texts.not_submitted(texts.EMPTY_JOB))
        embedded, _ = parse_args(embedded_options(script))
        for key, value in embedded.items():
            if key == "-R":
                opts["-R"] = value + opts.get("-R", [])
            else:
                opts.setdefault(key, value)
        command = script
        default_name = next((l for l in script.splitlines() if l.strip()), "")
    else:
        command = lava_command_line(command_args)
        default_name = command

    client.fail_silently_if_told()
    try:
        rows = build_rows(client, opts, command, from_stdin, default_name)
    except Refused as refused:
        die(str(refused))
    if not client.reach_mbatchd():
        die(texts.not_submitted(texts.CONN_REFUSED))

    with client.store.write():
        job_id = client.store.next_job_id(config["FIRST_JOB_ID"], config["MAX_JOBID"])
        for row in rows:
            row["id"] = job_id
            row["env"] = json.dumps(dict(json.loads(row["env"]), LSB_JOBID=str(job_id)))
        client.store.insert_jobs(rows)
        lose_reply = client.store.take_counter("fail_after_submit:bsub")
    client.ensure_daemon()
    wake_daemon(client.dir)
    if lose_reply:
        sys.exit(255)  # submitted, but the caller never learns the id

    banner = config.banner_lines()
    if banner:
        stream = sys.stderr if config["BANNER_STREAM"] == "stderr" else sys.stdout
        stream.write("".join(line + "\n" for line in banner))
        stream.flush()
    queue, queue_given = rows[0]["queue"], rows[0]["queue_given"]
    sys.stdout.write(texts.submitted(job_id, queue, queue_given))


def build_rows(client, opts, command, from_stdin, default_name):
    config = client.config
    now = time.time()

    queues = opts.get("-q", "").split()
    queue_given = bool(queues)
    queue = queues[0] if queues else config["DEFAULT_QUEUE"]
    if queue not in config["QUEUES"].split():
        raise Refused(texts.not_submitted(texts.NO_SUCH_QUEUE, subject=queue))

    slots = 1
    if "-n" in opts:
        m = re.fullmatch(r"(\d+)(?:,(\d+))?", opts["-n"].strip())
        if not m or int(m.group(1)) < 1:
            raise Refused(texts.not_submitted(texts.BAD_ARGUMENT))
        slots = int(m.group(1))
        if slots > config["SLOTS"]:
            raise Refused(texts.not_submitted(texts.TOO_MANY_PROCESSORS))

    unit = config["LSF_UNIT_FOR_LIMITS"].upper()
    res_req, req_mem_mb = parse_resreq(opts.get("-R", []), unit)
    mem_limit_kb = None
    if "-M" in opts:
        mem_limit_kb = parse_mem(opts["-M"].rstrip("!"), unit)
        if mem_limit_kb is None:
            raise Refused(texts.not_submitted(texts.BAD_ARGUMENT))
    run_limit_s = None
    if "-W" in opts:
        run_limit_s = parse_run_limit(opts["-W"], config["RUNLIMIT_SECONDS_PER_MINUTE"])
        if run_limit_s is None:
            raise Refused(texts.not_submitted(texts.BAD_ARGUMENT))
    cpu_limit_s = None
    if "-c" in opts:
        cpu_limit_s = parse_run_limit(opts["-c"], 60)
        if cpu_limit_s is None:
            raise Refused(texts.not_submitted(texts.BAD_ARGUMENT))

    name = opts.get("-J", default_name)
    array = parse_array(name, config["MAX_JOB_ARRAY_SIZE"]) if "-J" in opts else None
    env = parse_env(opts.get("-env", "all"), os.environ)
    env.update(LSB_QUEUE=queue, LSB_JOBNAME=name, LSB_MAX_NUM_PROCESSORS=str(slots),
               LSB_DJOB_NUMPROC=str(slots), LS_SUBCWD=os.getcwd())

    base = dict(
        name=name, array_name=None, slot_limit=None, user=client.user, uid=os.getuid(),
        queue=queue, queue_given=int(queue_given), project=opts.get("-P", "default"),
        command=command, from_stdin=int(from_stdin),
        cwd_spec=os.path.join(os.getcwd(), opts.get("-cwd", "")).rstrip("/") or "/",
        sub_cwd=os.getcwd(), home=client.home,
        out_spec=opts.get("-oo", opts.get("-o")), out_overwrite=int("-oo" in opts),
        err_spec=opts.get("-eo", opts.get("-e")), err_overwrite=int("-eo" in opts),
        slots=slots, mem_limit_kb=int(mem_limit_kb) if mem_limit_kb is not None else None,
        run_limit_s=run_limit_s, cpu_limit_s=cpu_limit_s, res_req=res_req,
        req_mem_mb=req_mem_mb, stat="PSUSP" if opts.get("-H") else "PEND",
        submit_time=now)
    if array is None:
        return [dict(base, idx=0, env=json.dumps(dict(env, LSB_JOBINDEX="0")))]
    array_name, indices, limit = array
    rows = []
    for idx in indices:
        element_env = dict(env, LSB_JOBINDEX=str(idx), LSB_JOBNAME=f"{array_name}[{idx}]")
        rows.append(dict(base, idx=idx, array_name=array_name, slot_limit=limit,
                         env=json.dumps(element_env)))
    return rows
