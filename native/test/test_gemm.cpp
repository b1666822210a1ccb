// test_gemm.cpp — sgemm (OpenBLAS or the built-in tiles, whichever this build uses) against a naive fp64
// product, for every transpose combination and shapes that exercise full tiles, edge rows/columns and K blocks.
#include <cmath>
#include <vector>
#include "gemm.h"
#include "harness.h"
#include "rng.h"

using namespace engine;

TEST(sgemm_matches_naive_product) {
  const size_t shapes[][3] = {{1, 1, 1}, {5, 17, 3}, {4, 16, 256}, {33, 70, 300}, {7, 33, 513}, {64, 48, 40}};
  Rng r;
  rng_seed(r, 4);
  for (const auto& s : shapes) {
    const size_t M = s[0], N = s[1], K = s[2];
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        std::vector<float> A(M * K), B(K * N), C(M * N);
        for (auto& x : A) x = (float)rng_normal(r);
        for (auto& x : B) x = (float)rng_normal(r);
        for (auto& x : C) x = (float)rng_normal(r);
        std::vector<float> C0 = C;
        const float alpha = 0.5f, beta = 2.0f;
        // A is (M, K) row-major, or stored transposed as (K, M); likewise B
        sgemm(ta, tb, M, N, K, alpha, A.data(), ta ? M : K, B.data(), tb ? K : N, beta, C.data(), N);
        double worst = 0;
        for (size_t i = 0; i < M; i++)
          for (size_t j = 0; j < N; j++) {
            double acc = 0;
            for (size_t k = 0; k < K; k++)
              acc += (double)(ta ? A[k * M + i] : A[i * K + k]) * (double)(tb ? B[j * K + k] : B[k * N + j]);
            double want = alpha * acc + beta * C0[i * N + j];
            worst = std::max(worst, std::fabs(want - C[i * N + j]) / (1.0 + std::sqrt((double)K)));
          }
        if (worst > 1e-5) {
          std::printf("  M=%zu N=%zu K=%zu ta=%d tb=%d: error %.3g\n", M, N, K, ta, tb, worst);
          g_failures++;
        }
      }
  }
}
