// error.cpp — status names and the single place dring::Error is thrown from.
#include "dring/core/error.hpp"

#include <atomic>

namespace dring {

namespace {
std::atomic<int> g_error_rank{-1};
}  // namespace

void set_error_rank(int world_rank) { g_error_rank.store(world_rank, std::memory_order_relaxed); }
int error_rank() { return g_error_rank.load(std::memory_order_relaxed); }
std::string error_rank_text() {
  const int rank = error_rank();
  return rank >= 0 ? "world rank " + std::to_string(rank) : std::string("an unknown rank");
}

const char* status_name(Status status) {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kIoError: return "I/O error";
    case Status::kCommError: return "communication error";
    case Status::kDeviceError: return "device error";
    case Status::kOutOfMemory: return "out of memory";
    case Status::kUnsupported: return "unsupported";
    case Status::kCheckFailed: return "check failed";
    case Status::kInternal: return "internal error";
  }
  return "unknown status";
}

namespace detail {
void throw_error(Status status, const std::string& message, const char* file, int line) {
  // Internal errors are bugs: the location helps whoever fixes them. User-facing errors are
  // already precise ("--segments: ...") and the location would only be noise.
  if (status == Status::kInternal) {
    throw Error(status, message + " (" + file + ":" + std::to_string(line) + ")");
  }
  throw Error(status, message);
}
}  // namespace detail

}  // namespace dring
