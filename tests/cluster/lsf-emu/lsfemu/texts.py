"""Every text the emulator prints that a client of real LSF could parse, in one place.

The golden tests (tests/integration/lsf_emu.rs) pin these byte for byte. Where each one comes
from, tagged as in the project's research notes:

  [lava]  the GPL Platform Lava / openlava sources the LSF commands descend from:
          lsbatch/lib/lsb.err.c (error strings), lsb.sub.c (bsub's success line),
          lsbatch/cmd/bjobs.c and cmd.err.c (bjobs rows and messages), cmd.sig.c (bkill),
          lsbatch/daemons/sbd.job.c (the job report), lsf/lib/lib.i18n.c (time formats).
  [ibm]   IBM Spectrum LSF 10.1 documentation (bjobs -o/-json, LSB_BJOBS_CONSISTENT_EXIT_CODE,
          LSB_JOBID_DISP_LENGTH, termination reasons).
  [real]  outputs of real LSF 10.1 clusters published in tool tests and user docs: job
          reports (the resource usage block, TERM_* lines, exit codes 140/137/130), bjobs
          -json as captured in Roddy's tests, `bjobs -o ... delimiter='|'` rows captured in
          pipelite's tests.

Nothing here was checked against a running LSF: whoever has one should capture the same
outputs and diff them against the golden tests.
"""

import time

DASHES = "-" * 60

# --- times ---------------------------------------------------------------------------------


def ctime(t):
    """`Thu Dec  2 17:36:28 2021`: ctime(3) without its newline [lava lib.i18n.c]."""
    return time.ctime(t)


def short_time(t):
    """`Dec  2 17:36`: ctime(3) characters 4-15, bjobs' SUBMIT_TIME [lava lib.i18n.c]."""
    return time.ctime(t)[4:16]


# --- bsub [lava lsb.sub.c; ibm; real esub banner lines from submitit's tests] ---------------


def submitted(job_id, queue, queue_given):
    if queue_given:
        return f"Job <{job_id}> is submitted to queue <{queue}>.\n"
    return f"Job <{job_id}> is submitted to default queue <{queue}>.\n"


def not_submitted(reason, subject=None):
    """`nosuch: No such queue. Job not submitted.` [lava cmd.sub.c: sub_perror + ". %s.\\n"]"""
    prefix = f"{subject}: " if subject else ""
    return f"{prefix}{reason}. Job not submitted.\n"


# lsb_errmsg[] entries the emulator uses [lava lsb.err.c].
NO_SUCH_QUEUE = "No such queue"
TOO_MANY_PROCESSORS = "Too many processors requested"
BAD_RESREQ = "Bad resource requirement syntax"
BAD_JOB_NAME = "Bad job name"
BAD_ARGUMENT = "Bad argument"
EMPTY_JOB = "Empty job"
ARRAY_INDEX_ERROR = "Job array index error"
ARRAY_INDEX_TOO_LARGE = "Job array index too large"
NO_MATCHING_JOB = "No matching job found"
ALREADY_FINISHED = "Job has already finished"
NOT_STARTED = "Job has not started yet"
CONN_REFUSED = "Connection refused by server"

# --- mbatchd unreachable [lava lsb.comm.c callmbd(): printed before each retry] --------------

STILL_TRYING = "batch system daemon not responding ... still trying\n"

# --- bjobs ---------------------------------------------------------------------------------

# [lava bjobs.c displayJobs(); the same header is in the LSF 10.1 docs]
DEFAULT_HEADER = "USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME"


def default_header(id_width):
    return f"{'JOBID':<{id_width}} {DEFAULT_HEADER}\n"


def trunc_name(name, width):
    """TRUNC_STR: a name longer than WIDTH keeps its last WIDTH-1 characters behind `*`
    [lava cmd.h; real: `/bin/sleep 10` shows as `*/sleep 10`]."""
    return "*" + name[len(name) - width + 1:] if len(name) > width else name


def job_id_column(job_id, width):
    """Ids longer than the column are cut on the left [ibm LSB_JOBID_DISP_LENGTH]."""
    s = str(job_id)
    return s[len(s) - width:] if len(s) > width else s


