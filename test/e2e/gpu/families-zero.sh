#!/usr/bin/env bash
# Phase 2 of the GPU e2e (after run.sh's GPT-2 workflow): the pipeline through the Node addon with
#   family  a small random Llama made by transformers on the device (GQA, untied head, the llama tokenizer fixture
#           with BOS): `finetune run` imports it (the family comes from config.json), trains on the cuda backend,
#           exports; transformers loads the export and its validation loss on our Parquet shards must match the
#           workflow's eval loss (bf16 tolerance);
#   offload GPT-2 (4L x 256) at ZeRO-2 with the optimizer offloaded to the CPU, on one GPU;
#   zero    (>= 2 GPUs) one worker driving every GPU at ZeRO-2 vs the same global batch on one GPU (losses agree);
#   ranks   (>= 2 GPUs) two worker PROCESSES (one GPU each, CUDA_VISIBLE_DEVICES) joined through the workflow's
#           rendezvous (NCCL unique id from rank 0's worker) at ZeRO-3; rank 1's worker is SIGKILLed mid-run and
#           restarted: the group restarts from the last sharded checkpoint and the run completes.
# Usage, after a cuda build of the addon (run.sh builds it and then calls this):
#   PHASES="family offload zero ranks" bash test/e2e/gpu/families-zero.sh
set -uo pipefail
unset TEMPORAL_ADDRESS  # `finetune run` below starts its own embedded dev server
OUT=${OUT:-/tmp/ft-gpu-out}; mkdir -p "$OUT"
ROOT=${ROOT:-/tmp/ftgpu2}; mkdir -p "$ROOT"
PHASES=${PHASES:-family offload zero ranks}
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
TEXT=$PWD/test/fixtures/datasets/shakespeare-excerpt.txt
rc=0
fail() { echo "FAIL: $*"; rc=1; }
has() { case " $PHASES " in *" $1 "*) return 0;; esac; return 1; }

# summary NAME: one line from $OUT/NAME.report.json
summary() {
  python3 - "$OUT/$1.report.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = r["train"]
print(sys.argv[2], "steps", t["steps"], "loss", t["firstLoss"], "->", t["lastLoss"], "tok/s", t["tokensPerSec"],
      "eval", (r.get("eval") or {}).get("loss"), "resumed", t["resumedFromSteps"])
for n in r["notes"]: print("  note:", n)
PY
}

# run_cfg NAME ARGS...: `finetune run --json` (embedded dev server, workers in this process)
run_cfg() {
  local name=$1; shift
  timeout ${RUN_TIMEOUT:-240} node bin/finetune.js run "$@" --set storage.root=$ROOT/$name --json > "$OUT/$name.report.json" 2> "$OUT/$name.log" \
    || { fail "$name: finetune run exited $? (tail of $OUT/$name.log:)"; tail -15 "$OUT/$name.log"; return 1; }
  summary "$name"
}

if has family; then
  echo "== family: random Llama from transformers -> finetune run (cuda) -> export -> transformers"
  python3 - "$ROOT/llama-hf" test/fixtures/golden/families/llama-tokenizer/tokenizer.json <<'PY' || fail "making the Llama directory"
