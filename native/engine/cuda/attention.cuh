// Causal self-attention, forward and backward, built from cuBLAS strided-batched products and fused causal
// softmax kernels (the structure of llm.c's attention_forward/backward). Scores S = q·k^T are fp32 scratch; the
// probabilities P (B,NH,T,T) are kept for the backward pass in T. This materialises T×T per head: it is the
// correct, simple path (and the only one in the fp32 test mode); a fused flash-attention kernel lives in
// native/lab/ until it beats this one.
//
// qkv (B,T,3,NH,HS) is the c_attn output; out (B,T,NH,HS) is the input of c_proj.
#pragma once
#include "cuda_common.cuh"
#include "matmul.cuh"

namespace cudabk {

// qkv (B,T,3,NH,HS) -> q,k,v (B,NH,T,HS)
template <typename T>
__global__ void permute_qkv_kernel(T* q, T* k, T* v, const T* qkv, int B, int T_, int NH, int HS) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)B * NH * T_ * HS) return;
  int d = idx % HS, t = (idx / HS) % T_, h = (idx / ((size_t)HS * T_)) % NH, b = idx / ((size_t)HS * T_ * NH);
  size_t src = (((size_t)b * T_ + t) * 3 * NH + h) * HS + d;
  q[idx] = qkv[src];
  k[idx] = qkv[src + (size_t)NH * HS];
  v[idx] = qkv[src + (size_t)2 * NH * HS];
}
// the reverse for the gradient: dq,dk,dv (B,NH,T,HS) -> dqkv (B,T,3,NH,HS)
template <typename T>
__global__ void unpermute_qkv_kernel(T* dqkv, const T* dq, const T* dk, const T* dv, int B, int T_, int NH, int HS) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)B * NH * T_ * HS) return;
  int d = idx % HS, t = (idx / HS) % T_, h = (idx / ((size_t)HS * T_)) % NH, b = idx / ((size_t)HS * T_ * NH);
  size_t dst = (((size_t)b * T_ + t) * 3 * NH + h) * HS + d;
  dqkv[dst] = dq[idx];
  dqkv[dst + (size_t)NH * HS] = dk[idx];
  dqkv[dst + (size_t)2 * NH * HS] = dv[idx];
}
// (B,NH,T,HS) <-> (B,T,NH,HS); forward=true goes to (B,T,NH,HS)
template <typename T>
__global__ void head_transpose_kernel(T* out, const T* in, int B, int T_, int NH, int HS, bool to_bthd) {
  size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)B * NH * T_ * HS) return;
  int d = idx % HS, t = (idx / HS) % T_, h = (idx / ((size_t)HS * T_)) % NH, b = idx / ((size_t)HS * T_ * NH);
  size_t bthd = (((size_t)b * T_ + t) * NH + h) * HS + d;
  if (to_bthd) out[bthd] = in[idx];
  else out[idx] = in[bthd];
}

// P = softmax(scale * S) over j <= i, 0 above the diagonal. One warp per row i; S fp32 (rows, T), P (rows, T).
template <typename T>
__global__ void softmax_causal_forward_kernel(T* P, const float* S, int rows, int T_, float scale) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  int i = row % T_;
  const float* s = S + (size_t)row * T_;
  T* p = P + (size_t)row * T_;
  float m = -INFINITY;
  for (int j = lane; j <= i; j += 32) m = fmaxf(m, s[j] * scale);
  m = warp_max(m);
  float sum = 0.f;
  for (int j = lane; j <= i; j += 32) sum += expf(s[j] * scale - m);
  float inv = 1.f / warp_sum(sum);
  for (int j = lane; j < T_; j += 32) p[j] = from_f<T>(j <= i ? expf(s[j] * scale - m) * inv : 0.f);
}

