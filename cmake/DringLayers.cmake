# The layering rule at link level (docs/architecture.md): a layer's targets may not link the
# libraries of the layers above it, and the ground floor and the kernels never link MPI, HDF5 or
# NCCL. Checked at configure time over the whole transitive link graph of each target.

function(_dring_collect_links target out_var)
  set(seen ${${out_var}})
  foreach(property LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
    get_target_property(links ${target} ${property})
    if(NOT links)
      continue()
    endif()
    foreach(link IN LISTS links)
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" link "${link}")
      if(link IN_LIST seen)
        continue()
      endif()
      list(APPEND seen ${link})
      if(TARGET ${link})
        _dring_collect_links(${link} seen)
      endif()
    endforeach()
  endforeach()
  set(${out_var} ${seen} PARENT_SCOPE)
endfunction()

# dring_forbid_links(TARGET target FORBID pattern...): fails configure when anything target links,
# directly or through other targets, matches one of the regular expressions.
function(dring_forbid_links)
  cmake_parse_arguments(arg "" "TARGET" "FORBID" ${ARGN})
  if(NOT TARGET ${arg_TARGET})
    return()
  endif()
  set(links "")
  _dring_collect_links(${arg_TARGET} links)
  foreach(link IN LISTS links)
    foreach(pattern IN LISTS arg_FORBID)
      if(link MATCHES "${pattern}")
        message(FATAL_ERROR "layering: ${arg_TARGET} links ${link}, which its layer may not use "
                            "(docs/architecture.md)")
      endif()
    endforeach()
  endforeach()
endfunction()

set(_dring_above_kernels "^dring_(runtime|c|comm|comm_cuda)$" "MPI::" "hdf5" "nccl")
dring_forbid_links(TARGET dring_core FORBID "^dring_(kernels|kernels_cuda|core_cuda)$" ${_dring_above_kernels} "CUDA::")
dring_forbid_links(TARGET dring_core_cuda FORBID "^dring_(runtime|c|comm|comm_cuda|kernels|kernels_cuda)$"
                   "MPI::" "hdf5" "nccl")
dring_forbid_links(TARGET dring_kernels FORBID ${_dring_above_kernels})
dring_forbid_links(TARGET dring_kernels_cuda FORBID ${_dring_above_kernels})
dring_forbid_links(TARGET dring_kernels_cudnn FORBID ${_dring_above_kernels})
dring_forbid_links(TARGET dring_comm FORBID "^dring_(runtime|c|kernels|kernels_cuda|kernels_cudnn)$" "hdf5")
dring_forbid_links(TARGET dring_comm_cuda FORBID "^dring_(runtime|c|kernels|kernels_cuda|kernels_cudnn)$" "hdf5")
