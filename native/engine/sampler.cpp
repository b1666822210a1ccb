// sampler.cpp — temperature / top-k / top-p sampling (see sampler.h).
#include "sampler.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace engine {

int32_t sample_token(const float* logits, size_t V, const SampleOptions& o, Rng& rng) {
  if (o.temperature <= 0.0f) {
    size_t best = 0;
    for (size_t i = 1; i < V; i++)
      if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
  }
  // candidates sorted by logit, descending (ties by id, so the order is deterministic)
  std::vector<int32_t> idx(V);
  for (size_t i = 0; i < V; i++) idx[i] = (int32_t)i;
  auto cmp = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t k = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  if (k < V) std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), cmp);
  else std::sort(idx.begin(), idx.end(), cmp);
  idx.resize(k);
  std::vector<double> p(k);
  const double maxv = logits[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < k; i++) { p[i] = std::exp(((double)logits[idx[i]] - maxv) / o.temperature); sum += p[i]; }
  for (auto& x : p) x /= sum;
  // nucleus: smallest prefix whose mass reaches top_p (always at least one token)
  size_t keep = k;
  if (o.top_p < 1.0f) {
    double c = 0;
    for (size_t i = 0; i < k; i++) {
      c += p[i];
      if (c >= o.top_p) { keep = i + 1; break; }
    }
  }
  double mass = 0;
  for (size_t i = 0; i < keep; i++) mass += p[i];
  double u = rng_uniform(rng) * mass, c = 0;
  for (size_t i = 0; i < keep; i++) {
    c += p[i];
    if (u < c) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace engine
