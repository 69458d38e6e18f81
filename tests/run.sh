#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test this machine can run (CTest: labels cpu and
# mpi here; gpu tests skip themselves without a GPU). Extra arguments go to ctest, e.g. -L mpi.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/install-deps.sh" python3-torch python3-mpi4py python3-numpy python3-matplotlib python3-h5py slurm-wlm munge
"$root/launch/build.sh"
cd "$root/build"
ctest --output-on-failure -j "$(nproc)" "$@"
