#!/usr/bin/env bash
# The test command: installs dependencies, builds with ASan+UBSan in build/,
# runs the meson suites (unit tests, fuzz corpus replays) and the end-to-end
# pytest suite, then prints one line "N passed, N failed" counting both.
#
#   ./scripts/test.sh
#   WAKEGATE_TEST_ARGS='-k redis -x' ./scripts/test.sh     # extra pytest arguments
#
# Exit status: 0 only if something ran and nothing failed. A skipped test
# counts as failed: a test that cannot run its real dependency must fail
# (STYLE.md, "Tests"). Logs are kept in test-artifacts/.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=$ROOT/build
ART=$ROOT/test-artifacts
PY=/usr/bin/python3   # Debian's interpreter with python3-pytest & co., never a pyenv one

rm -rf "$ART"
mkdir -p "$ART"

passed=0
failed=0
t_start=$(date +%s)

step() { printf '\n=== %s\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

finish() {
  local status=0
  step "done in $(elapsed "$t_start"); logs in test-artifacts/"
  if (( failed > 0 || passed + failed == 0 )); then
    status=1
  fi
  echo "${passed} passed, ${failed} failed"
  exit "$status"
}

# ---------------------------------------------------------------- deps
step "install dependencies (scripts/install-deps.sh test)"
if ! ./scripts/install-deps.sh test; then
  echo "test.sh: scripts/install-deps.sh failed" >&2
  failed=$((failed + 1))
  finish
fi

# ---------------------------------------------------------------- build
step "configure build/ with -Db_sanitize=address,undefined"
t=$(date +%s)
if [ -f "$BUILD/build.ninja" ]; then
  setup=(meson setup --reconfigure "$BUILD" -Db_sanitize=address,undefined)
else
  rm -rf "$BUILD"
  setup=(meson setup "$BUILD" -Db_sanitize=address,undefined)
fi
if ! "${setup[@]}" >"$ART/meson-setup.log" 2>&1; then
  # A build dir from another meson version or a broken one: start afresh.
  echo "test.sh: reconfigure failed, wiping build/" | tee -a "$ART/meson-setup.log"
  rm -rf "$BUILD"
  if ! meson setup "$BUILD" -Db_sanitize=address,undefined >>"$ART/meson-setup.log" 2>&1; then
    tail -40 "$ART/meson-setup.log"
    echo "test.sh: meson setup failed (counted as 1 failure)" >&2
    failed=$((failed + 1))
    finish
  fi
fi
tail -3 "$ART/meson-setup.log"

step "build"
if ! meson compile -C "$BUILD" 2>&1 | tee "$ART/build.log" | tail -15; then
  echo "test.sh: build failed (counted as 1 failure); see test-artifacts/build.log" >&2
  grep -E 'error|Error' "$ART/build.log" | head -30 >&2
  failed=$((failed + 1))
  finish
fi
echo "build: $(elapsed "$t")"

# A small quarantine: ASan's default (256 MiB) keeps every freed write buffer
# of a 1 GiB stream alive, which the RSS tests would see as the proxy's own
# memory. Use-after-free detection stays on.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=8
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export WAKEGATE_BIN=$BUILD/src/wakegate
export WAKEGATE_ARTIFACTS=$ART

# ---------------------------------------------------------------- meson test
step "meson test (unit + fuzz corpus replay)"
t=$(date +%s)
meson test -C "$BUILD" --print-errorlogs 2>&1 | tee "$ART/meson-test.log"
mrc=${PIPESTATUS[0]}
cp -f "$BUILD/meson-logs/testlog.txt" "$ART/meson-testlog.txt" 2>/dev/null || true
# Meson's summary block: "Ok: N", "Expected Fail: N", "Fail: N",
# "Unexpected Pass: N", "Skipped: N", "Timeout: N".
mcount() { sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$ART/meson-test.log" | tail -1; }
m_ok=$(mcount 'Ok'); m_xfail=$(mcount 'Expected Fail'); m_fail=$(mcount 'Fail')
m_xpass=$(mcount 'Unexpected Pass'); m_skip=$(mcount 'Skipped'); m_timeout=$(mcount 'Timeout')
m_pass=$(( ${m_ok:-0} + ${m_xfail:-0} ))
m_bad=$(( ${m_fail:-0} + ${m_xpass:-0} + ${m_skip:-0} + ${m_timeout:-0} ))
if (( mrc != 0 && m_bad == 0 )); then
  # meson test itself failed (e.g. a rebuild error) without a summary.
  m_bad=1
fi
echo "meson test: ${m_pass} passed, ${m_bad} failed (skipped ${m_skip:-0}) in $(elapsed "$t")"
passed=$((passed + m_pass))
failed=$((failed + m_bad))

# ---------------------------------------------------------------- pytest
step "end-to-end tests: $PY -m pytest test/e2e"
t=$(date +%s)
extra=()
if [ -n "${WAKEGATE_TEST_ARGS:-}" ]; then
  # Parsed like shell words so quoted -k expressions work: -k 'a and not b'.
  eval "extra=(${WAKEGATE_TEST_ARGS})"
fi
JUNIT=$ART/e2e-junit.xml
"$PY" -m pytest test/e2e -v --junitxml="$JUNIT" -o junit_family=xunit1 "${extra[@]}" 2>&1 | tee "$ART/e2e.log"
prc=${PIPESTATUS[0]}
read -r p_pass p_bad p_skip < <("$PY" - "$JUNIT" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 0 0")
    sys.exit()
# A test that fails and then errors in teardown appears twice; count it once.
outcome = {}
for case in root.iter("testcase"):
    key = (case.get("classname"), case.get("name"))
    tags = {child.tag for child in case}
    o = "failed" if tags & {"failure", "error"} else ("skipped" if "skipped" in tags else "passed")
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    if rank[o] >= rank.get(outcome.get(key), -1):
        outcome[key] = o
vals = list(outcome.values())
passed, failed, skipped = vals.count("passed"), vals.count("failed"), vals.count("skipped")
print(passed, failed + skipped, skipped)
EOF
)
# pytest exit codes: 0 ok, 1 failures, 2-4 it broke itself (interrupted,
# internal or usage error, a conftest that does not import), 5 nothing
# collected: fine under a WAKEGATE_TEST_ARGS filter, a failure without one.
if (( prc != 0 && prc != 5 && p_bad == 0 )); then
  echo "test.sh: pytest exited with $prc but reported no failed test (interrupted, internal or usage error)" >&2
  p_bad=1
elif (( prc == 5 )) && [ ${#extra[@]} -eq 0 ]; then
  echo "test.sh: pytest collected no tests" >&2
  p_bad=1
fi
echo "pytest: ${p_pass} passed, ${p_bad} failed (skipped ${p_skip}) in $(elapsed "$t")"
passed=$((passed + p_pass))
failed=$((failed + p_bad))

finish
