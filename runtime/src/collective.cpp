// collective.cpp — agreement on errors and on arguments across ranks.
#include "dring/runtime/collective.hpp"

#include <climits>
#include <cstdint>
#include <functional>
#include <vector>

#include "dring/comm/deadline.hpp"
#include "dring/comm/mpi_check.hpp"

namespace dring {

void attach_error_rank() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  set_error_rank(rank);
}

namespace {
double limit(double timeout_s) { return timeout_s > 0.0 ? timeout_s : comm::default_comm_timeout_s(); }
}  // namespace

void agree_on(MPI_Comm comm, const std::optional<Error>& local, double timeout_s) {
  const double t = limit(timeout_s);
  int rank = 0;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const int mine = local ? rank : INT_MAX;
  int first = INT_MAX;
  comm::allreduce_until_deadline(comm, &mine, &first, 1, MPI_INT, MPI_MIN, t, "the agreement on errors");
  if (first == INT_MAX) return;
  int status = local ? static_cast<int>(local->status()) : 0;
  comm::bcast_until_deadline(comm, &status, 1, MPI_INT, first, t, "the agreement on errors");
  const std::string message = broadcast_string(comm, local ? std::string(local->what()) : std::string(), first, t);
  throw CollectiveError(static_cast<Status>(status), message, first);
}

void agree_on(comm::Transport& transport, const std::optional<Error>& local) {
  // One max-allreduce carries the lowest failing rank and its status: (k - rank) * 16 + status.
  const int k = transport.world_size(), rank = transport.world_rank();
  const double mine = local ? static_cast<double>((k - rank) * 16 + static_cast<int>(local->status())) : 0.0;
  const auto worst = static_cast<int64_t>(transport.allreduce_max(mine));
  if (worst <= 0) return;
  const int first = k - static_cast<int>(worst / 16);
  const auto status = static_cast<Status>(worst % 16);
  if (local) throw CollectiveError(local->status(), local->what(), rank);
  throw CollectiveError(status,
                        "world rank " + std::to_string(first) + " failed (" + status_name(status) +
                            "); its own error says why",
                        first);
}

bool all_ranks_equal(comm::Transport& transport, const std::string& text) {
  // 52 bits of the hash are exact in a double; equal on every rank iff max == min.
  const auto mine = static_cast<double>(std::hash<std::string>{}(text) >> 12);
  return transport.allreduce_max(mine) == -transport.allreduce_max(-mine);
}

bool all_ranks_equal(MPI_Comm comm, const std::string& text, int* first_different_rank, double timeout_s) {
  const double t = limit(timeout_s);
  const uint64_t mine = std::hash<std::string>{}(text);
  uint64_t root = mine;
  comm::bcast_until_deadline(comm, &root, 1, MPI_UINT64_T, 0, t, "the comparison of arguments");
  int rank = 0;
  DRING_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const int differs = mine != root ? rank : INT_MAX;
  int first = INT_MAX;
  comm::allreduce_until_deadline(comm, &differs, &first, 1, MPI_INT, MPI_MIN, t, "the comparison of arguments");
  if (first_different_rank != nullptr) *first_different_rank = first == INT_MAX ? -1 : first;
  return first == INT_MAX;
}

std::string broadcast_string(MPI_Comm comm, std::string text, int root, double timeout_s) {
  const double t = limit(timeout_s);
  int64_t length = static_cast<int64_t>(text.size());
  comm::bcast_until_deadline(comm, &length, 1, MPI_INT64_T, root, t, "a broadcast of a message");
  text.resize(static_cast<size_t>(length));
  if (length > 0) comm::bcast_until_deadline(comm, text.data(), static_cast<int>(length), MPI_CHAR, root, t, "a broadcast of a message");
  return text;
}

}  // namespace dring
