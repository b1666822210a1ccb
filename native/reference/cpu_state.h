// cpu_state.h — the state half of the fp32 cpu backend (the model is cpu_backend.cpp): the option checks, the
// thread count, and the flat fp32 buffers of parameters, gradients and AdamW moments (params.h / families.cpp
// layout) with their plain-copy accessors, gradient norm and optimizer step, and the KV cache's bookkeeping. The
// model derives from it, sets `layout_`, calls `alloc_state_()` and adds forward, backward and the KV-cached
// inference rows (kv_rows_).
#pragma once
#include <algorithm>
#include <cstring>
#include <new>
#include <unistd.h>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "backend.h"
#include "errors.h"
#include "gemm.h"
#include "optimizer.h"

namespace engine {

class CpuStateBackend : public Backend {
 public:
  const BackendInfo& info() const override { return info_; }
  const ModelConfig& config() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }
  bool supports_packed() const override { return true; }  // both reference attentions take Batch::positions

  void get_params(float* dst) const override { std::memcpy(dst, params_.data(), layout_.total * sizeof(float)); }
  void set_params(const float* src) override { std::memcpy(params_.data(), src, layout_.total * sizeof(float)); }
  void get_grads(float* dst) const override { std::memcpy(dst, grads_.data(), layout_.total * sizeof(float)); }
  void get_optimizer_state(float* m, float* v) const override {
    std::memcpy(m, m_.data(), layout_.total * sizeof(float));
    std::memcpy(v, v_.data(), layout_.total * sizeof(float));
  }
  void set_optimizer_state(const float* m, const float* v) override {
    std::memcpy(m_.data(), m, layout_.total * sizeof(float));
    std::memcpy(v_.data(), v, layout_.total * sizeof(float));
  }
  HostState host_state() override { return {params_.data(), m_.data(), v_.data()}; }
  void zero_grad() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }

  double grad_norm_sq() override {
    set_threads_();
    return sum_squares(grads_.data(), grads_.size());
  }
  void optimizer_step(const AdamWHyper& hp) override {
    set_threads_();
    adamw_update(params_.data(), grads_.data(), m_.data(), v_.data(), layout_, 0, layout_.total, hp);
  }

 protected:
  CpuStateBackend(const ModelConfig& cfg, const BackendOptions& opts) : cfg_(cfg) {
    ENGINE_CHECK(opts.precision == "fp32", BadConfig, "set training.precision to 'fp32' for the cpu backend",
                 "the cpu backend computes in fp32 only; precision '%s' requested", opts.precision.c_str());
    ENGINE_CHECK(opts.zero_stage == 0 && opts.world_size == 1 && opts.offload == "none", BadConfig,
                 "ZeRO, data parallelism and offload need the cuda backend",
                 "cpu backend: zeroStage %d, world size %d, offload '%s' requested", opts.zero_stage, opts.world_size,
                 opts.offload.c_str());
    threads_ = opts.num_threads;
#ifdef _OPENMP
    if (threads_ <= 0) threads_ = omp_get_num_procs();
#else
    if (threads_ <= 0) threads_ = 1;
#endif
  }

  // Allocate the four (layout_.total) fp32 buffers and fill info_. Linux overcommits: buffers larger than RAM
  // would "succeed" and the worker be killed while zeroing them, so check physical memory first.
  void alloc_state_() {
    const size_t phys = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    ENGINE_CHECK(layout_.total * 16 < phys, OutOfMemory, "use a smaller model or the cuda backend",
                 "%s with %zu parameters needs %.1f GiB for weights, gradients and AdamW state; the machine has %.1f GiB",
                 cfg_.family.c_str(), layout_.total, layout_.total * 16 / 1073741824.0, phys / 1073741824.0);
    try {
      params_.assign(layout_.total, 0.0f);
      grads_.assign(layout_.total, 0.0f);
      m_.assign(layout_.total, 0.0f);
      v_.assign(layout_.total, 0.0f);
    } catch (const std::bad_alloc&) {
      ENGINE_THROW(OutOfMemory, "use a smaller model", "cannot allocate 4 x %zu fp32 parameters", layout_.total);
    }
    info_.name = "cpu";
    info_.precision = "fp32";
    info_.blas = gemm_name();
    info_.num_threads = threads_;
    info_.device = strfmt("cpu (%d threads)", threads_);
  }

  // Thread counts are per calling thread: each libuv worker thread that runs a step sets its own.
  void set_threads_() {
#ifdef _OPENMP
    omp_set_num_threads(threads_);
#endif
    gemm_set_threads(threads_);
  }

  // The model-state part of memory(); the backend adds activations and the KV cache.
  MemoryReport state_memory_() const {
    MemoryReport r;
    r.params_bytes = params_.capacity() * sizeof(float);
    r.grads_bytes = grads_.capacity() * sizeof(float);
    r.optimizer_bytes = (m_.capacity() + v_.capacity()) * sizeof(float);
    return r;
  }

 public:
  // ---- generation: the KV cache's slots and lengths; the backend computes rows (kv_rows_) ----
  void kv_begin(size_t slots, size_t max_len) override {
    ENGINE_CHECK(max_len >= 1 && max_len <= cfg_.n_positions, BadShape, "", "KV cache length %zu not in [1, %zu]",
                 max_len, cfg_.n_positions);
    kv_.slots = slots;
    kv_.max_len = max_len;
    kv_.k.assign(cfg_.n_layer * slots * max_len * kv_width_(), 0.0f);
    kv_.v.assign(cfg_.n_layer * slots * max_len * kv_width_(), 0.0f);
    kv_.len.assign(slots, 0);
  }
  void kv_prefill(size_t slot, const int32_t* tokens, size_t n, float* logits) override {
    ENGINE_CHECK(slot < kv_.slots, BadShape, "", "slot %zu of %zu", slot, kv_.slots);
    std::vector<size_t> slots(n, slot), pos(n);
    for (size_t i = 0; i < n; i++) pos[i] = kv_.len[slot] + i;
    kv_rows_(slots.data(), pos.data(), tokens, n, /*logits_from=*/n - 1, logits);
    kv_.len[slot] += n;
  }
  void kv_decode(const size_t* slots, const int32_t* tokens, size_t n, float* logits) override {
    std::vector<size_t> pos(n);
    for (size_t i = 0; i < n; i++) {
      ENGINE_CHECK(slots[i] < kv_.slots, BadShape, "", "slot %zu of %zu", slots[i], kv_.slots);
      pos[i] = kv_.len[slots[i]];
    }
    kv_rows_(slots, pos.data(), tokens, n, 0, logits);
    for (size_t i = 0; i < n; i++) kv_.len[slots[i]]++;
  }
  void kv_end() override { kv_ = KvCache(); }

 protected:
  // Per layer, per slot, (max_len, kv_width_()) keys and values.
  struct KvCache {
    size_t slots = 0, max_len = 0;
    std::vector<float> k, v;   // (L, slots, max_len, kv_width_())
    std::vector<size_t> len;   // (slots) tokens cached so far
  };
  // Floats per cached token and layer (GPT-2: n_embd; grouped-query attention: n_kv_head * head_dim).
  virtual size_t kv_width_() const { return cfg_.n_embd; }
  // Inference forward for n rows, row i = token tokens[i] at position pos[i] of KV slot slots[i]. All rows'
  // keys/values are written to the cache before attention, so rows of one slot see each other causally
  // (prefill). Logits are computed for rows [logits_from, n) only.
  virtual void kv_rows_(const size_t* slots, const size_t* pos, const int32_t* tokens, size_t n, size_t logits_from,
                        float* logits) = 0;

  ModelConfig cfg_;
  ParamLayout layout_;
  BackendInfo info_;
  int threads_ = 1;
  std::vector<float> params_, grads_, m_, v_;  // (layout_.total) each
  KvCache kv_;
};

}  // namespace engine
