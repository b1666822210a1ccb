// cpu_backend.cpp — the `cpu` backend: every model family (GPT-2, Llama, GPT-NeoX/Pythia, GPT-J) in fp32 on the
// host, the readable reference the CUDA backend is checked against (after karpathy/llm.c train_gpt2.c: activations
// per layer, forward then backward layer by layer). One decoder block, its parts chosen by the family:
//   embeddings (+ learned positions: GPT-2) -> norm1 (LayerNorm | RMSNorm) -> q/k/v (GPT-2's c_attn [q|k|v],
//   NeoX's fused per-head [q,k,v], or separate) -> rotary (partial; half-split or GPT-J's interleaved) -> causal
//   attention (grouped-query heads) -> output projection
//   MLP: fc -> GELU (tanh | erf) -> proj, or Llama's SwiGLU down(silu(gate) * up)
//   residual: sequential (GPT-2, Llama, NeoX use_parallel_residual=false), parallel with two norms (NeoX), parallel
//   with one norm (GPT-J)
// then the final norm and the LM head (tied to the embedding, or its own weight, GPT-J's with a bias). GPT-2's
// weights are Conv1D (in, out), the others nn.Linear (out, in). Dropout (GPT-2 only; family_resolve refuses it
// elsewhere) is applied where Hugging Face applies it: embeddings, attention probabilities, both residual branches.
// Parameters are one flat buffer in the engine's HF layout (params.h, families.cpp), so the optimizer, checkpoints
// and HF import/export are shared with the cuda backend.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <unistd.h>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu_state.h"  // CpuStateBackend: option checks, threads, fp32 params/grads/AdamW state, KV bookkeeping
#include "families.h"   // FamilyTensors, ModelDims
#include "layers.h"     // the fp32 layers, forward and backward

namespace engine {
namespace {

using Vec = std::vector<float>;

struct LayerActs {
  Vec x;            // (N, C) block input
  Vec n1, m1, r1;   // (N, C), (N), (N) norm1 output, mean, rstd
  Vec qkv;          // (N, 3C) GPT-2's c_attn output [q | k | v]
  Vec q, k, v;      // (N, NH*HD), (N, KVH*HD) x2, after rotary (the other families)
  Vec preatt, att;  // (B, NH, T, T) scores (GPT-2) and probabilities
  Vec y;            // (N, NH*HD) attention output before the projection
  Vec h1;           // (N, C) x + attention (sequential residual only)
  Vec n2, m2, r2;   // norm2 (absent for GPT-J)
  Vec a, u, g;      // (N, I) fc / gate pre-activation, up (SwiGLU), activation output
};

class CpuBackend final : public CpuStateBackend {
 public:
  CpuBackend(const ModelConfig& cfg, const BackendOptions& opts) : CpuStateBackend(cfg, opts) {
    family_resolve(cfg_);
    layout_ = param_layout(cfg_);
    ft_ = family_tensors(cfg_, layout_);
    d_ = model_dims(cfg_);
    conv1d_ = cfg_.family == "gpt2";
    if (!conv1d_) rope_.init(cfg_);
    alloc_state_();
  }

  double forward_backward(const Batch& batch, float dloss) override {
    set_threads_();
    const Dropout drop{cfg_.dropout, batch.dropout_seed};
    forward_(batch, drop);
    size_t nt = 0, nc = 0;
    const size_t N = batch.B * batch.T;
    double loss = crossentropy_forward(losses_.data(), lse_.data(), logits_.data(), batch.targets, N, cfg_.vocab_size,
                                       &nt, &nc);
    backward_(batch, dloss, drop);
    return loss;
  }
  EvalStats forward_eval(const Batch& batch) override {
    set_threads_();
    forward_(batch, Dropout());
    EvalStats s;
    s.loss_sum = crossentropy_forward(losses_.data(), nullptr, logits_.data(), batch.targets, batch.B * batch.T,
                                      cfg_.vocab_size, &s.n_targets, &s.n_correct);
    return s;
  }
  void forward_logits(const Batch& batch, float* logits) override {
    set_threads_();
    forward_(batch, Dropout());
    std::memcpy(logits, logits_.data(), batch.B * batch.T * cfg_.vocab_size * sizeof(float));
  }

