#!/usr/bin/env bash
# HDF5 round trip through the CLI: `dring generate` writes inputs, `mpirun -np K dring run --input
# --output` for K = 1..4 writes out and lse (and dq, dk, dv for the --backward cases), and
#  - `dring verify --rows 0` holds every row of every output to the float64 definition;
#  - every K's output equals the one-rank output to float32 rounding (h5diff);
#  - synthetic inputs from --seed give exactly the output of the same inputs read from the file.
# Sequence lengths divide nothing (101, 97); configs: dense, multi-pair dilated, causal, GQA.
# Usage: tests/e2e/roundtrip.sh BUILD_DIR
set -u
build=$(cd "$1" && pwd)
dring="$build/bin/dring"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Cases run three at a time (each mostly waits for mpirun); each writes its own log, printed in order.
parallel=3
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# name | generate flags | run flags
cases=(
  "dense|--seq 101 --heads 2 --head-dim 16|"
  "dilated|--seq 101 --batch 2 --heads 4 --head-dim 8|--segments 8,24,64,128 --dilations 1,2,4,8"
  "dilated_causal|--seq 97 --heads 4 --head-dim 12 --dtype fp64|--segments 16,48,200 --dilations 1,3,4 --causal"
  "gqa_causal|--seq 101 --heads 6 --kv-heads 2 --head-dim 8|--segments 20,60 --dilations 2,4 --causal --scale 0.3"
  "dense_causal_gqa|--seq 97 --heads 4 --kv-heads 1 --head-dim 16|--causal"
  "backward_dilated|--seq 101 --batch 2 --heads 4 --kv-heads 2 --head-dim 8 --dout|--segments 8,24,128 --dilations 1,2,4 --backward"
  "backward_causal|--seq 97 --heads 3 --head-dim 16 --dout|--segments 32,97 --dilations 2,1 --causal --backward"
)
run_case() {  # name generate-flags run-flags; prints its log, exits with its failure count
  local name=$1 gen=$2 run=$3 failures=0 k ds datasets
  # shellcheck disable=SC2086
  if ! "$dring" generate $gen --seed 11 --output "$work/$name.in.h5"; then fail "$name: generate"; return 1; fi
  for k in 1 2 3 4; do
    # shellcheck disable=SC2086
    if ! timeout 300 mpirun -q -np "$k" "$dring" run --input "$work/$name.in.h5" $run --output "$work/$name.$k.h5" --quiet; then
      fail "$name: run on $k ranks"; continue
    fi
    if ! timeout 300 mpirun -q -np 2 "$dring" verify --input "$work/$name.in.h5" --output "$work/$name.$k.h5" --rows 0 --tol 2e-6; then
      fail "$name: $k-rank output differs from the float64 definition"
    fi
    if [ "$k" -gt 1 ]; then
      datasets="out lse"
      [[ "$run" == *--backward* ]] && datasets="out lse dq dk dv"
      for ds in $datasets; do
        if ! h5diff -d 2e-6 "$work/$name.1.h5" "$work/$name.$k.h5" "/$ds" "/$ds" >"$work/$name.diff" 2>&1; then
          fail "$name: /$ds on $k ranks differs from 1 rank"; head -5 "$work/$name.diff"
        fi
      done
    fi
  done
  # The same inputs from the seed: bit-identical output (same data, same rank count, same order).
  if [[ "$gen" != *fp64* ]]; then
    # shellcheck disable=SC2086
    timeout 300 mpirun -q -np 3 "$dring" run ${gen/--dout/} --seed 11 $run --output "$work/$name.seed.h5" --quiet ||
      fail "$name: synthetic run"
    for ds in $datasets; do
      h5diff "$work/$name.3.h5" "$work/$name.seed.h5" "/$ds" "/$ds" >/dev/null 2>&1 ||
        fail "$name: /$ds from --seed differs from the generated file"
    done
  fi
  echo "done $name"
  return "$failures"
}
names=()
for entry in "${cases[@]}"; do
  IFS='|' read -r name gen run <<<"$entry"
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  (run_case "$name" "$gen" "$run" >"$work/$name.log" 2>&1; echo $? >"$work/$name.failures") &
  names+=("$name")
done
wait
failures=0
for name in "${names[@]}"; do
  cat "$work/$name.log"
  failures=$((failures + $(cat "$work/$name.failures")))
done
[ "$failures" -eq 0 ] && echo "all round trips passed" || echo "$failures round-trip check(s) failed"
exit $((failures > 0))
