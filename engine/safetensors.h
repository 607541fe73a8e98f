/* safetensors.h: a generic reader and writer of the safetensors format (the checkpoint format of
 * docs/checkpoints.md; Hugging Face's format, which PyTorch users load with safetensors.torch).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"<key>": "<string>", ...}}   (metadata optional)
 * then the data section: raw little-endian tensor bytes, row-major, offsets relative to its start.
 *
 * The writer copies (or lets the caller fill) host buffers, lays tensors out contiguously in order
 * of decreasing element size (so every tensor is aligned to its element size), pads the header to
 * 8 bytes, and writes atomically: PATH.tmp, fsync, rename. The reader loads the whole file into
 * host memory, validates every entry before returning, and then answers lookups by name. Every
 * failure names the file and the entry. Host byte order must be little-endian (checked at compile
 * time). */
#ifndef SD_ENGINE_SAFETENSORS_H
#define SD_ENGINE_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_st_dtype {
    SD_ST_BOOL = 0,
    SD_ST_U8,
    SD_ST_I8,
    SD_ST_I16,
    SD_ST_U16,
    SD_ST_F16,
    SD_ST_BF16,
    SD_ST_I32,
    SD_ST_U32,
    SD_ST_F32,
    SD_ST_F64,
    SD_ST_I64,
    SD_ST_U64,
    SD_ST_DTYPE_COUNT
} sd_st_dtype;

/* Bytes per element (0 for an unknown value). */
size_t sd_st_dtype_size(sd_st_dtype t);
/* The header spelling ("F32", "I64", ...), or "?" for an unknown value. */
const char *sd_st_dtype_name(sd_st_dtype t);
/* Parses a header spelling; SD_ERR_FORMAT listing the known ones otherwise. */
sd_status sd_st_dtype_parse(const char *name, sd_st_dtype *out);

#define SD_ST_MAX_NDIM 8
/* Upper bound on the header length, as in the reference implementation. */
#define SD_ST_MAX_HEADER ((uint64_t)100 << 20)

/* One tensor of an open file. `data` points into the reader's host copy of the file; it is not
 * necessarily aligned (files from other writers may have odd header lengths): memcpy from it. */
typedef struct sd_st_tensor {
    const char *name;
    sd_st_dtype dtype;
    int ndim; /* 0 for a scalar */
    int64_t shape[SD_ST_MAX_NDIM];
    size_t numel;  /* 1 for a scalar */
    size_t nbytes; /* numel * element size == end - begin */
    uint64_t begin, end; /* data_offsets as in the header */
    const void *data;
} sd_st_tensor;

/* ---- writer ---------------------------------------------------------------------------------- */
typedef struct sd_st_writer sd_st_writer;

sd_status sd_st_writer_create(sd_st_writer **out);
void sd_st_writer_destroy(sd_st_writer *w); /* NULL is fine */
/* Adds a tensor, copying numel(shape) * size(dtype) bytes from host memory `data` (may be NULL
 * only when that is 0 bytes). Names must be non-empty, unique and not "__metadata__"; dims >= 0. */
sd_status sd_st_writer_add(sd_st_writer *w, const char *name, sd_st_dtype dtype, int ndim, const int64_t *shape,
                           const void *data);
/* Like sd_st_writer_add, but hands back a writer-owned host buffer of the tensor's size for the
 * caller to fill before sd_st_writer_write (e.g. by downloading straight from a backend). */
sd_status sd_st_writer_add_buffer(sd_st_writer *w, const char *name, sd_st_dtype dtype, int ndim,
                                  const int64_t *shape, void **data);
/* Adds a metadata pair (keys unique and non-empty; both strings are copied). */
sd_status sd_st_writer_add_metadata(sd_st_writer *w, const char *key, const char *value);
/* Writes the file atomically: PATH.tmp, fsync, rename over PATH (and fsync of the directory).
 * SD_ERR_IO naming the path and the system's reason on failure; the temporary file is removed. */
sd_status sd_st_writer_write(const sd_st_writer *w, const char *path);

/* ---- reader ---------------------------------------------------------------------------------- */
typedef struct sd_st_file sd_st_file;

/* Reads and validates a whole file: header length <= SD_ST_MAX_HEADER and inside the file, JSON
 * that parses to an object (only whitespace after it), each entry an object with a known dtype, a
 * shape of at most SD_ST_MAX_NDIM non-negative integer dims whose byte size does not overflow, and
 * integer data_offsets [begin, end] with begin <= end <= data size and end - begin == the shape's
 * byte size; entries pairwise non-overlapping; names unique; "__metadata__" an object of strings.
 * SD_ERR_IO when the file cannot be read, SD_ERR_FORMAT naming the file and the entry otherwise. */
sd_status sd_st_open(const char *path, sd_st_file **out);
void sd_st_close(sd_st_file *f); /* NULL is fine */

const char *sd_st_path(const sd_st_file *f);
int sd_st_count(const sd_st_file *f);
/* Tensors in header order, i in [0, count). */
const sd_st_tensor *sd_st_tensor_at(const sd_st_file *f, int i);
/* NULL when the file holds no tensor of that name. */
const sd_st_tensor *sd_st_find(const sd_st_file *f, const char *name);
/* Metadata value for key, or NULL. */
const char *sd_st_metadata(const sd_st_file *f, const char *key);
int sd_st_metadata_count(const sd_st_file *f);
/* The i-th metadata pair in header order; false when i is out of range. */
bool sd_st_metadata_at(const sd_st_file *f, int i, const char **key, const char **value);

#ifdef __cplusplus
}
#endif

#endif
