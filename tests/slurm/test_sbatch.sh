#!/usr/bin/env bash
# tests/slurm/test_sbatch.sh — slurm/cpu.sbatch for real: starts a single-node SLURM
# (tests/slurm/local_slurm.sh: munged, slurmctld, slurmd), submits the script with a tiny sweep,
# waits for it (sbatch --wait), checks the job's exit status, that its ranks were started by srun
# --mpi=pmix, and the CSV, HDF5, plots and report it left in results/<job id>/
# (check_results.py); then stops the daemons. Exit 77 (CTest SKIP) when not root or SLURM, munge or
# Debian's python3 with h5py and matplotlib are missing. Usage: tests/slurm/test_sbatch.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: test_sbatch.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! /usr/bin/python3 -c 'import numpy, h5py, matplotlib' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks numpy, h5py or matplotlib (launch/install-deps.sh python3-matplotlib python3-h5py)"
  exit 77
fi
work=$(mktemp -d)
chmod 755 "$work"  # munged refuses a socket under a folder others cannot enter
cluster=$work/cluster
cleanup() {
  "$root/tests/slurm/local_slurm.sh" stop "$cluster" || true
  rm -rf "$work"
}
trap cleanup EXIT
rc=0
"$root/tests/slurm/local_slurm.sh" start "$cluster" >"$work/start.out" || rc=$?
[ "$rc" -eq 77 ] && exit 77
[ "$rc" -ne 0 ] && { echo "FAIL: local SLURM did not start"; exit 1; }
export SLURM_CONF=$cluster/slurm.conf PATH=$PATH:/usr/sbin
export DRING_ROOT=$root DRING_BIN=$build/bin/dring DRING_RESULTS_ROOT=$work/results

cd "$work"
# A 4 MiB budget: 2048 tokens (the search's start) must fit it at one rank; the fp32 AMX tile's
# scratch (docs/architecture.md) took that point from 2.70 to 3.02 MiB.
tiny=(--ranks 1,2,4 --heads 2 --head-dim 32 --repeat 1 --idle-probe-s 0
      --strong-seq dense=2048,4096 --strong-seq longnet=4096 --weak-tokens dense=1024 --weak-tokens longnet=2048
      --budget-mib 4 --maxlen-start 2048 --granularity 512)
job_rc=0
job=$(timeout 600 sbatch --parsable --wait --time=00:10:00 "$root/slurm/cpu.sbatch" "${tiny[@]}") || job_rc=$?
job=${job%%;*}
echo "job $job finished with exit status $job_rc"
log=$work/dring-scaling-$job.out
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
[ "$job_rc" -eq 0 ] || fail "sbatch --wait: the job exited $job_rc"
[ -f "$log" ] || fail "no job log $log"
out=$work/results/$job
if [ -d "$out" ]; then
  /usr/bin/python3 "$root/tests/slurm/check_results.py" "$out" --ranks 1,2,4 --maxlen --min-reduction-pct 60 ||
    fail "results of job $job (above)"
  grep -q "launcher srun" "$out/report.md" || fail "the job's ranks were not started by srun --mpi=pmix"
  grep -q "srun --mpi=pmix -n 4" "$out/points.json" || fail "no 4-rank srun command in points.json"
  grep -q "SLURM job $job" "$out/report.md" || fail "report.md does not name the job"
  [ -f "$out/job.log" ] || fail "job.log was not copied into $out"
else
  fail "job $job left no results folder $out"
fi
if [ "$failures" -ne 0 ]; then
  echo "--- job log"; tail -30 "$log" 2>/dev/null || true
  echo "--- slurmd log"; tail -10 "$cluster/log/slurmd.log" 2>/dev/null || true
  exit 1
fi
echo "PASS test_sbatch (job $job)"
