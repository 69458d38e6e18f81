#!/usr/bin/env bash
# bf16_forward_ab.sh — the CPU forward in bf16 against fp32 (and, given a second build, against
# that build's bf16), interleaved run by run so that every dtype sees the same machine.
#
# Usage: bench/bf16_forward_ab.sh BUILD_DIR THREADS ROUNDS [OLD_BUILD_DIR]
# For each round and case it runs `dring run --dtype fp32`, `--dtype bf16` (and the old build's
# bf16) one after the other, each with --repeat 3 (the median of 3 passes after a warm-up),
# pinned to cores 1 (THREADS 1) or 0-1 (THREADS 2) with taskset. It prints one line per run
# (the time of `dring run`'s report line) and, per case, the median over rounds, the spread
# (min-max) and the fp32/bf16 ratio of the medians. The load average is printed before and after.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac  # the header above
build=${1:?build dir}
threads=${2:?threads}
rounds=${3:?rounds}
old=${4:-}
cores=$([[ $threads == 1 ]] && echo 1 || echo 0-$((threads - 1)))
cases=(
  "dense-d64|--seq 16384 --heads 4 --head-dim 64"
  "dense-d128|--seq 16384 --heads 4 --head-dim 128"
  "causal-d64|--seq 16384 --heads 4 --head-dim 64 --causal"
  "longnet-d64|--seq 32768 --heads 4 --head-dim 64 --segments 2048,8192,32768 --dilations 1,2,4"
)
variants=("fp32|$build" "bf16|$build")
[[ -n $old ]] && variants+=("bf16-old|$old")
echo "# $(date -u +%FT%TZ) threads $threads rounds $rounds cores $cores load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A times
for ((r = 1; r <= rounds; ++r)); do
  for c in "${cases[@]}"; do
    name=${c%%|*}
    args=${c#*|}
    for v in "${variants[@]}"; do
      label=${v%%|*}
      dir=${v#*|}
      dtype=${label%-old}
      # shellcheck disable=SC2086
      ms=$(taskset -c "$cores" "$dir/bin/dring" run --threads "$threads" --dtype "$dtype" --repeat 3 $args |
        sed -n 's/^time: *\([0-9.]*\) ms.*/\1/p')
      echo "round $r $name $label $ms ms (load $(cut -d' ' -f1 /proc/loadavg))"
      times[$name|$label]+="$ms "
    done
  done
done
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
printf "%-12s %-9s %10s %18s %8s\n" case variant median_ms spread_ms fp32/x
for c in "${cases[@]}"; do
  name=${c%%|*}
  f=$(echo "${times[$name|fp32]}" | median)
  for v in "${variants[@]}"; do
    label=${v%%|*}
    m=$(echo "${times[$name|$label]}" | median)
    printf "%-12s %-9s %10s %18s %7.2fx\n" "$name" "$label" "$m" "$(echo "${times[$name|$label]}" | spread)" \
      "$(echo "$f / $m" | bc -l)"
  done
done
