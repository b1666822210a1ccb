// offload_test.cpp — the optimizer-offload machinery (native/engine/cuda/offload.cuh) on a real GPU against a host
// reference, bit for bit. Compiled by nvcc as CUDA (test/gpu/run.sh, stage offload). GPU host only.
//
// A stand-in model runs the offload protocol exactly as the training state does: per step, zero the gradients
// (before_grad_reset), a "forward" that waits for every unit's weights (params_ready) and reads them, a "backward"
// over the units in reverse order writing g = a(i, k) + w/2 from the device weights (grads_ready after each unit),
// the fp64 norm and the step gate of adamw.cuh (clipping active; one step with a diverged loss is skipped), then
// step(). The reference replays it on the host with optimizer.cpp's adamw_update: exact mode must match bit for
// bit (master, m, v on the host; the device weights equal the master rounded to bf16), delayed mode must match the
// one-update-old schedule bit for bit (and differ from exact mode), a mid-run sync() flushes the pending update.
// Cases: bf16 and fp32 weights, the whole model and one ZeRO shard (rank 1 of 2), tiny chunks and a 3-slot ring
// so every chunk/ring boundary is crossed.
//
//   offload_test                 correctness (exit code = failed checks)
//   offload_test --bench         throughput of the pipeline on the GPT-2 1.5B layout (JSON lines)
#include <algorithm>
#include <chrono>
#include <memory>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "adamw.cuh"
#include "offload.cuh"
#include "optimizer.h"
#include "zero.h"

using namespace engine;
using cudabk::bf16;

static int failures = 0;
static void report(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  [%s] ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  failures += !ok;
  fflush(stdout);
}

// the stand-in gradient's data term, identical on host and device (integer hash, one exact scaling)
__host__ __device__ inline float a_term(size_t i, unsigned k) {
  unsigned h = (unsigned)(i * 2654435761u) ^ (k * 40503u + 0x9e3779b9u);
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  return (float)((int)(h % 2001u) - 1000) * 1e-4f;
}
template <typename T> __host__ __device__ inline float wf(T x);
template <> __host__ __device__ inline float wf<float>(float x) { return x; }
template <> __device__ inline float wf<bf16>(bf16 x) { return __bfloat162float(x); }

template <typename T>
__global__ void fake_backward(float* g, const T* w, size_t begin, size_t end, unsigned k) {
  size_t i = begin + (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < end) g[i] = __fadd_rn(a_term(i, k), __fmul_rn(0.5f, wf<T>(w[i])));
}
// the forward reads the unit's weights (a checksum nobody needs: it makes the kernel depend on them)
template <typename T>
__global__ void fake_forward(float* sink, const T* w, size_t begin, size_t end) {
  float s = 0.f;
  for (size_t i = begin + (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < end; i += (size_t)gridDim.x * blockDim.x) s += wf<T>(w[i]);
  if (s == 12345.f) sink[0] = s;
}
__global__ void set_loss(double* s, double loss) { s[0] = loss; }
// a spin of `ns` nanoseconds standing in for a unit's compute (bench)
__global__ void busy(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < ns);
}

static float host_bf16_round(float x) {
  uint32_t u = (uint32_t)f32_to_bf16(x) << 16;
  float r;
  memcpy(&r, &u, 4);
  return r;
}

