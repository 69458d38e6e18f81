#!/usr/bin/env bash
# gpu-check.sh OUTDIR — the first command to run on a machine with an NVIDIA GPU.
#
# 1. probes the machine (GPU, driver, nvcc, CMake, Python/torch);
# 2. finds MPI, parallel HDF5, OpenBLAS, CLI11, nlohmann/json and GoogleTest, or, when any is missing,
#    unpacks the offline bundle deps/debs (launch/deps-bundle.sh download, on a networked Debian
#    machine, then carry deps/) into $DRING_DEPS_PREFIX (default /opt/dring-deps);
# 3. builds with -DDRING_CUDA=ON for this GPU's architecture into build-gpu/;
# 4. runs every GPU test (ctest -L gpu: kernels against float64, the cuBLAS baseline, 1/2/4 ranks on
#    one GPU through MPI equal to one rank, NCCL with one rank, the NCCL watchdog) and the unit tests;
# 5. benchmarks: dring_gpu_bench (cuBLAS bf16 GEMM ceiling, dense bf16 D=128 S=16384 forward, the
#    cuBLAS baseline, dilated effective TFLOP/s, ring overlap, the 8M-token memory run) and, where
#    `python3 -c "import torch"` works, PyTorch SDPA on the same shapes;
# 6. runs `dring run --backend cuda` end to end on 1 and 2 ranks;
# 7. prints one table and writes OUTDIR/gpu-check.log (everything), OUTDIR/results.json (all numbers)
#    and the JSON of each step. Exit status 0 only when every test passed and every error is within
#    its tolerance. Budget: well under 10 minutes on an H100 machine with 16 cores.
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: tests/gpu-check.sh OUTDIR" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
exec > >(tee "$out/gpu-check.log") 2>&1
t0=$(date +%s)
failed=()
say() { echo "== [$(date -u +%H:%M:%S) +$(($(date +%s) - t0))s] $*"; }
fail() {
  echo "!! $*"
  failed+=("$*")
}
orig_ld_library_path=${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

say "machine"
date -u
uname -a
if ! nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv; then
  echo "gpu-check: no GPU visible (nvidia-smi failed): nothing to check here"
  exit 1
fi
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
nvcc --version | tail -2
cmake --version | head -1
command -v ninja >/dev/null && echo "ninja $(ninja --version)"
echo "cores: $(nproc)"
have_torch=0
if python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; then have_torch=1; fi

say "dependencies"
# What this machine lacks of the build's dependencies (names, one per missing piece); the offline
# bundle is used when anything is missing, not only MPI (a machine may have its own MPI but no
# parallel HDF5 or OpenBLAS).
missing_deps() {
  command -v mpicc >/dev/null || echo "mpicc"
  command -v mpirun >/dev/null || echo "mpirun"
  local header
  for header in hdf5/openmpi/hdf5.h CLI/CLI.hpp nlohmann/json.hpp gtest/gtest.h; do
    [ -e "/usr/include/$header" ] || echo "$header"
  done
  ls /usr/include/*/openblas-openmp/cblas.h /usr/include/openblas/cblas.h >/dev/null 2>&1 || echo "OpenBLAS (cblas.h)"
}
missing=$(missing_deps | tr '\n' ' ')
[ -n "$missing" ] && echo "gpu-check: not on this machine: $missing"
if [ -n "$missing" ]; then
  prefix=${DRING_DEPS_PREFIX:-/opt/dring-deps}
  if [ ! -f "$prefix/env.sh" ]; then
    if [ -d "$root/deps/debs" ]; then
      "$root/launch/deps-bundle.sh" extract "$root/deps/debs" "$prefix" || fail "unpacking deps/debs"
    else
      echo "gpu-check: dependencies missing and no bundle in deps/debs: run launch/deps-bundle.sh download on a"
      echo "networked Debian 12 machine and bring deps/ along (carry it), or install the packages."
      exit 1
    fi
  fi
  # shellcheck disable=SC1091
  source "$prefix/env.sh"
fi
echo "mpicc: $(command -v mpicc)"

say "build (CUDA architecture $arch)"
build=$root/build-gpu
# shellcheck disable=SC2086
if ! cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDRING_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" ${DRING_DEPS_CMAKE_ARGS:-} >"$out/configure.log" 2>&1; then
  cat "$out/configure.log"
  fail "configure"
  exit 1
fi
grep "dring:" "$out/configure.log"
if ! cmake --build "$build" -j "$(nproc)" >"$out/build.log" 2>&1; then
  tail -50 "$out/build.log"
  fail "build"
  exit 1
fi
say "built"

say "GPU tests (ctest -L gpu) and unit tests"
(cd "$build" && CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} timeout 420 ctest -L gpu --output-on-failure -j1 \
  --output-junit "$out/ctest-gpu.xml") | tee "$out/ctest-gpu.log"
grep -q "100% tests passed" "$out/ctest-gpu.log" || fail "GPU tests"
grep -q "(Skipped)" "$out/ctest-gpu.log" && fail "GPU tests skipped on a GPU machine"
(cd "$build" && timeout 120 ctest -L cpu --output-on-failure) | tail -3 || fail "unit tests"

say "dring_gpu_bench"
timeout 300 "$build/bin/dring_gpu_bench" --json "$out/gpu_bench.json" || fail "dring_gpu_bench (exit $?)"

if [ "$have_torch" = 1 ]; then
  say "PyTorch SDPA on the same shapes"
  LD_LIBRARY_PATH=$orig_ld_library_path timeout 180 python3 "$root/bench/sdpa_bench.py" --json "$out/sdpa.json" ||
    fail "sdpa_bench"
fi

say "dring run --backend cuda (1 rank, then 2 ranks on one GPU)"
run_args=(run --backend cuda --dtype bf16 --seq 262144 --heads 8 --head-dim 64 --segments 2048,8192,32768
  --dilations 1,4,16 --repeat 3 --check)
timeout 120 mpirun -np 1 "$build/bin/dring" "${run_args[@]}" --json "$out/run_np1.json" || fail "dring run, 1 rank"
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} timeout 120 mpirun -np 2 "$build/bin/dring" "${run_args[@]}" \
  --json "$out/run_np2.json" || fail "dring run, 2 ranks on one GPU"
timeout 120 mpirun -np 1 "$build/bin/dring" run --backend cuda --dtype fp32 --seq 4096 --heads 4 --head-dim 64 \
  --segments 512,2048 --dilations 1,4 --causal --backward --check --output "$out/run_backward.h5" \
  --json "$out/run_backward.json" || fail "dring run --backward"

say "summary"
printf '%s\n' "${failed[@]:-}" >"$out/failures.txt"
LD_LIBRARY_PATH=$orig_ld_library_path python3 - "$out" <<'EOF' || echo "(no python3: see the tables above)"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
bench, sdpa = load("gpu_bench.json"), load("sdpa.json")
runs = {n: load(f"run_{n}.json") for n in ("np1", "np2", "backward")}
sdpa_rows = {(r["case"], r["shape"], r["dtype"]): r for r in (sdpa or {}).get("rows", [])}
rows = []
for r in (bench or {}).get("rows", []):
    shape = r["shape"].split(" ")[:4]
    s = sdpa_rows.get((r["case"], " ".join(shape), r["dtype"])) if r["path"] != "simple" else None
    r["sdpa_tflops"] = s["tflops"] if s else None
    rows.append(r)
print(f"device: {(bench or {}).get('device', '?')}   date: {(bench or {}).get('date', '?')}")
print(f"{'case':20s} {'shape':44s} {'dtype':5s} {'path':7s} {'time_ms':>9s} {'TFLOP/s':>8s} {'GEMM':>7s} {'SDPA':>7s} {'max_err':>8s}  note")
for r in rows:
    sd = f"{r['sdpa_tflops']:7.1f}" if r["sdpa_tflops"] else "      -"
    print(f"{r['case']:20s} {r['shape'][:44]:44s} {r['dtype']:5s} {r['path']:7s} {r['time_ms']:9.3f} {r['tflops']:8.1f} "
          f"{r['gemm_tflops']:7.1f} {sd} {r['max_err']:8.1e}  {r['note']}")
failures = [l for l in open(os.path.join(out, "failures.txt")).read().splitlines() if l.strip()]
doc = {"bench": bench, "sdpa": sdpa, "runs": runs, "rows": rows, "failures": failures}
json.dump(doc, open(os.path.join(out, "results.json"), "w"), indent=2)
print(f"results: {os.path.join(out, 'results.json')}")
EOF
say "done in $(($(date +%s) - t0)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu-check: FAILED: ${failed[*]}"
  exit 1
fi
echo "gpu-check: all GPU checks passed"
