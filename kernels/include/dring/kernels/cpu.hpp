// dring/kernels/cpu.hpp — CPU backend of the attend family (kernels/cpu): fp32 or bf16 storage,
// fp32 arithmetic.
//
// Tiled online softmax: a work item is a tile of q rows of one block; its scores exist only as a
// q_tile x k_tile scratch tile (sgemm for q.k^T and p.v, vectorised exp2 between; for fp32 on
// AVX-512 or AVX2+FMA CPUs, a fused micro-kernel of dring's own instead, fused_f32_runs). Work items run
// on an OpenMP team of params.threads threads. bf16 tensors (params.dtype kBF16, each element its
// 16-bit pattern) run their tile products as oneDNN bf16 matmuls (fp32 accumulation) where the CPU
// has them (bf16_matmul_available(); P and dS are rounded to bf16 for their products; the forward
// runs a fused AMX tile of dring's own instead where the CPU has AMX, bf16_amx_runs), else they
// are widened tile by tile into the thread's fp32 scratch and the fp32 code runs on that; out is
// rounded back to bf16 once per call. lse, delta, dq, dk, dv are fp32 in both (docs/math.md).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "dring/kernels/attend.hpp"

namespace dring::kernels::cpu {

// True when bf16 tiles run as oneDNN bf16 matmuls on this CPU and build (AMX or avx512_bf16, by
// oneDNN's effective ISA; kernels/cpu/bf16_matmul.hpp): then params.bf16_matmul picks that path.
bool bf16_matmul_available();

// True when params' fp32 forward tiles run on the fused micro-kernel (AVX-512 or AVX2+FMA, by
// params.cpu_f32_kernel, the CPU and head_dim; kernels/cpu/attend_fused.hpp), false when on sgemm.
bool fused_f32_runs(const AttendParams& params);

// True when params' bf16 tiles run on the AMX tiles, the forward's and (but for blocks of up to
// 16 x 16, which run on their widened rows) the backward's (by params.bf16_matmul,
// params.cpu_bf16_kernel, the CPU, the OS and head_dim; kernels/cpu/attend_amx.hpp,
// attend_amx_backward.hpp).
bool bf16_amx_runs(const AttendParams& params);

// True when params' fp32 forward tiles run on the fused AMX tile with each operand in three bf16
// parts, to fp32 accuracy (by params.cpu_f32_kernel, the CPU, the OS and head_dim; the small
// blocks stay on the fused micro-kernels; kernels/cpu/attend_amx.hpp).
bool f32_amx_runs(const AttendParams& params);

// The cap on the instruction sets of dring's own kernels: DRING_MAX_CPU_ISA=avx512, avx2 or
// baseline holds the tiles to AVX-512 without the AMX tiles, to AVX2 or to none (to measure and
// test what an older CPU runs, with ONEDNN_MAX_CPU_ISA doing the same for oneDNN); unset or amx:
// no cap. Read once; an unknown value is Error kInvalidArgument.
enum class CpuIsaCap : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2, kAmx = 3 };
CpuIsaCap cpu_isa_cap();

// The tile kernels params' forward and backward take on this CPU, for run reports, e.g.
// "forward fused avx512, backward fused avx512", "forward amx fp32 (3 bf16 parts) where items
// reach 256 rows x 1024 keys, else fused avx512, backward amx fp32 (3 bf16 parts) where rows see
// 512 keys, else fused avx512" or "forward amx bf16, backward amx bf16".
std::string tile_kernels(const AttendParams& params);

// Floats of scratch each worker thread needs (more for bf16: the widened tiles).
int64_t workspace_floats_per_thread(const AttendParams& params);

// Runs every block (fp32 or bf16; Error kUnsupported for fp16). Blocks must not share output rows (the caller groups blocks so
// that they do not); `workspace` holds workspace_floats_per_thread(params) * params.threads floats.
void attend(std::span<const AttendBlock> blocks, const AttendParams& params, float* workspace);

// Backward (attend_backward.cpp): work items are key tiles of a block, so each owns its dk/dv rows;
// dq tiles are shared between the key tiles of a block and updated under a per-tile lock.
// fused_f32_backward_runs: whether params' fp32 backward tiles run on the fused micro-kernel
// (kernels/cpu/attend_fused_backward.hpp; by params.cpu_f32_kernel, the CPU and head_dim), false
// when on sgemm.
bool fused_f32_backward_runs(const AttendParams& params);
// f32_amx_backward_runs: whether params' fp32 backward may take the AMX tile in three bf16 parts
// (kernels/cpu/attend_amx_backward.hpp; where f32_amx_runs, on the blocks its gate takes).
bool f32_amx_backward_runs(const AttendParams& params);
int64_t backward_workspace_floats_per_thread(const AttendParams& params);
void attend_backward(std::span<const GradBlock> blocks, const AttendParams& params, float* workspace);
void delta(const DeltaParams& params, int threads);

// bf16 (as 16-bit patterns) <-> fp32, n elements. Widening is exact. Narrowing rounds to nearest,
// ties to even; inf stays inf, a finite value past the largest bf16 becomes inf, a NaN stays a
// (quiet) NaN with its sign, denormals round like any other value.
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);

}  // namespace dring::kernels::cpu
