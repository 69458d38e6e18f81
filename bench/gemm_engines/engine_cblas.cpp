// OpenBLAS / BLIS / MKL through CBLAS (one source, chosen by macro).
#include <omp.h>
#include <cstdlib>
#include <string>
#include <vector>
#include "engine.h"
#if defined(ENG_MKL)
#include <mkl.h>
#elif defined(ENG_BLIS)
#include <blis.h>
#include <cblas.h>
#else
#include <cblas.h>
extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);
#endif

static CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

void eng_sgemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#if defined(ENG_MKL)
const char* eng_name() { return "mkl"; }
std::string eng_info() {
  char buf[256];
  mkl_get_version_string(buf, sizeof buf);
  return buf;
}
void eng_init(int t) { mkl_set_num_threads(t); }
void eng_set_threads(int t) {
  if (omp_in_parallel()) mkl_set_num_threads_local(t); else mkl_set_num_threads(t);
}
std::vector<BatchFn> eng_batch_variants() {
  std::vector<BatchFn> v;
  v.push_back({"batch_strided", [](bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                                   const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int n) {
                 cblas_sgemm_batch_strided(CblasRowMajor, tr(ta), tr(tb), M, N, K, alpha, A, lda, sA, B, ldb, sB, beta,
                                           C, ldc, sC, n);
               }});
  v.push_back({"jit_once", [](bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                              const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int n) {
                 // Cache one JIT kernel per shape (a real integration would keep it per shape too).
                 static void* jitter = nullptr;
                 static int key[8] = {-1};
                 static sgemm_jit_kernel_t k = nullptr;
                 int now[8] = {ta, tb, M, N, K, lda, ldb, ldc};
                 if (!jitter || std::equal(now, now + 8, key) == false) {
                   if (jitter) mkl_jit_destroy(jitter);
                   mkl_jit_status_t st = mkl_jit_create_sgemm(&jitter, MKL_ROW_MAJOR, ta ? MKL_TRANS : MKL_NOTRANS,
                                                              tb ? MKL_TRANS : MKL_NOTRANS, M, N, K, alpha, lda, ldb,
                                                              beta, ldc);
                   if (st == MKL_JIT_ERROR) std::abort();
                   k = mkl_jit_get_sgemm_ptr(jitter);
                   std::copy(now, now + 8, key);
                 }
                 for (int i = 0; i < n; ++i) k(jitter, const_cast<float*>(A + i * sA), const_cast<float*>(B + i * sB), C + i * sC);
               }});
  return v;
}
#elif defined(ENG_BLIS)
const char* eng_name() { return "blis"; }
std::string eng_info() { return std::string("bli_arch_string=") + bli_arch_string(bli_arch_query_id()); }
void eng_init(int t) { bli_thread_set_num_threads(t); }
void eng_set_threads(int t) { bli_thread_set_num_threads(t); }
std::vector<BatchFn> eng_batch_variants() {
  return {{"cblas_sgemm_batch", [](bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, long sA,
                                   const float* B, int ldb, long sB, float beta, float* C, int ldc, long sC, int n) {
             static std::vector<const float*> pa, pb;
             static std::vector<float*> pc;
             pa.resize(n); pb.resize(n); pc.resize(n);
             for (int i = 0; i < n; ++i) { pa[i] = A + i * sA; pb[i] = B + i * sB; pc[i] = C + i * sC; }
             CBLAS_TRANSPOSE a = tr(ta), b = tr(tb);
             f77_int m = M, nn = N, k = K, la = lda, lb = ldb, lc = ldc, gs = n;
             cblas_sgemm_batch(CblasRowMajor, &a, &b, &m, &nn, &k, &alpha, pa.data(), &la, pb.data(), &lb, &beta,
                               pc.data(), &lc, 1, &gs);
           }}};
}
#else
const char* eng_name() { return "openblas"; }
std::string eng_info() {
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  return std::string("core=") + openblas_get_corename() + " config=" + openblas_get_config() +
         " OPENBLAS_CORETYPE=" + (ct ? ct : "(unset)");
}
void eng_init(int t) { openblas_set_num_threads(t); }
void eng_set_threads(int t) {
  if (!omp_in_parallel()) openblas_set_num_threads(t);
}
std::vector<BatchFn> eng_batch_variants() { return {}; }  // 0.3.21 has no sgemm_batch
#endif
