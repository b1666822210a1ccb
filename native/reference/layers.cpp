// layers.cpp — the fp32 CPU layers (see layers.h). Shapes: B batch, T time, C channels, NH heads, hs = C / NH,
// V vocabulary, N = B * T rows. Parallel loops write disjoint outputs; every sum runs in index order.
#include "layers.h"
#include <cmath>
#include <cstring>
#include <vector>
#include "gemm.h"

namespace engine {

// ---------------------------------------------------------------------------------------------------------------
// embeddings

void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, size_t B, size_t T,
                     size_t C, const int32_t* pos) {
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)(B * T); n++) {
    const float* wte_ix = wte + (size_t)inp[n] * C;
    float* o = out + (size_t)n * C;
    if (!wpe) {
      std::memcpy(o, wte_ix, C * sizeof(float));
      continue;
    }
    const float* wpe_t = wpe + (pos ? (size_t)pos[n] : (size_t)(n % T)) * C;
    for (size_t i = 0; i < C; i++) o[i] = wte_ix[i] + wpe_t[i];
  }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, size_t B, size_t T,
                      size_t C, const int32_t* pos) {
  // Parallel over channels: several rows can hit the same token row of dwte, and each element's adds run in row
  // order, so the sums are fixed.
#pragma omp parallel for schedule(static)
  for (long c = 0; c < (long)C; c++)
    for (size_t n = 0; n < B * T; n++) {
      dwte[(size_t)inp[n] * C + (size_t)c] += dout[n * C + (size_t)c];
      if (dwpe) dwpe[(pos ? (size_t)pos[n] : n % T) * C + (size_t)c] += dout[n * C + (size_t)c];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// layernorm (population variance, as torch.nn.LayerNorm)

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       size_t N, size_t C, float eps) {
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++) {
    const float* x = inp + (size_t)n * C;
    double m = 0;
    for (size_t i = 0; i < C; i++) m += x[i];
    m /= (double)C;
    double v = 0;
    for (size_t i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
    v /= (double)C;
    float s = (float)(1.0 / std::sqrt(v + eps));
    float* o = out + (size_t)n * C;
    for (size_t i = 0; i < C; i++) o[i] = ((float)(x[i] - m) * s) * w[i] + b[i];
    mean[n] = (float)m;
    rstd[n] = s;
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, size_t N, size_t C) {
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++) {
    const float* d = dout + (size_t)n * C;
    const float* x = inp + (size_t)n * C;
    float m = mean[n], s = rstd[n];
    // dnorm = dout * w; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
    double dnorm_mean = 0, dnorm_norm_mean = 0;
    for (size_t i = 0; i < C; i++) {
      float norm = (x[i] - m) * s;
      float dnorm = w[i] * d[i];
      dnorm_mean += dnorm;
      dnorm_norm_mean += (double)dnorm * norm;
    }
    float a = (float)(dnorm_mean / (double)C), bb = (float)(dnorm_norm_mean / (double)C);
    float* dx = dinp + (size_t)n * C;
    for (size_t i = 0; i < C; i++) {
      float norm = (x[i] - m) * s;
      dx[i] += (w[i] * d[i] - a - norm * bb) * s;
    }
  }
  // Weight/bias grads reduce over rows: serial over rows, in order.
  for (size_t n = 0; n < N; n++) {
    const float* d = dout + n * C;
    const float* x = inp + n * C;
    float m = mean[n], s = rstd[n];
    for (size_t i = 0; i < C; i++) {
      dw[i] += (x[i] - m) * s * d[i];
      db[i] += d[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Conv1D matmul (HF layout: weight (in, out))

void matmul_forward(float* out, const float* inp, const float* w, const float* bias, size_t N, size_t C, size_t OC) {
  sgemm(false, false, N, OC, C, 1.0f, inp, C, w, OC, 0.0f, out, OC);
  if (bias) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < (long)N; n++)
      for (size_t o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
  }
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     size_t N, size_t C, size_t OC) {
  sgemm(false, true, N, C, OC, 1.0f, dout, OC, w, OC, 1.0f, dinp, C);   // dinp (N, C) += dout @ w^T
  sgemm(true, false, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dw, OC);   // dw (C, OC) += inp^T @ dout
  if (dbias) {
    for (size_t n = 0; n < N; n++)
      for (size_t o = 0; o < OC; o++) dbias[o] += dout[n * OC + o];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// dropout

float dropout_scale(const Dropout& d, uint64_t stream, uint64_t i) {
  // SplitMix64 finaliser of (seed, stream, index): counter-based, so any element's mask is computable alone
  uint64_t z = d.seed + stream * 0xD1B54A32D192ED03ull + i * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
  return u < d.p ? 0.0f : 1.0f / (1.0f - d.p);
}

void dropout_apply(float* x, size_t N, const Dropout& d, uint64_t stream) {
  if (!d.active()) return;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) x[i] *= dropout_scale(d, stream, (uint64_t)i);
}

// ---------------------------------------------------------------------------------------------------------------
// causal self-attention

void attention_forward(float* out, float* preatt, float* att, const float* qkv, size_t B, size_t T, size_t C,
                       size_t NH, const Dropout& drop, uint64_t stream, const int32_t* pos) {
  const size_t C3 = 3 * C, hs = C / NH;
  const float scale = 1.0f / std::sqrt((float)hs);
#pragma omp parallel for collapse(3) schedule(static)
  for (long b = 0; b < (long)B; b++)
    for (long t = 0; t < (long)T; t++)
      for (long h = 0; h < (long)NH; h++) {
        const float* q = qkv + (size_t)b * T * C3 + (size_t)t * C3 + (size_t)h * hs;
        float* pre = preatt + (((size_t)b * NH + h) * T + t) * T;
        float* a = att + (((size_t)b * NH + h) * T + t) * T;
        // scores q.k / sqrt(hs) for t2 <= t, and their max
        const size_t lo = attention_start(pos, (size_t)b, T, (size_t)t);  // packed: its own example only
        float maxv = -INFINITY;
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) {
          const float* k = qkv + (size_t)b * T * C3 + t2 * C3 + C + (size_t)h * hs;
          float s = 0;
          for (size_t i = 0; i < hs; i++) s += q[i] * k[i];
          s *= scale;
          pre[t2] = s;
          if (s > maxv) maxv = s;
        }
        float sum = 0;
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) {
          a[t2] = std::exp(pre[t2] - maxv);
          sum += a[t2];
        }
        float inv = 1.0f / sum;
        for (size_t t2 = 0; t2 < T; t2++) {
          if (t2 >= lo && t2 <= (size_t)t) a[t2] *= inv;
          else { a[t2] = 0; pre[t2] = 0; }  // masked: keeps buffers deterministic
        }
        float* o = out + (size_t)b * T * C + (size_t)t * C + (size_t)h * hs;
        for (size_t i = 0; i < hs; i++) o[i] = 0;
        const uint64_t row = (((uint64_t)b * NH + h) * T + t) * T;  // element index base of this row of att
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) {
          const float* v = qkv + (size_t)b * T * C3 + t2 * C3 + 2 * C + (size_t)h * hs;
          const float w = drop.active() ? a[t2] * dropout_scale(drop, stream, row + t2) : a[t2];
          for (size_t i = 0; i < hs; i++) o[i] += w * v[i];
        }
      }
}

void attention_backward(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
                        const float* att, size_t B, size_t T, size_t C, size_t NH, const Dropout& drop,
                        uint64_t stream, const int32_t* pos) {
  const size_t C3 = 3 * C, hs = C / NH;
  const float scale = 1.0f / std::sqrt((float)hs);
  // Parallel over (b, h) only: every t writes the dk/dv rows of all t2 <= t of the same head.
#pragma omp parallel for collapse(2) schedule(static)
  for (long b = 0; b < (long)B; b++)
    for (long h = 0; h < (long)NH; h++) {
      for (size_t t = 0; t < T; t++) {
        const float* a = att + (((size_t)b * NH + h) * T + t) * T;
        float* da = datt + (((size_t)b * NH + h) * T + t) * T;
        float* dpre = dpreatt + (((size_t)b * NH + h) * T + t) * T;
        const float* d = dout + (size_t)b * T * C + t * C + (size_t)h * hs;
        const float* q = qkv + (size_t)b * T * C3 + t * C3 + (size_t)h * hs;
        float* dq = dqkv + (size_t)b * T * C3 + t * C3 + (size_t)h * hs;
        // out = dropout(att) @ v
        const size_t lo = attention_start(pos, (size_t)b, T, t);  // the keys query t attends to
        const uint64_t row = (((uint64_t)b * NH + h) * T + t) * T;
        for (size_t t2 = lo; t2 <= t; t2++) {
          const float* v = qkv + (size_t)b * T * C3 + t2 * C3 + 2 * C + (size_t)h * hs;
          float* dv = dqkv + (size_t)b * T * C3 + t2 * C3 + 2 * C + (size_t)h * hs;
          const float m = drop.active() ? dropout_scale(drop, stream, row + t2) : 1.0f;
          float s = 0;
          for (size_t i = 0; i < hs; i++) {
            s += v[i] * d[i];
            dv[i] += a[t2] * m * d[i];
          }
          da[t2] = s * m;
        }
        // softmax: dpre = att * (datt - sum(att * datt))
        float dot = 0;
        for (size_t t2 = lo; t2 <= t; t2++) dot += a[t2] * da[t2];
        for (size_t t2 = lo; t2 <= t; t2++) dpre[t2] = a[t2] * (da[t2] - dot);
        // pre = q.k * scale
        for (size_t t2 = lo; t2 <= t; t2++) {
          const float* k = qkv + (size_t)b * T * C3 + t2 * C3 + C + (size_t)h * hs;
          float* dk = dqkv + (size_t)b * T * C3 + t2 * C3 + C + (size_t)h * hs;
          float g = dpre[t2] * scale;
          for (size_t i = 0; i < hs; i++) {
            dq[i] += k[i] * g;
            dk[i] += q[i] * g;
          }
        }
      }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GELU (tanh approximation) and residual

static const float GELU_SCALE = 0.7978845608028654f;  // sqrt(2 / pi)

void gelu_forward(float* out, const float* inp, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) {
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + std::tanh(GELU_SCALE * (x + 0.044715f * x * x * x)));
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) {
    float x = inp[i];
    float tanh_arg = GELU_SCALE * (x + 0.044715f * x * x * x);
    float th = std::tanh(tanh_arg);
    float sech2 = 1.0f - th * th;
    float local = 0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] += local * dout[i];
  }
}

void residual_forward(float* out, const float* a, const float* b, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) out[i] = a[i] + b[i];
}

