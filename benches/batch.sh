#!/usr/bin/env bash
# Benchmark of the LSF and Grid Engine backends: N trivial jobs (default 1000) through
# `flowrun run`, one submission per job and as arrays, on
#   lsf         the LSF emulator of tests/cluster/lsf-emu (unprivileged; a fresh emulated
#               cluster of 16 slots per variant)
#   gridengine  the real single-node Grid Engine of tests/cluster/sge-up (root; takes its lock)
# For each variant: the time from the first submit call starting to the last one returning
# (every job accepted), the run's wall time, the number of each scheduler command called
# (counted by wrapper scripts on PATH), and the host's CPU per job: flowrun's own threads, the
# plugin's included, sampled by benches/measure.py. The scheduler commands flowrun ran (and,
# for LSF, the emulator's daemon, which is not flowrun's child) are not counted in it; the
# commands' CPU is printed apart.
#
#   benches/batch.sh lsf|gridengine [N]
#       (needs `cargo build -p flowrun -p flowrun-plugin-lsf -p flowrun-plugin-gridengine`)
#
# The machine is small and shared: run it while nothing else compiles, or read the figures
# as upper bounds.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
KIND=${1:?usage: benches/batch.sh lsf|gridengine [N]}
N=${2:-1000}
BIN_DIR=${FLOWRUN_BIN_DIR:-$ROOT/target/debug}
FLOWRUN=$BIN_DIR/flowrun
[[ -x $FLOWRUN && -f $BIN_DIR/libflowrun_plugin_$KIND.so ]] ||
    { echo "build first: cargo build -p flowrun -p flowrun-plugin-$KIND" >&2; exit 2; }

WORK=$(mktemp -d /var/tmp/flowrun-batch-bench-XXXXXX)
case $KIND in
lsf)
    COMMANDS=(bsub bjobs bkill)
    export PATH=$ROOT/tests/cluster/lsf-emu/bin:$PATH
    # Each variant's emulated cluster is stopped after it (and here, after a failure).
    trap '[[ -z ${LSF_EMU_DIR:-} ]] || lsf-emu-ctl stop >/dev/null 2>&1; rm -rf "$WORK"' EXIT
    ;;
gridengine)
    COMMANDS=(qsub qstat qacct qdel)
    "$ROOT/tests/cluster/sge-up" >/dev/null
    exec 9>/var/tmp/flowrun-sge.lock
    flock 9
    trap 'rm -rf "$WORK"' EXIT
    ;;
*) echo "unknown kind $KIND (lsf or gridengine)" >&2; exit 2 ;;
esac
SUBMIT=${COMMANDS[0]}

WRAP=$WORK/wrappers
mkdir -p "$WRAP"
for cmd in "${COMMANDS[@]}"; do
    real=$(command -v "$cmd")
    # Logs when each call starts and ends (to time "all accepted" and to count calls).
    cat >"$WRAP/$cmd" <<W
#!/bin/sh
echo "\$(date +%s.%N) $cmd-start" >>"\$FLOWRUN_BENCH_LOG"
'$real' "\$@"
rc=\$?
echo "\$(date +%s.%N) $cmd-end" >>"\$FLOWRUN_BENCH_LOG"
exit \$rc
W
    chmod +x "$WRAP/$cmd"
done

run_variant() {
    local name=$1 config=$2 dir=$WORK/$1
    mkdir -p "$dir"
    if [[ $KIND == lsf ]]; then
        # A fresh emulated cluster per variant, so no variant pays for another's history.
        export LSF_EMU_DIR=$dir/emu
        lsf-emu-ctl set SLOTS 16 >/dev/null
    fi
    {
        printf '[flow]\nname = "bench_%s"\ndefault_backend = "b"\n\n[backends.b]\nkind = "%s"\npoll_interval = "1s"\n%s\n' \
            "$name" "$KIND" "$config"
        for ((i = 0; i < N; i++)); do printf '[[job]]\nname = "j%d"\ncmd = "true"\n' "$i"; done
    } >"$dir/flow.toml"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    FLOWRUN_BENCH_LOG=$dir/calls.log PATH="$WRAP:$PATH" \
        python3 "$ROOT/benches/measure.py" "$dir/cpu.json" \
        "$FLOWRUN" run "$dir/flow.toml" --out "$dir/out" -q >"$dir/stdout" 2>"$dir/stderr" || rc=$?
    t1=$(date +%s.%N)
    local passed
    passed=$(grep -o '"passed": *[0-9]*' "$dir/out/results.json" | head -n1 | grep -o '[0-9]*$')
    awk -v name="$name" -v submit="$SUBMIT" -v rc="$rc" -v passed="$passed" -v n="$N" \
        -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" '
        $2 == submit "-start" { if (!first) first = $1 }
        $2 == submit "-end" { last = $1 }
        $2 ~ /-start$/ { c = $2; sub(/-start$/, "", c); calls[c]++; if (!(c in seen)) { seen[c] = 1; order[++k] = c } }
        END {
            printf "%-10s exit %s, %s/%s passed, all accepted in %6.2f s, run %6.1f s;", name, rc, passed, n, last - first, wall
            for (i = 1; i <= k; i++) printf " %s %d", order[i], calls[order[i]]
            printf "\n"
        }' "$dir/calls.log"
    python3 - "$dir/cpu.json" "$N" <<'PY'
import json, sys
m, n = json.load(open(sys.argv[1])), int(sys.argv[2])
own, total = m["own_cpu"], m["total_cpu"]
print("           host CPU %.2f s = %.2f ms/job (flowrun and the plugin); scheduler commands %.1f s"
      % (own, 1000 * own / n, total - own))
PY
    if [[ $KIND == lsf ]]; then
        lsf-emu-ctl stop >/dev/null
        unset LSF_EMU_DIR
    fi
}

echo "flowrun $KIND backend benchmark: $N trivial jobs, poll_interval 1s, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run_variant one_each 'submit_rate = "1000/s"'
run_variant arrays 'arrays = true'
