// addon.cpp — the Node-API binding: one wrapper class (AddonEngine) around engine::Engine, one worker class per
// slow operation, free functions for checkpoint verification and build info. No training logic lives here.
//
// Threading and lifetime: every slow call runs in an AddonWorker on the libuv pool and returns a promise. The
// engine sits in a shared AddonHandle (mutex + disposed flag); workers hold a shared_ptr to it, so an engine
// disposed while a worker runs is freed when that worker finishes. One operation runs at a time per engine (the
// mutex); a second concurrent call waits for it. Typed arrays handed to setTrainData / evaluate are kept alive
// by persistent references for as long as the engine (or the worker) borrows their memory.
#include <napi.h>
#include <atomic>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>
#include "engine.h"
#include "errors.h"
#include "families.h"
#include "gemm.h"
#include "options.h"
#include "zero.h"

namespace {

using engine::EngineError;

struct AddonHandle {
  std::mutex mu;                        // held by the worker running an operation
  std::unique_ptr<engine::Engine> eng;  // null after dispose
  std::atomic<bool> disposed{false};
  std::atomic<bool> abort{false};       // set by abort(); checked by the engine between steps
  std::vector<Napi::ObjectReference> train_refs;  // JS typed arrays the train loader borrows (JS thread only)
  // snapshots for synchronous getters, updated on the JS thread after each operation
  uint64_t step = 0;
  engine::DataCursor cursor;
  engine::MemoryReport mem;
};

// Copies an EngineError (or any exception) into a JS Error with code, nativeFile, nativeLine, hint, step.
struct ErrorInfo {
  std::string code = "INTERNAL", message, file, hint;
  int line = 0;
  long step = -1;
};

Napi::Error make_error(Napi::Env env, const ErrorInfo& e) {
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("code", Napi::String::New(env, e.code));
  if (!e.file.empty()) err.Set("nativeFile", Napi::String::New(env, e.file));
  if (e.line) err.Set("nativeLine", Napi::Number::New(env, e.line));
  if (!e.hint.empty()) err.Set("hint", Napi::String::New(env, e.hint));
  if (e.step >= 0) err.Set("step", Napi::Number::New(env, (double)e.step));
  return err;
}

template <typename F>
bool capture_errors(ErrorInfo& out, F&& f) {
  try {
    f();
    return true;
  } catch (const EngineError& e) {
    out = {engine::error_code_name(e.code), e.what(), e.file, e.hint, e.line, e.step};
  } catch (const std::bad_alloc&) {
    out = {"OUT_OF_MEMORY", "host memory allocation failed", "", "use a smaller model or batch", 0, -1};
  } catch (const std::exception& e) {
    out = {"INTERNAL", e.what(), "", "", 0, -1};
  }
  return false;
}

// Base of every slow operation: resolves/rejects a promise; Run() executes on a pool thread.
class AddonWorker : public Napi::AsyncWorker {
 public:
  AddonWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), h_(std::move(h)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual void Run() = 0;                           // pool thread: engine calls only, no JS values
  virtual Napi::Value Result(Napi::Env env) = 0;    // JS thread
  engine::Engine& eng() {
    if (!h_ || !h_->eng || h_->disposed)
      throw EngineError(engine::ErrorCode::Internal, "the engine was disposed", ENGINE_FILE_, __LINE__,
                        "create a new Engine");
    return *h_->eng;
  }
  void Execute() override {
    std::unique_lock<std::mutex> lock;
    if (h_) lock = std::unique_lock<std::mutex>(h_->mu);
    if (!capture_errors(err_, [&] { Run(); })) SetError(err_.message);
    if (h_ && h_->eng) mem_ = h_->eng->backend().memory();
  }
  void snapshot_() {
    if (h_ && h_->disposed && h_->eng) {  // dispose() ran while this worker held the engine: free it now
      std::lock_guard<std::mutex> g(h_->mu);
      h_->eng.reset();
    }
    if (h_ && h_->eng && !h_->disposed) {
      h_->step = h_->eng->step();
      h_->cursor = h_->eng->cursor();
      h_->mem = mem_;
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    snapshot_();
    deferred_.Resolve(Result(Env()));
  }
  void OnError(const Napi::Error&) override {
    Napi::HandleScope scope(Env());
    snapshot_();
    deferred_.Reject(make_error(Env(), err_).Value());
  }

  Napi::Promise::Deferred deferred_;
  std::shared_ptr<AddonHandle> h_;
  ErrorInfo err_;
  engine::MemoryReport mem_;
};

Napi::FunctionReference* g_engine_ctor = nullptr;  // freed by the environment cleanup hook

// ---------------------------------------------------------------------------------------------------------------
// workers

class CreateWorker : public AddonWorker {
 public:
  CreateWorker(Napi::Env env, addon::CreateOptions o) : AddonWorker(env, nullptr, "engine.create"), o_(std::move(o)) {}
  void Run() override {
    if (!o_.checkpoint_dir.empty())
      eng_ = engine::Engine::from_checkpoint(o_.checkpoint_dir, o_.train, o_.backend);
    else
      eng_ = std::make_unique<engine::Engine>(o_.model, o_.train, o_.backend, o_.hf_dir);
    if (o_.checkpoint_dir.empty() || !o_.config_json.empty()) eng_->set_config_json(o_.config_json.empty() ? "{}" : o_.config_json);
    mem_ = eng_->backend().memory();
  }
  Napi::Value Result(Napi::Env env) override {
    auto h = std::make_shared<AddonHandle>();
    h->eng = std::move(eng_);
    h->step = h->eng->step();
    h->cursor = h->eng->cursor();
    h->mem = mem_;
    auto* boxed = new std::shared_ptr<AddonHandle>(h);
    return g_engine_ctor->New({Napi::External<std::shared_ptr<AddonHandle>>::New(
        env, boxed, [](Napi::Env, std::shared_ptr<AddonHandle>* p) { delete p; })});
  }
 private:
  addon::CreateOptions o_;
  std::unique_ptr<engine::Engine> eng_;
};

class TrainWorker : public AddonWorker {
 public:
  TrainWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, size_t n, size_t total, Napi::Function cb)
      : AddonWorker(env, h, "engine.train"), n_(n), total_(total) {
    if (!cb.IsEmpty()) tsfn_ = Napi::ThreadSafeFunction::New(env, cb, "engine.train.progress", 64, 1);
  }
  ~TrainWorker() override {
    if (tsfn_) tsfn_.Release();
  }
  void Run() override {
    auto cb = [this](const engine::TrainProgress& p) {
      if (!tsfn_) return;
      auto* copy = new engine::TrainProgress(p);
      // Non-blocking: when JS lags more than 64 updates behind, an update is dropped, never the training.
      napi_status st = tsfn_.NonBlockingCall(copy, [](Napi::Env env, Napi::Function fn, engine::TrainProgress* q) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("step", (double)q->step);
        o.Set("loss", q->loss);
        o.Set("lr", q->lr);
        o.Set("gradNorm", q->grad_norm);
        o.Set("tokensPerSec", q->tokens_per_sec);
        o.Set("elapsedMs", q->elapsed_ms);
        delete q;
        fn.Call({o});
      });
      if (st != napi_ok) delete copy;
    };
    res_ = eng().train(n_, total_, &h_->abort, cb);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("step", (double)res_.step);
    Napi::Float64Array losses = Napi::Float64Array::New(env, res_.losses.size());
    for (size_t i = 0; i < res_.losses.size(); i++) losses[i] = res_.losses[i];
    o.Set("losses", losses);
    o.Set("tokens", (double)res_.tokens);
    o.Set("tokensPerSec", res_.tokens_per_sec);
    o.Set("aborted", res_.aborted);
    return o;
  }
 private:
  size_t n_, total_;
  Napi::ThreadSafeFunction tsfn_;
  engine::TrainResult res_;
};

