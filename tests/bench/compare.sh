#!/usr/bin/env bash
# Overhead of gmemscope (record, trace, top) next to bpftrace and perf on
# the same tracepoints, over the built-in workload's storms.
#   bash tests/bench/compare.sh [--reps N] [--seconds S] [--storms A,B]
#                               [--tools A,B] [--json FILE] [--keep DIR]
# Options and figures: tests/bench/compare.py's docstring and
# tests/bench/README.md. Run as root on Debian 12: installs bpftrace and
# linux-perf when missing (project machines start fresh) and builds
# build/gmemscope when it is not there.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v bpftrace >/dev/null || missing+=(bpftrace)
command -v perf >/dev/null || missing+=(linux-perf)
command -v cmake >/dev/null || missing+=(cmake)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ ! -x build/gmemscope ]]; then
    cmake -S . -B build >/dev/null && cmake --build build -j"$(nproc)" >/dev/null
fi
exec /usr/bin/python3 tests/bench/compare.py "$@"
