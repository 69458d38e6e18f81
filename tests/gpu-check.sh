#!/usr/bin/env bash
# tests/gpu-check.sh — dring's GPU checks in two shots of at most 5 minutes each (one H100/H200,
# 16 cores), each writing JSON; made for a lent machine with no network, run through the device
# tool with `carry: ["deps"]` (the offline bundle with the cudnn-frontend wheel,
# launch/deps-bundle.sh download, 49 MiB).
#
#   tests/gpu-check.sh preflight [OUT]  seconds: names everything missing (GPU, nvcc, cmake, ninja,
#                                       MPI + parallel HDF5, OpenBLAS, CLI11/json/GTest, NCCL, cuDNN and
#                                       the cudnn-frontend headers, python torch) and exits 1 when the
#                                       build or tests cannot run (cuDNN missing does not block)
#   tests/gpu-check.sh test [OUT]       shot 1: preflight; the frontend headers from the carried wheel;
#                                       configure (-DDRING_CUDA=ON, -DDRING_CUDNN=ON when cuDNN and the
#                                       frontend are here, this GPU's architecture only) and build only
#                                       the targets the checks run; ctest -L gpu, 4 at a time (kernels
#                                       vs float64, the ring on 1, 2 and 4 ranks on one GPU through MPI,
#                                       NCCL on one rank, the NCCL watchdog, the cuDNN path on 1 and 2
#                                       ranks); `dring run --backend cuda --check` on 1 and 2 ranks.
#                                       Writes OUT/shot1.json.
#   tests/gpu-check.sh bench [OUT]      shot 2: dring_gpu_bench (cuBLAS bf16 GEMM ceiling; dense bf16
#                                       D=128 S=16384 forward and backward; dilated in effective
#                                       TFLOP/s) and bench/sdpa_bench.py (PyTorch SDPA, cuDNN and flash
#                                       backends, same shapes, forward and backward); prints dring/SDPA
#                                       ratios against the targets of issue 13. Writes OUT/shot2.json.
#                                       Rebuilds only dring_gpu_bench when shot 1's build is gone.
#   tests/gpu-check.sh --help
#
# OUT defaults to $OUT (the device tool's folder) or results/gpu-check; each mode leaves two files
# there, NAME.json (steps, seconds, what is missing, every number) and NAME-logs.tar.gz (the logs
# and per-step JSON; the device tool returns at most 8 files). Every step has a timeout
# that keeps a shot under 300 s; the JSON says which step failed. Dependencies are decided per
# group: this machine's own where it has them (MPI together with a parallel HDF5 built for it;
# OpenBLAS; CLI11 + nlohmann/json + GoogleTest), else that group alone from deps/debs, unpacked
# once into $DRING_DEPS_PREFIX (default /tmp/dring-deps). NCCL may come from the system or from
# pip's nvidia-nccl (PyTorch installs; cmake/DringCuda.cmake finds its libnccl.so.2), cuDNN from
# pip's nvidia-cudnn-cu* too (cmake/DringCudnn.cmake: libcudnn.so.9; NVRTC from the toolkit or the
# nvidia-cuda-nvrtc wheel). DRING_GPU_BUILD (build folder, default build-gpu), DRING_GPU_JOBS (default
# nproc), DRING_GPU_BUILD_BUDGET (seconds, default 200; 120 for shot 2's rebuild), DRING_GPU_CTEST_JOBS
# (default 4), CUDNN_FRONTEND_WHEEL (default the wheel in deps/debs).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-}
case "$mode" in
  -h | --help | help | "")
    sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "$mode" ] && exit 0 || exit 2 ;;
  preflight | test | bench) ;;
  *) echo "gpu-check: unknown mode '$mode' (preflight, test, bench or --help)" >&2; exit 2 ;;
