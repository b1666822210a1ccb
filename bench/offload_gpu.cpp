// offload_gpu.cpp — one training configuration of the cuda backend, with or without optimizer offload, timed
// through the backend's hot path (step_async / step_wait: every micro-batch, the norm, clipping, the gate and
// AdamW — on the GPU, or on the CPU with offload), on tokenized tinyshakespeare (random tokens when absent). Prints
// one JSON line: step time, tokens/s, losses, GPU memory (what the backend holds and what the device has in use)
// and host memory (resident and peak, pinned offload state included). bench/offload_gpu.sh runs the cases.
//   offload_gpu --model gpt2-xl|gptj-size|gpt2 [--batch 8] [--seq 1024] [--accum 1] [--offload none|cpu]
//               [--delayed 0|1] [--recompute none|gelu|gelu-layernorm] [--steps 4] [--warmup 1] [--data FILE]
// The weights are N(0, 0.02) from a parallel counter-based generator (the engine's sequential init would take
// minutes for 6B parameters; the compute does not depend on the values).
#include <cuda_runtime_api.h>
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include "backend.h"
#include "errors.h"

using namespace engine;

static double status_gib(const char* key) {  // VmRSS / VmHWM of this process
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + strlen(key) + 1) / 1048576.0;
  return 0;
}

