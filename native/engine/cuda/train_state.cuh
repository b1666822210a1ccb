// train_state.cuh — the model-independent half of a CUDA training backend: compute weights (bf16 or fp32),
// fp32 master weights, fp32 gradients, AdamW moments, the gradient norm, clipping, the divergence gate, AdamW,
// the step orchestration (begin_step / end_step / wait_step), memory accounting and out-of-memory errors, and
// ZeRO data parallelism over NCCL (stages 0-3). The model class (cuda_backend.cu, every family) owns activations
// and the forward/backward kernels and reaches every parameter and gradient through this object, unit by unit, so sharding, collectives and offload work the same for every family.
//
// Units: the model splits the flat parameter vector (params.h order, layer-major) into contiguous units — one per
// transformer block plus the embeddings and the head (layer_units()). A unit marked persistent (embeddings, final
// norm / head) stays resident for the whole step; the others rotate through two buffers at ZeRO-3.
//   T*     layer_params(u, next)  before reading unit u's weights; ZeRO-3 waits for u's gather and starts next's
//   float* layer_grads(u)         before writing unit u's gradients (ZeRO-2/3: a zeroed fp32 bucket)
//   void   layer_grads_done(u)    after the last write of u's gradients in this micro-batch (ZeRO-2/3: reduce
//                                 the bucket to the owning ranks on the communication stream, overlapping the
//                                 rest of the backward)
//   T* param(i), float* grad(i)   tensor i (ParamLayout index) inside its unit's current buffer
// At stages 0/1 (and for param() below stage 3) these are plain offsets into full buffers and cost nothing.
//
// Sharding (zero.h): rank r owns [r*S, (r+1)*S) of the flat vector padded to W*S (S a multiple of 128).
//   stage 0  everything replicated; W > 1: fp32 gradients all-reduced once per step
//   stage 1  master/m/v sharded; the full fp32 gradients reduce-scattered once per step; AdamW on the shard;
//            compute weights all-gathered after the update
//   stage 2  + gradients sharded: per unit and micro-batch, the unit's bucket is reduced (ncclReduce to each rank
//            owning part of it, grouped) into the shard's gradient accumulator, while the backward goes on
//   stage 3  + compute weights sharded: units are gathered (grouped ncclBroadcast from their owners) into two
//            rotating buffers, the next one prefetched while the current one computes; persistent units once
//            per parameter version
// The reduction order of every collective is fixed by NCCL for a given communicator, so runs repeat bitwise.
// Gradients are fp32 (exact accumulation over micro-batches; the single-GPU backend's choice), which changes the
// ZeRO paper's constants (2-byte gradients): see model_state_formula().
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>
#include "adamw.cuh"   // gradient norm, AdamW kernel, step gate, copy_to_compute
#include "backend.h"   // AdamWHyper, StepOutput, MemoryReport
#include "nccl.cuh"    // dlopen'ed NCCL (only touched when world_size > 1)
#include "offload.cuh" // optimizer offload: pinned host master/m/v, CPU AdamW (offload_* below)
#include "zero.h"      // zero_shard_size

namespace cudabk {
using namespace engine;

inline std::string gib(size_t b) {
  char s[32];
  snprintf(s, sizeof s, "%.2f GiB", b / 1073741824.0);
  return s;
}

// ------------------------------------------------------------------------------------------------------------
// Device allocations charged to a byte counter; out of memory becomes OUT_OF_MEMORY naming what, how big, how
// much of the GPU is in use, and the setting to change (hint).
class DeviceMemory {
 public:
  std::string device_name;
  void* alloc(size_t bytes, size_t* counter, const std::string& what, const std::string& hint) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
    if (e != cudaSuccess) {
      cudaGetLastError();  // allocation failures are not sticky; clear the error so the context stays usable
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      throw EngineError(ErrorCode::OutOfMemory,
                        "out of GPU memory allocating " + what + " (" + gib(bytes) + "): " + gib(tot - fr) + " of " +
                            gib(tot) + " in use on " + device_name + " (this backend holds " + gib(held()) + ")",
                        "train_state.cuh", __LINE__, hint);
    }
    owned_.push_back({p, bytes, counter});
    if (counter) *counter += bytes;
    return p;
  }
  void free(void* p) {
    if (!p) return;
    for (size_t i = 0; i < owned_.size(); i++)
      if (owned_[i].p == p) {
        if (owned_[i].counter) *owned_[i].counter -= owned_[i].bytes;
        owned_.erase(owned_.begin() + i);
        break;
      }
    cudaFree(p);
  }
  size_t held() const {
    size_t s = 0;
    for (const Owned& o : owned_) s += o.bytes;
    return s;
  }
  ~DeviceMemory() {
    for (const Owned& o : owned_) cudaFree(o.p);
  }

 private:
  struct Owned { void* p; size_t bytes; size_t* counter; };
  std::vector<Owned> owned_;
};

// A contiguous range of the flat parameter vector that is gathered / reduced as one piece.
struct ParamUnit {
  size_t begin = 0, end = 0;
  bool persistent = false;  // kept for the whole step (embeddings, head); else one of two rotating buffers
  size_t size() const { return end - begin; }
};

// Units for a layer-major layout: [0, first block) persistent, one per block, [end of blocks, total) persistent.
// Blocks are `per_block` consecutive tensors starting at tensor index `first`.
inline std::vector<ParamUnit> layer_units(const ParamLayout& lay, size_t first, size_t per_block, size_t n_layer) {
  std::vector<ParamUnit> u;
  const size_t b0 = lay.tensors.at(first).offset;
  const ParamTensor& last = lay.tensors.at(first + per_block * n_layer - 1);
  u.push_back({0, b0, true});
  for (size_t l = 0; l < n_layer; l++) {
    size_t b = lay.tensors.at(first + l * per_block).offset;
    const ParamTensor& e = lay.tensors.at(first + (l + 1) * per_block - 1);
    u.push_back({b, e.offset + e.numel, false});
  }
  u.push_back({last.offset + last.numel, lay.total, true});
  return u;
}