class EvalWorker : public AddonWorker {
 public:
  EvalWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, std::vector<engine::ShardView> shards,
             std::vector<Napi::ObjectReference> refs, size_t max_batches, size_t batch)
      : AddonWorker(env, h, "engine.evaluate"), shards_(std::move(shards)), refs_(std::move(refs)),
        max_batches_(max_batches), batch_(batch) {}
  void Run() override { res_ = eng().evaluate(shards_, max_batches_, batch_, &h_->abort); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", res_.loss);
    o.Set("perplexity", res_.perplexity);
    o.Set("accuracy", res_.accuracy);
    o.Set("tokens", (double)res_.tokens);
    o.Set("sequences", (double)res_.sequences);
    o.Set("aborted", res_.aborted);
    return o;
  }
 private:
  std::vector<engine::ShardView> shards_;
  std::vector<Napi::ObjectReference> refs_;  // keep the typed arrays alive while the pool thread reads them
  size_t max_batches_, batch_;
  engine::EvalResult res_;
};

class GenerateWorker : public AddonWorker {
 public:
  GenerateWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, std::vector<std::vector<int32_t>> prompts,
                 engine::GenerateOptions o)
      : AddonWorker(env, h, "engine.generate"), prompts_(std::move(prompts)), o_(o) {}
  void Run() override { out_ = eng().generate(prompts_, o_); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Array a = Napi::Array::New(env, out_.size());
    for (size_t i = 0; i < out_.size(); i++) {
      Napi::Int32Array t = Napi::Int32Array::New(env, out_[i].size());
      for (size_t k = 0; k < out_[i].size(); k++) t[k] = out_[i][k];
      a.Set((uint32_t)i, t);
    }
    return a;
  }
 private:
  std::vector<std::vector<int32_t>> prompts_;
  engine::GenerateOptions o_;
  std::vector<std::vector<int32_t>> out_;
};

