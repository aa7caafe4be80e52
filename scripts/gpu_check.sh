#!/usr/bin/env bash
# One prepared run on the GPU test machine (torch 2.11+cu130, Python 3.12, 16 cores, an H200, no internet; pytest,
# hypothesis and ninja are in its image), in two tiers:
#   default (quick): build for sm_90; `python -m regops info`; the gpu_quick tests (pytest -m "cuda and gpu_quick",
#     ~120 items: every CUDA and Triton kernel of the registry against its reference, values and gradients;
#     tests/test_gpu_tiers.py keeps it complete); one summary line per kernel (passed, failed, skipped, not run);
#     gpu_validated.txt from the kernels whose selected tests all passed; the quick GPU bench and its report
#     (REPORT_cuda.md, the README's GPU table).
#   --full: the same with every CUDA test (pytest -m cuda, ~1500 items), then the same quick bench; on a cold
#     machine its tests will not all fit in one command: run it right after the default run, while the machine is
#     warm (build/ and the Triton cache kept), or with BENCH_RESERVE_S=0 to give the tests the bench's time too.
# Through the device tool:  run(command="bash scripts/gpu_check.sh", timeout_s=540)
#                           run(command="bash scripts/gpu_check.sh --full", timeout_s=600)
# Every stage prints its UTC clock time and the seconds elapsed, and the recap at the end the seconds per stage, so
# the first real run replaces these estimates of the default run on an H200 (cold machine: no build folder, empty
# Triton and Inductor caches):
#   machine, versions                 ~10 s
#   build (30 files, 21 with torch's headers, 16 jobs, sm_90 only)   90-180 s  (a rerun while the machine is warm
#                                     finds build/ and only relinks: ~15 s)
#   regops info, CUDA kernels built    ~5 s
#   quick tests                       70-110 s  (~60 Triton compilations at ~0.5-1 s, the float64 references, start-up)
#   quick bench                       100-150 s (~140 timed rows of ~0.5 s, 7 torch.compile'd references)
#   total                             ~5.5 min expected (4.5-7.5 from the ranges above)
# Hard limits keep a slow run inside the device command: the build gets 300 s, the tests what is left before the
# deadline less BENCH_RESERVE_S (pytest is then stopped with SIGTERM, which conftest.py turns into Ctrl-C: the
# summary and gpu_validated.txt are still written, kernels whose tests did not all run count as "not run"), the
# bench what is left before the deadline (skipped under 60 s).
# Deadline: GPU_CHECK_DEADLINE_S seconds after the start (default 510 s, 570 s with --full).
# Logs and results in $OUT: build.log, info.txt, tests.log, kernels.txt, gpu_validated.txt, bench.log,
# bench_cuda.csv, REPORT_cuda.md. Exit status: 0 when the build, the tests and the bench succeeded; else the tests'
# pytest status (or 124 when they were interrupted), else the bench's.
set -uo pipefail
cd "$(dirname "$0")/.."

TIER=quick
for arg in "$@"; do
  case $arg in
    --full) TIER=full ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: expected --full or --help, got $arg" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-/tmp/regops_gpu_check}
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ "$TIER" = quick ]; then DEFAULT_DEADLINE=510; else DEFAULT_DEADLINE=570; fi
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-$DEFAULT_DEADLINE}
BENCH_RESERVE_S=${BENCH_RESERVE_S:-160}  # the quick bench's share of the deadline (its estimate, plus margin)

t0=$SECONDS
STAGES=()  # "name  N s" per finished stage, for the recap
stage_name="" stage_t0=$t0
stage() {  # stage NAME [DETAIL]: ends the running stage and starts the next one
  local now=$SECONDS
  if [ -n "$stage_name" ]; then STAGES+=("$(printf '  %-12s %4d s' "$stage_name" $((now - stage_t0)))"); fi
  stage_name=$1 stage_t0=$now
  echo "=== $(date -u +%T) +$((now - t0)) s: $1${2:+ $2}"
}
left() { echo $((DEADLINE_S - (SECONDS - t0))); }

stage machine "($TIER tier, deadline ${DEADLINE_S} s)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi: failed"
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH  # setup.py builds the CUDA kernels only where it finds nvcc
fi
nvcc --version 2>/dev/null | tail -1 || echo "nvcc: not found"
$PY -c "import torch, triton; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__)" \
  || echo "torch or triton does not import"
if $PY -c "import pytest_timeout" 2> /dev/null; then
  PER_TEST_TIMEOUT=(--timeout="$([ "$TIER" = quick ] && echo 120 || echo 300)")  # a hung test fails, the rest run
else
  PER_TEST_TIMEOUT=()  # pytest-timeout is not in the image: --timeout would be an unknown option
fi

stage build "(setup.py build_ext --inplace, sm_${TORCH_CUDA_ARCH_LIST}, ${MAX_JOBS} jobs)"
if ! timeout -k 10 300 $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"; echo "BUILD FAILED (or over 300 s): $OUT/build.log"; exit 1
fi
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}