  size_t kv_width_() const override { return d_.KD; }

  MemoryReport memory() const override {
    MemoryReport r = state_memory_();
    size_t a = (logits_.capacity() + losses_.capacity() + lse_.capacity() + xf_.capacity() + nf_.capacity()) * 4;
    for (const auto& l : acts_)
      for (const Vec* v : {&l.x, &l.n1, &l.m1, &l.r1, &l.qkv, &l.q, &l.k, &l.v, &l.preatt, &l.att, &l.y, &l.h1, &l.n2,
                           &l.m2, &l.r2, &l.a, &l.u, &l.g})
        a += v->capacity() * sizeof(float);
    r.activations_bytes = a;
    r.other_bytes = (kv_.k.capacity() + kv_.v.capacity()) * sizeof(float);
    return r;
  }

 private:
  const float* p_(int idx) const { return idx < 0 ? nullptr : params_.data() + layout_.tensors[(size_t)idx].offset; }
  float* g_(int idx) { return idx < 0 ? nullptr : grads_.data() + layout_.tensors[(size_t)idx].offset; }
  bool rms_() const { return cfg_.family == "llama"; }
  bool gptj_() const { return cfg_.family == "gptj"; }
  bool sequential_() const { return conv1d_ || rms_() || (cfg_.family == "gpt_neox" && !cfg_.parallel_residual); }
  int head_() const { return ft_.head_w >= 0 ? ft_.head_w : ft_.embed; }
  // dropout streams: per layer, attention probabilities / attention output / MLP output; then the embeddings
  uint64_t stream_(size_t layer, int which) const { return layer * 4 + (uint64_t)which; }

  // y (N, OC) = x (N, K) · W (+ bias) in the family's weight layout; the backward accumulates
  void lin_fwd_(float* out, const float* in, int w, int b, size_t N, size_t K, size_t OC) const {
    if (conv1d_) matmul_forward(out, in, p_(w), p_(b), N, K, OC);
    else linear_forward(out, in, p_(w), p_(b), N, K, OC);
  }
  void lin_bwd_(float* din, int w, int b, const float* dout, const float* in, size_t N, size_t K, size_t OC) {
    if (conv1d_) matmul_backward(din, g_(w), g_(b), dout, in, p_(w), N, K, OC);
    else linear_backward(din, g_(w), g_(b), dout, in, p_(w), N, K, OC);
  }
  void norm_fwd_(float* out, float* mean, float* rstd, const float* x, int w, int b, size_t N) const {
    if (rms_()) rmsnorm_forward(out, rstd, x, p_(w), N, d_.C, cfg_.layer_norm_eps);
    else layernorm_forward(out, mean, rstd, x, p_(w), p_(b), N, d_.C, cfg_.layer_norm_eps);
  }
  void norm_bwd_(float* dx, const float* dout, const float* x, int w, int b, const float* mean, const float* rstd,
                 size_t N) {
    if (rms_()) rmsnorm_backward(dx, g_(w), dout, x, p_(w), rstd, N, d_.C);
    else layernorm_backward(dx, g_(w), g_(b), dout, x, p_(w), mean, rstd, N, d_.C);
  }
  // token (+ position) embeddings of n rows at positions pos (nullptr: row i is position i % T)
  void embed_(float* x, const int32_t* tokens, const size_t* pos, size_t n, size_t T) const {
    const size_t C = d_.C;
    const float *E = p_(ft_.embed), *P = p_(ft_.pos);
    if (!pos) return encoder_forward(x, tokens, E, P, n / T, T, C);
    for (size_t i = 0; i < n; i++)
      for (size_t c = 0; c < C; c++) x[i * C + c] = P ? E[(size_t)tokens[i] * C + c] + P[pos[i] * C + c] : E[(size_t)tokens[i] * C + c];
  }

