#!/bin/bash
# The GEMM engine comparison behind docs/benchmarks.md, "GEMM engine": one binary per engine over
# the same bench.cpp (the CPU kernels' tile shapes, the square ceiling, tiny dilated blocks).
# Not part of the CMake build: it links engines dring does not need. Installs what it builds with:
#   apt-get install libopenblas-openmp-dev libblis-openmp-dev libdnnl-dev libxsmm-dev
#   python3 -m venv venv && venv/bin/pip install mkl mkl-include mkl-devel    (MKL, optional)
# Usage: bench/gemm_engines/build.sh && bench/gemm_engines/run_all.sh   (results.csv, info.log)
set -e
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
set -x
cd "$(dirname "$0")"
CXX="g++ -O2 -march=x86-64-v2 -std=c++20 -fopenmp"
V=$PWD/venv
OB=/usr/lib/x86_64-linux-gnu/openblas-openmp
BL=/usr/lib/x86_64-linux-gnu/blis-openmp
$CXX bench.cpp engine_cblas.cpp -I/usr/include/x86_64-linux-gnu/openblas-openmp -L$OB -Wl,-rpath,$OB -lopenblas -o bench_openblas
$CXX bench.cpp engine_cblas.cpp -DENG_BLIS -I/usr/include/x86_64-linux-gnu/blis-openmp -L$BL -Wl,-rpath,$BL -lblis -o bench_blis
if [ -d "$V/lib" ]; then
  $CXX bench.cpp engine_cblas.cpp -DENG_MKL -I$V/include -L$V/lib -Wl,-rpath,$V/lib -Wl,--no-as-needed -l:libmkl_gf_lp64.so.3 -l:libmkl_gnu_thread.so.3 -l:libmkl_core.so.3 -lgomp -lpthread -lm -ldl -o bench_mkl
fi
$CXX bench.cpp engine_dnnl.cpp -ldnnl -o bench_onednn_sgemm
$CXX bench.cpp engine_dnnl.cpp -DUSE_MATMUL -ldnnl -o bench_onednn_matmul
$CXX bench.cpp engine_xsmm.cpp /usr/lib/libxsmm.a -I/usr/include/x86_64-linux-gnu/openblas-openmp -L$OB -Wl,-rpath,$OB -lopenblas -lpthread -lrt -ldl -lm -o bench_xsmm
