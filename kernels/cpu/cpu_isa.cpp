// cpu_isa.cpp — the cap DRING_MAX_CPU_ISA puts on the kernels' own instruction sets, and the
// names of the tile kernels a run takes (dring/kernels/cpu.hpp).
//
// The kernels pick their fastest path from the CPU's features, with nothing to set. The cap
// exists to measure and test what an older CPU runs (the AVX-512 instances without the AMX tiles,
// the AVX2 instances on an AVX-512 machine),
// as ONEDNN_MAX_CPU_ISA does for oneDNN's sgemm; it can only take instruction sets away.
#include <cstdlib>
#include <string>
#include <string_view>

#include "dring/core/error.hpp"
#include "dring/kernels/cpu.hpp"

namespace dring::kernels::cpu {

CpuIsaCap cpu_isa_cap() {
  static const CpuIsaCap cap = [] {
    const char* env = std::getenv("DRING_MAX_CPU_ISA");
    const std::string_view v = env == nullptr ? "" : env;
    if (v.empty() || v == "amx" || v == "AMX") return CpuIsaCap::kAmx;
    if (v == "avx512" || v == "AVX512") return CpuIsaCap::kAvx512;
    if (v == "avx2" || v == "AVX2") return CpuIsaCap::kAvx2;
    if (v == "baseline" || v == "BASELINE") return CpuIsaCap::kBaseline;
    DRING_FAIL(Status::kInvalidArgument,
               "DRING_MAX_CPU_ISA=" << v << " is not one of amx, avx512, avx2, baseline (unset: no cap)");
  }();
  return cap;
}

std::string tile_kernels(const AttendParams& params) {
  auto f32 = [&](bool backward) -> std::string {
    AttendParams p = params;
    if (!(backward ? fused_f32_backward_runs(p) : fused_f32_runs(p))) return "sgemm";
    const bool chosen = p.cpu_f32_kernel == CpuF32Kernel::kAuto || p.cpu_f32_kernel == CpuF32Kernel::kAmx;
    if (!chosen) return p.cpu_f32_kernel == CpuF32Kernel::kAvx2 ? "fused avx2" : "fused avx512";
    p.cpu_f32_kernel = CpuF32Kernel::kAvx512;
    return (backward ? fused_f32_backward_runs(p) : fused_f32_runs(p)) ? "fused avx512" : "fused avx2";
  };
  // The fp32 AMX tile takes the forward's larger items; the rest go where they went before.
  auto f32_forward = [&]() -> std::string {
    if (!f32_amx_runs(params)) return f32(false);
    if (params.cpu_f32_kernel == CpuF32Kernel::kAmx) return "amx fp32 (3 bf16 parts)";
    return "amx fp32 (3 bf16 parts) where items reach 256 rows x 1024 keys, else " + f32(false);
  };
  auto f32_backward = [&]() -> std::string {
    if (!f32_amx_backward_runs(params)) return f32(true);
    if (params.cpu_f32_kernel == CpuF32Kernel::kAmx) return "amx fp32 (3 bf16 parts)";
    return "amx fp32 (3 bf16 parts) where rows see 512 keys, else " + f32(true);
  };
  if (params.dtype == DType::kF32) return "forward " + f32_forward() + ", backward " + f32_backward();
  const std::string bf16 = params.bf16_matmul && bf16_matmul_available() ? "onednn bf16" : "widened to fp32";
  if (bf16_amx_runs(params)) return "forward amx bf16, backward amx bf16";
  return "forward " + bf16 + ", backward " + bf16;
}

}  // namespace dring::kernels::cpu
