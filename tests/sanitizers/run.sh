#!/usr/bin/env bash
# tests/sanitizers/run.sh — the CPU and MPI suites under AddressSanitizer + UndefinedBehaviorSanitizer
# (with LeakSanitizer), in a build of their own (build-sanitize/: CPU backend, RelWithDebInfo).
# .ci/run runs it after tests/run.sh. Any sanitizer report fails the test that produced it (ASan
# and UBSan abort the process; LeakSanitizer makes it exit non-zero).
#
# Open MPI, its plugins and the libraries under it allocate memory once per process and never free
# it: tests/sanitizers/lsan.supp suppresses leaks whose allocation stack passes through them. For
# the stacks to name those libraries, Open MPI must keep its plugins loaded at exit
# (OMPI_MCA_mca_base_component_disable_dlclose=1) and LeakSanitizer must unwind without frame
# pointers (fast_unwind_on_malloc=0) in the suites that start MPI. ThreadSanitizer is not run:
# Debian's libgomp is not built with it, so every OpenMP barrier is a false report;
# docs/failure-modes.md says what covers the kernels' threads instead.
# -O1: from scratch on 2 cores this build took 265 s against 405 s at -O2, and the suites 40-50 s
# more (docs/failure-modes.md, "Sanitizers").
# Usage: tests/sanitizers/run.sh [extra ctest arguments]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-sanitize
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DDRING_CUDA=OFF -DDRING_BUILD_BENCH=OFF -DDRING_INSTALL=OFF \
  -DDRING_UNIT_EACH_TEST=ON "-DDRING_RING_TEST_FILTER=Cpu*:-*Memory*" \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  >/dev/null
cmake --build "$build" -j "$(nproc)" --target dring dring_unit_tests dring_ring_tests dring_c_abi_test \
  dring_make_bad_inputs
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0
export OMPI_MCA_mca_base_component_disable_dlclose=1
cd "$build"
status=0
# The unit suite starts no MPI, so nothing in it needs suppressing and LeakSanitizer may record
# allocation stacks by frame pointers: 166 s on one core, against 446 s with full unwinding (the
# plan tests' brute-force oracles allocate constantly; 2026-12-03). Each of its tests is a ctest
# entry of its own (DRING_UNIT_EACH_TEST), so the cores share them out as they come free.
# --no-tests=error: an empty list (a binary that listed nothing) fails instead of passing.
ASAN_OPTIONS=$ASAN_OPTIONS:fast_unwind_on_malloc=1 ctest --output-on-failure --no-tests=error -j "$(nproc)" \
  -R '^unit\.' "$@" || status=1
# The suites that start MPI need full stacks for the suppressions. The ring suite runs on 3 ranks
# only: its tests compare every run with a one-rank run on MPI_COMM_SELF, so the one-rank path runs
# there too, while messages, rounds and merges need peers (the 1-rank entry added about 80 s of
# instrumented time and no code, 2026-12-02). The per-rank memory tests (peaks of 8192- and
# 16384-row problems: 51 of its 148 s, 2026-12-03) are left out; their code paths run in the
# other tests at smaller sizes.
ASAN_OPTIONS=$ASAN_OPTIONS:fast_unwind_on_malloc=0 ctest --output-on-failure -j "$(nproc)" \
  -R '^(ring_np3|c_abi_np[13]|faults_.*)$' "$@" || status=1
exit $status
