#!/usr/bin/env bash
# Benchmark of the Slurm backend on the private test cluster (tests/cluster/slurm-up):
# N trivial jobs (default 1000) through `flowrun run`, in three variants:
#   sbatch_20ps   one sbatch per job at the default submit_rate (20/s)
#   sbatch_fast   one sbatch per job, submit_rate = 1000/s (the cluster's own pace)
#   arrays        arrays = true: same-shape jobs go out as job arrays
# For each: the time from the first sbatch call starting to the last one returning (every job
# accepted by Slurm), the run's wall time, and the number of each Slurm command called
# (counted by wrapper scripts on PATH), the host's CPU time per job (flowrun's own threads, the
# plugin's included, sampled by benches/measure.py; the Slurm client commands it ran are reported
# apart), plus the backend's own stats() counters.
#
#   benches/slurm.sh [N]        (needs `cargo build -p flowrun -p flowrun-plugin-slurm` first)
#
# Takes the cluster's lock file, so it never overlaps the Slurm tests. The machine is small:
# run it while nothing else compiles, or read the figures as upper bounds.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
N=${1:-1000}
BIN_DIR=${FLOWRUN_BIN_DIR:-$ROOT/target/debug}
FLOWRUN=$BIN_DIR/flowrun
[[ -x $FLOWRUN && -f $BIN_DIR/libflowrun_plugin_slurm.so ]] ||
    { echo "build first: cargo build -p flowrun -p flowrun-plugin-slurm" >&2; exit 2; }

"$ROOT/tests/cluster/slurm-up" --dbd
exec 9>/var/tmp/flowrun-slurm.lock
flock 9

WORK=$(mktemp -d /var/tmp/flowrun-slurm-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
WRAP=$WORK/wrappers
mkdir -p "$WRAP"
for cmd in sbatch squeue sacct scontrol scancel; do
    real=$(command -v "$cmd")
    if [[ $cmd == sbatch ]]; then
        # Logs when each call starts and ends, to time "all accepted".
        cat >"$WRAP/$cmd" <<W
#!/bin/sh
echo "\$(date +%s.%N) sbatch-start" >>"\$FLOWRUN_BENCH_LOG"
'$real' "\$@"
rc=\$?
echo "\$(date +%s.%N) sbatch-end" >>"\$FLOWRUN_BENCH_LOG"
exit \$rc
W
    else
        cat >"$WRAP/$cmd" <<W
#!/bin/sh
echo "\$(date +%s.%N) $cmd" >>"\$FLOWRUN_BENCH_LOG"
exec '$real' "\$@"
W
    fi
    chmod +x "$WRAP/$cmd"
done

run_variant() {
    local name=$1 config=$2 dir=$WORK/$1
    mkdir -p "$dir"
    {
        printf '[flow]\nname = "bench_%s"\ndefault_backend = "slurm"\n\n[backends.slurm]\nkind = "slurm"\npoll_interval = "1s"\n%s\n' \
            "$name" "$config"
        for ((i = 0; i < N; i++)); do printf '[[job]]\nname = "j%d"\ncmd = "true"\n' "$i"; done
    } >"$dir/flow.toml"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    FLOWRUN_BENCH_LOG=$dir/calls.log PATH="$WRAP:$PATH" \
        python3 "$ROOT/benches/measure.py" "$dir/cpu.json" \
        "$FLOWRUN" -vv run "$dir/flow.toml" --out "$dir/out" -q >"$dir/stdout" 2>"$dir/stderr" || rc=$?
    t1=$(date +%s.%N)
    local passed stats
    passed=$(grep -o '"passed":[0-9]*' "$dir/out/results.json" | head -n1 | cut -d: -f2)
    stats=$(grep -o 'backend stats: .*' "$dir/stderr" | sed 's/backend stats: //; s/ backend=.*//' | tail -n1)
    awk -v name="$name" -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v rc="$rc" -v passed="$passed" -v n="$N" '
        $2 == "sbatch-start" { if (!first) first = $1; sb++ }
        $2 == "sbatch-end"   { last = $1 }
        $2 == "squeue" { sq++ } $2 == "sacct" { sa++ } $2 == "scontrol" { sc++ } $2 == "scancel" { ca++ }
        END {
            printf "%-12s exit %s, %s/%s passed, all accepted in %6.2f s, run %6.1f s; sbatch %d, squeue %d, sacct %d, scontrol %d, scancel %d\n",
                name, rc, passed, n, last - first, wall, sb, sq + 0, sa + 0, sc + 0, ca + 0
        }' "$dir/calls.log"
    python3 - "$dir/cpu.json" "$N" <<'PY'
import json, sys
m, n = json.load(open(sys.argv[1])), int(sys.argv[2])
own, total = m["own_cpu"], m["total_cpu"]
print("             host CPU %.2f s = %.2f ms/job (flowrun and the plugin); Slurm client commands %.1f s"
      % (own, 1000 * own / n, total - own))
PY
    echo "             stats(): $stats"
}

echo "flowrun Slurm backend benchmark: $N trivial jobs, poll_interval 1s, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run_variant sbatch_20ps ''
run_variant sbatch_fast 'submit_rate = "1000/s"'
run_variant arrays 'arrays = true'
