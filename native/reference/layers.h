// layers.h — GPT-2's layers on the CPU in fp32, forward and backward, one function pair per layer, after
// karpathy/llm.c train_gpt2.c. Differences from llm.c: weights use Hugging Face's Conv1D layout (in, out), the
// cross-entropy skips targets equal to -100, and every reduction runs in a fixed order (no atomics, no OpenMP
// float reductions) so results are bitwise reproducible for a given thread count. Backward functions ACCUMULATE
// (+=) into their gradient outputs.
#pragma once
#include <cstddef>
#include <cstdint>

namespace engine {

// out (N, C) = wte[inp] + wpe[pos]; pos[n] = n % T when pos == nullptr (packed rows: Batch::positions).
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

// Tied LM head: logits (N, V) = x (N, C) @ wte (V, C)^T.
void lm_head_forward(float* logits, const float* x, const float* wte, size_t N, size_t C, size_t V);
void lm_head_backward(float* dx, float* dwte, const float* dlogits, const float* x, const float* wte, size_t N,
                      size_t C, size_t V);

// Cross-entropy of logits (N, V) against targets (N), skipping targets == -100. losses (N) gets -log p(target)
// (0 where ignored); returns the sum, and counts the targets and the argmax hits. shift (N, may be null) gets
// max + log(sum(exp(l - max))) per row for the backward.
double crossentropy_forward(float* losses, float* shift, const float* logits, const int32_t* targets, size_t N,
                            size_t V, size_t* n_targets, size_t* n_correct);
// Overwrites logits with dlogits = dloss * (softmax(logits) - onehot(target)) using the forward's shift; rows with
// target -100 get 0.
void crossentropy_softmax_backward_inplace(float* logits, const float* shift, const int32_t* targets, size_t N,
                                           size_t V, float dloss);

}  // namespace engine
