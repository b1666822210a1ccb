// optimizer.h — AdamW on host fp32 buffers (Loshchilov & Hutter, decoupled weight decay), used by the cpu
// backend and, later, by CPU optimizer offload. Decay applies to tensors with two or more dimensions only
// (ParamTensor::decay), as nanoGPT's configure_optimizers does; biases and LayerNorm gains are not decayed.
#pragma once
#include <cstddef>
#include "backend.h"
#include "params.h"

namespace engine {

// Updates params [begin, end) of the flat layout in place: m, v are the moments for the same range, grads are
// scaled by hp.grad_scale (clipping) first. Deterministic and elementwise (safe to split across threads/shards).
void adamw_update(float* params, const float* grads, float* m, float* v, const ParamLayout& layout, size_t begin,
                  size_t end, const AdamWHyper& hp);

// Sum of squares of grads [0, n) in fp64, in a fixed order (blocks reduced serially) for reproducibility.
double sum_squares(const float* x, size_t n);

}  // namespace engine
