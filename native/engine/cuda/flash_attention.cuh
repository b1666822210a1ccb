// Fused causal attention (FlashAttention-2 structure: Dao 2023, arXiv:2307.08691), bf16 in, fp32 accumulation,
// on mma.sync.m16n8k16 tensor-core instructions (sm_80+). The T×T scores never touch device memory: the forward
// pass keeps one log-sum-exp per row; the backward pass recomputes the probabilities tile by tile. The backward is
// two kernels (dQ per query tile, then dK/dV per key tile) so no gradient is accumulated with atomics: results are
// deterministic, as the engine's contract requires.
//
// Reads q, k, v straight from the c_attn output qkv (B,T,3,NH,HS) and writes out (B,T,NH,HS) and dqkv in the same
// layouts, so no permute kernels are needed. Head size D = 32 or 64 (every GPT-2 size has 64).
//
// Speed (kernel times in bench/RESULTS.md): K/V (forward, dQ) and Q/dO (dK/dV) tiles stream
// through shared memory in two stages with cp.async, so the next tile's global loads overlap this tile's math;
// every mma operand is read with ldmatrix (.trans for the operands used transposed: V in P·V, dO in P^T·dO, Q in
// dS^T·Q, K in dS·K), so no tile is ever transposed through scalar stores. Rows are padded by 8 elements (16 bytes),
// which makes both ldmatrix and the 16-byte cp.async stores free of bank conflicts. The softmax runs in base 2
// (exp2 of scores pre-multiplied by log2(e)·scale); the saved log-sum-exp stays natural-log.
//
// mma.sync.m16n8k16 fragment layout (PTX ISA), lane = 4*g + t:
//   A (16x16, row): a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B (16x8, col):  b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C (16x8):       c0 c1 (g, 2t 2t+1)   c2 c3 (g+8, 2t 2t+1)
// so the C fragments of S = Q·K^T are directly the A fragments of P·V (FA2's register reuse).
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

