// gemm.h — the CPU matrix multiply behind every layer of the reference backend. Row-major
// C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C. OpenBLAS's cblas_sgemm when the build found it
// (ENGINE_HAVE_CBLAS), else a built-in blocked, OpenMP-parallel GEMM. gemm_name() says which (-> info.blas).
#pragma once
#include <cstddef>

namespace engine {

void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
           const float* B, size_t ldb, float beta, float* C, size_t ldc);

const char* gemm_name();            // "openblas 0.3.21 (pthread)" or "builtin-blocked"
void gemm_set_threads(int n);       // BLAS threads (the built-in GEMM follows OpenMP's setting)

}  // namespace engine
