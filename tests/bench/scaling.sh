#!/usr/bin/env bash
# Whether reading a recording grows linearly with it: records
# `gms_load vms N` (N VM lifetimes one after another) for each N, then
# times report, explain (of gfn 0x40000, which every one of those VMs
# has) and export on each recording, and prints per command: wall and
# CPU (user + sys) seconds, CPU microseconds per record, max RSS.
#   bash tests/bench/scaling.sh [--gmemscope BIN] [--dir DIR] [--reuse] [N...]
# N defaults to 1000 2500 5000 10000 20000. --gmemscope reads with another
# binary (a build of an earlier commit: before and after on the same
# recordings); --reuse reads the recordings DIR already holds. As root,
# after a build of gmemscope and gms_load (tests/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

reader=build/gmemscope
dir=/tmp/gms-scaling
reuse=0
sizes=()
while (($#)); do
    case $1 in
    --gmemscope) reader=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --reuse) reuse=1; shift ;;
    -*) echo "usage: $0 [--gmemscope BIN] [--dir DIR] [--reuse] [N...]" >&2; exit 2 ;;
    *) sizes+=("$1"); shift ;;
    esac
done
((${#sizes[@]})) || sizes=(1000 2500 5000 10000 20000)
mkdir -p "$dir"
out=$(mktemp -d)   # what the commands print, thrown away
trap 'rm -rf "$out"' EXIT

# The recording's record count, as `report --json` counts its events.
records_of() {
    "$reader" report -i "$1" --json | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["events"].values()))'
}

# timed NAME N RECORDS CMD...: one line of figures.
timed() {
    local name=$1 n=$2 records=$3
    shift 3
    /usr/bin/time -o "$out/time" -f '%e %U %S %M' "$@" >"$out/$name.out" 2>/dev/null ||
        echo "$name of $n VMs failed (exit $?)" >&2
    read -r wall user sys rss_kib <"$out/time"
    awk -v name="$name" -v n="$n" -v rec="$records" -v wall="$wall" -v user="$user" -v sys="$sys" -v rss="$rss_kib" \
        'BEGIN { cpu = user + sys; printf "%-8s %6d %8d %8.2f %8.2f %10.2f %8.1f\n", name, n, rec, wall, cpu, cpu / rec * 1e6, rss / 1024 }'
}

printf "%-8s %6s %8s %8s %8s %10s %8s\n" command N records wall_s cpu_s cpu_us/rec rss_MiB
for n in "${sizes[@]}"; do
    rec=$dir/vms-$n.rec
    if ((!reuse)) || [[ ! -s $rec ]]; then
        build/gmemscope record -f -o "$rec" -- build/gms_load vms "$n" 2>"$dir/record-$n.log" ||
            { echo "record of $n VMs failed:" >&2; cat "$dir/record-$n.log" >&2; exit 1; }
    fi
    records=$(records_of "$rec")
    timed report "$n" "$records" "$reader" report -i "$rec"
    timed explain "$n" "$records" "$reader" explain -i "$rec" --gfn 0x40000
    timed export "$n" "$records" "$reader" export -i "$rec" -o "$out/vms-$n.json"
done
