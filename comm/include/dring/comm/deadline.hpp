// dring/comm/deadline.hpp — how long a rank waits for its peers before it gives up.
//
// Every wait on a peer (a point-to-point request, a barrier, a small allreduce, the agreement on
// errors) has a deadline, so a hung or stopped peer ends the job with the peer named instead of
// leaving the others waiting until the batch limit. The limit is, first found: what the caller set
// (`dring run --comm-timeout`, dring_options.comm_timeout_s), the environment variable
// DRING_COMM_TIMEOUT_S, or kDefaultCommTimeoutS. The NCCL watchdog uses the same limit.
//
// A wait first polls MPI_Test in a tight loop for a short while (a peer that is merely a little
// behind costs no latency), then sleeps between polls with a growing pause (at most
// kMaxPollPause), so a long wait does not burn a core that a co-located rank could use.
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>

namespace dring::comm {

inline constexpr double kDefaultCommTimeoutS = 600.0;
inline constexpr const char* kCommTimeoutVariable = "DRING_COMM_TIMEOUT_S";
inline constexpr std::chrono::microseconds kSpinBeforeSleep{2000};
inline constexpr std::chrono::microseconds kMaxPollPause{1000};

// DRING_COMM_TIMEOUT_S when it is set; throws Error(kInvalidArgument) naming the variable when it
// is not a positive number of seconds. kDefaultCommTimeoutS when it is not set.
double comm_timeout_from_environment();

// The process-wide limit for waits whose caller names none (the agreement on errors, a new
// transport): what set_default_comm_timeout set (the dring program, from --comm-timeout), else
// the environment, else kDefaultCommTimeoutS (also when the variable is malformed: whoever
// resolves the limit with resolve_comm_timeout reports that). Never throws.
void set_default_comm_timeout(double seconds);
double default_comm_timeout_s() noexcept;

// The limit a caller gets when it names none: `requested` when positive, else
// comm_timeout_from_environment(). Throws like it.
double resolve_comm_timeout(double requested);

// "5 s", "0.25 s", "600 s": a limit as messages print it.
std::string seconds_text(double seconds);

// Completes `request` (MPI_Test until done), or after `timeout_s` seconds throws
// Error(kCommError): "<what> did not complete within <limit>: world rank R gave up after waiting
// <t> s (...)". `what` names the operation and the peer, e.g. "receive from world rank 2 (tag 3,
// 4096 bytes)". The request is left pending on timeout; its owner cancels or abandons it.
void wait_until_deadline(MPI_Request* request, double timeout_s, const std::string& what);

// The same, with `what` built only when the deadline passes.
template <class Describe>
void wait_until_deadline_lazy(MPI_Request* request, double timeout_s, Describe&& describe);

// Collectives that give up after `timeout_s` like wait_until_deadline ("<what> over N ranks did
// not complete within ..."). They run on buffers of their own, which a timed-out operation keeps
// (MPI may still write them), so the caller's memory is never written after an error.
void barrier_until_deadline(MPI_Comm comm, double timeout_s, const char* what);
void allreduce_until_deadline(MPI_Comm comm, const void* in, void* out, int count, MPI_Datatype type, MPI_Op op,
                              double timeout_s, const char* what);
void bcast_until_deadline(MPI_Comm comm, void* data, int count, MPI_Datatype type, int root, double timeout_s,
                          const char* what);

namespace detail {
// true when complete; false when `timeout_s` passed first (waited_s says how long it waited).
bool poll_until(MPI_Request* request, double timeout_s, double* waited_s);
[[noreturn]] void fail_deadline(const std::string& what, double timeout_s, double waited_s);
}  // namespace detail

template <class Describe>
void wait_until_deadline_lazy(MPI_Request* request, double timeout_s, Describe&& describe) {
  double waited_s = 0.0;
  if (!detail::poll_until(request, timeout_s, &waited_s)) detail::fail_deadline(describe(), timeout_s, waited_s);
}

}  // namespace dring::comm