class SaveWorker : public AddonWorker {
 public:
  SaveWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, std::string dir, std::string extra)
      : AddonWorker(env, h, "engine.saveCheckpoint"), dir_(std::move(dir)), extra_(std::move(extra)) {}
  void Run() override { info_ = eng().save_checkpoint(dir_, extra_); }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("dir", info_.dir);
    o.Set("step", (double)info_.step);
    o.Set("sha256", info_.sha256);
    o.Set("bytes", (double)info_.bytes);
    o.Set("existed", info_.existed);
    return o;
  }
 private:
  std::string dir_, extra_;
  engine::CheckpointInfo info_;
};

class ExportWorker : public AddonWorker {
 public:
  ExportWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, std::string dir, std::string tok, int eos, int bos)
      : AddonWorker(env, h, "engine.exportHuggingFace"), dir_(std::move(dir)), tok_(std::move(tok)), eos_(eos), bos_(bos) {}
  void Run() override { eng().export_hf(dir_, tok_, eos_, bos_); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }
 private:
  std::string dir_, tok_;
  int eos_, bos_;
};

// Test/parity helper: logits (B, T, V) for given inputs, or loss + flat gradients for given inputs and labels.
class ProbeWorker : public AddonWorker {
 public:
  ProbeWorker(Napi::Env env, std::shared_ptr<AddonHandle> h, std::vector<int32_t> in, std::vector<int32_t> labels,
              size_t B, size_t T, bool grads, std::vector<int32_t> pos)
      : AddonWorker(env, h, "engine.probe"), in_(std::move(in)), labels_(std::move(labels)), B_(B), T_(T), grads_(grads),
        pos_(std::move(pos)) {}
  void Run() override {
    engine::Backend& be = eng().backend();
    std::vector<int32_t> tg(B_ * T_);
    for (size_t b = 0; b < B_; b++) engine::shift_labels(labels_.data() + b * T_, T_, tg.data() + b * T_);
    engine::Batch batch{in_.data(), tg.data(), B_, T_};
    if (!pos_.empty()) {
      engine::ShardView sv;
      sv.n_seq = B_; sv.block_size = T_; sv.input_ids = in_.data(); sv.labels = labels_.data(); sv.position_ids = pos_.data();
      engine::check_position_ids(sv, 0);
      ENGINE_CHECK(be.supports_packed(), BadConfig, "", "the %s backend does not take packed position ids", be.info().name.c_str());
      batch.positions = pos_.data();
    }
    if (grads_) {
      size_t n = 0;
      for (int32_t t : tg) n += t != engine::IGNORE_INDEX;
      ENGINE_CHECK(n > 0, BadShape, "", "all labels are -100");
      be.zero_grad();
      loss_ = be.forward_backward(batch, 1.0f / (float)n) / (double)n;
      out_.resize(be.layout().total);
      be.get_grads(out_.data());
      be.zero_grad();
    } else {
      out_.resize(B_ * T_ * be.config().vocab_size);
      be.forward_logits(batch, out_.data());
    }
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Float32Array a = Napi::Float32Array::New(env, out_.size());
    std::memcpy(a.Data(), out_.data(), out_.size() * sizeof(float));
    if (!grads_) return a;
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", loss_);
    o.Set("grads", a);
    return o;
  }
 private:
  std::vector<int32_t> in_, labels_;
  size_t B_, T_;
  bool grads_;
  std::vector<int32_t> pos_;  // packed position ids (B, T), or empty
  double loss_ = 0;
  std::vector<float> out_;
};

