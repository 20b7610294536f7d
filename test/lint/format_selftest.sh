#!/usr/bin/env bash
# tools/check_format.sh must fail on a file that .clang-format would change,
# and pass once it is formatted: the CI format check can fail.
set -uo pipefail
check=$1
rcfile=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/common"
cp "$rcfile" "$tmp/.clang-format"
printf 'int  f( int a ){return a;}\n' >"$tmp/common/bad.c"
if "$check" "$tmp" >"$tmp/out" 2>&1; then
  echo "format_selftest: check_format passed a badly formatted file"; cat "$tmp/out"; exit 1
fi
clang-format -i "$tmp/common/bad.c"
if ! "$check" "$tmp" >"$tmp/out" 2>&1; then
  echo "format_selftest: check_format failed a formatted file"; cat "$tmp/out"; exit 1
fi
echo "format_selftest: ok"
