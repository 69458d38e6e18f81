// select.cpp — backend and transport selection (see select.hpp).
#include "dring/runtime/select.hpp"

#include "dring/runtime/collective.hpp"
#include "dring/comm/mpi_transport.hpp"
#include "dring/config.h"
#include "dring/core/error.hpp"
#if DRING_HAVE_CUDA
#include "dring/runtime/cuda_backend.hpp"
#endif

namespace dring {

bool cuda_available(MPI_Comm comm) {
#if DRING_HAVE_CUDA
  int mine = cuda_device_count() > 0 ? 1 : 0;
  int all = 0;
  DRING_MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm));
  return all == 1;
#else
  (void)comm;
  return false;
#endif
}

#if !DRING_HAVE_NCCL
Runtime make_nccl_runtime(const void*, int, int, DType, MemoryTracker&, void*) {
  DRING_FAIL(Status::kUnsupported, "this build of dring has no NCCL (configure with -DDRING_CUDA=ON -DDRING_NCCL=ON)");
}
void new_nccl_unique_id(void*) {
  DRING_FAIL(Status::kUnsupported, "this build of dring has no NCCL (configure with -DDRING_CUDA=ON -DDRING_NCCL=ON)");
}
#endif

Runtime select_runtime(MPI_Comm comm, const std::string& backend, DType dtype, int threads, MemoryTracker& tracker,
                       void* cuda_stream) {
  attach_error_rank();
  std::string choice = backend;
  if (choice == "auto") choice = cuda_available(comm) ? "cuda" : "cpu";
  Runtime runtime;
  if (choice == "cpu") {
    agree(comm, [&] {
      DRING_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, Status::kUnsupported,
                  "--dtype " << dtype_name(dtype) << " is not supported by the cpu backend (fp32 or bf16)");
    });
    runtime.backend = make_cpu_backend(tracker, threads);
    runtime.transport = std::make_unique<comm::MpiTransport>(comm);
    return runtime;
  }
  DRING_CHECK(choice == "cuda", Status::kInvalidArgument, "unknown backend '" << backend << "' (cpu, cuda or auto)");
#if DRING_HAVE_CUDA
  return make_cuda_runtime(comm, dtype, tracker, cuda_stream);
#else
  (void)cuda_stream;
  throw CollectiveError(Status::kUnsupported,
                        "--backend cuda: this build of dring has no CUDA backend (configure with -DDRING_CUDA=ON on "
                        "a machine with the CUDA toolkit, or use --backend cpu)",
                        -1);
#endif
}

}  // namespace dring
