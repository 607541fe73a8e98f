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
    .conv2d_fwd = sd_cpu_conv2d_fwd,
    .conv2d_bwd = sd_cpu_conv2d_bwd,
    .bn_fwd_train = sd_cpu_bn_fwd_train,
    .bn_fwd_eval = sd_cpu_bn_fwd_eval,
    .bn_bwd = sd_cpu_bn_bwd,
    .relu_fwd = sd_cpu_relu_fwd,
    .relu_bwd = sd_cpu_relu_bwd,
    .maxpool_fwd = sd_cpu_maxpool_fwd,
    .maxpool_bwd = sd_cpu_maxpool_bwd,
    .avgpool_fwd = sd_cpu_avgpool_fwd,
    .avgpool_bwd = sd_cpu_avgpool_bwd,
    .gap_fwd = sd_cpu_gap_fwd,
    .gap_bwd = sd_cpu_gap_bwd,
    .linear_fwd = sd_cpu_linear_fwd,
    .linear_bwd = sd_cpu_linear_bwd,
    .xent_fwd = sd_cpu_xent_fwd,
    .xent_bwd = sd_cpu_xent_bwd,
    .add = sd_cpu_add,
    .axpy = sd_cpu_axpy,
    .scale = sd_cpu_scale,
    .all_finite = sd_cpu_all_finite,
    .dropout_fwd = sd_cpu_dropout_fwd,
    .dropout_bwd = sd_cpu_dropout_bwd,
    .sgd_update = sd_cpu_sgd_update,
};

sd_status sd_backend_cpu_create(sd_backend *be, int threads) {
    if (!be) return SD_FAIL(SD_ERR_INVALID, "cpu backend: NULL backend");
    be->ops = &sd_cpu_ops;
    be->ctx = NULL;
    TRY(sd_cpu_kctx_create(threads, &be->ctx));
    return SD_OK;
}
