// test_zero.cpp — ZeRO shard arithmetic, the memory estimate, the vectorised CPU AdamW against the reference, and
// sharded checkpoints re-sharded on load.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include "checkpoint.h"
#include "cpu_adam.h"
#include "errors.h"
#include "families.h"
#include "fileio.h"
#include "harness.h"
#include "optimizer.h"
#include "zero.h"
#include "zero_checkpoint.h"

using namespace engine;

static ModelConfig gpt2_124m() {
  ModelConfig c;
  c.n_layer = 12; c.n_head = 12; c.n_embd = 768; c.n_positions = 1024; c.vocab_size = 50257;
  return c;
}
static ModelConfig gpt2_1558m() {
  ModelConfig c = gpt2_124m();
  c.n_layer = 48; c.n_head = 25; c.n_embd = 1600;
  return c;
}

TEST(zero_model_state_formulas_gpt2) {
  // Ψ as HF's num_parameters() reports (tied head counted once)
  CHECK(gpt2_param_layout(gpt2_124m()).total == 124439808);
  CHECK(gpt2_param_layout(gpt2_1558m()).total == 1557611200);
  // Hand-computed: S = ceil(Ψ/N) rounded up to 128; stage 0: 16Ψ, 1: 4Ψ + 12S, 2: 2Ψ + 14S, 3: 16S (bytes).
  struct Row { size_t psi; int n; size_t S; size_t bytes[4]; };
  const Row rows[] = {
      {124439808, 1, 124439808, {1991036928, 1991036928, 1991036928, 1991036928}},
      {124439808, 2, 62219904, {1991036928, 1244398080, 1119958272, 995518464}},
      {124439808, 4, 31110016, {1991036928, 871079424, 684419840, 497760256}},
      {124439808, 8, 15555072, {1991036928, 684420096, 466650624, 248881152}},
      {1557611200, 1, 1557611264, {24921779200, 24921779968, 24921780096, 24921780224}},
      {1557611200, 2, 778805632, {24921779200, 15576112384, 14018501248, 12460890112}},
      {1557611200, 4, 389402880, {24921779200, 10903279360, 8566862720, 6230446080}},
      {1557611200, 8, 194701440, {24921779200, 8566862080, 5841042560, 3115223040}},
  };
  for (const Row& r : rows) {
    CHECK(zero_shard_size(r.psi, r.n) == r.S);
    for (int st = 0; st <= 3; st++) {
      ModelStateBytes b = zero_model_state_bytes(r.psi, st, r.n, true, false);
      if (b.device() != r.bytes[st])
        std::printf("  Ψ=%zu N=%d stage %d: %zu, expected %zu\n", r.psi, r.n, st, b.device(), r.bytes[st]);
      CHECK(b.device() == r.bytes[st] && b.host == 0);
      // offload: device keeps bf16 params + grads (sharded per stage); host gets 18 bytes per shard element
      ModelStateBytes o = zero_model_state_bytes(r.psi, st, r.n, true, true);
      size_t opt_n = st >= 1 ? r.S : r.psi;
      CHECK(o.device() == 2 * (st >= 3 ? r.S : r.psi) + 2 * (st >= 2 ? r.S : r.psi));
      CHECK(o.host == 18 * opt_n);
    }
  }
  // fp32 training: 4 + 4 + 8 bytes, no separate master
  CHECK(zero_model_state_bytes(1000, 0, 1, false, false).device() == 16000);
  CHECK_THROWS_CODE(zero_model_state_bytes(1000, 4, 1, true, false), BadConfig);
}

