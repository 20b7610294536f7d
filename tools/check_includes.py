#!/usr/bin/env python3
"""The parts include nothing of each other but common/.

    tools/check_includes.py [ROOT]

Reads every .c and .h file under common/, proxy/, orchestrator/ and admin/
and refuses an #include "PART/..." of a part the file's own part may not
use. src/ (the binary's wiring), test/ and bench/ may include any part.
Prints one line per violation (FILE:LINE: includes ...) and exits 1 when
there is any, 0 otherwise; 2 when a part's folder is missing."""
import os
import re
import sys

ALLOWED = {
    "common": {"common"},
    "proxy": {"common", "proxy"},
    "orchestrator": {"common", "orchestrator"},
    "admin": {"common", "admin"},
}
PARTS = {"common", "proxy", "orchestrator", "admin", "src"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)/[^"]+"')


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    bad = 0
    files = 0
    for part, allowed in sorted(ALLOWED.items()):
        top = os.path.join(root, part)
        if not os.path.isdir(top):
            print("check_includes: %s/ is missing" % part)
            return 2
        for dirpath, _, names in os.walk(top):
            for name in sorted(names):
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                files += 1
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if m and m.group(1) in PARTS and m.group(1) not in allowed:
                            rel = os.path.relpath(path, root)
                            print("%s:%d: %s/ includes %s/ (%s may use only %s)"
                                  % (rel, lineno, part, m.group(1), part,
                                     ", ".join(p + "/" for p in sorted(allowed))))
                            bad += 1
    print("check_includes: %d files, %d violations" % (files, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
