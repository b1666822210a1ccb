#!/usr/bin/env bash
# ZeRO data parallelism on a multi-GPU host, in one go (GPU host only; CI never runs it):
#   1. build build/gpu-zero/{zero_test,zero_gpu} (engine + cuda backend + the two programs; no Node, no CMake)
#      unless ZERO_PREBUILT=1 and both exist and load (binaries built elsewhere with the same CUDA major)
#   2. zero_test: losses vs 1 GPU for stages 0-3 on 1/2/4 GPUs, sharded checkpoint 4 -> 2 -> 1 GPUs, two
#      processes joined by an NCCL unique id, memory vs the model-state formulas
#   3. bench/zero_gpu.sh (skipped with ZERO_BENCH=0): GPT-2 1.5B ZeRO-2 scaling on 1/2/4 GPUs, ZeRO-1/3 memory
# Usage: test/gpu/run_zero.sh [LOGDIR]   (tokenized tinyshakespeare: .gpu-data/tinyshakespeare.i32)
# NCCL: found on the loader path, else FINETUNE_NCCL_LIB, else searched under /usr, /opt and Python's packages.
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-build/gpu-zero/logs}; mkdir -p "$logs"
work=${GPU_TEST_WORK:-/tmp/zero-test-work}; rm -rf "$work"; mkdir -p "$work"
data=${GPU_TEST_DATA:-.gpu-data/tinyshakespeare.i32}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:$CUDA_HOME/lib64
if [ -z "${FINETUNE_NCCL_LIB:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2 '; then
  FINETUNE_NCCL_LIB=$(find /usr /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
                      -name 'libnccl.so.2' 2>/dev/null | head -1)
  export FINETUNE_NCCL_LIB
fi
echo "NCCL: ${FINETUNE_NCCL_LIB:-loader path}"
out=build/gpu-zero
loads() { [ -x "$1" ] && ! ldd "$1" 2>/dev/null | grep -q 'not found'; }
if [ "${ZERO_PREBUILT:-0}" = 1 ] && loads $out/zero_test && loads $out/zero_gpu; then
  echo "== using prebuilt $out/zero_test $out/zero_gpu"
else
  echo "== build"; test/gpu/zero_build.sh > "$logs/build.log" 2>&1 || { echo "build failed:"; tail -40 "$logs/build.log"; exit 1; }
fi
rc=0
# one process per group, each with its own timeout: a hung collective costs one group, not the run
for t in ${ZERO_TESTS:-parity losses0 losses1 losses2 losses3 checkpoint processes memory}; do
  case $t in memory) lim=120 ;; *) lim=${ZERO_TEST_TIMEOUT:-60} ;; esac
  echo "== zero_test $t (timeout ${lim}s)"
  timeout -k 5 $lim $out/zero_test "$data" "$work" $t 2>&1 | tee -a "$logs/zero_test.log"
  s=${PIPESTATUS[0]}; [ "$s" = 0 ] || { echo "zero_test $t: exit $s"; rc=1; }
done
if [ "${ZERO_BENCH:-1}" = 1 ]; then
  echo "== bench"; timeout -k 5 ${ZERO_BENCH_TIMEOUT:-150} bench/zero_gpu.sh "$logs/bench" || rc=1
fi
exit $rc