TEST(zero_shards_cover_every_element_once) {
  const size_t totals[] = {1, 127, 128, 129, 1000003, gpt2_param_layout(gpt2_124m()).total};
  for (size_t total : totals)
    for (int n = 1; n <= 9; n++) {
      std::vector<unsigned char> seen(total, 0);
      const size_t S = zero_shard_size(total, n);
      CHECK(S % ZERO_ALIGN == 0 && S * n >= total && S * n < total + (size_t)n * ZERO_ALIGN + S);
      for (int r = 0; r < n; r++) {
        ShardRange g = zero_shard(total, {r, n, 0});
        CHECK(g.size() <= S && (g.begin == total || g.begin == (size_t)r * S));
        for (size_t i = g.begin; i < g.end; i++) seen[i]++;
      }
      bool once = true;
      for (unsigned char s : seen) once &= s == 1;
      CHECK(once);
    }
  // tensor slices: a shard's slices tile it exactly, in order, each inside its tensor
  ModelConfig c = gpt2_124m();
  c.n_layer = 2; c.n_embd = 48; c.n_head = 3; c.vocab_size = 101; c.n_positions = 17;
  ParamLayout lay = gpt2_param_layout(c);
  for (int n : {1, 3, 7}) {
    size_t covered = 0;
    for (int r = 0; r < n; r++) {
      ShardRange g = zero_shard(lay.total, {r, n, 0});
      size_t at = 0;
      for (const ShardSlice& s : shard_slices(lay, g)) {
        const ParamTensor& t = lay.tensors[s.tensor_index];
        CHECK(s.shard_offset == at && s.tensor_begin + s.count <= t.numel);
        CHECK(t.offset + s.tensor_begin == g.begin + s.shard_offset);
        at += s.count;
      }
      CHECK(at == g.size());
      covered += at;
    }
    CHECK(covered == lay.total);
  }
  // with 7 ranks some tensor straddles a shard boundary, and its ranks are the ones whose slices name it
  int straddling = 0;
  for (const auto& t : lay.tensors) {
    auto rr = tensor_ranks(lay, t.name, 7);
    straddling += rr.second > rr.first;
    for (int r = rr.first; r <= rr.second; r++) {
      bool found = false;
      for (const ShardSlice& s : shard_slices(lay, zero_shard(lay.total, {r, 7, 0})))
        found |= lay.tensors[s.tensor_index].name == t.name;
      CHECK(found);
    }
  }
  CHECK(straddling >= 1);
  CHECK_THROWS_CODE(zero_shard(100, {3, 3, 0}), BadConfig);
}

TEST(zero_estimate_activations_and_advice) {
  MemoryRequest q;
  q.model = gpt2_124m();
  q.B = 4; q.T = 1024; q.precision = "bf16";
  MemoryEstimate none = estimate_memory(q);
  q.recompute = "gelu";
  MemoryEstimate gelu = estimate_memory(q);
  q.recompute = "gelu-layernorm";
  MemoryEstimate ln = estimate_memory(q);
  const size_t N = 4 * 1024, C = 768, L = 12;
  // 'gelu' drops fch_gelu (N x 4C bf16) from every layer and adds one shared scratch of that size
  CHECK(none.activations - gelu.activations == (L - 1) * N * 4 * C * 2);
  // 'gelu-layernorm' also drops ln1 and ln2 (N x C each) from every layer
  CHECK(gelu.activations - ln.activations == L * 2 * N * C * 2);
  // the per-layer part dominates: roughly 16C bf16 + 4 fp32 stats + NH fp32 lse per token and layer
  const double per_layer = (double)N * (16 * C * 2 + 4 * 4 + 12 * 4);
  CHECK(none.activations > L * per_layer && none.activations < L * per_layer * 1.6);
  CHECK(none.device_total == none.state.device() + none.activations + none.buffers);
  CHECK(none.state.device() == 18 * none.n_params);        // the engine's fp32 gradients
  CHECK(none.state_paper.device() == 16 * none.n_params);  // the paper's 16Ψ
  // fp32 without flash attention stores (NH, T, T) probabilities per layer
  q.recompute = "none"; q.precision = "fp32";
  CHECK(estimate_memory(q).activations > L * 12 * (size_t)4 * 1024 * 1024 * 4);
  // advice: GPT-2 1.5B, B=8, T=1024 on one 24 GiB device does not fit; offload or recompute is suggested
  q.model = gpt2_1558m(); q.precision = "bf16"; q.B = 8;
  MemoryEstimate big = estimate_memory(q);
  const size_t GiB = (size_t)1 << 30;
  FitVerdict v = memory_fits(big, 24 * GiB);
  std::printf("  advice: %s\n", v.advice.c_str());
  CHECK(!v.ok);
  CHECK(v.advice.find("to fit: set parallelism.offload.optimizer to 'cpu' and training.recompute to 'gelu-layernorm'") != std::string::npos);
  CHECK(v.advice.find("parallelism.zeroStage") == std::string::npos);  // one device: sharding cannot help
  CHECK(memory_fits(big, 200 * GiB).ok);
  // four devices at stage 0: sharding is the first suggestion
  q.world_size = 4; q.B = 1;
  FitVerdict v4 = memory_fits(estimate_memory(q), 20 * GiB);
  CHECK(!v4.ok && v4.advice.find("to fit: set parallelism.zeroStage to") != std::string::npos);
  // host memory too small for offload
  q.offload = true; q.stage = 1;
  MemoryEstimate off = estimate_memory(q);
  CHECK(off.host_total > 0 && off.state.master == 0 && off.state.moments == 0);
  FitVerdict vh = memory_fits(off, 80 * GiB, 1 * GiB);
  CHECK(!vh.ok && vh.advice.find("pinned host memory") != std::string::npos);
  q.recompute = "everything";
  CHECK_THROWS_CODE(estimate_memory(q), BadConfig);
}

