// test_formats.cpp — file formats: SHA-256, JSON, safetensors, HF directory round trip, checkpoints (atomic
// commit, corruption and truncation detected, never loaded).
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <thread>
#include <vector>
#include "checkpoint.h"
#include "engine.h"
#include "errors.h"
#include "families.h"
#include "fileio.h"
#include "harness.h"
#include "json.h"
#include "safetensors.h"
#include "zero.h"
#include "zero_checkpoint.h"
#include "sha256.h"

using namespace engine;

static ModelConfig small() {
  ModelConfig c;
  c.n_layer = 1; c.n_head = 2; c.n_embd = 8; c.n_positions = 6; c.vocab_size = 11;
  return c;
}

TEST(sha256_known_vectors) {
  // both implementations (OpenSSL's when libcrypto loads, the portable one), on the FIPS vectors and on odd-sized
  // pieces of one random buffer (the portable one buffers partial blocks)
  std::string rnd(100000, '\0');
  uint32_t x = 12345;
  for (auto& c : rnd) x = x * 1664525u + 1013904223u, c = (char)(x >> 24);
  std::string digests[2];
  for (int portable = 0; portable < 2; portable++) {
    sha256_force_portable(portable == 1);
    Sha256 s;
    sha256_init(s);
    sha256_update(s, "abc", 3);
    CHECK(sha256_hex(s) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_init(s);
    std::string m(1000, 'a');
    for (int i = 0; i < 1000; i++) sha256_update(s, m.data(), 1000);  // 1e6 'a'
    CHECK(sha256_hex(s) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    sha256_init(s);
    for (size_t at = 0, k = 1; at < rnd.size(); at += k, k = k * 7 % 1031 + 1)
      sha256_update(s, rnd.data() + at, std::min(k, rnd.size() - at));
    digests[portable] = sha256_hex(s);
  }
  sha256_force_portable(false);
  CHECK(digests[0] == digests[1]);
  std::printf("    sha256: %s\n", sha256_impl());
}

TEST(json_round_trip_and_errors) {
  Json j = json_parse(R"({"a": [1, 2.5, -3e2], "b": {"c": "x\"\u00e9"}, "d": null, "e": true})", "t");
  CHECK(j.get("a")->arr.size() == 3);
  CHECK(j.get("a")->arr[2].num == -300);
  CHECK(j.get("b")->get("c")->str == "x\"\xc3\xa9");
  Json k = json_parse(json_dump(j), "t2");
  CHECK(json_dump(k) == json_dump(j));
  CHECK_THROWS_CODE(json_parse("{\"a\": }", "bad.json"), IO);
  CHECK_THROWS_CODE(json_parse("{\"a\": 1} x", "bad.json", true), BadCheckpoint);
}

TEST(safetensors_and_hf_round_trip) {
  const std::string dir = "/tmp/engine_tests_hf_" + unique_suffix();
  TrainConfig tc;
  BackendOptions opts;
  Engine a(small(), tc, opts);
  a.export_hf(dir + "/model", "", 50256);
  CHECK(path_exists(dir + "/model/config.json") && path_exists(dir + "/model/generation_config.json"));
  ModelConfig back = hf_read_gpt2_config(dir + "/model");
  CHECK(back.n_layer == 1 && back.n_embd == 8 && back.vocab_size == 11 && back.n_positions == 6);
  Engine b(small(), tc, opts, dir + "/model");
  std::vector<float> pa(a.backend().layout().total), pb(pa.size());
  a.backend().get_params(pa.data());
  b.backend().get_params(pb.data());
  CHECK(std::memcmp(pa.data(), pb.data(), pa.size() * 4) == 0);
  // the header names every tensor with its HF name and Conv1D shape
  SafeTensorsReader r(dir + "/model/model.safetensors");
  const StTensorInfo* t = r.find("transformer.h.0.attn.c_attn.weight");
  CHECK(t && t->shape.size() == 2 && t->shape[0] == 8 && t->shape[1] == 24);
  CHECK(r.find("lm_head.weight") == nullptr);  // tied
  // truncated file: detected from the header, not by reading garbage
  std::string bytes = read_text_file(dir + "/model/model.safetensors");
  write_file_atomic(dir + "/model/model.safetensors", bytes.substr(0, bytes.size() - 10));
  CHECK_THROWS_CODE(SafeTensorsReader(dir + "/model/model.safetensors"), BadCheckpoint);
  remove_tree(dir);
}

