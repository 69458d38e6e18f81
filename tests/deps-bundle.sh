#!/usr/bin/env bash
# tests/deps-bundle.sh [DEBS] — the offline dependency bundle (launch/deps-bundle.sh) works alone.
#
# Unpacks DEBS (default deps/debs; downloaded first when absent, which needs apt and a network)
# into a fresh prefix, then, in a clean environment (env -i, only the bundle's env.sh), compiles
# with the bundle's mpicc a program that uses MPI, parallel HDF5 and OpenBLAS's CBLAS, and runs it
# on 2 ranks with the bundle's mpirun inside a private mount namespace in which this machine has
# lost every library the bundle brings (by name) and its own MPI: the bundle is unpacked again in
# there and must carry the run alone. So a library the bundle forgot, or one it leaves to the
# machine but does not take from itself when the machine lacks it, fails here instead of on the
# GPU machine. It also checks the cudnn-frontend wheel the bundle carries (env.sh's
# CUDNN_FRONTEND_WHEEL holds include/cudnn_frontend.h) and that the bundle with the tracked tree
# stays under the 64 MiB the workplace's device tool carries to the GPU machine.
# Needs root (unshare -m, mount); prints "SKIP" and exits 77 where that is not allowed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
debs=${1:-$root/deps/debs}
work=$(mktemp -d /tmp/dring-bundle-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "tests/deps-bundle.sh: FAIL: $*" >&2; exit 1; }

if ! unshare -m true 2>/dev/null; then
  echo "SKIP: no private mount namespace here (unshare -m needs root)"
  exit 77
fi
if [ ! -d "$debs" ]; then
  "$root/launch/deps-bundle.sh" download "$debs" || fail "download into $debs"
fi
prefix=$work/prefix
"$root/launch/deps-bundle.sh" extract "$debs" "$prefix" || fail "extract"
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

cat >"$work/hello.c" <<'EOF'
#include <cblas.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>

