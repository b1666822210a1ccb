// checkpoint.h — the training checkpoint: a directory step-XXXXXXXX/ holding
//   state.bin  self-describing binary: fixed header (magic "DFTCKPT\0", version, record count, index and data
//              sizes, total file size), an index of named typed records, then 64-byte-aligned data. Records:
//              param/<HF name>, adam_m/<HF name>, adam_v/<HF name> (fp32, host layout: backend-independent),
//              state/step, state/rng (4 x u64), state/cursor (epoch, shard, offset, shuffle_seed),
//              state/data (shards, sequences, block size, sample hash of the train data; zeros before any data).
//   meta.json  human-readable: format, version, step, cursor, model config, the caller's config JSON and extra
//              metadata, backend that wrote it, and the byte size and SHA-256 of state.bin.
//   DONE       {"step", "state.bin": sha256, "meta.json": sha256}. A directory without a valid DONE is not a
//              checkpoint.
// Writes go to a private staging dir next to the target and are fsynced with DONE inside; one rename(2) then
// publishes the directory (after llm.c's DONE files and HF datasets' .incomplete directories). A rename never
// replaces a committed step, so of two writers of one step the first wins and the other adopts its checkpoint.
// Readers stream state.bin in bounded blocks, check every size against the file and both checksums, and discard
// what they read on any mismatch: a BAD_CHECKPOINT error naming the file and what was wrong.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "config.h"
#include "dataloader.h"
#include "params.h"
#include "rng.h"

namespace engine {

constexpr uint32_t CHECKPOINT_VERSION = 1;

struct CheckpointState {
  ModelConfig model;
  uint64_t step = 0;
  Rng rng{};
  DataCursor cursor;
  DataSignature data;  // what the cursor points into; resume checks the shards handed over match
  std::vector<float> params, m, v;  // (layout.total) each
  std::string config_json = "{}";   // the FinetuneConfig the run was started with (opaque here)
  std::string extra_json = "{}";    // caller's metadata
  std::string backend = "cpu";
};

struct CheckpointInfo {
  std::string dir;
  uint64_t step = 0;
  std::string sha256;  // of state.bin
  size_t bytes = 0;    // state.bin + meta.json
  bool existed = false;  // the step was already committed there (first commit wins)
};

CheckpointInfo checkpoint_save(const std::string& dir, const CheckpointState& s, const ParamLayout& layout);
// The same, with params/m/v (layout.total each) read from `state` in place instead of from s.params/m/v.
CheckpointInfo checkpoint_save(const std::string& dir, const CheckpointState& s, const ParamLayout& layout,
                               const float* const state[3]);
// Verifies and loads; the layout is rebuilt from the stored model config. A sharded (ZeRO) checkpoint
// (zero_checkpoint.h) loads whole, re-sharded to one rank, so a one-device run resumes from it.
CheckpointState checkpoint_load(const std::string& dir);
// The same for a single-file checkpoint, with params/m/v streamed into `into` (layout.total each, for the model
// checkpoint_model() returns; a null one is skipped, e.g. the moments for an export) and left empty in the result.
CheckpointState checkpoint_load_into(const std::string& dir, float* const into[3]);
// The model a checkpoint holds (meta.json or manifest.json, checksum-checked), before anything is loaded.
ModelConfig checkpoint_model(const std::string& dir);
// The fp32 weights alone (layout.total), from a single-file or sharded checkpoint, verified as they stream in.
void checkpoint_load_params(const std::string& dir, float* params);
// Verifies without loading tensors into memory; throws BadCheckpoint with the reason. Returns the step.
// Sharded checkpoints: the manifest and every rank file.
uint64_t checkpoint_verify(const std::string& dir);

// The "model" section of meta.json (shared with the sharded checkpoints in zero_checkpoint.h).
struct Json;
Json checkpoint_model_json(const ModelConfig& c);
ModelConfig checkpoint_model_from_json(const Json& model, const std::string& what);

}  // namespace engine