struct TrainStateConfig {
  cudaStream_t stream = nullptr;  // the model's compute stream
  std::string precision = "bf16";
  int zero_stage = 0, world_size = 1, rank = 0;
  nccl::Comm comm = nullptr;      // required when world_size > 1
  std::string offload = "none";   // "cpu": the offload_* hooks below (offload.cuh)
  bool offload_delayed = false;   // one-step-delayed CPU update (offload.cuh, top)
};

// The ZeRO paper's per-rank model-state bytes (2-byte params and grads) and this engine's (fp32 gradients).
struct ModelStateFormula {
  double paper = 0, ours = 0;
  std::string text;
};
inline ModelStateFormula model_state_formula(size_t psi, int stage, int W, bool bf16) {
  const double P = (double)psi, N = (double)W, pb = bf16 ? 2 : 4, mb = bf16 ? 4 : 0;
  ModelStateFormula f;
  auto at = [&](double gbytes, double* out, std::string* t) {
    double opt = mb + 8;  // master + m + v
    switch (stage) {
      case 0: *out = P * (pb + gbytes + opt); break;
      case 1: *out = P * (pb + gbytes) + P * opt / N; break;
      case 2: *out = P * pb + P * (gbytes + opt) / N; break;
      default: *out = P * (pb + gbytes + opt) / N; break;
    }
    if (t) *t = strfmt("stage %d, %s params, %g-byte grads: %g bytes/param", stage, bf16 ? "bf16" : "fp32", gbytes, *out / P);
  };
  at(bf16 ? 2 : 4, &f.paper, nullptr);
  at(4, &f.ours, &f.text);
  return f;
}

static __global__ void train_state_add_kernel(float* dst, const float* src, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}
inline void add_kernel_(float* dst, const float* src, size_t n, cudaStream_t s) {
  if (!n) return;
  train_state_add_kernel<<<ceil_div(n, 256), 256, 0, s>>>(dst, src, n);
  LAUNCH_CHECK();
}

template <typename T>
class TrainState {
 public:
  DeviceMemory mem;
  size_t bytes_params = 0, bytes_grads = 0, bytes_opt = 0, bytes_buffers = 0, bytes_misc = 0;

