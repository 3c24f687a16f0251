#!/usr/bin/env python3
"""Observer benchmarks, through whole `flowrun run` invocations on the fake backend:

1. the html report of a 100,000-job run: its size, and how long headless Chromium takes to
   load and render it (wall time of `chromium --dump-dom`, against the same browser on an
   empty page, and the page's own `data-ready-ms`: navigation start to the end of its first
   render, as the page's script measures it);
2. the trace of the same run: its size;
3. the cost of the status-dirs observer: 100,000 jobs with it against the same run without
   it, alternating, in this one harness run; once with instant jobs that have no job
   directory (the worst case: the run itself does almost nothing) and once with
   `write_logs = true` (each job has a directory and a log, as real jobs do).

Usage:  cargo build --release --workspace && python3 benches/observers.py [--jobs 100000] [--repeat 3]
        [--only report|links] [--dir /dev/shm]
Uses target/release/flowrun unless FLOWRUN_BIN is set, and `chromium` unless FLOWRUN_CHROMIUM
is. Figures go to docs/benchmarks.md together with this command. The machine is shared: run it
more than once before trusting a figure.
"""
import argparse, os, re, resource, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FLOWRUN_BIN", os.path.join(ROOT, "target/release/flowrun"))
CHROMIUM = os.environ.get("FLOWRUN_CHROMIUM", "chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def report_flow(n, observers):
    """n jobs on two fake backends (8 slots each), 10 % failing, one dependent per 100."""
    half = n // 2
    deps = max(1, n // 100)
    return f'''[flow]
name = "observers-bench"
default_backend = "fake"
[backends.fake]
kind = "fake"
max_parallel = 8
fail_rate = 0.1
seed = 7
[backends.cluster]
kind = "fake"
max_parallel = 8
fail_rate = 0.1
seed = 8
{observers}
[[job]]
name = "sim-{{test}}-{{seed}}"
cmd = "true"
matrix = {{ test = ["smoke", "dma"], seed = {{ range = [1, {half // 2}] }} }}
[[job]]
name = "regr-{{seed}}"
cmd = "true"
backend = "cluster"
matrix = {{ seed = {{ range = [1, {n - half - deps}] }} }}
[[job]]
name = "cov-{{k}}"
cmd = "true"
needs = ["sim-smoke-{{k}}"]
matrix = {{ k = {{ range = [1, {deps}] }} }}
'''


def links_flow(n, with_links, write_logs):
    observers = '[observers.links]\nkind = "status-dirs"\n' if with_links else ""
    logs = "write_logs = true\n" if write_logs else ""
    return f'''[flow]
name = "status-dirs-bench"
default_backend = "fake"
[backends.fake]
kind = "fake"
{logs}{observers}
[[job]]
name = "j-{{i}}"
cmd = "true"
matrix = {{ i = {{ range = [1, {n}] }} }}
'''


def run(flow_text, tmp, name):
    d = tempfile.mkdtemp(prefix=name + "-", dir=tmp)
    path = os.path.join(d, "flow.toml")
    with open(path, "w") as f:
        f.write(flow_text)
    out = os.path.join(d, "out")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([BIN, "run", path, "--out", out, "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode not in (0, 1):
        sys.exit(f"{name}: flowrun exited {p.returncode}\n{p.stderr}")
    if "flowrun: observer" in p.stderr:
        sys.exit(f"{name}: an observer failed\n{p.stderr}")
    return wall, cpu, out


def chromium_load(url, tmp, how="--dump-dom"):
    """Wall seconds of a headless Chromium loading url and dumping its DOM (or taking a
    screenshot: `how`), and what it printed."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    t = time.perf_counter()
    # The virtual-time budget lets the page's timers run (the report notes when its first
    # frame was painted from one) before the DOM is dumped.
    extra = ["--virtual-time-budget=10000"] if how == "--dump-dom" else []
    p = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *extra, f"--user-data-dir={profile}", how, url],
                       capture_output=True, text=True, timeout=300, cwd=tmp)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"chromium exited {p.returncode}: {p.stderr[-2000:]}")
    return wall, p.stdout


def med(runs, k):
    """The median of field k (0: wall, 1: CPU seconds) of runs."""
    return statistics.median(r[k] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--only", choices=["report", "links"], help="run one part only")
    ap.add_argument("--dir", help="where the runs go (default: the system's temporary directory;"
                    " /dev/shm takes the disk's own file system out of the figures)")
    args = ap.parse_args()
    n = args.jobs
    with tempfile.TemporaryDirectory(prefix="flowrun-observers-bench-", dir=args.dir) as tmp:
        # 1 and 2: the report and the trace at n jobs.
        observers = ('[observers.report]\nkind = "html"\nrefresh = "1h"\n'
                     '[observers.trace]\nkind = "trace"\n')
        if args.only != "links":
            report_part(n, args, tmp, observers)
        if args.only != "report":
            links_part(n, args, tmp)


def report_part(n, args, tmp, observers):
    plain = [run(report_flow(n, ""), tmp, "plain") for _ in range(args.repeat)]
    observed = [run(report_flow(n, observers), tmp, "report") for _ in range(args.repeat)]
    out = observed[-1][2]
    report = os.path.join(out, "report.html")
    trace = os.path.join(out, "trace.json")
    print(f"run of {n} jobs: {med(plain, 0):.2f} s wall, {med(plain, 1):.2f} s CPU without "
          f"observers; {med(observed, 0):.2f} s wall, {med(observed, 1):.2f} s CPU with html + "
          f"trace (medians of {args.repeat})")
    print(f"report.html: {os.path.getsize(report) / 2**20:.1f} MiB; "
          f"trace.json: {os.path.getsize(trace) / 2**20:.1f} MiB")
    if not args.skip_browser:
        empty = os.path.join(tmp, "empty.html")
        with open(empty, "w") as f:
            f.write("<!DOCTYPE html><p>empty</p>")
        base = [chromium_load("file://" + empty, tmp, "--screenshot")[0] for _ in range(args.repeat)]
        shots = [chromium_load("file://" + report, tmp, "--screenshot")[0] for _ in range(args.repeat)]
        loads, ready, painted = [], [], []
        for _ in range(args.repeat):
            wall, dom = chromium_load("file://" + report, tmp)
            m = re.search(r'data-ready-ms="(\d+)"', dom)
            p = re.search(r'data-painted-ms="(\d+)"', dom)
            if not m or not p or 'data-ready="1"' not in dom:
                sys.exit("the report did not finish rendering")
            painted.append(int(p.group(1)) / 1000)
            rows = len(re.findall(r'role="row" data-job=', dom))
            loads.append(wall)
            ready.append(int(m.group(1)) / 1000)
        print(f"chromium --screenshot of the report: {statistics.median(shots):.2f} s wall "
              f"(of an empty page: {statistics.median(base):.2f} s); --dump-dom: "
              f"{statistics.median(loads):.2f} s wall; the page rendered "
              f"{statistics.median(ready):.2f} s after navigation start (data-ready-ms), its first "
              f"frame was painted at {statistics.median(painted):.2f} s (data-painted-ms); "
              f"{rows} table rows in the DOM")


def links_part(n, args, tmp):
    for write_logs in (False, True):
        without, with_ = [], []
        for _ in range(args.repeat):
            without.append(run(links_flow(n, False, write_logs), tmp, "no-links"))
            shutil.rmtree(os.path.dirname(without[-1][2]))
            with_.append(run(links_flow(n, True, write_logs), tmp, "links"))
            passed = len(os.listdir(os.path.join(with_[-1][2], "by-status", "passed")))
            if passed != n:
                sys.exit(f"status-dirs made {passed} links for {n} jobs")
            # Gone at once, so that later runs do not measure a file system full of earlier ones.
            shutil.rmtree(os.path.dirname(with_[-1][2]))
        kind = "with job logs" if write_logs else "instant, no job dirs"
        a, b = med(without, 0), med(with_, 0)
        ca, cb = med(without, 1), med(with_, 1)
        walls = lambda runs: "/".join(f"{r[0]:.2f}" for r in runs)
        print(f"status-dirs, {n} fake jobs ({kind}): wall {a:.2f} s without, {b:.2f} s with: "
              f"{b / a:.2f}x; CPU {ca:.2f} s without, {cb:.2f} s with: {cb / ca:.2f}x "
              f"(medians of {args.repeat}; walls {walls(without)} vs {walls(with_)})")


if __name__ == "__main__":
    main()
