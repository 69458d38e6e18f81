# Required: MPI, parallel HDF5, OpenBLAS (CBLAS), OpenMP, CLI11, nlohmann/json; GoogleTest for
# tests. Each missing piece stops configure with the Debian package that provides it.

function(dring_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "dring needs ${what}: install it (Debian: apt-get install ${package}), "
                        "or run launch/quickstart.sh, which installs everything")
  endif()
endfunction()

find_package(MPI COMPONENTS C CXX)
dring_require(MPI_FOUND "MPI" "libopenmpi-dev openmpi-bin")

find_package(OpenMP COMPONENTS CXX)
dring_require(OpenMP_CXX_FOUND "OpenMP" "g++")

# Parallel HDF5: Debian's libhdf5-openmpi-dev. The serial library would silently write one file
# per rank's view, so a serial HDF5 is refused.
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 COMPONENTS C)
dring_require(HDF5_FOUND "parallel HDF5" "libhdf5-openmpi-dev")
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "dring needs a parallel (MPI) HDF5, found a serial one at ${HDF5_INCLUDE_DIRS}: "
                      "install libhdf5-openmpi-dev")
endif()

# OpenBLAS, preferring its OpenMP build: the CPU kernel calls sgemm from inside its own OpenMP
# team, and the OpenMP build of OpenBLAS runs single-threaded there by design.
find_library(DRING_OPENBLAS_LIBRARY NAMES openblas
  HINTS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp)
find_path(DRING_CBLAS_INCLUDE_DIR NAMES cblas.h
  HINTS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
  PATH_SUFFIXES openblas)
if(DRING_OPENBLAS_LIBRARY AND DRING_CBLAS_INCLUDE_DIR)
  set(DRING_OPENBLAS_FOUND TRUE)
endif()
dring_require(DRING_OPENBLAS_FOUND "OpenBLAS (CBLAS)" "libopenblas-openmp-dev")
add_library(dring_openblas INTERFACE)
target_link_libraries(dring_openblas INTERFACE ${DRING_OPENBLAS_LIBRARY})
target_include_directories(dring_openblas SYSTEM INTERFACE ${DRING_CBLAS_INCLUDE_DIR})

# oneDNN (DRING_DNNL=AUTO|ON|OFF): the CPU kernels' GEMM engine where found, chosen by
# measurement (docs/benchmarks.md, "GEMM engine"): its sgemm JIT-compiles for the CPU's features at
# run time, where Debian's OpenBLAS 0.3.21 falls back to SSE3 kernels on CPUs newer than itself.
set(DRING_DNNL AUTO CACHE STRING "Use oneDNN's sgemm in the CPU kernels: AUTO, ON or OFF")
set_property(CACHE DRING_DNNL PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${DRING_DNNL}" _dring_dnnl_mode)
set(DRING_HAVE_DNNL 0)
if(NOT _dring_dnnl_mode STREQUAL "OFF")
  find_library(DRING_DNNL_LIBRARY NAMES dnnl)
  find_path(DRING_DNNL_INCLUDE_DIR NAMES oneapi/dnnl/dnnl.h)
  if(DRING_DNNL_LIBRARY AND DRING_DNNL_INCLUDE_DIR)
    set(DRING_HAVE_DNNL 1)
    add_library(dring_dnnl INTERFACE)
    target_link_libraries(dring_dnnl INTERFACE ${DRING_DNNL_LIBRARY})
    target_include_directories(dring_dnnl SYSTEM INTERFACE ${DRING_DNNL_INCLUDE_DIR})
  elseif(_dring_dnnl_mode STREQUAL "ON")
    message(FATAL_ERROR "-DDRING_DNNL=ON: oneDNN not found: install it (Debian: apt-get install libdnnl-dev)")
  else()
    message(STATUS "dring: oneDNN not found; the CPU kernels use OpenBLAS's sgemm (slower on CPUs newer "
                   "than OpenBLAS; Debian: apt-get install libdnnl-dev)")
  endif()
endif()

find_package(CLI11 CONFIG)
dring_require(CLI11_FOUND "CLI11" "libcli11-dev")
find_package(nlohmann_json CONFIG)
dring_require(nlohmann_json_FOUND "nlohmann/json" "nlohmann-json3-dev")

if(DRING_BUILD_TESTS)
  find_package(GTest CONFIG)
  dring_require(GTest_FOUND "GoogleTest" "libgtest-dev")
endif()

# The optional GPU backend (CUDA, cuBLAS, NCCL): sets DRING_HAVE_CUDA and DRING_HAVE_NCCL.
include(DringCuda)
include(DringCudnn)
