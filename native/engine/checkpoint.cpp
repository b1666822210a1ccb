// checkpoint.cpp — atomic, checksummed, self-describing training checkpoints (format in checkpoint.h).
#include "checkpoint.h"
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include "errors.h"
#include "families.h"
#include "fileio.h"
#include "json.h"
#include "sha256.h"
#include "zero_checkpoint.h"

namespace engine {

static const char MAGIC[8] = {'D', 'F', 'T', 'C', 'K', 'P', 'T', '\0'};
static const size_t HEADER_BYTES = 64;
static const char* HINT = "the checkpoint is corrupt or was partially written; resume from an older checkpoint";
enum RecordType : uint32_t { F32 = 0, U64 = 1 };

struct Header {  // 64 bytes on disk, little-endian
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t n_records;
  uint64_t index_bytes;
  uint64_t data_bytes;
  uint64_t file_bytes;
  uint64_t reserved[2];
};
static_assert(sizeof(Header) == HEADER_BYTES, "header layout");

struct Record {
  std::string name;
  uint32_t type;
  std::vector<uint64_t> dims;
  uint64_t offset, nbytes;  // within the data section
  const void* src;          // writing only
};

static void put_u32(std::string& s, uint32_t v) { s.append((const char*)&v, 4); }
static void put_u64(std::string& s, uint64_t v) { s.append((const char*)&v, 8); }

static Json model_json(const ModelConfig& c) {
  Json m = Json::object();
  m.set("nLayer", Json::number((double)c.n_layer));
  m.set("nHead", Json::number((double)c.n_head));
  m.set("nEmbd", Json::number((double)c.n_embd));
  m.set("nPositions", Json::number((double)c.n_positions));
  m.set("vocabSize", Json::number((double)c.vocab_size));
  m.set("layerNormEps", Json::number(c.layer_norm_eps));
  m.set("dropout", Json::number(c.dropout));
  m.set("initSeed", Json::number((double)c.init_seed));
  family_to_json(c, m);
  return m;
}

Json checkpoint_model_json(const ModelConfig& c) { return model_json(c); }

ModelConfig checkpoint_model_from_json(const Json& m, const std::string& what) {
  ModelConfig c;
  c.n_layer = (size_t)json_number(m, "nLayer", what);
  c.n_head = (size_t)json_number(m, "nHead", what);
  c.n_embd = (size_t)json_number(m, "nEmbd", what);
  c.n_positions = (size_t)json_number(m, "nPositions", what);
  c.vocab_size = (size_t)json_number(m, "vocabSize", what);
  c.layer_norm_eps = (float)json_number(m, "layerNormEps", what);
  c.dropout = (float)json_number(m, "dropout", what);
  c.init_seed = (uint64_t)json_number(m, "initSeed", what);
  family_from_json(m, c);
  return c;
}

static Json cursor_json(const DataCursor& c) {
  Json j = Json::object();
  j.set("epoch", Json::number((double)c.epoch));
  j.set("shard", Json::number((double)c.shard));
  j.set("offset", Json::number((double)c.offset));
  j.set("shuffleSeed", Json::number((double)c.shuffle_seed));
  return j;
}

// Is `dir` a committed checkpoint (DONE present and parseable)? Does not verify checksums.
static bool has_done_(const std::string& dir) { return path_exists(dir + "/DONE"); }

// `dir` holds a committed checkpoint (another attempt's): accept it as this save's result when it is of `step`
// and verifies. Verifying hashes the whole state; it is skipped when DONE names the very state.bin hash this save
// computed (`our_sha`): the winner fsynced its files before publishing them.
static CheckpointInfo committed_same_step_(const std::string& dir, uint64_t step, const std::string& our_sha) {
  Json done = json_parse(read_text_file(dir + "/DONE"), dir + "/DONE", true);
  const Json* sha = done.get("state.bin");   // a sharded (ZeRO) checkpoint names its manifest.json instead
  const Json* at = done.get("step");
  const bool same = !our_sha.empty() && sha && sha->str == our_sha && at && at->num == (double)step;
  const uint64_t theirs = same ? step : checkpoint_verify(dir);
  ENGINE_CHECK(theirs == step, IO, "use a directory per step (step-XXXXXXXX)",
               "%s already holds a committed checkpoint of step %llu, not %llu", dir.c_str(),
               (unsigned long long)theirs, (unsigned long long)step);
  CheckpointInfo info;
  info.dir = dir;
  info.step = step;
  info.sha256 = sha ? sha->str : json_string(done, "manifest.json", dir + "/DONE");
  info.bytes = 0;
  for (const char* f : {"state.bin", "meta.json", "manifest.json"})
    if (path_exists(dir + "/" + f)) info.bytes += file_size(dir + "/" + f);
  info.existed = true;
  return info;
}

CheckpointInfo checkpoint_save(const std::string& dir, const CheckpointState& s, const ParamLayout& layout) {
  const std::vector<float>* bufs[3] = {&s.params, &s.m, &s.v};
  for (int g = 0; g < 3; g++)
    ENGINE_CHECK(bufs[g]->size() == layout.total, Internal, "", "state buffer %d has %zu floats, layout %zu", g,
                 bufs[g]->size(), layout.total);
  const float* const state[3] = {s.params.data(), s.m.data(), s.v.data()};
  return checkpoint_save(dir, s, layout, state);
}

CheckpointInfo checkpoint_save(const std::string& dir, const CheckpointState& s, const ParamLayout& layout,
                               const float* const state[3]) {
  CheckpointInfo info;
  info.dir = dir;
  info.step = s.step;
  // First commit wins: an overlapping attempt that already committed this step wrote the same state.
  if (has_done_(dir)) return committed_same_step_(dir, s.step, "");
  const std::string parent = parent_dir(dir);
  make_dirs(parent);
  const std::string tmp = parent + "/." + base_name(dir) + ".tmp-" + unique_suffix();
  make_dirs(tmp);
  try {
    // ---- records and index
    std::vector<Record> recs;
    uint64_t off = 0;
    auto add = [&](const std::string& name, uint32_t type, std::vector<uint64_t> dims, const void* src) {
      uint64_t n = 1;
      for (auto d : dims) n *= d;
      uint64_t nbytes = n * (type == F32 ? 4 : 8);
      recs.push_back({name, type, std::move(dims), off, nbytes, src});
      off = (off + nbytes + 63) / 64 * 64;
    };
    const uint64_t step = s.step;
    const uint64_t cursor[4] = {s.cursor.epoch, s.cursor.shard, s.cursor.offset, s.cursor.shuffle_seed};
    add("state/step", U64, {1}, &step);
    add("state/rng", U64, {4}, s.rng.s);
    add("state/cursor", U64, {4}, cursor);
    const uint64_t data[4] = {s.data.n_shards, s.data.n_seq, s.data.block_size, s.data.hash};
    add("state/data", U64, {4}, data);
    const char* groups[3] = {"param/", "adam_m/", "adam_v/"};
    for (int g = 0; g < 3; g++) {
      ENGINE_CHECK(state[g] != nullptr, Internal, "", "%s state is null", groups[g]);
      for (const auto& t : layout.tensors) {
        std::vector<uint64_t> dims(t.shape.begin(), t.shape.end());
        add(groups[g] + t.name, F32, dims, state[g] + t.offset);
      }
    }
    std::string index;
    for (const auto& r : recs) {
      put_u32(index, (uint32_t)r.name.size());
      index += r.name;
      put_u32(index, r.type);
      put_u32(index, (uint32_t)r.dims.size());
      for (auto d : r.dims) put_u64(index, d);
      put_u64(index, r.offset);
      put_u64(index, r.nbytes);
    }
    while (index.size() % 64) index += '\0';
    Header h{};
    std::memcpy(h.magic, MAGIC, 8);
    h.version = CHECKPOINT_VERSION;
    h.header_bytes = HEADER_BYTES;
    h.n_records = recs.size();
    h.index_bytes = index.size();
    h.data_bytes = off;
    h.file_bytes = HEADER_BYTES + index.size() + off;
    // ---- state.bin
    FileWriter w(tmp + "/state.bin");
    w.write(&h, sizeof h);
    w.write(index.data(), index.size());
    for (const auto& r : recs) {
      w.pad_to(64);
      w.write(r.src, r.nbytes);
    }
    w.pad_to(64);
    ENGINE_CHECK(w.written() == h.file_bytes, Internal, "", "state.bin: wrote %zu bytes, header says %llu",
                 w.written(), (unsigned long long)h.file_bytes);
    info.sha256 = w.close();
    // ---- meta.json
    Json meta = Json::object();
    meta.set("format", Json::string("durable-finetune-checkpoint"));
    meta.set("version", Json::number(CHECKPOINT_VERSION));
    meta.set("step", Json::number((double)s.step));
    meta.set("cursor", cursor_json(s.cursor));
    meta.set("model", model_json(s.model));
    meta.set("backend", Json::string(s.backend));
    meta.set("nParams", Json::number((double)layout.total));
    Json sb = Json::object();
    sb.set("bytes", Json::number((double)h.file_bytes));
    sb.set("sha256", Json::string(info.sha256));
    meta.set("state.bin", sb);
    meta.set("config", json_parse(s.config_json, "config JSON"));
    meta.set("extra", json_parse(s.extra_json, "extra JSON"));
    std::string meta_text = json_dump(meta, 2) + "\n";
    FileWriter mw(tmp + "/meta.json");
    mw.write(meta_text.data(), meta_text.size());
    std::string meta_sha = mw.close();
    // ---- commit: DONE goes in before the rename, so the rename publishes a complete checkpoint atomically
    Json done = Json::object();
    done.set("step", Json::number((double)s.step));
    done.set("state.bin", Json::string(info.sha256));
    done.set("meta.json", Json::string(meta_sha));
    info.bytes = h.file_bytes + meta_text.size();
    if (!publish_dir(tmp, dir, json_dump(done) + "\n")) {
      // An overlapping attempt committed this step while we wrote it: first commit wins, as above.
      remove_tree(tmp);
      return committed_same_step_(dir, s.step, info.sha256);
    }
  } catch (...) {
    try { remove_tree(tmp); } catch (...) {}
    throw;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------------------------
// reading

struct Parsed {
  Header h;
  std::vector<Record> recs;
};

// Reads state.bin in one sequential pass of bounded blocks (checkpoint_read_block(), 64 MiB): checks the header
// against the file's size, parses the index, hashes every byte, and copies each record's bytes to dest(record)
// (nullptr: not wanted; no callback: verify only). So verifying or loading a checkpoint of a 6B model needs a
// block of memory beyond the destination, not a second copy of a 70 GB file. The copies land before the checksum
// is known: callers discard everything when this throws.
static Parsed parse_state_(const std::string& path, const std::string& expect_sha,
                           const std::function<char*(const Record&)>& dest = nullptr) {
  Parsed p;
  ENGINE_CHECK(path_exists(path), BadCheckpoint, HINT, "%s is missing", path.c_str());
  const size_t size = file_size(path);
  ENGINE_CHECK(size >= HEADER_BYTES, BadCheckpoint, HINT, "%s: %zu bytes, shorter than the %zu-byte header",
               path.c_str(), size, HEADER_BYTES);
  FILE* fp = std::fopen(path.c_str(), "rb");
  ENGINE_CHECK_IO(fp != nullptr, "check the checkpoint directory's permissions", "cannot open %s", path.c_str());
  struct Closer { FILE* f; ~Closer() { std::fclose(f); } } closer{fp};
  Sha256 sh;
  sha256_init(sh);
  auto read = [&](void* dst, size_t n, size_t at) {
    ENGINE_CHECK_IO(std::fread(dst, 1, n, fp) == n, HINT, "reading %s at byte %zu", path.c_str(), at);
    sha256_update(sh, dst, n);
  };
  read(&p.h, HEADER_BYTES, 0);
  ENGINE_CHECK(std::memcmp(p.h.magic, MAGIC, 8) == 0, BadCheckpoint, HINT, "%s: bad magic (not a checkpoint file)", path.c_str());
  ENGINE_CHECK(p.h.version == CHECKPOINT_VERSION, BadCheckpoint, "the checkpoint was written by another engine version",
               "%s: format version %u, this engine reads %u", path.c_str(), p.h.version, CHECKPOINT_VERSION);
  ENGINE_CHECK(p.h.header_bytes == HEADER_BYTES && p.h.file_bytes == size &&
                   p.h.file_bytes == HEADER_BYTES + p.h.index_bytes + p.h.data_bytes,
               BadCheckpoint, HINT, "%s: header says %llu bytes (index %llu, data %llu), file has %zu", path.c_str(),
               (unsigned long long)p.h.file_bytes, (unsigned long long)p.h.index_bytes,
               (unsigned long long)p.h.data_bytes, size);
  std::string index(p.h.index_bytes, '\0');
  read(index.data(), index.size(), HEADER_BYTES);
  size_t i = 0, end = index.size();
  auto need = [&](size_t n) {
    ENGINE_CHECK(i + n <= end, BadCheckpoint, HINT, "%s: index truncated at byte %zu", path.c_str(), HEADER_BYTES + i);
  };
  for (uint64_t r = 0; r < p.h.n_records; r++) {
    Record rec;
    uint32_t nl, nd;
    need(4); std::memcpy(&nl, &index[i], 4); i += 4;
    need(nl); rec.name.assign(&index[i], nl); i += nl;
    need(8); std::memcpy(&rec.type, &index[i], 4); std::memcpy(&nd, &index[i + 4], 4); i += 8;
    ENGINE_CHECK(nd <= 8 && (rec.type == F32 || rec.type == U64), BadCheckpoint, HINT, "%s: record '%s' malformed", path.c_str(), rec.name.c_str());
    need(8 * (size_t)nd + 16);
    uint64_t n = 1;
    for (uint32_t k = 0; k < nd; k++) { uint64_t d; std::memcpy(&d, &index[i], 8); i += 8; rec.dims.push_back(d); n *= d; }
    std::memcpy(&rec.offset, &index[i], 8);
    std::memcpy(&rec.nbytes, &index[i + 8], 8);
    i += 16;
    ENGINE_CHECK(rec.nbytes == n * (rec.type == F32 ? 4 : 8) && rec.offset + rec.nbytes <= p.h.data_bytes,
                 BadCheckpoint, HINT, "%s: record '%s' size %llu / offset %llu inconsistent with its shape or the file",
                 path.c_str(), rec.name.c_str(), (unsigned long long)rec.nbytes, (unsigned long long)rec.offset);
    rec.src = nullptr;
    p.recs.push_back(std::move(rec));
  }
  // the data section, block by block; records are copied where they overlap the block
  std::vector<std::pair<const Record*, char*>> want;
  if (dest)
    for (const Record& r : p.recs)
      if (char* d = dest(r)) want.push_back({&r, d});
  std::sort(want.begin(), want.end(), [](const auto& x, const auto& y) { return x.first->offset < y.first->offset; });
  std::vector<char> buf(std::min<size_t>(checkpoint_read_block(), std::max<uint64_t>(p.h.data_bytes, 1)));
  size_t first = 0;  // the first wanted record that does not end before this block
  for (uint64_t at = 0; at < p.h.data_bytes;) {
    const size_t n = (size_t)std::min<uint64_t>(buf.size(), p.h.data_bytes - at);
    read(buf.data(), n, HEADER_BYTES + index.size() + at);
    while (first < want.size() && want[first].first->offset + want[first].first->nbytes <= at) first++;
    for (size_t k = first; k < want.size() && want[k].first->offset < at + n; k++) {
      const Record& r = *want[k].first;
      const uint64_t c0 = std::max<uint64_t>(r.offset, at), c1 = std::min<uint64_t>(r.offset + r.nbytes, at + n);
      if (c0 < c1) std::memcpy(want[k].second + (c0 - r.offset), buf.data() + (c0 - at), c1 - c0);
    }
    at += n;
  }
  const std::string sha = sha256_hex(sh);
  ENGINE_CHECK(sha == expect_sha, BadCheckpoint, HINT, "%s: SHA-256 %s does not match the recorded %s", path.c_str(),
               sha.c_str(), expect_sha.c_str());
  return p;
}

static Json read_done_(const std::string& dir) {
  ENGINE_CHECK(path_exists(dir + "/DONE"), BadCheckpoint, "the checkpoint was never committed (crash while saving?)",
               "%s has no DONE marker", dir.c_str());
  return json_parse(read_text_file(dir + "/DONE"), dir + "/DONE", true);
}

static Json read_meta_(const std::string& dir, const Json& done) {
  const std::string mp = dir + "/meta.json";
  ENGINE_CHECK(path_exists(mp), BadCheckpoint, HINT, "%s is missing", mp.c_str());
  std::string sha = sha256_file(mp);
  const Json* want = done.get("meta.json");
  ENGINE_CHECK(want && want->str == sha, BadCheckpoint, HINT, "%s: SHA-256 %s does not match DONE", mp.c_str(), sha.c_str());
  return json_parse(read_text_file(mp), mp, true);
}

uint64_t checkpoint_verify(const std::string& dir) {
  if (is_sharded_checkpoint(dir)) return sharded_checkpoint_verify(dir);  // ZeRO: rank files + manifest.json
  Json done = read_done_(dir);
  Json meta = read_meta_(dir, done);
  const Json* s = done.get("state.bin");
  ENGINE_CHECK(s && s->type == Json::String, BadCheckpoint, HINT, "%s/DONE: no state.bin checksum", dir.c_str());
  parse_state_(dir + "/state.bin", s->str);
  const Json* st = meta.get("step");
  ENGINE_CHECK(st && st->type == Json::Number, BadCheckpoint, HINT, "%s/meta.json: no step", dir.c_str());
  return (uint64_t)st->num;
}

// meta.json's model and metadata, checksum-checked against DONE
static CheckpointState read_meta_state_(const std::string& dir, const Json& done) {
  Json meta = read_meta_(dir, done);
  const std::string what = dir + "/meta.json";
  CheckpointState st;
  const Json* m = meta.get("model");
  ENGINE_CHECK(m != nullptr, BadCheckpoint, HINT, "%s: no model section", what.c_str());
  st.model = checkpoint_model_from_json(*m, what);
  if (const Json* b = meta.get("backend")) st.backend = b->str;
  if (const Json* c = meta.get("config")) st.config_json = json_dump(*c);
  if (const Json* e = meta.get("extra")) st.extra_json = json_dump(*e);
  return st;
}

ModelConfig checkpoint_model(const std::string& dir) {
  if (is_sharded_checkpoint(dir)) return sharded_checkpoint_model(dir);
  return read_meta_state_(dir, read_done_(dir)).model;
}

CheckpointState checkpoint_load(const std::string& dir) {
  if (is_sharded_checkpoint(dir)) return sharded_checkpoint_load(dir, 1, 0, nullptr);  // whole state, re-sharded to 1
  const ParamLayout layout = param_layout(checkpoint_model(dir));
  std::vector<float> p(layout.total), m(layout.total), v(layout.total);
  float* const into[3] = {p.data(), m.data(), v.data()};
  CheckpointState st = checkpoint_load_into(dir, into);
  st.params = std::move(p), st.m = std::move(m), st.v = std::move(v);
  return st;
}

void checkpoint_load_params(const std::string& dir, float* params) {
  if (is_sharded_checkpoint(dir)) return sharded_checkpoint_load_params(dir, params);
  float* const into[3] = {params, nullptr, nullptr};
  checkpoint_load_into(dir, into);
}

CheckpointState checkpoint_load_into(const std::string& dir, float* const into[3]) {
  ENGINE_CHECK(!is_sharded_checkpoint(dir), Internal, "", "%s is sharded: load it with checkpoint_load", dir.c_str());
  Json done = read_done_(dir);
  const Json* s = done.get("state.bin");
  ENGINE_CHECK(s && s->type == Json::String, BadCheckpoint, HINT, "%s/DONE: no state.bin checksum", dir.c_str());
  CheckpointState st = read_meta_state_(dir, done);
  ParamLayout layout = param_layout(st.model);
  // where each record goes: (destination, type, bytes), by record name
  uint64_t step = 0, cur[4] = {}, dat[4] = {};
  struct Slot { char* dst; uint32_t type; uint64_t nbytes; bool seen = false; };
  std::map<std::string, Slot> slots;
  slots["state/step"] = {(char*)&step, U64, 8};
  slots["state/rng"] = {(char*)st.rng.s, U64, 32};
  slots["state/cursor"] = {(char*)cur, U64, 32};
  slots["state/data"] = {(char*)dat, U64, 32};
  const char* groups[3] = {"param/", "adam_m/", "adam_v/"};
  for (int g = 0; g < 3; g++)
    for (const auto& t : layout.tensors)
      if (into[g]) slots[groups[g] + t.name] = {(char*)(into[g] + t.offset), F32, t.numel * 4};
  parse_state_(dir + "/state.bin", s->str, [&](const Record& r) -> char* {
    auto it = slots.find(r.name);
    if (it == slots.end()) return nullptr;  // a record this engine does not read
    ENGINE_CHECK(r.type == it->second.type && r.nbytes == it->second.nbytes, BadCheckpoint, HINT,
                 "%s: record '%s' has %llu bytes, expected %llu", dir.c_str(), r.name.c_str(),
                 (unsigned long long)r.nbytes, (unsigned long long)it->second.nbytes);
    it->second.seen = true;
    return it->second.dst;
  });
  for (const auto& [name, slot] : slots)
    ENGINE_CHECK(slot.seen, BadCheckpoint, HINT, "%s/state.bin: record '%s' missing", dir.c_str(), name.c_str());
  st.step = step;
  st.cursor = {cur[0], cur[1], cur[2], cur[3]};
  st.data = {dat[0], dat[1], dat[2], dat[3]};
  return st;
}

}  // namespace engine