TEST(checkpoint_commit_verify_and_corruption) {
  const std::string root = "/tmp/engine_tests_ckpt_" + unique_suffix();
  TrainConfig tc;
  BackendOptions opts;
  Engine a(small(), tc, opts);
  CheckpointInfo info = a.save_checkpoint(root + "/step-00000000", "{\"note\": 1}");
  CHECK(info.sha256.size() == 64 && !info.existed);
  CHECK(checkpoint_verify(root + "/step-00000000") == 0);
  // saving the same step again: first commit wins, nothing rewritten
  CheckpointInfo again = a.save_checkpoint(root + "/step-00000000", "{}");
  CHECK(again.existed && again.sha256 == info.sha256);
  const std::string d = root + "/step-00000000";
  // state.bin is streamed in blocks: blocks that split records (and the header's neighbours) load the same state
  {
    const ParamLayout& l = a.backend().layout();
    std::vector<float> p(l.total), m(l.total), v(l.total);
    a.backend().get_params(p.data());
    a.backend().get_optimizer_state(m.data(), v.data());
    for (size_t blk : {(size_t)0, (size_t)4096, (size_t)100}) {  // the corruption checks below run with 100
      sharded_checkpoint_set_read_block(blk);
      CheckpointState st = checkpoint_load(d);
      CHECK(st.params == p && st.m == m && st.v == v && st.step == 0);
      CHECK(checkpoint_verify(d) == 0);
    }
  }
  const std::string good = read_text_file(d + "/state.bin");
  // one flipped bit in the weights
  std::string bad = good;
  bad[bad.size() / 2] ^= 1;
  write_file_atomic(d + "/state.bin", bad);
  CHECK_THROWS_CODE(checkpoint_load(d), BadCheckpoint);
  // truncated (partial write)
  write_file_atomic(d + "/state.bin", good.substr(0, good.size() - 64));
  CHECK_THROWS_CODE(checkpoint_verify(d), BadCheckpoint);
  // header lies about the size
  write_file_atomic(d + "/state.bin", good + std::string(64, '\0'));
  CHECK_THROWS_CODE(checkpoint_verify(d), BadCheckpoint);
  write_file_atomic(d + "/state.bin", good);
  CHECK(checkpoint_verify(d) == 0);
  // meta.json edited
  std::string meta = read_text_file(d + "/meta.json");
  write_file_atomic(d + "/meta.json", meta + " ");
  CHECK_THROWS_CODE(checkpoint_verify(d), BadCheckpoint);
  write_file_atomic(d + "/meta.json", meta);
  // not committed: no DONE
  std::remove((d + "/DONE").c_str());
  CHECK_THROWS_CODE(checkpoint_load(d), BadCheckpoint);
  // an uncommitted directory is replaced by the next save of that step
  CheckpointInfo re = a.save_checkpoint(d, "{}");
  CHECK(!re.existed && checkpoint_verify(d) == 0);
  // no temp dirs left behind
  CHECK(read_text_file(d + "/DONE").find("state.bin") != std::string::npos);
  sharded_checkpoint_set_read_block(0);
  remove_tree(root);
}

