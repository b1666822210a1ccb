// cuda_backend_test.cpp — the cuda backend against the cpu reference backend (GPU host only; run by
// test/gpu/run.sh, which also runs the PyTorch parity script on the files this program writes).
//
//   parity      one micro-batch (and two accumulated): loss, per-tensor gradient cosine, logits, eval stats,
//               cuda fp32 vs cpu (tight) and cuda bf16 vs cpu (the bar: loss 1e-2 rel, cosine >= 0.99)
//   recompute   gelu / gelu-layernorm recompute give the same gradients as none
//   determinism two identical 3-step runs are bitwise equal
//   checkpoint  train on cuda -> checkpoint -> resume on cpu and on cuda (and the other way): same losses
//   curve       50 steps on tinyshakespeare through engine::Engine on cpu, cuda fp32, cuda bf16 (+ dumps for torch)
//   generate    KV-cache logits vs full forward logits; greedy generation cuda fp32 == cpu
//   errors      out of memory (model, batch) and a non-finite loss throw coded errors; the process goes on
//
// Usage: cuda_backend_test <data.i32> <outdir>. Exit code = number of failed checks.
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include "backend.h"
#include "engine.h"
#include "errors.h"

using namespace engine;
static int failures = 0, passes = 0;
static std::string outdir;
static std::vector<int32_t> corpus;

static void report(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  [%s] ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (!ok) failures++;
  else passes++;
  fflush(stdout);
}

static ModelConfig tiny() {
  ModelConfig m;
  m.n_layer = 2; m.n_head = 4; m.n_embd = 128; m.n_positions = 128; m.vocab_size = 50257; m.init_seed = 7;
  return m;
}
static BackendOptions opts(const char* name, const char* prec, const char* rc = "none") {
  BackendOptions o;
  o.name = name; o.precision = prec; o.recompute = rc;
  return o;
}
// (B, T) inputs from the corpus at `off`, targets shifted, with some masked positions
static void make_batch(size_t B, size_t T, size_t off, std::vector<int32_t>& in, std::vector<int32_t>& tg) {
  in.resize(B * T); tg.resize(B * T);
  for (size_t b = 0; b < B; b++)
    for (size_t t = 0; t < T; t++) {
      size_t i = off + b * (T + 1) + t;
      in[b * T + t] = corpus[i % corpus.size()];
      tg[b * T + t] = corpus[(i + 1) % corpus.size()];
    }
  for (size_t t = 0; t < 5; t++) tg[t] = IGNORE_INDEX;  // a masked prompt in row 0
  for (size_t b = 0; b < B; b++) tg[b * T + T - 1] = IGNORE_INDEX;
}
static size_t count_targets(const std::vector<int32_t>& tg) {
  size_t n = 0;
  for (int32_t x : tg) n += x != IGNORE_INDEX;
  return n;
}
static double cosine(const float* a, const float* b, size_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < n; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
  return ab / (std::sqrt(aa * bb) + 1e-30);
}
static double relerr(const float* a, const float* b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; i++) { d += (double)(a[i] - b[i]) * (a[i] - b[i]); r += (double)b[i] * b[i]; }
  return std::sqrt(d / (r + 1e-30));
}
static void write_bin(const std::string& name, const void* p, size_t bytes) {
  std::ofstream f(outdir + "/" + name, std::ios::binary);
  f.write((const char*)p, bytes);
}

// per-tensor gradient cosine of `got` against `ref`; returns the minimum and prints the worst tensor
static double grad_cosines(const ParamLayout& lay, const std::vector<float>& got, const std::vector<float>& ref,
                           std::string* worst) {
  double mn = 1;
  for (const ParamTensor& t : lay.tensors) {
    double c = cosine(got.data() + t.offset, ref.data() + t.offset, t.numel);
    double nr = 0;
    for (size_t i = 0; i < t.numel; i++) nr += std::fabs(ref[t.offset + i]);
    if (nr == 0) continue;  // e.g. wpe rows never used
    if (c < mn) { mn = c; *worst = t.name; }
  }
  return mn;
}

