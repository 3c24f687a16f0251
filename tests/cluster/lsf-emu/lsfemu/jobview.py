"""A job row as the commands show it, and the job ids users type (`123`, `123[4]`,
`"123[1-5,7]"`)."""

import fnmatch
import re

from . import texts
from .store import FINISHED


class JobSpec:
    def __init__(self, text, job_id, indices):
        self.text = text          # as typed, for messages: Job <123[4]> is not found
        self.id = job_id
        self.indices = indices    # None: the whole job or array

    def matches(self, view):
        return view.id == self.id and (self.indices is None or view.idx in self.indices)


def parse_job_specs(args):
    specs = []
    for arg in args:
        m = re.fullmatch(r"(\d+)(?:\[([\d,\-:]+)\])?", arg.strip())
        if not m:
            raise ValueError(arg)
        indices = None
        if m.group(2):
            indices = set()
            for item in m.group(2).split(","):
                im = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", item)
                if not im:
                    raise ValueError(arg)
                start = int(im.group(1))
                end = int(im.group(2) or start)
                indices.update(range(start, end + 1, int(im.group(3) or 1)))
        specs.append(JobSpec(arg.strip(), int(m.group(1)), indices))
    return specs


class JobView:
    def __init__(self, row, config, now):
        self.row = row
        self.config = config
        self.now = now
        self.id = row["id"]
        self.idx = row["idx"]
        self.key = (self.id, self.idx)
        self.host = config["HOST"]
        overlay_live = row["overlay"] and (row["overlay_until"] is None
                                           or row["overlay_until"] > now)
        self.stat = row["overlay"] if overlay_live else row["stat"]
        self.finished = row["stat"] in FINISHED and not (overlay_live
                                                         and row["overlay"] == "UNKWN")

    @property
    def job_spec(self):
        return f"{self.id}[{self.idx}]" if self.row["array_name"] is not None else str(self.id)

    def name_matches(self, pattern):
        """`-J PATTERN`: the job's name, an element's `name[4]`, or the array's own name, by
        which IBM says an array and its elements are referenced [ibm "Job arrays"]."""
        names = [self.row["name"], self.display_name]
        if self.row["array_name"] is not None:
            names.append(self.row["array_name"])
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)

    @property
    def display_name(self):
        """Elements show `name[4]`, the index in place of the array's index list [lava]."""
        if self.row["array_name"] is not None:
            return f"{self.row['array_name']}[{self.idx}]"
        return self.row["name"]

    @property
    def exec_hosts(self):
        """One entry per slot once the job was dispatched."""
        if self.row["start_time"] is None:
            return []
        return [self.host] * self.row["slots"]

    @property
    def exit_code_text(self):
        if self.row["stat"] == "EXIT" and self.row["exit_code"] is not None:
            return str(self.row["exit_code"])
        return None

    @property
    def exit_reason_text(self):
        if self.row["exit_reason"]:
            return texts.exit_reason_text(self.row["exit_reason"])
        return None

    def time_text(self, column):
        t = self.row[column]
        return texts.short_time(t) if t is not None else None

    @property
    def finish_time_text(self):
        """Finished jobs carry ` L` (the actual time, not an estimate) [real, Roddy]."""
        t = self.row["finish_time"]
        return texts.short_time(t) + " L" if t is not None else None

    @property
    def run_seconds(self):
        start = self.row["start_time"]
        if start is None:
            return 0
        end = self.row["finish_time"] or self.now
        return max(0, int(end - start))

    @property
    def run_time_text(self):
        return f"{self.run_seconds} second(s)"

    @property
    def cpu_used_text(self):
        cpu = self.row["cpu_time"]
        return f"{cpu or 0.0:.1f} second(s)"

    def mem_text(self, column):
        kb = self.row[column]
        if not kb:
            return None
        return f"{kb / 1024:.0f} Mbytes" if kb < 1024 ** 2 else f"{kb / 1024 ** 2:.1f} Gbytes"

    @property
    def mem_limit_text(self):
        kb = self.row["mem_limit_kb"]
        return f"{kb / 1024:.0f} M" if kb else None

    @property
    def pend_reason(self):
        if self.stat == "PSUSP":
            return "The job was suspended by user while pending;"
        if self.stat == "PEND":
            return "New job is waiting for scheduling;"
        return None
