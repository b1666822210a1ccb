// zero_checkpoint.cpp — sharded, re-shardable training checkpoints (format in zero_checkpoint.h).
#include "zero_checkpoint.h"
#include <cstdio>
#include <cstring>
#include <exception>
#include <thread>
#include "errors.h"
#include "families.h"
#include "fileio.h"
#include "json.h"
#include "sha256.h"

namespace engine {

static const char SHARD_MAGIC[8] = {'D', 'F', 'T', 'S', 'H', 'A', 'R', 'D'};
static const uint32_t SHARD_VERSION = 1;
static const char* HINT = "the checkpoint is corrupt or was partially written; resume from an older checkpoint";

struct ShardHeader {  // 64 bytes on disk, little-endian
  char magic[8];
  uint32_t version, rank, world_size, reserved0;
  uint64_t total, begin, end;
  uint64_t reserved[2];
};
static_assert(sizeof(ShardHeader) == 64, "shard header layout");

static std::string shard_name(int rank, int world) { return strfmt("rank-%05d-of-%05d.bin", rank, world); }
static std::string u64s(uint64_t v) { return std::to_string(v); }
static uint64_t parse_u64(const Json& o, const char* key, const std::string& what) {
  std::string s = json_string(o, key, what);
  char* e = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &e, 10);
  ENGINE_CHECK(!s.empty() && e && *e == '\0', BadCheckpoint, HINT, "%s: '%s' is not an unsigned integer (%s)",
               what.c_str(), key, s.c_str());
  return (uint64_t)v;
}

// One rank's file; returns its SHA-256 and size.
static std::pair<std::string, size_t> write_rank_(const std::string& path, int rank, int world, size_t total,
                                                  const RankShard& s) {
  ShardHeader h{};
  std::memcpy(h.magic, SHARD_MAGIC, 8);
  h.version = SHARD_VERSION, h.rank = (uint32_t)rank, h.world_size = (uint32_t)world;
  h.total = total, h.begin = s.range.begin, h.end = s.range.end;
  const size_t n = s.range.size();
  FileWriter w(path);
  w.write(&h, sizeof h);
  const float* parts[3] = {s.params, s.m, s.v};
  for (const float* p : parts)
    if (n) w.write(p, n * 4);
  size_t bytes = w.written();
  return {w.close(), bytes};
}

static void check_shard_(const ParamLayout& layout, int r, int world, const RankShard& s) {
  ShardRange want = zero_shard(layout.total, {r, world, 0});
  ENGINE_CHECK(s.range.begin == want.begin && s.range.end == want.end, Internal, "",
               "rank %d shard [%zu, %zu) is not its ZeRO range [%zu, %zu)", r, s.range.begin, s.range.end,
               want.begin, want.end);
  ENGINE_CHECK(want.size() == 0 || (s.params && s.m && s.v), Internal, "", "rank %d shard has null buffers", r);
}

// A committed directory: first commit wins (as checkpoint_save) when it holds the same step.
static bool committed_(const std::string& dir, const CheckpointState& meta, CheckpointInfo* info) {
  if (!path_exists(dir + "/DONE")) return false;
  uint64_t step = sharded_checkpoint_verify(dir);
  ENGINE_CHECK(step == meta.step, IO, "use a directory per step (step-XXXXXXXX)",
               "%s already holds a committed checkpoint of step %llu, not %llu", dir.c_str(),
               (unsigned long long)step, (unsigned long long)meta.step);
  *info = sharded_checkpoint_info(dir);
  info->existed = true;
  return true;
}

std::string sharded_checkpoint_staging(const std::string& dir, uint64_t token) {
  return parent_dir(dir) + "/." + base_name(dir) + strfmt(".tmp-g%016llx", (unsigned long long)token);
}

