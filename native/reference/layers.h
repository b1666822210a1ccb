// layers.h — the layers of every model family on the CPU in fp32, forward and backward, one function pair per
// layer, after karpathy/llm.c train_gpt2.c: GPT-2's (Conv1D (in, out) products, LayerNorm, GELU tanh, attention
// over [q | k | v] rows with dropout), then what Llama, GPT-NeoX and GPT-J add (nn.Linear (out, in) products,
// RMSNorm, rotary position embeddings, grouped-query attention, GELU erf, SwiGLU). The cross-entropy skips targets
// equal to -100, and every reduction runs in a fixed order (no atomics, no OpenMP float reductions) so results are
// bitwise reproducible for a given thread count. Backward functions ACCUMULATE (+=) into their gradient outputs.
#pragma once
#include <cstddef>
#include <cstdint>
#include "rope.h"  // Rope: the rotary tables (shared with the cuda backend)

namespace engine {

// out (N, C) = wte[inp] (+ wpe[pos] when wpe is given; pos[n] = n % T when pos is null, else the packed row's
// Batch::positions); the backward skips dwpe when it is null.
void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, size_t B, size_t T, size_t C,
                     const int32_t* pos = nullptr);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, size_t B, size_t T, size_t C,
                      const int32_t* pos = nullptr);

// out (N, C) = (x - mean) * rstd * w + b; mean, rstd (N) kept for backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       size_t N, size_t C, float eps);
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, size_t N, size_t C);

// Conv1D: out (N, OC) = inp (N, C) @ w (C, OC) + bias (OC) (bias may be null).
void matmul_forward(float* out, const float* inp, const float* w, const float* bias, size_t N, size_t C, size_t OC);
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     size_t N, size_t C, size_t OC);

// Dropout masks without storage: element i of stream s is kept when a hash of (seed, s, i) is >= p, and kept
// values are scaled by 1 / (1 - p) (inverted dropout, as torch.nn.Dropout). p == 0 is the identity.
struct Dropout {
  float p = 0;
  uint64_t seed = 0;
  bool active() const { return p > 0; }
};
float dropout_scale(const Dropout& d, uint64_t stream, uint64_t i);  // 0 or 1 / (1 - p)
// x (N) *= mask: the forward in place, and equally the backward of the gradient in place.
void dropout_apply(float* x, size_t N, const Dropout& d, uint64_t stream);

// Causal self-attention over qkv (B, T, 3C) = [q | k | v]; out (B, T, C); preatt, att (B, NH, T, T) (att before
// dropout). With drop active, the probabilities are dropped out (stream `stream`) before weighting v, as HF's
// attn_dropout; the backward recomputes the mask. pos (B, T, may be null): packed rows, query t sees keys
// t - pos[t] .. t only (see Batch::positions).
void attention_forward(float* out, float* preatt, float* att, const float* qkv, size_t B, size_t T, size_t C,
                       size_t NH, const Dropout& drop = Dropout(), uint64_t stream = 0, const int32_t* pos = nullptr);
void attention_backward(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
                        const float* att, size_t B, size_t T, size_t C, size_t NH, const Dropout& drop = Dropout(),
                        uint64_t stream = 0, const int32_t* pos = nullptr);

// First key that query t of row b attends to: 0, or the start of its own example in a packed row.
inline size_t attention_start(const int32_t* pos, size_t b, size_t T, size_t t) {
  return pos ? t - (size_t)pos[b * T + t] : 0;
}

// GELU, tanh approximation (HF "gelu_new").
void gelu_forward(float* out, const float* inp, size_t N);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N);

void residual_forward(float* out, const float* a, const float* b, size_t N);
void residual_backward(float* da, float* db, const float* dout, size_t N);

// Cross-entropy of logits (N, V) against targets (N), skipping targets == -100. losses (N) gets -log p(target)
// (0 where ignored); returns the sum, and counts the targets and the argmax hits. shift (N, may be null) gets
// max + log(sum(exp(l - max))) per row for the backward.
double crossentropy_forward(float* losses, float* shift, const float* logits, const int32_t* targets, size_t N,
                            size_t V, size_t* n_targets, size_t* n_correct);
// Overwrites logits with dlogits = dloss * (softmax(logits) - onehot(target)) using the forward's shift; rows with
// target -100 get 0.
void crossentropy_softmax_backward_inplace(float* logits, const float* shift, const int32_t* targets, size_t N,
                                           size_t V, float dloss);

// ---- the layers the other families add

// out (N, OC) = inp (N, C) @ w (OC, C)^T + bias (OC, may be null).
void linear_forward(float* out, const float* inp, const float* w, const float* bias, size_t N, size_t C, size_t OC);
// dinp (N, C) += dout @ w; dw (OC, C) += dout^T @ inp; dbias (OC) += column sums (dinp/dbias may be null).
void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     size_t N, size_t C, size_t OC);

// RMSNorm (Llama): out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); rstd (N) kept for backward.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, size_t N, size_t C, float eps);
void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w, const float* rstd,
                      size_t N, size_t C);

// x (N, H, HD): rotate the first rot dims of every head of row n by position pos[n]. inverse = true applies the
// transpose (the backward of the forward rotation).
void rope_apply(float* x, const size_t* pos, size_t N, size_t H, size_t HD, const Rope& r, bool inverse);

// Causal attention with grouped-query heads: q (B, T, NH, HD), k/v (B, T, KVH, HD), out (B, T, NH, HD),
// att (B, NH, T, T) softmax probabilities kept for backward. Head h reads kv head h / (NH / KVH). pos (B, T, may be
// null): packed rows, as for attention_forward.
void gqa_attention_forward(float* out, float* att, const float* q, const float* k, const float* v, size_t B, size_t T,
                           size_t NH, size_t KVH, size_t HD, const int32_t* pos = nullptr);
// dq, dk, dv accumulate; datt scratch (B, NH, T, T).
void gqa_attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout, const float* q,
                            const float* k, const float* v, const float* att, size_t B, size_t T, size_t NH, size_t KVH,
                            size_t HD, const int32_t* pos = nullptr);

// GELU with erf (HF "gelu", GPT-NeoX).
void gelu_erf_forward(float* out, const float* inp, size_t N);
void gelu_erf_backward(float* dinp, const float* inp, const float* dout, size_t N);
// SwiGLU: out = silu(gate) * up.
void swiglu_forward(float* out, const float* gate, const float* up, size_t N);
void swiglu_backward(float* dgate, float* dup, const float* gate, const float* up, const float* dout, size_t N);

}  // namespace engine
