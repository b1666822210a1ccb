// backend.h — the interface between the engine (data, schedule, checkpoints, sampling: engine.cpp) and the code
// that owns the tensors and runs the math. Two implementations:
//   cpu  — native/reference/cpu_backend.cpp, the readable fp32 reference (llm.c train_gpt2.c style)
//   cuda — native/engine/cuda/, compiled when nvcc is found (defines ENGINE_HAVE_CUDA); it provides
//          make_cuda_backend() below. It may keep bf16 weights + fp32 master weights on the device; everything
//          crossing this interface is host fp32 in ParamLayout order, so checkpoints are backend-independent.
//
// Contract for every backend:
//  - Parameters are the fp32 (master) weights in params.h's flat layout (HF names, Conv1D (in, out) layout,
//    lm_head tied to wte). get/set_params copy the whole flat buffer (rank-local shards come later with ZeRO:
//    ShardRange in params.h; get_params then gathers).
//  - Targets are already shifted by the engine: targets[b*T + t] is the token to predict from position t
//    (= labels[b*T + t + 1]), -100 (IGNORE_INDEX) where nothing is predicted. The last position is always -100.
//  - forward_backward ACCUMULATES into the gradients: grads += dloss * d(sum of per-target losses)/dθ, and
//    returns the sum (fp64) of per-target cross-entropy losses over non-ignored targets. The engine picks
//    dloss = 1 / (non-ignored targets of the whole optimizer step), so accumulation averages over the step.
//  - optimizer_step applies AdamW to all parameters using the accumulated grads times grad_scale (global-norm
//    clipping factor computed by the engine from grad_norm_sq), then leaves the grads as they are (the engine
//    calls zero_grad before the next step).
//  - Determinism: given the same inputs, state and thread count, results are bitwise identical (no atomics or
//    unordered float reductions), so resume is exact on the cpu backend.
//  - Errors: throw EngineError (errors.h) with a code; never exit, never fall back silently.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "config.h"
#include "params.h"

namespace engine {

constexpr int32_t IGNORE_INDEX = -100;

// One micro-batch, host memory, row-major (B, T). Pointers are borrowed for the duration of the call.
struct Batch {
  const int32_t* inputs = nullptr;   // (B, T) token ids in [0, V)
  const int32_t* targets = nullptr;  // (B, T) shifted targets, IGNORE_INDEX where masked
  size_t B = 0, T = 0;
  // Packed sequences (several examples per row): positions[t] (B, T) is the token's position within its own
  // example, 0 at each example's first token. Position embeddings and rotary angles use it, and query t attends only
  // to keys t - positions[t] .. t (its own example): the varlen / segment form of causal attention, so an example
  // packed with others computes exactly what it computes alone. Null: one sequence per row, positions 0..T-1.
  const int32_t* positions = nullptr;
  // Dropout (model.dropout > 0, training only): masks are a pure function of (dropout_seed, stream, element
  // index) — dropout_keep() in layers of the reference — so a backend can recompute them in the backward and
  // resume stays exact (the engine draws one seed per micro-batch from its checkpointed RNG).
  uint64_t dropout_seed = 0;
};

// Summed over the non-ignored targets of a batch.
struct EvalStats {
  double loss_sum = 0;   // sum of -log p(target)
  size_t n_targets = 0;  // non-ignored targets
  size_t n_correct = 0;  // argmax(logits) == target
};

struct AdamWHyper {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
  float grad_scale = 1.0f;  // multiply grads by this before the update (clipping; 1 = none)
  long t = 1;               // 1-based step number for the bias correction
};

// What a whole optimizer step reports back (step_async / step_wait).
struct StepOutput {
  double loss_sum = 0;      // sum of per-target losses over all micro-batches
  double grad_norm_sq = 0;  // squared global L2 norm of the accumulated (unclipped) gradients
  bool applied = false;     // false: loss or norm non-finite / above max_loss, the weights were NOT updated
};

// Bytes held per device (for several GPUs: the largest rank's, see DataParallel in cuda/nccl_dp.cuh).
// params_bytes = compute weights + fp32 master weights; optimizer_bytes = AdamW moments.
struct MemoryReport {
  size_t params_bytes = 0, grads_bytes = 0, optimizer_bytes = 0, activations_bytes = 0, other_bytes = 0;
  size_t buffers_bytes = 0;       // ZeRO communication buffers: gradient buckets (stage >= 2), gathered units (3)
  size_t device_total_bytes = 0;  // 0 on the cpu backend
  int zero_stage = 0, world_size = 1;
  // model-state formula for this stage and world size (params + grads + master + moments per device):
  // formula_bytes with this engine's fp32 gradients, formula_paper_bytes with the ZeRO paper's 2-byte ones
  size_t formula_bytes = 0, formula_paper_bytes = 0;
  size_t total() const {
    return params_bytes + grads_bytes + optimizer_bytes + activations_bytes + other_bytes + buffers_bytes;
  }
};

// The effective configuration, reported to TypeScript after init.
struct BackendInfo {
  std::string name;       // "cpu" | "cuda"
  std::string device;     // "cpu (2 threads)" | "NVIDIA H100 80GB HBM3"
  std::string blas;       // cpu: "openblas 0.3.21" or "builtin-blocked"; cuda: "cublasLt 13.0"
  std::string precision;  // "fp32" | "bf16"
  int num_threads = 1;
};

// ZeRO: one rank's shard of the fp32 master weights and AdamW moments, [range.begin, range.end) of the flat layout
// (zero_shard(total, {rank, world_size})), for sharded checkpoints (zero_checkpoint.h).
struct LocalShard {
  int rank = 0, world_size = 1;
  ShardRange range;
  std::vector<float> params, m, v;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const BackendInfo& info() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual const ParamLayout& layout() const = 0;
  // Whether batches may carry Batch::positions (packed sequences with per-example attention). A backend that
  // cannot honour them says so, and the engine refuses packed data on it instead of attending across examples.
  virtual bool supports_packed() const { return false; }

