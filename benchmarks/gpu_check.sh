#!/usr/bin/env bash
# One-command GPU check for smplfast: build the CUDA kernels for this machine's GPU, run every CUDA
# test, run compute-sanitizer (memcheck + racecheck) on a small subset, run the CUDA benchmarks, and
# write everything to benchmarks/gpu_results_YYYY-MM-DD.txt (UTC date).
#
#   bash benchmarks/gpu_check.sh            # from anywhere; uses .venv/ if the repo has one
#
# Environment knobs (all optional):
#   PYTHON                       interpreter to use (default: .venv/bin/python, else python3)
#   SMPLFAST_CUDA_ARCHITECTURES  CMake archs to build, e.g. "90" (default: the local GPU's, from
#                                nvidia-smi or torch; CMakeLists' own default is "80;90")
#   GPU_CHECK_SKIP_BUILD=1       reuse the installed build (it must have CUDA kernels)
#   GPU_CHECK_SKIP_BENCH=1       skip the benchmarks (they take the longest)
#   GPU_CHECK_STEP_TIMEOUT       seconds per step (default 1800)
#   GPU_CHECK_OUT                results file (default benchmarks/gpu_results_<date>.txt)
#
# Exit status: 0 all steps passed; 1 some step failed (the results file lists which);
# 2 no usable GPU here (nothing is built or run; the message says why).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
STEP_TIMEOUT=${GPU_CHECK_STEP_TIMEOUT:-1800}
DATE=$(date -u +%F)
OUT=${GPU_CHECK_OUT:-"$ROOT/benchmarks/gpu_results_${DATE}.txt"}

no_gpu() {
  echo "gpu_check: no usable GPU on $(hostname): $1" >&2
  echo "gpu_check: nothing was built or run. Run this script on a machine with an NVIDIA GPU, its driver" >&2
  echo "gpu_check: (nvidia-smi) and a CUDA build of torch; nvcc is needed for the build step." >&2
  exit 2
}

# ---------------------------------------------------------------- is there a GPU at all?
if ! command -v nvidia-smi >/dev/null 2>&1; then
  no_gpu "nvidia-smi not found (no NVIDIA driver)"
fi
if ! GPU_LIST=$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1) \
    || [ -z "$GPU_LIST" ]; then
  no_gpu "nvidia-smi lists no GPU (${GPU_LIST:-empty output})"
fi
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  no_gpu "torch ($PYTHON) sees no CUDA device (a CPU-only torch, or CUDA_VISIBLE_DEVICES hides it)"
fi

if [ -z "${SMPLFAST_CUDA_ARCHITECTURES:-}" ]; then
  # "9.0" -> "90"; one entry per distinct GPU model.
  SMPLFAST_CUDA_ARCHITECTURES=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
    | tr -d ' .' | grep -E '^[0-9]+$' | sort -u | paste -sd';' -)
  if [ -z "$SMPLFAST_CUDA_ARCHITECTURES" ]; then
    SMPLFAST_CUDA_ARCHITECTURES=$("$PYTHON" -c \
      "import torch; print('%d%d' % torch.cuda.get_device_capability(0))" 2>/dev/null)
  fi
  if [ -z "$SMPLFAST_CUDA_ARCHITECTURES" ]; then
    echo "gpu_check: could not read the GPU's compute capability; building CMakeLists' default 80;90" >&2
    SMPLFAST_CUDA_ARCHITECTURES="80;90"
  fi
fi
export SMPLFAST_CUDA_ARCHITECTURES

: >"$OUT" || { echo "gpu_check: cannot write $OUT" >&2; exit 1; }
log() { echo "$@" | tee -a "$OUT"; }
RESULTS=()
FAILED=0

# run_step NAME COMMAND...: runs with a timeout, output to the terminal and the results file.
run_step() {
  local name=$1
  shift
  log ""
  log "==== $name"
  log "\$ $*"
  local t0=$SECONDS
  timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee -a "$OUT"
  local rc=${PIPESTATUS[0]}
  local dt=$((SECONDS - t0))
  local verdict=PASS
  if [ "$rc" -eq 124 ]; then verdict="TIMEOUT(${STEP_TIMEOUT}s)"; elif [ "$rc" -ne 0 ]; then verdict="FAIL(rc=$rc)"; fi
  [ "$verdict" = PASS ] || FAILED=1
  RESULTS+=("$(printf '%-34s %-16s %5ss' "$name" "$verdict" "$dt")")
  log "==== $name: $verdict in ${dt}s"
  return "$rc"
}

skip_step() {
  RESULTS+=("$(printf '%-34s %-16s' "$1" "SKIPPED: $2")")
  log ""
  log "==== $1: SKIPPED ($2)"
}

