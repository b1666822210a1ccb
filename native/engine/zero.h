// zero.h — ZeRO sharding arithmetic and the pre-flight memory estimate (Rajbhandari et al. 2020, "ZeRO: Memory
// Optimizations Toward Training Trillion Parameter Models", §5; Ren et al. 2021, "ZeRO-Offload").
//
// The flat parameter vector (ParamLayout order, Ψ elements) is padded to Ψp = N * S elements, S = ceil(Ψ/N) rounded
// up to ZERO_ALIGN, so every rank owns exactly S elements starting on an aligned boundary (the tail of the last
// rank(s) is padding). A tensor may straddle ranks: shard_slices() says which piece of which tensor a rank owns.
//
// Model-state bytes per rank with mixed precision (bf16 params and grads, fp32 master + m + v = 12 bytes):
//   stage 0: 2Ψ + 2Ψ + 12Ψ = 16Ψ        stage 1: 2Ψ + 2Ψ + 12S       (4Ψ + 12Ψ/N)
//   stage 2: 2Ψ + 2S + 12S (2Ψ + 14Ψ/N) stage 3: 2S + 2S + 12S      (16Ψ/N)
// With fp32 training the params are the master copy: 4 + 4 + 8 bytes, sharded the same way.
// Offload (optimizer: cpu) moves the fp32 master, m and v (12 bytes/element) plus an fp32 gradient buffer the CPU
// AdamW reads (4 bytes) and a bf16 staging copy of the updated weights (2 bytes) to pinned host memory, per shard.
// Nothing here allocates: this is what the engine checks before it does, so a user learns a run will not fit
// before it fails.
#pragma once
#include <cstddef>
#include <string>
#include <vector>
#include "config.h"
#include "params.h"

namespace engine {

constexpr size_t ZERO_ALIGN = 128;  // elements: 512 B of fp32, 256 B of bf16 (coalesced, vector-aligned shards)

struct ZeroConfig {
  int rank = 0, world_size = 1, stage = 0;
  void validate() const;  // throws BadConfig naming the field
};

// Padded per-rank shard size S and padded total N*S.
size_t zero_shard_size(size_t total, int world_size, size_t align = ZERO_ALIGN);
// Rank r owns [r*S, (r+1)*S) of the padded vector; .end is clipped to `total` (the rest is padding).
ShardRange zero_shard(size_t total, const ZeroConfig& z, size_t align = ZERO_ALIGN);

// The part of one tensor that a shard owns: tensor elements [tensor_begin, tensor_begin + count) live at
// shard-local offset shard_offset (i.e. global offset t.offset + tensor_begin).
struct ShardSlice {
  size_t tensor_index = 0;  // into ParamLayout::tensors
  size_t tensor_begin = 0;  // first element within the tensor
  size_t count = 0;
  size_t shard_offset = 0;  // first element within the shard
};
std::vector<ShardSlice> shard_slices(const ParamLayout& layout, ShardRange r);
// The ranks holding any part of a tensor (first, last inclusive).
std::pair<int, int> tensor_ranks(const ParamLayout& layout, const std::string& name, int world_size,
                                 size_t align = ZERO_ALIGN);

// Per-rank model-state bytes (device and host) for one stage.
struct ModelStateBytes {
  size_t params = 0, grads = 0, master = 0, moments = 0;  // device
  size_t host = 0;                                         // pinned host memory (offload)
  size_t device() const { return params + grads + master + moments; }
};
// grad_bytes: 0 = the paper's (as the weights: 2 with bf16); ENGINE_GRAD_BYTES = what the cuda backend holds.
ModelStateBytes zero_model_state_bytes(size_t n_params, int stage, int world_size, bool bf16, bool offload,
                                       size_t align = ZERO_ALIGN, size_t grad_bytes = 0);
// The cuda backend accumulates gradients in fp32 (exact over micro-batches, and what the reductions sum), so its
// model state is 2 bytes per gradient element above the paper's with bf16: 18Ψ, 6Ψ + 12Ψ/N, 2Ψ + 16Ψ/N, 18Ψ/N.
constexpr size_t ENGINE_GRAD_BYTES = 4;

// What is being estimated: the settings a FinetuneConfig resolves to.
struct MemoryRequest {
  ModelConfig model;
  size_t B = 8, T = 1024;             // training.microBatchSize, preprocess.blockSize
  std::string precision = "bf16";     // "fp32" | "bf16"
  std::string recompute = "none";     // training.recompute
  int stage = 0, world_size = 1;      // parallelism.zeroStage, number of devices
  bool offload = false;               // parallelism.offload.optimizer == 'cpu'
};

struct MemoryEstimate {
  MemoryRequest req;
  size_t n_params = 0, shard_elems = 0;
  ModelStateBytes state;        // what the engine allocates (fp32 gradients)
  ModelStateBytes state_paper;  // the ZeRO paper's formula (gradients in the weights' dtype), for reference
  size_t activations = 0;  // training activations for (B, T), the cuda backend's ensure_acts layout
  size_t buffers = 0;      // ZeRO communication buffers (gathered layer / bucket), tokens, scalars
  size_t device_total = 0, host_total = 0;
  std::string formula;     // the model-state formula used, for the report
};

MemoryEstimate estimate_memory(const MemoryRequest& req);  // throws BadConfig naming a bad setting

// A verdict against a device of `device_bytes` (and optionally host bytes; 0 = unchecked). ok=false comes with
// advice naming the setting to change, most effective first.
struct FitVerdict {
  bool ok = true;
  std::string advice;
};
FitVerdict memory_fits(const MemoryEstimate& e, size_t device_bytes, size_t host_bytes = 0);

}  // namespace engine
