// cpu_adam.h — the vectorised, multi-threaded host AdamW for CPU optimizer offload (ZeRO-Offload's "CPU-Adam",
// Ren et al. 2021, §4.1): fp32 master weights and moments on the host, gradients streamed in, and optionally the
// updated weights written out as bf16 for streaming back to the GPU in the same pass (no second read of the
// master copy).
//
// Bit-identical to adamw_update (optimizer.cpp): the same IEEE operations in the same order per element —
// division and square root are correctly rounded in every ISA, and this file is compiled with
// -ffp-contract=off so the compiler does not fuse a*b+c into an FMA (that would change the last bit). Speed
// comes from one parallel region over fixed-size chunks (instead of one per tensor), AVX2/AVX-512 code paths
// chosen at load time (GCC target_clones: the CPU's best ISA, scalar on anything else), and the fused bf16 copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include "backend.h"
#include "params.h"

namespace engine {

// Same contract as adamw_update: params/grads are indexed globally (layout offsets), m, v shard-locally from
// `begin`. bf16_out (optional, shard-local like m and v: (end - begin) elements) receives the updated weights
// rounded to bf16 (round to nearest even, NaN stays NaN).
void cpu_adamw_update(float* params, const float* grads, float* m, float* v, const ParamLayout& layout, size_t begin,
                      size_t end, const AdamWHyper& hp, uint16_t* bf16_out = nullptr);

// The code path the running CPU gets: "avx512f", "avx2" or "scalar".
const char* cpu_adamw_isa();

// fp32 -> bf16, round to nearest even (what __float2bfloat16_rn does on the GPU).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

}  // namespace engine
