// zero_test.cpp — ZeRO data parallelism on the GPU host (test/gpu/run.sh, stage zero; needs >= 4 GPUs for all
// checks, fewer skip what does not fit):
//
//   losses      stages 0-3 on 1, 2 and 4 GPUs train the same 8 steps as one GPU at stage 0 with the same global
//               batch (gradAccumSteps micro-batches split over the GPUs): losses and final weights match (bf16:
//               1e-2 relative loss; fp32: 1e-4), stage 0-3 on one GPU included
//   memory      GPT-2 medium at stages 0-3 on 4 GPUs and stage 3 on 2: the model state the backend allocated
//               (weights + master + grads + moments) against the formula (fp32 gradients: ours; 2-byte: the
//               paper's), within 10%; the whole footprint against formula + activations + buffers; the
//               pre-flight estimate (zero.h) next to it; cudaMemGetInfo per GPU
//   checkpoint  4 GPUs ZeRO-2 save (sharded, one file per rank) -> resume on 2 GPUs ZeRO-3 and on 1 GPU: the
//               same next losses as the uninterrupted run
//   processes   2 processes x 2 GPUs joined by an NCCL unique id (nccl_unique_id() in this process, handed on the
//               command line): the same losses as one process driving 4 GPUs
//
// Usage: zero_test <data.i32> <workdir>            (exit code = failed checks)
//        zero_test --child <data> <rankOffset> <worldSize> <dev,dev> <ncclIdHex> <out>   (internal)
#include <sys/wait.h>
#include <unistd.h>
#include <cctype>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>
#include <cuda_runtime.h>
#include "engine.h"
#include "errors.h"
#include "zero.h"
#include "zero_checkpoint.h"
#include "fileio.h"

using namespace engine;
static int failures = 0, passes = 0;
static std::vector<int32_t> corpus;
static int ngpu = 0;

static void report(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  [%s] ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
  (ok ? passes : failures)++;
}

static ModelConfig small_model() {
  ModelConfig m;
  m.n_layer = 4; m.n_head = 4; m.n_embd = 256; m.n_positions = 256; m.vocab_size = 50257; m.init_seed = 11;
  return m;
}
static TrainConfig train_cfg(size_t B, size_t T, size_t accum) {
  TrainConfig tc;
  tc.micro_batch_size = B; tc.block_size = T; tc.grad_accum_steps = accum;
  tc.learning_rate = 1e-3f; tc.warmup_steps = 2; tc.schedule = LrSchedule::Cosine; tc.weight_decay = 0.1f;
  tc.grad_clip = 1.0f; tc.shuffle_seed = 5;
  return tc;
}
static BackendOptions cuda_opts(const char* prec, int stage, int gpus) {
  BackendOptions o;
  o.name = "cuda"; o.precision = prec; o.zero_stage = stage; o.world_size = gpus;
  for (int i = 0; i < gpus; i++) o.devices.push_back(i);
  o.device = 0;
  return o;
}

static std::vector<int32_t> shard_ids;
static std::vector<ShardView> data(size_t T) {
  size_t n = std::min<size_t>(corpus.size() / T, 4096);
  shard_ids.assign(corpus.begin(), corpus.begin() + n * T);
  ShardView s;
  s.n_seq = n; s.block_size = T; s.input_ids = shard_ids.data(); s.labels = shard_ids.data();
  return {s};
}

struct RunOut {
  std::vector<float> losses, params;
  MemoryReport mem;
  std::string device, error;
};
// steps from scratch (or from `resume`), saving a checkpoint after `save_at` steps when save_dir is set
static RunOut run(const ModelConfig& m, const TrainConfig& tc, const BackendOptions& o, size_t steps,
                  const std::string& save_dir = "", size_t save_at = 0, const std::string& resume = "",
                  const std::function<void(Engine&)>& after = nullptr) {
  RunOut r;
  try {
    std::unique_ptr<Engine> e = resume.empty() ? std::make_unique<Engine>(m, tc, o) : Engine::from_checkpoint(resume, tc, o);
    e->set_train_data(data(tc.block_size));
    const size_t total = 16;
    size_t done = 0;
    if (!save_dir.empty()) {
      TrainResult a = e->train(save_at, total, nullptr, [](const TrainProgress&) {});
      r.losses = a.losses;
      e->save_checkpoint(save_dir, "{}");
      done = save_at;
    }
    TrainResult b = e->train(steps - done, total, nullptr, [](const TrainProgress&) {});
    r.losses.insert(r.losses.end(), b.losses.begin(), b.losses.end());
    r.params.resize(e->backend().layout().total);
    e->backend().get_params(r.params.data());
    r.mem = e->backend().memory();
    r.device = e->backend().info().device;
    if (after) after(*e);
  } catch (const EngineError& err) {
    r.error = std::string(error_code_name(err.code)) + ": " + err.what() + " (" + err.file + ":" + std::to_string(err.line) + ") hint: " + err.hint;
  }
  return r;
}

