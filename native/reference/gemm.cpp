// gemm.cpp — sgemm via OpenBLAS (cblas) or the built-in blocked fallback (see gemm.h).
#include "gemm.h"
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>
#ifdef ENGINE_HAVE_CBLAS
#include <cblas.h>
extern "C" {
// OpenBLAS extensions (declared here because not every cblas.h declares them).
char* openblas_get_config(void);
void openblas_set_num_threads(int num_threads);
}
#endif

namespace engine {

#ifdef ENGINE_HAVE_CBLAS

void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
           const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)M,
              (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

const char* gemm_name() {
  static std::string name = std::string("openblas (") + openblas_get_config() + ")";
  return name.c_str();
}

void gemm_set_threads(int n) { openblas_set_num_threads(n); }

#else

// Built-in GEMM: transpose operands into row-major A (M, K) and B (K, N), then compute C in register tiles of
// 4 rows x 16 columns (16 SSE registers) that stay in registers across a K block of 256, so every multiply-add
// costs one load of B instead of a load and a store of C; tiles are split across OpenMP threads. Each C element
// is summed in a fixed order (k ascending): deterministic for any thread count. Edges use a plain loop.
// A element (row r, k) is a[r * ars + k * aks]: (lda, 1) for A as stored, (1, lda) for A transposed, so A^T is
// never materialised (dW = X^T dY reads X in place).
// Compiled for AVX-512, AVX2+FMA and baseline x86-64; the loader picks the best the CPU has (GCC target_clones),
// so the binary stays portable.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#endif
static void tile_4x16_(size_t K, float alpha, const float* a, size_t ars, size_t aks, const float* b, size_t ldb,
                       float* c, size_t ldc) {
  float acc[4][16];
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 16; j++) acc[r][j] = 0.0f;
  for (size_t k = 0; k < K; k++) {
    const float* ak = a + k * aks;
    const float a0 = ak[0], a1 = ak[ars], a2 = ak[2 * ars], a3 = ak[3 * ars];
    const float* bk = b + k * ldb;
#pragma omp simd
    for (int j = 0; j < 16; j++) {
      acc[0][j] += a0 * bk[j];
      acc[1][j] += a1 * bk[j];
      acc[2][j] += a2 * bk[j];
      acc[3][j] += a3 * bk[j];
    }
  }
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 16; j++) c[r * ldc + j] += alpha * acc[r][j];
}

void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
           const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  const size_t ars = trans_a ? 1 : lda, aks = trans_a ? lda : 1;  // A stored (K, M) when transposed
  if (trans_b && M < 16) {
    // A few rows against a B stored (N, K) (generation's LM head): dot products of contiguous rows, no transpose
#pragma omp parallel for schedule(static)
    for (long jj = 0; jj < (long)N; jj++) {
      const float* bj = B + (size_t)jj * ldb;
      for (size_t i = 0; i < M; i++) {
        float lanes[8] = {0};
        size_t k = 0;
        for (; k + 8 <= K; k += 8)
          for (int l = 0; l < 8; l++) lanes[l] += A[i * ars + (k + l) * aks] * bj[k + l];
        float acc = 0;
        for (int l = 0; l < 8; l++) acc += lanes[l];
        for (; k < K; k++) acc += A[i * ars + k * aks] * bj[k];
        float* c = C + i * ldc + (size_t)jj;
        *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
      }
    }
    return;
  }
  std::vector<float> Bt;
  const float* a = A;
  const float* b = B;
  size_t b_ld = ldb;
  if (trans_b) {  // B is stored (N, K): transpose in 32 x 32 blocks (both sides stay in cache)
    Bt.resize(K * N);
#pragma omp parallel for schedule(static)
    for (long nb = 0; nb < (long)N; nb += 32)
      for (size_t kb = 0; kb < K; kb += 32)
        for (size_t n = (size_t)nb; n < std::min(N, (size_t)nb + 32); n++)
          for (size_t k = kb; k < std::min(K, kb + 32); k++) Bt[k * N + n] = B[n * ldb + k];
    b = Bt.data();
    b_ld = N;
  }
  // beta first, so the tiles only accumulate
#pragma omp parallel for schedule(static)
  for (long ii = 0; ii < (long)M; ii++) {
    float* c = C + (size_t)ii * ldc;
    if (beta == 0.0f) std::memset(c, 0, N * sizeof(float));
    else if (beta != 1.0f) for (size_t j = 0; j < N; j++) c[j] *= beta;
  }
  const size_t KB = 256;
  const size_t Mt = M / 4, Nt = N / 16;  // full tiles
  // Tile order: sweep the longer side innermost, so the panel of the other operand stays in cache (N > M: one
  // 256 x 16 panel of B serves every row tile; else one 4 x 256 slice of A serves every column tile).
  const bool rows_inner = N > M;
  // One parallel region for all K blocks: schedule(static) over the same tile count gives each thread the same
  // tiles in every block (OpenMP guarantee), so `nowait` is safe and the K order per C element stays fixed.
#pragma omp parallel
  for (size_t k0 = 0; k0 < K; k0 += KB) {
    const size_t kb = std::min(KB, K - k0);
#pragma omp for schedule(static) nowait
    for (long t = 0; t < (long)(Mt * Nt); t++) {
      const size_t i = (rows_inner ? (size_t)t % Mt : (size_t)t / Nt) * 4;
      const size_t j = (rows_inner ? (size_t)t / Mt : (size_t)t % Nt) * 16;
      tile_4x16_(kb, alpha, a + i * ars + k0 * aks, ars, aks, b + k0 * b_ld + j, b_ld, C + i * ldc + j, ldc);
    }
    // edges: rows past the last full 4-row tile, and columns past the last full 16-column tile (disjoint from the
    // tiles, and row-partitioned the same way in every block)
#pragma omp for schedule(static) nowait
    for (long ii = 0; ii < (long)M; ii++) {
      const size_t i = (size_t)ii;
      const size_t j_from = i < Mt * 4 ? Nt * 16 : 0;
      if (j_from >= N) continue;
      float* c = C + i * ldc;
      for (size_t k = k0; k < k0 + kb; k++) {
        const float av = alpha * a[i * ars + k * aks];
        const float* brow = b + k * b_ld;
        for (size_t j = j_from; j < N; j++) c[j] += av * brow[j];
      }
    }
  }
}

const char* gemm_name() { return "builtin-blocked"; }
void gemm_set_threads(int) {}

#endif

}  // namespace engine
