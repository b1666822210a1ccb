#!/usr/bin/env bash
# Training throughput, ours vs the PyTorch peer, on the same GPU in one run. For each case: our engine
# (build/gpu/train_gpu: engine::Engine::train, bf16 + fp32 master weights) and bench/peer/peer_torch.py (HF GPT-2
# + torch.compile, fp32 master + bf16 autocast), then one JSON line with both and the ratio ours/peer.
#   bench/train_gpu.sh [OUTDIR] [cases]    cases: comma list of gpt2:16, gpt2-xl:8 ... (model:batch), T = 1024
# Needs bench/peer/peer_torch.py (copy of /work/shared/bench/peer_torch.py; bench/peer/ is ignored by git).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu/bench}; mkdir -p "$out"
cases=${2:-gpt2:16,gpt2-xl:8}
skip_peer=${SKIP_PEER:-0}          # 1: ours only
peer_skip_models=${PEER_SKIP_MODELS:-}  # e.g. "gpt2-xl": no peer run for those models (compile time)
tag=${TAG:-}                       # suffix for the case name, e.g. "attn=cublas" with ENGINE_CUDA_ATTENTION=cublas
[ -x build/gpu/train_gpu ] || test/gpu/build.sh > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for c in ${cases//,/ }; do
  model=${c%%:*}; batch=${c##*:}
  steps=10; [ "$model" = gpt2-xl ] && steps=6
  ours=$(timeout 300 build/gpu/train_gpu --model "$model" --batch "$batch" --steps $steps --warmup 3 ${OURS_FLAGS:-} | tail -1)
  echo "$ours" | tee -a "$out/ours.jsonl"
  peer='{}'
  if [ "$skip_peer" != 1 ] && [[ " $peer_skip_models " != *" $model "* ]]; then
    peer=$(PYTHONUNBUFFERED=1 timeout 400 python3 bench/peer/peer_torch.py --model "$model" --mode compile --master-fp32 \
           --batch "$batch" --steps $steps --warmup 3 2>"$out/peer-$model.err" | tail -1)
    [ -n "$peer" ] || peer='{"error":"peer failed, see peer-'$model'.err"}'
    echo "$peer" | tee -a "$out/peer.jsonl"
  fi
  TAG="$tag" python3 - "$ours" "$peer" <<'PY' | tee -a "$out/bench.jsonl"
import json, sys
o, p = json.loads(sys.argv[1] or "{}"), json.loads(sys.argv[2] or "{}")
import os
r = {"case": f"{o.get('model')} {o.get('batch')}x{o.get('seq')} {os.environ.get('TAG', '')}".strip(), "gpu": o.get("gpu"), "ours": o, "peer": p}
if "tokens_per_s" in o and "tokens_per_s" in p:
    r["ratio_tokens_per_s"] = round(o["tokens_per_s"] / p["tokens_per_s"], 3)
print(json.dumps(r))
PY
done