// Two attempts committing the same step at the same moment (a stale attempt that has not yet heard it was
// replaced): both saves succeed, exactly one publishes, the other adopts it, and nothing is left half-written.
TEST(checkpoint_concurrent_commits_of_one_step) {
  const std::string root = "/tmp/engine_tests_race_" + unique_suffix();
  TrainConfig tc;
  BackendOptions opts;
  Engine a(small(), tc, opts), b(small(), tc, opts);
  for (int i = 0; i < 24; i++) {
    const std::string d = root + strfmt("/step-%08d", i);
    CheckpointInfo ia, ib;
    std::exception_ptr ea, eb;
    std::thread ta([&] { try { ia = a.save_checkpoint(d, "{}"); } catch (...) { ea = std::current_exception(); } });
    std::thread tb([&] { try { ib = b.save_checkpoint(d, "{}"); } catch (...) { eb = std::current_exception(); } });
    ta.join();
    tb.join();
    if (ea) std::rethrow_exception(ea);
    if (eb) std::rethrow_exception(eb);
    CHECK(ia.existed != ib.existed);           // one published, the other found it
    CHECK(ia.sha256 == ib.sha256);             // same state, same bytes
    CHECK(checkpoint_verify(d) == 0);
  }
  // a directory left by an older engine that crashed between its rename and its DONE is moved aside
  const std::string stale = root + "/step-00000099";
  make_dirs(stale);
  write_file_atomic(stale + "/state.bin", "partial");
  CHECK(!a.save_checkpoint(stale, "{}").existed && checkpoint_verify(stale) == 0);
  // only step directories remain: no staging or stale leftovers
  DIR* dir = opendir(root.c_str());
  int entries = 0;
  for (dirent* e; (e = readdir(dir)) != nullptr;) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    CHECK(n.rfind("step-", 0) == 0);
    entries++;
  }
  closedir(dir);
  CHECK(entries == 25);
  remove_tree(root);
}

// Export straight from checkpoint files (no backend): the same bytes as the engine's export of that state, from a
// single-file and from a sharded (ZeRO, 3 ranks) checkpoint; a corrupt checkpoint is refused, nothing written.
// config.json holds the tokenizer's bos/eos (not GPT-2's 50256) and fp32 settings as Hugging Face writes them
// (1e-05, not 9.9999997473787516e-06); any double is written in its shortest round-trip form.
TEST(hf_export_tokenizer_ids_and_clean_floats) {
  CHECK(json_dump(Json::number(0.1)) == "0.1");
  CHECK(json_dump(Json::number(1e-5)) == "1e-05");
  CHECK(json_dump(Json::number(float_decimal(1e-5f))) == "1e-05");
  CHECK(json_dump(Json::number(float_decimal(1e-6f))) == "1e-06");
  CHECK(json_dump(Json::number(float_decimal(500000.0f))) == "500000");
  CHECK(json_dump(Json::number(float_decimal(0.02))) == "0.02");  // not a float: unchanged
  CHECK(json_parse(json_dump(Json::number(0.1 + 0.2)), "x").num == 0.1 + 0.2);
  const std::string dir = "/tmp/engine_tests_ids_" + unique_suffix();
  TrainConfig tc;
  BackendOptions opts;
  Engine a(small(), tc, opts);
  a.export_hf(dir + "/with-bos", "", 7, 3);
  const std::string c1 = read_text_file(dir + "/with-bos/config.json");
  CHECK(c1.find("\"bos_token_id\": 3,") != std::string::npos && c1.find("\"eos_token_id\": 7,") != std::string::npos);
  CHECK(c1.find("\"layer_norm_epsilon\": 1e-05,") != std::string::npos);
  CHECK(c1.find("50256") == std::string::npos);
  const std::string g1 = read_text_file(dir + "/with-bos/generation_config.json");
  CHECK(g1.find("\"bos_token_id\": 3") != std::string::npos && g1.find("\"eos_token_id\": 7") != std::string::npos);
  a.export_hf(dir + "/no-bos", "", 9);  // a tokenizer without BOS: GPT-2's convention, bos = eos
  const std::string c2 = read_text_file(dir + "/no-bos/config.json");
  CHECK(c2.find("\"bos_token_id\": 9,") != std::string::npos && c2.find("\"eos_token_id\": 9,") != std::string::npos);
  remove_tree(dir);
}

