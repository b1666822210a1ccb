// Matrix products through cuBLASLt (linear layers, with fused bias / GELU / GELU-backward / residual epilogues)
// and cuBLAS (strided-batched products for attention). Operands are T (bf16 or fp32), accumulation is always
// fp32; weight gradients accumulate in fp32 (beta = 1) so gradient accumulation over micro-batches is exact.
//
// Everything is written in row-major terms: C(M,N) = op(A)(M,K) · op(B)(K,N); gemm_rm_() turns that into
// cuBLAS's column-major call (C^T = op(B)^T · op(A)^T), as llm.c's matmul_cublaslt does.
#pragma once
#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <cublasLt.h>
#include <cublas_v2.h>
#include "cuda_common.cuh"

namespace cudabk {

inline void cublas_check_(cublasStatus_t s, const char* expr, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  fail_(s == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::OutOfMemory : ErrorCode::Device,
        std::string("cuBLAS error ") + cublasGetStatusName(s) + " in " + expr, "", file, line);
}
#define CUBLAS_CHECK(x) ::cudabk::cublas_check_((x), #x, __FILE__, __LINE__)

struct Blas {
  cublasHandle_t handle = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 32u << 20;  // cuBLASLt's recommendation for Hopper
  bool fp32 = false;                   // fp32 test mode: pure fp32 products, no TF32
  int unfused = 0;                     // epilogues cuBLASLt had no kernel for, done by separate kernels instead
  // heuristic choice per problem shape, so the search runs once per shape, not per call
  typedef std::tuple<int, int, int, int, int, int, int, int, int, int> Key;
  std::map<Key, cublasLtMatmulAlgo_t> algos;
  std::set<Key> no_algo;  // shapes/epilogues without a kernel (the caller unfuses them)

  void init(bool fp32_mode) {
    fp32 = fp32_mode;
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasLtCreate(&lt));
    CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes));
    CUBLAS_CHECK(cublasSetWorkspace(handle, workspace, workspace_bytes));
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  }
  void destroy() {
    if (workspace) cudaFree(workspace);
    if (lt) cublasLtDestroy(lt);
    if (handle) cublasDestroy(handle);
    workspace = nullptr; lt = nullptr; handle = nullptr;
  }
};

enum class Epilogue { None, Bias, GeluBias /* D = gelu(AB+bias), aux = AB+bias */, DGelu /* D = AB * gelu'(aux) */ };

// Row-major C(M,N) = alpha * op(A) · op(B) + beta * Cin (+ epilogue). A is (M,K) or, transposed, (K,M); B is (K,N)
// or (N,K). Cin may alias D. Types: A, B of type TA; C/D of type TD (fp32 for weight gradients).
template <typename TA, typename TD>
bool gemm_rm_(Blas& b, bool transA, bool transB, int M, int N, int K, const TA* A, const TA* B, TD* D,
              const TD* Cin, float beta, cudaStream_t stream, Epilogue ep = Epilogue::None, const TA* bias = nullptr,
              TA* aux = nullptr, float alpha = 1.f, int ldA = 0, int ldB = 0, int ldC = 0) {
  // column-major view: D^T(N,M) = op(B)^T(N,K) · op(A)^T(K,M)
  int m = N, n = M, k = K;
  cublasOperation_t opa = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opb = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  // row-major leading dimensions (0 = packed) are the column-major ones of the same storage
  int lda = ldB ? ldB : (transB ? K : N), ldb = ldA ? ldA : (transA ? M : K), ldc = ldC ? ldC : N;
  REQUIRE(((uintptr_t)A % 16) == 0 && ((uintptr_t)B % 16) == 0 && ((uintptr_t)D % 16) == 0, "gemm operands must be 16-byte aligned");

  cublasLtMatmulDesc_t desc;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
  cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_DEFAULT;
  if (ep == Epilogue::Bias) e = CUBLASLT_EPILOGUE_BIAS;
  if (ep == Epilogue::GeluBias) e = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  if (ep == Epilogue::DGelu) e = CUBLASLT_EPILOGUE_DGELU;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)));
  if (ep == Epilogue::Bias || ep == Epilogue::GeluBias) {
    cudaDataType_t bt = cuda_dtype<TA>();
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (ep == Epilogue::GeluBias || ep == Epilogue::DGelu) {
    int64_t ldaux = ldc;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldaux, sizeof(ldaux)));
    cudaDataType_t at = cuda_dtype<TA>();
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &at, sizeof(at)));
  }
  cublasLtMatrixLayout_t la, lb, lc, ld;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, cuda_dtype<TA>(), opa == CUBLAS_OP_N ? m : k, opa == CUBLAS_OP_N ? k : m, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, cuda_dtype<TA>(), opb == CUBLAS_OP_N ? k : n, opb == CUBLAS_OP_N ? n : k, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, cuda_dtype<TD>(), m, n, ldc));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, cuda_dtype<TD>(), m, n, ldc));

  auto key = std::make_tuple(m, n, k, (int)opa, (int)opb, (int)e, (int)cuda_dtype<TA>() * 64 + (int)cuda_dtype<TD>(),
                             lda, ldb, ldc + (Cin != nullptr && beta != 0.f ? (1 << 30) : 0));
  auto it = b.algos.find(key);
  bool known_bad = b.no_algo.count(key) > 0;
  if (it == b.algos.end() && !known_bad) {
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &b.workspace_bytes, sizeof(b.workspace_bytes)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(b.lt, desc, la, lb, lc, ld, pref, 1, &res, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (found == 0 && ep != Epilogue::None) b.no_algo.insert(key);
    known_bad = found == 0 && ep != Epilogue::None;
    if (!known_bad && found == 0)
      fail_(ErrorCode::Device, "cuBLASLt found no algorithm for a " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
            " product", "nEmbd must be a multiple of 8", __FILE__, __LINE__);
    if (!known_bad) it = b.algos.emplace(key, res.algo).first;
  }
  if (known_bad) {  // the caller runs the epilogue as a separate kernel
    cublasLtMatmulDescDestroy(desc);
    cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc); cublasLtMatrixLayoutDestroy(ld);
    return false;
  }
  const void* cptr = Cin ? (const void*)Cin : (const void*)D;
  float be = Cin ? beta : 0.f;
  CUBLAS_CHECK(cublasLtMatmul(b.lt, desc, &alpha, (const void*)B, la, (const void*)A, lb, &be, cptr, lc, D, ld,
                              &it->second, b.workspace, b.workspace_bytes, stream));
  cublasLtMatmulDescDestroy(desc);
  cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc); cublasLtMatrixLayoutDestroy(ld);
  return true;
}

