// dring/core/error.hpp — the one status enum and the one exception type of the project.
//
// Library code reports failure by throwing dring::Error, which owns a complete one-line message
// (what failed and where). The C ABI converts it to a Status once; only launch/ ends a process.
// The DRING_*_CHECK macros (this header; DRING_CUDA_CHECK in dring/core/cuda.hpp, DRING_MPI_CHECK
// in dring/comm/mpi_check.hpp, DRING_NCCL_CHECK in dring/comm/nccl_transport.hpp) are the only
// way errors are raised, so every message has the same shape. Nothing here depends on MPI or CUDA.
//
// Which rank failed: the runtime attaches this process's world rank once (set_error_rank), when it
// learns it; error helpers of device and communication calls name it from there
// (error_rank_text), so kernels and transports never look it up themselves.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dring {

// Explicit values: these cross the C ABI and appear as exit codes in scripts.
enum class Status : int {
  kOk = 0,
  kInvalidArgument = 1,  // bad flag, bad configuration, bad tensor shape
  kIoError = 2,          // file missing, unreadable, not HDF5, dataset missing
  kCommError = 3,        // MPI / NCCL failure
  kDeviceError = 4,      // CUDA failure
  kOutOfMemory = 5,
  kUnsupported = 6,      // valid request this build or backend cannot serve
  kCheckFailed = 7,      // --check found a mismatch against the float64 reference
  kInternal = 8,         // a bug: an invariant of dring itself did not hold
};

const char* status_name(Status status);

// The world rank named by device and communication errors; -1 (the default) means unknown.
void set_error_rank(int world_rank);
int error_rank();
// "world rank 3", or "an unknown rank" before set_error_rank.
std::string error_rank_text();

class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

namespace detail {
[[noreturn]] void throw_error(Status status, const std::string& message, const char* file, int line);
}  // namespace detail

}  // namespace dring

// DRING_FAIL(status, stream-expression): throw dring::Error with a message built by operator<<.
#define DRING_FAIL(status, msg)                                                     \
  do {                                                                              \
    std::ostringstream dring_fail_stream_;                                          \
    dring_fail_stream_ << msg;                                                      \
    ::dring::detail::throw_error((status), dring_fail_stream_.str(), __FILE__, __LINE__); \
  } while (0)

// DRING_CHECK(condition, status, stream-expression): fail unless the condition holds.
#define DRING_CHECK(cond, status, msg) \
  do {                                 \
    if (!(cond)) DRING_FAIL(status, msg); \
  } while (0)

// An invariant of dring itself; the message says which, and the file and line are appended.
#define DRING_ASSERT(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) DRING_FAIL(::dring::Status::kInternal, "internal error: " #cond " does not hold"); \
  } while (0)
