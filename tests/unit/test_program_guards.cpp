// test_program_guards.cpp — the `dring` program's last-resort guards (launch/): a fault while a
// library reads an input file ends the process with one line and exit code 1, and a collective
// write that outlives its limit ends it likewise, removing the temporary file. Death tests: each
// case runs in a child process.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "fault_guard.hpp"
#include "write_watchdog.hpp"

namespace dring::cli {
namespace {

// The kernel tests of this binary leave OpenMP threads behind: re-run the binary for each death
// test instead of forking this process.
class ProgramGuards : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

extern "C" void exit_seven(int) { _exit(7); }

TEST_F(ProgramGuards, AFaultWhileReadingAFileIsOneLineAndExitOne) {
  EXPECT_EXIT(
      {
        const FileFaultGuard guard("input.h5");
        std::raise(SIGSEGV);
      },
      testing::ExitedWithCode(1), "^dring: error: input.h5: the HDF5 library crashed reading this file");
}

TEST_F(ProgramGuards, TheGuardRestoresTheHandlerItFound) {
  EXPECT_EXIT(
      {
        std::signal(SIGSEGV, exit_seven);  // whatever the process had before (a sanitizer's, say)
        { const FileFaultGuard guard("input.h5"); }
        std::raise(SIGSEGV);
      },
      testing::ExitedWithCode(7), "");
}

TEST_F(ProgramGuards, AWriteThatOutlivesItsLimitEndsTheProcessAndRemovesTheTemporary) {
  const std::filesystem::path temp = std::filesystem::temp_directory_path() / "dring-watchdog-test.tmp-1";
  std::ofstream(temp) << "half written";
  ASSERT_TRUE(std::filesystem::exists(temp));
  EXPECT_EXIT(
      {
        const WriteWatchdog watchdog(3, "the collective write of --output out.h5", 0.2, temp.string());
        std::this_thread::sleep_for(std::chrono::seconds(30));  // a write stuck in MPI-IO
      },
      testing::ExitedWithCode(1), "^dring: rank 3: error: the collective write of --output out.h5 did not finish");
  EXPECT_FALSE(std::filesystem::exists(temp)) << "the temporary output was left behind";
}

TEST_F(ProgramGuards, AWriteThatFinishesInTimeStandsTheWatchdogDown) {
  const auto t0 = std::chrono::steady_clock::now();
  { const WriteWatchdog watchdog(0, "a write", 600.0, ""); }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_DOUBLE_EQ(write_limit_s(600.0, 2e9), 700.0);
}

}  // namespace
}  // namespace dring::cli