  // q (N, NH*HD), k/v (N, KVH*HD) from the normed input, before rotary. NeoX's fused weight gives per head
  // [q | k | v] rows, so its output is de-interleaved through `fused` (N, 3C).
  void qkv_fwd_(const FamilyBlock& bl, const float* in, size_t N, float* q, float* k, float* v, Vec& fused) const {
    const size_t C = d_.C, NH = d_.NH, HD = d_.HD;
    if (bl.qkv_w >= 0) {
      fused.resize(N * 3 * NH * HD);
      linear_forward(fused.data(), in, p_(bl.qkv_w), p_(bl.qkv_b), N, C, 3 * NH * HD);
#pragma omp parallel for collapse(2) schedule(static)
      for (long n = 0; n < (long)N; n++)
        for (long h = 0; h < (long)NH; h++) {
          const float* f = fused.data() + ((size_t)n * NH + (size_t)h) * 3 * HD;
          const size_t o = ((size_t)n * NH + (size_t)h) * HD;
          std::memcpy(q + o, f, HD * sizeof(float));
          std::memcpy(k + o, f + HD, HD * sizeof(float));
          std::memcpy(v + o, f + 2 * HD, HD * sizeof(float));
        }
    } else {
      linear_forward(q, in, p_(bl.q_w), nullptr, N, C, d_.QD);
      linear_forward(k, in, p_(bl.k_w), nullptr, N, C, d_.KD);
      linear_forward(v, in, p_(bl.v_w), nullptr, N, C, d_.KD);
    }
  }

  // MLP forward: out (N, C) from in (N, C); a/u/g (N, I) kept.
  void mlp_fwd_(const FamilyBlock& bl, const float* in, size_t N, float* a, float* u, float* g, float* out) const {
    const size_t C = d_.C, I = d_.I;
    lin_fwd_(a, in, bl.fc_w, bl.fc_b, N, C, I);
    if (bl.up_w >= 0) {
      linear_forward(u, in, p_(bl.up_w), nullptr, N, C, I);
      swiglu_forward(g, a, u, N * I);
    } else if (!conv1d_ && cfg_.hidden_act == "gelu") {
      gelu_erf_forward(g, a, N * I);
    } else {
      gelu_forward(g, a, N * I);
    }
    lin_fwd_(out, g, bl.proj_w, bl.proj_b, N, I, C);
  }

  void check_batch_(const Batch& b) const {
    ENGINE_CHECK(b.B >= 1 && b.T >= 1 && b.T <= cfg_.n_positions, BadShape, "blockSize must be <= model.nPositions",
                 "batch (B=%zu, T=%zu) with nPositions %zu", b.B, b.T, cfg_.n_positions);
    for (size_t i = 0; i < b.B * b.T; i++) {
      const int32_t x = b.inputs[i], y = b.targets[i];
      ENGINE_CHECK(x >= 0 && (size_t)x < cfg_.vocab_size, BadShape,
                   "the shards were tokenized with a larger vocabulary than the model's",
                   "input token %d at position %zu is outside [0, %zu)", x, i, cfg_.vocab_size);
      ENGINE_CHECK(y == IGNORE_INDEX || (y >= 0 && (size_t)y < cfg_.vocab_size), BadShape,
                   "labels must be token ids or -100", "target %d at position %zu is outside [0, %zu)", y, i,
                   cfg_.vocab_size);
    }
  }

