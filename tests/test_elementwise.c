/* test_elementwise.c: the CPU add, axpy and scale against the naive reference on odd sizes and
 * the threaded path, with outputs aliasing inputs, and the NULL-pointer errors. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/cpu/cpu_kernels.h"
#include "ref/ref_misc.h"

/* One float rounding per element (axpy may fuse into an FMA, the reference rounds once from
 * double): NMSE well below float epsilon squared times a few. */
#define EW_NMSE 1e-13

static sd_kctx *k;

static void check(const char *what, size_t n, const float *got, const float *ref) {
    const double e = sd_nmse(got, ref, n);
    EXPECT(e <= EW_NMSE && sd_all_finite(got, n) && sd_guard_ok(got, n), "%s n=%zu: nmse %.3g", what, n, e);
}

static void parity(size_t n, uint64_t seed) {
    sd_test_rng r = {seed};
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    sd_test_fill(&r, a, n, -2, 2);
    sd_test_fill(&r, b, n, -2, 2);
    float *y = sd_guard_alloc(n);

    EXPECT_OK(sd_cpu_add(k, n, a, b, y));
    EXPECT_OK(ref_add(n, a, b, ref));
    check("add", n, y, ref);
    memcpy(y, a, n * sizeof(float)); /* y aliases a */
    EXPECT_OK(sd_cpu_add(k, n, y, b, y));
    check("add (y == a)", n, y, ref);
    memcpy(y, b, n * sizeof(float)); /* y aliases b */
    EXPECT_OK(sd_cpu_add(k, n, a, y, y));
    check("add (y == b)", n, y, ref);

    memcpy(y, b, n * sizeof(float));
    memcpy(ref, b, n * sizeof(float));
    EXPECT_OK(sd_cpu_axpy(k, n, -0.37f, a, y));
    EXPECT_OK(ref_axpy(n, -0.37f, a, ref));
    check("axpy", n, y, ref);
    memcpy(y, a, n * sizeof(float)); /* x == y: y = (1 + alpha) y */
    EXPECT_OK(sd_cpu_axpy(k, n, 0.5f, y, y));
    for (size_t i = 0; i < n; i++) ref[i] = 1.5f * a[i];
    check("axpy (x == y)", n, y, ref);

    memcpy(y, a, n * sizeof(float));
    memcpy(ref, a, n * sizeof(float));
    EXPECT_OK(sd_cpu_scale(k, n, 3.25f, y));
    EXPECT_OK(ref_scale(n, 3.25f, ref));
    check("scale", n, y, ref);
    free(a); free(b); free(ref);
    sd_guard_free(y);
}

static void errors(void) {
    float a[2] = {1, 2}, b[2] = {3, 4};
    EXPECT_FAIL(sd_cpu_add(k, 2, NULL, b, a), SD_ERR_INVALID, "add");
    EXPECT_FAIL(sd_cpu_add(k, 2, a, NULL, a), SD_ERR_INVALID, "add");
    EXPECT_FAIL(sd_cpu_add(k, 2, a, b, NULL), SD_ERR_INVALID, "add");
    EXPECT_FAIL(sd_cpu_add(NULL, 2, a, b, a), SD_ERR_INVALID, "add");
    EXPECT_FAIL(sd_cpu_axpy(k, 2, 1.0f, NULL, a), SD_ERR_INVALID, "axpy");
    EXPECT_FAIL(sd_cpu_axpy(k, 2, 1.0f, a, NULL), SD_ERR_INVALID, "axpy");
    EXPECT_FAIL(sd_cpu_scale(k, 2, 1.0f, NULL), SD_ERR_INVALID, "scale");
    EXPECT_FAIL(sd_cpu_scale(NULL, 2, 1.0f, a), SD_ERR_INVALID, "scale");
    /* count 0 is a no-op. */
    EXPECT_OK(sd_cpu_add(k, 0, a, b, a));
    EXPECT(a[0] == 1 && a[1] == 2, "add with count 0 wrote");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_elementwise", sd_last_error());
    parity(1, 1);
    parity(13, 2);
    parity(4099, 3);
    parity(262147, 4); /* threaded path, odd tail */
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_elementwise");
}
