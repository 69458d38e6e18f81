// gemm.cpp — sgemm on oneDNN (DRING_HAVE_DNNL) or on OpenBLAS's CBLAS.
#include "dring/kernels/cpu_gemm.hpp"

#include <omp.h>

#include <limits>

#include "dring/config.h"
#include "dring/core/error.hpp"

#if DRING_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#else
#include <cblas.h>
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" char* openblas_get_corename(void);
#endif

namespace dring::kernels::cpu {

#if DRING_HAVE_DNNL

namespace {
const char* isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
    default: return "other";
  }
}
}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl_status_t rc =
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  DRING_CHECK(rc == dnnl_success, Status::kInternal,
              "dnnl_sgemm failed (status " << static_cast<int>(rc) << ") for m=" << m << " n=" << n << " k=" << k
                                           << " lda=" << lda << " ldb=" << ldb << " ldc=" << ldc);
}

// dnnl_sgemm runs on omp_get_max_threads() threads; inside the kernels' team that is this thread's
// own nthreads ICV, which this sets to one.
void sgemm_single_thread() { omp_set_num_threads(1); }

std::string sgemm_engine() {
  const dnnl_version_t* v = dnnl_version();
  return "onednn " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         " (" + isa_name(dnnl_get_effective_cpu_isa()) + ")";
}

#else

namespace {
int as_int(int64_t value, const char* what) {
  DRING_CHECK(value >= 0 && value <= std::numeric_limits<int>::max(), Status::kUnsupported,
              "the CBLAS sgemm takes " << what << " as an int, and " << value
                                       << " does not fit: build with oneDNN (libdnnl-dev) for 64-bit sizes");
  return static_cast<int>(value);
}
}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), alpha, a, as_int(lda, "a leading dimension"), b,
              as_int(ldb, "a leading dimension"), beta, c, as_int(ldc, "a leading dimension"));
}

// OpenBLAS's thread count is global; its OpenMP build runs one thread inside a parallel region
// anyway, so the first thread's call is enough.
void sgemm_single_thread() {
  if (omp_get_thread_num() == 0) openblas_set_num_threads(1);
}

std::string sgemm_engine() { return std::string("openblas (") + openblas_get_corename() + ")"; }

#endif

}  // namespace dring::kernels::cpu
