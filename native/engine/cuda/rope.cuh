// Rotary position embeddings fused into the "qkv prepare" step of the Llama / GPT-NeoX / GPT-J blocks.
//
// The q/k/v projection is ONE product over the family's weights as they lie in the flat HF buffer, giving a "raw"
// row per token whose layout depends on the family (QkvLayout):
//   llama  q_proj|k_proj|v_proj adjacent:   [q (NH*HD) | k (KVH*HD) | v (KVH*HD)]
//   gptj   k_proj|v_proj|q_proj adjacent:   [k (C) | v (C) | q (C)]
//   neox   fused query_key_value, per head: [h0: q k v | h1: q k v | ...]
// qkv_prepare writes it as (B, T, 3, NH, HD), the layout the attention kernels (flash_attention.cuh,
// attention.cuh) read, rotating the first `rot` dims of every q and k head (half-split pairs (i, i + rot/2) for
// Llama/NeoX, interleaved pairs (2i, 2i+1) for GPT-J; partial rotary leaves dims >= rot as they are) and
// replicating each key/value head to the NH / KVH query heads of its group (grouped-query attention).
// qkv_unprepare is its backward: the transposed rotation of dq and dk and, per key/value head, the sum of its
// replicated heads' gradients in a fixed order (deterministic, no atomics).
//
// cos/sin tables (maxT, rot/2) are computed on the host exactly as the cpu backend (engine/rope.cpp Rope::init:
// theta, linear and llama3 frequency scaling) and uploaded once.
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

struct QkvLayout {
  int NH, KVH, HD, rot, half;
  int base[3];     // column of head 0 of q, k, v in the raw row
  int hstride;     // columns between two heads of the same part
  int raw_ld;      // raw row length ((NH + 2 KVH) * HD)
  bool interleaved;
};

// value of dim d of one head vector `v` after rotation by (c, s) tables of its position (sign = -1: transpose)
template <typename T>
__device__ __forceinline__ float rope_elem(const T* v, int d, const float* cs, const float* sn, const QkvLayout& L,
                                           float sign) {
  float x = to_f(v[d]);
  if (d >= L.rot) return x;
  int i, partner;
  float dir;
  if (L.interleaved) { i = d >> 1; partner = d ^ 1; dir = (d & 1) ? 1.f : -1.f; }
  else if (d < L.half) { i = d; partner = d + L.half; dir = -1.f; }
  else { i = d - L.half; partner = d - L.half; dir = 1.f; }
  return x * cs[i] + dir * sign * to_f(v[partner]) * sn[i];
}

// qkv (N, 3, NH, HD) from raw (N, raw_ld); position of row n: pos[n] when given, else n % T_
template <typename T>
__global__ void qkv_prepare_kernel(T* qkv, const T* raw, const float* cos_t, const float* sin_t, const int* pos, int T_,
                                   int N, QkvLayout L) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const size_t per_row = (size_t)3 * L.NH * L.HD;
  if (idx >= (size_t)N * per_row) return;
  int n = (int)(idx / per_row), r = (int)(idx % per_row);
  int part = r / (L.NH * L.HD), h = (r / L.HD) % L.NH, d = r % L.HD;
  int sh = part == 0 ? h : h / (L.NH / L.KVH);
  const T* v = raw + (size_t)n * L.raw_ld + L.base[part] + sh * L.hstride;
  int p = pos ? pos[n] : n % T_;
  float y = part == 2 ? to_f(v[d]) : rope_elem(v, d, cos_t + (size_t)p * L.half, sin_t + (size_t)p * L.half, L, 1.f);
  qkv[idx] = from_f<T>(y);
}

// draw (N, raw_ld) from dqkv (N, 3, NH, HD): transposed rotation, group sums for k and v (heads in order)
template <typename T>
__global__ void qkv_unprepare_kernel(T* draw, const T* dqkv, const float* cos_t, const float* sin_t, int T_, int N,
                                     QkvLayout L) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * L.raw_ld) return;
  int n = (int)(idx / L.raw_ld), j = (int)(idx % L.raw_ld);
  int part = -1, sh = 0, d = 0;
#pragma unroll
  for (int pp = 0; pp < 3; pp++) {
    int rel = j - L.base[pp], heads = pp == 0 ? L.NH : L.KVH;
    if (part < 0 && rel >= 0 && rel < heads * L.hstride && rel % L.hstride < L.HD) {
      part = pp; sh = rel / L.hstride; d = rel % L.hstride;
    }
  }
  if (part < 0) return;  // not reached for the three families (every raw column belongs to a head)
  const int G = L.NH / L.KVH, h0 = part == 0 ? sh : sh * G, h1 = part == 0 ? sh + 1 : (sh + 1) * G;
  const int p = n % T_;
  const float* cs = cos_t + (size_t)p * L.half;
  const float* sn = sin_t + (size_t)p * L.half;
  float s = 0.f;
  for (int h = h0; h < h1; h++) {
    const T* g = dqkv + (((size_t)n * 3 + part) * L.NH + h) * L.HD;
    s += part == 2 ? to_f(g[d]) : rope_elem(g, d, cs, sn, L, -1.f);
  }
  draw[idx] = from_f<T>(s);
}

