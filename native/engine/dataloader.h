// dataloader.h — feeds micro-batches from the train shards the caller handed over (borrowed memory, whole
// buffers: no per-token copies across the JS boundary). Each epoch visits the shards in a shuffled order and the
// sequences of each shard in a shuffled order; both permutations are pure functions of (shuffle_seed, epoch,
// shard), so the position is fully described by the cursor (epoch, shard, offset, shuffle_seed) and resume is
// exact without storing permutations. After llm.c llmc/dataloader.h (dataloader_init / next_batch / free).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace engine {

struct ShardView {
  size_t n_seq = 0, block_size = 0;  // (n_seq, block_size) each
  const int32_t* input_ids = nullptr;
  const int32_t* labels = nullptr;   // NOT shifted: labels[t] is the token at t, -100 where masked
  // Packed shards (several examples per sequence): each token's position within its example, 0 at an example's
  // first token (Batch::positions); null for one sequence per row.
  const int32_t* position_ids = nullptr;
};

// Checks a packed shard's position ids: pos[0] == 0 in every row and each pos[t] is 0 or pos[t-1] + 1.
void check_position_ids(const ShardView& s, size_t index);

struct DataCursor {
  uint64_t epoch = 0;
  uint64_t shard = 0;   // index into this epoch's shard order
  uint64_t offset = 0;  // sequences of that shard already consumed
  uint64_t shuffle_seed = 0;
};

// Identifies the train data a cursor points into, so a resume with different shards fails instead of
// continuing on other data: shard count, total sequences, block size and a hash of a sample of the tokens.
struct DataSignature {
  uint64_t n_shards = 0, n_seq = 0, block_size = 0, hash = 0;
  bool empty() const { return n_shards == 0; }
  bool operator==(const DataSignature& o) const {
    return n_shards == o.n_shards && n_seq == o.n_seq && block_size == o.block_size && hash == o.hash;
  }
};
DataSignature data_signature(const std::vector<ShardView>& shards);

struct DataLoader {
  std::vector<ShardView> shards;
  size_t T = 0;
  DataCursor cursor;
  size_t total_seq = 0;
  // cached permutations for the current (epoch, shard)
  uint64_t perm_epoch = UINT64_MAX, perm_shard = UINT64_MAX;
  std::vector<uint32_t> shard_order, seq_order;
};

// Validates the shards (same block size, non-empty) and keeps the cursor (which must point inside them).
void dataloader_init(DataLoader& dl, std::vector<ShardView> shards, const DataCursor& cursor);
// Fills inputs and shifted targets (B, T): targets[t] = labels[t + 1], targets[T - 1] = -100, and for packed
// shards the position ids (positions may be null otherwise). Advances the cursor, moving to the next shard / epoch
// as needed.
void dataloader_next_batch(DataLoader& dl, size_t B, int32_t* inputs, int32_t* targets, int32_t* positions = nullptr);
// Whether the loader's shards are packed (they carry position ids; all or none do).
inline bool dataloader_packed(const DataLoader& dl) { return !dl.shards.empty() && dl.shards[0].position_ids; }
// Counts the non-ignored shifted targets of the next B sequences without moving the cursor.
size_t dataloader_peek_targets(DataLoader& dl, size_t B);

// Shifted targets for one sequence of labels (T): used by the loader and by evaluation.
void shift_labels(const int32_t* labels, size_t T, int32_t* targets);

}  // namespace engine