esac
out=${2:-${OUT:-$root/results/gpu-check}}
mkdir -p "$out" && out=$(cd "$out" && pwd)
# Logs and per-step JSON go to a work folder, packed into one tarball at the end: the device tool
# returns at most 8 files from $OUT, so $OUT gets two per shot (NAME.json, NAME-logs.tar.gz).
logs=${DRING_GPU_LOGS:-/tmp/dring-gpu-check/$mode}
rm -rf "$logs" && mkdir -p "$logs"
build=${DRING_GPU_BUILD:-$root/build-gpu}
jobs=${DRING_GPU_JOBS:-$(nproc)}
t0=$(date +%s)
steps=()     # "name|status|seconds|detail" lines for the JSON
missing=()   # what preflight found missing and blocking
notes=()     # what is missing but not blocking
say() { echo "== [+$(($(date +%s) - t0))s] $*"; }
step() { steps+=("$1|$2|$3|${4:-}"); }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
orig_ld_library_path=${LD_LIBRARY_PATH:-}

# JSON of this shot: mode, machine, steps, missing pieces, and the files the steps wrote.
write_json() {
  local file=$out/${1}.json
  printf '%s\n' "${steps[@]:-}" >"$logs/.steps"
  printf '%s\n' "${missing[@]:-}" >"$logs/.missing"
  printf '%s\n' "${notes[@]:-}" >"$logs/.notes"
  LD_LIBRARY_PATH=$orig_ld_library_path python3 - "$logs" "$file" "$mode" "$gpu_name" "$arch" "${cudnn_mode:-}" <<'EOF' ||
import json, os, sys
out, file, mode, gpu, arch, cudnn = sys.argv[1:7]
def lines(name):
    return [l for l in open(os.path.join(out, name)).read().splitlines() if l.strip()]
steps = []
for l in lines(".steps"):
    name, status, secs, detail = (l.split("|", 3) + [""])[:4]
    steps.append({"step": name, "status": status, "seconds": int(secs), "detail": detail})
doc = {"mode": mode, "gpu": gpu, "arch": arch, "dring_cudnn": cudnn, "steps": steps, "missing": lines(".missing"),
       "notes": lines(".notes"), "ok": all(s["status"] in ("ok", "skipped") for s in steps) and not lines(".missing")}
for key in ("results", "gpu_bench", "sdpa", "run_np1", "run_np2"):
    p = os.path.join(out, key + ".json")
    if os.path.exists(p):
        try:
            doc[key] = json.load(open(p))
        except ValueError as e:
            doc[key] = {"unreadable": str(e)}
json.dump(doc, open(file, "w"), indent=2)
print(f"gpu-check: wrote {file}")
EOF
    echo "gpu-check: no python3 to write $file"
  rm -f "$logs/.steps" "$logs/.missing" "$logs/.notes"
}
finish() {  # finish NAME (preflight, shot1, shot2): OUT/NAME.json, a verdict, the exit status
  write_json "$1"
  tar czf "$out/$1-logs.tar.gz" -C "$logs" . 2>/dev/null && echo "gpu-check: logs in $out/$1-logs.tar.gz"
  say "done"
  local bad
  bad=$(printf '%s\n' "${steps[@]:-}" | awk -F'|' '$2 != "ok" && $2 != "skipped" && $1 != "" {print $1}' | tr '\n' ' ')
  if [ ${#missing[@]} -gt 0 ] || [ -n "$bad" ]; then
    echo "gpu-check: FAILED: ${missing[*]:-} ${bad}"
    exit 1
  fi
  echo "gpu-check: $1 passed"
  exit 0
}

# ---- preflight: seconds, no build --------------------------------------------------------------
gpu_name=none
arch=""
have() { command -v "$1" >/dev/null 2>&1; }
header() {  # header PATH...: true when any /usr/include/PATH (or under /usr/local/include) exists
  local h
  for h in "$@"; do [ -e "/usr/include/$h" ] || [ -e "/usr/local/include/$h" ] && return 0; done
  return 1
}
python_has() { LD_LIBRARY_PATH=$orig_ld_library_path timeout 60 python3 -c "$1" >/dev/null 2>&1; }

preflight() {
  say "preflight"
  local t
  t=$(date +%s)
  if have nvidia-smi && nvidia-smi -L >/dev/null 2>&1; then
    gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
  else
    missing+=("GPU: nvidia-smi missing or sees no GPU")
  fi
  have nvcc || [ -x /usr/local/cuda/bin/nvcc ] || missing+=("nvcc (CUDA toolkit)")
  [ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"
  have cmake || missing+=("cmake")
  have ninja || missing+=("ninja")
  have c++ || have g++ || missing+=("a C++ compiler (c++)")
  # Dependency groups: the machine's own, else the bundle's (deps/debs), else missing.
  use_mpi=system use_blas=system use_dev=system
  if ! { have mpicc && have mpirun && { have h5pcc || header hdf5/openmpi/hdf5.h; }; }; then use_mpi=bundle; fi
  if ! header x86_64-linux-gnu/openblas-openmp/cblas.h openblas/cblas.h cblas.h; then use_blas=bundle; fi
  if ! header CLI/CLI.hpp || ! header nlohmann/json.hpp || ! header gtest/gtest.h; then use_dev=bundle; fi
  local g
  for g in mpi blas dev; do
    local v="use_$g"
    if [ "${!v}" = bundle ] && [ ! -d "$root/deps/debs" ]; then
      case $g in
        mpi) missing+=("MPI with parallel HDF5 (mpicc, mpirun, h5pcc): not here and no deps/debs bundle") ;;
        blas) missing+=("OpenBLAS (cblas.h): not here and no deps/debs bundle") ;;
        dev) missing+=("CLI11, nlohmann/json, GoogleTest headers: not here and no deps/debs bundle") ;;
      esac
    fi
  done
  echo "dependencies: MPI+HDF5 from $use_mpi, OpenBLAS from $use_blas, CLI11/json/GTest from $use_dev"
  if [ "$use_mpi$use_blas$use_dev" != systemsystemsystem ]; then
    local glibc
    glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
    if [ -n "$glibc" ] && [ "$(printf '%s\n2.36\n' "$glibc" | sort -V | head -n 1)" != 2.36 ]; then
      missing+=("glibc $glibc: the deps/debs bundle (Debian 12) needs glibc 2.36 or newer")
    fi
  fi
  have python3 || missing+=("python3")
  # NCCL: mandatory with -DDRING_CUDA=ON; the system's or pip's (nvidia-nccl, PyTorch's).
  if ! header nccl.h && [ ! -e /usr/local/cuda/include/nccl.h ] && [ -z "${NCCL_HOME:-}" ] &&
    ! python_has "import nvidia.nccl"; then
    missing+=("NCCL (nccl.h + libnccl): not in the system, \$NCCL_HOME or python's nvidia.nccl")
  fi
  # The cuDNN path (issue 13): cuDNN 9 ($CUDNN_PATH, pip's nvidia-cudnn-cu* as on the lent H200,
  # the toolkit, the system) and the cudnn-frontend headers ($CUDNN_FRONTEND_PATH, installed, or the
  # pinned wheel: $CUDNN_FRONTEND_WHEEL or the one `launch/deps-bundle.sh download` put in deps/debs,
  # unpacked by launch/cudnn-frontend.sh before configure). Both here: -DDRING_CUDNN=ON, so that a
  # piece cmake cannot use shows in configure (which then runs again with AUTO, saying why). Either
  # missing: named here, AUTO, and shot 1 reports the path as not built; the rest still runs.
  cudnn_mode=AUTO frontend=""
  local cudnn_h="" pip_dirs pip_cudnn pip_frontend d cudnn_missing=()
  pip_dirs=$(LD_LIBRARY_PATH=$orig_ld_library_path timeout 60 python3 -c "
import importlib.util as u, os
def where(name, up):
    try:
        s = u.find_spec(name)
    except (ImportError, ValueError):
        s = None
    if s is None: return '-'
    d = list(s.submodule_search_locations or [])[:1] or [os.path.dirname(s.origin)]
    return os.path.normpath(os.path.join(d[0], *(['..'] * up)))
print(where('nvidia.cudnn', 0), where('cudnn', 1))" 2>/dev/null)
  read -r pip_cudnn pip_frontend <<<"${pip_dirs:-- -}"
  for d in "${CUDNN_PATH:-/nonexistent}/include" "$pip_cudnn/include" /usr/local/cuda/include /usr/include \
    /usr/include/x86_64-linux-gnu; do
    [ -f "$d/cudnn.h" ] && { cudnn_h=$d/cudnn.h; break; }
  done
  for d in "${CUDNN_FRONTEND_PATH:-/nonexistent}" "${CUDNN_FRONTEND_PATH:-/nonexistent}/include" \
    "$build/_deps/cudnn-frontend/include" "$pip_frontend/include" /usr/local/cuda/include /usr/include; do
    [ -f "$d/cudnn_frontend.h" ] && { frontend=$d; break; }
  done
  if [ -z "$frontend" ]; then
    frontend=${CUDNN_FRONTEND_WHEEL:-$(ls -1 "$root"/deps/debs/nvidia_cudnn_frontend-*.whl 2>/dev/null | sort -V | tail -n 1)}
    [ -f "$frontend" ] || frontend=""
  fi
  [ -n "$cudnn_h" ] || cudnn_missing+=("cuDNN 9 (cudnn.h: not in \$CUDNN_PATH, python's nvidia.cudnn, /usr/local/cuda or /usr/include)")
  [ -n "$frontend" ] || cudnn_missing+=("the cudnn-frontend headers (not installed, no \$CUDNN_FRONTEND_PATH, \$CUDNN_FRONTEND_WHEEL or deps/debs/nvidia_cudnn_frontend-*.whl: run launch/deps-bundle.sh download where there is a network)")
  if [ ${#cudnn_missing[@]} -eq 0 ]; then
    cudnn_mode=ON
    echo "cuDNN path: $cudnn_h; frontend: $frontend; configure with -DDRING_CUDNN=ON"
  else
    notes+=("MISSING (not blocking, the cuDNN path is not built, DRING_CUDNN=AUTO): ${cudnn_missing[*]}")
  fi
  if ! python_has "import torch; assert torch.cuda.is_available()"; then
    if [ "$mode" = bench ]; then missing+=("python torch with CUDA (the SDPA comparison)"); else notes+=("no torch with CUDA: shot 2 cannot compare with SDPA"); fi
  fi
  [ ${#notes[@]} -gt 0 ] && printf 'note: %s\n' "${notes[@]}"
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'MISSING: %s\n' "${missing[@]}"
    step preflight failed $(($(date +%s) - t)) "${missing[*]}"
    return 1
  fi
  echo "cores: $(nproc); $(command -v nvcc): $(nvcc --version | tail -1); $(cmake --version | head -1); ninja $(ninja --version)"
  step preflight ok $(($(date +%s) - t))
}

# The bundle, unpacked once, and only the groups this machine lacks.
use_bundle() {
  [ "$use_mpi$use_blas$use_dev" = systemsystemsystem ] && return 0
  local prefix=${DRING_DEPS_PREFIX:-/tmp/dring-deps} t
  t=$(date +%s)
  if [ ! -f "$prefix/env.sh" ]; then
    say "unpacking deps/debs into $prefix"
    if ! "$root/launch/deps-bundle.sh" extract "$root/deps/debs" "$prefix"; then
      step bundle failed $(($(date +%s) - t)) "launch/deps-bundle.sh extract"
      return 1
    fi
  fi
  # shellcheck disable=SC1090
  [ "$use_mpi" = bundle ] && source "$prefix/env-mpi.sh"
  # shellcheck disable=SC1090
  [ "$use_blas" = bundle ] && source "$prefix/env-blas.sh"
  # shellcheck disable=SC1090
  [ "$use_dev" = bundle ] && source "$prefix/env-dev.sh"
  step bundle ok $(($(date +%s) - t)) "mpi=$use_mpi blas=$use_blas dev=$use_dev"
}

# The frontend's headers into $build/_deps/cudnn-frontend (launch/cudnn-frontend.sh, with no network
# from the carried wheel) when preflight found a wheel rather than installed headers.
frontend_headers() {
  [ "$cudnn_mode" = ON ] && [ "${frontend%.whl}" != "$frontend" ] || return 0
  local t
  t=$(date +%s)
  say "cudnn-frontend headers from $(basename "$frontend")"
  CUDNN_FRONTEND_WHEEL=$frontend LD_LIBRARY_PATH=$orig_ld_library_path "$root/launch/cudnn-frontend.sh" "$build" \
    >"$logs/cudnn-frontend.log" 2>&1
  if [ -f "$build/_deps/cudnn-frontend/include/cudnn_frontend.h" ]; then
    step cudnn_frontend ok $(($(date +%s) - t)) "$(basename "$frontend")"
  else
    cat "$logs/cudnn-frontend.log"
    step cudnn_frontend failed $(($(date +%s) - t)) "launch/cudnn-frontend.sh left no headers: see cudnn-frontend.log"
    cudnn_mode=AUTO
  fi
}

# configure LOG CUDNN-MODE
configure() {
  local launcher=()
  have ccache && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  say "configure ($build, sm_$arch, DRING_CUDNN=$2)"
  # shellcheck disable=SC2086
  timeout 90 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDRING_CUDA=ON -DDRING_NCCL=ON \
    -DDRING_CUDNN="$2" -DCMAKE_CUDA_ARCHITECTURES="$arch" "${launcher[@]}" ${DRING_DEPS_CMAKE_ARGS:-} >"$logs/$1" 2>&1
}

# configure + build TARGETS... (this GPU's architecture only; ccache when the machine has it)
build_targets() {
  local t log=configure.log
  frontend_headers
  t=$(date +%s)
  if ! configure configure.log "$cudnn_mode"; then
    tail -30 "$logs/configure.log"
    if [ "$cudnn_mode" != ON ]; then
      step configure failed $(($(date +%s) - t)) "see configure.log"
      return 1
    fi
    # cuDNN was here but cmake could not use it (configure.log says what): the rest still runs.
    step configure_cudnn failed $(($(date +%s) - t)) "-DDRING_CUDNN=ON failed, see configure.log; configured again with AUTO"
    cudnn_mode=AUTO log=configure-auto.log
    t=$(date +%s)
    if ! configure configure-auto.log AUTO; then
      tail -30 "$logs/configure-auto.log"
      step configure failed $(($(date +%s) - t)) "see configure-auto.log"
      return 1
    fi
  fi
  grep "dring:" "$logs/$log"
  step configure ok $(($(date +%s) - t)) "DRING_CUDNN=$cudnn_mode"
  t=$(date +%s)
  say "build: $*"
  if ! timeout "${DRING_GPU_BUILD_BUDGET:-${build_budget:-200}}" cmake --build "$build" -j "$jobs" --target "$@" >"$logs/build.log" 2>&1; then
    tail -40 "$logs/build.log"
    step build failed $(($(date +%s) - t)) "see build.log"
    return 1
  fi
  step build ok $(($(date +%s) - t)) "$*"
}

# run NAME TIMEOUT CMD...: one step, its output in OUT/NAME.log
run_step() {
  local name=$1 limit=$2 t rc
  t=$(date +%s)
  shift 2
  say "$name"
  timeout "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  tail -15 "$logs/$name.log"
  if [ $rc -eq 0 ]; then
    step "$name" ok $(($(date +%s) - t))
  else
    step "$name" failed $(($(date +%s) - t)) "exit $rc$([ $rc -eq 124 ] && echo ", timed out after $limit s")"
  fi
  return $rc
}

shot=preflight
[ "$mode" = test ] && shot=shot1
[ "$mode" = bench ] && shot=shot2
preflight || finish $shot
[ "$mode" = preflight ] && finish preflight

if [ "$mode" = test ]; then
  use_bundle || finish shot1
  build_budget=200
  build_targets dring_gpu_kernel_tests dring_ring_tests dring dring_gpu_bench || finish shot1
  # Issue 13 needs the cuDNN path verified: a shot 1 that could not build it says so (and fails).
  if [ "$cudnn_mode" = ON ]; then
    step cudnn_path ok 0 "$(grep -h "dring: cuDNN path:" "$logs"/configure*.log | tail -n 1 | sed 's/^-- //')"
  else
    step cudnn_path failed 0 "not built: gpu_cudnn_np1/np2 do not exist in this build (see preflight and configure.log)"
  fi
  # The gpu entries only (the CPU suite, dense_proof included, runs in CI): kernels, the ring on 1,
  # 2 and 4 ranks, NCCL on one rank, the NCCL watchdog, and with cuDNN gpu_cudnn_np1/np2 (the CPU
  # proof's shapes on cuDNN). Ranks share the one GPU, so the ring runs through the MPI transport
  # (NCCL refuses two ranks on one GPU). These are correctness tests of small shapes, bound by
  # launches, cuDNN's graph builds and the float64 reference on the CPU rather than by the GPU, so
  # they run DRING_GPU_CTEST_JOBS (default 4) at a time on the 16 cores; the log keeps what finished
  # if the shot's limit cuts them.
  run_step ctest_gpu $((265 - ($(date +%s) - t0))) ctest --test-dir "$build" -L gpu -j "${DRING_GPU_CTEST_JOBS:-4}" \
    --output-on-failure --output-junit "$logs/ctest-gpu.xml"
  grep -q "(Skipped)" "$logs/ctest_gpu.log" && step ctest_gpu_skips failed 0 "GPU tests skipped on a GPU machine"
  left=$((290 - ($(date +%s) - t0)))
  if [ $left -gt 20 ]; then
    # shellcheck disable=SC2054  # the commas separate segment lengths, not array elements
    run_args=(run --backend cuda --dtype bf16 --seq 65536 --heads 8 --head-dim 64 --segments 2048,8192
      --dilations 1,4 --repeat 2 --check)
    run_step run_np1 $((left / 2)) mpirun -np 1 "$build/bin/dring" "${run_args[@]}" --json "$logs/run_np1.json"
    run_step run_np2 $((left / 2)) mpirun -np 2 "$build/bin/dring" "${run_args[@]}" --json "$logs/run_np2.json"
  else
    step dring_run skipped 0 "no time left in the 300 s shot"
  fi
  finish shot1
fi

# bench
use_bundle || finish shot2
if [ ! -x "$build/bin/dring_gpu_bench" ]; then
  build_budget=120  # a fresh machine: only the bench and the libraries under it
  build_targets dring_gpu_bench || finish shot2
fi
run_step gpu_bench 120 "$build/bin/dring_gpu_bench" --reps 5 --memory-seq 0 --json "$logs/gpu_bench.json"
LD_LIBRARY_PATH=$orig_ld_library_path run_step sdpa_bench 90 python3 "$root/bench/sdpa_bench.py" --reps 10 \
  --json "$logs/sdpa.json"
say "dring against SDPA (issue 13 targets: forward >= 0.9x cuDNN SDPA, backward >= 0.8x, dilated >= 0.7x dense)"
LD_LIBRARY_PATH=$orig_ld_library_path python3 "$root/bench/compare_sdpa.py" "$logs/gpu_bench.json" "$logs/sdpa.json" \
  --json "$logs/results.json" || step compare failed 0 "bench/compare_sdpa.py"
finish shot2