// Generation rows: q (n, NH*HD) rotated; rotated k and v (KVH heads) stored into the layer's cache
// (slots, M, KVH*HD) at (slot[i], pos[i])
template <typename T>
__global__ void qkv_prepare_decode_kernel(T* q, T* kc, T* vc, const T* raw, const float* cos_t, const float* sin_t,
                                          const int* slot, const int* pos, int n, int M, QkvLayout L) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int per_row = (L.NH + 2 * L.KVH) * L.HD, KD = L.KVH * L.HD;
  if (idx >= (size_t)n * per_row) return;
  int i = (int)(idx / per_row), r = (int)(idx % per_row);
  int part = r < L.NH * L.HD ? 0 : (r < L.NH * L.HD + KD ? 1 : 2);
  int rr = part == 0 ? r : r - L.NH * L.HD - (part == 2 ? KD : 0);
  int h = rr / L.HD, d = rr % L.HD;
  const T* v = raw + (size_t)i * L.raw_ld + L.base[part] + h * L.hstride;
  const float* cs = cos_t + (size_t)pos[i] * L.half;
  const float* sn = sin_t + (size_t)pos[i] * L.half;
  float y = part == 2 ? to_f(v[d]) : rope_elem(v, d, cs, sn, L, 1.f);
  if (part == 0) q[(size_t)i * L.NH * L.HD + rr] = from_f<T>(y);
  else (part == 1 ? kc : vc)[((size_t)slot[i] * M + pos[i]) * KD + rr] = from_f<T>(y);
}

// ----------------------------------------------------------------------------------------------------------
// launchers

template <typename T>
void qkv_prepare(T* qkv, const T* raw, const float* cos_t, const float* sin_t, int B, int T_, const QkvLayout& L,
                 cudaStream_t stream) {
  size_t n = (size_t)B * T_ * 3 * L.NH * L.HD;
  qkv_prepare_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(qkv, raw, cos_t, sin_t, nullptr, T_, B * T_, L);
  LAUNCH_CHECK();
}
template <typename T>
void qkv_unprepare(T* draw, const T* dqkv, const float* cos_t, const float* sin_t, int B, int T_, const QkvLayout& L,
                   cudaStream_t stream) {
  size_t n = (size_t)B * T_ * L.raw_ld;
  qkv_unprepare_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(draw, dqkv, cos_t, sin_t, T_, B * T_, L);
  LAUNCH_CHECK();
}
template <typename T>
void qkv_prepare_decode(T* q, T* kc, T* vc, const T* raw, const float* cos_t, const float* sin_t, const int* slot,
                        const int* pos, int n, int M, const QkvLayout& L, cudaStream_t stream) {
  size_t cnt = (size_t)n * (L.NH + 2 * L.KVH) * L.HD;
  qkv_prepare_decode_kernel<T><<<ceil_div(cnt, 256), 256, 0, stream>>>(q, kc, vc, raw, cos_t, sin_t, slot, pos, n, M, L);
  LAUNCH_CHECK();
}

// Generation attention with grouped KV heads: one block per (row i, head h); q (n, NH*HD), caches (slots, M, KVH*HD)
// hold keys/values of positions 0..pos[i] of slot[i] (all rows stored before any attends); out (n, NH*HD)
template <typename T>
__global__ void gqa_decode_kernel(T* out, const T* q, const T* kc, const T* vc, const int* slot, const int* pos, int M,
                                  int NH, int KVH, int HD) {
  extern __shared__ float sh[];  // M scores + 32 reduction slots
  float* red = sh + M;
  const int i = blockIdx.x, h = blockIdx.y, n = pos[i] + 1, KD = KVH * HD, kh = h / (NH / KVH);
  const T* qv = q + (size_t)i * NH * HD + h * HD;
  const T* kb = kc + (size_t)slot[i] * M * KD + kh * HD;
  const T* vb = vc + (size_t)slot[i] * M * KD + kh * HD;
  const float scale = 1.f / sqrtf((float)HD);
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const T* k = kb + (size_t)j * KD;
    float s = 0.f;
    for (int d = 0; d < HD; d++) s += to_f(qv[d]) * to_f(k[d]);
    sh[j] = s * scale;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, sh[j]);
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < (int)(blockDim.x + 31) / 32; w++) m = fmaxf(m, red[w]);
  __syncthreads();
  float sum = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) { float e = expf(sh[j] - m); sh[j] = e; sum += e; }
  sum = block_sum(sum, red);  // its barriers also publish the exponentials in sh
  const float inv = 1.f / sum;
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < n; j++) acc += sh[j] * to_f(vb[(size_t)j * KD + d]);
    out[(size_t)i * NH * HD + h * HD + d] = from_f<T>(acc * inv);
  }
}

template <typename T>
void gqa_decode(T* out, const T* q, const T* kc, const T* vc, const int* slot, const int* pos, int n, int M, int NH,
                int KVH, int HD, cudaStream_t stream) {
  size_t shmem = (M + 32) * sizeof(float);
  if (shmem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(gqa_decode_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem));
  gqa_decode_kernel<T><<<dim3(n, NH), 128, shmem, stream>>>(out, q, kc, vc, slot, pos, M, NH, KVH, HD);
  LAUNCH_CHECK();
}

}  // namespace cudabk