TEST(cpu_adamw_bit_identical_to_reference) {
  ModelConfig c = gpt2_124m();
  c.n_layer = 2; c.n_embd = 64; c.n_head = 4; c.vocab_size = 257; c.n_positions = 33;
  ParamLayout lay = gpt2_param_layout(c);
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> p0(lay.total), g(lay.total);
  for (auto& x : p0) x = 0.02f * nd(gen);
  for (auto& x : g) x = 0.1f * nd(gen);
  g[5] = 0.0f; g[6] = 1e-30f; g[7] = -3e4f;  // zeros, denormal squares, large values
  // a shard that starts and ends inside tensors
  const size_t begin = 1000, end = lay.total - 777, n = end - begin;
  std::vector<float> pa = p0, pb = p0, ma(n, 0.0f), va(n, 0.0f), mb(n, 0.0f), vb(n, 0.0f);
  std::vector<uint16_t> out(n);
  AdamWHyper hp;
  hp.lr = 1e-3f; hp.weight_decay = 0.1f; hp.grad_scale = 0.7f;
  for (long t = 1; t <= 4; t++) {
    hp.t = t;
    adamw_update(pa.data(), g.data(), ma.data(), va.data(), lay, begin, end, hp);
    cpu_adamw_update(pb.data(), g.data(), mb.data(), vb.data(), lay, begin, end, hp, out.data());
  }
  CHECK(std::memcmp(pa.data(), pb.data(), 4 * lay.total) == 0);
  CHECK(std::memcmp(ma.data(), mb.data(), 4 * n) == 0 && std::memcmp(va.data(), vb.data(), 4 * n) == 0);
  bool bf_ok = true;
  for (size_t j = 0; j < n; j++) bf_ok &= out[j] == f32_to_bf16(pb[begin + j]);
  CHECK(bf_ok);
  CHECK(pb[0] == p0[0] && pb[end] == p0[end]);  // outside the shard: untouched
  // bf16 rounding: nearest even, NaN stays NaN
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(1.00390625f) == 0x3f80);   // exactly halfway, rounds to even
  CHECK(f32_to_bf16(1.01171875f) == 0x3f82);   // halfway above odd 0x3f81: up
  CHECK((f32_to_bf16(std::nanf("")) & 0x7fff) > 0x7f80);
  std::printf("  cpu AdamW code path: %s\n", cpu_adamw_isa());
}

static std::string catch_message(const std::function<void()>& f) {
  try { f(); } catch (const EngineError& e) { return std::string(error_code_name(e.code)) + ": " + e.what(); }
  return "";
}