void residual_backward(float* da, float* db, const float* dout, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// tied LM head and cross-entropy

// exp(x) for x <= 0 (softmax arguments), vectorisable (no calls): Cephes expf's range reduction and polynomial,
// ~1 ulp; below -87 it returns ~2^-126 instead of a denormal (clamped in the integer domain: a float compare
// here would stop GCC from vectorising without -ffast-math).
// std::exp is a scalar libm call and made the 50257-wide softmax the slowest part of a CPU step.
static inline float expf_vec(float x) {
  float r = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln2) via the 1.5 * 2^23 trick
  r -= 12582912.0f;
  float f = x - r * 0.693359375f + r * 2.12194440e-4f;  // x - r * ln2 (split for precision)
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  int32_t n = (int32_t)r;
  n = n > -126 ? n : -126;
  int32_t bits = (n + 127) << 23;  // 2^n
  return p * __builtin_bit_cast(float, bits);
}

// Row statistics for a softmax over V logits: max and log(sum(exp(l - max))). Sums run in 16 independent float
// lanes (so GCC vectorises without -ffast-math, in a fixed order), combined in double.
static void softmax_stats_(const float* l, size_t V, float* max_out, double* lse_out, size_t* argmax_out) {
  constexpr size_t W = 16;
  float mx[W];
  for (size_t k = 0; k < W; k++) mx[k] = -INFINITY;
  size_t i = 0;
  for (; i + W <= V; i += W) {
#pragma omp simd
    for (size_t k = 0; k < W; k++) mx[k] = l[i + k] > mx[k] ? l[i + k] : mx[k];
  }
  float m = -INFINITY;
  for (size_t k = 0; k < W; k++) m = std::max(m, mx[k]);
  for (; i < V; i++) m = std::max(m, l[i]);
  float acc[W] = {0};
  i = 0;
  for (; i + W <= V; i += W) {
#pragma omp simd
    for (size_t k = 0; k < W; k++) acc[k] += expf_vec(l[i + k] - m);
  }
  double sum = 0;
  for (size_t k = 0; k < W; k++) sum += acc[k];
  for (; i < V; i++) sum += expf_vec(l[i] - m);
  *max_out = m;
  *lse_out = std::log(sum);
  if (argmax_out) {  // first index of the max, as torch.argmax
    size_t a = 0;
    while (l[a] != m) a++;
    *argmax_out = a;
  }
}