// ------------------------------------------------------------------------------------------------ parity
static void test_parity() {
  printf("parity: cuda vs cpu, one micro-batch and two accumulated (L=2 C=128 V=50257, B=4 T=64)\n");
  ModelConfig m = tiny();
  auto cpu = create_backend(m, opts("cpu", "fp32"));
  std::vector<float> params(cpu->layout().total);
  gpt2_init_params(m, cpu->layout(), params.data());
  cpu->set_params(params.data());
  const size_t B = 4, T = 64;
  std::vector<int32_t> in1, tg1, in2, tg2;
  make_batch(B, T, 1000, in1, tg1);
  make_batch(B, T, 9000, in2, tg2);
  size_t n1 = count_targets(tg1), n12 = n1 + count_targets(tg2);
  cpu->zero_grad();
  double l_cpu = cpu->forward_backward({in1.data(), tg1.data(), B, T}, 1.f / n1);
  std::vector<float> g_cpu(params.size()), g2_cpu(params.size()), logits_cpu(B * T * m.vocab_size);
  cpu->get_grads(g_cpu.data());
  cpu->zero_grad();
  double l12_cpu = cpu->forward_backward({in1.data(), tg1.data(), B, T}, 1.f / n12) +
                   cpu->forward_backward({in2.data(), tg2.data(), B, T}, 1.f / n12);
  cpu->get_grads(g2_cpu.data());
  cpu->forward_logits({in1.data(), tg1.data(), B, T}, logits_cpu.data());
  EvalStats e_cpu = cpu->forward_eval({in1.data(), tg1.data(), B, T});
  for (const char* prec : {"fp32", "bf16"}) {
    bool fp32 = std::string(prec) == "fp32";
    double ltol = fp32 ? 1e-4 : 1e-2, ctol = fp32 ? 0.9999 : 0.99;
    auto gpu = create_backend(m, opts("cuda", prec));
    gpu->set_params(params.data());
    gpu->zero_grad();
    double l = gpu->forward_backward({in1.data(), tg1.data(), B, T}, 1.f / n1);
    std::vector<float> g(params.size()), logits(logits_cpu.size());
    gpu->get_grads(g.data());
    std::string worst;
    double rl = std::fabs(l - l_cpu) / l_cpu, mc = grad_cosines(gpu->layout(), g, g_cpu, &worst);
    report(rl < ltol, "%s loss %.6f vs cpu %.6f (rel %.2e, tol %.0e)", prec, l / n1, l_cpu / n1, rl, ltol);
    report(mc >= ctol, "%s min per-tensor grad cosine %.6f (%s), tol %.4f; global grad rel err %.2e", prec, mc,
           worst.c_str(), ctol, relerr(g.data(), g_cpu.data(), g.size()));
    gpu->zero_grad();
    double l12 = gpu->forward_backward({in1.data(), tg1.data(), B, T}, 1.f / n12) +
                 gpu->forward_backward({in2.data(), tg2.data(), B, T}, 1.f / n12);
    gpu->get_grads(g.data());
    mc = grad_cosines(gpu->layout(), g, g2_cpu, &worst);
    report(std::fabs(l12 - l12_cpu) / l12_cpu < ltol && mc >= ctol, "%s 2 accumulated micro-batches: loss rel %.2e, min cosine %.6f (%s)",
           prec, std::fabs(l12 - l12_cpu) / l12_cpu, mc, worst.c_str());
    double gn = gpu->grad_norm_sq(), gn_cpu = cpu->grad_norm_sq();
    report(std::fabs(gn - gn_cpu) / gn_cpu < (fp32 ? 1e-4 : 2e-2), "%s grad norm^2 %.6g vs cpu %.6g", prec, gn, gn_cpu);
    gpu->forward_logits({in1.data(), tg1.data(), B, T}, logits.data());
    double rlog = relerr(logits.data(), logits_cpu.data(), logits.size());
    report(rlog < (fp32 ? 1e-5 : 2e-2), "%s logits rel err %.2e", prec, rlog);
    EvalStats e = gpu->forward_eval({in1.data(), tg1.data(), B, T});
    report(e.n_targets == e_cpu.n_targets && std::fabs(e.loss_sum - e_cpu.loss_sum) / e_cpu.loss_sum < ltol &&
               std::abs((long)e.n_correct - (long)e_cpu.n_correct) <= (fp32 ? 0 : 3),
           "%s eval: loss sum %.4f vs %.4f, correct %zu vs %zu of %zu", prec, e.loss_sum, e_cpu.loss_sum, e.n_correct,
           e_cpu.n_correct, e.n_targets);
    // recompute modes give the same gradients
    if (!fp32)
      for (const char* rc : {"gelu", "gelu-layernorm"}) {
        auto r = create_backend(m, opts("cuda", prec, rc));
        r->set_params(params.data());
        r->zero_grad();
        double lr_ = r->forward_backward({in1.data(), tg1.data(), B, T}, 1.f / n1);
        std::vector<float> gr(params.size());
        r->get_grads(gr.data());
        gpu->zero_grad();
        gpu->forward_backward({in1.data(), tg1.data(), B, T}, 1.f / n1);
        gpu->get_grads(g.data());
        double c = grad_cosines(r->layout(), gr, g, &worst);
        report(lr_ == l && c > 0.99999, "recompute=%s: loss %s, min cosine vs none %.7f", rc, lr_ == l ? "identical" : "DIFFERS", c);
      }
  }
}