template <typename T>
static int run_case(const char* name, bool delayed, int world, int rank) {
  ModelConfig mc;
  mc.n_layer = 6; mc.n_head = 6; mc.n_embd = 384; mc.n_positions = 256; mc.vocab_size = 5000;
  const ParamLayout lay = gpt2_param_layout(mc);
  const size_t n = lay.total;
  const ShardRange sh = zero_shard(n, ZeroConfig{rank, world, world > 1 ? 2 : 0});
  const size_t lo = sh.begin, hi = sh.end;
  const std::vector<FlatRange> units = offload_units(lay);
  const int K = 7, SKIP = 3, SYNC_AFTER = 4;
  const float clip = 1.0f;
  AdamWHyper hp;
  hp.lr = 1e-3f; hp.weight_decay = 0.1f; hp.beta1 = 0.9f; hp.beta2 = 0.95f;

  // initial weights (already bf16-representable, so the device copy equals the master)
  std::vector<float> w0(n);
  for (size_t i = 0; i < n; i++) w0[i] = host_bf16_round(0.02f * a_term(i, 999) * 100.f);

  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  T* dw;
  float *dg, *sink;
  double* dscal;
  CUDA_CHECK(cudaMalloc(&dw, n * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dg, n * 4));
  CUDA_CHECK(cudaMalloc(&sink, 16));
  CUDA_CHECK(cudaMalloc(&dscal, (8 + cudabk::NORM_BLOCKS) * 8));
  {
    std::vector<T> h(n);
    for (size_t i = 0; i < n; i++) {
      if constexpr (sizeof(T) == 2) h[i] = __float2bfloat16_rn(w0[i]);
      else h[i] = w0[i];
    }
    CUDA_CHECK(cudaMemcpy(dw, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  typename cudabk::CpuOffload<T>::Options o;
  o.delayed = delayed; o.chunk = 1 << 16; o.ring_slots = 3;
  auto off = std::make_unique<cudabk::CpuOffload<T>>(lay, lo, hi, units, o);
  off->bind(dw + lo, dg + lo);
  memcpy(off->master(), w0.data() + lo, (hi - lo) * 4);
  off->upload_all();

  // ---- the device run
  auto t0 = std::chrono::steady_clock::now();
  for (int k = 1; k <= K; k++) {
    off->before_grad_reset(s);
    CUDA_CHECK(cudaMemsetAsync(dg, 0, n * 4, s));
    CUDA_CHECK(cudaMemsetAsync(dscal, 0, 5 * 8, s));
    for (size_t u = 0; u < units.size(); u++) {
      off->params_ready(u, s);
      fake_forward<T><<<64, 256, 0, s>>>(sink, dw, units[u].begin, units[u].end);
    }
    for (size_t u = units.size(); u-- > 0;) {
      fake_backward<T><<<cudabk::ceil_div(units[u].size(), 256), 256, 0, s>>>(dg, dw, units[u].begin, units[u].end, (unsigned)k);
      off->grads_ready(u, s);
    }
    set_loss<<<1, 1, 0, s>>>(dscal, k == SKIP ? 1e30 : 2.0);
    cudabk::grad_norm_sq(dscal + 2, dscal + 8, dg, n, s);
    cudabk::step_gate_kernel<<<1, 1, 0, s>>>(dscal, 1.0f, 1e4, clip);
    hp.t = k;
    off->step(hp, dscal + 3, s);
    CUDA_CHECK(cudaStreamSynchronize(s));  // the engine's step_wait: loss, norm, applied are known here
    if (k == SYNC_AFTER) off->sync();
  }
  off->sync();
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::vector<float> got_master(off->master(), off->master() + (hi - lo)), got_m(off->moments_m(), off->moments_m() + (hi - lo)),
      got_v(off->moments_v(), off->moments_v() + (hi - lo));
  std::vector<T> got_w(n);
  CUDA_CHECK(cudaMemcpy(got_w.data(), dw, n * sizeof(T), cudaMemcpyDeviceToHost));

  // ---- the host reference: same schedule, optimizer.cpp's adamw_update
  std::vector<float> master = w0, m(hi - lo, 0.f), v(hi - lo, 0.f), g(n);
  std::vector<std::vector<float>> hist{master};  // hist[j] = master after update j
  size_t visible = 0;                            // newest update on the device
  for (int k = 1; k <= K; k++) {
    if (!delayed) visible = k - 1;
    else visible = std::max(visible, (size_t)std::max(0, k - 2));
    const std::vector<float>& wv = hist[visible];
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
      float wu = sizeof(T) == 2 ? host_bf16_round(wv[i]) : wv[i];
      g[i] = a_term(i, (unsigned)k) + 0.5f * wu;
      ss += (double)g[i] * g[i];
    }
    double norm = std::sqrt(ss);
    bool apply = k != SKIP;
    float scale = (clip > 0.f && norm > clip) ? (float)((double)clip / (norm + 1e-6)) : 1.0f;
    AdamWHyper h = hp;
    h.t = k;
    h.grad_scale = scale;
    if (apply) adamw_update(master.data(), g.data(), m.data(), v.data(), lay, lo, hi, h);
    hist.push_back(master);
    if (k == SYNC_AFTER) visible = k;  // sync() flushed update k
  }
  bool same_master = memcmp(master.data() + lo, got_master.data(), (hi - lo) * 4) == 0;
  bool same_mv = memcmp(m.data(), got_m.data(), m.size() * 4) == 0 && memcmp(v.data(), got_v.data(), v.size() * 4) == 0;
  size_t bad_w = 0;
  for (size_t i = 0; i < n; i++) {
    float want = (i >= lo && i < hi) ? master[i] : w0[i];  // outside the shard: never touched
    if (sizeof(T) == 2) want = host_bf16_round(want);
    float have;
    if constexpr (sizeof(T) == 2) {
      uint16_t b;
      memcpy(&b, &got_w[i], 2);
      uint32_t u = (uint32_t)b << 16;
      memcpy(&have, &u, 4);
    } else have = got_w[i];
    bad_w += memcmp(&want, &have, 4) != 0;
  }
  report(same_master && same_mv && bad_w == 0,
         "%-28s shard [%zu, %zu) of %zu, %zu units: master %s, m/v %s, device weights %zu mismatches (%.0f ms, host %.1f MiB)",
         name, lo, hi, n, units.size(), same_master ? "bit-identical" : "DIFFER", same_mv ? "bit-identical" : "DIFFER", bad_w,
         ms, off->host_bytes() / 1048576.0);
  off.reset();
  cudaFree(dw); cudaFree(dg); cudaFree(sink); cudaFree(dscal);
  cudaStreamDestroy(s);
  // a checksum of the final master so exact and delayed runs can be told apart by the caller
  double cs = 0;
  for (size_t i = lo; i < hi; i++) cs += master[i] * (double)(i % 7 + 1);
  return (int)(std::fmod(std::fabs(cs) * 1e6, 1e9));
}

// Throughput on the GPT-2 1.5B layout (bf16 weights): per step, a backward standing in as `bwd_ms` of GPU work
// spread over the units (grads streamed as each finishes), the gate, the CPU AdamW + uploads, and the next forward
// (`fwd_ms`) waiting for the weights unit by unit. Reports the step time against the compute alone.
static void bench(double fwd_ms, double mid_ms, double bwd_ms, bool delayed, int threads) {
  ModelConfig mc;
  mc.n_layer = 48; mc.n_head = 25; mc.n_embd = 1600; mc.n_positions = 1024; mc.vocab_size = 50257;
  const ParamLayout lay = gpt2_param_layout(mc);
  const size_t n = lay.total;
  const std::vector<FlatRange> units = offload_units(lay);
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  bf16* dw;
  float* dg;
  double* dscal;
  CUDA_CHECK(cudaMalloc(&dw, n * 2));
  CUDA_CHECK(cudaMalloc(&dg, n * 4));
  CUDA_CHECK(cudaMalloc(&dscal, (8 + cudabk::NORM_BLOCKS) * 8));
  CUDA_CHECK(cudaMemset(dg, 0, n * 4));
  typename cudabk::CpuOffload<bf16>::Options o;
  o.delayed = delayed;
  o.threads = threads;
  auto t_alloc = std::chrono::steady_clock::now();
  cudabk::CpuOffload<bf16> off(lay, 0, n, units, o);
  off.bind(dw, dg);
  double alloc_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_alloc).count();
  float* mw = off.master();
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)n; i++) mw[i] = 0.01f * (float)(((size_t)i * 2654435761u) % 1000) / 1000.f;
  off.upload_all();
  AdamWHyper hp;
  hp.lr = 1e-4f; hp.weight_decay = 0.1f;
  const int steps = 6, warm = 2;
  std::vector<double> t;
  const unsigned long long fwd_ns = (unsigned long long)(fwd_ms * 1e6 / units.size()), bwd_ns = (unsigned long long)(bwd_ms * 1e6 / units.size());
  for (int k = 1; k <= steps + warm; k++) {
    auto a = std::chrono::steady_clock::now();
    off.before_grad_reset(s);
    CUDA_CHECK(cudaMemsetAsync(dscal, 0, 5 * 8, s));
    for (size_t u = 0; u < units.size(); u++) {
      off.params_ready(u, s);
      if (fwd_ns) busy<<<1, 1, 0, s>>>(fwd_ns);
    }
    if (mid_ms > 0) busy<<<1, 1, 0, s>>>((unsigned long long)(mid_ms * 1e6));
    for (size_t u = units.size(); u-- > 0;) {
      if (bwd_ns) busy<<<1, 1, 0, s>>>(bwd_ns);
      off.grads_ready(u, s);
    }
    cudabk::grad_norm_sq(dscal + 2, dscal + 8, dg, n, s);
    cudabk::step_gate_kernel<<<1, 1, 0, s>>>(dscal, 1.0f, 1e30, 1.0f);
    hp.t = k;
    off.step(hp, dscal + 3, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    if (k > warm) t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  // the CPU step alone: gate -> every unit uploaded
  auto a = std::chrono::steady_clock::now();
  off.sync();
  double tail_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
  std::sort(t.begin(), t.end());
  double med = t[t.size() / 2];
  printf("{\"bench\": \"offload pipeline, GPT-2 1.5B layout\", \"params\": %zu, \"units\": %zu, \"delayed\": %s, "
         "\"cpu_threads\": %d, \"gpu_fwd_ms\": %.1f, \"gpu_mid_ms\": %.1f, \"gpu_bwd_ms\": %.1f, \"step_ms\": %.1f, \"overhead_vs_compute\": %.3f, "
         "\"last_sync_ms\": %.1f, \"pinned_host_GiB\": %.2f, \"pin_alloc_s\": %.2f}\n",
         n, units.size(), delayed ? "true" : "false", threads > 0 ? threads : omp_get_max_threads(), fwd_ms, mid_ms, bwd_ms, med,
         med / std::max(1e-9, fwd_ms + mid_ms + bwd_ms), tail_ms, off.host_bytes() / 1073741824.0, alloc_s);
  fflush(stdout);
  cudaFree(dw); cudaFree(dg); cudaFree(dscal);
  cudaStreamDestroy(s);
}

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::string(argv[1]) == "--bench") {
      // compute-free pipeline (pure transfer + CPU), then with the GPU time of a 32k-token GPT-2 1.5B step on an
      // H100 (4 x 8x1024 micro-batches at 243 ms each without offload): the first forward (81 ms)
      // waits for the weights unit by unit, the middle 3 micro-batches + the first backwards (727 ms) need nothing,
      // the last backward (162 ms) streams the gradients out
      int th = argc > 2 ? atoi(argv[2]) : 0;
      bench(0, 0, 0, false, th);
      bench(81, 727, 162, false, th);
      bench(81, 727, 162, true, th);
      return 0;
    }
    printf("offload correctness (GPU: %s)\n", [] { static cudaDeviceProp p; cudaGetDeviceProperties(&p, 0); return p.name; }());
    int e = run_case<bf16>("bf16 exact, whole model", false, 1, 0);
    int d = run_case<bf16>("bf16 delayed, whole model", true, 1, 0);
    report(e != d, "delayed mode trains on one-update-old weights (final master differs from exact mode)");
    run_case<float>("fp32 exact, whole model", false, 1, 0);
    run_case<float>("fp32 delayed, whole model", true, 1, 0);
    run_case<bf16>("bf16 exact, ZeRO shard 1/2", false, 2, 1);
    run_case<bf16>("bf16 delayed, ZeRO shard 0/2", true, 2, 0);
  } catch (const std::exception& ex) {
    printf("  [FAIL] exception: %s\n", ex.what());
    failures++;
  }
  printf("%d failure(s)\n", failures);
  return failures;
}
