#!/usr/bin/env bash
# Benchmarks the local backend through `flowrun run`, with xargs as the yardstick measured in
# the same run. Prints:
#   1. throughput of N `true` jobs at max_parallel 2 and 8, against `seq N | xargs -P2 -I{} true`;
#   2. flowrun's own CPU per job (the on-CPU time of its threads from
#      /proc/<pid>/task/*/schedstat, sampled until it exits: the jobs' CPU is not counted),
#      and the CPU of flowrun and its jobs together against that of xargs and its commands
#      (the jobs create their directory, cmd.sh and log themselves: that cost shows there);
#   3. flowrun's CPU while 1,000 `sleep` jobs run at once (percent of one core);
#   4. exit-to-dependent-start latency over a chain of jobs (from results.json: started_at of
#      job k+1 minus finished_at of job k), median and 90th percentile.
#
# Usage: benches/local.sh            (builds nothing; uses target/release/flowrun)
#   FLOWRUN_BIN=path/to/flowrun  the binary (the local plugin .so must sit beside it)
#   N=10000 SLEEPERS=1000 CHAIN=300 REPEAT=3
#   SPAWN=std                    the local backend's `spawn` key (default: the backend's, clone);
#                                leave it unset for a binary that predates the key
# Build first: cargo build --release -p flowrun -p flowrun-plugin-local
# Run it on an otherwise idle machine: the figures are only as quiet as the machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOWRUN_BIN:-$ROOT/target/release/flowrun}
N=${N:-10000}
SLEEPERS=${SLEEPERS:-1000}
CHAIN=${CHAIN:-300}
REPEAT=${REPEAT:-3}
[ -x "$BIN" ] || { echo "no flowrun binary at $BIN (cargo build --release -p flowrun -p flowrun-plugin-local)" >&2; exit 2; }
# Output on the filesystem under test (BENCH_DIR, default /tmp). Every run writes a fresh
# directory: creating files where many were just deleted is much slower on ext4.
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/flowrun-local-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# gen_flow FILE NAME COUNT MAX_PARALLEL CMD [chain]
gen_flow() {
    python3 - "$@" <<'EOF'
import os, sys
path, name, count, maxp, cmd = sys.argv[1:6]
chain = len(sys.argv) > 6
with open(path, "w") as f:
    f.write(f'[flow]\nname = "{name}"\n[backends.local]\nkind = "local"\nmax_parallel = {maxp}\n')
    if os.environ.get("SPAWN"):
        f.write(f'spawn = "{os.environ["SPAWN"]}"\n')
    for i in range(int(count)):
        f.write(f'[[job]]\nname = "j{i}"\ncmd = {cmd}\n')
        if chain and i > 0:
            f.write(f'needs = ["j{i-1}"]\n')
EOF
}

