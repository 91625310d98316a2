#!/usr/bin/python3
"""Overhead of gmemscope next to bpftrace and perf on the same tracepoints.

Each storm of the built-in workload runs untraced and under every tool,
REPS times; within a repetition the tools take turns (in an order rotated
each repetition) so that drift in the machine's load hits them all alike,
and each traced run is divided by the untraced run of the same repetition.

  tests/bench/compare.sh [--reps N] [--seconds S] [--storms A,B] [--tools A,B]
                         [--json FILE] [--gmemscope PATH] [--baseline PATH]
                         [--keep DIR]

Tools (--tools, default all):
  none            the workload alone
  record          gmemscope record -o FILE -- CMD
  trace           gmemscope --json trace -- CMD > FILE
  top             gmemscope --json top --batch -- CMD (counts in the kernel)
  bpftrace        tests/bench/print.bt: one line per event into a file
  bpftrace-count  tests/bench/count.bt: counts and histograms in maps
  perf            perf record -e <the same tracepoints> -o FILE -- CMD
  record@base, trace@base, top@base
                  the same with the --baseline binary (another build, e.g.
                  main's), to compare two builds in one interleaved run

Storms (--storms, default all): punch-storm and punch-empty (range_pages=64),
churn, each for SECONDS; convert, which has no duration of its own, as a
shell loop of SECONDS*70 whole runs. Throughput is the workload's own:
sum(ops) / sum(elapsed_ns), so for convert it times the conversion ioctls
only, not the VM set-up around them.

Every tool is limited to CMD and its children: gmemscope and perf by
`-- CMD`, bpftrace by -c and a map of pids fed by sched_process_fork (what
gmemscope's task.bpf.c does). Events seen and lost come from each tool's own
account: record's "N events received, M lost", trace's final `drops` line,
top's last frame (punches + invalidated pages + faults counted in the
kernel, records lost), bpftrace's printed lines or counted events and its
"Lost N events" warnings, perf's SAMPLE and LOST_SAMPLES counts from
`perf report --stats`.

Prints a table; --json FILE also writes one JSON document (one line),
described by schemas/bench.schema.json. Needs root, /dev/kvm, bpftrace and
perf (compare.sh installs them).
"""

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

STORMS = {
    "punch-storm": ["punch-storm", "range_pages=64"],
    "punch-empty": ["punch-empty", "range_pages=64"],
    "churn": ["churn"],
    "convert": ["convert"],
}
TOOLS = ["none", "record", "trace", "top", "bpftrace", "bpftrace-count", "perf",
         "record@base", "trace@base", "top@base"]
CONVERT_RUNS_PER_S = 70  # an untraced convert run takes ~15 ms here

RECEIVED_RE = re.compile(r"(\d+) events received, (\d+) lost")
BT_LOST_RE = re.compile(r"Lost (\d+) events")
BT_LINE_RE = re.compile(rb"^\d+ \d+ \d+ \d+ ")  # print.bt's "ts cpu pid tid comm ..."
BT_COUNT_RE = re.compile(r"^@events\[\w+\]: (\d+)$", re.M)


def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()


def anon_inodefs_dev():
    """Kernel dev_t of anon_inodefs, as loader/capture/tracer.cpp computes it."""
    fd = os.eventfd(0)
    st = os.fstat(fd)
    os.close(fd)
    return os.major(st.st_dev) << 20 | os.minor(st.st_dev)


def bt_tracepoints():
    """The tracepoints print.bt attaches to: perf records the same ones."""
    with open(os.path.join(HERE, "print.bt"), encoding="utf-8") as f:
        return sorted(set(re.findall(r"^tracepoint:(\w+:\w+)", f.read(), re.M)))


def gmemscope_tracepoints(gms):
    """The tracepoints gmemscope attaches to by default on this kernel."""
    out = subprocess.run([gms, "--json", "trace", "--", "true"], capture_output=True, text=True).stdout
    tps = set()
    for line in out.splitlines():
        if '"attached"' not in line:
            continue
        for p in json.loads(line)["programs"]:
            kind, _, rest = p["attach"].partition("/")
            if kind == "tp":
                tps.add(rest.replace("/", ":"))
            elif kind == "tp_btf":  # a raw tracepoint: find its category
                hit = glob.glob(f"/sys/kernel/tracing/events/*/{rest}") or \
                    glob.glob(f"/sys/kernel/debug/tracing/events/*/{rest}")
                tps.add(f"{hit[0].split('/')[-2]}:{rest}" if hit else rest)
    return sorted(tps)


