#!/usr/bin/env bash
# Builds the model-family GPU programs into build/gpu-families/ without Node or CMake: the engine library
# (native/engine/*.cpp, native/reference/*.cpp), every native/engine/cuda/*.cu (sm_90a) and
#   families_test   test/gpu/families/families_test.cpp
#   families_gpu    bench/families_gpu.cpp
# CUBLAS_ROOT (dir with include/cublasLt.h and lib/libcublasLt.so) defaults to the CUDA toolkit's own; here (no GPU)
# CUBLAS_ROOT=/tmp/cuda-extra/nvidia/cu13 compile-checks everything (see native/engine/cuda/README.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
CUBLAS_ROOT=${CUBLAS_ROOT:-$CUDA_HOME}
out=${OUT_DIR:-build/gpu-families}; mkdir -p $out/obj
INC="-Inative/engine -Inative/reference -Inative/engine/cuda -I$CUBLAS_ROOT/include -I$CUDA_HOME/include"
DEFS="-DENGINE_HAVE_CUDA=1 -DENGINE_BLAS_NAME=\"builtin-blocked\""
CXXFLAGS="-std=c++17 -O3 -fopenmp -fPIC $INC $DEFS"
NVFLAGS="-std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fopenmp $INC $DEFS"
jobs=${JOBS:-$(nproc)}
{
  for f in native/engine/*.cpp native/reference/*.cpp test/gpu/families/families_test.cpp bench/families_gpu.cpp; do
    echo "g++ $CXXFLAGS -c $f -o $out/obj/$(basename $f).o"
  done
  for f in native/engine/cuda/*.cu; do echo "$NVCC $NVFLAGS -c $f -o $out/obj/$(basename $f).o"; done
} | xargs -P "$jobs" -I{} sh -c '{}'
LIBS="-L$CUBLAS_ROOT/lib -L$CUBLAS_ROOT/lib64 -L$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lgomp"
ENGINE_OBJS=$(ls $out/obj/*.cpp.o | grep -v -e families_test -e families_gpu)
CUDA_OBJS=$(for f in native/engine/cuda/*.cu; do echo $out/obj/$(basename $f).o; done)
$NVCC -o $out/families_test $out/obj/families_test.cpp.o $ENGINE_OBJS $CUDA_OBJS $LIBS
$NVCC -o $out/families_gpu $out/obj/families_gpu.cpp.o $ENGINE_OBJS $CUDA_OBJS $LIBS
echo "built $out/families_test $out/families_gpu"
