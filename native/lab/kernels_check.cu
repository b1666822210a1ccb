// kernels_check.cu — every CUDA kernel of native/engine/cuda against the fp32 CPU reference layers
// (native/reference/layers.cpp), in bf16 and fp32, on fresh random inputs; then timings at GPT-2 124M training
// sizes (B=16, T=1024) with the bytes / FLOPs each kernel must move, so the gap to the ceiling is visible.
// Build and run (GPU host): native/lab/run_lab.sh. Exit code 1 when a check fails.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include "../engine/cuda/adamw.cuh"
#include "../engine/cuda/attention.cuh"
#include "../engine/cuda/classifier.cuh"
#include "../engine/cuda/encoder.cuh"
#include "../engine/cuda/flash_attention.cuh"
#include "../engine/cuda/layernorm.cuh"
#include "../engine/cuda/matmul.cuh"
#include "layers.h"  // the CPU reference

using namespace cudabk;
static int failures = 0;
static std::mt19937 rng(1234);

static std::vector<float> randn(size_t n, float s = 1.f) {
  std::normal_distribution<float> d(0.f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
template <typename T> struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t n_) : n(n_) { CUDA_CHECK(cudaMalloc(&p, n * sizeof(T))); CUDA_CHECK(cudaMemset(p, 0xff, n * sizeof(T))); }  // poisoned
  ~Dev() { cudaFree(p); }
};
__global__ void f2t_kernel(float* o, const float* i, size_t n) { size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; if (k < n) o[k] = i[k]; }
__global__ void f2t_kernel(bf16* o, const float* i, size_t n) { size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; if (k < n) o[k] = __float2bfloat16_rn(i[k]); }
__global__ void t2f_kernel(float* o, const float* i, size_t n) { size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; if (k < n) o[k] = i[k]; }
__global__ void t2f_kernel(float* o, const bf16* i, size_t n) { size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; if (k < n) o[k] = __bfloat162float(i[k]); }

