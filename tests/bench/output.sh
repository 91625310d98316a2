#!/usr/bin/env bash
# What writing the events costs the traced program: `gms_load ioctls N`
# (N failing KVM_CREATE_GUEST_MEMFD calls and N failing fallocates) runs
# untraced, under `trace --json` into a file, `trace` into a file, `trace
# --json` into a pipe and `record`, taking turns within each repetition
# (a change in load hits them all), REPS times. The program times itself
# (from its first call to its last), so gmemscope's start-up and attach
# time are not counted. Prints each run's time and, per way of tracing,
# the median ratio to the untraced run of the same repetition.
#   bash tests/bench/output.sh [--gmemscope BIN] [--reps REPS] [--calls N]
# As root, after a build of gmemscope and gms_load (tests/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

gms=build/gmemscope
load=build/gms_load
reps=5
calls=10000
while (($#)); do
    case $1 in
    --gmemscope) gms=$2; shift 2 ;;
    --gms-load) load=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --calls) calls=$2; shift 2 ;;
    *) echo "usage: $0 [--gmemscope BIN] [--gms-load BIN] [--reps REPS] [--calls N]" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run WAY: the program's elapsed_ns under that way of tracing.
run() {
    local cmd=("$load" ioctls "$calls")
    case $1 in
    untraced) "${cmd[@]}" 2>"$tmp/err" ;;
    trace-json-file) "$gms" trace --json -- "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" ;;
    trace-text-file) "$gms" trace -- "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" ;;
    trace-json-pipe) "$gms" trace --json -- "${cmd[@]}" 2>"$tmp/err" | cat >/dev/null ;;
    record) "$gms" record -f -o "$tmp/r.rec" -- "${cmd[@]}" >/dev/null 2>"$tmp/err" ;;
    esac
    sed -n 's/^elapsed_ns=//p' "$tmp/err"
}

ways=(untraced trace-json-file trace-text-file trace-json-pipe record)
for ((r = 1; r <= reps; r++)); do
    line="rep $r"
    for w in "${ways[@]}"; do
        line+=" $w=$(run "$w")"
    done
    echo "$line"
done | tee "$tmp/runs"
python3 - "$tmp/runs" <<'EOF'
import statistics, sys
rows = [dict(f.split("=") for f in l.split()[2:]) for l in open(sys.argv[1])]
print(f"{'way':<18} {'median ms':>10} {'median ratio':>13}")
for way in rows[0]:
    ms = statistics.median(int(r[way]) for r in rows) / 1e6
    ratio = statistics.median(int(r[way]) / int(r["untraced"]) for r in rows)
    print(f"{way:<18} {ms:>10.1f} {ratio:>13.2f}")
EOF