double crossentropy_forward(float* losses, float* shift, const float* logits, const int32_t* targets, size_t N,
                            size_t V, size_t* n_targets, size_t* n_correct) {
  std::vector<unsigned char> hit(N, 0);
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++) {
    int32_t tgt = targets[n];
    if (tgt < 0) { losses[n] = 0; continue; }
    const float* l = logits + (size_t)n * V;
    float maxv;
    double lse;
    size_t argmax;
    softmax_stats_(l, V, &maxv, &lse, &argmax);
    // -log softmax(l)[tgt] = log(sum exp(l - max)) - (l[tgt] - max)
    losses[n] = (float)(lse - (double)(l[tgt] - maxv));
    hit[n] = argmax == (size_t)tgt;
    if (shift) shift[n] = maxv + (float)lse;  // softmax = exp(l - shift), reused by the backward
  }
  double total = 0;
  size_t nt = 0, nc = 0;
  for (size_t n = 0; n < N; n++) {
    if (targets[n] < 0) continue;
    total += losses[n];
    nt++;
    nc += hit[n];
  }
  *n_targets = nt;
  *n_correct = nc;
  return total;
}

void crossentropy_softmax_backward_inplace(float* logits, const float* shift, const int32_t* targets, size_t N,
                                           size_t V, float dloss) {
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++) {
    float* l = logits + (size_t)n * V;
    int32_t tgt = targets[n];
    if (tgt < 0) { std::memset(l, 0, V * sizeof(float)); continue; }
    const float sh = shift[n];
#pragma omp simd
    for (size_t i = 0; i < V; i++) l[i] = expf_vec(l[i] - sh) * dloss;
    l[tgt] -= dloss;
  }
}

