/* version.h: the engine's version, the one place it is written. CMakeLists.txt reads it for
 * project(VERSION), the CMake package's version file and scadles.pc; every app prints it with
 * --version. Semantic versioning: a change of MAJOR breaks the C API or the file formats. */
#ifndef SD_BASE_VERSION_H
#define SD_BASE_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#define SD_VERSION_MAJOR 0
#define SD_VERSION_MINOR 1
#define SD_VERSION_PATCH 0
#define SD_VERSION_STRING "0.1.0"

#ifdef __cplusplus
}
#endif

#endif
