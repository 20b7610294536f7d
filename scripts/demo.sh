#!/usr/bin/env bash
# The quickstart: everything needed to watch a session go through its whole
# life in about a minute, on a fresh Debian 12 machine, as root.
#
#   ./scripts/demo.sh
#
# It installs what is missing for the demo only (scripts/install-deps.sh
# demo: no test tool, and no service of those packages left enabled or
# running), builds wakegate (release), installs `wakegate` and `wakegatectl`
# in /usr/local/bin, finds a Docker engine (or starts one), builds the demo
# session image, starts wakegate in the foreground with a private
# redis-server it supervises and short idle timeouts, creates the session
# "s-demo" whose work is saved to a bare git repository on this machine, and
# prints what to try. Everything listens on 127.0.0.1 only.
#
# Ctrl-C stops wakegate (its shutdown lines stay in the log), then the Docker
# engine when this script started it, and unmounts what that engine left.
#
# State lives in one directory and persists between runs (the session, its
# git remote, Redis's data, the token, the engine's images). To reset:
#   rm -rf /var/lib/wakegate-demo /usr/local/bin/wakegate /usr/local/bin/wakegatectl
#
# Settings (environment):
#   WAKEGATE_DEMO_DIR         state: config, token, git remotes, Redis data,
#                             the engine it starts (default /var/lib/wakegate-demo)
#   WAKEGATE_DEMO_BINDIR      where wakegate and wakegatectl go (/usr/local/bin)
#   WAKEGATE_DEMO_PORT        public port (default 8080)
#   WAKEGATE_DEMO_ADMIN       admin port (default 8081)
#   WAKEGATE_DEMO_STOP_AFTER  idle time before a session is saved and stopped (20s)
#   WAKEGATE_DEMO_SESSION     the session created (s-demo)
#   WAKEGATE_DOCKER_HOST      the engine to use (default: /var/run/docker.sock
#                             when it answers, else one this script starts)
#   WAKEGATE_DEMO_OWN_DOCKERD=1  always start a Docker engine of its own
#   WAKEGATE_DEMO_DOCKERD_FLAGS  extra dockerd flags for that engine (e.g.
#                             --bridge=NAME --iptables=false)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

state=${WAKEGATE_DEMO_DIR:-/var/lib/wakegate-demo}
bindir=${WAKEGATE_DEMO_BINDIR:-/usr/local/bin}
port=${WAKEGATE_DEMO_PORT:-8080}
admin=${WAKEGATE_DEMO_ADMIN:-8081}
stop_after=${WAKEGATE_DEMO_STOP_AFTER:-20s}
session=${WAKEGATE_DEMO_SESSION:-s-demo}
image=wakegate-demo:latest

