#!/usr/bin/env bash
# The GPU test ladder for the cuda backend, in one go (GPU host only; CI never runs it):
#   1. build (test/gpu/build.sh)
#   2. native/lab kernels_check: every kernel vs the CPU reference layers, bf16 and fp32 (+ kernel timings)
#   3. cuda_backend_test: cuda vs cpu backend parity, recompute, determinism, checkpoint transfer, 50-step curves,
#      KV-cache generation, out-of-memory and non-finite errors
#   4. torch_parity.py: the same weights and inputs through PyTorch + transformers (loss, gradients, curves)
# Usage: test/gpu/run.sh [LOGDIR]   (tokenized tinyshakespeare: .gpu-data/tinyshakespeare.i32, see README)
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-build/gpu/logs}; mkdir -p "$logs"
work=${GPU_TEST_WORK:-/tmp/gpu-test-work}; mkdir -p "$work"   # large dumps stay out of LOGDIR
data=${GPU_TEST_DATA:-.gpu-data/tinyshakespeare.i32}
rc=0
# GPU_PREBUILT=1: use build/gpu/* built elsewhere (test/gpu/build.sh with CUBLAS_ROOT, e.g. on a machine without a
# GPU, to save device time) when every library they need resolves here; otherwise build
if [ "${GPU_PREBUILT:-0}" = 1 ] && [ -x build/gpu/kernels_check ] && [ -x build/gpu/cuda_backend_test ] && [ -x build/gpu/train_gpu ] &&
   ! ldd build/gpu/kernels_check build/gpu/cuda_backend_test build/gpu/train_gpu | grep -q "not found"; then
  echo "using the prebuilt build/gpu programs" > "$logs/build.log"
else
  test/gpu/build.sh > "$logs/build.log" 2>&1 || { echo "build failed:"; tail -30 "$logs/build.log"; exit 1; }
fi
# GPU_STAGES: which of the three stages to run (default all), e.g. "kernels" then "backend torch" in one device run
stages=" ${GPU_STAGES:-kernels backend torch} "
if [[ $stages == *" kernels "* ]]; then
  echo "== kernels_check"; timeout 300 build/gpu/kernels_check 2>&1 | tee "$logs/kernels_check.log" || rc=1
fi
if [[ $stages == *" backend "* ]]; then
  echo "== cuda_backend_test"; timeout 400 build/gpu/cuda_backend_test "$data" "$work" ${GPU_TESTS:-} 2>&1 | tee "$logs/cuda_backend_test.log" || rc=1
fi
if [[ $stages == *" torch "* ]]; then
  echo "== torch_parity"; PYTHONUNBUFFERED=1 timeout 300 python3 test/gpu/torch_parity.py "$work" 2>&1 | tee "$logs/torch_parity.log" || rc=1
fi
cp "$work/curves.json" "$logs/" 2>/dev/null
exit $rc
