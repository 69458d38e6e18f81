# The install tree (`cmake --install build --prefix P`) and the package files that let other
# projects use it: find_package(dring) (imported target dring::dring) and pkg-config (dring.pc).
# The `dring` program's own install rule lives in launch/CMakeLists.txt. docs/install.md shows the
# tree. Everything installed is relocatable: the package files find the prefix from their own
# location and the program finds libdring through $ORIGIN, so P can be moved or packed as a whole.
#
#   P/lib/libdring.so.<version>, .so.<major> (SONAME), .so      the C ABI
#   P/include/dring/dring.h                                      its header (needs only mpi.h)
#   P/bin/dring                                                  the command line program
#   P/lib/cmake/dring/                                           dringConfig.cmake and friends
#   P/lib/pkgconfig/dring.pc
#   P/share/dring/{launch,slurm,bench/scaling}                   the scripts, laid out as in a checkout
#   P/share/doc/dring/                                           README.md and docs/

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(DRING_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/dring" CACHE STRING
    "Where dringConfig.cmake goes, relative to the install prefix")
set(DRING_INSTALL_DATADIR "${CMAKE_INSTALL_DATADIR}/dring")

# The library and its header. Installed binaries keep the directories of the external libraries
# they were linked against (OpenBLAS's OpenMP build, CUDA, ...) in their RUNPATH, so they load the
# same ones as in the build tree; no directory of the build or of the install prefix is kept.
set_target_properties(dring_c PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
install(TARGETS dring_c EXPORT dringTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(FILES "${PROJECT_SOURCE_DIR}/runtime/include/dring/dring.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/dring")

# The CMake package: dring::dring, MPI::MPI_C found again by the consumer, and the CUDA
# component reported found only when this build has the CUDA backend.
if(DRING_HAVE_CUDA)
  set(DRING_PACKAGE_HAS_CUDA TRUE)
else()
  set(DRING_PACKAGE_HAS_CUDA FALSE)
endif()
install(EXPORT dringTargets NAMESPACE dring:: FILE dringTargets.cmake
  DESTINATION "${DRING_INSTALL_CMAKEDIR}")
configure_package_config_file(cmake/dringConfig.cmake.in
  "${PROJECT_BINARY_DIR}/package/dringConfig.cmake"
  INSTALL_DESTINATION "${DRING_INSTALL_CMAKEDIR}"
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_LIBDIR)
# The SONAME changes with the major version, so one major version is one compatible family.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/package/dringConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/package/dringConfig.cmake"
              "${PROJECT_BINARY_DIR}/package/dringConfigVersion.cmake"
  DESTINATION "${DRING_INSTALL_CMAKEDIR}")

# pkg-config. The prefix is ${pcfiledir} plus the way back up from the .pc file's directory.
# Requires names the MPI the library was linked against (Open MPI: ompi-c; MPICH: mpich);
# DRING_PKGCONFIG_MPI overrides it (e.g. Debian's alternatives name mpi-c).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  message(FATAL_ERROR "dring: CMAKE_INSTALL_LIBDIR and CMAKE_INSTALL_INCLUDEDIR must be relative to "
                      "the prefix (the install tree is relocatable); got '${CMAKE_INSTALL_LIBDIR}', "
                      "'${CMAKE_INSTALL_INCLUDEDIR}'")
endif()
file(RELATIVE_PATH DRING_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" DRING_PC_TO_PREFIX "${DRING_PC_TO_PREFIX}")
if(MPI_C_LIBRARIES MATCHES "mpich")
  set(_dring_pc_mpi mpich)
else()
  set(_dring_pc_mpi ompi-c)
endif()
set(DRING_PKGCONFIG_MPI "${_dring_pc_mpi}" CACHE STRING "The pkg-config module dring.pc requires for MPI")
configure_file(cmake/dring.pc.in "${PROJECT_BINARY_DIR}/package/dring.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/package/dring.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

# The scripts, under share/dring in the same layout as in a checkout, so their "$root/..." paths
# still resolve. They look for the program at $root/build/bin/dring (or $DRING_BIN); a relative
# link there points at P/bin/dring.
install(PROGRAMS launch/dring-mpirun.sh launch/scaling.sh DESTINATION "${DRING_INSTALL_DATADIR}/launch")
install(FILES launch/env.sh DESTINATION "${DRING_INSTALL_DATADIR}/launch")
install(PROGRAMS slurm/job.sh slurm/cpu.sbatch slurm/cpu-multinode.sbatch slurm/gpu.sbatch
                 slurm/gpu-multinode.sbatch
  DESTINATION "${DRING_INSTALL_DATADIR}/slurm")
install(PROGRAMS bench/scaling/sweep.py DESTINATION "${DRING_INSTALL_DATADIR}/bench/scaling")
install(FILES bench/scaling/configs.py bench/scaling/plot.py bench/scaling/report.py bench/scaling/tables.py
  DESTINATION "${DRING_INSTALL_DATADIR}/bench/scaling")
file(RELATIVE_PATH _dring_link_target "/prefix/${DRING_INSTALL_DATADIR}/build/bin" "/prefix/${CMAKE_INSTALL_BINDIR}/dring")
install(CODE "
  set(_dring_link_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${DRING_INSTALL_DATADIR}/build/bin\")
  file(MAKE_DIRECTORY \"\${_dring_link_dir}\")
  message(STATUS \"Installing: \${_dring_link_dir}/dring -> ${_dring_link_target}\")
  file(CREATE_LINK \"${_dring_link_target}\" \"\${_dring_link_dir}/dring\" SYMBOLIC)
")

install(FILES README.md DESTINATION "${CMAKE_INSTALL_DOCDIR}")
install(DIRECTORY docs/ DESTINATION "${CMAKE_INSTALL_DOCDIR}/docs")
