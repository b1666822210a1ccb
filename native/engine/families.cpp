// families.cpp — HF config parsing/writing, parameter tables and init for Llama, GPT-NeoX and GPT-J (families.h).
// HF source of truth: transformers/models/{llama,gpt_neox,gptj}/{configuration,modeling}_*.py.
#include "families.h"
#include <cmath>
#include "backend.h"
#include "errors.h"
#include "fileio.h"
#include "rng.h"
#include "safetensors.h"

namespace engine {

static bool is_family(const std::string& f) { return f == "gpt2" || f == "llama" || f == "gpt_neox" || f == "gptj"; }

void family_resolve(ModelConfig& c) {
  ENGINE_CHECK(is_family(c.family), BadConfig, "use gpt2, llama, gpt_neox or gptj",
               "model.family '%s' is not supported", c.family.c_str());
  if (c.family == "gpt2") return;
  ENGINE_CHECK(c.n_head >= 1, BadConfig, "", "model.nHead = %zu", c.n_head);
  if (c.head_dim == 0) {
    ENGINE_CHECK(c.n_embd % c.n_head == 0, BadConfig, "nEmbd must be a multiple of nHead",
                 "model.nEmbd = %zu is not divisible by model.nHead = %zu", c.n_embd, c.n_head);
    c.head_dim = c.n_embd / c.n_head;
  }
  if (c.n_kv_head == 0) c.n_kv_head = c.n_head;
  ENGINE_CHECK(c.n_head % c.n_kv_head == 0, BadConfig, "num_key_value_heads must divide num_attention_heads",
               "model.nKvHead = %zu does not divide model.nHead = %zu", c.n_kv_head, c.n_head);
  ENGINE_CHECK(c.family == "llama" || c.n_kv_head == c.n_head, BadConfig, "grouped-query attention is a llama option",
               "model.nKvHead = %zu != nHead = %zu for family %s", c.n_kv_head, c.n_head, c.family.c_str());
  ENGINE_CHECK(c.family == "llama" || c.head_dim * c.n_head == c.n_embd, BadConfig, "",
               "model.headDim %zu x nHead %zu != nEmbd %zu", c.head_dim, c.n_head, c.n_embd);
  if (c.intermediate_size == 0) {
    if (c.family == "llama") {  // SwiGLU keeps ~the parameters of a 4C MLP: 2/3 * 4C, rounded up to 64
      size_t i = (8 * c.n_embd + 2) / 3;
      c.intermediate_size = (i + 63) / 64 * 64;
    } else {
      c.intermediate_size = 4 * c.n_embd;
    }
  }
  if (c.rotary_dim == 0) {
    if (c.family == "llama") c.rotary_dim = c.head_dim;
    else if (c.family == "gpt_neox") c.rotary_dim = std::max<size_t>(2, (c.head_dim / 4) & ~(size_t)1);
    else c.rotary_dim = std::min<size_t>(64, c.head_dim);
  }
  ENGINE_CHECK(c.rotary_dim % 2 == 0 && c.rotary_dim <= c.head_dim, BadConfig, "rotary dims must be even and <= head dim",
               "model.rotaryDim = %zu with head dim %zu", c.rotary_dim, c.head_dim);
  ENGINE_CHECK(c.family != "llama" || c.rotary_dim == c.head_dim, BadConfig, "llama rotates the whole head",
               "model.rotaryDim = %zu != head dim %zu for llama", c.rotary_dim, c.head_dim);
  ENGINE_CHECK(c.rope_theta > 0, BadConfig, "", "model.ropeTheta = %g", c.rope_theta);
  ENGINE_CHECK(c.rope_scaling.empty() || c.rope_scaling == "linear" || c.rope_scaling == "llama3", BadConfig,
               "supported rope_scaling types: none, linear, llama3", "rope_scaling type '%s' is not supported",
               c.rope_scaling.c_str());
  ENGINE_CHECK(c.rope_scaling.empty() || c.rope_factor > 0, BadConfig, "", "rope_scaling factor %g", c.rope_factor);
  if (c.family == "llama") {
    c.hidden_act = "silu";
    c.attention_bias = false;
    c.parallel_residual = false;
  } else if (c.family == "gptj") {
    c.attention_bias = false;
    c.parallel_residual = true;
    c.tie_word_embeddings = false;
  }
  ENGINE_CHECK(c.family == "llama" ? c.hidden_act == "silu" : (c.hidden_act == "gelu" || c.hidden_act == "gelu_new"),
               BadConfig, "llama: silu; gpt_neox/gptj: gelu or gelu_new", "activation '%s' for family %s",
               c.hidden_act.c_str(), c.family.c_str());
  ENGINE_CHECK(c.dropout == 0, BadConfig, "set model.dropout to 0 (dropout is implemented for gpt2 only)",
               "model.dropout = %g for family %s", c.dropout, c.family.c_str());
}

ParamLayout param_layout(const ModelConfig& c0) {
  ModelConfig c = c0;
  family_resolve(c);
  if (c.family == "gpt2") return gpt2_param_layout(c);
  const size_t C = c.n_embd, V = c.vocab_size, NH = c.n_head, KVH = c.n_kv_head, HD = c.head_dim;
  const size_t I = c.intermediate_size;
  ParamLayout l;
  auto add = [&](const std::string& name, std::vector<size_t> shape) { l.add(name, std::move(shape)); };
  // nn.Linear layout everywhere: weight (out_features, in_features), y = x W^T + b.
  if (c.family == "llama") {
    add("model.embed_tokens.weight", {V, C});
    for (size_t i = 0; i < c.n_layer; i++) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(p + "self_attn.q_proj.weight", {NH * HD, C});
      add(p + "self_attn.k_proj.weight", {KVH * HD, C});
      add(p + "self_attn.v_proj.weight", {KVH * HD, C});
      add(p + "self_attn.o_proj.weight", {C, NH * HD});
      add(p + "mlp.gate_proj.weight", {I, C});
      add(p + "mlp.up_proj.weight", {I, C});
      add(p + "mlp.down_proj.weight", {C, I});
      add(p + "input_layernorm.weight", {C});
      add(p + "post_attention_layernorm.weight", {C});
    }
    add("model.norm.weight", {C});
    if (!c.tie_word_embeddings) add("lm_head.weight", {V, C});
  } else if (c.family == "gpt_neox") {
    add("gpt_neox.embed_in.weight", {V, C});
    for (size_t i = 0; i < c.n_layer; i++) {
      const std::string p = "gpt_neox.layers." + std::to_string(i) + ".";
      add(p + "input_layernorm.weight", {C});
      add(p + "input_layernorm.bias", {C});
      add(p + "post_attention_layernorm.weight", {C});
      add(p + "post_attention_layernorm.bias", {C});
      add(p + "attention.query_key_value.weight", {3 * C, C});  // rows: per head [q (HD), k (HD), v (HD)]
      if (c.attention_bias) add(p + "attention.query_key_value.bias", {3 * C});
      add(p + "attention.dense.weight", {C, C});
      if (c.attention_bias) add(p + "attention.dense.bias", {C});
      add(p + "mlp.dense_h_to_4h.weight", {I, C});
      add(p + "mlp.dense_h_to_4h.bias", {I});
      add(p + "mlp.dense_4h_to_h.weight", {C, I});
      add(p + "mlp.dense_4h_to_h.bias", {C});
    }
    add("gpt_neox.final_layer_norm.weight", {C});
    add("gpt_neox.final_layer_norm.bias", {C});
    if (!c.tie_word_embeddings) add("embed_out.weight", {V, C});
  } else {  // gptj
    add("transformer.wte.weight", {V, C});
    for (size_t i = 0; i < c.n_layer; i++) {
      const std::string p = "transformer.h." + std::to_string(i) + ".";
      add(p + "ln_1.weight", {C});
      add(p + "ln_1.bias", {C});
      add(p + "attn.k_proj.weight", {C, C});
      add(p + "attn.v_proj.weight", {C, C});
      add(p + "attn.q_proj.weight", {C, C});
      add(p + "attn.out_proj.weight", {C, C});
      add(p + "mlp.fc_in.weight", {I, C});
      add(p + "mlp.fc_in.bias", {I});
      add(p + "mlp.fc_out.weight", {C, I});
      add(p + "mlp.fc_out.bias", {C});
    }
    add("transformer.ln_f.weight", {C});
    add("transformer.ln_f.bias", {C});
    add("lm_head.weight", {V, C});
    add("lm_head.bias", {V});
  }
  return l;
}