import shutil, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
out, tok = sys.argv[1], sys.argv[2]
cfg = LlamaConfig(vocab_size=300, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
LlamaForCausalLM(cfg).save_pretrained(out)  # safetensors
shutil.copy(tok, out + "/tokenizer.json")
print("llama dir", out, sum(p.numel() for p in LlamaForCausalLM(cfg).parameters()), "params")
PY
  cat > "$ROOT/llama.json" <<JSON
{ "name": "llama-e2e",
  "data": { "train": { "type": "text", "path": "$TEXT" }, "validationFraction": 0.1 },
  "preprocess": { "mode": "concat", "blockSize": 128 },
  "tokenizer": { "type": "huggingface", "path": "$ROOT/llama-hf" },
  "model": { "init": "pretrained", "path": "$ROOT/llama-hf", "nPositions": 256 },
  "training": { "backend": "cuda", "microBatchSize": 16, "maxSteps": 300, "learningRate": 1e-3, "warmupSteps": 20, "segmentSteps": 100 },
  "checkpoint": { "everySteps": 100, "everyMinutes": 0 },
  "evaluation": { "maxBatches": 0, "batchSize": 8 },
  "generation": { "prompts": ["ROMEO:"], "maxNewTokens": 32, "temperature": 0 } }
JSON
  node bin/finetune.js estimate "$ROOT/llama.json" --device-memory 80GiB > "$OUT/llama.estimate.txt" 2>&1; head -3 "$OUT/llama.estimate.txt"
  if run_cfg llama "$ROOT/llama.json"; then
    python3 - "$OUT/llama.report.json" <<'PY' || fail "family: transformers does not agree with the workflow's export/eval"
import json, os, sys, torch, pyarrow.parquet as pq
from transformers import AutoModelForCausalLM
r = json.load(open(sys.argv[1])); d = r["dataDir"]
m = AutoModelForCausalLM.from_pretrained(r["modelDir"], dtype=torch.float32).cuda().eval()
assert type(m).__name__ == "LlamaForCausalLM", type(m).__name__
man = json.load(open(os.path.join(d, "manifest.json")))
tot, n = 0.0, 0
for sh in man["splits"]["validation"]["shards"]:
    t = pq.read_table(os.path.join(d, sh["path"]))
    ids = torch.tensor(t.column("input_ids").to_pylist()).cuda(); lab = torch.tensor(t.column("labels").to_pylist()).cuda()
    for i in range(0, len(ids), 8):
        with torch.no_grad(): lg = m(ids[i:i + 8]).logits.float()
        y = lab[i:i + 8, 1:]
        tot += torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.size(-1)), y.reshape(-1), ignore_index=-100, reduction="sum").item()
        n += (y != -100).sum().item()
ours = r["eval"]["loss"]; theirs = tot / n
print(f"eval loss: workflow {ours:.5f}, transformers on the export {theirs:.5f} ({n} targets), rel diff {abs(ours - theirs) / theirs:.2e}")
print("sample:", repr(r["samples"][0]["text"][:80]))
sys.exit(0 if abs(ours - theirs) / theirs < 3e-2 and r["train"]["lastLoss"] < r["train"]["firstLoss"] else 1)
PY
  fi
fi

GPT2=(configs/presets/default.json --set training.backend=cuda --set model.nLayer=4 --set model.nEmbd=256 --set training.learningRate=1e-3
      --set training.segmentSteps=100 --set checkpoint.everySteps=50 --set checkpoint.everyMinutes=0 --set generation.maxNewTokens=16)

if has offload; then
  echo "== offload: GPT-2 4L x 256, ZeRO-2 + optimizer offload to the CPU, one GPU"
  run_cfg offload "${GPT2[@]}" --set training.maxSteps=200 --set parallelism.zeroStage=2 --set parallelism.offload.optimizer=cpu \
    --set training.microBatchSize=16 && python3 -c "
import json,sys; t=json.load(open('$OUT/offload.report.json'))['train']; sys.exit(0 if t['steps']==200 and t['lastLoss']<t['firstLoss'] else 1)" \
    || fail "offload: run incomplete or loss did not fall"
fi

if has zero && [ "$NGPU" -ge 2 ]; then
  echo "== zero: one worker x $NGPU GPUs at ZeRO-2 vs one GPU, same global batch ($NGPU micro-batches of 8 per step)"
  run_cfg zero1 "${GPT2[@]}" --set training.maxSteps=100 --set training.gradAccumSteps=$NGPU --set parallelism.devices=1
  run_cfg zeroN "${GPT2[@]}" --set training.maxSteps=100 --set training.gradAccumSteps=$NGPU --set parallelism.devices=$NGPU --set parallelism.zeroStage=2
  python3 - "$OUT/zero1.report.json" "$OUT/zeroN.report.json" <<'PY' || fail "zero: losses of 1 GPU and N GPUs disagree"
