#!/usr/bin/env bash
# Overhead of gmemscope on the built-in workload's storms: each storm runs
# untraced and under `gmemscope record`, alternating, REPS times, in the
# same invocation; prints throughput and the traced/untraced ratio.
#   bash tests/bench/overhead.sh [REPS] [SECONDS]
# The short form of compare.sh, which also measures trace, top, bpftrace
# and perf (tests/bench/README.md).
set -euo pipefail
exec bash "$(dirname "$0")/compare.sh" --reps "${1:-5}" --seconds "${2:-3}" \
    --storms punch-storm,punch-empty --tools none,record
