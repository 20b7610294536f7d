#!/usr/bin/env bash
# Wake latency benchmark: first request to first byte through wakegate
# against the floor (Docker start, then the first answer from the container),
# measured in the same run. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
if [ ! -f build-bench/build.ninja ]; then
  meson setup build-bench --buildtype=release >/dev/null
fi
ninja -C build-bench >/dev/null
exec /usr/bin/python3 bench/wake_latency.py "$@"
