// offload.cuh — optimizer offload for the cuda backend (ZeRO-Offload, Ren et al. 2021): the fp32 master weights
// and the AdamW moments of this rank's shard live in pinned host memory and are updated by the CPU AdamW
// (engine/cpu_adam.h); the GPU keeps only its weights in the compute type T (bf16, or fp32 in the parity mode) and
// the fp32 gradients. Per optimizer step:
//
//   GPU compute stream   ... backward(unit L-1) | backward(unit L-2) | ... | backward(unit 0) | norm, gate
//   D2H stream                grads(L-1) ------> grads(L-2) ------> ...     grads(0)            gate
//   CPU worker                                                                                  AdamW(unit 0) AdamW(1) ...
//   H2D stream                                                                                    weights(0)   weights(1) ...
//   next step's forward                                                                             fwd(0) waits | fwd(1) waits ...
//
// Gradients go to the host unit by unit while the backward pass goes on (grads_ready, called in the LAST
// micro-batch once a unit's gradients are final); the CPU starts when the device has the global norm and the
// clip/skip decision (the gate: the update needs the clipping factor, which needs every gradient); it updates the
// units in forward order, writes the new weights as T into a small pinned ring and streams them back chunk by
// chunk; the next step's forward waits for each unit's weights separately (params_ready), so the CPU step
// overlaps the next forward instead of preceding it.
//
// Delayed mode (parallelism.offload.delayedUpdate; ZeRO-Offload's "delayed parameter update"): the update computed
// from step k's gradients is written to the device only after step k+1's last backward has passed each unit, so
// step k+1 computes its gradients with the weights one update old and the CPU step overlaps all of step k+1.
// The loss curve differs slightly from the exact mode (documented in README.md). sync() flushes the pending update
// (checkpoints, evaluation and get_params see the newest weights).
//
// Synchronisation without host stalls on the GPU side: every cross-agent signal is a monotonic counter per unit
// (the step number k). The GPU signals "unit u's gradients of step k are final" by a one-thread kernel writing a
// host-mapped word; the D2H/H2D completions are host functions on the copy streams; the GPU waits for "unit u's
// weights of update k are on the device" or "the CPU has read unit u's host gradients of step k" with a one-thread
// spin kernel on a host-mapped word (only when the host has not already seen the value). Counters never go back,
// so no event is ever re-recorded under someone waiting on it.
#pragma once
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include "backend.h"
#include "cpu_adam.h"
#include "cuda_common.cuh"

namespace cudabk {

// Spin on a host-mapped counter until it reaches `target`. abort != 0 (the host gave up) or 10 minutes without
// reaching it (a dead CPU worker) set *timed_out and return, so the GPU never hangs; the host then reports the
// worker's error.
static __global__ void offload_wait_kernel(const volatile unsigned* counter, unsigned target, const volatile int* abort,
                                           volatile int* timed_out) {
  if (threadIdx.x != 0) return;
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  while (*counter < target) {
    if (*abort) return;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 > 600ull * 1000000000ull) { *timed_out = 1; return; }
    __nanosleep(1000);
  }
  __threadfence_system();
}
// counter = value (host-mapped), after everything before it on the stream
static __global__ void offload_signal_kernel(volatile unsigned* counter, unsigned value) {
  __threadfence_system();
  *counter = value;
  __threadfence_system();
}

template <typename T>
class CpuOffload {
 public:
  struct Options {
    bool delayed = false;             // one-step-delayed update (see top)
    int threads = 0;                  // CPU AdamW threads; 0 = OpenMP's default (all cores)
    size_t chunk = (size_t)1 << 22;   // elements per CPU AdamW call and per upload (16 MiB of fp32)
    int ring_slots = 8;               // pinned upload ring (exact mode, T = bf16): ring_slots * chunk * sizeof(T)
  };

  // layout: the whole model (decay flags); [lo, hi): this rank's shard of the flat layout; units: forward-order
  // ranges covering the layout (offload_units()). Allocates the pinned host state; bind() gives the device buffers.
  CpuOffload(const engine::ParamLayout& layout, size_t lo, size_t hi, const std::vector<engine::FlatRange>& units,
             const Options& o)
      : lay_(layout), plan_(engine::offload_plan(units, lo, hi, o.chunk)), opt_(o) {
    try {
      init_(hi - lo);
    } catch (...) {
      release_();  // nothing pinned stays behind when the backend reports the error and goes on
      throw;
    }
  }

