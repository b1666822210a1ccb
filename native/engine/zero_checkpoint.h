// zero_checkpoint.h — sharded training checkpoints for ZeRO: every rank writes its own shard of the fp32 master
// weights and AdamW moments, in parallel, and a run may resume on a different number of ranks (each new rank
// reads its range out of whichever old files hold it). A directory step-XXXXXXXX/ holds
//   rank-XXXXX-of-YYYYY.bin  64-byte header (magic "DFTSHARD", version, rank, world size, total, begin, end),
//                            then params, adam_m, adam_v of the shard [begin, end) of the flat layout, fp32.
//   manifest.json            format, version, step, world size, nParams, align, shard size, per file: rank,
//                            begin, end, bytes, sha256; the model, cursor, rng (u64 as decimal strings), data
//                            signature, the caller's config and extra metadata, backend.
//   DONE                     written last: {"step", "manifest.json": sha256}.
// Commit protocol as checkpoint.h: a private temp dir next to the target, fsync, rename, DONE. Every rank file a
// reader touches is checked against its size, header and SHA-256 first; a missing or corrupt one is a
// BAD_CHECKPOINT naming the file. checkpoint_from_sharded converts to the single-file format (state.bin), which
// is what Hugging Face export and the single-GPU engine load.
#pragma once
#include <string>
#include <utility>
#include <vector>
#include "checkpoint.h"
#include "zero.h"

namespace engine {

// One rank's part: (range.size()) floats each, shard-local.
struct RankShard {
  ShardRange range;
  const float *params = nullptr, *m = nullptr, *v = nullptr;
};

// Writes the shard files of `shards` (every rank of world_size, in rank order) in parallel threads, then the
// manifest, then commits. `meta` supplies everything except the tensors (its params/m/v are ignored).
// The ranges must be zero_shard(layout.total, {r, world_size}).
CheckpointInfo sharded_checkpoint_save(const std::string& dir, const CheckpointState& meta,
                                       const std::vector<RankShard>& shards);

// The same in two phases, for ranks spread over several processes (sharing a file system): every process writes
// its own ranks' files (+ a small <file>.json with size and SHA-256) into one staging folder that all of them name
// alike (sharded_checkpoint_staging with a token they agreed on), then — after all have written — ONE process
// commits: checks every rank's file is there, writes the manifest, renames, DONE. A committed `dir` of the same
// step wins (the commit returns it).
std::string sharded_checkpoint_staging(const std::string& dir, uint64_t token);
void sharded_checkpoint_write_ranks(const std::string& staging, const CheckpointState& meta, int world_size,
                                    const std::vector<std::pair<int, RankShard>>& mine);
CheckpointInfo sharded_checkpoint_commit(const std::string& staging, const std::string& dir,
                                         const CheckpointState& meta, int world_size);
// dir, step and manifest checksum of a committed sharded checkpoint, from its DONE marker (reads nothing else).
CheckpointInfo sharded_checkpoint_info(const std::string& dir);

// Loads rank `rank` of a world of `world_size` (any size, re-sharded from the stored one): params, m, v of the
// returned state hold that rank's range (returned in *range) only. Verifies the manifest and every file it reads.
CheckpointState sharded_checkpoint_load(const std::string& dir, int world_size, int rank, ShardRange* range);

// Verifies DONE, the manifest and every rank file; returns the step.
uint64_t sharded_checkpoint_verify(const std::string& dir);

// Is `dir` a sharded checkpoint (has manifest.json) rather than a single-file one?
bool is_sharded_checkpoint(const std::string& dir);
// The model a sharded checkpoint holds (manifest.json, checksum-checked).
ModelConfig sharded_checkpoint_model(const std::string& dir);
// The whole fp32 weights (manifest nParams floats) from every rank file; the moments are skipped.
void sharded_checkpoint_load_params(const std::string& dir, float* params);

// Tests: the block size checkpoint files (rank files and state.bin) are streamed in (default 64 MiB; 0 restores
// it), to cross block boundaries.
void sharded_checkpoint_set_read_block(size_t bytes);
size_t checkpoint_read_block();

// Converts to the single-file format at out_dir (checkpoint_save: atomic, DONE), e.g. before HF export.
CheckpointInfo checkpoint_from_sharded(const std::string& dir, const std::string& out_dir);

}  // namespace engine
