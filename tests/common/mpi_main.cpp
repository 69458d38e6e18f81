// mpi_main.cpp — GoogleTest main for the suites run under mpirun (see mpi_gtest.hpp).
#include "mpi_gtest.hpp"

int main(int argc, char** argv) { return dring::test::run_mpi_gtests(argc, argv); }
