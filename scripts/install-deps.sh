#!/usr/bin/env bash
# Installs what one use of wakegate needs, from Debian's packages, and
# nothing more. Idempotent: when everything is present it only checks.
#
#   scripts/install-deps.sh [demo|run|build|test] [--print]
#
#   demo   (default) what scripts/demo.sh needs: build + run
#   run    what a built wakegate and the demo use at run time: redis-server
#          (the private Redis wakegate starts itself), a Docker engine,
#          busybox-static and git (the demo session image), curl
#   build  compiler, meson, ninja, the libraries' -dev packages, llhttp
#   test   everything scripts/test.sh needs: build + run + the test tools
#          (cmocka, clang, nginx, haproxy, wrk, Chromium, pytest, redis-sentinel...)
#   --print  print the mode's packages, one a line, and install nothing
#
# No service is left running or enabled by the install: while apt-get runs,
# /usr/sbin/policy-rc.d forbids starting services (a policy-rc.d the machine
# already has that forbids them is kept as it is; any other is put back
# afterwards), and every systemd unit shipped by a package this run
# installed (dependencies included) that is enabled now and was not before
# is disabled and stopped. Units the machine had are never touched. So
# installing redis-server, nginx or haproxy does not leave a server on
# :6379, :80 or anywhere else: wakegate and the tests start their own.
#
# docker.io is not installed when dockerd and docker are already on PATH
# (docker-ce, say). Its service is disabled like the others: the demo uses
# an engine that answers at /var/run/docker.sock, else starts its own.
#
# For the tests of this script: WAKEGATE_DEPS_POLICY_RC is the policy-rc.d
# path (default /usr/sbin/policy-rc.d).
set -euo pipefail

usage() { sed -n '2,30s/^# \{0,1\}//p' "$0"; }
die() { printf 'install-deps: %s\n' "$*" >&2; exit 2; }

mode=demo
print=0
for a in "$@"; do
  case $a in
  demo | run | build | test) mode=$a ;;
  --print) print=1 ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown argument '$a'" ;;
  esac
done

BUILD_PKGS=(
  build-essential pkg-config meson ninja-build
  libuv1-dev libcurl4-openssl-dev libhiredis-dev libjansson-dev libyaml-dev libssl-dev
  libnghttp2-dev
  node-llhttp
)
RUN_PKGS=(redis-server docker.io busybox-static git curl)
TEST_PKGS=(
  clang clang-format libclang-rt-14-dev libcmocka-dev
  nginx-light libnginx-mod-http-echo haproxy wrk
  python3 python3-pytest python3-pytest-timeout python3-requests python3-redis
  python3-websockets python3-yaml python3-h2 nghttp2-client
  procps iproute2 chromium systemd
  openssl
  redis-sentinel
)

case $mode in
run) want=("${RUN_PKGS[@]}") ;;
build) want=("${BUILD_PKGS[@]}") ;;
demo) want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}") ;;
test) want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}" "${TEST_PKGS[@]}") ;;
esac

PKGS=()
for p in "${want[@]}"; do
  # An engine of another packaging (docker-ce) already serves: docker.io
  # would replace it.
  if [ "$p" = docker.io ] && command -v dockerd >/dev/null && command -v docker >/dev/null; then
    continue
  fi
  PKGS+=("$p")
done

if [ "$print" = 1 ]; then
  printf '%s\n' "${PKGS[@]}"
  exit 0
fi

installed() { # the installed packages, one a line, sorted
  dpkg-query -W -f='${binary:Package} ${db:Status-Status}\n' 2>/dev/null |
    awk '$2 == "installed" { sub(/:.*/, "", $1); print $1 }' | sort -u
}

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages for '$mode' present"
  exit 0
fi

# ---------------------------------------------------------------- no services
have_systemctl() { command -v systemctl >/dev/null; }
enabled_units() { # unit files enabled now, one a line, sorted
  have_systemctl || return 0
  systemctl list-unit-files --state=enabled --no-legend --no-pager 2>/dev/null |
    awk '{ print $1 }' | sort -u
}

policy=${WAKEGATE_DEPS_POLICY_RC:-/usr/sbin/policy-rc.d}
policy_saved=
policy_ours=0
restore_policy() {
  if [ "$policy_ours" = 1 ]; then
    rm -f "$policy"
    policy_ours=0
    if [ -n "$policy_saved" ]; then
      mv -f "$policy_saved" "$policy"
      policy_saved=
    fi
  fi
}
trap 'exit 130' INT TERM

forbid_starts() {
  if [ -x "$policy" ]; then
    # The machine's own: kept when it already forbids starting (exit 101).
    local rc=0
    "$policy" wakegate-probe.service start >/dev/null 2>&1 || rc=$?
    [ "$rc" = 101 ] && return 0
  fi
  if [ -e "$policy" ]; then
    policy_saved=$policy.wakegate-saved
    mv -f "$policy" "$policy_saved"
  fi
  policy_ours=1
  printf '#!/bin/sh\n# scripts/install-deps.sh: no service starts while it installs.\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
}

# Disables and stops the units shipped by the packages in $1 (a file, one
# a line) that are enabled now and were not in $2 (enabled before).
disable_new_units() {
  have_systemctl || return 0
  local units=() u state
  while read -r pkg; do
    [ -n "$pkg" ] || continue
    while read -r u; do
      units+=("$u")
    done < <(dpkg-query -L "$pkg" 2>/dev/null |
      sed -n -E 's@^(/usr)?/lib/systemd/system/([^/@]+\.(service|socket|timer|path))$@\2@p')
  done <"$1"
  [ ${#units[@]} -gt 0 ] || return 0
  for u in $(printf '%s\n' "${units[@]}" | sort -u); do
    grep -qxF "$u" "$2" && continue # the machine had it enabled: not ours
    state=$(systemctl is-enabled "$u" 2>/dev/null || true)
    case $state in
    enabled | enabled-runtime)
      systemctl disable --quiet "$u" 2>/dev/null || systemctl disable "$u"
      echo "install-deps: disabled $u (installed as a dependency, not used as a service)"
      ;;
    esac
    # policy-rc.d kept it from starting; should a maintainer script have
    # started it anyway, stop it (without a running systemd: inactive).
    if systemctl is-active --quiet "$u" 2>/dev/null; then
      systemctl stop "$u"
      echo "install-deps: stopped $u"
    fi
  done
}

work=$(mktemp -d)
trap 'restore_policy; rm -rf "$work"' EXIT
installed >"$work/pkgs-before"
enabled_units >"$work/units-before"

echo "install-deps: installing for '$mode': ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
forbid_starts
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
restore_policy

installed >"$work/pkgs-after"
comm -13 "$work/pkgs-before" "$work/pkgs-after" >"$work/pkgs-new"
disable_new_units "$work/pkgs-new" "$work/units-before"
echo "install-deps: done ($(wc -l <"$work/pkgs-new") packages installed)"
