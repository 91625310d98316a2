#!/usr/bin/env python3
"""Every repository path the tree names exists: check_paths.py [ROOT].

Files read, under ROOT (default: this script's checkout): README.md,
tests/*/README.md, schemas/*.json, schemas/README.md, CMakeLists.txt,
dev.sh, .ci/run, and every source file (.c .h .cpp .hpp .py .sh .bt .md
.txt .tsv) under bpf/, loader/, cli/ and tests/.

A path, in backticks or plain, is a word starting with one of the top-level
folders loader/, bpf/, tests/, schemas/ or cli/, made of letters, digits,
`_`, `-`, `.` and `/`, and ending in a file extension (`loader/model/engine.cpp`,
`schemas/event.schema.json`). It must exist, relative to ROOT.

Not paths of this tree, and so not checked:
- a word that continues one: preceded by a letter, digit, `/`, `.`, `-`,
  `<`, `@` or `~` (`build/bpf/gmem.bpf.o`, `../shared/x`, kernel paths such
  as `tools/testing/selftests/bpf/...`, `#include <bpf/bpf_helpers.h>`);
- a pattern or an example: followed by `<`, `*`, `{` or `$`
  (`tests/unit/test_<module>.cpp`, `loader/probe/features.*`), or with a
  component in capitals other than README (`schemas/KIND.schema.json`).

Prints each missing path as FILE:LINE: PATH and exits 1 if there is any.
"""
import os
import re
import sys

ROOTS = ("loader", "bpf", "tests", "schemas", "cli")
SOURCE_EXT = (".c", ".h", ".cpp", ".hpp", ".py", ".sh", ".bt", ".md", ".txt", ".tsv")
PATH = re.compile(r"(?<![\w./<>@~-])((?:%s)/[\w./-]*\.[A-Za-z0-9]+)(?![\w<>*{$/-])" % "|".join(ROOTS))
PLACEHOLDER = re.compile(r"(?:^|/)(?!README\b)[A-Z][A-Z_]+(?:\.|/|$)")


def files_to_read(root):
    out = ["README.md", "schemas/README.md", "CMakeLists.txt", "dev.sh", ".ci/run"]
    for name in sorted(os.listdir(os.path.join(root, "schemas"))):
        if name.endswith(".json"):
            out.append("schemas/" + name)
    for top in ("bpf", "loader", "cli", "tests"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(SOURCE_EXT):
                    out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return [f for f in dict.fromkeys(out) if os.path.isfile(os.path.join(root, f))]


def missing_paths(root):
    for name in files_to_read(root):
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                for m in PATH.finditer(line):
                    path = m.group(1)
                    if PLACEHOLDER.search(path):
                        continue
                    if not os.path.exists(os.path.join(root, path)):
                        yield "%s:%d: %s" % (name, lineno, path)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = list(missing_paths(root))
    for m in missing:
        print(m)
    if missing:
        print("%d path(s) named above do not exist under %s" % (len(missing), root), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
