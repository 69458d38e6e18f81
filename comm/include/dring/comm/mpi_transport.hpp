// dring/comm/mpi_transport.hpp — Transport over MPI point-to-point, host memory.
#pragma once

#include <mpi.h>

#include <string>

#include "dring/comm/transport.hpp"
#include "dring/error.hpp"

namespace dring::comm {

// Throws dring::Error(kCommError) naming the call, the MPI error string and the rank.
void mpi_fail(int code, const char* call, const char* file, int line);

}  // namespace dring::comm

#define DRING_MPI_CHECK(call)                                                        \
  do {                                                                               \
    const int dring_mpi_rc_ = (call);                                                \
    if (dring_mpi_rc_ != MPI_SUCCESS) ::dring::comm::mpi_fail(dring_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

namespace dring::comm {

// Owns a duplicate of the caller's communicator (so dring's messages never match the caller's),
// with errors returned rather than fatal, so they become exceptions with the rank in them.
class MpiTransport final : public Transport {
 public:
  explicit MpiTransport(MPI_Comm comm);
  ~MpiTransport() override;
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  const char* name() const override { return "mpi"; }
  int world_rank() const override { return rank_; }
  int world_size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }

  std::unique_ptr<Request> post_send_raw(const void* data, int64_t count, ElementType type, int peer,
                                         int tag) override;
  std::unique_ptr<Request> post_recv_raw(void* data, int64_t count, ElementType type, int peer, int tag) override;
  void barrier() override;
  double allreduce_max(double value) override;
  int64_t allreduce_sum(int64_t value) override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace dring::comm
