#!/usr/bin/env bash
# Configures and builds dring into build/ (Release, warnings as errors). Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/cudnn-frontend.sh" "$root/build"  # the cuDNN path's headers, where CUDA and cuDNN are here
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDRING_WERROR=ON "$@" >/dev/null
cmake --build "$root/build" -j "$(nproc)"
