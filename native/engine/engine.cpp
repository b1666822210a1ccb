// engine.cpp — the backend-independent training loop, evaluation, generation and checkpoint glue (engine.h).
#include "engine.h"
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <random>
#include "errors.h"
#include "families.h"
#include "fileio.h"
#include "lr_schedule.h"
#include "safetensors.h"
#include "zero_checkpoint.h"  // sharded (ZeRO) checkpoints

namespace engine {

static double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Engine::Engine(const ModelConfig& model, const TrainConfig& train, const BackendOptions& opts, const std::string& hf_dir)
    : train_(train) {
  ModelConfig cfg = model;
  if (!hf_dir.empty()) {
    ModelConfig hf = hf_read_config(hf_dir);  // any supported family
    hf.dropout = model.dropout;
    hf.init_seed = model.init_seed;
    cfg = hf;
  }
  backend_ = create_backend(cfg, opts);
  const ParamLayout& layout = backend_->layout();
  std::vector<float> params(layout.total);
  if (hf_dir.empty()) init_params(backend_->config(), layout, params.data());
  else hf_load_weights(hf_dir, layout, params.data());
  backend_->set_params(params.data());
  std::vector<float> zeros(layout.total, 0.0f);
  backend_->set_optimizer_state(zeros.data(), zeros.data());
  rng_seed(rng_, cfg.init_seed ^ 0x5DEECE66Dull);
  pending_cursor_.shuffle_seed = train.shuffle_seed;
  loader_.cursor = pending_cursor_;
}

std::unique_ptr<Engine> Engine::from_checkpoint(const std::string& dir, const TrainConfig& train,
                                                const BackendOptions& opts) {
  std::unique_ptr<Engine> e(new Engine());
  e->train_ = train;
  e->backend_ = create_backend(checkpoint_model(dir), opts);
  // A backend that keeps the fp32 state in host memory (CPU; offload on one GPU) has the checkpoint streamed
  // straight into it: no second copy of 12 bytes per parameter on the host.
  Backend::HostState hs = e->backend_->host_state();
  CheckpointState st;
  if (hs.params && !is_sharded_checkpoint(dir)) {
    float* const into[3] = {hs.params, hs.m, hs.v};
    st = checkpoint_load_into(dir, into);
    e->backend_->host_state_written();
  } else {
    st = checkpoint_load(dir);
    e->backend_->set_params(st.params.data());
    st.params = {};
    e->backend_->set_optimizer_state(st.m.data(), st.v.data());
  }
  e->step_ = st.step;
  e->rng_ = st.rng;
  e->pending_cursor_ = st.cursor;  // the data order continues with the checkpoint's shuffle seed
  e->loader_.cursor = st.cursor;
  e->data_sig_ = st.data;
  e->resume_sig_ = st.data;
  e->config_json_ = st.config_json;
  return e;
}

void Engine::set_train_data(std::vector<ShardView> shards) {
  ENGINE_CHECK(!shards.empty() && shards[0].block_size <= model().n_positions, BadShape,
               "preprocess.blockSize must be <= model.nPositions", "train shards with block size %zu, nPositions %zu",
               shards.empty() ? 0 : shards[0].block_size, model().n_positions);
  ENGINE_CHECK(!shards[0].position_ids || backend_->supports_packed(), BadConfig,
               "train packed data on the cpu backend, or prepare with preprocess.pad true",
               "the shards are packed (several examples per sequence, position_ids) and the %s backend cannot keep "
               "its attention within each example", backend_->info().name.c_str());
  const DataSignature sig = data_signature(shards);
  ENGINE_CHECK(resume_sig_.empty() || sig == resume_sig_, BadCheckpoint,
               "resume with the train shards the checkpoint was trained on (same prepared data fingerprint)",
               "train data differs from the checkpoint's: %llu shards / %llu sequences / block %llu / hash %016llx, "
               "checkpoint has %llu / %llu / %llu / %016llx",
               (unsigned long long)sig.n_shards, (unsigned long long)sig.n_seq, (unsigned long long)sig.block_size,
               (unsigned long long)sig.hash, (unsigned long long)resume_sig_.n_shards,
               (unsigned long long)resume_sig_.n_seq, (unsigned long long)resume_sig_.block_size,
               (unsigned long long)resume_sig_.hash);
  // Keep the position when the data is handed over again (e.g. a second call with the same shards).
  DataCursor c = loader_.shards.empty() ? pending_cursor_ : loader_.cursor;
  dataloader_init(loader_, std::move(shards), c);
  data_sig_ = sig;
  resume_sig_ = DataSignature();  // checked once, against the data the resumed run continues on
}

TrainResult Engine::train(size_t n_steps, size_t total_steps, const std::atomic<bool>* abort,
                          const std::function<void(const TrainProgress&)>& progress) {
  ENGINE_CHECK(!loader_.shards.empty(), BadConfig, "call setTrainData() before train()", "no train data");
  const size_t B = train_.micro_batch_size, T = loader_.T, A = train_.grad_accum_steps;
  ENGINE_CHECK(B >= 1 && A >= 1, BadConfig, "", "microBatchSize %zu, gradAccumSteps %zu", B, A);
  inputs_.resize(A * B * T);
  targets_.resize(A * B * T);
  const bool packed = dataloader_packed(loader_);
  positions_.resize(packed ? A * B * T : 0);
  TrainResult res;
  const double t0 = now_ms();
  for (size_t s = 0; s < n_steps; s++) {
    if (abort && abort->load()) { res.aborted = true; break; }
    const double ts = now_ms();
    const DataCursor before = loader_.cursor;
    const Rng rng_before = rng_;
    // Fetch the step's micro-batches first: the loss is averaged over all their targets (see engine.h).
    size_t n_targets = 0;
    for (size_t a = 0; a < A; a++) {
      int32_t* in = inputs_.data() + a * B * T;
      int32_t* tg = targets_.data() + a * B * T;
      dataloader_next_batch(loader_, B, in, tg, packed ? positions_.data() + a * B * T : nullptr);
      for (size_t i = 0; i < B * T; i++) n_targets += tg[i] != IGNORE_INDEX;
    }
    if (n_targets == 0) {
      loader_.cursor = before;
      ENGINE_THROW(BadShape,
                   "every label of these sequences is -100: data prepared before zero-loss examples were dropped; "
                   "re-run prepare (it drops examples whose answer preprocess.blockSize cuts off) or raise preprocess.blockSize",
                   "step %llu: its %zu x %zu sequences have no unmasked labels", (unsigned long long)step_, A, B);
    }
    try {
      AdamWHyper hp;
      hp.lr = lr_at(train_, step_, total_steps);
      hp.beta1 = train_.beta1;
      hp.beta2 = train_.beta2;
      hp.eps = train_.eps;
      hp.weight_decay = train_.weight_decay;
      hp.t = (long)step_ + 1;
      batches_.clear();
      for (size_t a = 0; a < A; a++) {
        batches_.push_back(Batch{inputs_.data() + a * B * T, targets_.data() + a * B * T, B, T});
        if (packed) batches_.back().positions = positions_.data() + a * B * T;
        if (model().dropout > 0) batches_.back().dropout_seed = rng_u64(rng_);  // RNG is checkpointed: exact resume
      }
      const float dloss = 1.0f / (float)n_targets;
      backend_->step_async(batches_.data(), A, dloss, hp, train_.grad_clip, train_.divergence_loss);
      const StepOutput out = backend_->step_wait();
      const double loss = out.loss_sum / (double)n_targets;
      const double norm = std::sqrt(out.grad_norm_sq);
      if (!out.applied) {  // the weights were not touched: state stays at the last completed step
        throw EngineError(ErrorCode::NonFiniteLoss,
                          strfmt("step %llu: loss %g, grad norm %g (divergence threshold %g)",
                                 (unsigned long long)step_ + 1, loss, norm, (double)train_.divergence_loss),
                          ENGINE_FILE_, __LINE__, "lower training.learningRate or raise warmupSteps; resume from the last checkpoint", (long)step_);
      }
      step_++;
      res.losses.push_back((float)loss);
      res.tokens += A * B * T;
      TrainProgress p;
      p.step = step_;
      p.loss = (float)loss;
      p.lr = hp.lr;
      p.grad_norm = (float)norm;
      const double te = now_ms();
      p.elapsed_ms = te - t0;
      p.tokens_per_sec = (double)(A * B * T) / std::max(1e-9, (te - ts) / 1000.0);
      if (progress) progress(p);
    } catch (...) {
      loader_.cursor = before;  // the failed step did not happen: state stays at the last completed step
      rng_ = rng_before;
      throw;
    }
  }
  res.step = step_;
  const double el = (now_ms() - t0) / 1000.0;
  res.tokens_per_sec = el > 0 ? (double)res.tokens / el : 0;
  return res;
}

EvalResult Engine::evaluate(const std::vector<ShardView>& shards, size_t max_batches, size_t batch_size,
                            const std::atomic<bool>* abort) {
  ENGINE_CHECK(!shards.empty(), BadShape, "pass the validation shards", "no evaluation shards");
  ENGINE_CHECK(batch_size >= 1, BadConfig, "", "evaluation.batchSize = %zu", batch_size);
  const size_t T = shards[0].block_size;
  for (const auto& s : shards)
    ENGINE_CHECK(s.block_size == T && T <= model().n_positions, BadShape, "", "shard block size %zu (first %zu, nPositions %zu)",
                 s.block_size, T, model().n_positions);
  size_t total_seq = 0;
  for (const auto& s : shards) total_seq += s.n_seq;
  batch_size = std::min(batch_size, total_seq);  // a batch is never larger than the data
  const bool packed = shards[0].position_ids != nullptr;
  for (size_t i = 0; i < shards.size(); i++) {
    ENGINE_CHECK((shards[i].position_ids != nullptr) == packed, BadShape, "all shards of a split are packed or none are",
                 "evaluation shard %zu %s position ids", i, packed ? "has no" : "has");
    if (packed) check_position_ids(shards[i], i);
  }
  ENGINE_CHECK(!packed || backend_->supports_packed(), BadConfig,
               "evaluate packed data on the cpu backend, or prepare with preprocess.pad true",
               "the evaluation shards are packed and the %s backend cannot keep its attention within each example",
               backend_->info().name.c_str());
  std::vector<int32_t> in(batch_size * T), tg(batch_size * T), pos(packed ? batch_size * T : 0);
  EvalStats tot;
  EvalResult r;
  size_t batches = 0, filled = 0;
  auto flush = [&] {
    if (!filled) return;
    Batch batch{in.data(), tg.data(), filled, T};
    if (packed) batch.positions = pos.data();
    EvalStats s = backend_->forward_eval(batch);
    tot.loss_sum += s.loss_sum;
    tot.n_targets += s.n_targets;
    tot.n_correct += s.n_correct;
    r.sequences += filled;
    filled = 0;
    batches++;
  };
  for (const auto& s : shards) {
    for (size_t i = 0; i < s.n_seq; i++) {
      if (max_batches && batches >= max_batches) break;
      if (abort && abort->load()) { r.aborted = true; break; }
      std::memcpy(in.data() + filled * T, s.input_ids + i * T, T * sizeof(int32_t));
      shift_labels(s.labels + i * T, T, tg.data() + filled * T);
      if (packed) std::memcpy(pos.data() + filled * T, s.position_ids + i * T, T * sizeof(int32_t));
      if (++filled == batch_size) flush();
    }
  }
  if (!r.aborted && (!max_batches || batches < max_batches)) flush();
  r.tokens = tot.n_targets;
  r.loss = tot.n_targets ? tot.loss_sum / (double)tot.n_targets : NAN;
  r.perplexity = std::exp(r.loss);
  r.accuracy = tot.n_targets ? (double)tot.n_correct / (double)tot.n_targets : NAN;
  return r;
}

std::vector<std::vector<int32_t>> Engine::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                   const GenerateOptions& o) {
  const size_t n = prompts.size(), V = model().vocab_size, maxT = model().n_positions;
  std::vector<std::vector<int32_t>> out(n);
  if (n == 0) return out;
  size_t max_len = 1;
  for (size_t i = 0; i < n; i++) {
    size_t len = std::max<size_t>(1, prompts[i].size());
    ENGINE_CHECK(len < maxT, BadShape, "shorten the prompt", "prompt %zu has %zu tokens; the model's context is %zu",
                 i, len, maxT);
    max_len = std::max(max_len, std::min(maxT, len + o.max_new_tokens));
  }
  if (o.max_new_tokens == 0) return out;
  backend_->kv_begin(n, max_len);
  std::vector<Rng> rngs(n);
  for (size_t i = 0; i < n; i++) rng_seed(rngs[i], o.seed * 0x9E3779B97F4A7C15ull + i);  // per prompt: batch-independent
  std::vector<float> logits(n * V);
  std::vector<size_t> active, len(n);
  std::vector<int32_t> last(n);
  try {
    for (size_t i = 0; i < n; i++) {
      std::vector<int32_t> p = prompts[i];
      // an empty prompt starts from the model's BOS (Llama's <s>), else GPT-2's <|endoftext|>
      if (p.empty()) p.push_back(model().bos_token_id >= 0 && model().family != "gpt2" ? (int32_t)model().bos_token_id
                                 : o.eos_id >= 0 ? o.eos_id : 0);
      backend_->kv_prefill(i, p.data(), p.size(), logits.data());
      last[i] = sample_token(logits.data(), V, o.sample, rngs[i]);
      out[i].push_back(last[i]);
      len[i] = p.size();  // tokens in the cache; the sampled token enters it at the next decode
      if (last[i] != o.eos_id && out[i].size() < o.max_new_tokens && len[i] < max_len) active.push_back(i);
    }
    while (!active.empty()) {
      // every active sequence appends its last sampled token and samples the next one
      std::vector<size_t> slots = active;
      std::vector<int32_t> toks;
      for (size_t i : active) toks.push_back(last[i]);
      backend_->kv_decode(slots.data(), toks.data(), slots.size(), logits.data());
      std::vector<size_t> next;
      for (size_t k = 0; k < slots.size(); k++) {
        size_t i = slots[k];
        last[i] = sample_token(logits.data() + k * V, V, o.sample, rngs[i]);
        out[i].push_back(last[i]);
        len[i]++;
        if (last[i] != o.eos_id && out[i].size() < o.max_new_tokens && len[i] < max_len) next.push_back(i);
      }
      active.swap(next);
    }
  } catch (...) {
    backend_->kv_end();
    throw;
  }
  backend_->kv_end();
  return out;
}

