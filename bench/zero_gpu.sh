#!/usr/bin/env bash
# ZeRO data-parallel benchmark (GPU host with 4 GPUs): GPT-2 1.5B ZeRO-2 weak scaling on 1, 2 and 4 GPUs (target:
# >= 90% of linear), then ZeRO-1 and ZeRO-3 on 4 GPUs (memory per GPU vs the formulas). JSON lines on stdout and
# in OUTDIR/zero_gpu.jsonl. Needs BUILD_DIR/bin/zero_gpu (default build/gpu: test/gpu/run.sh OUT --only build).
# Usage: bench/zero_gpu.sh [OUTDIR] [configs (stage:gpus,...)]
set -uo pipefail
cd "$(dirname "$0")/.."
outdir=${1:-build/gpu/zero-bench}; mkdir -p "$outdir"
configs=${2:-2:1,2:2,2:4,1:4,3:4}
bin=${BUILD_DIR:-build/gpu}/bin/zero_gpu
[ -x $bin ] || { echo "$bin missing: build it with test/gpu/run.sh OUTDIR --only build"; exit 1; }
$bin --model gpt2-xl --batch ${ZERO_BENCH_BATCH:-8} --seq 1024 --micro ${ZERO_BENCH_MICRO:-1} \
  --steps ${ZERO_BENCH_STEPS:-5} --warmup 2 --configs "$configs" | tee "$outdir/zero_gpu.jsonl"
