#!/usr/bin/env bash
# bench/run.sh - wakegate vs nginx vs direct, interleaved, plus idle-connection memory.
#
# See bench/README.md. Everything runs on 127.0.0.1, inside one temp dir, and
# every process started here is stopped by its PID on exit.
#
# Environment:
#   BENCH_QUICK=1          smoke run: 1 round x 2 s, no warm-up (~1 minute)
#   BENCH_ROUNDS=N         rounds per cell (default 3)
#   BENCH_DURATION=S       seconds per wrk run (default 5)
#   BENCH_IDLE_CONNS=N     idle connections for the memory test (default 5000)
#   BENCH_PIN=0            CPU pinning: 0 (default, none), split or colocate (see README)
#   BENCH_WAKEGATE=PATH    wakegate binary (default build-bench/src/wakegate, built here)
#   BENCH_NO_BUILD=1       do not run meson/ninja
#   BENCH_KEEP_TMP=1       keep the temp dir (it is also kept when a run had problems)
set -euo pipefail

# Idle upstream connections each proxy keeps (nginx `keepalive`, wakegate
# `upstream.keepalive_max`): the same number for both. Below the client
# connection count, both proxies reconnect to the upstream constantly and
# their tail latency measures that churn.
UP_KEEPALIVE=${BENCH_UPSTREAM_KEEPALIVE:-256}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB=("$PY" "$HERE/benchlib.py")
RESULTS="$HERE/results"

QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-1}; DUR=${BENCH_DURATION:-2}; WARM=0
else
    ROUNDS=${BENCH_ROUNDS:-3}; DUR=${BENCH_DURATION:-5}; WARM=1
fi
IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
SIZES=("100B:100:100b.txt" "64KiB:65536:64k.bin")   # label:bytes:file
CONNS=(50 256)
TARGETS=(direct nginx wakegate)

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for tool in wrk nginx taskset "$PY"; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages: wrk nginx util-linux python3)"
done

# ---------------------------------------------------------------- wakegate binary
. "$HERE/benchlib.sh"
WG=$(bench_wakegate) || exit 1

# ---------------------------------------------------------------- limits, CPUs
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)
NEED=$((IDLE_CONNS * 2 + 1024))
((NOFILE >= NEED)) || die "RLIMIT_NOFILE is $NOFILE, the idle test needs $NEED (lower BENCH_IDLE_CONNS)"

NCPU=$(nproc)
PIN=${BENCH_PIN:-0}
((NCPU >= 2)) || PIN=0
case $PIN in
split)      # the proxy under test gets a core of its own
    PIN_LOAD=(taskset -c 0); PIN_UP=(taskset -c 0); PIN_PROXY=(taskset -c 1)
    PINNING="split: wrk + upstream nginx + idle client on CPU 0; nginx-proxy / wakegate on CPU 1" ;;
colocate)   # wrk gets a core of its own; proxy and upstream share the other
    PIN_LOAD=(taskset -c 0); PIN_UP=(taskset -c 1); PIN_PROXY=(taskset -c 1)
    PINNING="colocate: wrk + idle client on CPU 0; upstream nginx and nginx-proxy / wakegate on CPU 1" ;;
0 | none)
    PIN_LOAD=(); PIN_UP=(); PIN_PROXY=()
    PINNING="none" ;;
*) die "BENCH_PIN must be split, colocate or 0" ;;
esac

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d /tmp/wakegate-bench.XXXXXX)
chmod 755 "$TMP"   # nginx workers may run as nobody and must read the docroot
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_UP P_NGX P_WG P_WGADM < <("${LIB[@]}" freeports 4)

# ---------------------------------------------------------------- helpers
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }


# ---------------------------------------------------------------- upstream nginx
UPD=$TMP/upstream
mkdir -p "$UPD/www" "$UPD/logs"
head -c 99 /dev/zero | tr '\0' 'x' >"$UPD/www/100b.txt"; echo >>"$UPD/www/100b.txt"
head -c 65536 /dev/urandom >"$UPD/www/64k.bin"
chmod -R a+rX "$UPD"
cat >"$UPD/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
master_process on;
pid $UPD/nginx.pid;
error_log $UPD/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$UPD")
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$P_UP backlog=4096;
        root $UPD/www;
        location / { }
    }
}
EOF

