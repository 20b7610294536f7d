#!/usr/bin/env bash
# bench/tls.sh - TLS termination: wakegate vs nginx as an HTTPS reverse
# proxy, same certificate (ECDSA P-256), same upstream, same run, TLS 1.3.
#
#   new TLS connections per second: wrk with "Connection: close" (a
#   handshake per request, /100b.txt; resumed ones, as wrk offers its last
#   ticket)
#   keep-alive requests per second over TLS at 100 B and 64 KiB
#   full handshakes per second, one at a time (openssl s_time -new)
#   HTTP/2 (ALPN h2) requests per second at 100 B and 64 KiB: h2load with
#   BENCH_H2_CONNS connections of BENCH_H2_STREAMS concurrent streams each
#
# and the proxy's CPU seconds per 1000 requests (utime + stime of the nginx
# worker or the wakegate process, from /proc, over each run). See
# bench/README.md. Everything runs on 127.0.0.1, inside one temp dir, and
# every process started here is stopped by its PID on exit. Nothing is
# asserted about speed: the script fails only when a run is not clean.
#
# Environment:
#   BENCH_SECONDS=N        seconds per wrk run (default 5)
#   BENCH_CONNS=N          wrk connections (default 50)
#   BENCH_H2_CONNS=N       h2load connections (default 4)
#   BENCH_H2_STREAMS=N     h2load concurrent streams per connection (default 32)
#   BENCH_PIN=split        wrk and the upstream on CPU 0, the proxy under test on CPU 1
#                          (default 0: no pinning)
#   BENCH_WAKEGATE=PATH    wakegate binary (default build-bench/src/wakegate, built here)
#   BENCH_NO_BUILD=1       do not run meson/ninja
#   BENCH_KEEP_TMP=1       keep the temp dir
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB=("$PY" "$HERE/benchlib.py")
RESULTS="$HERE/results"
SECS=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-50}

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for tool in nginx wrk openssl curl h2load "$PY"; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages: nginx wrk openssl curl nghttp2-client python3)"
done
H2_CONNS=${BENCH_H2_CONNS:-4}
H2_STREAMS=${BENCH_H2_STREAMS:-32}

. "$HERE/benchlib.sh"
WG=$(bench_wakegate) || exit 1

PIN_LOAD=() PIN_PROXY=()
if [[ ${BENCH_PIN:-0} == split && $(nproc) -ge 2 ]]; then
    command -v taskset >/dev/null || die "taskset not found (Debian package util-linux)"
    PIN_LOAD=(taskset -c 0) PIN_PROXY=(taskset -c 1)
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)

TMP=$(mktemp -d /tmp/wakegate-bench-tls.XXXXXX)
chmod 755 "$TMP"
PIDS=()

trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_UP P_NGX P_WG P_WGADM < <("${LIB[@]}" freeports 4)

# CPU ticks (utime + stime) of a pid.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# ---------------------------------------------------------------- the certificate
CERT=$TMP/cert.pem
KEY=$TMP/cert.key
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$KEY" -out "$CERT" \
    -days 2 -subj /CN=bench.test -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" 2>/dev/null ||
    die "openssl req failed"
chmod 644 "$KEY"

# ---------------------------------------------------------------- upstream
UPD=$TMP/upstream
mkdir -p "$UPD/www" "$UPD/logs"
head -c 100 /dev/zero | tr '\0' a >"$UPD/www/100b.txt"
head -c 65536 /dev/urandom >"$UPD/www/64k.bin"
echo ok >"$UPD/www/ok.txt"
chmod -R a+rX "$UPD"
cat >"$UPD/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $UPD/nginx.pid;
error_log $UPD/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$UPD")
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$P_UP backlog=4096; root $UPD/www; location / { } }
}
EOF

