// config.h — the plain structs the engine is configured with. The binding fills them from the zod-validated
// FinetuneConfig (same field names, snake_case here); the engine never sees JavaScript values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace engine {

// GPT-2 architecture (names as in Hugging Face's GPT2Config).
struct ModelConfig {
  size_t n_layer = 2;       // L
  size_t n_head = 4;        // NH
  size_t n_embd = 128;      // C
  size_t n_positions = 1024;  // maxT: size of the learned position table
  size_t vocab_size = 50257;  // V
  float layer_norm_eps = 1e-5f;
  float dropout = 0.0f;     // fine-tuning default; the cpu backend rejects > 0 (see README)
  uint64_t init_seed = 42;
};

void model_config_validate(const ModelConfig& c);  // throws BadConfig naming the field

enum class LrSchedule { Cosine, Linear, Constant };

// Optimisation settings (training.* of FinetuneConfig).
struct TrainConfig {
  size_t micro_batch_size = 8;  // B
  size_t block_size = 128;      // T (from the shards; must be <= n_positions)
  size_t grad_accum_steps = 1;
  float learning_rate = 3e-4f;
  float min_lr_ratio = 0.1f;
  size_t warmup_steps = 10;
  LrSchedule schedule = LrSchedule::Cosine;
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;        // 0 = off
  uint64_t shuffle_seed = 0;
  float divergence_loss = 1e4f;  // a step loss above this (or non-finite) stops training with NonFiniteLoss
};

// What the backend is asked to be. A request it cannot honour is an error, never a silent fallback.
struct BackendOptions {
  std::string name = "cpu";        // "cpu" | "cuda"
  std::string precision = "fp32";  // "fp32" | "bf16" (cpu: fp32 only)
  std::string recompute = "none";
  int device = 0;                  // CUDA ordinal
  int zero_stage = 0;              // 0..3 (this issue: 0)
  std::string offload = "none";    // "none" | "cpu"
  int world_size = 1, rank = 0;
  int num_threads = 0;             // cpu: OpenMP/BLAS threads, 0 = all cores
};

}  // namespace engine