class ParamsWorker : public AddonWorker {
 public:
  ParamsWorker(Napi::Env env, std::shared_ptr<AddonHandle> h) : AddonWorker(env, h, "engine.getParams") {}
  void Run() override {
    engine::Backend& be = eng().backend();
    out_.resize(be.layout().total);
    be.get_params(out_.data());
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Float32Array a = Napi::Float32Array::New(env, out_.size());
    std::memcpy(a.Data(), out_.data(), out_.size() * sizeof(float));
    return a;
  }
 private:
  std::vector<float> out_;
};

class VerifyWorker : public AddonWorker {
 public:
  VerifyWorker(Napi::Env env, std::string dir) : AddonWorker(env, nullptr, "engine.verifyCheckpoint"), dir_(std::move(dir)) {}
  void Run() override { step_ = engine::checkpoint_verify(dir_); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, (double)step_); }
 private:
  std::string dir_;
  uint64_t step_ = 0;
};

// exportCheckpoint(checkpointDir, dir, tokenizerJson, eosId, bosId): engine::export_checkpoint_hf, no engine needed.
class ExportCheckpointWorker : public AddonWorker {
 public:
  ExportCheckpointWorker(Napi::Env env, std::string ckpt, std::string dir, std::string tok, int eos, int bos)
      : AddonWorker(env, nullptr, "engine.exportCheckpoint"), ckpt_(std::move(ckpt)), dir_(std::move(dir)),
        tok_(std::move(tok)), eos_(eos), bos_(bos) {}
  void Run() override { engine::export_checkpoint_hf(ckpt_, dir_, tok_, eos_, bos_); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }
 private:
  std::string ckpt_, dir_, tok_;
  int eos_, bos_;
};

// ---------------------------------------------------------------------------------------------------------------
// AddonEngine: the JS object

