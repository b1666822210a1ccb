// AdamW on fp32 master weights with fp32 moments, writing the compute copy (bf16) in the same pass, and the
// squared global gradient norm (fp64 partials in a fixed order: deterministic). Same arithmetic as the cpu
// backend's engine/optimizer.cpp (torch.optim.AdamW semantics, decoupled weight decay on 2-D tensors only):
//   p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p),  g scaled by the clipping factor first.
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

constexpr int NORM_BLOCKS = 1024;

__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double block_sum_d(double v, double* shared) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nw ? shared[lane] : 0.0;
  return warp_sum_d(v);
}

// partial[block] = sum of squares over a fixed grid-stride slice (float4 loads; n % 4 == 0 not needed)
static __global__ void grad_sq_partial_kernel(double* partial, const float* g, size_t n) {
  __shared__ double sh[32];
  double s = 0.0;
  size_t n4 = n / 4;
  const float4* g4 = reinterpret_cast<const float4*>(g);
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
    float4 x = g4[i];
    s += (double)(x.x * x.x + x.y * x.y) + (double)(x.z * x.z + x.w * x.w);
  }
  if (blockIdx.x == 0)
    for (size_t i = n4 * 4 + threadIdx.x; i < n; i += blockDim.x) s += (double)g[i] * g[i];
  s = block_sum_d(s, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
static __global__ void sum_partials_d_kernel(double* out, const double* partial, int n) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum_d(s, sh);
  if (threadIdx.x == 0) out[0] = s;
}

struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  float bc1, bc2;  // bias corrections 1 - beta^t (computed in fp64 on the host, as the cpu backend does)
};

// gate (optional, device): [0] gradient scale, [1] 1 = apply / 0 = skip, written by step_gate_kernel, so a whole
// step (clipping and the divergence check included) runs without the host reading anything back
template <typename T>
__global__ void adamw_kernel(float* master, T* param, float* m, float* v, const float* g, size_t n, AdamWParams h,
                             float wd, const double* gate) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float scale = h.grad_scale;
  if (gate) {
    if (gate[1] == 0.0) return;
    scale = (float)gate[0];
  }
  float gi = g[i] * scale;
  float mi = h.beta1 * m[i] + (1.0f - h.beta1) * gi;
  float vi = h.beta2 * v[i] + (1.0f - h.beta2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  float p = master[i];
  float mhat = mi / h.bc1, vhat = vi / h.bc2;
  p -= h.lr * (mhat / (sqrtf(vhat) + h.eps) + wd * p);
  master[i] = p;
  param[i] = from_f<T>(p);
}

// The same update on 4 consecutive elements per thread with 16-byte loads (the scalar kernel moved ~2.6 TB/s on
// an H100; this one runs near the copy ceiling). adamw_update() uses it when every pointer is 16-byte aligned
// (8-byte for bf16 weights) and leaves the n % 4 tail to the scalar kernel.
__device__ __forceinline__ void store4_(float* p, const float v[4]) { *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]); }
__device__ __forceinline__ void store4_(bf16* p, const float v[4]) {
  __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
  uint2 u;
  u.x = *reinterpret_cast<uint32_t*>(&a);
  u.y = *reinterpret_cast<uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = u;
}
template <typename T>
__global__ void adamw4_kernel(float* master, T* param, float* m, float* v, const float* g, size_t n4, AdamWParams h,
                              float wd, const double* gate) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  float scale = h.grad_scale;
  if (gate) {
    if (gate[1] == 0.0) return;
    scale = (float)gate[0];
  }
  float4 g4 = __ldcs(reinterpret_cast<const float4*>(g) + i);
  float4 m4 = __ldcs(reinterpret_cast<const float4*>(m) + i), v4 = __ldcs(reinterpret_cast<const float4*>(v) + i);
  float4 p4 = __ldcs(reinterpret_cast<const float4*>(master) + i);
  float gs[4] = {g4.x, g4.y, g4.z, g4.w}, ms[4] = {m4.x, m4.y, m4.z, m4.w}, vs[4] = {v4.x, v4.y, v4.z, v4.w},
        ps[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
  for (int k = 0; k < 4; k++) {
    float gi = gs[k] * scale;
    ms[k] = h.beta1 * ms[k] + (1.0f - h.beta1) * gi;
    vs[k] = h.beta2 * vs[k] + (1.0f - h.beta2) * gi * gi;
    float mhat = ms[k] / h.bc1, vhat = vs[k] / h.bc2;
    ps[k] -= h.lr * (mhat / (sqrtf(vhat) + h.eps) + wd * ps[k]);
  }
  store4_(m + 4 * i, ms);
  store4_(v + 4 * i, vs);
  store4_(master + 4 * i, ps);
  store4_(param + 4 * i, ps);
}