void sharded_checkpoint_write_ranks(const std::string& staging, const CheckpointState& meta, int world,
                                    const std::vector<std::pair<int, RankShard>>& mine) {
  const ParamLayout layout = param_layout(meta.model);
  ENGINE_CHECK(world >= 1, Internal, "", "world size %d", world);
  for (const auto& [r, s] : mine) {
    ENGINE_CHECK(r >= 0 && r < world, Internal, "", "rank %d of %d", r, world);
    check_shard_(layout, r, world, s);
  }
  make_dirs(staging);
  // one thread per rank file (on a multi-process run every process writes its own ranks into the same folder)
  std::vector<std::exception_ptr> errs(mine.size());
  std::vector<std::thread> th;
  for (size_t i = 0; i < mine.size(); i++)
    th.emplace_back([&, i] {
      try {
        const int r = mine[i].first;
        const RankShard& s = mine[i].second;
        auto [sha, bytes] = write_rank_(staging + "/" + shard_name(r, world), r, world, layout.total, s);
        // the commit reads this instead of hashing files another process wrote
        Json side = Json::object();
        side.set("rank", Json::number(r));
        side.set("begin", Json::number((double)s.range.begin));
        side.set("end", Json::number((double)s.range.end));
        side.set("bytes", Json::number((double)bytes));
        side.set("sha256", Json::string(sha));
        write_file_atomic(staging + "/" + shard_name(r, world) + ".json", json_dump(side) + "\n");
      } catch (...) { errs[i] = std::current_exception(); }
    });
  for (auto& t : th) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
}

CheckpointInfo sharded_checkpoint_commit(const std::string& staging, const std::string& dir,
                                         const CheckpointState& meta, int world) {
  const ParamLayout layout = param_layout(meta.model);
  CheckpointInfo info;
  info.dir = dir;
  info.step = meta.step;
  if (committed_(dir, meta, &info)) {
    try { remove_tree(staging); } catch (...) {}
    return info;
  }
  // ---- every rank's file must be there, with the size and range its writer recorded
  Json files = Json::array();
  size_t bytes = 0;
  for (int r = 0; r < world; r++) {
    const std::string side = staging + "/" + shard_name(r, world) + ".json";
    ENGINE_CHECK(path_exists(side), IO, "every rank must write its shard before the commit (a rank failed?)",
                 "rank %d of %d has not written %s", r, world, side.c_str());
    Json j = json_parse(read_text_file(side), side, true);
    ShardRange want = zero_shard(layout.total, {r, world, 0});
    const size_t b = (size_t)json_number(j, "begin", side), e = (size_t)json_number(j, "end", side);
    const size_t nb = (size_t)json_number(j, "bytes", side);
    ENGINE_CHECK(b == want.begin && e == want.end && file_size(staging + "/" + shard_name(r, world)) == nb, IO,
                 "the ranks disagree about the model or world size", "%s: range [%zu, %zu), %zu bytes; expected "
                 "[%zu, %zu)", side.c_str(), b, e, nb, want.begin, want.end);
    Json f = Json::object();
    f.set("file", Json::string(shard_name(r, world)));
    f.set("rank", Json::number(r));
    f.set("begin", Json::number((double)b));
    f.set("end", Json::number((double)e));
    f.set("bytes", Json::number((double)nb));
    f.set("sha256", Json::string(json_string(j, "sha256", side)));
    files.arr.push_back(f);
    bytes += nb;
  }
  try {
    for (int r = 0; r < world; r++) remove_tree(staging + "/" + shard_name(r, world) + ".json");
    // ---- manifest
    Json man = Json::object();
    man.set("format", Json::string("durable-finetune-sharded-checkpoint"));
    man.set("version", Json::number(SHARD_VERSION));
    man.set("step", Json::number((double)meta.step));
    man.set("worldSize", Json::number(world));
    man.set("nParams", Json::number((double)layout.total));
    man.set("align", Json::number((double)ZERO_ALIGN));
    man.set("shardSize", Json::number((double)zero_shard_size(layout.total, world)));
    man.set("shards", files);
    man.set("model", checkpoint_model_json(meta.model));
    Json cur = Json::object();
    cur.set("epoch", Json::string(u64s(meta.cursor.epoch)));
    cur.set("shard", Json::string(u64s(meta.cursor.shard)));
    cur.set("offset", Json::string(u64s(meta.cursor.offset)));
    cur.set("shuffleSeed", Json::string(u64s(meta.cursor.shuffle_seed)));
    man.set("cursor", cur);
    Json rng = Json::array();
    for (uint64_t v : meta.rng.s) rng.arr.push_back(Json::string(u64s(v)));
    man.set("rng", rng);
    Json data = Json::object();
    data.set("shards", Json::string(u64s(meta.data.n_shards)));
    data.set("sequences", Json::string(u64s(meta.data.n_seq)));
    data.set("blockSize", Json::string(u64s(meta.data.block_size)));
    data.set("hash", Json::string(u64s(meta.data.hash)));
    man.set("data", data);
    man.set("backend", Json::string(meta.backend));
    man.set("config", json_parse(meta.config_json, "config JSON"));
    man.set("extra", json_parse(meta.extra_json, "extra JSON"));
    std::string text = json_dump(man, 2) + "\n";
    FileWriter mw(staging + "/manifest.json");
    mw.write(text.data(), text.size());
    info.sha256 = mw.close();
    // ---- commit: DONE goes in before the rename, so the rename publishes a complete checkpoint atomically
    Json done = Json::object();
    done.set("step", Json::number((double)meta.step));
    done.set("manifest.json", Json::string(info.sha256));
    info.bytes = bytes + text.size();
    if (!publish_dir(staging, dir, json_dump(done) + "\n")) {
      // an overlapping attempt committed this step while we wrote it: first commit wins
      remove_tree(staging);
      ENGINE_CHECK(committed_(dir, meta, &info), Internal, "", "%s: published by another writer but has no DONE",
                   dir.c_str());
    }
  } catch (...) {
    try { remove_tree(staging); } catch (...) {}
    throw;
  }
  return info;
}

