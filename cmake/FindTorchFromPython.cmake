# Locates LibTorch inside a Python environment's torch wheel (torch.utils.cmake_prefix_path) when
# Torch_DIR is not given. The interpreter is RMNET_PYTHON, else $RMNET_VENV/bin/python, else python3;
# it is kept in the cache (the tests run it for the Python interop checks), so re-running cmake on
# a configured build folder keeps it.
if(NOT RMNET_PYTHON)
  if(DEFINED ENV{RMNET_PYTHON})
    set(_rmnet_python $ENV{RMNET_PYTHON})
  elseif(DEFINED ENV{RMNET_VENV})
    set(_rmnet_python $ENV{RMNET_VENV}/bin/python)
  elseif(EXISTS $ENV{HOME}/.cache/rmnet/venv/bin/python)
    set(_rmnet_python $ENV{HOME}/.cache/rmnet/venv/bin/python)
  else()
    find_program(_rmnet_python python3)
  endif()
  set(RMNET_PYTHON "${_rmnet_python}" CACHE FILEPATH "Python with torch (LibTorch for the build, interop tests)")
endif()
if(NOT Torch_DIR)
  execute_process(COMMAND ${RMNET_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _rmnet_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rmnet_rc)
  if(_rmnet_rc EQUAL 0 AND _rmnet_torch_prefix)
    set(Torch_DIR "${_rmnet_torch_prefix}/Torch" CACHE PATH "LibTorch CMake config (from the torch wheel)")
  endif()
endif()
# The CUDA-enabled wheel's config looks for the CUDA toolkit; point it at the local one if present.
if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
# No GPU here: name the target architectures so the config does not try to detect (and run) one.
# H100/H200 are sm_90; override with -DTORCH_CUDA_ARCH_LIST=... or the environment variable.
if(NOT TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
set(CMAKE_CUDA_EXTENSIONS OFF)
# The wheel keeps its CUDA libraries (cuDNN, NCCL, cuBLAS, ...) in site-packages/nvidia/*/lib.
if(Torch_DIR AND NOT RMNET_TORCH_LINK_DIRS)
  get_filename_component(_rmnet_site "${Torch_DIR}/../../../.." ABSOLUTE)
  file(GLOB RMNET_TORCH_LINK_DIRS LIST_DIRECTORIES true "${_rmnet_site}/nvidia/*/lib" "${_rmnet_site}/nvidia/cu*/lib")
  list(APPEND RMNET_TORCH_LINK_DIRS "${_rmnet_site}/torch/lib")
  list(REMOVE_DUPLICATES RMNET_TORCH_LINK_DIRS)
endif()
# The NCCL headers matching the wheel's libnccl (ProcessGroupNCCL's layout depends on the NCCL
# version, so the CUDA toolkit's older nccl.h must not be used for it).
if(Torch_DIR AND NOT RMNET_NCCL_INCLUDE_DIR)
  get_filename_component(_rmnet_site "${Torch_DIR}/../../../.." ABSOLUTE)
  if(EXISTS "${_rmnet_site}/nvidia/nccl/include/nccl.h")
    set(RMNET_NCCL_INCLUDE_DIR "${_rmnet_site}/nvidia/nccl/include")
  endif()
endif()
