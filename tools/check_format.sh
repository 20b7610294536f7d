#!/usr/bin/env bash
# Every C file of the project is formatted by its .clang-format.
#
#   tools/check_format.sh [ROOT]
#
# Lists the files git tracks (or, outside a checkout, every .c/.h below the
# parts), runs `clang-format --dry-run --Werror` on them and exits non-zero
# with clang-format's report when one differs. Fix with
# `clang-format -i FILE`.
set -uo pipefail
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2
if ! command -v clang-format >/dev/null; then
  echo "check_format: clang-format is not installed (scripts/install-deps.sh installs it)" >&2
  exit 2
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.c' '*.h')
else
  mapfile -t files < <(find common proxy orchestrator admin src test bench tools \
    -name '*.c' -o -name '*.h' 2>/dev/null)
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "check_format: no C files found under $PWD" >&2
  exit 2
fi
if ! clang-format --dry-run --Werror "${files[@]}"; then
  echo "check_format: files above differ from .clang-format" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