/* Every rank: an sgemm, an allreduce of its result, then one collective parallel-HDF5 write. */
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {0, 0, 0, 0};
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  double mine = c[0] + c[1] + c[2] + c[3] + rank, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
  hid_t file = H5Fcreate(argv[1], H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  hsize_t dims[1] = {(hsize_t)size}, start[1] = {(hsize_t)rank}, count[1] = {1};
  hid_t space = H5Screate_simple(1, dims, NULL);
  hid_t set = H5Dcreate2(file, "rank", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
  hid_t mem = H5Screate_simple(1, count, NULL);
  hid_t xfer = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(xfer, H5FD_MPIO_COLLECTIVE);
  herr_t rc = H5Dwrite(set, H5T_NATIVE_INT, mem, space, xfer, &rank);
  H5Pclose(xfer); H5Sclose(mem); H5Dclose(set); H5Sclose(space); H5Fclose(file); H5Pclose(fapl);
  /* 2 ranks: each sgemm gives 10, plus ranks 0 + 1. */
  printf("bundle-hello rank %d of %d sum %g hdf5 %s\n", rank, size, all, rc < 0 ? "failed" : "ok");
  MPI_Finalize();
  return rc < 0 || all != 10.0 * size + size * (size - 1) / 2 ? 1 : 0;
}
EOF

# The clean environment: nothing of this shell's, the bundle's env.sh on top of the system PATH.
clean() {
  env -i HOME="$work" PATH=/usr/bin:/bin LANG=C \
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
    bash -c "source '$prefix/env.sh' && $1"
}
clean "mpicc -o '$work/hello' '$work/hello.c' -I'$prefix/usr/include/$arch/openblas-openmp' \
  -I'$prefix/usr/include/hdf5/openmpi' -L'$prefix/usr/lib/$arch/hdf5/openmpi' -lhdf5 \
  -L'$prefix/usr/lib/$arch/openblas-openmp' -lopenblas" || fail "mpicc of the bundle"
clean "ldd '$work/hello'" >"$work/ldd.txt"
grep -q "libmpi.so.*=> $prefix/" "$work/ldd.txt" || fail "hello does not load the bundle's libmpi: $(cat "$work/ldd.txt")"

# The cudnn-frontend headers travel as the pinned wheel; launch/cudnn-frontend.sh unpacks include/.
cat >"$work/wheel.py" <<'EOF'
import os, zipfile
wheel = os.environ.get("CUDNN_FRONTEND_WHEEL", "")
ok = os.path.isfile(wheel) and "include/cudnn_frontend.h" in zipfile.ZipFile(wheel).namelist()
print(wheel or "(CUDNN_FRONTEND_WHEEL unset)", "holds include/cudnn_frontend.h" if ok else "is no cudnn-frontend wheel")
raise SystemExit(0 if ok else 1)
EOF
clean "python3 '$work/wheel.py'" || fail "env.sh's CUDNN_FRONTEND_WHEEL: no wheel with include/cudnn_frontend.h (launch/deps-bundle.sh download)"
# The device tool carries the tracked tree and the named paths, 64 MiB in all: the bundle must fit.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  bytes=$(( $(du -sb "$debs" | cut -f1) + $(cd "$root" && git ls-files -z | xargs -0 cat 2>/dev/null | wc -c) ))
  echo "bundle + tracked tree: $((bytes / 1048576)) MiB (the device tool carries 64 MiB)"
  [ "$bytes" -le $((64 * 1048576)) ] || fail "bundle + tracked tree are $((bytes / 1048576)) MiB, over the 64 MiB the device tool carries"
fi

# Inside a private mount namespace this machine loses what the bundle brings: its MPI, HDF5,
# OpenBLAS and PMIx folders (empty tmpfs), every library in /usr/lib/<arch> of a name the bundle
# also has (an empty file bound over it), and its MPI programs. The bundle is unpacked again in
# there, so that extract decides which general-purpose libraries to use from the bundle as it
# would on a machine without them, and the program runs on 2 ranks with that bundle alone.
(cd "$prefix" && find usr/lib/"$arch" lib/"$arch" -maxdepth 1 -name 'lib*.so*' -printf '%f\n' 2>/dev/null) |
  sort -u | while read -r name; do
    for d in /usr/lib/"$arch" /lib/"$arch"; do
      if [ -f "$d/$name" ] && [ ! -L "$d/$name" ]; then readlink -f "$d/$name"; fi  # links die with their target
    done
  done | sort -u >"$work/hide.txt"
for tool in mpirun mpiexec orterun mpicc mpicxx ompi_info prterun prted orted h5pcc; do
  for f in /usr/bin/$tool /usr/bin/$tool.openmpi; do [ -e "$f" ] && echo "$f"; done
done >>"$work/hide.txt"
cat >"$work/isolated.sh" <<EOF
set -e
for d in openmpi hdf5 openblas-openmp blas lapack pmix2 pmix ucx; do
  [ -d /usr/lib/$arch/\$d ] && mount -t tmpfs none /usr/lib/$arch/\$d
done
while read -r f; do mount --bind /dev/null "\$f"; done <"$work/hide.txt"
[ ! -s /usr/lib/$arch/libmpi.so.40 ] || { echo "the host's libmpi is still visible"; exit 1; }
"$root/launch/deps-bundle.sh" extract "$debs" "$work/inside" 2>&1 | tail -1
cd "$work"
env -i HOME="$work" PATH=/usr/bin:/bin LANG=C OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  OMPI_MCA_rmaps_base_oversubscribe=1 bash -c 'source "$work/inside/env.sh" && mpirun -np 2 "$work/hello" "$work/out.h5"'
EOF
out=$(unshare -m --propagation private bash "$work/isolated.sh" 2>&1) || fail "2-rank run with the bundle alone:
$out"
echo "$out"
[ "$(echo "$out" | grep -c 'bundle-hello rank .* of 2 sum 21 hdf5 ok')" = 2 ] || fail "unexpected output"
echo "tests/deps-bundle.sh: the bundle alone compiles and runs MPI + parallel HDF5 + OpenBLAS on 2 ranks"