import json, sys
a, b = (json.load(open(f))["train"] for f in sys.argv[1:3])
d = abs(a["lastLoss"] - b["lastLoss"])
print(f"last loss 1 GPU {a['lastLoss']:.4f} vs N GPUs {b['lastLoss']:.4f} (|diff| {d:.4f}); tok/s {a['tokensPerSec']} vs {b['tokensPerSec']}")
sys.exit(0 if d < 0.05 else 1)
PY
elif has zero; then echo "== zero: skipped ($NGPU GPU)"; fi

if has ranks && [ "$NGPU" -ge 2 ]; then
  echo "== ranks: two worker processes, one GPU each, rendezvous through the workflow, ZeRO-3; rank 1 killed mid-run"
  P=${PORT2:-7244}; export TEMPORAL_ADDRESS=127.0.0.1:$P
  node bin/finetune.js devserver --port $P --db $ROOT/ranks.db > "$OUT/ranks-server.log" 2>&1 &
  for i in $(seq 50); do grep -q listening "$OUT/ranks-server.log" && break; sleep 0.2; done
  node bin/finetune.js worker --queues finetune > "$OUT/ranks-cpu.log" 2>&1 &
  CUDA_VISIBLE_DEVICES=0 node bin/finetune.js worker --queues finetune-gpu --rank-queue finetune-gpu-rank-0 --backend cuda > "$OUT/ranks-w0.log" 2>&1 &
  CUDA_VISIBLE_DEVICES=1 node bin/finetune.js worker --queues "" --rank-queue finetune-gpu-rank-1 --backend cuda > "$OUT/ranks-w1.log" 2>&1 &
  W1=$!
  ID=$(node bin/finetune.js start "${GPT2[@]}" --set storage.root=$ROOT/ranks --set training.maxSteps=300 --set training.gradAccumSteps=2 \
       --set parallelism.nodes=2 --set parallelism.devices=1 --set parallelism.zeroStage=3 --set temporal.heartbeatTimeoutSeconds=15 \
       --set temporal.workflowId=ranks-e2e 2> "$OUT/ranks-start.log") || { fail "ranks: start"; cat "$OUT/ranks-start.log"; }
  killed=0
  for i in $(seq 240); do
    S=$(node bin/finetune.js status "$ID" --json 2>/dev/null) || { sleep 1; continue; }
    set -- $(echo "$S" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], d["step"], (d.get("lastCheckpoint") or {}).get("step"))')
    [ $((i % 5)) = 0 ] && echo "  $*"
    if [ $killed = 0 ] && [ "$3" != None ] && [ "$3" -ge 100 ] 2>/dev/null; then
      kill -9 $W1; killed=1; echo "  SIGKILLed rank 1's worker at step $2 (checkpoint $3)"
      CUDA_VISIBLE_DEVICES=1 node bin/finetune.js worker --queues "" --rank-queue finetune-gpu-rank-1 --backend cuda > "$OUT/ranks-w1b.log" 2>&1 &
    fi
    [ "$1" = RUNNING ] || break
    sleep 2
  done
  node bin/finetune.js status "$ID" --json > "$OUT/ranks.status.json" 2>&1
  python3 - "$OUT/ranks.status.json" <<'PY' || fail "ranks: the run did not complete with a restart"
import json, sys
d = json.load(open(sys.argv[1]))
print("status", d["status"], "step", d["step"], "of", d["totalSteps"]); [print("  note:", n) for n in d["notes"]]
sys.exit(0 if d["status"] == "COMPLETED" and any("restart 1/" in n for n in d["notes"]) else 1)
PY
  kill $(jobs -p) 2>/dev/null; unset TEMPORAL_ADDRESS
elif has ranks; then echo "== ranks: skipped ($NGPU GPU)"; fi
exit $rc
