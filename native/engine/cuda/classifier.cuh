// Fused classifier: softmax cross-entropy over the vocabulary for each row of logits (R, V) with leading
// dimension ldv, plus (optionally) its gradient written IN PLACE over the logits, so no fp32 copy of the
// logits or of the probabilities is ever made. Labels equal to -100 are ignored (loss 0, gradient 0), as in
// PyTorch's cross_entropy; the loss is a mean over the non-ignored tokens of the whole optimizer step, whose
// count the host knows from the labels, so `dloss` = 1 / that count and no device-to-host read is needed.
#pragma once
#include "cuda_common.cuh"

namespace cudabk {

constexpr int IGNORE_INDEX = -100;

// One block per row (any T, any ldv); columns [V, ldv) of the logits are padding and are ignored. Pass 1: online max / sum-exp and the argmax; pass 2 (grad): dlogits = (p - onehot) * dloss.
// losses[row] = logsumexp - x[label] (0 when ignored); correct[row] = argmax == label.
template <typename T>
__global__ void __launch_bounds__(1024) fused_classifier_kernel(T* logits, float* losses, float* correct,
                                                               const int* labels, int V, int ldv, float dloss,
                                                               bool write_grad) {
  __shared__ float sh_m[32], sh_s[32];
  __shared__ int sh_i[32];
  int row = blockIdx.x;
  T* x = logits + (size_t)row * ldv;
  int label = labels[row];
  float m = -INFINITY, s = 0.f, best = -INFINITY;
  int besti = 0x7fffffff;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float v = to_f(x[j]);
    if (v > best) { best = v; besti = j; }
    if (v > m) { s = s * expf(m - v) + 1.f; m = v; }
    else s += expf(v - m);
  }
  // warp merge of (m, s) and (best, besti); ties go to the smaller index
  for (int o = 16; o > 0; o >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    float b2 = __shfl_xor_sync(0xffffffffu, best, o);
    int i2 = __shfl_xor_sync(0xffffffffu, besti, o);
    float nm = fmaxf(m, m2);
    s = (m == -INFINITY ? 0.f : s * expf(m - nm)) + (m2 == -INFINITY ? 0.f : s2 * expf(m2 - nm));
    m = nm;
    if (b2 > best || (b2 == best && i2 < besti)) { best = b2; besti = i2; }
  }
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  if (lane == 0) { sh_m[warp] = m; sh_s[warp] = s; sh_i[warp] = besti; }
  __syncthreads();
  if (threadIdx.x == 0) {
    float M = sh_m[0], S = sh_s[0];
    int bi = sh_i[0];
    float bv = bi < V ? to_f(x[bi]) : -INFINITY;
    for (int w = 1; w < nw; w++) {
      float nm = fmaxf(M, sh_m[w]);
      S = (M == -INFINITY ? 0.f : S * expf(M - nm)) + (sh_m[w] == -INFINITY ? 0.f : sh_s[w] * expf(sh_m[w] - nm));
      M = nm;
      int wi = sh_i[w];
      float wv = wi < V ? to_f(x[wi]) : -INFINITY;
      if (wv > bv || (wv == bv && wi < bi)) { bv = wv; bi = wi; }
    }
    sh_m[0] = M; sh_s[0] = S;
    bool valid = label != IGNORE_INDEX;
    if (losses) losses[row] = valid ? (logf(S) + M - to_f(x[label])) : 0.f;
    if (correct) correct[row] = (valid && bi == label) ? 1.f : 0.f;
  }
  __syncthreads();
  if (!write_grad) return;
  float M = sh_m[0], invS = 1.f / sh_s[0];
  bool valid = label != IGNORE_INDEX;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float g = valid ? (expf(to_f(x[j]) - M) * invS - (j == label ? 1.f : 0.f)) * dloss : 0.f;
    x[j] = from_f<T>(g);
  }
  // padding columns [V, ldv): zero, so products over the padded vocabulary (K = ldv) see no contribution
  for (int j = V + threadIdx.x; j < ldv; j += blockDim.x) x[j] = from_f<T>(0.f);
}

