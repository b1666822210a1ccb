#!/usr/bin/env bash
# Optimizer offload on the GPU (GPU host only; CI never runs it):
#   1. build (test/gpu/offload_build.sh), unless OFFLOAD_PREBUILT=1 and build/gpu/offload_* resolve their libraries
#   2. offload_test: offload.cuh's protocol (streams, counters, ring, delayed mode, ZeRO shard) vs a host
#      reference, bit for bit
#   3. offload_engine_test: the cuda backend with offload vs without (curves, state, resume, skip, delayed, stages)
# Usage: test/gpu/offload_run.sh [LOGDIR]   (tokenized tinyshakespeare: .gpu-data/tinyshakespeare.i32)
set -uo pipefail
cd "$(dirname "$0")/../.."
logs=${1:-build/gpu/logs}; mkdir -p "$logs"
data=${GPU_TEST_DATA:-.gpu-data/tinyshakespeare.i32}
bins="build/gpu/offload_test build/gpu/offload_engine_test build/gpu/offload_gpu"
if [ "${OFFLOAD_PREBUILT:-0}" = 1 ] && ls $bins >/dev/null 2>&1 && ! ldd $bins | grep -q "not found"; then
  echo "using the prebuilt offload programs" > "$logs/offload_build.log"
else
  test/gpu/offload_build.sh > "$logs/offload_build.log" 2>&1 || { echo "build failed:"; tail -30 "$logs/offload_build.log"; exit 1; }
fi
rc=0
echo "== offload_test"; timeout 200 build/gpu/offload_test 2>&1 | tee "$logs/offload_test.log" || rc=1
echo "== offload_engine_test"; timeout 300 build/gpu/offload_engine_test "$data" 2>&1 | tee "$logs/offload_engine_test.log" || rc=1
exit $rc
