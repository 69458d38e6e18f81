#!/usr/bin/env bash
# Runs build/bin/dring on RANKS MPI ranks of this machine with the flags a workstation needs:
# --oversubscribe when there are more ranks than cores, consent to run as root when root, and no
# core binding (dring sizes its threads from the cores a rank may use).
# Usage: launch/dring-mpirun.sh RANKS run --seq 65536 --segments 2048,8192 --dilations 1,2 --check
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ranks=$1
shift
dring=${DRING_BIN:-$root/build/bin/dring}
flags=(-q -np "$ranks" --bind-to none)
[ "$ranks" -gt "$(nproc)" ] && flags+=(--oversubscribe)
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
exec mpirun "${flags[@]}" "$dring" "$@"
