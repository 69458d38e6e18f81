#!/usr/bin/env bash
# slurm/job.sh — the body of every dring sbatch script (cpu, gpu, and their multi-node variants):
# runs launch/scaling.sh inside the allocation and leaves results/<job id>/ with scaling.csv,
# maxlen.csv, scaling.h5, report.md, the PNG plots and a copy of the job log (job.log).
# Ranks start with `srun --mpi=pmix` when that works in the allocation, else with mpirun.
# Arguments after the job kind go to launch/scaling.sh, after the kind's defaults (later wins).
# Environment: DRING_RESULTS_ROOT (default <checkout>/results), DRING_LAUNCHER (auto|srun|mpirun),
# DRING_SRUN_FLAGS (extra srun flags per point), DRING_JOB_SETUP (shell code run first, e.g.
# "module load openmpi"), DRING_BIN (the dring program). See docs/slurm.md.
# Usage (from an sbatch script): slurm/job.sh cpu|gpu|cpu-multinode|gpu-multinode [scaling.sh args]
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kind=${1:?usage: slurm/job.sh cpu|gpu|cpu-multinode|gpu-multinode [launch/scaling.sh arguments]}
shift
if [ -n "${DRING_JOB_SETUP:-}" ]; then
  eval "$DRING_JOB_SETUP"
fi

# Powers of two up to n: 1,2,4,...,n (n itself last when it is not a power of two).
powers_up_to() {
  local n=$1 k=1 out=""
  while [ "$k" -lt "$n" ]; do out+="$k,"; k=$((k * 2)); done
  echo "${out}${n}"
}

defaults=()
case "$kind" in
  cpu) ;;
  cpu-multinode)
    defaults=(--ranks "$(powers_up_to "${SLURM_NTASKS:-4}")" --strong-seq dense=8192,16384
              --strong-seq longnet=32768,65536,131072 --weak-tokens dense=4096 --weak-tokens longnet=16384
              --budget-mib 256 --maxlen-start 16384 --granularity 4096) ;;
  gpu | gpu-multinode)
    defaults=(--backend cuda --ranks "$(powers_up_to "${SLURM_NTASKS:-4}")" --heads 8 --head-dim 128
              --strong-seq dense=16384,65536 --strong-seq longnet=65536,262144,1048576
              --weak-tokens dense=16384 --weak-tokens longnet=262144
              --budget-mib 8192 --maxlen-start 262144 --granularity 65536) ;;
  *)
    echo "dring: error: unknown job kind '$kind' (cpu, gpu, cpu-multinode, gpu-multinode)" >&2
    exit 2 ;;
esac

id=${SLURM_JOB_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
out=${DRING_RESULTS_ROOT:-$root/results}/$id
mkdir -p "$out"
echo "dring: job ${SLURM_JOB_ID:-(not under SLURM)} ($kind) on ${SLURM_JOB_NODELIST:-$(hostname)}:" \
  "${SLURM_NNODES:-1} node(s), ${SLURM_CPUS_ON_NODE:-$(nproc)} CPUs on the first; results in $out"
rc=0
DRING_SCALING_VIA="sbatch slurm/$kind.sbatch${*:+ $*}" \
  "$root/launch/scaling.sh" --out "$out" --launcher "${DRING_LAUNCHER:-auto}" "${defaults[@]}" "$@" || rc=$?

# Keep the job log next to the results (as written so far; SLURM appends the last lines later).
if [ -n "${SLURM_JOB_ID:-}" ] && command -v scontrol >/dev/null 2>&1; then
  log=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *StdOut=//p' | head -1)
  [ -n "$log" ] && [ -f "$log" ] && cp "$log" "$out/job.log"
fi
echo "dring: job finished with exit status $rc; results in $out"
exit "$rc"
