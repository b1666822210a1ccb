#!/usr/bin/env bash
# Builds build/gpu-zero/zero_test (test/gpu/zero_test.cpp) and build/gpu-zero/zero_gpu (bench/zero_gpu.cpp) with
# the engine, the reference backends and every native/engine/cuda/*.cu (sm_90a). No Node, no CMake. NCCL is not
# linked (engine/cuda/nccl.cuh loads it at run time). CUBLAS_ROOT: dir with include/cublasLt.h and lib/ (default:
# the CUDA toolkit's).
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
CUBLAS_ROOT=${CUBLAS_ROOT:-$CUDA_HOME}
out=build/gpu-zero; mkdir -p $out/obj
INC="-Inative/engine -Inative/reference -Inative/engine/cuda -I$CUBLAS_ROOT/include -I$CUDA_HOME/include"
DEFS="-DENGINE_HAVE_CUDA=1 -DENGINE_BLAS_NAME=\"builtin-blocked\""
CXXFLAGS="-std=c++17 -O3 -fopenmp -fPIC $INC $DEFS"
NVFLAGS="-std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fopenmp $INC $DEFS"
jobs=${JOBS:-$(nproc)}
{
  for f in native/engine/*.cpp native/reference/*.cpp test/gpu/zero_test.cpp bench/zero_gpu.cpp; do echo "g++ $CXXFLAGS -c $f -o $out/obj/$(basename $f).o"; done
  for f in native/engine/cuda/*.cu; do echo "$NVCC $NVFLAGS -c $f -o $out/obj/$(basename $f).o"; done
} | xargs -P "$jobs" -I{} sh -c '{}'
LIBS="-L$CUBLAS_ROOT/lib -L$CUBLAS_ROOT/lib64 -L$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lgomp -ldl -lpthread"
ENGINE_OBJS="$(ls $out/obj/*.cpp.o | grep -v -e zero_test -e zero_gpu) $(ls $out/obj/*.cu.o | grep -v -e kernels_check_nocublas)"
$NVCC -o $out/zero_test $out/obj/zero_test.cpp.o $ENGINE_OBJS $LIBS
$NVCC -o $out/zero_gpu $out/obj/zero_gpu.cpp.o $ENGINE_OBJS $LIBS
echo "built $out/zero_test $out/zero_gpu"