  void ensure_acts_(size_t B, size_t T) {
    if (B == B_ && T == T_) return;
    const size_t L = d_.L, C = d_.C, NH = d_.NH, KD = d_.KD, QD = d_.QD, I = d_.I, V = cfg_.vocab_size, N = B * T;
    const size_t att = B * NH * T * T * (conv1d_ ? 2 : 1);
    const size_t per_layer = N * (5 * C + 4 + 2 * QD + 2 * KD + 3 * I) + att;
    // Linux overcommits, so an allocation larger than RAM "succeeds" and the process is killed later: check the
    // estimate (activations and the backward's scratch) against physical memory first, with a coded error
    const size_t need = (L * per_layer * 2 + N * (V + 2 * C)) * sizeof(float);
    const size_t phys = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    ENGINE_CHECK(need < phys, OutOfMemory, "lower training.microBatchSize (or evaluation.batchSize) or the block size",
                 "activations for B=%zu T=%zu need ~%.1f GiB, the machine has %.1f GiB", B, T, need / 1073741824.0,
                 phys / 1073741824.0);
    try {
      acts_.assign(L, LayerActs());
      for (auto& l : acts_) {
        for (Vec* v : {&l.x, &l.n1, &l.h1, &l.n2}) v->assign(N * C, 0);
        for (Vec* v : {&l.m1, &l.r1, &l.m2, &l.r2}) v->assign(N, 0);
        l.y.assign(N * QD, 0);
        if (conv1d_) {
          l.qkv.assign(N * 3 * C, 0);
          l.preatt.assign(B * NH * T * T, 0);
        } else {
          l.q.assign(N * QD, 0);
          for (Vec* v : {&l.k, &l.v}) v->assign(N * KD, 0);
        }
        l.att.assign(B * NH * T * T, 0);
        for (Vec* v : {&l.a, &l.g}) v->assign(N * I, 0);
        if (rms_()) l.u.assign(N * I, 0);
      }
      xf_.assign(N * C, 0); nf_.assign(N * C, 0); mf_.assign(N, 0); rf_.assign(N, 0);
      logits_.assign(N * V, 0); losses_.assign(N, 0); lse_.assign(N, 0);
      pos_.resize(N);
      for (size_t i = 0; i < N; i++) pos_[i] = i % T;
    } catch (const std::bad_alloc&) {
      ENGINE_THROW(OutOfMemory, "lower training.microBatchSize or the block size",
                   "cannot allocate activations for B=%zu T=%zu", B, T);
    }
    B_ = B; T_ = T;
  }

  // Forward through the LM head: logits_ (B, T, V). `drop` is inactive for evaluation and logits.
  void forward_(const Batch& batch, const Dropout& drop) {
    check_batch_(batch);
    const size_t B = batch.B, T = batch.T, C = d_.C, NH = d_.NH, KVH = d_.KVH, HD = d_.HD, N = B * T, L = d_.L;
    ensure_acts_(B, T);
    // Positions within the example: packed rows restart at each example (Batch::positions), else i % T.
    for (size_t i = 0; i < N; i++) pos_[i] = batch.positions ? (size_t)batch.positions[i] : i % T;
    encoder_forward(acts_[0].x.data(), batch.inputs, p_(ft_.embed), p_(ft_.pos), B, T, C, batch.positions);
    dropout_apply(acts_[0].x.data(), N * C, drop, stream_(L, 3));
    Vec ao(N * C), mo(N * C);
    for (size_t l = 0; l < L; l++) {
      LayerActs& a = acts_[l];
      const FamilyBlock& bl = ft_.blocks[l];
      float* out = l + 1 < L ? acts_[l + 1].x.data() : xf_.data();
      norm_fwd_(a.n1.data(), a.m1.data(), a.r1.data(), a.x.data(), bl.norm1_w, bl.norm1_b, N);
      if (conv1d_) {
        lin_fwd_(a.qkv.data(), a.n1.data(), bl.qkv_w, bl.qkv_b, N, C, 3 * C);
        attention_forward(a.y.data(), a.preatt.data(), a.att.data(), a.qkv.data(), B, T, C, NH, drop, stream_(l, 0),
                          batch.positions);
      } else {
        qkv_fwd_(bl, a.n1.data(), N, a.q.data(), a.k.data(), a.v.data(), fused_);
        rope_apply(a.q.data(), pos_.data(), N, NH, HD, rope_, false);
        rope_apply(a.k.data(), pos_.data(), N, KVH, HD, rope_, false);
        gqa_attention_forward(a.y.data(), a.att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, KVH, HD,
                              batch.positions);
      }
      lin_fwd_(ao.data(), a.y.data(), bl.o_w, bl.o_b, N, d_.QD, C);
      dropout_apply(ao.data(), N * C, drop, stream_(l, 1));  // HF resid_dropout, before the residual add
      if (sequential_()) {
        for (size_t i = 0; i < N * C; i++) a.h1[i] = a.x[i] + ao[i];
        norm_fwd_(a.n2.data(), a.m2.data(), a.r2.data(), a.h1.data(), bl.norm2_w, bl.norm2_b, N);
        mlp_fwd_(bl, a.n2.data(), N, a.a.data(), a.u.data(), a.g.data(), mo.data());
        dropout_apply(mo.data(), N * C, drop, stream_(l, 2));
        for (size_t i = 0; i < N * C; i++) out[i] = a.h1[i] + mo[i];
      } else {
        const float* min = a.n1.data();
        if (!gptj_()) {
          norm_fwd_(a.n2.data(), a.m2.data(), a.r2.data(), a.x.data(), bl.norm2_w, bl.norm2_b, N);
          min = a.n2.data();
        }
        mlp_fwd_(bl, min, N, a.a.data(), a.u.data(), a.g.data(), mo.data());
        for (size_t i = 0; i < N * C; i++) out[i] = mo[i] + ao[i] + a.x[i];
      }
    }
    norm_fwd_(nf_.data(), mf_.data(), rf_.data(), xf_.data(), ft_.final_w, ft_.final_b, N);
    linear_forward(logits_.data(), nf_.data(), p_(head_()), p_(ft_.head_b), N, C, cfg_.vocab_size);
  }