  TrainState(const ParamLayout& lay, std::vector<ParamUnit> units, const TrainStateConfig& c, const std::string& device_name)
      : lay_(lay), units_(std::move(units)), c_(c), s_(c.stream) {
    mem.device_name = device_name;
    W_ = c.world_size, r_ = c.rank, stage_ = c.zero_stage;
    ENGINE_CHECK(stage_ >= 0 && stage_ <= 3, BadConfig, "set parallelism.zeroStage to 0, 1, 2 or 3", "zeroStage %d", stage_);
    ENGINE_CHECK(W_ >= 1 && r_ >= 0 && r_ < W_, BadConfig, "", "rank %d of world size %d", r_, W_);
    ENGINE_CHECK(W_ == 1 || c.comm, Internal, "", "world size %d without an NCCL communicator", W_);
    ENGINE_CHECK(c.offload == "none" || c.offload == "cpu", BadConfig, "use 'none' or 'cpu'",
                 "unknown parallelism.offload.optimizer '%s'", c.offload.c_str());
    n_ = lay.total;
    S_ = zero_shard_size(n_, W_);
    Np_ = S_ * (size_t)W_;
    // which unit holds each tensor; units must tile [0, total)
    tensor_unit_.assign(lay.tensors.size(), -1);
    for (size_t i = 0; i < lay.tensors.size(); i++)
      for (size_t u = 0; u < units_.size(); u++)
        if (lay.tensors[i].offset >= units_[u].begin && lay.tensors[i].offset + lay.tensors[i].numel <= units_[u].end)
          tensor_unit_[i] = (int)u;
    for (size_t i = 0; i < lay.tensors.size(); i++)
      ENGINE_CHECK(tensor_unit_[i] >= 0, Internal, "", "tensor %s lies in no parameter unit", lay.tensors[i].name.c_str());

    const std::string hint = "the model state does not fit on this GPU: raise parallelism.zeroStage, use more GPUs, "
                             "or a smaller model (the pre-flight estimate, estimateMemory(), shows the breakdown)";
    const bool alias = sizeof(T) == 4 && stage_ == 0;  // fp32 stage 0: the compute weights are the master weights
    opt_n_ = stage_ == 0 ? Np_ : S_;
    opt_begin_ = stage_ == 0 ? 0 : (size_t)r_ * S_;
    check_fits_(alias, device_name);
    if (offload_enabled()) offload_init();  // master/m/v in pinned host memory instead
    else master = (float*)mem.alloc(opt_n_ * 4, &bytes_params, "fp32 master weights", hint);
    if (stage_ < 3) params = alias && master ? (T*)master : (T*)mem.alloc(Np_ * sizeof(T), &bytes_params, "compute weights", hint);
    pshard_ = stage_ == 0 ? params : stage_ < 3 ? params + opt_begin_ : (T*)mem.alloc(S_ * sizeof(T), &bytes_params, "compute weight shard", hint);
    grads = (float*)mem.alloc((stage_ >= 2 ? S_ : Np_) * 4, &bytes_grads, "fp32 gradients", hint);
    gshard_ = stage_ == 1 ? grads + opt_begin_ : grads;
    if (!offload_enabled()) {
      adam_m = (float*)mem.alloc(opt_n_ * 4, &bytes_opt, "AdamW first moments", hint);
      adam_v = (float*)mem.alloc(opt_n_ * 4, &bytes_opt, "AdamW second moments", hint);
      for (void* p : {(void*)master, (void*)adam_m, (void*)adam_v}) CUDA_CHECK(cudaMemsetAsync(p, 0, opt_n_ * 4, s_));
    }
    dscal = (double*)mem.alloc((8 + NORM_BLOCKS) * 8, &bytes_misc, "scalars", hint);
    CUDA_CHECK(cudaMemsetAsync(grads, 0, (stage_ >= 2 ? S_ : Np_) * 4, s_));
    if (params && !alias) CUDA_CHECK(cudaMemsetAsync(params, 0, Np_ * sizeof(T), s_));
    if (stage_ == 3) CUDA_CHECK(cudaMemsetAsync(pshard_, 0, S_ * sizeof(T), s_));
    CUDA_CHECK(cudaMallocHost(&pinned_out_, 8 * sizeof(double)));
    CUDA_CHECK(cudaEventCreateWithFlags(&step_done_, cudaEventDisableTiming));
    // decay runs inside this rank's optimizer range, shard-local offsets: one AdamW launch each
    const size_t ob = opt_begin_, oe = std::min(n_, opt_begin_ + opt_n_);
    for (const ParamTensor& t : lay.tensors) {
      size_t lo = std::max(ob, t.offset), hi = std::min(oe, t.offset + t.numel);
      if (lo >= hi) continue;
      if (!runs_.empty() && runs_.back().decay == t.decay && runs_.back().end == lo - ob) runs_.back().end = hi - ob;
      else runs_.push_back({lo - ob, hi - ob, t.decay});
    }
    // unit buffers
    unit_param_.assign(units_.size(), nullptr);
    unit_grad_.assign(units_.size(), nullptr);
    unit_version_.assign(units_.size(), 0);
    if (stage_ < 3)
      for (size_t u = 0; u < units_.size(); u++) unit_param_[u] = params + units_[u].begin;
    if (stage_ < 2)
      for (size_t u = 0; u < units_.size(); u++) unit_grad_[u] = grads + units_[u].begin;
    if (stage_ >= 2) {
      CUDA_CHECK(cudaStreamCreateWithFlags(&comm_s_, cudaStreamNonBlocking));
      size_t ring = 0;
      for (const ParamUnit& u : units_) ring = u.persistent ? ring : std::max(ring, u.size());
      const std::string bh = "the communication buffers do not fit: use a model with smaller layers or fewer GPUs per process";
      own_gbuf_.assign(units_.size(), nullptr);
      own_gev_.assign(units_.size(), nullptr);
      for (size_t u = 0; u < units_.size(); u++)
        if (units_[u].persistent) {
          own_gbuf_[u] = (float*)mem.alloc(units_[u].size() * 4, &bytes_buffers, "gradient bucket", bh);
          CUDA_CHECK(cudaEventCreateWithFlags(&own_gev_[u], cudaEventDisableTiming));
        }
      for (Slot& sl : gslot_) {
        sl.buf = mem.alloc(ring * 4, &bytes_buffers, "gradient bucket", bh);
        CUDA_CHECK(cudaEventCreateWithFlags(&sl.ev, cudaEventDisableTiming));
      }
      if (stage_ == 3) {
        own_pbuf_.assign(units_.size(), nullptr);
        for (size_t u = 0; u < units_.size(); u++)
          if (units_[u].persistent) own_pbuf_[u] = (T*)mem.alloc(units_[u].size() * sizeof(T), &bytes_buffers, "gathered weights", bh);
        for (Slot& sl : pslot_) {
          sl.buf = mem.alloc(ring * sizeof(T), &bytes_buffers, "gathered weights", bh);
          CUDA_CHECK(cudaEventCreateWithFlags(&sl.ev, cudaEventDisableTiming));
        }
        own_pev_.assign(units_.size(), nullptr);
        for (size_t u = 0; u < units_.size(); u++)
          if (units_[u].persistent) CUDA_CHECK(cudaEventCreateWithFlags(&own_pev_[u], cudaEventDisableTiming));
      }
      CUDA_CHECK(cudaEventCreateWithFlags(&ev_compute_, cudaEventDisableTiming));
      CUDA_CHECK(cudaEventCreateWithFlags(&ev_comm_, cudaEventDisableTiming));
    }
    CUDA_CHECK(cudaStreamSynchronize(s_));
  }

  ~TrainState() {
    if (s_) cudaStreamSynchronize(s_);
    if (comm_s_) cudaStreamSynchronize(comm_s_);
    if (pinned_out_) cudaFreeHost(pinned_out_);
    if (step_done_) cudaEventDestroy(step_done_);
    for (Slot& sl : gslot_) if (sl.ev) cudaEventDestroy(sl.ev);
    for (Slot& sl : pslot_) if (sl.ev) cudaEventDestroy(sl.ev);
    for (cudaEvent_t e : own_pev_) if (e) cudaEventDestroy(e);
    for (cudaEvent_t e : own_gev_) if (e) cudaEventDestroy(e);
    if (ev_compute_) cudaEventDestroy(ev_compute_);
    if (ev_comm_) cudaEventDestroy(ev_comm_);
    if (comm_s_) cudaStreamDestroy(comm_s_);
  }

  // ------------------------------------------------------------------------------------------ model access
  T* params = nullptr;     // full compute weights (stages 0-2; nullptr at stage 3: use layer_params/param)
  float* master = nullptr, *grads = nullptr, *adam_m = nullptr, *adam_v = nullptr;
  double* dscal = nullptr;  // [0] loss sum (the model adds each micro-batch's), [1] free, [2] grad norm^2,
                            // [3] clip scale, [4] applied; [8..] norm partials
  int stage() const { return stage_; }
  int world_size() const { return W_; }
  int rank() const { return r_; }
  size_t n_units() const { return units_.size(); }
  const ParamUnit& unit(size_t u) const { return units_[u]; }
  cudaStream_t stream() const { return s_; }

