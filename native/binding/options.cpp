// options.cpp — argument conversion and validation for the binding (see options.h).
#include "options.h"
#include <cmath>

namespace addon {

[[noreturn]] static void bad(Napi::Env env, const std::string& field, const std::string& what) {
  throw Napi::TypeError::New(env, "engine option '" + field + "': " + what);
}

static double num(Napi::Env env, Napi::Object o, const char* key, const std::string& path, double lo, double hi,
                  bool integer) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) bad(env, path + key, "expected a number, got " + std::string(v.IsUndefined() ? "undefined" : "another type"));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d < lo || d > hi) bad(env, path + key, "value " + std::to_string(d) + " outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  if (integer && d != std::floor(d)) bad(env, path + key, "expected an integer, got " + std::to_string(d));
  return d;
}

static std::string str(Napi::Env env, Napi::Object o, const char* key, const std::string& path) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) bad(env, path + key, "expected a string");
  return v.As<Napi::String>().Utf8Value();
}

static Napi::Object obj(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsObject()) bad(env, key, "expected an object");
  return v.As<Napi::Object>();
}

// model.family and its fields (families.h); each is optional and defaults per family.
static void read_family_options(Napi::Env env, Napi::Object m, engine::ModelConfig& c) {
  if (m.Get("family").IsString()) c.family = str(env, m, "family", "model.");
  if (c.family != "llama" && c.family != "gpt_neox" && c.family != "gptj" && c.family != "gpt2")
    bad(env, "model.family", "'" + c.family + "' is not gpt2 | llama | gpt_neox | gptj");
  auto has = [&](const char* k) { return !m.Get(k).IsUndefined() && !m.Get(k).IsNull(); };
  auto flag = [&](const char* k, bool& dst) {
    if (!has(k)) return;
    if (!m.Get(k).IsBoolean()) bad(env, std::string("model.") + k, "expected a boolean");
    dst = m.Get(k).As<Napi::Boolean>().Value();
  };
  if (c.family != "gpt2") {  // HF defaults: untied heads; NeoX's exact GELU
    c.tie_word_embeddings = false;
    if (c.family == "gpt_neox") c.hidden_act = "gelu";
    if (c.family == "llama") c.layer_norm_eps = 1e-6f;
  }
  if (has("nKvHead")) c.n_kv_head = (size_t)num(env, m, "nKvHead", "model.", 1, 1024, true);
  if (has("headDim")) c.head_dim = (size_t)num(env, m, "headDim", "model.", 1, 4096, true);
  if (has("intermediateSize")) c.intermediate_size = (size_t)num(env, m, "intermediateSize", "model.", 1, 1 << 20, true);
  if (has("rotaryDim")) c.rotary_dim = (size_t)num(env, m, "rotaryDim", "model.", 2, 4096, true);
  if (has("ropeTheta")) c.rope_theta = (float)num(env, m, "ropeTheta", "model.", 1e-3, 1e12, false);
  if (has("layerNormEps")) c.layer_norm_eps = (float)num(env, m, "layerNormEps", "model.", 0, 1, false);
  if (has("rmsNormEps")) c.layer_norm_eps = (float)num(env, m, "rmsNormEps", "model.", 0, 1, false);
  if (has("hiddenAct")) c.hidden_act = str(env, m, "hiddenAct", "model.");
  flag("tieWordEmbeddings", c.tie_word_embeddings);
  flag("parallelResidual", c.parallel_residual);
  flag("attentionBias", c.attention_bias);
  if (has("ropeScaling")) {
    Napi::Object r = obj(env, m, "ropeScaling");
    c.rope_scaling = str(env, r, "type", "model.ropeScaling.");
    c.rope_factor = (float)num(env, r, "factor", "model.ropeScaling.", 1e-6, 1e6, false);
    if (c.rope_scaling == "llama3") {
      c.rope_low_freq_factor = (float)num(env, r, "lowFreqFactor", "model.ropeScaling.", 1e-6, 1e6, false);
      c.rope_high_freq_factor = (float)num(env, r, "highFreqFactor", "model.ropeScaling.", 1e-6, 1e6, false);
      c.rope_original_max_positions =
          (size_t)num(env, r, "originalMaxPositionEmbeddings", "model.ropeScaling.", 1, 1 << 24, true);
    }
  }
  if (has("bosTokenId")) c.bos_token_id = (int64_t)num(env, m, "bosTokenId", "model.", 0, 1 << 30, true);
  if (has("eosTokenId")) c.eos_token_id = (int64_t)num(env, m, "eosTokenId", "model.", 0, 1 << 30, true);
}