CheckpointInfo sharded_checkpoint_info(const std::string& dir) {
  Json done = json_parse(read_text_file(dir + "/DONE"), dir + "/DONE", true);
  CheckpointInfo info;
  info.dir = dir;
  info.step = (uint64_t)json_number(done, "step", dir + "/DONE");
  info.sha256 = json_string(done, "manifest.json", dir + "/DONE");
  return info;
}

CheckpointInfo sharded_checkpoint_save(const std::string& dir, const CheckpointState& meta,
                                       const std::vector<RankShard>& shards) {
  const int world = (int)shards.size();
  ENGINE_CHECK(world >= 1, Internal, "", "no shards to write");
  CheckpointInfo info;
  info.dir = dir;
  info.step = meta.step;
  if (committed_(dir, meta, &info)) return info;
  make_dirs(parent_dir(dir));
  const std::string staging = parent_dir(dir) + "/." + base_name(dir) + ".tmp-" + unique_suffix();
  std::vector<std::pair<int, RankShard>> all;
  for (int r = 0; r < world; r++) all.push_back({r, shards[r]});
  try {
    sharded_checkpoint_write_ranks(staging, meta, world, all);
  } catch (...) {
    try { remove_tree(staging); } catch (...) {}
    throw;
  }
  return sharded_checkpoint_commit(staging, dir, meta, world);
}

// ---------------------------------------------------------------------------------------------------------------
// reading

struct Manifest {
  Json j;
  int world = 0;
  size_t total = 0;
  struct File { std::string name, sha; size_t begin, end, bytes; };
  std::vector<File> files;
};

bool is_sharded_checkpoint(const std::string& dir) { return path_exists(dir + "/manifest.json"); }

static Manifest read_manifest_(const std::string& dir) {
  ENGINE_CHECK(path_exists(dir + "/DONE"), BadCheckpoint, "the checkpoint was never committed (crash while saving?)",
               "%s has no DONE marker", dir.c_str());
  Json done = json_parse(read_text_file(dir + "/DONE"), dir + "/DONE", true);
  const std::string mp = dir + "/manifest.json";
  ENGINE_CHECK(path_exists(mp), BadCheckpoint, HINT, "%s is missing", mp.c_str());
  std::string text = read_text_file(mp);
  Sha256 sh;
  sha256_init(sh);
  sha256_update(sh, text.data(), text.size());
  std::string sha = sha256_hex(sh);
  ENGINE_CHECK(sha == json_string(done, "manifest.json", dir + "/DONE"), BadCheckpoint, HINT,
               "%s: SHA-256 %s does not match DONE", mp.c_str(), sha.c_str());
  Manifest m;
  m.j = json_parse(text, mp, true);
  m.world = (int)json_number(m.j, "worldSize", mp);
  m.total = (size_t)json_number(m.j, "nParams", mp);
  const Json* fs = m.j.get("shards");
  ENGINE_CHECK(fs && fs->type == Json::Array && (int)fs->arr.size() == m.world && m.world >= 1, BadCheckpoint, HINT,
               "%s: 'shards' must list %d files", mp.c_str(), m.world);
  size_t expect = 0;
  for (const Json& f : fs->arr) {
    Manifest::File x{json_string(f, "file", mp), json_string(f, "sha256", mp), (size_t)json_number(f, "begin", mp),
                     (size_t)json_number(f, "end", mp), (size_t)json_number(f, "bytes", mp)};
    // the files tile [0, total) in rank order: nothing missing, nothing twice
    ENGINE_CHECK(x.begin == std::min(expect, m.total) && x.end >= x.begin && x.end <= m.total &&
                     x.bytes == 64 + 12 * (x.end - x.begin) && x.name.find('/') == std::string::npos,
                 BadCheckpoint, HINT, "%s: shard %s [%zu, %zu) of %zu bytes is inconsistent", mp.c_str(),
                 x.name.c_str(), x.begin, x.end, x.bytes);
    expect = x.end;
    m.files.push_back(x);
  }
  ENGINE_CHECK(expect == m.total, BadCheckpoint, HINT, "%s: shards cover %zu of %zu parameters", mp.c_str(), expect,
               m.total);
  return m;
}

