#!/usr/bin/env bash
# tests/multinode/test_multinode.sh — dring across nodes for real, on this machine: builds a
# cluster of 3 nodes from network namespaces (tests/multinode/cluster.sh: own hostname and address
# on a private bridge, one slurmd each), then
#   1. dring_node_probe under mpirun with a host file, 2+1+1 ranks: each node's ranks see their own
#      node (local size 2, 1, 1) and take threads accordingly;
#   2. a 4-rank `dring run` under mpirun with a host file across node1 and node2 (2 + 2, TCP);
#   3. `sbatch -N 2 --ntasks-per-node=2 slurm/cpu-multinode.sbatch` on the same problem (ranks
#      started by srun --mpi=pmix; the probe runs first in the same job);
#   4. the same problem on 4 ranks of one node (launch/dring-mpirun.sh, root namespace);
# and checks that out and lse (the --output files, with their attributes) are bit-identical to the
# one-node run (h5diff, no tolerance), as are the --check errors, exchange steps and per-rank bytes
# of the reports. Everything (jobs, daemons, namespaces, bridge) is removed on exit, also on failure.
# Exit 77 (CTest SKIP) when not root, or network namespaces, SLURM, munge, h5diff or Debian's python3
# with numpy, h5py and matplotlib are missing. Usage: tests/multinode/test_multinode.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: test_multinode.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/multinode
started=$SECONDS
if ! /usr/bin/python3 -c 'import numpy, h5py, matplotlib' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks numpy, h5py or matplotlib (launch/install-deps.sh python3-matplotlib python3-h5py)"
  exit 77
fi
command -v h5diff >/dev/null 2>&1 || { echo "SKIP: h5diff not found (hdf5-tools)"; exit 77; }
dring=$build/bin/dring
probe=$build/bin/dring_node_probe
for b in "$dring" "$probe"; do
  [ -x "$b" ] || { echo "FAIL: $b is not built (cmake --build $build)"; exit 1; }
done

