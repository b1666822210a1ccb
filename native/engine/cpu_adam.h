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
#include <vector>
#include "backend.h"
#include "params.h"

namespace engine {

// Same contract as adamw_update: params/grads are indexed globally (layout offsets), m, v shard-locally from
// `begin`. bf16_out (optional, shard-local like m and v: (end - begin) elements) receives the updated weights
// rounded to bf16 (round to nearest even, NaN stays NaN).
void cpu_adamw_update(float* params, const float* grads, float* m, float* v, const ParamLayout& layout, size_t begin,
                      size_t end, const AdamWHyper& hp, uint16_t* bf16_out = nullptr);

// The same update on [begin, end) with every array local to the range: p[0], g[0], m[0], v[0] and out[0] (optional
// bf16 copy) are element `begin` of the flat layout (whose decay flags it reads). This is what the offload worker
// calls per chunk of a pinned shard buffer.
void cpu_adamw_update_range(float* p, const float* g, float* m, float* v, uint16_t* out, const ParamLayout& layout,
                            size_t begin, size_t end, const AdamWHyper& hp);

// ---- optimizer offload plan (native/engine/cuda/offload.cuh) ------------------------------------------------
// A unit is a range of the flat layout whose gradients become final together in the backward pass and whose
// weights the forward needs together: the embeddings, one transformer block, the final norm/head. Offload streams
// gradients to the host and weights back unit by unit, and the CPU AdamW works in chunks inside a unit.
struct FlatRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};
// Units in forward (= flat layout) order: consecutive tensors of the same transformer block (".h.N." / ".layers.N."
// in the name) form one unit; the tensors before the first block and after the last form one unit each. Covers
// [0, layout.total) without gaps.
std::vector<FlatRange> offload_units(const ParamLayout& layout);
struct OffloadPlan {
  size_t lo = 0, hi = 0;                        // the shard this rank updates
  std::vector<FlatRange> units;                 // unit u clipped to [lo, hi) (empty when the shard misses it)
  std::vector<std::vector<FlatRange>> chunks;   // per unit: pieces of at most max_chunk elements, in order
  size_t max_chunk = 0;
};
// Clips `units` (sorted, disjoint, covering the layout) to the shard [lo, hi) and splits each into chunks of at
// most max_chunk elements. Throws Internal when the units overlap, are unsorted or leave a gap.
OffloadPlan offload_plan(const std::vector<FlatRange>& units, size_t lo, size_t hi, size_t max_chunk);

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
