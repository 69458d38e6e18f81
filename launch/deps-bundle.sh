#!/usr/bin/env bash
# deps-bundle.sh — dring's build and test dependencies as Debian packages, for a machine that has
# no network and no MPI (the lent GPU machine): download them here, carry them, unpack them there.
#
# Usage:
#   launch/deps-bundle.sh download [DIR]         on a networked Debian 12 machine (this project's):
#                                                apt-get download the packages and the libraries
#                                                they need into DIR (default deps/debs, git-ignored),
#                                                and pip download the pinned nvidia-cudnn-frontend
#                                                wheel there (launch/cudnn-frontend.sh --download)
#   launch/deps-bundle.sh extract DIR PREFIX     on the offline machine: dpkg -x every .deb of DIR
#                                                into PREFIX (never into /), relocate what needs it,
#                                                copy the frontend wheel, and write PREFIX/env.sh
#   source PREFIX/env.sh                         PATH, LD_LIBRARY_PATH, OPAL_PREFIX, CMAKE_PREFIX_PATH
#                                                and DRING_DEPS_CMAKE_ARGS for `cmake $DRING_DEPS_CMAKE_ARGS`;
#                                                or one group: env-mpi.sh (OpenMPI + parallel HDF5),
#                                                env-blas.sh (OpenBLAS), env-dev.sh (CLI11, json, GTest),
#                                                env-cudnn.sh (CUDNN_FRONTEND_WHEEL, which
#                                                launch/cudnn-frontend.sh unpacks with no network)
#   launch/deps-bundle.sh excluded               print the regular expression of the packages the
#                                                bundle expects the machine to have (tests/deps-bundle.sh)
#
# The set: OpenMPI, parallel HDF5 (OpenMPI build), OpenBLAS (OpenMP build), CLI11, nlohmann/json,
# GoogleTest, and their library dependencies as apt resolves them for an empty
# system, less the C library, the compiler and its runtime, and system tools (the target machine
# has its own, newer ones). Runtime plugins that only add hardware discovery (hwloc's X11/OpenCL
# plugins) are left out to keep the bundle small.
set -euo pipefail

packages=(
  libopenmpi-dev openmpi-bin openmpi-common
  libhdf5-openmpi-dev
  libopenblas-openmp-dev
  libcli11-dev nlohmann-json3-dev
  libgtest-dev
)
# Left out of the bundle (regular expression on package names).
exclude='^(gcc-.*|cpp-.*|g\+\+.*|gfortran.*|binutils.*|libbinutils|libctf.*|libgprofng.*|libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt1|libcrypt-dev|libgcc-.*|libstdc\+\+.*|libgomp1|libitm1|libatomic1|libasan.*|liblsan.*|libtsan.*|libubsan.*|libcc1-0|libisl.*|libmpc.*|libmpfr.*|libgmp10|libgfortran-.*-dev|debianutils|tar|dpkg|perl.*|libperl.*|debconf|libpam.*|passwd|adduser|libsemanage.*|libsepol.*|libselinux1|libacl1|libaudit.*|libcap-ng0|libdb5.3|libgdbm.*|libmd0|libbsd0|libtinfo6|libedit2|openssh-client|libfido2-1|libcbor.*|m4|autoconf|automake|autotools-dev|libjs-.*|libicu.*|libxml2|libhwloc-plugins|libxnvctrl0|ocl-icd-libopencl1|libx11-.*|libx11-6|libxcb1|libxau6|libxdmcp6|libxext6|libtirpc.*|libnsl.*|rpcsvc-proto|googletest|zlib1g|libzstd1|liblzma5|libbz2-1.0|libpcre2-8-0|libjpeg-dev|libjpeg62-turbo-dev)$'

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit "${1:-2}"; }
here=$(cd "$(dirname "$0")" && pwd)

download() {
  local dir=${1:-deps/debs}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # Resolve as for an empty system, so the bundle does not depend on what this machine has.
  local status
  status=$(mktemp)
  apt-get -s -o Dir::State::status="$status" install --no-install-recommends "${packages[@]}" |
    awk '/^Inst /{print $2}' | grep -Ev "$exclude" > "$dir/PACKAGES"
  rm -f "$status"
  (cd "$dir" && xargs apt-get download -q < PACKAGES)
  # The cudnn-frontend headers (header-only; the lent GPU machine has cuDNN but not these), as the
  # pinned wheel itself: 11 MiB, under the device tool's 64 MiB with the debs and the tree.
  "$here/cudnn-frontend.sh" --download "$dir"
  echo "deps-bundle: $(wc -l < "$dir/PACKAGES") packages, $(du -sh "$dir" | cut -f1) in $dir" >&2
}