FamilyTensors family_tensors(const ModelConfig& c, const ParamLayout& l) {
  auto idx = [&](const std::string& n) -> int {
    const ParamTensor* t = l.find(n);
    return t ? (int)(t - &l.tensors[0]) : -1;
  };
  FamilyTensors f;
  f.blocks.resize(c.n_layer);
  for (size_t i = 0; i < c.n_layer; i++) {
    FamilyBlock& b = f.blocks[i];
    const std::string s = std::to_string(i);
    if (c.family == "llama") {
      const std::string p = "model.layers." + s + ".";
      b.norm1_w = idx(p + "input_layernorm.weight");
      b.norm2_w = idx(p + "post_attention_layernorm.weight");
      b.q_w = idx(p + "self_attn.q_proj.weight"); b.k_w = idx(p + "self_attn.k_proj.weight");
      b.v_w = idx(p + "self_attn.v_proj.weight"); b.o_w = idx(p + "self_attn.o_proj.weight");
      b.fc_w = idx(p + "mlp.gate_proj.weight"); b.up_w = idx(p + "mlp.up_proj.weight");
      b.proj_w = idx(p + "mlp.down_proj.weight");
    } else if (c.family == "gpt_neox") {
      const std::string p = "gpt_neox.layers." + s + ".";
      b.norm1_w = idx(p + "input_layernorm.weight"); b.norm1_b = idx(p + "input_layernorm.bias");
      b.norm2_w = idx(p + "post_attention_layernorm.weight"); b.norm2_b = idx(p + "post_attention_layernorm.bias");
      b.qkv_w = idx(p + "attention.query_key_value.weight"); b.qkv_b = idx(p + "attention.query_key_value.bias");
      b.o_w = idx(p + "attention.dense.weight"); b.o_b = idx(p + "attention.dense.bias");
      b.fc_w = idx(p + "mlp.dense_h_to_4h.weight"); b.fc_b = idx(p + "mlp.dense_h_to_4h.bias");
      b.proj_w = idx(p + "mlp.dense_4h_to_h.weight"); b.proj_b = idx(p + "mlp.dense_4h_to_h.bias");
    } else if (c.family == "gpt2") {  // Conv1D (in, out) weights; c_attn is [q | k | v] along its output
      const std::string p = "transformer.h." + s + ".";
      b.norm1_w = idx(p + "ln_1.weight"); b.norm1_b = idx(p + "ln_1.bias");
      b.norm2_w = idx(p + "ln_2.weight"); b.norm2_b = idx(p + "ln_2.bias");
      b.qkv_w = idx(p + "attn.c_attn.weight"); b.qkv_b = idx(p + "attn.c_attn.bias");
      b.o_w = idx(p + "attn.c_proj.weight"); b.o_b = idx(p + "attn.c_proj.bias");
      b.fc_w = idx(p + "mlp.c_fc.weight"); b.fc_b = idx(p + "mlp.c_fc.bias");
      b.proj_w = idx(p + "mlp.c_proj.weight"); b.proj_b = idx(p + "mlp.c_proj.bias");
    } else {
      const std::string p = "transformer.h." + s + ".";
      b.norm1_w = idx(p + "ln_1.weight"); b.norm1_b = idx(p + "ln_1.bias");
      b.q_w = idx(p + "attn.q_proj.weight"); b.k_w = idx(p + "attn.k_proj.weight");
      b.v_w = idx(p + "attn.v_proj.weight"); b.o_w = idx(p + "attn.out_proj.weight");
      b.fc_w = idx(p + "mlp.fc_in.weight"); b.fc_b = idx(p + "mlp.fc_in.bias");
      b.proj_w = idx(p + "mlp.fc_out.weight"); b.proj_b = idx(p + "mlp.fc_out.bias");
    }
  }
  if (c.family == "llama") {
    f.embed = idx("model.embed_tokens.weight"); f.final_w = idx("model.norm.weight"); f.head_w = idx("lm_head.weight");
  } else if (c.family == "gpt_neox") {
    f.embed = idx("gpt_neox.embed_in.weight"); f.final_w = idx("gpt_neox.final_layer_norm.weight");
    f.final_b = idx("gpt_neox.final_layer_norm.bias"); f.head_w = idx("embed_out.weight");
  } else if (c.family == "gpt2") {  // tied head; learned positions
    f.embed = idx("transformer.wte.weight"); f.pos = idx("transformer.wpe.weight");
    f.final_w = idx("transformer.ln_f.weight"); f.final_b = idx("transformer.ln_f.bias");
  } else {
    f.embed = idx("transformer.wte.weight"); f.final_w = idx("transformer.ln_f.weight");
    f.final_b = idx("transformer.ln_f.bias"); f.head_w = idx("lm_head.weight"); f.head_b = idx("lm_head.bias");
  }
  return f;
}

