#!/usr/bin/env bash
# The GPU test suite and the speed benchmarks, on a GPU host with or without Node (npm run test:gpu calls it):
# builds the engine and every GPU program with CMake, runs each stage under its own time budget and writes
# OUTDIR/summary.json (rewritten after every stage, so a run cut short still says what finished), OUTDIR/run.log
# and OUTDIR/logs.tgz (every stage's logs).
#
#   test/gpu/run.sh OUTDIR [--only a,b] [--skip a,b] [--budget SECONDS] [--list]
#
# Stages (budget in seconds, STAGE_BUDGET_<stage> to change one; cut to what is left of the whole run's; a stage
# starts only with 30 s left). Phases
# run one after the other; inside a phase the lanes (space-separated) run at once on the GPU, the stages of a lane
# (comma-separated) one after the other. The correctness suites share the GPU; the benchmarks run alone.
#   phase 1   build
#   phase 2   gpt2,torch | families | kernels,offload,zero1
#   phase 3   bench
#   phase 4   zero
#   build     cmake -DENGINE_CUDA=ON -DENGINE_GPU_TESTS=ON, then every program (native/CMakeLists.txt)
#   gpt2      cuda_backend_test: GPT-2 cuda (fp32, bf16) vs the cpu backend, determinism, checkpoints moving between
#             backends, 50-step curves, KV-cache generation, out-of-memory and non-finite errors
#   torch     torch_parity.py: GPT-2 in PyTorch + transformers on the weights and batches cuda_backend_test dumped
#   families  families_test on Llama / GPT-NeoX / GPT-J models made by transformers (torch_families.py): import,
#             parity with the cpu backend, determinism, recompute, training, KV cache, ZeRO 1-3 and optimizer offload
#             on one GPU, several GPUs when visible, engine round trip; then transformers on our dumps and exports
#   kernels   native/lab kernels_check: every kernel against the cpu reference layers, bf16 and fp32
#   offload   offload_test (the offload protocol, bit for bit) and offload_engine_test (the backend with offload)
#   bench     ours vs the PyTorch peer in the same run (bench/train_gpu.sh): GPT-2 124M 16x1024, Llama-1B shape
#             4x2048, GPT-2 1.5B 8x1024; the summary checks the speed gates (>= 1.45x, >= 1.0x, >= 1.2x)
#   zero1     zero_test on one GPU: GPT-2 cuda fp32 vs the cpu backend at ZeRO stages 0 and 3, bf16 stages 1-3 vs 0
#   zero      zero_test over several GPUs and processes, memory against the formulas (skipped with one GPU)
#
# Inputs: token data GPU_TEST_DATA (int32 GPT-2 token ids; default .gpu-data/tinyshakespeare.i32, made by
# `npm run test:gpu` with Node; without it, test/gpu/make_data.py writes the UTF-8 bytes of the repository's
# Shakespeare excerpt as token ids), the GPT-2 peer PEER_TORCH (default bench/peer_torch.py; without it the
# GPT-2 cases run ours only and the summary says so). CUDA_ARCH (default 90a), BUILD_DIR (default build/gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=""; only=""; skip=""; list=0; budget=${GPU_BUDGET:-540}
while [ $# -gt 0 ]; do
  case $1 in
    --only) only=$2; shift 2 ;;
    --skip) skip=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --list) list=1; shift ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] || { echo "usage: test/gpu/run.sh OUTDIR [--only a,b] [--skip a,b] [--budget SECONDS] [--list]" >&2; exit 2; }
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
build=${BUILD_DIR:-build/gpu}; bin=$build/bin
work=${GPU_TEST_WORK:-/tmp/gpu-test-work}; mkdir -p "$work"
data=${GPU_TEST_DATA:-.gpu-data/tinyshakespeare.i32}
export PEER_TORCH=${PEER_TORCH:-bench/peer_torch.py}
export NCCL_NVLS_ENABLE=0  # never NVLink multicast (it can take a shared host's GPUs out of service)
export PATH=$PATH:${CUDA_HOME:-/usr/local/cuda}/bin  # nvcc for CMake when the toolkit is not on PATH
command -v flock >/dev/null || flock() { shift; "$@"; }  # lanes then write the summary unguarded
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')

