#!/usr/bin/env bash
# pip_install.sh PYTHON DIR VERSION: pip-installs the package (python/) into the virtual environment
# DIR/venv, as a user would, and checks that `import dring` there finds its own libdring.so and
# the CMake project's VERSION. The CTest fixture of the python_* tests (tests/CMakeLists.txt).
#
# Made to be quick on a 2-core CI machine: the environment is created once (--system-site-packages:
# Debian's torch, numpy and mpi4py; --without-pip: Debian's pip runs in it), scikit-build-core is
# fetched from PyPI once, --no-build-isolation skips a fresh build environment per install, and the
# package's CMake build directory DIR/skbuild is kept, so only the first install compiles libdring
# (only its target and what it links, no tests, no benchmarks). Prints the time of each step.
set -euo pipefail
python=$1
dir=$2
version=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$dir/venv
mkdir -p "$dir"

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(now)
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages --without-pip "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
t1=$(now)
if ! "$venv/bin/python" -c "import scikit_build_core" 2>/dev/null; then
  if ! "${pip[@]}" install --quiet "scikit-build-core>=0.10"; then
    echo "pip_install.sh: could not install scikit-build-core (the package's build backend) from PyPI" >&2
    exit 1
  fi
fi
t2=$(now)
# CMAKE_BUILD_PARALLEL_LEVEL: the test declares 2 processors to CTest; Ninja would take more.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} "${pip[@]}" install --no-build-isolation --no-deps \
  --force-reinstall --config-settings=build-dir="$dir/skbuild" "$root/python"
t3=$(now)

# Outside the source tree, without DRING_LIBRARY: the installed package and its own library.
found=$(cd / && env -u DRING_LIBRARY -u PYTHONPATH "$venv/bin/python" -c \
  'import dring; print(dring.__version__, dring.library_version(), dring.library_path())')
read -r package_version library_version library <<<"$found"
echo "installed: dring $package_version, libdring $library_version at $library"
case "$library" in
  "$venv"/*) ;;
  *) echo "pip_install.sh: dring's libdring.so is not inside the environment: $library" >&2; exit 1 ;;
esac
if [ "$package_version" != "$version" ] || [ "$library_version" != "$version" ]; then
  echo "pip_install.sh: versions $package_version (package), $library_version (libdring), CMake project $version" >&2
  exit 1
fi
echo "pip install timings: environment $(seconds "$t0" "$t1") s, scikit-build-core $(seconds "$t1" "$t2") s," \
     "build and install $(seconds "$t2" "$t3") s, total $(seconds "$t0" "$t3") s"
