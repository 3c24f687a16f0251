#!/usr/bin/env python3
"""The journal's cost: the same million-job fake flow (benches/sched.py's "independent" flow,
instant jobs) run with FLOWRUN_JOURNAL=on and =off alternately in one invocation, so that both
see the same machine load; then `--resume` of a 100,000-job run of which 1,000 jobs failed.

Usage:  cargo build --release -p flowrun -p flowrun-plugin-fake
        python3 benches/journal.py [--jobs 1000000] [--rounds 4] [--skip-resume]
Prints every run (wall and CPU seconds, journal size), then per mode the median, and the
ratio on/off of the medians and of each round's pair (the spread). The issue's target is a
ratio of at most 1.10. Run directories are deleted right after each run (a million-job run
directory is about 200 MB). Uses target/release/flowrun unless FLOWRUN_BIN is set.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("FLOWRUN_BIN", os.path.join(ROOT, "target/release/flowrun")))


def flow(name, n, backend_table=""):
    return f'''[flow]
name = "{name}"
default_backend = "fake"
{backend_table}
[[job]]
name = "j-{{i}}"
cmd = "true"
matrix = {{ i = {{ range = [1, {n}] }} }}
'''


def run(args, cwd, journal="on", ok_codes=(0,)):
    """Runs flowrun; returns (wall s, CPU s, stderr)."""
    env = dict(os.environ, FLOWRUN_JOURNAL=journal)
    start = time.perf_counter()
    p = subprocess.Popen([BIN] + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in ok_codes:
        sys.exit(f"flowrun {' '.join(args)} exited {code}:\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, err


def load():
    return os.getloadavg()[0]


def overhead(work, jobs, rounds):
    path = os.path.join(work, "flow.toml")
    with open(path, "w") as f:
        f.write(flow("independent", jobs))
    walls = {"on": [], "off": []}
    print(f"{jobs} instant fake jobs, journal on and off alternately, {rounds} rounds")
    print(f"{'round':>5} {'journal':>7} {'wall s':>8} {'cpu s':>7} {'journal MB':>10} {'load':>5}")
    for r in range(rounds):
        # Alternate which mode goes first, so that neither always follows the other.
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        for mode in order:
            out = os.path.join(work, "out")
            wall, cpu, _ = run(["run", path, "--out", out, "--quiet"], work, mode)
            jpath = os.path.join(out, "journal")
            size = os.path.getsize(jpath) / 1e6 if os.path.exists(jpath) else 0.0
            shutil.rmtree(out)
            walls[mode].append(wall)
            print(f"{r + 1:>5} {mode:>7} {wall:>8.3f} {cpu:>7.2f} {size:>10.1f} {load():>5.2f}",
                  flush=True)
    on, off = statistics.median(walls["on"]), statistics.median(walls["off"])
    pairs = [a / b for a, b in zip(walls["on"], walls["off"])]
    print(f"median wall: on {on:.3f} s, off {off:.3f} s; ratio on/off {on / off:.3f} "
          f"(per round {min(pairs):.3f}..{max(pairs):.3f}); target <= 1.10")


def resume(work):
    n = 100_000
    path = os.path.join(work, "flow100k.toml")
    with open(path, "w") as f:
        f.write(flow("resume", n, '[backends.fake]\noutcomes = { "j-*00" = "fail" }'))
    out = os.path.join(work, "out100k")
    run(["run", path, "--out", out, "--quiet"], work, ok_codes=(1,))
    wall, cpu, err = run(["-v", "run", path, "--resume", out, "--quiet"], work, ok_codes=(1,))
    shutil.rmtree(out)
    spans = [line.split("INFO", 1)[-1].strip() for line in err.splitlines()
             if " INFO " in line and any(k in line for k in ("loaded", "journal started",
                                                             "run loop", "results.json"))]
    print(f"--resume of {n} jobs, 99,000 passed before: wall {wall:.3f} s, cpu {cpu:.2f} s, "
          f"load {load():.2f}")
    for s in spans:
        print(f"    {s}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--skip-resume", action="store_true")
    args = ap.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no flowrun at {BIN}: cargo build --release -p flowrun -p flowrun-plugin-fake")
    with tempfile.TemporaryDirectory(prefix="flowrun-journal-bench-") as work:
        overhead(work, args.jobs, args.rounds)
        if not args.skip_resume:
            resume(work)


if __name__ == "__main__":
    main()