# cpu_ns PID: sets NS to the on-CPU nanoseconds of every thread of PID (exact, from
# schedstat); returns 1 once PID is gone. No subshell: the sampler must stay cheap.
cpu_ns() {
    local total=0 t v
    [ -d "/proc/$1" ] || return 1
    for t in /proc/$1/task/*/schedstat; do
        { read -r v _ <"$t"; } 2>/dev/null || continue
        total=$((total + v))
    done
    NS=$total
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# flowrun local backend benchmark: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# binary: $BIN, spawn = ${SPAWN:-default}"

# 1 + 2: throughput and CPU per job. `measure.py` runs each command and records its wall
# time, its own threads' CPU and the CPU of it plus everything it waited for (the jobs).
MEASURE="python3 $ROOT/benches/measure.py"
for P in 2 8; do
    # argv form, like xargs: `true` is exec'd directly (a string would add a /bin/sh exec).
    gen_flow "$WORK/true$P.toml" "true$P" "$N" "$P" '["true"]'
done
# field FILE KEY: one number from a measure.py record.
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
for rep in $(seq "$REPEAT"); do
    for P in 2 8; do
        out="$WORK/out$P-$rep"
        XDG_DATA_HOME=$WORK/xdg FLOWRUN_SITE_PLUGIN_DIR=$WORK/site NO_COLOR=1 \
            $MEASURE "$out.measure" "$BIN" run "$WORK/true$P.toml" --out "$out" </dev/null >"$out.stdout" 2>"$out.stderr" || true
        passed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['counts']['passed'])" "$out/results.json")
        wall=$(field "$out.measure" wall); own=$(field "$out.measure" own_cpu); total=$(field "$out.measure" total_cpu)
        printf 'flowrun P=%s: %s jobs (%s passed) in %.2f s = %.0f jobs/s; host CPU %.3f ms/job; host + jobs CPU %.3f ms/job\n' \
            "$P" "$N" "$passed" "$wall" "$(echo "$N / $wall" | bc -l)" "$(echo "$own * 1000 / $N" | bc -l)" "$(echo "$total * 1000 / $N" | bc -l)"
        echo "$P $(echo "$N / $wall" | bc -l) $(echo "$own * 1000 / $N" | bc -l) $(echo "$total * 1000 / $N" | bc -l)" >>"$WORK/flowrun.txt"
    done
    for P in 2 8; do
        seq "$N" | $MEASURE "$WORK/xargs.measure" xargs -P"$P" -I{} true
        wall=$(field "$WORK/xargs.measure" wall); total=$(field "$WORK/xargs.measure" total_cpu)
        printf 'xargs   P=%s: %s jobs in %.2f s = %.0f jobs/s; xargs + jobs CPU %.3f ms/job\n' \
            "$P" "$N" "$wall" "$(echo "$N / $wall" | bc -l)" "$(echo "$total * 1000 / $N" | bc -l)"
        echo "$P $(echo "$N / $wall" | bc -l) $(echo "$total * 1000 / $N" | bc -l)" >>"$WORK/xargs.txt"
    done
done
for P in 2 8; do
    f=$(awk -v p="$P" '$1==p {print $2}' "$WORK/flowrun.txt" | median)
    c=$(awk -v p="$P" '$1==p {print $3}' "$WORK/flowrun.txt" | median)
    ft=$(awk -v p="$P" '$1==p {print $4}' "$WORK/flowrun.txt" | median)
    x=$(awk -v p="$P" '$1==p {print $2}' "$WORK/xargs.txt" | median)
    xt=$(awk -v p="$P" '$1==p {print $3}' "$WORK/xargs.txt" | median)
    printf 'SUMMARY P=%s (median of %s): flowrun %.0f jobs/s, xargs -P%s %.0f jobs/s, ratio %.2f; host CPU %.3f ms/job; CPU with the jobs: flowrun %.3f, xargs %.3f ms/job\n' \
        "$P" "$REPEAT" "$f" "$P" "$x" "$(echo "$f / $x" | bc -l)" "$c" "$ft" "$xt"
done
x2=$(awk '$1==2 {print $2}' "$WORK/xargs.txt" | median)
f8=$(awk '$1==8 {print $2}' "$WORK/flowrun.txt" | median)
printf 'SUMMARY flowrun P=8 vs xargs -P2: ratio %.2f\n' "$(echo "$f8 / $x2" | bc -l)"

# 3: idle CPU while SLEEPERS jobs sleep at once.
DUR=8
MARK="$DUR.000$$"
gen_flow "$WORK/sleep.toml" sleep "$SLEEPERS" "$SLEEPERS" "\"sleep $MARK\""
XDG_DATA_HOME=$WORK/xdg FLOWRUN_SITE_PLUGIN_DIR=$WORK/site NO_COLOR=1 \
    "$BIN" run "$WORK/sleep.toml" --out "$WORK/outsleep" </dev/null >/dev/null 2>&1 &
pid=$!
deadline=$((SECONDS + 30))
while [ "$(pgrep -c -f "sleep $MARK" || true)" -lt "$SLEEPERS" ]; do
    [ $SECONDS -lt $deadline ] || { echo "the $SLEEPERS sleepers never all ran" >&2; break; }
    sleep 0.05
done
sleep 1.5 # let the host finish processing the STARTED events
cpu_ns "$pid"; t0=$NS; s0=$(date +%s.%N)
sleep 3
cpu_ns "$pid"; t1=$NS; s1=$(date +%s.%N)
printf 'SUMMARY %s sleeping jobs: flowrun used %.3f%% of a core (%.2f ms of CPU in %.2f s)\n' \
    "$SLEEPERS" "$(echo "($t1 - $t0) / 10000000 / ($s1 - $s0)" | bc -l)" "$(echo "($t1 - $t0) / 1000000" | bc -l)" "$(echo "$s1 - $s0" | bc -l)"
wait "$pid" || true

# 4: exit-to-dependent-start latency.
gen_flow "$WORK/chain.toml" chain "$CHAIN" 1 '["true"]' chain
XDG_DATA_HOME=$WORK/xdg FLOWRUN_SITE_PLUGIN_DIR=$WORK/site NO_COLOR=1 \
    "$BIN" run "$WORK/chain.toml" --out "$WORK/outchain" </dev/null >/dev/null 2>&1 || true
python3 - "$WORK/outchain/results.json" <<'EOF'
import json, sys
from datetime import datetime
jobs = {j["name"]: j for j in json.load(open(sys.argv[1]))["jobs"]}
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
gaps = sorted(
    (t(jobs[f"j{k+1}"]["started_at"]) - t(jobs[f"j{k}"]["finished_at"])) * 1e3
    for k in range(len(jobs) - 1)
)
print(f"SUMMARY exit-to-dependent-start over {len(gaps)} links: median {gaps[len(gaps)//2]:.3f} ms, "
      f"p90 {gaps[int(len(gaps)*0.9)]:.3f} ms, max {gaps[-1]:.3f} ms")
EOF
