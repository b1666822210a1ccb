#!/usr/bin/env bash
# Builds the GPU test and benchmark programs into build/gpu/ without Node or CMake: the engine library
# (native/engine/*.cpp, native/reference/*.cpp), the cuda backend (native/engine/cuda/*.cu, sm_90a) and
#   build/gpu/cuda_backend_test   test/gpu/cuda_backend_test.cpp
#   build/gpu/kernels_check       native/lab/kernels_check.cu
#   build/gpu/train_gpu           bench/train_gpu.cpp
# CUBLAS_ROOT (dir with include/cublasLt.h and lib/libcublasLt.so) defaults to the CUDA toolkit's own.
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
CUBLAS_ROOT=${CUBLAS_ROOT:-$CUDA_HOME}
out=build/gpu; mkdir -p $out/obj
INC="-Inative/engine -Inative/reference -Inative/engine/cuda -I$CUBLAS_ROOT/include -I$CUDA_HOME/include"
DEFS="-DENGINE_HAVE_CUDA=1 -DENGINE_BLAS_NAME=\"builtin-blocked\""
CXXFLAGS="-std=c++17 -O3 -fopenmp -fPIC $INC $DEFS"
NVFLAGS="-std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fopenmp $INC $DEFS"
jobs=${JOBS:-$(nproc)}
# compile every translation unit in parallel
{
  for f in native/engine/*.cpp native/reference/*.cpp test/gpu/cuda_backend_test.cpp bench/train_gpu.cpp; do echo "g++ $CXXFLAGS -c $f -o $out/obj/$(basename $f).o"; done
  for f in native/engine/cuda/*.cu native/lab/kernels_check.cu; do echo "$NVCC $NVFLAGS -c $f -o $out/obj/$(basename $f).o"; done
} | xargs -P "$jobs" -I{} sh -c '{}'
LIBS="-L$CUBLAS_ROOT/lib -L$CUBLAS_ROOT/lib64 -L$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lgomp"
ENGINE_OBJS=$(ls $out/obj/*.cpp.o | grep -v -e cuda_backend_test -e train_gpu)
CUDA_OBJS=$(for f in native/engine/cuda/*.cu; do echo $out/obj/$(basename $f).o; done)  # cuda_backend.cu needs family_backend.cu
$NVCC -o $out/cuda_backend_test $out/obj/cuda_backend_test.cpp.o $ENGINE_OBJS $CUDA_OBJS $LIBS
$NVCC -o $out/train_gpu $out/obj/train_gpu.cpp.o $ENGINE_OBJS $CUDA_OBJS $LIBS
$NVCC -o $out/kernels_check $out/obj/kernels_check.cu.o $ENGINE_OBJS $CUDA_OBJS $LIBS
echo "built $out/cuda_backend_test $out/train_gpu $out/kernels_check"