ModelDims model_dims(const ModelConfig& c) {
  ModelDims d;
  const bool gpt2 = c.family == "gpt2";
  d.L = c.n_layer; d.C = c.n_embd; d.NH = c.n_head;
  d.KVH = gpt2 ? c.n_head : c.n_kv_head;
  d.HD = gpt2 ? c.n_embd / c.n_head : c.head_dim;
  d.I = gpt2 ? 4 * c.n_embd : c.intermediate_size;
  d.QD = d.NH * d.HD; d.KD = d.KVH * d.HD;
  return d;
}

void init_params(const ModelConfig& c, const ParamLayout& layout, float* params) {
  if (c.family == "gpt2") return gpt2_init_params(c, layout, params);
  for (size_t i = 0; i < layout.tensors.size(); i++) {
    const ParamTensor& t = layout.tensors[i];
    float* p = params + t.offset;
    const bool norm_gain = t.shape.size() == 1 && (t.name.find("norm") != std::string::npos ||
                                                   t.name.find("ln_") != std::string::npos) &&
                           t.name.compare(t.name.size() - 6, 6, "weight") == 0;
    if (norm_gain) {
      for (size_t j = 0; j < t.numel; j++) p[j] = 1.0f;
    } else if (t.shape.size() == 1) {
      for (size_t j = 0; j < t.numel; j++) p[j] = 0.0f;
    } else {
      Rng r;
      rng_seed(r, c.init_seed * 1000003ull + i);
      for (size_t j = 0; j < t.numel; j++) p[j] = (float)(rng_normal(r) * 0.02);
    }
  }
}