// ZeRO across processes (every process calls this): each writes its ranks' files into one staging folder named
// from a token global rank 0 draws, a barrier, rank 0's process commits (manifest, rename, DONE), a barrier. A
// failure on any process fails the checkpoint on every process (nothing is committed before all files exist).
static CheckpointInfo save_sharded_group(Backend& b, const std::string& dir, const CheckpointState& st,
                                         const std::vector<LocalShard>& shards) {
  const int world = shards[0].world_size;
  std::random_device rd;
  const uint64_t token = b.group_u64(((uint64_t)rd() << 32) ^ rd() ^ (st.step * 0x9E3779B97F4A7C15ull), false);
  const std::string staging = sharded_checkpoint_staging(dir, token);
  std::exception_ptr mine;
  try {
    make_dirs(parent_dir(dir));
    std::vector<std::pair<int, RankShard>> parts;
    for (const LocalShard& s : shards) parts.push_back({s.rank, {s.range, s.params.data(), s.m.data(), s.v.data()}});
    sharded_checkpoint_write_ranks(staging, st, world, parts);
  } catch (...) { mine = std::current_exception(); }
  const char* hint = "see the failing process's error; training can resume from the last committed checkpoint";
  if (b.group_u64(mine ? 1 : 0, true) != 0) {  // barrier: every rank's file is written, or someone failed
    if (mine) std::rethrow_exception(mine);
    ENGINE_THROW(IO, hint, "sharded checkpoint %s: another process failed to write its rank files", dir.c_str());
  }
  CheckpointInfo info;
  if (b.holds_rank0()) {
    try { info = sharded_checkpoint_commit(staging, dir, st, world); } catch (...) { mine = std::current_exception(); }
  }
  if (b.group_u64(mine ? 1 : 0, true) != 0) {  // barrier: committed
    if (mine) std::rethrow_exception(mine);
    ENGINE_THROW(IO, hint, "sharded checkpoint %s: the process of rank 0 failed to commit it", dir.c_str());
  }
  return b.holds_rank0() ? info : sharded_checkpoint_info(dir);
}