# name budget command (run from the repository root by bash -c; $B = the stage's budget, $L = its log folder)
stages=(
  "build 240 stage_build"
  "gpt2 150 mkdir -p \$work/gpt2 && \$bin/cuda_backend_test \$data \$work/gpt2"
  "torch 90 stage_torch"
  "families 220 stage_families"
  "kernels 90 \$bin/kernels_check"
  "offload 120 stage_offload"
  "zero1 120 mkdir -p \$work/zero1 && \$bin/zero_test \$data \$work/zero1 'parity losses'"
  "bench 330 bench/train_gpu.sh \$L gpt2:16:1024,llama-1b:4:2048,gpt2-xl:8:1024"
  "zero 150 stage_zero"
)
phases=("build" "gpt2,torch families kernels,offload,zero1" "bench" "zero")
stage_build() {
  local gen=(); command -v ninja >/dev/null && [ ! -f "$build/CMakeCache.txt" ] && gen=(-G Ninja)
  cmake -S native -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DENGINE_CUDA=ON -DENGINE_GPU_TESTS=ON \
    -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90a} ${CMAKE_ARGS:-} && cmake --build "$build" -j "$(nproc)"
}
stage_families() {  # models made during the build; families_test, then transformers on its dumps and exports
  local rc=0 groups=parity,training,kv,zero,offload,roundtrip
  [ "$ngpu" -ge 2 ] && groups=$groups,multigpu
  while kill -0 "$make_pid" 2>/dev/null; do sleep 1; done  # torch_families.py make, started before the build
  cat "$work/families.make.log"
  timeout -k 5 $((B > 100 ? B - 50 : B / 2)) $bin/families_test "$work/families" $groups || rc=1
  timeout -k 5 45 python3 test/gpu/families/torch_families.py check "$work/families" || rc=1
  return $rc
}
stage_torch() { PYTHONUNBUFFERED=1 python3 test/gpu/torch_parity.py "$work/gpt2"; }
stage_offload() {
  local rc=0
  timeout -k 5 $((B / 2)) $bin/offload_test || rc=1
  timeout -k 5 $((B / 2)) $bin/offload_engine_test "$data" || rc=1
  return $rc
}
stage_zero() {
  [ "$ngpu" -ge 2 ] || { echo "zero_test needs 2 or more GPUs ($ngpu visible)"; return 77; }
  mkdir -p "$work/zero"; $bin/zero_test "$data" "$work/zero"
}
export -f stage_build stage_families stage_torch stage_offload stage_zero
export build bin work ngpu

wanted() { [[ -z $only || ",$only," == *",$1,"* ]] && [[ ",$skip," != *",$1,"* ]]; }
if [ $list = 1 ]; then
  for p in "${phases[@]}"; do echo "phase: ${p// / | }"; done
  for s in "${stages[@]}"; do read -r n b c <<< "$s"; wanted $n && echo "$n (${b}s): $c"; done
  exit 0
fi

exec > >(tee "$out/run.log") 2>&1
t0=$(date +%s)
left() { echo $((budget - ($(date +%s) - t0))); }
sum=$out/summary.json
[ -s "$data" ] || { data=$work/tokens.i32; python3 test/gpu/make_data.py "$data"; }
python3 test/gpu/summary.py init "$sum" "$(hostname)" "$ngpu" \
  "{\"commit\": \"$(git rev-parse --short HEAD 2>/dev/null)\", \"gpu\": \"$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)\", \"budget_s\": $budget, \"data\": \"$data\", \"peer\": \"$PEER_TORCH\"}"
echo "== $ngpu GPU(s), budget ${budget}s, data $data"

# inputs that need no build, made while the build runs (CPU only): the family models
make_pid=0
if wanted families; then
  rm -rf "$work/families"
  (PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES= timeout 200 python3 test/gpu/families/torch_families.py make "$work/families" \
     > "$work/families.make.log" 2>&1) &
  make_pid=$!
fi
export data make_pid

# run_stage NAME: the stage under its budget, its record in the summary (lanes write it one at a time)
run_stage() {
  local name=$1 s B cmd L note="" ts st status
  for s in "${stages[@]}"; do [[ $s == "$name "* ]] && read -r _ B cmd <<< "$s"; done
  s=STAGE_BUDGET_$name; B=${!s:-$B}  # STAGE_BUDGET_<stage>=SECONDS overrides a stage's budget
  L=$out/logs/$name; mkdir -p "$L"
  if [ "$(left)" -lt 30 ]; then
    flock "$work/summary.lock" python3 test/gpu/summary.py stage "$sum" "$name" skip 0 "$L" "no time left in the ${budget}s budget"
    return 1
  fi
  [ "$(left)" -lt "$B" ] && { B=$(left); note="budget cut to ${B}s"; }
  echo "== $name: start at $(( $(date +%s) - t0 ))s, budget ${B}s: $cmd"
  ts=$(date +%s)
  B=$B L=$L timeout -k 5 "$B" bash -c "$cmd" > "$L/stdout.log" 2>&1
  st=$?
  case $st in
    0) status=pass ;;
    77) status=skip; note=$(tail -n 1 "$L/stdout.log") ;;  # not applicable on this host (says why)
    124|137) status=timeout; note="${note:+$note; }killed at ${B}s" ;;
    *) status=fail ;;
  esac
  echo "== $name: $status after $(( $(date +%s) - ts ))s"; tail -n 15 "$L/stdout.log" | sed "s/^/   [$name] /"
  flock "$work/summary.lock" python3 test/gpu/summary.py stage "$sum" "$name" "$status" $(( $(date +%s) - ts )) "$L" "$note"
  [ "$status" = pass ] || [ "$status" = skip ]
}
# run_lane "a,b": its wanted stages in order; a failed stage does not stop the next (torch reads what gpt2 wrote)
run_lane() {
  local rc=0 n
  for n in ${1//,/ }; do wanted "$n" || continue; run_stage "$n" || rc=1; done
  return $rc
}

rc=0
for p in "${phases[@]}"; do
  pids=(); prc=0
  for lane in $p; do run_lane "$lane" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || prc=1; done
  [ $prc = 0 ] || rc=1
  [ "$p" = build ] && [ $prc != 0 ] && { echo "build failed: no test can run"; break; }
done
cp "$work"/gpt2/curves.json "$out/logs/" 2>/dev/null
tar -czf "$out/logs.tgz" -C "$out" logs && rm -rf "$out/logs"
python3 test/gpu/summary.py print "$sum"
python3 test/gpu/summary.py verdict "$sum" || rc=1
exit $rc
