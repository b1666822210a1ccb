// dataloader.cpp — shuffled, resumable micro-batches over borrowed shards (see dataloader.h).
#include "dataloader.h"
#include <cstring>
#include "backend.h"
#include "errors.h"
#include "rng.h"

namespace engine {

static void permutation_(std::vector<uint32_t>& out, size_t n, uint64_t seed) {
  out.resize(n);
  for (size_t i = 0; i < n; i++) out[i] = (uint32_t)i;
  Rng r;
  rng_seed(r, seed);
  for (size_t i = n; i > 1; i--) {  // Fisher-Yates
    size_t j = rng_below(r, i);
    std::swap(out[i - 1], out[j]);
  }
}

// Make shard_order (for the epoch) and seq_order (for the current shard) match the cursor.
static void sync_perm_(DataLoader& dl) {
  const DataCursor& c = dl.cursor;
  if (dl.perm_epoch != c.epoch) {
    permutation_(dl.shard_order, dl.shards.size(), c.shuffle_seed * 0x9E3779B97F4A7C15ull + c.epoch * 2 + 1);
    dl.perm_epoch = c.epoch;
    dl.perm_shard = UINT64_MAX;
  }
  if (dl.perm_shard != c.shard) {
    const ShardView& s = dl.shards[dl.shard_order[c.shard]];
    permutation_(dl.seq_order, s.n_seq,
                 (c.shuffle_seed * 0x9E3779B97F4A7C15ull + c.epoch * 2 + 1) * 1000003ull + c.shard + 1);
    dl.perm_shard = c.shard;
  }
}

void dataloader_init(DataLoader& dl, std::vector<ShardView> shards, const DataCursor& cursor) {
  ENGINE_CHECK(!shards.empty(), BadShape, "pass at least one train shard", "no train shards given");
  size_t T = shards[0].block_size, total = 0;
  for (size_t i = 0; i < shards.size(); i++) {
    const ShardView& s = shards[i];
    ENGINE_CHECK(s.block_size == T, BadShape, "all shards of a split must use one preprocess.blockSize",
                 "shard %zu has block size %zu, shard 0 has %zu", i, s.block_size, T);
    ENGINE_CHECK(s.n_seq > 0 && s.input_ids && s.labels, BadShape, "re-run the shard step", "shard %zu is empty", i);
    ENGINE_CHECK((s.position_ids != nullptr) == (shards[0].position_ids != nullptr), BadShape,
                 "all shards of a split are packed or none are", "shard %zu %s position ids, shard 0 %s", i,
                 s.position_ids ? "has" : "has no", shards[0].position_ids ? "has" : "has none");
    if (s.position_ids) check_position_ids(s, i);
    total += s.n_seq;
  }
  ENGINE_CHECK(cursor.shard < shards.size() && cursor.offset <= shards[cursor.shard].n_seq, BadCheckpoint,
               "resume with the same train shards the checkpoint was trained on",
               "data cursor (epoch %llu, shard %llu, offset %llu) does not fit %zu shards",
               (unsigned long long)cursor.epoch, (unsigned long long)cursor.shard, (unsigned long long)cursor.offset,
               shards.size());
  dl.shards = std::move(shards);
  dl.T = T;
  dl.total_seq = total;
  dl.cursor = cursor;
  dl.perm_epoch = dl.perm_shard = UINT64_MAX;
}

DataSignature data_signature(const std::vector<ShardView>& shards) {
  DataSignature s;
  s.n_shards = shards.size();
  s.block_size = shards.empty() ? 0 : shards[0].block_size;
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the first and last sequence of every shard (ids + labels)
  auto mix = [&](const int32_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= (uint32_t)p[i]; h *= 0x100000001b3ull; }
  };
  for (const auto& sh : shards) {
    s.n_seq += sh.n_seq;
    const size_t T = sh.block_size, last = (sh.n_seq - 1) * T;
    mix(sh.input_ids, T); mix(sh.labels, T); mix(sh.input_ids + last, T); mix(sh.labels + last, T);
  }
  s.hash = h;
  return s;
}

void check_position_ids(const ShardView& s, size_t index) {
  const size_t T = s.block_size;
  for (size_t r = 0; r < s.n_seq; r++)
    for (size_t t = 0; t < T; t++) {
      const int32_t p = s.position_ids[r * T + t];
      const bool ok = t == 0 ? p == 0 : (p == 0 || p == s.position_ids[r * T + t - 1] + 1);
      ENGINE_CHECK(ok, BadShape, "position ids restart at 0 for each packed example and count up by one",
                   "shard %zu, sequence %zu, position %zu: position id %d", index, r, t, (int)p);
    }
}

void shift_labels(const int32_t* labels, size_t T, int32_t* targets) {
  for (size_t t = 0; t + 1 < T; t++) targets[t] = labels[t + 1];
  targets[T - 1] = IGNORE_INDEX;
}

// Position of the next sequence: advances past exhausted shards/epochs; returns (shard view, row index).
static const int32_t* next_row_(DataLoader& dl, const int32_t** labels, const int32_t** positions = nullptr) {
  DataCursor& c = dl.cursor;
  for (;;) {
    sync_perm_(dl);
    const ShardView& s = dl.shards[dl.shard_order[c.shard]];
    if (c.offset < s.n_seq) {
      size_t row = dl.seq_order[c.offset++];
      *labels = s.labels + row * dl.T;
      if (positions) *positions = s.position_ids ? s.position_ids + row * dl.T : nullptr;
      return s.input_ids + row * dl.T;
    }
    c.offset = 0;
    if (++c.shard == dl.shards.size()) {
      c.shard = 0;
      c.epoch++;
    }
  }
}

void dataloader_next_batch(DataLoader& dl, size_t B, int32_t* inputs, int32_t* targets, int32_t* positions) {
  ENGINE_CHECK(!dl.shards.empty(), BadConfig, "call setTrainData() before train()", "no train data");
  for (size_t b = 0; b < B; b++) {
    const int32_t* labels = nullptr;
    const int32_t* pos = nullptr;
    const int32_t* ids = next_row_(dl, &labels, &pos);
    std::memcpy(inputs + b * dl.T, ids, dl.T * sizeof(int32_t));
    shift_labels(labels, dl.T, targets + b * dl.T);
    if (positions && pos) std::memcpy(positions + b * dl.T, pos, dl.T * sizeof(int32_t));
  }
}

size_t dataloader_peek_targets(DataLoader& dl, size_t B) {
  DataCursor saved = dl.cursor;
  size_t n = 0;
  for (size_t b = 0; b < B; b++) {
    const int32_t* labels = nullptr;
    next_row_(dl, &labels);
    for (size_t t = 1; t < dl.T; t++) n += labels[t] != IGNORE_INDEX;
  }
  dl.cursor = saved;
  return n;
}

}  // namespace engine
