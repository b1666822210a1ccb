#!/usr/bin/env bash
# Training throughput, ours vs the PyTorch peer, on the same GPU in one run. For each case: our engine (bf16 + fp32
# master weights; GPT-2: train_gpu, engine::Engine::train; other families: families_gpu, Backend::step_async) and
# the peer (HF transformers + torch.compile, fp32 master + bf16 autocast; GPT-2: $PEER_TORCH, default
# bench/peer_torch.py; Llama: bench/peer_llama.py), then one JSON line with both and the ratio ours/peer.
#   bench/train_gpu.sh OUTDIR [cases]   cases: comma list of model:batch:seq (default gpt2:16:1024,gpt2-xl:8:1024,
#                                       llama-1b:4:2048); the programs come from the CMake build (BUILD_DIR/bin,
#                                       default build/gpu/bin: test/gpu/run.sh --only build)
# SKIP_PEER=1: ours only. A missing peer script is reported in the case's line, never silently skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/train_gpu.sh OUTDIR [cases]}; mkdir -p "$out"
cases=${2:-gpt2:16:1024,gpt2-xl:8:1024,llama-1b:4:2048}
bin=${BUILD_DIR:-build/gpu}/bin
peer_torch=${PEER_TORCH:-bench/peer_torch.py}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for c in ${cases//,/ }; do
  IFS=: read -r model batch seq <<< "$c"
  case $model in
    gpt2*) steps=10; [ "$model" = gpt2-xl ] && steps=6
           ours=(timeout 300 "$bin/train_gpu" --model "$model" --batch "$batch" --seq "$seq" --steps $steps --warmup 3)
           peer_script=$peer_torch
           peer=(--model "$model" --mode compile --master-fp32 --batch "$batch" --steps $steps --warmup 3) ;;
    *)     steps=8
           ours=(timeout 200 "$bin/families_gpu" --model "$model" --batch "$batch" --seq "$seq" --steps $steps --warmup 2)
           peer_script=bench/peer_llama.py
           peer=(--model "$model" --batch "$batch" --seq "$seq" --steps $steps --warmup 2) ;;
  esac
  o=$("${ours[@]}" 2>"$out/ours-$model.err" | tail -1)
  [ -n "$o" ] || o='{"error":"ours failed, see ours-'$model'.err"}'
  echo "$o" | tee -a "$out/ours.jsonl"
  p='{}'
  if [ "${SKIP_PEER:-0}" != 1 ]; then
    if [ -f "$peer_script" ]; then
      p=$(PYTHONUNBUFFERED=1 timeout 400 python3 "$peer_script" "${peer[@]}" 2>"$out/peer-$model.err" | tail -1)
      [ -n "$p" ] || p='{"error":"peer failed, see peer-'$model'.err"}'
    else
      p='{"error":"peer script '$peer_script' not found"}'
    fi
    echo "$p" | tee -a "$out/peer.jsonl"
  fi
  python3 - "$o" "$p" "$model ${batch}x$seq" <<'PY' | tee -a "$out/bench.jsonl"
import json, sys
o, p = json.loads(sys.argv[1] or "{}"), json.loads(sys.argv[2] or "{}")
r = {"case": sys.argv[3], "gpu": o.get("gpu"), "ours": o, "peer": p}
if "tokens_per_s" in o and "tokens_per_s" in p:
    r["ratio_tokens_per_s"] = round(o["tokens_per_s"] / p["tokens_per_s"], 3)
print(json.dumps(r))
PY
done