# ---------------------------------------------------------------- proxies
NXD=$TMP/nginx-proxy
mkdir -p "$NXD/logs"
cat >"$NXD/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
master_process on;
pid $NXD/nginx.pid;
error_log $NXD/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$NXD")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive $UP_KEEPALIVE;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGX backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF

WGD=$TMP/wakegate
mkdir -p "$WGD"
cat >"$WGD/wakegate.yaml" <<EOF
listen: "127.0.0.1:$P_WG"
admin: { listen: "127.0.0.1:$P_WGADM" }
log: { level: warn, access: false }
limits: { keepalive_requests_max: 1000000 }
upstream: { keepalive_max: $UP_KEEPALIVE }
shutdown_grace: 2s
# The static route needs no Redis (none configured would start a private one).
redis: { private: { enabled: false } }
routes:
  - match: { path_prefix: "/" }
    upstream: "127.0.0.1:$P_UP"
EOF

start_nginx() {   # dir pin... ; sets REPLY to the master pid
    local dir=$1; shift
    "$@" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        >>"$dir/logs/stdout.log" 2>&1 &
    REPLY=$!
    PIDS+=("$REPLY")
}

UP_PID="" NGX_PID="" WG_PID="" UP_W="" NGX_W=""

start_upstream() {
    start_nginx "$UPD" "${PIN_UP[@]}"; UP_PID=$REPLY
    "${LIB[@]}" wait "http://127.0.0.1:$P_UP/100b.txt" 10 || { cat "$UPD/logs/error.log" >&2; die "upstream nginx did not start"; }
    UP_W=$(nginx_worker "$UP_PID") || die "no upstream nginx worker"
}

start_nginx_proxy() {
    start_nginx "$NXD" "${PIN_PROXY[@]}"; NGX_PID=$REPLY
    "${LIB[@]}" wait "http://127.0.0.1:$P_NGX/100b.txt" 10 || { cat "$NXD/logs/error.log" >&2; die "nginx proxy did not start"; }
    NGX_W=$(nginx_worker "$NGX_PID") || die "no nginx proxy worker"
}

start_wakegate() {
    "${PIN_PROXY[@]}" "$WG" -c "$WGD/wakegate.yaml" >>"$WGD/stderr.log" 2>&1 &
    WG_PID=$!
    PIDS+=("$WG_PID")
    "${LIB[@]}" wait "http://127.0.0.1:$P_WGADM/healthz" 10 || { cat "$WGD/stderr.log" >&2; die "wakegate did not start"; }
}

check_alive() {
    running "$UP_PID" || { tail -20 "$UPD/logs/error.log" >&2; die "upstream nginx died"; }
    running "$NGX_PID" || { tail -20 "$NXD/logs/error.log" >&2; die "nginx proxy died"; }
    if ! running "$WG_PID"; then
        local st=0
        wait "$WG_PID" 2>/dev/null || st=$?
        log "wakegate DIED (wait status $st); last stderr lines:"
        tail -40 "$WGD/stderr.log" >&2
        log "config: $WGD/wakegate.yaml; last wrk output: ${LAST_WRK:-none}"
        die "wakegate died under load"
    fi
}

start_upstream
start_nginx_proxy
start_wakegate
log "upstream :$P_UP (pid $UP_PID, worker $UP_W)  nginx-proxy :$P_NGX (pid $NGX_PID, worker $NGX_W)  wakegate :$P_WG (pid $WG_PID)"
log "pinning: $PINNING; RLIMIT_NOFILE $NOFILE"

port_of() { case $1 in direct) echo "$P_UP" ;; nginx) echo "$P_NGX" ;; wakegate) echo "$P_WG" ;; esac; }
proxy_pid_of() { case $1 in direct) echo "" ;; nginx) echo "$NGX_W" ;; wakegate) echo "$WG_PID" ;; esac; }

# Every target must serve both files byte-exact before any load.
for s in "${SIZES[@]}"; do
    IFS=: read -r label bytes file <<<"$s"
    for t in "${TARGETS[@]}"; do
        "${LIB[@]}" get "http://127.0.0.1:$(port_of "$t")/$file" "$bytes" ||
            die "preflight: $t does not serve /$file correctly"
    done
done

# ---------------------------------------------------------------- throughput matrix
RAW=$TMP/raw
mkdir -p "$RAW"
MANIFEST=$TMP/manifest.tsv
: >"$MANIFEST"
PROBLEMS=0
LAST_WRK=

