// Engine interface for the GEMM bench. All calls are row-major, fp32, like cblas_sgemm(CblasRowMajor,...).
#pragma once
#include <functional>
#include <string>
#include <vector>

// One plain call: C = alpha*op(A)*op(B) + beta*C, row-major.
void eng_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc);
const char* eng_name();
std::string eng_info();           // ISA / arch reported by the engine
void eng_init(int threads);       // called once, outside any parallel region
void eng_set_threads(int threads);  // per-call thread count

// A batched interface: `count` independent GEMMs with constant strides between operands.
struct BatchFn {
  std::string name;
  std::function<void(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                     const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int count)>
      fn;
};
std::vector<BatchFn> eng_batch_variants();
