#!/usr/bin/env bash
# bench/trainer/core-share.sh — runs one MPI rank's program held to a fixed share of one core, so
# that k ranks on a machine with fewer than k cores behave like k equal (slower) cores: a rank
# that finishes early can no longer hand its core to the busy ones, which on a shared machine hides
# any load imbalance. Each rank gets its own CPU cgroup with a CFS quota of SHARE x period (the
# scheduler's bandwidth control, cgroup v1 `cpu.cfs_quota_us` or v2 `cpu.max`); the group is
# removed when the program exits.
#
# Used as the program mpirun starts (launch/dring-mpirun.sh takes it through DRING_BIN):
#   CORE_SHARE=0.5 CORE_SHARE_BIN=build/bin/dring DRING_BIN=bench/trainer/core-share.sh \
#       launch/dring-mpirun.sh 4 run --threads 1 ...
# Needs root and a CPU cgroup controller; says so and exits 3 otherwise.
set -euo pipefail
share=${CORE_SHARE:?CORE_SHARE (a fraction of one core, e.g. 0.5) is not set}
bin=${CORE_SHARE_BIN:?CORE_SHARE_BIN (the program to run) is not set}
period_us=${CORE_SHARE_PERIOD_US:-20000}
quota_us=$(awk -v s="$share" -v p="$period_us" 'BEGIN { q = int(s * p); if (q < 1000) q = 1000; print q }')
name=dring-share-$$

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
  parent=/sys/fs/cgroup
  grep -qw cpu "$parent/cgroup.subtree_control" 2>/dev/null || echo +cpu >"$parent/cgroup.subtree_control" 2>/dev/null || true
  group=$parent/$name
  mkdir "$group" 2>/dev/null || { echo "core-share: cannot create $group (root and a cpu controller needed)" >&2; exit 3; }
  echo "$quota_us $period_us" >"$group/cpu.max"
elif [ -d /sys/fs/cgroup/cpu ]; then  # cgroup v1
  parent=/sys/fs/cgroup/cpu
  group=$parent/$name
  mkdir "$group" 2>/dev/null || { echo "core-share: cannot create $group (root needed)" >&2; exit 3; }
  echo "$period_us" >"$group/cpu.cfs_period_us"
  echo "$quota_us" >"$group/cpu.cfs_quota_us"
else
  echo "core-share: no CPU cgroup controller under /sys/fs/cgroup" >&2
  exit 3
fi

cleanup() {
  echo $$ >"$parent/cgroup.procs" 2>/dev/null || true
  rmdir "$group" 2>/dev/null || true
}
trap cleanup EXIT
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT

echo $$ >"$group/cgroup.procs"  # the program started below inherits the group
"$bin" "$@" &
child=$!
set +e
wait "$child"
rc=$?
exit $rc