  T* param(size_t i) {
    int u = tensor_unit_[i];
    REQUIRE(unit_param_[u], "parameter unit not gathered: call layer_params(unit) before using its weights");
    return unit_param_[u] + (lay_.tensors[i].offset - units_[u].begin);
  }
  float* grad(size_t i) {
    int u = tensor_unit_[i];
    REQUIRE(unit_grad_[u], "gradient unit not acquired: call layer_grads(unit) before writing its gradients");
    return unit_grad_[u] + (lay_.tensors[i].offset - units_[u].begin);
  }

  // Weights of unit u, ready on the compute stream; `next` (or -1) is the unit the model will ask for next, which
  // ZeRO-3 starts gathering now. Other rotating units may be overwritten from here on.
  T* layer_params(size_t u, long next = -1) {
    if (stage_ < 3) return unit_param_[u];
    acquire_params_(u, true);
    if (next >= 0 && (size_t)next != u) acquire_params_((size_t)next, false);
    return unit_param_[u];
  }
  // Gradient accumulator of unit u (ZeRO-2/3: a zeroed bucket, taken when first asked for in a micro-batch).
  float* layer_grads(size_t u) {
    if (stage_ < 2 || unit_grad_[u]) return unit_grad_[u];
    float* b;
    cudaEvent_t freed;  // recorded after the previous reduction that read this bucket
    if (units_[u].persistent) b = own_gbuf_[u], freed = own_gev_[u];
    else {
      Slot& sl = gslot_[gnext_];
      gnext_ ^= 1;
      b = (float*)sl.buf, freed = sl.ev;
    }
    gev_of_[u] = freed;
    if (freed_used_.count(freed)) CUDA_CHECK(cudaStreamWaitEvent(s_, freed, 0));
    CUDA_CHECK(cudaMemsetAsync(b, 0, units_[u].size() * 4, s_));
    unit_grad_[u] = b;
    return b;
  }
  // The model has written all of unit u's gradients for this micro-batch.
  void layer_grads_done(size_t u) {
    if (stage_ < 2) return;
    REQUIRE(unit_grad_[u], "layer_grads_done without layer_grads");
    CUDA_CHECK(cudaEventRecord(ev_compute_, s_));
    CUDA_CHECK(cudaStreamWaitEvent(comm_s_, ev_compute_, 0));
    reduce_unit_(u, unit_grad_[u]);
    CUDA_CHECK(cudaEventRecord(gev_of_[u], comm_s_));
    freed_used_.insert(gev_of_[u]);
    pending_comm_ = true;
    if (offload_enabled()) offload_grads_ready(u);
    unit_grad_[u] = nullptr;
  }

  // ------------------------------------------------------------------------------------------ a whole step
  // begin_step; the model queues its micro-batches (adding each loss sum to dscal[0]); end_step queues the
  // gradient reduction, the norm, the gate (clipping + divergence check, on the device), AdamW and the weight
  // gather without the host waiting; wait_step reads the result.
  void begin_step() {
    zero_grad();
    CUDA_CHECK(cudaMemsetAsync(dscal, 0, 5 * 8, s_));
  }
  void end_step(float dloss, const AdamWHyper& hp, float grad_clip, double max_loss) {
    reduce_grads_and_norm_();
    step_gate_kernel<<<1, 1, 0, s_>>>(dscal, dloss, max_loss, grad_clip);
    LAUNCH_CHECK();
    adamw_(hp, dscal + 3);
    after_update_();
    CUDA_CHECK(cudaMemcpyAsync(pinned_out_, dscal, 5 * 8, cudaMemcpyDeviceToHost, s_));
    CUDA_CHECK(cudaEventRecord(step_done_, s_));
  }
  StepOutput wait_step() {
    CUDA_CHECK(cudaEventSynchronize(step_done_));
    StepOutput o;
    o.loss_sum = pinned_out_[0];
    o.grad_norm_sq = pinned_out_[2];
    o.applied = pinned_out_[4] != 0.0;
    return o;
  }

  // ------------------------------------------------------------------------------------------ primitives
  void zero_grad() {
    join_comm_();
    CUDA_CHECK(cudaMemsetAsync(grads, 0, (stage_ >= 2 ? S_ : Np_) * 4, s_));
    if (stage_ >= 2) std::fill(unit_grad_.begin(), unit_grad_.end(), nullptr);
  }
  // loss sum of one micro-batch queued by the model (forward_backward primitive): dscal[0] after a sync
  double read_loss_sum() {
    join_comm_();
    CUDA_CHECK(cudaMemcpyAsync(pinned_out_, dscal, 8, cudaMemcpyDeviceToHost, s_));
    CUDA_CHECK(cudaStreamSynchronize(s_));
    return pinned_out_[0];
  }
  // squared global norm of the accumulated gradients (reduced over ranks first)
  double grad_norm_sq() {
    reduce_grads_and_norm_();
    CUDA_CHECK(cudaMemcpyAsync(pinned_out_ + 2, dscal + 2, 8, cudaMemcpyDeviceToHost, s_));
    CUDA_CHECK(cudaStreamSynchronize(s_));
    return pinned_out_[2];
  }
  void optimizer_step(const AdamWHyper& hp) {
    adamw_(hp, nullptr);
    after_update_();
    CUDA_CHECK(cudaStreamSynchronize(s_));
  }