# ---------------------------------------------------------------- the proxies
NXD=$TMP/nginx-proxy
mkdir -p "$NXD/logs"
cat >"$NXD/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $NXD/nginx.pid;
error_log $NXD/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(nginx_temp_paths "$NXD")
    keepalive_requests 100000000;
    upstream up { server 127.0.0.1:$P_UP; keepalive 256; }
    server {
        listen 127.0.0.1:$P_NGX ssl http2 backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
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
shutdown_grace: 2s
redis: { private: { enabled: false } }
limits: { keepalive_requests_max: 4294967295 }
tls:
  certificates:
    - { cert: "$CERT", key: "$KEY" }
routes:
  - match: { path_prefix: "/" }
    upstream: "127.0.0.1:$P_UP"
EOF

start_nginx() {
    local pin=("${PIN_PROXY[@]}")
    [[ $1 == "$UPD" ]] && pin=("${PIN_LOAD[@]}")
    "${pin[@]}" nginx -p "$1/" -c "$1/nginx.conf" -e "$1/logs/error.log" >>"$1/logs/stdout.log" 2>&1 &
    REPLY=$!
    PIDS+=("$REPLY")
}

wait_https() {
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sk -o /dev/null --max-time 1 "https://127.0.0.1:$1/ok.txt" && return 0
        sleep 0.1
    done
    return 1
}

start_nginx "$UPD"
"${LIB[@]}" wait "http://127.0.0.1:$P_UP/ok.txt" 10 || die "upstream nginx did not start"
start_nginx "$NXD"; NGX_PID=$REPLY
wait_https "$P_NGX" || die "nginx proxy did not start"
NGX_W=$(nginx_worker "$NGX_PID") || die "no nginx proxy worker"
"${PIN_PROXY[@]}" "$WG" -c "$WGD/wakegate.yaml" >>"$WGD/stderr.log" 2>&1 &
WG_PID=$!
PIDS+=("$WG_PID")
wait_https "$P_WG" || { cat "$WGD/stderr.log" >&2; die "wakegate did not start"; }

# One wrk run: label port path size extra-args...; appends a JSON line to $TMP/runs.jsonl.
PROBLEMS=0
run() {
    local label=$1 port=$2 path=$3 size=$4 pid=$5 kind=$6
    shift 6
    local out=$TMP/wrk-$label-$kind.txt t0 t1
    t0=$(ticks "$pid")
    timeout $((SECS + 30)) "${PIN_LOAD[@]}" wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$@" "https://127.0.0.1:$port$path" >"$out" 2>&1 ||
        die "wrk failed against $label: $(tail -3 "$out")"
    t1=$(ticks "$pid")
    if ! "${LIB[@]}" check-wrk "$out" "$size" >"$out.problems"; then
        log "!!! $label $kind: $(cat "$out.problems")"
        PROBLEMS=1
    fi
    "$PY" -c '
import json, sys
sys.path.insert(0, sys.argv[6])
import benchlib
r = benchlib.parse_wrk(open(sys.argv[1]).read())
cpu = int(sys.argv[4]) / int(sys.argv[5])
print(json.dumps({"label": sys.argv[2], "kind": sys.argv[3], "rps": r["rps"], "requests": r["requests"],
                  "p99_ms": r["p99_ms"], "cpu_s": cpu,
                  "cpu_ms_per_1k": 1e6 * cpu / r["requests"] if r["requests"] else None}))
' "$out" "$label" "$kind" $((t1 - t0)) "$(getconf CLK_TCK)" "$HERE" >>"$TMP/runs.jsonl"
}

# Full handshakes, one connection at a time: openssl s_time -new (no
# resumption, no request).
s_time_run() {
    local label=$1 port=$2 pid=$3 out=$TMP/s_time-$1.txt t0 t1
    t0=$(ticks "$pid")
    timeout $((SECS + 30)) "${PIN_LOAD[@]}" openssl s_time -connect "127.0.0.1:$port" -new -time "$SECS" >"$out" 2>&1 ||
        die "openssl s_time failed against $label: $(tail -3 "$out")"
    t1=$(ticks "$pid")
    "$PY" -c '
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^(\d+) connections in \d+ real seconds", text, re.M)
n, secs = int(m.group(1)), float(sys.argv[5])
cpu = int(sys.argv[3]) / int(sys.argv[4])
print(json.dumps({"label": sys.argv[2], "kind": "full-handshake", "rps": n / secs, "requests": n,
                  "p99_ms": 0.0, "cpu_s": cpu, "cpu_ms_per_1k": 1e6 * cpu / n if n else None}))
' "$out" "$label" $((t1 - t0)) "$(getconf CLK_TCK)" "$SECS" >>"$TMP/runs.jsonl"
}
s_time_run nginx "$P_NGX" "$NGX_W"
s_time_run wakegate "$P_WG" "$WG_PID"

log "wrk -t2 -c$CONNS -d${SECS}s, TLS 1.3, nginx (worker $NGX_W) then wakegate (pid $WG_PID)"
for kind in handshake keepalive-100b keepalive-64k; do
    for target in nginx wakegate; do
        if [[ $target == nginx ]]; then port=$P_NGX pid=$NGX_W; else port=$P_WG pid=$WG_PID; fi
        case $kind in
        handshake) run "$target" "$port" /100b.txt 100 "$pid" "$kind" -H "Connection: close" ;;
        keepalive-100b) run "$target" "$port" /100b.txt 100 "$pid" "$kind" ;;
        keepalive-64k) run "$target" "$port" /64k.bin 65536 "$pid" "$kind" ;;
        esac
        sleep 1
    done
