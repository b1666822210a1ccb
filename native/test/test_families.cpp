// test_families.cpp — the Llama / GPT-NeoX / GPT-J cpu backend against itself: every gradient vs central finite
// differences, and the KV-cache path (GQA, rotary at absolute positions) vs the full forward, for each family and
// its variants (partial rotary, parallel/sequential residual, tied/untied head, llama3 rope scaling).
#include <cmath>
#include <cstring>
#include <vector>
#include "backend.h"
#include "errors.h"
#include "families.h"
#include "harness.h"
#include "rng.h"

using namespace engine;

static std::vector<ModelConfig> family_configs() {
  std::vector<ModelConfig> out;
  ModelConfig c;
  c.n_layer = 2; c.n_head = 4; c.n_embd = 16; c.n_positions = 8; c.vocab_size = 29; c.init_seed = 3;
  c.tie_word_embeddings = false;
  ModelConfig l = c;  // llama: GQA 4 -> 2 kv heads, SwiGLU, untied
  l.family = "llama"; l.n_kv_head = 2; l.intermediate_size = 24; l.hidden_act = "silu"; l.layer_norm_eps = 1e-6f;
  out.push_back(l);
  l.tie_word_embeddings = true; l.rope_scaling = "llama3"; l.rope_factor = 8; l.rope_original_max_positions = 4;
  l.rope_theta = 500000;
  out.push_back(l);
  ModelConfig n = c;  // NeoX: partial rotary (2 of 4 dims), parallel residual, exact GELU
  n.family = "gpt_neox"; n.rotary_dim = 2; n.hidden_act = "gelu";
  out.push_back(n);
  n.parallel_residual = false; n.attention_bias = false;
  out.push_back(n);
  ModelConfig j = c;  // GPT-J: interleaved partial rotary, one norm for both branches, head bias
  j.family = "gptj"; j.rotary_dim = 2; j.hidden_act = "gelu_new";
  out.push_back(j);
  return out;
}

static std::vector<float> random_params(const ParamLayout& l, uint64_t seed) {
  std::vector<float> p(l.total);
  Rng r;
  rng_seed(r, seed);
  for (const auto& t : l.tensors) {
    bool gain = t.shape.size() == 1 && (t.name.find("norm") != std::string::npos || t.name.find("ln_") != std::string::npos) &&
                t.name.find(".weight") != std::string::npos;
    for (size_t i = 0; i < t.numel; i++) p[t.offset + i] = (float)((gain ? 1.0 : 0.0) + 0.3 * rng_normal(r));
  }
  return p;
}

TEST(families_gradcheck_central_differences) {
  for (const ModelConfig& cfg : family_configs()) {
    BackendOptions opts;
    opts.num_threads = 2;
    auto be = create_backend(cfg, opts);
    const ParamLayout& l = be->layout();
    std::vector<float> p = random_params(l, 11);
    be->set_params(p.data());
    const size_t B = 2, T = 6, V = cfg.vocab_size;
    std::vector<int32_t> in(B * T), tg(B * T);
    Rng r;
    rng_seed(r, 5);
    for (size_t i = 0; i < B * T; i++) {
      in[i] = (int32_t)rng_below(r, V);
      tg[i] = rng_uniform(r) < 0.25 ? IGNORE_INDEX : (int32_t)rng_below(r, V);
    }
    Batch batch{in.data(), tg.data(), B, T};
    size_t n = 0;
    for (int32_t t : tg) n += t != IGNORE_INDEX;
    auto loss_at = [&](const std::vector<float>& q) {
      be->set_params(q.data());
      return be->forward_backward(batch, 0.0f) / (double)n;
    };
    be->zero_grad();
    be->forward_backward(batch, 1.0f / (float)n);
    std::vector<float> g(l.total);
    be->get_grads(g.data());
    for (const auto& t : l.tensors) {
      for (int dir = 0; dir < 2; dir++) {
        std::vector<double> u(t.numel);
        double norm = 0;
        for (size_t i = 0; i < t.numel; i++) {
          u[i] = dir == 0 ? g[t.offset + i] : rng_normal(r);
          norm += u[i] * u[i];
        }
        norm = std::sqrt(norm);
        if (norm == 0) continue;
        double analytic = 0;
        for (size_t i = 0; i < t.numel; i++) { u[i] /= norm; analytic += u[i] * g[t.offset + i]; }
        const double eps = 1e-2;
        std::vector<float> qp = p, qm = p;
        for (size_t i = 0; i < t.numel; i++) { qp[t.offset + i] += (float)(eps * u[i]); qm[t.offset + i] -= (float)(eps * u[i]); }
        double numeric = (loss_at(qp) - loss_at(qm)) / (2 * eps);
        double scale = std::max(std::fabs(analytic), 1e-3);
        if (std::fabs(analytic - numeric) > 2e-2 * scale) {
          std::printf("  %s %s dir %d: analytic %.6g numeric %.6g\n", cfg.family.c_str(), t.name.c_str(), dir, analytic, numeric);
          g_failures++;
        }
      }
    }
  }
}

TEST(families_kv_cache_matches_full_forward) {
  for (const ModelConfig& cfg : family_configs()) {
    BackendOptions opts;
    auto be = create_backend(cfg, opts);
    std::vector<float> p = random_params(be->layout(), 21);
    be->set_params(p.data());
    const size_t T = 7, V = cfg.vocab_size;
    std::vector<int32_t> in(T), tg(T, IGNORE_INDEX);
    for (size_t t = 0; t < T; t++) in[t] = (int32_t)((t * 7 + 3) % V);
    std::vector<float> full(T * V);
    be->forward_logits(Batch{in.data(), tg.data(), 1, T}, full.data());
    be->kv_begin(2, 8);
    std::vector<float> lg(V), other(V);
    int32_t junk[2] = {5, 9};
    be->kv_prefill(0, junk, 2, other.data());
    be->kv_prefill(1, in.data(), 3, lg.data());
    for (size_t v = 0; v < V; v++) CHECK_NEAR(lg[v], full[2 * V + v], 1e-4);
    for (size_t t = 3; t < T; t++) {
      size_t slots[2] = {1, 0};
      int32_t toks[2] = {in[t], 3};
      std::vector<float> two(2 * V);
      be->kv_decode(slots, toks, 2, two.data());
      for (size_t v = 0; v < V; v++) CHECK_NEAR(two[v], full[t * V + v], 1e-4);
    }
    be->kv_end();
  }
}

TEST(families_refuse_unsupported_options) {
  ModelConfig c;
  c.family = "llama"; c.n_head = 4; c.n_kv_head = 3;
  CHECK_THROWS_CODE(create_backend(c, BackendOptions()), BadConfig);
  c.n_kv_head = 2; c.rope_scaling = "yarn";
  CHECK_THROWS_CODE(create_backend(c, BackendOptions()), BadConfig);
  c.rope_scaling = "";
  BackendOptions cuda;
  cuda.name = "cuda";
  CHECK_THROWS_CODE(create_backend(c, cuda), BadConfig);  // families are cpu-only for now, with or without CUDA
  ModelConfig n;
  n.family = "gpt_neox"; n.dropout = 0.1f;
  CHECK_THROWS_CODE(create_backend(n, BackendOptions()), BadConfig);
}
