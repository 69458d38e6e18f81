// cuda_runtime.cpp — choosing a rank's GPU and transport (make_cuda_runtime, cuda_backend.hpp).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "dring/runtime/collective.hpp"
#include "dring/comm/mpi_transport.hpp"
#include "dring/comm/staged_transport.hpp"
#include "dring/config.h"
#include "dring/runtime/cuda_backend.hpp"
#include "dring/core/cuda.hpp"
#include "dring/runtime/node.hpp"
#if DRING_HAVE_NCCL
#include "dring/comm/nccl_transport.hpp"
#endif

namespace dring {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver, no device: not an error here
    return 0;
  }
  return count;
}

namespace {

CudaTransportChoice choice_from_environment(CudaTransportChoice choice) {
  if (choice != CudaTransportChoice::kAuto) return choice;
  const char* env = std::getenv("DRING_CUDA_TRANSPORT");
  if (env == nullptr || std::strcmp(env, "auto") == 0 || env[0] == '\0') return choice;
  if (std::strcmp(env, "nccl") == 0) return CudaTransportChoice::kNccl;
  if (std::strcmp(env, "mpi") == 0) return CudaTransportChoice::kMpi;
  throw CollectiveError(Status::kInvalidArgument,
                        std::string("DRING_CUDA_TRANSPORT=") + env + ": expected auto, nccl or mpi", -1);
}

bool all_ranks(MPI_Comm comm, bool mine) {
  int in = mine ? 1 : 0, all = 0;
  DRING_MPI_CHECK(MPI_Allreduce(&in, &all, 1, MPI_INT, MPI_MIN, comm));
  return all == 1;
}

// Whether no other rank of this node uses the same physical GPU as `device`: the node's device
// UUIDs, gathered over the node communicator, decided by device_is_exclusive (node.hpp), so ranks
// that each see one GPU (--gpus-per-task=1, or their own CUDA_VISIBLE_DEVICES) are told apart from
// ranks that share one. Collective over comm.
bool gpu_is_exclusive_on_node(MPI_Comm comm, int device) {
  // A rank whose query fails still joins the exchange (no peer left waiting) and reports "shared";
  // the cudaSetDevice that follows, agreed among the ranks, names the failure.
  cudaDeviceProp prop{};
  const bool known = cudaGetDeviceProperties(&prop, device) == cudaSuccess;
  if (!known) cudaGetLastError();
  MPI_Comm node = MPI_COMM_NULL;
  DRING_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  constexpr int kUuidBytes = static_cast<int>(sizeof prop.uuid.bytes);
  std::vector<std::byte> uuids(static_cast<size_t>(local_size) * kUuidBytes);
  const int rc = MPI_Allgather(prop.uuid.bytes, kUuidBytes, MPI_BYTE, uuids.data(), kUuidBytes, MPI_BYTE, node);
  MPI_Comm_free(&node);
  DRING_MPI_CHECK(rc);
  return device_is_exclusive(uuids, kUuidBytes, local_rank, known);
}

}  // namespace

