// fault_guard.hpp — the `dring` program's last line of defence while a C library parses a file.
//
// HDF5 (1.10.8, Debian 12) can crash on a corrupt file: a NULL read in a corrupt local heap, found
// by tests/fuzz (docs/failure-modes.md, "Fuzzing"). dring cannot fix the library, but its promise
// is one clear line and no core dump. While a FileFaultGuard lives, SIGSEGV and SIGBUS end the
// process at once with "dring: error: FILE: ..." and exit code 1 (mpirun then ends the job). Only
// the program installs it, around its first look at an input file: a library must not take over
// its host's signal handlers, and dring's own code has no other reason to fault.
#pragma once

#include <signal.h>

#include <string>

namespace dring::cli {

class FileFaultGuard {
 public:
  explicit FileFaultGuard(const std::string& path);
  ~FileFaultGuard();
  FileFaultGuard(const FileFaultGuard&) = delete;
  FileFaultGuard& operator=(const FileFaultGuard&) = delete;

 private:
  struct sigaction old_segv_ {};
  struct sigaction old_bus_ {};
};

}  // namespace dring::cli
