// offload_engine_test.cpp — the cuda backend with parallelism.offload.optimizer = 'cpu' against the same backend
// without offload (GPU host only; test/gpu/run.sh, stage offload). A 4-layer GPT-2 on tinyshakespeare,
// 2 micro-batches per step:
//   curve      16 steps: offload's losses equal the GPU optimizer's within bf16 tolerance (fp32: 1e-5), and the
//              final weights agree (the two AdamW differ only in FMA contraction / sqrt rounding)
//   state      get_params / get_optimizer_state after offloaded steps match the GPU optimizer's
//   resume     8 steps, state out, a new offloaded backend, state in, 8 more == 16 straight steps, bit for bit
//              (also through Backend::host_state, in place, as engine checkpoints do)
//   skip       a step above max_loss is not applied: the weights stay bitwise the same
//   delayed    the one-step-delayed update trains (loss falls) and is not identical to the exact mode
//   zero       stages 1, 2, 3 on one GPU with offload give the stage-0 curve (bf16 tolerance)
// Usage: offload_engine_test <tinyshakespeare.i32>. Exit code = number of failed checks.
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>
#include "backend.h"
#include "errors.h"

using namespace engine;
static int failures = 0;
static std::vector<int32_t> corpus;

static void report(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  [%s] ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  failures += !ok;
  fflush(stdout);
}

static ModelConfig small() {
  ModelConfig m;
  m.n_layer = 4; m.n_head = 4; m.n_embd = 256; m.n_positions = 256; m.vocab_size = 50257; m.init_seed = 11;
  return m;
}
static const size_t B = 4, T = 128, ACC = 2;

struct Run {
  std::vector<double> losses;
  std::vector<bool> applied;
  std::vector<float> params, m, v;
};

