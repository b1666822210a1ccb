// engine.h — the training engine as the binding sees it: a backend (the tensors and the math) plus everything
// that is the same for every backend: the data loader, the learning-rate schedule, gradient accumulation and
// clipping, the optimizer step count, the RNG, checkpoints, HF import/export, evaluation and sampling.
//
// Loss normalisation (documented choice): a step's loss is the mean over the non-ignored targets of ALL its
// micro-batches (sum of per-target losses / number of targets in the step). With one micro-batch this is exactly
// HF GPT2LMHeadModel's loss; with gradient accumulation every target weighs the same, however the masked
// positions fall across micro-batches (HF Trainer instead averages per-micro-batch means).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "backend.h"
#include "checkpoint.h"
#include "dataloader.h"
#include "rng.h"
#include "sampler.h"

namespace engine {

struct TrainProgress {
  uint64_t step = 0;  // optimizer steps done (after this one)
  float loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_sec = 0, elapsed_ms = 0;
};

struct TrainResult {
  uint64_t step = 0;
  std::vector<float> losses;  // one per step taken in this call
  uint64_t tokens = 0;
  double tokens_per_sec = 0;
  bool aborted = false;
};

struct EvalResult {
  double loss = 0, perplexity = 0, accuracy = 0;
  uint64_t tokens = 0, sequences = 0;
  bool aborted = false;
};

struct GenerateOptions {
  size_t max_new_tokens = 64;
  SampleOptions sample;
  uint64_t seed = 0;
  int32_t eos_id = 50256;  // < 0: never stop early
};

class Engine {
 public:
  // Fresh model (random init from model.init_seed) or, when hf_dir is not empty, weights from a HF GPT-2 dir
  // (whose config.json then defines the architecture).
  Engine(const ModelConfig& model, const TrainConfig& train, const BackendOptions& opts, const std::string& hf_dir = "");
  // The full training state of a committed checkpoint. `train` supplies the optimisation settings for the steps
  // to come; the architecture, weights, moments, step, RNG and data cursor come from the checkpoint.
  static std::unique_ptr<Engine> from_checkpoint(const std::string& dir, const TrainConfig& train,
                                                 const BackendOptions& opts);

  Backend& backend() { return *backend_; }
  const ModelConfig& model() const { return backend_->config(); }
  uint64_t step() const { return step_; }
  const DataCursor& cursor() const { return loader_.cursor; }
  void set_config_json(std::string j) { config_json_ = std::move(j); }

  void set_train_data(std::vector<ShardView> shards);
  // Runs up to n_steps optimizer steps. Stops at a step boundary when *abort becomes true. progress is called
  // after every step on the calling thread.
  TrainResult train(size_t n_steps, size_t total_steps, const std::atomic<bool>* abort,
                    const std::function<void(const TrainProgress&)>& progress);
  // Scores shards in order (no shuffle): batches of batch_size sequences, at most max_batches (0 = all).
  EvalResult evaluate(const std::vector<ShardView>& shards, size_t max_batches, size_t batch_size,
                      const std::atomic<bool>* abort);
  // Returns only the new tokens of each prompt (EOS included when it stopped there).
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& o);

  CheckpointInfo save_checkpoint(const std::string& dir, const std::string& extra_json);
  void export_hf(const std::string& dir, const std::string& tokenizer_json, int eos_id, int bos_id = -1);

 private:
  Engine() = default;
  std::unique_ptr<Backend> backend_;
  TrainConfig train_;
  uint64_t step_ = 0;
  Rng rng_{};  // engine RNG, saved and restored (consumed by nothing while dropout is 0)
  DataLoader loader_;
  DataCursor pending_cursor_;  // cursor restored from a checkpoint, applied by set_train_data
  DataSignature data_sig_;     // the train data the cursor points into (empty until known)
  DataSignature resume_sig_;   // from the checkpoint: the first set_train_data must match it
  std::string config_json_ = "{}";
  std::vector<int32_t> inputs_, targets_;  // (accum, B, T) host staging for one step
  std::vector<int32_t> positions_;         // (accum, B, T) position ids of packed shards (else empty)
  std::vector<Batch> batches_;             // (accum) views into the staging buffers
};

// Hugging Face export straight from a checkpoint's files (single-file or sharded), without a backend: only the
// fp32 weights are read (4 bytes per parameter of host memory, verified as they stream in), so a model trained
// with ZeRO-3 over GPUs it does not fit one of exports on any host that holds its weights, and no GPU is taken.
// eos_id < 0: the model's own (HF config), else 50256; bos_id as in hf_export. Same files as Engine::export_hf of that checkpoint.
void export_checkpoint_hf(const std::string& checkpoint_dir, const std::string& dir, const std::string& tokenizer_json,
                          int eos_id, int bos_id = -1);

}  // namespace engine
