#!/usr/bin/env python3
"""tools/check_includes.py must refuse exactly the two bad includes of
test/lint/bad-tree (proxy/ -> orchestrator/, common/ -> proxy/) and accept
the allowed ones: the CI include check can fail."""
import subprocess
import sys

check, tree = sys.argv[1], sys.argv[2]
p = subprocess.run([sys.executable, check, tree], capture_output=True, text=True)
lines = [l for l in p.stdout.splitlines() if ": " in l and " includes " in l]
want = {"proxy/bad.c:3", "common/bad.h:2"}
got = {l.split(": ")[0] for l in lines}
if p.returncode != 1 or got != want:
    print("includes_selftest: exit %d, violations %s, wanted exit 1 and %s\n%s"
          % (p.returncode, sorted(got), sorted(want), p.stdout + p.stderr))
    sys.exit(1)
print("includes_selftest: ok")