// ---- config.json ----

static bool jbool(const Json& j, const char* k, bool dflt) {
  const Json* v = j.get(k);
  return v && v->type == Json::Bool ? v->b : dflt;
}
static double jnum(const Json& j, const char* k, double dflt) {
  const Json* v = j.get(k);
  return v && v->type == Json::Number ? v->num : dflt;
}
static std::string jstr(const Json& j, const char* k, const std::string& dflt) {
  const Json* v = j.get(k);
  return v && v->type == Json::String ? v->str : dflt;
}
static int64_t jtoken(const Json& j, const char* k) {  // a token id, or the first of a list; -1 when absent
  const Json* v = j.get(k);
  if (v && v->type == Json::Number) return (int64_t)v->num;
  if (v && v->type == Json::Array && !v->arr.empty() && v->arr[0].type == Json::Number) return (int64_t)v->arr[0].num;
  return -1;
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5) -> c.rope_*.
static void read_rope(const Json& j, const std::string& path, ModelConfig& c) {
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const Json* r = j.get(key);
    if (!r || r->type == Json::Null) continue;
    ENGINE_CHECK(r->type == Json::Object, BadConfig, "", "%s: %s must be an object", path.c_str(), key);
    std::string type = jstr(*r, "rope_type", jstr(*r, "type", "default"));
    if (r->get("rope_theta")) c.rope_theta = (float)jnum(*r, "rope_theta", c.rope_theta);
    if (r->get("partial_rotary_factor") && c.family == "gpt_neox")
      c.rotary_dim = (size_t)(c.head_dim * jnum(*r, "partial_rotary_factor", 0.25));
    ENGINE_CHECK(type == "default" || type == "linear" || type == "llama3", BadConfig,
                 "supported rope types: default (none), linear, llama3",
                 "%s: %s.rope_type '%s' is not supported", path.c_str(), key, type.c_str());
    if (type == "default") continue;
    c.rope_scaling = type;
    c.rope_factor = (float)jnum(*r, "factor", 1.0);
    if (type == "llama3") {
      c.rope_low_freq_factor = (float)jnum(*r, "low_freq_factor", 1.0);
      c.rope_high_freq_factor = (float)jnum(*r, "high_freq_factor", 4.0);
      c.rope_original_max_positions = (size_t)jnum(*r, "original_max_position_embeddings", 8192);
    }
  }
}

