#!/usr/bin/env bash
# Nsight Compute profile of our training step (build/gpu/bin/train_gpu), one record per distinct kernel: the third
# invocation of every kernel function whose name matches $KERNELS (so each GEMM variant, attention kernel, norm,
# classifier, optimizer kernel shows up once, from a warm step). Clocks are left alone (--clock-control none), as
# the device notes ask. Writes OUTDIR/<model>.ncu-rep, OUTDIR/<model>.csv (per-kernel key metrics) and prints a table.
#   bench/train_gpu_profile.sh OUTDIR [model:batch ...]      e.g. gpt2:16 gpt2-xl:8
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu/profile}; shift || true
cases=${*:-gpt2:16}
NCU=${NCU:-$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)}
[ -x "$NCU" ] || { echo "ncu not found"; exit 1; }
mkdir -p "$out"
# the optimizer kernels read and write every parameter's state: ncu saves and restores it for each replay pass, so
# they are profiled for the small model only (KERNELS_XL leaves them out)
KERNELS=${KERNELS:-'flash|layernorm|classifier|adamw|bias_grad|encoder|gelu|grad_sq|nvjet|gemm|xmma|cutlass|sm90'}
KERNELS_XL=${KERNELS_XL:-'flash|layernorm|classifier|bias_grad|nvjet|gemm|xmma|cutlass|sm90'}
# sections, not single metrics: ncu rejects a metric name it does not know, and --query-metrics does not list the
# derived ones (gpu__time_duration, the throughput breakdowns). SpeedOfLight: duration, SM / memory / DRAM throughput;
# Occupancy: achieved occupancy; SECTIONS="... ComputeWorkloadAnalysis" adds the pipe utilisation (more passes).
SECTIONS=${SECTIONS:-SpeedOfLight Occupancy}
SECT_ARGS=""; for x in $SECTIONS; do SECT_ARGS="$SECT_ARGS --section $x"; done
for c in $cases; do
  model=${c%%:*}; batch=${c##*:}
  k=$KERNELS; [ "$model" != gpt2 ] && k=$KERNELS_XL
  timeout ${PROFILE_TIMEOUT:-120} "$NCU" --clock-control none --kernel-id "::regex:($k):3" --launch-count ${PROFILE_COUNT:-40} \
    $SECT_ARGS -f -o "$out/$model" \
    build/gpu/bin/train_gpu --model "$model" --batch "$batch" --steps 2 --warmup 1 > "$out/$model.log" 2>&1
  n=$(grep -c '==PROF== Profiling' "$out/$model.log")
  echo "ncu $model: $n profiled launches"
  if [ "$n" = 0 ]; then  # --kernel-id matched nothing: fall back to a window of launches in the second step
    timeout ${PROFILE_TIMEOUT:-120} "$NCU" --clock-control none -k "regex:($k)" --launch-skip ${PROFILE_SKIP:-300} \
      --launch-count ${PROFILE_COUNT:-40} $SECT_ARGS -f -o "$out/$model" \
      build/gpu/bin/train_gpu --model "$model" --batch "$batch" --steps 2 --warmup 1 > "$out/$model.log" 2>&1
    echo "ncu $model (fallback window): $(grep -c '==PROF== Profiling' "$out/$model.log") profiled launches"
  fi
  "$NCU" --import "$out/$model.ncu-rep" --page raw --csv > "$out/$model.csv" 2>/dev/null
  python3 - "$out/$model.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) < 3: print("  (no rows)"); sys.exit()
h = rows[0]
def col(name):
    return h.index(name) if name in h else None
cols = [("gpu__time_duration.sum", "us", 1), ("sm__throughput.avg.pct_of_peak_sustained_elapsed", "SM%", 1),
        ("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed", "mem%", 1),
        ("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed", "dram%", 1),
        ("sm__warps_active.avg.pct_of_peak_sustained_active", "occ%", 1),
        ("launch__registers_per_thread", "regs", 1)]
cols += [(n, n.split("__")[-1][:7], 1) for n in h if "tensor" in n and "pct" in n][:2]
units = rows[1]
print("  " + " ".join(f"{n:>7}" for _, n, _ in cols) + "  kernel")
for r in rows[2:]:
    vals = []
    for name, short, f in cols:
        i = col(name)
        try:
            v = float(r[i].replace(",", "")) if i is not None else float("nan")
            if name == "gpu__time_duration.sum" and units[i] == "nsecond": v *= 1e-3
            elif name == "gpu__time_duration.sum" and units[i] == "msecond": v *= 1e3
        except (ValueError, IndexError): v = float("nan")
        vals.append(v)
    kn = r[col("Kernel Name")] if col("Kernel Name") is not None else "?"
    print("  " + " ".join(f"{v:7.1f}" for v in vals) + "  " + kn[:110])
PY
done