class AddonEngine : public Napi::ObjectWrap<AddonEngine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "AddonEngine",
                       {InstanceMethod("info", &AddonEngine::Info), InstanceMethod("state", &AddonEngine::State),
                        InstanceMethod("setTrainData", &AddonEngine::SetTrainData),
                        InstanceMethod("train", &AddonEngine::Train), InstanceMethod("abort", &AddonEngine::Abort),
                        InstanceMethod("evaluate", &AddonEngine::Evaluate),
                        InstanceMethod("generate", &AddonEngine::Generate),
                        InstanceMethod("saveCheckpoint", &AddonEngine::SaveCheckpoint),
                        InstanceMethod("exportHuggingFace", &AddonEngine::ExportHuggingFace),
                        InstanceMethod("forwardLogits", &AddonEngine::ForwardLogits),
                        InstanceMethod("gradients", &AddonEngine::Gradients),
                        InstanceMethod("getParams", &AddonEngine::GetParams),
                        InstanceMethod("layout", &AddonEngine::Layout),
                        InstanceMethod("memoryReport", &AddonEngine::MemoryReport),
                        InstanceMethod("dispose", &AddonEngine::Dispose)});
  }

  explicit AddonEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonEngine>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "AddonEngine is created by createEngine()/loadCheckpoint()");
    h_ = *info[0].As<Napi::External<std::shared_ptr<AddonHandle>>>().Data();
    // Tell V8 roughly how much native memory this object keeps alive (weights, grads, moments, activations).
    external_ = (int64_t)std::min<size_t>(h_->mem.total(), (size_t)1 << 40);
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_);
  }
  ~AddonEngine() override {
    // GC'd without dispose(): free once no worker holds the handle
    if (h_) h_->disposed = true;
  }

 private:
  std::shared_ptr<AddonHandle> live_(Napi::Env env) {
    if (!h_ || h_->disposed) {
      ErrorInfo e{"INTERNAL", "the engine was disposed", ENGINE_FILE_, "create a new Engine", __LINE__, -1};
      throw make_error(env, e);
    }
    return h_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    std::lock_guard<std::mutex> g(h->mu);
    const engine::BackendInfo& bi = h->eng->backend().info();
    const engine::ModelConfig& m = h->eng->model();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("backend", bi.name);
    o.Set("device", bi.device);
    o.Set("blas", bi.blas);
    o.Set("precision", bi.precision);
    o.Set("threads", bi.num_threads);
    o.Set("nParams", (double)h->eng->backend().layout().total);
    o.Set("nLayer", (double)m.n_layer);
    o.Set("nHead", (double)m.n_head);
    o.Set("nEmbd", (double)m.n_embd);
    o.Set("nPositions", (double)m.n_positions);
    o.Set("vocabSize", (double)m.vocab_size);
    o.Set("family", m.family);
    if (m.family != "gpt2") {
      o.Set("nKvHead", (double)m.n_kv_head);
      o.Set("headDim", (double)m.head_dim);
      o.Set("intermediateSize", (double)m.intermediate_size);
      o.Set("rotaryDim", (double)m.rotary_dim);
      o.Set("ropeTheta", (double)m.rope_theta);
      o.Set("tieWordEmbeddings", m.tie_word_embeddings);
      o.Set("parallelResidual", m.parallel_residual);
      o.Set("hiddenAct", m.hidden_act);
    }
    if (m.bos_token_id >= 0) o.Set("bosTokenId", (double)m.bos_token_id);
    if (m.eos_token_id >= 0) o.Set("eosTokenId", (double)m.eos_token_id);
    // the effective parallel layout, as the backend reports it in its memory accounting
    o.Set("zeroStage", h->mem.zero_stage);
    o.Set("worldSize", h->mem.world_size);
    return o;
  }

  Napi::Value State(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("step", (double)h->step);
    Napi::Object c = Napi::Object::New(info.Env());
    c.Set("epoch", (double)h->cursor.epoch);
    c.Set("shard", (double)h->cursor.shard);
    c.Set("offset", (double)h->cursor.offset);
    c.Set("shuffleSeed", (double)h->cursor.shuffle_seed);
    o.Set("cursor", c);
    return o;
  }

  Napi::Value SetTrainData(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    std::vector<Napi::ObjectReference> refs;
    std::vector<engine::ShardView> views = addon::read_shards(info.Env(), info[0], refs);
    std::unique_lock<std::mutex> lock(h->mu, std::try_to_lock);
    if (!lock.owns_lock())
      throw make_error(info.Env(), {"INTERNAL", "setTrainData() called while another operation runs", ENGINE_FILE_,
                                    "await the running train/evaluate call first", __LINE__, -1});
    ErrorInfo e;
    if (!capture_errors(e, [&] { h->eng->set_train_data(views); })) throw make_error(info.Env(), e);
    h->train_refs = std::move(refs);  // the loader now borrows these arrays
    h->cursor = h->eng->cursor();
    return info.Env().Undefined();
  }

  Napi::Value Train(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    size_t n = addon::get_count(info.Env(), info[0], "nSteps", 0);
    size_t total = addon::get_count(info.Env(), info[1], "totalSteps", 1);
    Napi::Function cb = info.Length() > 2 && info[2].IsFunction() ? info[2].As<Napi::Function>() : Napi::Function();
    h->abort = false;  // reset on the JS thread: an abort() after this call is never lost
    auto* w = new TrainWorker(info.Env(), h, n, total, cb);
    w->Queue();
    return w->Promise();
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    if (h_) h_->abort = true;
    return info.Env().Undefined();
  }

  Napi::Value Evaluate(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    std::vector<Napi::ObjectReference> refs;
    std::vector<engine::ShardView> views = addon::read_shards(info.Env(), info[0], refs);
    size_t max_batches = addon::get_count(info.Env(), info[1], "maxBatches", 0);
    size_t batch = addon::get_count(info.Env(), info[2], "batchSize", 1);
    h->abort = false;
    auto* w = new EvalWorker(info.Env(), h, std::move(views), std::move(refs), max_batches, batch);
    w->Queue();
    return w->Promise();
  }

  Napi::Value Generate(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    auto prompts = addon::read_prompts(info.Env(), info[0]);
    engine::GenerateOptions o = addon::read_generate_options(info.Env(), info[1]);
    auto* w = new GenerateWorker(info.Env(), h, std::move(prompts), o);
    w->Queue();
    return w->Promise();
  }

  Napi::Value SaveCheckpoint(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    std::string dir = addon::get_string(info.Env(), info[0], "dir");
    std::string extra = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "{}";
    auto* w = new SaveWorker(info.Env(), h, dir, extra);
    w->Queue();
    return w->Promise();
  }

  Napi::Value ExportHuggingFace(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    std::string dir = addon::get_string(info.Env(), info[0], "dir");
    std::string tok = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    int eos = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 50256;
    int bos = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : -1;
    auto* w = new ExportWorker(info.Env(), h, dir, tok, eos, bos);
    w->Queue();
    return w->Promise();
  }

  Napi::Value Probe_(const Napi::CallbackInfo& info, bool grads) {
    auto h = live_(info.Env());
    std::vector<int32_t> in = addon::read_int32(info.Env(), info[0], "inputIds");
    size_t B = addon::get_count(info.Env(), info[grads ? 2 : 1], "B", 1);
    size_t T = addon::get_count(info.Env(), info[grads ? 3 : 2], "T", 1);
    std::vector<int32_t> labels = grads ? addon::read_int32(info.Env(), info[1], "labels") : std::vector<int32_t>(B * T, engine::IGNORE_INDEX);
    if (in.size() != B * T || labels.size() != B * T)
      throw Napi::TypeError::New(info.Env(), "inputIds/labels must hold B*T = " + std::to_string(B * T) + " ids");
    const size_t at = grads ? 4 : 3;  // optional trailing positionIds (packed rows)
    std::vector<int32_t> pos;
    if (info.Length() > at && !info[at].IsUndefined() && !info[at].IsNull()) {
      pos = addon::read_int32(info.Env(), info[at], "positionIds");
      if (pos.size() != B * T) throw Napi::TypeError::New(info.Env(), "positionIds must hold B*T = " + std::to_string(B * T) + " ids");
    }
    auto* w = new ProbeWorker(info.Env(), h, std::move(in), std::move(labels), B, T, grads, std::move(pos));
    w->Queue();
    return w->Promise();
  }
  Napi::Value ForwardLogits(const Napi::CallbackInfo& info) { return Probe_(info, false); }
  Napi::Value Gradients(const Napi::CallbackInfo& info) { return Probe_(info, true); }

  Napi::Value GetParams(const Napi::CallbackInfo& info) {
    auto* w = new ParamsWorker(info.Env(), live_(info.Env()));
    w->Queue();
    return w->Promise();
  }

  Napi::Value Layout(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    const engine::ParamLayout& l = h->eng->backend().layout();  // immutable after construction
    Napi::Array a = Napi::Array::New(info.Env(), l.tensors.size());
    for (size_t i = 0; i < l.tensors.size(); i++) {
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("name", l.tensors[i].name);
      Napi::Array s = Napi::Array::New(info.Env(), l.tensors[i].shape.size());
      for (size_t k = 0; k < l.tensors[i].shape.size(); k++) s.Set((uint32_t)k, (double)l.tensors[i].shape[k]);
      o.Set("shape", s);
      o.Set("offset", (double)l.tensors[i].offset);
      o.Set("numel", (double)l.tensors[i].numel);
      a.Set((uint32_t)i, o);
    }
    return a;
  }

  Napi::Value MemoryReport(const Napi::CallbackInfo& info) {
    auto h = live_(info.Env());
    const engine::MemoryReport& m = h->mem;  // snapshot of the last completed operation
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("paramsBytes", (double)m.params_bytes);
    o.Set("gradsBytes", (double)m.grads_bytes);
    o.Set("optimizerBytes", (double)m.optimizer_bytes);
    o.Set("activationsBytes", (double)m.activations_bytes);
    o.Set("otherBytes", (double)m.other_bytes);
    o.Set("buffersBytes", (double)m.buffers_bytes);
    o.Set("totalBytes", (double)m.total());
    if (m.device_total_bytes) o.Set("deviceTotalBytes", (double)m.device_total_bytes);
    o.Set("zeroStage", m.zero_stage);
    o.Set("worldSize", m.world_size);
    if (m.formula_bytes) o.Set("formulaBytes", (double)m.formula_bytes);
    if (m.formula_paper_bytes) o.Set("formulaPaperBytes", (double)m.formula_paper_bytes);
    return o;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (!h_ || h_->disposed.exchange(true)) return info.Env().Undefined();
    h_->abort = true;  // a running train/evaluate stops at its next boundary
    // Free now when idle; otherwise the running worker's shared_ptr frees the engine when it completes.
    std::unique_lock<std::mutex> lock(h_->mu, std::try_to_lock);
    if (lock.owns_lock()) h_->eng.reset();
    h_->train_refs.clear();
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -external_);
    external_ = 0;
    return info.Env().Undefined();
  }

  std::shared_ptr<AddonHandle> h_;
  int64_t external_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// module functions

