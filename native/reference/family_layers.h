// family_layers.h — the layers Llama, GPT-NeoX and GPT-J add to GPT-2's (layers.h), fp32, forward and backward:
// nn.Linear in HF's (out, in) layout, RMSNorm, rotary position embeddings (half-split "rotate_half" of Llama and
// NeoX, interleaved "rotate_every_two" of GPT-J, partial, with linear/llama3 frequency scaling), causal attention
// with grouped-query heads, GELU (erf) and SwiGLU. Backward functions ACCUMULATE (+=) into gradient outputs; all
// reductions run in a fixed order so results are bitwise reproducible for a thread count.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>
#include "config.h"
#include "rope.h"  // Rope: the rotary tables (shared with the cuda backend)

namespace engine {

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
// att (B, NH, T, T) softmax probabilities kept for backward. Head h reads kv head h / (NH / KVH).
void gqa_attention_forward(float* out, float* att, const float* q, const float* k, const float* v, size_t B, size_t T,
                           size_t NH, size_t KVH, size_t HD);
// dq, dk, dv accumulate; datt scratch (B, NH, T, T).
void gqa_attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout, const float* q,
                            const float* k, const float* v, const float* att, size_t B, size_t T, size_t NH, size_t KVH,
                            size_t HD);

// GELU with erf (HF "gelu", GPT-NeoX).
void gelu_erf_forward(float* out, const float* inp, size_t N);
void gelu_erf_backward(float* dinp, const float* inp, const float* dout, size_t N);
// SwiGLU: out = silu(gate) * up.
void swiglu_forward(float* out, const float* gate, const float* up, size_t N);
void swiglu_backward(float* dgate, float* dup, const float* gate, const float* up, const float* dout, size_t N);

}  // namespace engine
