// dring/collective.hpp — making failure a collective decision.
//
// A check that only some ranks fail (a NaN in one shard, a file one rank cannot open) must not
// leave the others waiting in the next collective. `agree` runs a step on every rank, then every
// rank learns whether any failed; if so, all throw the same CollectiveError carrying the message
// of the lowest failing rank, and the program can end cleanly on all ranks at once.
#pragma once

#include <mpi.h>

#include <optional>
#include <string>
#include <utility>

#include "dring/core/error.hpp"

namespace dring {

// An error every rank of the communicator knows about (so no rank is left waiting).
class CollectiveError : public Error {
 public:
  CollectiveError(Status status, const std::string& message, int failing_rank)
      : Error(status, message), failing_rank_(failing_rank) {}
  int failing_rank() const { return failing_rank_; }

 private:
  int failing_rank_;
};

// Collective: throws CollectiveError on every rank if `local` holds an error on any rank.
void agree_on(MPI_Comm comm, const std::optional<Error>& local);

// Collective: runs `step` on this rank and agrees on the outcome.
template <class Step>
void agree(MPI_Comm comm, Step&& step) {
  std::optional<Error> local;
  try {
    std::forward<Step>(step)();
  } catch (const CollectiveError&) {
    throw;  // already agreed
  } catch (const Error& e) {
    local = e;
  }
  agree_on(comm, local);
}

// Attaches this process's MPI_COMM_WORLD rank to dring's device and communication errors
// (dring/core/error.hpp, set_error_rank). Not collective; the runtime calls it wherever it starts
// (the dring program, select_runtime), and it is harmless to call again.
void attach_error_rank();

// Collective: true on every rank when every rank passed the same `text` (hash compared).
bool all_ranks_equal(MPI_Comm comm, const std::string& text, int* first_different_rank);

// Collective: rank `root`'s string on every rank.
std::string broadcast_string(MPI_Comm comm, std::string text, int root);

}  // namespace dring
