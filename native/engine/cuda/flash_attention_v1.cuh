// The first fused attention kernels (mma.sync with 32-bit fragment loads from shared memory, synchronous tile
// loads, transposed tiles written by scalar stores), kept for one A/B round against flash_attention.cuh:
// ENGINE_CUDA_ATTENTION=flash1 selects them in the backend, native/lab/kernels_check times both.
#pragma once
#include "cuda_common.cuh"

namespace cudabk {
namespace fa1 {

constexpr int FA_TILE = 64;  // query rows per block (4 warps x 16) and keys per tile

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t ld32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Load a 64 x D tile of rows [r0, r0+64) (row stride `ld` elements) into smem rows of stride S (zeros past T);
// optionally also its transpose (D x 64, stride ST).
template <int D, int S, int ST>
__device__ __forceinline__ void fa_load_tile(bf16 (*dst)[S], bf16 (*dstT)[ST], const bf16* src, size_t ld, int r0, int T_) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < FA_TILE * CH; c += blockDim.x) {
    // plain tiles: a warp reads whole rows (coalesced); with a transpose, a warp takes 32 consecutive rows of one
    // chunk, so its scalar stores into the transposed tile hit consecutive addresses (no bank conflicts)
    int r = dstT ? c % FA_TILE : c / CH, d = dstT ? (c / FA_TILE) * 8 : (c % CH) * 8;
    int4 v = make_int4(0, 0, 0, 0);
    if (r0 + r < T_) v = *reinterpret_cast<const int4*>(src + (size_t)(r0 + r) * ld + d);
    if (dst) *reinterpret_cast<int4*>(&dst[r][d]) = v;
    if (dstT) {
      const bf16* e = reinterpret_cast<const bf16*>(&v);
#pragma unroll
      for (int i = 0; i < 8; i++) dstT[d + i][r] = e[i];
    }
  }
}

// A fragments (16 rows x D) of rows [row0, row0+16) of a smem tile
template <int D, int S>
__device__ __forceinline__ void fa_a_frags(uint32_t f[D / 16][4], bf16 (*s)[S], int row0) {
  int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    f[kk][0] = ld32(&s[row0 + g][kk * 16 + 2 * t]);
    f[kk][1] = ld32(&s[row0 + g + 8][kk * 16 + 2 * t]);
    f[kk][2] = ld32(&s[row0 + g][kk * 16 + 2 * t + 8]);
    f[kk][3] = ld32(&s[row0 + g + 8][kk * 16 + 2 * t + 8]);
  }
}