static double max_rel_loss(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return 1e9;
  double w = 0;
  for (size_t i = 0; i < a.size(); i++) w = std::max(w, std::fabs((double)a[i] - b[i]) / std::fabs((double)b[i]));
  return w;
}
static double max_param_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return 1e9;
  double w = 0, mx = 0;
  for (size_t i = 0; i < a.size(); i++) w = std::max(w, std::fabs((double)a[i] - b[i])), mx = std::max(mx, std::fabs((double)b[i]));
  return w / mx;
}
static std::string fmt_losses(const std::vector<float>& l) {
  std::string s;
  for (float x : l) s += strfmt("%.5f ", x);
  return s;
}

static void test_losses(const char* prec, double tol_loss, double tol_param, const std::vector<int>& gpu_counts, int only_stage) {
  printf("== losses (%s, stage %s): same global batch (B=4 x accum 4, T=128), 8 steps, vs 1 GPU stage 0\n", prec,
         only_stage < 0 ? "0-3" : std::to_string(only_stage).c_str());
  ModelConfig m = small_model();
  TrainConfig tc = train_cfg(4, 128, 4);
  RunOut ref = run(m, tc, cuda_opts(prec, 0, 1), 8);
  report(ref.error.empty(), "reference 1 GPU stage 0: %s %s", fmt_losses(ref.losses).c_str(), ref.error.c_str());
  if (!ref.error.empty()) return;
  for (int g : gpu_counts) {
    if (g > ngpu) { printf("  (skip %d GPUs: %d visible)\n", g, ngpu); continue; }
    for (int stage = 0; stage <= 3; stage++) {
      if ((g == 1 && stage == 0) || (only_stage >= 0 && stage != only_stage)) continue;
      RunOut r = run(m, tc, cuda_opts(prec, stage, g), 8);
      if (!r.error.empty()) { report(false, "%d GPU(s) stage %d: %s", g, stage, r.error.c_str()); continue; }
      double dl = max_rel_loss(r.losses, ref.losses), dp = max_param_diff(r.params, ref.params);
      report(dl <= tol_loss && dp <= tol_param, "%d GPU(s) stage %d: max rel loss diff %.2e (tol %.0e), weights max |diff|/max %.2e (tol %.0e); last loss %.5f vs %.5f",
             g, stage, dl, tol_loss, dp, tol_param, r.losses.back(), ref.losses.back());
    }
  }
}

// the refactored single-GPU path against the cpu reference: 3 steps, fp32 (cuda stage 0 and stage 3 on one GPU)
static void test_parity() {
  printf("== parity: cpu reference vs cuda fp32 (stage 0, and stage 3 on one GPU), 3 steps of B=4 x accum 2, T=128\n");
  ModelConfig m = small_model();
  TrainConfig tc = train_cfg(4, 128, 2);
  BackendOptions cpu;
  cpu.name = "cpu"; cpu.precision = "fp32";
  RunOut ref = run(m, tc, cpu, 3);
  report(ref.error.empty(), "cpu: %s %s", fmt_losses(ref.losses).c_str(), ref.error.c_str());
  if (!ref.error.empty()) return;
  for (int stage : {0, 3}) {
    RunOut r = run(m, tc, cuda_opts("fp32", stage, 1), 3);
    if (!r.error.empty()) { report(false, "cuda fp32 stage %d: %s", stage, r.error.c_str()); continue; }
    double dl = max_rel_loss(r.losses, ref.losses), dp = max_param_diff(r.params, ref.params);
    report(dl <= 1e-5 && dp <= 1e-4, "cuda fp32 stage %d vs cpu: losses %s, max rel diff %.2e, weights %.2e", stage,
           fmt_losses(r.losses).c_str(), dl, dp);
  }
}

static size_t used_on(int dev) {
  size_t fr = 0, tot = 0;
  cudaSetDevice(dev);
  cudaMemGetInfo(&fr, &tot);
  return tot - fr;
}

