// cpu_backend.cpp — the `cpu` backend: GPT-2 in fp32 on the host, the readable reference the CUDA backend is
// checked against (after karpathy/llm.c train_gpt2.c: one struct of activations, forward then backward layer by
// layer). Parameters live in one flat buffer in params.h's HF layout, so get/set are plain copies.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <unistd.h>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu_state.h"  // CpuStateBackend: option checks, threads, fp32 params/grads/AdamW state
#include "layers.h"

namespace engine {
namespace {

// Per-layer activations for one (B, T), all fp32. Shapes with L leading are per layer.
struct Activations {
  size_t B = 0, T = 0;
  std::vector<float> encoded;               // (B, T, C)
  std::vector<float> ln1, ln1_mean, ln1_rstd;  // (L, B, T, C), (L, B, T), (L, B, T)
  std::vector<float> qkv;                   // (L, B, T, 3C)
  std::vector<float> atty;                  // (L, B, T, C)
  std::vector<float> preatt, att;           // (L, B, NH, T, T)
  std::vector<float> attproj;               // (L, B, T, C)
  std::vector<float> residual2;             // (L, B, T, C)
  std::vector<float> ln2, ln2_mean, ln2_rstd;
  std::vector<float> fch, fch_gelu;         // (L, B, T, 4C)
  std::vector<float> fcproj;                // (L, B, T, C)
  std::vector<float> residual3;             // (L, B, T, C)
  std::vector<float> lnf, lnf_mean, lnf_rstd;  // (B, T, C), (B, T), (B, T)
  std::vector<float> logits;                // (B, T, V): logits after forward, dlogits after backward
  std::vector<float> losses;                // (B, T)
  std::vector<float> lse;                   // (B, T) softmax shift (max + log-sum-exp) kept for the backward

  size_t bytes() const {
    size_t n = 0;
    for (auto* v : {&encoded, &ln1, &ln1_mean, &ln1_rstd, &qkv, &atty, &preatt, &att, &attproj, &residual2, &ln2,
                    &ln2_mean, &ln2_rstd, &fch, &fch_gelu, &fcproj, &residual3, &lnf, &lnf_mean, &lnf_rstd, &logits,
                    &losses, &lse})
      n += v->capacity() * sizeof(float);
    return n;
  }

  void resize(size_t L, size_t B_, size_t T_, size_t C, size_t NH, size_t V, bool with_logits) {
    B = B_; T = T_;
    const size_t N = B * T;
    encoded.assign(N * C, 0);
    for (auto* v : {&ln1, &atty, &attproj, &residual2, &ln2, &fcproj, &residual3}) v->assign(L * N * C, 0);
    for (auto* v : {&ln1_mean, &ln1_rstd, &ln2_mean, &ln2_rstd}) v->assign(L * N, 0);
    qkv.assign(L * N * 3 * C, 0);
    preatt.assign(L * B * NH * T * T, 0);
    att.assign(L * B * NH * T * T, 0);
    fch.assign(L * N * 4 * C, 0);
    fch_gelu.assign(L * N * 4 * C, 0);
    lnf.assign(N * C, 0);
    lnf_mean.assign(N, 0);
    lnf_rstd.assign(N, 0);
    if (with_logits) logits.assign(N * V, 0);
    losses.assign(N, 0);
    lse.assign(N, 0);
  }
  void zero() {
    for (auto* v : {&encoded, &ln1, &ln1_mean, &ln1_rstd, &qkv, &atty, &preatt, &att, &attproj, &residual2, &ln2,
                    &ln2_mean, &ln2_rstd, &fch, &fch_gelu, &fcproj, &residual3, &lnf, &lnf_mean, &lnf_rstd, &losses})
      std::fill(v->begin(), v->end(), 0.0f);
  }
};


class CpuBackend final : public CpuStateBackend {
 public:
  CpuBackend(const ModelConfig& cfg, const BackendOptions& opts) : CpuStateBackend(cfg, opts) {
    layout_ = gpt2_param_layout(cfg_);
    alloc_state_();
  }

  double forward_backward(const Batch& batch, float dloss) override {
    set_threads_();
    forward_(batch, train_dropout_(batch));
    size_t nt = 0, nc = 0;
    const size_t N = batch.B * batch.T;
    double loss = crossentropy_forward(acts_.losses.data(), acts_.lse.data(), acts_.logits.data(), batch.targets, N,
                                       cfg_.vocab_size, &nt, &nc);
    backward_(batch, dloss, train_dropout_(batch));
    return loss;
  }