say() { printf 'quickstart: %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root: I install packages and may start a Docker engine"

# ---------------------------------------------------------------- install and build
./scripts/install-deps.sh demo
# No unit tests or fuzz replayers: the demo's packages have no cmocka.
if [ ! -f build-demo/build.ninja ]; then
  meson setup build-demo --buildtype=release -Dtests=false >/dev/null
elif meson introspect build-demo --buildoptions 2>/dev/null | grep -q '"name": "tests", "value": true'; then
  meson configure build-demo -Dtests=false >/dev/null
fi
ninja -C build-demo src/wakegate >/dev/null
say "built $root/build-demo/src/wakegate"

mkdir -p "$state"
chmod 0700 "$state"
config=$state/wakegate.yaml

# ---------------------------------------------------------------- on PATH
# wakegate itself, and wakegatectl: `wakegate ctl` with the demo's
# configuration unless --config or WAKEGATE_CONFIG names another. A
# wakegatectl this script did not write (a real installation) is left as it
# is, and the commands below then name the demo's configuration.
marker="# Written by scripts/demo.sh"
bin=$bindir/wakegate
ctl=$bindir/wakegatectl
ctl_args=
if [ -e "$ctl" ] && ! grep -qF "$marker" "$ctl" 2>/dev/null; then
  say "$ctl is not the demo's: left as it is"
  bin=$root/build-demo/src/wakegate
  ctl="$bin ctl"
  ctl_args=" --config $config"
else
  mkdir -p "$bindir"
  install -m 0755 build-demo/src/wakegate "$bin.demo-new"
  mv -f "$bin.demo-new" "$bin"
  cat >"$ctl.demo-new" <<CTL
#!/bin/sh
$marker: wakegatectl reading the demo's configuration
# ($config) unless --config or WAKEGATE_CONFIG names another one.
# Uninstall: rm $bin $ctl
if [ -z "\${WAKEGATE_CONFIG:-}" ]; then
  WAKEGATE_CONFIG=$config
  export WAKEGATE_CONFIG
fi
exec $bin ctl "\$@"
CTL
  chmod 0755 "$ctl.demo-new"
  mv -f "$ctl.demo-new" "$ctl"
  say "installed $bin and $ctl"
fi

dockerd_pid=
wg_pid=
tee_pid=
# wakegate and the engine run in sessions of their own: the terminal's
# Ctrl-C reaches only this script (and the log's tee, which ignores it), and
# each gets exactly one SIGTERM from here, wakegate first.
stop_pid() { # pid what seconds: SIGTERM, then SIGKILL after that long
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 $(($3 * 10))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  say "$2 (pid $1) did not stop in $3 s: killing it"
  kill -KILL "$1" 2>/dev/null || true
}
unmount_under() { # every mount point under $1, deepest first
  local m
  awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "cannot unmount $m"
    done
}
cleanup() {
  if [ -n "$wg_pid" ]; then
    stop_pid "$wg_pid" wakegate 30
    wait "$wg_pid" 2>/dev/null || true
  fi
  if [ -n "$tee_pid" ]; then
    exec {logfd}>&- # tee sees the end of wakegate's output once wakegate is gone
    for _ in $(seq 1 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -n "$dockerd_pid" ]; then
    say "stopping the Docker engine it started (pid $dockerd_pid)"
    stop_pid "$dockerd_pid" dockerd 60
    wait "$dockerd_pid" 2>/dev/null || true
    unmount_under "$state/docker"
  fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM HUP

# ---------------------------------------------------------------- a Docker engine
ping_engine() { # unix:///path
  curl -fsS --max-time 2 --unix-socket "${1#unix://}" http://docker/_ping >/dev/null 2>&1
}
docker_host=${WAKEGATE_DOCKER_HOST:-}
if [ -z "$docker_host" ] && [ "${WAKEGATE_DEMO_OWN_DOCKERD:-0}" != 1 ] &&
  ping_engine unix:///var/run/docker.sock; then
  docker_host=unix:///var/run/docker.sock
fi
if [ -z "$docker_host" ]; then
  command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
  mkdir -p "$state/docker"
  say "starting a Docker engine of its own (log $state/docker/dockerd.log)"
  # shellcheck disable=SC2086 # the extra flags are words on purpose
  setsid dockerd --host "unix://$state/docker/docker.sock" --data-root "$state/docker/data" \
    --exec-root "$state/docker/exec" --pidfile "$state/docker/dockerd.pid" --shutdown-timeout 10 \
    ${WAKEGATE_DEMO_DOCKERD_FLAGS:-} </dev/null >"$state/docker/dockerd.log" 2>&1 &
  dockerd_pid=$!
  docker_host=unix://$state/docker/docker.sock
  for _ in $(seq 1 300); do ping_engine "$docker_host" && break; sleep 0.2; done
  ping_engine "$docker_host" || { tail -20 "$state/docker/dockerd.log" >&2; die "dockerd did not answer in 60 s"; }
fi
say "Docker engine: $docker_host"

# ---------------------------------------------------------------- the demo image
if [ "${WAKEGATE_DEMO_REBUILD:-0}" = 1 ] || ! DOCKER_HOST=$docker_host docker image inspect "$image" >/dev/null 2>&1; then
  say "building the demo session image $image (FROM scratch: busybox + git)"
  deploy/demo-image/build.sh -H "$docker_host" -t "$image" >/dev/null
fi

# ---------------------------------------------------------------- config, token, remote
token_file=$state/admin.token
[ -s "$token_file" ] || (umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")
chmod 0600 "$token_file"
token=$(cat "$token_file")
remote=$state/remotes/$session.git
if [ ! -d "$remote" ]; then
  mkdir -p "$state/remotes"
  git init -q --bare -b main "$remote"
fi

cat >"$config" <<YAML
# Written by scripts/demo.sh: short timeouts so the whole cycle shows in a
# minute. Every key: docs/configuration.md.
listen: "127.0.0.1:$port"
admin: { listen: "127.0.0.1:$admin", token_file: "$token_file" }
# No redis.url: wakegate starts and supervises its own redis-server.
redis: { private: { dir: "$state/redis" } }
docker: { host: "$docker_host", name: demo, max_concurrent_starts: 8 }
sessions:
  image: "$image"
  port: 8080
  wake_timeout: 30s
  idle: { pause_after: 0s, stop_after: $stop_after, activity_interval: 1s, reap_every: 1s, drain: 2s }
  save: { path: /work/repo, timeout: 30s, on_failure: keep_awake, retry_backoff: 5s, retry_max: 30s }
  # The session's bind of its git remote; any other source is refused.
  binds: { allow: ["$state/remotes/"] }
# Public, for the demo on loopback: session routes are private by default
# (signed links, access.secret_file); see docs/configuration.md.
routes:
  - match: { host: "{session}.localhost" }
    access: public
  - match: { path_prefix: "/s/{session}/" }
    strip_prefix: true
    access: public
non_waking: { paths: ["/favicon.ico"], user_agents: ["kube-probe"] }
log: { level: info, access: true }
YAML
"$bin" --config "$config" --check-config >/dev/null

# ---------------------------------------------------------------- start
# The log: a copy on the terminal and in wakegate.log, by a tee that
# ignores Ctrl-C and a terminal gone, so the shutdown lines are kept.
exec {logfd}> >(trap '' INT HUP PIPE; exec tee -a --output-error=warn "$state/wakegate.log" >&2)
tee_pid=$!
setsid "$bin" --config "$config" </dev/null 2>&$logfd &
wg_pid=$!
for _ in $(seq 1 150); do
  curl -fsS --max-time 1 "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
  kill -0 "$wg_pid" 2>/dev/null || die "wakegate exited; see $state/wakegate.log"
  sleep 0.2
done
curl -fsS --max-time 2 "http://127.0.0.1:$admin/readyz" >/dev/null || die "wakegate is not ready after 30 s"

code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
  -d "{\"id\":\"$session\",\"binds\":[\"$remote:/remote\"]}" "http://127.0.0.1:$admin/v1/sessions")
case $code in 200|201) ;; *) die "cannot create the session $session: HTTP $code" ;; esac

cat <<MSG

wakegate is running (pid $wg_pid) on 127.0.0.1 only; state in $state
(log $state/wakegate.log)

  1. Open the session in a browser (a waking page, then the app):
       http://$session.localhost:$port/
     or without DNS:  curl http://127.0.0.1:$port/s/$session/
  2. Count something (the counter lives in the session's git work tree):
       curl 'http://127.0.0.1:$port/s/$session/?incr=1'
  3. Watch it: after $stop_after without requests it saves the counter to git
     and stops the container:
       $ctl$ctl_args ls
       $ctl$ctl_args events -f
       git --git-dir $remote log --stat
     Dashboard: http://127.0.0.1:$admin/dashboard#token=$token
  4. Reload the page: the session wakes with its counter intact.

Ctrl-C stops wakegate. From another machine: ssh -L $port:127.0.0.1:$port ${HOSTNAME:-this-host}
then http://127.0.0.1:$port/s/$session/ there. Reset: rm -rf $state
MSG
say "ready"
wait "$wg_pid"
