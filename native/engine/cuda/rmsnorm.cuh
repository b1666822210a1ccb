// RMSNorm (Llama) forward and backward: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps). Statistics in fp32,
// rstd (N) kept for the backward pass. The backward ADDS into dinp (the residual stream's gradient) and
// accumulates the weight gradient in fp32 through per-chunk partial sums and a fixed-order reduction (no atomics),
// like layernorm.cuh, so runs repeat bit for bit. Same arithmetic as reference/layers.cpp rmsnorm_*.
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

// one warp per row; x (N,C), out (N,C), rstd (N) (may be null: recompute in the backward pass)
template <typename T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps) {
  constexpr int V = Pack<T>::N;
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* xr = x + (size_t)row * C;
  float ss = 0.f;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> p = Pack<T>::load(xr + i);
#pragma unroll
    for (int k = 0; k < V; k++) { float v = to_f(p.v[k]); ss += v * v; }
  }
  float r = rsqrtf(warp_sum(ss) / C + eps);
  T* o = out + (size_t)row * C;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> p = Pack<T>::load(xr + i), pw = Pack<T>::load(w + i), q;
#pragma unroll
    for (int k = 0; k < V; k++) q.v[k] = from_f<T>(to_f(pw.v[k]) * (to_f(p.v[k]) * r));
    q.store(o + i);
  }
  if (lane == 0 && rstd) rstd[row] = r;
}

// dinp += RMSNorm'(dout): dinp_i += r w_i g_i - x_i r^3 (sum_j w_j g_j x_j) / C. One warp per row.
template <typename T>
__global__ void rmsnorm_backward_dx_kernel(T* dinp, const T* dout, const T* x, const float* rstd, const T* w, int N, int C) {
  constexpr int V = Pack<T>::N;
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* dr = dout + (size_t)row * C;
  const T* xr = x + (size_t)row * C;
  const float r = rstd[row];
  float dot = 0.f;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> pd = Pack<T>::load(dr + i), px = Pack<T>::load(xr + i), pw = Pack<T>::load(w + i);
#pragma unroll
    for (int k = 0; k < V; k++) dot += to_f(pw.v[k]) * to_f(pd.v[k]) * to_f(px.v[k]);
  }
  const float kk = warp_sum(dot) * r * r * r / C;
  T* di = dinp + (size_t)row * C;
  for (int i = lane * V; i < C; i += 32 * V) {
    Pack<T> pd = Pack<T>::load(dr + i), px = Pack<T>::load(xr + i), pw = Pack<T>::load(w + i), pi = Pack<T>::load(di + i);
#pragma unroll
    for (int k = 0; k < V; k++)
      pi.v[k] = from_f<T>(to_f(pi.v[k]) + r * to_f(pw.v[k]) * to_f(pd.v[k]) - to_f(px.v[k]) * kk);
    pi.store(di + i);
  }
}

// partial dweight over a chunk of rows, one column per thread: partial (nchunks, C)
template <typename T>
__global__ void rmsnorm_backward_dw_kernel(float* partial, const T* dout, const T* x, const float* rstd, int N, int C,
                                           int rows_per_chunk) {
  int c = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
  if (c >= C) return;
  int r0 = chunk * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float s = 0.f;
  for (int r = r0; r < r1; r++) s += to_f(dout[(size_t)r * C + c]) * to_f(x[(size_t)r * C + c]) * rstd[r];
  partial[(size_t)chunk * C + c] = s;
}
static __global__ void rmsnorm_dw_reduce_kernel(float* dw, const float* partial, int nchunks, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int i = 0; i < nchunks; i++) s += partial[(size_t)i * C + c];
  dw[c] += s;
}

// ----------------------------------------------------------------------------------------------------------
// launchers

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps, cudaStream_t stream) {
  REQUIRE(C % Pack<T>::N == 0, "rmsnorm: C must be a multiple of 8");
  const int warps = 8;
  rmsnorm_forward_kernel<T><<<ceil_div(N, warps), warps * 32, 0, stream>>>(out, rstd, x, w, N, C, eps);
  LAUNCH_CHECK();
}
inline size_t rmsnorm_scratch_floats(size_t N, size_t C) { return (size_t)ceil_div(N, 256) * C; }

template <typename T>
void rmsnorm_backward(T* dinp, float* dw, float* scratch, const T* dout, const T* x, const T* w, const float* rstd,
                      int N, int C, cudaStream_t stream) {
  REQUIRE(C % Pack<T>::N == 0, "rmsnorm: C must be a multiple of 8");
  const int warps = 8;
  rmsnorm_backward_dx_kernel<T><<<ceil_div(N, warps), warps * 32, 0, stream>>>(dinp, dout, x, rstd, w, N, C);
  LAUNCH_CHECK();
  const int rpc = 256, nchunks = ceil_div(N, rpc);
  rmsnorm_backward_dw_kernel<T><<<dim3(ceil_div(C, 128), nchunks), 128, 0, stream>>>(scratch, dout, x, rstd, N, C, rpc);
  LAUNCH_CHECK();
  rmsnorm_dw_reduce_kernel<<<ceil_div(C, 128), 128, 0, stream>>>(dw, scratch, nchunks, C);
  LAUNCH_CHECK();
}

}  // namespace cudabk
