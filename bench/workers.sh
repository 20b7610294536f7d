#!/usr/bin/env bash
# bench/workers.sh - worker loops: wakegate with workers: 1 and 2 against
# nginx with worker_processes 1 and 2, as reverse proxies of one upstream
# nginx, in one run, interleaved; plus the memory per idle connection of
# wakegate with 2 workers.
#
# For each proxy: requests per second (wrk, keep-alive, /100b.txt) and its
# CPU per request (utime + stime of the wakegate process, all its threads,
# or of every nginx worker, from /proc, over each run, in microseconds),
# then the ratios wakegate / nginx at the same worker count and 2 / 1 for
# each. Everything runs on 127.0.0.1, inside one temp dir; every process
# started here is stopped by its PID on exit. Nothing is asserted about
# speed: the script fails only when a run is not clean.
#
# Mind the machine: with 2 cores, wrk, the upstream nginx and the proxy
# under test share them, so a second worker loop cannot double anything;
# the figures show what the proxy gets from the CPU the others leave.
#
# Environment:
#   BENCH_SECONDS=N        seconds per wrk run (default 5)
#   BENCH_ROUNDS=N         rounds per proxy (default 3)
#   BENCH_CONNS=N          wrk connections (default 100)
#   BENCH_IDLE_CONNS=N     idle connections for the memory test (default 2000)
#   BENCH_WAKEGATE=PATH    wakegate binary (default build-bench/src/wakegate, built here)
#   BENCH_NO_BUILD=1       do not run meson/ninja
#   BENCH_WAKEGATE_BASE=PATH  another wakegate binary (say, a build from before
#                          worker loops) measured too as "base1", on one loop
#                          (its file has no workers: key)
#   BENCH_KEEP_TMP=1       keep the temp dir
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB=("$PY" "$HERE/benchlib.py")
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-100}
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
PROXIES=(nginx1 nginx2 wakegate1 wakegate2)
BASE=${BENCH_WAKEGATE_BASE:-}
[[ -z $BASE ]] || PROXIES+=(base1)

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for tool in nginx wrk "$PY"; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages: nginx wrk python3)"
done

. "$HERE/benchlib.sh"
WG=$(bench_wakegate) || exit 1

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)
((NOFILE >= IDLE_CONNS * 2 + 1024)) || die "RLIMIT_NOFILE is $NOFILE, too low for $IDLE_CONNS idle connections"

TMP=$(mktemp -d /tmp/wakegate-bench-workers.XXXXXX)
chmod 755 "$TMP"
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_UP P_N1 P_N2 P_W1 P_W1A P_W2 P_W2A P_B P_BA < <("${LIB[@]}" freeports 9)

children() { cat "/proc/$1/task/$1/children" 2>/dev/null || true; }

# ---------------------------------------------------------------- upstream and proxies
UPD=$TMP/upstream
mkdir -p "$UPD/www" "$UPD/logs"
head -c 99 /dev/zero | tr '\0' 'x' >"$UPD/www/100b.txt"; echo >>"$UPD/www/100b.txt"
chmod -R a+rX "$UPD"
cat >"$UPD/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile $NOFILE;
daemon off;
master_process on;
pid $UPD/nginx.pid;
error_log $UPD/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$UPD")
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$P_UP backlog=4096;
        root $UPD/www;
        location / { }
    }
}
EOF

nginx_proxy_conf() { # dir port workers
    cat >"$1/nginx.conf" <<EOF
worker_processes $3;
worker_rlimit_nofile $NOFILE;
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$1")
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream up {
        server 127.0.0.1:$P_UP;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096 reuseport;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

wakegate_conf() { # dir port admin_port workers (empty: no workers: key)
    cat >"$1/wakegate.yaml" <<EOF
listen: "127.0.0.1:$2"
admin: { listen: "127.0.0.1:$3" }
${4:+workers: $4}
log: { level: warn, access: false }
limits: { keepalive_requests_max: 1000000 }
upstream: { keepalive_max: 256 }
shutdown_grace: 2s
redis: { private: { enabled: false } }
routes:
  - match: { path_prefix: "/" }
    upstream: "127.0.0.1:$P_UP"
EOF
}

start_nginx() { # dir; sets REPLY to the master pid
    nginx -p "$1/" -c "$1/nginx.conf" -e "$1/logs/error.log" >>"$1/logs/stdout.log" 2>&1 &
    REPLY=$!
    PIDS+=("$REPLY")
}

declare -A PORT PID
start_nginx "$UPD"; UP_PID=$REPLY
"${LIB[@]}" wait "http://127.0.0.1:$P_UP/100b.txt" 10 || die "upstream nginx did not start"
for n in 1 2; do
    d=$TMP/nginx$n; mkdir -p "$d/logs"
    p=P_N$n; nginx_proxy_conf "$d" "${!p}" "$n"
    start_nginx "$d"; PID[nginx$n]=$REPLY; PORT[nginx$n]=${!p}
    "${LIB[@]}" wait "http://127.0.0.1:${!p}/100b.txt" 10 || die "nginx$n did not start"
    d=$TMP/wakegate$n; mkdir -p "$d"
    p=P_W$n; a=P_W${n}A; wakegate_conf "$d" "${!p}" "${!a}" "$n"
    "$WG" -c "$d/wakegate.yaml" >>"$d/stderr.log" 2>&1 &
    PID[wakegate$n]=$!; PIDS+=("$!"); PORT[wakegate$n]=${!p}
    "${LIB[@]}" wait "http://127.0.0.1:${!a}/healthz" 10 || { cat "$d/stderr.log" >&2; die "wakegate$n did not start"; }
done
if [[ -n $BASE ]]; then
    d=$TMP/base1; mkdir -p "$d"
    wakegate_conf "$d" "$P_B" "$P_BA" ""
    "$BASE" -c "$d/wakegate.yaml" >>"$d/stderr.log" 2>&1 &
    PID[base1]=$!; PIDS+=("$!"); PORT[base1]=$P_B
    "${LIB[@]}" wait "http://127.0.0.1:$P_BA/healthz" 10 || { cat "$d/stderr.log" >&2; die "base1 did not start"; }
fi
for t in "${PROXIES[@]}"; do
    "${LIB[@]}" get "http://127.0.0.1:${PORT[$t]}/100b.txt" 100 || die "preflight: $t does not serve /100b.txt"
done

# The pids whose CPU is the proxy's: nginx's workers, wakegate's process.
proxy_pids() { case $1 in nginx*) children "${PID[$1]}" ;; *) echo "${PID[$1]}" ;; esac; }
proxy_ticks() {
    local s=0 p
    for p in $(proxy_pids "$1"); do s=$((s + $(cpu_ticks "$p"))); done
    echo $s
}

