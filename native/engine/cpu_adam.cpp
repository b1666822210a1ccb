// cpu_adam.cpp — vectorised multi-threaded host AdamW (see cpu_adam.h). Compiled with -ffp-contract=off
// (CMakeLists.txt): bit-identity with optimizer.cpp depends on it.
#include "cpu_adam.h"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>
#include "errors.h"

// The build scripts pass -ffp-contract=off for this file; this pragma keeps the guarantee when someone compiles it
// without (an FMA in the AVX-512 clone would change the last bit and break the identity with optimizer.cpp).
#pragma GCC optimize("fp-contract=off")

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

static Consts consts_of(const AdamWHyper& hp) {
  Consts k;
  k.b1 = hp.beta1, k.b2 = hp.beta2, k.omb1 = 1.0f - hp.beta1, k.omb2 = 1.0f - hp.beta2;
  k.bc1 = 1.0f - (float)std::pow((double)hp.beta1, (double)hp.t);
  k.bc2 = 1.0f - (float)std::pow((double)hp.beta2, (double)hp.t);
  k.lr = hp.lr, k.eps = hp.eps, k.scale = hp.grad_scale;
  return k;
}

void cpu_adamw_update_range(float* p, const float* g, float* m, float* v, uint16_t* out, const ParamLayout& layout,
                            size_t begin, size_t end, const AdamWHyper& hp) {
  const Consts k = consts_of(hp);
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
    adam_run(p + j, g + j, m + j, v + j, out ? out + j : nullptr, sg.hi - sg.lo, sg.wd, k);
  }
}

void cpu_adamw_update(float* params, const float* grads, float* m, float* v, const ParamLayout& layout, size_t begin,
                      size_t end, const AdamWHyper& hp, uint16_t* bf16_out) {
  cpu_adamw_update_range(params + begin, grads + begin, m, v, bf16_out, layout, begin, end, hp);
}

// block number of a tensor name (".h.12." or ".layers.12."), -1 outside the blocks
static long block_of(const std::string& name) {
  for (const char* key : {".h.", ".layers."}) {
    size_t at = name.find(key);
    if (at == std::string::npos) continue;
    const char* s = name.c_str() + at + std::char_traits<char>::length(key);
    char* e = nullptr;
    long b = std::strtol(s, &e, 10);
    if (e != s && *e == '.') return b;
  }
  return -1;
}

std::vector<FlatRange> offload_units(const ParamLayout& layout) {
  std::vector<FlatRange> u;
  long prev = -2;
  bool seen_block = false;
  for (const ParamTensor& t : layout.tensors) {
    long b = block_of(t.name);
    // key: the block, or "before the blocks" / "after the blocks"
    long key = b >= 0 ? b : (seen_block ? -3 : -1);
    if (b >= 0) seen_block = true;
    if (!u.empty() && key == prev && u.back().end == t.offset) u.back().end = t.offset + t.numel;
    else u.push_back({t.offset, t.offset + t.numel});
    prev = key;
  }
  return u;
}

OffloadPlan offload_plan(const std::vector<FlatRange>& units, size_t lo, size_t hi, size_t max_chunk) {
  ENGINE_CHECK(lo <= hi && max_chunk > 0, Internal, "", "offload plan: shard [%zu, %zu), chunk %zu", lo, hi, max_chunk);
  OffloadPlan p;
  p.lo = lo, p.hi = hi, p.max_chunk = max_chunk;
  size_t expect = 0;
  for (const FlatRange& r : units) {
    ENGINE_CHECK(r.begin == expect && r.end > r.begin, Internal, "",
                 "offload units must be sorted, non-empty and contiguous: unit [%zu, %zu) after %zu", r.begin, r.end,
                 expect);
    expect = r.end;
    FlatRange c{std::max(r.begin, lo), std::min(r.end, hi)};
    if (c.begin >= c.end) c = {0, 0};
    p.units.push_back(c);
    std::vector<FlatRange> ch;
    for (size_t a = c.begin; a < c.end; a += max_chunk) ch.push_back({a, std::min(c.end, a + max_chunk)});
    p.chunks.push_back(std::move(ch));
  }
  ENGINE_CHECK(hi <= expect, Internal, "", "offload shard [%zu, %zu) extends past the units' end %zu", lo, hi, expect);
  return p;
}

const char* cpu_adamw_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  return "scalar";
}

}  // namespace engine
