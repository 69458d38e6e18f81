# cuDNN's fused attention for the CUDA backend, through the cudnn-frontend graph API (header-only
# C++17 over cuDNN 9's backend API). Included after DringCuda.cmake.
#
#   DRING_CUDNN  AUTO (default): build the cuDNN path when the CUDA backend is built and both cuDNN
#                and the frontend headers are found. ON: both are required; configure fails naming
#                what is missing. OFF: never (the CUDA backend runs its own kernels only).
#
# cuDNN (cudnn.h, and libcudnn.so or the libcudnn.so.9 a pip wheel ships) is looked for in
# CUDNN_PATH / $CUDNN_PATH, next to the CUDA toolkit, in the nvidia-cudnn-cu13 / -cu12 wheels
# (site-packages/nvidia/cudnn/{include,lib}), in PyTorch's install (torch/lib, torch/include), then
# the system paths. The frontend (cudnn_frontend.h) is looked for in CUDNN_FRONTEND_INCLUDE_DIR /
# $CUDNN_FRONTEND_PATH, in build/_deps/cudnn-frontend/include (where launch/cudnn-frontend.sh unpacks
# the pinned nvidia-cudnn-frontend wheel), next to an installed `cudnn` Python module (that wheel
# puts include/ at the root of site-packages), next to the toolkit, then the system paths. Sets
# DRING_HAVE_CUDNN (0/1) for cmake/config.h.in and the INTERFACE target dring_cudnn (cuDNN, the
# frontend headers as SYSTEM includes, and NVRTC, which the frontend calls: the toolkit's, else the
# nvidia-cuda-nvrtc wheel's libnvrtc.so.<CUDA major>).