static void test_memory() {
  printf("== memory: GPT-2 medium (355M), B=4 x T=1024, model state vs formula (per GPU)\n");
  ModelConfig m;
  m.n_layer = 24; m.n_head = 16; m.n_embd = 1024; m.n_positions = 1024; m.vocab_size = 50257;
  struct Case { int stage, gpus; };
  std::vector<Case> cases = {{0, 4}, {1, 4}, {2, 4}, {3, 4}, {3, 2}, {2, 1}};
  const double G = 1073741824.0;
  for (Case c : cases) {
    if (c.gpus > ngpu) continue;
    std::vector<size_t> before(c.gpus);
    for (int d = 0; d < c.gpus; d++) before[d] = used_on(d);
    TrainConfig tc = train_cfg(4, 1024, (size_t)c.gpus);
    size_t peak_used = 0;  // cudaMemGetInfo growth on the fullest GPU while the engine is alive, after a step
    RunOut r = run(m, tc, cuda_opts("bf16", c.stage, c.gpus), 1, "", 0, "", [&](Engine&) {
      for (int d = 0; d < c.gpus; d++) peak_used = std::max(peak_used, used_on(d) - before[d]);
    });
    if (!r.error.empty()) { report(false, "stage %d on %d GPUs: %s", c.stage, c.gpus, r.error.c_str()); continue; }
    const MemoryReport& mr = r.mem;
    double state = (double)(mr.params_bytes + mr.grads_bytes + mr.optimizer_bytes);
    double formula = (double)mr.formula_bytes, paper = (double)mr.formula_paper_bytes;
    MemoryRequest q;
    q.model = m; q.B = 4; q.T = 1024; q.precision = "bf16"; q.stage = c.stage; q.world_size = c.gpus;
    MemoryEstimate est = estimate_memory(q);
    double expect_total = formula + mr.activations_bytes + mr.buffers_bytes + mr.other_bytes;
    report(std::fabs(state - formula) <= 0.10 * formula,
           "stage %d, %d GPUs: model state %.3f GiB vs formula %.3f GiB (fp32 grads; paper's 2-byte grads: %.3f GiB) -> %+.1f%%",
           c.stage, c.gpus, state / G, formula / G, paper / G, 100 * (state / formula - 1));
    report(std::fabs((double)peak_used - expect_total) <= 0.10 * expect_total,
           "stage %d, %d GPUs: measured (cudaMemGetInfo growth, fullest GPU) %.3f GiB vs formula + activations %.3f + "
           "buffers %.3f + other %.3f = %.3f GiB (%+.1f%%); backend reports %.3f GiB; pre-flight estimate %.3f GiB "
           "(state %.3f, activations %.3f, buffers %.3f)",
           c.stage, c.gpus, peak_used / G, mr.activations_bytes / G, mr.buffers_bytes / G, mr.other_bytes / G,
           expect_total / G, 100 * (peak_used / expect_total - 1), mr.total() / G, est.device_total / G,
           est.state.device() / G, est.activations / G, est.buffers / G);
  }
}

static void test_checkpoint(const std::string& work) {
  printf("== checkpoint: 4 GPUs ZeRO-2 saved at step 4 (sharded), resumed on 2 GPUs ZeRO-3 and on 1 GPU\n");
  if (ngpu < 4) { printf("  (skip: needs 4 GPUs)\n"); return; }
  ModelConfig m = small_model();
  TrainConfig tc = train_cfg(4, 128, 4);
  std::string dir = work + "/ckpt-step4";
  remove_tree(dir);
  RunOut full = run(m, tc, cuda_opts("fp32", 2, 4), 8, dir, 4);
  if (!full.error.empty()) { report(false, "4 GPUs stage 2 with a save: %s", full.error.c_str()); return; }
  bool sharded = is_sharded_checkpoint(dir) && path_exists(dir + "/rank-00003-of-00004.bin");
  report(sharded, "4 rank files + manifest written (%s)", dir.c_str());
  try {
    report(sharded_checkpoint_verify(dir) == 4, "sharded checkpoint verifies (step 4)");
  } catch (const EngineError& e) { report(false, "verify: %s", e.what()); }
  std::vector<float> tail(full.losses.begin() + 4, full.losses.end());
  for (auto [stage, g] : std::vector<std::pair<int, int>>{{3, 2}, {0, 1}}) {
    RunOut r = run(m, tc, cuda_opts("fp32", stage, g), 4, "", 0, dir);
    if (!r.error.empty()) { report(false, "resume on %d GPU(s) stage %d: %s", g, stage, r.error.c_str()); continue; }
    double d = max_rel_loss(r.losses, tail);
    report(d <= 1e-4, "resume on %d GPU(s) stage %d: steps 5-8 losses %s vs %s (max rel diff %.2e)", g, stage,
           fmt_losses(r.losses).c_str(), fmt_losses(tail).c_str(), d);
  }
}