Napi::Value CreateEngine(const Napi::CallbackInfo& info) {
  addon::CreateOptions o = addon::read_create_options(info.Env(), info[0]);
  auto* w = new CreateWorker(info.Env(), std::move(o));
  w->Queue();
  return w->Promise();
}

Napi::Value ExportCheckpoint(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string tok = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  int eos = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : -1;
  int bos = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Int32Value() : -1;
  auto* w = new ExportCheckpointWorker(env, addon::get_string(env, info[0], "checkpointDir"),
                                       addon::get_string(env, info[1], "dir"), tok, eos, bos);
  w->Queue();
  return w->Promise();
}

Napi::Value VerifyCheckpoint(const Napi::CallbackInfo& info) {
  auto* w = new VerifyWorker(info.Env(), addon::get_string(info.Env(), info[0], "dir"));
  w->Queue();
  return w->Promise();
}

// estimateMemory(options, blockSize, deviceBytes, hostBytes): the pre-flight estimate (engine/zero.h), synchronous
// (arithmetic only; reads config.json when options.hfDir is set). deviceBytes 0 = no verdict.
Napi::Value EstimateMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  addon::CreateOptions o = addon::read_create_options(env, info[0]);
  const size_t T = addon::get_count(env, info[1], "blockSize", 1);
  const double dev = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  const double host = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 0;
  engine::MemoryEstimate est;
  engine::FitVerdict v;
  ErrorInfo e;
  if (!capture_errors(e, [&] {
        engine::MemoryRequest q;
        q.model = o.model;
        if (!o.hf_dir.empty()) q.model = engine::hf_read_config_only(o.hf_dir);
        q.B = o.train.micro_batch_size, q.T = T;
        q.precision = o.backend.precision, q.recompute = o.backend.recompute;
        q.stage = o.backend.zero_stage, q.world_size = o.backend.world_size;
        q.offload = o.backend.offload == "cpu";
        est = engine::estimate_memory(q);
        if (dev > 0) v = engine::memory_fits(est, (size_t)dev, host > 0 ? (size_t)host : 0);
      }))
    throw make_error(env, e);
  Napi::Object r = Napi::Object::New(env);
  auto n = [&](size_t x) { return Napi::Number::New(env, (double)x); };
  r.Set("nParams", n(est.n_params));
  r.Set("shardElems", n(est.shard_elems));
  r.Set("formula", est.formula);
  r.Set("paramsBytes", n(est.state.params));
  r.Set("gradsBytes", n(est.state.grads));
  r.Set("masterBytes", n(est.state.master));
  r.Set("momentsBytes", n(est.state.moments));
  r.Set("activationsBytes", n(est.activations));
  r.Set("buffersBytes", n(est.buffers));
  r.Set("deviceBytes", n(est.device_total));
  r.Set("hostBytes", n(est.host_total));
  if (dev > 0) {
    r.Set("fits", v.ok);
    r.Set("advice", v.advice);
  }
  return r;
}

