// safetensors.h — Hugging Face safetensors files (8-byte little-endian header length, JSON header, raw data)
// and GPT-2 model directories (config.json + model.safetensors[.index.json]) in and out of our flat fp32
// parameter layout. Spec: https://github.com/huggingface/safetensors#format
#pragma once
#include <cstddef>
#include <string>
#include <vector>
#include "config.h"
#include "params.h"

namespace engine {

struct StTensorInfo {
  std::string name, dtype;    // dtype "F32" | "F16" | "BF16" (others rejected on read)
  std::vector<size_t> shape;
  size_t begin = 0, end = 0;  // byte range inside the data section
};

// A read-only memory map of one .safetensors file, header validated against the file size.
class SafeTensorsReader {
 public:
  explicit SafeTensorsReader(const std::string& path);
  ~SafeTensorsReader();
  SafeTensorsReader(const SafeTensorsReader&) = delete;
  SafeTensorsReader& operator=(const SafeTensorsReader&) = delete;
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }
  const StTensorInfo* find(const std::string& name) const;
  // Converts to fp32 into dst (numel elements, checked against the shape).
  void read_f32(const StTensorInfo& t, float* dst, size_t numel) const;
  const std::string& path() const { return path_; }
 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0, data_start_ = 0;
  std::vector<StTensorInfo> tensors_;
};

struct StTensorOut {
  std::string name;
  std::vector<size_t> shape;
  const float* data;  // fp32, numel = prod(shape)
};
// Writes an F32 safetensors file (metadata {"format": "pt"}, which transformers expects).
void safetensors_write(const std::string& path, const std::vector<StTensorOut>& tensors);

// GPT-2 config.json <-> ModelConfig. Rejects non-GPT-2 configs and options we do not implement, naming them.
ModelConfig hf_read_gpt2_config(const std::string& dir);
std::string hf_gpt2_config_json(const ModelConfig& c);

// Loads every tensor of `layout` from a HF directory (names with or without the "transformer." prefix; the
// attention-mask buffers and the tied lm_head.weight are skipped). Missing or mis-shaped tensors are errors.
void hf_load_weights(const std::string& dir, const ParamLayout& layout, float* params);

// Writes a HF directory atomically (temp dir + rename): config.json, model.safetensors, generation_config.json
// and, when tokenizer_json is not empty, a copy of it as tokenizer.json. eos_id/bos_id are the tokenizer's (written
// to config.json and generation_config.json); eos_id < 0 keeps the model's, bos_id < 0 (a tokenizer that adds no
// BOS) keeps the model's bos, else uses the EOS (GPT-2's convention).
void hf_export(const std::string& dir, const ModelConfig& c, const ParamLayout& layout, const float* params,
               const std::string& tokenizer_json, int eos_id, int bos_id = -1);

}  // namespace engine
