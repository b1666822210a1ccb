// zero_gpu.cpp — ZeRO data-parallel throughput and memory on one host (bench/zero_gpu.sh). Weak scaling: every
// GPU takes `--micro` micro-batches of B x T per step (global gradient accumulation = GPUs x micro), so linear
// scaling means tokens/s(N) = N x tokens/s(1). The backend is driven directly (step_async / step_wait, the
// engine's hot path) with random weights (fast fill; throughput does not depend on the values) and random tokens.
// One JSON line per configuration:
//   {"bench":"zero","model":"gpt2-xl","stage":2,"gpus":4,"tokens_per_s":..,"ms_per_step":..,
//    "scaling_vs_1gpu":..,"mem_GiB":{...},"formula_GiB":..,"formula_paper_GiB":..}
// Usage: zero_gpu [--model gpt2-xl] [--batch 8] [--seq 1024] [--micro 1] [--steps 5] [--warmup 2]
//                 [--configs 2:1,2:2,2:4,3:4]   (stage:gpus, measured in order; scaling is against the stage's
//                                                1-GPU run when it was measured, else against 2:1)
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>
#include <cuda_runtime.h>
#include "backend.h"
#include "errors.h"

using namespace engine;

int main(int argc, char** argv) {
  std::string model = "gpt2-xl", configs = "2:1,2:2,2:4,3:4";
  size_t B = 8, T = 1024, micro = 1, steps = 5, warmup = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--batch") B = std::stoul(v);
    else if (k == "--seq") T = std::stoul(v);
    else if (k == "--micro") micro = std::stoul(v);
    else if (k == "--steps") steps = std::stoul(v);
    else if (k == "--warmup") warmup = std::stoul(v);
    else if (k == "--configs") configs = v;
    else { fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  ModelConfig m;
  m.n_positions = 1024; m.vocab_size = 50257;
  if (model == "gpt2") { m.n_layer = 12; m.n_head = 12; m.n_embd = 768; }
  else if (model == "gpt2-medium") { m.n_layer = 24; m.n_head = 16; m.n_embd = 1024; }
  else if (model == "gpt2-xl") { m.n_layer = 48; m.n_head = 25; m.n_embd = 1600; }
  else { fprintf(stderr, "unknown model %s\n", model.c_str()); return 2; }
  const ParamLayout lay = gpt2_param_layout(m);
  // weights: uniform(-0.02, 0.02), LayerNorm gains 1 (a random init's scale; filled in parallel, not Box-Muller)
  std::vector<float> w(lay.total);
#pragma omp parallel
  {
    uint64_t s = 0x9E3779B97F4A7C15ull * (omp_get_thread_num() + 1);
#pragma omp for
    for (size_t i = 0; i < w.size(); i++) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      w[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.04f;
    }
  }
  for (const ParamTensor& t : lay.tensors)
    if (t.name.find(".ln_") != std::string::npos && t.name.find("weight") != std::string::npos)
      std::fill(w.begin() + t.offset, w.begin() + t.offset + t.numel, 1.0f);
  int ngpu = 0;
  cudaGetDeviceCount(&ngpu);
  std::map<int, double> one_gpu;  // stage -> tokens/s on 1 GPU
  const double Gi = 1073741824.0;
  for (size_t p = 0; p < configs.size();) {
    size_t q = configs.find(',', p);
    std::string c = configs.substr(p, q == std::string::npos ? std::string::npos : q - p);
    p = q == std::string::npos ? configs.size() : q + 1;
    int stage = std::stoi(c.substr(0, c.find(':'))), gpus = std::stoi(c.substr(c.find(':') + 1));
    if (gpus > ngpu) { printf("{\"bench\":\"zero\",\"stage\":%d,\"gpus\":%d,\"skipped\":\"%d GPUs visible\"}\n", stage, gpus, ngpu); continue; }
    BackendOptions o;
    o.name = "cuda"; o.precision = "bf16"; o.zero_stage = stage; o.world_size = gpus;
    for (int d = 0; d < gpus; d++) o.devices.push_back(d);
    try {
      std::unique_ptr<Backend> be = create_backend(m, o);
      be->set_params(w.data());
      const size_t n_micro = micro * gpus, N = B * T;
      std::vector<int32_t> in(n_micro * N), tg(n_micro * N);
      std::mt19937 rng(1);
      for (size_t i = 0; i < in.size(); i++) in[i] = (int32_t)(rng() % 50000);
      for (size_t i = 0; i < in.size(); i++) tg[i] = (i % T == T - 1) ? IGNORE_INDEX : in[i + 1];
      std::vector<Batch> mb(n_micro);
      for (size_t i = 0; i < n_micro; i++) mb[i] = Batch{in.data() + i * N, tg.data() + i * N, B, T, 0};
      size_t n_tgt = n_micro * B * (T - 1);
      std::vector<double> ms;
      double loss = 0;
      for (size_t s = 0; s < warmup + steps; s++) {
        AdamWHyper hp;
        hp.lr = 1e-5f; hp.beta2 = 0.999f; hp.weight_decay = 0.01f; hp.t = (long)s + 1;
        auto t0 = std::chrono::steady_clock::now();
        be->step_async(mb.data(), n_micro, 1.0f / (float)n_tgt, hp, 1.0f, 1e4);
        StepOutput out = be->step_wait();
        double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (s >= warmup) ms.push_back(dt);
        loss = out.loss_sum / (double)n_tgt;
      }
      std::sort(ms.begin(), ms.end());
      double med = ms[ms.size() / 2], tps = (double)(n_micro * N) / (med / 1000.0);
      if (gpus == 1) one_gpu[stage] = tps;
      double base = one_gpu.count(stage) ? one_gpu[stage] : (one_gpu.count(2) ? one_gpu[2] : 0);
      MemoryReport r = be->memory();
      size_t used = 0;
      for (int d = 0; d < gpus; d++) {
        size_t fr = 0, tot = 0;
        cudaSetDevice(d);
        cudaMemGetInfo(&fr, &tot);
        used = std::max(used, tot - fr);
      }
      printf("{\"bench\":\"zero\",\"model\":\"%s\",\"params_M\":%.1f,\"stage\":%d,\"gpus\":%d,\"batch\":%zu,\"seq\":%zu,"
             "\"micro_per_gpu\":%zu,\"tokens_per_step\":%zu,\"ms_per_step\":%.1f,\"ms_min\":%.1f,\"ms_max\":%.1f,"
             "\"tokens_per_s\":%.0f,\"scaling_vs_1gpu\":%s,\"loss\":%.4f,"
             "\"mem_GiB\":{\"params_master\":%.3f,\"grads\":%.3f,\"moments\":%.3f,\"buffers\":%.3f,\"activations\":%.3f,"
             "\"other\":%.3f,\"total\":%.3f,\"cuda_used_max_gpu\":%.3f},\"formula_GiB\":%.3f,\"formula_paper_GiB\":%.3f,"
             "\"device\":\"%s\"}\n",
             model.c_str(), lay.total / 1e6, stage, gpus, B, T, micro, n_micro * N, med, ms.front(), ms.back(), tps,
             base > 0 ? std::to_string(tps / (gpus * base)).c_str() : "null", loss, r.params_bytes / Gi, r.grads_bytes / Gi,
             r.optimizer_bytes / Gi, r.buffers_bytes / Gi, r.activations_bytes / Gi, r.other_bytes / Gi, r.total() / Gi,
             used / Gi, r.formula_bytes / Gi, r.formula_paper_bytes / Gi, be->info().device.c_str());
      fflush(stdout);
    } catch (const EngineError& e) {
      printf("{\"bench\":\"zero\",\"stage\":%d,\"gpus\":%d,\"error\":\"%s\",\"message\":\"%s\",\"hint\":\"%s\"}\n", stage,
             gpus, error_code_name(e.code), e.what(), e.hint.c_str());
      fflush(stdout);
    }
  }
  return 0;
}
