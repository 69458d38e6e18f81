#!/usr/bin/env bash
# The main job, from a fresh clone: installs what is missing, builds, and runs one LongNet-style
# dilated problem (segments 2048, 8192, 32768 with dilations 1, 2, 4 over 32768 tokens) on 1, 2
# and 4 ranks of this machine, each checked against the float64 reference, then prints per-rank
# memory, its reduction against 1 rank (and the share of the ideal k-fold), time and tokens/s.
# Reports land in results/quickstart/. Override the problem with DRING_QUICKSTART_ARGS.
# Usage: launch/quickstart.sh   (no arguments; e.g. DRING_QUICKSTART_ARGS="--seq 8192 --heads 2")
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
[ $# -eq 0 ] || { echo "quickstart: takes no arguments (DRING_QUICKSTART_ARGS sets the problem; --help)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/install-deps.sh"
"$root/launch/build.sh"
out=$root/results/quickstart
mkdir -p "$out"
read -r -a problem <<<"${DRING_QUICKSTART_ARGS:---seq 32768 --heads 4 --head-dim 64 --segments 2048,8192,32768 --dilations 1,2,4}"
for ranks in 1 2 4; do
  echo
  "$root/launch/dring-mpirun.sh" "$ranks" run "${problem[@]}" --repeat 3 --check --json "$out/ranks$ranks.json"
done
echo
echo "Per-rank memory and time against the world size (same problem, every run checked vs float64):"
"$root/build/bin/dring" summarize "$out"/ranks{1,2,4}.json
