#!/usr/bin/env bash
# Installs the Debian 12 packages dring needs to build and test, skipping those already present.
# Usage: launch/install-deps.sh [extra-package ...]   (root, or a user with sudo)
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
packages=(
  build-essential cmake ninja-build pkg-config
  libopenmpi-dev openmpi-bin            # MPI
  libhdf5-openmpi-dev hdf5-tools        # parallel HDF5 (+ h5ls/h5diff used by the tests)
  libopenblas-openmp-dev                # CBLAS, OpenMP build (the kernel calls it from its own threads)
  libcli11-dev nlohmann-json3-dev       # command line, JSON reports
  libgtest-dev                          # tests
  "$@"
)
# oneDNN, the CPU kernels' GEMM engine (docs/benchmarks.md, "GEMM engine"); Debian builds it for
# amd64, elsewhere the kernels use OpenBLAS.
[ "$(dpkg --print-architecture)" = amd64 ] && packages+=(libdnnl-dev)
# With a CUDA toolkit, pip: launch/cudnn-frontend.sh downloads the cuDNN path's headers (a PyPI
# wheel; pip download only, nothing is installed into Debian's Python).
if command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then packages+=(python3-pip); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "dring: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "dring: missing packages and no root: run  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