TEST(sharded_checkpoint_reshards_bit_for_bit) {
  const std::string root = "/tmp/engine_tests_zero_" + unique_suffix();
  ModelConfig c = gpt2_124m();
  c.n_layer = 2; c.n_embd = 32; c.n_head = 2; c.vocab_size = 97; c.n_positions = 16;
  ParamLayout lay = gpt2_param_layout(c);
  CheckpointState full;
  full.model = c;
  full.step = 123;
  full.rng.s[0] = 0xfedcba9876543210ull; full.rng.s[3] = 1;
  full.cursor = {2, 3, 4, 5};
  full.data = {7, 1000, 64, 0xffffffffffffffffull};
  full.config_json = "{\"a\": 1}";
  std::mt19937 gen(3);
  std::normal_distribution<float> nd;
  for (auto* b : {&full.params, &full.m, &full.v}) {
    b->resize(lay.total);
    for (auto& x : *b) x = nd(gen);
  }
  const int W = 3;
  std::vector<RankShard> shards;
  for (int r = 0; r < W; r++) {
    ShardRange g = zero_shard(lay.total, {r, W, 0});
    shards.push_back({g, full.params.data() + g.begin, full.m.data() + g.begin, full.v.data() + g.begin});
  }
  const std::string d = root + "/step-00000123";
  CheckpointInfo info = sharded_checkpoint_save(d, full, shards);
  CHECK(!info.existed && is_sharded_checkpoint(d) && sharded_checkpoint_verify(d) == 123);
  CHECK(path_exists(d + "/rank-00002-of-00003.bin"));
  for (int n : {1, 2, 3, 4, -1, -4}) {  // negative: the same with 100-byte read blocks (values cut across blocks)
    sharded_checkpoint_set_read_block(n < 0 ? 100 : 0);
    n = n < 0 ? -n : n;
    std::vector<float> p, m, v;
    for (int r = 0; r < n; r++) {
      ShardRange g;
      CheckpointState s = sharded_checkpoint_load(d, n, r, &g);
      CHECK(g.begin == p.size() && s.params.size() == g.size());
      CHECK(s.step == 123 && s.rng.s[0] == full.rng.s[0] && s.data.hash == full.data.hash && s.cursor.offset == 4);
      p.insert(p.end(), s.params.begin(), s.params.end());
      m.insert(m.end(), s.m.begin(), s.m.end());
      v.insert(v.end(), s.v.begin(), s.v.end());
    }
    CHECK(p.size() == lay.total && std::memcmp(p.data(), full.params.data(), 4 * lay.total) == 0);
    CHECK(std::memcmp(m.data(), full.m.data(), 4 * lay.total) == 0);
    CHECK(std::memcmp(v.data(), full.v.data(), 4 * lay.total) == 0);
  }
  sharded_checkpoint_set_read_block(0);
  // conversion to the single-file format (what HF export and the one-GPU engine read)
  checkpoint_from_sharded(d, root + "/single");
  CheckpointState one = checkpoint_load(root + "/single");
  CHECK(one.step == 123 && std::memcmp(one.params.data(), full.params.data(), 4 * lay.total) == 0);
  CHECK(std::memcmp(one.v.data(), full.v.data(), 4 * lay.total) == 0 && one.config_json.find("\"a\"") != std::string::npos);
  // the single-file entry points read sharded checkpoints too (a one-device run resumes from a ZeRO one)
  CHECK(checkpoint_verify(d) == 123);
  CheckpointState whole = checkpoint_load(d);
  CHECK(whole.params.size() == lay.total && std::memcmp(whole.m.data(), full.m.data(), 4 * lay.total) == 0);
  // same step again: first commit wins
  CHECK(sharded_checkpoint_save(d, full, shards).existed);
  // corrupt rank file: BAD_CHECKPOINT naming it; ranks that do not touch it still load
  const std::string f1 = d + "/rank-00001-of-00003.bin";
  const std::string good = read_text_file(f1);
  std::string bad = good;
  bad[100] ^= 4;
  write_file_atomic(f1, bad);
  std::string msg = catch_message([&] { sharded_checkpoint_load(d, 1, 0, nullptr); });
  CHECK(msg.find("BAD_CHECKPOINT") == 0 && msg.find("rank-00001-of-00003.bin") != std::string::npos);
  CHECK(sharded_checkpoint_load(d, 3, 0, nullptr).params.size() > 0);
  std::remove(f1.c_str());
  msg = catch_message([&] { sharded_checkpoint_verify(d); });
  CHECK(msg.find("BAD_CHECKPOINT") == 0 && msg.find("rank-00001-of-00003.bin is missing") != std::string::npos);
  write_file_atomic(f1, good);
  CHECK(sharded_checkpoint_verify(d) == 123);
  // edited manifest, missing DONE
  std::string man = read_text_file(d + "/manifest.json");
  write_file_atomic(d + "/manifest.json", man + " ");
  CHECK_THROWS_CODE(sharded_checkpoint_verify(d), BadCheckpoint);
  write_file_atomic(d + "/manifest.json", man);
  std::remove((d + "/DONE").c_str());
  CHECK_THROWS_CODE(sharded_checkpoint_load(d, 2, 1, nullptr), BadCheckpoint);
  remove_tree(root);
}

