// cuda_backend.cu — the `cuda` backend (backend.h): every model family (GPT-2, Llama, GPT-NeoX/Pythia, GPT-J) as
// one decoder model over TrainState, with bf16 compute, fp32 accumulation and fp32 master weights (or fp32
// throughout: training.precision = 'fp32', the parity test mode). Structure after karpathy/llm.c train_gpt2.cu;
// differences: Hugging Face's parameter layout on the device too (so get/set are plain copies and checkpoints move
// between backends), fp32 gradients (exact accumulation over micro-batches), deterministic reductions (bit-for-bit
// resume), chunked logits, activation recompute, errors that throw.
//
// The block, with the family choosing each part (families.cpp names the tensors):
//   norm1 (LayerNorm | RMSNorm) -> ONE q/k/v product over the family's adjacent weights -> for rotary families
//   qkv_prepare (rotation, GQA head replication into the (B,T,3,NH,HD) layout of the attention kernels; GPT-2's
//   c_attn already writes that layout) -> causal attention (flash in bf16 for head size 32/64, cuBLAS + softmax
//   otherwise) -> output projection (+ residual, fused in the product)
//   MLP: Llama gate|up in one product -> SwiGLU -> down; GELU families fc -> gelu (erf | tanh) -> proj; GPT-2's
//   Conv1D layout runs fc with cuBLASLt's GELU epilogue and its backward with the DGELU epilogue
//   residual: sequential (GPT-2, Llama, NeoX use_parallel_residual=false), parallel with two norms (NeoX), parallel
//   with one norm (GPT-J)
// then the final norm and the LM head (tied or untied, GPT-J's with a bias), chunked with the fused classifier.
//
// Work is queued on one CUDA stream. The engine's hot path, step_async, queues a whole optimizer step (every
// micro-batch, the gradient norm, clipping and the divergence check on the device, AdamW) without the host
// waiting; step_wait reads the result. Weights, gradients, AdamW state, ZeRO sharding, offload and the step
// orchestration live in TrainState (train_state.cuh): this class reaches parameters unit by unit (embeddings, each
// block, final norm + untied head) through st->layer_params / layer_grads / layer_grads_done, which is where ZeRO-3
// gathers and ZeRO-2/3 reduce-scatter overlap compute. Several GPUs: one replica per GPU (nccl_dp.cuh).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include "adamw.cuh"            // gradient norm, AdamW, step gate, master -> compute copy
#include "attention.cuh"        // unfused causal attention (fp32 mode, head sizes other than 32/64), GPT-2 decode
#include "backend.h"            // engine::Backend, the interface implemented here
#include "classifier.cuh"       // fused softmax cross-entropy, dlogits in place
#include "cuda_common.cuh"      // checks, Pack, reductions
#include "encoder.cuh"          // token (+ position) embeddings, deterministic embedding gradients
#include "families.h"           // FamilyTensors: which flat tensors each block uses
#include "flash_attention.cuh"  // fused causal attention (bf16, head size 32/64)
#include "layernorm.cuh"        // LayerNorm (eps 1e-5)
#include "matmul.cuh"           // cuBLASLt products with fused epilogues
#include "nccl_dp.cuh"          // several GPUs: one replica + thread per GPU (make_data_parallel)
#include "rmsnorm.cuh"          // RMSNorm (Llama)
#include "rope.cuh"             // qkv prepare / unprepare (rotary + GQA), generation attention with GQA
#include "rope.h"               // engine::Rope: the cos/sin tables, the cpu backend's numbers
#include "swiglu.cuh"           // SwiGLU, GELU (erf | tanh), bias add
#include "train_state.cuh"      // weights, master, grads, AdamW, ZeRO, step orchestration, memory accounting

namespace cudabk {
using namespace engine;

namespace {

template <typename T>
class CudaBackend final : public Backend {
 public:
  // ---------------------------------------------------------------------------------------------- state
  ModelConfig cfg;
  ParamLayout lay;
  FamilyTensors ft;
  BackendInfo inf;
  // family features: RMSNorm, SwiGLU MLP, GPT-J (one norm, parallel), sequential residual, GELU with erf,
  // Conv1D (in, out) weights (GPT-2; else nn.Linear (out, in)), q/k/v product written straight in attention layout
  bool rms, swiglu, gptj, seq, erf_gelu, conv1d, direct_qkv;
  bool keep_norm, keep_act, flash = false;
  cudaStream_t stream = nullptr;
  Blas blas;
  cudaDeviceProp prop{};
  size_t L, C, NH, KVH, HD, QD, KD, RAW, I, MLPW, V, Vp, maxT;
  int Vh = 0;  // columns of the LM-head product: V, or Vp when the head's unit holds Vp - V rows past it (below)
  QkvLayout ql{};
  int head_w = -1;
  float *cos_t = nullptr, *sin_t = nullptr;
  std::unique_ptr<TrainState<T>> st;  // weights, grads, AdamW state, ZeRO units
  size_t bytes_misc = 0;              // this class's own buffers: tokens, KV cache, rotary tables, cuBLAS workspace

  struct Layer {
    T *n1, *n2, *qkv, *atty, *h1, *pre;  // pre: (N, MLPW) gate|up (Llama) or fc pre-activation
    T* act;                              // (N, I) MLP activation (training.recompute 'none'; else recomputed)
    T* P;                                // (B,NH,T,T) probabilities (unfused attention only)
    float *m1, *r1, *m2, *r2, *lse;
  };
  // Activations for one (B, T). Training keeps every layer; evaluation keeps one layer and two residual buffers.
  struct Acts {
    size_t nB = 0, nT = 0, bytes = 0;
    bool training = false;
    std::vector<Layer> layers;
    std::vector<T*> xs;  // residual stream: training L+1 buffers, evaluation 2 (ping-pong)
    T *nf, *nscr, *h1scr, *raw, *big, *dbig, *dres, *dn, *dn2, *datty, *dqkv, *logits;
    float *mf, *rf, *dsum, *partial, *losses, *correct, *hbias;
    AttnScratch<T> as{};
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
  // generation
  size_t kv_slots = 0, kv_len = 0;
  std::vector<size_t> kv_fill;
  T *kc = nullptr, *vc = nullptr, *g_block = nullptr;
  T *g_x, *g_h, *g_h2, *g_t, *g_raw, *g_q, *g_y, *g_pre, *g_big, *g_logits;

