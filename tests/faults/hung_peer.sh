#!/usr/bin/env bash
# A hung peer ends the job: `dring run` on 3 ranks with a 5 s deadline; once the ranks exchange,
# rank 1 is stopped with SIGSTOP. The job must end within the timeout plus a few seconds, with a
# non-zero exit and an error line naming world rank 1, the pass, the step and the time waited.
# Usage: tests/faults/hung_peer.sh BUILD_DIR [flag|env]
#   flag (default): --comm-timeout 5, with DRING_COMM_TIMEOUT_S=3600 set (the flag wins)
#   env: DRING_COMM_TIMEOUT_S=5 and no flag
set -u
build=$(cd "$1" && pwd)
dring="$build/bin/dring"
work=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
timeout_s=5
allowed_s=$((timeout_s + 10))  # the deadline, MPI_Abort, and a loaded 2-core machine
victim_rank=1
mode=${2:-flag}
if [ "$mode" = env ]; then
  export DRING_COMM_TIMEOUT_S=$timeout_s
  limit=()
else
  export DRING_COMM_TIMEOUT_S=3600
  limit=(--comm-timeout "$timeout_s")
fi
mpirun_pid=""
victim=""

cleanup() {
  # Whatever is left of this job: wake the stopped rank so it can die, then kill it all.
  [ -n "$victim" ] && kill -CONT "$victim" 2>/dev/null
  if [ -n "$mpirun_pid" ] && kill -0 "$mpirun_pid" 2>/dev/null; then
    for child in $(pgrep -P "$mpirun_pid"); do kill -KILL "$child" 2>/dev/null; done
    kill -KILL "$mpirun_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; sed 's/^/    /' "$work/err" 2>/dev/null; exit 1; }

# Many passes of 64 exchange steps, each step's compute short in every build (a pass of S = 12288
# on 3 ranks: 0.3 s here, 5 s of CPU time under the sanitizers; the longest stretch, a rank's own
# block, a third of that): the rank stops mid-pass, while its peers still wait for its rows, and
# they reach the wait, and the deadline, well within the allowance. At S = 32768 a sanitizer
# build's own-block stretch alone took 15-20 s, and a stop that fell into it failed the test
# (2026-12-03).
# attempt STOP_TICKS: run the job, stop rank 1 once it has used STOP_TICKS of CPU time, judge.
# STOP_TICKS is past the set-up (a run of 96 rows took 1.3-1.5 s of CPU time under the
# sanitizers, exit included: the rank must not stop in MPI's start-up, where nothing has a
# deadline) and, in an optimised build, a dozen passes in. Returns 3 when the stop fell between two passes, where the peers wait
# in an allreduce that cannot say which rank is missing; the caller then tries a third of a
# second later.
attempt() {
  local stop_ticks=$1
  victim=""
  mpirun -q -np 3 "$dring" run --seq 12288 --heads 2 --head-dim 32 --threads 1 --repeat 1000 \
    "${limit[@]}" --quiet >"$work/out" 2>"$work/err" &
  mpirun_pid=$!

  # The rank's pid: the child of mpirun whose environment says OMPI_COMM_WORLD_RANK=1.
  for _ in $(seq 1 100); do
    for child in $(pgrep -P "$mpirun_pid"); do
      rank=$(tr '\0' '\n' <"/proc/$child/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
      [ "$rank" = "$victim_rank" ] && victim=$child
    done
    [ -n "$victim" ] && break
    sleep 0.1
  done
  [ -n "$victim" ] || fail "could not find the pid of rank $victim_rank among the children of mpirun"
  # A loaded machine only makes this take longer, not go wrong.
  for _ in $(seq 1 600); do
    cpu=$(awk '{print $14 + $15}' "/proc/$victim/stat" 2>/dev/null || echo 0)
    [ "$cpu" -ge "$stop_ticks" ] && break
    sleep 0.05
  done
  kill -0 "$mpirun_pid" 2>/dev/null || fail "the job ended before rank $victim_rank was stopped"
  kill -STOP "$victim"
  stopped=$(date +%s)

  # The job must end by itself within the allowance.
  while kill -0 "$mpirun_pid" 2>/dev/null && [ $(($(date +%s) - stopped)) -le "$allowed_s" ]; do sleep 0.2; done
  if kill -0 "$mpirun_pid" 2>/dev/null; then
    fail "the job was still running $allowed_s s after rank $victim_rank stopped (--comm-timeout $timeout_s)"
  fi
  wait "$mpirun_pid"
  rc=$?
  mpirun_pid=""
  kill -CONT "$victim" 2>/dev/null
  victim=""
  took=$(($(date +%s) - stopped))

  [ "$rc" -ne 0 ] || fail "exit code 0 after a rank stopped"
  want="step [0-9]+ of [0-9]+ .*world rank $victim_rank .*did not complete within $timeout_s s.*gave up after waiting"
  if ! grep -Eq "^dring: rank [0-9]+: error: (forward|backward) pass, $want" "$work/err"; then
    grep -Eq "^dring: rank [0-9]+: error: after the .* pass.*: allreduce .*did not complete within $timeout_s s" "$work/err" &&
      return 3
    fail "no error line names world rank $victim_rank, the step and the time waited"
  fi
  echo "ok ($mode): the job ended $took s after rank $victim_rank stopped (exit $rc):"
  grep -E "world rank $victim_rank " "$work/err" | head -2 | sed 's/^/    /'
}

ticks=$(getconf CLK_TCK)
attempt $((ticks * 3)) && exit 0
echo "note: the stop fell between two passes (peers in an allreduce); again, a third of a second later"
attempt $((ticks * 3 + ticks / 3)) && exit 0
fail "the stop fell between two passes twice"
