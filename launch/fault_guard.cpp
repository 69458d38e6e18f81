// fault_guard.cpp — see fault_guard.hpp.
#include "fault_guard.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace dring::cli {

namespace {

// Written before the handler is installed: the handler may only call async-signal-safe functions.
char g_message[2048];
size_t g_length = 0;

extern "C" void on_fault(int) {
  const ssize_t ignored = write(STDERR_FILENO, g_message, g_length);
  (void)ignored;
  _exit(1);
}

}  // namespace

FileFaultGuard::FileFaultGuard(const std::string& path) {
  const std::string text = "dring: error: " + path +
                           ": the HDF5 library crashed reading this file (a corrupt or truncated HDF5 file?); "
                           "nothing was computed or written\n";
  g_length = std::min(text.size(), sizeof g_message);
  std::memcpy(g_message, text.data(), g_length);
  struct sigaction action {};
  action.sa_handler = on_fault;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &old_segv_);
  sigaction(SIGBUS, &action, &old_bus_);
}

FileFaultGuard::~FileFaultGuard() {
  sigaction(SIGSEGV, &old_segv_, nullptr);
  sigaction(SIGBUS, &old_bus_, nullptr);
}

}  // namespace dring::cli