# ---------------------------------------------------------------- throughput
RES=$TMP/results.tsv
: >"$RES"
HZ=$(getconf CLK_TCK)
PROBLEMS=0
log "upstream nginx (2 workers) :$P_UP; ${#PROXIES[@]} proxies; $ROUNDS rounds x ${SECS}s, wrk -t2 -c$CONNS; $(nproc) CPUs shared by wrk, the upstream and the proxy"
for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < ${#PROXIES[@]}; k++)); do
        t=${PROXIES[$(((k + r) % ${#PROXIES[@]}))]}
        out=$TMP/wrk-$t-r$r.txt
        c0=$(proxy_ticks "$t")
        timeout $((SECS + 30)) wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:${PORT[$t]}/100b.txt" >"$out" 2>&1 ||
            die "wrk against $t failed: $(cat "$out")"
        c1=$(proxy_ticks "$t")
        if ! why=$("${LIB[@]}" check-wrk "$out" 100); then
            PROBLEMS=$((PROBLEMS + 1))
            log "!!! $t round $r: $why"
        fi
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        reqs=$(awk '/requests in/ {print $1}' "$out")
        us=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", c / hz * 1e6 / n }')
        printf '%s\t%s\t%s\t%s\n' "$t" "$r" "$rps" "$us" >>"$RES"
        log "$(printf 'round %d %-10s %10s req/s  %6s us CPU/request' "$r" "$t" "$rps" "$us")"
        for p in "${PIDS[@]}"; do running "$p" || die "a server died (pid $p)"; done
    done
done

# ---------------------------------------------------------------- idle memory, 2 workers
log "idle test: $IDLE_CONNS keep-alive connections to wakegate with 2 workers (pid ${PID[wakegate2]})"
timeout 120 "${LIB[@]}" idle "wakegate workers: 2" "${PORT[wakegate2]}" /100b.txt "$IDLE_CONNS" "${PID[wakegate2]}" \
    >"$TMP/idle.json" || die "idle test failed"
SPREAD=$(curl -s "http://127.0.0.1:$P_W2A/metrics" | awk '/^wakegate_worker_connections_total/ {printf "%s ", $0}')

# ---------------------------------------------------------------- report
"$PY" - "$RES" "$TMP/idle.json" "$SPREAD" <<'EOF'
import json, statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = {}
for t in sorted({r[0] for r in rows}):
    rps = [float(r[2]) for r in rows if r[0] == t]
    us = [float(r[3]) for r in rows if r[0] == t]
    med[t] = (statistics.median(rps), statistics.median(us))
print("\n%-10s %12s %14s   (medians)" % ("proxy", "req/s", "CPU us/req"))
for t in ("nginx1", "nginx2", "wakegate1", "wakegate2", "base1"):
    if t in med:
        print("%-10s %12.0f %14.1f" % (t, med[t][0], med[t][1]))
print("\nratios")
for n in ("1", "2"):
    w, g = med["wakegate" + n], med["nginx" + n]
    print("  %s worker(s): wakegate/nginx req/s %.2f, CPU per request %.2f" % (n, w[0] / g[0], w[1] / g[1]))
for p in ("nginx", "wakegate"):
    print("  %s 2/1: req/s %.2f, CPU per request %.2f" % (p, med[p + "2"][0] / med[p + "1"][0],
                                                          med[p + "2"][1] / med[p + "1"][1]))
if "base1" in med:
    w, b = med["wakegate1"], med["base1"]
    print("  wakegate1/base1: req/s %.2f, CPU per request %.2f" % (w[0] / b[0], w[1] / b[1]))
idle = json.load(open(sys.argv[2]))
pid = str(idle["measured_pid"])
n = idle["established"]
per = (idle["rss_kib_loaded"][pid] - idle["rss_kib_idle0"][pid]) * 1024 / n if n else float("nan")
print("\nidle: %d of %d connections held open (failures %d); RSS %d -> %d KiB: %.0f bytes per idle connection"
      % (n, idle["requested"], idle["failures"], idle["rss_kib_idle0"][pid], idle["rss_kib_loaded"][pid], per))
print("spread: %s" % sys.argv[3])
EOF
((PROBLEMS == 0)) || { log "FAILED: $PROBLEMS wrk run(s) with errors"; exit 1; }
