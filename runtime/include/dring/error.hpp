// dring/error.hpp — the one status enum and the one exception type of the project.
//
// Library code reports failure by throwing dring::Error, which owns a complete one-line message
// (what failed and where). The C ABI converts it to a Status once; only launch/ ends a process.
// The DRING_*_CHECK macros in this header and in the backend headers are the only way errors are
// raised, so every message has the same shape.
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
