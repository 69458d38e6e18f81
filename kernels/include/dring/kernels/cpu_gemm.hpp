// dring/kernels/cpu_gemm.hpp — the one single-precision GEMM the CPU kernels call, and which engine runs it.
//
// Row-major C = alpha op(A) op(B) + beta C on one thread (the kernels call it from inside their
// own OpenMP team). The engine is chosen at build time by measurement (docs/benchmarks.md, "GEMM
// engine"): oneDNN's dnnl_sgemm where the build found it — it JIT-compiles its kernels for the
// CPU's features (AVX2, AVX-512, AMX) at run time, so a CPU newer than the library still gets
// its fast path with nothing to set — and the CBLAS of OpenBLAS otherwise. Leading dimensions are
// 64-bit here; the CBLAS fallback refuses (Error kUnsupported) what does not fit its int.
#pragma once

#include <cstdint>
#include <string>

namespace dring::kernels::cpu {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Make the GEMMs of the calling thread single-threaded: every thread of a kernel's team calls it
// first thing inside the parallel region (it never changes the caller's settings outside it).
void sgemm_single_thread();

// "onednn 2.6.3 (avx512_core_amx)" or "openblas 0.3.21 (SkylakeX)": for reports and benchmarks.
std::string sgemm_engine();

}  // namespace dring::kernels::cpu
