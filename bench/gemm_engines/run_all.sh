#!/bin/bash
# Runs every engine built by build.sh, one after another, pinned to core 0 (and 0,1 for two
# threads); CSV lines to results.csv, what each engine reports about itself to info.log.
# Usage: bench/gemm_engines/run_all.sh   (after bench/gemm_engines/build.sh)
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
cd "$(dirname "$0")"
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS OMP_NUM_THREADS BLIS_ARCH_TYPE MKL_NUM_THREADS
: > results.csv; : > info.log
run() {  # label env... -- binary
  local label=$1; shift
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local bin=$1
  echo "== $label" >> info.log
  env "${envs[@]}" taskset -c 0 ./$bin 1 sq,kern,small 2>>info.log | sed "s/^[^,]*,/$label,/" >> results.csv
  env "${envs[@]}" taskset -c 0,1 ./$bin 2 sq,omp 2>>info.log | sed "s/^[^,]*,/$label,/" >> results.csv
}
run openblas_default -- bench_openblas
run openblas_SkylakeX OPENBLAS_CORETYPE=SkylakeX -- bench_openblas
run openblas_Haswell OPENBLAS_CORETYPE=Haswell -- bench_openblas
run blis_auto -- bench_blis
run blis_skx BLIS_ARCH_TYPE=0 -- bench_blis
[ -x bench_mkl ] && run mkl -- bench_mkl
run onednn_sgemm -- bench_onednn_sgemm
run onednn_matmul -- bench_onednn_matmul
run libxsmm -- bench_xsmm
echo done >> info.log
