#!/usr/bin/env bash
# Storage faults: `dring run --output` (and `dring generate`) on a filesystem that is full, or on
# a directory that cannot be written, gives one line on stderr naming the cause, a non-zero exit
# that is not a signal, no hang, no temporary file left behind, and the existing output untouched.
# The small filesystems are tmpfs mounts (root); without permission to mount, the test is skipped
# (exit 77).
# Usage: tests/faults/storage.sh BUILD_DIR
set -u
build=$(cd "$1" && pwd)
dring="$build/bin/dring"
work=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "$work/full" "$work/readonly"
cleanup() {
  for m in "$work/full" "$work/readonly"; do mountpoint -q "$m" && umount "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
if ! mount -t tmpfs -o size=512k tmpfs "$work/full" 2>/dev/null ||
   ! mount -t tmpfs -o ro,size=64k tmpfs "$work/readonly" 2>/dev/null; then
  echo "SKIP: cannot mount a small tmpfs here (needs root); storage faults not tested"
  exit 77
fi
failures=0

# expect NAME DIR "EXPECTED STDERR SUBSTRING" ARGS...  (mpirun -np 3 dring ARGS, with DIR/out.h5 present)
expect() {
  local name=$1 dir=$2 want=$3
  shift 3
  local err="$work/$name.err" target="$dir/out.h5"
  local before
  before=$(sha256sum <"$target")
  timeout 60 mpirun -q -np 3 "$dring" "$@" >/dev/null 2>"$err"
  local rc=$?
  local problem=""
  if [ "$rc" -eq 124 ]; then problem="hung (killed after 60 s)"
  elif [ "$rc" -eq 0 ]; then problem="exit code 0"
  elif [ "$rc" -ge 128 ]; then problem="ended by a signal (exit $rc)"
  elif [ "$(grep -c . "$err")" -ne 1 ]; then problem="$(grep -c . "$err") lines on stderr, expected one"
  elif ! grep -q "^dring: error: .*$want" "$err"; then problem="stderr does not say '$want'"
  elif [ "$(sha256sum <"$target")" != "$before" ]; then problem="the existing output was modified"
  elif ls "$dir"/out.h5.tmp-* >/dev/null 2>&1; then problem="a temporary output file was left behind"
  fi
  if [ -n "$problem" ]; then
    echo "FAIL $name: $problem"; sed 's/^/    /' "$err"; failures=$((failures + 1))
  else
    echo "ok   $name (exit $rc): $(cat "$err")"
  fi
}

echo "precious bytes that must survive" >"$work/full/out.h5"
expect run_disk_full "$work/full" "cannot write --output $work/full/out.h5: No space left on device" \
  run --seq 2048 --heads 4 --head-dim 32 --backward --quiet --output "$work/full/out.h5"
expect generate_disk_full "$work/full" "cannot write --output $work/full/out.h5: No space left on device" \
  generate --seq 4096 --heads 4 --head-dim 32 --output "$work/full/out.h5"

# A read-only filesystem (as root, permission bits would not stop the write).
mount -o remount,rw "$work/readonly" && echo "precious bytes that must survive" >"$work/readonly/out.h5" &&
  mount -o remount,ro "$work/readonly"
expect run_read_only "$work/readonly" "cannot create --output $work/readonly/out.h5 .*: Read-only file system" \
  run --seq 64 --quiet --output "$work/readonly/out.h5"

[ "$failures" -eq 0 ] && echo "all storage-fault cases passed" || echo "$failures storage-fault case(s) failed"
exit $((failures > 0))
