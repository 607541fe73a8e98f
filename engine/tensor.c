/* tensor.c: dtype sizes, tensor sizes and the bump arena. */
#include "engine/tensor.h"

size_t sd_dtype_size(sd_dtype t) {
    switch (t) {
    case SD_F32: case SD_I32: return 4;
    case SD_U8: return 1;
    case SD_F16: case SD_BF16: return 2;
    }
    return 0;
}

const char *sd_dtype_name(sd_dtype t) {
    switch (t) {
    case SD_F32: return "f32";
    case SD_I32: return "i32";
    case SD_U8: return "u8";
    case SD_F16: return "f16";
    case SD_BF16: return "bf16";
    }
    return "unknown";
}

size_t sd_tensor_numel(const sd_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

size_t sd_tensor_bytes(const sd_tensor *t) { return sd_tensor_numel(t) * sd_dtype_size(t->dtype); }

size_t sd_arena_round(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

sd_status sd_arena_reserve(sd_arena *a, sd_backend *be, size_t bytes) {
    if (!a || !be || !be->ops) return SD_FAIL(SD_ERR_INVALID, "arena: NULL arena or backend");
    if (a->base && a->be != be) sd_arena_release(a);
    a->be = be;
    if (bytes > a->capacity || !a->base) {
        if (a->base) be->ops->free(be->ctx, a->base);
        a->base = NULL;
        a->capacity = 0;
        void *p = NULL;
        TRY(be->ops->alloc(be->ctx, bytes ? bytes : 64, &p));
        a->base = p;
        a->capacity = bytes;
        a->grows++;
    }
    a->used = 0;
    return SD_OK;
}

sd_status sd_arena_take(sd_arena *a, size_t bytes, void **out) {
    size_t need = sd_arena_round(bytes);
    if (!a->base || a->used + need > a->capacity)
        return SD_FAIL(SD_ERR_OOM, "arena: %zu bytes requested with %zu of %zu used; reserve more first", bytes,
                       a->used, a->capacity);
    *out = a->base + a->used;
    a->used += need;
    if (a->used > a->high_water) a->high_water = a->used;
    return SD_OK;
}

void sd_arena_release(sd_arena *a) {
    if (!a) return;
    if (a->base && a->be) a->be->ops->free(a->be->ctx, a->base);
    a->base = NULL;
    a->capacity = a->used = 0;
}
