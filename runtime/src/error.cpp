// error.cpp — status names and the single place dring::Error is thrown from.
#include "dring/error.hpp"

namespace dring {

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
