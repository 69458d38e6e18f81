// mpi_gtest.hpp — running GoogleTest suites under mpirun: MPI initialised around the run, only
// rank 0 prints the full report (other ranks print their failures, tagged with the rank), and the
// exit code is the worst over ranks. Every test must make the same collective calls on every rank;
// skips are decided collectively.
#pragma once

#include <functional>

namespace dring::test {

// Runs every test; `before(world_rank)` runs once MPI is up, before the tests (collective setup).
int run_mpi_gtests(int argc, char** argv, const std::function<void(int)>& before = {});

}  // namespace dring::test