  // Attention backward from d(attention output after projection) (N, C); accumulates d(normed input) into dn.
  void attn_bwd_(size_t l, const Batch& batch, const float* dao, float* dn, const Dropout& drop) {
    const size_t B = batch.B, T = batch.T, C = d_.C, NH = d_.NH, KVH = d_.KVH, HD = d_.HD, N = B * T;
    LayerActs& a = acts_[l];
    const FamilyBlock& bl = ft_.blocks[l];
    dy_.assign(N * d_.QD, 0);
    lin_bwd_(dy_.data(), bl.o_w, bl.o_b, dao, a.y.data(), N, d_.QD, C);
    datt_.assign(B * NH * T * T, 0);
    if (conv1d_) {
      fused_.assign(N * 3 * C, 0);
      dpreatt_.assign(B * NH * T * T, 0);
      attention_backward(fused_.data(), dpreatt_.data(), datt_.data(), dy_.data(), a.qkv.data(), a.att.data(), B, T,
                         C, NH, drop, stream_(l, 0), batch.positions);
      lin_bwd_(dn, bl.qkv_w, bl.qkv_b, fused_.data(), a.n1.data(), N, C, 3 * C);
      return;
    }
    dq_.assign(N * d_.QD, 0);
    dk_.assign(N * d_.KD, 0);
    dv_.assign(N * d_.KD, 0);
    gqa_attention_backward(dq_.data(), dk_.data(), dv_.data(), datt_.data(), dy_.data(), a.q.data(), a.k.data(),
                           a.v.data(), a.att.data(), B, T, NH, KVH, HD, batch.positions);
    rope_apply(dq_.data(), pos_.data(), N, NH, HD, rope_, true);
    rope_apply(dk_.data(), pos_.data(), N, KVH, HD, rope_, true);
    if (bl.qkv_w >= 0) {
      fused_.resize(N * 3 * NH * HD);
      for (size_t n = 0; n < N; n++)
        for (size_t h = 0; h < NH; h++) {
          float* f = fused_.data() + (n * NH + h) * 3 * HD;
          const size_t o = (n * NH + h) * HD;
          std::memcpy(f, dq_.data() + o, HD * 4);
          std::memcpy(f + HD, dk_.data() + o, HD * 4);
          std::memcpy(f + 2 * HD, dv_.data() + o, HD * 4);
        }
      linear_backward(dn, g_(bl.qkv_w), g_(bl.qkv_b), fused_.data(), a.n1.data(), p_(bl.qkv_w), N, C, 3 * NH * HD);
    } else {
      linear_backward(dn, g_(bl.q_w), nullptr, dq_.data(), a.n1.data(), p_(bl.q_w), N, C, d_.QD);
      linear_backward(dn, g_(bl.k_w), nullptr, dk_.data(), a.n1.data(), p_(bl.k_w), N, C, d_.KD);
      linear_backward(dn, g_(bl.v_w), nullptr, dv_.data(), a.n1.data(), p_(bl.v_w), N, C, d_.KD);
    }
  }

