// cuda_backend.cu — the `cuda` backend (backend.h): GPT-2 on one GPU with bf16 compute, fp32 accumulation and
// fp32 master weights (or fp32 throughout: training.precision = 'fp32', the parity test mode). Structure after
// karpathy/llm.c train_gpt2.cu; differences: Hugging Face's parameter layout on the device too (so get/set are
// plain copies and checkpoints move between backends), fp32 gradients (exact accumulation over micro-batches),
// deterministic reductions (bit-for-bit resume), chunked logits, activation recompute, errors that throw.
//
// Work is queued on one CUDA stream. The engine's hot path, step_async, queues a whole optimizer step (every
// micro-batch, the gradient norm, clipping and the divergence check on the device, AdamW) without the host
// waiting; step_wait reads the result. The primitives (forward_backward, grad_norm_sq) wait for their value.
// Weights, gradients, AdamW state, ZeRO sharding and the step orchestration live in TrainState (train_state.cuh):
// this class reaches parameters unit by unit (embeddings, each block, ln_f) through st->layer_params /
// layer_grads / layer_grads_done, which is where ZeRO-3 gathers and ZeRO-2/3 reduce-scatter overlap compute.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include "adamw.cuh"        // gradient norm, AdamW, master -> compute copy
#include "attention.cuh"    // causal attention (cuBLAS + fused softmax), KV-cache attention
#include "backend.h"        // engine::Backend, the interface implemented here
#include "classifier.cuh"   // fused softmax cross-entropy, dlogits in place
#include "cuda_common.cuh"  // checks, Pack, reductions
#include "encoder.cuh"      // token + position embeddings
#include "flash_attention.cuh"  // fused causal attention (bf16, head size 32/64)
#include "layernorm.cuh"    // layernorm forward / backward
#include "matmul.cuh"       // cuBLASLt linear layers
#include "nccl_dp.cuh"      // several GPUs: one replica + thread per GPU, NCCL communicators
#include "train_state.cuh"  // weights, grads, AdamW, ZeRO, memory accounting (family-independent)

namespace cudabk {
using namespace engine;

enum class Recompute { None, Gelu, GeluLayerNorm };  // training.recompute

// token + position embedding for rows at arbitrary (position) — generation
template <typename T>
__global__ void encoder_rows_kernel(T* out, const int* tokens, const int* pos, const T* wte, const T* wpe, int n, int C) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n * C) return;
  int i = idx / C, c = idx % C;
  out[idx] = from_f<T>(to_f(wte[(size_t)tokens[i] * C + c]) + to_f(wpe[(size_t)pos[i] * C + c]));
}
template <typename T>
__global__ void gelu_kernel(T* out, const T* in, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = from_f<T>(gelu_f(to_f(in[i])));
}

// ModelConfig::family exists once the engine supports several families; until then every config is GPT-2
template <typename M> static auto family_of_(const M& m, int) -> decltype(m.family, std::string()) { return m.family; }
template <typename M> static std::string family_of_(const M&, long) { return "gpt2"; }

template <typename T>
class CudaBackend final : public Backend {
 public:
  // ---------------------------------------------------------------------------------------------- state
  ModelConfig cfg;
  ParamLayout lay;
  BackendInfo inf;
  Recompute rc;
  bool flash = false;  // fused attention kernels (bf16, head size 32/64); else cuBLAS + softmax kernels
  cudaStream_t stream = nullptr;
  Blas blas;
  cudaDeviceProp prop{};
  size_t L, C, NH, V, maxT, Vp, n_total;
  // parameters, gradients, AdamW state, ZeRO (train_state.cuh), in units: 0 = wte + wpe, 1 + l = block l,
  // L + 1 = ln_f. HF flat layout (params.h) inside every unit.
  std::unique_ptr<TrainState<T>> st;
  size_t bytes_misc = 0;  // this class's own buffers: tokens, KV cache, cuBLAS workspace

  struct Layer {
    T *ln1, *qkv, *atty, *att, *res2, *ln2, *fch, *fch_gelu, *res3;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
    float* lse;  // (B, NH, T) log-sum-exp of the attention rows (flash path; `att` (B,NH,T,T) otherwise)
  };
  // Activations for one (B, T): training keeps L layers (minus what is recomputed), evaluation keeps one layer
  // and reuses it for every layer (nothing is saved for a backward pass).
  struct Acts {
    size_t nB = 0, nT = 0, bytes = 0;  // capacity
    bool training = false;
    std::vector<Layer> layers;
    T *encoded, *lnf, *logits, *ln_scratch, *gelu_scratch, *dres, *dln, *dbig;
    float *lnf_mean, *lnf_rstd, *losses, *correct, *partial;
    AttnScratch<T> as;
    void *block = nullptr, *block_f = nullptr;
    int Rc = 0;
  };
  Acts train_acts, eval_acts;
  double* dscal = nullptr;  // st->dscal: [0] loss sum, [1] correct, [2] grad norm^2; [8..] norm partials
  int* d_ints = nullptr;    // tokens | targets | wte-gradient buckets (capacity n_ints)
  size_t n_ints = 0;
  int* pinned = nullptr;    // host staging of the same layout
  double* pinned_out = nullptr;
  cudaEvent_t staged = nullptr;