static std::unique_ptr<Backend> make(const char* prec, const char* offload, int stage = 0, bool delayed = false) {
  BackendOptions o;
  o.name = "cuda"; o.precision = prec; o.offload = offload; o.zero_stage = stage; o.offload_delayed = delayed;
  return create_backend(small(), o);
}
static std::vector<float> init_params(const ParamLayout& lay) {
  std::vector<float> w(lay.total);
  gpt2_init_params(small(), lay, w.data());
  return w;
}
// steps [from, to) of the fixed schedule; step `skip` (1-based) gets max_loss 0 (not applied)
static void train(Backend& be, Run& r, int from, int to, int skip = -1) {
  std::vector<int32_t> in(ACC * B * T), tg(ACC * B * T);
  for (int s = from; s < to; s++) {
    Batch mb[ACC];
    for (size_t a = 0; a < ACC; a++) {
      for (size_t b = 0; b < B; b++) {
        size_t pos = ((size_t)s * ACC * B + a * B + b) * (T + 1) % (corpus.size() - T - 1);
        for (size_t t = 0; t < T; t++) {
          in[(a * B + b) * T + t] = corpus[pos + t];
          tg[(a * B + b) * T + t] = t + 1 < T ? corpus[pos + t + 1] : IGNORE_INDEX;
        }
      }
      mb[a].inputs = in.data() + a * B * T; mb[a].targets = tg.data() + a * B * T; mb[a].B = B; mb[a].T = T;
    }
    AdamWHyper hp;
    hp.lr = 1e-3f; hp.weight_decay = 0.1f; hp.t = s + 1;
    const float dloss = 1.0f / (float)(ACC * B * (T - 1));
    be.step_async(mb, ACC, dloss, hp, 1.0f, s + 1 == skip ? 0.0 : 1e4);
    StepOutput o = be.step_wait();
    r.losses.push_back(o.loss_sum * dloss);
    r.applied.push_back(o.applied);
  }
}
static void state(Backend& be, Run& r) {
  const size_t n = be.layout().total;
  r.params.resize(n); r.m.resize(n); r.v.resize(n);
  be.get_params(r.params.data());
  be.get_optimizer_state(r.m.data(), r.v.data());
}
static Run full(const char* prec, const char* offload, int steps, int stage = 0, bool delayed = false) {
  auto be = make(prec, offload, stage, delayed);
  be->set_params(init_params(be->layout()).data());
  Run r;
  train(*be, r, 0, steps);
  state(*be, r);
  return r;
}
static double max_rel_loss(const Run& a, const Run& b) {
  double d = 0;
  for (size_t i = 0; i < a.losses.size(); i++) d = std::max(d, std::fabs(a.losses[i] - b.losses[i]) / std::fabs(a.losses[i]));
  return d;
}
static double max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); i++) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  return d;
}
static double absmax(const std::vector<float>& a) {
  double d = 0;
  for (float x : a) d = std::max(d, (double)std::fabs(x));
  return d;
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: offload_engine_test <tinyshakespeare.i32>\n"); return 2; }
  {
    std::ifstream f(argv[1], std::ios::binary);
    if (!f) { fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    f.seekg(0, std::ios::end);
    corpus.resize((size_t)f.tellg() / 4);
    f.seekg(0);
    f.read((char*)corpus.data(), corpus.size() * 4);
  }
  try {
    const int N = 16;
    printf("curve (%d steps, %zu x %zux%zu tokens)\n", N, ACC, B, T);
    Run gpu = full("bf16", "none", N), cpu = full("bf16", "cpu", N);
    double dl = max_rel_loss(gpu, cpu);
    report(dl < 1e-2 && cpu.losses.back() < cpu.losses.front() - 0.5,
           "bf16: offload losses %.4f -> %.4f, GPU optimizer %.4f -> %.4f, max rel diff %.2e (< 1e-2)", cpu.losses.front(),
           cpu.losses.back(), gpu.losses.front(), gpu.losses.back(), dl);
    // In bf16 the two optimizers' last-bit differences (FMA contraction on the GPU) occasionally flip a weight's
    // bf16 rounding, the forward changes slightly, and Adam — whose per-element step is ~lr whatever the gradient's
    // size — amplifies sign flips of near-zero gradients: elements may drift apart by up to ~N*lr in N steps
    // (measured on the H100: 8.2e-3 after 16 steps at lr 1e-3). The fp32 check below is the tight one.
    report(max_abs(gpu.params, cpu.params) < 16 * 1e-3, "bf16: final weights max |diff| %.2e (< N*lr = 1.6e-2; absmax %.2e)",
           max_abs(gpu.params, cpu.params), absmax(gpu.params));
    Run g32 = full("fp32", "none", N), c32 = full("fp32", "cpu", N);
    report(max_rel_loss(g32, c32) < 1e-5, "fp32: max rel loss diff %.2e (< 1e-5)", max_rel_loss(g32, c32));
    report(max_abs(g32.params, c32.params) < 1e-5 * absmax(g32.params) && max_abs(g32.m, c32.m) < 1e-4 * absmax(g32.m) &&
               max_abs(g32.v, c32.v) < 1e-4 * absmax(g32.v),
           "state: fp32 params / m / v after %d steps: max |diff| %.2e / %.2e / %.2e", N, max_abs(g32.params, c32.params),
           max_abs(g32.m, c32.m), max_abs(g32.v, c32.v));

    printf("resume\n");
    {
      auto a = make("bf16", "cpu");
      a->set_params(init_params(a->layout()).data());
      Run r;
      train(*a, r, 0, N / 2);
      Run mid;
      state(*a, mid);
      a.reset();
      auto b = make("bf16", "cpu");
      b->set_params(mid.params.data());
      b->set_optimizer_state(mid.m.data(), mid.v.data());
      train(*b, r, N / 2, N);
      state(*b, r);
      bool same = r.losses == cpu.losses && r.params == cpu.params && r.m == cpu.m && r.v == cpu.v;
      report(same, "8 steps + checkpoint + 8 steps on a new offloaded backend == 16 steps, bit for bit (last loss %.6f vs %.6f)",
             r.losses.back(), cpu.losses.back());
    }

    printf("resume in place\n");  // what Engine checkpoints do: read and load the pinned state (Backend::host_state)
    {
      auto a = make("bf16", "cpu");
      a->set_params(init_params(a->layout()).data());
      Run r;
      train(*a, r, 0, N / 2);
      const size_t n = a->layout().total;
      Backend::HostState ha = a->host_state();
      const bool have = ha.params && ha.m && ha.v;
      std::vector<float> p, m, v;
      if (have) p.assign(ha.params, ha.params + n), m.assign(ha.m, ha.m + n), v.assign(ha.v, ha.v + n);
      a.reset();
      bool same = false;
      if (have) {
        auto b = make("bf16", "cpu");
        Backend::HostState hb = b->host_state();
        if (hb.params && hb.m && hb.v) {
          std::memcpy(hb.params, p.data(), n * 4), std::memcpy(hb.m, m.data(), n * 4), std::memcpy(hb.v, v.data(), n * 4);
          b->host_state_written();
          train(*b, r, N / 2, N);
          state(*b, r);
          same = r.losses == cpu.losses && r.params == cpu.params && r.m == cpu.m && r.v == cpu.v;
        }
      }
      report(have && same, "host_state: 8 steps, pinned state read and written in place on a new backend, 8 more == 16 "
             "steps, bit for bit");
    }

    printf("skip\n");
    {
      auto a = make("bf16", "cpu");
      a->set_params(init_params(a->layout()).data());
      Run r, before, after;
      train(*a, r, 0, 2);
      state(*a, before);
      train(*a, r, 2, 3, 3);
      state(*a, after);
      report(!r.applied[2] && before.params == after.params && before.m == after.m,
             "a step above max_loss is reported not applied and leaves weights and moments untouched");
    }

    printf("delayed\n");
    {
      Run d = full("bf16", "cpu", N, 0, true);
      double dd = max_rel_loss(cpu, d);
      // at lr 1e-3 on a 4-layer model the curve is steep, so being one update behind costs ~10% of loss early on
      // (measured on the H100: 10.83 -> 7.56 against 6.82 exact, max rel diff 0.109); it must still train and differ
      report(d.losses.back() < d.losses.front() - 2.0 && dd > 0 && dd < 0.25,
             "one-step-delayed update: %.4f -> %.4f (exact %.4f), max rel diff to exact %.2e (> 0, < 0.25)", d.losses.front(),
             d.losses.back(), cpu.losses.back(), dd);
    }

    printf("zero stages with offload (one GPU)\n");
    for (int st = 1; st <= 3; st++) {
      Run z = full("bf16", "cpu", 8, st);
      double dz = 0;
      for (size_t i = 0; i < z.losses.size(); i++) dz = std::max(dz, std::fabs(z.losses[i] - cpu.losses[i]) / cpu.losses[i]);
      report(dz < 1e-2, "stage %d + offload: 8 losses vs stage 0 + offload, max rel diff %.2e", st, dz);
    }
  } catch (const EngineError& e) {
    printf("  [FAIL] %s: %s (%s)\n", error_code_name(e.code), e.what(), e.hint.c_str());
    failures++;
  }
  printf("%d failure(s)\n", failures);
  return failures;
}
