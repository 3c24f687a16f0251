#!/usr/bin/env python3
"""Runs a command and writes, as JSON to OUT:
- "wall": seconds from start to exit;
- "own_cpu": on-CPU seconds of the command's own threads (the maximum over samples of
  /proc/<pid>/task/*/schedstat, taken every 50 ms until it exits: its children are not
  counted, and the last <= 50 ms of its life are missed);
- "total_cpu": user + system seconds of the command and of every process it waited for
  (getrusage(RUSAGE_CHILDREN)): for flowrun, flowrun plus all its jobs; for xargs, xargs
  plus all its commands.

Usage: measure.py OUT COMMAND [ARG...]   (stdin, stdout and stderr are the command's)
"""
import json
import os
import resource
import subprocess
import sys
import time


def own_cpu_ns(pid):
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just exited
    return total


def main():
    out, cmd = sys.argv[1], sys.argv[2:]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        # The maximum: threads that exit during shutdown drop out of the sum.
        peak = max(peak, own_cpu_ns(proc.pid))
        time.sleep(0.05)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out, "w") as f:
        json.dump({"wall": wall, "own_cpu": peak / 1e9, "total_cpu": total,
                   "exit": proc.returncode}, f)


if __name__ == "__main__":
    main()