  // ------------------------------------------------------------------------------------------ host state
  // Every rank must make these calls together (they are collectives when W > 1); dst may be nullptr on ranks
  // that only take part.
  void get_params(float* dst) {
    if (offload_enabled()) return gather_host_shard_(0, dst);
    gather_fp32_(master, dst);
  }
  void get_grads(float* dst) { gather_fp32_(stage_ == 0 ? grads : gshard_, dst); }
  void get_optimizer_state(float* m, float* v) {
    if (offload_enabled()) return gather_host_shard_(1, m), gather_host_shard_(2, v);
    gather_fp32_(adam_m, m);
    gather_fp32_(adam_v, v);
  }
  void set_params(const float* src) {
    if (offload_enabled()) {
      ShardRange r = shard();
      offload_set(src + r.begin, nullptr, nullptr);  // also writes the compute-weight shard
    } else {
      scatter_fp32_(master, src);
    }
    refresh_compute_();
    CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  void set_optimizer_state(const float* m, const float* v) {
    if (offload_enabled()) {
      ShardRange r = shard();
      offload_set(nullptr, m + r.begin, v + r.begin);
    } else {
      scatter_fp32_(adam_m, m);
      scatter_fp32_(adam_v, v);
    }
    CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  // This rank's shard [begin, end) of master/m/v (sharded checkpoints); end clipped to the parameter count.
  ShardRange shard() const { return {std::min(n_, opt_begin_), std::min(n_, opt_begin_ + opt_n_)}; }
  void get_shard(float* p, float* m, float* v) {
    if (offload_enabled()) return offload_get(p, m, v);
    const size_t n = shard().size();
    CUDA_CHECK(cudaStreamSynchronize(s_));
    if (p) CUDA_CHECK(cudaMemcpy(p, master, n * 4, cudaMemcpyDeviceToHost));
    if (m) CUDA_CHECK(cudaMemcpy(m, adam_m, n * 4, cudaMemcpyDeviceToHost));
    if (v) CUDA_CHECK(cudaMemcpy(v, adam_v, n * 4, cudaMemcpyDeviceToHost));
  }

  // Offload on one rank: master/m/v of the whole layout live in pinned host memory (Backend::host_state). A
  // pending delayed update is applied first, so what a checkpoint reads is the state after the last step.
  Backend::HostState host_state() {
    if (!offload_enabled() || W_ != 1) return {};
    CUDA_CHECK(cudaStreamSynchronize(s_));
    CpuOffload<T>& o = *offload_;
    o.sync();
    ENGINE_CHECK(o.size() >= n_, Internal, "", "offloaded shard holds %zu of %zu parameters", o.size(), n_);
    return {o.master(), o.moments_m(), o.moments_v()};
  }
  // The host master was written in place (a checkpoint loaded into it): upload it as the compute weights.
  void host_state_written() {
    if (!offload_enabled() || W_ != 1) return;
    CpuOffload<T>& o = *offload_;
    o.bind(pshard_, gshard_);
    o.upload_all();
    refresh_compute_();
    CUDA_CHECK(cudaStreamSynchronize(s_));
  }

  // Sharded checkpoints: this rank's shard, when the state is sharded over several ranks (else empty).
  std::vector<LocalShard> local_shards() {
    if (stage_ == 0 || W_ == 1) return {};
    LocalShard sh;
    sh.rank = r_, sh.world_size = W_, sh.range = shard();
    sh.params.resize(sh.range.size()), sh.m.resize(sh.range.size()), sh.v.resize(sh.range.size());
    join_comm_();
    get_shard(sh.params.data(), sh.m.data(), sh.v.data());
    return {std::move(sh)};
  }

  // Fills the model-state part of a MemoryReport (the model adds activations and its own buffers).
  void fill(MemoryReport& r) const {
    r.params_bytes = bytes_params;
    r.grads_bytes = bytes_grads;
    r.optimizer_bytes = bytes_opt;
    r.buffers_bytes = bytes_buffers;
    r.other_bytes += bytes_misc;
    r.zero_stage = stage_;
    r.world_size = W_;
    ModelStateFormula f = model_state_formula(n_, stage_, W_, sizeof(T) == 2);
    r.formula_bytes = (size_t)f.ours;
    r.formula_paper_bytes = (size_t)f.paper;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) r.device_total_bytes = tot;
  }

  // ------------------------------------------------------------------------------------------ offload hooks
  // offload.cuh: pinned host master/m/v of this rank's shard, CPU AdamW. With parallelism.offload.optimizer = 'cpu' the state never allocates master/adam_m/adam_v on the device and calls:
  //   offload_init()           from the constructor, before the device buffers: allocate the pinned host shard
  //                            (shard() gives its range, opt_n_ its padded length)
  //   offload_grads_ready(u)   stage 2/3: after unit u's reduction into gshard_ was queued on comm_s_ (stream the
  //                            unit's shard part to the host from there, overlapping the backward)
  //   offload_step(hp, gate)   instead of the device AdamW, after reduce_grads_and_norm_ (gshard_ holds this
  //                            rank's reduced fp32 gradients; gate = device [scale, applied] or nullptr); must leave
  //                            the updated weights in pshard_ (compute dtype) on s_ before after_update_ gathers
  //   offload_get(p, m, v)     this rank's shard (shard().size() floats each, any may be nullptr) to host
  //   offload_set(p, m, v)     the same from host (p also writes pshard_); any may be nullptr
  bool offload_enabled() const { return c_.offload == "cpu"; }
  std::unique_ptr<CpuOffload<T>> offload_;  // the pinned host shard + CPU AdamW worker
  // delayedUpdate: TrainStateConfig::offload_delayed (parallelism.offload.delayedUpdate)
  void offload_init() {
    const ShardRange r = shard();
    std::vector<FlatRange> fu;
    for (const ParamUnit& u : units_) fu.push_back({u.begin, u.end});
    typename CpuOffload<T>::Options o;
    o.delayed = c_.offload_delayed;
    // the ranks driven by this process share the host's cores; one core stays with the thread feeding the GPUs
    int ndev = 1;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess) cudaGetLastError(), ndev = 1;
    const int cores = omp_get_num_procs();
    o.threads = std::max(1, (cores > 4 ? cores - 1 : cores) / std::max(1, std::min(W_, ndev)));
    offload_ = std::make_unique<CpuOffload<T>>(lay_, r.begin, r.end, fu, o);
  }
  // Stage 2/3 call this after every micro-batch's reduction; the gradients are final only after the last one,
  // which the state does not know, so the shard is streamed in offload_step instead (pipelined with the CPU).
  void offload_grads_ready(size_t u) { (void)u; }
  void offload_step(const AdamWHyper& hp, const double* gate) {
    CpuOffload<T>& o = *offload_;
    o.bind(pshard_, gshard_);
    const size_t U = units_.size();
    if (!o.delayed()) {
      // gradients out unit by unit in forward order; the CPU starts on unit 0 while the rest is in flight and
      // streams each unit back; s_ waits (on the GPU) until pshard_ holds the whole update
      for (size_t u = 0; u < U; u++) o.grads_ready(u, s_);
      o.step(hp, gate, s_);
      for (size_t u = 0; u < U; u++) o.wait_uploaded(u, s_, (unsigned)o.steps());
    } else {
      // the previous step's update (computed on the CPU while this step ran) may land now that this step's
      // backward is done; this step's gradients go out and its update is applied one step late
      o.backward_done(s_);
      for (size_t u = 0; u < U; u++) o.wait_uploaded(u, s_, (unsigned)o.steps());
      for (size_t u = 0; u < U; u++) o.grads_ready(u, s_);
      o.step(hp, gate, s_);
      o.before_grad_reset(s_);  // the next zero_grad must not overwrite gradients still being copied
    }
  }
  void offload_get(float* p, float* m, float* v) {
    CpuOffload<T>& o = *offload_;
    o.sync();  // delayed mode: the pending update is applied (flushed) first
    const size_t n = o.size();
    if (p) std::memcpy(p, o.master(), n * 4);
    if (m) std::memcpy(m, o.moments_m(), n * 4);
    if (v) std::memcpy(v, o.moments_v(), n * 4);
  }
  void offload_set(const float* p, const float* m, const float* v) {
    CpuOffload<T>& o = *offload_;
    CUDA_CHECK(cudaStreamSynchronize(s_));
    o.sync();
    const size_t n = o.size();
    if (m) std::memcpy(o.moments_m(), m, n * 4);
    if (v) std::memcpy(o.moments_v(), v, n * 4);
    if (p) {
      std::memcpy(o.master(), p, n * 4);
      o.bind(pshard_, gshard_);
      o.upload_all();  // pshard_ = master in the compute dtype (host-synchronous)
    }
  }