CheckpointInfo Engine::save_checkpoint(const std::string& dir, const std::string& extra_json) {
  CheckpointState st;
  st.model = model();
  st.step = step_;
  st.rng = rng_;
  st.cursor = loader_.shards.empty() ? pending_cursor_ : loader_.cursor;
  st.data = data_sig_;
  const ParamLayout& layout = backend_->layout();
  st.config_json = config_json_;
  st.extra_json = extra_json.empty() ? "{}" : extra_json;
  st.backend = backend_->info().name;
  // ZeRO on several GPUs of this process: every rank's shard goes to its own file, written in parallel
  // (zero_checkpoint.h); loading re-shards to any GPU count. Otherwise (and across processes) one state.bin.
  std::vector<LocalShard> shards = backend_->local_shards();
  if (!shards.empty() && (int)shards.size() == shards[0].world_size) {
    std::vector<RankShard> rs(shards.size());
    for (const LocalShard& s : shards) rs.at(s.rank) = {s.range, s.params.data(), s.m.data(), s.v.data()};
    return sharded_checkpoint_save(dir, st, rs);
  }
  if (!shards.empty()) return save_sharded_group(*backend_, dir, st, shards);
  Backend::HostState hs = backend_->host_state();
  if (hs.params) {  // written in place (Backend::host_state)
    const float* const state[3] = {hs.params, hs.m, hs.v};
    return checkpoint_save(dir, st, layout, state);
  }
  st.params.resize(layout.total);
  st.m.resize(layout.total);
  st.v.resize(layout.total);
  backend_->get_params(st.params.data());
  backend_->get_optimizer_state(st.m.data(), st.v.data());
  return checkpoint_save(dir, st, layout);
}

void Engine::export_hf(const std::string& dir, const std::string& tokenizer_json, int eos_id, int bos_id) {
  const ParamLayout& layout = backend_->layout();
  std::vector<float> params(layout.total);
  backend_->get_params(params.data());
  hf_export(dir, model(), layout, params.data(), tokenizer_json, eos_id, bos_id);
}

void export_checkpoint_hf(const std::string& checkpoint_dir, const std::string& dir, const std::string& tokenizer_json,
                          int eos_id, int bos_id) {
  const ModelConfig model = checkpoint_model(checkpoint_dir);
  const ParamLayout layout = param_layout(model);
  std::vector<float> params(layout.total);
  checkpoint_load_params(checkpoint_dir, params.data());
  if (eos_id < 0) eos_id = model.eos_token_id >= 0 ? (int)model.eos_token_id : 50256;
  hf_export(dir, model, layout, params.data(), tokenizer_json, eos_id, bos_id);
}

}  // namespace engine
