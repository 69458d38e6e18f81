#!/usr/bin/env bash
# run.sh — dring as an installed library: installs the build tree into a temporary prefix, MOVES
# the prefix (everything must be relocatable), checks the tree (SONAME, relative RUNPATH, no path
# of the staging prefix or of the build baked into a text file), then builds tests/install/outside
# against the moved prefix twice — with CMake (find_package(dring)) and with pkg-config and a plain
# C compiler line — and runs each on 2 ranks, and runs the installed `dring` program and launch
# script on 2 ranks. Also checks that README.md's Embedding example is outside/main.c verbatim.
# Usage (from CTest, tests/install/CMakeLists.txt): run.sh BUILD_DIR MPIEXEC HAVE_CUDA(0|1) GENERATOR
set -euo pipefail
build=$(cd "$1" && pwd)
mpiexec=$2
have_cuda=$3
generator=$4
here=$(cd "$(dirname "$0")" && pwd)
readme=$here/../../README.md
work=$(mktemp -d "${TMPDIR:-/tmp}/dring-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "install test: FAILED: $*" >&2; exit 1; }
say() { echo "install test: $*"; }

# 1. Install, then move the prefix.
cmake --install "$build" --prefix "$work/staged" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
mv "$work/staged" "$work/moved"
prefix=$work/moved
lib=$(find "$prefix" -name libdring.so -printf '%h\n' | head -1)
[ -n "$lib" ] || fail "no libdring.so under $prefix"
say "installed and moved to $prefix ($(find "$prefix" -type f | wc -l) files, libraries in ${lib#"$prefix"/})"

# 2. The tree.
for f in include/dring/dring.h bin/dring share/dring/launch/dring-mpirun.sh share/dring/launch/env.sh \
         share/dring/slurm/cpu.sbatch share/dring/slurm/job.sh share/dring/bench/scaling/sweep.py; do
  [ -e "$prefix/$f" ] || fail "missing $f"
done
for f in libdring.so pkgconfig/dring.pc cmake/dring/dringConfig.cmake cmake/dring/dringConfigVersion.cmake; do
  [ -e "$lib/$f" ] || fail "missing ${lib#"$prefix"/}/$f"
done
soname=$(readelf -d "$lib/libdring.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$soname" =~ ^libdring\.so\.[0-9]+$ ]] && [ -e "$lib/$soname" ] || fail "SONAME '$soname'"
abi=$(sed -n 's/^#define DRING_ABI_VERSION \([0-9]*\)$/\1/p' "$prefix/include/dring/dring.h")
[ "$soname" = "libdring.so.$abi" ] || fail "SONAME '$soname' is not libdring.so.DRING_ABI_VERSION ($abi)"
runpath=$(readelf -d "$prefix/bin/dring" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
[[ "$runpath" == '$ORIGIN/'* ]] || fail "bin/dring RUNPATH '$runpath' does not start relative to \$ORIGIN"
for f in "$prefix/bin/dring" "$lib/libdring.so"; do
  if readelf -d "$f" | grep -e "$work" -e "$build"; then fail "$f: RUNPATH names the staging prefix or the build"; fi
done
if grep -rIl -e "$work/staged" -e "$build" "$prefix"; then fail "the files above name the staging prefix or the build"; fi
say "tree: SONAME $soname, bin/dring RUNPATH $runpath"
say "tree: no path of the staging prefix or the build in a RUNPATH or a text file"

# 3. README.md's Embedding example is main.c, whole.
awk '/<!-- tests\/install\/outside\/main.c -->/ {on=1; next} on && /^```c$/ {body=1; next}
     body && /^```$/ {exit} body {print}' "$readme" >"$work/readme-main.c"
diff -u "$here/outside/main.c" "$work/readme-main.c" >&2 || fail "README.md's Embedding example differs from outside/main.c"

run2() { "$mpiexec" -np 2 "$@"; }

# 4. CMake: find_package(dring), with and without the CUDA component required.
cmake -S "$here/outside" -B "$work/cmake" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; fail "configure with find_package"; }
expect_cuda=$([ "$have_cuda" = 1 ] && echo TRUE || echo FALSE)
grep -q "CUDA component found: $expect_cuda" "$work/cmake.log" || { cat "$work/cmake.log"; fail "dring_CUDA_FOUND is not $expect_cuda"; }
cmake --build "$work/cmake" >"$work/cmake-build.log" 2>&1 || { cat "$work/cmake-build.log"; fail "build with CMake"; }
say "cmake: $(grep -o 'dring [0-9.]* at .*' "$work/cmake.log")"
run2 "$work/cmake/dring_outside" || fail "the CMake-built program"
if cmake -S "$here/outside" -B "$work/cmake-cuda" -G "$generator" -DCMAKE_PREFIX_PATH="$prefix" \
     -DDRING_OUTSIDE_REQUIRE_CUDA=ON >"$work/cmake-cuda.log" 2>&1; then cuda_ok=1; else cuda_ok=0; fi
[ "$cuda_ok" = "$have_cuda" ] || { cat "$work/cmake-cuda.log"; fail "REQUIRED COMPONENTS CUDA gave $cuda_ok, the build has $have_cuda"; }
say "cmake: REQUIRED COMPONENTS CUDA $([ "$cuda_ok" = 1 ] && echo found || echo 'refused, as it should be (CPU build)')"

# 5. pkg-config and a plain C compiler (not mpicc: dring.pc must bring MPI's flags itself).
export PKG_CONFIG_PATH=$lib/pkgconfig
version=$(pkg-config --modversion dring) || fail "pkg-config dring"
read -r -a flags <<<"$(pkg-config --cflags --libs dring)"
mkdir "$work/pc"
${CC:-cc} -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 "$here/outside/main.c" -o "$work/pc/dring_outside" \
  "${flags[@]}" -lm -Wl,-rpath,"$lib" || fail "build with pkg-config"
say "pkg-config: dring $version: ${CC:-cc} main.c $(pkg-config --cflags --libs dring | sed "s|$prefix|<prefix>|g")"
# ldd's output is read whole first: with pipefail, `ldd | grep -q` fails whenever grep's early exit
# leaves ldd writing into a closed pipe (SIGPIPE), which happened in a CI run.
ldd "$work/pc/dring_outside" >"$work/pc/ldd.txt"
grep -q "libdring.so.* => $lib/" "$work/pc/ldd.txt" || fail "the pkg-config build does not load $lib/libdring.so"
run2 "$work/pc/dring_outside" || fail "the pkg-config-built program"

# 6. The installed program, directly and through the installed launch script.
run2 "$prefix/bin/dring" run --seq 256 --threads 1 --check >"$work/dring.log" 2>&1 || { cat "$work/dring.log"; fail "bin/dring run"; }
say "bin/dring: $(grep '^check:' "$work/dring.log")"
"$prefix/share/dring/launch/dring-mpirun.sh" 2 run --seq 256 --causal --threads 1 --check >"$work/launch.log" 2>&1 ||
  { cat "$work/launch.log"; fail "share/dring/launch/dring-mpirun.sh"; }
say "share/dring/launch/dring-mpirun.sh: $(grep '^check:' "$work/launch.log")"
say "passed"
