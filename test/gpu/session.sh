#!/usr/bin/env bash
# One device call = one GPU validation session: every GPU suite of the repository in priority order, each stage
# under its own time budget (a slow stage cannot eat the call), a machine-readable summary rewritten after every
# stage, and the raw logs as one tarball (the run tool returns at most 8 files from $OUT).
#
#   test/gpu/session.sh OUTDIR [--plan h100|h200x4] [--only A,B] [--skip A,B] [--budget SECONDS] [--list]
#
#   OUTDIR/summary.json   {plan, gpus, setup, stages: [{stage, status pass|fail|timeout|skip|dry, seconds,
#                          counts, failures, bench, note}]}  (test/gpu/lib/summary.py)
#   OUTDIR/logs.tgz       every stage's logs (LOGDIR/<stage>/...), files over 8 MB left out
#   OUTDIR/session.log    this script's own output
#   OUTDIR/ncu.tgz        Nsight Compute reports of the profile stage (when it ran)
#
# Stages (name: GPUs needed, budget s: what). A plan is a list of steps; "a|b" runs a and b at once, each pinned
# to its own GPU (CUDA_VISIBLE_DEVICES; a stage needing every GPU is not pinned). Stages needing more GPUs than
# the machine has are recorded as skipped, as are stages whose inputs are missing (peer script, kit, ncu).
#   build           setup: prebuilt programs missing or stale for this tree -> test/gpu/prebuild.sh here
#   gpt2-tests      1   200  test/gpu/run.sh: kernels_check, cuda_backend_test, torch_parity (GPT-2, current kernels)
#   families-tests  1   280  test/gpu/families/run.sh as it is (Llama/NeoX/GPT-J vs cpu + transformers; ZeRO,
#                            offload and the TrainState class on one GPU)
#   families-multi  2   160  FAMILIES_GROUPS=multigpu test/gpu/families/run.sh (stages 0-3, offload, sharded
#                            checkpoint over every GPU)
#   offload-tests   1   170  test/gpu/offload_run.sh (protocol bit-exact; backend with vs without offload)
#   gpt2-bench-xl   1   260  bench/train_gpu.sh gpt2-xl:8 with the torch.compile peer in the same run
#   families-bench  1   170  bench/families_gpu.sh llama-1b:4:2048 with bench/peer_llama.py in the same run
#   offload-bench   1   300  SKIP=1 bench/offload_gpu.sh (FSDP2 offload peer, GPT-J-6B-sized, CPU AdamW, delayed)
#   profile         1   150  bench/train_gpu_profile.sh gpt2:16 (ncu SpeedOfLight + Occupancy sections)
#   zero            2   150  test/gpu/run_zero.sh, groups processes + memory (ZERO_TESTS), no bench
#   e2e             1   310  test/e2e/gpu/run.sh (+ families-zero.sh), the pipeline through the Node addon; needs
#                            .ft-kit (test/e2e/gpu/make-kit.sh) or .gpu-kit (test/gpu/lib/slim-kit.sh); its
#                            zero/ranks parts need >= 2 GPUs. Phase 2 only by default (family, offload, zero,
#                            ranks: never run on a GPU); E2E_PHASE1=1 adds the GPT-2 kill/resume workflow first
#                            (it ran on an H200 in session 1)
# Token data: .gpu-data/tinyshakespeare.i32 when carried, else made from the kit's Moby Dick (lib/make-data.cjs).
# Plans:  h100    gpt2-tests, families-tests|offload-tests, gpt2-bench-xl, families-bench, profile
#         h200x4  zero, e2e|families-multi|offload-bench|profile
# (default: h200x4 when >= 2 GPUs are seen, else h100). --only/--skip take stage names (--only keeps plan order;
# a name not in the plan is appended as its own step).
#
# Environment: SESSION_GPUS=N pretends N GPUs (stage selection dry runs on a machine without one); SESSION_DRY=1
# prints each stage's command and records it as "dry" without running anything; SESSION_BUDGET (default 460 s)
# is the whole session's wall budget: a stage starts only with >= 30 s left and gets min(its budget, what is left);
# STAGE_BUDGET_<name with _> overrides one stage's budget; SESSION_AUX=DIR looks for .gpu-data, bench/peer,
# .gpu-prebuilt and .ft-kit there when they are not here (a snapshot under .snap/NAME: SESSION_AUX=../..).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
root=$PWD
source test/gpu/lib/srchash.sh
export GPU_TEST_DATA=${GPU_TEST_DATA:-$root/.gpu-data/tinyshakespeare.i32}

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
out=""; plan=""; only=""; skip=""; list=0; budget=${SESSION_BUDGET:-460}
while [ $# -gt 0 ]; do
  case $1 in
    --plan) plan=${2:-}; shift 2 ;;
    --plan=*) plan=${1#*=}; shift ;;
    --only) only=${2:-}; shift 2 ;;
    --only=*) only=${1#*=}; shift ;;
    --skip) skip=${2:-}; shift 2 ;;
    --skip=*) skip=${1#*=}; shift ;;
    --budget) budget=${2:-}; shift 2 ;;
    --budget=*) budget=${1#*=}; shift ;;
    --list) list=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "session.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "session.sh: one OUTDIR only (got '$out' and '$1')" >&2; exit 2; }; out=$1; shift ;;
  esac
