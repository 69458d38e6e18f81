// ring_main.cpp — GoogleTest main of the ring suites (run under mpirun, see mpi_gtest.hpp): decides
// once, collectively, which backend cases this machine can run (ring_harness.hpp).
#include "mpi_gtest.hpp"
#include "ring_harness.hpp"

int main(int argc, char** argv) {
  return dring::test::run_mpi_gtests(argc, argv, [](int) { dring::ring_test::init_ring_harness(); });
}