// ===============================================================================================================
// the layers the other families add (nn.Linear products, RMSNorm, rotary, grouped-query attention, GELU erf, SwiGLU)

void linear_forward(float* out, const float* inp, const float* w, const float* bias, size_t N, size_t C, size_t OC) {
  sgemm(false, true, N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC);
  if (!bias) return;
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++)
    for (size_t o = 0; o < OC; o++) out[(size_t)n * OC + o] += bias[o];
}

void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     size_t N, size_t C, size_t OC) {
  if (dinp) sgemm(false, false, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
  sgemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
  if (!dbias) return;
#pragma omp parallel for schedule(static)
  for (long o = 0; o < (long)OC; o++) {
    float s = 0;
    for (size_t n = 0; n < N; n++) s += dout[n * OC + (size_t)o];
    dbias[o] += s;
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, size_t N, size_t C, float eps) {
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++) {
    const float* x = inp + (size_t)n * C;
    float ss = 0;
    for (size_t i = 0; i < C; i++) ss += x[i] * x[i];
    const float r = 1.0f / std::sqrt(ss / (float)C + eps);
    rstd[n] = r;
    float* o = out + (size_t)n * C;
    for (size_t i = 0; i < C; i++) o[i] = w[i] * (x[i] * r);
  }
}

void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w, const float* rstd,
                      size_t N, size_t C) {
#pragma omp parallel for schedule(static)
  for (long n = 0; n < (long)N; n++) {
    const float* x = inp + (size_t)n * C;
    const float* g = dout + (size_t)n * C;
    const float r = rstd[n];
    float dot = 0;  // sum_i (w g)_i x_i
    for (size_t i = 0; i < C; i++) dot += w[i] * g[i] * x[i];
    const float k = dot * r * r * r / (float)C;
    float* d = dinp + (size_t)n * C;
    for (size_t i = 0; i < C; i++) d[i] += r * w[i] * g[i] - x[i] * k;
  }
  // dw in a second pass over columns so the sum over rows has one fixed order
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)C; i++) {
    float s = 0;
    for (size_t n = 0; n < N; n++) s += dout[n * C + (size_t)i] * inp[n * C + (size_t)i] * rstd[n];
    dw[i] += s;
  }
}

