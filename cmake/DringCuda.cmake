# The optional GPU backend: CUDA (nvcc, cudart, cuBLAS) and NCCL.
#
#   DRING_CUDA  AUTO (default): build the CUDA backend when nvcc, cudart and cuBLAS are found.
#               ON: they are required; configure fails with a message naming what is missing.
#               OFF: CPU build only (nothing below runs).
#   DRING_NCCL  AUTO (default): with the CUDA backend, NCCL is required when DRING_CUDA is ON and
#               used when found otherwise. ON: required. OFF: never used (GPU runs then move
#               K/V rows through MPI with host staging).
#   CMAKE_CUDA_ARCHITECTURES  default "80;90" (A100, H100); set it to build for others, or to one
#               architecture to halve the CUDA compile time.
#
# nvcc is looked for in CMAKE_CUDA_COMPILER, $CUDACXX, CUDAToolkit_ROOT/bin (only there when that
# is given), then PATH and /usr/local/cuda/bin. NCCL is looked for next to the toolkit, in
# $NCCL_HOME (or NCCL_ROOT) and in the system paths. Sets DRING_HAVE_CUDA and DRING_HAVE_NCCL (0/1)
# for cmake/config.h.in.

set(DRING_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE DRING_CUDA PROPERTY STRINGS AUTO ON OFF)
set(DRING_NCCL AUTO CACHE STRING "Use NCCL with the CUDA backend: AUTO, ON or OFF")
set_property(CACHE DRING_NCCL PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${DRING_CUDA}" _dring_cuda_mode)
string(TOUPPER "${DRING_NCCL}" _dring_nccl_mode)
foreach(_mode IN ITEMS _dring_cuda_mode _dring_nccl_mode)
  if(NOT ${_mode} MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "DRING_CUDA and DRING_NCCL take AUTO, ON or OFF (got '${${_mode}}')")
  endif()
endforeach()

set(DRING_HAVE_CUDA 0)
set(DRING_HAVE_NCCL 0)

# Either stops configure (ON) or says why the CUDA backend is left out (AUTO).
function(dring_cuda_missing what)
  if(_dring_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "-DDRING_CUDA=ON: ${what}. Install the CUDA toolkit (nvcc, cudart, cuBLAS; "
                        "NCCL too unless -DDRING_NCCL=OFF), point CUDAToolkit_ROOT or CMAKE_CUDA_COMPILER "
                        "at it, or configure with -DDRING_CUDA=OFF for the CPU build.")
  endif()
  message(STATUS "dring: CUDA backend not built (${what})")
endfunction()

if(_dring_cuda_mode STREQUAL "OFF")
  message(STATUS "dring: CUDA backend not built (DRING_CUDA=OFF)")
  return()
endif()

# 1. nvcc.
set(_dring_nvcc "")
if(CMAKE_CUDA_COMPILER)
  set(_dring_nvcc "${CMAKE_CUDA_COMPILER}")
elseif(DEFINED ENV{CUDACXX})
  set(_dring_nvcc "$ENV{CUDACXX}")
elseif(CUDAToolkit_ROOT OR DEFINED ENV{CUDAToolkit_ROOT})
  set(_dring_root "${CUDAToolkit_ROOT}")
  if(NOT _dring_root)
    set(_dring_root "$ENV{CUDAToolkit_ROOT}")
  endif()
  find_program(DRING_NVCC nvcc HINTS "${_dring_root}/bin" NO_DEFAULT_PATH)
  set(_dring_nvcc "${DRING_NVCC}")
else()
  find_program(DRING_NVCC nvcc HINTS /usr/local/cuda/bin)
  set(_dring_nvcc "${DRING_NVCC}")
endif()
if(NOT _dring_nvcc OR NOT EXISTS "${_dring_nvcc}")
  dring_cuda_missing("nvcc not found")
  return()
endif()

# 2. The CUDA language, for the architectures asked for (default sm_80 and sm_90).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to build for")
endif()
set(CMAKE_CUDA_COMPILER "${_dring_nvcc}")
enable_language(CUDA)
# C++20 for nvcc too (the kernels include the project's C++20 headers). CMake 3.25 does not know
# nvcc's flag for it, so it is told.
if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
# One CUDA runtime in the process: the kernels (nvcc) and the backend (g++) share libcudart.so.
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)

# 3. cudart and cuBLAS.
find_package(CUDAToolkit)
if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cudart)
  dring_cuda_missing("the CUDA runtime (cudart) was not found next to ${_dring_nvcc}")
  return()
endif()
if(NOT TARGET CUDA::cublas)
  dring_cuda_missing("cuBLAS was not found in ${CUDAToolkit_LIBRARY_DIR}")
  return()
endif()

# 4. NCCL.
if(NOT _dring_nccl_mode STREQUAL "OFF")
  # Also where pip puts NCCL (the nvidia-nccl-cu* wheels PyTorch depends on): site-packages/nvidia/
  # nccl, whose lib/ holds only libnccl.so.2 (no unversioned link), hence the second name.
  set(_dring_nccl_pip "")
  find_program(_dring_python3 python3)
  if(_dring_python3)
    execute_process(COMMAND ${_dring_python3} -c
      "import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])"
      OUTPUT_VARIABLE _dring_nccl_pip OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  find_path(DRING_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS}
    PATHS $ENV{NCCL_HOME} $ENV{NCCL_ROOT} ${_dring_nccl_pip} PATH_SUFFIXES include)
  find_library(DRING_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${CUDAToolkit_LIBRARY_DIR}
    PATHS $ENV{NCCL_HOME} $ENV{NCCL_ROOT} ${_dring_nccl_pip} PATH_SUFFIXES lib lib64)
  if(DRING_NCCL_INCLUDE_DIR AND DRING_NCCL_LIBRARY)
    set(DRING_HAVE_NCCL 1)
    add_library(dring_nccl INTERFACE)
    target_include_directories(dring_nccl SYSTEM INTERFACE ${DRING_NCCL_INCLUDE_DIR})
    target_link_libraries(dring_nccl INTERFACE ${DRING_NCCL_LIBRARY})
  elseif(_dring_nccl_mode STREQUAL "ON" OR _dring_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "dring: NCCL (nccl.h, libnccl.so) was not found next to the CUDA toolkit, in $NCCL_HOME "
                        "or in the system paths: install it (Debian/Ubuntu: libnccl-dev), set NCCL_HOME, or "
                        "configure with -DDRING_NCCL=OFF to move GPU data through MPI instead")
  else()
    message(STATUS "dring: NCCL not found; GPU runs will use MPI with host staging")
  endif()
endif()

# Warnings for nvcc-compiled sources: the host compiler's, and nvcc's own as errors with DRING_WERROR.
add_library(dring_cuda_warnings INTERFACE)
target_compile_options(dring_cuda_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unknown-pragmas>
  $<$<AND:$<BOOL:${DRING_WERROR}>,$<COMPILE_LANGUAGE:CUDA>>:--Werror=all-warnings>)

set(DRING_HAVE_CUDA 1)
message(STATUS "dring: CUDA backend: ${_dring_nvcc} (CUDA ${CUDAToolkit_VERSION}), architectures "
               "${CMAKE_CUDA_ARCHITECTURES}, NCCL ${DRING_HAVE_NCCL}")
