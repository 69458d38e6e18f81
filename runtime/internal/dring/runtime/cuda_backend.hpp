// dring/cuda_backend.hpp — the GPU backend (only in builds with DRING_HAVE_CUDA).
//
// A CUDA Backend owns one device's memory through a tracking allocator (stream-ordered
// cudaMallocAsync on its compute stream, recorded as MemSpace::kDevice), runs every operation in
// order on that one compute stream (kernels/cuda), and uploads the descriptor arrays of a call
// (blocks, row runs) through a small ring of pinned host / device slots, so the host never waits
// for the GPU except in synchronize(), download() and when a slot is reused. fp32, fp16 and bf16
// storage; fp32 accumulation everywhere.
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "dring/runtime/backend.hpp"
#include "dring/runtime/select.hpp"

namespace dring {

// CUDA devices this process sees; 0 where there is no driver or no device (never throws).
int cuda_device_count();

// How make_cuda_runtime moves K/V rows between ranks.
enum class CudaTransportChoice : int {
  kAuto = 0,  // NCCL when every rank has a GPU of its own (and the build has NCCL), else MPI
  kNccl = 1,  // NCCL, or a collective error saying why not
  kMpi = 2,   // MPI for device buffers (host staging, or CUDA-aware MPI where the library has it)
};

// Collective over `comm`. The device is node-local rank % device count (node_placement, never the
// world rank). The transport: see CudaTransportChoice; kAuto can be overridden by the environment
// variable DRING_CUDA_TRANSPORT=nccl|mpi. Runtime::note says which device and transport, and why.
// `cuda_stream` (a cudaStream_t) is the stream of the caller's work, or null for one of dring's.
// Every rank fails together (CollectiveError) when a rank has no GPU.
Runtime make_cuda_runtime(MPI_Comm comm, DType dtype, MemoryTracker& tracker, void* cuda_stream,
                          CudaTransportChoice transport = CudaTransportChoice::kAuto);

// A CUDA backend on `device` (made current), on `cuda_stream` or a new stream when null.
std::unique_ptr<Backend> make_cuda_backend(MemoryTracker& tracker, int device, void* cuda_stream = nullptr);

// Options and hooks of a CUDA backend; each throws Error(kInvalidArgument) for another backend.
struct CudaBackendOptions {
  bool allow_mma = true;  // false: the generic forward kernel for every call (cross-checks, baselines)
  // fp16/bf16 blocks the rule of kernels/dense_batches.hpp picks run on cuDNN's fused attention
  // (builds with DRING_HAVE_CUDNN, devices from sm_80); false: dring's kernels only. The
  // thresholds of the rule: rows per block and visible scores per dense problem (docs/cudnn.md).
  bool use_cudnn = true;
  int64_t cudnn_min_rows = 16;
  double cudnn_min_problem_scores = 65536;
};
void configure_cuda_backend(Backend& backend, const CudaBackendOptions& options);
// Called about every 100 ms while the backend waits for the GPU; may throw (the NCCL watchdog).
void set_cuda_watchdog(Backend& backend, std::function<void()> watchdog);
// The backend's compute stream (a cudaStream_t), for callers that add work of their own in order.
void* cuda_stream_of(Backend& backend);
// The forward kernel the last attend call used ("simple" or "mma"; "cudnn" when cuDNN's fused
// attention ran every block, "cudnn+mma" or "cudnn+simple" when both ran), for reports.
std::string last_attend_path(Backend& backend);

}  // namespace dring