// The weights must be there before the backend allocates memory for them (a 6B model is ~100 GB of fp32 state).
static void check_weight_files(const std::string& dir) {
  ENGINE_CHECK(path_exists(dir + "/model.safetensors") || path_exists(dir + "/model.safetensors.index.json"), IO,
               "export the model with save_pretrained(safe_serialization=True); .bin files are not read",
               "%s has neither model.safetensors nor model.safetensors.index.json", dir.c_str());
}

ModelConfig hf_read_config(const std::string& dir) {
  ModelConfig c = hf_read_config_only(dir);
  check_weight_files(dir);
  return c;
}

ModelConfig hf_read_config_only(const std::string& dir) {
  const std::string path = dir + "/config.json";
  Json j = json_parse(read_text_file(path), path);
  const std::string mt = jstr(j, "model_type", "(missing)");
  if (mt == "gpt2") {
    ModelConfig c = hf_read_gpt2_config(dir);
    c.bos_token_id = jtoken(j, "bos_token_id");
    c.eos_token_id = jtoken(j, "eos_token_id");
    return c;
  }
  ENGINE_CHECK(mt == "llama" || mt == "gpt_neox" || mt == "gptj", BadConfig,
               "supported model_type values: gpt2, llama, gpt_neox, gptj",
               "%s: model_type '%s' is not supported by the engine", path.c_str(), mt.c_str());
  ModelConfig c;
  c.family = mt;
  auto need = [&](const char* k) { return (size_t)json_number(j, k, path); };
  if (mt == "gptj") {
    c.n_layer = need("n_layer"); c.n_head = need("n_head"); c.n_embd = need("n_embd");
    c.n_positions = need("n_positions"); c.vocab_size = need("vocab_size");
    c.layer_norm_eps = (float)jnum(j, "layer_norm_epsilon", 1e-5);
    const Json* rd = j.get("rotary_dim");
    ENGINE_CHECK(rd && rd->type == Json::Number, BadConfig, "GPT-J checkpoints set rotary_dim (64 for GPT-J-6B)",
                 "%s: rotary_dim is missing or null (rotating the whole embedding is not supported)", path.c_str());
    c.rotary_dim = (size_t)rd->num;
    const Json* ni = j.get("n_inner");
    c.intermediate_size = ni && ni->type == Json::Number ? (size_t)ni->num : 4 * c.n_embd;
    c.hidden_act = jstr(j, "activation_function", "gelu_new");
    ENGINE_CHECK(!jbool(j, "tie_word_embeddings", false), BadConfig, "", "%s: tie_word_embeddings = true is not supported for gptj", path.c_str());
  } else {
    c.n_layer = need("num_hidden_layers"); c.n_head = need("num_attention_heads"); c.n_embd = need("hidden_size");
    c.n_positions = need("max_position_embeddings"); c.vocab_size = need("vocab_size");
    c.intermediate_size = need("intermediate_size");
    c.head_dim = c.n_embd / std::max<size_t>(1, c.n_head);
    c.hidden_act = jstr(j, "hidden_act", mt == "llama" ? "silu" : "gelu");
    c.rope_theta = (float)jnum(j, "rope_theta", jnum(j, "rotary_emb_base", 10000.0));
    if (mt == "llama") {
      c.n_kv_head = (size_t)jnum(j, "num_key_value_heads", (double)c.n_head);
      if (const Json* hd = j.get("head_dim"); hd && hd->type == Json::Number) c.head_dim = (size_t)hd->num;
      c.rotary_dim = c.head_dim;
      c.layer_norm_eps = (float)jnum(j, "rms_norm_eps", 1e-6);
      c.tie_word_embeddings = jbool(j, "tie_word_embeddings", false);
      for (const char* k : {"attention_bias", "mlp_bias"})
        ENGINE_CHECK(!jbool(j, k, false), BadConfig, "the engine implements bias-free llama layers",
                     "%s: %s = true is not supported", path.c_str(), k);
    } else {
      c.rotary_dim = (size_t)(c.head_dim * jnum(j, "rotary_pct", 0.25));
      c.layer_norm_eps = (float)jnum(j, "layer_norm_eps", 1e-5);
      c.parallel_residual = jbool(j, "use_parallel_residual", true);
      c.attention_bias = jbool(j, "attention_bias", true);
      c.tie_word_embeddings = jbool(j, "tie_word_embeddings", false);
    }
    read_rope(j, path, c);
  }
  if (c.hidden_act == "gelu_pytorch_tanh" || c.hidden_act == "gelu_fast") c.hidden_act = "gelu_new";
  ENGINE_CHECK(mt == "llama" ? c.hidden_act == "silu" : (c.hidden_act == "gelu" || c.hidden_act == "gelu_new"),
               BadConfig, "", "%s: %s '%s' is not supported for %s", path.c_str(),
               mt == "gptj" ? "activation_function" : "hidden_act", c.hidden_act.c_str(), mt.c_str());
  c.bos_token_id = jtoken(j, "bos_token_id");
  c.eos_token_id = jtoken(j, "eos_token_id");
  try {
    family_resolve(c);
  } catch (EngineError& e) {
    throw EngineError(e.code, path + ": " + e.what(), e.file.c_str(), e.line, e.hint);
  }
  return c;
}