  // ---------------------------------------------------------------------------------------------- setup
  // comm: this replica's NCCL communicator when several GPUs train together (nccl_dp.cuh), else nullptr
  CudaBackend(const ModelConfig& c0, const BackendOptions& o, nccl::Comm comm = nullptr) : cfg(c0) {
    family_resolve(cfg);
    lay = param_layout(cfg);
    ft = family_tensors(cfg, lay);
    const bool gpt2 = cfg.family == "gpt2";
    rms = swiglu = cfg.family == "llama";
    gptj = cfg.family == "gptj";
    seq = gpt2 || rms || (cfg.family == "gpt_neox" && !cfg.parallel_residual);
    erf_gelu = !gpt2 && cfg.hidden_act == "gelu";
    conv1d = direct_qkv = gpt2;
    ENGINE_CHECK(cfg.dropout == 0.0f, BadConfig, "set model.dropout to 0 (the fine-tuning default)",
                 "the cuda backend does not implement dropout; model.dropout = %g requested", cfg.dropout);
    ENGINE_CHECK(o.world_size == 1 || comm, Internal, "", "world size %d without an NCCL communicator", o.world_size);
    ENGINE_CHECK(o.recompute == "none" || o.recompute == "gelu" || o.recompute == "gelu-layernorm", BadConfig,
                 "use 'none', 'gelu' or 'gelu-layernorm'", "unknown training.recompute '%s'", o.recompute.c_str());
    keep_norm = o.recompute != "gelu-layernorm";
    keep_act = o.recompute == "none";  // else the MLP activation is recomputed from its pre-activation
    const ModelDims d = model_dims(cfg);
    L = d.L; C = d.C; NH = d.NH; KVH = d.KVH; HD = d.HD; QD = d.QD; KD = d.KD; I = d.I;
    V = cfg.vocab_size; maxT = cfg.n_positions;
    RAW = QD + 2 * KD; MLPW = swiglu ? 2 * I : I;
    ENGINE_CHECK(C % 8 == 0 && HD % 8 == 0 && I % 8 == 0, BadConfig,
                 "choose nEmbd, the head size and intermediateSize as multiples of 8",
                 "the cuda backend needs 16-byte aligned rows: nEmbd %zu, head size %zu, intermediate size %zu", C, HD, I);
    ENGINE_CHECK(rms || std::abs(cfg.layer_norm_eps - 1e-5f) < 1e-12f, BadConfig, "set training.backend to 'cpu'",
                 "the cuda backend implements LayerNorm with eps 1e-5 only (model layer_norm_eps %g)", cfg.layer_norm_eps);
    for (const ParamTensor& t : lay.tensors)
      ENGINE_CHECK(t.offset % 8 == 0, BadConfig, "vocabSize, nEmbd and the MLP width must keep every tensor 16-byte aligned",
                   "tensor %s starts at element %zu (not a multiple of 8)", t.name.c_str(), t.offset);
    // the q/k/v (and gate/up) weights the single products read must be adjacent in the flat buffer
    const FamilyBlock& b0 = ft.blocks[0];
    if (rms) {
      ql = {(int)NH, (int)KVH, (int)HD, 0, 0, {0, (int)QD, (int)(QD + KD)}, (int)HD, (int)RAW, false};
      adjacent_(b0.q_w, b0.k_w); adjacent_(b0.k_w, b0.v_w); adjacent_(b0.fc_w, b0.up_w);
    } else if (gptj) {
      ql = {(int)NH, (int)KVH, (int)HD, 0, 0, {(int)(2 * C), 0, (int)C}, (int)HD, (int)RAW, true};
      adjacent_(b0.k_w, b0.v_w); adjacent_(b0.v_w, b0.q_w);
    } else if (!direct_qkv) {
      ql = {(int)NH, (int)KVH, (int)HD, 0, 0, {0, (int)HD, (int)(2 * HD)}, (int)(3 * HD), (int)RAW, false};
    }
    ql.rot = (int)cfg.rotary_dim; ql.half = ql.rot / 2;
    head_w = ft.head_w >= 0 ? ft.head_w : ft.embed;
    Vp = (V + 63) / 64 * 64;  // row stride of the logits (16-byte rows)
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
      cudaGetLastError();
      ENGINE_THROW(Device, "run on a machine with an NVIDIA GPU or set training.backend to 'cpu'", "no CUDA device is visible");
    }
    ENGINE_CHECK(o.device >= 0 && o.device < ndev, BadConfig, "", "CUDA device %d requested, %d visible", o.device, ndev);
    CUDA_CHECK(cudaSetDevice(o.device));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, o.device));
    // A BLOCKING stream (not cudaStreamNonBlocking): TrainState::set_params / set_optimizer_state scatter host
    // vectors with cudaMemcpy from pageable memory, which may return once the data is staged, before its DMA (on
    // the legacy stream) lands. Work on a blocking stream is ordered after legacy-stream work, so the compute-copy
    // of the weights that follows never reads a half-written master buffer. NCCL, offload and the ZeRO streams
    // never touch the legacy stream.
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamDefault));
    try {
      init_(o, comm);
    } catch (...) {
      release_();  // a failed constructor runs no destructor: free the stream, cuBLAS and TrainState here
      throw;
    }
  }
  void init_(const BackendOptions& o, nccl::Comm comm) {
    blas.init(sizeof(T) == 4);
    bytes_misc += blas.workspace_bytes;
    inf.name = "cuda";
    inf.device = prop.name;
    inf.blas = "cublasLt " + std::to_string(cublasLtGetVersion());
    inf.precision = sizeof(T) == 2 ? "bf16" : "fp32";
    inf.num_threads = 1;
    flash = flash_supported((int)QD, (int)NH, sizeof(T));
    // units for ZeRO: embeddings (+ positions) | one per block | final norm + untied head (+ GPT-J's head bias).
    // The blocks are the consecutive tensors first .. final_w - 1, the same count per block (families.cpp).
    const size_t first = ft.pos >= 0 ? 2 : 1, per_block = ((size_t)ft.final_w - first) / L;
    ENGINE_CHECK((size_t)ft.final_w == first + per_block * L && ft.embed == 0 && (ft.pos < 0 || ft.pos == 1), Internal,
                 "", "%s: blocks are not %zu consecutive tensors each", cfg.family.c_str(), per_block);
    // The LM-head product pads its columns from V to Vp when the Vp - V weight rows past the head lie in the same
    // unit (GPT-2: wte, then wpe): cuBLASLt ran GPT-2's 4096x50257x768 products at 94-124 TFLOP/s on the H200 and
    // the padded ones at ~780. Those extra logits are ignored by the classifier, which writes zero gradient there,
    // so they contribute nothing to d(nf); dW's product keeps V rows and never writes past the head. Otherwise (the
    // head alone in its unit) the product has V columns and the padding columns of the logits are never written.
    const size_t unit0_end = lay.tensors[first].offset, hw_end = lay.tensors[head_w].offset + Vp * C;
    Vh = head_w == ft.embed && hw_end <= unit0_end ? (int)Vp : (int)V;
    TrainStateConfig sc;
    sc.stream = stream;
    sc.precision = inf.precision;
    sc.zero_stage = o.zero_stage, sc.world_size = o.world_size, sc.rank = o.rank, sc.comm = comm;
    sc.offload = o.offload;
    sc.offload_delayed = o.offload_delayed;
    st = std::make_unique<TrainState<T>>(lay, layer_units(lay, first, per_block, L), sc, prop.name);
    dscal = st->dscal;
    CUDA_CHECK(cudaMallocHost(&pinned_out, 8 * sizeof(double)));
    CUDA_CHECK(cudaEventCreateWithFlags(&staged, cudaEventDisableTiming));
    if (direct_qkv) return;
    // rotary tables: ordered on the compute stream (cudaMemcpyAsync from pageable memory is staged before it
    // returns; the stream orders the DMA before every kernel that reads the tables), then waited for
    const char* hint = "the model does not fit on this GPU: use a smaller model or a GPU with more memory";
    Rope rope;
    rope.init(cfg);
    cos_t = (float*)dalloc(rope.cos.size() * 4, "rotary tables", hint, &bytes_misc);
    sin_t = (float*)dalloc(rope.sin.size() * 4, "rotary tables", hint, &bytes_misc);
    CUDA_CHECK(cudaMemcpyAsync(cos_t, rope.cos.data(), rope.cos.size() * 4, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaMemcpyAsync(sin_t, rope.sin.data(), rope.sin.size() * 4, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));  // `rope` (the pageable source) dies at the end of this scope
  }
  void adjacent_(int a, int b) {
    const ParamTensor &ta = lay.tensors[a], &tb = lay.tensors[b];
    ENGINE_CHECK(ta.offset + ta.numel == tb.offset, Internal, "", "%s and %s must be adjacent in the parameter layout",
                 ta.name.c_str(), tb.name.c_str());
  }

  // device allocations charged to a byte counter, OUT_OF_MEMORY naming what (train_state.cuh DeviceMemory)
  void* dalloc(size_t bytes, const std::string& what, const std::string& hint, size_t* counter) {
    return st->mem.alloc(bytes, counter, what, hint);
  }
  void dfree(void* p) { st->mem.free(p); }
  ~CudaBackend() override { release_(); }
  void release_() {
    if (stream) cudaStreamSynchronize(stream);
    st.reset();  // every device buffer (activations included) is owned by st->mem
    if (pinned) cudaFreeHost(pinned), pinned = nullptr;
    if (pinned_out) cudaFreeHost(pinned_out), pinned_out = nullptr;
    if (staged) cudaEventDestroy(staged), staged = nullptr;
    blas.destroy();
    if (stream) cudaStreamDestroy(stream), stream = nullptr;
  }

  // Size the activations for (B, T); grows only (a smaller batch reuses the buffers). Two passes over the same
  // carving code: count, then assign. Scratch buffers are shared where their lifetimes do not overlap: d(attention
  // output) lives in dn and d(qkv) in the MLP scratch `big` when they fit.
  void ensure_acts(Acts& a, size_t B, size_t Tt, bool training) {
    if (a.block && a.nT >= Tt && a.nB >= B) return;
    B = std::max(B, a.nB);
    Tt = std::max(Tt, a.nT);
    if (a.block) { CUDA_CHECK(cudaStreamSynchronize(stream)); dfree(a.block); dfree(a.block_f); a.block = a.block_f = nullptr; }
    const size_t N = B * Tt, nl = training ? L : 1;
    const bool kn = !training || keep_norm, has_n2 = !gptj;
    a.Rc = (int)std::min<size_t>(N, 4096);
    auto rnd = [](size_t n) { return (n + 127) / 128 * 128; };  // every slice 256-byte aligned
    size_t nT = 0, nF = 0;
    T* p = nullptr;
    float* f = nullptr;
    auto cut = [&](size_t n) { T* r = p ? p : nullptr; if (p) p += rnd(n); else nT += rnd(n); return r; };
    auto cutf = [&](size_t n) { float* r = f ? f : nullptr; if (f) f += rnd(n); else nF += rnd(n); return r; };
    const size_t PT = flash ? 0 : B * NH * Tt * Tt;
    const size_t partial = std::max({bias_grad_scratch_floats(N, std::max(MLPW, RAW)),
                                     ft.head_b >= 0 ? bias_grad_scratch_floats(a.Rc, Vp) : 0,
                                     rms ? rmsnorm_scratch_floats(N, C) : layernorm_scratch_floats(N, C)});
    auto carve = [&]() {
      a.layers.assign(nl, Layer{});
      a.xs.assign(training ? L + 1 : 2, nullptr);
      for (auto& x : a.xs) x = cut(N * C);
      for (auto& l : a.layers) {
        l.n1 = kn ? cut(N * C) : nullptr;
        l.n2 = kn && has_n2 ? cut(N * C) : nullptr;
        l.qkv = cut(N * 3 * QD); l.atty = cut(N * QD);
        l.h1 = seq ? cut(N * C) : nullptr;
        l.pre = cut(N * MLPW);
        l.act = training && keep_act ? cut(N * I) : nullptr;
        l.P = PT ? cut(PT) : nullptr;
        l.m1 = cutf(N); l.r1 = cutf(N); l.m2 = cutf(N); l.r2 = cutf(N);
        l.lse = flash ? cutf(B * NH * Tt) : nullptr;
      }
      a.nf = cut(N * C); a.nscr = cut(N * C);
      a.h1scr = seq ? nullptr : cut(N * C);
      a.raw = direct_qkv ? nullptr : cut(N * RAW);
      a.big = cut(N * I);
      a.logits = cut((size_t)a.Rc * Vp);
      a.dbig = training && swiglu ? cut(N * MLPW) : nullptr;
      a.dres = training ? cut(N * C) : nullptr;
      a.dn = training ? cut(N * C) : nullptr;
      a.dn2 = training && !seq && !gptj ? cut(N * C) : nullptr;
      // d(attention output) may share dn unless the attention's input gradient accumulates into it (GPT-J)
      a.datty = !training ? nullptr : !gptj && QD <= C ? a.dn : cut(N * QD);
      a.dqkv = !training ? nullptr : I >= 3 * QD ? a.big : cut(N * 3 * QD);
      if (!flash) { a.as.q = cut(N * QD); a.as.k = cut(N * QD); a.as.v = cut(N * QD); a.as.vacc = cut(N * QD); }
      a.as.dS = training && !flash ? cut(PT) : nullptr;
      a.as.S = flash ? nullptr : cutf(B * NH * Tt * std::max(Tt, HD));
      a.dsum = flash ? cutf(B * NH * Tt) : nullptr;
      a.mf = cutf(N); a.rf = cutf(N);
      a.partial = cutf(partial);
      a.hbias = ft.head_b >= 0 ? cutf(Vp) : nullptr;
      a.losses = cutf(N); a.correct = cutf(N);
    };
    carve();  // count
    std::string hint = "lower training.microBatchSize (now " + std::to_string(B) + ") or preprocess.blockSize (now " +
                       std::to_string(Tt) + ")" +
                       (training && keep_act ? ", or set training.recompute to 'gelu' (recompute the MLP activation) or 'gelu-layernorm'"
                        : training && keep_norm ? ", or set training.recompute to 'gelu-layernorm'" : "") +
                       (training ? "; raise training.gradAccumSteps to keep the tokens per step" : "; or lower evaluation.batchSize");
    std::string what = std::string(training ? "training" : "evaluation") + " activations for " + std::to_string(B) + "x" +
                       std::to_string(Tt) + " tokens";
    a.block = dalloc(nT * sizeof(T), what, hint, &a.bytes);
    a.block_f = dalloc(nF * 4, what + " (fp32 part)", hint, &a.bytes);
    p = (T*)a.block;
    f = (float*)a.block_f;
    carve();  // assign
    a.nB = B; a.nT = Tt; a.training = training;
  }

  // ---------------------------------------------------------------------------------------------- helpers
  // never cached across units: at ZeRO-3 they point into rotating gather buffers
  T* P(int idx) { return idx < 0 ? nullptr : st->param((size_t)idx); }
  float* G(int idx) { return idx < 0 ? nullptr : st->grad((size_t)idx); }
  T* X(Acts& a, size_t l) { return a.training ? a.xs[l] : a.xs[l % 2]; }

  // out (N, OC) = inp (N, K) · W (+ bias) (+ residual, may alias out); W is (K, OC) in GPT-2's Conv1D layout, else
  // nn.Linear's (OC, K). With pre_gelu (Conv1D): out = gelu(pre_gelu), pre_gelu = the product (GELU epilogue).
  void lin_fwd(T* out, const T* inp, const T* W, const T* bias, int N, int K, int OC, const T* residual = nullptr,
               T* pre_gelu = nullptr) {
    if (conv1d) return linear_forward<T>(blas, out, inp, W, bias, N, K, OC, stream, pre_gelu, residual);
    Epilogue ep = bias ? Epilogue::Bias : Epilogue::None;
    if (gemm_rm_<T, T>(blas, false, true, N, OC, K, inp, W, out, residual, residual ? 1.f : 0.f, stream, ep, bias)) return;
    blas.unfused++;
    gemm_rm_<T, T>(blas, false, true, N, OC, K, inp, W, out, residual, residual ? 1.f : 0.f, stream);
    add_bias<T>(out, bias, N, OC, OC, stream);
  }
  // dW += (fp32); dbias += column sums; dinp (N, K) = (or += with acc) dout · W^T-as-stored, times gelu'(pre_gelu)
  // when given (Conv1D, the DGELU epilogue)
  void lin_bwd(T* dinp, bool acc, float* dW, float* dbias, const T* dout, const T* inp, const T* W, int N, int K, int OC,
               float* scratch, const T* pre_gelu = nullptr) {
    if (conv1d) {
      REQUIRE(!acc, "Conv1D layers write their input gradient");
      return linear_backward<T>(blas, dinp, dW, dbias, dout, inp, W, N, K, OC, scratch, stream, pre_gelu);
    }
    gemm_rm_<T, float>(blas, true, false, OC, K, N, dout, inp, dW, dW, 1.f, stream);
    if (dbias) bias_grad<T>(dbias, dout, N, OC, scratch, stream);
    if (dinp) gemm_rm_<T, T>(blas, false, false, N, K, OC, dout, W, dinp, acc ? dinp : nullptr, acc ? 1.f : 0.f, stream);
  }
  void norm_fwd(T* out, float* mean, float* rstd, const T* x, int w, int b, int N) {
    if (rms) rmsnorm_forward<T>(out, rstd, x, P(w), N, (int)C, cfg.layer_norm_eps, stream);
    else layernorm_forward<T>(out, mean, rstd, x, P(w), P(b), N, (int)C, stream);
  }
  void norm_bwd(T* dinp, int w, int b, const T* dout, const T* x, const float* mean, const float* rstd, int N, float* scratch) {
    if (rms) rmsnorm_backward<T>(dinp, G(w), scratch, dout, x, P(w), rstd, N, (int)C, stream);
    else layernorm_backward<T>(dinp, G(w), G(b), scratch, dout, x, P(w), mean, rstd, N, (int)C, stream);
  }
  void act_fwd(T* act, const T* pre, int N) {
    if (swiglu) swiglu_forward<T>(act, pre, N, (int)I, stream);
    else gelu_act_forward<T>(act, pre, (size_t)N * I, erf_gelu, stream);
  }
  // MLP: out = resid + proj(act(fc(in))); pre (N, MLPW) saved, act (N, I)
  void mlp_fwd(const FamilyBlock& bl, const T* in, T* pre, T* act, T* out, const T* resid, int N) {
    if (conv1d) {
      lin_fwd(act, in, P(bl.fc_w), P(bl.fc_b), N, (int)C, (int)I, nullptr, pre);
    } else {
      lin_fwd(pre, in, P(bl.fc_w), P(bl.fc_b), N, (int)C, (int)MLPW);
      act_fwd(act, pre, N);
    }
    lin_fwd(out, act, P(bl.proj_w), P(bl.proj_b), N, (int)I, (int)C, resid);
  }
  // the first of the adjacent q/k/v weights of layer l (the one product reads all three)
  int qkv_index(size_t l) const { const FamilyBlock& b = ft.blocks[l]; return rms ? b.q_w : gptj ? b.k_w : b.qkv_w; }

  // ---------------------------------------------------------------------------------------------- forward
  // Through the final norm for the tokens at d_tokens (B*T).
  void forward(Acts& a, const int* d_tokens, size_t B, size_t Tt) {
    const int N = (int)(B * Tt);
    st->layer_params(0, 1);
    encoder_forward<T>(X(a, 0), d_tokens, P(ft.embed), P(ft.pos), (int)B, (int)Tt, (int)C, stream);
    for (size_t l = 0; l < L; l++) {
      st->layer_params(1 + l, (long)(2 + l));  // ZeRO-3: block l gathered, the next unit prefetched
      Layer& x = a.layers[a.training ? l : 0];
      const FamilyBlock& bl = ft.blocks[l];
      T *xin = X(a, l), *xout = X(a, l + 1);
      T* n1 = x.n1 ? x.n1 : a.nscr;
      norm_fwd(n1, x.m1, x.r1, xin, bl.norm1_w, bl.norm1_b, N);
      if (direct_qkv) {
        lin_fwd(x.qkv, n1, P(qkv_index(l)), P(bl.qkv_b), N, (int)C, (int)RAW);
      } else {
        lin_fwd(a.raw, n1, P(qkv_index(l)), P(bl.qkv_b), N, (int)C, (int)RAW);
        qkv_prepare<T>(x.qkv, a.raw, cos_t, sin_t, (int)B, (int)Tt, ql, stream);
      }
      attn_fwd(a, x, (int)B, (int)Tt);
      T* h1 = x.h1 ? x.h1 : a.h1scr;
      lin_fwd(h1, x.atty, P(bl.o_w), P(bl.o_b), N, (int)QD, (int)C, xin);
      const T* min = n1;
      if (!gptj) {  // second norm: of h1 (sequential) or of the block input (NeoX parallel); n1 is no longer read
        T* n2 = x.n2 ? x.n2 : a.nscr;
        norm_fwd(n2, x.m2, x.r2, seq ? h1 : xin, bl.norm2_w, bl.norm2_b, N);
        min = n2;
      }
      mlp_fwd(bl, min, x.pre, x.act ? x.act : a.big, xout, h1, N);
    }
    st->layer_params(L + 1);
    norm_fwd(a.nf, a.mf, a.rf, X(a, L), ft.final_w, ft.final_b, N);
  }

  void attn_fwd(Acts& a, Layer& x, int B, int Tt) {
    if constexpr (sizeof(T) == 2) {
      if (flash) return flash_attention_forward(x.atty, x.lse, x.qkv, B, Tt, (int)QD, (int)NH, stream);
    }
    attention_forward<T>(blas, x.atty, x.P, x.qkv, a.as, B, Tt, (int)QD, (int)NH, stream);
  }
  void attn_bwd_kernel(Acts& a, Layer& x, int B, int Tt) {
    if constexpr (sizeof(T) == 2) {
      if (flash) return flash_attention_backward(a.dqkv, a.datty, x.atty, x.qkv, x.lse, a.dsum, B, Tt, (int)QD, (int)NH, stream);
    }
    attention_backward<T>(blas, a.dqkv, a.datty, x.qkv, x.P, a.as, B, Tt, (int)QD, (int)NH, stream);
  }

  // logits (R, Vh) with row stride Vp for R rows of nf; columns [V, Vp) are padding, ignored by the classifier,
  // which zeroes them in dlogits.
  void lm_head(const T* nf, T* logits, int R) {
    Epilogue ep = ft.head_b >= 0 ? Epilogue::Bias : Epilogue::None;
    if (gemm_rm_<T, T>(blas, false, true, R, Vh, (int)C, nf, P(head_w), logits, nullptr, 0.f, stream, ep, P(ft.head_b),
                       nullptr, 1.f, 0, 0, (int)Vp))
      return;
    gemm_rm_<T, T>(blas, false, true, R, Vh, (int)C, nf, P(head_w), logits, nullptr, 0.f, stream, Epilogue::None,
                   nullptr, nullptr, 1.f, 0, 0, (int)Vp);
    add_bias<T>(logits, P(ft.head_b), R, (int)V, (int)Vp, stream);
  }

  // ---------------------------------------------------------------------------------------------- backward
  // MLP backward from dout (= d(block output)); d(MLP input) into dn (+= with acc)
  void mlp_bwd(Acts& a, Layer& x, const FamilyBlock& bl, const T* dout, const T* in, T* dn, bool acc, int N) {
    const T* act = x.act;
    if (!act) {  // recompute the activation
      act_fwd(a.big, x.pre, N);
      act = a.big;
    }
    if (conv1d) {  // d(pre) in one product: the DGELU epilogue reads the saved pre-activation
      lin_bwd(a.big, false, G(bl.proj_w), G(bl.proj_b), dout, act, P(bl.proj_w), N, (int)I, (int)C, a.partial, x.pre);
      lin_bwd(dn, acc, G(bl.fc_w), G(bl.fc_b), a.big, in, P(bl.fc_w), N, (int)C, (int)I, a.partial);
      return;
    }
    lin_bwd(a.big, false, G(bl.proj_w), G(bl.proj_b), dout, act, P(bl.proj_w), N, (int)I, (int)C, a.partial);
    if (swiglu) {
      swiglu_backward<T>(a.dbig, a.big, x.pre, N, (int)I, stream);
      lin_bwd(dn, acc, G(bl.fc_w), nullptr, a.dbig, in, P(bl.fc_w), N, (int)C, (int)MLPW, a.partial);
    } else {
      gelu_act_backward<T>(a.big, x.pre, (size_t)N * I, erf_gelu, stream);
      lin_bwd(dn, acc, G(bl.fc_w), G(bl.fc_b), a.big, in, P(bl.fc_w), N, (int)C, (int)I, a.partial);
    }
  }
  void attn_bwd(Acts& a, Layer& x, size_t l, const T* dout, const T* in, T* dn, bool acc, int B, int Tt) {
    const FamilyBlock& bl = ft.blocks[l];
    const int N = B * Tt, qi = qkv_index(l);
    lin_bwd(a.datty, false, G(bl.o_w), G(bl.o_b), dout, x.atty, P(bl.o_w), N, (int)QD, (int)C, a.partial);
    attn_bwd_kernel(a, x, B, Tt);
    const T* draw = a.dqkv;
    if (!direct_qkv) {
      qkv_unprepare<T>(a.raw, a.dqkv, cos_t, sin_t, B, Tt, ql, stream);
      draw = a.raw;
    }
    lin_bwd(dn, acc, G(qi), G(bl.qkv_b), draw, in, P(qi), N, (int)C, (int)RAW, a.partial);
  }
  // the block's norm outputs: kept, or recomputed into nscr (one at a time: each is read by one part)
  const T* norm1_(Acts& a, Layer& x, const FamilyBlock& bl, const T* xin, int N) {
    if (x.n1) return x.n1;
    norm_fwd(a.nscr, nullptr, nullptr, xin, bl.norm1_w, bl.norm1_b, N);
    return a.nscr;
  }
  const T* norm2_(Acts& a, Layer& x, const FamilyBlock& bl, const T* xin, int N) {
    if (x.n2) return x.n2;
    norm_fwd(a.nscr, nullptr, nullptr, seq ? x.h1 : xin, bl.norm2_w, bl.norm2_b, N);
    return a.nscr;
  }

  void backward(Acts& a, size_t B, size_t Tt, int U, const int* d_buckets) {
    const int N = (int)(B * Tt);
    CUDA_CHECK(cudaMemsetAsync(a.dres, 0, (size_t)N * C * sizeof(T), stream));
    st->layer_params(L + 1);
    st->layer_grads(L + 1);
    norm_bwd(a.dres, ft.final_w, ft.final_b, a.dn, X(a, L), a.mf, a.rf, N, a.partial);  // a.dn holds d(nf)
    st->layer_grads_done(L + 1);
    for (size_t l = L; l-- > 0;) {
      st->layer_params(1 + l, l > 0 ? (long)l : 0L);  // block l; prefetch block l - 1 (or the embeddings)
      st->layer_grads(1 + l);
      Layer& x = a.layers[l];
      const FamilyBlock& bl = ft.blocks[l];
      T* xin = X(a, l);
      if (seq) {  // out = h1 + mlp(norm2(h1)), h1 = x + attn(norm1(x))
        mlp_bwd(a, x, bl, a.dres, norm2_(a, x, bl, xin, N), a.dn, false, N);
        norm_bwd(a.dres, bl.norm2_w, bl.norm2_b, a.dn, x.h1, x.m2, x.r2, N, a.partial);
        attn_bwd(a, x, l, a.dres, norm1_(a, x, bl, xin, N), a.dn, false, (int)B, (int)Tt);
        norm_bwd(a.dres, bl.norm1_w, bl.norm1_b, a.dn, xin, x.m1, x.r1, N, a.partial);
      } else if (gptj) {  // out = x + attn(n1) + mlp(n1)
        const T* n1 = norm1_(a, x, bl, xin, N);
        mlp_bwd(a, x, bl, a.dres, n1, a.dn, false, N);
        attn_bwd(a, x, l, a.dres, n1, a.dn, true, (int)B, (int)Tt);
        norm_bwd(a.dres, bl.norm1_w, bl.norm1_b, a.dn, xin, x.m1, x.r1, N, a.partial);
      } else {  // NeoX parallel: out = x + attn(norm1(x)) + mlp(norm2(x))
        mlp_bwd(a, x, bl, a.dres, norm2_(a, x, bl, xin, N), a.dn2, false, N);
        attn_bwd(a, x, l, a.dres, norm1_(a, x, bl, xin, N), a.dn, false, (int)B, (int)Tt);
        norm_bwd(a.dres, bl.norm2_w, bl.norm2_b, a.dn2, xin, x.m2, x.r2, N, a.partial);
        norm_bwd(a.dres, bl.norm1_w, bl.norm1_b, a.dn, xin, x.m1, x.r1, N, a.partial);
      }
      st->layer_grads_done(1 + l);  // ZeRO-2/3: this block's bucket is reduced while the next block computes
    }
    encoder_backward<T>(G(ft.embed), G(ft.pos), a.dres, d_buckets, U, (int)B, (int)Tt, (int)C, stream);
    st->layer_grads_done(0);
  }

  // ---------------------------------------------------------------------------------------------- Backend API
  const BackendInfo& info() const override { return inf; }
  const ModelConfig& config() const override { return cfg; }
  const ParamLayout& layout() const override { return lay; }
  // host fp32 state in ParamLayout order (collectives when several ranks hold shards: nccl_dp.cuh calls them on
  // every replica)
  void get_params(float* dst) const override { st->get_params(dst); }
  void set_params(const float* src) override { st->set_params(src); }
  void get_grads(float* dst) const override { st->get_grads(dst); }
  void get_optimizer_state(float* m, float* v) const override { st->get_optimizer_state(m, v); }
  void set_optimizer_state(const float* m, const float* v) override { st->set_optimizer_state(m, v); }
  void zero_grad() override { st->zero_grad(); }
  // this rank's master/m/v shard for sharded checkpoints (ZeRO >= 1 over several ranks; else empty)
  std::vector<LocalShard> local_shards() override { return st->local_shards(); }
  HostState host_state() override { return st->host_state(); }
  void host_state_written() override { st->host_state_written(); }

  void check_batch(const Batch& b, bool targets) {
    ENGINE_CHECK(b.B >= 1 && b.T >= 1 && b.T <= maxT, BadShape, "blockSize must be <= model.nPositions",
                 "batch (B=%zu, T=%zu) with nPositions %zu", b.B, b.T, maxT);
    for (size_t i = 0, N = b.B * b.T; i < N; i++) {
      int32_t x = b.inputs[i];
      ENGINE_CHECK(x >= 0 && (size_t)x < V, BadShape, "the shards were tokenized with a larger vocabulary than the model's",
                   "input token %d at position %zu is outside [0, %zu)", x, i, V);
      if (!targets) continue;
      int32_t y = b.targets[i];
      ENGINE_CHECK(y == IGNORE_INDEX || (y >= 0 && (size_t)y < V), BadShape, "labels must be token ids or -100",
                   "target %d at position %zu is outside [0, %zu)", y, i, V);
    }
  }
  // room for n_needed ints in the pinned staging buffer and its device copy
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

  // One micro-batch (forward, chunked LM head + classifier, backward) whose tokens are staged at pinned + off; the
  // loss sum is added to dscal[0] on the device. No host synchronisation.
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
    st->layer_grads(0);                             // a tied head's gradient goes to the embeddings unit
    if (head_w != ft.embed) st->layer_grads(L + 1);  // an untied head's (and its bias) to the last unit
    if (a.hbias) CUDA_CHECK(cudaMemsetAsync(a.hbias, 0, Vp * 4, stream));
    for (int r0 = 0; r0 < (int)N; r0 += a.Rc) {
      int R = std::min(a.Rc, (int)N - r0);
      const T* nf = a.nf + (size_t)r0 * C;
      lm_head(nf, a.logits, R);
      fused_classifier<T>(a.logits, a.losses + r0, nullptr, d + N + r0, R, (int)V, (int)Vp, dloss, true, stream);
      // d(nf) = dlogits · W_head; dW_head += dlogits^T · nf (dlogits rows have stride Vp)
      gemm_rm_<T, T>(blas, false, false, R, (int)C, Vh, a.logits, P(head_w), a.dn + (size_t)r0 * C, nullptr, 0.f,
                     stream, Epilogue::None, nullptr, nullptr, 1.f, (int)Vp, 0, 0);
      gemm_rm_<T, float>(blas, true, false, (int)V, (int)C, R, a.logits, nf, G(head_w), G(head_w), 1.f, stream,
                         Epilogue::None, nullptr, nullptr, 1.f, (int)Vp, 0, 0);
      // GPT-J's head bias: summed over Vp columns into its own scratch (the padding columns are zero), then V of
      // them added into the unit's gradient (a Vp-wide sum would write past the unit's bucket)
      if (a.hbias) bias_grad<T>(a.hbias, a.logits, R, (int)Vp, a.partial, stream);
    }
    if (a.hbias) add_kernel_(G(ft.head_b), a.hbias, V, stream);
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
    st->end_step(dloss, hp, grad_clip, max_loss);  // reduction, norm, gate (clipping, divergence), AdamW, gather
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
      lm_head(a.nf + (size_t)r0 * C, a.logits, R);
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
    for (int r0 = 0; r0 < (int)N; r0 += a.Rc) {
      int R = std::min(a.Rc, (int)N - r0);
      lm_head(a.nf + (size_t)r0 * C, a.logits, R);
      copy_logits_(a.logits, R, out + (size_t)r0 * V);
    }
  }
  void copy_logits_(const T* d, int R, float* out) {
    std::vector<T> tmp((size_t)R * Vp);
    CUDA_CHECK(cudaMemcpyAsync(tmp.data(), d, tmp.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int r = 0; r < R; r++)
      for (size_t j = 0; j < V; j++) out[(size_t)r * V + j] = host_f(tmp[(size_t)r * Vp + j]);
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
    std::string hint = "generation keeps 2 x nLayer x prompts x (prompt + maxNewTokens) x nKvHead x headDim values: "
                       "generate for fewer prompts at a time";
    kc = (T*)dalloc(L * slots * max_len * KD * sizeof(T), "KV cache (keys)", hint, &bytes_misc);
    vc = (T*)dalloc(L * slots * max_len * KD * sizeof(T), "KV cache (values)", hint, &bytes_misc);
    auto rnd = [](size_t n) { return (n + 127) / 128 * 128; };
    const size_t sizes[] = {R * C, R * C, R * C, R * C, R * RAW, R * QD, R * QD, R * MLPW, R * I, R * Vp};
    size_t tot = 0;
    for (size_t s : sizes) tot += rnd(s);
    g_block = (T*)dalloc(tot * sizeof(T), "generation activations", hint, &bytes_misc);
    T** dst[] = {&g_x, &g_h, &g_h2, &g_t, &g_raw, &g_q, &g_y, &g_pre, &g_big, &g_logits};
    T* p = g_block;
    for (size_t i = 0; i < 10; i++) { *dst[i] = p; p += rnd(sizes[i]); }
  }
  void kv_end() override {
    if (!kc) return;
    CUDA_CHECK(cudaStreamSynchronize(stream));
    dfree(kc); dfree(vc); dfree(g_block);
    kc = vc = g_block = nullptr;
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
  // n rows (token at pos[i] of slot[i]); logits of rows [from, n) into out ((n - from), V)
  void kv_rows(const int* sl, const int* pos, const int32_t* tokens, size_t n, size_t from, float* out) {
    for (size_t i = 0; i < n; i++)
      ENGINE_CHECK(tokens[i] >= 0 && (size_t)tokens[i] < V, BadShape, "prompt token ids must be < the vocabulary size",
                   "token %d outside [0, %zu)", tokens[i], V);
    const int ni = (int)n;
    stage(3 * n);
    std::memcpy(pinned, tokens, n * 4);
    std::memcpy(pinned + n, sl, n * 4);
    std::memcpy(pinned + 2 * n, pos, n * 4);
    upload(3 * n);
    const int *d_tok = d_ints, *d_slot = d_ints + n, *d_pos = d_ints + 2 * n;
    st->layer_params(0, 1);
    encoder_rows<T>(g_x, d_tok, d_pos, P(ft.embed), P(ft.pos), ni, (int)C, stream);
    const size_t M = kv_len;
    for (size_t l = 0; l < L; l++) {
      st->layer_params(1 + l, (long)(2 + l));
      const FamilyBlock& bl = ft.blocks[l];
      T* K = kc + l * kv_slots * M * KD;
      T* Vv = vc + l * kv_slots * M * KD;
      norm_fwd(g_h, nullptr, nullptr, g_x, bl.norm1_w, bl.norm1_b, ni);
      lin_fwd(g_raw, g_h, P(qkv_index(l)), P(bl.qkv_b), ni, (int)C, (int)RAW);
      if (direct_qkv) {
        attention_decode<T>(g_y, g_raw, K, Vv, d_slot, d_pos, ni, (int)M, (int)QD, (int)NH, stream);
      } else {
        qkv_prepare_decode<T>(g_q, K, Vv, g_raw, cos_t, sin_t, d_slot, d_pos, ni, (int)M, ql, stream);
        gqa_decode<T>(g_y, g_q, K, Vv, d_slot, d_pos, ni, (int)M, (int)NH, (int)KVH, (int)HD, stream);
      }
      if (seq) {
        lin_fwd(g_x, g_y, P(bl.o_w), P(bl.o_b), ni, (int)QD, (int)C, g_x);
        norm_fwd(g_h2, nullptr, nullptr, g_x, bl.norm2_w, bl.norm2_b, ni);
        mlp_fwd(bl, g_h2, g_pre, g_big, g_x, g_x, ni);
      } else {
        const T* min = g_h;
        if (!gptj) { norm_fwd(g_h2, nullptr, nullptr, g_x, bl.norm2_w, bl.norm2_b, ni); min = g_h2; }
        lin_fwd(g_t, g_y, P(bl.o_w), P(bl.o_b), ni, (int)QD, (int)C, g_x);
        mlp_fwd(bl, min, g_pre, g_big, g_x, g_t, ni);
      }
    }
    const int nl = (int)(n - from);
    st->layer_params(L + 1);
    norm_fwd(g_h, nullptr, nullptr, g_x + from * C, ft.final_w, ft.final_b, nl);
    lm_head(g_h, g_logits, nl);
    copy_logits_(g_logits, nl, out);
  }

  MemoryReport memory() const override {
    MemoryReport r;
    r.other_bytes = bytes_misc;
    st->fill(r);  // weights, master, grads, moments, ZeRO buffers, the model-state formula
    r.activations_bytes = train_acts.bytes + eval_acts.bytes;
    return r;
  }
};

// one replica (one GPU); comm = its NCCL communicator when several GPUs train together
std::unique_ptr<Backend> make_replica(const ModelConfig& model, const BackendOptions& opts, nccl::Comm comm) {
  if (opts.precision == "bf16") return std::make_unique<CudaBackend<bf16>>(model, opts, comm);
  if (opts.precision == "fp32") return std::make_unique<CudaBackend<float>>(model, opts, comm);
  ENGINE_THROW(BadConfig, "use 'bf16' or 'fp32'", "unknown training.precision '%s'", opts.precision.c_str());
}

}  // namespace
}  // namespace cudabk

namespace engine {

std::string nccl_unique_id() {
  cudabk::nccl::UniqueId id;
  NCCL_CHECK(cudabk::nccl::api().GetUniqueId(&id), nullptr);
  return cudabk::nccl::to_hex(id);
}

// Several GPUs and/or processes: one replica + engine thread per GPU (nccl_dp.cuh); else one replica.
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& model, const BackendOptions& opts) {
  if (cudabk::wants_data_parallel(opts)) return cudabk::make_data_parallel(model, opts, cudabk::make_replica);
  return cudabk::make_replica(model, opts, nullptr);
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
