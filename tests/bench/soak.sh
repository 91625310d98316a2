#!/usr/bin/env bash
# Soak: gmemscope daemon under a punch-hole storm for MINUTES (default 10),
# the daemon's RSS sampled every 10 s, /metrics scraped at each sample.
#   bash tests/bench/soak.sh [MINUTES] [OUTDIR]
# Prints one line per sample (seconds, RSS KiB, punches the daemon counted)
# and a summary: RSS first/last/max, duration, punches/s. Needs root and
# the build in build/. Not part of ctest.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-10}
out=${2:-build/soak}
mkdir -p "$out"
port=$((20000 + RANDOM % 20000))
gms=${GMS:-build/gmemscope}   # a copy keeps rebuilding harmless during a soak

scrape() {
    /usr/bin/python3 - "$port" <<'PY'
import sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/metrics",
                             headers={"Accept": "application/openmetrics-text; version=1.0.0"})
text = urllib.request.urlopen(req, timeout=5).read().decode()
for fam in text_string_to_metric_families(text):
    if fam.name == "gmemscope_punch_holes":
        print(int(fam.samples[0].value))
PY
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

"$gms" daemon --listen "127.0.0.1:$port" --textfile "$out/metrics.prom" --interval 5 --audit-interval 10 \
    2>"$out/daemon.log" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do scrape >/dev/null 2>&1 && break; sleep 0.2; done

"$gms" --json stress punch-storm range_pages=64 duration_ms=$((minutes * 60000)) >"$out/stress.json" &
stress=$!
echo "seconds rss_kib punches" | tee "$out/samples.txt"
start=$(date +%s)
while kill -0 "$stress" 2>/dev/null; do
    echo "$(($(date +%s) - start)) $(rss_kib "$daemon") $(scrape)" | tee -a "$out/samples.txt"
    sleep 10
done
wait "$stress"
echo "$(($(date +%s) - start)) $(rss_kib "$daemon") $(scrape)" | tee -a "$out/samples.txt"
kill -TERM "$daemon"
wait "$daemon"
trap - EXIT

/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = [list(map(int, l.split())) for l in open(f"{out}/samples.txt").read().splitlines()[1:]]
stress = json.load(open(f"{out}/stress.json"))
secs = rows[-1][0] - rows[0][0]
rss = [r[1] for r in rows]
print(f"duration {secs} s, {len(rows)} samples; daemon RSS KiB: first {rss[0]}, last {rss[-1]}, max {max(rss)}, "
      f"min {min(rss)}; after the first minute: max-min {max(rss[6:] or rss) - min(rss[6:] or rss)}")
print(f"punches: workload {stress['punches']} at {stress['ops_per_s']:.0f}/s; daemon counted "
      f"{rows[-1][2] - rows[0][2]} ({(rows[-1][2] - rows[0][2]) / max(secs, 1):.0f}/s)")
PY
tail -n 2 "$out/daemon.log"