log "smplfast GPU check, $(date -u '+%F %T UTC'), host $(hostname)"
log "repo: $ROOT (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', with local changes'))"
log "GPU(s) (name, compute capability, driver): "
log "$GPU_LIST"
log "python: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
log "torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
log "nvcc: $( (command -v nvcc || ls /usr/local/cuda/bin/nvcc) 2>/dev/null | head -1)"
log "SMPLFAST_CUDA_ARCHITECTURES=$SMPLFAST_CUDA_ARCHITECTURES"

# ---------------------------------------------------------------- build
export PATH="$PATH:/usr/local/cuda/bin"
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  skip_step "build (SMPLFAST_CUDA=ON)" "GPU_CHECK_SKIP_BUILD=1"
else
  # Same editable install as a developer's (the package is rebuilt in place, build/ keeps the cache).
  # Without network the isolated build cannot fetch its backend: reuse the installed one when present.
  ISO=()
  if "$PYTHON" -c "import scikit_build_core, pybind11" >/dev/null 2>&1; then ISO=(--no-build-isolation); fi
  if ! run_step "build (SMPLFAST_CUDA=ON)" env SMPLFAST_CUDA=ON \
      CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "$PYTHON" -m pip install --no-deps "${ISO[@]}" -e "$ROOT"; then
    log "gpu_check: the CUDA build failed; nothing else can be checked."
  fi
fi

if ! run_step "CUDA kernels present and GPU visible" "$PYTHON" -c "
import json, sys, smplfast
info = smplfast.build_info()
print(json.dumps(info))
sys.exit(0 if info['cuda'] and info['cuda_devices_visible'] > 0 else 1)"; then
  log "gpu_check: smplfast has no CUDA kernels or sees no GPU; stopping."
  printf '\n==== summary\n' | tee -a "$OUT"
  printf '%s\n' "${RESULTS[@]}" | tee -a "$OUT"
  exit 1
fi

# ---------------------------------------------------------------- CUDA tests
# The CUDA tests are the ones whose id contains "cuda" (device-parametrised tests get a [cuda] id,
# the CUDA-only tests are named test_*cuda*) or "gpu"; on a machine without a GPU they are skipped.
run_step "CUDA tests (pytest -k 'cuda or gpu')" \
  "$PYTHON" -m pytest python_tests -q -p no:cacheprovider -k "cuda or gpu" -rs

# ---------------------------------------------------------------- compute-sanitizer
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
SAN_TESTS=(python_tests/test_skinning_ops.py python_tests/test_backward_ops.py
  python_tests/test_uv_lookup.py python_tests/test_soft_silhouette.py python_tests/test_lm_fit.py
  python_tests/test_densepose_refine.py)
if [ -z "$SAN" ]; then
  skip_step "compute-sanitizer memcheck" "compute-sanitizer not found"
  skip_step "compute-sanitizer racecheck" "compute-sanitizer not found"
else
  # No caching allocator under memcheck, so an out-of-bounds access past a torch tensor is caught
  # instead of landing in another cached block.
  run_step "compute-sanitizer memcheck" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$SAN" --tool memcheck --error-exitcode 99 --target-processes all \
    "$PYTHON" -m pytest "${SAN_TESTS[@]}" -q -p no:cacheprovider -k cuda -x
  run_step "compute-sanitizer racecheck" \
    "$SAN" --tool racecheck --racecheck-report hazard --error-exitcode 99 --target-processes all \
    "$PYTHON" -m pytest python_tests/test_skinning_ops.py python_tests/test_soft_silhouette.py python_tests/test_lm_fit.py \
    -q -p no:cacheprovider -k cuda -x
fi

# ---------------------------------------------------------------- CUDA benchmarks
if [ "${GPU_CHECK_SKIP_BENCH:-0}" = 1 ]; then
  skip_step "CUDA benchmarks" "GPU_CHECK_SKIP_BENCH=1"
elif ! "$PYTHON" -c "import pytest_benchmark" >/dev/null 2>&1; then
  skip_step "CUDA benchmarks" "pytest-benchmark not installed (pip install '.[test]')"
else
  JSON="$ROOT/benchmarks/gpu_results_${DATE}.json"
  run_step "SMPLify launches per LM iteration (smplify_op_count.py --device cuda)" \
    "$PYTHON" benchmarks/smplify_op_count.py --device cuda --batch 1024 \
    --json "$ROOT/benchmarks/gpu_op_count_${DATE}.json"
  run_step "CUDA benchmarks (pytest benchmarks -k 'cuda or gpu')" \
    "$PYTHON" -m pytest benchmarks -q -p no:cacheprovider -k "cuda or gpu" --benchmark-only \
    --benchmark-json "$JSON" --benchmark-columns=min,median,mean,rounds --benchmark-sort=name
  log "benchmark JSON: $JSON"
fi

# ---------------------------------------------------------------- summary
{
  echo ""
  echo "==== summary ($(date -u '+%F %T UTC'))"
  printf '%s\n' "${RESULTS[@]}"
  echo "results file: $OUT"
} | tee -a "$OUT"
exit "$FAILED"
