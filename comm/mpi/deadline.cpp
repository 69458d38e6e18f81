// deadline.cpp — the limit on waits for a peer, and the polling wait that enforces it.
#include "dring/comm/deadline.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "dring/comm/mpi_check.hpp"

namespace dring::comm {

double comm_timeout_from_environment() {
  const char* text = std::getenv(kCommTimeoutVariable);
  if (text == nullptr || text[0] == '\0') return kDefaultCommTimeoutS;
  char* end = nullptr;
  errno = 0;
  const double seconds = std::strtod(text, &end);
  DRING_CHECK(errno == 0 && end != text && *end == '\0' && std::isfinite(seconds) && seconds > 0.0,
              Status::kInvalidArgument,
              kCommTimeoutVariable << "='" << text << "' is not a positive number of seconds");
  return seconds;
}

namespace {
double process_default_s = 0.0;  // 0: not set
}  // namespace

void set_default_comm_timeout(double seconds) { process_default_s = seconds; }

double default_comm_timeout_s() noexcept {
  if (process_default_s > 0.0) return process_default_s;
  try {
    return comm_timeout_from_environment();
  } catch (const Error&) {
    return kDefaultCommTimeoutS;
  }
}

double resolve_comm_timeout(double requested) {
  return requested > 0.0 ? requested : comm_timeout_from_environment();
}

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

namespace detail {

bool poll_until(MPI_Request* request, double timeout_s, double* waited_s) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto limit = std::chrono::duration<double>(timeout_s);
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    DRING_MPI_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return true;
    const auto waited = Clock::now() - start;
    if (waited > limit) {
      *waited_s = std::chrono::duration<double>(waited).count();
      return false;
    }
    if (waited > kSpinBeforeSleep) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, kMaxPollPause);
    }
  }
}

void fail_deadline(const std::string& what, double timeout_s, double waited_s) {
  char waited[32];
  std::snprintf(waited, sizeof waited, "%.1f", waited_s);
  DRING_FAIL(Status::kCommError, what << " did not complete within " << seconds_text(timeout_s) << ": "
                                      << error_rank_text() << " gave up after waiting " << waited
                                      << " s (the peer is hung, stopped or far behind; --comm-timeout or "
                                      << kCommTimeoutVariable << " sets the limit)");
}

}  // namespace detail

void wait_until_deadline(MPI_Request* request, double timeout_s, const std::string& what) {
  wait_until_deadline_lazy(request, timeout_s, [&] { return what; });
}

namespace {

std::string collective_text(MPI_Comm comm, const char* what) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  return std::string(what) + " over " + std::to_string(size) + " ranks";
}

// Bytes a collective works on until it completes; deliberately leaked when it times out.
std::unique_ptr<std::byte[]> scratch(int count, MPI_Datatype type, const void* from) {
  int type_bytes = 0;
  DRING_MPI_CHECK(MPI_Type_size(type, &type_bytes));
  const size_t bytes = static_cast<size_t>(count) * static_cast<size_t>(type_bytes);
  auto buffer = std::make_unique<std::byte[]>(std::max<size_t>(bytes, 1));
  if (from != nullptr && bytes > 0) std::memcpy(buffer.get(), from, bytes);
  return buffer;
}

void finish(MPI_Comm comm, MPI_Request* request, double timeout_s, const char* what,
            std::unique_ptr<std::byte[]>& a, std::unique_ptr<std::byte[]>& b) {
  double waited_s = 0.0;
  if (detail::poll_until(request, timeout_s, &waited_s)) return;
  (void)a.release();  // MPI may still write them
  (void)b.release();
  detail::fail_deadline(collective_text(comm, what), timeout_s, waited_s);
}

}  // namespace

void barrier_until_deadline(MPI_Comm comm, double timeout_s, const char* what) {
  MPI_Request request = MPI_REQUEST_NULL;
  DRING_MPI_CHECK(MPI_Ibarrier(comm, &request));
  std::unique_ptr<std::byte[]> none_a, none_b;
  finish(comm, &request, timeout_s, what, none_a, none_b);
}

void allreduce_until_deadline(MPI_Comm comm, const void* in, void* out, int count, MPI_Datatype type, MPI_Op op,
                              double timeout_s, const char* what) {
  auto send = scratch(count, type, in);
  auto recv = scratch(count, type, nullptr);
  MPI_Request request = MPI_REQUEST_NULL;
  DRING_MPI_CHECK(MPI_Iallreduce(send.get(), recv.get(), count, type, op, comm, &request));
  finish(comm, &request, timeout_s, what, send, recv);
  int type_bytes = 0;
  DRING_MPI_CHECK(MPI_Type_size(type, &type_bytes));
  std::memcpy(out, recv.get(), static_cast<size_t>(count) * static_cast<size_t>(type_bytes));
}

void bcast_until_deadline(MPI_Comm comm, void* data, int count, MPI_Datatype type, int root, double timeout_s,
                          const char* what) {
  auto buffer = scratch(count, type, data);
  std::unique_ptr<std::byte[]> none;
  MPI_Request request = MPI_REQUEST_NULL;
  DRING_MPI_CHECK(MPI_Ibcast(buffer.get(), count, type, root, comm, &request));
  finish(comm, &request, timeout_s, what, buffer, none);
  int type_bytes = 0;
  DRING_MPI_CHECK(MPI_Type_size(type, &type_bytes));
  std::memcpy(data, buffer.get(), static_cast<size_t>(count) * static_cast<size_t>(type_bytes));
}

}  // namespace dring::comm