def tool_status(gms, base):
    """Per tool: None when usable, else why not."""
    status = {t: None for t in TOOLS}
    # CLI11 answers `top --help` with the main help when there is no top
    if not re.search(r"^\s+top\s", sh(gms, "--help"), re.M):
        status["top"] = "n/a (not built)"
    for t, exe in (("bpftrace", "bpftrace"), ("bpftrace-count", "bpftrace"), ("perf", "perf")):
        if not shutil.which(exe):
            status[t] = f"n/a ({exe} not installed)"
    for t in TOOLS:
        if t.endswith("@base") and not base:
            status[t] = "n/a (no --baseline)"
    return status


def workload_script(gms, storm, seconds, path, out):
    """The traced command: writes the stress JSON to `out`, not stdout,
    which trace shares with it. exec keeps the pid bpftrace's -c knows."""
    args = " ".join([gms, "--json", "stress"] + STORMS[storm])
    if storm == "convert":
        runs = max(1, round(seconds * CONVERT_RUNS_PER_S))
        body = (f"i=0\nwhile [ $i -lt {runs} ]; do\n"
                f"    {args} >>{out} || exit 1\n    i=$((i + 1))\ndone\n")
    else:
        body = f"exec {args} duration_ms={round(seconds * 1000)} >{out}\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(body)


def run(argv, stdout_path, timeout):
    """Runs argv in its own process group; (exit code, stderr, wall s)."""
    t0 = time.monotonic()
    with open(stdout_path, "wb") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            return -1, "timed out", time.monotonic() - t0
    return p.returncode, err.decode(errors="replace"), time.monotonic() - t0


def stress_throughput(path):
    """sum(ops) / sum(elapsed) over the stress lines of one run."""
    ops = ns = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("{") and '"stress"' in line:
                d = json.loads(line)
                ops += d["ops"]
                ns += d["elapsed_ns"]
    return ops * 1e9 / ns if ns else None


def last_drops(path):
    """received and lost from the final `drops` line of trace --json."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 65536))
        tail = f.read().decode(errors="replace").splitlines()
    for line in reversed(tail):
        if '"type":"drops"' in line:
            d = json.loads(line)
            return d["received"], sum(d["dropped"].values())
    return None, None


def top_counts(path):
    """Events counted in the kernel (punches, invalidated pages, faults) and
    records lost, from top's last frame: the whole run."""
    last = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if '"type":"top"' in line:
                last = line
    if last is None:
        return None, None
    d = json.loads(last)
    secs = d.get("seconds", d.get("interval_s", 0))
    events = 0
    for row in d["rows"]:
        for name in ("punches", "invalidated_pages", "faults"):
            events += row[name] if name in row else round(row[f"{name}_per_s"] * secs)
    return events, d.get("lost")


def perf_stats(data):
    """(samples, lost samples) from perf report --stats: the aggregated
    SAMPLE count and the per-event LOST_SAMPLES counts, which add up both
    overwritten chunks (PERF_RECORD_LOST) and dropped samples."""
    text = sh("perf", "report", "-i", data, "--stats")
    samples = lost = 0
    per_event = False
    for line in text.splitlines():
        if line.strip().endswith("stats:") and not line.startswith("Aggregated"):
            per_event = True
        m = re.match(r"\s*(SAMPLE|LOST_SAMPLES) events:\s+(\d+)", line)
        if m and m.group(1) == "SAMPLE" and not per_event:
            samples = int(m.group(2))
        elif m and m.group(1) == "LOST_SAMPLES" and per_event:
            lost += int(m.group(2))
    return samples, lost