 private:
  struct Run { size_t begin, end; bool decay; };
  struct Slot { void* buf = nullptr; long unit = -1; cudaEvent_t ev = nullptr; };

  const ParamLayout& lay_;
  std::vector<ParamUnit> units_;
  TrainStateConfig c_;
  cudaStream_t s_ = nullptr, comm_s_ = nullptr;
  int W_ = 1, r_ = 0, stage_ = 0;
  size_t n_ = 0, S_ = 0, Np_ = 0, opt_n_ = 0, opt_begin_ = 0;
  T* pshard_ = nullptr;      // this rank's compute-weight shard (AdamW writes it)
  float* gshard_ = nullptr;  // this rank's reduced gradients (stage 0: all of them)
  std::vector<int> tensor_unit_;
  std::vector<Run> runs_;
  double* pinned_out_ = nullptr;
  cudaEvent_t step_done_ = nullptr, ev_compute_ = nullptr, ev_comm_ = nullptr;
  // unit buffers (stage 2/3)
  std::vector<T*> unit_param_;
  std::vector<float*> unit_grad_;
  std::vector<float*> own_gbuf_;
  std::vector<T*> own_pbuf_;
  std::vector<cudaEvent_t> own_pev_;
  std::vector<uint64_t> unit_version_;
  uint64_t version_ = 1;  // bumped whenever the weights change (stage 3 regathers persistent units)
  Slot gslot_[2], pslot_[2];
  int gnext_ = 0, pcur_ = -1;
  std::map<size_t, cudaEvent_t> gev_of_;  // unit -> the event its bucket's reduction records
  std::set<cudaEvent_t> freed_used_;      // events recorded at least once (waiting on a fresh one is a no-op anyway)
  std::vector<cudaEvent_t> own_gev_;
  bool pending_comm_ = false;

