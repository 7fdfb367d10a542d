"""Prints the reports in the AddressSanitizer / LeakSanitizer / UndefinedBehaviorSanitizer
logs of a tools/sanitize.sh run (ASan's log_path files, one per process that wrote one,
and each step's stderr, where UBSan's fatal reports go); exits 1 when there is any.

Every report counts, leaks included: under PYTHONMALLOC=malloc the interpreter itself
leaves nothing unreachable at exit, so a leak is an object or buffer that lost its last
pointer while still allocated, which in these runs is the engine's C module's doing.
"""

from __future__ import annotations

import sys
from pathlib import Path

MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
           "ERROR: UndefinedBehaviorSanitizer")


def reports(folder):
    """(log file, its text) for each log that holds a report."""
    found = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        text = path.read_text(errors="replace")
        if any(marker in text for marker in MARKERS):
            found.append((path, text))
    return found


def main(argv):
    found = reports(argv[1])
    for path, text in found:
        if path.suffix == ".stderr":  # shown as the step ran
            print(f"--- {path.name}: a report, in the output above", file=sys.stderr)
        else:
            print(f"--- {path.name}\n{text}", file=sys.stderr)
    print(f"sanitize: {len(found)} log(s) with a sanitizer report", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
