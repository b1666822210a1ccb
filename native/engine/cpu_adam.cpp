// cpu_adam.cpp — vectorised multi-threaded host AdamW (see cpu_adam.h). Compiled with -ffp-contract=off
// (CMakeLists.txt): bit-identity with optimizer.cpp depends on it.
#include "cpu_adam.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace engine {

namespace {

struct Consts { float b1, b2, omb1, omb2, bc1, bc2, lr, eps, scale; };

// One contiguous run of elements with one weight decay. The loop body is adamw_update's, operation for
// operation; target_clones compiles it for AVX-512, AVX2 and the baseline and picks one at load time.
__attribute__((target_clones("avx512f", "avx2", "default")))
void adam_run(float* __restrict p, const float* __restrict g_, float* __restrict m, float* __restrict v,
              uint16_t* __restrict out, size_t n, float wd, Consts k) {
  if (!out) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
      float g = g_[i] * k.scale;
      float mi = k.b1 * m[i] + k.omb1 * g;
      float vi = k.b2 * v[i] + k.omb2 * g * g;
      m[i] = mi;
      v[i] = vi;
      float mhat = mi / k.bc1, vhat = vi / k.bc2;
      p[i] -= k.lr * (mhat / (std::sqrt(vhat) + k.eps) + wd * p[i]);
    }
    return;
  }
  // same update, and the bf16 copy written from registers (no second pass over p)
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    float g = g_[i] * k.scale;
    float mi = k.b1 * m[i] + k.omb1 * g;
    float vi = k.b2 * v[i] + k.omb2 * g * g;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / k.bc1, vhat = vi / k.bc2;
    float pi = p[i] - k.lr * (mhat / (std::sqrt(vhat) + k.eps) + wd * p[i]);
    p[i] = pi;
    uint32_t u;
    __builtin_memcpy(&u, &pi, 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    out[i] = (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x40u) : r);
  }
}

struct Segment { size_t lo, hi; float wd; };

}  // namespace

void cpu_adamw_update(float* params, const float* grads, float* m, float* v, const ParamLayout& layout, size_t begin,
                      size_t end, const AdamWHyper& hp, uint16_t* bf16_out) {
  Consts k;
  k.b1 = hp.beta1, k.b2 = hp.beta2, k.omb1 = 1.0f - hp.beta1, k.omb2 = 1.0f - hp.beta2;
  k.bc1 = 1.0f - (float)std::pow((double)hp.beta1, (double)hp.t);
  k.bc2 = 1.0f - (float)std::pow((double)hp.beta2, (double)hp.t);
  k.lr = hp.lr, k.eps = hp.eps, k.scale = hp.grad_scale;
  // Chunks of at most CH elements that never cross a tensor boundary (the decay differs), so small tensors
  // (biases, LayerNorm) do not each pay for a parallel region and big ones split evenly across threads.
  const size_t CH = 1 << 15;
  std::vector<Segment> segs;
  for (const ParamTensor& t : layout.tensors) {
    size_t lo = std::max(begin, t.offset), hi = std::min(end, t.offset + t.numel);
    const float wd = t.decay ? hp.weight_decay : 0.0f;
    for (size_t a = lo; a < hi; a += CH) segs.push_back({a, std::min(hi, a + CH), wd});
  }
  const long ns = (long)segs.size();
#pragma omp parallel for schedule(static)
  for (long s = 0; s < ns; s++) {
    const Segment& sg = segs[(size_t)s];
    const size_t j = sg.lo - begin;
    adam_run(params + sg.lo, grads + sg.lo, m + j, v + j, bf16_out ? bf16_out + j : nullptr, sg.hi - sg.lo, sg.wd, k);
  }
}

const char* cpu_adamw_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  return "scalar";
}

}  // namespace engine
