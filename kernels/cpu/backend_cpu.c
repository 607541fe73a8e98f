/* backend_cpu.c: the CPU backend: fills the backend table (engine/backend.h) with the CPU
 * kernels of this folder. "Device" memory is aligned host memory. */
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

static sd_status cpu_alloc(sd_kctx *k, size_t bytes, void **out) {
    (void)k;
    return sd_cpu_alloc(bytes, out);
}

static void cpu_free(sd_kctx *k, void *ptr) {
    (void)k;
    free(ptr);
}

static sd_status cpu_copy(sd_kctx *k, void *dst, const void *src, size_t bytes) {
    (void)k;
    if (bytes == 0) return SD_OK;
    if (!dst || !src) return SD_FAIL(SD_ERR_INVALID, "cpu copy: NULL pointer for %zu bytes", bytes);
    memmove(dst, src, bytes);
    return SD_OK;
}

static sd_status cpu_zero(sd_kctx *k, void *ptr, size_t bytes) {
    (void)k;
    if (bytes == 0) return SD_OK;
    if (!ptr) return SD_FAIL(SD_ERR_INVALID, "cpu zero: NULL pointer for %zu bytes", bytes);
    memset(ptr, 0, bytes);
    return SD_OK;
}

/* upload_wait: upload_async (cpu_copy) already copied synchronously. */
static sd_status cpu_upload_wait(sd_kctx *k) {
    (void)k;
    return SD_OK;
}

static sd_status cpu_synchronize(sd_kctx *k) {
    (void)k;
    return SD_OK;
}

/* Every op and shape that passed its params constructor runs on the CPU. */
static bool cpu_supports_op(sd_kctx *k, sd_op op, const void *params) {
    (void)k;
    (void)params;
    return op >= 0 && op < SD_OP_COUNT;
}

static void cpu_destroy(sd_kctx *k) { sd_cpu_kctx_destroy(k); }

static const sd_backend_ops sd_cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .supports_op = cpu_supports_op,
    .destroy = cpu_destroy,
    .upload_async = cpu_copy,
    .upload_wait = cpu_upload_wait,
#define CPU_ENTRY(name, params) .name = sd_cpu_##name,
    SD_KERNEL_OPS(CPU_ENTRY)
#undef CPU_ENTRY
};

sd_status sd_backend_cpu_create(sd_backend *be, int threads) {
    if (!be) return SD_FAIL(SD_ERR_INVALID, "cpu backend: NULL backend");
    be->ops = &sd_cpu_ops;
    be->ctx = NULL;
    TRY(sd_cpu_kctx_create(threads, &be->ctx));
    return SD_OK;
}
