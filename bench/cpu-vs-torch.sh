#!/usr/bin/env bash
# dring against PyTorch on the same CPU attention problems, in one run (issue 9): checks the PyTorch
# anchors against float64, then times them, dring (this tree's build/bin/dring) and the sgemm
# ceiling, prints the table and writes JSON (bench/torch_cpu_anchor.py does the work). When no
# torch >= 2 is importable it installs one into a virtualenv first; when that fails it prints one
# "skipped: ..." line and exits 0.
#
# Usage: bench/cpu-vs-torch.sh [--venv DIR] [--json FILE] [--dring BIN] [--quick] [other torch_cpu_anchor.py flags]
#   defaults: --venv build/torch-venv  --json build/bench/cpu_vs_torch.json  --dring build/bin/dring
#
# Why a plain `pip install torch`: only PyPI is reachable, and PyPI's torch for Linux x86_64 is the
# CUDA build. Measured with torch 2.15.0 (2026-12): the wheel is 539 MB and its dependencies
# (cuda-toolkit libraries, cuDNN, NCCL, NVSHMEM, cuSPARSELt, triton) bring the download to about
# 3.1 GB, 5.4 GB installed, 7 minutes on a 2-core machine. `pip install --no-deps torch` saves
# most of that but does not import: torch/_C links libtorch_cuda.so, which needs libcudart,
# libcublas, libcufile, libnccl, libcudnn, ... at load time ("libcufile.so.0: cannot open shared
# object file"), and installing just those is most of the download again, pinned by hand. The
# CPU-only wheels are published only on PyTorch's own index, which is not reachable. So the full
# install, once per virtualenv, without pip's cache (no second copy in ~/.cache/pip).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/build/torch-venv
json=$root/build/bench/cpu_vs_torch.json
dring=$root/build/bin/dring
args=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help)  # this header and torch_cpu_anchor.py's usage; nothing is installed
      sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
      echo; echo "The flags of bench/torch_cpu_anchor.py (passed through):"
      sed -n '/^Usage:/,/^"""/{/^Usage:/d;/^"""/d;p}' "$root/bench/torch_cpu_anchor.py"
      exit 0 ;;
    --venv) venv=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --dring) dring=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

has_torch() {
  "$1" -c 'import sys, numpy, torch; sys.exit(int(torch.__version__.split(".")[0]) < 2)' >/dev/null 2>&1
}

python=python3
if ! has_torch "$python"; then
  python=$venv/bin/python
  if ! has_torch "$python"; then
    echo "cpu-vs-torch: installing torch and numpy from PyPI into $venv (about 3 GB to download)" >&2
    if ! { [ -x "$python" ] || python3 -m venv "$venv" >&2; }; then
      echo "skipped: cannot create a virtualenv at $venv (python3 -m venv failed; on Debian: apt-get install python3-venv)"
      exit 0
    fi
    if ! "$python" -m pip install --no-cache-dir --progress-bar off -q torch numpy >&2 || ! has_torch "$python"; then
      echo "skipped: could not install an importable torch >= 2 with numpy into $venv from PyPI"
      exit 0
    fi
  fi
fi

echo "cpu-vs-torch: $python, dring $dring"
exec "$python" "$root/bench/torch_cpu_anchor.py" --dring "$dring" --json "$json" ${args[@]+"${args[@]}"}