def measure(tool, storm, ctx, rundir):
    """One run of one storm under one tool: a dict for the `runs` list."""
    os.makedirs(rundir, exist_ok=True)
    cmd, out = os.path.join(rundir, "cmd.sh"), os.path.join(rundir, "stress.json")
    workload_script(ctx.gms, storm, ctx.seconds, cmd, out)
    target = ["/bin/sh", cmd]
    tool_out = os.path.join(rundir, "tool.out")
    kind, gms = tool, ctx.gms
    if tool.endswith("@base"):
        kind, gms = tool[:-len("@base")], ctx.base
    argv = {
        "none": target,
        "record": [gms, "record", "-o", os.path.join(rundir, "x.rec"), "--"] + target,
        "trace": [gms, "--json", "trace", "--"] + target,
        # no -d: the command's exit ends top, and a duration made the session
        # loop poll with a zero timeout (loader/capture/session.cpp) at the time of writing
        "top": [gms, "--json", "top", "--batch", "--"] + target,
        "bpftrace": ["bpftrace", "-o", tool_out, "-c", " ".join(target),
                     os.path.join(HERE, "print.bt"), str(ctx.anon_dev)],
        "bpftrace-count": ["bpftrace", "-o", tool_out, "-c", " ".join(target),
                           os.path.join(HERE, "count.bt"), str(ctx.anon_dev)],
        "perf": ["perf", "record", "-e", ",".join(ctx.perf_events),
                 "-o", os.path.join(rundir, "perf.data"), "--"] + target,
    }[kind]
    stdout_path = tool_out if kind in ("trace", "top") else os.path.join(rundir, "stdout")
    rc, err, wall = run(argv, stdout_path, timeout=ctx.seconds * 20 + 120)
    with open(os.path.join(rundir, "stderr"), "w", encoding="utf-8") as f:
        f.write(err)
    result = {"storm": storm, "tool": tool, "ops_per_s": None, "events": None, "lost": None,
              "wall_s": round(wall, 3)}
    ops = stress_throughput(out) if os.path.exists(out) else None
    if rc != 0 or ops is None:
        last = err.strip().splitlines()[-1:] or ["no stress output"]
        result["error"] = f"exit {rc}: {last[0][:200]}"
        return result
    result["ops_per_s"] = ops
    if kind == "record":
        m = RECEIVED_RE.findall(err)
        if m:
            result["events"], result["lost"] = int(m[-1][0]), int(m[-1][1])
    elif kind == "top":
        result["events"], result["lost"] = top_counts(tool_out)
    elif kind == "trace":
        result["events"], result["lost"] = last_drops(tool_out)
    elif tool in ("bpftrace", "bpftrace-count"):
        with open(tool_out, "rb") as f:
            data = f.read()
        if tool == "bpftrace":
            result["events"] = sum(1 for l in data.splitlines() if BT_LINE_RE.match(l))
        else:
            result["events"] = sum(int(n) for n in BT_COUNT_RE.findall(data.decode(errors="replace")))
        result["lost"] = sum(int(n) for n in BT_LOST_RE.findall(err + data.decode(errors="replace")))
    elif tool == "perf":
        result["events"], result["lost"] = perf_stats(os.path.join(rundir, "perf.data"))
    return result


