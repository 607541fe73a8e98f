/* golden_file.h: reader of the golden-value files (docs/golden-format.md) that hold PyTorch's
 * reference inputs, outputs and gradients (tests/data/golden_ops.bin, made by
 * tests/golden/gen_golden.py). The whole file is read and validated at load; records are then
 * looked up by name. Every function returns sd_status and never exits. */
#ifndef SD_TESTS_GOLDEN_FILE_H
#define SD_TESTS_GOLDEN_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#define SD_GOLDEN_MAGIC "SDGOLD\0\0" /* 8 bytes */
#define SD_GOLDEN_VERSION 1u
#define SD_GOLDEN_MAX_NDIM 8
#define SD_GOLDEN_MAX_NAME 255

typedef enum sd_golden_dtype {
    SD_GOLDEN_F32 = 0,
    SD_GOLDEN_I32 = 1,
} sd_golden_dtype;

/* One named tensor. data is host-endian, 64-byte aligned and owned by the sd_golden. */
typedef struct sd_golden_record {
    char name[SD_GOLDEN_MAX_NAME + 1];
    sd_golden_dtype dtype;
    int ndim;                          /* 0 is a scalar (one element) */
    uint32_t dims[SD_GOLDEN_MAX_NDIM];
    size_t numel;
    void *data;
} sd_golden_record;

typedef struct sd_golden sd_golden;

/* Reads and validates the whole file: magic, version, every record's name, dtype, rank and
 * size against the file length, no trailing bytes, no duplicate names. Failures: SD_ERR_IO (cannot
 * open or read), SD_ERR_FORMAT (truncated or corrupt; the message names the file and the record),
 * SD_ERR_OOM. On failure *out is NULL. */
sd_status sd_golden_load(const char *path, sd_golden **out);
void sd_golden_free(sd_golden *g);

/* The path given to sd_golden_load, and the records in file order. */
const char *sd_golden_path(const sd_golden *g);
size_t sd_golden_count(const sd_golden *g);
const sd_golden_record *sd_golden_at(const sd_golden *g, size_t i);

/* Looks a record up by name; a missing record is SD_ERR_INVALID naming it. */
sd_status sd_golden_find(const sd_golden *g, const char *name, const sd_golden_record **out);

/* Accessors; the typed ones return NULL when the record has the other dtype. */
size_t sd_golden_numel(const sd_golden_record *r);
int sd_golden_ndim(const sd_golden_record *r);
uint32_t sd_golden_dim(const sd_golden_record *r, int i); /* 0 when i is out of range */
const float *sd_golden_f32(const sd_golden_record *r);
const int32_t *sd_golden_i32(const sd_golden_record *r);

/* Find plus checks: the record must exist (SD_ERR_INVALID), have the dtype and, when
 * expect_numel is not 0, exactly that many elements (SD_ERR_FORMAT naming the record). */
sd_status sd_golden_get_f32(const sd_golden *g, const char *name, size_t expect_numel, const float **out);
sd_status sd_golden_get_i32(const sd_golden *g, const char *name, size_t expect_numel, const int32_t **out);

/* For tests: the f32 record `name` of `numel` values, or NULL after counting a failed expectation
 * (tests/harness.h) that names the record and the reason. */
const float *sd_golden_expect_f32(const sd_golden *g, const char *name, size_t numel);

#endif
