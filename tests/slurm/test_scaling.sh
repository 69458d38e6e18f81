#!/usr/bin/env bash
# tests/slurm/test_scaling.sh — launch/scaling.sh end to end on a tiny sweep (1, 2, 4 ranks under
# mpirun; dense and longnet; strong, weak and maxlen), then check_results.py on what it wrote.
# Also: a backend this build lacks (--backend cuda without CUDA) and a bad flag each end the sweep
# with one error line and exit status 2. Exit 77 (CTest SKIP) when Debian's python3 lacks numpy,
# h5py or matplotlib. Usage: tests/slurm/test_scaling.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: test_scaling.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
export DRING_BIN=$build/bin/dring
if ! /usr/bin/python3 -c 'import numpy, h5py, matplotlib' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks numpy, h5py or matplotlib (launch/install-deps.sh python3-matplotlib python3-h5py)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# A 4 MiB budget: 2048 tokens (the search's start) must fit it at one rank; the fp32 AMX tile's
# scratch (docs/architecture.md) took that point from 2.70 to 3.02 MiB.
tiny=(--ranks 1,2,4 --heads 2 --head-dim 32 --repeat 1 --idle-probe-s 0
      --strong-seq dense=2048,4096 --strong-seq longnet=4096 --weak-tokens dense=1024 --weak-tokens longnet=2048
      --budget-mib 4 --maxlen-start 2048 --granularity 512)
if "$root/launch/scaling.sh" --out "$work/sweep" "${tiny[@]}" >"$work/sweep.log" 2>&1; then
  /usr/bin/python3 "$root/tests/slurm/check_results.py" "$work/sweep" --ranks 1,2,4 --maxlen \
    --min-reduction-pct 60 || fail "launch/scaling.sh results (above)"
  grep -q "^- Command: \`launch/scaling.sh --out" "$work/sweep/report.md" || fail "report.md does not show the command"
else
  fail "launch/scaling.sh exited $?"; tail -20 "$work/sweep.log"
fi

# Clean refusals: a one-line error, exit status 2, no Python traceback.
check_refusal() {
  local what=$1; shift
  local rc=0
  "$root/launch/scaling.sh" --out "$work/refused" --idle-probe-s 0 "$@" >"$work/out" 2>"$work/err" || rc=$?
  if [ "$rc" -ne 2 ] || [ "$(wc -l <"$work/err")" -ne 1 ] || grep -q Traceback "$work/err"; then
    fail "$what: expected exit 2 and one error line, got exit $rc:"; cat "$work/err"
  else
    echo "ok $what: $(cat "$work/err")"
  fi
}
if "$DRING_BIN" run --backend cuda --seq 64 --heads 1 --head-dim 8 --quiet >/dev/null 2>&1; then
  echo "note: this dring has a working CUDA backend; the refusal check of --backend cuda is skipped"
else
  check_refusal "--backend cuda without CUDA" --backend cuda --modes strong --strong-seq 1024
fi
check_refusal "bad --ranks" --ranks two
check_refusal "unknown configuration" --configs sparse

[ "$failures" -eq 0 ] && echo "PASS test_scaling" || { echo "$failures failure(s)"; exit 1; }