// Streams one rank file once: checks its size, SHA-256 and header, and copies the elements of [want.begin,
// want.end) that it holds into dst[0..2] (params, m, v; indexed from want.begin; null dst = verify only). Reads in
// 64 MiB blocks, so re-sharding a large checkpoint never holds a whole file in memory. The copies land before the
// checksum is known: callers discard everything when this throws.
static size_t g_read_block = (size_t)64 << 20;
void sharded_checkpoint_set_read_block(size_t bytes) { g_read_block = bytes ? bytes : (size_t)64 << 20; }
size_t checkpoint_read_block() { return g_read_block; }

static void stream_rank_(const std::string& dir, const Manifest& m, size_t r, ShardRange want, float* const* dst) {
  const Manifest::File& f = m.files[r];
  const std::string path = dir + "/" + f.name;
  ENGINE_CHECK(path_exists(path), BadCheckpoint, HINT, "%s is missing", path.c_str());
  const size_t size = file_size(path);
  ENGINE_CHECK(size == f.bytes, BadCheckpoint, HINT, "%s: %zu bytes, the manifest says %zu", path.c_str(), size,
               f.bytes);
  FILE* fp = std::fopen(path.c_str(), "rb");
  ENGINE_CHECK_IO(fp != nullptr, "check the checkpoint directory's permissions", "cannot open %s", path.c_str());
  Sha256 sh;
  sha256_init(sh);
  ShardHeader h{};
  const size_t fn = f.end - f.begin, BLK = g_read_block;
  std::vector<char> buf(std::min(BLK, size));
  size_t at = 0;  // file offset of buf[0]
  try {
    while (at < size) {
      size_t n = std::min(buf.size(), size - at);
      ENGINE_CHECK_IO(std::fread(buf.data(), 1, n, fp) == n, HINT, "reading %s at byte %zu", path.c_str(), at);
      sha256_update(sh, buf.data(), n);
      if (at == 0) std::memcpy(&h, buf.data(), std::min(n, sizeof h));
      // elements of group g at file offsets 64 + 4 * (g * fn + i), i in [0, fn)
      for (int g = 0; g < 3 && dst; g++) {
        const size_t lo = std::max(f.begin, want.begin), hi = std::min(f.end, want.end);
        if (lo >= hi || !dst[g]) continue;
        const size_t b0 = 64 + 4 * (g * fn + (lo - f.begin)), b1 = b0 + 4 * (hi - lo);  // bytes wanted
        const size_t c0 = std::max(b0, at), c1 = std::min(b1, at + n);
        if (c0 < c1) std::memcpy((char*)(dst[g] + (lo - want.begin)) + (c0 - b0), buf.data() + (c0 - at), c1 - c0);
      }
      at += n;
    }
  } catch (...) {
    std::fclose(fp);
    throw;
  }
  std::fclose(fp);
  std::string sha = sha256_hex(sh);
  ENGINE_CHECK(sha == f.sha, BadCheckpoint, HINT, "%s: SHA-256 %s does not match the manifest's %s", path.c_str(),
               sha.c_str(), f.sha.c_str());
  ENGINE_CHECK(std::memcmp(h.magic, SHARD_MAGIC, 8) == 0 && h.version == SHARD_VERSION && h.rank == r &&
                   (int)h.world_size == m.world && h.total == m.total && h.begin == f.begin && h.end == f.end,
               BadCheckpoint, HINT, "%s: header (rank %u of %u, [%llu, %llu)) does not match the manifest",
               path.c_str(), h.rank, h.world_size, (unsigned long long)h.begin, (unsigned long long)h.end);
}

