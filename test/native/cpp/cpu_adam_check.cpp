// cpu_adam_check.cpp — the host half of optimizer offload (native/engine/cpu_adam.{h,cpp}), CPU only (CI):
//   exact    cpu_adamw_update_range over chunks (the offload worker's calls: arbitrary chunk sizes, a ZeRO shard
//            offset, tensor boundaries inside chunks) == optimizer.cpp's adamw_update over the whole shard, bit for
//            bit, for 3 steps with clipping scale and decay; the fused bf16 copy == f32_to_bf16 of the new weights
//   bf16     f32_to_bf16 rounds to nearest even, keeps signs, infinities and NaNs (quiet)
//   units    offload_units: GPT-2 = embeddings | L blocks | final norm; Llama-style names ("model.layers.N.")
//   plan     offload_plan clips units to a shard, splits chunks, refuses gaps / overlaps
// Built and run by test/native/cpu_adam.test.ts. Prints one line per check; exit code = failures.
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "cpu_adam.h"
#include "errors.h"
#include "optimizer.h"

namespace engine {  // the one symbol of backend.cpp the optimizer sources need (errors.h)
std::string strfmt(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}
}  // namespace engine
using namespace engine;

static int failures = 0;
static void check(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok" : "FAIL", what);
  failures += !ok;
}

