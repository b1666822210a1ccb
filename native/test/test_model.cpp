// test_model.cpp — the cpu reference against itself: gradients vs central finite differences on a tiny model,
// the KV-cache path vs the full forward, the optimizer/schedule, and exact resume through the engine.
#include <cmath>
#include <cstring>
#include <vector>
#include "backend.h"
#include "engine.h"
#include "errors.h"
#include "fileio.h"
#include "harness.h"
#include "lr_schedule.h"
#include "rng.h"

using namespace engine;

static ModelConfig tiny_config() {
  ModelConfig c;
  c.n_layer = 2; c.n_head = 2; c.n_embd = 16; c.n_positions = 8; c.vocab_size = 37; c.init_seed = 3;
  return c;
}

// Random weights with a larger spread than GPT-2's init so every layer is well inside its nonlinear regime.
static std::vector<float> random_params(const ParamLayout& l, uint64_t seed) {
  std::vector<float> p(l.total);
  Rng r;
  rng_seed(r, seed);
  for (const auto& t : l.tensors) {
    bool gain = t.name.find("ln_") != std::string::npos && t.name.find(".weight") != std::string::npos;
    for (size_t i = 0; i < t.numel; i++) p[t.offset + i] = (float)((gain ? 1.0 : 0.0) + 0.3 * rng_normal(r));
  }
  return p;
}

static void random_batch(size_t B, size_t T, size_t V, uint64_t seed, std::vector<int32_t>& in, std::vector<int32_t>& tg) {
  Rng r;
  rng_seed(r, seed);
  in.resize(B * T);
  tg.resize(B * T);
  for (size_t i = 0; i < B * T; i++) {
    in[i] = (int32_t)rng_below(r, V);
    tg[i] = rng_uniform(r) < 0.25 ? IGNORE_INDEX : (int32_t)rng_below(r, V);  // some masked targets
  }
}

static void gradcheck(float dropout) {
  ModelConfig cfg = tiny_config();
  cfg.dropout = dropout;
  BackendOptions opts;
  opts.num_threads = 2;
  auto be = create_backend(cfg, opts);
  const ParamLayout& l = be->layout();
  std::vector<float> p = random_params(l, 11);
  be->set_params(p.data());
  const size_t B = 2, T = 6;
  std::vector<int32_t> in, tg;
  random_batch(B, T, cfg.vocab_size, 5, in, tg);
  Batch batch{in.data(), tg.data(), B, T};
  batch.dropout_seed = 77;  // the same masks for every evaluation: a deterministic function of the weights
  size_t n = 0;
  for (int32_t t : tg) n += t != IGNORE_INDEX;
  auto loss_at = [&](const std::vector<float>& q) {
    be->set_params(q.data());
    return be->forward_backward(batch, 0.0f) / (double)n;  // training-mode forward (dropout on), no gradient
  };
  be->zero_grad();
  be->forward_backward(batch, 1.0f / (float)n);
  std::vector<float> g(l.total);
  be->get_grads(g.data());
  // Per tensor, the directional derivative along the analytic gradient (must equal |g|) and along a random
  // direction, against central differences. fp32 forward: eps 1e-2 keeps rounding noise (~1e-6 / eps) small
  // next to the truncation error (~eps^2); 2% relative tolerance, measured worst case ~0.3%.
  Rng r;
  rng_seed(r, 99);
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
        std::printf("  %s dir %d: analytic %.6g numeric %.6g\n", t.name.c_str(), dir, analytic, numeric);
        g_failures++;
      }
    }
  }
}

TEST(gradcheck_central_differences) { gradcheck(0.0f); }
TEST(gradcheck_with_dropout) { gradcheck(0.2f); }

TEST(dropout_is_training_only_and_seeded) {
  ModelConfig cfg = tiny_config();
  cfg.dropout = 0.3f;
  BackendOptions opts;
  auto be = create_backend(cfg, opts);
  std::vector<float> p = random_params(be->layout(), 5);
  be->set_params(p.data());
  std::vector<int32_t> in, tg;
  random_batch(2, 6, cfg.vocab_size, 3, in, tg);
  Batch b{in.data(), tg.data(), 2, 6};
  auto loss = [&](uint64_t seed) { b.dropout_seed = seed; be->zero_grad(); return be->forward_backward(b, 0.0f); };
  CHECK(loss(1) == loss(1));
  CHECK(loss(1) != loss(2));
  // evaluation ignores dropout: equals a dropout-free model
  double ev = be->forward_eval(b).loss_sum;
  cfg.dropout = 0;
  auto be0 = create_backend(cfg, opts);
  be0->set_params(p.data());
  CHECK(ev == be0->forward_eval(b).loss_sum);
}

