// dring/comm/mpi_transport.hpp — Transport over MPI point-to-point, host memory.
#pragma once

#include <mpi.h>

#include <string>

#include "dring/comm/mpi_check.hpp"
#include "dring/comm/transport.hpp"

namespace dring::comm {

// The MPI datatype moving `type` (16-bit floats travel as opaque 16-bit words).
MPI_Datatype mpi_datatype(DType type);
// `count` as the int MPI takes; throws Error(kInternal) past INT_MAX.
int mpi_count(int64_t count);
// "receive from world rank 2 (tag 3, 4096 bytes)": a point-to-point operation as errors name it.
std::string describe_point_to_point(bool send, int peer, int tag, int64_t bytes);

// A Transport whose ranks are those of a duplicate of the caller's communicator (so dring's
// messages never match the caller's), with MPI errors returned rather than fatal, so they become
// exceptions with the rank in them; barrier and small allreduce run over it, non-blocking, with
// the deadline of dring/comm/deadline.hpp. The MPI, staged-MPI and NCCL transports build on it.
class MpiCommTransport : public Transport {
 public:
  int world_rank() const override { return rank_; }
  int world_size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }
  void barrier() override;
  double allreduce_max(double value) override;
  int64_t allreduce_sum(int64_t value) override;

 protected:
  explicit MpiCommTransport(MPI_Comm comm);
  // Without MPI (comm() is MPI_COMM_NULL): a derived transport that brings its own collectives
  // (barrier, allreduce_max, allreduce_sum) and names its own rank and size.
  MpiCommTransport(int rank, int size);
  ~MpiCommTransport() override;
  MpiCommTransport(const MpiCommTransport&) = delete;
  MpiCommTransport& operator=(const MpiCommTransport&) = delete;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

// Host memory over MPI point-to-point.
class MpiTransport final : public MpiCommTransport {
 public:
  explicit MpiTransport(MPI_Comm comm) : MpiCommTransport(comm) {}
  const char* name() const override { return "mpi"; }
  std::unique_ptr<Request> post_send_raw(const void* data, int64_t count, DType type, int peer,
                                         int tag) override;
  std::unique_ptr<Request> post_recv_raw(void* data, int64_t count, DType type, int peer, int tag) override;
};

}  // namespace dring::comm
