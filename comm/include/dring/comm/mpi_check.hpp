// dring/comm/mpi_check.hpp — MPI errors as dring::Error: DRING_MPI_CHECK(call) throws
// Error(kCommError) naming the call, MPI's error string and the world rank (error_rank_text).
// For every layer that calls MPI directly; it pulls in nothing but mpi.h and dring/core/error.hpp.
#pragma once

#include <mpi.h>

#include "dring/core/error.hpp"

namespace dring::comm {

[[noreturn]] void mpi_fail(int code, const char* call, const char* file, int line);

}  // namespace dring::comm

#define DRING_MPI_CHECK(call)                                                        \
  do {                                                                               \
    const int dring_mpi_rc_ = (call);                                                \
    if (dring_mpi_rc_ != MPI_SUCCESS) ::dring::comm::mpi_fail(dring_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
