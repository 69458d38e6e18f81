#!/usr/bin/env bash
# Every bad input of `dring run` gets one clear line on stderr naming the problem, a non-zero exit
# code that is not a signal, no hang, and leaves an existing --output file byte-for-byte untouched.
# Usage: tests/e2e/bad_inputs.sh BUILD_DIR
set -u
build=$(cd "$1" && pwd)
dring="$build/bin/dring"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
"$build/bin/dring_make_bad_inputs" "$work" || { echo "FAIL: could not write the bad inputs"; exit 1; }
echo "precious bytes that must survive" >"$work/existing.h5"
before=$(sha256sum <"$work/existing.h5")
failures=0

# expect NAME RANKS "EXPECTED STDERR SUBSTRING" ARGS...  (runs mpirun -np RANKS dring ARGS)
# Cases run $parallel at a time (each mostly waits for mpirun to start and stop); each gets its own
# copy of the existing output file, so a case that touched it is named. Verdicts print in order.
parallel=4
names=()
check() {
  local name=$1 rc=$2 want=$3 err="$work/$name.err" existing="$work/$name.d/existing.h5"
  local lines
  lines=$(grep -c . "$err")
  if [ "$rc" -eq 124 ]; then echo "hung (killed after 120 s)"
  elif [ "$rc" -eq 0 ]; then echo "exit code 0"
  elif [ "$rc" -ge 128 ]; then echo "ended by a signal (exit $rc)"
  elif [ "$lines" -ne 1 ]; then echo "$lines lines on stderr, expected one"
  elif ! grep -q "^dring: error: .*$want" "$err"; then echo "stderr does not say '$want'"
  elif [ "$(sha256sum <"$existing")" != "$before" ]; then echo "--output file was modified"
  elif ls "$existing".tmp-* >/dev/null 2>&1; then echo "a temporary output file was left behind"
  fi
}
expect() {
  local name=$1 ranks=$2 want=$3
  shift 3
  mkdir "$work/$name.d" && cp "$work/existing.h5" "$work/$name.d/existing.h5"
  local args=() a
  for a in "$@"; do
    [ "$a" = "$work/existing.h5" ] && a="$work/$name.d/existing.h5"
    args+=("$a")
  done
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  (
    timeout 120 mpirun -q -np "$ranks" "$dring" "${args[@]}" >"$work/$name.out" 2>"$work/$name.err"
    rc=$?
    echo "$rc" >"$work/$name.rc"
    check "$name" "$rc" "$want" >"$work/$name.problem"
  ) &
  names+=("$name")
}
report() {
  wait
  local name rc
  for name in "${names[@]}"; do
    rc=$(cat "$work/$name.rc")
    if [ -s "$work/$name.problem" ]; then
      echo "FAIL $name: $(cat "$work/$name.problem")"; sed 's/^/    /' "$work/$name.err"; failures=$((failures + 1))
    else
      echo "ok   $name (exit $rc): $(cat "$work/$name.err")"
    fi
  done
}