static void test_processes(const char* self, const std::string& data_path, const std::string& work) {
  printf("== processes: 2 processes x 2 GPUs joined by an NCCL unique id vs 1 process x 4 GPUs (ZeRO-2, bf16)\n");
  if (ngpu < 4) { printf("  (skip: needs 4 GPUs)\n"); return; }
  std::string id;
  try { id = nccl_unique_id(); } catch (const EngineError& e) { report(false, "nccl_unique_id: %s", e.what()); return; }
  report(id.size() == 256, "nccl_unique_id() gives 256 hex digits");
  std::vector<pid_t> kids;
  for (int p = 0; p < 2; p++) {
    std::string off = std::to_string(2 * p), devs = p == 0 ? "0,1" : "2,3", out = work + "/proc" + std::to_string(p) + ".txt";
    pid_t pid = fork();
    if (pid == 0) {
      execl("/proc/self/exe", self, "--child", data_path.c_str(), off.c_str(), "4", devs.c_str(), id.c_str(), out.c_str(), (char*)nullptr);
      _exit(127);
    }
    kids.push_back(pid);
  }
  bool ok = true;
  for (pid_t k : kids) {
    int st = 0;
    waitpid(k, &st, 0);
    ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  report(ok, "both processes exited 0");
  RunOut one = run(small_model(), train_cfg(4, 128, 4), cuda_opts("bf16", 2, 4), 8);
  for (int p = 0; p < 2; p++) {
    std::ifstream f(work + "/proc" + std::to_string(p) + ".txt");
    std::vector<float> l;
    float x;
    while (f >> x) l.push_back(x);
    double d = max_rel_loss(l, one.losses);
    report(d <= 1e-2, "process %d losses %s vs one process %s (max rel diff %.2e)", p, fmt_losses(l).c_str(),
           fmt_losses(one.losses).c_str(), d);
  }
  // the checkpoint both processes wrote together: 4 rank files committed by rank 0's process, = one process's weights
  const std::string dir = work + "/ckpt-procs";
  try {
    report(sharded_checkpoint_verify(dir) == 8 && path_exists(dir + "/rank-00003-of-00004.bin"),
           "collective sharded checkpoint of the 2 processes verifies (4 rank files, step 8)");
    CheckpointState st = checkpoint_load(dir);
    double dp = max_param_diff(st.params, one.params);
    report(dp <= 1e-6, "its weights vs the one-process run's: max |diff|/max %.2e", dp);
  } catch (const EngineError& e) { report(false, "collective checkpoint: %s", e.what()); }
}

static int child(int argc, char** argv) {
  // --child data rankOffset worldSize devs id out
  if (argc < 8) return 2;
  BackendOptions o = cuda_opts("bf16", 2, 1);
  o.rank = std::atoi(argv[3]);
  o.world_size = std::atoi(argv[4]);
  o.devices.clear();
  for (const char* p = argv[5]; *p;) {
    o.devices.push_back(std::atoi(p));
    while (*p && *p != ',') p++;
    if (*p) p++;
  }
  o.device = o.devices[0];
  o.nccl_id = argv[6];
  // 8 steps, then a collective sharded checkpoint (each process writes its ranks' files, rank 0's commits)
  const std::string out = argv[7];
  RunOut r = run(small_model(), train_cfg(4, 128, 4), o, 8, out.substr(0, out.rfind('/')) + "/ckpt-procs", 8);
  if (!r.error.empty()) { fprintf(stderr, "child rank %d: %s\n", o.rank, r.error.c_str()); return 1; }
  std::ofstream f(argv[7]);
  for (float x : r.losses) f << strfmt("%.8f\n", x);
  printf("  child at rank offset %d (%s): %s\n", o.rank, r.device.c_str(), fmt_losses(r.losses).c_str());
  return 0;
}

static void load_corpus(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(0, std::ios::end);
  size_t n = (size_t)f.tellg() / 4;
  f.seekg(0);
  corpus.resize(n);
  f.read((char*)corpus.data(), n * 4);
  if (!f || n < 100000) { fprintf(stderr, "cannot read %s (need tokenized tinyshakespeare)\n", path.c_str()); exit(2); }
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--child") {
    load_corpus(argv[2]);
    return child(argc, argv);
  }
  if (argc < 3) { fprintf(stderr, "usage: zero_test <data.i32> <workdir> [tests]\n"); return 2; }
  load_corpus(argv[1]);
  std::string work = argv[2], only = argc > 3 ? argv[3] : "";
  make_dirs(work);
  cudaGetDeviceCount(&ngpu);
  printf("zero_test: %d GPUs\n", ngpu);
  auto want = [&](const char* t) { return only.empty() || only.find(t) != std::string::npos; };
  if (want("parity")) test_parity();
  if (want("losses")) {
    // "losses" = every stage; "losses2" = stage 2 only (one stage per process keeps each under its own timeout)
    int st = -1;
    size_t at = only.find("losses");
    if (at != std::string::npos && at + 6 < only.size() && isdigit((unsigned char)only[at + 6])) st = only[at + 6] - '0';
    test_losses("fp32", 1e-4, 1e-4, {4}, st);
    test_losses("bf16", 1e-2, 2e-2, {1, 2, 4}, st);
  }
  if (want("checkpoint")) test_checkpoint(work);
  if (want("processes")) test_processes(argv[0], argv[1], work);
  if (want("memory")) test_memory();
  printf("zero_test: %d passed, %d failed\n", passes, failures);
  return failures;
}