  EvalStats forward_eval(const Batch& batch) override {
    set_threads_();
    forward_(batch);
    EvalStats s;
    s.loss_sum = crossentropy_forward(acts_.losses.data(), nullptr, acts_.logits.data(), batch.targets,
                                      batch.B * batch.T, cfg_.vocab_size, &s.n_targets, &s.n_correct);
    return s;
  }

  void forward_logits(const Batch& batch, float* logits) override {
    set_threads_();
    forward_(batch);
    std::memcpy(logits, acts_.logits.data(), batch.B * batch.T * cfg_.vocab_size * sizeof(float));
  }


  MemoryReport memory() const override {
    MemoryReport r = state_memory_();
    r.activations_bytes = acts_.bytes() + grad_acts_.bytes();
    r.other_bytes = (kv_.k.capacity() + kv_.v.capacity()) * sizeof(float);
    return r;
  }

 private:
  const float* p_(size_t idx) const { return params_.data() + layout_.tensors[idx].offset; }
  float* g_(size_t idx) { return grads_.data() + layout_.tensors[idx].offset; }

  void check_batch_(const Batch& b) const {
    ENGINE_CHECK(b.B >= 1 && b.T >= 1 && b.T <= cfg_.n_positions, BadShape, "blockSize must be <= model.nPositions",
                 "batch (B=%zu, T=%zu) with nPositions %zu", b.B, b.T, cfg_.n_positions);
    const size_t N = b.B * b.T;
    for (size_t i = 0; i < N; i++) {
      int32_t x = b.inputs[i];
      ENGINE_CHECK(x >= 0 && (size_t)x < cfg_.vocab_size, BadShape,
                   "the shards were tokenized with a larger vocabulary than model.vocabSize",
                   "input token %d at position %zu is outside [0, %zu)", x, i, cfg_.vocab_size);
      int32_t y = b.targets[i];
      ENGINE_CHECK(y == IGNORE_INDEX || (y >= 0 && (size_t)y < cfg_.vocab_size), BadShape,
                   "labels must be token ids or -100", "target %d at position %zu is outside [0, %zu)", y, i,
                   cfg_.vocab_size);
    }
  }

  void ensure_acts_(size_t B, size_t T, bool grads) {
    const size_t L = cfg_.n_layer, C = cfg_.n_embd, NH = cfg_.n_head, V = cfg_.vocab_size;
    if (acts_.B != B || acts_.T != T || (grads && (grad_acts_.B != B || grad_acts_.T != T))) {
      // Linux overcommits, so an allocation larger than RAM "succeeds" and the process is killed later: check the
      // estimate against physical memory first and fail with a coded error instead.
      const size_t N = B * T;
      const size_t per = (L * N * (C * 16 + 4) + 2 * L * B * NH * T * T + N * (C + 8)) * sizeof(float);
      const size_t need = per * (grads ? 2 : 1) + N * V * sizeof(float);
      const size_t phys = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
      ENGINE_CHECK(need < phys, OutOfMemory, "lower training.microBatchSize (or evaluation.batchSize) or the block size",
                   "activations for B=%zu T=%zu need ~%.1f GiB, the machine has %.1f GiB", B, T,
                   need / 1073741824.0, phys / 1073741824.0);
    }
    try {
      if (acts_.B != B || acts_.T != T) acts_.resize(L, B, T, C, NH, V, true);
      if (grads && (grad_acts_.B != B || grad_acts_.T != T)) grad_acts_.resize(L, B, T, C, NH, V, false);
    } catch (const std::bad_alloc&) {
      ENGINE_THROW(OutOfMemory, "lower training.microBatchSize or the block size",
                   "cannot allocate activations for B=%zu T=%zu (L=%zu C=%zu V=%zu)", B, T, L, C, V);
    }
  }

  // Dropout streams: per layer, attention probabilities / attention output / MLP output; then the embeddings.
  Dropout train_dropout_(const Batch& b) const { return Dropout{cfg_.dropout, b.dropout_seed}; }
  static uint64_t stream_(size_t layer, int which) { return layer * 4 + (uint64_t)which; }

