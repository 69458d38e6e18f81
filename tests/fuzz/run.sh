#!/usr/bin/env bash
# tests/fuzz/run.sh — the libFuzzer targets of tests/fuzz, each for a bounded time, in a build of
# their own (build-fuzz/: clang, -DDRING_FUZZ=ON, CPU only, instrumented with ASan + UBSan).
# .ci/run runs it after the sanitizer suite. Each target starts from its seed corpus in
# corpus/<target>/ (read only: new inputs go to a scratch directory) and fails the script on any
# crash, sanitizer report, leak, timeout (-timeout per input) or memory blow-up (-rss_limit_mb);
# the input that did it is left in build-fuzz/fuzz-findings/<target>/ to replay with
#   build-fuzz/bin/dring_fuzz_<target> FILE
# clang's libFuzzer runtime is libclang-rt-dev on Debian 12 (only recommended by clang, so named);
# libomp-dev is clang's OpenMP; llvm brings llvm-symbolizer for readable stacks.
# Usage: tests/fuzz/run.sh [seconds per target, default 60]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-60}
build=$root/build-fuzz
"$root/launch/install-deps.sh" clang libclang-rt-dev libomp-dev llvm
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
  -DDRING_FUZZ=ON -DDRING_CUDA=OFF -DDRING_BUILD_BENCH=OFF -DDRING_BUILD_TESTS=OFF -DDRING_INSTALL=OFF >/dev/null
targets=(cli c_abi hdf5_input)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/dring_fuzz_}"

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0
export OMPI_MCA_mca_base_component_disable_dlclose=1
failed=()
for target in "${targets[@]}"; do
  scratch=$build/fuzz-corpus/$target findings=$build/fuzz-findings/$target
  rm -rf "$scratch" "$findings" && mkdir -p "$scratch" "$findings"
  asan=detect_leaks=1 malloc_limit_mb=2048
  if [ "$target" = hdf5_input ]; then
    # MPI's leaks are suppressed by library name, which needs full stacks (slow; only where MPI
    # runs). HDF5 sizes some buffers from lengths stored in the file and asks malloc for terabytes
    # on a corrupt one; it handles NULL cleanly, so here C malloc may return NULL and one
    # allocation may exceed 2 GiB (C++ new still aborts on failure, and RSS stays capped).
    asan=$asan:fast_unwind_on_malloc=0:allocator_may_return_null=1 malloc_limit_mb=1048576
  fi
  echo "fuzz: $target for ${seconds} s"
  if ! ASAN_OPTIONS=$asan "$build/bin/dring_fuzz_$target" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=$malloc_limit_mb -print_final_stats=1 -artifact_prefix="$findings/" \
      "$scratch" "$root/tests/fuzz/corpus/$target" >"$build/fuzz-$target.log" 2>&1; then
    tail -n 60 "$build/fuzz-$target.log"
    failed+=("$target")
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$build/fuzz-$target.log" | tr '\n' ' '
  echo
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $build/fuzz-findings/)" >&2
  exit 1
fi
echo "fuzz: no crash, leak or timeout in ${#targets[@]} targets"
