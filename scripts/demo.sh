#!/usr/bin/env bash
# Installs what is missing, builds, and starts wakegate in the foreground
# with a demo upstream behind a static route. Ctrl-C (or SIGTERM) stops both.
#
#   WAKEGATE_DEMO_PORT   public port (default 8080)
#   WAKEGATE_DEMO_ADMIN  admin port (default 8081)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/install-deps.sh

if [ ! -f build-demo/build.ninja ]; then
  meson setup build-demo --buildtype=release >/dev/null
fi
ninja -C build-demo >/dev/null
echo "demo: built $root/build-demo/src/wakegate"

port=${WAKEGATE_DEMO_PORT:-8080}
admin=${WAKEGATE_DEMO_ADMIN:-8081}
upstream_port=${WAKEGATE_DEMO_UPSTREAM_PORT:-9000}
run=$(mktemp -d /tmp/wakegate-demo.XXXXXX)

busybox httpd -f -p "127.0.0.1:$upstream_port" -h "$root/deploy/demo/www" &
upstream_pid=$!
wg_pid=
cleanup() {
  [ -n "$wg_pid" ] && kill -TERM "$wg_pid" 2>/dev/null && wait "$wg_pid" 2>/dev/null
  kill -TERM "$upstream_pid" 2>/dev/null && wait "$upstream_pid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$run/wakegate.yaml" <<YAML
listen: "127.0.0.1:$port"
admin: { listen: "127.0.0.1:$admin" }
routes:
  - match: { host: "demo.localhost" }
    upstream: "127.0.0.1:$upstream_port"
  - match: { path_prefix: "/demo/" }
    strip_prefix: true
    upstream: "127.0.0.1:$upstream_port"
YAML

"$root/build-demo/src/wakegate" --config "$run/wakegate.yaml" &
wg_pid=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null

cat <<MSG

wakegate is running (pid $wg_pid), config $run/wakegate.yaml

  curl -H 'Host: demo.localhost' http://127.0.0.1:$port/     # routed by Host
  curl http://127.0.0.1:$port/demo/                          # routed by path, prefix stripped
  curl http://127.0.0.1:$port/nowhere                        # no route: 404 from wakegate
  curl http://127.0.0.1:$admin/healthz                       # liveness
  curl http://127.0.0.1:$admin/readyz                        # readiness
  curl http://127.0.0.1:$admin/metrics                       # Prometheus metrics
  kill -HUP $wg_pid                                          # reload routes from the file

Ctrl-C stops the demo.
MSG
wait "$wg_pid"