// ncclUniqueId(): a fresh NCCL unique id (256 hex digits) made in THIS process, which must then host rank 0.
// NCCL is dlopen-ed by the cuda backend (engine/cuda/nccl.cuh), so only a build without it cannot make one.
Napi::Value NcclUniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef ENGINE_HAVE_CUDA
  std::string id;
  ErrorInfo e;
  if (!capture_errors(e, [&] { id = engine::nccl_unique_id(); })) throw make_error(env, e);
  return Napi::String::New(env, id);
#else
  ErrorInfo e{"BAD_CONFIG",
              "this engine was built without the cuda backend, so it has no NCCL: multi-worker training "
              "(parallelism.nodes > 1) needs a CUDA build with libnccl on every GPU host",
              ENGINE_FILE_, "build on a GPU host with nvcc and cuBLAS (npm run build:native; ENGINE_CUDA=1)", __LINE__, -1};
  throw make_error(env, e);
#endif
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("backends", engine::compiled_backends());
  o.Set("blas", engine::gemm_name());
#ifdef ENGINE_HAVE_CUDA
  int n = 0;
  ErrorInfo e;
  capture_errors(e, [&] { n = engine::cuda_device_count(); });
  o.Set("cudaDevices", n);
#else
  o.Set("cudaDevices", 0);
#endif
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  g_engine_ctor = new Napi::FunctionReference(Napi::Persistent(AddonEngine::Init(env)));
  env.AddCleanupHook([] {
    delete g_engine_ctor;
    g_engine_ctor = nullptr;
  });
  exports.Set("createEngine", Napi::Function::New(env, CreateEngine));
  exports.Set("verifyCheckpoint", Napi::Function::New(env, VerifyCheckpoint));
  exports.Set("exportCheckpoint", Napi::Function::New(env, ExportCheckpoint));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("estimateMemory", Napi::Function::New(env, EstimateMemory));
  exports.Set("ncclUniqueId", Napi::Function::New(env, NcclUniqueId));
  return exports;
}

}  // namespace

NODE_API_MODULE(finetune_engine, Init)
