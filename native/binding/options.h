// options.h — JS values -> plain engine structs, on the JS thread (the "baton": the pool thread only ever sees
// these structs). Options arrive validated by zod; this re-checks what the engine relies on and REJECTS bad
// values with a TypeError naming the field, never skipping them.
#pragma once
#include <napi.h>
#include <string>
#include <vector>
#include "config.h"
#include "dataloader.h"
#include "engine.h"

namespace addon {

struct CreateOptions {
  engine::ModelConfig model;
  engine::TrainConfig train;
  engine::BackendOptions backend;
  std::string hf_dir;          // init from a HF directory when set
  std::string checkpoint_dir;  // resume from a checkpoint when set
  std::string config_json;     // FinetuneConfig as JSON, stored in checkpoints
};

CreateOptions read_create_options(Napi::Env env, Napi::Value v);
std::vector<engine::ShardView> read_shards(Napi::Env env, Napi::Value v, std::vector<Napi::ObjectReference>& refs);
std::vector<std::vector<int32_t>> read_prompts(Napi::Env env, Napi::Value v);
engine::GenerateOptions read_generate_options(Napi::Env env, Napi::Value v);
size_t get_count(Napi::Env env, Napi::Value v, const char* name, size_t min);
std::string get_string(Napi::Env env, Napi::Value v, const char* name);
std::vector<int32_t> read_int32(Napi::Env env, Napi::Value v, const char* name);

}  // namespace addon
