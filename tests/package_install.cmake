# Installs the package to STAGING, moves it to PREFIX (the consumer tests use the moved copy, so
# the package must be relocatable), and checks the installed CMake files: no path of this machine's
# build (source, build folder, Torch/Python environment, OpenCV headers, -rpath-link folders), no
# include of FindTorchFromPython, no setting of the consumer's variables.
file(REMOVE_RECURSE ${STAGING} ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${STAGING} RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
file(RENAME ${STAGING} ${PREFIX})
file(GLOB_RECURSE cmake_files ${PREFIX}/*.cmake)
if(NOT cmake_files)
  message(FATAL_ERROR "no CMake files installed under ${PREFIX}")
endif()
get_filename_component(torch_site "${TORCH_DIR}/../../../.." ABSOLUTE)
set(forbidden "${SOURCE}" "${BUILD}" "${STAGING}" "${torch_site}" "$ENV{HOME}" "/usr/include/opencv4" "rpath-link"
    "FindTorchFromPython" "execute_process" "TORCH_CUDA_ARCH_LIST" "CMAKE_CUDA_EXTENSIONS" "CUDAToolkit_ROOT")
foreach(f IN LISTS cmake_files)
  file(READ ${f} text)
  foreach(bad IN LISTS forbidden)
    string(FIND "${text}" "${bad}" at)
    # the config derives the wheel's CUDA folders from the consumer's Torch: "rpath-link" is
    # allowed only there, next to TORCH_INSTALL_PREFIX
    if(bad STREQUAL "rpath-link" AND f MATCHES "RMNetConfig.cmake$")
      continue()
    endif()
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${f} names '${bad}'")
    endif()
  endforeach()
  # set(VAR ...) of anything but rmnet's own (_rmnet_*/RMNet_*/PACKAGE_*) variables
  string(REGEX MATCHALL "\n[ \t]*set\\([A-Za-z_0-9]+" sets "${text}")
  foreach(s IN LISTS sets)
    string(REGEX REPLACE ".*set\\(" "" var "${s}")
    if(NOT var MATCHES "^(_rmnet|_IMPORT_PREFIX|_cmake|_targets|_expected|_(IMPORT_CHECK|import_check)|RMNet_|PACKAGE_|CMAKE_IMPORT_FILE_VERSION|_realCurr|_realOrig|_BUILD_TYPE|_DIR)" 
       AND NOT f MATCHES "(RMNetTargets|RMNetConfigVersion)")
      message(FATAL_ERROR "${f} sets the consumer's variable ${var}")
    endif()
  endforeach()
endforeach()
message(STATUS "installed and moved to ${PREFIX}; ${cmake_files} clean")