  // MLP backward from d(MLP output) (N, C); accumulates d(MLP input) into dn.
  void mlp_bwd_(size_t l, size_t N, const float* dmo, const float* in, float* dn) {
    const size_t C = d_.C, I = d_.I;
    LayerActs& a = acts_[l];
    const FamilyBlock& bl = ft_.blocks[l];
    dg_.assign(N * I, 0);
    lin_bwd_(dg_.data(), bl.proj_w, bl.proj_b, dmo, a.g.data(), N, I, C);
    da_.assign(N * I, 0);
    if (bl.up_w >= 0) {
      du_.assign(N * I, 0);
      swiglu_backward(da_.data(), du_.data(), a.a.data(), a.u.data(), dg_.data(), N * I);
      linear_backward(dn, g_(bl.up_w), nullptr, du_.data(), in, p_(bl.up_w), N, C, I);
    } else if (!conv1d_ && cfg_.hidden_act == "gelu") {
      gelu_erf_backward(da_.data(), a.a.data(), dg_.data(), N * I);
    } else {
      gelu_backward(da_.data(), a.a.data(), dg_.data(), N * I);
    }
    lin_bwd_(dn, bl.fc_w, bl.fc_b, da_.data(), in, N, C, I);
  }
  // d(branch output) for a residual branch: dx itself, or through the branch's dropout mask (scratch dd_)
  const float* dropped_(const Vec& dx, const Dropout& drop, uint64_t stream) {
    if (!drop.active()) return dx.data();
    dd_ = dx;
    dropout_apply(dd_.data(), dd_.size(), drop, stream);
    return dd_.data();
  }

  // Backward from the cross-entropy (after forward_ on the same batch); accumulates into grads_.
  void backward_(const Batch& batch, float dloss, const Dropout& drop) {
    const size_t N = batch.B * batch.T, C = d_.C, V = cfg_.vocab_size, L = d_.L;
    crossentropy_softmax_backward_inplace(logits_.data(), lse_.data(), batch.targets, N, V, dloss);
    Vec dnf(N * C, 0.0f), dx(N * C, 0.0f), dn(N * C), dn2(N * C), dh1(N * C);
    linear_backward(dnf.data(), g_(head_()), g_(ft_.head_b), logits_.data(), nf_.data(), p_(head_()), N, C, V);
    norm_bwd_(dx.data(), dnf.data(), xf_.data(), ft_.final_w, ft_.final_b, mf_.data(), rf_.data(), N);
    // dx: gradient w.r.t. the output of layer l on entry, w.r.t. its input on exit
    for (size_t l = L; l-- > 0;) {
      LayerActs& a = acts_[l];
      const FamilyBlock& bl = ft_.blocks[l];
      if (sequential_()) {
        dh1 = dx;  // out = h1 + mlp(norm2(h1))
        std::fill(dn2.begin(), dn2.end(), 0.0f);
        mlp_bwd_(l, N, dropped_(dx, drop, stream_(l, 2)), a.n2.data(), dn2.data());
        norm_bwd_(dh1.data(), dn2.data(), a.h1.data(), bl.norm2_w, bl.norm2_b, a.m2.data(), a.r2.data(), N);
        dx = dh1;  // h1 = x + attn(norm1(x))
        std::fill(dn.begin(), dn.end(), 0.0f);
        attn_bwd_(l, batch, dropped_(dh1, drop, stream_(l, 1)), dn.data(), drop);
        norm_bwd_(dx.data(), dn.data(), a.x.data(), bl.norm1_w, bl.norm1_b, a.m1.data(), a.r1.data(), N);
      } else if (gptj_()) {  // out = x + attn(n1) + mlp(n1), n1 = norm1(x)
        std::fill(dn.begin(), dn.end(), 0.0f);
        mlp_bwd_(l, N, dx.data(), a.n1.data(), dn.data());
        attn_bwd_(l, batch, dx.data(), dn.data(), drop);
        norm_bwd_(dx.data(), dn.data(), a.x.data(), bl.norm1_w, bl.norm1_b, a.m1.data(), a.r1.data(), N);
      } else {  // NeoX parallel: out = x + attn(norm1(x)) + mlp(norm2(x))
        std::fill(dn2.begin(), dn2.end(), 0.0f);
        mlp_bwd_(l, N, dx.data(), a.n2.data(), dn2.data());
        std::fill(dn.begin(), dn.end(), 0.0f);
        attn_bwd_(l, batch, dx.data(), dn.data(), drop);
        norm_bwd_(dx.data(), dn2.data(), a.x.data(), bl.norm2_w, bl.norm2_b, a.m2.data(), a.r2.data(), N);
        norm_bwd_(dx.data(), dn.data(), a.x.data(), bl.norm1_w, bl.norm1_b, a.m1.data(), a.r1.data(), N);
      }
    }
    dropout_apply(dx.data(), N * C, drop, stream_(L, 3));
    encoder_backward(g_(ft_.embed), g_(ft_.pos), dx.data(), batch.inputs, batch.B, batch.T, C, batch.positions);
  }