  // --- host fp32 state in ParamLayout order (checkpoints, HF import/export, tests) ---
  virtual void get_params(float* dst) const = 0;  // (layout().total)
  virtual void set_params(const float* src) = 0;  // also resets any low-precision copies
  virtual void get_grads(float* dst) const = 0;   // accumulated grads (tests, parity)
  virtual void get_optimizer_state(float* m, float* v) const = 0;  // AdamW first/second moments
  virtual void set_optimizer_state(const float* m, const float* v) = 0;

  // --- training primitives ---
  virtual void zero_grad() = 0;
  virtual double forward_backward(const Batch& batch, float dloss) = 0;  // returns loss sum, accumulates grads
  virtual double grad_norm_sq() = 0;                                    // squared global L2 norm of the grads
  virtual void optimizer_step(const AdamWHyper& hp) = 0;

  // --- one whole optimizer step, the engine's hot path ---
  // zero_grad, forward_backward over n_micro micro-batches with dloss, the global grad norm, then — only when the
  // mean loss (loss_sum * dloss) is finite and <= max_loss and the norm is finite — AdamW with
  // hp.grad_scale = min(1, grad_clip / (norm + 1e-6)) when grad_clip > 0 (torch.nn.utils.clip_grad_norm_).
  // step_async may return before the work is done (a GPU backend queues it and keeps the check on the device);
  // step_wait blocks until it is and reports. The default runs the primitives above synchronously. Batches and
  // their pointers must stay valid until step_wait returns.
  virtual void step_async(const Batch* micro, size_t n_micro, float dloss, const AdamWHyper& hp, float grad_clip,
                          double max_loss);
  virtual StepOutput step_wait();

  // --- evaluation ---
  virtual EvalStats forward_eval(const Batch& batch) = 0;
  virtual void forward_logits(const Batch& batch, float* logits) = 0;  // (B, T, V) fp32, host

  // --- generation with a KV cache: `slots` independent sequences, each with its own length ---
  virtual void kv_begin(size_t slots, size_t max_len) = 0;
  // Append n tokens to one slot (prompt prefill); writes the logits of its last position to logits (V).
  virtual void kv_prefill(size_t slot, const int32_t* tokens, size_t n, float* logits) = 0;
  // Append one token to each of the first `n` listed slots; logits (n, V) for the new positions.
  virtual void kv_decode(const size_t* slots, const int32_t* tokens, size_t n, float* logits) = 0;
  virtual void kv_end() = 0;

  virtual MemoryReport memory() const = 0;

  // ZeRO stages >= 1 on several ranks: the shards this process holds, one per local rank. Empty (the default):
  // the state is not sharded, and checkpoints are written from get_params/get_optimizer_state.
  virtual std::vector<LocalShard> local_shards() { return {}; }
  // The whole fp32 state (params, m, v in ParamLayout order, layout().total each) when this backend keeps it in
  // host memory anyway: the CPU backend, and optimizer offload on one GPU (pinned). Checkpoints are then written
  // from it and loaded into it in place, with no 12-bytes-per-parameter copy beside it (a 6B model: 70 GB).
  // All null (the default): use get_params/get_optimizer_state. After writing through it, call
  // host_state_written() (the backend refreshes what it derives from the master weights).
  struct HostState { float* params = nullptr; float* m = nullptr; float* v = nullptr; };
  virtual HostState host_state() { return {}; }
  virtual void host_state_written() {}
  // Several processes of one data-parallel run (the cuda backend's NCCL group): a collective over every rank and
  // so a barrier — returns global rank 0's `value` (max_over_ranks false) or the maximum over all ranks. Every
  // process must call it. One process (the default): returns value.
  virtual uint64_t group_u64(uint64_t value, bool max_over_ranks) { return value; }
  // Does this process drive global rank 0 (the one that commits shared checkpoint files)?
  virtual bool holds_rank0() const { return true; }

 protected:
  StepOutput pending_;  // result of the default step_async
};

// Factory: "cpu" always; "cuda" when built with ENGINE_HAVE_CUDA, else BadConfig with a build hint.
std::unique_ptr<Backend> create_backend(const ModelConfig& model, const BackendOptions& opts);
// Which backends this build contains ("cpu", "cpu,cuda").
std::string compiled_backends();

// The cpu backend, every family (native/reference/cpu_backend.cpp).
std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& model, const BackendOptions& opts);
#ifdef ENGINE_HAVE_CUDA
// The cuda backend, every family (native/engine/cuda/cuda_backend.cu). Honours opts.precision, opts.device,
// opts.zero_stage and opts.offload or throws BadConfig naming the unsupported value.
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& model, const BackendOptions& opts);
// Number of visible CUDA devices (0 when the driver has none); used for backend "auto" and engineAvailable().
int cuda_device_count();
// A fresh NCCL unique id (256 hex digits) for BackendOptions::nccl_id: made by one process (rank 0's) and handed
// to every process of a multi-process / multi-host run. Loads NCCL (Device error naming where it looked if absent).
std::string nccl_unique_id();
#endif

// Random GPT-2 init written into a flat host buffer (HF's _init_weights: N(0, 0.02) weights, residual
// projections scaled by 1/sqrt(2L), zero biases, unit LayerNorm gains), deterministic in cfg.init_seed.
void gpt2_init_params(const ModelConfig& cfg, const ParamLayout& layout, float* params);

}  // namespace engine
