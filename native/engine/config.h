// config.h — the plain structs the engine is configured with. The binding fills them from the zod-validated
// FinetuneConfig (same field names, snake_case here); the engine never sees JavaScript values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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

  // --- other families (families.h; names follow the HF configs, camelCase in FinetuneConfig.model) ---
  std::string family = "gpt2";   // "gpt2" | "llama" | "gpt_neox" | "gptj" (HF model_type)
  size_t n_kv_head = 0;          // KVH (llama GQA); 0 = n_head
  size_t head_dim = 0;           // HD; 0 = n_embd / n_head
  size_t intermediate_size = 0;  // I (MLP width); 0 = family default (4C, llama: its own rule)
  size_t rotary_dim = 0;         // rotary dims per head (neox: rotary_pct * HD, gptj: rotary_dim, llama: HD)
  float rope_theta = 10000.0f;
  std::string rope_scaling = "";  // "" | "linear" | "llama3"
  float rope_factor = 1.0f, rope_low_freq_factor = 1.0f, rope_high_freq_factor = 4.0f;
  size_t rope_original_max_positions = 8192;
  bool tie_word_embeddings = true;  // gpt2 always; llama configurable; neox/gptj false
  bool parallel_residual = true;    // gpt_neox use_parallel_residual
  bool attention_bias = true;       // gpt_neox attention_bias (llama: false only)
  std::string hidden_act = "gelu_new";  // "gelu_new" (tanh) | "gelu" (erf) | "silu" (llama SwiGLU)
  int64_t bos_token_id = -1, eos_token_id = -1;  // from the HF config, written back on export (-1: absent)
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
  int zero_stage = 0;              // 0..3 (ZeRO: optimizer state / + gradients / + weights sharded over ranks)
  std::string offload = "none";    // "none" | "cpu"
  bool offload_delayed = false;    // offload "cpu": apply each CPU AdamW update one step late (overlaps the next step)
  // Data parallelism (cuda; engine/cuda/nccl_dp.cuh). world_size: ranks (GPUs) over all processes; rank: global
  // rank of this process's FIRST local GPU; devices: the local CUDA ordinals this process drives, one engine
  // thread each (empty = {device}); nccl_id: from nccl_unique_id() on one process, handed to every process (128
  // raw bytes or 256 hex digits; empty = a single process driving all world_size GPUs).
  int world_size = 1, rank = 0;
  std::vector<int> devices;
  std::string nccl_id;
  int num_threads = 0;             // cpu: OpenMP/BLAS threads, 0 = all cores
};

}  // namespace engine