extract() {
  local dir=$1 prefix=$2
  [ -d "$dir" ] || { echo "deps-bundle: no folder $dir" >&2; exit 1; }
  case "$prefix" in /|/usr|/usr/*) echo "deps-bundle: refusing to unpack into $prefix" >&2; exit 1 ;; esac
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd)
  # Debian 12's libraries (libevent, under OpenMPI) need glibc 2.36: say so before unpacking.
  local glibc
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  if [ -n "$glibc" ] && [ "$(printf '%s\n2.36\n' "$glibc" | sort -V | head -n 1)" != 2.36 ]; then
    echo "deps-bundle: this machine has glibc $glibc; the bundle's Debian 12 libraries need glibc 2.36 or newer" >&2
    exit 1
  fi
  local n=0
  for deb in "$dir"/*.deb; do
    dpkg -x "$deb" "$prefix"
    n=$((n + 1))
  done
  local usr=$prefix/usr arch
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  local lib=$usr/lib/$arch
  # Debian's update-alternatives links are not in the packages: make the ones dring needs.
  for tool in mpicc mpicxx mpic++ mpiCC mpirun mpiexec ompi_info orterun; do
    [ -e "$usr/bin/$tool.openmpi" ] && ln -sfn "$tool.openmpi" "$usr/bin/$tool"
  done
  [ -e "$usr/bin/orterun" ] || { [ -e "$usr/bin/mpirun.openmpi" ] && ln -sfn mpirun.openmpi "$usr/bin/orterun"; }
  ln -sfn libopenblas.so.0 "$lib/openblas-openmp/libblas.so.3" 2>/dev/null || true
  # HDF5's compiler wrapper names /usr: point it at the prefix (CMake's FindHDF5 runs it).
  for wrapper in "$usr"/bin/h5pcc*; do
    [ -f "$wrapper" ] && sed -i "s|/usr/|$usr/|g; s|=\"/usr\"|=\"$usr\"|g" "$wrapper"
  done
  [ -e "$usr/bin/h5pcc.openmpi" ] && ln -sfn h5pcc.openmpi "$usr/bin/h5pcc"
  # Relative symlinks inside the packages stay valid. Absolute ones point at the first of: the
  # target inside the prefix, the same under the prefix's /usr (merged /usr: /lib is /usr/lib),
  # the target on this machine, the same under this machine's /usr, and, for a library link such
  # as libz.so -> /lib/<arch>/libz.so.1.2.13 (zlib is this machine's own), any version of that
  # library this machine has.
  find "$prefix" -type l | while read -r link; do
    target=$(readlink "$link")
    case "$target" in /*) ;; *) continue ;; esac
    found=""
    for candidate in "$prefix$target" "$prefix/usr$target" "$target" "/usr$target"; do
      [ -e "$candidate" ] && { found=$candidate; break; }
    done
    if [ -z "$found" ]; then
      base=$(basename "$target")
      case "$base" in
        lib*.so*) found=$(ls -1 /lib/"$arch"/"${base%%.so*}".so.* /usr/lib/"$arch"/"${base%%.so*}".so.* \
                            /lib64/"${base%%.so*}".so.* /usr/lib64/"${base%%.so*}".so.* 2>/dev/null | head -n 1 || true) ;;
      esac
    fi
    if [ -n "$found" ] && [ "$found" != "$target" ]; then ln -sfn "$found" "$link"; fi
  done
  # A library or program link that still dangles would fail later, at link or load time, with a
  # less clear message: name it now (documentation links may dangle).
  local dangling
  dangling=$(find "$usr/bin" "$usr/lib" "$prefix/lib" -xtype l 2>/dev/null || true)
  if [ -n "$dangling" ]; then
    echo "deps-bundle: links whose target this machine lacks:" >&2
    echo "$dangling" | sed 's/^/  /' >&2
    exit 1
  fi
  # One environment file per group, so that a machine short of one group uses the bundle for that
  # group alone: MPI with parallel HDF5 (built against this OpenMPI: one group), OpenBLAS, and the
  # development packages (CLI11, nlohmann/json, GoogleTest: a CMake prefix of links to them alone).
  # env.sh takes all three. The library path gets folders of links, never the bundle's whole
  # lib/<arch>: general-purpose libraries this machine has itself (OpenSSL, curl, libffi, ...,
  # matched by name, a non-empty file in the system's library folders) are left out, so that the
  # bundle's Debian 12 copies never shadow this machine's for cmake, python or anything else.
  local blas=$prefix/blas-lib dev=$prefix/dev mpilib=$prefix/mpi-lib
  mkdir -p "$blas" "$mpilib" "$dev/include" "$dev/share/cmake" "$dev/lib/$arch/cmake"
  local general='^lib(ssl|crypto|curl|gnutls|nettle|hogweed|idn2|unistring|tasn1|p11-kit|ffi|uuid|udev|krb5|krb5support|gssapi_krb5|k5crypto|com_err|keyutils|ldap|lber|sasl2|ssh2|rtmp|psl|nghttp2|brotlicommon|brotlidec|brotlienc|jpeg|numa|ltdl|gfortran|quadmath)([-.]|$)'
  host_has() {
    local d
    for d in /lib/"$arch" /usr/lib/"$arch" /lib64 /usr/lib64; do [ -s "$d/$1" ] && return 0; done
    return 1
  }
  link_libs() {  # link_libs FOLDER LIBRARY...: link each library there unless the host has it
    local to=$1 so name
    shift
    for so in "$@"; do
      name=$(basename "$so")
      if echo "$name" | grep -Eq "$general" && host_has "$name"; then continue; fi
      ln -sfn "$so" "$to/$name"
    done
  }
  local libs
  mapfile -t libs < <(find "$lib" "$prefix/lib/$arch" -maxdepth 1 -name 'lib*.so*' 2>/dev/null)
  link_libs "$mpilib" "${libs[@]}"
  mapfile -t libs < <(LD_LIBRARY_PATH="$lib/openblas-openmp:$lib" ldd "$lib/openblas-openmp/libopenblas.so.0" |
    awk -v p="$prefix/" 'index($3, p) == 1 {print $3}')
  link_libs "$blas" "$lib/openblas-openmp/libopenblas.so.0" "${libs[@]}"
  for d in CLI nlohmann gtest gmock; do [ -e "$usr/include/$d" ] && ln -sfn "$usr/include/$d" "$dev/include/$d"; done
  for d in CLI11 nlohmann_json; do [ -e "$usr/share/cmake/$d" ] && ln -sfn "$usr/share/cmake/$d" "$dev/share/cmake/$d"; done
  [ -e "$lib/cmake/GTest" ] && ln -sfn "$lib/cmake/GTest" "$dev/lib/$arch/cmake/GTest"
  for a in "$lib"/libgtest*.a "$lib"/libgmock*.a; do [ -e "$a" ] && ln -sfn "$a" "$dev/lib/$arch/"; done
  cat > "$prefix/env-mpi.sh" <<EOF
# Generated by launch/deps-bundle.sh: the bundle's OpenMPI and parallel HDF5 ($prefix).
export PATH="$usr/bin:\$PATH"
export LD_LIBRARY_PATH="$mpilib:$lib/openmpi/lib:$lib/hdf5/openmpi:\${LD_LIBRARY_PATH:-}"
export OPAL_PREFIX="$usr"
export PMIX_INSTALL_PREFIX="$lib/pmix2"
export PMIX_MCA_mca_base_component_path="$lib/pmix2/lib/pmix"
export OMPI_MCA_plm_rsh_agent=""
export HDF5_ROOT="$lib/hdf5/openmpi"
export DRING_DEPS_CMAKE_ARGS="\${DRING_DEPS_CMAKE_ARGS:-} -DMPIEXEC_EXECUTABLE=$usr/bin/mpirun -DMPI_C_COMPILER=$usr/bin/mpicc -DMPI_CXX_COMPILER=$usr/bin/mpicxx -DHDF5_C_COMPILER_EXECUTABLE=$usr/bin/h5pcc"
EOF
  cat > "$prefix/env-blas.sh" <<EOF
# Generated by launch/deps-bundle.sh: the bundle's OpenBLAS (OpenMP build) and its libraries only.
export LD_LIBRARY_PATH="$blas:\${LD_LIBRARY_PATH:-}"
export DRING_DEPS_CMAKE_ARGS="\${DRING_DEPS_CMAKE_ARGS:-} -DDRING_OPENBLAS_LIBRARY=$lib/openblas-openmp/libopenblas.so -DDRING_CBLAS_INCLUDE_DIR=$usr/include/$arch/openblas-openmp"
EOF
  cat > "$prefix/env-dev.sh" <<EOF
# Generated by launch/deps-bundle.sh: the bundle's CLI11, nlohmann/json and GoogleTest for CMake.
export CMAKE_PREFIX_PATH="$dev:\${CMAKE_PREFIX_PATH:-}"
EOF
  # The frontend wheel, if the bundle has one: launch/cudnn-frontend.sh (run by launch/build.sh and
  # tests/gpu-check.sh before configure) unpacks its headers where there is no network.
  local wheel
  wheel=$(ls -1 "$dir"/nvidia_cudnn_frontend-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$wheel" ]; then
    mkdir -p "$prefix/wheels"
    cp "$wheel" "$prefix/wheels/"
    printf '# Generated by launch/deps-bundle.sh: the cudnn-frontend wheel for launch/cudnn-frontend.sh.\nexport CUDNN_FRONTEND_WHEEL="%s"\n' \
      "$prefix/wheels/$(basename "$wheel")" > "$prefix/env-cudnn.sh"
  else
    echo "# Generated by launch/deps-bundle.sh: $dir has no nvidia_cudnn_frontend wheel." > "$prefix/env-cudnn.sh"
  fi
  cat > "$prefix/env.sh" <<EOF
# Generated by launch/deps-bundle.sh: every dependency from the bundle in $prefix.
source "$prefix/env-mpi.sh"
source "$prefix/env-blas.sh"
source "$prefix/env-dev.sh"
source "$prefix/env-cudnn.sh"
EOF
  echo "deps-bundle: unpacked $n packages into $prefix; now: source $prefix/env.sh" >&2
}

case "${1:-}" in
  download) shift; download "$@" ;;
  extract) [ $# -eq 3 ] || usage; extract "$2" "$3" ;;
  excluded) echo "$exclude" ;;
  -h | --help) usage 0 ;;
  *) usage ;;
esac