out=(--output "$work/existing.h5")
expect unknown_flag 2 "not expected: --frobnicate" run --frobnicate "${out[@]}"
expect bad_number 2 "--seq = 12x" run --seq 12x "${out[@]}"
expect bad_list_number 2 "--segments" run --segments 8,x "${out[@]}"
expect huge_seq 2 "the problem is too large: --batch 1 x --seq 4611686018427387904" run --seq 4611686018427387904 "${out[@]}"
expect huge_dilation 2 "dilation rate 9223372036854775800 (pair 1) is too large" run --seq 64 --segments 9223372036854775800 --dilations 9223372036854775800 "${out[@]}"
expect missing_input 2 "cannot read $work/nope.h5: No such file" run --input "$work/nope.h5" "${out[@]}"
expect not_hdf5 2 "not an HDF5 file" run --input "$work/not_hdf5.h5" "${out[@]}"
# A file on which HDF5 itself crashes (found by tests/fuzz): one line from the program's guard.
crashes_hdf5="$(cd "$(dirname "$0")/.." && pwd)/fuzz/hdf5-faults/null_read_in_local_heap.h5"
expect hdf5_crash_np1 1 "the HDF5 library crashed reading this file" run --input "$crashes_hdf5" "${out[@]}"
expect hdf5_crash_np2 2 "the HDF5 library crashed reading this file" run --input "$crashes_hdf5" "${out[@]}"
# A compact dataset whose header holds fewer bytes than its shape needs (found by tests/fuzz:
# HDF5 1.10.8 would read past the header); also a seed of the fuzz corpus.
short_compact="$(cd "$(dirname "$0")/.." && pwd)/fuzz/corpus/hdf5_input/k_compact_storage_short.h5"
expect compact_storage_short 2 "dataset 'k' is corrupt: its compact storage holds 8 bytes, its shape needs 24 values" run --input "$short_compact" "${out[@]}"
expect missing_dataset 2 "dataset 'v' is missing" run --input "$work/missing_v.h5" "${out[@]}"
expect wrong_rank 2 "dataset 'q' has shape \[1, 20, 32\], expected 4 dimensions" run --input "$work/rank3_q.h5" "${out[@]}"
expect kv_inconsistent 2 "dataset 'k' has shape \[1, 21, 2, 8\], inconsistent with q" run --input "$work/k_seq_mismatch.h5" "${out[@]}"
expect v_inconsistent 2 "dataset 'v' has shape \[1, 20, 1, 8\], expected the shape of k" run --input "$work/v_shape_mismatch.h5" "${out[@]}"
expect heads_file 2 "q has 6 heads, not a multiple of the 4 kv heads" run --input "$work/heads_not_multiple.h5" "${out[@]}"
expect heads_flags 2 "heads (6) must be a multiple of kv heads (4)" run --seq 32 --heads 6 --kv-heads 4 "${out[@]}"
expect segment_not_multiple 2 "segment length 6 (pair 1) is not a multiple of its dilation rate 4" run --seq 32 --segments 6 --dilations 4 "${out[@]}"
DRING_MAX_CPU_ISA=avx9 expect max_cpu_isa 2 "DRING_MAX_CPU_ISA=avx9 is not one of amx, avx512, avx2, baseline" run --seq 32 "${out[@]}"
expect segment_zero 2 "segment length 0 (pair 2) must be at least 1" run --seq 32 --segments 8,0 --dilations 1,1 "${out[@]}"
expect dilation_negative 2 "dilation rate -2 (pair 1) must be at least 1" run --seq 32 --segments 8 --dilations -2 "${out[@]}"
expect list_lengths 2 "--segments has 2 values but --dilations has 3" run --seq 32 --segments 8,16 --dilations 1,2,4 "${out[@]}"
expect too_few_tokens_flags 4 "sequence length 3 is shorter than the number of ranks 4" run --seq 3 --heads 1 "${out[@]}"
expect too_few_tokens_file 4 "sequence length 3 is shorter than the number of ranks 4" run --input "$work/too_short.h5" "${out[@]}"
expect unsupported_dtype_flag 2 "--dtype fp16 is not supported by the cpu backend" run --seq 32 --dtype fp16 "${out[@]}"
expect unsupported_dtype_file 2 "dataset 'q' has unsupported dtype integer32" run --input "$work/int_q.h5" "${out[@]}"
expect nan_input 2 "k\[0, 17, 1, 5\] is NaN" run --input "$work/nan_k.h5" "${out[@]}"
expect inf_input 2 "q\[0, 11, 2, 3\] is Inf" run --input "$work/inf_q.h5" "${out[@]}"
expect output_is_input 2 "--output must not be the --input file" run --input "$work/good.h5" --output "$work/good.h5"
expect no_cuda 2 "--backend cuda" run --seq 32 --backend cuda "${out[@]}"
# Documents, windows and layouts (issue 10).
expect doc_lens_sum 2 "--doc-lens sums to 30, not to the sequence length 32 (--seq)" run --seq 32 --doc-lens 10,20 "${out[@]}"
expect doc_lens_sum_file 2 "--doc-lens sums to 16, not to the sequence length 20 of $work/good.h5" run --input "$work/good.h5" --doc-lens 8,8 "${out[@]}"
expect doc_len_zero 2 "--doc-lens: document 2 has length 0" run --seq 32 --doc-lens 16,0,16 "${out[@]}"
expect doc_len_negative 2 "--doc-lens: document 2 has length -4" run --seq 32 --doc-lens=20,-4,16 "${out[@]}"
expect window_zero 2 "--window must be at least 1 (got 0)" run --seq 32 --window 0 "${out[@]}"
expect window_negative 2 "--window must be at least 1 (got -3)" run --seq 32 --window=-3 "${out[@]}"
expect layout_unknown 2 "--layout: unknown layout 'diagonal'" run --seq 32 --layout diagonal "${out[@]}"
expect layout_stripe_zero 2 "the stripe size after 'striped:' must be a whole number >= 1" run --seq 32 --layout striped:0 "${out[@]}"
expect zigzag_too_short 4 "the zigzag layout cuts the sequence into 2 x 4 ranks = 8 chunks; sequence length 7" run --seq 7 --heads 1 --layout zigzag "${out[@]}"
expect striped_too_short 3 "stripes of 4 rows over 3 ranks needs more than 8 rows" run --seq 8 --heads 1 --layout striped:4 "${out[@]}"
expect cu_not_increasing 2 "dataset 'cu_seqlens' is not increasing: cu_seqlens\[1\] = 9, cu_seqlens\[2\] = 9" run --input "$work/cu_not_increasing.h5" "${out[@]}"
expect cu_not_from_zero 2 "dataset 'cu_seqlens' must start at 0 (it starts at 2)" run --input "$work/cu_not_from_zero.h5" "${out[@]}"
expect cu_not_to_seq 2 "dataset 'cu_seqlens' ends at 19, not at the sequence length 20" run --input "$work/cu_not_to_seq.h5" "${out[@]}"
expect cu_2d 2 "dataset 'cu_seqlens' has shape \[2, 2\], expected 1 dimension" run --input "$work/cu_2d.h5" "${out[@]}"
expect cu_float 2 "dataset 'cu_seqlens' must hold integers" run --input "$work/cu_float.h5" "${out[@]}"
expect cu_disagrees 2 "--doc-lens 7,13 disagrees with the cu_seqlens of $work/cu_int32.h5 (documents 7,1,12)" run --input "$work/cu_int32.h5" --doc-lens 7,13 "${out[@]}"
expect comm_timeout_zero 2 "--comm-timeout must be a positive number of seconds (got 0)" run --seq 32 --comm-timeout 0 "${out[@]}"
DRING_COMM_TIMEOUT_S=soon expect comm_timeout_env 2 "DRING_COMM_TIMEOUT_S='soon' is not a positive number of seconds" run --seq 32 "${out[@]}"

