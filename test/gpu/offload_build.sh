#!/usr/bin/env bash
# Builds the optimizer-offload programs into build/gpu/ (no Node, no CMake):
#   build/gpu/offload_test          test/gpu/offload_test.cpp         offload.cuh vs a host reference (cudart only)
#   build/gpu/offload_engine_test   test/gpu/offload_engine_test.cpp  cuda backend with vs without offload
#   build/gpu/offload_gpu           bench/offload_gpu.cpp             step time / memory of one configuration
# Engine sources as CMake compiles them (cpu_adam.cpp / optimizer.cpp without FMA contraction), the cuda backend
# (every native/engine/cuda/*.cu; cuda_backend.cu: GPT-2 + train_state.cuh + offload.cuh), sm_90a. CUBLAS_ROOT: dir with include/cublasLt.h and
# lib/libcublasLt.so (default: the CUDA toolkit's own). Objects go to build/gpu/offload-obj/.
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-$(command -v nvcc || echo $CUDA_HOME/bin/nvcc)}
CUBLAS_ROOT=${CUBLAS_ROOT:-$CUDA_HOME}
out=build/gpu; obj=$out/offload-obj; mkdir -p $obj/host $obj/cuda $obj/cu
INC="-Inative/engine -Inative/reference -Inative/engine/cuda -I$CUBLAS_ROOT/include -I$CUDA_HOME/include"
NVFLAGS="-std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fopenmp $INC"
{
  for f in native/engine/*.cpp native/reference/*.cpp; do
    extra=""; case $f in *cpu_adam.cpp) extra="-ffp-contract=off -fno-math-errno";; *optimizer.cpp) extra="-ffp-contract=off";; esac
    # host/: no CUDA backend (offload_test needs no cuBLAS); cuda/: with it (backend.cpp's factory reaches it)
    echo "g++ -std=c++17 -O3 -fopenmp -fPIC $extra $INC -DENGINE_BLAS_NAME=\\\"builtin-blocked\\\" -c $f -o $obj/host/$(basename $f).o"
    echo "g++ -std=c++17 -O3 -fopenmp -fPIC $extra $INC -DENGINE_HAVE_CUDA=1 -DENGINE_BLAS_NAME=\\\"builtin-blocked\\\" -c $f -o $obj/cuda/$(basename $f).o"
  done
  # every .cu of the backend (cuda_backend.cu reaches the families' family_backend.cu through the factory)
  for f in native/engine/cuda/*.cu; do echo "$NVCC $NVFLAGS -DENGINE_HAVE_CUDA=1 -c $f -o $obj/cu/$(basename $f).o"; done
  echo "$NVCC $NVFLAGS -x cu -c test/gpu/offload_test.cpp -o $obj/offload_test.o"
  echo "g++ -std=c++17 -O3 -fopenmp $INC -DENGINE_HAVE_CUDA=1 -c test/gpu/offload_engine_test.cpp -o $obj/offload_engine_test.o"
  echo "g++ -std=c++17 -O3 -fopenmp $INC -DENGINE_HAVE_CUDA=1 -c bench/offload_gpu.cpp -o $obj/offload_gpu.o"
} | xargs -P "${JOBS:-$(nproc)}" -I{} sh -c '{}'
LIBS="-L$CUBLAS_ROOT/lib -L$CUBLAS_ROOT/lib64 -L$CUDA_HOME/lib64 -lcublasLt -lcublas -lcudart -lgomp -ldl"
$NVCC -o $out/offload_test $obj/offload_test.o $obj/host/*.o -lgomp
$NVCC -o $out/offload_engine_test $obj/offload_engine_test.o $obj/cuda/*.o $obj/cu/*.o $LIBS
$NVCC -o $out/offload_gpu $obj/offload_gpu.o $obj/cuda/*.o $obj/cu/*.o $LIBS
echo "built $out/offload_test $out/offload_engine_test $out/offload_gpu"