void rope_apply(float* x, const size_t* pos, size_t N, size_t H, size_t HD, const Rope& r, bool inverse) {
  const size_t half = r.half;
#pragma omp parallel for collapse(2) schedule(static)
  for (long n = 0; n < (long)N; n++)
    for (long h = 0; h < (long)H; h++) {
      float* b = x + ((size_t)n * H + (size_t)h) * HD;
      const float* cs = r.cos.data() + pos[n] * half;
      const float* sn = r.sin.data() + pos[n] * half;
      for (size_t i = 0; i < half; i++) {
        const float c = cs[i], s = inverse ? -sn[i] : sn[i];
        float* p0 = r.interleaved ? b + 2 * i : b + i;
        float* p1 = r.interleaved ? b + 2 * i + 1 : b + i + half;
        const float a0 = *p0, a1 = *p1;
        *p0 = a0 * c - a1 * s;
        *p1 = a1 * c + a0 * s;
      }
    }
}

void gqa_attention_forward(float* out, float* att, const float* q, const float* k, const float* v, size_t B, size_t T,
                           size_t NH, size_t KVH, size_t HD, const int32_t* pos) {
  const size_t G = NH / KVH;
  const float scale = 1.0f / std::sqrt((float)HD);
#pragma omp parallel for collapse(3) schedule(static)
  for (long b = 0; b < (long)B; b++)
    for (long h = 0; h < (long)NH; h++)
      for (long t = 0; t < (long)T; t++) {
        const size_t kh = (size_t)h / G;
        const float* qv = q + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        float* a = att + (((size_t)b * NH + (size_t)h) * T + (size_t)t) * T;
        const size_t lo = attention_start(pos, (size_t)b, T, (size_t)t);  // packed: its own example only
        float maxv = -INFINITY;
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) {
          const float* kv = k + (((size_t)b * T + t2) * KVH + kh) * HD;
          float s = 0;
          for (size_t i = 0; i < HD; i++) s += qv[i] * kv[i];
          a[t2] = s * scale;
          maxv = std::max(maxv, a[t2]);
        }
        float sum = 0;
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) { a[t2] = std::exp(a[t2] - maxv); sum += a[t2]; }
        const float inv = 1.0f / sum;
        for (size_t t2 = 0; t2 < T; t2++) a[t2] = t2 >= lo && t2 <= (size_t)t ? a[t2] * inv : 0.0f;
        float* o = out + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        for (size_t i = 0; i < HD; i++) o[i] = 0;
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) {
          const float* vv = v + (((size_t)b * T + t2) * KVH + kh) * HD;
          for (size_t i = 0; i < HD; i++) o[i] += a[t2] * vv[i];
        }
      }
}

