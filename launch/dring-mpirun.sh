#!/usr/bin/env bash
# Runs build/bin/dring on RANKS MPI ranks of this machine with the flags a workstation needs:
# --oversubscribe when there are more ranks than cores, consent to run as root when root, no core
# binding (dring sizes its threads from the cores a rank may use), and launch/env.sh.
# Usage: launch/dring-mpirun.sh RANKS run --seq 65536 --segments 2048,8192 --dilations 1,2 --check
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
root=$(cd "$(dirname "$0")/.." && pwd)
ranks=${1:-}
[[ $ranks =~ ^[1-9][0-9]*$ ]] || { echo "dring-mpirun: RANKS must be a positive integer, got '$ranks' (--help)" >&2; exit 2; }
shift
dring=${DRING_BIN:-$root/build/bin/dring}
flags=(-q -np "$ranks" --bind-to none)
[ "$ranks" -gt "$(nproc)" ] && flags+=(--oversubscribe)
. "$root/launch/env.sh"
exec mpirun "${flags[@]}" "$dring" "$@"
