#!/usr/bin/env python3
"""Checks `gmemscope --json hooks --selftest` from a VM-lane guest against
tests/vm/expect/<kernel>, exactly: the same hooks, each with the same
verdict and mechanism, and for a hook without a trigger or a mechanism,
the reason it must give.

    expect.py EXPECT-FILE SELFTEST-JSON      exit 0 if they match, else 1
    expect.py --write SELFTEST-JSON          prints an expect file of it

An expect file has one hook a line, `#` starts a comment:

    HOOK VERDICT [MECHANISM[->FALLBACK]] [-- WHY]

VERDICT is fired, replaced, no-trigger or unavailable (not-fired is never
expected); MECHANISM is the one the self-test chose (none for unavailable);
WHY is a piece of text the hook's why_no_trigger (no-trigger) or the
hooks document's reason (unavailable) must contain.
"""
import json
import sys


def describe(h):
    """(verdict, mechanism, why) of one hook of the self-test document."""
    mech = h.get("mechanism", "")
    if h["verdict"] == "replaced":
        mech += "->" + h.get("fallback", "")
    return h["verdict"], mech, h.get("why_no_trigger", "")


def parse(path):
    want = {}
    for n, line in enumerate(open(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, why = line.partition(" -- ")
        words = spec.split()
        if len(words) not in (2, 3):
            sys.exit(f"{path}:{n}: want HOOK VERDICT [MECHANISM] [-- WHY]")
        hook, verdict = words[0], words[1]
        want[hook] = (verdict, words[2] if len(words) == 3 else "", why.strip(), n)
    return want


def main():
    if sys.argv[1:2] == ["--write"]:
        doc = json.load(open(sys.argv[2]))
        for h in doc["selftest"]:
            verdict, mech, why = describe(h)
            line = f"{h['hook']} {verdict}" + (f" {mech}" if mech else "")
            if verdict in ("no-trigger", "unavailable"):
                line += f" -- {why}"
            print(line)
        return 0
    expect_path, doc_path = sys.argv[1:3]
    want = parse(expect_path)
    doc = json.load(open(doc_path))
    got = {h["hook"]: describe(h) for h in doc["selftest"]}
    errors = []
    for hook in sorted(set(want) | set(got)):
        if hook not in got:
            errors.append(f"{hook}: expected (line {want[hook][3]}), not in the self-test")
            continue
        verdict, mech, why = got[hook]
        if hook not in want:
            errors.append(f"{hook}: {verdict} {mech}, not expected: add it to {expect_path}")
            continue
        w_verdict, w_mech, w_why, n = want[hook]
        if (verdict, mech) != (w_verdict, w_mech):
            errors.append(f"{hook}: {verdict} {mech}, expected {w_verdict} {w_mech} (line {n})"
                          + (f": {why}" if why else ""))
        elif w_why and w_why not in why:
            errors.append(f"{hook}: {verdict} because '{why}', expected a reason with '{w_why}' (line {n})")
    for e in errors:
        print(e)
    if errors:
        return 1
    fired = sum(1 for v in got.values() if v[0] in ("fired", "replaced"))
    print(f"{len(got)} hooks: {fired} fired, {len(got) - fired} without a trigger or a mechanism, as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