work=$(mktemp -d)
chmod 755 "$work"  # munged refuses a socket under a folder others cannot enter
cluster=$work/cluster
cleanup() {
  "$here/cluster.sh" stop "$cluster" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP  # through the EXIT trap
rc=0
"$here/cluster.sh" start "$cluster" --nodes 3 >"$work/start.out" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  cat "$work/start.out"
  [ "$rc" -eq 77 ] && exit 77
  echo "FAIL: the cluster did not start"
  exit 1
fi
# shellcheck source=/dev/null
. "$cluster/env.sh"
. "$cluster/cluster.vars"
echo "cluster: 3 nodes node1..node3 = $subnet.1-3 on bridge dmn${id}br ($subnet.254: slurmctld, munged)" \
  "($((SECONDS - started)) s)"
on=("$here/cluster.sh" exec "$cluster")  # on NODE CMD...: run CMD on NODE
# Every step has a time limit, and all of them together end 180 s after the start, so that the
# cleanup (at most about a minute) always runs before CTest's TIMEOUT ends this script.
deadline=$((started + 180))
limit() { local left=$((deadline - SECONDS)); echo $((left < 5 ? 5 : left < $1 ? left : $1)); }
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# The problem: GQA, causal, a local pair and a dilated pair whose segments span ranks; S = 2050 is
# not a multiple of the 4 ranks.
problem=(--seq 2050 --heads 2 --kv-heads 1 --head-dim 32 --causal --segments 256,1024 --dilations 1,4
         --batch 1 --repeat 1 --check --quiet)

echo "--- 1. node-local placement under mpirun --hostfile, 2 + 1 + 1 ranks"
printf 'node1 slots=2\nnode2 slots=1\nnode3 slots=1\n' >"$work/hosts-211"
if timeout "$(limit 60)" "${on[@]}" node1 mpirun -q --hostfile "$work/hosts-211" -np 4 --bind-to none "$probe" \
    >"$work/probe-211.txt" 2>"$work/probe-211.err"; then
  /usr/bin/python3 "$here/check_multinode.py" placement "$work/probe-211.txt" node1=2,node2=1,node3=1 ||
    fail "placement of 2 + 1 + 1 ranks (above)"
else
  fail "mpirun across 3 nodes: $(tail -3 "$work/probe-211.err")"
fi

echo "--- 2. dring run, 4 ranks, mpirun --hostfile across node1 and node2 (2 + 2)"
printf 'node1 slots=2\nnode2 slots=2\n' >"$work/hosts-22"
timeout "$(limit 60)" "${on[@]}" node1 mpirun -q --hostfile "$work/hosts-22" -np 4 --bind-to none "$probe" \
  >"$work/probe-22.txt" 2>"$work/probe-22.err" || fail "probe over 2 + 2: $(tail -3 "$work/probe-22.err")"
/usr/bin/python3 "$here/check_multinode.py" placement "$work/probe-22.txt" node1=2,node2=2 ||
  fail "placement of 2 + 2 ranks under mpirun (above)"
timeout "$(limit 90)" "${on[@]}" node1 mpirun -q --hostfile "$work/hosts-22" -np 4 --bind-to none "$dring" run "${problem[@]}" \
  --output "$work/mpirun.h5" --json "$work/mpirun.json" >"$work/mpirun.out" 2>&1 ||
  fail "dring run across 2 nodes under mpirun: $(tail -3 "$work/mpirun.out")"
echo "    ($((SECONDS - started)) s)"

echo "--- 3. sbatch -N 2 --ntasks-per-node=2 slurm/cpu-multinode.sbatch"
sweep=(--ranks 4 --configs mn --config mn=256,1024:1,4 --modes strong --strong-seq mn=2050
       --heads 2 --kv-heads 1 --head-dim 32 --causal --repeat 1 --idle-probe-s 0 --no-ceiling --no-plots
       --dring-args "--output $work/sbatch.h5")
job_rc=0
job=$(cd "$work" && DRING_ROOT=$root DRING_BIN=$dring DRING_RESULTS_ROOT=$work/results \
  DRING_JOB_SETUP="srun --mpi=pmix $probe >$work/probe-srun.txt" \
  timeout "$(limit 150)" sbatch --parsable --wait -N 2 --ntasks-per-node=2 --time=00:05:00 -o "$work/job-%j.out" \
  "$root/slurm/cpu-multinode.sbatch" "${sweep[@]}") || job_rc=$?
job=${job%%;*}
echo "    job $job finished with exit status $job_rc ($((SECONDS - started)) s)"
[ "$job_rc" -eq 0 ] || fail "sbatch --wait: job $job exited $job_rc"
if [ -d "$work/results/$job" ]; then
  /usr/bin/python3 "$here/check_multinode.py" job "$work/results/$job" 'node[1-2]' 4 || fail "job $job (above)"
else
  fail "job $job left no results folder"
fi
/usr/bin/python3 "$here/check_multinode.py" placement "$work/probe-srun.txt" node1=2,node2=2 ||
  fail "placement of 2 + 2 ranks under srun (above)"

echo "--- 4. the same problem on 4 ranks of one node"
DRING_BIN=$dring timeout "$(limit 90)" "$root/launch/dring-mpirun.sh" 4 run "${problem[@]}" \
  --output "$work/one.h5" --json "$work/one.json" >"$work/one.out" 2>&1 ||
  fail "dring run on one node: $(tail -3 "$work/one.out")"
timeout "$(limit 60)" mpirun -q -np 4 --oversubscribe --bind-to none "$probe" >"$work/probe-one.txt" 2>&1 ||
  fail "probe on one node: $(tail -3 "$work/probe-one.txt")"
/usr/bin/python3 "$here/check_multinode.py" placement "$work/probe-one.txt" "$(hostname)=4" ||
  fail "placement of 4 ranks on one node (above)"

echo "--- one node against two: out, lse and the file's attributes (h5diff, exact); the reports"
for run in mpirun sbatch; do
  if [ -f "$work/one.h5" ] && [ -f "$work/$run.h5" ]; then
    h5diff "$work/one.h5" "$work/$run.h5" >"$work/h5diff-$run.txt" 2>&1 &&
      echo "  $run.h5: identical to one.h5" || fail "$run.h5 differs from one.h5: $(tail -3 "$work/h5diff-$run.txt")"
  else
    fail "no $run.h5 or one.h5 to compare"
  fi
done
reports=("$work/one.json" "$work/mpirun.json" "$work/results/$job/raw/mn-k4-s2050.json")
if [ -f "${reports[0]}" ] && [ -f "${reports[1]}" ] && [ -f "${reports[2]}" ]; then
  /usr/bin/python3 "$here/check_multinode.py" reports "${reports[@]}" || fail "the reports (above)"
else
  fail "missing reports: ${reports[*]}"
fi

if [ "$failures" -ne 0 ]; then
  echo "--- job log"; tail -30 "$work"/job-*.out 2>/dev/null || true
  echo "--- slurmd logs"; tail -n 5 "$cluster"/log/slurmd-node*.log 2>/dev/null || true
  exit 1
fi
echo "PASS test_multinode (job $job; $((SECONDS - started)) s before cleanup)"
