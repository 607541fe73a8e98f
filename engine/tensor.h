/* tensor.h: tensors and arenas. A tensor is a typed view (dtype, shape) of memory owned by an
 * arena; an arena is one allocation from a backend, carved by a bump pointer and grown only past
 * its high-water mark, so a batch size that changes every step does not reallocate. */
#ifndef SD_ENGINE_TENSOR_H
#define SD_ENGINE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_dtype { SD_F32 = 0, SD_I32, SD_U8, SD_F16, SD_BF16 } sd_dtype;

size_t sd_dtype_size(sd_dtype t);
const char *sd_dtype_name(sd_dtype t);

#define SD_MAX_NDIM 4

typedef struct sd_tensor {
    void *data; /* backend memory */
    sd_dtype dtype;
    int ndim;
    int shape[SD_MAX_NDIM];
} sd_tensor;

size_t sd_tensor_numel(const sd_tensor *t);
size_t sd_tensor_bytes(const sd_tensor *t);

typedef struct sd_arena {
    sd_backend *be;
    uint8_t *base;
    size_t capacity; /* bytes allocated */
    size_t used;     /* bytes carved since the last reset */
    size_t high_water;
    unsigned grows;  /* how many times the block was (re)allocated */
} sd_arena;

/* Makes room for `bytes` in total: reallocates only when bytes exceeds the capacity (contents
 * are then lost), and resets the bump pointer either way. */
sd_status sd_arena_reserve(sd_arena *a, sd_backend *be, size_t bytes);
/* Carves `bytes` (64-byte aligned); SD_ERR_OOM naming the shortfall when the arena is full. */
sd_status sd_arena_take(sd_arena *a, size_t bytes, void **out);
/* Bytes a sequence of sd_arena_take calls of these sizes needs (alignment included). */
size_t sd_arena_round(size_t bytes);
void sd_arena_release(sd_arena *a);

#ifdef __cplusplus
}
#endif

#endif