  // Forward through the LM head: acts_.logits (B, T, V). `drop` is inactive for evaluation and logits.
  void forward_(const Batch& batch, const Dropout& drop = Dropout()) {
    check_batch_(batch);
    const size_t B = batch.B, T = batch.T, C = cfg_.n_embd, NH = cfg_.n_head, V = cfg_.vocab_size, L = cfg_.n_layer;
    const size_t N = B * T;
    ensure_acts_(B, T, false);
    Activations& a = acts_;
    encoder_forward(a.encoded.data(), batch.inputs, p_(wte_index()), p_(wpe_index()), B, T, C, batch.positions);
    dropout_apply(a.encoded.data(), N * C, drop, stream_(L, 3));
    for (size_t l = 0; l < L; l++) {
      const float* residual = l == 0 ? a.encoded.data() : a.residual3.data() + (l - 1) * N * C;
      float* ln1 = a.ln1.data() + l * N * C;
      float* qkv = a.qkv.data() + l * N * 3 * C;
      float* atty = a.atty.data() + l * N * C;
      float* preatt = a.preatt.data() + l * B * NH * T * T;
      float* att = a.att.data() + l * B * NH * T * T;
      float* attproj = a.attproj.data() + l * N * C;
      float* res2 = a.residual2.data() + l * N * C;
      float* ln2 = a.ln2.data() + l * N * C;
      float* fch = a.fch.data() + l * N * 4 * C;
      float* fchg = a.fch_gelu.data() + l * N * 4 * C;
      float* fcproj = a.fcproj.data() + l * N * C;
      float* res3 = a.residual3.data() + l * N * C;
      layernorm_forward(ln1, a.ln1_mean.data() + l * N, a.ln1_rstd.data() + l * N, residual, p_(block_index(l, LN1_W)),
                        p_(block_index(l, LN1_B)), N, C, cfg_.layer_norm_eps);
      matmul_forward(qkv, ln1, p_(block_index(l, ATTN_W)), p_(block_index(l, ATTN_B)), N, C, 3 * C);
      attention_forward(atty, preatt, att, qkv, B, T, C, NH, drop, stream_(l, 0), batch.positions);
      matmul_forward(attproj, atty, p_(block_index(l, ATTNPROJ_W)), p_(block_index(l, ATTNPROJ_B)), N, C, C);
      dropout_apply(attproj, N * C, drop, stream_(l, 1));  // HF resid_dropout, before the residual add
      residual_forward(res2, residual, attproj, N * C);
      layernorm_forward(ln2, a.ln2_mean.data() + l * N, a.ln2_rstd.data() + l * N, res2, p_(block_index(l, LN2_W)),
                        p_(block_index(l, LN2_B)), N, C, cfg_.layer_norm_eps);
      matmul_forward(fch, ln2, p_(block_index(l, FC_W)), p_(block_index(l, FC_B)), N, C, 4 * C);
      gelu_forward(fchg, fch, N * 4 * C);
      matmul_forward(fcproj, fchg, p_(block_index(l, FCPROJ_W)), p_(block_index(l, FCPROJ_B)), N, 4 * C, C);
      dropout_apply(fcproj, N * C, drop, stream_(l, 2));
      residual_forward(res3, res2, fcproj, N * C);
    }
    const float* last = a.residual3.data() + (L - 1) * N * C;
    layernorm_forward(a.lnf.data(), a.lnf_mean.data(), a.lnf_rstd.data(), last, p_(lnf_w_index(L)),
                      p_(lnf_b_index(L)), N, C, cfg_.layer_norm_eps);
    lm_head_forward(a.logits.data(), a.lnf.data(), p_(wte_index()), N, C, V);
  }

