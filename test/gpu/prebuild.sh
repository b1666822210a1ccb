#!/usr/bin/env bash
# Builds every GPU test and benchmark program ONCE, on a machine without a GPU (or on the GPU host when the
# prebuilt set is stale), so a device call spends no time compiling. One object set for all of them (the four
# per-suite build scripts each recompile the whole engine: ~4x the work), with the flags CMake uses
# (cpu_adam.cpp / optimizer.cpp without FMA contraction, as test/gpu/offload_build.sh), sm_90a:
#   build/gpu/           cuda_backend_test kernels_check train_gpu offload_test offload_engine_test offload_gpu
#   build/gpu-zero/      zero_test zero_gpu
#   build/gpu-families/  families_test families_gpu (+ every other test/gpu/families/*.cpp with a main)
# packed as DEST/programs.tar.xz (each program carries the same ~9 MB of sm_90a kernels: 114 MiB unpacked, ~2.3 MB
# packed, so it travels in the 64 MiB carry) + DEST/manifest.json (source hash of test/gpu/lib/srchash.sh, commit,
# nvcc, sizes). The paths mirror what the suites' own scripts build: test/gpu/session.sh unpacks them at the
# repository root and the suites take them (GPU_PREBUILT / ZERO_PREBUILT / OFFLOAD_PREBUILT or their `[ -x ]` checks).
# Usage: test/gpu/prebuild.sh [DEST]      (DEST default .gpu-prebuilt, git-ignored; objects in build/gpu-prebuilt-obj)
# cuBLAS headers here: CUBLAS_ROOT, else the toolkit's, else the wheel extracted as the team brief says
#   (cd /tmp/cuda-extra && unzip -qo /opt/pypi-more/files/nvidia_cublas-13.1.1.3-*.whl). Objects are reused when
#   newer than every source (build/gpu-prebuilt-obj); ~7 min from scratch on 2 busy cores.
# NCCL is never linked (native/engine/cuda/nccl.cuh dlopens it). PREBUILD_FORCE=1 rebuilds an up-to-date set;
# PREBUILD_PACK=0 leaves the programs unpacked in build/gpu-prebuilt-obj/stage/build (what a GPU host build wants).
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/gpu/lib/srchash.sh
dest=${1:-.gpu-prebuilt}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")}
if [ -z "${CUBLAS_ROOT:-}" ]; then
  for c in "$CUDA_HOME" /tmp/cuda-extra/nvidia/cu13 /tmp/cublas/nvidia/cu13; do
    [ -f "$c/include/cublasLt.h" ] && { CUBLAS_ROOT=$c; break; }
  done
fi
[ -f "${CUBLAS_ROOT:-/nonexistent}/include/cublasLt.h" ] || {
  echo "prebuild: cublasLt.h not found (CUBLAS_ROOT, $CUDA_HOME, /tmp/cuda-extra/nvidia/cu13). On a machine without" >&2
  echo "  the toolkit's cuBLAS: mkdir -p /tmp/cuda-extra && cd /tmp/cuda-extra && unzip -qo /opt/pypi-more/files/nvidia_cublas-13.1.1.3-*.whl" >&2
  echo "  (and cd nvidia/cu13/lib && ln -sf libcublasLt.so.13 libcublasLt.so && ln -sf libcublas.so.13 libcublas.so)" >&2
  exit 2; }
hash=$(gpu_src_hash)
if [ "${PREBUILD_FORCE:-0}" != 1 ] && [ -f "$dest/manifest.json" ] && grep -q "\"src_hash\": \"$hash\"" "$dest/manifest.json"; then
  echo "prebuild: $dest is up to date (sources $hash)"; exit 0
fi
t0=$(date +%s)
obj=build/gpu-prebuilt-obj; stage=$obj/stage; rm -rf "$dest" "$stage"; mkdir -p "$obj/p" "$dest" "$stage/build/gpu" "$stage/build/gpu-zero" "$stage/build/gpu-families"
INC="-Inative/engine -Inative/reference -Inative/engine/cuda -I$CUBLAS_ROOT/include -I$CUDA_HOME/include"
DEFS="-DENGINE_HAVE_CUDA=1 -DENGINE_BLAS_NAME=\\\"builtin-blocked\\\""
CXX="g++ -std=c++17 -O3 -fopenmp -fPIC $INC $DEFS"
NV="$NVCC -std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fopenmp $INC $DEFS"
# programs: TU -> binary (families: every .cpp with a main, so a new test there is built without editing this file)
progs=(test/gpu/cuda_backend_test.cpp:gpu/cuda_backend_test bench/train_gpu.cpp:gpu/train_gpu
       native/lab/kernels_check.cu:gpu/kernels_check test/gpu/offload_test.cpp:gpu/offload_test
       test/gpu/offload_engine_test.cpp:gpu/offload_engine_test bench/offload_gpu.cpp:gpu/offload_gpu
       test/gpu/zero_test.cpp:gpu-zero/zero_test bench/zero_gpu.cpp:gpu-zero/zero_gpu bench/families_gpu.cpp:gpu-families/families_gpu)