def default_row(id_text, id_width, user, stat, queue, from_host, exec_host, name, submit):
    """`printf("%-7d %-7.7s %-5.5s %-10.10s %-11.11s %-11.11s %-10.10s %s\\n")` [lava]"""
    return (f"{id_text:<{id_width}} {user[:7]:<7} {stat[:5]:<5} {queue[:10]:<10} "
            f"{from_host[:11]:<11} {exec_host[:11]:<11} {name[:10]:<10} {submit}\n")


def wide_row(id_text, id_width, user, stat, queue, from_host, exec_host, name, submit):
    """`-w`: `printf("%-7d %-7s %-5.5s %-10s %-11s %-11s %-10s %s\\n")` [lava]"""
    return (f"{id_text:<{id_width}} {user:<7} {stat[:5]:<5} {queue:<10} "
            f"{from_host:<11} {exec_host:<11} {name:<10} {submit}\n")


def extra_exec_host_row(host):
    """Each further slot of a multi-slot job, under EXEC_HOST: `"%45s%-s\\n"` [lava]."""
    return f"{'':45}{host}\n"


# bjobs' stderr messages [lava cmd.err.c jobInfoErr(); ibm].
def job_not_found(job_spec):
    return f"Job <{job_spec}> is not found\n"


NO_UNFINISHED_JOB = "No unfinished job found\n"
NO_JOB = "No job found\n"
NO_DONE_JOB = "No DONE/EXIT job found\n"
NO_PENDING_JOB = "No pending job found\n"
NO_RUNNING_JOB = "No running job found\n"
NO_SUSPENDED_JOB = "No suspended job found\n"


def json_document(records):
    """`bjobs -o ... -json` [ibm; real LSF 10.1 output captured in Roddy's tests]: two-space
    indents, no space after the colons, every value a string, `/` escaped as `\\/`."""
    out = ['{\n  "COMMAND":"bjobs",\n', f'  "JOBS":{len(records)},\n', '  "RECORDS":[\n']
    for i, record in enumerate(records):
        fields = ",\n".join(f'      "{key}":"{json_escape(value)}"' for key, value in record)
        out.append("    {\n" + fields + "\n    }" + ("," if i + 1 < len(records) else "") + "\n")
    out.append("  ]\n}\n")
    return "".join(out)


def json_escape(value):
    out = []
    for ch in value:
        if ch in '"\\/':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


# --- termination reasons [ibm "Termination reasons"; real reports and bjobs -o rows show
# the keyword, a colon and the description with a lower-case first letter] ----------------

TERM_REASONS = {
    "TERM_OWNER": "job killed by owner",
    "TERM_ADMIN": "job killed by root or LSF administrator",
    "TERM_FORCE_OWNER": "job killed by owner without time for cleanup",
    "TERM_FORCE_ADMIN": "job killed by root or LSF administrator without time for cleanup",
    "TERM_RUNLIMIT": "job killed after reaching LSF run time limit",
    "TERM_MEMLIMIT": "job killed after reaching LSF memory usage limit",
    "TERM_ZOMBIE": "job exited while LSF is not available",
    "TERM_CWD_NOTEXIST": "current working directory is not accessible or does not exist on "
                         "the execution host",
}


def exit_reason_text(keyword):
    return f"{keyword}: {TERM_REASONS[keyword]}"


# --- bkill, bstop, bresume [lava cmd.sig.c] --------------------------------------------------


def signalled(job_spec, verb):
    """`Job <123> is being terminated`; verb: terminated, signaled, stopped, resumed."""
    return f"Job <{job_spec}> is being {verb}\n"


def signal_failed(job_spec, reason):
    """`Job <123>: Job has already finished` (lsb_perror("Job <123>"))."""
    return f"Job <{job_spec}>: {reason}\n"


NO_JOB_ID = "Job ID or one of '-m', '-u' '-q' and '-J' must be specified.\n"


def signal_usage(cmd):
    """cmd.sig.c usage() for bkill (SIGKILL) and bstop/bresume."""
    if cmd == "bkill":
        opts = ("[-l] [-m host_name] [-q queue_name]\n"
                "               [-u user_name | -u all] [0] [-r | -s sigval] [-J job_name] ")
    elif cmd == "bstop":
        opts = (" [-m host_name] [-q queue_name]\n"
                "               [-u user_name | -u all] [0] [-d] [-a] [-J job_name] ")
    else:
        opts = (" [-m host_name] [-q queue_name]\n"
                "               [-u user_name | -u all] [0] [-J job_name] ")
    return (f"Usage: {cmd} [-h] [-V] {opts}"
            "\n               [jobId | \"jobId[index_list]\"]...\n")