  ~CpuOffload() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    if (abort_) *abort_ = 1;  // releases any GPU spin (nothing may be waiting on us any more)
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    release_();
  }
  CpuOffload(const CpuOffload&) = delete;
  CpuOffload& operator=(const CpuOffload&) = delete;

  // d_weights_lo / d_grads_lo: the device addresses of element lo in the compute-weight and fp32 gradient buffers
  // (the full buffers plus lo, or the shard buffers at ZeRO-3).
  void bind(T* d_weights_lo, const float* d_grads_lo) {
    dw_ = d_weights_lo;
    dg_ = d_grads_lo;
  }

  // ------------------------------------------------------------------------------------------ host state
  // Shard-local (element lo at index 0), valid after sync(). Write through set_master / the pointers + upload_all.
  float* master() { return master_; }
  float* moments_m() { return m_; }
  float* moments_v() { return v_; }
  size_t size() const { return n_; }
  size_t lo() const { return plan_.lo; }
  size_t host_bytes() const { return host_bytes_; }
  const engine::OffloadPlan& plan() const { return plan_; }

  // Copy the master weights (fp32, shard-local) to the device weights as T. Host-synchronous.
  void upload_all() {
    sync();
    for (size_t u = 0; u < plan_.units.size(); u++)
      for (const engine::FlatRange& c : plan_.chunks[u]) upload_chunk_(c, nullptr);
    CUDA_CHECK(cudaStreamSynchronize(h2d_));
  }

  // ------------------------------------------------------------------------------------------ per-step hooks
  // Unit u's gradients (fp32, shard part) are final after the work queued so far on `s` (call once per optimizer
  // step, in the last micro-batch). Streams them to the host; overlaps the rest of the backward pass.
  void grads_ready(size_t u, cudaStream_t s) {
    check_worker_();
    const unsigned k = (unsigned)(steps_ + 1);  // the step being queued
    if (opt_.delayed) {  // the pending update of this unit may be uploaded once this point of the stream is passed
      offload_signal_kernel<<<1, 1, 0, s>>>(d_grad_done_ + u, k);
      LAUNCH_CHECK();
    }
    const engine::FlatRange r = plan_.units[u];
    if (r.size() == 0) return host_mark_d2h_(u, k);
    // the host buffer is free once the CPU has read the previous step's gradients of this unit
    wait_counter_(d2h_, d_read_done_ + u, read_done_ + u, k - 1);
    CUDA_CHECK(cudaEventRecord(ev_, s));
    CUDA_CHECK(cudaStreamWaitEvent(d2h_, ev_, 0));
    CUDA_CHECK(cudaMemcpyAsync(grads_ + (r.begin - plan_.lo), dg_ + (r.begin - plan_.lo), r.size() * 4,
                               cudaMemcpyDeviceToHost, d2h_));
    host_fn_(d2h_, [this, u, k] { mark_d2h_(u, k); });
  }

  // The step's gradients are all on their way (every grads_ready called) and `d_gate` ([0] clip scale, [1] apply,
  // device, written by the step gate kernel on `s`) is queued: the CPU AdamW of this step starts as soon as the
  // gate arrives. hp.grad_scale is replaced by the gate's scale (d_gate nullptr: hp.grad_scale, always applied).
  void step(const engine::AdamWHyper& hp, const double* d_gate, cudaStream_t s) {
    check_worker_();
    const unsigned k = (unsigned)++steps_;
    if (d_gate) CUDA_CHECK(cudaMemcpyAsync(gate_pinned_, d_gate, 2 * sizeof(double), cudaMemcpyDeviceToHost, s));
    auto* job = new Job{hp, k, (double)hp.grad_scale, true};
    const bool gated = d_gate != nullptr;
    host_fn_(s, [this, job, gated] {  // runs once the copy is done: hand the job to the worker
      if (gated) {
        job->scale = gate_pinned_[0];
        job->apply = gate_pinned_[1] != 0.0;
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        jobs_.push_back(*job);
      }
      delete job;
      cv_.notify_all();
    });
  }

  // Make `s` wait until unit u's weights hold every update this mode requires before the step being queued
  // (exact: all previous steps; delayed: all but the last). Cheap when they already do.
  void params_ready(size_t u, cudaStream_t s) {
    check_worker_();
    const long need = opt_.delayed ? (long)steps_ - 1 : (long)steps_;
    if (need > 0) wait_counter_(s, d_uploaded_ + u, uploaded_ + u, (unsigned)need);
  }
  // Make `s` wait until unit u holds update `need` (and every earlier one).
  void wait_uploaded(size_t u, cudaStream_t s, unsigned need) {
    check_worker_();
    wait_counter_(s, d_uploaded_ + u, uploaded_ + u, need);
  }
  // Delayed mode: the step being queued has finished its last backward at this point of `s`, so the pending
  // update may overwrite every unit's weights from here on (the per-unit grads_ready signals do it unit by unit).
  void backward_done(cudaStream_t s) {
    offload_signal_kernel<<<1, 1, 0, s>>>(d_bwd_done_, (unsigned)(steps_ + 1));
    LAUNCH_CHECK();
  }
  long steps() const { return steps_; }
  bool delayed() const { return opt_.delayed; }

  // Before `s` overwrites the device gradients (zero_grad of the next step): wait for their D2H copies.
  void before_grad_reset(cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(ev_, d2h_));
    CUDA_CHECK(cudaStreamWaitEvent(s, ev_, 0));
  }

  // Host: every queued update computed and on the device (a delayed update is flushed: uploaded now instead of
  // after the next backward). Rethrows a CPU worker error.
  void sync() {
    std::unique_lock<std::mutex> lk(mu_);
    flush_ = (unsigned)steps_;
    cv_.notify_all();
    const unsigned k = (unsigned)steps_;
    cv_.wait(lk, [&] { return done_ >= k || err_; });
    lk.unlock();
    check_worker_();
    CUDA_CHECK(cudaStreamSynchronize(h2d_));
    CUDA_CHECK(cudaStreamSynchronize(d2h_));
  }

  // After a failed step (device error, abort): let every GPU spin return, so the streams drain.
  void abort() { *abort_ = 1; }

 private:
  struct Job {
    engine::AdamWHyper hp;
    unsigned k;
    double scale;
    bool apply;
  };

  void init_(size_t n) {
    const size_t U = plan_.units.size();
    n_ = n;
    host_alloc_(&master_, n * 4, "fp32 master weights");
    host_alloc_(&m_, n * 4, "AdamW first moments");
    host_alloc_(&v_, n * 4, "AdamW second moments");
    host_alloc_(&grads_, n * 4, "gradients");
    float *ms = master_, *mm = m_, *mv = v_;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) ms[i] = 0.f, mm[i] = 0.f, mv[i] = 0.f;
    if (sizeof(T) == 2) {
      // delayed: the uploads wait for the next backward, so the whole update is staged; exact: a ring of chunks
      stage_elems_ = opt_.delayed ? n : (size_t)std::max(2, opt_.ring_slots) * opt_.chunk;
      host_alloc_(&stage_, std::max<size_t>(stage_elems_, 1) * 2, "upload staging");
    }
    // host-mapped words the GPU reads (uploaded, read_done, abort, timed_out) or writes (grad_done, bwd_done)
    size_t words = 3 * U + 3;
    CUDA_CHECK(cudaHostAlloc((void**)&flags_, words * sizeof(unsigned), cudaHostAllocMapped | cudaHostAllocPortable));
    std::memset((void*)flags_, 0, words * sizeof(unsigned));
    unsigned* dflags = nullptr;
    CUDA_CHECK(cudaHostGetDevicePointer((void**)&dflags, (void*)flags_, 0));
    uploaded_ = flags_, read_done_ = flags_ + U, grad_done_ = flags_ + 2 * U;
    abort_ = (volatile int*)(flags_ + 3 * U), timed_out_ = (volatile int*)(flags_ + 3 * U + 1);
    d_uploaded_ = dflags, d_read_done_ = dflags + U, d_grad_done_ = dflags + 2 * U;
    d_abort_ = (int*)(dflags + 3 * U), d_timed_out_ = (int*)(dflags + 3 * U + 1);
    bwd_done_ = flags_ + 3 * U + 2, d_bwd_done_ = dflags + 3 * U + 2;
    d2h_done_.assign(U, 0);
    CUDA_CHECK(cudaMallocHost((void**)&gate_pinned_, 2 * sizeof(double)));
    CUDA_CHECK(cudaStreamCreateWithFlags(&d2h_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&h2d_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ev_, cudaEventDisableTiming));
    slot_ev_.assign(sizeof(T) == 2 && !opt_.delayed ? std::max(2, opt_.ring_slots) : 0, nullptr);
    for (auto& e : slot_ev_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    CUDA_CHECK(cudaGetDevice(&device_));
    worker_ = std::thread([this] { run_(); });
  }
  void release_() {
    if (d2h_) cudaStreamSynchronize(d2h_);
    if (h2d_) cudaStreamSynchronize(h2d_);
    for (auto& e : slot_ev_)
      if (e) cudaEventDestroy(e), e = nullptr;
    if (ev_) cudaEventDestroy(ev_), ev_ = nullptr;
    if (d2h_) cudaStreamDestroy(d2h_), d2h_ = nullptr;
    if (h2d_) cudaStreamDestroy(h2d_), h2d_ = nullptr;
    for (void* p : {(void*)master_, (void*)m_, (void*)v_, (void*)grads_, (void*)stage_, (void*)gate_pinned_, (void*)flags_})
      if (p) cudaFreeHost(p);
    master_ = m_ = v_ = grads_ = nullptr, stage_ = nullptr, gate_pinned_ = nullptr, flags_ = nullptr, abort_ = nullptr;
  }

  void host_alloc_(float** p, size_t bytes, const char* what) { host_alloc_((void**)p, bytes, what); }
  void host_alloc_(uint16_t** p, size_t bytes, const char* what) { host_alloc_((void**)p, bytes, what); }
  void host_alloc_(void** p, size_t bytes, const char* what) {
    cudaError_t e = cudaMallocHost(p, std::max<size_t>(bytes, 64));
    if (e != cudaSuccess) {
      cudaGetLastError();
      char msg[256];
      snprintf(msg, sizeof msg, "out of pinned host memory allocating the offloaded %s (%.2f GiB; %.2f GiB already held)",
               what, bytes / 1073741824.0, host_bytes_ / 1073741824.0);
      throw engine::EngineError(engine::ErrorCode::OutOfMemory, msg, "offload.cuh", __LINE__,
                                "optimizer offload keeps 16 bytes per parameter of this GPU's shard in pinned host "
                                "memory: use more GPUs with a higher parallelism.zeroStage, a smaller model, or a "
                                "host with more memory");
    }
    host_bytes_ += bytes;
  }

  // make `s` wait until *counter >= target (skipped when the host already sees it)
  void wait_counter_(cudaStream_t s, unsigned* dcounter, volatile unsigned* hcounter, unsigned target) {
    if (target == 0 || *hcounter >= target) return;
    offload_wait_kernel<<<1, 32, 0, s>>>(dcounter, target, d_abort_, d_timed_out_);
    LAUNCH_CHECK();
  }

  template <typename F>
  void host_fn_(cudaStream_t s, F f) {
    auto* fp = new std::function<void()>(std::move(f));
    cudaError_t e = cudaLaunchHostFunc(s, [](void* a) {
      auto* g = (std::function<void()>*)a;
      (*g)();
      delete g;
    }, fp);
    if (e != cudaSuccess) delete fp;
    CUDA_CHECK(e);
  }

  void mark_d2h_(size_t u, unsigned k) {
    {
      std::lock_guard<std::mutex> g(mu_);
      d2h_done_[u] = std::max(d2h_done_[u], k);
    }
    cv_.notify_all();
  }
  void host_mark_d2h_(size_t u, unsigned k) { mark_d2h_(u, k); }
  static void store_max_(volatile unsigned* w, unsigned k) {
    if (*w < k) {
      std::atomic_thread_fence(std::memory_order_release);
      *w = k;
    }
  }

  void check_worker_() {
    if (*timed_out_)
      throw engine::EngineError(engine::ErrorCode::Device, "the GPU waited 10 minutes for the CPU optimizer", "offload.cuh",
                                __LINE__, "restart the worker; if it repeats, report it with the log");
    std::lock_guard<std::mutex> g(mu_);
    if (err_) std::rethrow_exception(err_);
  }

  // upload one chunk of the new weights in the device dtype: fp32 straight from the master, bf16 from `staged`
  // (or, when null, converted from the master first: upload_all)
  void upload_chunk_(const engine::FlatRange& c, uint16_t* staged) {
    const size_t off = c.begin - plan_.lo;
    if constexpr (sizeof(T) == 4) {
      CUDA_CHECK(cudaMemcpyAsync(dw_ + off, master_ + off, c.size() * 4, cudaMemcpyHostToDevice, h2d_));
    } else {
      if (!staged) {  // from the master: convert into the ring first (used by upload_all)
        staged = stage_ + (opt_.delayed ? off : 0);
        if (!opt_.delayed) CUDA_CHECK(cudaStreamSynchronize(h2d_));
        const float* src = master_ + off;
#pragma omp parallel for schedule(static)
        for (long i = 0; i < (long)c.size(); i++) staged[i] = engine::f32_to_bf16(src[i]);
      }
      CUDA_CHECK(cudaMemcpyAsync(dw_ + off, staged, c.size() * 2, cudaMemcpyHostToDevice, h2d_));
    }
  }

  // ------------------------------------------------------------------------------------------ CPU worker
  void run_() {
    cudaSetDevice(device_);
    if (opt_.threads > 0) omp_set_num_threads(opt_.threads);
    size_t slot = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
        if (stop_) return;
        job = jobs_.front();
        jobs_.pop_front();
      }
      try {
        // delayed: the previous update's uploads read the staging area / master this job rewrites
        if (opt_.delayed) CUDA_CHECK(cudaStreamSynchronize(h2d_));
        engine::AdamWHyper hp = job.hp;
        hp.grad_scale = (float)job.scale;
        const size_t U = plan_.units.size();
        for (size_t u = 0; u < U; u++) {
          {  // this unit's gradients of step k are on the host
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stop_ || d2h_done_[u] >= job.k; });
            if (stop_) return;
          }
          for (const engine::FlatRange& c : plan_.chunks[u]) {
            const size_t off = c.begin - plan_.lo;
            uint16_t* out = nullptr;
            if (sizeof(T) == 2) {
              if (opt_.delayed) out = stage_ + off;
              else {
                CUDA_CHECK(cudaEventSynchronize(slot_ev_[slot]));  // the upload that last used this slot is done
                out = stage_ + slot * opt_.chunk;
              }
            }
            if (job.apply) engine::cpu_adamw_update_range(master_ + off, grads_ + off, m_ + off, v_ + off, out, lay_, c.begin, c.end, hp);
            else if (out) for (size_t i = 0; i < c.size(); i++) out[i] = engine::f32_to_bf16(master_[off + i]);
            if (!opt_.delayed) {
              upload_chunk_(c, out);
              if (!slot_ev_.empty()) {
                CUDA_CHECK(cudaEventRecord(slot_ev_[slot], h2d_));
                slot = (slot + 1) % slot_ev_.size();
              }
            }
          }
          store_max_(read_done_ + u, job.k);  // the host gradients of unit u may be overwritten
          if (!opt_.delayed) mark_uploaded_(u, job.k);
        }
        if (opt_.delayed) {
          // in backward order (the order the next step frees the units), each after the next step's last backward
          // has passed it — or at once when sync() flushes
          for (size_t u = U; u-- > 0;) {
            {  // grad_done_ is written by the GPU, which cannot wake the cv: poll it every 100 us
              std::unique_lock<std::mutex> lk(mu_);
              while (!(stop_ || flush_ >= job.k || grad_done_[u] >= job.k + 1 || *bwd_done_ >= job.k + 1))
                cv_.wait_for(lk, std::chrono::microseconds(100));
              if (stop_) return;
            }
            for (const engine::FlatRange& c : plan_.chunks[u]) upload_chunk_(c, stage_ + (c.begin - plan_.lo));
            mark_uploaded_(u, job.k);
          }
        }
        {
          std::lock_guard<std::mutex> g(mu_);
          done_ = job.k;
        }
        cv_.notify_all();
      } catch (...) {
        {
          std::lock_guard<std::mutex> g(mu_);
          err_ = std::current_exception();
        }
        *abort_ = 1;
        cv_.notify_all();
        return;
      }
    }
  }
  // after the unit's uploads: the device may use the weights of update k
  void mark_uploaded_(size_t u, unsigned k) {
    volatile unsigned* w = uploaded_ + u;
    host_fn_(h2d_, [w, k] { store_max_(w, k); });
  }

  const engine::ParamLayout& lay_;
  engine::OffloadPlan plan_;
  Options opt_;
  T* dw_ = nullptr;
  const float* dg_ = nullptr;
  size_t n_ = 0, host_bytes_ = 0, stage_elems_ = 0;
  float *master_ = nullptr, *m_ = nullptr, *v_ = nullptr, *grads_ = nullptr;
  uint16_t* stage_ = nullptr;
  double* gate_pinned_ = nullptr;
  volatile unsigned *flags_ = nullptr, *uploaded_ = nullptr, *read_done_ = nullptr, *grad_done_ = nullptr;
  volatile int *abort_ = nullptr, *timed_out_ = nullptr;
  volatile unsigned* bwd_done_ = nullptr;
  unsigned* d_bwd_done_ = nullptr;
  unsigned *d_uploaded_ = nullptr, *d_read_done_ = nullptr, *d_grad_done_ = nullptr;
  int *d_abort_ = nullptr, *d_timed_out_ = nullptr;
  cudaStream_t d2h_ = nullptr, h2d_ = nullptr;
  cudaEvent_t ev_ = nullptr;
  std::vector<cudaEvent_t> slot_ev_;
  int device_ = 0;
  long steps_ = 0;  // steps queued (host thread)
  // worker state, under mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::vector<unsigned> d2h_done_;
  unsigned done_ = 0, flush_ = 0;
  bool stop_ = false;
  std::exception_ptr err_;
  std::thread worker_;
};

}  // namespace cudabk
