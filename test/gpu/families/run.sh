#!/usr/bin/env bash
# The model-family GPU tests in one go (GPU host with PyTorch + transformers; CI never runs it):
#   1. build (test/gpu/families/build.sh)
#   2. torch_families.py make: random Llama / GPT-NeoX / GPT-J models saved by transformers + batches
#   3. families_test: import, cuda (fp32, bf16) vs cpu parity, determinism, recompute, training, KV cache,
#      ZeRO 1-3 on one GPU, the TrainState class (family_backend_zero.cu) at stage 0 through the same checks,
#      optimizer offload, several GPUs when visible (stages 0-3, offload, a sharded-checkpoint round trip),
#      round trip through engine::Engine (import -> train on cuda -> checkpoint -> cpu resume -> export)
#   4. torch_families.py check: transformers vs our dumps (logits, loss, gradients) and the exported directories
# Usage: test/gpu/families/run.sh [LOGDIR]. Exit code 0 only when every check passed.
#   FAMILIES_GROUPS=zero,zeroclass,offload,multigpu  only these families_test groups (then no transformers check,
#                                                    which needs the parity and roundtrip dumps)
#   FAMILIES_VARIANTS=llama,gptj                     only these variants
#   FAMILIES_TEST_TIMEOUT=420                        seconds for families_test (default 420)
set -uo pipefail
cd "$(dirname "$0")/../../.."
logs=${1:-build/gpu-families/logs}; mkdir -p "$logs"
work=${FAMILIES_WORK:-/tmp/families-work}; rm -rf "$work"; mkdir -p "$work"
groups=${FAMILIES_GROUPS:-}
rc=0
[ -x build/gpu-families/families_test ] || test/gpu/families/build.sh > "$logs/build.log" 2>&1 || { echo "build failed:"; tail -40 "$logs/build.log"; exit 1; }
echo "== make models"; PYTHONUNBUFFERED=1 timeout 120 python3 test/gpu/families/torch_families.py make "$work" 2>&1 | tail -3 | tee "$logs/make.log"
echo "== families_test ${groups:-(all groups)}"
timeout "${FAMILIES_TEST_TIMEOUT:-420}" build/gpu-families/families_test "$work" $groups 2>&1 | tee "$logs/families_test.log"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
if [ -z "$groups" ] && [ -z "${FAMILIES_VARIANTS:-}" ]; then
  echo "== transformers check"; PYTHONUNBUFFERED=1 timeout 200 python3 test/gpu/families/torch_families.py check "$work" 2>&1 | grep -v Warning | tee "$logs/torch_check.log"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
exit $rc
