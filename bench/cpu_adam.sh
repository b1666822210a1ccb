#!/usr/bin/env bash
# Builds and runs the CPU AdamW benchmark (bench/cpu_adam.cpp), then the PyTorch peer when torch is importable.
#   bench/cpu_adam.sh [n_elements=268435456] [steps=5] [out_dir=build/bench]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-268435456}; STEPS=${2:-5}; OUT=${3:-build/bench}
mkdir -p "$OUT"
# -ffp-contract=off: the bit-identity with the reference depends on it (native/CMakeLists.txt does the same)
# The reference optimizer.cpp is compiled exactly as the engine builds it (CMakeLists.txt: -O3, no -march);
# cpu_adam.cpp as well (its AVX2/AVX-512 paths come from target_clones, not from -march).
g++ -std=gnu++17 -O3 -fopenmp -ffp-contract=off -Inative/engine -c native/engine/optimizer.cpp -o "$OUT/optimizer.o"
g++ -std=gnu++17 -O3 -fopenmp -ffp-contract=off -fno-math-errno -Inative/engine -c native/engine/cpu_adam.cpp -o "$OUT/cpu_adam.o"
g++ -std=gnu++17 -O3 -fopenmp -Inative/engine bench/cpu_adam.cpp native/engine/params.cpp "$OUT/optimizer.o" \
  "$OUT/cpu_adam.o" -o "$OUT/cpu_adam"
export OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_PLACES=${OMP_PLACES:-cores}
echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, OMP_NUM_THREADS=${OMP_NUM_THREADS:-all}"
"$OUT/cpu_adam" "$N" "$STEPS"
if python3 -c 'import torch' 2>/dev/null; then python3 bench/cpu_adam_torch.py "$N" "$STEPS"; fi
