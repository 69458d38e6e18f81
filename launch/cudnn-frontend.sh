#!/usr/bin/env bash
# Puts the cudnn-frontend headers (header-only C++, cmake/DringCudnn.cmake) under
# <build>/_deps/cudnn-frontend/include when a CUDA build with cuDNN could use them and they are
# nowhere else: downloads the pinned nvidia-cudnn-frontend wheel from PyPI (pip download, no
# install: Debian's Python stays untouched) and unpacks only include/. Offline, without pip or
# without CUDA/cuDNN it says so in one line and does nothing; configure then builds without the
# cuDNN path (DRING_CUDNN=AUTO). On a machine without network, CUDNN_FRONTEND_WHEEL=<file.whl>
# names a wheel carried there (any platform's: the headers are the same) to unpack instead
# (launch/deps-bundle.sh download puts one in the bundle; its env.sh exports the variable).
# Nothing to do when $CUDNN_FRONTEND_PATH or the system already has the headers.
# Usage: launch/cudnn-frontend.sh <build-dir>
#        launch/cudnn-frontend.sh --download DIR   only pip download the pinned wheel into DIR (what
#                                                   launch/deps-bundle.sh download carries); exit 1 on failure
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
version=1.32.0
cuda=${CUDA_HOME:-/usr/local/cuda}
note() { echo "dring: cudnn-frontend: $*" >&2; }
# download DIR: the pinned wheel, no dependencies, no install; pip's output in DIR/.pip.log on failure.
download() {
  python3 -m pip download -q --retries 1 --timeout 15 --no-deps --only-binary=:all: -d "$1" \
    "nvidia-cudnn-frontend==$version" >"$1/.pip.log" 2>&1 && rm -f "$1/.pip.log"
}
if [ "${1:-}" = --download ]; then
  [ $# -eq 2 ] || { echo "usage: $0 --download DIR" >&2; exit 2; }
  mkdir -p "$2"
  ls "$2"/nvidia_cudnn_frontend-"$version"-*.whl >/dev/null 2>&1 && exit 0  # there already
  download "$2" || { note "pip download nvidia-cudnn-frontend==$version failed: $(tail -1 "$2/.pip.log")"; exit 1; }
  exit 0
fi
[ $# -eq 1 ] || { echo "usage: $0 BUILD-DIR | --download DIR" >&2; exit 2; }
deps="$1/_deps/cudnn-frontend"

[ -f "$deps/include/cudnn_frontend.h" ] && exit 0
for dir in "${CUDNN_FRONTEND_PATH:-}" "${CUDNN_FRONTEND_PATH:-}/include"; do
  [ -n "${CUDNN_FRONTEND_PATH:-}" ] && [ -f "$dir/cudnn_frontend.h" ] && exit 0  # given already
done
command -v nvcc >/dev/null 2>&1 || [ -x "$cuda/bin/nvcc" ] || exit 0  # no CUDA: nothing to do
# cuDNN where cmake/DringCudnn.cmake looks: $CUDNN_PATH, the toolkit, the system, and the
# nvidia-cudnn-cu* wheel (site-packages/nvidia/cudnn, as on machines whose cuDNN came with PyTorch).
pip_cudnn=$(timeout 30 python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2>/dev/null || true)
have_cudnn=""
for dir in "${CUDNN_PATH:-/nonexistent}/include" "${pip_cudnn:-/nonexistent}/include" "$cuda/include" /usr/include \
    /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu; do
  [ -f "$dir/cudnn.h" ] && have_cudnn=1
  [ -f "$dir/cudnn_frontend.h" ] && exit 0  # installed already
done
[ -n "$have_cudnn" ] || { note "no cudnn.h in \$CUDNN_PATH, next to CUDA or in python's nvidia.cudnn; skipped"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${CUDNN_FRONTEND_WHEEL:-}" ]; then
  [ -f "$CUDNN_FRONTEND_WHEEL" ] || { note "CUDNN_FRONTEND_WHEEL=$CUDNN_FRONTEND_WHEEL is not a file; skipped"; exit 0; }
  cp "$CUDNN_FRONTEND_WHEEL" "$tmp/"
elif ! python3 -m pip --version >/dev/null 2>&1; then
  note "python3 -m pip not available; skipped"
  exit 0
elif ! download "$tmp"; then
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