# --- the job report [lava sbd.job.c; layout and resource lines from real LSF 10.1 reports] ---


def usage_line(label, value):
    """`    CPU time :                                   0.04 sec.`: values at column 49."""
    return f"    {label + ' :':<45}{value}\n"


def job_report(r):
    """The report sbatchd writes into the -o file (or mails) when a job ends.

    R is a dict with: job_spec (`123` or `123[4]`), name, done (bool), host, cluster,
    from_host, user, queue, exec_hosts, home, cwd, submit, start, end, reported, command
    (the "Your job looked like" text), exit_code, term_reason (keyword or None), and the
    usage strings cpu, max_mem, avg_mem, req_mem, delta_mem, max_procs, max_threads.
    """
    out = [
        f"Sender: LSF System <lsfadmin@{r['host']}>\n",
        f"Subject: Job {r['job_spec']}: <{r['name']}> in cluster <{r['cluster']}> "
        f"{'Done' if r['done'] else 'Exited'}\n",
        "\n",
        f"Job <{r['name']}> was submitted from host <{r['from_host']}> by user <{r['user']}> "
        f"in cluster <{r['cluster']}> at {ctime(r['submit'])}\n",
        f"Job was executed on host(s) <{r['exec_hosts']}>, in queue <{r['queue']}>, as user "
        f"<{r['user']}> in cluster <{r['cluster']}> at {ctime(r['start'])}\n",
        f"<{r['home']}> was used as the home directory.\n",
        f"<{r['cwd']}> was used as the working directory.\n",
        f"Started at {ctime(r['start'])}\n",
        f"Terminated at {ctime(r['end'])}\n",
        f"Results reported at {ctime(r['reported'])}\n",
        "\n",
        "Your job looked like:\n",
        "\n",
        DASHES + "\n",
        "# LSBATCH: User input\n",
        looked_like(r["command"]),
        DASHES + "\n",
        "\n",
    ]
    if r["term_reason"]:
        out.append(exit_reason_text(r["term_reason"]) + ".\n")
    if r["done"]:
        out.append("Successfully completed.\n")
    else:
        out.append(f"Exited with exit code {r['exit_code']}.\n")
    out += [
        "\n",
        "Resource usage summary:\n",
        "\n",
        usage_line("CPU time", f"{r['cpu']:.2f} sec."),
        usage_line("Max Memory", r["max_mem"]),
        usage_line("Average Memory", r["avg_mem"]),
        usage_line("Total Requested Memory", r["req_mem"]),
        usage_line("Delta Memory", r["delta_mem"]),
        usage_line("Max Swap", "-"),
        usage_line("Max Processes", r["max_procs"]),
        usage_line("Max Threads", r["max_threads"]),
        usage_line("Run time", f"{int(r['end'] - r['start'])} sec."),
        usage_line("Turnaround time", f"{int(r['end'] - r['submit'])} sec."),
        "\n",
    ]
    return "".join(out)


def looked_like(command):
    """The job's command or script, at most 50 lines [lava sbd.job.c]."""
    lines = command.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if len(lines) > 50:
        return "".join(lines[:50]) + "\n(... more ...)\n"
    return "".join(lines)


# After the report: the job's output when LSF copies it from its spool (the default), or a
# pointer to it when the job wrote straight to the file (LSB_STDOUT_DIRECT=Y), which also puts
# a separator line before the report [lava sbd.job.c; real reports of both kinds].
OUTPUT_FOLLOWS = "The output (if any) follows:\n\n"
OUTPUT_ABOVE = "The output (if any) is above this job summary.\n\n"
DIRECT_SEPARATOR = "\n" + DASHES + "\n"


def postscript(lines):
    """`\\n\\nPS:\\n\\nRead file <err> for stderr output of this job.\\n\\n` [lava; real]."""
    return "\n\nPS:\n\n" + "".join(lines) + "\n"


def read_file_for_stderr(path):
    return f"Read file <{path}> for stderr output of this job.\n"


def cannot_open_output(path, error):
    return f"Fail to open output file {path}: {error}.\nThe output is included in this report.\n"
