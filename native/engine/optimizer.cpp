// optimizer.cpp — host AdamW and the gradient norm (see optimizer.h).
#include "optimizer.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace engine {

void adamw_update(float* params, const float* grads, float* m, float* v, const ParamLayout& layout, size_t begin,
                  size_t end, const AdamWHyper& hp) {
  // Bias corrections as torch.optim.AdamW: m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
  const float bc1 = 1.0f - (float)std::pow((double)hp.beta1, (double)hp.t);
  const float bc2 = 1.0f - (float)std::pow((double)hp.beta2, (double)hp.t);
  for (const ParamTensor& t : layout.tensors) {
    size_t lo = std::max(begin, t.offset), hi = std::min(end, t.offset + t.numel);
    if (lo >= hi) continue;
    const float wd = t.decay ? hp.weight_decay : 0.0f;
#pragma omp parallel for schedule(static)
    for (long ii = (long)lo; ii < (long)hi; ii++) {
      size_t i = (size_t)ii, j = i - begin;  // params/grads indexed globally, moments shard-locally
      float g = grads[i] * hp.grad_scale;
      float mi = hp.beta1 * m[j] + (1.0f - hp.beta1) * g;
      float vi = hp.beta2 * v[j] + (1.0f - hp.beta2) * g * g;
      m[j] = mi;
      v[j] = vi;
      float mhat = mi / bc1, vhat = vi / bc2;
      // decoupled decay: p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)   (torch: p *= 1 - lr*wd first; same)
      params[i] -= hp.lr * (mhat / (std::sqrt(vhat) + hp.eps) + wd * params[i]);
    }
  }
}

double sum_squares(const float* x, size_t n) {
  const size_t BLK = 1 << 16;
  size_t nb = (n + BLK - 1) / BLK;
  std::vector<double> part(nb, 0.0);
#pragma omp parallel for schedule(static)
  for (long b = 0; b < (long)nb; b++) {
    size_t lo = (size_t)b * BLK, hi = std::min(n, lo + BLK);
    double s = 0;
    for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
    part[b] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return s;
}

}  // namespace engine