  // KV cache (generation)
  size_t kv_slots = 0, kv_len = 0;
  std::vector<size_t> kv_fill;
  T *kc = nullptr, *vc = nullptr, *g_x = nullptr, *g_h = nullptr, *g_qkv = nullptr, *g_y = nullptr, *g_fc = nullptr,
    *g_fcg = nullptr, *g_logits = nullptr;

  // ---------------------------------------------------------------------------------------------- setup
  // comm: this replica's NCCL communicator when several GPUs train together (nccl_dp.cuh), else nullptr
  CudaBackend(const ModelConfig& c, const BackendOptions& o, nccl::Comm comm = nullptr) : cfg(c), lay(gpt2_param_layout(c)) {
    ENGINE_CHECK(family_of_(c, 0) == "gpt2", BadConfig, "set training.backend to 'cpu' for this model family",
                 "the cuda backend implements GPT-2 only; model.family '%s' requested", family_of_(c, 0).c_str());
    ENGINE_CHECK(c.dropout == 0.0f, BadConfig, "set model.dropout to 0 (the fine-tuning default)",
                 "the cuda backend does not implement dropout; model.dropout = %g requested", c.dropout);
    ENGINE_CHECK(c.n_embd % 8 == 0 && (c.n_embd / c.n_head) % 8 == 0, BadConfig,
                 "choose nEmbd and nHead so that both nEmbd and nEmbd/nHead are multiples of 8",
                 "the cuda backend needs 16-byte aligned rows: nEmbd = %zu, head size = %zu", c.n_embd, c.n_embd / c.n_head);
    ENGINE_CHECK(std::abs(c.layer_norm_eps - 1e-5f) < 1e-12f, BadConfig, "", "the cuda backend implements layer_norm_eps 1e-5 only (got %g)", c.layer_norm_eps);
    if (o.recompute == "none") rc = Recompute::None;
    else if (o.recompute == "gelu") rc = Recompute::Gelu;
    else if (o.recompute == "gelu-layernorm") rc = Recompute::GeluLayerNorm;
    else ENGINE_THROW(BadConfig, "use 'none', 'gelu' or 'gelu-layernorm'", "unknown training.recompute '%s'", o.recompute.c_str());
    L = c.n_layer; C = c.n_embd; NH = c.n_head; V = c.vocab_size; maxT = c.n_positions;
    Vp = (V + 63) / 64 * 64;
    n_total = lay.total;
    Vh = V + maxT >= Vp ? (int)Vp : (int)V;  // pad only when unit 0 (wte, wpe) holds Vp - V rows past wte
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
      cudaGetLastError();
      ENGINE_THROW(Device, "run on a machine with an NVIDIA GPU or set training.backend to 'cpu'", "no CUDA device is visible");
    }
    ENGINE_CHECK(o.device >= 0 && o.device < ndev, BadConfig, "", "CUDA device %d requested, %d visible", o.device, ndev);
    CUDA_CHECK(cudaSetDevice(o.device));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, o.device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    blas.init(sizeof(T) == 4);
    bytes_misc += blas.workspace_bytes;
    inf.name = "cuda";
    inf.device = prop.name;
    inf.blas = "cublasLt " + std::to_string(cublasLtGetVersion());
    inf.precision = sizeof(T) == 2 ? "bf16" : "fp32";
    // ENGINE_CUDA_ATTENTION=cublas forces the unfused path (A/B comparisons in bench/ and native/lab/)
    const char* att_env = getenv("ENGINE_CUDA_ATTENTION");
    flash = flash_supported((int)C, (int)NH, sizeof(T)) && !(att_env && std::string(att_env) == "cublas");
    inf.num_threads = 1;
    TrainStateConfig sc;
    sc.stream = stream;
    sc.precision = inf.precision;
    sc.zero_stage = o.zero_stage, sc.world_size = o.world_size, sc.rank = o.rank, sc.comm = comm;
    sc.offload = o.offload;
    sc.offload_delayed = o.offload_delayed;
    st = std::make_unique<TrainState<T>>(lay, layer_units(lay, block_index(0, LN1_W), N_BLOCK_TENSORS, L), sc, prop.name);
    dscal = st->dscal;
    CUDA_CHECK(cudaMallocHost(&pinned_out, 8 * sizeof(double)));
    CUDA_CHECK(cudaEventCreateWithFlags(&staged, cudaEventDisableTiming));
  }

  // device allocations charged to a byte counter, OUT_OF_MEMORY naming what (train_state.cuh DeviceMemory)
  void* dalloc(size_t bytes, const std::string& what, const std::string& hint, size_t* counter) {
    return st->mem.alloc(bytes, counter, what, hint);
  }
  void dfree(void* p) { st->mem.free(p); }

  ~CudaBackend() override {
    if (stream) cudaStreamSynchronize(stream);
    st.reset();  // every device buffer (activations included) is owned by st->mem
    if (pinned) cudaFreeHost(pinned);
    if (pinned_out) cudaFreeHost(pinned_out);
    if (staged) cudaEventDestroy(staged);
    blas.destroy();
    if (stream) cudaStreamDestroy(stream);
  }

  // Size the activations for (B, T); grows only (a smaller batch reuses the buffers).
  void ensure_acts(Acts& a, size_t B, size_t Tt, bool training) {
    if (a.block && a.nT >= Tt && a.nB >= B) return;
    B = std::max(B, a.nB);
    Tt = std::max(Tt, a.nT);
    if (a.block) { CUDA_CHECK(cudaStreamSynchronize(stream)); dfree(a.block); dfree(a.block_f); a.block = a.block_f = nullptr; }
    const size_t N = B * Tt, HS = C / NH, nl = training ? L : 1;
    const bool keep_gelu = !training || rc == Recompute::None, keep_ln = !training || rc != Recompute::GeluLayerNorm;
    a.Rc = (int)std::min<size_t>(N, 4096);
    auto rnd = [](size_t n) { return (n + 127) / 128 * 128; };  // every slice 256-byte aligned
    const size_t NC = rnd(N * C), att = flash ? 0 : rnd(B * NH * Tt * Tt), lse = flash ? rnd(B * NH * Tt) : 0;
    size_t per_layer = NC * (keep_ln ? 2 : 0) + rnd(N * 3 * C) + NC + att + 2 * NC + rnd(N * 4 * C) + (keep_gelu ? rnd(N * 4 * C) : 0);
    size_t scratch = NC /*ln_scratch*/ + (keep_gelu ? 0 : rnd(N * 4 * C)) + (flash ? 0 : 4 * NC) /*q k v vacc*/ + rnd((size_t)a.Rc * Vp) +
                     (training ? 2 * NC + rnd(N * 4 * C) + att /*dres dln dbig dS*/ : 0);
    (void)HS;
    size_t nT = 2 * NC + nl * per_layer + scratch;
    size_t S_floats = flash ? rnd(B * NH * Tt) /*dsum*/ : rnd(B * NH * Tt * std::max(Tt, HS));
    size_t partial = std::max({bias_grad_scratch_floats(N, 4 * C), layernorm_scratch_floats(N, C)});
    size_t nF = rnd(N) * (2 + 4 * nl) + nl * lse + S_floats + rnd(partial) + 2 * rnd(N);
    std::string hint = "lower training.microBatchSize (now " + std::to_string(B) + ") or preprocess.blockSize (now " +
                       std::to_string(Tt) + ")" +
                       (training && rc != Recompute::GeluLayerNorm ? ", or set training.recompute to 'gelu-layernorm'" : "") +
                       (training ? "; raise training.gradAccumSteps to keep the tokens per step" : "; or lower evaluation.batchSize");
    std::string what = std::string(training ? "training" : "evaluation") + " activations for " + std::to_string(B) + "x" + std::to_string(Tt) + " tokens";
    size_t* counter = &a.bytes;
    a.block = dalloc(nT * sizeof(T), what, hint, counter);
    a.block_f = dalloc(nF * 4, what + " (fp32 part)", hint, counter);
    T* p = (T*)a.block;
    float* f = (float*)a.block_f;
    auto cut = [&](size_t n) { T* r = p; p += rnd(n); return r; };
    auto cutf = [&](size_t n) { float* r = f; f += rnd(n); return r; };
    a.encoded = cut(N * C); a.lnf = cut(N * C);
    a.lnf_mean = cutf(N); a.lnf_rstd = cutf(N);
    a.layers.assign(nl, Layer{});
    for (auto& l : a.layers) {
      l.ln1 = keep_ln ? cut(N * C) : nullptr;
      l.ln2 = keep_ln ? cut(N * C) : nullptr;
      l.qkv = cut(N * 3 * C); l.atty = cut(N * C); l.att = flash ? nullptr : cut(B * NH * Tt * Tt);
      l.res2 = cut(N * C); l.res3 = cut(N * C); l.fch = cut(N * 4 * C);
      l.fch_gelu = keep_gelu ? cut(N * 4 * C) : nullptr;
      l.ln1_mean = cutf(N); l.ln1_rstd = cutf(N); l.ln2_mean = cutf(N); l.ln2_rstd = cutf(N);
      l.lse = flash ? cutf(B * NH * Tt) : nullptr;
    }
    a.ln_scratch = cut(N * C);
    a.gelu_scratch = keep_gelu ? nullptr : cut(N * 4 * C);
    if (!flash) { a.as.q = cut(N * C); a.as.k = cut(N * C); a.as.v = cut(N * C); a.as.vacc = cut(N * C); }
    a.logits = cut((size_t)a.Rc * Vp);
    a.dres = training ? cut(N * C) : nullptr;
    a.dln = training ? cut(N * C) : nullptr;
    a.dbig = training ? cut(N * 4 * C) : nullptr;
    a.as.dS = training && !flash ? cut(B * NH * Tt * Tt) : nullptr;
    a.as.S = flash ? cutf(B * NH * Tt) : cutf(B * NH * Tt * std::max(Tt, HS));  // flash: dsum (B,NH,T)
    a.partial = cutf(partial);
    a.losses = cutf(N); a.correct = cutf(N);
    a.nB = B; a.nT = Tt; a.training = training;
  }

  // ---------------------------------------------------------------------------------------------- helpers
  // tensor idx inside its unit's current buffer (ZeRO-3: the unit must have been asked for with layer_params)
  T* P(size_t idx) { return st->param(idx); }
  float* G(size_t idx) { return st->grad(idx); }
  T* PB(size_t l, BlockTensor t) { return P(block_index(l, t)); }
  float* GB(size_t l, BlockTensor t) { return G(block_index(l, t)); }

  void check_batch(const Batch& b, bool targets) {
    ENGINE_CHECK(b.B >= 1 && b.T >= 1 && b.T <= maxT, BadShape, "blockSize must be <= model.nPositions",
                 "batch (B=%zu, T=%zu) with nPositions %zu", b.B, b.T, maxT);
    for (size_t i = 0, N = b.B * b.T; i < N; i++) {
      int32_t x = b.inputs[i];
      ENGINE_CHECK(x >= 0 && (size_t)x < V, BadShape, "the shards were tokenized with a larger vocabulary than model.vocabSize",
                   "input token %d at position %zu is outside [0, %zu)", x, i, V);
      if (!targets) continue;
      int32_t y = b.targets[i];
      ENGINE_CHECK(y == IGNORE_INDEX || (y >= 0 && (size_t)y < V), BadShape, "labels must be token ids or -100",
                   "target %d at position %zu is outside [0, %zu)", y, i, V);
    }
  }

  // copy ints to the device through pinned staging: returns device pointer to the n ints
  void stage(size_t n_needed) {
    if (n_needed <= n_ints) {
      CUDA_CHECK(cudaEventSynchronize(staged));  // the previous copy out of the staging buffer has run
      return;
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (pinned) cudaFreeHost(pinned);
    dfree(d_ints);
    n_ints = n_needed;
    CUDA_CHECK(cudaMallocHost(&pinned, n_ints * 4));
    d_ints = (int*)dalloc(n_ints * 4, "token buffers", "", &bytes_misc);
  }
  void upload(size_t n) {
    CUDA_CHECK(cudaMemcpyAsync(d_ints, pinned, n * 4, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaEventRecord(staged, stream));
  }

  // ---------------------------------------------------------------------------------------------- forward
  // Forward through ln_f for the tokens in d_ints[0, B*T). Training activations keep every layer.
  void forward(Acts& a, const int* d_tokens, size_t B, size_t Tt) {
    const int N = (int)(B * Tt), Ci = (int)C;
    st->layer_params(0, 1);
    encoder_forward<T>(a.encoded, d_tokens, P(wte_index()), P(wpe_index()), (int)B, (int)Tt, Ci, stream);
    for (size_t l = 0; l < L; l++) {
      st->layer_params(1 + l, (long)(2 + l));  // ZeRO-3: block l gathered, block l + 1 (or ln_f) prefetched
      Layer& x = a.layers[a.training ? l : 0];
      const T* res = l == 0 ? a.encoded : a.layers[a.training ? l - 1 : 0].res3;
      T* ln1 = x.ln1 ? x.ln1 : a.ln_scratch;
      T* ln2 = x.ln2 ? x.ln2 : a.ln_scratch;
      T* fchg = x.fch_gelu ? x.fch_gelu : a.gelu_scratch;
      layernorm_forward<T>(ln1, x.ln1_mean, x.ln1_rstd, res, PB(l, LN1_W), PB(l, LN1_B), N, Ci, stream);
      linear_forward<T>(blas, x.qkv, ln1, PB(l, ATTN_W), PB(l, ATTN_B), N, Ci, 3 * Ci, stream);
      attention_fwd(a, x, (int)B, (int)Tt);
      linear_forward<T>(blas, x.res2, x.atty, PB(l, ATTNPROJ_W), PB(l, ATTNPROJ_B), N, Ci, Ci, stream, nullptr, res);
      layernorm_forward<T>(ln2, x.ln2_mean, x.ln2_rstd, x.res2, PB(l, LN2_W), PB(l, LN2_B), N, Ci, stream);
      linear_forward<T>(blas, fchg, ln2, PB(l, FC_W), PB(l, FC_B), N, Ci, 4 * Ci, stream, x.fch);
      linear_forward<T>(blas, x.res3, fchg, PB(l, FCPROJ_W), PB(l, FCPROJ_B), N, 4 * Ci, Ci, stream, nullptr, x.res2);
    }
    const T* last = a.layers[a.training ? L - 1 : 0].res3;
    st->layer_params(L + 1);
    layernorm_forward<T>(a.lnf, a.lnf_mean, a.lnf_rstd, last, P(lnf_w_index(L)), P(lnf_b_index(L)), N, Ci, stream);
  }
  void attention_fwd(Acts& a, Layer& x, int B, int Tt) {
    if constexpr (sizeof(T) == 2) {
      if (flash) return flash_attention_forward(x.atty, x.lse, x.qkv, B, Tt, (int)C, (int)NH, stream);
    }
    attention_forward<T>(blas, x.atty, x.att, x.qkv, a.as, B, Tt, (int)C, (int)NH, stream);
  }
  void attention_bwd(Acts& a, Layer& x, T* dqkv, const T* datty, int B, int Tt) {
    if constexpr (sizeof(T) == 2) {
      if (flash) return flash_attention_backward(dqkv, datty, x.atty, x.qkv, x.lse, a.as.S, B, Tt, (int)C, (int)NH, stream);
    }
    attention_backward<T>(blas, dqkv, datty, x.qkv, x.att, a.as, B, Tt, (int)C, (int)NH, stream);
  }

  // logits (R, V) with row stride Vp for rows [r0, r0 + R) of lnf
  // The vocabulary dimension of the LM-head products is padded from V (50257, odd) to Vh = Vp (50304): measured
  // on the H200 (native/lab/kernels_check), cuBLASLt runs these 4096x50257x768 products at 94-124 TFLOP/s and the
  // padded ones at ~780. The Vp - V extra "rows of wte" are the first rows of the tensor that follows it in the
  // flat buffer (wpe): their logits are ignored by the classifier, which writes zero gradient there, so they
  // contribute nothing to dlnf; dwte's product keeps M = V and never writes past wte.
  int Vh = 0;
  void lm_head(Acts& a, int r0, int R) {
    gemm_rm_<T, T>(blas, false, true, R, Vh, (int)C, a.lnf + (size_t)r0 * C, P(wte_index()), a.logits, nullptr, 0.f,
                   stream, Epilogue::None, nullptr, nullptr, 1.f, 0, 0, (int)Vp);
  }

  // ---------------------------------------------------------------------------------------------- backward
  void backward(Acts& a, size_t B, size_t Tt, int U, const int* d_buckets) {
    const int N = (int)(B * Tt), Ci = (int)C;
    CUDA_CHECK(cudaMemsetAsync(a.dres, 0, (size_t)N * C * sizeof(T), stream));
    st->layer_params(L + 1);
    st->layer_grads(L + 1);
    layernorm_backward<T>(a.dres, G(lnf_w_index(L)), G(lnf_b_index(L)), a.partial, a.dln, a.layers[L - 1].res3,
                          P(lnf_w_index(L)), a.lnf_mean, a.lnf_rstd, N, Ci, stream);
    st->layer_grads_done(L + 1);
    for (size_t li = L; li-- > 0;) {
      const size_t l = li;
      st->layer_params(1 + l, l > 0 ? (long)l : 0L);  // block l; prefetch block l - 1 (or the embeddings)
      st->layer_grads(1 + l);
      Layer& x = a.layers[l];
      const T* res = l == 0 ? a.encoded : a.layers[l - 1].res3;
      // MLP: res3 = res2 + gelu(ln2 · Wfc + bfc) · Wfp + bfp
      T* fchg = x.fch_gelu;
      if (!fchg) {  // recompute gelu(fch)
        fchg = a.gelu_scratch;
        size_t n = (size_t)N * 4 * C;
        gelu_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(fchg, x.fch, n);
        LAUNCH_CHECK();
      }
      T* dfch = a.dbig;
      linear_backward<T>(blas, dfch, GB(l, FCPROJ_W), GB(l, FCPROJ_B), a.dres, fchg, PB(l, FCPROJ_W), N, 4 * Ci, Ci,
                         a.partial, stream, x.fch);
      T* ln2 = x.ln2;
      if (!ln2) {
        ln2 = a.ln_scratch;
        layernorm_forward<T>(ln2, nullptr, nullptr, x.res2, PB(l, LN2_W), PB(l, LN2_B), N, Ci, stream);
      }
      linear_backward<T>(blas, a.dln, GB(l, FC_W), GB(l, FC_B), dfch, ln2, PB(l, FC_W), N, Ci, 4 * Ci, a.partial, stream);
      layernorm_backward<T>(a.dres, GB(l, LN2_W), GB(l, LN2_B), a.partial, a.dln, x.res2, PB(l, LN2_W), x.ln2_mean,
                            x.ln2_rstd, N, Ci, stream);
      // attention: res2 = res + attn(ln1(res)) · Wap + bap
      T* datty = a.dln;
      linear_backward<T>(blas, datty, GB(l, ATTNPROJ_W), GB(l, ATTNPROJ_B), a.dres, x.atty, PB(l, ATTNPROJ_W), N, Ci,
                         Ci, a.partial, stream);
      T* dqkv = a.dbig;
      attention_bwd(a, x, dqkv, datty, (int)B, (int)Tt);
      T* ln1 = x.ln1;
      if (!ln1) {
        ln1 = a.ln_scratch;
        layernorm_forward<T>(ln1, nullptr, nullptr, res, PB(l, LN1_W), PB(l, LN1_B), N, Ci, stream);
      }
      linear_backward<T>(blas, a.dln, GB(l, ATTN_W), GB(l, ATTN_B), dqkv, ln1, PB(l, ATTN_W), N, Ci, 3 * Ci,
                         a.partial, stream);
      layernorm_backward<T>(a.dres, GB(l, LN1_W), GB(l, LN1_B), a.partial, a.dln, res, PB(l, LN1_W), x.ln1_mean,
                            x.ln1_rstd, N, Ci, stream);
      st->layer_grads_done(1 + l);  // ZeRO-2/3: this block's bucket is reduced while the next block computes
    }
    encoder_backward<T>(G(wte_index()), G(wpe_index()), a.dres, d_buckets, U, (int)B, (int)Tt, Ci, stream);
    st->layer_grads_done(0);
  }

  // ---------------------------------------------------------------------------------------------- Backend API
  const BackendInfo& info() const override { return inf; }
  const ModelConfig& config() const override { return cfg; }
  const ParamLayout& layout() const override { return lay; }

  // host fp32 state (with several GPUs these are collectives: nccl_dp.cuh calls them on every replica)
  void get_params(float* dst) const override { st->get_params(dst); }
  void set_params(const float* src) override { st->set_params(src); }
  void get_grads(float* dst) const override { st->get_grads(dst); }
  void get_optimizer_state(float* m, float* v) const override { st->get_optimizer_state(m, v); }
  void set_optimizer_state(const float* m, const float* v) override { st->set_optimizer_state(m, v); }

  void zero_grad() override { st->zero_grad(); }
  std::vector<LocalShard> local_shards() override { return st->local_shards(); }
  HostState host_state() override { return st->host_state(); }
  void host_state_written() override { st->host_state_written(); }

  // Queue one micro-batch (forward, classifier, backward) whose tokens were staged at pinned + off; the loss sum
  // is added to dscal[0] on the device. No host synchronisation.
  void enqueue_micro_(const Batch& b, float dloss, size_t off) {
    const size_t N = b.B * b.T;
    Acts& a = train_acts;
    int* h = pinned + off;
    std::memcpy(h, b.inputs, N * 4);
    std::memcpy(h + N, b.targets, N * 4);
    int U = encoder_build_buckets(h + 2 * N, b.inputs, (int)N, (int)V);
    const int* d = d_ints + off;
    CUDA_CHECK(cudaMemcpyAsync((void*)d, h, (3 * N + 2 * U + 1) * 4, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaEventRecord(staged, stream));
    forward(a, d, b.B, b.T);
    st->layer_grads(0);  // dwte: the tied LM head's gradient goes to the embeddings unit
    // classifier in row chunks: logits, loss, dlogits in place, then dlnf (into dln) and dwte
    for (int r0 = 0; r0 < (int)N; r0 += a.Rc) {
      int R = std::min(a.Rc, (int)N - r0);
      lm_head(a, r0, R);
      fused_classifier<T>(a.logits, a.losses + r0, nullptr, d + N + r0, R, (int)V, (int)Vp, dloss, true, stream);
      gemm_rm_<T, T>(blas, false, false, R, (int)C, Vh, a.logits, P(wte_index()), a.dln + (size_t)r0 * C, nullptr,
                     0.f, stream, Epilogue::None, nullptr, nullptr, 1.f, (int)Vp, 0, 0);
      gemm_rm_<T, float>(blas, true, false, (int)V, (int)C, R, a.logits, a.lnf + (size_t)r0 * C, G(wte_index()),
                         G(wte_index()), 1.f, stream, Epilogue::None, nullptr, nullptr, 1.f, (int)Vp, 0, 0);
    }
    sum_into(dscal, a.losses, (int)N, stream);
    backward(a, b.B, b.T, U, d + 2 * N);
  }
  static size_t stage_ints_(const Batch& b) { return 5 * b.B * b.T + 1; }  // tokens | targets | buckets (U <= N)

  double forward_backward(const Batch& b, float dloss) override {
    check_batch(b, true);
    ensure_acts(train_acts, b.B, b.T, true);
    stage(stage_ints_(b));
    CUDA_CHECK(cudaMemsetAsync(dscal, 0, 8, stream));
    enqueue_micro_(b, dloss, 0);
    return st->read_loss_sum();
  }

  // The engine's hot path: a whole optimizer step queued without any host synchronisation. Clipping and the
  // divergence check run on the device (step_gate_kernel); AdamW reads their result. step_wait reads it back.
  void step_async(const Batch* micro, size_t n_micro, float dloss, const AdamWHyper& hp, float grad_clip,
                  double max_loss) override {
    size_t total = 0, Bm = 0, Tm = 0;
    for (size_t i = 0; i < n_micro; i++) {
      check_batch(micro[i], true);
      total += stage_ints_(micro[i]);
      Bm = std::max(Bm, micro[i].B);
      Tm = std::max(Tm, micro[i].T);
    }
    ensure_acts(train_acts, Bm, Tm, true);
    stage(total);
    st->begin_step();
    size_t off = 0;
    for (size_t i = 0; i < n_micro; i++) {
      enqueue_micro_(micro[i], dloss, off);
      off += stage_ints_(micro[i]);
    }
    st->end_step(dloss, hp, grad_clip, max_loss);  // reduction, norm, gate, AdamW, weight gather
  }
  StepOutput step_wait() override { return st->wait_step(); }

  double grad_norm_sq() override { return st->grad_norm_sq(); }
  void optimizer_step(const AdamWHyper& hp) override { st->optimizer_step(hp); }

  EvalStats forward_eval(const Batch& b) override {
    check_batch(b, true);
    const size_t N = b.B * b.T;
    ensure_acts(eval_acts, b.B, b.T, false);
    Acts& a = eval_acts;
    stage(2 * N);
    std::memcpy(pinned, b.inputs, N * 4);
    std::memcpy(pinned + N, b.targets, N * 4);
    upload(2 * N);
    CUDA_CHECK(cudaMemsetAsync(dscal, 0, 16, stream));
    forward(a, d_ints, b.B, b.T);
    for (int r0 = 0; r0 < (int)N; r0 += a.Rc) {
      int R = std::min(a.Rc, (int)N - r0);
      lm_head(a, r0, R);
      fused_classifier<T>(a.logits, a.losses + r0, a.correct + r0, d_ints + N + r0, R, (int)V, (int)Vp, 0.f, false, stream);
    }
    sum_into(dscal, a.losses, (int)N, stream);
    sum_into(dscal + 1, a.correct, (int)N, stream);
    CUDA_CHECK(cudaMemcpyAsync(pinned_out, dscal, 16, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    EvalStats s;
    s.loss_sum = pinned_out[0];
    s.n_correct = (size_t)llround(pinned_out[1]);
    for (size_t i = 0; i < N; i++) s.n_targets += b.targets[i] != IGNORE_INDEX;
    return s;
  }

  void forward_logits(const Batch& b, float* out) override {
    check_batch(b, false);
    const size_t N = b.B * b.T;
    ensure_acts(eval_acts, b.B, b.T, false);
    Acts& a = eval_acts;
    stage(N);
    std::memcpy(pinned, b.inputs, N * 4);
    upload(N);
    forward(a, d_ints, b.B, b.T);
    std::vector<T> tmp((size_t)a.Rc * Vp);
    for (int r0 = 0; r0 < (int)N; r0 += a.Rc) {
      int R = std::min(a.Rc, (int)N - r0);
      lm_head(a, r0, R);
      CUDA_CHECK(cudaMemcpyAsync(tmp.data(), a.logits, (size_t)R * Vp * sizeof(T), cudaMemcpyDeviceToHost, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
      for (int r = 0; r < R; r++)
        for (size_t j = 0; j < V; j++) out[(size_t)(r0 + r) * V + j] = host_f(tmp[(size_t)r * Vp + j]);
    }
  }
  static float host_f(float x) { return x; }
  static float host_f(bf16 x) { return __bfloat162float(x); }

  // ---------------------------------------------------------------------------------------------- generation
  void kv_begin(size_t slots, size_t max_len) override {
    ENGINE_CHECK(max_len >= 1 && max_len <= maxT, BadShape, "", "KV cache length %zu not in [1, %zu]", max_len, maxT);
    ENGINE_CHECK(slots >= 1, BadShape, "", "KV cache needs at least one slot");
    kv_end();
    kv_slots = slots; kv_len = max_len;
    kv_fill.assign(slots, 0);
    const size_t R = std::max(slots, max_len);
    std::string hint = "generation keeps 2 x nLayer x prompts x (prompt + maxNewTokens) x nEmbd values: generate for fewer prompts at a time";
    kc = (T*)dalloc(L * slots * max_len * C * sizeof(T), "KV cache (keys)", hint, &bytes_misc);
    vc = (T*)dalloc(L * slots * max_len * C * sizeof(T), "KV cache (values)", hint, &bytes_misc);
    size_t rC = (R * C + 127) / 128 * 128;
    T* g = (T*)dalloc((rC * 15 + slots * Vp) * sizeof(T), "generation activations", hint, &bytes_misc);
    g_x = g; g_h = g + rC; g_y = g + 2 * rC; g_qkv = g + 3 * rC; g_fc = g + 6 * rC; g_fcg = g + 10 * rC; g_logits = g + 14 * rC;
  }
  void kv_end() override {
    if (!kc) return;
    CUDA_CHECK(cudaStreamSynchronize(stream));
    dfree(kc); dfree(vc); dfree(g_x);
    kc = vc = g_x = nullptr;
    kv_slots = kv_len = 0;
  }
  void kv_prefill(size_t slot, const int32_t* tokens, size_t n, float* logits) override {
    ENGINE_CHECK(kc && slot < kv_slots, BadShape, "", "slot %zu of %zu (call kv_begin first)", slot, kv_slots);
    ENGINE_CHECK(n >= 1 && kv_fill[slot] + n <= kv_len, BadShape, "lower maxNewTokens or shorten the prompt",
                 "KV cache full: %zu + %zu tokens of %zu", kv_fill[slot], n, kv_len);
    std::vector<int> sl(n, (int)slot), pos(n);
    for (size_t i = 0; i < n; i++) pos[i] = (int)(kv_fill[slot] + i);
    kv_rows(sl.data(), pos.data(), tokens, n, n - 1, logits);
    kv_fill[slot] += n;
  }
  void kv_decode(const size_t* slots, const int32_t* tokens, size_t n, float* logits) override {
    ENGINE_CHECK(kc && n >= 1 && n <= kv_slots, BadShape, "", "decode of %zu rows with %zu slots", n, kv_slots);
    std::vector<int> sl(n), pos(n);
    for (size_t i = 0; i < n; i++) {
      ENGINE_CHECK(slots[i] < kv_slots, BadShape, "", "slot %zu of %zu", slots[i], kv_slots);
      ENGINE_CHECK(kv_fill[slots[i]] < kv_len, BadShape, "lower maxNewTokens", "KV cache full for slot %zu", slots[i]);
      sl[i] = (int)slots[i];
      pos[i] = (int)kv_fill[slots[i]];
    }
    kv_rows(sl.data(), pos.data(), tokens, n, 0, logits);
    for (size_t i = 0; i < n; i++) kv_fill[slots[i]]++;
  }
  // n rows (token at pos[i] of slot[i]); logits for rows [from, n) into out ((n - from), V)
  void kv_rows(const int* sl, const int* pos, const int32_t* tokens, size_t n, size_t from, float* out) {
    for (size_t i = 0; i < n; i++)
      ENGINE_CHECK(tokens[i] >= 0 && (size_t)tokens[i] < V, BadShape, "prompt token ids must be < model.vocabSize",
                   "token %d outside [0, %zu)", tokens[i], V);
    const int Ci = (int)C, ni = (int)n;
    stage(3 * n);
    std::memcpy(pinned, tokens, n * 4);
    std::memcpy(pinned + n, sl, n * 4);
    std::memcpy(pinned + 2 * n, pos, n * 4);
    upload(3 * n);
    const int *d_tok = d_ints, *d_slot = d_ints + n, *d_pos = d_ints + 2 * n;
    st->layer_params(0, 1);
    encoder_rows_kernel<T><<<ceil_div(n * C, 256), 256, 0, stream>>>(g_x, d_tok, d_pos, P(wte_index()), P(wpe_index()), ni, Ci);
    LAUNCH_CHECK();
    const size_t M = kv_len;
    for (size_t l = 0; l < L; l++) {
      st->layer_params(1 + l, (long)(2 + l));
      T* K = kc + l * kv_slots * M * C;
      T* Vv = vc + l * kv_slots * M * C;
      layernorm_forward<T>(g_h, nullptr, nullptr, g_x, PB(l, LN1_W), PB(l, LN1_B), ni, Ci, stream);
      linear_forward<T>(blas, g_qkv, g_h, PB(l, ATTN_W), PB(l, ATTN_B), ni, Ci, 3 * Ci, stream);
      attention_decode<T>(g_y, g_qkv, K, Vv, d_slot, d_pos, ni, (int)M, Ci, (int)NH, stream);
      linear_forward<T>(blas, g_x, g_y, PB(l, ATTNPROJ_W), PB(l, ATTNPROJ_B), ni, Ci, Ci, stream, nullptr, g_x);
      layernorm_forward<T>(g_h, nullptr, nullptr, g_x, PB(l, LN2_W), PB(l, LN2_B), ni, Ci, stream);
      linear_forward<T>(blas, g_fcg, g_h, PB(l, FC_W), PB(l, FC_B), ni, Ci, 4 * Ci, stream, g_fc);
      linear_forward<T>(blas, g_x, g_fcg, PB(l, FCPROJ_W), PB(l, FCPROJ_B), ni, 4 * Ci, Ci, stream, nullptr, g_x);
    }
    const int nl = (int)(n - from);
    st->layer_params(L + 1);
    layernorm_forward<T>(g_h, nullptr, nullptr, g_x + from * C, P(lnf_w_index(L)), P(lnf_b_index(L)), nl, Ci, stream);
    gemm_rm_<T, T>(blas, false, true, nl, (int)V, Ci, g_h, P(wte_index()), g_logits, nullptr, 0.f, stream,
                   Epilogue::None, nullptr, nullptr, 1.f, 0, 0, (int)Vp);
    std::vector<T> tmp((size_t)nl * Vp);
    CUDA_CHECK(cudaMemcpyAsync(tmp.data(), g_logits, tmp.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int r = 0; r < nl; r++)
      for (size_t j = 0; j < V; j++) out[(size_t)r * V + j] = host_f(tmp[(size_t)r * Vp + j]);
  }

  MemoryReport memory() const override {
    MemoryReport r;
    r.other_bytes = bytes_misc;
    st->fill(r);  // weights, master, grads, moments, ZeRO buffers, the model-state formula
    r.activations_bytes = train_acts.bytes + eval_acts.bytes;
    return r;
  }
};

}  // namespace cudabk

namespace engine {

std::unique_ptr<Backend> make_family_cuda_backend(const ModelConfig&, const BackendOptions&);  // family_backend.cu
// one GPT-2 replica (one GPU); comm = its NCCL communicator when several GPUs train together
static std::unique_ptr<Backend> make_gpt2_replica(const ModelConfig& model, const BackendOptions& opts, cudabk::nccl::Comm comm) {
  if (opts.precision == "bf16") return std::make_unique<cudabk::CudaBackend<cudabk::bf16>>(model, opts, comm);
  if (opts.precision == "fp32") return std::make_unique<cudabk::CudaBackend<float>>(model, opts, comm);
  ENGINE_THROW(BadConfig, "use 'bf16' or 'fp32'", "unknown training.precision '%s'", opts.precision.c_str());
}

std::string nccl_unique_id() {
  cudabk::nccl::UniqueId id;
  NCCL_CHECK(cudabk::nccl::api().GetUniqueId(&id), nullptr);
  return cudabk::nccl::to_hex(id);
}

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& model, const BackendOptions& opts) {
  if (cudabk::wants_data_parallel(opts) && model.family == "gpt2")  // several GPUs and/or processes
    return cudabk::make_data_parallel(model, opts, make_gpt2_replica);
  if (model.family != "gpt2") return make_family_cuda_backend(model, opts);  // llama, gpt_neox, gptj
  if (opts.precision == "bf16") return std::make_unique<cudabk::CudaBackend<cudabk::bf16>>(model, opts);
  if (opts.precision == "fp32") return std::make_unique<cudabk::CudaBackend<float>>(model, opts);
  ENGINE_THROW(BadConfig, "use 'bf16' or 'fp32'", "unknown training.precision '%s'", opts.precision.c_str());
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace engine