// Strided-batched row-major C_i(M,N) = alpha * op(A_i) · op(B_i) + beta * C_i through cuBLAS (attention).
template <typename TA, typename TD>
void gemm_batched_rm_(Blas& b, bool transA, bool transB, int M, int N, int K, const TA* A, long long sA, const TA* B,
                      long long sB, TD* C, long long sC, int batch, float alpha, float beta, cudaStream_t stream) {
  int m = N, n = M, k = K;
  cublasOperation_t opa = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opb = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  int lda = transB ? K : N, ldb = transA ? M : K, ldc = N;
  CUBLAS_CHECK(cublasSetStream(b.handle, stream));
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(b.handle, opa, opb, m, n, k, &alpha, B, cuda_dtype<TA>(), lda, sB, A,
                                          cuda_dtype<TA>(), ldb, sA, &beta, C, cuda_dtype<TD>(), ldc, sC, batch,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ----------------------------------------------------------------------------------------------------------
// linear layers in Hugging Face's Conv1D layout: out(N,OC) = inp(N,C) · W(C,OC) + bias(OC)

// bias gradient: dbias(OC) += sum over rows of dout(R,OC); deterministic: fixed row chunks summed in a fixed
// order (partial (nchunks, OC)), then column_sum (cuda_common.cuh) over the chunks. A block covers 32 16-byte
// column packs x 8 row lanes; each thread keeps V sums and reads its rows with 16-byte loads, unrolled, so many
// loads are in flight (the first version, one thread per column with 2-byte loads in a dependent loop, ran at a
// fraction of the memory bandwidth and its chunk sum took ~50 us a call).
constexpr int BG_ROWS = 64;  // rows per chunk
template <typename T>
__global__ void __launch_bounds__(256) bias_grad_partial_kernel(float* partial, const T* dout, int R, int OC, int rows_per_chunk) {
  constexpr int V = Pack<T>::N;
  __shared__ float sh[8][32 * V + 1];
  const int lane = threadIdx.x % 32, y = threadIdx.x / 32, chunk = blockIdx.y;
  const int c0 = (blockIdx.x * 32 + lane) * V;  // this thread's first column
  const int r0 = chunk * rows_per_chunk, r1 = min(R, r0 + rows_per_chunk);
  float s[V] = {};
  if (c0 < OC) {
#pragma unroll 8
    for (int r = r0 + y; r < r1; r += 8) {
      Pack<T> p = Pack<T>::load(dout + (size_t)r * OC + c0);
#pragma unroll
      for (int k = 0; k < V; k++) s[k] += to_f(p.v[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < V; k++) sh[y][lane * V + k] = s[k];
  __syncthreads();
  for (int j = threadIdx.x; j < 32 * V; j += 256) {  // fixed-order sum of the 8 row lanes
    int c = blockIdx.x * 32 * V + j;
    if (c >= OC) continue;
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) t += sh[k][j];
    partial[(size_t)chunk * OC + c] = t;
  }
}
// scratch needed by bias_grad: (R/rows_per_chunk) * OC floats
inline size_t bias_grad_scratch_floats(size_t R, size_t OC) { return (size_t)ceil_div(R, BG_ROWS) * OC; }

template <typename T>
void bias_grad(float* dbias, const T* dout, int R, int OC, float* scratch, cudaStream_t stream) {
  REQUIRE(OC % Pack<T>::N == 0 && ((uintptr_t)dout % 16) == 0, "bias gradient: rows of 16-byte packs needed");
  const int rpc = std::max(BG_ROWS, ceil_div(R, 65535)), nchunks = ceil_div(R, rpc);  // grid.y <= 65535
  dim3 grid(ceil_div(OC, 32 * Pack<T>::N), nchunks);
  bias_grad_partial_kernel<T><<<grid, 256, 0, stream>>>(scratch, dout, R, OC, rpc);
  LAUNCH_CHECK();
  column_sum(dbias, scratch, nchunks, OC, OC, stream);
}

// Epilogues as separate kernels, for shapes where cuBLASLt offers no fused kernel (Blas::unfused counts them).
// pre (N,OC) += bias; out = gelu(pre) when out != nullptr
template <typename T>
__global__ void bias_gelu_kernel(T* out, T* pre, const T* bias, size_t n, int OC) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = to_f(pre[i]) + (bias ? to_f(bias[i % OC]) : 0.f);
  pre[i] = from_f<T>(x);
  if (out) out[i] = from_f<T>(gelu_f(x));
}
// d (N,C) *= gelu'(pre)
template <typename T>
__global__ void dgelu_kernel(T* d, const T* pre, size_t n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) d[i] = from_f<T>(to_f(d[i]) * gelu_grad_f(to_f(pre[i])));
}

// forward; with pre_gelu: out = gelu(inp·W + bias) and pre_gelu(N,OC) = inp·W + bias (cuBLASLt's GELU_AUX_BIAS).
// With `residual`: out = residual + inp·W + bias (the residual add fused as cuBLASLt's beta·C term; may alias out).
template <typename T>
void linear_forward(Blas& b, T* out, const T* inp, const T* W, const T* bias, int N, int C, int OC,
                    cudaStream_t stream, T* pre_gelu = nullptr, const T* residual = nullptr) {
  Epilogue ep = pre_gelu ? Epilogue::GeluBias : (bias ? Epilogue::Bias : Epilogue::None);
  if (gemm_rm_<T, T>(b, false, false, N, OC, C, inp, W, out, residual, residual ? 1.f : 0.f, stream, ep, bias, pre_gelu)) return;
  b.unfused++;
  REQUIRE(residual == nullptr || pre_gelu == nullptr, "gelu with a residual is not a layer of GPT-2");
  T* dst = pre_gelu ? pre_gelu : out;
  gemm_rm_<T, T>(b, false, false, N, OC, C, inp, W, dst, residual, residual ? 1.f : 0.f, stream);
  size_t n = (size_t)N * OC;
  bias_gelu_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(pre_gelu ? out : nullptr, dst, bias, n, OC);
  LAUNCH_CHECK();
}

// backward: dW(C,OC) += inp^T·dout (fp32), dbias(OC) += colsum(dout), dinp(N,C) = dout·W^T, times gelu'(pre_gelu)
// when pre_gelu_of_inp is given (the DGELU epilogue: inp was gelu(pre_gelu)). dinp may be null.
template <typename T>
void linear_backward(Blas& b, T* dinp, float* dW, float* dbias, const T* dout, const T* inp, const T* W, int N,
                     int C, int OC, float* scratch, cudaStream_t stream, const T* pre_gelu_of_inp = nullptr) {
  gemm_rm_<T, float>(b, true, false, C, OC, N, inp, dout, dW, dW, 1.f, stream);
  if (dbias) bias_grad<T>(dbias, dout, N, OC, scratch, stream);
  if (!dinp) return;
  if (gemm_rm_<T, T>(b, false, true, N, C, OC, dout, W, dinp, nullptr, 0.f, stream,
                     pre_gelu_of_inp ? Epilogue::DGelu : Epilogue::None, nullptr, const_cast<T*>(pre_gelu_of_inp)))
    return;
  b.unfused++;
  gemm_rm_<T, T>(b, false, true, N, C, OC, dout, W, dinp, nullptr, 0.f, stream);
  size_t n = (size_t)N * C;
  dgelu_kernel<T><<<ceil_div(n, 256), 256, 0, stream>>>(dinp, pre_gelu_of_inp, n);
  LAUNCH_CHECK();
}

}  // namespace cudabk
