#!/usr/bin/env bash
# Puts the cudnn-frontend headers (header-only C++, cmake/DringCudnn.cmake) under
# <build>/_deps/cudnn-frontend/include when a CUDA build with cuDNN could use them and they are
# nowhere else: downloads the pinned nvidia-cudnn-frontend wheel from PyPI (pip download, no
# install: Debian's Python stays untouched) and unpacks only include/. Offline, without pip or
# without CUDA/cuDNN it says so in one line and does nothing; configure then builds without the
# cuDNN path (DRING_CUDNN=AUTO). On a machine without network, CUDNN_FRONTEND_WHEEL=<file.whl>
# names a wheel carried there (any platform's: the headers are the same) to unpack instead.
# Usage: launch/cudnn-frontend.sh <build-dir>
set -euo pipefail
version=1.32.0
deps="$1/_deps/cudnn-frontend"
cuda=${CUDA_HOME:-/usr/local/cuda}
note() { echo "dring: cudnn-frontend: $*" >&2; }

[ -f "$deps/include/cudnn_frontend.h" ] && exit 0
command -v nvcc >/dev/null 2>&1 || [ -x "$cuda/bin/nvcc" ] || exit 0  # no CUDA: nothing to do
have_cudnn=""
for dir in "$cuda/include" /usr/include /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu; do
  [ -f "$dir/cudnn.h" ] && have_cudnn=1
  [ -f "$dir/cudnn_frontend.h" ] && exit 0  # installed already
done
[ -n "$have_cudnn" ] || { note "no cudnn.h next to CUDA; skipped"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${CUDNN_FRONTEND_WHEEL:-}" ]; then
  [ -f "$CUDNN_FRONTEND_WHEEL" ] || { note "CUDNN_FRONTEND_WHEEL=$CUDNN_FRONTEND_WHEEL is not a file; skipped"; exit 0; }
  cp "$CUDNN_FRONTEND_WHEEL" "$tmp/"
elif ! python3 -m pip --version >/dev/null 2>&1; then
  note "python3 -m pip not available; skipped"
  exit 0
elif ! python3 -m pip download -q --retries 1 --timeout 15 --no-deps --only-binary=:all: -d "$tmp" \
    "nvidia-cudnn-frontend==$version" >"$tmp/log" 2>&1; then
  note "could not download nvidia-cudnn-frontend $version (offline?); the cuDNN path is not built"
  exit 0
fi
mkdir -p "$deps"
python3 - "$tmp" "$deps" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])
PY
note "headers of $(basename "$(ls "$tmp"/*.whl)") in $deps/include"