template <typename T> void up(Dev<T>& d, const std::vector<float>& h) {
  float* tmp; CUDA_CHECK(cudaMalloc(&tmp, h.size() * 4));
  CUDA_CHECK(cudaMemcpy(tmp, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  f2t_kernel<<<ceil_div(h.size(), 256), 256>>>(d.p, tmp, h.size());
  CUDA_CHECK(cudaDeviceSynchronize()); cudaFree(tmp);
}
template <typename T> std::vector<float> down(const T* p, size_t n) {
  float* tmp; CUDA_CHECK(cudaMalloc(&tmp, n * 4));
  t2f_kernel<<<ceil_div(n, 256), 256>>>(tmp, p, n);
  std::vector<float> h(n);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(h.data(), tmp, n * 4, cudaMemcpyDeviceToHost)); cudaFree(tmp);
  return h;
}
// quantise a host vector through T (the GPU sees bf16-rounded inputs; the reference gets the same values)
template <typename T> std::vector<float> q(const std::vector<float>& h) {
  Dev<T> d(h.size()); up(d, h); return down(d.p, h.size());
}

static void check(const char* what, const std::vector<float>& got, const std::vector<float>& ref, double tol) {
  double num = 0, den = 0; bool nan = false;
  for (size_t i = 0; i < ref.size(); i++) {
    if (!std::isfinite(got[i])) nan = true;
    num += (double)(got[i] - ref[i]) * (got[i] - ref[i]);
    den += (double)ref[i] * ref[i];
  }
  double rel = std::sqrt(num / (den + 1e-30));
  bool ok = !nan && rel < tol;
  if (!ok) failures++;
  printf("  %-44s rel err %.2e (tol %.0e) %s\n", what, rel, tol, ok ? "ok" : "FAIL");
}

// ------------------------------------------------------------------------------------------------- checks
template <typename T> void checks(const char* tname, double tol) {
  printf("checks in %s\n", tname);
  const int B = 2, Tt = 64, C = 128, NH = 4, V = 1000, N = B * Tt;
  cudaStream_t st = 0;
  Blas bl; bl.init(sizeof(T) == 4);
  // layernorm
  {
    auto x = q<T>(randn(N * C)), w = q<T>(randn(C, 0.5f)), b = q<T>(randn(C, 0.5f)), dout = q<T>(randn(N * C));
    auto dinp0 = q<T>(randn(N * C));
    std::vector<float> out(N * C), mean(N), rstd(N), dinp = dinp0, dw(C, 0.f), db(C, 0.f);
    engine::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    engine::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
    Dev<T> dx(N * C), dwt(C), dbt(C), dout_d(N * C), o(N * C), di(N * C);
    Dev<float> m(N), r(N), gw(C), gb(C), scratch(layernorm_scratch_floats(N, C));
    up(dx, x); up(dwt, w); up(dbt, b); up(dout_d, dout); up(di, dinp0);
    CUDA_CHECK(cudaMemset(gw.p, 0, C * 4)); CUDA_CHECK(cudaMemset(gb.p, 0, C * 4));
    layernorm_forward<T>(o.p, m.p, r.p, dx.p, dwt.p, dbt.p, N, C, st);
    layernorm_backward<T>(di.p, gw.p, gb.p, scratch.p, dout_d.p, dx.p, dwt.p, m.p, r.p, N, C, st);
    check("layernorm forward out", down(o.p, N * C), out, tol);
    check("layernorm forward rstd", down(r.p, N), rstd, 1e-4);
    check("layernorm backward dinp (accumulated)", down(di.p, N * C), dinp, tol);
    check("layernorm backward dweight", down(gw.p, C), dw, tol);
    check("layernorm backward dbias", down(gb.p, C), db, tol);
  }
  // encoder
  {
    std::vector<int> tok(N);
    for (auto& t : tok) t = rng() % 50;  // few distinct ids: many repeats in the wte gradient
    auto wte = q<T>(randn(V * C)), wpe = q<T>(randn(Tt * C)), dout = q<T>(randn(N * C));
    std::vector<float> out(N * C), gte(V * C, 0.f), gpe(Tt * C, 0.f);
    engine::encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, Tt, C);
    engine::encoder_backward(gte.data(), gpe.data(), dout.data(), tok.data(), B, Tt, C);
    Dev<T> a(V * C), p(Tt * C), o(N * C), dd(N * C);
    Dev<float> g1(V * C), g2(Tt * C);
    Dev<int> dt(N), bk(3 * N + 1);
    up(a, wte); up(p, wpe); up(dd, dout);
    CUDA_CHECK(cudaMemset(g1.p, 0, V * C * 4)); CUDA_CHECK(cudaMemset(g2.p, 0, Tt * C * 4));
    std::vector<int> hb(3 * N + 1);
    int U = encoder_build_buckets(hb.data(), tok.data(), N, V);
    CUDA_CHECK(cudaMemcpy(dt.p, tok.data(), N * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(bk.p, hb.data(), (2 * U + 1 + N) * 4, cudaMemcpyHostToDevice));
    encoder_forward<T>(o.p, dt.p, a.p, p.p, B, Tt, C, st);
    encoder_backward<T>(g1.p, g2.p, dd.p, bk.p, U, B, Tt, C, st);
    check("encoder forward", down(o.p, N * C), out, tol);
    check("encoder backward dwte", down(g1.p, V * C), gte, tol);
    check("encoder backward dwpe", down(g2.p, Tt * C), gpe, tol);
  }
  // linear layers (Conv1D layout), with bias / gelu / residual epilogues and DGELU backward
  {
    const int OC = 4 * C;
    auto x = q<T>(randn(N * C)), w = q<T>(randn(C * OC, 0.05f)), b = q<T>(randn(OC, 0.1f)), res = q<T>(randn(N * OC));
    auto dout = q<T>(randn(N * OC));
    std::vector<float> out(N * OC), g(N * OC);
    engine::matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
    engine::gelu_forward(g.data(), out.data(), N * OC);
    Dev<T> dx(N * C), dw(C * OC), db(OC), o(N * OC), pre(N * OC), dres(N * OC), ddo(N * OC), di(N * C);
    Dev<float> gW(C * OC), gB(OC), scratch(bias_grad_scratch_floats(N, OC));
    up(dx, x); up(dw, w); up(db, b); up(dres, res); up(ddo, dout);
    linear_forward<T>(bl, o.p, dx.p, dw.p, db.p, N, C, OC, st);
    check("linear forward + bias", down(o.p, N * OC), out, tol);
    linear_forward<T>(bl, o.p, dx.p, dw.p, db.p, N, C, OC, st, pre.p);
    check("linear forward + bias + gelu (out)", down(o.p, N * OC), g, tol);
    check("linear forward + bias + gelu (pre-gelu aux)", down(pre.p, N * OC), out, tol);
    std::vector<float> outr = out;
    for (size_t i = 0; i < outr.size(); i++) outr[i] += res[i];
    linear_forward<T>(bl, o.p, dx.p, dw.p, db.p, N, C, OC, st, nullptr, dres.p);
    check("linear forward + bias + residual", down(o.p, N * OC), outr, tol);
    // backward without and with DGELU (inp of the layer = gelu(pre): here the pre-activation is `out`)
    std::vector<float> dinp(N * C, 0.f), dW(C * OC, 0.f), dB(OC, 0.f);
    engine::matmul_backward(dinp.data(), dW.data(), dB.data(), dout.data(), x.data(), w.data(), N, C, OC);
    CUDA_CHECK(cudaMemset(gW.p, 0, C * OC * 4)); CUDA_CHECK(cudaMemset(gB.p, 0, OC * 4));
    linear_backward<T>(bl, di.p, gW.p, gB.p, ddo.p, dx.p, dw.p, N, C, OC, scratch.p, st);
    check("linear backward dinp", down(di.p, N * C), dinp, tol);
    check("linear backward dweight (fp32)", down(gW.p, C * OC), dW, tol);
    check("linear backward dbias (fp32)", down(gB.p, OC), dB, tol);
    // DGELU: layer (OC -> C) whose input is gelu(pre); dinp = (dout2 · W2^T) * gelu'(pre)
    auto w2 = q<T>(randn(OC * C, 0.05f)), dout2 = q<T>(randn(N * C)), preq = q<T>(out), gq = q<T>(g);
    std::vector<float> dg(N * OC, 0.f), dpre(N * OC, 0.f), dW2(OC * C, 0.f), dB2(C, 0.f);
    engine::matmul_backward(dg.data(), dW2.data(), dB2.data(), dout2.data(), gq.data(), w2.data(), N, OC, C);
    engine::gelu_backward(dpre.data(), preq.data(), dg.data(), N * OC);
    Dev<T> w2d(OC * C), d2(N * C), pred(N * OC), gd(N * OC), dpo(N * OC);
    Dev<float> gW2(OC * C), gB2(C);
    up(w2d, w2); up(d2, dout2); up(pred, preq); up(gd, gq);
    CUDA_CHECK(cudaMemset(gW2.p, 0, OC * C * 4)); CUDA_CHECK(cudaMemset(gB2.p, 0, C * 4));
    linear_backward<T>(bl, dpo.p, gW2.p, gB2.p, d2.p, gd.p, w2d.p, N, OC, C, scratch.p, st, pred.p);
    check("linear backward dinp with DGELU epilogue", down(dpo.p, N * OC), dpre, tol);
  }
  // attention
  {
    auto qkv = q<T>(randn(N * 3 * C)), dout = q<T>(randn(N * C));
    std::vector<float> out(N * C), pre(B * NH * Tt * Tt), att(B * NH * Tt * Tt), dqkv(N * 3 * C, 0.f),
        dpre(B * NH * Tt * Tt, 0.f), datt(B * NH * Tt * Tt, 0.f);
    engine::attention_forward(out.data(), pre.data(), att.data(), qkv.data(), B, Tt, C, NH);
    engine::attention_backward(dqkv.data(), dpre.data(), datt.data(), dout.data(), qkv.data(), att.data(), B, Tt, C, NH);
    const int HS = C / NH;
    Dev<T> dq(N * 3 * C), o(N * C), P(B * NH * Tt * Tt), dd(N * C), dqo(N * 3 * C), s1(N * C), s2(N * C), s3(N * C), s4(N * C), dS(B * NH * Tt * Tt);
    Dev<float> S(B * NH * Tt * std::max(Tt, HS));
    up(dq, qkv); up(dd, dout);
    AttnScratch<T> as{s1.p, s2.p, s3.p, S.p, dS.p, s4.p};
    attention_forward<T>(bl, o.p, P.p, dq.p, as, B, Tt, C, NH, st);
    attention_backward<T>(bl, dqo.p, dd.p, dq.p, P.p, as, B, Tt, C, NH, st);
    check("attention forward out", down(o.p, N * C), out, tol);
    check("attention forward probabilities", down(P.p, B * NH * Tt * Tt), att, tol);
    check("attention backward dqkv", down(dqo.p, N * 3 * C), dqkv, tol * 2);
  }
  // classifier (ignore -100), in-place gradient
  {
    const int R = 96, ldv = (V + 63) / 64 * 64;
    auto lg = q<T>(randn((size_t)R * V, 2.f));
    std::vector<int> tg(R);
    for (int i = 0; i < R; i++) tg[i] = (i % 7 == 3) ? -100 : (int)(rng() % V);
    std::vector<float> losses(R), shift(R), dl = lg;
    size_t nt, nc;
    engine::crossentropy_forward(losses.data(), shift.data(), lg.data(), tg.data(), R, V, &nt, &nc);
    engine::crossentropy_softmax_backward_inplace(dl.data(), shift.data(), tg.data(), R, V, 1.f / nt);
    std::vector<float> lgp((size_t)R * ldv, 0.f);
    for (int r = 0; r < R; r++) for (int j = 0; j < V; j++) lgp[(size_t)r * ldv + j] = lg[(size_t)r * V + j];
    Dev<T> d(lgp.size()); Dev<float> lo(R), co(R); Dev<int> t(R);
    up(d, lgp);
    CUDA_CHECK(cudaMemcpy(t.p, tg.data(), R * 4, cudaMemcpyHostToDevice));
    fused_classifier<T>(d.p, lo.p, co.p, t.p, R, V, ldv, 1.f / nt, true, st);
    auto g = down(d.p, lgp.size());
    std::vector<float> gg((size_t)R * V);
    for (int r = 0; r < R; r++) for (int j = 0; j < V; j++) gg[(size_t)r * V + j] = g[(size_t)r * ldv + j];
    check("classifier losses", down(lo.p, R), losses, 1e-4);
    check("classifier dlogits (in place)", gg, dl, tol);
    auto c = down(co.p, R); size_t ncg = 0; for (float x : c) ncg += x > 0.5f;
    printf("  %-44s %zu vs %zu %s\n", "classifier argmax hits", ncg, nc, ncg == nc ? "ok" : "FAIL");
    if (ncg != nc) failures++;
  }
  printf("  epilogues run unfused (no cuBLASLt kernel for the shape): %d\n", bl.unfused);
  bl.destroy();
}

// fused attention (bf16 only) vs the CPU reference, at lengths that are not multiples of the 64-row tile
// qsub: queries per sub-step of the dK/dV kernel (32 or 64)
void flash_checks(int qsub = 32) {
  printf("checks of the fused (flash) attention%s, bf16\n", qsub == 64 ? " (dK/dV in 64-query steps)" : "");
  for (auto cfg : {std::array<int, 4>{2, 100, 128, 2}, std::array<int, 4>{3, 130, 128, 4}, std::array<int, 4>{1, 64, 64, 1},
                   std::array<int, 4>{2, 300, 256, 4}}) {
    const int B = cfg[0], Tt = cfg[1], C = cfg[2], NH = cfg[3], N = B * Tt;
    auto qkv = q<bf16>(randn(N * 3 * C)), dout = q<bf16>(randn(N * C));
    std::vector<float> out(N * C), pre(B * NH * Tt * Tt), att(B * NH * Tt * Tt), dqkv(N * 3 * C, 0.f),
        dpre(B * NH * Tt * Tt, 0.f), datt(B * NH * Tt * Tt, 0.f);
    engine::attention_forward(out.data(), pre.data(), att.data(), qkv.data(), B, Tt, C, NH);
    engine::attention_backward(dqkv.data(), dpre.data(), datt.data(), dout.data(), qkv.data(), att.data(), B, Tt, C, NH);
    Dev<bf16> dq(N * 3 * C), o(N * C), dd(N * C), dqo(N * 3 * C);
    Dev<float> lse(B * NH * Tt), dsum(B * NH * Tt);
    up(dq, qkv); up(dd, dout);
    auto fwd = [&] { flash_attention_forward(o.p, lse.p, dq.p, B, Tt, C, NH, 0); };
    auto bwd = [&] { flash_attention_backward(dqo.p, dd.p, o.p, dq.p, lse.p, dsum.p, B, Tt, C, NH, 0, qsub); };
    fwd();
    bwd();
    auto first = down(dqo.p, N * 3 * C);
    fwd();
    bwd();
    auto again = down(dqo.p, N * 3 * C);
    bool same = std::memcmp(first.data(), again.data(), first.size() * 4) == 0;
    if (!same) failures++;
    char name[96];
    snprintf(name, sizeof name, "flash repeat bitwise equal (B=%d T=%d D=%d)", B, Tt, C / NH);
    printf("  %-44s %s\n", name, same ? "ok" : "FAIL");
    snprintf(name, sizeof name, "flash forward out (B=%d T=%d D=%d)", B, Tt, C / NH);
    check(name, down(o.p, N * C), out, 2e-2);
    snprintf(name, sizeof name, "flash backward dqkv (B=%d T=%d D=%d)", B, Tt, C / NH);
    check(name, down(dqo.p, N * 3 * C), dqkv, 3e-2);
  }
}

// ------------------------------------------------------------------------------------------------- timings
template <typename F> float time_ms(F f, int reps = 20) {
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  for (int i = 0; i < 3; i++) f();
  std::vector<float> ts;
  for (int i = 0; i < reps; i++) {
    cudaEventRecord(a); f(); cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); ts.push_back(ms);
  }
  CUDA_CHECK(cudaGetLastError());
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

void timings() {
  typedef bf16 T;
  const int B = 16, Tt = 1024, C = 768, NH = 12, V = 50257, N = B * Tt, OC = 4 * C, Vp = 50304, Rc = 4096;
  cudaStream_t st = 0;
  Blas bl; bl.init(false);
  printf("\ntimings, bf16, GPT-2 124M shapes (B=%d T=%d C=%d), median of 20 (GB/s counts bytes read + written)\n", B, Tt, C);
  Dev<T> x(N * OC), y(N * OC), w(C * OC), bias(OC), z(N * OC), pre(N * OC);
  Dev<float> m(N), r(N), gw(C * OC), gb(OC), scratch(bias_grad_scratch_floats(N, OC) + layernorm_scratch_floats(N, C));
  up(x, randn(N * OC)); up(w, randn(C * OC, 0.05f)); up(bias, randn(OC)); up(y, randn(N * OC));
  auto bw = [](double bytes, float ms) { return bytes / ms / 1e6; };
  float t;
  t = time_ms([&] { layernorm_forward<T>(z.p, m.p, r.p, x.p, w.p, w.p, N, C, st); });
  printf("  %-40s %8.3f ms %8.0f GB/s\n", "layernorm forward", t, bw(2.0 * N * C * 2, t));
  t = time_ms([&] { layernorm_backward<T>(z.p, gw.p, gb.p, scratch.p, y.p, x.p, w.p, m.p, r.p, N, C, st); });
  printf("  %-40s %8.3f ms %8.0f GB/s (reads dout, x, dinp; writes dinp)\n", "layernorm backward", t, bw(4.0 * N * C * 2, t));
  t = time_ms([&] { bias_grad<T>(gb.p, y.p, N, OC, scratch.p, st); });
  printf("  %-40s %8.3f ms %8.0f GB/s\n", "bias gradient 16384x3072", t, bw(2.0 * N * OC, t));
  double fl = 2.0 * N * C * OC;
  t = time_ms([&] { linear_forward<T>(bl, z.p, x.p, w.p, bias.p, N, C, OC, st, pre.p); });
  printf("  %-40s %8.3f ms %8.0f TFLOP/s\n", "fc forward (GELU_AUX_BIAS) 16384x768x3072", t, fl / t / 1e9);
  t = time_ms([&] { linear_backward<T>(bl, z.p, gw.p, gb.p, y.p, x.p, w.p, N, OC, C, scratch.p, st, pre.p); });
  printf("  %-40s %8.3f ms %8.0f TFLOP/s (dW fp32 accumulate + bias grad + dinp DGELU)\n", "fcproj backward", t, 2 * fl / t / 1e9);
  {
    Dev<T> qkv(N * 3 * C), out(N * C), P((size_t)B * NH * Tt * Tt), dS((size_t)B * NH * Tt * Tt), s1(N * C), s2(N * C), s3(N * C), s4(N * C), dq(N * 3 * C);
    Dev<float> S((size_t)B * NH * Tt * Tt);
    up(qkv, randn(N * 3 * C)); up(out, randn(N * C));
    AttnScratch<T> as{s1.p, s2.p, s3.p, S.p, dS.p, s4.p};
    double afl = 4.0 * B * NH * Tt * Tt * (C / NH);  // two T×T×HS products (full, causal half wasted)
    t = time_ms([&] { attention_forward<T>(bl, out.p, P.p, qkv.p, as, B, Tt, C, NH, st); }, 10);
    printf("  %-40s %8.3f ms %8.0f TFLOP/s (counting the full T×T products)\n", "attention forward", t, afl / t / 1e9);
    t = time_ms([&] { attention_backward<T>(bl, dq.p, out.p, qkv.p, P.p, as, B, Tt, C, NH, st); }, 10);
    printf("  %-40s %8.3f ms %8.0f TFLOP/s\n", "attention backward", t, 2 * afl / t / 1e9);
    Dev<float> lse((size_t)B * NH * Tt), dsum((size_t)B * NH * Tt);
    Dev<T> o2(N * C);
    t = time_ms([&] { flash_attention_forward(o2.p, lse.p, qkv.p, B, Tt, C, NH, st); }, 10);
    printf("  %-40s %8.3f ms %8.0f TFLOP/s (causal half: %.0f)\n", "flash attention forward", t, afl / t / 1e9, afl / 2 / t / 1e9);
    for (int qs : {64, 32}) {
      t = time_ms([&] { flash_attention_backward(dq.p, out.p, o2.p, qkv.p, lse.p, dsum.p, B, Tt, C, NH, st, qs); }, 10);
      printf("  %-40s %8.3f ms %8.0f TFLOP/s (causal half, 7 products: %.0f)\n", qs == 32 ? "flash attention backward" : "flash attention backward (qsub 64)",
             t, 2 * afl / t / 1e9, 3.5 * afl / 2 / t / 1e9);
    }
  }
  {  // the LM head's three products per 4096-row chunk; K = V = 50257 (odd) vs padded to Vp = 50304
    Dev<T> lg((size_t)Rc * Vp), lnf((size_t)Rc * C), wte((size_t)Vp * C), dl((size_t)Rc * C);
    Dev<float> dwte((size_t)V * C);
    up(lg, randn((size_t)Rc * Vp)); up(lnf, randn((size_t)Rc * C)); up(wte, randn((size_t)Vp * C, 0.02f));
    CUDA_CHECK(cudaMemset(dwte.p, 0, (size_t)V * C * 4));
    double f = 2.0 * Rc * V * C;
    t = time_ms([&] { gemm_rm_<T, T>(bl, false, true, Rc, V, C, lnf.p, wte.p, lg.p, nullptr, 0.f, st, Epilogue::None, nullptr, nullptr, 1.f, 0, 0, Vp); });
    printf("  %-40s %8.3f ms %8.0f TFLOP/s\n", "LM head logits 4096x50257x768", t, f / t / 1e9);
    t = time_ms([&] { gemm_rm_<T, T>(bl, false, false, Rc, C, V, lg.p, wte.p, dl.p, nullptr, 0.f, st, Epilogue::None, nullptr, nullptr, 1.f, Vp, 0, 0); });
    printf("  %-40s %8.3f ms %8.0f TFLOP/s\n", "LM head dlnf, K=50257", t, f / t / 1e9);
    t = time_ms([&] { gemm_rm_<T, T>(bl, false, false, Rc, C, Vp, lg.p, wte.p, dl.p, nullptr, 0.f, st, Epilogue::None, nullptr, nullptr, 1.f, Vp, 0, 0); });
    printf("  %-40s %8.3f ms %8.0f TFLOP/s\n", "LM head dlnf, K padded to 50304", t, f / t / 1e9);
    t = time_ms([&] { gemm_rm_<T, float>(bl, true, false, V, C, Rc, lg.p, lnf.p, dwte.p, dwte.p, 1.f, st, Epilogue::None, nullptr, nullptr, 1.f, Vp, 0, 0); });
    printf("  %-40s %8.3f ms %8.0f TFLOP/s\n", "LM head dwte (fp32 accumulate)", t, f / t / 1e9);
  }
  {
    Dev<T> lg((size_t)Rc * Vp); Dev<float> lo(Rc); Dev<int> tg(Rc);
    up(lg, randn((size_t)Rc * Vp)); std::vector<int> h(Rc); for (auto& v : h) v = rng() % V;
    CUDA_CHECK(cudaMemcpy(tg.p, h.data(), Rc * 4, cudaMemcpyHostToDevice));
    t = time_ms([&] { fused_classifier<T>(lg.p, lo.p, nullptr, tg.p, Rc, V, Vp, 1e-4f, true, st); });
    printf("  %-40s %8.3f ms %8.0f GB/s (4096 rows: read twice, write once)\n", "fused classifier fwd+bwd", t, bw(3.0 * Rc * V * 2, t));
  }
  {
    size_t n = 124475904;
    Dev<float> ms(n), g(n), mm(n), vv(n); Dev<T> p(n); Dev<double> part(NORM_BLOCKS + 1);
    CUDA_CHECK(cudaMemset(g.p, 0, n * 4)); CUDA_CHECK(cudaMemset(mm.p, 0, n * 4)); CUDA_CHECK(cudaMemset(vv.p, 0, n * 4)); CUDA_CHECK(cudaMemset(ms.p, 0, n * 4));
    AdamWParams h{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.f, 0.1f, 0.05f};
    t = time_ms([&] { adamw_update<T>(ms.p, p.p, mm.p, vv.p, g.p, n, h, true, st); });
    printf("  %-40s %8.3f ms %8.0f GB/s\n", "AdamW 124M params", t, bw(n * (16.0 + 14.0), t));
    t = time_ms([&] { grad_norm_sq(part.p + NORM_BLOCKS, part.p, g.p, n, st); });
    printf("  %-40s %8.3f ms %8.0f GB/s\n", "global grad norm 124M", t, bw(n * 4.0, t));
  }
  bl.destroy();
}

int main(int argc, char** argv) {
  try {
    checks<float>("fp32", 2e-5);
    checks<bf16>("bf16 (inputs rounded to bf16 for both sides)", 2e-2);
    flash_checks();
    flash_checks(64);
    if (argc < 2 || std::string(argv[1]) != "--no-timings") timings();
  } catch (const engine::EngineError& e) {
    printf("EngineError %s at %s:%d: %s\n", engine::error_code_name(e.code), e.file.c_str(), e.line, e.what());
    return 2;
  }
  printf("\n%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