// Multi-GPU fields of BackendOptions (config.h: devices, nccl_id, offload_delayed), set through overloads that
// exist only when the member does, so the binding compiles against an engine with or without them. A request
// the engine cannot take is an error, never dropped.
template <typename B>
static auto set_devices(B& b, const std::vector<int>& d, int) -> decltype((void)(b.devices = d), true) {
  b.devices = d;
  return true;
}
template <typename B>
static bool set_devices(B&, const std::vector<int>& d, long) { return d.size() <= 1; }
template <typename B>
static auto set_nccl_id(B& b, const std::string& id, int) -> decltype((void)(b.nccl_id = id), true) {
  b.nccl_id = id;
  return true;
}
template <typename B>
static bool set_nccl_id(B&, const std::string& id, long) { return id.empty(); }
template <typename B>
static auto set_delayed(B& b, bool v, int) -> decltype((void)(b.offload_delayed = v), true) {
  b.offload_delayed = v;
  return true;
}
template <typename B>
static bool set_delayed(B&, bool v, long) { return !v; }

static void read_parallel_options(Napi::Env env, Napi::Object b, engine::BackendOptions& o) {
  std::vector<int> devices;
  Napi::Value dv = b.Get("devices");
  if (!dv.IsUndefined() && !dv.IsNull()) {
    if (!dv.IsArray()) bad(env, "backend.devices", "expected an array of CUDA ordinals");
    Napi::Array a = dv.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value e = a.Get(i);
      double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
      if (d < 0 || d > 1023 || d != std::floor(d)) bad(env, "backend.devices", "element " + std::to_string(i) + " is not a CUDA ordinal");
      devices.push_back((int)d);
    }
    if (devices.empty()) bad(env, "backend.devices", "expected at least one CUDA ordinal");
    o.device = devices[0];
    if (o.rank + (int)devices.size() > o.world_size)
      bad(env, "backend.devices", std::to_string(devices.size()) + " local GPUs from rank " + std::to_string(o.rank) +
                                      " do not fit worldSize " + std::to_string(o.world_size));
  }
  std::string id;
  if (b.Get("ncclId").IsString()) {
    id = b.Get("ncclId").As<Napi::String>().Utf8Value();
    if (id.size() != 256 || id.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      bad(env, "backend.ncclId", "expected the 256 hex digits ncclUniqueId() returned on rank 0");
  }
  bool delayed = b.Get("delayedUpdate").IsBoolean() && b.Get("delayedUpdate").As<Napi::Boolean>().Value();
  if (delayed && o.offload != "cpu") bad(env, "backend.delayedUpdate", "needs offload 'cpu'");
  if (!set_devices(o, devices, 0))
    bad(env, "backend.devices", "this engine build drives one GPU per process (no BackendOptions::devices)");
  if (!set_nccl_id(o, id, 0)) bad(env, "backend.ncclId", "this engine build has no multi-process support (no BackendOptions::nccl_id)");
  if (!set_delayed(o, delayed, 0))
    bad(env, "parallelism.offload.delayedUpdate", "this engine build does not implement the delayed update yet (no BackendOptions::offload_delayed)");
}

