#!/usr/bin/env bash
# Runs a command (the CPU tests) with the CMake build of the CPU kernels compiled with ASan and UBSan
# (build-sanitize/, `make sanitize` builds it), the sanitizer runtimes preloaded into Python, and fails on any
# report, including reports from subprocesses the tests start (they inherit the environment).
#   bash scripts/sanitize.sh .venv-cpu/bin/python -m pytest -q tests/test_schemas.py
set -uo pipefail
cd "$(dirname "$0")/.."
LIB=${REGOPS_SANITIZE_LIBRARY:-$PWD/build-sanitize/libregops_ops.so}
[ -f "$LIB" ] || { echo "sanitize.sh: no $LIB; build it with make sanitize" >&2; exit 2; }
LOG_DIR=$(mktemp -d)
# Python is not built with ASan: the runtime must be loaded first (LD_PRELOAD), before libregops_ops.so.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# detect_leaks=0: CPython and torch keep allocations alive at exit by design; the leak report would be all theirs.
# log_path: reports go to files as well as stderr, so none is lost in a captured subprocess's output.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$LOG_DIR/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOG_DIR/ubsan"
export REGOPS_OPS_LIBRARY=$LIB
"$@"
rc=$?
reports=$(ls "$LOG_DIR" 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
  echo "=== sanitizer reports ($reports files):"
  for f in "$LOG_DIR"/*; do echo "--- $f"; head -60 "$f"; done
  [ "$rc" -eq 0 ] && rc=1
fi
rm -rf "$LOG_DIR"
echo "=== sanitize: exit $rc, $reports sanitizer report files"
exit "$rc"
