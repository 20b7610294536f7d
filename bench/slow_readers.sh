#!/usr/bin/env bash
# bench/slow_readers.sh - memory per client that stops reading a large
# response: wakegate vs nginx as a reverse proxy, same upstream, same run.
#
# See bench/README.md. Everything runs on 127.0.0.1, inside one temp dir, and
# every process started here is stopped by its PID on exit.
#
# Environment:
#   BENCH_SLOW_READERS=N   clients that never read (default 300)
#   BENCH_WAKEGATE=PATH    wakegate binary (default build-bench/src/wakegate, built here)
#   BENCH_NO_BUILD=1       do not run meson/ninja
#   BENCH_KEEP_TMP=1       keep the temp dir
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB=("$PY" "$HERE/benchlib.py")
RESULTS="$HERE/results"
N=${BENCH_SLOW_READERS:-300}

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for tool in nginx "$PY"; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages: nginx python3)"
done

. "$HERE/benchlib.sh"
WG=$(bench_wakegate) || exit 1

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)
((NOFILE >= 4 * N + 1024)) || die "RLIMIT_NOFILE is $NOFILE, $N readers need $((4 * N + 1024))"

TMP=$(mktemp -d /tmp/wakegate-bench-slow.XXXXXX)
chmod 755 "$TMP"
PIDS=()

trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_UP P_NGX P_WG P_WGADM < <("${LIB[@]}" freeports 4)

# ---------------------------------------------------------------- upstream: a 1 GiB file
UPD=$TMP/upstream
mkdir -p "$UPD/www" "$UPD/logs"
truncate -s 1G "$UPD/www/1g.bin"   # sparse: no disk blocks
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
    server { listen 127.0.0.1:$P_UP backlog=4096; root $UPD/www; location / { } }
}
EOF

# ---------------------------------------------------------------- the proxies
# nginx: default proxy buffers (proxy_buffer_size 4k|8k, proxy_buffers 8 4k|8k);
# proxy_max_temp_file_size 0 so it does not write up to 1 GiB per reader to
# disk: with it, nginx would read the upstream into temp files instead of
# stopping, which moves the memory to disk rather than saving it.
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
    upstream up { server 127.0.0.1:$P_UP; keepalive 256; }
    server {
        listen 127.0.0.1:$P_NGX backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
EOF

# wakegate: its defaults (limits.buffer_high_water 32KiB).
WGD=$TMP/wakegate
mkdir -p "$WGD"
cat >"$WGD/wakegate.yaml" <<EOF
listen: "127.0.0.1:$P_WG"
admin: { listen: "127.0.0.1:$P_WGADM" }
log: { level: warn, access: false }
shutdown_grace: 2s
redis: { private: { enabled: false } }
routes:
  - match: { path_prefix: "/" }
    upstream: "127.0.0.1:$P_UP"
EOF

start_nginx() {
    nginx -p "$1/" -c "$1/nginx.conf" -e "$1/logs/error.log" >>"$1/logs/stdout.log" 2>&1 &
    REPLY=$!
    PIDS+=("$REPLY")
}

start_nginx "$UPD"; UP_PID=$REPLY
"${LIB[@]}" wait "http://127.0.0.1:$P_UP/ok.txt" 10 || die "upstream nginx did not start"
start_nginx "$NXD"; NGX_PID=$REPLY
"${LIB[@]}" wait "http://127.0.0.1:$P_NGX/ok.txt" 10 || die "nginx proxy did not start"
NGX_W=$(nginx_worker "$NGX_PID") || die "no nginx proxy worker"
"$WG" -c "$WGD/wakegate.yaml" >>"$WGD/stderr.log" 2>&1 &
WG_PID=$!
PIDS+=("$WG_PID")
"${LIB[@]}" wait "http://127.0.0.1:$P_WGADM/healthz" 10 || { cat "$WGD/stderr.log" >&2; die "wakegate did not start"; }
for p in "$P_NGX" "$P_WG"; do
    for _ in 1 2 3; do "${LIB[@]}" get "http://127.0.0.1:$p/ok.txt" 3 || die "proxy :$p does not serve /ok.txt"; done
done
sleep 0.5

log "$N readers that never read /1g.bin: nginx-proxy (worker $NGX_W), then wakegate (pid $WG_PID)"
timeout 120 "${LIB[@]}" slow "nginx-proxy worker" "$P_NGX" /1g.bin "$N" "$NGX_W" >"$TMP/slow-nginx.json" ||
    die "slow-reader run against nginx failed"
sleep 2
timeout 120 "${LIB[@]}" slow "wakegate" "$P_WG" /1g.bin "$N" "$WG_PID" >"$TMP/slow-wakegate.json" ||
    die "slow-reader run against wakegate failed"
running "$WG_PID" || die "wakegate died"
running "$NGX_PID" || die "nginx proxy died"

mkdir -p "$RESULTS"
export GIT_COMMIT; GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
export NGINX_VERSION; NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
export WG
"$PY" - "$TMP/slow-nginx.json" "$TMP/slow-wakegate.json" "$RESULTS/slow-readers-latest.json" <<'EOF'
import json, os, sys, time
ngx, wg = (json.load(open(p)) for p in sys.argv[1:3])
bad = [r["label"] for r in (ngx, wg) if r["failures"] or r["established"] != r["readers"]
       or r["with_response_bytes"] != r["readers"]]
print("%-20s %8s %12s %12s %14s" % ("proxy", "readers", "RSS base", "RSS peak", "KiB per reader"))
for r in (ngx, wg):
    print("%-20s %8d %9d KiB %9d KiB %14.1f" % (r["label"], r["readers"], r["rss_kib_base"],
                                                r["rss_kib_peak"], r["kib_per_reader"]))
ratio = wg["kib_per_reader"] / ngx["kib_per_reader"] if ngx["kib_per_reader"] > 0 else float("nan")
print("per reader, wakegate/nginx: %.2f" % ratio)
e = os.environ
json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": e["GIT_COMMIT"],
           "wakegate_binary": e["WG"], "nginx_version": e["NGINX_VERSION"],
           "nginx": ngx, "wakegate": wg, "ratio_per_reader_wakegate_nginx": round(ratio, 2),
           "problems": bad}, open(sys.argv[3], "w"), indent=2)
if bad:
    print("FAILED: not every reader had a response in progress: %s" % ", ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
