// kernels_check_nocublas.cu — instantiates every kernel that does not need cuBLAS, for both compute types, so a
// machine with nvcc but without cuBLAS (CI) still compiles them: native/scripts/build.mjs compiles the .cu files
// of this folder whose includes never reach a cuBLAS header as a compile-only check. In a CUDA build this file is
// part of the engine library too; nothing calls the function below (the backend instantiates the same templates).
#include "adamw.cuh"
#include "classifier.cuh"
#include "encoder.cuh"
#include "flash_attention.cuh"
#include "layernorm.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

namespace cudabk {

template <typename T>
static void instantiate_(cudaStream_t s) {
  layernorm_forward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, s);
  layernorm_backward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, s);
  encoder_forward<T>(nullptr, nullptr, nullptr, nullptr, 0, 1, 8, s);
  encoder_backward<T>(nullptr, nullptr, nullptr, nullptr, 0, 0, 1, 8, s);
  encoder_rows<T>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, s);
  fused_classifier<T>(nullptr, nullptr, nullptr, nullptr, 0, 1, 8, 0.f, true, s);
  AdamWParams h{};
  adamw_update<T>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, h, true, s, nullptr);
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
  add_bias<T>(nullptr, nullptr, 0, 8, 8, s);
}

// Never called: referenced so the templates above are compiled for bf16 and fp32.
void kernels_compile_check_(cudaStream_t s) {
  instantiate_<bf16>(s);
  instantiate_<float>(s);
  flash_attention_forward(nullptr, nullptr, nullptr, 0, 1, 64, 1, s);
  flash_attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 1, 64, 1, s);
  grad_norm_sq(nullptr, nullptr, nullptr, 0, s);
}

}  // namespace cudabk
