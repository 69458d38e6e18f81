// fuzz_util.hpp — what every dring fuzz target accepts as a clean outcome.
//
// dring answers bad input with a dring::Error that names the problem (the program prints it as
// one line and exits non-zero; the C ABI returns its status). That is the only failure a target
// accepts: an Error that reports an internal error (a broken invariant of dring, DRING_ASSERT),
// an empty message, or any other exception is a finding, and so is every sanitizer report.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dring/core/error.hpp"

namespace dring::fuzz {

[[noreturn]] inline void finding(const char* what) {
  std::fprintf(stderr, "dring fuzz: %s\n", what);
  std::abort();
}

// Runs `step`; returns true when it succeeded, false when it failed cleanly. Anything else aborts
// (exceptions other than dring::Error escape and end the process, which libFuzzer reports).
template <class Step>
bool run_clean(Step&& step) {
  try {
    step();
    return true;
  } catch (const Error& e) {
    if (e.status() == Status::kInternal) finding(e.what());
    if (std::strlen(e.what()) == 0) finding("a dring::Error without a message");
    return false;
  }
}

}  // namespace dring::fuzz
