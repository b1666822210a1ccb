// safetensors.cpp — safetensors reading/writing and HF GPT-2 directory import/export (see safetensors.h).
#include "safetensors.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmath>
#include <cstring>
#include "errors.h"
#include "families.h"
#include "fileio.h"
#include "json.h"

namespace engine {

static const char* HINT_ST = "the file is not a valid safetensors file (truncated or corrupt download?)";

SafeTensorsReader::SafeTensorsReader(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ENGINE_CHECK_IO(fd >= 0, "check the model directory", "cannot open %s", path.c_str());
  struct stat st;
  if (::fstat(fd, &st) != 0) { ::close(fd); ENGINE_CHECK_IO(false, "", "cannot stat %s", path.c_str()); }
  size_ = (size_t)st.st_size;
  if (size_ < 8) { ::close(fd); ENGINE_THROW(BadCheckpoint, HINT_ST, "%s: %zu bytes, smaller than the 8-byte header", path.c_str(), size_); }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  ENGINE_CHECK_IO(map_ != MAP_FAILED, "", "cannot mmap %s", path.c_str());
  const unsigned char* p = (const unsigned char*)map_;
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)p[i] << (8 * i);
  if (hlen > size_ - 8) {
    ::munmap(map_, size_);
    ENGINE_THROW(BadCheckpoint, HINT_ST, "%s: header length %llu exceeds file size %zu", path.c_str(),
                 (unsigned long long)hlen, size_);
  }
  data_start_ = 8 + hlen;
  try {
    Json h = json_parse(std::string((const char*)p + 8, hlen), path, true);
    ENGINE_CHECK(h.type == Json::Object, BadCheckpoint, HINT_ST, "%s: header is not a JSON object", path.c_str());
    const size_t data_size = size_ - data_start_;
    for (const auto& kv : h.obj) {
      if (kv.first == "__metadata__") continue;
      const Json& t = kv.second;
      StTensorInfo ti;
      ti.name = kv.first;
      const Json* dt = t.get("dtype");
      const Json* sh = t.get("shape");
      const Json* off = t.get("data_offsets");
      ENGINE_CHECK(dt && dt->type == Json::String && sh && sh->type == Json::Array && off && off->type == Json::Array &&
                       off->arr.size() == 2,
                   BadCheckpoint, HINT_ST, "%s: tensor '%s' has a malformed header entry", path.c_str(), kv.first.c_str());
      ti.dtype = dt->str;
      size_t numel = 1;
      for (const Json& d : sh->arr) {
        ENGINE_CHECK(d.type == Json::Number && d.num >= 0, BadCheckpoint, HINT_ST, "%s: bad shape for '%s'", path.c_str(), kv.first.c_str());
        ti.shape.push_back((size_t)d.num);
        numel *= (size_t)d.num;
      }
      ti.begin = (size_t)off->arr[0].num;
      ti.end = (size_t)off->arr[1].num;
      size_t esize = ti.dtype == "F32" ? 4 : (ti.dtype == "F16" || ti.dtype == "BF16") ? 2 : ti.dtype == "F64" || ti.dtype == "I64" ? 8 : ti.dtype == "I32" ? 4 : ti.dtype == "U8" || ti.dtype == "BOOL" || ti.dtype == "I8" ? 1 : 0;
      ENGINE_CHECK(ti.begin <= ti.end && ti.end <= data_size, BadCheckpoint, HINT_ST,
                   "%s: tensor '%s' byte range [%zu, %zu) outside the %zu-byte data section", path.c_str(),
                   kv.first.c_str(), ti.begin, ti.end, data_size);
      ENGINE_CHECK(esize == 0 || ti.end - ti.begin == numel * esize, BadCheckpoint, HINT_ST,
                   "%s: tensor '%s' holds %zu bytes but shape x dtype %s needs %zu", path.c_str(), kv.first.c_str(),
                   ti.end - ti.begin, ti.dtype.c_str(), numel * esize);
      tensors_.push_back(std::move(ti));
    }
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafeTensorsReader::~SafeTensorsReader() {
  if (map_) ::munmap(map_, size_);
}

const StTensorInfo* SafeTensorsReader::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void SafeTensorsReader::read_f32(const StTensorInfo& t, float* dst, size_t numel) const {
  const unsigned char* src = (const unsigned char*)map_ + data_start_ + t.begin;
  const size_t n = t.end - t.begin;
  if (t.dtype == "F32") {
    ENGINE_CHECK(n == numel * 4, BadShape, "", "%s: '%s' has %zu bytes, expected %zu", path_.c_str(), t.name.c_str(), n, numel * 4);
    std::memcpy(dst, src, n);
  } else if (t.dtype == "BF16") {
    ENGINE_CHECK(n == numel * 2, BadShape, "", "%s: '%s' has %zu bytes, expected %zu", path_.c_str(), t.name.c_str(), n, numel * 2);
    for (size_t i = 0; i < numel; i++) {
      uint32_t bits = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
      std::memcpy(dst + i, &bits, 4);
    }
  } else if (t.dtype == "F16") {
    ENGINE_CHECK(n == numel * 2, BadShape, "", "%s: '%s' has %zu bytes, expected %zu", path_.c_str(), t.name.c_str(), n, numel * 2);
    for (size_t i = 0; i < numel; i++) {
      uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
      int s = (h >> 15) & 1, e = (h >> 10) & 0x1F, m = h & 0x3FF;
      float v = e == 0 ? std::ldexp((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp((float)(m | 0x400), e - 25);
      dst[i] = s ? -v : v;
    }
  } else {
    ENGINE_THROW(BadCheckpoint, "convert the model to float32, float16 or bfloat16", "%s: tensor '%s' has dtype %s",
                 path_.c_str(), t.name.c_str(), t.dtype.c_str());
  }
}

void safetensors_write(const std::string& path, const std::vector<StTensorOut>& tensors) {
  Json h = Json::object();
  Json meta = Json::object();
  meta.set("format", Json::string("pt"));
  h.set("__metadata__", meta);
  size_t off = 0;
  for (const auto& t : tensors) {
    size_t numel = 1;
    Json shape = Json::array();
    for (size_t d : t.shape) { numel *= d; shape.arr.push_back(Json::number((double)d)); }
    Json e = Json::object();
    e.set("dtype", Json::string("F32"));
    e.set("shape", shape);
    Json offs = Json::array();
    offs.arr.push_back(Json::number((double)off));
    offs.arr.push_back(Json::number((double)(off + numel * 4)));
    e.set("data_offsets", offs);
    h.set(t.name, e);
    off += numel * 4;
  }
  std::string hs = json_dump(h);
  while ((8 + hs.size()) % 8) hs += ' ';  // data section 8-byte aligned, as the reference writer does
  FileWriter w(path);
  uint64_t hl = hs.size();
  unsigned char lb[8];
  for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(hl >> (8 * i));
  w.write(lb, 8);
  w.write(hs.data(), hs.size());
  for (const auto& t : tensors) {
    size_t numel = 1;
    for (size_t d : t.shape) numel *= d;
    w.write(t.data, numel * 4);
  }
  w.close();
}

ModelConfig hf_read_gpt2_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  Json j = json_parse(read_text_file(path), path);
  const Json* mt = j.get("model_type");
  ENGINE_CHECK(mt && mt->type == Json::String && mt->str == "gpt2", BadConfig,
               "the engine implements GPT-2 only; pick a gpt2 checkpoint", "%s: model_type is '%s', not 'gpt2'",
               path.c_str(), mt && mt->type == Json::String ? mt->str.c_str() : "(missing)");
  ModelConfig c;
  c.n_layer = (size_t)json_number(j, "n_layer", path);
  c.n_head = (size_t)json_number(j, "n_head", path);
  c.n_embd = (size_t)json_number(j, "n_embd", path);
  c.n_positions = (size_t)json_number(j, "n_positions", path);
  c.vocab_size = (size_t)json_number(j, "vocab_size", path);
  if (const Json* e = j.get("layer_norm_epsilon")) c.layer_norm_eps = (float)e->num;
  if (const Json* a = j.get("activation_function"))
    ENGINE_CHECK(a->str == "gelu_new" || a->str == "gelu_pytorch_tanh", BadConfig, "",
                 "%s: activation_function '%s' (the engine implements the tanh GELU, 'gelu_new')", path.c_str(), a->str.c_str());
  for (const char* k : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
    if (const Json* v = j.get(k)) ENGINE_CHECK(!(v->type == Json::Bool && v->b), BadConfig, "", "%s: %s = true is not supported by the engine", path.c_str(), k);
  if (const Json* v = j.get("tie_word_embeddings"))
    ENGINE_CHECK(!(v->type == Json::Bool && !v->b), BadConfig, "", "%s: an untied LM head (tie_word_embeddings false) is not supported for GPT-2", path.c_str());
  if (const Json* v = j.get("n_inner"))
    ENGINE_CHECK(v->type == Json::Null || (size_t)v->num == 4 * c.n_embd, BadConfig, "", "%s: n_inner must be 4 * n_embd", path.c_str());
  return c;
}

std::string hf_gpt2_config_json(const ModelConfig& c) {
  Json j = Json::object();
  Json arch = Json::array();
  arch.arr.push_back(Json::string("GPT2LMHeadModel"));
  j.set("architectures", arch);
  j.set("model_type", Json::string("gpt2"));
  j.set("vocab_size", Json::number((double)c.vocab_size));
  j.set("n_positions", Json::number((double)c.n_positions));
  j.set("n_ctx", Json::number((double)c.n_positions));
  j.set("n_embd", Json::number((double)c.n_embd));
  j.set("n_layer", Json::number((double)c.n_layer));
  j.set("n_head", Json::number((double)c.n_head));
  j.set("n_inner", Json());
  j.set("activation_function", Json::string("gelu_new"));
  j.set("layer_norm_epsilon", Json::number(float_decimal(c.layer_norm_eps)));
  for (const char* k : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) j.set(k, Json::number(float_decimal(c.dropout)));
  j.set("initializer_range", Json::number(0.02));
  j.set("scale_attn_weights", Json::boolean(true));
  j.set("tie_word_embeddings", Json::boolean(true));
  // GPT-2's own ids unless the export names the tokenizer's (hf_export always does).
  j.set("bos_token_id", Json::number(c.bos_token_id >= 0 ? (double)c.bos_token_id : 50256));
  j.set("eos_token_id", Json::number(c.eos_token_id >= 0 ? (double)c.eos_token_id : 50256));
  j.set("torch_dtype", Json::string("float32"));
  return json_dump(j, 2) + "\n";
}

void hf_load_weights(const std::string& dir, const ParamLayout& layout, float* params) {
  // One file, or several listed by model.safetensors.index.json (weight_map: tensor name -> file).
  std::vector<std::string> files;
  const std::string index = dir + "/model.safetensors.index.json";
  if (path_exists(dir + "/model.safetensors")) {
    files.push_back(dir + "/model.safetensors");
  } else if (path_exists(index)) {
    Json j = json_parse(read_text_file(index), index);
    const Json* wm = j.get("weight_map");
    ENGINE_CHECK(wm && wm->type == Json::Object, BadCheckpoint, "", "%s: no weight_map", index.c_str());
    for (const auto& kv : wm->obj) {
      std::string f = dir + "/" + kv.second.str;
      bool seen = false;
      for (const auto& g : files) seen |= g == f;
      if (!seen) files.push_back(f);
    }
  } else {
    ENGINE_THROW(IO, "export the model with save_pretrained(safe_serialization=True); .bin files are not read",
                 "%s has neither model.safetensors nor model.safetensors.index.json", dir.c_str());
  }
  std::vector<bool> loaded(layout.tensors.size(), false);
  for (const auto& f : files) {
    SafeTensorsReader r(f);
    for (const auto& t : r.tensors()) {
      std::string name = t.name;
      const ParamTensor* p = layout.find(name);
      if (!p && name.rfind("transformer.", 0) != 0) p = layout.find("transformer." + name);  // GPT2Model-style keys
      if (!p && name == "lm_head.weight") p = layout.find("embed_out.weight");  // gpt_neox head, transformers 5 name
      if (!p) continue;  // attn.bias / attn.masked_bias buffers, lm_head.weight (tied)
      ENGINE_CHECK(t.shape == p->shape, BadShape, "the config.json does not match the weights",
                   "%s: tensor '%s' has shape [%s], the model expects [%s]", f.c_str(), t.name.c_str(),
                   [&] { std::string s; for (size_t d : t.shape) s += std::to_string(d) + ","; return s; }().c_str(),
                   [&] { std::string s; for (size_t d : p->shape) s += std::to_string(d) + ","; return s; }().c_str());
      r.read_f32(t, params + p->offset, p->numel);
      loaded[&*p - &layout.tensors[0]] = true;
    }
  }
  for (size_t i = 0; i < loaded.size(); i++)
    ENGINE_CHECK(loaded[i], BadCheckpoint, "the weights do not belong to this config.json", "%s: tensor '%s' missing",
                 dir.c_str(), layout.tensors[i].name.c_str());
}

void hf_export(const std::string& dir, const ModelConfig& c, const ParamLayout& layout, const float* params,
               const std::string& tokenizer_json, int eos_id, int bos_id) {
  const std::string tmp = parent_dir(dir) + "/." + base_name(dir) + ".tmp-" + unique_suffix();
  make_dirs(parent_dir(dir));
  make_dirs(tmp);
  try {
    std::vector<StTensorOut> ts;
    for (const auto& t : layout.tensors) ts.push_back({t.name, t.shape, params + t.offset});
    safetensors_write(tmp + "/model.safetensors", ts);
    // bos/eos of the tokenizer the model was trained with (eos_id, bos_id), never a family's default (GPT-J's and
    // GPT-2's 50256 may lie outside another tokenizer's vocabulary). A tokenizer without a BOS of its own keeps the
    // model's (HF config) bos, else uses its EOS, as GPT-2 does.
    ModelConfig cc = c;
    if (eos_id >= 0) cc.eos_token_id = eos_id;
    if (bos_id >= 0) cc.bos_token_id = bos_id;
    else if (cc.bos_token_id < 0 || cc.family == "gpt2") cc.bos_token_id = cc.eos_token_id;
    write_file_atomic(tmp + "/config.json", hf_config_json(cc));
    Json g = Json::object();
    if (cc.bos_token_id >= 0) g.set("bos_token_id", Json::number((double)cc.bos_token_id));
    if (cc.eos_token_id >= 0) g.set("eos_token_id", Json::number((double)cc.eos_token_id));
    write_file_atomic(tmp + "/generation_config.json", json_dump(g, 2) + "\n");
    if (!tokenizer_json.empty()) copy_file(tokenizer_json, tmp + "/tokenizer.json");
    fsync_dir(tmp);
    if (path_exists(dir)) remove_tree(dir);  // an export is a pure function of the weights: replace it
    rename_path(tmp, dir);
    fsync_dir(parent_dir(dir));
  } catch (...) {
    try { remove_tree(tmp); } catch (...) {}
    throw;
  }
}

}  // namespace engine
