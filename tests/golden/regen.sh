#!/usr/bin/env bash
# Re-records the golden recordings on this machine's kernel with the
# built-in workload, and rewrites the expected outputs from them.  Run it
# only when the recording format or the workload changes; when only the
# outputs change, run it with --outputs to keep the recordings.
set -euo pipefail
cd "$(dirname "$0")"
GMS=../../build/gmemscope
if [[ "${1:-}" != --outputs ]]; then
    $GMS record -o rebind.rec -- $GMS stress rebind pages=32 punch_pages=5 rebind_offset=1M
    $GMS record -o convert.rec -- $GMS stress convert pages=4
    $GMS record -o storm.rec -- $GMS stress punch-storm range_pages=16 punch_pages=2 count=200
fi
for r in rebind convert storm; do
    $GMS report -i $r.rec > $r.report.txt
done
$GMS explain -i rebind.rec --gfn 0x40002 > rebind.explain-gfn.txt
pfn=$(python3 - <<'PY'
import json, subprocess
out = subprocess.run(["../../build/gmemscope", "--json", "explain", "-i", "rebind.rec", "--gfn", "0x40003"],
                     capture_output=True, text=True).stdout
tl = json.loads(out)["timeline"]
print([t for t in tl if "-> pfn" in t["what"]][0]["what"].split("-> pfn ")[1].split()[0])
PY
)
echo "$pfn" > rebind.pfn
$GMS explain -i rebind.rec --pfn "$pfn" > rebind.explain-pfn.txt
