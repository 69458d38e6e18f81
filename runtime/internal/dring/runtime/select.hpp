// dring/select.hpp — choosing the backend and the transport of a run.
//
// "cpu": host memory, the fp32 CPU kernels, the MPI transport. "cuda": one GPU per rank, chosen by
// node-local rank (never by world rank); the NCCL transport when every rank of a node has a GPU
// of its own, else (several ranks on one GPU, which NCCL refuses) the MPI transport through host
// staging, and the run says so. "auto": cuda when this build has it and every rank sees a GPU,
// else cpu. The choice is collective: all ranks make the same one or all fail together.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "dring/runtime/backend.hpp"
#include "dring/comm/transport.hpp"
#include "dring/core/dtype.hpp"

namespace dring {

struct Runtime {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<comm::Transport> transport;
  std::string note;  // how the choice was made, for the report ("" when nothing to say)
};

// Collective. `cuda_stream` (a cudaStream_t) is the stream of the caller's work for the cuda
// backend, or null for a stream of dring's own.
Runtime select_runtime(MPI_Comm comm, const std::string& backend, DType dtype, int threads, MemoryTracker& tracker,
                       void* cuda_stream = nullptr);

// Collective over the `world_size` processes that pass the same NCCL unique id (ncclGetUniqueId's
// bytes, `unique_id`), each as its own `rank`, with no MPI: the CUDA backend on the current device
// (the caller chose it, e.g. torch.cuda.set_device) and the NCCL transport by that id. Throws
// Error(kUnsupported) in a build without NCCL. new_nccl_unique_id writes a fresh id (128 bytes).
Runtime make_nccl_runtime(const void* unique_id, int rank, int world_size, DType dtype, MemoryTracker& tracker,
                          void* cuda_stream = nullptr);
void new_nccl_unique_id(void* out);
inline constexpr int kNcclUniqueIdBytes = 128;

// Collective: whether this build has the CUDA backend and every rank sees at least one GPU.
bool cuda_available(MPI_Comm comm);

}  // namespace dring
