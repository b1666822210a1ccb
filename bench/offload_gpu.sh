#!/usr/bin/env bash
# Optimizer offload, measured in one run on one GPU host (JSON lines; summary in OUTDIR/summary.jsonl):
#   1. GPT-2 1.5B at 32k tokens per step (8 x 1024 x 4 micro-batches): no offload, offload, offload + delayed update
#      -> the offload step against our own non-offload step (target <= 1.3x)
#   2. GPT-2 1.5B at the peer's shape (8 x 1024, one micro-batch) with offload, and the peer: FSDP2 + CPUOffloadPolicy
#      (bench/peer_torch.py --mode fsdp-offload --master-fp32) -> tokens/s ratio (target >= 5x)
#   3. a GPT-J-6B-sized GPT-2 (28 layers, 4096 wide, 16 heads) at 16 x 512 with offload and gelu-layernorm recompute
#      -> step time, tokens/s, GPU and host memory, projected tinyshakespeare lines-mode epoch (1,426 steps, see
#      configs/presets/shakespeare-gptj-ray.json)
#   4. CPU AdamW vs torch.optim.AdamW(fused=True) on the same cores (bench/cpu_adam.sh)
#   5. GPT-2 1.5B at 32k tokens per step with the one-step-delayed update
# Usage: bench/offload_gpu.sh [OUTDIR]   (BUILD_DIR/bin/offload_gpu, default build/gpu: test/gpu/run.sh OUT --only
# build; data .gpu-data/)
# SKIP=list of 1..5 to leave out.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu/offload-bench}; mkdir -p "$out"
skip=${SKIP:-}
bin=${BUILD_DIR:-build/gpu}/bin/offload_gpu
[ -x $bin ] || { echo "$bin missing: build it with test/gpu/run.sh OUTDIR --only build"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "# host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
ours() {
  local t=$1; shift
  echo "# $*" >> "$out/ours.err"
  timeout "$t" $bin "$@" 2>>"$out/ours.err" | tail -1 | tee -a "$out/ours.jsonl"
}
# most important first: a run cut short by its time limit still leaves the earlier lines
if [[ $skip != *1* ]]; then
  ours 120 --model gpt2-xl --batch 8 --seq 1024 --accum 4 --offload none --steps 3 --warmup 1
  ours 120 --model gpt2-xl --batch 8 --seq 1024 --accum 4 --offload cpu --steps 3 --warmup 1
fi
if [[ $skip != *2* ]]; then
  ours 100 --model gpt2-xl --batch 8 --seq 1024 --accum 1 --offload cpu --steps 3 --warmup 1
  PYTHONUNBUFFERED=1 timeout 150 python3 bench/peer_torch.py --model gpt2-xl --mode fsdp-offload --batch 8 --seq 1024 \
    --master-fp32 --steps 3 --warmup 2 2>"$out/peer.err" | tail -1 | tee -a "$out/peer.jsonl"
fi
if [[ $skip != *3* ]]; then
  ours 200 --model gptj-size --batch 16 --seq 512 --accum 1 --recompute gelu-layernorm --offload cpu --steps 3 --warmup 1
fi
if [[ $skip != *4* ]]; then
  OMP_NUM_THREADS=$(nproc) bench/cpu_adam.sh 134217728 3 "$out/cpu_adam" 2>&1 | tee "$out/cpu_adam.jsonl"
fi
if [[ $skip != *5* ]]; then
  ours 120 --model gpt2-xl --batch 8 --seq 1024 --accum 4 --offload cpu --delayed 1 --steps 3 --warmup 1
fi
python3 - "$out" <<'PY' | tee "$out/summary.jsonl"
import json, sys, os
d = sys.argv[1]
def lines(f):
    p = os.path.join(d, f)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
ours, peer = lines("ours.jsonl"), lines("peer.jsonl")
def pick(**k):
    for o in ours:
        if all(o.get(a) == b for a, b in k.items()) and "error" not in o: return o
base = pick(model="gpt2-xl", accum=4, offload="none")
for mode in ("cpu", "cpu-delayed"):
    o = pick(model="gpt2-xl", accum=4, offload=mode)
    if base and o:
        print(json.dumps({"case": f"GPT-2 1.5B 32k tokens/step, offload {mode} vs none", "ours_offload_ms": o["ms_per_step"],
                          "ours_none_ms": base["ms_per_step"], "step_ratio": round(o["ms_per_step"] / base["ms_per_step"], 3),
                          "target": "<= 1.3"}))
o = pick(model="gpt2-xl", accum=1, offload="cpu")
if o and peer and "tokens_per_s" in peer[-1]:
    print(json.dumps({"case": "GPT-2 1.5B 8x1024, offload vs FSDP2+CPUOffloadPolicy", "ours_tokens_per_s": o["tokens_per_s"],
                      "peer_tokens_per_s": peer[-1]["tokens_per_s"], "ratio": round(o["tokens_per_s"] / peer[-1]["tokens_per_s"], 2),
                      "target": ">= 5"}))
j = pick(model="gptj-size")
if j:
    print(json.dumps({"case": "GPT-J-6B-sized GPT-2, 16x512, offload", "ms_per_step": j["ms_per_step"], "tokens_per_s": j["tokens_per_s"],
                      "device_used_GiB": j["device_used_GiB"], "host_peak_GiB": j["host_peak_GiB"],
                      "projected_epoch_min (1426 steps)": round(1426 * j["ms_per_step"] / 60000, 1)}))
PY
