// dtype.cpp — names of element types.
#include "dring/core/dtype.hpp"

#include "dring/core/error.hpp"

namespace dring {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "fp32";
    case DType::kF16: return "fp16";
    case DType::kBF16: return "bf16";
    case DType::kF64: return "fp64";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  if (name == "fp32") return DType::kF32;
  if (name == "fp16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  DRING_FAIL(Status::kInvalidArgument, "unknown dtype '" << name << "' (expected fp32, fp16 or bf16)");
}

}  // namespace dring
