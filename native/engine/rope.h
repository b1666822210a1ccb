// rope.h — rotary position embedding tables, shared by the cpu reference (reference/layers.cpp rope_apply) and the
// cuda backend (cuda/rope.cuh uploads them), so both rotate by the same numbers.
#pragma once
#include <cstddef>
#include <vector>
#include "config.h"

namespace engine {

// cos/sin (max_pos, rotary_dim / 2) for frequency i = theta^(-2i/rotary_dim), scaled as configured (linear, llama3).
struct Rope {
  size_t rot = 0, half = 0, max_pos = 0;
  bool interleaved = false;   // gptj: pairs (2i, 2i+1); llama/neox: pairs (i, i + rot/2)
  std::vector<float> cos, sin;  // (max_pos, half)
  void init(const ModelConfig& c);
};

}  // namespace engine
