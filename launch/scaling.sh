#!/usr/bin/env bash
# Scaling sweeps of dring: per-rank memory, its reduction against 1 rank, throughput, weak scaling
# and the longest sequence within a per-rank memory budget, for `dense` and LongNet-style `longnet`
# on world sizes 1 2 4 (defaults; --help lists every option). Every point is one
# `dring run --check --json` under launch/dring-mpirun.sh, or `srun --mpi=pmix` inside a SLURM job.
# Results: results/<run id>/{scaling.csv, maxlen.csv, scaling.h5, report.md, *.png, raw/*.json}.
# The work is done by bench/scaling/sweep.py under Debian's python3 (numpy, h5py, matplotlib).
# Usage: launch/scaling.sh [--ranks 1,2,4] [--configs dense,longnet] [--modes strong,weak,maxlen] ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${DRING_PYTHON:-/usr/bin/python3}
if [ ! -x "$python" ]; then
  echo "scaling: error: $python not found; run launch/install-deps.sh python3-matplotlib python3-h5py python3-numpy" >&2
  exit 2
fi
if ! "$python" -c 'import numpy, h5py, matplotlib' 2>/dev/null; then
  echo "scaling: error: $python lacks numpy, h5py or matplotlib;" \
    "run launch/install-deps.sh python3-matplotlib python3-h5py python3-numpy" >&2
  exit 2
fi
exec "$python" "$root/bench/scaling/sweep.py" "$@"
