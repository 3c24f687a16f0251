#!/usr/bin/env python3
"""Scheduler benchmarks: whole `flowrun run` (and `flowrun check`) invocations on the fake
backend with instant jobs, so the figures measure flowrun itself: loading the flow, the
scheduler core, the run loop, the plugin boundary and writing results.json.

Usage:  cargo build --release --workspace && python3 benches/sched.py [--repeat 3] [--only NAME]
Prints one line per scenario: wall seconds (median of --repeat runs), peak RSS (max) and RSS
per job. Uses target/release/flowrun unless FLOWRUN_BIN is set. Figures go to
docs/benchmarks.md together with this command.
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FLOWRUN_BIN", os.path.join(ROOT, "target/release/flowrun"))


def independent(n):
    return f'''[flow]
name = "independent"
default_backend = "fake"
[[job]]
name = "j-{{i}}"
cmd = "true"
matrix = {{ i = {{ range = [1, {n}] }} }}
''', n


def chain(n):
    parts = ['[flow]\nname = "chain"\ndefault_backend = "fake"\n']
    parts.append('[[job]]\nname = "c-1"\ncmd = "true"\n')
    for i in range(2, n + 1):
        parts.append(f'[[job]]\nname = "c-{i}"\ncmd = "true"\nneeds = ["c-{i-1}"]\n')
    return "".join(parts), n


def fan(n):
    return f'''[flow]
name = "fan"
default_backend = "fake"
[[job]]
name = "root"
cmd = "true"
[[job]]
name = "mid-{{i}}"
cmd = "true"
needs = ["root"]
matrix = {{ i = {{ range = [1, {n}] }} }}
[[job]]
name = "sink"
cmd = "true"
needs = ["mid-*"]
''', n + 2


def backend_cap(n):
    return f'''[flow]
name = "backend-cap"
default_backend = "fake"
[backends.fake]
max_parallel = 8
[[job]]
name = "j-{{i}}"
cmd = "true"
matrix = {{ i = {{ range = [1, {n}] }} }}
''', n


def resource_cap(n):
    return f'''[flow]
name = "resource-cap"
default_backend = "fake"
[resources]
license = 8
[[job]]
name = "j-{{i}}"
cmd = "true"
resources = {{ license = 1 }}
matrix = {{ i = {{ range = [1, {n}] }} }}
''', n


SCENARIOS = [
    ("1M independent", "run", independent, 1_000_000),
    ("100k independent", "run", independent, 100_000),
    ("100k chain", "run", chain, 100_000),
    ("fan 1->100k->1", "run", fan, 100_000),
    ("100k, backend cap 8", "run", backend_cap, 100_000),
    ("200k, backend cap 8", "run", backend_cap, 200_000),
    ("100k, resource cap 8", "run", resource_cap, 100_000),
    ("200k, resource cap 8", "run", resource_cap, 200_000),
    ("check: 100k matrix", "check", independent, 100_000),
]


def measure(cmd, cwd):
    start = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if code != 0:
        sys.exit(f"{' '.join(cmd)} exited {code}:\n{err}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no flowrun at {BIN}: cargo build --release --workspace")
    print(f"{'scenario':<24} {'jobs':>9} {'wall s':>8} {'cpu s':>7} {'peak RSS':>10} {'B/job':>7}")
    with tempfile.TemporaryDirectory(prefix="flowrun-bench-") as work:
        for name, verb, gen, n in SCENARIOS:
            if args.only and args.only not in name:
                continue
            text, jobs = gen(n)
            flow = os.path.join(work, "flow.toml")
            with open(flow, "w") as f:
                f.write(text)
            walls, rss, cpus = [], 0, []
            for r in range(args.repeat):
                out = os.path.join(work, f"out-{r}")
                cmd = [BIN, verb, flow] + (["--out", out, "--quiet"] if verb == "run" else [])
                wall, peak, cpu = measure(cmd, work)
                walls.append(wall)
                cpus.append(cpu)
                rss = max(rss, peak)
                subprocess.run(["rm", "-rf", out])
            print(f"{name:<24} {jobs:>9} {statistics.median(walls):>8.3f} {statistics.median(cpus):>7.2f} "
                  f"{rss / 2**20:>8.1f}Mi {rss / jobs:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