stage info "(python -m regops info, the CUDA kernels built)"
if $PY -m regops info > "$OUT/info.txt" 2>&1; then
  sed -n '1,/^$/p' "$OUT/info.txt"  # versions and build facts; the op table is in info.txt
else
  tail -20 "$OUT/info.txt"; echo "REGOPS DOES NOT IMPORT after the build: $OUT/info.txt"; exit 1
fi
# Without the CUDA kernels every CUDA test would skip: stop here rather than spend the machine on that.
if ! $PY - <<'EOF'
import sys
import torch
from regops import _registry
cuda = torch.device("cuda")
missing = [f"{op}: {why}" for op, spec in _registry.OPS.items() if "cuda" in spec.impls()
           for ok, why in [_registry.available(op, "cuda", cuda)] if not ok]
print("CUDA kernels: " + ("all built" if not missing else "MISSING\n  " + "\n  ".join(missing)))
sys.exit(1 if missing else 0)
EOF
then
  echo "NO CUDA KERNELS: see $OUT/build.log (is nvcc on PATH?)"; exit 1
fi

# The modules with CUDA tests: collecting only them saves importing the ~40 CPU-only ones.
mapfile -t GPU_TEST_FILES < <(grep -lE 'mark\.cuda|gpu_test\(' tests/test_*.py)
if [ "$TIER" = quick ]; then MARKS="cuda and gpu_quick"; else MARKS="cuda"; fi
test_cap=$(( $(left) - BENCH_RESERVE_S )); [ "$test_cap" -lt 60 ] && test_cap=60
stage tests "(pytest -m \"$MARKS\", ${#GPU_TEST_FILES[@]} files, at most ${test_cap} s)"
rm -f "$OUT/gpu_validated.txt"
REGOPS_GPU_TIER=$TIER REGOPS_GPU_SUMMARY=1 REGOPS_GPU_VALIDATED_OUT="$OUT/gpu_validated.txt" \
  timeout -k 30 "$test_cap" $PY -m pytest -q -ra -p no:cacheprovider -m "$MARKS" "${PER_TEST_TIMEOUT[@]}" \
  "${GPU_TEST_FILES[@]}" > "$OUT/tests.log" 2>&1
tests_rc=$?
[ "$tests_rc" -eq 124 ] && echo "tests interrupted at the ${test_cap} s limit: their kernels count as not run"
sed -n '/short test summary info/,$p' "$OUT/tests.log" | grep -v '^kernel' | head -60
grep -E '^kernels?( |:)' "$OUT/tests.log" > "$OUT/kernels.txt"
if [ -f "$OUT/gpu_validated.txt" ]; then
  cp "$OUT/gpu_validated.txt" python/regops/gpu_validated.txt  # auto on CUDA picks these in the bench's run
  echo "gpu_validated.txt: $(grep -vc '^#' "$OUT/gpu_validated.txt") kernels passed ($OUT/gpu_validated.txt)"
else
  echo "gpu_validated.txt: not written (pytest ended before its session finished): tail of $OUT/tests.log"
  tail -30 "$OUT/tests.log"
fi

bench_cap=$(left)
stage bench "(python -m regops bench --device cuda --quick, at most ${bench_cap} s)"
if [ "$bench_cap" -ge 60 ]; then
  timeout -k 15 "$bench_cap" $PY -m regops bench --device cuda --quick --no-memory --csv "$OUT/bench_cuda.csv" \
    --report "$OUT/REPORT_cuda.md" > "$OUT/bench.log" 2>&1
  bench_rc=$?
  grep -E '^done in ' "$OUT/bench.log" || true
  if [ -f "$OUT/REPORT_cuda.md" ]; then cat "$OUT/REPORT_cuda.md"; else tail -40 "$OUT/bench.log"; fi
else
  bench_rc=124
  echo "bench: skipped, ${bench_cap} s left before the deadline"
fi

stage recap
echo "--- seconds per stage ($TIER tier, deadline ${DEADLINE_S} s)"
printf '%s\n' "${STAGES[@]}"
echo "--- one line per kernel (op impl: status), from $OUT/tests.log"
if [ -s "$OUT/kernels.txt" ]; then cat "$OUT/kernels.txt"; else echo "no per-kernel summary: pytest ended early"; fi
echo "--- tests: rc=$tests_rc, $(tail -1 "$OUT/tests.log")"
report="not written"; [ -f "$OUT/REPORT_cuda.md" ] && report=$OUT/REPORT_cuda.md
echo "--- bench: rc=$bench_rc, report: $report"
echo "=== $(date -u +%T) +$((SECONDS - t0)) s: done"
if [ "$tests_rc" -ne 0 ]; then exit "$tests_rc"; fi
exit "$bench_rc"