Runtime make_cuda_runtime(MPI_Comm comm, DType dtype, MemoryTracker& tracker, void* cuda_stream,
                          CudaTransportChoice transport) {
  int rank = 0, world = 1;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  DRING_MPI_CHECK(MPI_Comm_size(comm, &world));
  const NodePlacement place = node_placement(comm);
  const int devices = cuda_device_count();
  agree(comm, [&] {
    DRING_CHECK(devices > 0, Status::kUnsupported,
                "--backend cuda: no CUDA device is visible on world rank " << rank
                                                                           << " (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)");
  });
  const int device = place.local_rank % devices;
  const CudaTransportChoice choice = choice_from_environment(transport);
  // NCCL refuses two ranks on one device: every rank needs a GPU no other rank of its node uses.
  // Decided by device UUID, not by counting visible devices (ranks bound to one GPU each see one).
  const bool own_gpus = all_ranks(comm, gpu_is_exclusive_on_node(comm, device));
  const bool nccl_built = DRING_HAVE_NCCL != 0;
  agree(comm, [&] {
    DRING_CHECK(choice != CudaTransportChoice::kNccl || (nccl_built && own_gpus), Status::kUnsupported,
                "NCCL transport requested, but " << (nccl_built ? "several ranks share a GPU on some node, which NCCL refuses"
                                                                : "this build has no NCCL (configure with -DDRING_NCCL=ON)"));
  });
  const bool use_nccl = nccl_built && own_gpus && choice != CudaTransportChoice::kMpi;

  Runtime runtime;
  agree(comm, [&] {
    DRING_CUDA_CHECK(cudaSetDevice(device));
    runtime.backend = make_cuda_backend(tracker, device, cuda_stream);
  });
  DRING_ASSERT(runtime.backend->supports(dtype));
  const auto stream = static_cast<cudaStream_t>(cuda_stream_of(*runtime.backend));
  std::ostringstream note;
  note << "cuda device " << device << " of " << devices << " (node-local rank " << place.local_rank << " of "
       << place.local_size << "); ";
  if (use_nccl) {
#if DRING_HAVE_NCCL
    auto nccl = std::make_unique<comm::NcclTransport>(comm, stream);
    comm::NcclTransport* watched = nccl.get();
    set_cuda_watchdog(*runtime.backend, [watched] { watched->check_health(); });
    runtime.transport = std::move(nccl);
    note << "NCCL transport: every rank has a GPU of its own";
#endif
  } else {
    const bool aware = all_ranks(comm, comm::StagedMpiTransport::cuda_aware_mpi_available());
    const auto mode = aware ? comm::StagedMpiTransport::Mode::kCudaAware : comm::StagedMpiTransport::Mode::kHostStaging;
    runtime.transport = std::make_unique<comm::StagedMpiTransport>(comm, stream, mode, tracker);
    note << "MPI transport " << (aware ? "(CUDA-aware MPI)" : "with host staging") << ": ";
    if (choice == CudaTransportChoice::kMpi) {
      note << "asked for (DRING_CUDA_TRANSPORT=mpi or the caller)";
    } else if (!nccl_built) {
      note << "this build has no NCCL";
    } else {
      note << "ranks share a GPU on a node (" << place.local_size << " ranks, " << devices
           << " GPU(s) visible to this rank; compared by device UUID), which NCCL refuses";
    }
  }
  runtime.note = note.str();
  return runtime;
}

#if DRING_HAVE_NCCL
static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes, "NCCL's unique id changed size");

void new_nccl_unique_id(void* out) {
  ncclUniqueId id;
  DRING_NCCL_CHECK(ncclGetUniqueId(&id));
  std::memcpy(out, &id, sizeof id);
}

Runtime make_nccl_runtime(const void* unique_id, int rank, int world_size, DType dtype, MemoryTracker& tracker,
                          void* cuda_stream) {
  set_error_rank(rank);
  int device = -1;
  DRING_CUDA_CHECK(cudaGetDevice(&device));
  Runtime runtime;
  runtime.backend = make_cuda_backend(tracker, device, cuda_stream);
  DRING_CHECK(runtime.backend->supports(dtype), Status::kUnsupported,
              "--dtype " << dtype_name(dtype) << " is not supported by the cuda backend");
  const auto stream = static_cast<cudaStream_t>(cuda_stream_of(*runtime.backend));
  ncclUniqueId id;
  std::memcpy(&id, unique_id, sizeof id);
  auto nccl = std::make_unique<comm::NcclTransport>(id, rank, world_size, stream);
  comm::NcclTransport* watched = nccl.get();
  set_cuda_watchdog(*runtime.backend, [watched] { watched->check_health(); });
  runtime.transport = std::move(nccl);
  std::ostringstream note;
  note << "cuda device " << device << " (the caller's current device); NCCL transport by unique id, rank " << rank
       << " of " << world_size << ", no MPI";
  runtime.note = note.str();
  return runtime;
}
#endif

}  // namespace dring
