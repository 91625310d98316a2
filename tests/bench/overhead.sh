#!/usr/bin/env bash
# Overhead of gmemscope on the built-in workload's storms: each storm runs
# untraced and under `gmemscope record`, alternating, REPS times, in the
# same invocation; prints throughput and the traced/untraced ratio.
#   bash tests/bench/overhead.sh [REPS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
GMS=build/gmemscope
REPS=${1:-5}
MS=$(( ${2:-3} * 1000 ))
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

ops() { python3 -c 'import json,sys
for l in sys.stdin:
    l = l.strip()
    if l.startswith("{") and "\"stress\"" in l: print(json.loads(l)["ops_per_s"])'; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf "%-14s %14s %14s %8s %8s %12s\n" storm untraced/s record/s median min lost
for storm in "punch-storm range_pages=64" "punch-empty range_pages=64"; do
    : >"$OUT/base"; : >"$OUT/rec"; : >"$OUT/ratio"; lost=0
    for _ in $(seq "$REPS"); do
        b=$($GMS --json stress $storm duration_ms=$MS | ops)
        r=$($GMS record -o "$OUT/x.rec" -- $GMS --json stress $storm duration_ms=$MS 2>"$OUT/err" | ops)
        l=$(grep -o '[0-9]* lost' "$OUT/err" | grep -o '[0-9]*')
        lost=$((lost + l))
        echo "$b" >>"$OUT/base"; echo "$r" >>"$OUT/rec"
        python3 -c "print($r / $b)" >>"$OUT/ratio"
    done
    printf "%-14s %14.0f %14.0f %8.3f %8.3f %12s\n" "${storm%% *}" "$(median <"$OUT/base")" \
        "$(median <"$OUT/rec")" "$(median <"$OUT/ratio")" "$(sort -g "$OUT/ratio" | head -1)" "$lost"
done
