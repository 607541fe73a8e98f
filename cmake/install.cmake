# cmake/install.cmake: what `cmake --install` copies and how other projects find it (docs/install.md).
# Components: Runtime (shared libraries, LICENSE), Development (headers, static libraries and link
# names, the CMake package, scadles.pc), Apps (the programs and their experiment files; installed
# from apps/CMakeLists.txt). The layer libraries and their headers are installed by sd_add_layer.
#   <prefix>/include/scadles/scadles.h            the umbrella header: #include <scadles/scadles.h>
#   <prefix>/include/scadles/<layer>/*.h          "stream/ring.h" (the installed headers include so)
#   <prefix>/lib/libscadles_<layer>.{a,so}        base, kernels, comm, stream, engine
#   <prefix>/lib/cmake/scadles/                   find_package(scadles CONFIG): scadles::scadles, scadles::<layer>
#   <prefix>/lib/pkgconfig/scadles.pc             pkg-config --cflags --libs scadles
include(CMakePackageConfigHelpers)
set(SCADLES_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/scadles CACHE STRING
    "Where the CMake package (scadlesConfig.cmake) is installed, relative to the prefix")

# A sanitized library needs the sanitizer runtimes wherever it is linked (the engine's own
# programs have them from add_link_options; what links the package gets them from scadles_base).
if(SCADLES_SANITIZE)
  set(SD_SANITIZER_LINK -fsanitize=address,undefined)
elseif(SCADLES_TSAN)
  set(SD_SANITIZER_LINK -fsanitize=thread)
endif()
if(SD_SANITIZER_LINK)
  target_link_options(scadles_base INTERFACE ${SD_SANITIZER_LINK})
endif()

# ---- the CMake package --------------------------------------------------------------------------
install(TARGETS scadles EXPORT scadlesTargets) # an INTERFACE target: nothing to copy, only exported
install(FILES ${PROJECT_SOURCE_DIR}/include/scadles/scadles.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/scadles
        COMPONENT Development)
install(EXPORT scadlesTargets NAMESPACE scadles:: FILE scadlesTargets.cmake DESTINATION ${SCADLES_INSTALL_CMAKEDIR}
        COMPONENT Development)
# What scadlesConfig.cmake must find again (find_dependency): what this build found and linked.
set(SD_CFG_SHARED ${BUILD_SHARED_LIBS})
set(SD_CFG_MPI ${MPI_C_FOUND})
set(SD_CFG_KAFKA ${RDKAFKA_FOUND})
set(SD_CFG_MQTT ${MOSQUITTO_FOUND})
set(SD_CFG_CUDA ${SCADLES_HAVE_CUDA})
set(SD_CFG_NCCL ${SCADLES_HAVE_NCCL})
set(SD_CFG_DNNL ${SCADLES_HAVE_DNNL})
foreach(v SD_CFG_SHARED SD_CFG_MPI SD_CFG_KAFKA SD_CFG_MQTT SD_CFG_CUDA SD_CFG_NCCL SD_CFG_DNNL)
  if(${v})
    set(${v} ON)
  else()
    set(${v} OFF)
  endif()
endforeach()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/scadlesConfig.cmake.in ${PROJECT_BINARY_DIR}/scadlesConfig.cmake
                              INSTALL_DESTINATION ${SCADLES_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/scadlesConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/scadlesConfig.cmake ${PROJECT_BINARY_DIR}/scadlesConfigVersion.cmake
        DESTINATION ${SCADLES_INSTALL_CMAKEDIR} COMPONENT Development)

# ---- scadles.pc ---------------------------------------------------------------------------------
# Static build: the libraries' dependencies are on the plain link line (Requires, Libs), as there
# is no shared library to carry them; shared build: only for `pkg-config --static` (Requires.private,
# Libs.private). The compile definitions (SCADLES_HAVE_MPI, ...) are the layers' own.
set(SD_PC_MODULES openblas libcjson libxxhash)
set(SD_PC_LIBS "")
set(SD_PC_CFLAGS "")
pkg_check_modules(SD_PC_ZLIB QUIET zlib)
if(SD_PC_ZLIB_FOUND)
  list(APPEND SD_PC_MODULES zlib)
