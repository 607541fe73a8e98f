# third_party/dependencies.cmake: finds what the engine takes from others (third_party/README.md lists
# each one: Debian package, version we build against, licence). Required packages stop configure
# with a message naming the package; optional ones set SCADLES_HAVE_* and switch their part on.
# Detect, never guess (../shared/docs/STYLE.md, 9).

# ---- required ---------------------------------------------------------------------------------
find_package(PkgConfig QUIET) # each is looked for here; the end of this file names all that are missing
pkg_check_modules(OPENBLAS QUIET IMPORTED_TARGET openblas)      # libopenblas-dev: dense math on the CPU
find_package(OpenMP QUIET COMPONENTS C)                         # gcc's libgomp: the CPU kernels' threads
find_package(Threads REQUIRED)                                  # ingest threads, local collectives
find_package(ZLIB QUIET)                                        # zlib1g-dev: gzipped IDX datasets
pkg_check_modules(CJSON QUIET IMPORTED_TARGET libcjson)         # libcjson-dev: experiment files, reports
pkg_check_modules(XXHASH QUIET IMPORTED_TARGET libxxhash)       # libxxhash-dev: checkpoint checksums (XXH3-64)

# ---- optional ---------------------------------------------------------------------------------
find_package(MPI COMPONENTS C QUIET)                            # libopenmpi-dev: one process per device
# The brokers can be left out even where their libraries are installed (-DSCADLES_ENABLE_KAFKA=OFF,
# -DSCADLES_ENABLE_MQTT=OFF): the build then takes stream/kafka_none.c / mqtt_none.c, as without them.
option(SCADLES_ENABLE_KAFKA "Build the Kafka source and publisher when librdkafka is found" ON)
option(SCADLES_ENABLE_MQTT "Build the MQTT source and publisher when libmosquitto is found" ON)
if(SCADLES_ENABLE_KAFKA)
  pkg_check_modules(RDKAFKA QUIET IMPORTED_TARGET rdkafka)        # librdkafka-dev: Kafka sources/publisher
else()
  set(RDKAFKA_FOUND FALSE) # shadows a cached result from an earlier configure with it on
endif()
if(SCADLES_ENABLE_MQTT)
  pkg_check_modules(MOSQUITTO QUIET IMPORTED_TARGET libmosquitto) # libmosquitto-dev: MQTT sources/publisher
else()
  set(MOSQUITTO_FOUND FALSE)
endif()

# CUDA toolkit, cuBLAS, cuDNN (the CUDA backend) and NCCL (GPU collectives). nvcc is looked for at
# /usr/local/cuda/bin/nvcc too, so the CUDA sources compile wherever the toolkit is, GPU or not.
set(SCADLES_HAVE_CUDA OFF)
if(SCADLES_ENABLE_CUDA)
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit QUIET)
    find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(CUDAToolkit_FOUND AND TARGET CUDA::cublas AND CUDNN_LIBRARY AND CUDNN_INCLUDE_DIR)
      set(SCADLES_HAVE_CUDA ON)
      set(CMAKE_CUDA_ARCHITECTURES ${SCADLES_CUDA_ARCHS})
    endif()
  endif()
endif()
# The NCCL communicator (comm/comm_nccl.c) needs all three: NCCL, MPI (bootstrap) and CUDA.
set(SCADLES_HAVE_NCCL OFF)
if(SCADLES_HAVE_CUDA AND NCCL_LIBRARY AND NCCL_INCLUDE_DIR AND MPI_C_FOUND)
  set(SCADLES_HAVE_NCCL ON)
endif()

# oneDNN (libdnnl-dev; no pkg-config module, so the header and the library): the CPU backend's 2-D
# convolutions (kernels/cpu/conv_dnnl.c), kernels/cpu/conv.c staying the fallback and the reference.
# -DSCADLES_DNNL=OFF leaves it out where it is installed. ThreadSanitizer builds leave it out always:
# libdnnl (and the libgomp under it) is not built with TSan, so TSan sees its memory accesses but not
# all of its synchronisation; with it, the TSan pass's test_resume stopped on a "race" inside
# oneDNN's process-wide primitive cache, two device threads making their first primitives (tried
# 2026-12-07). The TSan pass checks our threads, not oneDNN's.
option(SCADLES_DNNL "CPU convolutions through oneDNN when it is found (kernels/cpu/conv_dnnl.c)" ON)
find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
find_library(DNNL_LIBRARY dnnl)
set(SCADLES_HAVE_DNNL OFF)
set(SD_DNNL_VERSION "")
if(DNNL_INCLUDE_DIR AND EXISTS ${DNNL_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h)
  file(STRINGS ${DNNL_INCLUDE_DIR}/oneapi/dnnl/dnnl_version.h SD_DNNL_V REGEX "^#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" SD_DNNL_VERSION "${SD_DNNL_V}")
endif()
if(DNNL_INCLUDE_DIR AND DNNL_LIBRARY AND SCADLES_DNNL AND NOT SCADLES_TSAN)
  set(SCADLES_HAVE_DNNL ON)
endif()

# ---- required, checked: one error naming every missing package and its Debian package --------------
set(SD_MISSING "")
if(NOT PKG_CONFIG_FOUND)
  list(APPEND SD_MISSING "pkg-config (Debian package pkg-config), through which OpenBLAS, cJSON and xxHash are found")
else()
  if(NOT OPENBLAS_FOUND)
    list(APPEND SD_MISSING "OpenBLAS (pkg-config module 'openblas', Debian package libopenblas-dev)")
  endif()
  if(NOT CJSON_FOUND)
    list(APPEND SD_MISSING "cJSON (pkg-config module 'libcjson', Debian package libcjson-dev)")
  endif()
  if(NOT XXHASH_FOUND)
    list(APPEND SD_MISSING "xxHash (pkg-config module 'libxxhash', Debian package libxxhash-dev)")
  endif()
endif()
if(NOT OpenMP_C_FOUND)
  list(APPEND SD_MISSING "OpenMP for C (${CMAKE_C_COMPILER_ID} ${CMAKE_C_COMPILER}: gcc has it in libgomp1, clang needs libomp-dev)")
endif()
if(NOT ZLIB_FOUND)
  list(APPEND SD_MISSING "zlib (zlib.h and libz, Debian package zlib1g-dev)")
endif()
if(SD_MISSING)
  list(JOIN SD_MISSING "\n  " SD_MISSING_TEXT)
  message(FATAL_ERROR "required packages not found:\n  ${SD_MISSING_TEXT}\n"
          "Install them (scripts/setup.sh main installs every Debian package the main job needs, as root or "
          "through sudo; it installs nothing when SCADLES_SKIP_SETUP=1 is set) and configure again.")
endif()
