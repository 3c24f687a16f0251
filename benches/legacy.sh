#!/usr/bin/env bash
# Benchmarks the legacy adapter: N instant jobs (`true`, argv form) through the fixture launcher
# (plugins/legacy/fixtures/fixture_launcher.c, built here with cc -O2) at poll intervals of 10 ms
# and 1 s, each run twice: with the launcher in its worker process (the adapter as shipped) and
# loaded into flowrun itself (FLOWRUN_LEGACY_IN_PROCESS_FOR_BENCHMARKS=1: the alternative, not
# offered, measured to know what the worker costs). Prints, per run:
#   - wall time;
#   - host CPU per job: flowrun's own threads (benches/measure.py; the worker and the jobs are
#     other processes and not counted; in-process, the launcher's work is flowrun's);
#   - worker CPU per job: the worker process's own user + system time (getrusage, reported in
#     the backend's stats; its jobs not counted);
#   - all CPU per job: flowrun, guardian, worker and jobs together (RUSAGE_CHILDREN);
#   - the poller's ticks and launcher poll calls (the backend's stats);
#   - the 1-minute load average when the run ended (the CPU figures are the ones to compare
#     on a busy machine).
# The worker's overhead is (host + worker CPU) with the worker minus host CPU in-process.
#
# Usage: benches/legacy.sh           (builds nothing; uses target/release/flowrun)
#   FLOWRUN_BIN=path/to/flowrun  the binary (libflowrun_plugin_legacy.so must sit beside it)
#   N=10000 REPEAT=3 INTERVALS="10ms 1s"
# Build first: cargo build --release -p flowrun -p flowrun-plugin-legacy
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOWRUN_BIN:-$ROOT/target/release/flowrun}
N=${N:-10000}
REPEAT=${REPEAT:-3}
INTERVALS=${INTERVALS:-10ms 1s}
[ -x "$BIN" ] || { echo "no flowrun binary at $BIN (cargo build --release -p flowrun -p flowrun-plugin-legacy)" >&2; exit 2; }
[ -f "$(dirname "$BIN")/libflowrun_plugin_legacy.so" ] || { echo "no libflowrun_plugin_legacy.so beside $BIN" >&2; exit 2; }
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/flowrun-legacy-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cc -O2 -shared -fPIC -I "$ROOT/plugins/legacy/include" -o "$WORK/libfixture.so" \
    "$ROOT/plugins/legacy/fixtures/fixture_launcher.c"

echo "# flowrun legacy adapter benchmark: $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# binary: $BIN, $N jobs, median of $REPEAT"

MEASURE="python3 $ROOT/benches/measure.py"
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for interval in $INTERVALS; do
    cat >"$WORK/flow-$interval.toml" <<EOF
[flow]
name = "legacy-bench"
default_backend = "legacy"
[backends.legacy]
kind = "legacy"
library = "$WORK/libfixture.so"
poll_interval = "$interval"
[[job]]
name = "j{i}"
matrix = { i = { range = [1, $N] } }
cmd = ["true"]
EOF
done

for rep in $(seq "$REPEAT"); do
    for interval in $INTERVALS; do
        for mode in worker in-process; do
            out="$WORK/out-$interval-$mode-$rep"
            inproc=0
            [ "$mode" = in-process ] && inproc=1
            XDG_DATA_HOME=$WORK/xdg FLOWRUN_SITE_PLUGIN_DIR=$WORK/site NO_COLOR=1 \
                FLOWRUN_LEGACY_IN_PROCESS_FOR_BENCHMARKS=$inproc \
                $MEASURE "$out.measure" "$BIN" -vv run "$WORK/flow-$interval.toml" --out "$out" \
                </dev/null >"$out.stdout" 2>"$out.stderr" || true
            passed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['counts']['passed'])" "$out/results.json")
            wall=$(field "$out.measure" wall); own=$(field "$out.measure" own_cpu); total=$(field "$out.measure" total_cpu)
            worker=$(sed -n 's/.*worker_cpu_s = \([0-9.]*\).*/\1/p' "$out.stderr" | tail -1)
            worker=${worker:-0}
            # Both modes report the poller's ticks and its launcher poll calls.
            ticks=$(sed -n 's/.*[ ,]ticks = \([0-9]*\).*/\1/p' "$out.stderr" | tail -1)
            polls=$(sed -n 's/.*[ ,]polls = \([0-9]*\).*/\1/p' "$out.stderr" | tail -1)
            printf '%-8s %-10s: %s jobs (%s passed) in %6.2f s; host CPU %.3f ms/job, worker CPU %.3f ms/job, all CPU %.3f ms/job; %s ticks, %s polls; load %s\n' \
                "$interval" "$mode" "$N" "$passed" "$wall" "$(echo "$own * 1000 / $N" | bc -l)" \
                "$(echo "$worker * 1000 / $N" | bc -l)" "$(echo "$total * 1000 / $N" | bc -l)" \
                "${ticks:-?}" "${polls:-?}" "$(cut -d' ' -f1 /proc/loadavg)"
            echo "$interval $mode $wall $(echo "$own * 1000 / $N" | bc -l) $(echo "$worker * 1000 / $N" | bc -l) $(echo "$total * 1000 / $N" | bc -l)" >>"$WORK/results.txt"
        done
    done
done

for interval in $INTERVALS; do
    for mode in worker in-process; do
        pick() { awk -v i="$interval" -v m="$mode" -v c="$1" '$1==i && $2==m {print $c}' "$WORK/results.txt" | median; }
        printf 'SUMMARY %-5s %-10s wall %6.2f s, host CPU %.3f ms/job, worker CPU %.3f ms/job, all CPU %.3f ms/job\n' \
            "$interval" "$mode" "$(pick 3)" "$(pick 4)" "$(pick 5)" "$(pick 6)"
    done
    w_host=$(awk -v i="$interval" '$1==i && $2=="worker" {print $4}' "$WORK/results.txt" | median)
    w_worker=$(awk -v i="$interval" '$1==i && $2=="worker" {print $5}' "$WORK/results.txt" | median)
    p_host=$(awk -v i="$interval" '$1==i && $2=="in-process" {print $4}' "$WORK/results.txt" | median)
    printf 'SUMMARY %-5s worker overhead: (host + worker) - in-process host = %.3f ms/job\n' \
        "$interval" "$(echo "$w_host + $w_worker - $p_host" | bc -l)"
done
