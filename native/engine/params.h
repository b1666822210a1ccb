// params.h — the parameter layout: every tensor by its Hugging Face GPT-2 name, its shape in HF's Conv1D layout,
// and its offset in one flat fp32 buffer. Backends, the optimizer, checkpoints and safetensors import/export all
// index parameters through this table, so weights load and export without guessing, and a checkpoint written by
// one backend loads into another. Order = HF GPT2LMHeadModel.named_parameters() (layer-major: each block's
// tensors are contiguous, which is what ZeRO-3 gathers per layer). lm_head.weight is tied to wte and not stored.
#pragma once
#include <cstddef>
#include <string>
#include <vector>
#include "config.h"

namespace engine {

struct ParamTensor {
  std::string name;           // "transformer.h.0.attn.c_attn.weight"
  std::vector<size_t> shape;  // HF shape, e.g. (C, 3C) for Conv1D weights (in_features, out_features)
  size_t offset = 0;          // first element in the flat buffer
  size_t numel = 0;
  bool decay = false;         // AdamW weight decay: every tensor with two or more dimensions (nanoGPT's rule)
};

struct ParamLayout {
  std::vector<ParamTensor> tensors;
  size_t total = 0;  // number of fp32 elements
  const ParamTensor* find(const std::string& name) const;  // nullptr when absent
  const ParamTensor& at(const std::string& name) const;    // throws Internal when absent
  // Appends a tensor after the last one; matrices (2+ dims) get weight decay, vectors do not.
  void add(const std::string& name, std::vector<size_t> shape);
};

ParamLayout gpt2_param_layout(const ModelConfig& c);

// Indices into ParamLayout::tensors for one transformer block, in the order gpt2_param_layout emits them.
enum BlockTensor {
  LN1_W, LN1_B, ATTN_W, ATTN_B, ATTNPROJ_W, ATTNPROJ_B, LN2_W, LN2_B, FC_W, FC_B, FCPROJ_W, FCPROJ_B, N_BLOCK_TENSORS
};
inline size_t wte_index() { return 0; }
inline size_t wpe_index() { return 1; }
inline size_t block_index(size_t layer, BlockTensor t) { return 2 + layer * N_BLOCK_TENSORS + t; }
inline size_t lnf_w_index(size_t L) { return 2 + L * N_BLOCK_TENSORS; }
inline size_t lnf_b_index(size_t L) { return 3 + L * N_BLOCK_TENSORS; }

// ZeRO sharding of the flat buffer: rank r owns [begin, end). Shards are padded to `align` elements so each
// rank's slice starts on an aligned boundary; the last rank may own fewer elements (or none). Superseded by
// zero.h (zero_shard, 128-element alignment, shard_slices), which sharded checkpoints and the estimate use.
struct ShardRange { size_t begin = 0, end = 0; size_t size() const { return end - begin; } };
ShardRange shard_range(size_t total, int world_size, int rank, size_t align = 64);

// Number of parameters, counting the tied head once (what HF's num_parameters() reports).
inline size_t param_count(const ParamLayout& l) { return l.total; }

}  // namespace engine
