// MLP activations of the Llama / GPT-NeoX / GPT-J blocks, forward and backward, fp32 math on T storage:
//   SwiGLU (Llama): gate_proj and up_proj are adjacent in the flat HF buffer, so one product gives a row
//     gu = [gate (I) | up (I)] per token; out = silu(gate) * up. The backward writes dgu in the same layout, so the
//     weight gradient is again one product.
//   GELU: "gelu" (erf, GPT-NeoX) or "gelu_new" (tanh, GPT-J); the backward multiplies in place by gelu'(pre).
// The activation outputs are never stored for the backward pass: it recomputes them from the saved
// pre-activations (one elementwise kernel, far cheaper than the (N, I) buffer per layer).
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

__device__ __forceinline__ float silu_f(float g) { return g / (1.f + expf(-g)); }
__device__ __forceinline__ float gelu_erf_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_erf_grad_f(float x) {
  return 0.5f * (1.f + erff(x * 0.70710678118654752f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
}

// out (N, I) = silu(gu[:, :I]) * gu[:, I:]
template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* gu, int N, int I) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * I) return;
  size_t n = idx / I, i = idx % I;
  float g = to_f(gu[n * 2 * I + i]), u = to_f(gu[n * 2 * I + I + i]);
  out[idx] = from_f<T>(silu_f(g) * u);
}

// dgu (N, 2I) = [dout * up * silu'(gate) | dout * silu(gate)]
template <typename T>
__global__ void swiglu_backward_kernel(T* dgu, const T* dout, const T* gu, int N, int I) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * I) return;
  size_t n = idx / I, i = idx % I;
  float g = to_f(gu[n * 2 * I + i]), u = to_f(gu[n * 2 * I + I + i]), d = to_f(dout[idx]);
  float s = 1.f / (1.f + expf(-g));
  dgu[n * 2 * I + i] = from_f<T>(d * u * (s + g * s * (1.f - s)));
  dgu[n * 2 * I + I + i] = from_f<T>(d * g * s);
}

// out = act(pre); erf selects "gelu" (erf) over "gelu_new" (tanh)
template <typename T>
__global__ void gelu_act_forward_kernel(T* out, const T* pre, size_t n, bool erf) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = to_f(pre[i]);
  out[i] = from_f<T>(erf ? gelu_erf_f(x) : gelu_f(x));
}
// d *= act'(pre)
template <typename T>
__global__ void gelu_act_backward_kernel(T* d, const T* pre, size_t n, bool erf) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = to_f(pre[i]);
  d[i] = from_f<T>(to_f(d[i]) * (erf ? gelu_erf_grad_f(x) : gelu_grad_f(x)));
}

// ----------------------------------------------------------------------------------------------------------
// launchers

template <typename T>
void swiglu_forward(T* out, const T* gu, int N, int I, cudaStream_t stream) {
  swiglu_forward_kernel<T><<<ceil_div((size_t)N * I, 256), 256, 0, stream>>>(out, gu, N, I);
  LAUNCH_CHECK();
}
template <typename T>
void swiglu_backward(T* dgu, const T* dout, const T* gu, int N, int I, cudaStream_t stream) {
  swiglu_backward_kernel<T><<<ceil_div((size_t)N * I, 256), 256, 0, stream>>>(dgu, dout, gu, N, I);
  LAUNCH_CHECK();
}
template <typename T>
void gelu_act_forward(T* out, const T* pre, size_t n, bool erf, cudaStream_t stream) {
  gelu_act_forward_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(out, pre, n, erf);
  LAUNCH_CHECK();
}
template <typename T>
void gelu_act_backward(T* d, const T* pre, size_t n, bool erf, cudaStream_t stream) {
  gelu_act_backward_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(d, pre, n, erf);
  LAUNCH_CHECK();
}
// out (N, OC) += bias, rows with a stride ld >= OC (logits padded to a multiple of 64 columns), for products
// whose bias epilogue cuBLASLt could not fuse
template <typename T>
__global__ void add_bias_ld_kernel(T* out, const T* bias, size_t n, int OC, int ld) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  size_t r = i / OC, c = i % OC;
  out[r * ld + c] = from_f<T>(to_f(out[r * ld + c]) + to_f(bias[c]));
}
template <typename T>
void add_bias(T* out, const T* bias, int N, int OC, int ld, cudaStream_t stream) {
  size_t n = (size_t)N * OC;
  add_bias_ld_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(out, bias, n, OC, ld);
  LAUNCH_CHECK();
}

}  // namespace cudabk