// dS = scale * P ⊙ (dP - rowsum(P ⊙ dP)) on j <= i, 0 above; dP fp32 (rows, T), dS (rows, T)
template <typename T>
__global__ void softmax_causal_backward_kernel(T* dS, const float* dP, const T* P, int rows, int T_, float scale) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  int i = row % T_;
  const float* dp = dP + (size_t)row * T_;
  const T* p = P + (size_t)row * T_;
  T* ds = dS + (size_t)row * T_;
  float dot = 0.f;
  for (int j = lane; j <= i; j += 32) dot += to_f(p[j]) * dp[j];
  dot = warp_sum(dot);
  for (int j = lane; j < T_; j += 32) ds[j] = from_f<T>(j <= i ? scale * to_f(p[j]) * (dp[j] - dot) : 0.f);
}

// ----------------------------------------------------------------------------------------------------------
// launchers. Scratch (caller-owned): qkvp (3 * B*NH*T*HS of T), S (B*NH*T*T fp32), dS (B*NH*T*T of T), vacc (B*T*C)

template <typename T>
struct AttnScratch {
  T* q; T* k; T* v;  // (B,NH,T,HS) each
  float* S;          // (B,NH,T,T)  scores, then dP in the backward pass
  T* dS;             // (B,NH,T,T)
  T* vacc;           // (B,NH,T,HS)
};

// out (B,T,C), P (B,NH,T,T) saved
template <typename T>
void attention_forward(Blas& bl, T* out, T* P, const T* qkv, AttnScratch<T>& s, int B, int T_, int C, int NH,
                       cudaStream_t stream) {
  int HS = C / NH;
  size_t n = (size_t)B * T_ * C;
  permute_qkv_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(s.q, s.k, s.v, qkv, B, T_, NH, HS);
  LAUNCH_CHECK();
  long long sQ = (long long)T_ * HS, sS = (long long)T_ * T_;
  gemm_batched_rm_<T, float>(bl, false, true, T_, T_, HS, s.q, sQ, s.k, sQ, s.S, sS, B * NH, 1.f, 0.f, stream);
  int rows = B * NH * T_;
  softmax_causal_forward_kernel<T><<<ceil_div(rows, 8), 256, 0, stream>>>(P, s.S, rows, T_, 1.f / sqrtf((float)HS));
  LAUNCH_CHECK();
  gemm_batched_rm_<T, T>(bl, false, false, T_, HS, T_, P, sS, s.v, sQ, s.vacc, sQ, B * NH, 1.f, 0.f, stream);
  head_transpose_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(out, s.vacc, B, T_, NH, HS, true);
  LAUNCH_CHECK();
}

// dqkv (B,T,3C) written (not accumulated); dout (B,T,C); qkv and P from the forward pass
template <typename T>
void attention_backward(Blas& bl, T* dqkv, const T* dout, const T* qkv, const T* P, AttnScratch<T>& s, int B, int T_,
                        int C, int NH, cudaStream_t stream) {
  int HS = C / NH;
  size_t n = (size_t)B * T_ * C;
  long long sQ = (long long)T_ * HS, sS = (long long)T_ * T_;
  permute_qkv_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(s.q, s.k, s.v, qkv, B, T_, NH, HS);
  LAUNCH_CHECK();
  T* dvacc = s.vacc;
  head_transpose_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(dvacc, dout, B, T_, NH, HS, false);
  LAUNCH_CHECK();
  // dP = dvacc · v^T (fp32, into S); dv = P^T · dvacc. dq, dk, dv reuse q's... no: q, k still needed, so dv goes
  // to a slot we free first: dS is free until the softmax backward, but has T*T room, enough for T*HS.
  gemm_batched_rm_<T, float>(bl, false, true, T_, T_, HS, dvacc, sQ, s.v, sQ, s.S, sS, B * NH, 1.f, 0.f, stream);
  T* dv = s.v;  // v is no longer needed once dP is formed
  gemm_batched_rm_<T, T>(bl, true, false, T_, HS, T_, P, sS, dvacc, sQ, dv, sQ, B * NH, 1.f, 0.f, stream);
  int rows = B * NH * T_;
  softmax_causal_backward_kernel<T><<<ceil_div(rows, 8), 256, 0, stream>>>(s.dS, s.S, P, rows, T_, 1.f / sqrtf((float)HS));
  LAUNCH_CHECK();
  T* dq = dvacc;  // dvacc is dead now
  gemm_batched_rm_<T, T>(bl, false, false, T_, HS, T_, s.dS, sS, s.k, sQ, dq, sQ, B * NH, 1.f, 0.f, stream);
  T* dk = reinterpret_cast<T*>(s.S);  // S (fp32, T*T per head) is dead after the softmax backward
  gemm_batched_rm_<T, T>(bl, true, false, T_, HS, T_, s.dS, sS, s.q, sQ, dk, sQ, B * NH, 1.f, 0.f, stream);
  unpermute_qkv_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(dqkv, dq, dk, dv, B, T_, NH, HS);
  LAUNCH_CHECK();
}

