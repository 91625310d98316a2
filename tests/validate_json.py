#!/usr/bin/python3
"""Validate gmemscope's JSON output, one JSON document per line on stdin.

Each line is checked against the schema its shape names (schemas/README.md):
  {"error": ...}              error.schema.json
  {"hooks": [...], ...}       hooks.schema.json
  {"selftest": [...], ...}    selftest.schema.json
  {"type": "attached"}        attached.schema.json
  {"type": "summary"}         summary.schema.json
  {"type": "recorded"}        recorded.schema.json
  {"type": "stress"}          stress.schema.json
  {"type": "explain"}         explain.schema.json
  {"type": "top"|"top_stacks"} top.schema.json
  {"type": "audit"}           audit.schema.json
  {"type": "version"}         version.schema.json
  {"type": <event or drops>}  event.schema.json
or, with --schema FILE, every line against FILE.

--expect KIND[,KIND...] also fails a line whose kind (the schema file's
stem: event, hooks, error, ...) is not listed, so that a test expecting
events is not satisfied by a valid error document.

Prints each failure as "line N: $.json.path: message" on stderr and exits
1 if any line failed, 2 if no line was read (or on bad usage), 0 otherwise.
$refs between schema files resolve from the schemas directory, offline.

Runs on Debian 12's python3-jsonschema (4.10, RefResolver) and on newer
releases (the referencing registry).
"""

import argparse
import json
import os
import sys

import jsonschema
from jsonschema import Draft202012Validator

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SCHEMAS = os.path.join(HERE, os.pardir, "schemas")

# Document kinds whose "type" names them; any other "type" is an event line.
TYPED_DOCUMENTS = {"attached", "summary", "recorded", "stress", "explain", "top", "audit", "version"}


def load_schemas(directory):
    """Every *.schema.json in directory, by file name and by $id."""
    by_file, by_id = {}, {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".schema.json"):
            continue
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
        Draft202012Validator.check_schema(schema)
        if "$id" not in schema:
            raise ValueError(f"{path}: no $id")
        by_file[name] = schema
        by_id[schema["$id"]] = schema
    return by_file, by_id


def make_validator(schema, by_id):
    """A Draft 2020-12 validator whose $refs resolve among by_id only."""
    try:  # jsonschema >= 4.18 resolves through a referencing.Registry
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        registry = Registry().with_resources(
            (uri, Resource.from_contents(s, default_specification=DRAFT202012))
            for uri, s in by_id.items())
        return Draft202012Validator(schema, registry=registry)
    except (ImportError, TypeError):  # Debian 12's 4.10: RefResolver and a store
        resolver = jsonschema.RefResolver(
            base_uri=schema.get("$id", ""), referrer=schema, store=dict(by_id))
        return Draft202012Validator(schema, resolver=resolver)


def kind_of(doc, event_types):
    """Which document a line is, by its shape; None when it cannot tell."""
    if not isinstance(doc, dict):
        return None
    if "error" in doc:
        return "error"
    if "hooks" in doc:
        return "hooks"
    if "selftest" in doc:
        return "selftest"
    t = doc.get("type")
    if t == "top_stacks":
        return "top"
    if t in TYPED_DOCUMENTS:
        return t
    if t in event_types:
        return "event"
    return None


def json_path(error):
    path = "$"
    for p in error.absolute_path:
        path += f"[{p}]" if isinstance(p, int) else f".{p}"
    return path


def leaf_errors(error):
    """The errors worth reading: for anyOf/oneOf, the branches' own errors."""
    if error.context:
        for sub in error.context:
            yield from leaf_errors(sub)
    else:
        yield error


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema", help="validate every line against this schema file")
    ap.add_argument("--schemas-dir", default=DEFAULT_SCHEMAS,
                    help="directory of *.schema.json (default: the repository's schemas/)")
    ap.add_argument("--expect", help="comma-separated document kinds every line must be")
    args = ap.parse_args()

    try:
        by_file, by_id = load_schemas(args.schemas_dir)
        forced = None
        if args.schema:
            with open(args.schema, encoding="utf-8") as f:
                forced = json.load(f)
            Draft202012Validator.check_schema(forced)
            by_id.setdefault(forced.get("$id", ""), forced)
    except (OSError, ValueError, jsonschema.SchemaError) as e:
        print(f"validate_json: {e}", file=sys.stderr)
        return 2
    if forced is None and "event.schema.json" not in by_file:
        print(f"validate_json: no event.schema.json in {args.schemas_dir}", file=sys.stderr)
        return 2

    event_types = set()
    if "event.schema.json" in by_file:
        defs = by_file["event.schema.json"]["$defs"]
        event_types = set(defs["event_type"]["enum"]) | {"drops"}
    expect = set(args.expect.split(",")) if args.expect else None
    validators = {}

    def validator_for(kind):
        if kind not in validators:
            validators[kind] = make_validator(
                forced if forced is not None else by_file[f"{kind}.schema.json"], by_id)
        return validators[kind]

    lines = failed = 0
    for number, text in enumerate(sys.stdin, 1):
        lines += 1
        problems = []
        try:
            doc = json.loads(text)
        except ValueError as e:
            problems.append(f"not JSON ({e}): {text.strip()[:120]!r}")
            doc = None
        if not problems:
            kind = kind_of(doc, event_types)
            if expect is not None and kind not in expect:
                problems.append(f"document kind {kind or 'unrecognised'}, expected "
                                f"{' or '.join(sorted(expect))}")
            if forced is not None:
                kind = "forced"
            if kind is None:
                problems.append("cannot tell which document this is (no \"error\", no "
                                f"\"hooks\", type {doc.get('type') if isinstance(doc, dict) else None!r})")
            else:
                for top in sorted(validator_for(kind).iter_errors(doc), key=lambda e: list(e.absolute_path)):
                    for e in leaf_errors(top):
                        problems.append(f"{json_path(e)}: {e.message}")
        if problems:
            failed += 1
            for p in problems:
                print(f"line {number}: {p}", file=sys.stderr)
    if lines == 0:
        print("validate_json: no line on stdin", file=sys.stderr)
        return 2
    print(f"validate_json: {lines} lines, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
