// bf16_matmul.hpp — the tile products of bf16 rows on oneDNN's bf16 matmul primitive (AMX or
// avx512_bf16 on the CPUs that have them), fp32 results.
//
// The kernels' bf16 fast path (attend.cpp, attend_backward.cpp) packs each tile's bf16 rows
// densely into the thread's scratch and calls bf16_gemm for its products: the products of bf16
// values are exact in fp32 and oneDNN accumulates them in fp32, so only what the kernel itself
// rounds to bf16 (the probabilities P and, in the backward, dS) costs precision. oneDNN 2.6's
// AMX matmul (brgemm) takes dense operands and a dense result only (a strided one falls back to
// a slower gemm), so every operand here is dense. A primitive is created once per thread and
// shape and kept in a small per-thread cache, so a tile product costs one primitive execution.
#pragma once

#include <cstdint>
#include <cstring>

#include "dring/kernels/cpu.hpp"

namespace dring::kernels::cpu {

// bf16_matmul_available() (dring/kernels/cpu.hpp) is true when this build has oneDNN and oneDNN's
// effective ISA on this CPU has native bf16 dot products (avx512_core_bf16, or AMX above it):
// then bf16 matmul runs at several times dnnl_sgemm's rate (docs/benchmarks.md). False
// elsewhere: the kernels widen bf16 tiles to fp32 and run sgemm instead. Decided once, from the
// CPU's features, never from the environment.

// C[m, n] = alpha * op(A) op(B) + beta * C on the calling thread, all row-major and dense: A is
// [m, k] (row stride k), or with trans_a stored [k, m] (row stride m); B is [k, n] (row stride
// n), or with trans_b stored [n, k] (row stride k); C is fp32 [m, n] (row stride n). beta is 0
// or 1. A and B are bf16 bit patterns. Throws Error kInternal when oneDNN fails, kUnsupported
// when bf16_matmul_available() is false.
void bf16_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
               const uint16_t* b, float beta, float* c);

// n rows of d bf16 elements (row stride `stride`) copied densely to dst (n*d elements).
inline void pack_rows(const uint16_t* src, int64_t stride, int64_t n, int64_t d, uint16_t* dst) {
  if (stride == d) {
    std::memcpy(dst, src, static_cast<size_t>(n * d) * sizeof(uint16_t));
    return;
  }
  for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * d, src + i * stride, static_cast<size_t>(d) * sizeof(uint16_t));
}

// Hands out consecutive regions of a thread's scratch, each starting on a 64-byte boundary (AMX
// loads are fastest aligned). A region of e elements of `bytes` bytes each takes
// region_floats(e, bytes) floats of the scratch, alignment included.
inline constexpr int64_t kAlignFloats = 16;
inline constexpr int64_t region_floats(int64_t elements, int64_t bytes) {
  return (elements * bytes + 3) / 4 + kAlignFloats;
}
class ScratchRegions {
 public:
  explicit ScratchRegions(float* scratch) : next_(scratch) {}
  template <class T>
  T* take(int64_t elements) {
    const auto at = reinterpret_cast<uintptr_t>(next_);
    float* start = next_ + ((64 - at % 64) % 64) / 4;
    next_ = start + (elements * static_cast<int64_t>(sizeof(T)) + 3) / 4;
    return reinterpret_cast<T*>(start);
  }

 private:
  float* next_;
};

}  // namespace dring::kernels::cpu
