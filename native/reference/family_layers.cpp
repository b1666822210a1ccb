// family_layers.cpp — see family_layers.h. Parallel loops write disjoint outputs; every sum runs in index order.
#include "family_layers.h"
#include <cmath>
#include "gemm.h"

namespace engine {

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
                           size_t NH, size_t KVH, size_t HD) {
  const size_t G = NH / KVH;
  const float scale = 1.0f / std::sqrt((float)HD);
#pragma omp parallel for collapse(3) schedule(static)
  for (long b = 0; b < (long)B; b++)
    for (long h = 0; h < (long)NH; h++)
      for (long t = 0; t < (long)T; t++) {
        const size_t kh = (size_t)h / G;
        const float* qv = q + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        float* a = att + (((size_t)b * NH + (size_t)h) * T + (size_t)t) * T;
        float maxv = -INFINITY;
        for (size_t t2 = 0; t2 <= (size_t)t; t2++) {
          const float* kv = k + (((size_t)b * T + t2) * KVH + kh) * HD;
          float s = 0;
          for (size_t i = 0; i < HD; i++) s += qv[i] * kv[i];
          a[t2] = s * scale;
          maxv = std::max(maxv, a[t2]);
        }
        float sum = 0;
        for (size_t t2 = 0; t2 <= (size_t)t; t2++) { a[t2] = std::exp(a[t2] - maxv); sum += a[t2]; }
        const float inv = 1.0f / sum;
        for (size_t t2 = 0; t2 < T; t2++) a[t2] = t2 <= (size_t)t ? a[t2] * inv : 0.0f;
        float* o = out + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        for (size_t i = 0; i < HD; i++) o[i] = 0;
        for (size_t t2 = 0; t2 <= (size_t)t; t2++) {
          const float* vv = v + (((size_t)b * T + t2) * KVH + kh) * HD;
          for (size_t i = 0; i < HD; i++) o[i] += a[t2] * vv[i];
        }
      }
}

void gqa_attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout, const float* q,
                            const float* k, const float* v, const float* att, size_t B, size_t T, size_t NH, size_t KVH,
                            size_t HD) {
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
        float dot = 0;
        for (size_t t2 = 0; t2 <= (size_t)t; t2++) {
          const float* vv = v + (((size_t)b * T + t2) * KVH + kh) * HD;
          float s = 0;
          for (size_t i = 0; i < HD; i++) s += dy[i] * vv[i];
          da[t2] = s;
          dot += a[t2] * s;
        }
        float* dqv = dq + (((size_t)b * T + (size_t)t) * NH + (size_t)h) * HD;
        for (size_t t2 = 0; t2 < T; t2++) {
          if (t2 > (size_t)t) { da[t2] = 0; continue; }
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
