#!/usr/bin/env bash
# Every script a user runs answers -h / --help with its usage on stdout and exit code 0, and does
# nothing else: no package install, no build, no launch, no job. Each runs with a PATH whose
# installers, build tools and launchers (and `python3 -m pip` / `-m venv`) are stand-ins that
# record the call and fail, so a script that went on past its help is named. Misuse of the scripts
# that take fixed arguments gets one line on stderr and exit code 2, also before any such call.
# Usage: tests/e2e/script_help.sh
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
calls=$work/calls
for tool in apt-get apt dpkg dpkg-query pip pip3 cmake ninja make ctest mpirun mpiexec srun sbatch salloc nvcc sudo; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\nexit 97\n' "$tool" "$calls" >"$work/bin/$tool"
done
real_python=$(command -v python3)
printf '#!/bin/sh\ncase "$1 $2" in "-m pip" | "-m venv") echo "python3 $*" >>"%s"; exit 97 ;; esac\nexec "%s" "$@"\n' \
  "$calls" "$real_python" >"$work/bin/python3"
chmod +x "$work/bin/"*
failures=0

# expect NAME WANT_RC STDOUT_PATTERN STDERR_LINES SCRIPT ARGS...
expect() {
  local name=$1 want_rc=$2 pattern=$3 err_lines=$4 script=$5
  shift 5
  rm -f "$calls"
  (cd "$work" && PATH="$work/bin:$PATH" timeout 30 "$root/$script" "$@" >"$work/out" 2>"$work/err")
  local rc=$? problem=""
  if [ -s "$calls" ]; then problem="went on past its usage: $(head -1 "$calls")"
  elif [ "$rc" -ne "$want_rc" ]; then problem="exit code $rc, expected $want_rc"
  elif ! grep -qi -- "$pattern" "$work/out" "$work/err"; then problem="no '$pattern' in its output"
  elif [ "$(grep -c . "$work/err")" -ne "$err_lines" ]; then problem="$(grep -c . "$work/err") lines on stderr, expected $err_lines"
  fi
  if [ -n "$problem" ]; then
    echo "FAIL $name: $problem"; sed 's/^/    /' "$work/err"; failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

for script in launch/quickstart.sh tests/run.sh launch/build.sh launch/install-deps.sh launch/dring-mpirun.sh \
              launch/cudnn-frontend.sh launch/deps-bundle.sh bench/cpu-vs-torch.sh bench/bf16_forward_ab.sh \
              bench/gemm_engines/build.sh bench/gemm_engines/run_all.sh launch/scaling.sh \
              slurm/job.sh slurm/cpu.sbatch slurm/gpu.sbatch slurm/cpu-multinode.sbatch slurm/gpu-multinode.sbatch; do
  for flag in -h --help; do expect "$script $flag" 0 "Usage" 0 "$script" "$flag"; done
done
# Flags before the help flag: still only the usage (cpu-vs-torch.sh would otherwise install torch).
expect "cpu-vs-torch.sh --quick --help" 0 "Usage" 0 bench/cpu-vs-torch.sh --quick --venv "$work/venv" --help
[ -e "$work/venv" ] && { echo "FAIL cpu-vs-torch.sh --help created the virtualenv"; failures=$((failures + 1)); }
expect "quickstart.sh with an argument" 2 "takes no arguments" 1 launch/quickstart.sh --seq 4096
expect "dring-mpirun.sh without RANKS" 2 "RANKS must be a positive integer" 1 launch/dring-mpirun.sh
expect "dring-mpirun.sh RANKS not a number" 2 "RANKS must be a positive integer" 1 launch/dring-mpirun.sh two run
expect "deps-bundle.sh without a command" 2 "Usage\|deps-bundle.sh download" 0 launch/deps-bundle.sh

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all scripts answer --help and nothing else"