# run_wrk target conns dur file bytes outfile
# sets CPU_RES to "proxy_cpu%<TAB>upstream_cpu%<TAB>wrk_cpu%" (percent of one CPU)
run_wrk() {
    local t=$1 c=$2 d=$3 file=$4 bytes=$5 out=$6 ppid upid p0 p1 u0 u1 t0 t1 rc=0 why
    ppid=$(proxy_pid_of "$t"); upid=$UP_W
    [[ -n $ppid ]] && p0=$(cpu_ticks "$ppid")
    u0=$(cpu_ticks "$upid"); t0=$(date +%s.%N)
    LAST_WRK=$out
    echo - >"$TMP/wrk.cpu"
    timeout $((d + 30)) "${PIN_LOAD[@]}" "${LIB[@]}" rusage "$TMP/wrk.cpu" \
        wrk -t1 -c"$c" -d"${d}s" --latency "http://127.0.0.1:$(port_of "$t")/$file" >"$out" 2>&1 || rc=$?
    t1=$(date +%s.%N); u1=$(cpu_ticks "$upid")
    [[ -n $ppid ]] && p1=$(cpu_ticks "$ppid")
    check_alive
    if ((rc != 0)); then
        cat "$out" >&2
        die "wrk against $t exited with status $rc"
    fi
    if ! why=$("${LIB[@]}" check-wrk "$out" "$bytes"); then
        PROBLEMS=$((PROBLEMS + 1))
        {
            echo "!!! ================================================================"
            echo "!!! $t c=$c /$file: $why"
            sed 's/^/!!!   /' "$out"
            echo "!!! ================================================================"
        } >&2
    fi
    local hz; hz=$(getconf CLK_TCK)
    CPU_RES=$(awk -v p0="${p0:-}" -v p1="${p1:-}" -v u0="$u0" -v u1="$u1" -v t0="$t0" -v t1="$t1" \
        -v hz="$hz" -v wc="$(cat "$TMP/wrk.cpu")" -v d="$d" \
        'BEGIN { w = t1 - t0;
                 pc = (p0 == "") ? "-" : sprintf("%.1f", (p1 - p0) / hz / w * 100);
                 wp = (wc == "-") ? "-" : sprintf("%.1f", wc / d * 100);
                 printf "%s\t%.1f\t%s\n", pc, (u1 - u0) / hz / w * 100, wp }')
}

BUSY_FILE=$TMP/busy.tsv
: >"$BUSY_FILE"
# CPU the machine spends while our servers are idle: someone else's load.
check_background() {
    local b
    b=$("${LIB[@]}" busy 0.5)
    printf '%s\t%s\t%s\n' "$1" "$2" "$b" >>"$BUSY_FILE"
    if awk -v j="$b" 'BEGIN { match(j, /"busy_pct": [0-9.]+/); exit !(substr(j, RSTART + 12, RLENGTH - 12) + 0 > 20) }'; then
        log "WARNING: background load while idle before this cell: $b - numbers will be noisy"
    fi
}