  // Backward from the cross-entropy (after forward_ on the same batch); accumulates into grads_.
  void backward_(const Batch& batch, float dloss, const Dropout& drop) {
    const size_t B = batch.B, T = batch.T, C = cfg_.n_embd, NH = cfg_.n_head, V = cfg_.vocab_size, L = cfg_.n_layer;
    const size_t N = B * T;
    ensure_acts_(B, T, true);
    Activations& a = acts_;
    Activations& d = grad_acts_;
    d.zero();
    crossentropy_softmax_backward_inplace(a.logits.data(), a.lse.data(), batch.targets, N, V, dloss);
    lm_head_backward(d.lnf.data(), g_(wte_index()), a.logits.data(), a.lnf.data(), p_(wte_index()), N, C, V);
    float* dlast = d.residual3.data() + (L - 1) * N * C;
    layernorm_backward(dlast, g_(lnf_w_index(L)), g_(lnf_b_index(L)), d.lnf.data(),
                       a.residual3.data() + (L - 1) * N * C, p_(lnf_w_index(L)), a.lnf_mean.data(), a.lnf_rstd.data(),
                       N, C);
    for (size_t li = L; li-- > 0;) {
      const size_t l = li;
      const float* residual = l == 0 ? a.encoded.data() : a.residual3.data() + (l - 1) * N * C;
      float* dresidual = l == 0 ? d.encoded.data() : d.residual3.data() + (l - 1) * N * C;
      float* dres3 = d.residual3.data() + l * N * C;
      // res3 = res2 + fcproj
      float* dres2 = d.residual2.data() + l * N * C;
      float* dfcproj = d.fcproj.data() + l * N * C;
      residual_backward(dres2, dfcproj, dres3, N * C);
      dropout_apply(dfcproj, N * C, drop, stream_(l, 2));  // the same mask scales the gradient
      float* dfchg = d.fch_gelu.data() + l * N * 4 * C;
      matmul_backward(dfchg, g_(block_index(l, FCPROJ_W)), g_(block_index(l, FCPROJ_B)), dfcproj,
                      a.fch_gelu.data() + l * N * 4 * C, p_(block_index(l, FCPROJ_W)), N, 4 * C, C);
      float* dfch = d.fch.data() + l * N * 4 * C;
      gelu_backward(dfch, a.fch.data() + l * N * 4 * C, dfchg, N * 4 * C);
      float* dln2 = d.ln2.data() + l * N * C;
      matmul_backward(dln2, g_(block_index(l, FC_W)), g_(block_index(l, FC_B)), dfch, a.ln2.data() + l * N * C,
                      p_(block_index(l, FC_W)), N, C, 4 * C);
      layernorm_backward(dres2, g_(block_index(l, LN2_W)), g_(block_index(l, LN2_B)), dln2,
                         a.residual2.data() + l * N * C, p_(block_index(l, LN2_W)), a.ln2_mean.data() + l * N,
                         a.ln2_rstd.data() + l * N, N, C);
      // res2 = residual + attproj
      float* dattproj = d.attproj.data() + l * N * C;
      residual_backward(dresidual, dattproj, dres2, N * C);
      dropout_apply(dattproj, N * C, drop, stream_(l, 1));
      float* datty = d.atty.data() + l * N * C;
      matmul_backward(datty, g_(block_index(l, ATTNPROJ_W)), g_(block_index(l, ATTNPROJ_B)), dattproj,
                      a.atty.data() + l * N * C, p_(block_index(l, ATTNPROJ_W)), N, C, C);
      float* dqkv = d.qkv.data() + l * N * 3 * C;
      attention_backward(dqkv, d.preatt.data() + l * B * NH * T * T, d.att.data() + l * B * NH * T * T, datty,
                         a.qkv.data() + l * N * 3 * C, a.att.data() + l * B * NH * T * T, B, T, C, NH, drop,
                         stream_(l, 0), batch.positions);
      float* dln1 = d.ln1.data() + l * N * C;
      matmul_backward(dln1, g_(block_index(l, ATTN_W)), g_(block_index(l, ATTN_B)), dqkv, a.ln1.data() + l * N * C,
                      p_(block_index(l, ATTN_W)), N, C, 3 * C);
      layernorm_backward(dresidual, g_(block_index(l, LN1_W)), g_(block_index(l, LN1_B)), dln1, residual,
                         p_(block_index(l, LN1_W)), a.ln1_mean.data() + l * N, a.ln1_rstd.data() + l * N, N, C);
    }
    dropout_apply(d.encoded.data(), N * C, drop, stream_(L, 3));
    encoder_backward(g_(wte_index()), g_(wpe_index()), d.encoded.data(), batch.inputs, B, T, C, batch.positions);
  }