done
[[ $budget =~ ^[0-9]+$ ]] || { echo "session.sh: --budget/SESSION_BUDGET must be whole seconds, got '$budget'" >&2; exit 2; }

# ---- stages: GPUs needed, budget, command (run from the repository root with $L = the stage's log folder) ----
declare -A NEED BUDGET
NEED=([gpt2-tests]=1 [families-tests]=1 [offload-tests]=1 [gpt2-bench-xl]=1 [families-bench]=1 [offload-bench]=1
      [profile]=1 [zero]=2 [e2e]=1 [families-multi]=2)
BUDGET=([gpt2-tests]=200 [families-tests]=280 [families-multi]=160 [offload-tests]=170 [gpt2-bench-xl]=260 [families-bench]=170
        [offload-bench]=300 [profile]=150 [zero]=150 [e2e]=310 [build]=240)
ALLGPU=" zero e2e families-multi families-tests "   # stages that use every GPU they see: never pinned
declare -A PLANS=([h100]="gpt2-tests|offload-tests gpt2-bench-xl families-bench profile"
                  [h200x4]="zero e2e|families-tests|offload-bench")
cmd_of() {  # the command line of a stage (also what SESSION_DRY=1 prints)
  case $1 in
    gpt2-tests)     echo 'GPU_PREBUILT=1 GPU_TEST_WORK=$W test/gpu/run.sh $L' ;;
    families-tests) echo 'FAMILIES_WORK=$W FAMILIES_TEST_TIMEOUT=$((B > 140 ? B - 70 : B / 2)) test/gpu/families/run.sh $L' ;;
    families-multi) echo 'FAMILIES_WORK=$W FAMILIES_GROUPS=multigpu FAMILIES_TEST_TIMEOUT=$((B > 80 ? B - 40 : B / 2)) test/gpu/families/run.sh $L' ;;
    offload-tests)  echo 'OFFLOAD_PREBUILT=1 test/gpu/offload_run.sh $L' ;;
    gpt2-bench-xl)  echo 'bench/train_gpu.sh $L gpt2-xl:8' ;;
    families-bench) echo 'bench/families_gpu.sh $L llama-1b:4:2048' ;;
    offload-bench)  echo 'SKIP=${OFFLOAD_BENCH_SKIP:-1} bench/offload_gpu.sh $L' ;;
    profile)        echo 'PROFILE_TIMEOUT=$((B > 60 ? B - 20 : B / 2)) bench/train_gpu_profile.sh $L gpt2:16' ;;
    zero)           echo 'ZERO_PREBUILT=1 ZERO_TESTS="${ZERO_TESTS:-processes memory}" ZERO_BENCH=0 GPU_TEST_WORK=$W test/gpu/run_zero.sh $L' ;;
    e2e)            echo 'OUT=$L E2E_PHASE1=${E2E_PHASE1:-0} RUN_TIMEOUT=${E2E_RUN_TIMEOUT:-150} bash test/e2e/gpu/run.sh' ;;
    *) return 1 ;;
  esac
}
# inputs a stage cannot run without (checked at its start): prints the reason to skip, nothing when ready
missing_for() {
  case $1 in
    gpt2-tests|offload-tests|zero) [ -s "$GPU_TEST_DATA" ] || echo "no token data ($GPU_TEST_DATA; carry .gpu-data or .ft-kit)" ;;
    gpt2-bench-xl) [ -f bench/peer/peer_torch.py ] || echo "bench/peer/peer_torch.py missing (carry bench/peer): no same-run peer" ;;
    offload-bench) [ -f bench/peer/peer_torch.py ] || echo "bench/peer/peer_torch.py missing (carry bench/peer)" ;;
    e2e) [ -f .ft-kit/setup.sh ] || echo ".ft-kit missing (test/e2e/gpu/make-kit.sh here, carry .ft-kit)" ;;
    profile) command -v ncu >/dev/null || ls /opt/nvidia/nsight-compute/*/ncu >/dev/null 2>&1 || echo "ncu not found" ;;
  esac
}

# ---- GPUs, plan, steps ----
if [ -n "${SESSION_GPUS:-}" ]; then ngpu=$SESSION_GPUS
else ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
[[ $ngpu =~ ^[0-9]+$ ]] || { echo "session.sh: SESSION_GPUS must be a number, got '$ngpu'" >&2; exit 2; }
[ -n "$plan" ] || { [ "$ngpu" -ge 2 ] && plan=h200x4 || plan=h100; }
[ -n "${PLANS[$plan]:-}" ] || { echo "session.sh: unknown plan '$plan' (h100 | h200x4)" >&2; exit 2; }
for s in ${only//,/ } ${skip//,/ }; do
  [ -n "${NEED[$s]:-}" ] || { echo "session.sh: unknown stage '$s' (known: ${!NEED[*]})" >&2; exit 2; }
done
steps=()
for step in ${PLANS[$plan]}; do
  keep=()
  for s in ${step//|/ }; do
    { [ -z "$only" ] || [[ ",$only," == *",$s,"* ]]; } && [[ ",$skip," != *",$s,"* ]] && keep+=("$s")
  done
  [ ${#keep[@]} -gt 0 ] && steps+=("$(IFS='|'; echo "${keep[*]}")")
done
for s in ${only//,/ }; do [[ " ${PLANS[$plan]//|/ } " == *" $s "* ]] || steps+=("$s"); done

if [ $list = 1 ]; then
  echo "plan $plan, $ngpu GPU(s), budget ${budget}s:"
  for step in "${steps[@]}"; do
    i=0; down=0
    for s in ${step//|/ }; do [[ $ALLGPU == *" $s "* ]] && down=1; done
    for s in ${step//|/ }; do
      b=${BUDGET[$s]}; v=STAGE_BUDGET_${s//-/_}; b=${!v:-$b}
      if [ "$ngpu" -lt "${NEED[$s]}" ]; then what="skip (needs ${NEED[$s]} GPUs, $ngpu seen)"
      elif [[ $ALLGPU == *" $s "* ]] || [ "$ngpu" = 0 ]; then what="every GPU"
      elif [ "$step" = "$s" ]; then what="default device (not pinned)"
      else
        if [ $down = 1 ]; then g=$(( ngpu - 1 - i % ngpu )); else g=$(( i % ngpu )); fi
        what="GPU $g"; i=$((i + 1))
      fi
      [ -n "$(missing_for "$s")" ] && what="$what; here it would skip: $(missing_for "$s")"
      printf '  %-16s %-4s %4ss  %s\n' "$s" "$([ "$step" = "$s" ] && echo step || echo par)" "$b" "$what"
    done
  done
  exit 0
fi
[ -n "$out" ] || { usage >&2; echo "session.sh: OUTDIR missing" >&2; exit 2; }
mkdir -p "$out" && out=$(cd "$out" && pwd)
exec > >(tee -a "$out/session.log") 2>&1
work=${SESSION_WORK:-/tmp/gpu-session}; rm -rf "$work"; mkdir -p "$work/logs"
summary=$out/summary.json
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
pack() {  # the logs as one file (the run tool returns at most 8), big files left out
  find "$work/logs" -type f -size +8M > "$work/big.txt"
  tar -C "$work/logs" -czf "$out/logs.tgz" --exclude='*.ncu-rep' -X <(sed "s|^$work/logs/|./|" "$work/big.txt") . 2>/dev/null
  if ls "$work"/logs/profile/*.ncu-rep >/dev/null 2>&1; then
    (cd "$work/logs/profile" && tar -czf "$out/ncu.tgz" ./*.ncu-rep)
    [ "$(stat -c %s "$out/ncu.tgz")" -lt $((15 << 20)) ] || { rm -f "$out/ncu.tgz"; echo "ncu reports over 15 MiB: not returned (CSV in logs.tgz)"; }
  fi
}

# ---- setup: helper folders, CUDA libraries, prebuilt programs, token data ----
aux=${SESSION_AUX:-}
for p in .gpu-data bench/peer .gpu-prebuilt .ft-kit .gpu-kit; do
  [ -e "$p" ] || [ -z "$aux" ] || [ ! -e "$aux/$p" ] || { mkdir -p "$(dirname "$p")"; ln -s "$(cd "$aux" && pwd)/$p" "$p"; }
done
# the slim kit (test/gpu/lib/slim-kit.sh) stands in for .ft-kit, whose path test/e2e/gpu/run.sh sources
[ -e .ft-kit ] || [ ! -f .gpu-kit/setup.sh ] || ln -s .gpu-kit .ft-kit
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
dry=${SESSION_DRY:-0}
want=$(gpu_src_hash)
prebuilt="none carried"
if [ -f .gpu-prebuilt/manifest.json ]; then
  have=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["src_hash"])' .gpu-prebuilt/manifest.json)
  if [ "$have" = "$want" ]; then
    if [ "${SESSION_DRY:-0}" = 1 ]; then prebuilt="ok ($want; not unpacked: dry run)"
    else xz -dc .gpu-prebuilt/programs.tar.xz | tar -C "$root" -xf - && prebuilt="ok ($want)" || prebuilt="unpacking failed"; fi
  else prebuilt="stale: carried $have, tree $want"; fi
fi
kit=no; [ -f .ft-kit/setup.sh ] && kit=yes
info=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  data_from "$([ -s "$GPU_TEST_DATA" ] && echo carried || echo "the kit's Moby Dick (lib/make-data.cjs)")" src_hash "$want" prebuilt "$prebuilt" prebuilt_commit "$(grep -o '"commit": "[0-9a-f]*' .gpu-prebuilt/manifest.json 2>/dev/null | cut -d'"' -f4)" kit "$kit" budget_s "$budget" data "$GPU_TEST_DATA" \
  gpu "$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sort | uniq -c | tr -s ' ' | paste -sd';')" \
  host "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)")
python3 test/gpu/lib/summary.py init "$summary" "$plan" "$ngpu" "$info"
echo "== session: plan $plan, $ngpu GPU(s), budget ${budget}s, prebuilt $prebuilt, kit $kit"

# parallel stages finish at any time: one writer of summary.json at a time
sum_stage() {
  if command -v flock >/dev/null; then flock "$work/summary.lock" python3 test/gpu/lib/summary.py stage "$summary" "$@"
  else python3 test/gpu/lib/summary.py stage "$summary" "$@"; fi
}
# run_stage NAME GPU|"" : one stage under `timeout` (its process group: children included), logs in $work/logs/NAME
run_stage() {
  local s=$1 gpu=$2 L=$work/logs/$1 W=$work/work/$1 b v why rc st t1 note=""
  mkdir -p "$L" "$W"
  b=${BUDGET[$s]}; v=STAGE_BUDGET_${s//-/_}; b=${!v:-$b}
  [ "$(left)" -lt "$b" ] && { b=$(left); note="budget cut to ${b}s by the session budget"; }
  if [ "$b" -lt 30 ]; then sum_stage "$s" skip 0 "$L" "no time left ($(left)s)"; return; fi
  if [ "$ngpu" -lt "${NEED[$s]}" ]; then
    sum_stage "$s" skip 0 "$L" "needs ${NEED[$s]} GPUs, $ngpu seen"; return; fi
  why=$(missing_for "$s")
  if [ -n "$why" ] && [ "$dry" != 1 ]; then sum_stage "$s" skip 0 "$L" "$why"; return; fi
  local cmd; cmd=$(cmd_of "$s")
  [ -n "$gpu" ] && cmd="CUDA_VISIBLE_DEVICES=$gpu $cmd" && note="${note:+$note; }GPU $gpu"
  echo "== $s: start at $(( $(date +%s) - t0 ))s, budget ${b}s${gpu:+, GPU $gpu}: $cmd"
  if [ "$dry" = 1 ]; then sum_stage "$s" dry 0 "$L" "${note:+$note; }$cmd"; return; fi
  t1=$(date +%s)
  L=$L W=$W B=$b timeout -k 15 "$b" bash -c "cd '$root' && $cmd" > "$L/stdout.log" 2>&1; rc=$?
  case $rc in 0) st=pass ;; 124|137) st=timeout; note="${note:+$note; }killed at its ${b}s budget" ;; *) st=fail ;; esac
  sum_stage "$s" $st $(( $(date +%s) - t1 )) "$L" "${note:+$note; }exit $rc"
  echo "== $s: $st (exit $rc) after $(( $(date +%s) - t1 ))s"
  [ $st = pass ] || tail -15 "$L/stdout.log" | cut -c1-240 | sed 's/^/   | /'
}

# build: only when the carried programs do not match this tree (or none were carried)
if [[ $prebuilt != ok* ]]; then
  L=$work/logs/build; mkdir -p "$L"
  if [ "$dry" = 1 ] || [ "$ngpu" = 0 ]; then
    sum_stage build skip 0 "$L" "prebuilt $prebuilt; would run test/gpu/prebuild.sh $work/prebuilt"
  else
    echo "== build: prebuilt $prebuilt -> test/gpu/prebuild.sh on this host"; t1=$(date +%s)
    b=${STAGE_BUDGET_build:-${BUDGET[build]}}
    PREBUILD_PACK=0 timeout -k 10 "$b" test/gpu/prebuild.sh "$work/prebuilt" > "$L/prebuild.log" 2>&1; rc=$?
    [ $rc = 0 ] && mkdir -p build && cp -a build/gpu-prebuilt-obj/stage/build/. build/
    sum_stage build "$([ $rc = 0 ] && echo pass || echo fail)" $(( $(date +%s) - t1 )) "$L" "prebuilt $prebuilt; exit $rc"
    [ $rc = 0 ] || tail -20 "$L/prebuild.log"
  fi
fi
# token data: from the kit's Moby Dick when no .gpu-data was carried (the x4 call carries the kit instead)
if [ ! -s "$GPU_TEST_DATA" ] && [ $kit = yes ] && [ "$dry" != 1 ]; then
  ( source .ft-kit/setup.sh && mkdir -p "$(dirname "$GPU_TEST_DATA")" && node test/gpu/lib/make-data.cjs "$GPU_TEST_DATA" ) \
    > "$work/logs/data.log" 2>&1 && echo "== data: $(cat "$work/logs/data.log" | tail -1)" || { echo "== data: failed"; tail -5 "$work/logs/data.log"; }
fi

for step in "${steps[@]}"; do
  if [ "$step" = "${step%|*}" ]; then run_stage "$step" ""
  else
    # pinned stages take GPUs 0, 1, ...; beside a stage using every GPU they count down from the last GPU, away
    # from GPUs 0/1, which the e2e's two rank workers use
    i=0; pids=(); down=0
    for s in ${step//|/ }; do [[ $ALLGPU == *" $s "* ]] && down=1; done
    for s in ${step//|/ }; do
      g=""
      if ! [[ $ALLGPU == *" $s "* ]] && [ "$ngpu" != 0 ]; then
        if [ $down = 1 ]; then g=$(( (ngpu - 1 - i % ngpu) )); else g=$(( i % ngpu )); fi
        i=$((i + 1))
      fi
      run_stage "$s" "$g" & pids+=($!)
    done
    wait "${pids[@]}"
  fi
  pack
done
pack
python3 test/gpu/lib/summary.py print "$summary"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(1 if any(s["status"] in ("fail","timeout") for s in d["stages"]) else 0)' "$summary"