// ----------------------------------------------------------------------------------------------------------
// inference with a KV cache (generation). n rows; row i is the token at position pos[i] of sequence slot[i].
// Cache of one layer: kc, vc (slots, M, C). qkv (n, 3C) of the rows; out (n, C). Every row's key and value are
// stored before any row attends, so rows of one slot (a prefill) see each other causally.

static __global__ void kv_cache_store_kernel(void* kc_, void* vc_, const void* qkv_, const int* slot, const int* pos, int n,
                                      int M, int C, int elem) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n * C) return;
  int c = idx % C, i = idx / C;
  size_t dst = ((size_t)slot[i] * M + pos[i]) * C + c;
  if (elem == 2) {
    const bf16* qkv = (const bf16*)qkv_;
    ((bf16*)kc_)[dst] = qkv[(size_t)i * 3 * C + C + c];
    ((bf16*)vc_)[dst] = qkv[(size_t)i * 3 * C + 2 * C + c];
  } else {
    const float* qkv = (const float*)qkv_;
    ((float*)kc_)[dst] = qkv[(size_t)i * 3 * C + C + c];
    ((float*)vc_)[dst] = qkv[(size_t)i * 3 * C + 2 * C + c];
  }
}

// one block per (row i, head h): scores over keys 0..pos[i] in shared memory, softmax, weighted sum of values
template <typename T>
__global__ void attention_decode_kernel(T* out, const T* qkv, const T* kc, const T* vc, const int* slot,
                                        const int* pos, int M, int NH, int HS) {
  extern __shared__ float sh[];  // M scores + 32 reduction slots
  float* red = sh + M;
  int i = blockIdx.x, h = blockIdx.y, C = NH * HS, n = pos[i] + 1;
  const T* q = qkv + (size_t)i * 3 * C + h * HS;
  const T* kb = kc + (size_t)slot[i] * M * C + h * HS;
  const T* vb = vc + (size_t)slot[i] * M * C + h * HS;
  float scale = 1.f / sqrtf((float)HS);
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const T* k = kb + (size_t)j * C;
    float s = 0.f;
    for (int d = 0; d < HS; d++) s += to_f(q[d]) * to_f(k[d]);
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
  sum = block_sum(sum, red);  // (its barriers also publish the exponentials in sh)
  float inv = 1.f / sum;
  for (int d = threadIdx.x; d < HS; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < n; j++) acc += sh[j] * to_f(vb[(size_t)j * C + d]);
    out[(size_t)i * C + h * HS + d] = from_f<T>(acc * inv);
  }
}

template <typename T>
void attention_decode(T* out, const T* qkv, T* kc, T* vc, const int* slot, const int* pos, int n, int M, int C, int NH,
                      cudaStream_t stream) {
  int HS = C / NH;
  kv_cache_store_kernel<<<ceil_div((size_t)n * C, 256), 256, 0, stream>>>(kc, vc, qkv, slot, pos, n, M, C, (int)sizeof(T) == 2 ? 2 : 4);
  LAUNCH_CHECK();
  size_t shmem = (M + 32) * sizeof(float);
  if (shmem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(attention_decode_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem));
  attention_decode_kernel<T><<<dim3(n, NH), 128, shmem, stream>>>(out, qkv, kc, vc, slot, pos, M, NH, HS);
  LAUNCH_CHECK();
}

}  // namespace cudabk