// Ranks spread over processes: each "process" writes its own ranks into the agreed staging folder, one commits.
TEST(sharded_checkpoint_two_phase_across_processes) {
  const std::string root = "/tmp/engine_tests_zero2_" + unique_suffix();
  ModelConfig c = gpt2_124m();
  c.n_layer = 2; c.n_embd = 32; c.n_head = 2; c.vocab_size = 97; c.n_positions = 16;
  ParamLayout lay = gpt2_param_layout(c);
  CheckpointState full;
  full.model = c;
  full.step = 7;
  full.cursor = {1, 0, 9, 5};
  for (auto* b : {&full.params, &full.m, &full.v}) {
    b->resize(lay.total);
    for (size_t i = 0; i < lay.total; i++) (*b)[i] = (float)(i % 1000) * 0.001f + (b == &full.m ? 1.f : 0.f);
  }
  const int W = 4;
  auto part = [&](int r) {
    ShardRange g = zero_shard(lay.total, {r, W, 0});
    return std::make_pair(r, RankShard{g, full.params.data() + g.begin, full.m.data() + g.begin, full.v.data() + g.begin});
  };
  const std::string d = root + "/step-00000007";
  const std::string staging = sharded_checkpoint_staging(d, 0x1234);
  CHECK(staging == root + "/.step-00000007.tmp-g0000000000001234");
  sharded_checkpoint_write_ranks(staging, full, W, {part(2), part(3)});  // process B (ranks 2, 3)
  // committing before every rank wrote its file is an IO error naming the missing rank, and commits nothing
  CHECK_THROWS_CODE(sharded_checkpoint_commit(staging, d, full, W), IO);
  CHECK(!path_exists(d));
  sharded_checkpoint_write_ranks(staging, full, W, {part(0), part(1)});  // process A (ranks 0, 1)
  CheckpointInfo info = sharded_checkpoint_commit(staging, d, full, W);
  CHECK(!info.existed && !path_exists(staging) && sharded_checkpoint_verify(d) == 7);
  CHECK(!path_exists(d + "/rank-00000-of-00004.bin.json"));
  CheckpointInfo again = sharded_checkpoint_info(d);
  CHECK(again.step == 7 && again.sha256 == info.sha256);
  CheckpointState whole = checkpoint_load(d);  // re-sharded to one rank
  CHECK(std::memcmp(whole.params.data(), full.params.data(), 4 * lay.total) == 0);
  CHECK(std::memcmp(whole.m.data(), full.m.data(), 4 * lay.total) == 0 && whole.cursor.offset == 9);
  // a second commit of the same step (another attempt's staging) returns the committed one
  const std::string st2 = sharded_checkpoint_staging(d, 99);
  sharded_checkpoint_write_ranks(st2, full, W, {part(0), part(1), part(2), part(3)});
  CHECK(sharded_checkpoint_commit(st2, d, full, W).existed && !path_exists(st2));
  remove_tree(root);
}