done
# HTTP/2: h2load for SECS seconds; appends a JSON line like run().
h2_run() {
    local label=$1 port=$2 path=$3 pid=$4 kind=$5 out=$TMP/h2load-$1-$5.txt t0 t1
    t0=$(ticks "$pid")
    timeout $((SECS + 30)) "${PIN_LOAD[@]}" h2load -t 1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "$SECS" \
        "https://127.0.0.1:$port$path" >"$out" 2>&1 || die "h2load failed against $label: $(tail -3 "$out")"
    t1=$(ticks "$pid")
    "$PY" -c '
import json, re, sys
text = open(sys.argv[1]).read()
proto = re.search(r"Application protocol: (\S+)", text)
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", text)
st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
rps = re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", text)
if not (proto and proto.group(1) == "h2" and m and st and rps):
    sys.exit("h2load output not understood or not h2:\n" + text[-800:])
ok, failed = int(m.group(4)), int(m.group(5))
if failed or int(st.group(4)) or int(st.group(3)):
    sys.stderr.write("bench: !!! %s %s: %d failed, %s 4xx, %s 5xx\n" % (sys.argv[2], sys.argv[3], failed, st.group(3), st.group(4)))
cpu = int(sys.argv[4]) / int(sys.argv[5])
print(json.dumps({"label": sys.argv[2], "kind": sys.argv[3], "rps": float(rps.group(1)), "requests": ok,
                  "p99_ms": 0.0, "cpu_s": cpu, "cpu_ms_per_1k": 1e6 * cpu / ok if ok else None}))
' "$out" "$label" "$kind" $((t1 - t0)) "$(getconf CLK_TCK)" >>"$TMP/runs.jsonl" || die "h2load run $label $kind"
}

log "h2load -c$H2_CONNS -m$H2_STREAMS -D$SECS, HTTP/2 over TLS 1.3"
for kind in h2-100b h2-64k; do
    for target in nginx wakegate; do
        if [[ $target == nginx ]]; then port=$P_NGX pid=$NGX_W; else port=$P_WG pid=$WG_PID; fi
        if [[ $kind == h2-100b ]]; then path=/100b.txt; else path=/64k.bin; fi
        h2_run "$target" "$port" "$path" "$pid" "$kind"
        sleep 1
    done
done
running "$WG_PID" || die "wakegate died"
running "$NGX_PID" || die "nginx proxy died"

mkdir -p "$RESULTS"
export GIT_COMMIT; GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
export NGINX_VERSION; NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
"$PY" - "$TMP/runs.jsonl" "$RESULTS/tls-latest.json" <<'EOF'
import json, os, sys, time
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["kind"], r["label"]): r for r in runs}
print("%-16s %-9s %12s %10s %18s" % ("run", "proxy", "req/s", "p99 ms", "CPU ms / 1k req"))
ratios = {}
for kind in ("full-handshake", "handshake", "keepalive-100b", "keepalive-64k", "h2-100b", "h2-64k"):
    for label in ("nginx", "wakegate"):
        r = by[(kind, label)]
        print("%-16s %-9s %12.0f %10.2f %18.1f" % (kind, label, r["rps"], r["p99_ms"], r["cpu_ms_per_1k"] or 0))
    n, w = by[(kind, "nginx")], by[(kind, "wakegate")]
    ratios[kind] = {"rps_wakegate_nginx": round(w["rps"] / n["rps"], 2) if n["rps"] else None,
                    "cpu_per_req_wakegate_nginx": round(w["cpu_ms_per_1k"] / n["cpu_ms_per_1k"], 2)
                    if n["cpu_ms_per_1k"] else None}
    print("%-16s wakegate/nginx: req/s %.2f, CPU per request %.2f" % (
        kind, ratios[kind]["rps_wakegate_nginx"] or 0, ratios[kind]["cpu_per_req_wakegate_nginx"] or 0))
json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": os.environ["GIT_COMMIT"],
           "nginx_version": os.environ["NGINX_VERSION"], "runs": runs, "ratios": ratios},
          open(sys.argv[2], "w"), indent=2)
EOF
((PROBLEMS == 0)) || die "some runs were not clean (see !!! above)"
