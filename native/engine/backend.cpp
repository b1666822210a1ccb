// backend.cpp — the backend factory and the random GPT-2 initialisation shared by all backends.
#include <cmath>
#include <cstdarg>
#include <vector>
#include "backend.h"
#include "errors.h"
#include "families.h"
#include "rng.h"

namespace engine {

std::string strfmt(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

void model_config_validate(const ModelConfig& c) {
  ENGINE_CHECK(c.n_layer >= 1, BadConfig, "set model.nLayer >= 1", "model.nLayer = %zu", c.n_layer);
  ENGINE_CHECK(c.n_head >= 1 && c.n_embd % c.n_head == 0, BadConfig, "nEmbd must be a multiple of nHead",
               "model.nEmbd = %zu is not divisible by model.nHead = %zu", c.n_embd, c.n_head);
  ENGINE_CHECK(c.n_positions >= 2, BadConfig, "", "model.nPositions = %zu (need >= 2)", c.n_positions);
  ENGINE_CHECK(c.vocab_size >= 2 && c.vocab_size < (1u << 31), BadConfig, "", "model.vocabSize = %zu", c.vocab_size);
  ENGINE_CHECK(c.dropout >= 0 && c.dropout < 1, BadConfig, "", "model.dropout = %g (need [0, 1))", c.dropout);
}

std::string compiled_backends() {
#ifdef ENGINE_HAVE_CUDA
  return "cpu,cuda";
#else
  return "cpu";
#endif
}

std::unique_ptr<Backend> create_backend(const ModelConfig& model0, const BackendOptions& opts) {
  ModelConfig model = model0;
  family_resolve(model);
  model_config_validate(model);
  if (opts.name == "cpu") return make_cpu_backend(model, opts);
  if (opts.name == "cuda") {
#ifdef ENGINE_HAVE_CUDA
    return make_cuda_backend(model, opts);
#else
    ENGINE_THROW(BadConfig,
                 "rebuild on a machine with nvcc (npm run build:native; ENGINE_CUDA=1 forces it), or set "
                 "training.backend to 'cpu'",
                 "backend 'cuda' requested for model family '%s' but this addon was built without CUDA (compiled "
                 "backends: %s)", model.family.c_str(), compiled_backends().c_str());
#endif
  }
  ENGINE_THROW(BadConfig, "use 'cpu' or 'cuda'", "unknown backend '%s'", opts.name.c_str());
}

void Backend::step_async(const Batch* micro, size_t n_micro, float dloss, const AdamWHyper& hp, float grad_clip,
                         double max_loss) {
  zero_grad();
  pending_ = StepOutput();
  for (size_t i = 0; i < n_micro; i++) pending_.loss_sum += forward_backward(micro[i], dloss);
  pending_.grad_norm_sq = grad_norm_sq();
  const double loss = pending_.loss_sum * (double)dloss, norm = std::sqrt(pending_.grad_norm_sq);
  if (!std::isfinite(loss) || loss > max_loss || !std::isfinite(norm)) return;  // the engine reports it
  AdamWHyper h = hp;
  h.grad_scale = (grad_clip > 0 && norm > grad_clip) ? (float)(grad_clip / (norm + 1e-6)) : 1.0f;
  optimizer_step(h);
  pending_.applied = true;
}

StepOutput Backend::step_wait() { return pending_; }

void gpt2_init_params(const ModelConfig& cfg, const ParamLayout& layout, float* params) {
  // One RNG stream per tensor (seeded from init_seed and the tensor index), so the init of a tensor does not
  // depend on the sizes of the tensors before it.
  const double std_ = 0.02;
  const double proj_std = 0.02 / std::sqrt(2.0 * (double)cfg.n_layer);  // GPT-2 paper: scale residual projections
  for (size_t i = 0; i < layout.tensors.size(); i++) {
    const ParamTensor& t = layout.tensors[i];
    float* p = params + t.offset;
    const std::string& n = t.name;
    auto ends_with = [&](const char* s) {
      size_t k = std::strlen(s);
      return n.size() >= k && n.compare(n.size() - k, k, s) == 0;
    };
    if (ends_with("ln_1.weight") || ends_with("ln_2.weight") || ends_with("ln_f.weight")) {
      for (size_t j = 0; j < t.numel; j++) p[j] = 1.0f;
    } else if (t.shape.size() == 1) {
      for (size_t j = 0; j < t.numel; j++) p[j] = 0.0f;
    } else {
      Rng r;
      rng_seed(r, cfg.init_seed * 1000003ull + i);
      double s = (ends_with("attn.c_proj.weight") || ends_with("mlp.c_proj.weight")) ? proj_std : std_;
      for (size_t j = 0; j < t.numel; j++) p[j] = (float)(rng_normal(r) * s);
    }
  }
}

}  // namespace engine
