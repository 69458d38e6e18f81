// dring/comm/nccl_transport.hpp — Transport over NCCL send/recv, GPU memory, one GPU per rank.
//
// Ordering with compute. The transport is built on the backend's compute stream. A post (send or
// receive) records an event on the compute stream: the communication stream waits for it, so a
// send moves the rows packed by the kernels enqueued before it, and a receive does not overwrite a
// buffer that earlier kernels still read. A request's wait() does not block the host: it makes the
// compute stream wait for the transfer, so the kernels enqueued after it see the data (and for a
// send, may refill its buffer). The host never blocks in this transport, so kernels and transfers
// of several steps stay queued on the GPU and overlap.
//
// Grouping. NCCL runs a communicator's operations in the order they are issued, and an operation
// holds back everything issued after it until its peer's matching one runs. Operations posted
// between begin_step() and end_step() are therefore issued together, as one ncclGroupStart/End,
// at end_step(): the ring executor brackets each step of its plan (a K/V send and receive; a
// gradient send and receive), and every rank issues its steps in the same global order, so each
// group's peers issue their matching groups and nothing waits on something issued later. An
// operation posted outside a bracket is issued at once, alone.
//
// Failure. NCCL errors are checked on every call; check_health() polls ncclCommGetAsyncError and
// the age of every issued group, and when a group has not completed within the transport's
// timeout_s() (the limit of every wait for a peer, dring/comm/deadline.hpp) or NCCL reports an asynchronous error, it aborts the communicators
// and throws Error(kCommError) naming the rank, the peer and the operation, instead of hanging.
// The CUDA backend calls it while it waits for the GPU. Only in builds with DRING_HAVE_NCCL.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "dring/comm/mpi_transport.hpp"
#include "dring/comm/transport.hpp"
#include "dring/core/cuda.hpp"

namespace dring::comm {

// Throws Error(kCommError) naming the call, the NCCL error and the world rank.
[[noreturn]] void nccl_fail(ncclResult_t code, const char* call);

}  // namespace dring::comm

#define DRING_NCCL_CHECK(call)                                                          \
  do {                                                                                  \
    const ncclResult_t dring_nccl_rc_ = (call);                                         \
    if (dring_nccl_rc_ != ncclSuccess) ::dring::comm::nccl_fail(dring_nccl_rc_, #call); \
  } while (0)

namespace dring::comm {

class NcclTransport final : public MpiCommTransport {
 public:
  // Collective over `comm`: rank 0 makes the NCCL unique id and broadcasts it over MPI. The
  // current CUDA device must be this rank's own GPU (NCCL refuses two ranks on one device).
  NcclTransport(MPI_Comm comm, cudaStream_t compute);
  // Without MPI: one of `world_size` processes that pass the same unique id (ncclGetUniqueId's
  // bytes, made by one of them and sent to the others by the caller), as rank `rank`. Barrier and
  // the small allreduces then run as ncclAllReduce of one value on the communication stream,
  // under the same deadline as the sends and receives.
  NcclTransport(const ncclUniqueId& id, int rank, int world_size, cudaStream_t compute);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  const char* name() const override { return "nccl"; }
  void barrier() override;
  double allreduce_max(double value) override;
  int64_t allreduce_sum(int64_t value) override;

  std::unique_ptr<Request> post_send_raw(const void* data, int64_t count, DType type, int peer,
                                         int tag) override;
  std::unique_ptr<Request> post_recv_raw(void* data, int64_t count, DType type, int peer, int tag) override;
  void begin_step() override;
  void end_step() override;
  // GPU time the compute stream spent waiting for transfers (wait()) since the last call, in ms:
  // what the overlap did not hide. Call after the compute stream is synchronised.
  double take_device_wait_ms() override;

  // Throws (after aborting the communicators) on an asynchronous NCCL error or a timed-out group.
  void check_health();

  // One posted operation (internal, shared with its request).
  struct Op {
    bool send = false;
    void* data = nullptr;
    int64_t count = 0;
    DType type = DType::kF32;
    int peer = 0;
    int tag = 0;
    cuda::Event ready;  // the compute stream's work before the post
    std::shared_ptr<cuda::Event> done;  // the group's completion, once issued
    bool issued = false;
  };
  void wait_on(Op& op);

 private:
  struct InFlight {
    std::shared_ptr<cuda::Event> done;
    std::chrono::steady_clock::time_point issued_at;
    std::string what;
  };
  std::shared_ptr<Op> make_op(bool send, const void* data, int64_t count, DType type, int peer, int tag);
  void post(const std::shared_ptr<Op>& op);
  void issue(const std::vector<std::shared_ptr<Op>>& ops);
  void abort_all() noexcept;
  // ncclAllReduce of one 8-byte value through scalar_, waited for under the deadline.
  void allreduce_scalar(void* value, ncclDataType_t type, ncclRedOp_t op, const char* what);

  cudaStream_t compute_;
  ncclComm_t nccl_ = nullptr;
  cuda::Stream stream_;  // the communication stream, at the device's highest priority
  bool in_step_ = false;
  std::vector<std::shared_ptr<Op>> step_;  // posted in the open step, issued at end_step()
  std::vector<InFlight> in_flight_;
  std::vector<std::pair<cuda::Event, cuda::Event>> waits_;  // (before, after) each stream wait
  bool aborted_ = false;
  void* scalar_ = nullptr;  // 8 bytes of device memory for the collectives without MPI
};

}  // namespace dring::comm