// ------------------------------------------------------------------------------------------------ engine-level
static TrainConfig train_cfg(size_t B, size_t accum) {
  TrainConfig t;
  t.micro_batch_size = B; t.block_size = 64; t.grad_accum_steps = accum;
  t.learning_rate = 1e-3f; t.warmup_steps = 5; t.min_lr_ratio = 0.1f; t.weight_decay = 0.1f; t.grad_clip = 1.0f;
  return t;
}
static std::vector<ShardView> shards(size_t T) {
  static std::vector<int32_t> ids;
  ids.assign(corpus.begin(), corpus.begin() + (corpus.size() / T) * T);
  ShardView s;
  s.n_seq = ids.size() / T; s.block_size = T; s.input_ids = ids.data(); s.labels = ids.data();
  return {s};
}
static std::vector<float> run_steps(Engine& e, size_t n, size_t total) {
  return e.train(n, total, nullptr, nullptr).losses;
}

static void test_engine() {
  printf("engine: determinism, checkpoint transfer between backends, 50-step loss curves\n");
  ModelConfig m = tiny();
  TrainConfig tc = train_cfg(8, 2);
  // determinism: two identical runs are bitwise equal
  {
    Engine a(m, tc, opts("cuda", "bf16")), b(m, tc, opts("cuda", "bf16"));
    a.set_train_data(shards(64)); b.set_train_data(shards(64));
    auto la = run_steps(a, 3, 50), lb = run_steps(b, 3, 50);
    std::vector<float> pa(a.backend().layout().total), pb(pa.size());
    a.backend().get_params(pa.data()); b.backend().get_params(pb.data());
    report(la == lb && std::memcmp(pa.data(), pb.data(), pa.size() * 4) == 0, "bf16 determinism: 3 steps twice, losses %s, params %s",
           la == lb ? "identical" : "DIFFER", std::memcmp(pa.data(), pb.data(), pa.size() * 4) == 0 ? "identical" : "DIFFER");
  }
  // checkpoints: cuda -> cpu and cpu -> cuda
  for (int dir = 0; dir < 2; dir++) {
    const char* from = dir == 0 ? "cuda" : "cpu";
    Engine a(m, tc, opts(from, dir == 0 ? "bf16" : "fp32"));
    a.set_train_data(shards(64));
    run_steps(a, 4, 50);
    std::string ck = outdir + "/ckpt-" + from + "/step-00000004";
    a.save_checkpoint(ck, "{}");
    auto on_cpu = Engine::from_checkpoint(ck, tc, opts("cpu", "fp32"));
    auto on_gpu = Engine::from_checkpoint(ck, tc, opts("cuda", "fp32"));
    auto on_gpu16 = Engine::from_checkpoint(ck, tc, opts("cuda", "bf16"));
    for (Engine* e : {on_cpu.get(), on_gpu.get(), on_gpu16.get()}) e->set_train_data(shards(64));
    auto lc = run_steps(*on_cpu, 3, 50), lg = run_steps(*on_gpu, 3, 50), lh = run_steps(*on_gpu16, 3, 50);
    double d32 = 0, d16 = 0;
    for (int i = 0; i < 3; i++) { d32 = std::max(d32, (double)std::fabs(lg[i] - lc[i]) / lc[i]); d16 = std::max(d16, (double)std::fabs(lh[i] - lc[i]) / lc[i]); }
    report(on_cpu->step() == 7 && d32 < 1e-4 && d16 < 1e-2,
           "checkpoint written by %s at step 4, resumed for 3 steps: cpu %.5f %.5f %.5f, cuda fp32 max rel %.1e, cuda bf16 max rel %.1e",
           from, lc[0], lc[1], lc[2], d32, d16);
  }
  // 50-step curves on tinyshakespeare; dump init params and the batches for the PyTorch script
  {
    const size_t steps = 50;
    Engine c(m, tc, opts("cpu", "fp32")), g32(m, tc, opts("cuda", "fp32")), g16(m, tc, opts("cuda", "bf16"));
    std::vector<float> p0(c.backend().layout().total);
    c.backend().get_params(p0.data());
    write_bin("curve_init_params.f32", p0.data(), p0.size() * 4);
    {  // the exact batch sequence the engine will use (same loader, same cursor)
      DataLoader dl;
      dataloader_init(dl, shards(64), DataCursor{0, 0, 0, tc.shuffle_seed});
      std::vector<int32_t> in(steps * 2 * 8 * 64), tg(in.size());
      for (size_t s = 0; s < steps * 2; s++) dataloader_next_batch(dl, 8, in.data() + s * 8 * 64, tg.data() + s * 8 * 64);
      write_bin("curve_inputs.i32", in.data(), in.size() * 4);
      write_bin("curve_targets.i32", tg.data(), tg.size() * 4);
    }
    for (Engine* e : {&c, &g32, &g16}) e->set_train_data(shards(64));
    auto lc = run_steps(c, steps, steps), l32 = run_steps(g32, steps, steps), l16 = run_steps(g16, steps, steps);
    double d32 = 0, d16 = 0;
    for (size_t i = 0; i < steps; i++) {
      d32 = std::max(d32, (double)std::fabs(l32[i] - lc[i]) / lc[i]);
      d16 = std::max(d16, (double)std::fabs(l16[i] - lc[i]) / lc[i]);
    }
    std::ofstream f(outdir + "/curves.json");
    f << "{\"cpu\":[";
    for (size_t i = 0; i < steps; i++) f << (i ? "," : "") << lc[i];
    f << "],\"cuda_fp32\":[";
    for (size_t i = 0; i < steps; i++) f << (i ? "," : "") << l32[i];
    f << "],\"cuda_bf16\":[";
    for (size_t i = 0; i < steps; i++) f << (i ? "," : "") << l16[i];
    f << "]}\n";
    report(d32 < 1e-3, "50-step curve cuda fp32 vs cpu: max rel diff %.2e (first %.4f last %.4f vs %.4f)", d32, l32[0], l32[steps - 1], lc[steps - 1]);
    report(d16 < 3e-2, "50-step curve cuda bf16 vs cpu: max rel diff %.2e (last %.4f vs %.4f)", d16, l16[steps - 1], lc[steps - 1]);
  }
}

