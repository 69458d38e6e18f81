// dring/collective.hpp — making failure a collective decision.
//
// A check that only some ranks fail (a NaN in one shard, a file one rank cannot open) must not
// leave the others waiting in the next collective. `agree` runs a step on every rank, then every
// rank learns whether any failed; if so, all throw the same CollectiveError carrying the message
// of the lowest failing rank, and the program can end cleanly on all ranks at once.
//
// The agreement is itself a wait on every peer, so it has a deadline (dring/comm/deadline.hpp):
// `timeout_s` when positive, else the process default. A rank that waits past it throws a plain
// Error(kCommError) (not agreed: the job must end, the program aborts it).
//
// A step given to `agree` must hold no collective call that a failure could make one rank skip
// while the others enter it (a failed rank would sit in the agreement while its peers sit in the
// collective): agree on each collective call separately, with its errors captured, not thrown
// half-way.
#pragma once

#include <mpi.h>

#include <exception>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include "dring/comm/transport.hpp"
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
void agree_on(MPI_Comm comm, const std::optional<Error>& local, double timeout_s = 0.0);

// The same over a transport's own collectives, for contexts without MPI (NCCL by unique id): every
// rank learns the lowest failing rank and its status; that rank, and any other that failed, throws
// its own message, the others a message naming it. The transport's deadline bounds the wait.
void agree_on(comm::Transport& transport, const std::optional<Error>& local);
// Collective over a transport: true on every rank when every rank passed the same `text`.
bool all_ranks_equal(comm::Transport& transport, const std::string& text);

// Collective: runs `step` on this rank and agrees on the outcome. Any exception of the step is
// agreed on: a dring::Error keeps its status, std::bad_alloc is kOutOfMemory, anything else
// kInternal.
template <class Step>
void agree(MPI_Comm comm, double timeout_s, Step&& step) {
  std::optional<Error> local;
  try {
    std::forward<Step>(step)();
  } catch (const CollectiveError&) {
    throw;  // already agreed
  } catch (const Error& e) {
    local = e;
  } catch (const std::bad_alloc&) {
    local = Error(Status::kOutOfMemory, "out of memory on " + error_rank_text());
  } catch (const std::exception& e) {
    local = Error(Status::kInternal, std::string("internal error on ") + error_rank_text() + ": " + e.what());
  }
  agree_on(comm, local, timeout_s);
}
template <class Step>
void agree(MPI_Comm comm, Step&& step) {
  agree(comm, 0.0, std::forward<Step>(step));
}

// Attaches this process's MPI_COMM_WORLD rank to dring's device and communication errors
// (dring/core/error.hpp, set_error_rank). Not collective; the runtime calls it wherever it starts
// (the dring program, select_runtime), and it is harmless to call again.
void attach_error_rank();

// Collective: true on every rank when every rank passed the same `text` (hash compared).
bool all_ranks_equal(MPI_Comm comm, const std::string& text, int* first_different_rank, double timeout_s = 0.0);

// Collective: rank `root`'s string on every rank.
std::string broadcast_string(MPI_Comm comm, std::string text, int root, double timeout_s = 0.0);

}  // namespace dring