CreateOptions read_create_options(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) bad(env, "(options)", "expected an object");
  Napi::Object o = v.As<Napi::Object>();
  CreateOptions c;
  const double BIG = 9007199254740991.0;
  Napi::Object m = obj(env, o, "model");
  c.model.n_layer = (size_t)num(env, m, "nLayer", "model.", 1, 1024, true);
  c.model.n_head = (size_t)num(env, m, "nHead", "model.", 1, 1024, true);
  c.model.n_embd = (size_t)num(env, m, "nEmbd", "model.", 1, 65536, true);
  c.model.n_positions = (size_t)num(env, m, "nPositions", "model.", 2, 1 << 20, true);
  c.model.vocab_size = (size_t)num(env, m, "vocabSize", "model.", 2, 1 << 30, true);
  c.model.dropout = (float)num(env, m, "dropout", "model.", 0, 0.999, false);
  c.model.init_seed = (uint64_t)num(env, m, "initSeed", "model.", 0, BIG, true);
  if (c.model.n_embd % c.model.n_head) bad(env, "model.nEmbd", "must be divisible by model.nHead");
  read_family_options(env, m, c.model);
  Napi::Object t = obj(env, o, "training");
  c.train.micro_batch_size = (size_t)num(env, t, "microBatchSize", "training.", 1, 1 << 20, true);
  c.train.grad_accum_steps = (size_t)num(env, t, "gradAccumSteps", "training.", 1, 1 << 20, true);
  c.train.learning_rate = (float)num(env, t, "learningRate", "training.", 0, 10, false);
  c.train.min_lr_ratio = (float)num(env, t, "minLrRatio", "training.", 0, 1, false);
  c.train.warmup_steps = (size_t)num(env, t, "warmupSteps", "training.", 0, BIG, true);
  std::string sched = str(env, t, "schedule", "training.");
  if (sched == "cosine") c.train.schedule = engine::LrSchedule::Cosine;
  else if (sched == "linear") c.train.schedule = engine::LrSchedule::Linear;
  else if (sched == "constant") c.train.schedule = engine::LrSchedule::Constant;
  else bad(env, "training.schedule", "'" + sched + "' is not cosine | linear | constant");
  c.train.weight_decay = (float)num(env, t, "weightDecay", "training.", 0, 10, false);
  c.train.beta1 = (float)num(env, t, "beta1", "training.", 0, 0.999999, false);
  c.train.beta2 = (float)num(env, t, "beta2", "training.", 0, 0.999999, false);
  c.train.eps = (float)num(env, t, "eps", "training.", 1e-30, 1, false);
  c.train.grad_clip = (float)num(env, t, "gradClip", "training.", 0, 1e9, false);
  c.train.shuffle_seed = (uint64_t)num(env, t, "shuffleSeed", "training.", 0, BIG, true);
  c.train.divergence_loss = (float)num(env, t, "divergenceLoss", "training.", 1e-9, 1e30, false);
  Napi::Object b = obj(env, o, "backend");
  c.backend.name = str(env, b, "name", "backend.");
  c.backend.precision = str(env, b, "precision", "backend.");
  c.backend.recompute = str(env, b, "recompute", "backend.");
  c.backend.device = (int)num(env, b, "device", "backend.", 0, 1024, true);
  c.backend.zero_stage = (int)num(env, b, "zeroStage", "backend.", 0, 3, true);
  c.backend.offload = str(env, b, "offload", "backend.");
  c.backend.world_size = (int)num(env, b, "worldSize", "backend.", 1, 1 << 20, true);
  c.backend.rank = (int)num(env, b, "rank", "backend.", 0, 1 << 20, true);
  c.backend.num_threads = (int)num(env, b, "threads", "backend.", 0, 4096, true);
  if (c.backend.rank >= c.backend.world_size)
    bad(env, "backend.rank", "rank " + std::to_string(c.backend.rank) + " outside worldSize " + std::to_string(c.backend.world_size));
  read_parallel_options(env, b, c.backend);
  if (o.Get("hfDir").IsString()) c.hf_dir = o.Get("hfDir").As<Napi::String>().Utf8Value();
  if (o.Get("checkpointDir").IsString()) c.checkpoint_dir = o.Get("checkpointDir").As<Napi::String>().Utf8Value();
  if (o.Get("configJson").IsString()) c.config_json = o.Get("configJson").As<Napi::String>().Utf8Value();
  return c;
}

static Napi::Int32Array int32_field(Napi::Env env, Napi::Object o, const char* key, const std::string& path) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    bad(env, path + key, "expected an Int32Array");
  return v.As<Napi::Int32Array>();
}