  // Inference rows: row i = token tokens[i] at position pos[i] of slot slots[i]; keys and values go into the
  // cache, each row attends to its slot's positions <= pos[i]; logits of rows [logits_from, n).
  void kv_rows_(const size_t* slots, const size_t* pos, const int32_t* tokens, size_t n, size_t logits_from,
                float* logits) override {
    set_threads_();
    const size_t C = d_.C, NH = d_.NH, KVH = d_.KVH, HD = d_.HD, KD = d_.KD, QD = d_.QD, V = cfg_.vocab_size;
    const size_t L = d_.L, S = kv_.slots, M = kv_.max_len, G = NH / KVH, I = d_.I;
    for (size_t i = 0; i < n; i++) {
      ENGINE_CHECK(pos[i] < M, BadShape, "", "KV cache full: position %zu of %zu", pos[i], M);
      ENGINE_CHECK(tokens[i] >= 0 && (size_t)tokens[i] < V, BadShape, "prompt token ids must be < the vocabulary size",
                   "token %d outside [0, %zu)", tokens[i], V);
    }
    Vec x(n * C), h(n * C), h2(n * C), q(n * QD), k(n * KD), v(n * KD), y(n * QD), ao(n * C), mo(n * C);
    Vec mean(n), rstd(n), fa(n * I), fu(n * I), fg(n * I), fused;
    embed_(x.data(), tokens, pos, n, 1);
    const float scale = 1.0f / std::sqrt((float)HD);
    for (size_t l = 0; l < L; l++) {
      const FamilyBlock& bl = ft_.blocks[l];
      norm_fwd_(h.data(), mean.data(), rstd.data(), x.data(), bl.norm1_w, bl.norm1_b, n);
      if (conv1d_) {  // c_attn rows [q | k | v]
        fused.resize(n * 3 * C);
        lin_fwd_(fused.data(), h.data(), bl.qkv_w, bl.qkv_b, n, C, 3 * C);
        for (size_t i = 0; i < n; i++) {
          std::memcpy(q.data() + i * C, fused.data() + i * 3 * C, C * 4);
          std::memcpy(k.data() + i * C, fused.data() + i * 3 * C + C, C * 4);
          std::memcpy(v.data() + i * C, fused.data() + i * 3 * C + 2 * C, C * 4);
        }
      } else {
        qkv_fwd_(bl, h.data(), n, q.data(), k.data(), v.data(), fused);
        rope_apply(q.data(), pos, n, NH, HD, rope_, false);
        rope_apply(k.data(), pos, n, KVH, HD, rope_, false);
      }
      float* Kc = kv_.k.data() + l * S * M * KD;
      float* Vc = kv_.v.data() + l * S * M * KD;
      for (size_t i = 0; i < n; i++) {
        std::memcpy(Kc + (slots[i] * M + pos[i]) * KD, k.data() + i * KD, KD * 4);
        std::memcpy(Vc + (slots[i] * M + pos[i]) * KD, v.data() + i * KD, KD * 4);
      }
#pragma omp parallel for collapse(2) schedule(static)
      for (long i = 0; i < (long)n; i++)
        for (long hh = 0; hh < (long)NH; hh++) {
          const size_t kh = (size_t)hh / G;
          const float* qv = q.data() + ((size_t)i * NH + (size_t)hh) * HD;
          const float* kb = Kc + slots[i] * M * KD + kh * HD;
          const float* vb = Vc + slots[i] * M * KD + kh * HD;
          std::vector<float> w(pos[i] + 1);
          float maxv = -INFINITY;
          for (size_t t2 = 0; t2 <= pos[i]; t2++) {
            float s = 0;
            for (size_t d = 0; d < HD; d++) s += qv[d] * kb[t2 * KD + d];
            w[t2] = s * scale;
            maxv = std::max(maxv, w[t2]);
          }
          float sum = 0;
          for (size_t t2 = 0; t2 <= pos[i]; t2++) { w[t2] = std::exp(w[t2] - maxv); sum += w[t2]; }
          float* o = y.data() + ((size_t)i * NH + (size_t)hh) * HD;
          for (size_t d = 0; d < HD; d++) o[d] = 0;
          for (size_t t2 = 0; t2 <= pos[i]; t2++)
            for (size_t d = 0; d < HD; d++) o[d] += (w[t2] / sum) * vb[t2 * KD + d];
        }
      lin_fwd_(ao.data(), y.data(), bl.o_w, bl.o_b, n, QD, C);
      if (sequential_()) {
        for (size_t i = 0; i < n * C; i++) x[i] += ao[i];
        norm_fwd_(h2.data(), mean.data(), rstd.data(), x.data(), bl.norm2_w, bl.norm2_b, n);
        mlp_fwd_(bl, h2.data(), n, fa.data(), fu.data(), fg.data(), mo.data());
        for (size_t i = 0; i < n * C; i++) x[i] += mo[i];
      } else {
        const float* min = h.data();
        if (!gptj_()) {
          norm_fwd_(h2.data(), mean.data(), rstd.data(), x.data(), bl.norm2_w, bl.norm2_b, n);
          min = h2.data();
        }
        mlp_fwd_(bl, min, n, fa.data(), fu.data(), fg.data(), mo.data());
        for (size_t i = 0; i < n * C; i++) x[i] = mo[i] + ao[i] + x[i];
      }
    }
    const size_t nl = n - logits_from;
    norm_fwd_(h.data(), mean.data(), rstd.data(), x.data() + logits_from * C, ft_.final_w, ft_.final_b, nl);
    linear_forward(logits, h.data(), p_(head_()), p_(ft_.head_b), nl, C, V);
  }

  FamilyTensors ft_;
  ModelDims d_;
  bool conv1d_ = false;  // GPT-2: Conv1D weights, c_attn [q | k | v], learned positions, dropout
  Rope rope_;
  size_t B_ = 0, T_ = 0;
  std::vector<LayerActs> acts_;
  Vec xf_, nf_, mf_, rf_, logits_, losses_, lse_;  // final norm input/output, head
  std::vector<size_t> pos_;                         // (B*T) position of each row
  Vec fused_, dy_, dq_, dk_, dv_, dpreatt_, datt_, dg_, da_, du_, dd_;  // backward scratch
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& model, const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(model, opts);
}

}  // namespace engine