int main(int argc, char** argv) {
  std::string model = "gpt2-xl", offload = "none", recompute = "none", data = ".gpu-data/tinyshakespeare.i32";
  size_t B = 8, T = 1024, accum = 1, steps = 4, warmup = 1;
  int delayed = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--batch") B = std::stoul(v);
    else if (k == "--seq") T = std::stoul(v);
    else if (k == "--accum") accum = std::stoul(v);
    else if (k == "--offload") offload = v;
    else if (k == "--delayed") delayed = std::stoi(v);
    else if (k == "--recompute") recompute = v;
    else if (k == "--steps") steps = std::stoul(v);
    else if (k == "--warmup") warmup = std::stoul(v);
    else if (k == "--data") data = v;
    else { fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  ModelConfig m;
  m.n_positions = 1024; m.vocab_size = 50257;
  if (model == "gpt2") { m.n_layer = 12; m.n_head = 12; m.n_embd = 768; }
  else if (model == "gpt2-xl") { m.n_layer = 48; m.n_head = 25; m.n_embd = 1600; }
  else if (model == "gptj-size") { m.n_layer = 28; m.n_head = 16; m.n_embd = 4096; m.n_positions = 2048; m.vocab_size = 50400; }
  else { fprintf(stderr, "unknown model %s\n", model.c_str()); return 2; }
  BackendOptions o;
  o.name = "cuda"; o.precision = "bf16"; o.recompute = recompute; o.offload = offload; o.offload_delayed = delayed;
  const char* tag = offload == "none" ? "none" : delayed ? "cpu-delayed" : "cpu";
  try {
    auto t_init = std::chrono::steady_clock::now();
    std::unique_ptr<Backend> be = create_backend(m, o);
    const size_t n = be->layout().total;
    {
      std::vector<float> w(n);
#pragma omp parallel for schedule(static)
      for (long i = 0; i < (long)n; i++) {  // Box-Muller on a counter hash: N(0, 0.02)
        uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 29;
        double u1 = ((h >> 11) + 1.0) / 9007199254740993.0, u2 = (double)((h * 0x94D049BB133111EBull) >> 11) / 9007199254740992.0;
        w[i] = (float)(0.02 * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
      }
      for (const ParamTensor& t : be->layout().tensors)  // LayerNorm gains 1, biases 0 (as HF's init)
        if (t.shape.size() == 1) std::fill(w.begin() + t.offset, w.begin() + t.offset + t.numel, t.name.find("ln") != std::string::npos && t.name.find(".weight") != std::string::npos ? 1.f : 0.f);
      be->set_params(w.data());
    }
    double init_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_init).count();
    // tokens: consecutive windows of the corpus (targets shifted by one), or random ids
    std::vector<int32_t> corpus;
    {
      std::ifstream f(data, std::ios::binary);
      if (f) {
        f.seekg(0, std::ios::end);
        corpus.resize((size_t)f.tellg() / 4);
        f.seekg(0);
        f.read((char*)corpus.data(), corpus.size() * 4);
      }
      if (corpus.size() < 2 * T) {
        corpus.resize(1 << 22);
        uint32_t s = 1;
        for (auto& x : corpus) x = (int32_t)((s = s * 1664525u + 1013904223u) >> 8) % 50000;
      }
    }
    std::vector<std::vector<int32_t>> in(accum), tg(accum);
    std::vector<Batch> mb(accum);
    AdamWHyper hp;
    hp.lr = 1e-4f; hp.weight_decay = 0.01f; hp.beta2 = 0.999f;
    std::vector<double> ms, losses;
    size_t pos = 0;
    for (size_t s = 1; s <= warmup + steps; s++) {
      for (size_t a = 0; a < accum; a++) {
        in[a].resize(B * T); tg[a].resize(B * T);
        for (size_t b = 0; b < B; b++) {
          if (pos + T + 1 >= corpus.size()) pos = 0;
          for (size_t t = 0; t < T; t++) in[a][b * T + t] = corpus[pos + t], tg[a][b * T + t] = corpus[pos + t + 1];
          tg[a][b * T + T - 1] = IGNORE_INDEX;
          pos += T;
        }
        mb[a].inputs = in[a].data(); mb[a].targets = tg[a].data(); mb[a].B = B; mb[a].T = T;
      }
      const float dloss = 1.0f / (float)(accum * B * (T - 1));
      hp.t = (long)s;
      auto t0 = std::chrono::steady_clock::now();
      be->step_async(mb.data(), accum, dloss, hp, 1.0f, 1e4);
      StepOutput r = be->step_wait();
      double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (s > warmup) ms.push_back(dt);
      losses.push_back(r.loss_sum * dloss);
    }
    // an offloaded update still running on the CPU belongs to the last step: wait for it (get_params syncs)
    auto t_tail = std::chrono::steady_clock::now();
    std::vector<float> probe;
    if (offload != "none") { probe.resize(n); be->get_params(probe.data()); }
    double tail_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_tail).count();
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    double med = sorted[sorted.size() / 2], tps = (double)(B * accum * T) / (med / 1000.0);
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    MemoryReport mr = be->memory();
    std::string ls, ts;
    for (double l : losses) ls += (ls.empty() ? "" : ",") + std::to_string(l).substr(0, 7);
    for (double t : ms) ts += (ts.empty() ? "" : ",") + std::to_string((int)std::lround(t));
    printf("{\"engine\":\"ours-cuda\",\"model\":\"%s\",\"params_M\":%.1f,\"offload\":\"%s\",\"batch\":%zu,\"seq\":%zu,"
           "\"accum\":%zu,\"tokens_per_step\":%zu,\"recompute\":\"%s\",\"ms_per_step\":%.1f,\"step_ms\":[%s],"
           "\"tokens_per_s\":%.0f,\"losses\":[%s],\"backend_gpu_GiB\":%.2f,\"device_used_GiB\":%.2f,"
           "\"host_rss_GiB\":%.2f,\"host_peak_GiB\":%.2f,\"init_s\":%.1f,\"final_sync_ms\":%.1f,\"cpu_threads\":%d,"
           "\"gpu\":\"%s\"}\n",
           model.c_str(), n / 1e6, tag, B, T, accum, B * T * accum, recompute.c_str(), med, ts.c_str(), tps, ls.c_str(),
           mr.total() / 1073741824.0, (tot - fr) / 1073741824.0, status_gib("VmRSS:"), status_gib("VmHWM:"), init_s,
           tail_ms, omp_get_max_threads(), be->info().device.c_str());
  } catch (const EngineError& err) {
    printf("{\"engine\":\"ours-cuda\",\"model\":\"%s\",\"offload\":\"%s\",\"batch\":%zu,\"error\":\"%s\",\"message\":\"%s\",\"hint\":\"%s\"}\n",
           model.c_str(), tag, B, error_code_name(err.code), err.what(), err.hint.c_str());
    return 1;
  }
  return 0;
}