// ------------------------------------------------------------------------------------------------ generation
static void test_generate() {
  printf("generation: KV cache vs full forward, greedy tokens cuda vs cpu\n");
  ModelConfig m = tiny();
  for (const char* prec : {"fp32", "bf16"}) {
    auto gpu = create_backend(m, opts("cuda", prec));
    std::vector<float> params(gpu->layout().total);
    gpt2_init_params(m, gpu->layout(), params.data());
    gpu->set_params(params.data());
    const size_t T = 24, V = m.vocab_size;
    std::vector<int32_t> seq(corpus.begin() + 500, corpus.begin() + 500 + T), tg(T, IGNORE_INDEX);
    std::vector<float> full(T * V), kv(V), kvd(2 * V);
    gpu->forward_logits({seq.data(), tg.data(), 1, T}, full.data());
    gpu->kv_begin(2, 64);
    gpu->kv_prefill(1, seq.data(), 10, kv.data());  // slot 1: first 10 tokens
    double e1 = relerr(kv.data(), full.data() + 9 * V, V);
    gpu->kv_prefill(0, seq.data(), 5, kv.data());   // slot 0: first 5 tokens
    size_t slots[2] = {1, 0};
    int32_t toks[2] = {seq[10], seq[5]};
    gpu->kv_decode(slots, toks, 2, kvd.data());
    double e2 = relerr(kvd.data(), full.data() + 10 * V, V), e3 = relerr(kvd.data() + V, full.data() + 5 * V, V);
    gpu->kv_end();
    double tol = std::string(prec) == "fp32" ? 1e-5 : 2e-2;
    report(e1 < tol && e2 < tol && e3 < tol, "%s KV prefill/decode logits vs forward: rel err %.1e %.1e %.1e", prec, e1, e2, e3);
  }
  TrainConfig tc = train_cfg(4, 1);
  Engine c(m, tc, opts("cpu", "fp32")), g(m, tc, opts("cuda", "fp32"));
  GenerateOptions go;
  go.max_new_tokens = 16; go.sample.temperature = 0; go.eos_id = -1;
  std::vector<std::vector<int32_t>> prompts = {{corpus.begin(), corpus.begin() + 7}, {corpus.begin() + 100, corpus.begin() + 103}};
  auto oc = c.generate(prompts, go), og = g.generate(prompts, go);
  report(oc == og, "greedy generation of 2 prompts x 16 tokens: cuda fp32 %s cpu", oc == og ? "==" : "!=");
}

