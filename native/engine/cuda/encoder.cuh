// Token (+ learned position) embedding: out(B,T,C) = wte[tokens] + wpe[t]; families with rotary positions pass
// wpe = nullptr (out = wte[tokens]) and get no wpe gradient. The backward pass is deterministic: wpe's
// gradient sums over the batch in order; wte's gradient walks "buckets" built on the host (every distinct token
// with the flat positions where it occurs, in order), one block per token, so no two threads add into the same
// row and no atomics are needed.
#pragma once
#include <algorithm>
#include <vector>
#include "cuda_common.cuh"

namespace cudabk {

template <typename T>
__global__ void encoder_forward_kernel(T* out, const int* tokens, const T* wte, const T* wpe, int BT, int T_, int C) {
  constexpr int V = Pack<T>::N;
  size_t idx = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
  if (idx >= (size_t)BT * C) return;
  int bt = (int)(idx / C), c = (int)(idx % C), t = bt % T_;
  Pack<T> a = Pack<T>::load(wte + (size_t)tokens[bt] * C + c);
  if (!wpe) return a.store(out + idx);
  Pack<T> p = Pack<T>::load(wpe + (size_t)t * C + c), o;
#pragma unroll
  for (int k = 0; k < V; k++) o.v[k] = from_f<T>(to_f(a.v[k]) + to_f(p.v[k]));
  o.store(out + idx);
}

// rows at arbitrary positions (generation): out(n,C) = wte[tokens[i]] (+ wpe[pos[i]])
template <typename T>
__global__ void encoder_rows_kernel(T* out, const int* tokens, const int* pos, const T* wte, const T* wpe, int n, int C) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n * C) return;
  int i = idx / C, c = idx % C;
  float x = to_f(wte[(size_t)tokens[i] * C + c]);
  out[idx] = from_f<T>(wpe ? x + to_f(wpe[(size_t)pos[i] * C + c]) : x);
}

// dwpe(T,C) += sum_b dout(b,t,:)
template <typename T>
__global__ void encoder_backward_wpe_kernel(float* dwpe, const T* dout, int B, int T_, int C) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= T_ * C) return;
  float s = 0.f;
  for (int b = 0; b < B; b++) s += to_f(dout[(size_t)b * T_ * C + i]);
  dwpe[i] += s;
}

// one block (x) per distinct token; threads over channels. bucket_tok (U), bucket_off (U+1), bucket_pos (BT)
template <typename T>
__global__ void encoder_backward_wte_kernel(float* dwte, const T* dout, const int* bucket_tok, const int* bucket_off,
                                            const int* bucket_pos, int C) {
  int u = blockIdx.x;
  int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  int tok = bucket_tok[u];
  float s = 0.f;
  for (int j = bucket_off[u]; j < bucket_off[u + 1]; j++) s += to_f(dout[(size_t)bucket_pos[j] * C + c]);
  dwte[(size_t)tok * C + c] += s;
}

// Host side: bucket the BT tokens by id with a counting sort (positions stay in order; O(BT + V), so the host
// work between two micro-batches stays far below the GPU's). Writes into `buf`, laid out as
// [U tokens | U+1 offsets | BT positions]; returns U. `buf` needs 3*BT+1 ints (U <= BT); tokens in [0, V).
inline int encoder_build_buckets(int* buf, const int* tokens, int BT, int V) {
  thread_local std::vector<int> count;
  count.assign(V + 1, 0);
  for (int i = 0; i < BT; i++) count[tokens[i] + 1]++;
  int U = 0;
  for (int v = 0; v < V; v++) U += count[v + 1] > 0;
  int* tok = buf; int* off = buf + U; int* pos = buf + 2 * U + 1;
  int u = 0;
  for (int v = 0; v < V; v++) {  // prefix sums -> start of each token's run; list the distinct tokens
    if (count[v + 1] > 0) { tok[u] = v; off[u] = count[v]; u++; }
    count[v + 1] += count[v];
  }
  off[U] = BT;
  for (int i = 0; i < BT; i++) pos[count[tokens[i]]++] = i;  // stable: positions of a token in order
  return U;
}

template <typename T>
void encoder_forward(T* out, const int* tokens, const T* wte, const T* wpe, int B, int T_, int C, cudaStream_t stream) {
  REQUIRE(C % Pack<T>::N == 0, "encoder: C must be a multiple of 8");
  size_t n = (size_t)B * T_ * C / Pack<T>::N;
  encoder_forward_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(out, tokens, wte, wpe, B * T_, T_, C);
  LAUNCH_CHECK();
}
template <typename T>
void encoder_rows(T* out, const int* tokens, const int* pos, const T* wte, const T* wpe, int n, int C, cudaStream_t stream) {
  encoder_rows_kernel<T><<<ceil_div((size_t)n * C, 256), 256, 0, stream>>>(out, tokens, pos, wte, wpe, n, C);
  LAUNCH_CHECK();
}
// d_buckets: device copy of the host buckets (same layout), U distinct tokens; dwpe = nullptr: no position table
template <typename T>
void encoder_backward(float* dwte, float* dwpe, const T* dout, const int* d_buckets, int U, int B, int T_, int C,
                      cudaStream_t stream) {
  if (dwpe) {
    encoder_backward_wpe_kernel<T><<<ceil_div((size_t)T_ * C, 256), 256, 0, stream>>>(dwpe, dout, B, T_, C);
    LAUNCH_CHECK();
  }
  dim3 grid(U, ceil_div(C, 256));
  encoder_backward_wte_kernel<T><<<grid, 256, 0, stream>>>(dwte, dout, d_buckets, d_buckets + U, d_buckets + 2 * U + 1, C);
  LAUNCH_CHECK();
}

}  // namespace cudabk
