// write_watchdog.hpp — a deadline for the `dring` program's collective file writes.
//
// Every wait for a peer in dring has a deadline, except one it cannot reach: inside HDF5's
// collective write, Open MPI's MPI-IO can leave ranks waiting for ever when the disk fills up
// during the write (seen with 3 ranks on a full tmpfs), or when a peer stops there. While a
// WriteWatchdog lives, a thread waits for its end; if `limit_s` passes first, it prints one line
// ("dring: rank R: error: WHAT did not finish within T s ..."), removes `remove_on_expiry` (the
// temporary output; the target file is never touched) and ends the process with exit code 1, and
// mpirun ends the job. Only the program uses it, around its output: a library must not end its
// host process.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace dring::cli {

class WriteWatchdog {
 public:
  WriteWatchdog(int rank, std::string what, double limit_s, std::string remove_on_expiry);
  ~WriteWatchdog();  // the write finished (or failed by itself): the watchdog stands down
  WriteWatchdog(const WriteWatchdog&) = delete;
  WriteWatchdog& operator=(const WriteWatchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  bool finished_ = false;
  std::thread thread_;
};

// The limit of a collective write of `bytes` in all: the wait-for-a-peer deadline plus the time
// the bytes take at a slow 20 MB/s, so a large output on a slow filesystem is never cut short.
double write_limit_s(double comm_timeout_s, double bytes);

}  // namespace dring::cli