  // Before allocating: the model state and ZeRO buffers this rank is about to allocate against the GPU's free
  // memory, so a run that cannot fit says so with the breakdown and the formula (nothing is half-allocated).
  void check_fits_(bool alias, const std::string& device_name) const {
    size_t ring = 0, pers = 0;
    for (const ParamUnit& u : units_) u.persistent ? (void)(pers += u.size()) : (void)(ring = std::max(ring, u.size()));
    const bool off = c_.offload == "cpu";
    const size_t w = (stage_ < 3 ? (alias && !off ? 0 : Np_) : S_) * sizeof(T), m = off ? 0 : opt_n_ * 4;
    const size_t g = (stage_ >= 2 ? S_ : Np_) * 4, mom = off ? 0 : 2 * opt_n_ * 4;
    const size_t buf = stage_ >= 2 ? (2 * ring + pers) * (4 + (stage_ == 3 ? sizeof(T) : 0)) : 0;
    const size_t need = w + m + g + mom + buf;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) { cudaGetLastError(); return; }
    if (need <= fr) return;
    ModelStateFormula f = model_state_formula(n_, stage_, W_, sizeof(T) == 2);
    throw EngineError(ErrorCode::OutOfMemory,
                      "out of GPU memory allocating the training state: it needs " + gib(need) + " on " + device_name + " (ZeRO stage " +
                          std::to_string(stage_) + " over " + std::to_string(W_) + " GPU(s), " + f.text +
                          ": weights " + gib(w) + ", master " + gib(m) + ", gradients " + gib(g) + ", moments " +
                          gib(mom) + ", ZeRO buffers " + gib(buf) + ") but only " + gib(fr) + " of " + gib(tot) +
                          " are free, before activations",
                      "train_state.cuh", __LINE__,
                      "raise parallelism.zeroStage, use more GPUs, set parallelism.offload.optimizer to 'cpu', or use "
                      "a smaller model (estimateMemory() shows the whole breakdown before a run)");
  }

  nccl::DataType dtype_() const { return sizeof(T) == 2 ? nccl::BFloat16 : nccl::Float32; }
  const nccl::Api& nc_() const { return nccl::api(); }

  // the compute stream waits for everything queued on the communication stream
  void join_comm_() {
    if (!pending_comm_) return;
    CUDA_CHECK(cudaEventRecord(ev_comm_, comm_s_));
    CUDA_CHECK(cudaStreamWaitEvent(s_, ev_comm_, 0));
    pending_comm_ = false;
  }

  // Owners of [b, e): for each rank q holding part of it, call f(q, lo, hi).
  template <typename F> void owners_(size_t b, size_t e, F f) const {
    for (int q = (int)(b / S_); q < W_ && (size_t)q * S_ < e; q++) {
      size_t lo = std::max(b, (size_t)q * S_), hi = std::min(e, (size_t)(q + 1) * S_);
      if (lo < hi) f(q, lo, hi);
    }
  }

  // ZeRO-2/3: add a unit's bucket into the owners' gradient shards (on the communication stream).
  void reduce_unit_(size_t u, float* bucket) {
    const size_t b = units_[u].begin, e = units_[u].end;
    // the owner folds its running sum into its own bucket first, so the reduce result is old + new
    owners_(b, e, [&](int q, size_t lo, size_t hi) {
      if (q == r_) add_kernel_(bucket + (lo - b), gshard_ + (lo - opt_begin_), hi - lo, comm_s_);
    });
    if (W_ == 1) {
      CUDA_CHECK(cudaMemcpyAsync(gshard_ + b, bucket, (e - b) * 4, cudaMemcpyDeviceToDevice, comm_s_));
      return;
    }
    const nccl::Api& a = nc_();
    NCCL_CHECK(a.GroupStart(), c_.comm);
    owners_(b, e, [&](int q, size_t lo, size_t hi) {
      float* recv = q == r_ ? gshard_ + (lo - opt_begin_) : gshard_;  // recvbuff is used on the root only
      NCCL_CHECK(a.Reduce(bucket + (lo - b), recv, hi - lo, nccl::Float32, nccl::Sum, q, c_.comm, comm_s_), c_.comm);
    });
    NCCL_CHECK(a.GroupEnd(), c_.comm);
  }

  // ZeRO-3: make unit u resident; wait=true makes the compute stream wait for it.
  void acquire_params_(size_t u, bool wait) {
    const bool pers = units_[u].persistent;
    cudaEvent_t ev;
    if (pers) {
      if (unit_version_[u] != version_) {
        gather_unit_(u, own_pbuf_[u], own_pev_[u]);
        unit_param_[u] = own_pbuf_[u];
        unit_version_[u] = version_;
      }
      ev = own_pev_[u];
    } else {
      int found = -1;
      for (int i = 0; i < 2; i++) if (pslot_[i].unit == (long)u) found = i;
      if (found < 0) {
        found = pcur_ < 0 ? 0 : 1 - pcur_;  // never the slot the current unit computes in
        Slot& sl = pslot_[found];
        if (sl.unit >= 0) unit_param_[sl.unit] = nullptr;
        sl.unit = (long)u;
        gather_unit_(u, (T*)sl.buf, sl.ev);
        unit_param_[u] = (T*)sl.buf;
      }
      ev = pslot_[found].ev;
      if (wait) pcur_ = found;
    }
    if (wait) CUDA_CHECK(cudaStreamWaitEvent(s_, ev, 0));
  }
  void gather_unit_(size_t u, T* dst, cudaEvent_t done) {
    // whatever the compute stream queued so far (the previous user of dst) runs before the overwrite
    CUDA_CHECK(cudaEventRecord(ev_compute_, s_));
    CUDA_CHECK(cudaStreamWaitEvent(comm_s_, ev_compute_, 0));
    const size_t b = units_[u].begin, e = units_[u].end;
    if (W_ == 1) {
      CUDA_CHECK(cudaMemcpyAsync(dst, pshard_ + b, (e - b) * sizeof(T), cudaMemcpyDeviceToDevice, comm_s_));
    } else {
      const nccl::Api& a = nc_();
      NCCL_CHECK(a.GroupStart(), c_.comm);
      owners_(b, e, [&](int q, size_t lo, size_t hi) {
        const T* send = q == r_ ? pshard_ + (lo - opt_begin_) : pshard_;  // sendbuff is read on the root only
        NCCL_CHECK(a.Broadcast(send, dst + (lo - b), hi - lo, dtype_(), q, c_.comm, comm_s_), c_.comm);
      });
      NCCL_CHECK(a.GroupEnd(), c_.comm);
    }
    CUDA_CHECK(cudaEventRecord(done, comm_s_));
  }

  // After the micro-batches: gradients reduced over ranks into this rank's shard, squared norm into dscal[2],
  // the loss sum summed over ranks in dscal[0].
  void reduce_grads_and_norm_() {
    join_comm_();
    if (W_ > 1 && stage_ == 0) {
      NCCL_CHECK(nc_().AllReduce(grads, grads, Np_, nccl::Float32, nccl::Sum, c_.comm, s_), c_.comm);
      NCCL_CHECK(nc_().AllReduce(dscal, dscal, 1, nccl::Float64, nccl::Sum, c_.comm, s_), c_.comm);
    }
    if (W_ > 1 && stage_ == 1)
      NCCL_CHECK(nc_().ReduceScatter(grads, gshard_, S_, nccl::Float32, nccl::Sum, c_.comm, s_), c_.comm);
    cudabk::grad_norm_sq(dscal + 2, dscal + 8, gshard_, stage_ == 0 ? Np_ : S_, s_);
    if (W_ > 1 && stage_ >= 1)  // loss sum and this shard's squared norm, summed over ranks
      NCCL_CHECK(nc_().AllReduce(dscal, dscal, 3, nccl::Float64, nccl::Sum, c_.comm, s_), c_.comm);
  }

  void adamw_(const AdamWHyper& hp, const double* gate) {
    if (offload_enabled()) return offload_step(hp, gate);
    AdamWParams p{hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay, hp.grad_scale,
                  1.0f - (float)std::pow((double)hp.beta1, (double)hp.t), 1.0f - (float)std::pow((double)hp.beta2, (double)hp.t)};
    for (const Run& r : runs_)
      adamw_update<T>(master + r.begin, pshard_ + r.begin, adam_m + r.begin, adam_v + r.begin, gshard_ + r.begin,
                      r.end - r.begin, p, r.decay, s_, gate);
  }
  // the updated shard reaches every rank's compute weights
  void after_update_() {
    version_++;
    for (Slot& sl : pslot_)  // rotating gathered units are stale now (persistent ones compare versions)
      if (sl.unit >= 0) unit_param_[sl.unit] = nullptr, sl.unit = -1;
    pcur_ = -1;
    if (W_ > 1 && (stage_ == 1 || stage_ == 2))
      NCCL_CHECK(nc_().AllGather(pshard_, params, S_, dtype_(), c_.comm, s_), c_.comm);
  }
  void refresh_compute_() {
    if (offload_enabled()) return after_update_();  // offload_set wrote pshard_
    if (stage_ == 0) copy_to_compute<T>(params, master, Np_, s_);
    else copy_to_compute<T>(pshard_, master, S_, s_);
    after_update_();
  }


  // src: this rank's optimizer-range buffer (opt_n_ elements) -> full host vector (n_) on every rank with dst
  void gather_fp32_(const float* src, float* dst) {
    join_comm_();
    if (stage_ == 0 || W_ == 1) {
      CUDA_CHECK(cudaStreamSynchronize(s_));
      if (dst) CUDA_CHECK(cudaMemcpy(dst, src, n_ * 4, cudaMemcpyDeviceToHost));
      return;
    }
    const size_t c = std::min<size_t>(S_, (size_t)16 << 20);
    size_t tmp_bytes = 0;
    float* tmp = (float*)mem.alloc(c * W_ * 4, &tmp_bytes, "gather buffer", "");
    std::vector<float> host(dst ? c * W_ : 0);
    for (size_t k0 = 0; k0 < S_; k0 += c) {
      const size_t k = std::min(c, S_ - k0);
      NCCL_CHECK(nc_().AllGather(src + k0, tmp, k, nccl::Float32, c_.comm, s_), c_.comm);
      CUDA_CHECK(cudaStreamSynchronize(s_));
      if (!dst) continue;
      CUDA_CHECK(cudaMemcpy(host.data(), tmp, k * W_ * 4, cudaMemcpyDeviceToHost));
      for (int q = 0; q < W_; q++) {
        size_t g = (size_t)q * S_ + k0;
        if (g >= n_) continue;
        std::memcpy(dst + g, host.data() + (size_t)q * k, std::min(k, n_ - g) * 4);
      }
    }
    mem.free(tmp);
  }
  // offload: this rank's host shard of master (0), m (1) or v (2) -> full host vector, through the device
  void gather_host_shard_(int which, float* dst) {
    std::vector<float> h(opt_n_, 0.0f);
    offload_get(which == 0 ? h.data() : nullptr, which == 1 ? h.data() : nullptr, which == 2 ? h.data() : nullptr);
    size_t tb = 0;
    float* tmp = (float*)mem.alloc(opt_n_ * 4, &tb, "gather buffer", "");
    CUDA_CHECK(cudaMemcpy(tmp, h.data(), opt_n_ * 4, cudaMemcpyHostToDevice));
    wait_pageable_upload_();
    gather_fp32_(tmp, dst);
    mem.free(tmp);
  }
  // full host vector -> this rank's optimizer-range buffer (padding stays zero)
  void scatter_fp32_(float* dst, const float* src) {
    join_comm_();
    CUDA_CHECK(cudaStreamSynchronize(s_));
    ShardRange r = shard();
    if (r.size()) CUDA_CHECK(cudaMemcpy(dst, src + r.begin, r.size() * 4, cudaMemcpyHostToDevice));
    wait_pageable_upload_();
  }
  // A cudaMemcpy from pageable host memory may return once the data is staged, before its DMA lands (CUDA's "API
  // synchronization behavior"), and our streams are non-blocking, so nothing would order the next kernel on s_ after
  // it. Waiting for the legacy stream, where that DMA runs, closes the gap; these are cold paths (set_params, loads).
  static void wait_pageable_upload_() { CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy)); }
};


}  // namespace cudabk