report

# Ranks started with different arguments (MPMD launch): an error, not a hang.
err="$work/mismatch.err"
timeout 120 mpirun -q -np 1 "$dring" run --seq 32 "${out[@]}" : -np 1 "$dring" run --seq 33 "${out[@]}" >/dev/null 2>"$err"
rc=$?
if [ "$rc" -ge 1 ] && [ "$rc" -lt 124 ] && grep -q "^dring: error: ranks were started with different arguments" "$err" &&
   [ "$(grep -c . "$err")" -eq 1 ] && [ "$(sha256sum <"$work/existing.h5")" = "$before" ]; then
  echo "ok   different_arguments (exit $rc): $(cat "$err")"
else
  echo "FAIL different_arguments (exit $rc)"; sed 's/^/    /' "$err"; failures=$((failures + 1))
fi

# Sanity: the good file does run, and replaces the existing output only on success.
if timeout 120 mpirun -q -np 2 "$dring" run --input "$work/good.h5" --output "$work/existing.h5" --quiet &&
   [ "$(sha256sum <"$work/existing.h5")" != "$before" ] && h5ls "$work/existing.h5" | grep -q '^out'; then
  echo "ok   good_input_replaces_output"
else
  echo "FAIL good_input_replaces_output"; failures=$((failures + 1))
fi

[ "$failures" -eq 0 ] && echo "all bad-input cases passed" || echo "$failures bad-input case(s) failed"
exit $((failures > 0))
