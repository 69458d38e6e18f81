#!/usr/bin/env bash
# Documents, windows and layouts through the CLI and files (issue 10):
#  1. `dring run --check` (forward and, where marked, backward against the float64 reference) on
#     1-4 ranks over a representative subset of layout x documents x window x causal x dilation;
#  2. synthetic inputs are generated per global position: the same run under every layout gives
#     the same out, lse, dq, dk, dv, and a layout's run from --seed equals its run from the file
#     of that seed bit for bit;
#  3. an HDF5 round trip with cu_seqlens (dring generate --doc-lens; an int32 cu_seqlens too):
#     every layout's output file holds rows in natural order, equals the contiguous one, passes
#     `dring verify --rows 0`, and records layout, window and cu_seqlens as attributes; a
#     cu_seqlens of more than 64 KiB (10,000 documents) is stored and read back.
# Usage: tests/e2e/layouts.sh BUILD_DIR
set -u
build=$(cd "$1" && pwd)
dring="$build/bin/dring"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
run() { timeout 300 mpirun -q -np "$@"; }

# 1. name | ranks | flags (every run: --head-dim 8 --check; --heads 2 unless given)
cases=(
  "zigzag_causal_dense_backward|4|--seq 67 --layout zigzag --causal --backward"
  "striped_causal_dilated|3|--seq 61 --layout striped --causal --segments 16,61 --dilations 2,1"
  "striped2_docs_window_backward|2|--seq 53 --layout striped:2 --doc-lens 1,20,32 --window 7 --backward"
  "zigzag_docs_window_causal_dilated|3|--seq 59 --layout zigzag --doc-lens 30,1,28 --window 9 --causal --segments 8,32 --dilations 2,4 --backward"
  "contiguous_docs_causal_gqa|4|--seq 64 --heads 4 --kv-heads 2 --doc-lens 5,40,19 --causal --backward"
  "contiguous_window_wider_than_seq|2|--seq 40 --window 100 --causal"
  "zigzag_window1_one_rank|1|--seq 30 --layout zigzag --window 1 --causal"
  "striped3_window_causal_backward|4|--seq 70 --layout striped:3 --window 12 --causal --backward"
  "zigzag_docs_longer_than_shards|2|--seq 45 --layout zigzag --doc-lens 2,41,2 --segments 8,45 --dilations 2,1"
)
for entry in "${cases[@]}"; do
  IFS='|' read -r name ranks flags <<<"$entry"
  [[ "$flags" == *--heads* ]] || flags="--heads 2 $flags"
  # shellcheck disable=SC2086
  if run "$ranks" "$dring" run --head-dim 8 $flags --check --check-rows 64 --quiet >"$work/$name.log" 2>&1; then
    echo "ok   check $name ($ranks ranks)"
  else
    fail "check $name ($ranks ranks)"; sed 's/^/    /' "$work/$name.log" | head -5
  fi
done

layouts="contiguous zigzag striped striped:3"
same() {  # same WHAT A B DATASETS...: h5diff to float32 rounding; says whether bit for bit
  local what=$1 a=$2 b=$3 ds bitwise=yes
  shift 3
  for ds in "$@"; do
    if ! h5diff "$a" "$b" "/$ds" "/$ds" >/dev/null 2>&1; then
      bitwise=no
      h5diff -d 2e-6 "$a" "$b" "/$ds" "/$ds" >"$work/diff" 2>&1 || { fail "$what: /$ds differs"; head -3 "$work/diff"; }
    fi
  done
  echo "ok   $what (bit for bit: $bitwise)"
}

# 2. One problem, every layout, synthetic inputs; and the file of the same seed.
problem=(--seq 61 --heads 4 --kv-heads 2 --head-dim 8 --seed 5)
config=(--doc-lens 13,1,30,17 --window 11 --causal --segments 8,32 --dilations 2,4 --backward)
"$dring" generate "${problem[@]}" --doc-lens 13,1,30,17 --dout --output "$work/seed5.h5" || fail "generate seed 5"
for layout in $layouts; do
  tag=${layout/:/_}
  run 3 "$dring" run "${problem[@]}" "${config[@]}" --layout "$layout" --output "$work/syn_$tag.h5" --quiet ||
    fail "synthetic run, $layout"
  run 3 "$dring" run --input "$work/seed5.h5" "${config[@]}" --layout "$layout" --output "$work/file_$tag.h5" --quiet ||
    fail "file run, $layout"
  for ds in out lse dq dk dv; do
    h5diff "$work/syn_$tag.h5" "$work/file_$tag.h5" "/$ds" "/$ds" >/dev/null 2>&1 ||
      fail "$layout: /$ds from --seed differs from the run on the seed's file"
  done
  [ "$layout" = contiguous ] || same "$layout output equals contiguous" "$work/syn_contiguous.h5" "$work/syn_$tag.h5" out lse dq dk dv
done

# 3. Round trip with cu_seqlens: verify, attributes, int32 offsets, many documents.
for layout in $layouts; do
  tag=${layout/:/_}
  run 2 "$dring" verify --input "$work/seed5.h5" --output "$work/file_$tag.h5" --rows 0 --tol 2e-6 >"$work/verify.log" 2>&1 ||
    { fail "verify --rows 0, $layout"; sed 's/^/    /' "$work/verify.log"; }
done
attrs=$(h5dump -A "$work/file_zigzag.h5")
grep -A5 '"cu_seqlens"' <<<"$attrs" | grep -q "0, 13, 14, 44, 61" || fail "attribute cu_seqlens is not 0, 13, 14, 44, 61"
grep -A10 '"layout"' <<<"$attrs" | grep -q '"zigzag"' || fail "attribute layout is not zigzag"
grep -A5 '"window"' <<<"$attrs" | grep -q "(0): 11" || fail "attribute window is not 11"
echo "ok   attributes cu_seqlens, layout, window"
"$build/bin/dring_make_bad_inputs" "$work" || fail "make the cu_seqlens inputs"
for layout in contiguous striped; do
  run 2 "$dring" run --input "$work/cu_int32.h5" --window 3 --causal --layout "$layout" --output "$work/cu32_$layout.h5" --quiet &&
    run 2 "$dring" verify --input "$work/cu_int32.h5" --output "$work/cu32_$layout.h5" --rows 0 --tol 2e-6 >/dev/null ||
    fail "int32 cu_seqlens, $layout"
done
same "int32 cu_seqlens: striped equals contiguous" "$work/cu32_contiguous.h5" "$work/cu32_striped.h5" out lse
docs=$(printf '1,%.0s' $(seq 10000)); docs=${docs%,}
"$dring" generate --seq 10000 --heads 1 --head-dim 4 --doc-lens "$docs" --output "$work/many.h5" &&
  run 2 "$dring" run --input "$work/many.h5" --layout zigzag --output "$work/many_out.h5" --quiet &&
  run 2 "$dring" verify --input "$work/many.h5" --output "$work/many_out.h5" --rows 300 --tol 2e-6 >/dev/null &&
  h5dump -A "$work/many_out.h5" | grep -A3 '"cu_seqlens"' | grep -q "( 10001 )" &&
  echo "ok   10,000 documents: cu_seqlens of 80 KiB as an attribute" || fail "10,000 documents"

[ "$failures" -eq 0 ] && echo "all layout, document and window checks passed" || echo "$failures check(s) failed"
exit $((failures > 0))
