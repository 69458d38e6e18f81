// dring/kernels/cuda.hpp — the CUDA kernels of the attend family (kernels/cuda), as launchers.
//
// Three layers, as everywhere in dring: `<op>_kernel` (device code, no allocation, no sync) →
// `launch_<op>` here (grid, shared memory, launch check, an explicit stream) → the backend op
// (runtime/src/cuda_backend.cpp), which owns memory and uploads the descriptor arrays these
// launchers read. Every pointer below is device memory unless its comment says otherwise; the
// blocks' semantics are those of dring/kernels/attend.hpp. Launchers only enqueue work.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>

#include "dring/core/dtype.hpp"
#include "dring/kernels/attend.hpp"

namespace dring::kernels::cuda {

// Largest head_dim the kernels take (the generic kernels keep a row per warp, 8 values a lane).
inline constexpr int64_t kMaxHeadDim = 256;

// ---- forward ----------------------------------------------------------------------------------

enum class AttendPath : int {
  kSimple = 0,  // any dtype and head_dim <= 256: fp32 CUDA cores, 16 query rows per CTA
  kMma = 1,     // fp16/bf16, head_dim 64 or 128, aligned rows: tensor cores (mma.sync), 64 rows per CTA
};
const char* path_name(AttendPath path);

// The path for these blocks (host pointers: only their addresses and strides are inspected), and
// the query rows one CTA takes on it. `allow_mma` false forces the simple path (tests cross-check
// the two).
AttendPath choose_attend_path(std::span<const AttendBlock> blocks, DType dtype, int64_t head_dim, bool allow_mma);
int64_t attend_tile_rows(AttendPath path);

// One launch over many blocks: CTA t takes query tile t - tile_prefix[b] of the block b with
// tile_prefix[b] <= t < tile_prefix[b+1]; tile_prefix has n_blocks+1 entries, tile_prefix[0] = 0.
struct AttendLaunch {
  const AttendBlock* blocks = nullptr;
  const int64_t* tile_prefix = nullptr;
  int64_t n_blocks = 0;
  int64_t n_tiles = 0;
  DType dtype = DType::kF32;
  int64_t head_dim = 0;
  float scale = 0.0f;
  AttendPath path = AttendPath::kSimple;
};
void launch_attend(const AttendLaunch& launch, cudaStream_t stream);

// ---- backward ---------------------------------------------------------------------------------

inline constexpr int64_t kGradTileRows = 16;

// Two launches over the same blocks, no atomics: dq (CTA = one query head, 16 query rows of a
// block: prefix over n_heads * ceil(n_q/16)) and dk, dv (CTA = 16 key rows of a block, all its
// query heads: prefix over ceil(n_k/16)).
struct GradLaunch {
  const GradBlock* blocks = nullptr;
  const int64_t* dq_prefix = nullptr;
  const int64_t* dkv_prefix = nullptr;
  int64_t n_blocks = 0;
  int64_t dq_tiles = 0;
  int64_t dkv_tiles = 0;
  DType dtype = DType::kF32;
  int64_t head_dim = 0;
  float scale = 0.0f;
};
void launch_attend_backward(const GradLaunch& launch, cudaStream_t stream);

void launch_delta(const DeltaParams& params, cudaStream_t stream);

// ---- element-wise and row movement ------------------------------------------------------------

void launch_fill(void* dst, int64_t count, DType dtype, float value, cudaStream_t stream);
// fp32 -> dtype, and dtype -> fp32 (either may be fp32: then a copy).
void launch_cast_from_f32(const float* src, void* dst, int64_t count, DType dtype, cudaStream_t stream);
void launch_cast_to_f32(const void* src, DType dtype, float* dst, int64_t count, cudaStream_t stream);
// Standard normal values from a counter-based hash of (seed, index), for benchmarks and tests.
void launch_fill_random(void* dst, int64_t count, DType dtype, uint64_t seed, cudaStream_t stream);

// Row runs (dring/kernels/attend.hpp's RowRun): warp w of the grid takes global row w, found in run r with
// row_prefix[r] <= w < row_prefix[r+1]. copy: any dtype; add: fp32 dst += src. The rows of one call
// must be distinct destinations (Backend::copy_rows/add_rows): warps do not synchronise.
struct RowsLaunch {
  const RowRun* runs = nullptr;
  const int64_t* row_prefix = nullptr;
  int64_t n_runs = 0;
  int64_t n_rows = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
};
void launch_copy_rows(const RowsLaunch& launch, cudaStream_t stream);
void launch_add_rows(const RowsLaunch& launch, cudaStream_t stream);

// ---- cuBLAS standard attention (the baseline) -------------------------------------------------

// Dense (optionally causal) attention with the scores materialised: per (batch, kv head), one
// strided-batched GEMM S = scale Q K^T over that kv head's query heads, a row softmax kernel
// (P in the storage dtype, lse in fp32), and a strided-batched GEMM O = P V. Tensors as in the
// executor: q, out [batch, seq, heads, D], k, v [batch, seq, kv_heads, D], lse [batch, heads, seq];
// out and lse are overwritten (not merged). fp32 uses plain fp32 GEMMs; fp16 and bf16 accumulate
// in fp32.
struct StandardAttention {
  DType dtype = DType::kF32;
  int64_t batch = 1, seq = 0, heads = 1, kv_heads = 1, head_dim = 0;
  bool causal = false;
  float scale = 0.0f;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
};
// Device bytes of workspace standard_attention needs: the scores and P of one (batch, kv head).
int64_t standard_attention_workspace_bytes(const StandardAttention& params);
void standard_attention(const StandardAttention& params, void* workspace, cublasHandle_t handle,
                        cudaStream_t stream);

// Throws Error(kDeviceError) naming the cuBLAS call and the world rank.
[[noreturn]] void cublas_fail(cublasStatus_t status, const char* call);

}  // namespace dring::kernels::cuda

#define DRING_CUBLAS_CHECK(call)                                                          \
  do {                                                                                    \
    const cublasStatus_t dring_cublas_rc_ = (call);                                       \
    if (dring_cublas_rc_ != CUBLAS_STATUS_SUCCESS) ::dring::kernels::cuda::cublas_fail(dring_cublas_rc_, #call); \
  } while (0)