// The same for bf16 rows of up to 1024 * 8 * MAXP columns, in one read: each thread keeps its 16-byte packs of the
// row in registers, so the logits are read once (max, then sum of exponentials from registers) and the gradient
// is written from them, vectorised (the generic kernel above reads each row twice, 2 bytes per load). ldv must be a
// multiple of 8 (the backend pads the vocabulary to a multiple of 64).
template <int MAXP>
__global__ void __launch_bounds__(1024) fused_classifier_bf16_kernel(bf16* logits, float* losses, float* correct,
                                                                    const int* labels, int V, int ldv, float dloss,
                                                                    bool write_grad) {
  __shared__ float sh_f[32];
  __shared__ int sh_i[32];
  __shared__ float sh_bcast[2];
  const int row = blockIdx.x, np = ldv / 8, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  bf16* x = logits + (size_t)row * ldv;
  const int label = labels[row];
  Pack<bf16> p[MAXP];
  float best = -INFINITY;
  int besti = 0x7fffffff;
#pragma unroll
  for (int k = 0; k < MAXP; k++) {
    int pi = threadIdx.x + k * blockDim.x;
    if (pi >= np) continue;
    p[k] = Pack<bf16>::load_cs(x + (size_t)pi * 8);
#pragma unroll
    for (int e = 0; e < 8; e++) {
      float v = to_f(p[k].v[e]);
      if (pi * 8 + e < V && v > best) { best = v; besti = pi * 8 + e; }  // ascending j: first index wins ties
    }
  }
  // block argmax (ties to the smaller index); its value is the row max
  for (int o = 16; o > 0; o >>= 1) {
    float b2 = __shfl_xor_sync(0xffffffffu, best, o);
    int i2 = __shfl_xor_sync(0xffffffffu, besti, o);
    if (b2 > best || (b2 == best && i2 < besti)) { best = b2; besti = i2; }
  }
  if (lane == 0) { sh_f[warp] = best; sh_i[warp] = besti; }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? sh_f[lane] : -INFINITY;
    besti = lane < nw ? sh_i[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      float b2 = __shfl_xor_sync(0xffffffffu, best, o);
      int i2 = __shfl_xor_sync(0xffffffffu, besti, o);
      if (b2 > best || (b2 == best && i2 < besti)) { best = b2; besti = i2; }
    }
    if (lane == 0) { sh_bcast[0] = best; sh_i[0] = besti; }
  }
  __syncthreads();
  const float M = sh_bcast[0];
  const int bi = sh_i[0];
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < MAXP; k++) {
    int pi = threadIdx.x + k * blockDim.x;
    if (pi >= np) continue;
#pragma unroll
    for (int e = 0; e < 8; e++)
      if (pi * 8 + e < V) s += __expf(to_f(p[k].v[e]) - M);  // fast exp: arguments <= 0, bf16 outputs
  }
  s = block_sum(s, sh_f);  // every thread gets the same value
  const bool valid = label != IGNORE_INDEX;
  if (threadIdx.x == 0) {
    if (losses) losses[row] = valid ? (logf(s) + M - to_f(x[label])) : 0.f;
    if (correct) correct[row] = (valid && bi == label) ? 1.f : 0.f;
  }
  if (!write_grad) return;
  __syncthreads();  // x[label] is read above before any thread overwrites the row
  const float invS = 1.f / s;
#pragma unroll
  for (int k = 0; k < MAXP; k++) {
    int pi = threadIdx.x + k * blockDim.x;
    if (pi >= np) continue;
    Pack<bf16> q;
#pragma unroll
    for (int e = 0; e < 8; e++) {
      int j = pi * 8 + e;
      float g = (valid && j < V) ? (__expf(to_f(p[k].v[e]) - M) * invS - (j == label ? 1.f : 0.f)) * dloss : 0.f;
      q.v[e] = from_f<bf16>(g);  // padding columns [V, ldv) get 0
    }
    q.store(x + (size_t)pi * 8);
  }
}

// sum of n floats into *out (+=, fp64), one block, fixed order
static __global__ void sum_into_kernel(double* out, const float* in, int n) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += in[i];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int w = 0; w < (int)blockDim.x / 32; w++) t += sh[w];
    *out += t;
  }
}

template <typename T>
void fused_classifier(T* logits, float* losses, float* correct, const int* labels, int R, int V, int ldv, float dloss,
                      bool write_grad, cudaStream_t stream) {
  constexpr int MAXP = 7;  // 57344 columns (GPT-2: 50304); 8 spills at 1024 threads (64 registers)
  if constexpr (sizeof(T) == 2) {
    if (ldv % 8 == 0 && ldv <= 1024 * 8 * MAXP && ((uintptr_t)logits % 16) == 0) {
      fused_classifier_bf16_kernel<MAXP><<<R, 1024, 0, stream>>>(logits, losses, correct, labels, V, ldv, dloss, write_grad);
      LAUNCH_CHECK();
      return;
    }
  }
  fused_classifier_kernel<T><<<R, 1024, 0, stream>>>(logits, losses, correct, labels, V, ldv, dloss, write_grad);
  LAUNCH_CHECK();
}
inline void sum_into(double* out, const float* in, int n, cudaStream_t stream) {
  sum_into_kernel<<<1, 1024, 0, stream>>>(out, in, n);
  LAUNCH_CHECK();
}

}  // namespace cudabk
