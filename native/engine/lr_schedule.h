// lr_schedule.h — learning rate at an optimizer step: linear warmup from 0 over warmup_steps, then cosine or
// linear decay to min_lr_ratio * lr at total_steps (nanoGPT's get_lr), or constant after warmup.
#pragma once
#include <cmath>
#include <cstddef>
#include "config.h"

namespace engine {

// step is 0-based (the step about to be taken); total_steps is the planned length of the whole run.
inline float lr_at(const TrainConfig& c, size_t step, size_t total_steps) {
  const double lr = c.learning_rate, min_lr = c.learning_rate * (double)c.min_lr_ratio;
  if (c.warmup_steps > 0 && step < c.warmup_steps) return (float)(lr * (double)(step + 1) / (double)c.warmup_steps);
  if (c.schedule == LrSchedule::Constant) return (float)lr;
  if (total_steps <= c.warmup_steps || step >= total_steps) return (float)min_lr;
  double progress = (double)(step - c.warmup_steps) / (double)(total_steps - c.warmup_steps);  // [0, 1)
  double coeff = c.schedule == LrSchedule::Cosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return (float)(min_lr + coeff * (lr - min_lr));
}

}  // namespace engine