// X(16 x 64) = A(16 x D) · Bs^T where Bs is a 64 x D smem tile (rows = the 64 output columns)
template <int D, int S>
__device__ __forceinline__ void fa_mm_abt(float x[8][4], const uint32_t a[D / 16][4], bf16 (*bs)[S]) {
  int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
  for (int n = 0; n < 8; n++) {
    x[n][0] = x[n][1] = x[n][2] = x[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
      mma16816(x[n], a[kk], ld32(&bs[n * 8 + g][kk * 16 + 2 * t]), ld32(&bs[n * 8 + g][kk * 16 + 2 * t + 8]));
  }
}
// acc(16 x D) += P(16 x 64, C-fragment registers) · Bt^T where Bt is a D x 64 smem tile (transposed operand)
template <int D, int ST>
__device__ __forceinline__ void fa_mm_pb(float acc[D / 8][4], const float p[8][4], bf16 (*bt)[ST]) {
  int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    uint32_t a[4] = {pack2(p[2 * kk][0], p[2 * kk][1]), pack2(p[2 * kk][2], p[2 * kk][3]),
                     pack2(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
      mma16816(acc[dn], a, ld32(&bt[dn * 8 + g][kk * 16 + 2 * t]), ld32(&bt[dn * 8 + g][kk * 16 + 2 * t + 8]));
  }
}

// ---------------------------------------------------------------------------------------------------- forward
// grid (ceil(T/64), NH, B), 128 threads. out (B,T,NH,D); lse (B,NH,T) natural-log log-sum-exp of scaled scores.
template <int D>
__global__ void __launch_bounds__(128) flash_fwd_kernel(bf16* out, float* lse, const bf16* qkv, int T_, int NH, float scale) {
  constexpr int S = D + 8, ST = FA_TILE + 8;
  __shared__ __align__(16) bf16 Qs[FA_TILE][S], Ks[FA_TILE][S], Vt[D][ST];
  const int qt = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int h = blockIdx.y, b = blockIdx.z, C = NH * D, w = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  const size_t ld = 3 * (size_t)C;
  const bf16* base = qkv + (size_t)b * T_ * ld + h * D;
  fa_load_tile<D, S, ST>(Qs, nullptr, base, ld, qt * FA_TILE, T_);
  __syncthreads();
  uint32_t qf[D / 16][4];
  fa_a_frags<D, S>(qf, Qs, w * 16);
  float o[D / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row[2] = {qt * FA_TILE + w * 16 + g, qt * FA_TILE + w * 16 + g + 8};
  for (int j = 0; j <= qt; j++) {
    __syncthreads();
    fa_load_tile<D, S, ST>(Ks, nullptr, base + C, ld, j * FA_TILE, T_);
    fa_load_tile<D, S, ST>(nullptr, Vt, base + 2 * C, ld, j * FA_TILE, T_);
    __syncthreads();
    float s[8][4];
    fa_mm_abt<D, S>(s, qf, Ks);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int col = j * FA_TILE + n * 8 + 2 * t + (e & 1), r = e >> 1;
        float v = (col <= row[r] && col < T_) ? s[n][e] * scale : -INFINITY;
        s[n][e] = v;
        mx[r] = fmaxf(mx[r], v);
      }
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      float mn = fmaxf(m[r], mx[r]);
      float mu = mn == -INFINITY ? 0.f : mn;  // a row with nothing visible yet (only past T)
      float alpha = __expf(m[r] - mu);
      m[r] = mn;
      l[r] *= alpha;
#pragma unroll
      for (int dn = 0; dn < D / 8; dn++) { o[dn][2 * r] *= alpha; o[dn][2 * r + 1] *= alpha; }
#pragma unroll
      for (int n = 0; n < 8; n++) {
        s[n][2 * r] = __expf(s[n][2 * r] - mu);
        s[n][2 * r + 1] = __expf(s[n][2 * r + 1] - mu);
        l[r] += s[n][2 * r] + s[n][2 * r + 1];
      }
    }
    fa_mm_pb<D, ST>(o, s, Vt);
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    if (row[r] >= T_) continue;
    float inv = 1.f / l[r];
    bf16* orow = out + ((size_t)b * T_ + row[r]) * C + h * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
      *reinterpret_cast<uint32_t*>(orow + dn * 8 + 2 * t) = pack2(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
    if (t == 0) lse[((size_t)b * NH + h) * T_ + row[r]] = m[r] + logf(l[r]);
  }
}

// ---------------------------------------------------------------------------------------------------- backward
// dsum (B,NH,T) = rowsum(dout ∘ out) per head: one warp per (b, t, h)
template <int D>
__global__ void flash_bwd_dsum_kernel(float* dsum, const bf16* dout, const bf16* out, int B, int T_, int NH) {
  int wid = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (wid >= B * T_ * NH) return;
  int h = wid % NH, bt = wid / NH, b = bt / T_, tt = bt % T_;
  const bf16* a = dout + (size_t)bt * NH * D + h * D;
  const bf16* o = out + (size_t)bt * NH * D + h * D;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s += to_f(a[d]) * to_f(o[d]);
  s = warp_sum(s);
  if (lane == 0) dsum[((size_t)b * NH + h) * T_ + tt] = s;
}

// dK, dV for one key tile: grid (ceil(T/64), NH, B), 128 threads (4 warps x 16 keys); loops over query tiles >= it
template <int D>
__global__ void __launch_bounds__(128) flash_bwd_dkdv_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                                             const float* lse, const float* dsum, int T_, int NH, float scale) {
  constexpr int S = D + 8, ST = FA_TILE + 8;
  __shared__ __align__(16) bf16 Qs[FA_TILE][S], Qt[D][ST], dOs[FA_TILE][S], dOt[D][ST];
  __shared__ float lse_s[FA_TILE], dsum_s[FA_TILE];
  const int kt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, C = NH * D, w = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  const size_t ld = 3 * (size_t)C;
  const bf16* base = qkv + (size_t)b * T_ * ld + h * D;
  const bf16* dbase = dout + (size_t)b * T_ * C + h * D;
  const size_t hrow = ((size_t)b * NH + h) * T_;
  // this warp's 16 keys and values as A fragments (staged through Qs / dOs)
  fa_load_tile<D, S, ST>(Qs, nullptr, base + C, ld, kt * FA_TILE, T_);
  fa_load_tile<D, S, ST>(dOs, nullptr, base + 2 * C, ld, kt * FA_TILE, T_);
  __syncthreads();
  uint32_t kf[D / 16][4], vf[D / 16][4];
  fa_a_frags<D, S>(kf, Qs, w * 16);
  fa_a_frags<D, S>(vf, dOs, w * 16);
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  const int key[2] = {kt * FA_TILE + w * 16 + g, kt * FA_TILE + w * 16 + g + 8};
  const int nq = (T_ + FA_TILE - 1) / FA_TILE;
  for (int i = kt; i < nq; i++) {
    __syncthreads();
    fa_load_tile<D, S, ST>(Qs, Qt, base, ld, i * FA_TILE, T_);
    fa_load_tile<D, S, ST>(dOs, dOt, dbase, C, i * FA_TILE, T_);
    for (int r = threadIdx.x; r < FA_TILE; r += blockDim.x) {
      int q = i * FA_TILE + r;
      lse_s[r] = q < T_ ? lse[hrow + q] : INFINITY;
      dsum_s[r] = q < T_ ? dsum[hrow + q] : 0.f;
    }
    __syncthreads();
    float p[8][4], dp[8][4];
    fa_mm_abt<D, S>(p, kf, Qs);   // S^T (16 keys x 64 queries)
    fa_mm_abt<D, S>(dp, vf, dOs);  // dP^T = V · dO^T
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int qc = n * 8 + 2 * t + (e & 1), q = i * FA_TILE + qc;
        float pv = (q >= key[e >> 1] && q < T_) ? __expf(p[n][e] * scale - lse_s[qc]) : 0.f;
        p[n][e] = pv;
        dp[n][e] = pv * (dp[n][e] - dsum_s[qc]) * scale;  // dS^T (of the unscaled scores)
      }
    fa_mm_pb<D, ST>(dv, p, dOt);  // dV += P^T · dO
    fa_mm_pb<D, ST>(dk, dp, Qt);  // dK += dS^T · Q
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    if (key[r] >= T_) continue;
    bf16* krow = dqkv + ((size_t)b * T_ + key[r]) * ld + C + h * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) {
      *reinterpret_cast<uint32_t*>(krow + dn * 8 + 2 * t) = pack2(dk[dn][2 * r], dk[dn][2 * r + 1]);
      *reinterpret_cast<uint32_t*>(krow + C + dn * 8 + 2 * t) = pack2(dv[dn][2 * r], dv[dn][2 * r + 1]);
    }
  }
}

