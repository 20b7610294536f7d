#!/usr/bin/env bash
# bench/cpu_sampling.sh - what one pass of the CPU sampler costs (Docker
# calls and ms per interval) at 100, 1,000 and 10,000 running session
# containers, with and without many stopped ones beside them.
#
# See bench/README.md. The engine is a stand-in (bench/fake_engine.py on a
# unix socket in a temp dir, with fake /proc and cgroup trees): a real
# dockerd cannot run 10,000 containers here. Each case runs the sampler on
# the local engine's path (cgroup files) and on the remote one (--api: one
# stats call per container). Started processes are stopped by PID on exit.
#
# Environment:
#   BENCH_NO_BUILD=1   do not run meson/ninja (use build-bench/bench/cpu_sample_bench)
#   BENCH_KEEP_TMP=1   keep the temp dir
#   CPU_CASES="100:0 100:10000 1000:9000 10000:0"   running:stopped cases
#   CPU_PASSES=5       passes per case (the first finds the cgroup files)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${CPU_BENCH_BIN:-$ROOT/build-bench/bench/cpu_sample_bench}
PY=/usr/bin/python3
CASES=${CPU_CASES:-"100:0 100:10000 1000:0 1000:9000 10000:0"}
PASSES=${CPU_PASSES:-5}

die() { echo "cpu_sampling: $*" >&2; exit 2; }

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    if [[ ! -d $ROOT/build-bench ]]; then
        meson setup "$ROOT/build-bench" "$ROOT" --buildtype=release >/dev/null || die "meson setup failed"
    fi
    ninja -C "$ROOT/build-bench" bench/cpu_sample_bench >/dev/null || die "ninja failed"
fi
[[ -x $BIN ]] || die "no cpu_sample_bench at $BIN"

TMP=$(mktemp -d /tmp/wakegate-cpu.XXXXXX)
ENGINE_PID=""
stop_engine() {
    if [[ -n $ENGINE_PID ]]; then
        kill "$ENGINE_PID" 2>/dev/null || true
        wait "$ENGINE_PID" 2>/dev/null || true
        ENGINE_PID=""
    fi
}
cleanup() {
    stop_engine
    [[ ${BENCH_KEEP_TMP:-0} == 1 ]] || rm -rf "$TMP"
}
trap cleanup EXIT

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

printf '%-8s %-8s %-6s | %-22s | %s\n' running stopped path "first pass" "later passes (median): calls, ms (of which: list, files)"
for c in $CASES; do
    run=${c%%:*}; stopped=${c##*:}
    dir=$TMP/case-$run-$stopped
    mkdir -p "$dir"
    $PY "$HERE/fake_engine.py" "$dir/engine.sock" "$dir" "$run" "$stopped" >"$dir/engine.out" 2>&1 &
    ENGINE_PID=$!
    for _ in $(seq 600); do grep -q ready "$dir/engine.out" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$dir/engine.out" || die "the stand-in engine did not start: $(cat "$dir/engine.out")"
    for path in cgroup api; do
        args=(--socket "$dir/engine.sock" --dir "$dir" --expect "$run" --passes "$PASSES")
        [[ $path == api ]] && args+=(--api)
        out=$("$BIN" "${args[@]}") || die "a pass failed ($run running, $path): $out"
        echo "$out" > "$dir/$path.txt"
        first=$(echo "$out" | head -1)
        later=$(echo "$out" | tail -n +2)
        printf '%-8s %-8s %-6s | %5s calls %9s ms | %5s calls %9s ms (%s, %s)\n' "$run" "$stopped" "$path" \
            "$(echo "$first" | field calls)" "$(echo "$first" | field ms)" \
            "$(echo "$later" | field calls | median | cut -d. -f1)" "$(echo "$later" | field ms | median)" \
            "$(echo "$later" | field list_ms | median)" "$(echo "$later" | field read_ms | median)"
    done
    stop_engine
done
