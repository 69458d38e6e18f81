// main.cpp — the `dring` program: MPI set-up, argument agreement, dispatch, and how it ends.
//
// This is the only place a process ends. A failure every rank knows about (bad input, found
// collectively) ends all ranks cleanly with one line from rank 0 and a non-zero exit code. A
// failure only one rank knows about is printed with its rank and takes the job down with
// MPI_Abort, so no rank is left waiting. Exit codes: 0 ok, 1 runtime or I/O error, 2 bad
// arguments or unsupported request, 3 --check or verify found a mismatch.
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>
#include <variant>

#include "cli.hpp"
#include "commands.hpp"
#include "dring/runtime/collective.hpp"
#include "dring/core/error.hpp"

namespace {

int exit_code_of(dring::Status status) {
  switch (status) {
    case dring::Status::kOk: return 0;
    case dring::Status::kInvalidArgument:
    case dring::Status::kUnsupported: return 2;
    case dring::Status::kCheckFailed: return 3;
    default: return 1;
  }
}

int dispatch(MPI_Comm comm, const dring::cli::Command& command) {
  return std::visit(
      [&](const auto& options) -> int {
        using T = std::decay_t<decltype(options)>;
        if constexpr (std::is_same_v<T, dring::cli::RunOptions>) return dring::cli::run_command(comm, options);
        if constexpr (std::is_same_v<T, dring::cli::GenerateOptions>) return dring::cli::generate_command(comm, options);
        if constexpr (std::is_same_v<T, dring::cli::VerifyOptions>) return dring::cli::verify_command(comm, options);
        if constexpr (std::is_same_v<T, dring::cli::SummarizeOptions>) return dring::cli::summarize_command(comm, options);
      },
      command);
}

[[noreturn]] void abort_job(int rank, const char* what) {
  std::fprintf(stderr, "dring: rank %d: error: %s\n", rank, what);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  dring::attach_error_rank();
  int code = 0;
  try {
    // Every rank must run the same command: a rank started differently would otherwise wait
    // forever in a collective the others never reach.
    std::string joined;
    for (int i = 1; i < argc; ++i) joined += std::string(argv[i]) + '\0';
    int differing = -1;
    if (!dring::all_ranks_equal(comm, joined, &differing)) {
      throw dring::CollectiveError(dring::Status::kInvalidArgument,
                                   "ranks were started with different arguments (rank " + std::to_string(differing) +
                                       "'s differ from rank 0's); start every rank with the same command line",
                                   differing);
    }
    if (provided < MPI_THREAD_FUNNELED) {
      throw dring::CollectiveError(dring::Status::kCommError,
                                   "the MPI library offers thread level " + std::to_string(provided) +
                                       ", below MPI_THREAD_FUNNELED, which dring's kernels need",
                                   -1);
    }
    const dring::cli::Parsed parsed = dring::cli::parse(argc, argv);
    if (parsed.exit_code >= 0) {
      // Every rank parsed the same line, so every rank stops here together.
      if (rank == 0 && !parsed.message.empty()) {
        std::fprintf(parsed.exit_code == 0 ? stdout : stderr, parsed.exit_code == 0 ? "%s" : "dring: error: %s\n",
                     parsed.message.c_str());
      }
      code = parsed.exit_code;
    } else {
      code = dispatch(comm, parsed.command);
    }
  } catch (const dring::CollectiveError& e) {
    if (rank == 0) std::fprintf(stderr, "dring: error: %s\n", e.what());
    code = exit_code_of(e.status());
  } catch (const dring::Error& e) {
    abort_job(rank, e.what());
  } catch (const std::exception& e) {
    abort_job(rank, e.what());
  }
  std::fflush(stdout);
  MPI_Finalize();
  return code;
}
