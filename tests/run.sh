#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test this machine can run (CTest: labels cpu and
# mpi here; gpu tests skip themselves without a GPU). Extra arguments go to ctest, e.g. -L mpi.
# Usage: tests/run.sh [ctest arguments]
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/install-deps.sh" python3-torch python3-mpi4py python3-numpy python3-matplotlib python3-h5py slurm-wlm munge
"$root/launch/build.sh"
cd "$root/build"
ctest --output-on-failure -j "$(nproc)" "$@"