// dQ for one query tile: grid (ceil(T/64), NH, B), 128 threads (4 warps x 16 queries); loops over key tiles <= it
template <int D>
__global__ void __launch_bounds__(128) flash_bwd_dq_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                                           const float* lse, const float* dsum, int T_, int NH, float scale) {
  constexpr int S = D + 8, ST = FA_TILE + 8;
  __shared__ __align__(16) bf16 Ks[FA_TILE][S], Kt[D][ST], Vs[FA_TILE][S];
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, C = NH * D, w = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
  const size_t ld = 3 * (size_t)C;
  const bf16* base = qkv + (size_t)b * T_ * ld + h * D;
  const bf16* dbase = dout + (size_t)b * T_ * C + h * D;
  const size_t hrow = ((size_t)b * NH + h) * T_;
  fa_load_tile<D, S, ST>(Ks, nullptr, base, ld, qt * FA_TILE, T_);   // Q staged in Ks
  fa_load_tile<D, S, ST>(Vs, nullptr, dbase, C, qt * FA_TILE, T_);  // dO staged in Vs
  __syncthreads();
  uint32_t qf[D / 16][4], df[D / 16][4];
  fa_a_frags<D, S>(qf, Ks, w * 16);
  fa_a_frags<D, S>(df, Vs, w * 16);
  const int row[2] = {qt * FA_TILE + w * 16 + g, qt * FA_TILE + w * 16 + g + 8};
  float ls[2], ds[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    ls[r] = row[r] < T_ ? lse[hrow + row[r]] : INFINITY;
    ds[r] = row[r] < T_ ? dsum[hrow + row[r]] : 0.f;
  }
  float dq[D / 8][4] = {};
  for (int j = 0; j <= qt; j++) {
    __syncthreads();
    fa_load_tile<D, S, ST>(Ks, Kt, base + C, ld, j * FA_TILE, T_);
    fa_load_tile<D, S, ST>(Vs, nullptr, base + 2 * C, ld, j * FA_TILE, T_);
    __syncthreads();
    float p[8][4], dp[8][4];
    fa_mm_abt<D, S>(p, qf, Ks);   // S (16 queries x 64 keys)
    fa_mm_abt<D, S>(dp, df, Vs);  // dP = dO · V^T
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int k = j * FA_TILE + n * 8 + 2 * t + (e & 1), r = e >> 1;
        float pv = (k <= row[r] && k < T_) ? __expf(p[n][e] * scale - ls[r]) : 0.f;
        dp[n][e] = pv * (dp[n][e] - ds[r]) * scale;
      }
    fa_mm_pb<D, ST>(dq, dp, Kt);  // dQ += dS · K
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    if (row[r] >= T_) continue;
    bf16* qrow = dqkv + ((size_t)b * T_ + row[r]) * ld + h * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
      *reinterpret_cast<uint32_t*>(qrow + dn * 8 + 2 * t) = pack2(dq[dn][2 * r], dq[dn][2 * r + 1]);
  }
}