set(DRING_CUDNN AUTO CACHE STRING "Use cuDNN's fused attention in the CUDA backend: AUTO, ON or OFF")
set_property(CACHE DRING_CUDNN PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${DRING_CUDNN}" _dring_cudnn_mode)
if(NOT _dring_cudnn_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "DRING_CUDNN takes AUTO, ON or OFF (got '${DRING_CUDNN}')")
endif()
set(DRING_HAVE_CUDNN 0)

# Either stops configure (ON) or says why the cuDNN path is left out (AUTO); the arguments are
# pieces of one sentence.
function(dring_cudnn_missing)
  string(JOIN "" what ${ARGN})
  if(_dring_cudnn_mode STREQUAL "ON")
    message(FATAL_ERROR "-DDRING_CUDNN=ON: ${what}. Install cuDNN 9 (Debian/Ubuntu: cudnn9-cuda-13, or pip "
                        "nvidia-cudnn-cu13) and the cudnn-frontend headers (pip nvidia-cudnn-frontend, or "
                        "launch/cudnn-frontend.sh BUILD-DIR), point CUDNN_PATH / CUDNN_FRONTEND_INCLUDE_DIR at them, or "
                        "configure with -DDRING_CUDNN=OFF.")
  endif()
  message(STATUS "dring: cuDNN path not built (${what})")
endfunction()

if(_dring_cudnn_mode STREQUAL "OFF")
  message(STATUS "dring: cuDNN path not built (DRING_CUDNN=OFF)")
  return()
endif()
if(NOT DRING_HAVE_CUDA)
  dring_cudnn_missing("the CUDA backend is not built")
  return()
endif()

# Directories the Python packages that carry cuDNN or the frontend live in (each empty if absent).
function(dring_python_dir out snippet)
  set(_dir "")
  find_program(_dring_cudnn_python3 python3)
  if(_dring_cudnn_python3)
    execute_process(COMMAND ${_dring_cudnn_python3} -c "${snippet}"
      OUTPUT_VARIABLE _dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  set(${out} "${_dir}" PARENT_SCOPE)
endfunction()
dring_python_dir(_dring_cudnn_pip "import nvidia.cudnn as m; print(list(m.__path__)[0])")
dring_python_dir(_dring_torch_dir "import importlib.util as u, os; s = u.find_spec('torch'); print(os.path.dirname(s.origin))")
dring_python_dir(_dring_cfe_pip "import importlib.util as u, os; s = u.find_spec('cudnn'); print(os.path.dirname(os.path.dirname(s.origin)))")

# 1. cuDNN.
set(_dring_cudnn_hints $ENV{CUDNN_PATH} ${CUDNN_PATH} ${CUDAToolkit_LIBRARY_ROOT} ${_dring_cudnn_pip} ${_dring_torch_dir})
find_path(DRING_CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} PATHS ${_dring_cudnn_hints}
  PATH_SUFFIXES include)
find_library(DRING_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${CUDAToolkit_LIBRARY_DIR} PATHS ${_dring_cudnn_hints}
  PATH_SUFFIXES lib lib64)
if(NOT DRING_CUDNN_INCLUDE_DIR OR NOT DRING_CUDNN_LIBRARY)
  dring_cudnn_missing("cuDNN (cudnn.h, libcudnn.so) was not found next to the CUDA toolkit, in $CUDNN_PATH, "
                      "in the nvidia-cudnn wheels or in PyTorch")
  return()
endif()
file(STRINGS "${DRING_CUDNN_INCLUDE_DIR}/cudnn_version.h" _dring_cudnn_major REGEX "define CUDNN_MAJOR ")
string(REGEX MATCH "[0-9]+" _dring_cudnn_major "${_dring_cudnn_major}")
if(NOT _dring_cudnn_major OR _dring_cudnn_major LESS 9)
  dring_cudnn_missing("cuDNN 9 or newer is needed, ${DRING_CUDNN_INCLUDE_DIR} holds cuDNN ${_dring_cudnn_major}")
  return()
endif()

# 2. The frontend headers.
set(_dring_cfe_hints ${CUDNN_FRONTEND_INCLUDE_DIR} ${PROJECT_BINARY_DIR}/_deps/cudnn-frontend/include
    ${PROJECT_SOURCE_DIR}/build/_deps/cudnn-frontend/include)
foreach(_dir IN ITEMS "$ENV{CUDNN_FRONTEND_PATH}" "${_dring_cfe_pip}")
  if(_dir)
    list(APPEND _dring_cfe_hints ${_dir} ${_dir}/include)
  endif()
endforeach()
find_path(DRING_CUDNN_FRONTEND_INCLUDE_DIR cudnn_frontend.h HINTS ${_dring_cfe_hints} ${CUDAToolkit_INCLUDE_DIRS})
if(NOT DRING_CUDNN_FRONTEND_INCLUDE_DIR)
  dring_cudnn_missing("the cudnn-frontend headers (cudnn_frontend.h) were not found: pip install "
                      "nvidia-cudnn-frontend, run launch/cudnn-frontend.sh BUILD-DIR, or set CUDNN_FRONTEND_INCLUDE_DIR")
  return()
endif()

# 3. NVRTC: the frontend's header-only engines (its experimental fused kernels) call it. The
# toolkit's (CUDA::nvrtc), else the nvidia-cuda-nvrtc wheel's, which has only the versioned name:
# site-packages/nvidia/cu13/lib/libnvrtc.so.13 for CUDA 13, nvidia/cuda_nvrtc/lib/libnvrtc.so.12
# for CUDA 12.
if(TARGET CUDA::nvrtc)
  set(_dring_nvrtc CUDA::nvrtc)
else()
  set(_dring_nvrtc_major ${CUDAToolkit_VERSION_MAJOR})
  dring_python_dir(_dring_nvrtc_pip "import importlib, os
for name in ('nvidia.cu${_dring_nvrtc_major}', 'nvidia.cuda_nvrtc'):
    try:
        m = importlib.import_module(name)
    except ImportError:
        continue
    d = list(m.__path__)[0]
    if os.path.exists(os.path.join(d, 'lib', 'libnvrtc.so.${_dring_nvrtc_major}')):
        print(d)
        break")
  find_library(DRING_NVRTC_LIBRARY NAMES nvrtc libnvrtc.so.${_dring_nvrtc_major} HINTS ${CUDAToolkit_LIBRARY_DIR}
    PATHS ${_dring_nvrtc_pip} PATH_SUFFIXES lib lib64)
  if(NOT DRING_NVRTC_LIBRARY)
    dring_cudnn_missing("NVRTC (libnvrtc), which the cudnn-frontend calls, was not found in ${CUDAToolkit_LIBRARY_DIR} "
                        "or in the nvidia-cuda-nvrtc wheel")
    return()
  endif()
  set(_dring_nvrtc ${DRING_NVRTC_LIBRARY})
endif()

# The frontend's headers (and the nlohmann json it bundles) are third-party code: SYSTEM, so
# -DDRING_WERROR=ON does not hold them to dring's warnings.
add_library(dring_cudnn INTERFACE)
target_include_directories(dring_cudnn SYSTEM INTERFACE ${DRING_CUDNN_FRONTEND_INCLUDE_DIR} ${DRING_CUDNN_INCLUDE_DIR})
target_link_libraries(dring_cudnn INTERFACE ${DRING_CUDNN_LIBRARY} ${_dring_nvrtc} CUDA::cudart)
set(DRING_HAVE_CUDNN 1)
set(_dring_nvrtc_file ${_dring_nvrtc})
if(TARGET CUDA::nvrtc)
  get_target_property(_dring_nvrtc_file CUDA::nvrtc IMPORTED_LOCATION)
endif()
message(STATUS "dring: cuDNN path: cuDNN ${_dring_cudnn_major} (${DRING_CUDNN_LIBRARY}), frontend "
               "${DRING_CUDNN_FRONTEND_INCLUDE_DIR}, NVRTC ${_dring_nvrtc_file}")
