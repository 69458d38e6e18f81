// write_watchdog.cpp — see write_watchdog.hpp.
#include "write_watchdog.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace dring::cli {

WriteWatchdog::WriteWatchdog(int rank, std::string what, double limit_s, std::string remove_on_expiry) {
  thread_ = std::thread([this, rank, what = std::move(what), limit_s, remove = std::move(remove_on_expiry)] {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto limit = std::chrono::duration<double>(limit_s);
    if (done_.wait_for(lock, limit, [this] { return finished_; })) return;
    std::fprintf(stderr,
                 "dring: rank %d: error: %s did not finish within %.0f s (the disk filled up during the write, or a "
                 "peer stopped); the job ends, the temporary file is removed, the target file is untouched\n",
                 rank, what.c_str(), limit_s);
    std::fflush(stderr);
    if (!remove.empty()) unlink(remove.c_str());
    std::_Exit(1);
  });
}

WriteWatchdog::~WriteWatchdog() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
  }
  done_.notify_all();
  thread_.join();
}

double write_limit_s(double comm_timeout_s, double bytes) { return comm_timeout_s + bytes / 20e6; }

}  // namespace dring::cli
