// Shared CUDA helpers for the cuda backend: error checks that throw (never exit), the compute type T
// (bf16 in training, fp32 in the parity test mode), 16-byte packed access, warp/block reductions.
// Every kernel header in this folder includes this one; it depends only on errors.h of the engine (no Node, no
// cuBLAS: only matmul.cuh and attention.cuh need cuBLAS, so CI without it still compiles the other kernels).
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <cstring>
#include <string>
#include "errors.h"  // engine::EngineError, ErrorCode

namespace cudabk {

// ----------------------------------------------------------------------------------------------------------
// errors: every failed check throws the engine's coded EngineError (errors.h) with file:line and a hint

using engine::ErrorCode;

[[noreturn]] inline void fail_(ErrorCode code, const std::string& msg, const std::string& hint, const char* file,
                               int line) {
  const char* slash = strrchr(file, '/');
  throw engine::EngineError(code, msg, slash ? slash + 1 : file, line, hint);
}

inline void cuda_check_(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaSuccess) return;
  bool oom = e == cudaErrorMemoryAllocation;
  if (oom) cudaGetLastError();  // an allocation failure is not sticky: clear it so the context stays usable
  fail_(oom ? ErrorCode::OutOfMemory : ErrorCode::Device,
        std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " + expr,
        oom ? "lower training.microBatchSize or set training.recompute='gelu-layernorm'"
            : "a device error can poison the CUDA context: restart the worker process before retrying",
        file, line);
}
#define CUDA_CHECK(x) ::cudabk::cuda_check_((x), #x, __FILE__, __LINE__)
// after every launch: catches bad configurations at once (asynchronous faults surface at the next sync)
#define LAUNCH_CHECK() ::cudabk::cuda_check_(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
#define REQUIRE(cond, msg)                                                                                   \
  do {                                                                                                       \
    if (!(cond)) ::cudabk::fail_(ErrorCode::BadShape, std::string(msg) + " (" #cond ")", "", __FILE__, __LINE__); \
  } while (0)

inline int ceil_div(size_t a, size_t b) { return (int)((a + b - 1) / b); }

// ----------------------------------------------------------------------------------------------------------
// the compute type: T = __nv_bfloat16 (training) or float (fp32 test mode)

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

template <typename T> constexpr cudaDataType_t cuda_dtype();
template <> constexpr cudaDataType_t cuda_dtype<float>() { return CUDA_R_32F; }
template <> constexpr cudaDataType_t cuda_dtype<bf16>() { return CUDA_R_16BF; }

// 16 bytes of T: 8 bf16 or 4 floats, loaded/stored with one vector instruction (needs 16-byte alignment)
template <typename T> struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
  __device__ __forceinline__ static Pack load(const T* p) { Pack r; *reinterpret_cast<int4*>(r.v) = *reinterpret_cast<const int4*>(p); return r; }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(v); }
  // streaming load for data read once (kept out of L1)
  __device__ __forceinline__ static Pack load_cs(const T* p) { Pack r; *reinterpret_cast<int4*>(r.v) = __ldcs(reinterpret_cast<const int4*>(p)); return r; }
};

// ----------------------------------------------------------------------------------------------------------
// reductions

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// sum over the block; every thread gets the result. `shared` holds at least 32 floats. Deterministic order.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nw ? shared[lane] : 0.f;
  return warp_sum(v);
}

// out[c] += sum over i < n of in[i * ld + c] (c < C): the second stage of every deterministic column reduction
// (bias and LayerNorm weight gradients). A block takes 32 columns; its 32 row lanes each sum the rows i = lane
// (mod 32) in order, then one fixed-order sum of the 32 lane sums: the same bits every run, and n/32 independent
// loads per thread instead of n dependent ones (a thread-per-column loop over 512 chunks took ~0.1 ms).
static __global__ void __launch_bounds__(1024) column_sum_kernel(float* out, const float* in, int n, size_t ld, int C) {
  __shared__ float sh[32][33];
  const int c = blockIdx.x * 32 + threadIdx.x, y = threadIdx.y;
  float s = 0.f;
  if (c < C) {
#pragma unroll 4
    for (int i = y; i < n; i += 32) s += in[(size_t)i * ld + c];
  }
  sh[y][threadIdx.x] = s;
  __syncthreads();
  if (y == 0 && c < C) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < 32; k++) t += sh[k][threadIdx.x];
    out[c] += t;
  }
}
inline void column_sum(float* out, const float* in, int n, size_t ld, int C, cudaStream_t stream) {
  column_sum_kernel<<<ceil_div(C, 32), dim3(32, 32), 0, stream>>>(out, in, n, ld, C);
  LAUNCH_CHECK();
}

// tanh-approximate GELU (GPT-2's gelu_new), the same function cuBLASLt's GELU epilogue computes
__device__ __forceinline__ float gelu_f(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  float u = k * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float k = 0.7978845608028654f;
  float x3 = x * x * x;
  float u = k * (x + 0.044715f * x3);
  float th = tanhf(u);
  float sech2 = 1.f - th * th;
  return 0.5f * (1.f + th) + 0.5f * x * sech2 * k * (1.f + 3.f * 0.044715f * x * x);
}

}  // namespace cudabk