START=$(date +%s)
for s in "${SIZES[@]}"; do
    IFS=: read -r label bytes file <<<"$s"
    for c in "${CONNS[@]}"; do
        check_background "$bytes" "$c"
        if [[ $WARM == 1 ]]; then
            for t in "${TARGETS[@]}"; do
                run_wrk "$t" "$c" 1 "$file" "$bytes" "$RAW/warm-$label-c$c-$t.txt"
            done
        fi
        for ((r = 0; r < ROUNDS; r++)); do
            for ((k = 0; k < ${#TARGETS[@]}; k++)); do
                t=${TARGETS[$(((k + r) % ${#TARGETS[@]}))]}
                out=$RAW/$label-c$c-r$r-$t.txt
                run_wrk "$t" "$c" "$DUR" "$file" "$bytes" "$out"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$bytes" "$c" "$r" "$t" "$out" "$CPU_RES" >>"$MANIFEST"
                rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
                p99=$(awk '$1 == "99%" {print $2}' "$out")
                log "$(printf '%-6s c=%-3s round %d %-8s %10s req/s  p99 %s' "$label" "$c" "$r" "$t" "$rps" "$p99")"
            done
        done
    done
done
log "throughput matrix took $(($(date +%s) - START)) s"

BUFFERED=$(grep -c 'buffered to a temporary file' "$NXD/logs/error.log" || true)

# ---------------------------------------------------------------- idle connections
# Fresh proxy processes, so the baseline is not the allocator state the load left.
NGX_RSS_MATRIX=$(rss_kib "$NGX_W")
WG_RSS_MATRIX=$(rss_kib "$WG_PID")
stop_pid "$NGX_PID"; stop_pid "$WG_PID"
start_nginx_proxy
start_wakegate
for t in nginx wakegate; do   # one request each, so the upstream pool exists
    "${LIB[@]}" get "http://127.0.0.1:$(port_of "$t")/100b.txt" 100 || die "$t not serving after restart"
done
sleep 1
log "idle test: $IDLE_CONNS keep-alive connections to nginx-proxy (worker $NGX_W), then wakegate (pid $WG_PID)"
"${PIN_LOAD[@]}" timeout 120 "${LIB[@]}" idle "nginx-proxy worker" "$P_NGX" /100b.txt "$IDLE_CONNS" "$NGX_W" "$NGX_RSS_MATRIX" \
    >"$TMP/idle-nginx.json" || die "idle test against nginx failed"
check_alive
"${PIN_LOAD[@]}" timeout 120 "${LIB[@]}" idle "wakegate" "$P_WG" /100b.txt "$IDLE_CONNS" "$WG_PID" "$WG_RSS_MATRIX" \
    >"$TMP/idle-wakegate.json" || die "idle test against wakegate failed"
check_alive

# Anything the servers logged (wakegate at warn, nginx at warn) is worth a look.
for f in "$WGD/stderr.log" "$NXD/logs/error.log" "$UPD/logs/error.log"; do
    if [[ -s $f ]]; then
        log "note: $(wc -l <"$f") line(s) in ${f#"$TMP"/}, first 10:"
        head -10 "$f" | sed 's/^/bench:   /' >&2
    fi
done
WG_LOG_LINES=$(wc -l <"$WGD/stderr.log")
NGX_LOG_LINES=$(wc -l <"$NXD/logs/error.log")

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS"
GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    GIT_STATE="dirty tree"
else
    GIT_STATE="clean tree"
fi
export GIT_COMMIT GIT_STATE PINNING ROUNDS DUR QUICK IDLE_CONNS NOFILE BUFFERED WG TMP WG_LOG_LINES NGX_LOG_LINES
export NGINX_VERSION; NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
export WRK_VERSION; WRK_VERSION=$({ wrk --version 2>&1 || true; } | awk 'NR == 1 {print $2}')
"$PY" - "$TMP/meta.json" <<'EOF'
import json, os, platform, sys, time
e = os.environ
json.dump({
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "git_commit": e["GIT_COMMIT"], "git_state": e["GIT_STATE"], "wakegate_binary": e["WG"],
    "nginx_version": e["NGINX_VERSION"], "wrk_version": e["WRK_VERSION"],
    "kernel": platform.release(), "cpus": os.cpu_count(), "pinning": e["PINNING"],
    "rounds": int(e["ROUNDS"]), "duration_s": int(e["DUR"]), "quick": e["QUICK"] == "1",
    "idle_connections": int(e["IDLE_CONNS"]), "rlimit_nofile": int(e["NOFILE"]),
    "nginx_proxy_buffered_to_temp_file_warnings": int(e["BUFFERED"] or 0),
    "busy_file": e["TMP"] + "/busy.tsv",
    "wakegate_log_lines": int(e["WG_LOG_LINES"]), "nginx_proxy_error_log_lines": int(e["NGX_LOG_LINES"]),
    "idle_files": {"nginx": e["TMP"] + "/idle-nginx.json",
                   "wakegate": e["TMP"] + "/idle-wakegate.json"},
}, open(sys.argv[1], "w"))
EOF

rc=0
"${LIB[@]}" report "$MANIFEST" "$RESULTS/latest.json" "$TMP/meta.json" || rc=$?
if ((BUFFERED > 0)); then
    log "note: nginx-proxy logged $BUFFERED 'buffered to a temporary file' warnings (64 KiB > default proxy_buffers)"
fi
if ((rc != 0 || PROBLEMS > 0)); then
    log "FAILED: $PROBLEMS wrk run(s) with errors (see the !!! blocks above); raw outputs in $TMP/raw"
    exit 1
fi
