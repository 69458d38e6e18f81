#!/usr/bin/env bash
# Configures and builds dring into build/ (Release, warnings as errors). Extra arguments go to cmake.
# Usage: launch/build.sh [cmake arguments, e.g. -DDRING_CUDA=OFF]
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/cudnn-frontend.sh" "$root/build"  # the cuDNN path's headers, where CUDA and cuDNN are here
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDRING_WERROR=ON "$@" >/dev/null
cmake --build "$root/build" -j "$(nproc)"
