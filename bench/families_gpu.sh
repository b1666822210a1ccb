#!/usr/bin/env bash
# Model-family training throughput, ours vs the PyTorch peer, on the same GPU in one run. For each case:
# build/gpu-families/families_gpu (the cuda backend: bf16 + fp32 master weights, Backend::step_async) and
# bench/peer_llama.py (transformers + torch.compile, fp32 master + bf16 autocast, fused AdamW), then one JSON line
# with both and the ratio ours/peer (tokens/s).
#   bench/families_gpu.sh [OUTDIR] [cases]   cases: comma list of model:batch:seq (default llama-1b:4:2048)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu-families/bench}; mkdir -p "$out"
cases=${2:-llama-1b:4:2048}
[ -x build/gpu-families/families_gpu ] || test/gpu/families/build.sh > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for c in ${cases//,/ }; do
  IFS=: read -r model batch seq <<< "$c"
  ours=$(timeout 200 build/gpu-families/families_gpu --model "$model" --batch "$batch" --seq "$seq" --steps ${STEPS:-8} --warmup 2 ${OURS_FLAGS:-} | tail -1)
  echo "$ours" | tee -a "$out/ours.jsonl"
  peer='{}'
  if [ "${SKIP_PEER:-0}" != 1 ]; then
    peer=$(PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-300} python3 bench/peer_llama.py --model "$model" --batch "$batch" --seq "$seq" \
           --steps ${STEPS:-8} --warmup 2 2>"$out/peer-$model.err" | tail -1)
    [ -n "$peer" ] || peer='{"error":"peer failed, see peer-'$model'.err"}'
    echo "$peer" | tee -a "$out/peer.jsonl"
  fi
  python3 - "$ours" "$peer" <<'PY' | tee -a "$out/bench.jsonl"
import json, sys
o, p = json.loads(sys.argv[1] or "{}"), json.loads(sys.argv[2] or "{}")
r = {"case": f"{o.get('model')} {o.get('batch')}x{o.get('seq')}", "gpu": o.get("gpu"), "ours": o, "peer": p}
if "tokens_per_s" in o and "tokens_per_s" in p:
    r["ratio_tokens_per_s"] = round(o["tokens_per_s"] / p["tokens_per_s"], 3)
print(json.dumps(r))
PY
done
