// zero.cpp — ZeRO shard arithmetic and the memory estimate (see zero.h).
#include "zero.h"
#include <algorithm>
#include "errors.h"
#include "families.h"

namespace engine {

void ZeroConfig::validate() const {
  ENGINE_CHECK(stage >= 0 && stage <= 3, BadConfig, "set parallelism.zeroStage to 0, 1, 2 or 3",
               "parallelism.zeroStage = %d is not a ZeRO stage", stage);
  ENGINE_CHECK(world_size >= 1, BadConfig, "use at least one device", "world size %d", world_size);
  ENGINE_CHECK(rank >= 0 && rank < world_size, BadConfig, "", "rank %d out of range for world size %d", rank,
               world_size);
}

size_t zero_shard_size(size_t total, int world_size, size_t align) {
  ENGINE_CHECK(world_size >= 1 && align >= 1, BadConfig, "", "world size %d, align %zu", world_size, align);
  size_t per = (total + (size_t)world_size - 1) / (size_t)world_size;
  return (per + align - 1) / align * align;
}

ShardRange zero_shard(size_t total, const ZeroConfig& z, size_t align) {
  z.validate();
  const size_t S = zero_shard_size(total, z.world_size, align);
  ShardRange r;
  r.begin = std::min(total, S * (size_t)z.rank);
  r.end = std::min(total, r.begin + S);
  return r;
}

std::vector<ShardSlice> shard_slices(const ParamLayout& layout, ShardRange r) {
  std::vector<ShardSlice> out;
  for (size_t i = 0; i < layout.tensors.size(); i++) {
    const ParamTensor& t = layout.tensors[i];
    size_t lo = std::max(r.begin, t.offset), hi = std::min(r.end, t.offset + t.numel);
    if (lo >= hi) continue;
    out.push_back({i, lo - t.offset, hi - lo, lo - r.begin});
  }
  return out;
}

std::pair<int, int> tensor_ranks(const ParamLayout& layout, const std::string& name, int world_size, size_t align) {
  const ParamTensor& t = layout.at(name);
  const size_t S = zero_shard_size(layout.total, world_size, align);
  return {(int)(t.offset / S), (int)((t.offset + t.numel - 1) / S)};
}

ModelStateBytes zero_model_state_bytes(size_t n, int stage, int world_size, bool bf16, bool offload, size_t align,
                                       size_t grad_bytes) {
  ZeroConfig{0, world_size, stage}.validate();
  const size_t S = zero_shard_size(n, world_size, align);
  const size_t P = bf16 ? 2 : 4;                  // bytes of the weights the forward reads
  const size_t G = grad_bytes ? grad_bytes : P;   // gradient bytes (the paper: as the weights)
  const size_t M = bf16 ? 4 : 0;                  // fp32 master (fp32 training: the params are the master)
  const size_t opt_n = stage >= 1 ? S : n;        // optimizer state: sharded from stage 1
  const size_t grad_n = stage >= 2 ? S : n;       // gradients: reduce-scattered from stage 2
  const size_t par_n = stage >= 3 ? S : n;        // parameters: gathered per layer at stage 3
  ModelStateBytes b;
  b.params = P * par_n;
  b.grads = G * grad_n;
  if (!offload) {
    b.master = M * opt_n;
    b.moments = 8 * opt_n;
  } else {
    // host: fp32 master (4; the params themselves for fp32) + m + v (8) + fp32 grads for the CPU AdamW (4)
    // + a staging copy of the updated weights in the device dtype, streamed back (P)
    b.host = (4 + 8 + 4 + P) * opt_n;
  }
  return b;
}

// Training activation bytes for (B, T): the cuda backend's ensure_acts layout (cuda_backend.cu), per layer
//   ln1, ln2 (C each; dropped by recompute 'gelu-layernorm'), qkv (3C), atty (C), res2 + res3 (2C), fch (4C),
//   fch_gelu (4C; dropped by 'gelu' and 'gelu-layernorm'), attention: the (NH, T) log-sum-exp with the fused
//   kernels or the (NH, T, T) probabilities without — all per token, in the weights' dtype; ln mean/rstd fp32.
// Outside the layers: encoded, lnf, one layer of ln/gelu scratch, backward scratch (dres, dln: C, dbig: 4C) and
// chunked logits (min(B*T, 4096) rows of Vp). This is Korthikanti et al. 2022 ("Reducing Activation
// Recomputation in Large Transformer Models", eq. 1: sbh(34 + 5as/h)) specialised to this engine's buffers:
// no dropout masks, bf16 everywhere, flash attention removing the 5as/h term. Exact for GPT-2 (the cuda backend's
// family); for Llama/NeoX/GPT-J the MLP width follows the family and attention is counted as GPT-2's (approximate).
static size_t activation_bytes(const ModelConfig& m, size_t B, size_t Tt, bool bf16, const std::string& rc) {
  const size_t L = m.n_layer, C = m.n_embd, NH = m.n_head, HS = C / std::max<size_t>(NH, 1);
  const size_t Vp = (m.vocab_size + 63) / 64 * 64, N = B * Tt, E = bf16 ? 2 : 4;
  const bool flash = bf16 && (HS == 32 || HS == 64);
  const bool keep_gelu = rc == "none", keep_ln = rc != "gelu-layernorm";
  // MLP width: GPT-2's 4C; other families (cpu backend only today) their intermediate size, SwiGLU keeping the
  // gate and up projections (2I) where GPT-2 keeps fch
  const size_t I = m.intermediate_size ? m.intermediate_size : 4 * C;
  const size_t FC = m.hidden_act == "silu" ? 2 * I : I;
  auto rnd = [](size_t n) { return (n + 127) / 128 * 128; };
  const size_t NC = rnd(N * C), att = flash ? 0 : rnd(B * NH * Tt * Tt), lse = flash ? rnd(B * NH * Tt) : 0;
  const size_t Rc = std::min<size_t>(N, 4096);
  size_t per_layer = NC * (keep_ln ? 2 : 0) + rnd(N * 3 * C) + NC + att + 2 * NC + rnd(N * FC) +
                     (keep_gelu ? rnd(N * I) : 0);
  size_t scratch = NC + (keep_gelu ? 0 : rnd(N * I)) + (flash ? 0 : 4 * NC) + rnd(Rc * Vp) + 2 * NC +
                   rnd(N * FC) + att;
  size_t nT = 2 * NC + L * per_layer + scratch;
  size_t S_floats = flash ? rnd(B * NH * Tt) : rnd(B * NH * Tt * std::max(Tt, HS));
  size_t partial = std::max((N + 63) / 64 * FC, (N + 255) / 256 * 2 * C);  // bias-grad / layernorm partials
  size_t nF = rnd(N) * (2 + 4 * L) + L * lse + S_floats + rnd(partial) + 2 * rnd(N);
  return nT * E + nF * 4;
}

MemoryEstimate estimate_memory(const MemoryRequest& req) {
  const std::string &precision = req.precision, &recompute = req.recompute;
  const size_t B = req.B, T = req.T;
  const int stage = req.stage, world_size = req.world_size;
  const bool offload = req.offload;
  ENGINE_CHECK(precision == "fp32" || precision == "bf16", BadConfig, "use 'fp32' or 'bf16'",
               "unknown training.precision '%s'", precision.c_str());
  ENGINE_CHECK(recompute == "none" || recompute == "gelu" || recompute == "gelu-layernorm", BadConfig,
               "use 'none', 'gelu' or 'gelu-layernorm'", "unknown training.recompute '%s'", recompute.c_str());
  ENGINE_CHECK(B >= 1 && T >= 1, BadConfig, "", "micro-batch %zu x block size %zu", B, T);
  const bool bf16 = precision == "bf16";
  ModelConfig m = req.model;
  family_resolve(m);
  const ParamLayout layout = param_layout(m);
  MemoryEstimate e;
  e.req = req;
  e.n_params = layout.total;
  e.shard_elems = zero_shard_size(layout.total, world_size);
  // what the cuda backend allocates: fp32 gradients (exact accumulation over micro-batches) in both precisions
  e.state = zero_model_state_bytes(layout.total, stage, world_size, bf16, offload, ZERO_ALIGN, ENGINE_GRAD_BYTES);
  e.state_paper = zero_model_state_bytes(layout.total, stage, world_size, bf16, offload);
  e.activations = activation_bytes(m, B, T, bf16, recompute);
  // Buffers (engine/cuda/train_state.cuh): tokens + targets (int32) and scalars; from stage 2 every unit's
  // gradients go through an fp32 bucket that is reduced to the owning ranks while the backward goes on: two
  // rotating buckets of one block, plus one for each persistent unit (embeddings, final norm and head); stage 3
  // also gathers weights into the same set of buffers in the compute dtype (current block + prefetch).
  size_t first_block = layout.total, block_end = 0, end0 = 0;
  for (const auto& t : layout.tensors) {
    const std::string& nm = t.name;
    if (nm.find(".h.0.") != std::string::npos || nm.find(".layers.0.") != std::string::npos)
      first_block = std::min(first_block, t.offset), end0 = std::max(end0, t.offset + t.numel);
    if (nm.find(".h.") != std::string::npos || nm.find(".layers.") != std::string::npos)
      block_end = std::max(block_end, t.offset + t.numel);
  }
  const size_t block = end0 > first_block ? end0 - first_block : 0;
  const size_t persistent = block_end > first_block ? layout.total - (block_end - first_block) : layout.total;
  const size_t E = bf16 ? 2 : 4;
  e.buffers = 2 * B * T * 4 + 4096;
  if (stage >= 2) e.buffers += (2 * block + persistent) * ENGINE_GRAD_BYTES;
  if (stage >= 3) e.buffers += (2 * block + persistent) * E;
  // NCCL's own device memory with several ranks (channels and connection buffers, connected at init): measured
  // 0.72 GiB per GPU with 2 and 1.0 GiB with 4 H200s over NVLink (NCCL 2.30, bench/RESULTS.md); other topologies
  // and versions differ, so this is an allowance, not a formula
  if (world_size > 1) e.buffers += world_size >= 4 ? (size_t)1 << 30 : (size_t)768 << 20;
  e.device_total = e.state.device() + e.activations + e.buffers;
  e.host_total = e.state.host;
  const char* f[4] = {"16Ψ", "4Ψ + 12Ψ/N", "2Ψ + 14Ψ/N", "16Ψ/N"};
  const char* ours[4] = {"18Ψ", "6Ψ + 12Ψ/N", "2Ψ + 16Ψ/N", "18Ψ/N"};
  e.formula = bf16 ? std::string(ours[stage]) + " (fp32 gradients; the ZeRO paper's 2-byte gradients: " + f[stage] + ")"
                   : std::string(f[stage]) + " (fp32: 4+4+8 bytes)";
  if (offload) e.formula += "; offload: master weights and moments (12Ψ/N) on the host";
  return e;
}

static std::string gib(size_t b) { return strfmt("%.2f GiB", (double)b / (1024.0 * 1024.0 * 1024.0)); }

FitVerdict memory_fits(const MemoryEstimate& e, size_t device_bytes, size_t host_bytes) {
  const MemoryRequest& r = e.req;
  const size_t B = r.B;
  const int stage = r.stage, world_size = r.world_size;
  const bool offload = r.offload;
  const std::string& recompute = r.recompute;
  FitVerdict v;
  const bool dev_ok = e.device_total <= device_bytes, host_ok = host_bytes == 0 || e.host_total <= host_bytes;
  if (dev_ok && host_ok) return v;
  v.ok = false;
  std::vector<std::string> tips;
  auto est = [&](int st, int ws, bool off, const std::string& rc, size_t b) {
    MemoryRequest q = r;
    q.stage = st, q.world_size = ws, q.offload = off, q.recompute = rc, q.B = b;
    return estimate_memory(q);
  };
  auto try_ = [&](const std::string& tip, int st, int ws, bool off, const std::string& rc, size_t b) {
    MemoryEstimate x = est(st, ws, off, rc, b);
    if (x.device_total <= device_bytes && (host_bytes == 0 || x.host_total <= host_bytes))
      tips.push_back(tip + " (" + gib(x.device_total) + " per device)");
  };
  if (!dev_ok) {
    for (int st = stage + 1; st <= 3 && world_size > 1; st++)
      try_("set parallelism.zeroStage to " + std::to_string(st), st, world_size, offload, recompute, B);
    if (!offload) try_("set parallelism.offload.optimizer to 'cpu'", stage, world_size, true, recompute, B);
    if (recompute != "gelu-layernorm")
      try_("set training.recompute to 'gelu-layernorm'", stage, world_size, offload, "gelu-layernorm", B);
    for (size_t b = B / 2; b >= 1; b /= 2) {
      MemoryEstimate x = est(stage, world_size, offload, recompute, b);
      if (x.device_total <= device_bytes) {
        tips.push_back("lower training.microBatchSize to " + std::to_string(b) + " and raise training.gradAccumSteps " +
                       std::to_string((B + b - 1) / b) + "x to keep the tokens per step (" + gib(x.device_total) +
                       " per device)");
        break;
      }
      if (b == 1) break;
    }
    for (int ws = world_size * 2; ws <= 64 && stage >= 1; ws *= 2) {
      MemoryEstimate x = est(stage, ws, offload, recompute, B);
      if (x.device_total <= device_bytes) {
        tips.push_back("use " + std::to_string(ws) + " devices (" + gib(x.device_total) + " per device)");
        break;
      }
    }
  }
  if (!dev_ok && tips.empty()) {
    // no single change is enough: combine them greedily, cheapest in throughput last (smaller micro-batches)
    MemoryRequest q = r;
    std::vector<std::string> steps;
    auto fits = [&] { return estimate_memory(q).device_total <= device_bytes; };
    if (q.world_size > 1 && q.stage < 3 && !fits()) q.stage = 3, steps.push_back("parallelism.zeroStage to 3");
    if (!q.offload && !fits()) q.offload = true, steps.push_back("parallelism.offload.optimizer to 'cpu'");
    if (q.recompute != "gelu-layernorm" && !fits())
      q.recompute = "gelu-layernorm", steps.push_back("training.recompute to 'gelu-layernorm'");
    while (q.B > 1 && !fits()) q.B /= 2;
    if (q.B != B) steps.push_back("training.microBatchSize to " + std::to_string(q.B) +
                                  " (training.gradAccumSteps " + std::to_string((B + q.B - 1) / q.B) + "x)");
    if (fits()) {
      std::string s = "set ";
      for (size_t i = 0; i < steps.size(); i++) s += (i ? (i + 1 == steps.size() ? " and " : ", ") : "") + steps[i];
      tips.push_back(s + " (" + gib(estimate_memory(q).device_total) + " per device)");
    }
  }
  std::string head = !dev_ok ? "needs " + gib(e.device_total) + " per device (model state " + gib(e.state.device()) +
                                   ", activations " + gib(e.activations) + ", buffers " + gib(e.buffers) + "), " +
                                   gib(device_bytes) + " available"
                             : "needs " + gib(e.host_total) + " of pinned host memory per rank, " + gib(host_bytes) +
                                   " available";
  if (!host_ok) tips.push_back("set parallelism.offload.optimizer to 'none' or use more devices");
  v.advice = head + (tips.empty() ? "; no single setting makes it fit: use a smaller model or more/larger devices"
                                  : "; to fit: " + tips[0]);
  for (size_t i = 1; i < tips.size(); i++) v.advice += "; or " + tips[i];
  return v;
}

}  // namespace engine
