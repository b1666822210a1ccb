#!/usr/bin/env bash
# The finetune workflow on a GPU host with the CUDA backend, the way an operator runs it: a Temporal server
# (the embedded dev server here; no network on the device), a CPU worker (`finetune worker --queues finetune`)
# and a GPU worker (`finetune worker --queues finetune-gpu --backend cuda`) as separate processes, the run started
# with `finetune start` and followed with `finetune status`. Midway the GPU worker is SIGKILLed and a new one
# started: the run must resume from its last checkpoint on the GPU. Logs and the report go to $OUT.
# Then (E2E_PHASE2=1, the default) test/e2e/gpu/families-zero.sh: a Llama made by transformers, optimizer offload,
# ZeRO over every GPU, and two worker processes joined through the workflow's rendezvous (>= 2 GPUs).
# E2E_PHASE1=0 / E2E_PHASE2=0 skip a phase (the build always runs); PHASES selects parts of phase 2.
# Needs Node with the repository's dependencies installed (npm ci), nvcc + cuBLAS, python3 with transformers.
# npm run test:gpu runs it (test/gpu/workflow.test.ts).
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp/ft-gpu-out}; mkdir -p "$OUT"
command -v node >/dev/null || { echo "node not found: install Node and run npm ci"; exit 1; }
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
t0=$(date +%s)
BACKEND=${BACKEND:-cuda}
ENGINE_CUDA=$([ "$BACKEND" = cuda ] && echo 1 || echo 0) ENGINE_JOBS=$(nproc) node native/scripts/build.mjs > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 ))s"; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
node -e "import('tsx/esm/api').then(async ({register})=>{register(); const m = await import('./native/index.ts'); console.log(JSON.stringify(m.engineAvailable()))})" | tee "$OUT/engine.json"
if [ "${E2E_PHASE1:-1}" = 1 ]; then  # phase 1: the GPT-2 workflow with a SIGKILLed GPU worker
P=${PORT:-7233}; ROOT=${ROOT:-/tmp/ftgpu}
export TEMPORAL_ADDRESS=127.0.0.1:$P
node bin/finetune.js devserver --port $P --db $ROOT.db > "$OUT/server.log" 2>&1 &
for i in $(seq 50); do grep -q listening "$OUT/server.log" && break; sleep 0.2; done
node bin/finetune.js worker --queues finetune > "$OUT/cpu-worker.log" 2>&1 &
node bin/finetune.js worker --queues finetune-gpu --backend $BACKEND --progress-interval-ms 500 > "$OUT/gpu-worker-1.log" 2>&1 &
GPU1=$!
# A bigger model than the CPU preset (4 layers, width 256) for 2000 steps: a few seconds of GPU time per segment.
STEPS=${STEPS:-2000}; EVERY=$(( STEPS / 8 ))
SETS=(--set storage.root=$ROOT --set training.backend=$BACKEND --set training.maxSteps=$STEPS --set training.segmentSteps=$(( STEPS / 4 ))
      --set checkpoint.everySteps=$EVERY --set temporal.heartbeatTimeoutSeconds=10 --set generation.maxNewTokens=64
      --set model.nLayer=${LAYERS:-4} --set model.nEmbd=${WIDTH:-256} --set training.microBatchSize=16 --set training.learningRate=1e-3)
ID=$(node bin/finetune.js start configs/presets/default.json "${SETS[@]}")
echo "workflow $ID"
killed=0
for i in $(seq 600); do
  S=$(node bin/finetune.js status "$ID" --json 2>/dev/null) || { sleep 1; continue; }
  st=$(echo "$S" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], d["stage"], d["step"], d["totalSteps"], (d.get("lastCheckpoint") or {}).get("step"))')
  echo "$(( $(date +%s) - t0 ))s $st"
  set -- $st
  if [ $killed = 0 ] && [ "$5" != "None" ] && [ "$5" -ge $(( EVERY * 2 )) ] 2>/dev/null; then
    kill -9 $GPU1; killed=1; echo "SIGKILLed GPU worker $GPU1 at step $3 (last checkpoint $5)"
    node bin/finetune.js worker --queues finetune-gpu --backend $BACKEND --progress-interval-ms 500 > "$OUT/gpu-worker-2.log" 2>&1 &
  fi
  [ "$1" = RUNNING ] || break
  sleep 2
done
kill $(jobs -p) 2>/dev/null
cp "$ROOT"/moby-dick-tiny/*/report.json "$OUT/report.json" 2>/dev/null
ls -la "$ROOT"/moby-dick-tiny/*/model > "$OUT/model-files.txt" 2>&1
python3 - "$OUT/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["train"]
print("steps", t["steps"], "loss", t["firstLoss"], "->", t["lastLoss"], "tok/s", t["tokensPerSec"], "resumed from", t["resumedFromSteps"])
print("eval", r["eval"]); print("stages", r["stageMs"]); print("notes", r["notes"])
for s in r["samples"]: print(repr(s["prompt"]), "->", repr(s["text"][:200]))
PY
# Load the exported model with transformers: the HF directory must be usable as is.
python3 - "$ROOT" <<'PY' 2>&1 | tail -5
import glob, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d = glob.glob(sys.argv[1] + "/moby-dick-tiny/*/model")[0]
m = AutoModelForCausalLM.from_pretrained(d); tok = AutoTokenizer.from_pretrained(d)
ids = tok("Call me Ishmael.", return_tensors="pt").input_ids
out = m.generate(ids, max_new_tokens=20, do_sample=False)
print("transformers loads the export:", type(m).__name__, sum(p.numel() for p in m.parameters()), "params:", repr(tok.decode(out[0])))
PY
unset TEMPORAL_ADDRESS
fi
if [ "${E2E_PHASE2:-1}" = 1 ]; then
  echo "== phase 2: families, offload, ZeRO, multi-worker ranks ($(( $(date +%s) - t0 ))s so far)"
  OUT="$OUT" bash test/e2e/gpu/families-zero.sh; p2=$?
  echo "phase 2 exit $p2 after $(( $(date +%s) - t0 ))s"; exit $p2
fi