for f in test/gpu/families/*.cpp; do grep -q '^int main(' "$f" && progs+=("$f:gpu-families/$(basename "$f" .cpp)"); done
# compile everything in parallel, the slow nvcc units first; an object newer than every source is kept (any change
# to any source rebuilds all: headers are shared, so finer tracking would buy little here)
# (this script's own edits do not count: change a flag -> PREBUILD_FORCE=1 or rm -r build/gpu-prebuilt-obj)
newest=$(gpu_src_files | grep -v '^test/gpu/prebuild.sh$' | xargs stat -c %Y | sort -n | tail -1)
fresh() { [ -f "$1" ] && [ "$(stat -c %Y "$1")" -gt "$newest" ]; }
{
  for f in native/engine/cuda/*.cu; do echo "$NV -c $f -o $obj/$(basename "$f").o"; done
  for p in "${progs[@]}"; do
    src=${p%%:*}
    case $src in
      *.cu) echo "$NV -c $src -o $obj/p/$(basename "$src").o" ;;
      test/gpu/offload_test.cpp) echo "$NV -x cu -c $src -o $obj/p/$(basename "$src").o" ;;
      *) echo "$CXX -c $src -o $obj/p/$(basename "$src").o" ;;
    esac
  done
  for f in native/engine/*.cpp native/reference/*.cpp; do
    extra=""; case $f in *cpu_adam.cpp) extra="-ffp-contract=off -fno-math-errno";; *optimizer.cpp) extra="-ffp-contract=off";; esac
    echo "$CXX $extra -c $f -o $obj/$(basename "$f").o"
  done
} | while read -r line; do fresh "${line##* -o }" || echo "$line"; done > "$obj/commands.txt"
echo "prebuild: $(wc -l < "$obj/commands.txt") units to compile with $NVCC, cuBLAS $CUBLAS_ROOT, ${JOBS:-$(nproc)} jobs"
# -d '\n': xargs passes each line as is (no quote processing), bash parses it once
xargs -d '\n' -P "${JOBS:-$(nproc)}" -I{} bash -c '{}' < "$obj/commands.txt"
# the engine as archives: a program takes only the objects it reaches (offload_test needs no backend, no cuBLAS)
rm -f "$obj"/libengine*.a; ar rcs "$obj/libengine.a" "$obj"/*.cpp.o; ar rcs "$obj/libengine_cuda.a" "$obj"/*.cu.o
LIBS="-L$CUBLAS_ROOT/lib -L$CUBLAS_ROOT/lib64 -L$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lgomp -ldl -lpthread"
pids=()
for p in "${progs[@]}"; do
  src=${p%%:*}; bin=$stage/build/${p##*:}
  if [ "$src" = test/gpu/offload_test.cpp ]; then  # archives: only what the protocol test reaches
    "$NVCC" -o "$bin" "$obj/p/$(basename "$src").o" "$obj/libengine.a" "$obj/libengine_cuda.a" $LIBS &
  else  # whole object lists for the others, as their own build scripts link them
    "$NVCC" -o "$bin" "$obj/p/$(basename "$src").o" "$obj"/*.cpp.o "$obj"/*.cu.o $LIBS &
  fi
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || { echo "prebuild: a link failed (above)" >&2; exit 1; }; done
strip --strip-debug "$stage"/build/*/*   # host debug info only; device code keeps -lineinfo for ncu
# one xz stream with a dictionary larger than all programs together: the identical kernel images compress away.
# PREBUILD_PACK=0 (a build on the GPU host itself): no packing, the programs stay in $stage/build
if [ "${PREBUILD_PACK:-1}" = 1 ]; then
  tar -C "$stage" -cf - build | xz -T"${JOBS:-$(nproc)}" -9 --lzma2=dict=128MiB > "$dest/programs.tar.xz"
fi
python3 - "$stage" "$dest" "$hash" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$(git status --porcelain -- native test/gpu bench 2>/dev/null | grep -c . || true)" \
  "$("$NVCC" --version | tail -1)" "$CUBLAS_ROOT" "$(( $(date +%s) - t0 ))" <<'PY'
import json, os, sys, time
stage, dest, h, commit, dirty, nvcc, cublas, secs = sys.argv[1:9]
progs = {}
for d in sorted(os.listdir(os.path.join(stage, "build"))):
    for f in sorted(os.listdir(os.path.join(stage, "build", d))):
        progs[f"build/{d}/{f}"] = os.path.getsize(os.path.join(stage, "build", d, f))
m = {"src_hash": h, "commit": commit, "dirty_files": int(dirty), "nvcc": nvcc, "cublas_root": cublas,
     "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build_s": int(secs), "programs": progs,
     "total_mib": round(sum(progs.values()) / 2**20, 1),
     "packed_mib": round(os.path.getsize(os.path.join(dest, "programs.tar.xz")) / 2**20, 2)
     if os.path.exists(os.path.join(dest, "programs.tar.xz")) else 0, "unpacked_in": os.path.join(stage, "build")}
json.dump(m, open(os.path.join(dest, "manifest.json"), "w"), indent=1)
print(f"prebuild: {len(progs)} programs, {m['total_mib']} MiB ({m['packed_mib']} MiB packed in {dest}; unpacked in {stage}/build), sources {h}, commit {commit[:10]}"
      f"{' + ' + dirty + ' uncommitted files' if int(dirty) else ''}, {secs} s")
PY
