/* archive.h: a component's state as named typed arrays, for checkpoints. A component that can be
 * checkpointed (a stream source's position, ...) writes and reads itself through this small table,
 * so it needs no file format of its own; the checkpoint writer (engine/dist_checkpoint.h) is the one
 * implementation, backed by safetensors, where each array becomes one tensor of the same name. */
#ifndef SD_BASE_ARCHIVE_H
#define SD_BASE_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_arc_dtype { SD_ARC_F32 = 0, SD_ARC_F64, SD_ARC_I32, SD_ARC_I64, SD_ARC_U8, SD_ARC_U64 } sd_arc_dtype;

typedef struct sd_archive_ops {
    /* Adds an array (ndim 0 is a scalar; shape may then be NULL); the data is copied. */
    sd_status (*put)(void *ctx, const char *name, sd_arc_dtype dtype, int ndim, const int64_t *shape, const void *data);
    /* The array `name`: it must have this dtype and `numel` elements (numel 0: any count, told in
     * *got when got is not NULL). *data points into the archive, valid while it is open. A missing
     * or mistyped array is SD_ERR_FORMAT naming the archive and the array. */
    sd_status (*get)(void *ctx, const char *name, sd_arc_dtype dtype, size_t numel, const void **data, size_t *got);
    /* The archive's name for messages (a file path). */
    const char *(*where)(void *ctx);
} sd_archive_ops;

typedef struct sd_archive {
    const sd_archive_ops *ops;
    void *ctx;
} sd_archive;

#ifdef __cplusplus
}
#endif

#endif