// ------------------------------------------------------------------------------------------------ errors
static void test_errors() {
  printf("errors: coded, and the process goes on\n");
  ModelConfig big = tiny();
  big.n_layer = 400; big.n_embd = 4096; big.n_head = 32;  // ~80 B parameters
  try {
    auto b = create_backend(big, opts("cuda", "bf16"));
    report(false, "a 80B-parameter model did not fail");
  } catch (const EngineError& e) {
    report(e.code == ErrorCode::OutOfMemory && std::string(e.what()).find("allocating") != std::string::npos,
           "huge model: %s: %s (hint: %s)", error_code_name(e.code), e.what(), e.hint.c_str());
  }
  ModelConfig m = tiny();
  m.n_positions = 1024;
  auto gpu = create_backend(m, opts("cuda", "bf16"));
  std::vector<float> params(gpu->layout().total);
  gpt2_init_params(m, gpu->layout(), params.data());
  gpu->set_params(params.data());
  try {
    std::vector<int32_t> in((size_t)32768 * 1024, 1), tg(in.size(), 2);
    gpu->forward_backward({in.data(), tg.data(), 32768, 1024}, 1e-6f);
    report(false, "a 32768x1024 batch did not fail");
  } catch (const EngineError& e) {
    report(e.code == ErrorCode::OutOfMemory && e.hint.find("microBatchSize") != std::string::npos,
           "huge batch: %s: %s (hint: %s)", error_code_name(e.code), e.what(), e.hint.c_str());
  }
  // still usable after the failed allocation
  std::vector<int32_t> in, tg;
  make_batch(2, 64, 0, in, tg);
  gpu->zero_grad();
  double l = gpu->forward_backward({in.data(), tg.data(), 2, 64}, 1.f / count_targets(tg));
  report(std::isfinite(l), "backend usable after OOM: loss %.4f", l / count_targets(tg));
  // non-finite loss through the engine: NaN weights
  TrainConfig tc = train_cfg(4, 1);
  Engine e(tiny(), tc, opts("cuda", "bf16"));
  std::vector<float> p(e.backend().layout().total);
  e.backend().get_params(p.data());
  p[e.backend().layout().at("transformer.h.1.mlp.c_fc.weight").offset + 5] = NAN;
  e.backend().set_params(p.data());
  e.set_train_data(shards(64));
  try {
    e.train(2, 10, nullptr, nullptr);
    report(false, "NaN weights did not stop training");
  } catch (const EngineError& err) {
    report(err.code == ErrorCode::NonFiniteLoss && err.step == 0, "NaN weights: %s at step %ld: %s", error_code_name(err.code), err.step, err.what());
  }
}

