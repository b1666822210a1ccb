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

// Built-in GEMM: transpose operands into row-major A (M, K) and B (K, N) panels, then an i-k-j loop blocked over
// K and N so a B panel stays in cache while rows of A stream past it; rows are split across OpenMP threads. The
// inner j loop is contiguous and vectorises. Each C element is summed in a fixed order: deterministic.
void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
           const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  std::vector<float> At, Bt;
  const float* a = A;
  size_t a_ld = lda;
  if (trans_a) {  // A is stored (K, M)
    At.resize(M * K);
    for (size_t k = 0; k < K; k++)
      for (size_t i = 0; i < M; i++) At[i * K + k] = A[k * lda + i];
    a = At.data();
    a_ld = K;
  }
  const float* b = B;
  size_t b_ld = ldb;
  if (trans_b) {  // B is stored (N, K)
    Bt.resize(K * N);
    for (size_t n = 0; n < N; n++)
      for (size_t k = 0; k < K; k++) Bt[k * N + n] = B[n * ldb + k];
    b = Bt.data();
    b_ld = N;
  }
  const size_t KB = 128, NB = 512;
#pragma omp parallel for schedule(static)
  for (long ii = 0; ii < (long)M; ii++) {
    size_t i = (size_t)ii;
    float* c = C + i * ldc;
    if (beta == 0.0f) std::memset(c, 0, N * sizeof(float));
    else if (beta != 1.0f) for (size_t j = 0; j < N; j++) c[j] *= beta;
    for (size_t n0 = 0; n0 < N; n0 += NB) {
      size_t n1 = std::min(N, n0 + NB);
      for (size_t k0 = 0; k0 < K; k0 += KB) {
        size_t k1 = std::min(K, k0 + KB);
        for (size_t k = k0; k < k1; k++) {
          float av = alpha * a[i * a_ld + k];
          const float* brow = b + k * b_ld;
          for (size_t j = n0; j < n1; j++) c[j] += av * brow[j];
        }
      }
    }
  }
}

const char* gemm_name() { return "builtin-blocked"; }
void gemm_set_threads(int) {}

#endif

}  // namespace engine