int main() {
  ModelConfig c;
  c.n_layer = 3; c.n_head = 4; c.n_embd = 64; c.n_positions = 32; c.vocab_size = 101;
  const ParamLayout lay = gpt2_param_layout(c);
  const size_t n = lay.total;

  // ---- exact: chunked range updates == the reference over the shard [lo, hi)
  {
    const size_t lo = 1000, hi = n - 77;  // a shard that starts and ends inside tensors
    std::vector<float> g(n), p0(n);
    for (size_t i = 0; i < n; i++) {
      p0[i] = 0.02f * (float)((int)((i * 2654435761u) % 2001) - 1000) / 1000.f;
      g[i] = 1e-3f * (float)((int)((i * 40503u) % 2001) - 1000) / 1000.f;
    }
    std::vector<float> pr = p0, mr(hi - lo), vr(hi - lo);
    AdamWHyper hp;
    hp.lr = 1e-3f; hp.weight_decay = 0.1f; hp.grad_scale = 0.37f;
    bool same = true, bf_ok = true;
    for (size_t chunk : {(size_t)1, (size_t)7, (size_t)1000, (size_t)4096, n}) {
      std::vector<float> pr2 = p0, mr2(hi - lo, 0.f), vr2(hi - lo, 0.f);
      std::vector<float> pc(p0.begin() + lo, p0.begin() + hi), mc(hi - lo, 0.f), vc(hi - lo, 0.f);
      std::vector<uint16_t> out(hi - lo);
      for (long t = 1; t <= 3; t++) {
        hp.t = t;
        adamw_update(pr2.data(), g.data(), mr2.data(), vr2.data(), lay, lo, hi, hp);
        for (size_t a = lo; a < hi; a += chunk) {
          size_t b = std::min(hi, a + chunk), j = a - lo;
          cpu_adamw_update_range(pc.data() + j, g.data() + a, mc.data() + j, vc.data() + j, out.data() + j, lay, a, b, hp);
        }
      }
      same = same && std::memcmp(pr2.data() + lo, pc.data(), (hi - lo) * 4) == 0 &&
             std::memcmp(mr2.data(), mc.data(), mc.size() * 4) == 0 && std::memcmp(vr2.data(), vc.data(), vc.size() * 4) == 0;
      for (size_t i = 0; i < pc.size(); i++) bf_ok = bf_ok && out[i] == f32_to_bf16(pc[i]);
    }
    check(same, "exact: chunked cpu_adamw_update_range == adamw_update on a shard, bit for bit (chunks 1, 7, 1000, 4096, all)");
    check(bf_ok, "exact: the fused bf16 copy == f32_to_bf16 of the updated weights");
    // the whole-buffer entry point agrees too (params/grads indexed globally, moments shard-locally)
    std::vector<float> pa = p0, pb = p0, ma(hi - lo), va(hi - lo), mb(hi - lo), vb(hi - lo);
    for (long t = 1; t <= 2; t++) {
      hp.t = t;
      adamw_update(pa.data(), g.data(), ma.data(), va.data(), lay, lo, hi, hp);
      cpu_adamw_update(pb.data(), g.data(), mb.data(), vb.data(), lay, lo, hi, hp);
    }
    check(pa == pb && ma == mb && va == vb, "exact: cpu_adamw_update == adamw_update (global indexing)");
  }

  // ---- bf16 rounding
  {
    auto bits = [](float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; };
    auto fl = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
    bool ok = f32_to_bf16(1.0f) == 0x3f80 && f32_to_bf16(-2.0f) == 0xc000 &&
              f32_to_bf16(fl(0x3f808000u)) == 0x3f80 &&  // tie -> even (down)
              f32_to_bf16(fl(0x3f818000u)) == 0x3f82 &&  // tie -> even (up)
              f32_to_bf16(fl(0x3f808001u)) == 0x3f81 &&  // above the tie -> up
              f32_to_bf16(INFINITY) == 0x7f80 && f32_to_bf16(-INFINITY) == 0xff80 &&
              (f32_to_bf16(NAN) & 0x7fc0) == 0x7fc0 && f32_to_bf16(fl(0x7f7fffffu)) == 0x7f80;  // max float rounds to inf
    (void)bits;
    check(ok, "bf16: round to nearest even, signs, infinities, quiet NaN, overflow to inf");
  }

  // ---- units
  {
    std::vector<FlatRange> u = offload_units(lay);
    bool ok = u.size() == c.n_layer + 2 && u.front().begin == 0 && u.back().end == n;
    for (size_t i = 1; i < u.size(); i++) ok = ok && u[i].begin == u[i - 1].end;
    ok = ok && u[0].end == lay.tensors[block_index(0, LN1_W)].offset && u[1].begin == u[0].end &&
         u[c.n_layer].end == lay.tensors[lnf_w_index(c.n_layer)].offset;
    check(ok, "units: GPT-2 = [wte, wpe] | one per block | [ln_f], contiguous, covering the layout");
    ParamLayout ll;  // Llama-style names, untied head after the final norm
    size_t off = 0;
    for (std::string nm : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
                           "model.layers.1.self_attn.q_proj.weight", "model.layers.10.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight"}) {
      ParamTensor t;
      t.name = nm; t.offset = off; t.numel = 10; t.shape = {10};
      off += 10;
      ll.tensors.push_back(t);
    }
    ll.total = off;
    std::vector<FlatRange> lu = offload_units(ll);
    check(lu.size() == 5 && lu[1].size() == 20 && lu[3].begin == 40 && lu[4].begin == 50 && lu[4].end == 70,
          "units: Llama-style names (model.layers.N.), final norm + untied head as one unit");
  }

  // ---- plan
  {
    std::vector<FlatRange> u = {{0, 100}, {100, 250}, {250, 260}, {260, 400}};
    OffloadPlan p = offload_plan(u, 120, 300, 64);
    bool ok = p.units[0].size() == 0 && p.chunks[0].empty() && p.units[1].begin == 120 && p.units[1].end == 250 &&
              p.chunks[1].size() == 3 && p.chunks[1][2].begin == 248 && p.chunks[1][2].end == 250 &&
              p.units[2].begin == 250 && p.units[3].end == 300 && p.chunks[3].size() == 1;
    check(ok, "plan: units clipped to the shard [120, 300), chunks of <= 64 elements");
    bool threw = false;
    try { offload_plan({{0, 10}, {11, 20}}, 0, 20, 8); } catch (const EngineError&) { threw = true; }
    bool threw2 = false;
    try { offload_plan({{0, 10}, {10, 20}}, 0, 30, 8); } catch (const EngineError&) { threw2 = true; }
    check(threw && threw2, "plan: a gap between units and a shard past the units are refused");
  }
  std::printf("%d failure(s)\n", failures);
  return failures;
}
