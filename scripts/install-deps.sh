#!/usr/bin/env bash
# Installs every build, run and test dependency of wakegate from Debian's
# packages. Idempotent: when everything is present it only checks and exits.
set -euo pipefail

PKGS=(
  build-essential pkg-config meson ninja-build clang clang-format libclang-rt-14-dev
  libuv1-dev libcurl4-openssl-dev libhiredis-dev libjansson-dev libyaml-dev libssl-dev
  node-llhttp libcmocka-dev
  redis-server nginx-light libnginx-mod-http-echo haproxy docker.io busybox-static
  git curl
  python3 python3-pytest python3-pytest-timeout python3-requests python3-redis
  python3-websockets python3-yaml
  wrk procps iproute2
  chromium systemd
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
