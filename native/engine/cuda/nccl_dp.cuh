// nccl_dp.cuh — data parallelism: one engine drives every GPU this process was given (one thread and one model
// replica per GPU), and several processes or hosts join through an NCCL unique id the caller hands to all of
// them. Both cases take the same path: ncclCommInitRank for each local GPU inside one ncclGroupStart/End, with
// global rank = rank offset + local index. The replicas are ordinary single-GPU backends (any model family)
// built with their communicator; ZeRO lives in their TrainState (train_state.cuh).
//
// Semantics (SPMD, as torch.distributed): every process makes the same engine calls in the same order. A step's
// n micro-batches (the engine's global gradient accumulation) are split in contiguous blocks of n / world_size,
// block g to global rank g; loss sums and gradients are summed over ranks, so a step equals single-GPU training
// with the same micro-batches. Evaluation and generation run on local replica 0 (at ZeRO-3 on all replicas,
// which must take part in the weight gathers) and every process computes the same result.
#pragma once
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include "backend.h"
#include "nccl.cuh"

namespace cudabk {
using namespace engine;

// One thread bound to one GPU; jobs run in order. wait() rethrows the first failure.
class GpuWorker {
 public:
  // on_error runs on the worker thread when a job throws (DataParallel aborts the communicators there, so the
  // other GPUs' threads, blocked in a collective that will never complete, return instead of hanging)
  GpuWorker(int device, std::function<void()> on_error) : dev_(device), on_error_(std::move(on_error)), th_([this] { loop_(); }) {}
  ~GpuWorker() {
    { std::lock_guard<std::mutex> g(m_); stop_ = true; }
    cv_.notify_all();
    th_.join();
  }
  void post(std::function<void()> f) {
    { std::lock_guard<std::mutex> g(m_); q_.push_back(std::move(f)); busy_++; }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> g(m_);
    done_.wait(g, [&] { return busy_ == 0; });
    if (err_) { auto e = err_; err_ = nullptr; std::rethrow_exception(e); }
  }

 private:
  int dev_;
  std::function<void()> on_error_;
  std::mutex m_;
  std::condition_variable cv_, done_;
  std::vector<std::function<void()>> q_;
  int busy_ = 0;
  bool stop_ = false;
  std::exception_ptr err_;
  std::thread th_;
  void loop_() {
    bool dev_ok = cudaSetDevice(dev_) == cudaSuccess;
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        f = std::move(q_.front());
        q_.erase(q_.begin());
      }
      try {
        if (!dev_ok) CUDA_CHECK(cudaSetDevice(dev_));
        f();
      } catch (...) {
        {
          std::lock_guard<std::mutex> g(m_);
          if (!err_) err_ = std::current_exception();
        }
        if (on_error_) on_error_();
      }
      { std::lock_guard<std::mutex> g(m_); busy_--; }
      done_.notify_all();
    }
  }
};

using ReplicaFactory = std::function<std::unique_ptr<Backend>(const ModelConfig&, const BackendOptions&, nccl::Comm)>;

// Does this request need the data-parallel driver (several GPUs, or ZeRO across processes)?
inline bool wants_data_parallel(const BackendOptions& o) { return o.world_size > 1 || o.devices.size() > 1; }

