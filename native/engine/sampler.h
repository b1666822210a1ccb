// sampler.h — next-token sampling from logits: temperature, top-k, top-p (nucleus), greedy at temperature 0.
// Order as in HF generate's logits processors: temperature, then top-k, then top-p.
#pragma once
#include <cstddef>
#include <cstdint>
#include "rng.h"

namespace engine {

struct SampleOptions {
  float temperature = 1.0f;  // 0 = greedy (argmax)
  size_t top_k = 0;          // 0 = off
  float top_p = 1.0f;        // 1 = off
};

int32_t sample_token(const float* logits, size_t V, const SampleOptions& o, Rng& rng);

}  // namespace engine
