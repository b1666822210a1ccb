// families_gpu.cpp — training throughput of the cuda backend on a Llama / GPT-NeoX / GPT-J shape (random init),
// bf16 + fp32 master weights, through Backend::step_async (the engine's hot path: the whole optimizer step queued
// with no host sync; gradient norm, clipping and AdamW included). Prints one JSON line (same fields as
// bench/peer_llama.py: tokens/s, ms/step median, MFU with 6N + 12*L*d*T flops per token, peak GPU memory).
//   families_gpu --model llama-1b --batch 4 --seq 2048 --steps 10 --warmup 3 [--recompute none|gelu-layernorm]
#include <cuda_runtime.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "backend.h"
#include "errors.h"
#include "families.h"

using namespace engine;

static ModelConfig shape(const std::string& m) {
  ModelConfig c;
  if (m == "llama-1b") {  // Llama-3.2-1B: hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192, vocab 128256, tied
    c.family = "llama"; c.n_embd = 2048; c.n_layer = 16; c.n_head = 32; c.n_kv_head = 8; c.intermediate_size = 8192;
    c.vocab_size = 128256; c.n_positions = 4096; c.rope_theta = 500000; c.tie_word_embeddings = true;
    c.rope_scaling = "llama3"; c.rope_factor = 32; c.rope_low_freq_factor = 1; c.rope_high_freq_factor = 4;
    c.rope_original_max_positions = 8192; c.layer_norm_eps = 1e-5f;
  } else if (m == "pythia-1b") {  // Pythia-1B: hidden 2048, 16 layers, 8 heads (head 256: unfused attention)
    c.family = "gpt_neox"; c.n_embd = 2048; c.n_layer = 16; c.n_head = 8; c.vocab_size = 50304; c.n_positions = 2048;
    c.rotary_dim = 64; c.parallel_residual = true; c.hidden_act = "gelu"; c.tie_word_embeddings = false;
  } else if (m == "pythia-410m") {  // head 64: flash attention
    c.family = "gpt_neox"; c.n_embd = 1024; c.n_layer = 24; c.n_head = 16; c.vocab_size = 50304; c.n_positions = 2048;
    c.rotary_dim = 16; c.parallel_residual = true; c.hidden_act = "gelu"; c.tie_word_embeddings = false;
  } else {
    fprintf(stderr, "unknown model %s (llama-1b, pythia-1b, pythia-410m)\n", m.c_str());
    exit(2);
  }
  return c;
}

int main(int argc, char** argv) {
  std::string model = "llama-1b", recompute = "none";
  size_t B = 4, T = 2048, steps = 10, warmup = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--batch") B = std::stoul(v);
    else if (k == "--seq") T = std::stoul(v);
    else if (k == "--steps") steps = std::stoul(v);
    else if (k == "--warmup") warmup = std::stoul(v);
    else if (k == "--recompute") recompute = v;
  }
  try {
    ModelConfig c = shape(model);
    family_resolve(c);
    ParamLayout lay = param_layout(c);
    std::vector<float> p(lay.total);
    // Fast stand-in for init_params (N(0, 0.02) draws take ~30 s single-threaded at 1.2B): uniform with the same
    // standard deviation for matrices, unit norm gains, zero biases. Throughput does not depend on the values.
    for (size_t ti = 0; ti < lay.tensors.size(); ti++) {
      const ParamTensor& t = lay.tensors[ti];
      const bool gain = t.shape.size() == 1 && t.name.find("weight") != std::string::npos;
      uint64_t r = 0x9E3779B97F4A7C15ull * (ti + 1);
      for (size_t j = 0; j < t.numel; j++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        p[t.offset + j] = t.shape.size() >= 2 ? (float)(((r >> 40) / 16777216.0 - 0.5) * 0.0693) : gain ? 1.0f : 0.0f;
      }
    }
    BackendOptions o;
    o.name = "cuda"; o.precision = "bf16"; o.recompute = recompute;
    auto be = create_backend(c, o);
    be->set_params(p.data());
    std::vector<int32_t> in(B * T), tg(B * T);
    uint64_t s = 12345;
    for (size_t i = 0; i < B * T; i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; in[i] = (int32_t)((s >> 33) % 50000); }
    for (size_t i = 0; i < B * T; i++) tg[i] = (i % T == T - 1) ? IGNORE_INDEX : in[i + 1];
    Batch b; b.inputs = in.data(); b.targets = tg.data(); b.B = B; b.T = T;
    size_t n_targets = 0;
    for (int32_t t : tg) n_targets += t != IGNORE_INDEX;
    std::vector<double> times;
    double loss = 0;
    for (size_t st = 1; st <= warmup + steps; st++) {
      auto t0 = std::chrono::steady_clock::now();
      AdamWHyper hp;
      hp.lr = 1e-4f; hp.weight_decay = 0.01f; hp.t = (long)st;
      be->step_async(&b, 1, 1.0f / (float)n_targets, hp, 1.0f, 1e9);
      StepOutput out = be->step_wait();
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      loss = out.loss_sum / n_targets;
      if (st > warmup) times.push_back(dt);
    }
    std::sort(times.begin(), times.end());
    double dt = times[times.size() / 2], tps = B * T / dt;
    double n = (double)lay.total, fpt = 6 * n + 12.0 * c.n_layer * c.n_embd * T;
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    MemoryReport mr = be->memory();
    printf("{\"engine\": \"ours-cuda-bf16\", \"model\": \"%s\", \"family\": \"%s\", \"params_M\": %.1f, \"seq\": %zu, "
           "\"batch\": %zu, \"recompute\": \"%s\", \"ms_per_step\": %.1f, \"tokens_per_s\": %.0f, \"mfu\": %.4f, "
           "\"backend_GiB\": %.2f, \"gpu_in_use_GiB\": %.2f, \"loss\": %.3f, \"gpu\": \"%s\"}\n",
           model.c_str(), c.family.c_str(), n / 1e6, T, B, recompute.c_str(), dt * 1000, tps, tps * fpt / 989e12,
           mr.total() / 1073741824.0, (tot - fr) / 1073741824.0, loss, prop.name);
  } catch (const EngineError& e) {
    printf("{\"error\": \"%s: %s\"}\n", error_code_name(e.code), e.what());
    return 1;
  }
  return 0;
}
