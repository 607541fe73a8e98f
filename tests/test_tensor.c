/* test_tensor.c: tensors and arenas: dtype sizes, element counts, 64-byte aligned carving, the
 * high-water rule (no reallocation below the largest size reserved) and the out-of-room error. */
#include <stdint.h>

#include "engine/tensor.h"
#include "tests/harness.h"

int main(void) {
    sd_backend be;
    EXPECT_OK(sd_backend_cpu_create(&be, 1));
    EXPECT(sd_dtype_size(SD_F32) == 4 && sd_dtype_size(SD_F16) == 2 && sd_dtype_size(SD_BF16) == 2 &&
               sd_dtype_size(SD_I32) == 4 && sd_dtype_size(SD_U8) == 1, "dtype sizes");
    sd_tensor t = {.dtype = SD_F16, .ndim = 4, .shape = {2, 3, 4, 5}};
    EXPECT(sd_tensor_numel(&t) == 120 && sd_tensor_bytes(&t) == 240, "numel %zu bytes %zu", sd_tensor_numel(&t),
           sd_tensor_bytes(&t));

    sd_arena a = {0};
    EXPECT_OK(sd_arena_reserve(&a, &be, 1000));
    void *p = NULL, *q = NULL;
    EXPECT_OK(sd_arena_take(&a, 10, &p));
    EXPECT_OK(sd_arena_take(&a, 100, &q));
    EXPECT(((uintptr_t)p % 64) == 0 && ((uintptr_t)q % 64) == 0 && (char *)q - (char *)p == 64, "aligned carving");
    EXPECT_FAIL(sd_arena_take(&a, 1000, &p), SD_ERR_OOM, "reserve more");
    unsigned grows = a.grows;
    EXPECT_OK(sd_arena_reserve(&a, &be, 500)); /* below the mark: same block, reset */
    EXPECT(a.grows == grows && a.used == 0 && a.capacity == 1000, "no reallocation below the high-water mark");
    EXPECT_OK(sd_arena_reserve(&a, &be, 4000));
    EXPECT(a.grows == grows + 1 && a.capacity == 4000, "grows past the mark");
    EXPECT(a.high_water >= 192, "high water %zu", a.high_water);
    sd_arena_release(&a);
    EXPECT(a.base == NULL && a.capacity == 0, "released");
    EXPECT_FAIL(sd_arena_reserve(&a, NULL, 10), SD_ERR_INVALID, "arena");
    sd_backend_destroy(&be);
    return sd_test_finish("test_tensor");
}
