// rope.cpp — see rope.h. The table arithmetic follows transformers (fp32 exponents and products, as its
// RotaryEmbedding classes), so both backends rotate by the same numbers as the reference implementation.
#include "rope.h"
#include <cmath>

namespace engine {

void Rope::init(const ModelConfig& c) {
  rot = c.rotary_dim;
  half = rot / 2;
  max_pos = c.n_positions;
  interleaved = c.family == "gptj";
  std::vector<double> inv(half);
  for (size_t i = 0; i < half; i++) {
    // as HF: base ** (arange(0, dim, 2).float() / dim), in fp32
    float e = (float)(2 * i) / (float)rot;
    inv[i] = 1.0 / (double)std::pow(c.rope_theta, e);
  }
  if (c.rope_scaling == "linear") {
    for (auto& f : inv) f /= c.rope_factor;
  } else if (c.rope_scaling == "llama3") {  // transformers _compute_llama3_parameters
    const double old = (double)c.rope_original_max_positions, lf = c.rope_low_freq_factor, hf = c.rope_high_freq_factor;
    const double low_wl = old / lf, high_wl = old / hf, factor = c.rope_factor;
    for (auto& f : inv) {
      const double wl = 2 * M_PI / f;
      double g = wl > low_wl ? f / factor : f;
      if (!(wl < high_wl) && !(wl > low_wl)) {
        const double s = (old / wl - lf) / (hf - lf);
        g = (1 - s) * g / factor + s * g;
      }
      f = g;
    }
  }
  cos.resize(max_pos * half);
  sin.resize(max_pos * half);
  for (size_t p = 0; p < max_pos; p++)
    for (size_t i = 0; i < half; i++) {
      const float a = (float)p * (float)inv[i];  // fp32 product, as HF's freqs
      cos[p * half + i] = std::cos(a);
      sin[p * half + i] = std::sin(a);
    }
}

}  // namespace engine