// ---------------------------------------------------------------------------------------------------- launchers

inline void flash_v1_forward(bf16* out, float* lse, const bf16* qkv, int B, int T_, int C, int NH, cudaStream_t stream) {
  int D = C / NH;
  dim3 grid(ceil_div(T_, FA_TILE), NH, B);
  float scale = 1.f / sqrtf((float)D);
  if (D == 64) flash_fwd_kernel<64><<<grid, 128, 0, stream>>>(out, lse, qkv, T_, NH, scale);
  else if (D == 32) flash_fwd_kernel<32><<<grid, 128, 0, stream>>>(out, lse, qkv, T_, NH, scale);
  else fail_(ErrorCode::Internal, "flash attention needs head size 32 or 64", "", __FILE__, __LINE__);
  LAUNCH_CHECK();
}

// dqkv (B,T,3C) written; dout, out (B,T,C); lse from the forward; dsum scratch (B,NH,T)
inline void flash_v1_backward(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv, const float* lse,
                                     float* dsum, int B, int T_, int C, int NH, cudaStream_t stream) {
  int D = C / NH;
  dim3 grid(ceil_div(T_, FA_TILE), NH, B);
  float scale = 1.f / sqrtf((float)D);
  size_t warps = (size_t)B * T_ * NH;
  if (D == 64) {
    flash_bwd_dsum_kernel<64><<<ceil_div(warps * 32, 256), 256, 0, stream>>>(dsum, dout, out, B, T_, NH);
    LAUNCH_CHECK();
    flash_bwd_dkdv_kernel<64><<<grid, 128, 0, stream>>>(dqkv, qkv, dout, lse, dsum, T_, NH, scale);
    LAUNCH_CHECK();
    flash_bwd_dq_kernel<64><<<grid, 128, 0, stream>>>(dqkv, qkv, dout, lse, dsum, T_, NH, scale);
  } else if (D == 32) {
    flash_bwd_dsum_kernel<32><<<ceil_div(warps * 32, 256), 256, 0, stream>>>(dsum, dout, out, B, T_, NH);
    LAUNCH_CHECK();
    flash_bwd_dkdv_kernel<32><<<grid, 128, 0, stream>>>(dqkv, qkv, dout, lse, dsum, T_, NH, scale);
    LAUNCH_CHECK();
    flash_bwd_dq_kernel<32><<<grid, 128, 0, stream>>>(dqkv, qkv, dout, lse, dsum, T_, NH, scale);
  } else {
    fail_(ErrorCode::Internal, "flash attention needs head size 32 or 64", "", __FILE__, __LINE__);
  }
  LAUNCH_CHECK();
}

}  // namespace fa1
}  // namespace cudabk
