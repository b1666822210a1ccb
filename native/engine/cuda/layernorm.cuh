// LayerNorm forward and backward (GPT-2: eps 1e-5, affine). Statistics in fp32; mean and rstd (N) are kept for
// the backward pass. The backward pass ADDS into dinp (the residual stream's gradient), and accumulates the weight
// and bias gradients in fp32 deterministically: per-chunk partial sums, then a fixed-order sum (no atomics), so
// a run repeats bit for bit.
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

// one warp per row; x (N,C), out (N,C), mean/rstd (N)
template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* x, const T* w, const T* b, int N,
                                         int C) {
  constexpr int V = Pack<T>::N;
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* xr = x + (size_t)row * C;
  float s = 0.f;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> p = Pack<T>::load(xr + i);
#pragma unroll
    for (int k = 0; k < V; k++) s += to_f(p.v[k]);
  }
  float m = warp_sum(s) / C;
  float ss = 0.f;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> p = Pack<T>::load(xr + i);
#pragma unroll
    for (int k = 0; k < V; k++) { float d = to_f(p.v[k]) - m; ss += d * d; }
  }
  float r = rsqrtf(warp_sum(ss) / C + 1e-5f);
  T* o = out + (size_t)row * C;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> p = Pack<T>::load(xr + i), pw = Pack<T>::load(w + i), pb = Pack<T>::load(b + i), q;
#pragma unroll
    for (int k = 0; k < V; k++) q.v[k] = from_f<T>((to_f(p.v[k]) - m) * r * to_f(pw.v[k]) + to_f(pb.v[k]));
    q.store(o + i);
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
}

// The whole backward pass over a chunk of LN_BWD_ROWS rows per block, in one pass over device memory:
// phase 1, one warp per row: dinp += LN'(dout) (reads dout, x, dinp; writes dinp); phase 2, one thread per column:
// the chunk's partial dweight / dbias sums, re-reading the chunk's dout and x, which phase 1 just brought into
// L1/L2 (no second trip to HBM). partial (nchunks, 2, C); column_sum (cuda_common.cuh) then sums the chunks in a
// fixed order, so the result is deterministic.
constexpr int LN_BWD_ROWS = 32, LN_BWD_THREADS = 256;
template <typename T>
__global__ void __launch_bounds__(LN_BWD_THREADS) layernorm_backward_kernel(T* dinp, float* partial, const T* dout, const T* x,
                                                                          const float* mean, const float* rstd, const T* w,
                                                                          int N, int C) {
  constexpr int V = Pack<T>::N, NW = LN_BWD_THREADS / 32;
  const int r0 = blockIdx.x * LN_BWD_ROWS, r1 = min(N, r0 + LN_BWD_ROWS), lane = threadIdx.x % 32;
  for (int row = r0 + threadIdx.x / 32; row < r1; row += NW) {
    const T* dr = dout + (size_t)row * C;
    const T* xr = x + (size_t)row * C;
    float m = mean[row], r = rstd[row];
    float sd = 0.f, sdn = 0.f;  // sum(dnorm), sum(dnorm * norm)
    for (int i = lane * V; i < C; i += 32 * V) {
      Pack<T> pd = Pack<T>::load(dr + i), px = Pack<T>::load(xr + i), pw = Pack<T>::load(w + i);
#pragma unroll
      for (int k = 0; k < V; k++) {
        float dn = to_f(pd.v[k]) * to_f(pw.v[k]);
        sd += dn;
        sdn += dn * (to_f(px.v[k]) - m) * r;
      }
    }
    sd = warp_sum(sd) / C;
    sdn = warp_sum(sdn) / C;
    T* di = dinp + (size_t)row * C;
    for (int i = lane * V; i < C; i += 32 * V) {
      Pack<T> pd = Pack<T>::load(dr + i), px = Pack<T>::load(xr + i), pw = Pack<T>::load(w + i), pi = Pack<T>::load(di + i);
#pragma unroll
      for (int k = 0; k < V; k++) {
        float dn = to_f(pd.v[k]) * to_f(pw.v[k]);
        float nrm = (to_f(px.v[k]) - m) * r;
        pi.v[k] = from_f<T>(to_f(pi.v[k]) + r * (dn - sd - nrm * sdn));
      }
      pi.store(di + i);
    }
  }
  __shared__ float sm[LN_BWD_ROWS], sr[LN_BWD_ROWS];
  if (threadIdx.x < LN_BWD_ROWS && r0 + (int)threadIdx.x < r1) { sm[threadIdx.x] = mean[r0 + threadIdx.x]; sr[threadIdx.x] = rstd[r0 + threadIdx.x]; }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += LN_BWD_THREADS) {
    float dw = 0.f, db = 0.f;
    auto row_ = [&](int k) {
      size_t o = (size_t)(r0 + k) * C + c;
      float d = to_f(dout[o]);
      dw += d * (to_f(x[o]) - sm[k]) * sr[k];
      db += d;
    };
    if (r1 - r0 == LN_BWD_ROWS) {  // full chunk: a fixed trip count, so the loads of all rows are in flight at once
#pragma unroll
      for (int k = 0; k < LN_BWD_ROWS; k++) row_(k);
    } else {
      for (int k = 0; k < r1 - r0; k++) row_(k);
    }
    partial[((size_t)blockIdx.x * 2 + 0) * C + c] = dw;
    partial[((size_t)blockIdx.x * 2 + 1) * C + c] = db;
  }
}

// ----------------------------------------------------------------------------------------------------------
// launchers

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* w, const T* b, int N, int C,
                       cudaStream_t stream) {
  REQUIRE(C % Pack<T>::N == 0, "layernorm: C must be a multiple of 8");
  const int warps = 8;
  layernorm_forward_kernel<T><<<ceil_div(N, warps), warps * 32, 0, stream>>>(out, mean, rstd, x, w, b, N, C);
  LAUNCH_CHECK();
}
inline size_t layernorm_scratch_floats(size_t N, size_t C) { return (size_t)ceil_div(N, LN_BWD_ROWS) * 2 * C; }

// dinp += LN'(dout); dw, db += the weight / bias gradients (fp32); scratch holds layernorm_scratch_floats(N, C)
template <typename T>
void layernorm_backward(T* dinp, float* dw, float* db, float* scratch, const T* dout, const T* x, const T* w,
                        const float* mean, const float* rstd, int N, int C, cudaStream_t stream) {
  REQUIRE(C % Pack<T>::N == 0, "layernorm: C must be a multiple of 8");
  const int nchunks = ceil_div(N, LN_BWD_ROWS);
  layernorm_backward_kernel<T><<<nchunks, LN_BWD_THREADS, 0, stream>>>(dinp, scratch, dout, x, mean, rstd, w, N, C);
  LAUNCH_CHECK();
  column_sum(dw, scratch, nchunks, 2 * (size_t)C, C, stream);
  column_sum(db, scratch + C, nchunks, 2 * (size_t)C, C, stream);
}

}  // namespace cudabk
