#!/usr/bin/env bash
# DRING_MAX_CPU_ISA holds dring's own kernels to an older CPU's instruction sets: under each cap
# the run report names the tiles that ran, and forward and backward still match float64 (--check),
# at 1 and 2 ranks, fp32 and bf16. Caps above what this CPU has change nothing and are skipped.
# Usage: tests/e2e/cpu_isa_cap.sh BUILD_DIR
set -u
build=$(cd "$1" && pwd)
dring="$build/bin/dring"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
flags=(/proc/cpuinfo)
has() { grep -qw "$1" "${flags[@]}"; }
failures=0

# [SEQ=n HEADS=h HEAD_DIM=d] check NAME CAP RANKS "EXPECTED kernels: LINE SUBSTRING" ARGS...
# (default 301 rows, 2 heads, head_dim 64)
check() {
  local name=$1 cap=$2 ranks=$3 want=$4
  shift 4
  local log="$work/$name.log"
  if ! DRING_MAX_CPU_ISA=$cap timeout 300 mpirun -q -np "$ranks" "$dring" run --seq "${SEQ:-301}" --heads "${HEADS:-2}" \
      --head-dim "${HEAD_DIM:-64}" --check --backward "$@" >"$log" 2>&1; then
    echo "FAIL $name: exit code not 0"; sed 's/^/    /' "$log"; failures=$((failures + 1))
  elif ! grep -q "^kernels: .*tiles $want" "$log"; then
    echo "FAIL $name: the report does not say 'tiles $want'"; sed 's/^/    /' "$log"; failures=$((failures + 1))
  else
    echo "ok   $name: $(grep '^kernels:' "$log")"
  fi
}

check baseline_causal baseline 2 "forward sgemm, backward sgemm" --causal
check baseline_bf16 baseline 1 "forward onednn bf16\|forward widened to fp32" --dtype bf16 --segments 64,128 --dilations 1,2
if has avx2 && has fma; then
  for ranks in 2 3 4; do
    check "avx2_causal_np$ranks" avx2 "$ranks" "forward fused avx2, backward fused avx2" --causal
  done
  check avx2_dilated avx2 1 "forward fused avx2, backward fused avx2" --segments 64,128 --dilations 1,2
  # head_dim 128 takes the fused AVX2 tiles too, 256 the sgemm tiles.
  HEAD_DIM=128 check avx2_d128 avx2 2 "forward fused avx2, backward fused avx2" --causal --segments 64,128 --dilations 1,2
  HEAD_DIM=256 check avx2_d256 avx2 1 "forward sgemm, backward sgemm" --causal
  check avx2_dilated_bf16 avx2 2 "forward onednn bf16, backward onednn bf16" --dtype bf16 --segments 16,64,128 --dilations 1,2,4
else
  echo "skip avx2: this CPU has no AVX2+FMA"
fi
if has avx512f; then
  # What an AVX-512 CPU without AMX runs (Skylake-X to Zen 5): the fused tiles on every block.
  for ranks in 2 3 4; do
    check "avx512_causal_np$ranks" avx512 "$ranks" "forward fused avx512, backward fused avx512" --causal
  done
  SEQ=4096 HEADS=1 check avx512_dense avx512 1 "forward fused avx512, backward fused avx512" --threads 1
  check avx512_dilated_bf16 avx512 2 "forward onednn bf16, backward onednn bf16" --dtype bf16 --segments 16,64,128 \
    --dilations 1,2,4
else
  echo "skip avx512: this CPU has no AVX-512"
fi
if has avx512f && has amx_bf16 && has amx_tile; then
  # 301 rows stay under the fp32 AMX tiles' gates: the fused tiles run them, the report says both.
  check amx_causal amx 2 \
    "forward amx fp32 (3 bf16 parts) where items reach 256 rows x 1024 keys, else fused avx512, backward amx fp32 (3 bf16 parts) where rows see 512 keys, else fused avx512" \
    --causal
  # 4096 rows, one head, one thread: items of 512 rows seeing 4096 keys and a block whose rows see
  # 4096 keys, which the AMX tiles take, forward and backward (--check --backward: against float64).
  SEQ=4096 HEADS=1 check amx_dense amx 1 "forward amx fp32 (3 bf16 parts) where" --threads 1
  # 2, 3 and 4 ranks, causal: blocks of 1024 to 2048 rows through the ring (3 divides nothing), on
  # the AMX backward in fp32 and bf16.
  for ranks in 2 3 4; do
    SEQ=4096 HEADS=2 check "amx_ring_np$ranks" amx "$ranks" \
      "forward amx fp32 (3 bf16 parts) where items reach 256 rows x 1024 keys, else fused avx512, backward amx fp32 (3 bf16 parts) where rows see 512 keys" \
      --causal
  done
  for ranks in 2 3; do
    SEQ=4096 HEADS=2 check "amx_ring_bf16_np$ranks" amx "$ranks" "forward amx bf16, backward amx bf16" \
      --causal --dtype bf16
  done
else
  echo "skip amx: this CPU has no AMX-BF16"
fi
[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all passed"