// ------------------------------------------------------------------------------------------------ torch dumps
// GPT-2 124M shape, one batch: params, batch, and our loss + grads in both precisions, for torch_parity.py
static void dump_for_torch() {
  printf("dumps for the PyTorch parity check (GPT-2 124M shape, B=4 T=256)\n");
  ModelConfig m;
  m.n_layer = 12; m.n_head = 12; m.n_embd = 768; m.n_positions = 1024; m.vocab_size = 50257; m.init_seed = 3;
  auto cpu_layout = gpt2_param_layout(m);
  std::vector<float> params(cpu_layout.total);
  gpt2_init_params(m, cpu_layout, params.data());
  const size_t B = 4, T = 256;
  std::vector<int32_t> in, tg;
  make_batch(B, T, 20000, in, tg);
  size_t n = count_targets(tg);
  write_bin("p124_params.f32", params.data(), params.size() * 4);
  write_bin("p124_inputs.i32", in.data(), in.size() * 4);
  write_bin("p124_targets.i32", tg.data(), tg.size() * 4);
  for (const char* prec : {"fp32", "bf16"}) {
    auto gpu = create_backend(m, opts("cuda", prec));
    gpu->set_params(params.data());
    gpu->zero_grad();
    double l = gpu->forward_backward({in.data(), tg.data(), B, T}, 1.f / n) / n;
    std::vector<float> g(params.size());
    gpu->get_grads(g.data());
    write_bin(std::string("p124_grads_") + prec + ".f32", g.data(), g.size() * 4);
    write_bin(std::string("p124_loss_") + prec + ".f64", &l, 8);
    printf("  %s loss %.6f\n", prec, l);
  }
}

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s <tokens.i32> <outdir>\n", argv[0]); return 2; }
  outdir = argv[2];
  {
    std::ifstream f(argv[1], std::ios::binary | std::ios::ate);
    if (!f) { fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    corpus.resize((size_t)f.tellg() / 4);
    f.seekg(0);
    f.read((char*)corpus.data(), corpus.size() * 4);
  }
  const char* only = argc > 3 ? argv[3] : "";
  auto want = [&](const char* t) { return !*only || std::strstr(only, t); };
  try {
    if (want("parity")) test_parity();
    if (want("generate")) test_generate();
    if (want("errors")) test_errors();
    if (want("engine")) test_engine();
    if (want("torch")) dump_for_torch();
  } catch (const EngineError& e) {
    printf("UNEXPECTED EngineError %s at %s:%d: %s (hint: %s)\n", error_code_name(e.code), e.file.c_str(), e.line, e.what(), e.hint.c_str());
    failures++;
  }
  printf("\n%d passed, %d failed\n", passes, failures);
  return failures;
}