static __global__ void copy_to_compute_kernel_bf16(bf16* out, const float* in, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

// ----------------------------------------------------------------------------------------------------------

// *out = sum of g^2 (fp64, on the device); partial holds NORM_BLOCKS doubles
inline void grad_norm_sq(double* out, double* partial, const float* g, size_t n, cudaStream_t stream) {
  REQUIRE(((uintptr_t)g % 16) == 0, "gradient buffer must be 16-byte aligned");
  grad_sq_partial_kernel<<<NORM_BLOCKS, 512, 0, stream>>>(partial, g, n);
  LAUNCH_CHECK();
  sum_partials_d_kernel<<<1, 1024, 0, stream>>>(out, partial, NORM_BLOCKS);
  LAUNCH_CHECK();
}

template <typename T>
void adamw_update(float* master, T* param, float* m, float* v, const float* g, size_t n, const AdamWParams& h,
                  bool decay, cudaStream_t stream, const double* gate = nullptr) {
  const float wd = decay ? h.weight_decay : 0.f;
  auto al = [](const void* p, uintptr_t a) { return ((uintptr_t)p % a) == 0; };
  size_t n4 = 0;
  if (al(master, 16) && al(m, 16) && al(v, 16) && al(g, 16) && al(param, 4 * sizeof(T))) {
    n4 = n / 4;
    if (n4) adamw4_kernel<T><<<ceil_div(n4, 256), 256, 0, stream>>>(master, param, m, v, g, n4, h, wd, gate);
    LAUNCH_CHECK();
  }
  size_t d = 4 * n4;  // the rest (or everything, when not aligned) element by element
  if (n > d) adamw_kernel<T><<<ceil_div(n - d, 256), 256, 0, stream>>>(master + d, param + d, m + d, v + d, g + d, n - d, h, wd, gate);
  LAUNCH_CHECK();
}

// s[0] loss sum, s[2] squared grad norm -> s[3] clip scale, s[4] applied: the engine's rule (backend.h step_async):
// update only when the mean loss is finite and <= max_loss and the norm is finite; scale = clip / (norm + 1e-6)
// when clip > 0 and norm > clip, else 1 (torch.nn.utils.clip_grad_norm_)
static __global__ void step_gate_kernel(double* s, float dloss, double max_loss, float clip) {
  double loss = s[0] * (double)dloss, norm = sqrt(s[2]);
  bool ok = isfinite(loss) && loss <= max_loss && isfinite(norm);
  s[3] = (clip > 0.f && norm > (double)clip) ? (double)(float)((double)clip / (norm + 1e-6)) : 1.0;
  s[4] = ok ? 1.0 : 0.0;
}

// fp32 master -> compute copy
template <typename T> void copy_to_compute(T* out, const float* in, size_t n, cudaStream_t stream);
template <> inline void copy_to_compute<bf16>(bf16* out, const float* in, size_t n, cudaStream_t stream) {
  copy_to_compute_kernel_bf16<<<ceil_div(n, 256), 256, 0, stream>>>(out, in, n);
  LAUNCH_CHECK();
}
template <> inline void copy_to_compute<float>(float* out, const float* in, size_t n, cudaStream_t stream) {
  if (out != in) CUDA_CHECK(cudaMemcpyAsync(out, in, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
}

}  // namespace cudabk