constexpr float FA_LOG2E = 1.4426950408889634f;

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
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
// 16 bytes global -> shared, asynchronous; zero-filled when !pred (src must still be a valid address)
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool pred) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(pred ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

// Rows [r0, r0 + R) of a (T, D) head slice with row stride `ld` elements -> smem tile dst[R][S], asynchronously;
// rows past T are zero-filled.
template <int R, int D, int S, int NT>
__device__ __forceinline__ void fa_load_async(bf16 (*dst)[S], const bf16* src, size_t ld, int r0, int T_) {
  constexpr int CH = D / 8;
#pragma unroll
  for (int c = threadIdx.x; c < R * CH; c += NT) {
    int r = c / CH, d = (c % CH) * 8;
    bool ok = r0 + r < T_;
    cp_async16(&dst[r][d], src + (size_t)(ok ? r0 + r : 0) * ld + d, ok);
  }
}
// A fragments (16 rows x D) of rows [row0, row0+16) of a row-major smem tile
template <int D, int S>
__device__ __forceinline__ void fa_a_frags(uint32_t f[D / 16][4], bf16 (*s)[S], int row0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) ldsm_x4(f[kk], &s[row0 + lane % 16][kk * 16 + (lane / 16) * 8]);
}
// X(16 x 8NT) = A(16 x D) · Bs^T, Bs a row-major (8NT) x D smem tile (its rows are X's columns): S = Q·K^T and kin
template <int D, int S, int NT = 8>
__device__ __forceinline__ void fa_mm_abt(float (*x)[4], const uint32_t (*a)[4], bf16 (*bs)[S]) {  // x[NT][4], a[D/16][4]
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < NT; n++) x[n][0] = x[n][1] = x[n][2] = x[n][3] = 0.f;
#pragma unroll
  for (int np = 0; np < NT / 2; np++)
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      uint32_t b[4];
      ldsm_x4(b, &bs[np * 16 + lane % 8 + (lane / 16) * 8][kk * 16 + ((lane / 8) % 2) * 8]);
      mma16816(x[2 * np], a[kk], b[0], b[1]);
      mma16816(x[2 * np + 1], a[kk], b[2], b[3]);
    }
}
// acc(16 x D) += P(16 x 8NT, C-fragment registers, rounded to bf16) · Bs, Bs a row-major (8NT) x D smem tile
// (P·V, P^T·dO, dS^T·Q, dS·K: the tile's rows are the reduction index, read with ldmatrix.trans)
template <int D, int S, int NT = 8>
__device__ __forceinline__ void fa_mm_pb(float (*acc)[4], const float (*p)[4], bf16 (*bs)[S]) {  // acc[D/8][4], p[NT][4]
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < NT / 2; kk++) {
    uint32_t a[4] = {pack2(p[2 * kk][0], p[2 * kk][1]), pack2(p[2 * kk][2], p[2 * kk][3]),
                     pack2(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t b[4];
      ldsm_x4_t(b, &bs[kk * 16 + lane % 8 + ((lane / 8) % 2) * 8][dp * 16 + (lane / 16) * 8]);
      mma16816(acc[2 * dp], a, b[0], b[1]);
      mma16816(acc[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

constexpr int FA_BN = 64;         // keys per tile (forward, dQ), queries per tile (dK/dV)
constexpr int FA_FWD_WARPS = 8;   // forward: 128 query rows per block (each K/V tile serves 8 warps)
constexpr int FA_BWD_WARPS = 4;   // backward: 64 query rows (dQ) / 64 keys (dK/dV) per block
template <int D> constexpr size_t fa_fwd_smem() { return (size_t)(16 * FA_FWD_WARPS + 4 * FA_BN) * (D + 8) * 2; }

// ---------------------------------------------------------------------------------------------------- forward
// grid (ceil(T/BM), NH, B), 32*WARPS threads, dynamic smem fa_fwd_smem<D>(): Q[BM][S], K[2][BN][S], V[2][BN][S].
// out (B,T,NH,D); lse (B,NH,T) natural-log log-sum-exp of scaled scores.
template <int D, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) flash_fwd_kernel(bf16* out, float* lse, const bf16* qkv, int T_, int NH, float scale) {
  constexpr int BM = 16 * WARPS, BN = FA_BN, S = D + 8, NT = WARPS * 32;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  bf16(*Qs)[S] = reinterpret_cast<bf16(*)[S]>(fa_smem);
  bf16(*Ks)[BN][S] = reinterpret_cast<bf16(*)[BN][S]>(fa_smem + (size_t)BM * S * 2);
  bf16(*Vs)[BN][S] = reinterpret_cast<bf16(*)[BN][S]>(fa_smem + (size_t)(BM + 2 * BN) * S * 2);
  const int qt = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int h = blockIdx.y, b = blockIdx.z, C = NH * D, w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const size_t ld = 3 * (size_t)C;
  const bf16* base = qkv + (size_t)b * T_ * ld + h * D;
  const int q0 = qt * BM, wrow0 = q0 + w * 16;
  const int nkt = (min(T_, q0 + BM) + BN - 1) / BN;  // key tiles any row of this block sees
  fa_load_async<BM, D, S, NT>(Qs, base, ld, q0, T_);
  fa_load_async<BN, D, S, NT>(Ks[0], base + C, ld, 0, T_);
  fa_load_async<BN, D, S, NT>(Vs[0], base + 2 * C, ld, 0, T_);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4];
  fa_a_frags<D, S>(qf, Qs, w * 16);
  float o[D / 8][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row[2] = {wrow0 + g, wrow0 + g + 8};
  const float sl2 = scale * FA_LOG2E;
  for (int j = 0; j < nkt; j++) {
    const int st = j & 1;
    if (j + 1 < nkt) {  // prefetch the next K/V tile into the other stage
      fa_load_async<BN, D, S, NT>(Ks[st ^ 1], base + C, ld, (j + 1) * BN, T_);
      fa_load_async<BN, D, S, NT>(Vs[st ^ 1], base + 2 * C, ld, (j + 1) * BN, T_);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j * BN <= wrow0 + 15) {  // else every key of the tile is in this warp's future
      float s[8][4];
      fa_mm_abt<D, S>(s, qf, Ks[st]);
      const bool mask = j * BN + BN - 1 > wrow0 || j * BN + BN > T_;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          int col = j * BN + n * 8 + 2 * t + (e & 1), r = e >> 1;
          float v = s[n][e] * sl2;
          if (mask && (col > row[r] || col >= T_)) v = -INFINITY;
          s[n][e] = v;
          mx[r] = fmaxf(mx[r], v);
        }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        float mn = fmaxf(m[r], mx[r]);
        float mu = mn == -INFINITY ? 0.f : mn;  // a row with nothing visible yet
        float alpha = exp2f(m[r] - mu);
        m[r] = mn;
        l[r] *= alpha;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) { o[dn][2 * r] *= alpha; o[dn][2 * r + 1] *= alpha; }
#pragma unroll
        for (int n = 0; n < 8; n++) {
          s[n][2 * r] = exp2f(s[n][2 * r] - mu);
          s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - mu);
          l[r] += s[n][2 * r] + s[n][2 * r + 1];
        }
      }
      fa_mm_pb<D, S>(o, s, Vs[st]);
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage
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
    if (t == 0) lse[((size_t)b * NH + h) * T_ + row[r]] = (m[r] + log2f(l[r])) / FA_LOG2E;
  }
}

// ---------------------------------------------------------------------------------------------------- backward
// dQ for one query tile, and dsum (B,NH,T) = rowsum(dout ∘ out) of its rows (the dK/dV kernel, launched after,
// reads it). grid (ceil(T/64), NH, B), 128 threads (4 warps x 16 queries); loops over key tiles <= its own.
// KS = keys per sub-step (64, or 32: fewer registers for S and dP, four blocks per multiprocessor instead of three)
template <int D, int KS>
__global__ void __launch_bounds__(FA_BWD_WARPS * 32, KS == 32 ? 4 : 1) flash_bwd_dq_kernel(bf16* dqkv, float* dsum, const bf16* qkv, const bf16* out,
                                                                         const bf16* dout, const float* lse, int T_, int NH, float scale) {
  constexpr int BQ = 16 * FA_BWD_WARPS, BN = FA_BN, S = D + 8, NT = FA_BWD_WARPS * 32;
  static_assert(BQ == BN, "the Q/dO staging reuses stage 1 of the K/V tiles");
  __shared__ __align__(16) bf16 Ks[2][BN][S], Vs[2][BN][S];
  __shared__ float dsum_s[BQ];
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, C = NH * D, w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const size_t ld = 3 * (size_t)C;
  const bf16* base = qkv + (size_t)b * T_ * ld + h * D;
  const bf16* dbase = dout + (size_t)b * T_ * C + h * D;
  const size_t hrow = ((size_t)b * NH + h) * T_;
  const int q0 = qt * BQ;
  fa_load_async<BQ, D, S, NT>(Ks[1], base, ld, q0, T_);   // Q staged in K stage 1
  fa_load_async<BQ, D, S, NT>(Vs[1], dbase, C, q0, T_);   // dO staged in V stage 1
  fa_load_async<BN, D, S, NT>(Ks[0], base + C, ld, 0, T_);
  fa_load_async<BN, D, S, NT>(Vs[0], base + 2 * C, ld, 0, T_);
  cp_async_commit();
  {  // dsum of the block's rows: two lanes per row, D/2 elements each, 16-byte loads
    const int r = threadIdx.x / 2, q = q0 + r, half = threadIdx.x % 2;
    float s = 0.f;
    if (q < T_) {
      const bf16* a = dbase + (size_t)q * C + half * (D / 2);
      const bf16* o = out + ((size_t)b * T_ + q) * C + h * D + half * (D / 2);
#pragma unroll
      for (int d = 0; d < D / 2; d += 8) {
        Pack<bf16> pa = Pack<bf16>::load(a + d), po = Pack<bf16>::load(o + d);
#pragma unroll
        for (int k = 0; k < 8; k++) s += to_f(pa.v[k]) * to_f(po.v[k]);
      }
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (half == 0) {
      dsum_s[r] = s;
      if (q < T_) dsum[hrow + q] = s;
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4], df[D / 16][4];
  fa_a_frags<D, S>(qf, Ks[1], w * 16);
  fa_a_frags<D, S>(df, Vs[1], w * 16);
  const int row[2] = {q0 + w * 16 + g, q0 + w * 16 + g + 8};
  float nls[2], ds[2];  // -lse·log2(e) and dsum of the two rows this thread holds
#pragma unroll
  for (int r = 0; r < 2; r++) {
    nls[r] = row[r] < T_ ? -lse[hrow + row[r]] * FA_LOG2E : -INFINITY;
    ds[r] = dsum_s[w * 16 + g + 8 * r];
  }
  __syncthreads();  // stage 1 is overwritten by the first prefetch
  const float sl2 = scale * FA_LOG2E;
  float dq[D / 8][4] = {};
  const int nkt = qt + 1;  // BN == BQ: key tiles 0 .. qt
  for (int j = 0; j < nkt; j++) {
    const int st = j & 1;
    if (j + 1 < nkt) {
      fa_load_async<BN, D, S, NT>(Ks[st ^ 1], base + C, ld, (j + 1) * BN, T_);
      fa_load_async<BN, D, S, NT>(Vs[st ^ 1], base + 2 * C, ld, (j + 1) * BN, T_);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int k0 = 0; k0 < BN; k0 += KS) {
      constexpr int NT = KS / 8;
      float p[NT][4], dp[NT][4];
      fa_mm_abt<D, S, NT>(p, qf, Ks[st] + k0);   // S (16 queries x KS keys)
      fa_mm_abt<D, S, NT>(dp, df, Vs[st] + k0);  // dP = dO · V^T
      const bool mask = j == qt || j * BN + k0 + KS > T_;
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          int k = j * BN + k0 + n * 8 + 2 * t + (e & 1), r = e >> 1;
          float pv = exp2f(fmaf(p[n][e], sl2, nls[r]));
          if (mask && (k > row[r] || k >= T_)) pv = 0.f;
          dp[n][e] = pv * (dp[n][e] - ds[r]) * scale;
        }
      fa_mm_pb<D, S, NT>(dq, dp, Ks[st] + k0);  // dQ += dS · K
    }
    __syncthreads();
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

// dK, dV for one key tile: grid (ceil(T/64), NH, B), 128 threads (4 warps x 16 keys); loops over query tiles >= it.
// Computes the transposed products (keys as rows): S^T = K·Q^T, dP^T = V·dO^T, dV += P^T·dO, dK += dS^T·Q.
// QS = queries per sub-step: 64 (one pass over the tile) or 32 (two halves: 32 fewer registers for S^T and dP^T,
// so three blocks fit on a multiprocessor instead of two).
template <int D, int QS>
__global__ void __launch_bounds__(FA_BWD_WARPS * 32, QS == 32 ? 3 : 1) flash_bwd_dkdv_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                                                           const float* lse, const float* dsum, int T_, int NH, float scale) {
  constexpr int BK = 16 * FA_BWD_WARPS, BQ = FA_BN, S = D + 8, NT = FA_BWD_WARPS * 32;
  static_assert(BK == BQ, "the K/V staging reuses stage 1 of the Q/dO tiles");
  __shared__ __align__(16) bf16 Qs[2][BQ][S], dOs[2][BQ][S];
  __shared__ float lse_s[2][BQ], dsum_s[2][BQ];
  const int kt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, C = NH * D, w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const size_t ld = 3 * (size_t)C;
  const bf16* base = qkv + (size_t)b * T_ * ld + h * D;
  const bf16* dbase = dout + (size_t)b * T_ * C + h * D;
  const size_t hrow = ((size_t)b * NH + h) * T_;
  const int k0 = kt * BK, nq = (T_ + BQ - 1) / BQ;
  auto load_q = [&](int i, int st) {
    fa_load_async<BQ, D, S, NT>(Qs[st], base, ld, i * BQ, T_);
    fa_load_async<BQ, D, S, NT>(dOs[st], dbase, C, i * BQ, T_);
    for (int r = threadIdx.x; r < BQ; r += NT) {
      int q = i * BQ + r;
      bool ok = q < T_;
      cp_async4(&lse_s[st][r], lse + hrow + (ok ? q : 0), ok);
      cp_async4(&dsum_s[st][r], dsum + hrow + (ok ? q : 0), ok);
    }
  };
  fa_load_async<BK, D, S, NT>(Qs[1], base + C, ld, k0, T_);       // K staged in Q stage 1
  fa_load_async<BK, D, S, NT>(dOs[1], base + 2 * C, ld, k0, T_);  // V staged in dO stage 1
  const int i0 = k0 / BQ;
  load_q(i0, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t kf[D / 16][4], vf[D / 16][4];
  fa_a_frags<D, S>(kf, Qs[1], w * 16);
  fa_a_frags<D, S>(vf, dOs[1], w * 16);
  __syncthreads();
  const float sl2 = scale * FA_LOG2E;
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  const int key[2] = {k0 + w * 16 + g, k0 + w * 16 + g + 8};
  for (int i = i0; i < nq; i++) {
    const int st = (i - i0) & 1;
    if (i + 1 < nq) {
      load_q(i + 1, st ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int q0 = 0; q0 < BQ; q0 += QS) {
      constexpr int NT = QS / 8;
      if (i * BQ + q0 + QS - 1 < k0 + w * 16) continue;  // every query of this part is before this warp's keys
      float p[NT][4], dp[NT][4];
      fa_mm_abt<D, S, NT>(p, kf, Qs[st] + q0);   // S^T (16 keys x QS queries)
      fa_mm_abt<D, S, NT>(dp, vf, dOs[st] + q0);  // dP^T = V · dO^T
      const bool mask = i * BQ + q0 < k0 + w * 16 + 16 || i * BQ + q0 + QS > T_;
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          int qc = q0 + n * 8 + 2 * t + e, q = i * BQ + qc;
          float nl = -lse_s[st][qc] * FA_LOG2E, dsv = dsum_s[st][qc];
#pragma unroll
          for (int r = 0; r < 2; r++) {
            float pv = exp2f(fmaf(p[n][2 * r + e], sl2, nl));
            if (mask && (q < key[r] || q >= T_)) pv = 0.f;
            p[n][2 * r + e] = pv;
            dp[n][2 * r + e] = pv * (dp[n][2 * r + e] - dsv) * scale;  // dS^T (of the unscaled scores)
          }
        }
      fa_mm_pb<D, S, NT>(dv, p, dOs[st] + q0);  // dV += P^T · dO
      fa_mm_pb<D, S, NT>(dk, dp, Qs[st] + q0);  // dK += dS^T · Q
    }
    __syncthreads();
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

// ---------------------------------------------------------------------------------------------------- launchers

inline bool flash_supported(int C, int NH, size_t elem_bytes) { return elem_bytes == 2 && (C / NH == 64 || C / NH == 32); }

template <int D>
inline void flash_forward_d_(bf16* out, float* lse, const bf16* qkv, int B, int T_, int NH, cudaStream_t stream) {
  constexpr size_t smem = fa_fwd_smem<D>();
  auto kernel = flash_fwd_kernel<D, FA_FWD_WARPS>;
  if (smem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  dim3 grid(ceil_div(T_, 16 * FA_FWD_WARPS), NH, B);
  kernel<<<grid, 32 * FA_FWD_WARPS, smem, stream>>>(out, lse, qkv, T_, NH, 1.f / sqrtf((float)D));
  LAUNCH_CHECK();
}
template <int D>
inline void flash_backward_d_(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv, const float* lse,
                              float* dsum, int B, int T_, int NH, cudaStream_t stream, int qsub) {
  dim3 grid(ceil_div(T_, FA_BN), NH, B);
  float scale = 1.f / sqrtf((float)D);
  if (qsub == 64) flash_bwd_dq_kernel<D, 64><<<grid, 32 * FA_BWD_WARPS, 0, stream>>>(dqkv, dsum, qkv, out, dout, lse, T_, NH, scale);
  else flash_bwd_dq_kernel<D, 32><<<grid, 32 * FA_BWD_WARPS, 0, stream>>>(dqkv, dsum, qkv, out, dout, lse, T_, NH, scale);
  LAUNCH_CHECK();
  if (qsub == 64) flash_bwd_dkdv_kernel<D, 64><<<grid, 32 * FA_BWD_WARPS, 0, stream>>>(dqkv, qkv, dout, lse, dsum, T_, NH, scale);
  else flash_bwd_dkdv_kernel<D, 32><<<grid, 32 * FA_BWD_WARPS, 0, stream>>>(dqkv, qkv, dout, lse, dsum, T_, NH, scale);
  LAUNCH_CHECK();
}

// out (B,T,C), lse (B,NH,T) written; qkv (B,T,3C) as c_attn writes it
inline void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T_, int C, int NH, cudaStream_t stream) {
  int D = C / NH;
  if (D == 64) flash_forward_d_<64>(out, lse, qkv, B, T_, NH, stream);
  else if (D == 32) flash_forward_d_<32>(out, lse, qkv, B, T_, NH, stream);
  else fail_(ErrorCode::Internal, "flash attention needs head size 32 or 64", "", __FILE__, __LINE__);
}

// dqkv (B,T,3C) written; dout, out (B,T,C); lse from the forward; dsum scratch (B,NH,T)
// qsub: queries (dK/dV kernel) and keys (dQ kernel) per sub-step, 32 (measured faster) or 64 (native/lab timings)
inline void flash_attention_backward(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv, const float* lse,
                                     float* dsum, int B, int T_, int C, int NH, cudaStream_t stream, int qsub = 32) {
  int D = C / NH;
  if (D == 64) flash_backward_d_<64>(dqkv, dout, out, qkv, lse, dsum, B, T_, NH, stream, qsub);
  else if (D == 32) flash_backward_d_<32>(dqkv, dout, out, qkv, lse, dsum, B, T_, NH, stream, qsub);
  else fail_(ErrorCode::Internal, "flash attention needs head size 32 or 64", "", __FILE__, __LINE__);
}

}  // namespace cudabk