else()
  list(APPEND SD_PC_LIBS ${ZLIB_LIBRARIES})
endif()
if(RDKAFKA_FOUND)
  list(APPEND SD_PC_MODULES rdkafka)
endif()
if(MOSQUITTO_FOUND)
  list(APPEND SD_PC_MODULES libmosquitto)
endif()
if(MPI_C_FOUND) # the pkg-config module of the MPI found, where there is one; else its paths
  foreach(m mpi-c ompi-c mpich)
    pkg_check_modules(SD_PC_MPI QUIET ${m})
    if(SD_PC_MPI_FOUND)
      list(APPEND SD_PC_MODULES ${m})
      break()
    endif()
  endforeach()
  if(NOT SD_PC_MPI_FOUND)
    foreach(d ${MPI_C_INCLUDE_DIRS})
      list(APPEND SD_PC_CFLAGS -I${d})
    endforeach()
    list(APPEND SD_PC_LIBS ${MPI_C_LIBRARIES})
  endif()
endif()
if(SCADLES_HAVE_CUDA) # the CUDA objects are C++ (nvcc): a C link needs libstdc++
  list(APPEND SD_PC_LIBS -L${CUDAToolkit_LIBRARY_DIR} -lcudart -lcublas ${CUDNN_LIBRARY})
  if(SCADLES_HAVE_NCCL)
    list(APPEND SD_PC_LIBS ${NCCL_LIBRARY})
    list(APPEND SD_PC_CFLAGS -I${NCCL_INCLUDE_DIR})
    foreach(d ${CUDAToolkit_INCLUDE_DIRS})
      list(APPEND SD_PC_CFLAGS -I${d})
    endforeach()
  endif()
  list(APPEND SD_PC_LIBS -lstdc++)
endif()
if(SCADLES_HAVE_DNNL) # oneDNN's convolutions (kernels/cpu/conv_dnnl.c); no pkg-config module
  list(APPEND SD_PC_LIBS ${DNNL_LIBRARY})
endif()
list(APPEND SD_PC_LIBS ${OpenMP_C_FLAGS} ${CMAKE_THREAD_LIBS_INIT} -lm ${SD_SANITIZER_LINK})
foreach(lib ${SD_LAYER_TARGETS})
  get_target_property(defs ${lib} INTERFACE_COMPILE_DEFINITIONS)
  foreach(d ${defs})
    if(d)
      list(APPEND SD_PC_CFLAGS -D${d})
    endif()
  endforeach()
endforeach()
set(SD_PC_OWN "")
foreach(l engine stream comm kernels base) # the order a static link needs
  string(APPEND SD_PC_OWN " -lscadles_${l}")
endforeach()
list(REMOVE_DUPLICATES SD_PC_CFLAGS)
list(JOIN SD_PC_MODULES " " SD_PC_MODULES)
list(JOIN SD_PC_LIBS " " SD_PC_LIBS)
list(JOIN SD_PC_CFLAGS " " SD_PC_CFLAGS)
if(BUILD_SHARED_LIBS)
  set(SD_PC_REQUIRES_LINE "Requires.private: ${SD_PC_MODULES}")
  set(SD_PC_LIBS_LINE "Libs: -L\${libdir}${SD_PC_OWN}\nLibs.private: ${SD_PC_LIBS}")
else()
  set(SD_PC_REQUIRES_LINE "Requires: ${SD_PC_MODULES}")
  set(SD_PC_LIBS_LINE "Libs: -L\${libdir}${SD_PC_OWN} ${SD_PC_LIBS}")
endif()
# prefix relative to the .pc file, so the installed tree can move (cmake --install --prefix, DESTDIR)
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(SD_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(SD_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  file(RELATIVE_PATH SD_PC_UP ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
  string(REGEX REPLACE "/$" "" SD_PC_UP "${SD_PC_UP}")
  set(SD_PC_PREFIX "\${pcfiledir}/${SD_PC_UP}")
  set(SD_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(SD_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(SD_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/scadles.pc.in ${PROJECT_BINARY_DIR}/scadles.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/scadles.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT Development)

install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT Runtime)
