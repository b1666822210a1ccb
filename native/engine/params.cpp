// params.cpp — builds the GPT-2 parameter table (see params.h) and the ZeRO shard offsets.
#include "params.h"
#include "errors.h"

namespace engine {

const ParamTensor* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const ParamTensor& ParamLayout::at(const std::string& name) const {
  const ParamTensor* t = find(name);
  ENGINE_CHECK(t != nullptr, Internal, "", "no parameter named '%s'", name.c_str());
  return *t;
}

void ParamLayout::add(const std::string& name, std::vector<size_t> shape) {
  ParamTensor t;
  t.name = name;
  t.numel = 1;
  for (size_t d : shape) t.numel *= d;
  t.shape = std::move(shape);
  t.offset = total;
  t.decay = t.shape.size() >= 2;
  total += t.numel;
  tensors.push_back(std::move(t));
}

ParamLayout gpt2_param_layout(const ModelConfig& c) {
  const size_t C = c.n_embd, V = c.vocab_size, maxT = c.n_positions;
  ParamLayout l;
  auto add = [&](const std::string& name, std::vector<size_t> shape) { l.add(name, std::move(shape)); };
  add("transformer.wte.weight", {V, C});     // token embedding, also the LM head (tied)
  add("transformer.wpe.weight", {maxT, C});  // learned positions
  for (size_t i = 0; i < c.n_layer; i++) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    add(p + "ln_1.weight", {C});
    add(p + "ln_1.bias", {C});
    add(p + "attn.c_attn.weight", {C, 3 * C});  // Conv1D: (in, out), y = x @ W + b; out = [q | k | v]
    add(p + "attn.c_attn.bias", {3 * C});
    add(p + "attn.c_proj.weight", {C, C});
    add(p + "attn.c_proj.bias", {C});
    add(p + "ln_2.weight", {C});
    add(p + "ln_2.bias", {C});
    add(p + "mlp.c_fc.weight", {C, 4 * C});
    add(p + "mlp.c_fc.bias", {4 * C});
    add(p + "mlp.c_proj.weight", {4 * C, C});
    add(p + "mlp.c_proj.bias", {C});
  }
  add("transformer.ln_f.weight", {C});
  add("transformer.ln_f.bias", {C});
  return l;
}

ShardRange shard_range(size_t total, int world_size, int rank, size_t align) {
  ENGINE_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, BadConfig, "",
               "rank %d out of range for world size %d", rank, world_size);
  size_t per = (total + world_size - 1) / world_size;
  per = (per + align - 1) / align * align;
  ShardRange r;
  r.begin = std::min(total, per * (size_t)rank);
  r.end = std::min(total, r.begin + per);
  return r;
}

}  // namespace engine