// Runs stream_rank_ for the files overlapping `want` (all files when verify_all), one thread per file; the first
// error (in rank order) is rethrown.
static void stream_ranks_(const std::string& dir, const Manifest& m, ShardRange want, float* const* dst,
                          bool verify_all) {
  std::vector<size_t> todo;
  for (size_t r = 0; r < m.files.size(); r++)
    if (verify_all || (std::max(m.files[r].begin, want.begin) < std::min(m.files[r].end, want.end))) todo.push_back(r);
  std::vector<std::exception_ptr> errs(todo.size());
  std::vector<std::thread> th;
  for (size_t i = 0; i < todo.size(); i++)
    th.emplace_back([&, i] {
      try { stream_rank_(dir, m, todo[i], want, dst); } catch (...) { errs[i] = std::current_exception(); }
    });
  for (auto& t : th) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
}

static void load_meta_(const Manifest& m, const std::string& dir, CheckpointState& st) {
  const std::string mp = dir + "/manifest.json";
  st.step = (uint64_t)json_number(m.j, "step", mp);
  const Json* model = m.j.get("model");
  ENGINE_CHECK(model != nullptr, BadCheckpoint, HINT, "%s: no model section", mp.c_str());
  st.model = checkpoint_model_from_json(*model, mp);
  const Json* cur = m.j.get("cursor");
  const Json* rng = m.j.get("rng");
  const Json* data = m.j.get("data");
  ENGINE_CHECK(cur && rng && data && rng->type == Json::Array && rng->arr.size() == 4, BadCheckpoint, HINT,
               "%s: cursor, rng (4 values) and data are required", mp.c_str());
  st.cursor = {parse_u64(*cur, "epoch", mp), parse_u64(*cur, "shard", mp), parse_u64(*cur, "offset", mp),
               parse_u64(*cur, "shuffleSeed", mp)};
  for (int i = 0; i < 4; i++) {
    Json w = Json::object();
    w.set("v", rng->arr[i]);
    st.rng.s[i] = parse_u64(w, "v", mp + " rng");
  }
  st.data = {parse_u64(*data, "shards", mp), parse_u64(*data, "sequences", mp), parse_u64(*data, "blockSize", mp),
             parse_u64(*data, "hash", mp)};
  if (const Json* b = m.j.get("backend")) st.backend = b->str;
  if (const Json* c = m.j.get("config")) st.config_json = json_dump(*c);
  if (const Json* e = m.j.get("extra")) st.extra_json = json_dump(*e);
}

ModelConfig sharded_checkpoint_model(const std::string& dir) {
  Manifest m = read_manifest_(dir);
  CheckpointState st;
  load_meta_(m, dir, st);
  return st.model;
}

CheckpointState sharded_checkpoint_load(const std::string& dir, int world_size, int rank, ShardRange* range) {
  Manifest m = read_manifest_(dir);
  CheckpointState st;
  load_meta_(m, dir, st);
  const ParamLayout layout = param_layout(st.model);
  ENGINE_CHECK(layout.total == m.total, BadCheckpoint, HINT, "%s/manifest.json: %zu parameters, the model has %zu",
               dir.c_str(), m.total, layout.total);
  const ShardRange want = zero_shard(m.total, {rank, world_size, 0});
  const size_t n = want.size();
  st.params.assign(n, 0.0f);
  st.m.assign(n, 0.0f);
  st.v.assign(n, 0.0f);
  float* dst[3] = {st.params.data(), st.m.data(), st.v.data()};
  stream_ranks_(dir, m, want, dst, false);  // every old file that overlaps the new range
  if (range) *range = want;
  return st;
}

void sharded_checkpoint_load_params(const std::string& dir, float* params) {
  Manifest m = read_manifest_(dir);
  CheckpointState st;
  load_meta_(m, dir, st);
  const size_t total = param_layout(st.model).total;
  ENGINE_CHECK(total == m.total, BadCheckpoint, HINT, "%s/manifest.json: %zu parameters, the model has %zu",
               dir.c_str(), m.total, total);
  float* dst[3] = {params, nullptr, nullptr};
  stream_ranks_(dir, m, ShardRange{0, m.total}, dst, false);
}

uint64_t sharded_checkpoint_verify(const std::string& dir) {
  Manifest m = read_manifest_(dir);
  stream_ranks_(dir, m, ShardRange{}, nullptr, true);
  return (uint64_t)json_number(m.j, "step", dir + "/manifest.json");
}

CheckpointInfo checkpoint_from_sharded(const std::string& dir, const std::string& out_dir) {
  CheckpointState st = sharded_checkpoint_load(dir, 1, 0, nullptr);
  return checkpoint_save(out_dir, st, param_layout(st.model));
}

}  // namespace engine