std::string hf_config_json(const ModelConfig& c0) {
  ModelConfig c = c0;
  family_resolve(c);
  if (c.family == "gpt2") return hf_gpt2_config_json(c);
  Json j = Json::object();
  Json arch = Json::array();
  auto num = [](double v) { return Json::number(float_decimal(v)); };  // fp32 settings as written: 1e-05
  const char* cls = c.family == "llama" ? "LlamaForCausalLM" : c.family == "gpt_neox" ? "GPTNeoXForCausalLM" : "GPTJForCausalLM";
  arch.arr.push_back(Json::string(cls));
  j.set("architectures", arch);
  j.set("model_type", Json::string(c.family));
  j.set("vocab_size", num((double)c.vocab_size));
  if (c.family == "gptj") {
    j.set("n_embd", num((double)c.n_embd)); j.set("n_layer", num((double)c.n_layer)); j.set("n_head", num((double)c.n_head));
    j.set("n_positions", num((double)c.n_positions)); j.set("rotary_dim", num((double)c.rotary_dim));
    j.set("n_inner", num((double)c.intermediate_size)); j.set("activation_function", Json::string(c.hidden_act));
    j.set("layer_norm_epsilon", num(c.layer_norm_eps));
    for (const char* k : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) j.set(k, num(0));
  } else {
    j.set("hidden_size", num((double)c.n_embd)); j.set("num_hidden_layers", num((double)c.n_layer));
    j.set("num_attention_heads", num((double)c.n_head)); j.set("intermediate_size", num((double)c.intermediate_size));
    j.set("max_position_embeddings", num((double)c.n_positions)); j.set("hidden_act", Json::string(c.hidden_act));
    j.set("rope_theta", num(c.rope_theta));
    if (c.family == "llama") {
      j.set("num_key_value_heads", num((double)c.n_kv_head)); j.set("head_dim", num((double)c.head_dim));
      j.set("rms_norm_eps", num(c.layer_norm_eps));
      j.set("attention_bias", Json::boolean(false)); j.set("mlp_bias", Json::boolean(false));
      j.set("attention_dropout", num(0));
    } else {
      j.set("rotary_pct", num((double)c.rotary_dim / (double)c.head_dim));
      j.set("rotary_emb_base", num(c.rope_theta));
      j.set("layer_norm_eps", num(c.layer_norm_eps));
      j.set("use_parallel_residual", Json::boolean(c.parallel_residual));
      j.set("attention_bias", Json::boolean(c.attention_bias));
      j.set("attention_dropout", num(0)); j.set("hidden_dropout", num(0));
    }
    if (!c.rope_scaling.empty()) {
      Json r = Json::object();
      r.set("rope_type", Json::string(c.rope_scaling));
      r.set("factor", num(c.rope_factor));
      if (c.rope_scaling == "llama3") {
        r.set("low_freq_factor", num(c.rope_low_freq_factor)); r.set("high_freq_factor", num(c.rope_high_freq_factor));
        r.set("original_max_position_embeddings", num((double)c.rope_original_max_positions));
      }
      j.set("rope_scaling", r);
    }
  }
  j.set("initializer_range", num(0.02));
  j.set("tie_word_embeddings", Json::boolean(c.tie_word_embeddings));
  if (c.bos_token_id >= 0) j.set("bos_token_id", num((double)c.bos_token_id));
  if (c.eos_token_id >= 0) j.set("eos_token_id", num((double)c.eos_token_id));
  j.set("use_cache", Json::boolean(true));
  j.set("torch_dtype", Json::string("float32"));
  return json_dump(j, 2) + "\n";
}