TEST(export_from_checkpoint_files_equals_engine_export) {
  const std::string root = "/tmp/engine_tests_export_" + unique_suffix();
  TrainConfig tc;
  BackendOptions opts;
  Engine a(small(), tc, opts);
  const std::string single = root + "/step-00000000";
  a.save_checkpoint(single, "{}");
  a.export_hf(root + "/engine", "", 50256);
  CheckpointState st = checkpoint_load(single);
  const ParamLayout lay = param_layout(st.model);
  std::vector<RankShard> shards;
  for (int r = 0; r < 3; r++) {
    ShardRange g = zero_shard(lay.total, {r, 3, 0});
    shards.push_back({g, st.params.data() + g.begin, st.m.data() + g.begin, st.v.data() + g.begin});
  }
  const std::string sharded = root + "/sharded/step-00000000";
  sharded_checkpoint_save(sharded, st, shards);
  const std::string want = read_text_file(root + "/engine/model.safetensors");
  for (const std::string& ck : {single, sharded}) {
    const std::string out = root + "/from-" + base_name(parent_dir(ck));
    export_checkpoint_hf(ck, out, "", -1);  // -1: the model's eos, GPT-2's 50256 here
    CHECK(read_text_file(out + "/model.safetensors") == want);
    CHECK(read_text_file(out + "/config.json") == read_text_file(root + "/engine/config.json"));
    CHECK(read_text_file(out + "/generation_config.json") == read_text_file(root + "/engine/generation_config.json"));
  }
  std::string bin = read_text_file(single + "/state.bin");
  bin[bin.size() / 3] ^= 1;
  write_file_atomic(single + "/state.bin", bin);
  CHECK_THROWS_CODE(export_checkpoint_hf(single, root + "/bad", "", -1), BadCheckpoint);
  CHECK(!path_exists(root + "/bad/model.safetensors"));
  remove_tree(root);
}

// The layout of checkpoints on the Hugging Face hub (openai-community/gpt2): GPT2Model keys without the
// "transformer." prefix, the causal-mask buffers h.N.attn.bias, a redundant lm_head.weight, and large models split
// over several files listed by model.safetensors.index.json.
TEST(hf_import_hub_layout_and_sharded_index) {
  const std::string dir = "/tmp/engine_tests_hub_" + unique_suffix();
  make_dirs(dir);
  TrainConfig tc;
  BackendOptions opts;
  Engine a(small(), tc, opts);
  const ParamLayout& l = a.backend().layout();
  std::vector<float> p(l.total);
  a.backend().get_params(p.data());
  write_file_atomic(dir + "/config.json", hf_gpt2_config_json(small()));
  std::vector<float> mask(36, 1.0f);
  std::vector<StTensorOut> part1, part2;
  for (size_t i = 0; i < l.tensors.size(); i++) {
    const auto& t = l.tensors[i];
    StTensorOut o{t.name.substr(std::string("transformer.").size()), t.shape, p.data() + t.offset};
    (i < l.tensors.size() / 2 ? part1 : part2).push_back(o);
  }
  part1.push_back({"h.0.attn.bias", {1, 1, 6, 6}, mask.data()});
  part2.push_back({"lm_head.weight", l.tensors[0].shape, p.data()});
  safetensors_write(dir + "/model-00001-of-00002.safetensors", part1);
  safetensors_write(dir + "/model-00002-of-00002.safetensors", part2);
  Json idx = Json::object(), wm = Json::object();
  for (const auto& o : part1) wm.set(o.name, Json::string("model-00001-of-00002.safetensors"));
  for (const auto& o : part2) wm.set(o.name, Json::string("model-00002-of-00002.safetensors"));
  idx.set("weight_map", wm);
  write_file_atomic(dir + "/model.safetensors.index.json", json_dump(idx));
  Engine b(small(), tc, opts, dir);
  std::vector<float> q(l.total);
  b.backend().get_params(q.data());
  CHECK(std::memcmp(p.data(), q.data(), p.size() * 4) == 0);
  // a shard missing from the directory is an IO error naming it; a tensor missing from all shards is reported
  std::remove((dir + "/model-00002-of-00002.safetensors").c_str());
  CHECK_THROWS_CODE(Engine(small(), tc, opts, dir), IO);
  safetensors_write(dir + "/model-00002-of-00002.safetensors", std::vector<StTensorOut>(part2.begin() + 1, part2.end()));
  CHECK_THROWS_CODE(Engine(small(), tc, opts, dir), BadCheckpoint);
  remove_tree(dir);
}
