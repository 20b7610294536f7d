#!/usr/bin/env bash
# bench/reaper.sh - one idle-reaper pass: wakegate's range read vs a full
# scan, commands and time per pass, at 1,000 / 10,000 / 100,000 sessions.
#
# See bench/README.md. Starts its own redis-server on a unix socket in a temp
# dir (no TCP port, no persistence), stops it by PID on exit.
#
# Environment:
#   BENCH_NO_BUILD=1       do not run meson/ninja (use build-bench/bench/reaper_bench as is)
#   BENCH_KEEP_TMP=1       keep the temp dir (it is also kept when the run failed)
#   REAPER_ARGS="..."      extra arguments for reaper_bench, e.g.
#                          "--cases 1000:100,10000:100 --passes 10"
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=$ROOT/build-bench/bench/reaper_bench
REDIS=${BENCH_REDIS_SERVER:-/usr/bin/redis-server}

die() { echo "reaper: $*" >&2; exit 2; }
log() { echo "reaper: $*" >&2; }

[[ -x $REDIS ]] || die "$REDIS not found (Debian package redis-server)"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    if [[ ! -d $ROOT/build-bench ]]; then
        meson setup "$ROOT/build-bench" "$ROOT" --buildtype=release >/dev/null ||
            die "meson setup failed"
    fi
    ninja -C "$ROOT/build-bench" bench/reaper_bench >/dev/null ||
        die "ninja failed (someone mid-edit? retry later, or BENCH_NO_BUILD=1)"
fi
[[ -x $BIN ]] || die "no reaper_bench at $BIN"

TMP=$(mktemp -d /tmp/wakegate-reaper.XXXXXX)
SOCK=$TMP/redis.sock
REDIS_PID=""

PIDS=()
. "$HERE/benchlib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

# Unix socket only (--port 0: no TCP listener), nothing written to disk.
"$REDIS" --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for ((i = 0; i < 100; i++)); do
    [[ -S $SOCK ]] && break
    running "$REDIS_PID" || { cat "$TMP/redis.log" >&2; die "redis-server exited"; }
    sleep 0.05
done
[[ -S $SOCK ]] || die "redis-server did not open $SOCK"
log "redis-server pid $REDIS_PID on $SOCK"

mkdir -p "$HERE/results"
rc=0
# shellcheck disable=SC2086
"$BIN" "unix://$SOCK" --json "$HERE/results/reaper-latest.json" ${REAPER_ARGS:-} || rc=$?
if ((rc == 1)); then
    log "FAILED: a pass returned the wrong sessions or wakegate's pass issued too many commands"
elif ((rc != 0)); then
    log "reaper_bench could not run (status $rc); redis log: $TMP/redis.log"
fi
exit $rc