def summarize(runs, storms, tools, status):
    """Per storm and tool: throughput, ratio to the same repetition's
    untraced run, events and losses."""
    base = {(r["rep"], r["storm"]): r["ops_per_s"] for r in runs if r["tool"] == "none"}
    for r in runs:
        b = base.get((r["rep"], r["storm"]))
        r["ratio"] = r["ops_per_s"] / b if r["ops_per_s"] and b else None
    results = []
    for storm in storms:
        for tool in tools:
            mine = [r for r in runs if r["storm"] == storm and r["tool"] == tool]
            ok = [r for r in mine if r["ops_per_s"] is not None]
            ops = [r["ops_per_s"] for r in ok]
            ratios = [r["ratio"] for r in ok if r["ratio"] is not None]
            events = [r["events"] for r in ok if r["events"] is not None]
            lost = [r["lost"] for r in ok if r["lost"] is not None]
            entry = {
                "storm": storm, "tool": tool, "runs": len(ok), "failed": len(mine) - len(ok),
                "ops_per_s": {"median": statistics.median(ops), "min": min(ops)} if ops else None,
                "ratio": {"median": statistics.median(ratios), "min": min(ratios)} if ratios else None,
                "throughput_loss": 1 - statistics.median(ratios) if ratios else None,
                "events_per_run": statistics.median(events) if events else None,
                "lost_total": sum(lost) if lost else None,
            }
            if status[tool]:
                entry["note"] = status[tool]
            elif len(mine) > len(ok):
                entry["note"] = next(r["error"] for r in mine if "error" in r)
            results.append(entry)
    return results


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def print_table(doc):
    convert = f" (convert: {doc['convert_runs']} runs)" if any(
        e["storm"] == "convert" for e in doc["results"]) else ""
    print(f"\nkernel {doc['kernel']}, {doc['cpus']} CPUs; {doc['reps']} repetitions of "
          f"{doc['seconds']} s{convert}; load average "
          f"{' '.join(map(str, doc['load_start']))} at start, "
          f"{' '.join(map(str, doc['load_end']))} at end")
    print(f"{'storm':12} {'tool':15} {'ops/s med':>11} {'ops/s min':>11} {'ratio med':>9} "
          f"{'ratio min':>9} {'loss':>6} {'events/run':>11} {'lost':>9}  note")
    storm = None
    for e in doc["results"]:
        if e["runs"] == 0:
            print(f"{e['storm'] if e['storm'] != storm else '':12} {e['tool']:15} "
                  f"{e.get('note', 'no successful run')}")
            storm = e["storm"]
            continue
        o, r = e["ops_per_s"], e["ratio"] or {}
        loss = None if e["throughput_loss"] is None else 100 * e["throughput_loss"]
        note = e.get("note", "")
        if e["failed"]:
            note = f"{e['failed']} failed: {note}"
        print(f"{e['storm'] if e['storm'] != storm else '':12} {e['tool']:15} {o['median']:11.0f} "
              f"{o['min']:11.0f} {fmt(r.get('median'), '9.3f'):>9} {fmt(r.get('min'), '9.3f'):>9} "
              f"{fmt(loss, '5.1f') + '%' if loss is not None else '-':>6} "
              f"{fmt(e['events_per_run'], '11.0f'):>11} {fmt(e['lost_total'], '9d'):>9}  {note}")
        storm = e["storm"]


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as f:
        return [float(x) for x in f.read().split()[:3]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--storms", default=",".join(STORMS))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", metavar="FILE", help="also write the results as one JSON document")
    ap.add_argument("--gmemscope", default=os.path.join(ROOT, "build", "gmemscope"))
    ap.add_argument("--baseline", metavar="PATH", help="another gmemscope build for the @base tools")
    ap.add_argument("--keep", metavar="DIR", help="keep every run's files under DIR")
    args = ap.parse_args()
    storms, tools = args.storms.split(","), args.tools.split(",")
    bad = [s for s in storms if s not in STORMS] + [t for t in tools if t not in TOOLS]
    if bad or args.reps < 1 or args.seconds <= 0:
        ap.error(f"unknown storm or tool, or bad count: {' '.join(bad)}")
    if "none" not in tools:
        tools.insert(0, "none")  # every ratio needs the untraced run

    work = args.keep or tempfile.mkdtemp(prefix="gms-bench-")
    os.makedirs(work, exist_ok=True)

    # a private copy: the tree's build/ may be rebuilt while this runs
    ctx = types.SimpleNamespace(gms=os.path.join(work, "gmemscope"), seconds=args.seconds,
                                anon_dev=anon_inodefs_dev())
    shutil.copy2(args.gmemscope, ctx.gms)
    ctx.base = None
    if args.baseline:
        ctx.base = os.path.join(work, "gmemscope-base")
        shutil.copy2(args.baseline, ctx.base)
    tracepoints = bt_tracepoints()
    # sched_process_fork only follows children, which perf does by inheritance
    ctx.perf_events = [t for t in tracepoints if t != "sched:sched_process_fork"]
    gms_tps = gmemscope_tracepoints(ctx.gms)
    if set(gms_tps) != set(tracepoints):
        print(f"warning: gmemscope attaches {gms_tps}, print.bt/count.bt {tracepoints}", file=sys.stderr)
    status = tool_status(ctx.gms, ctx.base)

    doc = {
        "type": "bench",
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "gmemscope": args.gmemscope,
        "baseline": args.baseline,
        # the tree may be dirty and rebuilt often: the binary's time says which build ran
        "gmemscope_built": datetime.datetime.fromtimestamp(
            os.stat(args.gmemscope).st_mtime, datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": sh("git", "-C", ROOT, "rev-parse", "HEAD") or None,
        "bpftrace_version": sh("bpftrace", "--version") if shutil.which("bpftrace") else None,
        "perf_version": sh("perf", "--version") if shutil.which("perf") else None,
        "reps": args.reps, "seconds": args.seconds,
        "convert_runs": max(1, round(args.seconds * CONVERT_RUNS_PER_S)),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_start": loadavg(),
        "tracepoints": tracepoints, "gmemscope_tracepoints": gms_tps,
        "unavailable": {t: why for t, why in status.items() if why and t in tools},
    }
    print(f"load average at start: {' '.join(map(str, doc['load_start']))}", file=sys.stderr)

    runs = []
    usable = [t for t in tools if not status[t]]
    for rep in range(args.reps):
        order = usable[rep % len(usable):] + usable[:rep % len(usable)]
        for storm in storms:
            for tool in order:
                rundir = os.path.join(work, f"{rep}-{storm}-{tool}")
                r = measure(tool, storm, ctx, rundir)
                r["rep"] = rep
                runs.append(r)
                print(f"rep {rep + 1}/{args.reps} {storm:12} {tool:15} "
                      f"{fmt(r['ops_per_s'], '.0f', r.get('error', '')):>10} ops/s"
                      f"  events {r['events']} lost {r['lost']}", file=sys.stderr)
                if not args.keep:
                    shutil.rmtree(rundir)

    doc["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc["load_end"] = loadavg()
    doc["results"] = summarize(runs, storms, tools, status)
    doc["runs"] = runs
    print_table(doc)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, sort_keys=True) + "\n")
    if not args.keep:
        shutil.rmtree(work)
    return 1 if any(e["failed"] for e in doc["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