  void kv_rows_(const size_t* slots, const size_t* pos, const int32_t* tokens, size_t n, size_t logits_from,
                float* logits) override {
    set_threads_();
    const size_t C = cfg_.n_embd, NH = cfg_.n_head, hs = C / NH, V = cfg_.vocab_size, L = cfg_.n_layer;
    const size_t S = kv_.slots, M = kv_.max_len;
    for (size_t i = 0; i < n; i++) {
      ENGINE_CHECK(pos[i] < M, BadShape, "", "KV cache full: position %zu of %zu", pos[i], M);
      ENGINE_CHECK(tokens[i] >= 0 && (size_t)tokens[i] < V, BadShape, "prompt token ids must be < model.vocabSize",
                   "token %d outside [0, %zu)", tokens[i], V);
    }
    std::vector<float> x(n * C), h(n * C), qkv(n * 3 * C), y(n * C), tmp(n * C), fc(n * 4 * C), fcg(n * 4 * C);
    std::vector<float> mean(n), rstd(n);
    for (size_t i = 0; i < n; i++)
      for (size_t c = 0; c < C; c++) x[i * C + c] = p_(wte_index())[(size_t)tokens[i] * C + c] + p_(wpe_index())[pos[i] * C + c];
    const float scale = 1.0f / std::sqrt((float)hs);
    for (size_t l = 0; l < L; l++) {
      layernorm_forward(h.data(), mean.data(), rstd.data(), x.data(), p_(block_index(l, LN1_W)),
                        p_(block_index(l, LN1_B)), n, C, cfg_.layer_norm_eps);
      matmul_forward(qkv.data(), h.data(), p_(block_index(l, ATTN_W)), p_(block_index(l, ATTN_B)), n, C, 3 * C);
      float* K = kv_.k.data() + l * S * M * C;
      float* Vc = kv_.v.data() + l * S * M * C;
      for (size_t i = 0; i < n; i++) {
        std::memcpy(K + (slots[i] * M + pos[i]) * C, qkv.data() + i * 3 * C + C, C * sizeof(float));
        std::memcpy(Vc + (slots[i] * M + pos[i]) * C, qkv.data() + i * 3 * C + 2 * C, C * sizeof(float));
      }
#pragma omp parallel for collapse(2) schedule(static)
      for (long i = 0; i < (long)n; i++)
        for (long hh = 0; hh < (long)NH; hh++) {
          const float* q = qkv.data() + (size_t)i * 3 * C + (size_t)hh * hs;
          const float* kb = K + slots[i] * M * C + (size_t)hh * hs;
          const float* vb = Vc + slots[i] * M * C + (size_t)hh * hs;
          std::vector<float> w(pos[i] + 1);
          float maxv = -INFINITY;
          for (size_t t2 = 0; t2 <= pos[i]; t2++) {
            float s = 0;
            for (size_t k = 0; k < hs; k++) s += q[k] * kb[t2 * C + k];
            w[t2] = s * scale;
            maxv = std::max(maxv, w[t2]);
          }
          float sum = 0;
          for (size_t t2 = 0; t2 <= pos[i]; t2++) { w[t2] = std::exp(w[t2] - maxv); sum += w[t2]; }
          float* o = y.data() + (size_t)i * C + (size_t)hh * hs;
          for (size_t k = 0; k < hs; k++) o[k] = 0;
          for (size_t t2 = 0; t2 <= pos[i]; t2++)
            for (size_t k = 0; k < hs; k++) o[k] += (w[t2] / sum) * vb[t2 * C + k];
        }
      matmul_forward(tmp.data(), y.data(), p_(block_index(l, ATTNPROJ_W)), p_(block_index(l, ATTNPROJ_B)), n, C, C);
      for (size_t i = 0; i < n * C; i++) x[i] += tmp[i];
      layernorm_forward(h.data(), mean.data(), rstd.data(), x.data(), p_(block_index(l, LN2_W)),
                        p_(block_index(l, LN2_B)), n, C, cfg_.layer_norm_eps);
      matmul_forward(fc.data(), h.data(), p_(block_index(l, FC_W)), p_(block_index(l, FC_B)), n, C, 4 * C);
      gelu_forward(fcg.data(), fc.data(), n * 4 * C);
      matmul_forward(tmp.data(), fcg.data(), p_(block_index(l, FCPROJ_W)), p_(block_index(l, FCPROJ_B)), n, 4 * C, C);
      for (size_t i = 0; i < n * C; i++) x[i] += tmp[i];
    }
    const size_t nl = n - logits_from;
    layernorm_forward(h.data(), mean.data(), rstd.data(), x.data() + logits_from * C, p_(lnf_w_index(L)),
                      p_(lnf_b_index(L)), nl, C, cfg_.layer_norm_eps);
    lm_head_forward(logits, h.data(), p_(wte_index()), nl, C, V);
  }

  Activations acts_, grad_acts_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& model, const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(model, opts);
}

}  // namespace engine
