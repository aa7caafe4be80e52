#!/usr/bin/env bash
# One prepared run on the GPU test machine (torch 2.11+cu130, Python 3.12, no internet; pytest,
# hypothesis and ninja are in its image): build for sm_90, run the CUDA tests, record the kernels that
# passed in python/regops/gpu_validated.txt, run the GPU bench (its Markdown report, REPORT_cuda.md, is the
# README's GPU table). Target: under 8 minutes.
# Through the device tool:  run(command="bash scripts/gpu_check.sh", timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/regops_gpu_check}
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
PY=${PY:-python3}
t0=$SECONDS
stage() { echo "=== $1 ($((SECONDS - t0)) s)"; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

stage "build (setup.py build_ext --inplace, sm_${TORCH_CUDA_ARCH_LIST})"
if ! $PY setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
$PY -m regops info | tee "$OUT/info.txt"

stage "CUDA tests"
REGOPS_GPU_VALIDATED_OUT="$OUT/gpu_validated.txt" $PY -m pytest -q -ra -m cuda tests -p no:cacheprovider \
  --timeout=300 2>&1 | tee "$OUT/cuda_tests.log" | tail -40
tests_rc=${PIPESTATUS[0]}
if [ -f "$OUT/gpu_validated.txt" ]; then
  cp "$OUT/gpu_validated.txt" python/regops/gpu_validated.txt
  echo "--- gpu_validated.txt"; cat python/regops/gpu_validated.txt
fi

stage "GPU bench"
timeout 300 $PY -m regops bench --device cuda --quick --no-memory --csv "$OUT/bench_cuda.csv" --report "$OUT/REPORT_cuda.md" 2>&1 | tee "$OUT/bench.log" | tail -60

stage "done (tests rc=$tests_rc)"
exit "$tests_rc"