std::vector<engine::ShardView> read_shards(Napi::Env env, Napi::Value v, std::vector<Napi::ObjectReference>& refs) {
  if (!v.IsArray()) bad(env, "shards", "expected an array of {nSeq, blockSize, inputIds, labels}");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<engine::ShardView> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    std::string p = "shards[" + std::to_string(i) + "].";
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) bad(env, p, "expected an object");
    Napi::Object s = e.As<Napi::Object>();
    engine::ShardView sv;
    sv.n_seq = (size_t)num(env, s, "nSeq", p, 1, 1e12, true);
    sv.block_size = (size_t)num(env, s, "blockSize", p, 2, 1 << 20, true);
    Napi::Int32Array ids = int32_field(env, s, "inputIds", p);
    Napi::Int32Array labels = int32_field(env, s, "labels", p);
    if (ids.ElementLength() != sv.n_seq * sv.block_size || labels.ElementLength() != sv.n_seq * sv.block_size)
      bad(env, p + "inputIds", "inputIds has " + std::to_string(ids.ElementLength()) + " and labels " +
                                   std::to_string(labels.ElementLength()) + " ids; nSeq x blockSize = " +
                                   std::to_string(sv.n_seq * sv.block_size));
    sv.input_ids = ids.Data();  // borrowed: kept alive by the references below
    sv.labels = labels.Data();
    refs.push_back(Napi::Persistent(ids.As<Napi::Object>()));
    refs.push_back(Napi::Persistent(labels.As<Napi::Object>()));
    if (!s.Get("positionIds").IsUndefined() && !s.Get("positionIds").IsNull()) {  // packed shards
      Napi::Int32Array pos = int32_field(env, s, "positionIds", p);
      if (pos.ElementLength() != sv.n_seq * sv.block_size)
        bad(env, p + "positionIds", "holds " + std::to_string(pos.ElementLength()) + " ids; nSeq x blockSize = " +
                                        std::to_string(sv.n_seq * sv.block_size));
      sv.position_ids = pos.Data();
      refs.push_back(Napi::Persistent(pos.As<Napi::Object>()));
    }
    out.push_back(sv);
  }
  return out;
}

std::vector<std::vector<int32_t>> read_prompts(Napi::Env env, Napi::Value v) {
  if (!v.IsArray()) bad(env, "prompts", "expected an array of token id arrays");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::vector<int32_t>> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(read_int32(env, a.Get(i), ("prompts[" + std::to_string(i) + "]").c_str()));
  return out;
}

engine::GenerateOptions read_generate_options(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) bad(env, "(generate options)", "expected an object");
  Napi::Object o = v.As<Napi::Object>();
  engine::GenerateOptions g;
  g.max_new_tokens = (size_t)num(env, o, "maxNewTokens", "", 0, 1 << 20, true);
  g.sample.temperature = (float)num(env, o, "temperature", "", 0, 100, false);
  g.sample.top_k = (size_t)num(env, o, "topK", "", 0, 1 << 30, true);
  g.sample.top_p = (float)num(env, o, "topP", "", 1e-9, 1, false);
  g.seed = (uint64_t)num(env, o, "seed", "", 0, 9007199254740991.0, true);
  g.eos_id = (int32_t)num(env, o, "eosId", "", -1, 2147483647.0, true);
  return g;
}

size_t get_count(Napi::Env env, Napi::Value v, const char* name, size_t min) {
  if (!v.IsNumber()) bad(env, name, "expected a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d < (double)min || d != std::floor(d) || d > 9007199254740991.0)
    bad(env, name, "expected an integer >= " + std::to_string(min) + ", got " + std::to_string(d));
  return (size_t)d;
}

std::string get_string(Napi::Env env, Napi::Value v, const char* name) {
  if (!v.IsString() || v.As<Napi::String>().Utf8Value().empty()) bad(env, name, "expected a non-empty string");
  return v.As<Napi::String>().Utf8Value();
}

std::vector<int32_t> read_int32(Napi::Env env, Napi::Value v, const char* name) {
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
  }
  if (!v.IsArray()) bad(env, name, "expected an Int32Array or an array of integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int32_t> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) bad(env, name, "element " + std::to_string(i) + " is not a number");
    double d = e.As<Napi::Number>().DoubleValue();
    if (d != std::floor(d) || d < -2147483648.0 || d > 2147483647.0) bad(env, name, "element " + std::to_string(i) + " is not an int32");
    out[i] = (int32_t)d;
  }
  return out;
}

}  // namespace addon