TEST(grad_accumulation_matches_one_big_batch) {
  // Two micro-batches with dloss = 1/(targets of both) == one batch of both (gradient accumulation contract).
  ModelConfig cfg = tiny_config();
  BackendOptions opts;
  auto be = create_backend(cfg, opts);
  std::vector<float> p = random_params(be->layout(), 4);
  be->set_params(p.data());
  std::vector<int32_t> in, tg;
  random_batch(4, 6, cfg.vocab_size, 8, in, tg);
  size_t n = 0;
  for (int32_t t : tg) n += t != IGNORE_INDEX;
  be->zero_grad();
  double l1 = be->forward_backward(Batch{in.data(), tg.data(), 4, 6}, 1.0f / n);
  std::vector<float> g1(be->layout().total), g2(be->layout().total);
  be->get_grads(g1.data());
  be->zero_grad();
  double l2 = be->forward_backward(Batch{in.data(), tg.data(), 2, 6}, 1.0f / n);
  l2 += be->forward_backward(Batch{in.data() + 12, tg.data() + 12, 2, 6}, 1.0f / n);
  be->get_grads(g2.data());
  CHECK_NEAR(l1, l2, 1e-4);
  double maxd = 0, maxg = 0;
  for (size_t i = 0; i < g1.size(); i++) { maxd = std::max(maxd, (double)std::fabs(g1[i] - g2[i])); maxg = std::max(maxg, (double)std::fabs(g1[i])); }
  CHECK(maxd <= 1e-5 * std::max(1.0, maxg));
}