class DataParallel final : public Backend {
 public:
  DataParallel(const ModelConfig& model, const BackendOptions& o, const ReplicaFactory& make) {
    std::vector<int> devs = o.devices.empty() ? std::vector<int>{o.device} : o.devices;
    G_ = (int)devs.size(), W_ = o.world_size, r0_ = o.rank;
    ENGINE_CHECK(W_ >= G_ && r0_ >= 0 && r0_ + G_ <= W_, BadConfig, "ranks are rankOffset .. rankOffset + devices - 1 of worldSize",
                 "%d local GPUs at rank offset %d do not fit world size %d", G_, r0_, W_);
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess) { cudaGetLastError(); ndev = 0; }
    for (size_t i = 0; i < devs.size(); i++) {
      ENGINE_CHECK(devs[i] >= 0 && devs[i] < ndev, BadConfig, "set parallelism.devices to GPUs this host has",
                   "CUDA device %d requested, %d visible", devs[i], ndev);
      for (size_t j = 0; j < i; j++)
        ENGINE_CHECK(devs[i] != devs[j], BadConfig, "list each GPU once", "CUDA device %d listed twice", devs[i]);
    }
    nccl::UniqueId id;
    const nccl::Api& a = nccl::api();
    if (o.nccl_id.empty()) {
      ENGINE_CHECK(W_ == G_, BadConfig, "pass the NCCL unique id from nccl_unique_id() on one process to every process",
                   "world size %d spans several processes (this one drives %d GPUs) but no NCCL id was given", W_, G_);
      NCCL_CHECK(a.GetUniqueId(&id), nullptr);
    } else if (o.nccl_id.size() == sizeof id.internal) {
      std::memcpy(id.internal, o.nccl_id.data(), sizeof id.internal);
    } else {
      id = nccl::from_hex(o.nccl_id);
    }
    comms_.assign(G_, nullptr);
    // NCCL's own device memory (channels, connection buffers) is measured around the initialisation and reported
    // in MemoryReport::other_bytes. Connections are made at init, not lazily at the first collective of each
    // algorithm (NCCL_RUNTIME_CONNECT=0 unless the user set it), so that number is the whole of it.
    setenv("NCCL_RUNTIME_CONNECT", "0", 0);
    std::vector<size_t> free0(G_, 0);
    for (int i = 0; i < G_; i++) {
      size_t tot = 0;
      CUDA_CHECK(cudaSetDevice(devs[i]));
      CUDA_CHECK(cudaMemGetInfo(&free0[i], &tot));
    }
    // one group for all local GPUs: NCCL needs that when one thread initialises several ranks
    NCCL_CHECK(a.GroupStart(), nullptr);
    for (int i = 0; i < G_; i++) {
      CUDA_CHECK(cudaSetDevice(devs[i]));
      NCCL_CHECK(a.CommInitRank(&comms_[i], W_, id, r0_ + i), nullptr);
    }
    NCCL_CHECK(a.GroupEnd(), nullptr);
    nccl_bytes_.assign(G_, 0);
    for (int i = 0; i < G_; i++) {
      size_t fr = 0, tot = 0;
      CUDA_CHECK(cudaSetDevice(devs[i]));
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
      nccl_bytes_[i] = free0[i] > fr ? free0[i] - fr : 0;
    }
    for (int i = 0; i < G_; i++) workers_.push_back(std::make_unique<GpuWorker>(devs[i], [this] { abort_(); }));
    reps_.resize(G_);
    try {
      all_([&](int i) {
        BackendOptions oi = o;
        oi.device = devs[i], oi.rank = r0_ + i, oi.devices = {devs[i]};
        reps_[i] = make(model, oi, comms_[i]);
      });
    } catch (...) {
      // a replica failed (out of memory, bad config): free the others on their own GPUs' threads, drop the
      // communicators (aborted by the failing worker), then report the first failure
      for (int i = 0; i < G_; i++) workers_[i]->post([this, i] { reps_[i].reset(); });
      for (auto& w : workers_) try { w->wait(); } catch (...) {}
      workers_.clear();
      throw;
    }
    inf_ = reps_[0]->info();
    inf_.device = std::to_string(G_) + "x " + inf_.device + " (ranks " + std::to_string(r0_) + "-" +
                  std::to_string(r0_ + G_ - 1) + " of " + std::to_string(W_) + ", ZeRO-" + std::to_string(o.zero_stage) + ")";
    stage_ = o.zero_stage;
    scratch_buf_.resize(G_);
  }
  ~DataParallel() override {
    for (auto& w : workers_) try { w->wait(); } catch (...) {}
    for (int i = 0; i < G_ && i < (int)reps_.size(); i++) workers_[i]->post([this, i] { reps_[i].reset(); });
    for (auto& w : workers_) try { w->wait(); } catch (...) {}
    const nccl::Api& a = nccl::api();
    if (!aborted_)
      for (nccl::Comm c : comms_) if (c) a.CommDestroy(c);
    workers_.clear();
  }

  const BackendInfo& info() const override { return inf_; }
  const ModelConfig& config() const override { return reps_[0]->config(); }
  const ParamLayout& layout() const override { return reps_[0]->layout(); }
  int local_gpus() const { return G_; }
  Backend& replica(int i) { return *reps_[i]; }

  void get_params(float* dst) const override { all_([&](int i) { reps_[i]->get_params(i ? nullptr : dst); }); }
  void set_params(const float* src) override { all_([&](int i) { reps_[i]->set_params(src); }); }
  void get_grads(float* dst) const override { all_([&](int i) { reps_[i]->get_grads(i ? nullptr : dst); }); }
  void get_optimizer_state(float* m, float* v) const override {
    all_([&](int i) { reps_[i]->get_optimizer_state(i ? nullptr : m, i ? nullptr : v); });
  }
  void set_optimizer_state(const float* m, const float* v) override {
    all_([&](int i) { reps_[i]->set_optimizer_state(m, v); });
  }
  std::vector<LocalShard> local_shards() override {
    std::vector<std::vector<LocalShard>> per(G_);
    all_([&](int i) { per[i] = reps_[i]->local_shards(); });
    std::vector<LocalShard> out;
    for (auto& p : per) for (auto& s : p) out.push_back(std::move(s));
    return out;
  }

  void zero_grad() override { all_([&](int i) { reps_[i]->zero_grad(); }); }
  bool holds_rank0() const override { return r0_ == 0; }
  // one 8-byte collective per local GPU, each on its own thread and communicator (as in training)
  uint64_t group_u64(uint64_t v, bool max_over_ranks) override {
    std::vector<uint64_t> out(G_, 0);
    all_([&](int i) {
      const nccl::Api& a = nccl::api();
      uint64_t* d = nullptr;
      CUDA_CHECK(cudaMalloc(&d, 8));
      try {
        CUDA_CHECK(cudaMemcpy(d, &v, 8, cudaMemcpyHostToDevice));
        if (max_over_ranks) NCCL_CHECK(a.AllReduce(d, d, 1, nccl::Uint64, nccl::Max, comms_[i], 0), comms_[i]);
        else NCCL_CHECK(a.Broadcast(d, d, 1, nccl::Uint64, 0, comms_[i], 0), comms_[i]);
        CUDA_CHECK(cudaMemcpy(&out[i], d, 8, cudaMemcpyDeviceToHost));  // legacy stream: after the collective
      } catch (...) {
        cudaFree(d);
        throw;
      }
      cudaFree(d);
    });
    return out[0];
  }
  [[noreturn]] void primitive_(const char* what) const {
    ENGINE_THROW(BadConfig, "train through Engine::train (step_async); the primitives are single-GPU test helpers",
                 "%s is not available with several GPUs", what);
  }
  double forward_backward(const Batch&, float) override { primitive_("forward_backward"); }
  double grad_norm_sq() override { primitive_("grad_norm_sq"); }
  void optimizer_step(const AdamWHyper&) override { primitive_("optimizer_step"); }

  // Global rank g takes micro-batches [g*k, (g+1)*k), k = n / world size.
  void step_async(const Batch* micro, size_t n, float dloss, const AdamWHyper& hp, float grad_clip,
                  double max_loss) override {
    ENGINE_CHECK(n % (size_t)W_ == 0, BadConfig,
                 "set training.gradAccumSteps to a multiple of the number of GPUs (each GPU takes the same number "
                 "of micro-batches per step)",
                 "%zu micro-batches per step cannot be split evenly over %d GPUs", n, W_);
    const size_t k = n / (size_t)W_;
    check_usable_();
    outs_.assign(G_, StepOutput{});
    for (int i = 0; i < G_; i++) {
      const Batch* mine = micro + (size_t)(r0_ + i) * k;
      workers_[i]->post([=] {
        reps_[i]->step_async(mine, k, dloss, hp, grad_clip, max_loss);
        outs_[i] = reps_[i]->step_wait();
      });
    }
  }
  StepOutput step_wait() override {
    wait_all_();
    return outs_[0];  // loss sum and norm are reduced over every rank; the gate is the same everywhere
  }

  // Evaluation and generation: replica 0, or every replica at ZeRO-3 (the gathers are collectives)
  EvalStats forward_eval(const Batch& b) override {
    EvalStats s;
    each_eval_([&](int i) { EvalStats r = reps_[i]->forward_eval(b); if (!i) s = r; });
    return s;
  }
  void forward_logits(const Batch& b, float* logits) override {
    const size_t n = b.B * b.T * config().vocab_size;
    each_eval_([&](int i) { reps_[i]->forward_logits(b, i ? scratch_(i, n) : logits); });
  }
  void kv_begin(size_t slots, size_t max_len) override { each_eval_([&](int i) { reps_[i]->kv_begin(slots, max_len); }); }
  void kv_prefill(size_t slot, const int32_t* tokens, size_t n, float* logits) override {
    const size_t V = config().vocab_size;
    each_eval_([&](int i) { reps_[i]->kv_prefill(slot, tokens, n, i ? scratch_(i, V) : logits); });
  }
  void kv_decode(const size_t* slots, const int32_t* tokens, size_t n, float* logits) override {
    const size_t V = config().vocab_size;
    each_eval_([&](int i) { reps_[i]->kv_decode(slots, tokens, n, i ? scratch_(i, n * V) : logits); });
  }
  void kv_end() override { each_eval_([&](int i) { reps_[i]->kv_end(); }); }

  // The largest per-GPU footprint of this process's replicas (what has to fit on one GPU).
  MemoryReport memory() const override {
    std::vector<MemoryReport> r(G_);
    all_([&](int i) { r[i] = reps_[i]->memory(); });
    size_t best = 0;
    for (int i = 0; i < G_; i++) r[i].other_bytes += nccl_bytes_[i];  // NCCL's buffers, measured at init
    for (int i = 1; i < G_; i++) if (r[i].total() > r[best].total()) best = i;
    return r[best];
  }

 private:
  int G_ = 1, W_ = 1, r0_ = 0, stage_ = 0;
  BackendInfo inf_;
  std::vector<nccl::Comm> comms_;
  std::vector<std::unique_ptr<GpuWorker>> workers_;
  std::vector<std::unique_ptr<Backend>> reps_;
  std::vector<StepOutput> outs_;
  std::vector<std::vector<float>> scratch_buf_;
  std::vector<size_t> nccl_bytes_;
  std::once_flag abort_once_;
  std::atomic<bool> aborted_{false};

  // A replica failed: abort every local communicator so that the other GPUs' threads leave their collectives
  // (with an NCCL error) instead of waiting forever; the engine reports the first failure. The group is unusable
  // afterwards (every later call fails): the caller recreates the engine from its last checkpoint, on every
  // process of the run (the workflow restarts the whole group).
  void abort_() {
    std::call_once(abort_once_, [this] {
      aborted_ = true;
      const nccl::Api& a = nccl::api();
      for (nccl::Comm c : comms_) if (c) a.CommAbort(c);
    });
  }
  void check_usable_() const {
    ENGINE_CHECK(!aborted_, Device, "recreate the engine from the last checkpoint (on every process of the run)",
                 "a GPU of this data-parallel group failed earlier; its NCCL communicators were aborted");
  }

  float* scratch_(int i, size_t n) {
    if (scratch_buf_[i].size() < n) scratch_buf_[i].resize(n);
    return scratch_buf_[i].data();
  }
  void wait_all_() const {
    std::exception_ptr first;
    for (auto& w : workers_) {
      try { w->wait(); } catch (...) { if (!first) first = std::current_exception(); }
    }
    if (first) std::rethrow_exception(first);
  }
  template <typename F> void all_(F f) const {
    check_usable_();
    for (int i = 0; i < G_; i++) workers_[i]->post([&f, i] { f(i); });
    wait_all_();
  }
  template <typename F> void each_eval_(F f) {
    if (stage_ == 3) return all_(f);
    check_usable_();
    workers_[0]->post([&f] { f(0); });
    wait_all_();
  }
};

inline std::unique_ptr<Backend> make_data_parallel(const ModelConfig& model, const BackendOptions& o, const ReplicaFactory& make) {
  return std::make_unique<DataParallel>(model, o, make);
}

}  // namespace cudabk
