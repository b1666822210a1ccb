// train_gpu.cpp — training throughput of our engine on one GPU, through the real loop (engine::Engine::train:
// data loader, gradient accumulation, clipping, AdamW), random-init GPT-2 on random tokens (the compute is the
// same as for real data). Prints one JSON line in the shape of bench/peer_torch.py's, so bench/train_gpu.sh
// can put them side by side. Usage:
//   train_gpu --model gpt2|gpt2-medium|gpt2-xl [--batch 16] [--seq 1024] [--steps 10] [--warmup 3]
//             [--precision bf16|fp32] [--recompute none|gelu|gelu-layernorm] [--accum 1]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#include "engine.h"
#include "errors.h"

using namespace engine;

int main(int argc, char** argv) {
  std::string model = "gpt2", precision = "bf16", recompute = "none";
  size_t B = 16, T = 1024, steps = 10, warmup = 3, accum = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") model = v;
    else if (k == "--batch") B = std::stoul(v);
    else if (k == "--seq") T = std::stoul(v);
    else if (k == "--steps") steps = std::stoul(v);
    else if (k == "--warmup") warmup = std::stoul(v);
    else if (k == "--precision") precision = v;
    else if (k == "--recompute") recompute = v;
    else if (k == "--accum") accum = std::stoul(v);
    else { fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  ModelConfig m;
  m.n_positions = 1024; m.vocab_size = 50257;
  if (model == "gpt2") { m.n_layer = 12; m.n_head = 12; m.n_embd = 768; }
  else if (model == "gpt2-medium") { m.n_layer = 24; m.n_head = 16; m.n_embd = 1024; }
  else if (model == "gpt2-xl") { m.n_layer = 48; m.n_head = 25; m.n_embd = 1600; }
  else { fprintf(stderr, "unknown model %s\n", model.c_str()); return 2; }
  TrainConfig tc;
  tc.micro_batch_size = B; tc.block_size = T; tc.grad_accum_steps = accum;
  tc.learning_rate = 1e-4f; tc.warmup_steps = 0; tc.schedule = LrSchedule::Constant; tc.weight_decay = 0.01f;
  tc.grad_clip = 1.0f; tc.beta2 = 0.999f;  // torch.optim.AdamW defaults, as the peer
  BackendOptions o;
  o.name = "cuda"; o.precision = precision; o.recompute = recompute;
  try {
    Engine e(m, tc, o);
    // random tokens, as the peer (torch.randint(0, 50000))
    size_t nseq = (steps + warmup) * B * accum;
    std::vector<int32_t> ids(nseq * T);
    std::mt19937 rng(0);
    for (auto& x : ids) x = (int32_t)(rng() % 50000);
    ShardView s;
    s.n_seq = nseq; s.block_size = T; s.input_ids = ids.data(); s.labels = ids.data();
    e.set_train_data({s});
    std::vector<double> ms;
    float last_loss = 0;
    e.train(steps + warmup, steps + warmup, nullptr, [&](const TrainProgress& p) {
      if (p.step > warmup) ms.push_back((double)(B * accum * T) / p.tokens_per_sec * 1000.0);
      last_loss = p.loss;
    });
    std::sort(ms.begin(), ms.end());
    double dt = ms[ms.size() / 2] / 1000.0, tps = B * accum * T / dt;
    const ParamLayout& lay = e.backend().layout();
    double N = (double)lay.total, L = (double)m.n_layer, d = (double)m.n_embd;
    double f12 = 6 * N + 12 * L * d * T, f6 = 6 * N + 6 * L * d * T, peak = 989e12;
    MemoryReport mr = e.backend().memory();
    printf("{\"engine\":\"ours-cuda\",\"model\":\"%s\",\"params_M\":%.1f,\"seq\":%zu,\"batch\":%zu,\"accum\":%zu,"
           "\"precision\":\"%s\",\"recompute\":\"%s\",\"ms_per_step\":%.1f,\"tokens_per_s\":%.0f,\"mfu\":%.4f,"
           "\"mfu_llmc\":%.4f,\"peak_gpu_GiB\":%.2f,\"loss\":%.3f,\"gpu\":\"%s\"}\n",
           model.c_str(), N / 1e6, T, B, accum, precision.c_str(), recompute.c_str(), dt * 1000, tps, tps * f12 / peak,
           tps * f6 / peak, mr.total() / 1073741824.0, last_loss, e.backend().info().device.c_str());
  } catch (const EngineError& err) {
    printf("{\"engine\":\"ours-cuda\",\"model\":\"%s\",\"batch\":%zu,\"error\":\"%s\",\"message\":\"%s\",\"hint\":\"%s\"}\n",
           model.c_str(), B, error_code_name(err.code), err.what(), err.hint.c_str());
    return 1;
  }
  return 0;
}