// ---- checkpoint meta.json ----

void family_to_json(const ModelConfig& c0, Json& m) {
  ModelConfig c = c0;
  family_resolve(c);
  m.set("family", Json::string(c.family));
  if (c.family == "gpt2") return;
  m.set("nKvHead", Json::number((double)c.n_kv_head));
  m.set("headDim", Json::number((double)c.head_dim));
  m.set("intermediateSize", Json::number((double)c.intermediate_size));
  m.set("rotaryDim", Json::number((double)c.rotary_dim));
  m.set("ropeTheta", Json::number(c.rope_theta));
  m.set("ropeScaling", Json::string(c.rope_scaling));
  m.set("ropeFactor", Json::number(c.rope_factor));
  m.set("ropeLowFreqFactor", Json::number(c.rope_low_freq_factor));
  m.set("ropeHighFreqFactor", Json::number(c.rope_high_freq_factor));
  m.set("ropeOriginalMaxPositions", Json::number((double)c.rope_original_max_positions));
  m.set("tieWordEmbeddings", Json::boolean(c.tie_word_embeddings));
  m.set("parallelResidual", Json::boolean(c.parallel_residual));
  m.set("attentionBias", Json::boolean(c.attention_bias));
  m.set("hiddenAct", Json::string(c.hidden_act));
  m.set("bosTokenId", Json::number((double)c.bos_token_id));
  m.set("eosTokenId", Json::number((double)c.eos_token_id));
}

void family_from_json(const Json& m, ModelConfig& c) {
  c.family = jstr(m, "family", "gpt2");  // checkpoints written before families are gpt2
  if (c.family == "gpt2") return;
  c.n_kv_head = (size_t)jnum(m, "nKvHead", 0);
  c.head_dim = (size_t)jnum(m, "headDim", 0);
  c.intermediate_size = (size_t)jnum(m, "intermediateSize", 0);
  c.rotary_dim = (size_t)jnum(m, "rotaryDim", 0);
  c.rope_theta = (float)jnum(m, "ropeTheta", 10000);
  c.rope_scaling = jstr(m, "ropeScaling", "");
  c.rope_factor = (float)jnum(m, "ropeFactor", 1);
  c.rope_low_freq_factor = (float)jnum(m, "ropeLowFreqFactor", 1);
  c.rope_high_freq_factor = (float)jnum(m, "ropeHighFreqFactor", 4);
  c.rope_original_max_positions = (size_t)jnum(m, "ropeOriginalMaxPositions", 8192);
  c.tie_word_embeddings = jbool(m, "tieWordEmbeddings", false);
  c.parallel_residual = jbool(m, "parallelResidual", true);
  c.attention_bias = jbool(m, "attentionBias", true);
  c.hidden_act = jstr(m, "hiddenAct", "gelu_new");
  c.bos_token_id = (int64_t)jnum(m, "bosTokenId", -1);
  c.eos_token_id = (int64_t)jnum(m, "eosTokenId", -1);
}

}  // namespace engine