void gqa_attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout, const float* q,
                            const float* k, const float* v, const float* att, size_t B, size_t T, size_t NH, size_t KVH,
                            size_t HD, const int32_t* pos) {
  const size_t G = NH / KVH;
  const float scale = 1.0f / std::sqrt((float)HD);
  // pass 1, per query row: d(scores) (scaled) into datt, and dq
#pragma omp parallel for collapse(3) schedule(static)
  for (long b = 0; b < (long)B; b++)
    for (long h = 0; h < (long)NH; h++)
      for (long t = 0; t < (long)T; t++) {
        const size_t kh = (size_t)h / G;
        const float* dy = dout + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        const float* a = att + (((size_t)b * NH + (size_t)h) * T + (size_t)t) * T;
        float* da = datt + (((size_t)b * NH + (size_t)h) * T + (size_t)t) * T;
        const size_t lo = attention_start(pos, (size_t)b, T, (size_t)t);
        float dot = 0;
        for (size_t t2 = lo; t2 <= (size_t)t; t2++) {
          const float* vv = v + (((size_t)b * T + t2) * KVH + kh) * HD;
          float s = 0;
          for (size_t i = 0; i < HD; i++) s += dy[i] * vv[i];
          da[t2] = s;
          dot += a[t2] * s;
        }
        float* dqv = dq + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        for (size_t t2 = 0; t2 < T; t2++) {
          if (t2 > (size_t)t || t2 < lo) { da[t2] = 0; continue; }
          da[t2] = a[t2] * (da[t2] - dot) * scale;
          const float* kv = k + (((size_t)b * T + t2) * KVH + kh) * HD;
          for (size_t i = 0; i < HD; i++) dqv[i] += da[t2] * kv[i];
        }
      }
  // pass 2, per key row: dk and dv summed over the group's heads and the later queries
#pragma omp parallel for collapse(3) schedule(static)
  for (long b = 0; b < (long)B; b++)
    for (long kh = 0; kh < (long)KVH; kh++)
      for (long t2 = 0; t2 < (long)T; t2++) {
        float* dkv = dk + (((size_t)b * T + (size_t)t2) * KVH + (size_t)kh) * HD;
        float* dvv = dv + (((size_t)b * T + (size_t)t2) * KVH + (size_t)kh) * HD;
        for (size_t h = (size_t)kh * G; h < ((size_t)kh + 1) * G; h++)
          for (size_t t = (size_t)t2; t < T; t++) {
            const float ds = datt[(((size_t)b * NH + h) * T + t) * T + (size_t)t2];
            const float p = att[(((size_t)b * NH + h) * T + t) * T + (size_t)t2];
            const float* qv = q + (((size_t)b * T + t) * NH + h) * HD;
            const float* dy = dout + (((size_t)b * T + t) * NH + h) * HD;
            for (size_t i = 0; i < HD; i++) {
              dkv[i] += ds * qv[i];
              dvv[i] += p * dy[i];
            }
          }
      }
}

void gelu_erf_forward(float* out, const float* inp, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) out[i] = 0.5f * inp[i] * (1.0f + std::erf(inp[i] * (float)M_SQRT1_2));
}

void gelu_erf_backward(float* dinp, const float* inp, const float* dout, size_t N) {
  const float k = 0.3989422804014327f;  // 1 / sqrt(2 pi)
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) {
    const float x = inp[i];
    const float cdf = 0.5f * (1.0f + std::erf(x * (float)M_SQRT1_2));
    dinp[i] += dout[i] * (cdf + x * k * std::exp(-0.5f * x * x));
  }
}

void swiglu_forward(float* out, const float* gate, const float* up, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu_backward(float* dgate, float* dup, const float* gate, const float* up, const float* dout, size_t N) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < (long)N; i++) {
    const float g = gate[i], s = 1.0f / (1.0f + std::exp(-g));
    dup[i] += dout[i] * g * s;
    dgate[i] += dout[i] * up[i] * (s + g * s * (1.0f - s));
  }
}

}  // namespace engine
