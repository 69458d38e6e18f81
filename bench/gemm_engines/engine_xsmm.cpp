// libxsmm 1.17: column-major JIT kernels; row-major C = op(A) op(B) is col-major C^T = op(B)^T op(A)^T.
#include <libxsmm.h>
#include <omp.h>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <vector>
#include "engine.h"

const char* eng_name() { return "libxsmm"; }
std::string eng_info() { return std::string("target_arch=") + libxsmm_get_target_arch(); }
void eng_init(int) { libxsmm_init(); }
void eng_set_threads(int) {}

// Dispatch (cached by libxsmm); alpha folded by a post-scale since libxsmm JIT takes alpha=1 only.
static libxsmm_smmfunction get(bool ta, bool tb, int M, int N, int K, int lda, int ldb, int ldc, float beta) {
  libxsmm_blasint m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
  int flags = (tb ? LIBXSMM_GEMM_FLAG_TRANS_A : 0) | (ta ? LIBXSMM_GEMM_FLAG_TRANS_B : 0);
  float one = 1.f;
  return libxsmm_smmdispatch(m, n, k, &la, &lb, &lc, &one, &beta, &flags, nullptr);
}
static thread_local std::vector<float> tbuf;
// Returns a callable for one GEMM; if the transposed-A kernel does not exist, transposes the B tile (row-major
// K rows) into a scratch and uses NN.
static void run1(libxsmm_smmfunction f, libxsmm_smmfunction fnn, bool tb, int N, int K, const float* A, const float* B,
                 int ldb, float* C) {
  if (f) { f(B, A, C); return; }
  // col-major A' = op(B)^T: B is N x K row-major (tb) -> need K x N row-major = col-major N x K ... pack B^T.
  if ((int)tbuf.size() < N * K) tbuf.resize(N * K);
  for (int j = 0; j < N; ++j)
    for (int k = 0; k < K; ++k) tbuf[(size_t)k * N + j] = B[(size_t)j * ldb + k];
  fnn(tbuf.data(), A, C);
}
static void scale(float* C, int M, int N, int ldc, float a) {
  if (a == 1.f) return;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) C[(size_t)i * ldc + j] *= a;
}

void eng_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc) {
  if (alpha != 1.f && beta != 0.f) std::abort();
  libxsmm_smmfunction f = get(ta, tb, M, N, K, lda, ldb, ldc, beta), fnn = nullptr;
  if (!f) {
    static bool said = false;
    if (!said) { std::fprintf(stderr, "libxsmm: no kernel ta=%d tb=%d %dx%dx%d, packing B^T\n", ta, tb, M, N, K); said = true; }
    if (!tb || ta) std::abort();
    fnn = get(false, false, M, N, K, lda, N, ldc, beta);
    if (!fnn) std::abort();
  }
  run1(f, fnn, tb, N, K, A, B, ldb, C);
  scale(C, M, N, ldc, alpha);
}

std::vector<BatchFn> eng_batch_variants() {
  std::vector<BatchFn> v;
  v.push_back({"dispatch_once", [](bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                                   const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int n) {
                 libxsmm_smmfunction f = get(ta, tb, M, N, K, lda, ldb, ldc, beta), fnn = nullptr;
                 if (!f) fnn = get(false, false, M, N, K, lda, N, ldc, beta);
                 for (int i = 0; i < n; ++i) {
                   run1(f, fnn, tb, N, K, A + i * sA, B + i * sB, ldb, C + i * sC);
                   scale(C + i * sC, M, N, ldc, alpha);
                 }
               }});
  // libxsmm_gemm_batch omitted: with no JIT kernel for this transpose it fails here ("must be linked against BLAS").
  return v;
}
