// cpu_adam.cpp — times the vectorised CPU AdamW (native/engine/cpu_adam.cpp) against the reference loop
// (native/engine/optimizer.cpp adamw_update) on one ZeRO shard [0, n) of the GPT-2 1.5B parameter layout, on all
// cores (OMP_NUM_THREADS). Prints one JSON line per variant and the ratio against the reference measured here.
// The PyTorch peer (torch.optim.AdamW(fused=True) on the same cores) is bench/cpu_adam_torch.py.
//   build + run: bench/cpu_adam.sh [n_elements] [steps]
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "cpu_adam.h"
#include "optimizer.h"

namespace engine {  // the one symbol of backend.cpp the optimizer sources need (errors.h)
std::string strfmt(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}
}  // namespace engine

using namespace engine;

template <class F>
static double median_ms(int steps, F&& f) {
  std::vector<double> t;
  for (int s = 0; s < steps + 1; s++) {  // first call: warm-up (page faults, thread pool)
    auto a = std::chrono::steady_clock::now();
    f(s + 1);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
    if (s) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  ModelConfig c;
  c.n_layer = 48; c.n_head = 25; c.n_embd = 1600; c.n_positions = 1024; c.vocab_size = 50257;
  ParamLayout lay = gpt2_param_layout(c);
  size_t n = argc > 1 ? (size_t)std::atof(argv[1]) : ((size_t)1 << 28);
  int steps = argc > 2 ? std::atoi(argv[2]) : 5;
  n = std::min(n, lay.total);
  // first-touch in parallel so pages land on the threads' NUMA nodes
  std::vector<float> p(n), g(n), m(n), v(n);
  std::vector<uint16_t> out(n);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)n; i++) {
    p[i] = 0.02f * (float)((i * 2654435761u) % 1000) / 1000.0f;
    g[i] = 1e-3f * (float)((i * 40503u) % 2001 - 1000) / 1000.0f;
    m[i] = 0.0f; v[i] = 0.0f; out[i] = 0;
  }
  // bit-identity check on a 4M-element prefix before timing
  {
    size_t k = std::min(n, (size_t)1 << 22);
    std::vector<float> pa(p.begin(), p.begin() + k), pb = pa, ma(k), va(k), mb(k), vb(k);
    AdamWHyper hp; hp.lr = 1e-4f; hp.weight_decay = 0.1f;
    for (long t = 1; t <= 3; t++) {
      hp.t = t;
      adamw_update(pa.data(), g.data(), ma.data(), va.data(), lay, 0, k, hp);
      cpu_adamw_update(pb.data(), g.data(), mb.data(), vb.data(), lay, 0, k, hp);
    }
    bool same = std::memcmp(pa.data(), pb.data(), 4 * k) == 0 && std::memcmp(va.data(), vb.data(), 4 * k) == 0;
    std::printf("{\"check\": \"bit-identical on %zu elements x 3 steps\", \"ok\": %s}\n", k, same ? "true" : "false");
    if (!same) return 1;
  }
  AdamWHyper hp; hp.lr = 1e-4f; hp.weight_decay = 0.1f;
  auto run = [&](const char* name, auto&& step, double bytes_per_elem, double ref_ms) {
    double ms = median_ms(steps, [&](long t) { hp.t = t; step(); });
    std::printf("{\"variant\": \"%s\", \"n\": %zu, \"threads\": %d, \"isa\": \"%s\", \"median_ms\": %.2f, "
                "\"Gelem_per_s\": %.3f, \"GB_per_s\": %.1f, \"speedup_vs_reference\": %.2f}\n",
                name, n, omp_get_max_threads(), cpu_adamw_isa(), ms, n / ms / 1e6, n * bytes_per_elem / ms / 1e6,
                ref_ms > 0 ? ref_ms / ms : 1.0);
    std::fflush(stdout);
    return ms;
  };
  double ref = run("reference adamw_update", [&] { adamw_update(p.data(), g.data(), m.data(), v.data(), lay, 0, n, hp); }, 28, 0);
  run("cpu_adamw_update", [&] { cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), lay, 0, n, hp); }, 28, ref);
  run("cpu_adamw_update + bf16 copy", [&] { cpu_adamw_update(p.data(), g.data(), m.data(), v.data(), lay, 0, n, hp, out.data()); }, 30, ref);
  // The memory roofline of this access pattern on these cores: the same streams (read p, g, m, v; write p, m, v)
  // with one add each instead of AdamW's arithmetic. AdamW cannot beat it; how close it comes says what is left.
  run("roofline: same 28 B/element streams, no math", [&] {
    float *P = p.data(), *M = m.data(), *Vv = v.data();
    const float* G = g.data();
#pragma omp parallel for schedule(static)
    for (long b = 0; b < (long)((n + 32767) / 32768); b++) {
      size_t lo = (size_t)b * 32768, hi = std::min(n, lo + 32768);
#pragma omp simd
      for (size_t i = lo; i < hi; i++) {
        float x = G[i];
        P[i] += x; M[i] += x; Vv[i] += x;
      }
    }
  }, 28, ref);
  return 0;
}
