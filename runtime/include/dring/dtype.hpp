// dring/dtype.hpp — storage types of tensors. q, k, v, out, dout, dq, dk, dv are stored in the
// run's dtype; lse, the backward's delta and gradient accumulators are always float32.
#pragma once

#include <cstdint>
#include <string>

namespace dring {

enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline int64_t dtype_bytes(DType t) { return t == DType::kF32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "fp32";
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
  }
  return "?";
}
// "fp32", "fp16", "bf16"; throws Error(kInvalidArgument) otherwise.
DType parse_dtype(const std::string& name);

// Pointer arithmetic in elements of a dtype, on untyped tensor pointers.
inline const void* offset(const void* p, int64_t elements, DType t) {
  return static_cast<const char*>(p) + elements * dtype_bytes(t);
}
inline void* offset(void* p, int64_t elements, DType t) { return static_cast<char*>(p) + elements * dtype_bytes(t); }

}  // namespace dring
