// families.h — the model families beyond GPT-2 (Llama, GPT-NeoX/Pythia, GPT-J): Hugging Face config.json parsing
// and writing, the parameter table of each family (HF names and shapes, nn.Linear (out, in) layout), random
// init, and the family fields of checkpoint metadata. This is the ONE place HF config names map to ModelConfig
// (and, through the binding, to FinetuneConfig.model's camelCase names).
//
// Family is read from config.json's model_type; anything the engine does not implement (a model_type, an
// activation, rope_scaling type, biases Llama does not have...) is refused with BadConfig naming the config field,
// before any weight is read.
#pragma once
#include <string>
#include "config.h"
#include "json.h"
#include "params.h"

namespace engine {

// Fills the derived fields (n_kv_head, head_dim, intermediate_size, rotary_dim defaults) and validates the
// family-specific ones; throws BadConfig naming the field. Called by create_backend for every config.
void family_resolve(ModelConfig& c);

// The parameter table of c.family (gpt2 -> gpt2_param_layout).
ParamLayout param_layout(const ModelConfig& c);
// Random init of c.family, deterministic in c.init_seed (gpt2 -> gpt2_init_params; others: HF _init_weights:
// N(0, 0.02) matrices and embeddings, zero biases, unit norm gains).
void init_params(const ModelConfig& c, const ParamLayout& layout, float* params);

// config.json of any supported family -> ModelConfig (family from model_type); and back. hf_read_config also
// checks that the directory holds safetensors weights (IO error otherwise), before anything is allocated.
ModelConfig hf_read_config(const std::string& dir);
ModelConfig hf_read_config_only(const std::string& dir);
std::string hf_config_json(const ModelConfig& c);

// Family fields of a ModelConfig in checkpoint meta.json ("model" section, camelCase), and back.
void family_to_json(const ModelConfig& c, Json& model);
void family_from_json(const Json& model, ModelConfig& c);

// The per-block tensors of a family, as indices into ParamLayout::tensors (-1 = absent).
struct FamilyBlock {
  int norm1_w = -1, norm1_b = -1, norm2_w = -1, norm2_b = -1;
  int qkv_w = -1, qkv_b = -1;  // fused projections: gpt_neox query_key_value (per head [q, k, v]), gpt2 c_attn ([q | k | v])
  int q_w = -1, k_w = -1, v_w = -1;                  // llama / gptj separate projections
  int o_w = -1, o_b = -1;
  int fc_w = -1, fc_b = -1, up_w = -1, proj_w = -1, proj_b = -1;  // llama: fc = gate_proj, up = up_proj, proj = down
};
struct FamilyTensors {
  int embed = -1, pos = -1, final_w = -1, final_b = -1, head_w = -1, head_b = -1;  // head_w -1: tied to embed;
                                                                                    // pos: learned positions (gpt2)
  std::vector<FamilyBlock> blocks;
};
FamilyTensors family_tensors(const ModelConfig& c, const ParamLayout& layout);

// The dimensions a backend works with, for every family (GPT-2's config carries no derived fields): layers L,
// width C, query heads NH, key/value heads KVH, head size HD, QD = NH*HD, KD = KVH*HD, MLP width I. c resolved.
struct ModelDims {
  size_t L, C, NH, KVH, HD, QD, KD, I;
};
ModelDims model_dims(const ModelConfig& c);

}  // namespace engine