TEST(kv_cache_matches_full_forward) {
  ModelConfig cfg = tiny_config();
  BackendOptions opts;
  auto be = create_backend(cfg, opts);
  std::vector<float> p = random_params(be->layout(), 21);
  be->set_params(p.data());
  const size_t T = 7, V = cfg.vocab_size;
  std::vector<int32_t> in, tg;
  random_batch(1, T, V, 2, in, tg);
  std::vector<float> full(T * V);
  be->forward_logits(Batch{in.data(), tg.data(), 1, T}, full.data());
  // prefill 3 tokens in slot 1, then decode the rest one at a time (slot 0 gets an unrelated prompt)
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

TEST(lr_schedule_shapes) {
  TrainConfig c;
  c.learning_rate = 1.0f; c.min_lr_ratio = 0.1f; c.warmup_steps = 10; c.schedule = LrSchedule::Cosine;
  CHECK_NEAR(lr_at(c, 0, 100), 0.1, 1e-6);     // warmup starts at lr/warmup, not 0
  CHECK_NEAR(lr_at(c, 9, 100), 1.0, 1e-6);
  CHECK_NEAR(lr_at(c, 10, 100), 1.0, 1e-6);    // decay starts at the peak
  CHECK_NEAR(lr_at(c, 55, 100), 0.55, 1e-6);   // cosine midpoint = (max + min) / 2
  CHECK_NEAR(lr_at(c, 100, 100), 0.1, 1e-6);
  c.schedule = LrSchedule::Linear;
  CHECK_NEAR(lr_at(c, 55, 100), 0.55, 1e-6);
  CHECK_NEAR(lr_at(c, 32, 100), 1.0 - 0.9 * 22.0 / 90.0, 1e-6);
  c.schedule = LrSchedule::Constant;
  CHECK_NEAR(lr_at(c, 80, 100), 1.0, 1e-6);
}

// Synthetic shards whose token at (seq, t) encodes its global sequence index: any loader slip shows up.
struct Synthetic {
  std::vector<std::vector<int32_t>> ids, labels;
  std::vector<ShardView> views;
};
static Synthetic synthetic_shards(size_t n_shards, size_t per_shard, size_t T, size_t V) {
  Synthetic s;
  size_t seq = 0;
  for (size_t k = 0; k < n_shards; k++) {
    s.ids.emplace_back(per_shard * T);
    s.labels.emplace_back(per_shard * T);
    for (size_t i = 0; i < per_shard; i++, seq++)
      for (size_t t = 0; t < T; t++) {
        int32_t v = (int32_t)((seq * 7 + t * 3) % V);
        s.ids[k][i * T + t] = v;
        s.labels[k][i * T + t] = t == 0 ? (int32_t)seq : v;  // label[0] is never a target: use it to tag the sequence
      }
  }
  for (size_t k = 0; k < n_shards; k++) s.views.push_back({per_shard, T, s.ids[k].data(), s.labels[k].data()});
  return s;
}

TEST(dataloader_visits_every_sequence_once_per_epoch) {
  Synthetic s = synthetic_shards(3, 5, 4, 50);
  DataLoader dl;
  DataCursor c;
  c.shuffle_seed = 7;
  dataloader_init(dl, s.views, c);
  std::vector<int> seen(15, 0);
  std::vector<int32_t> in(4), tg(4);
  for (int i = 0; i < 15; i++) {
    // recover the sequence from its input tokens: ids[0] = (seq * 7) % V
    dataloader_next_batch(dl, 1, in.data(), tg.data());
    for (int q = 0; q < 15; q++)
      if ((q * 7) % 50 == in[0]) seen[q]++;
    CHECK(tg[3] == IGNORE_INDEX);
    CHECK(tg[0] == in[1]);  // shifted: target at 0 is the token at 1
  }
  for (int q = 0; q < 15; q++) CHECK(seen[q] == 1);
  // the cursor advances lazily: it sits at the end of the last shard until the next batch starts epoch 1
  CHECK(dl.cursor.epoch == 0 && dl.cursor.shard == 2 && dl.cursor.offset == 5);
  dataloader_next_batch(dl, 1, in.data(), tg.data());
  CHECK(dl.cursor.epoch == 1 && dl.cursor.shard == 0 && dl.cursor.offset == 1);
}

static void resume_exact(float dropout) {
  // N steps + save + load + N steps == 2N steps, bit for bit (weights, moments, losses, cursor, RNG).
  ModelConfig cfg = tiny_config();
  cfg.dropout = dropout;
  TrainConfig tc;
  tc.micro_batch_size = 3; tc.grad_accum_steps = 2; tc.learning_rate = 3e-3f; tc.warmup_steps = 2; tc.shuffle_seed = 5;
  BackendOptions opts;
  Synthetic s = synthetic_shards(2, 7, 8, cfg.vocab_size);
  const size_t N = 4, total = 2 * N;
  Engine a(cfg, tc, opts);
  a.set_train_data(s.views);
  TrainResult ra = a.train(total, total, nullptr, nullptr);
  Engine b(cfg, tc, opts);
  b.set_train_data(s.views);
  TrainResult rb1 = b.train(N, total, nullptr, nullptr);
  const std::string dir = "/tmp/engine_tests_resume_" + unique_suffix();
  b.save_checkpoint(dir + "/step-00000004", "{}");
  auto c = Engine::from_checkpoint(dir + "/step-00000004", tc, opts);
  c->set_train_data(s.views);
  CHECK(c->step() == N);
  TrainResult rc = c->train(N, total, nullptr, nullptr);
  for (size_t i = 0; i < N; i++) {
    CHECK(ra.losses[i] == rb1.losses[i]);
    CHECK(ra.losses[N + i] == rc.losses[i]);
  }
  std::vector<float> pa(a.backend().layout().total), pc(pa.size()), ma(pa.size()), va(pa.size()), mc(pa.size()), vc(pa.size());
  a.backend().get_params(pa.data());
  c->backend().get_params(pc.data());
  a.backend().get_optimizer_state(ma.data(), va.data());
  c->backend().get_optimizer_state(mc.data(), vc.data());
  CHECK(std::memcmp(pa.data(), pc.data(), pa.size() * 4) == 0);
  CHECK(std::memcmp(ma.data(), mc.data(), ma.size() * 4) == 0);
  CHECK(std::memcmp(va.data(), vc.data(), va.size() * 4) == 0);
  CHECK(a.cursor().epoch == c->cursor().epoch && a.cursor().shard == c->cursor().shard && a.cursor().offset == c->cursor().offset);
  CHECK(ra.losses.back() < ra.losses.front());
  remove_tree(dir);
}

TEST(resume_is_bit_exact) { resume_exact(0.0f); }
TEST(resume_is_bit_exact_with_dropout) { resume_exact(0.1f); }  // dropout masks come from the checkpointed RNG
