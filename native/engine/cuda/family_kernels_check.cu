// family_kernels_check.cu — instantiates the model-family kernels that do not need cuBLAS (RMSNorm, rotary qkv
// prepare/unprepare and generation attention, SwiGLU/GELU, bias add) for both compute types, so a machine with nvcc
// but without cuBLAS (CI) still compiles them: native/scripts/build.mjs compiles the .cu files of this folder whose
// includes never reach a cuBLAS header as a compile-only check (as kernels_check_nocublas.cu does for GPT-2's).
// In a CUDA build this file is part of the engine library too; nothing calls the function below.
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

namespace cudabk {

template <typename T>
static void family_instantiate_(cudaStream_t s) {
  QkvLayout q{};
  rmsnorm_forward<T>(nullptr, nullptr, nullptr, nullptr, 0, 8, 1e-6f, s);
  rmsnorm_backward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, s);
  qkv_prepare<T>(nullptr, nullptr, nullptr, nullptr, 0, 1, q, s);
  qkv_unprepare<T>(nullptr, nullptr, nullptr, nullptr, 0, 1, q, s);
  qkv_prepare_decode<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 1, q, s);
  gqa_decode<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 1, 1, 1, 8, s);
  swiglu_forward<T>(nullptr, nullptr, 0, 8, s);
  swiglu_backward<T>(nullptr, nullptr, nullptr, 0, 8, s);
  gelu_act_forward<T>(nullptr, nullptr, 0, true, s);
  gelu_act_backward<T>(nullptr, nullptr, 0, true, s);
  add_bias<T>(nullptr, nullptr, 0, 8, s);
  add_bias<T>(nullptr, nullptr, 0, 8, 8, s);
}

// Never called: referenced so the templates above are compiled for bf16 and fp32.
void family_kernels_compile_check_(cudaStream_t s) {
  family_instantiate_<bf16>(s);
  family_instantiate_<float>(s);
}

}  // namespace cudabk
