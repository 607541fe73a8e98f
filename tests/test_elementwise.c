/* test_elementwise.c: the CPU add, axpy and scale against the naive reference on odd sizes and
 * the threaded path, with outputs aliasing inputs; all_finite with NaN/Inf at the ends, in the
 * middle and in the threaded tail; the NULL-pointer errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

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

/* all_finite on n elements that are finite but for `bad` placed at index `at` (at < 0: none). */
static void finite_case(size_t n, long at, float bad) {
    float *x = malloc(n * sizeof(float));
    sd_test_rng r = {n};
    sd_test_fill(&r, x, n, -1e38f, 1e38f); /* large but finite: no false alarm on big values */
    if (at >= 0) x[at] = bad;
    bool all = at >= 0;
    EXPECT_OK(sd_cpu_all_finite(k, n, x, &all));
    EXPECT(all == (at < 0), "all_finite n=%zu with %g at %ld: got %d", n, (double)bad, at, (int)all);
    free(x);
}

static void all_finite(void) {
    const size_t sizes[] = {1, 17, 262147}; /* 262147: the threaded path with an odd tail */
    for (int s = 0; s < 3; s++) {
        const size_t n = sizes[s];
        finite_case(n, -1, 0);
        const long places[] = {0, (long)n / 2, (long)n - 1};
        for (int p = 0; p < 3; p++) {
            finite_case(n, places[p], NAN);
            finite_case(n, places[p], INFINITY);
            finite_case(n, places[p], -INFINITY);
        }
    }
    bool all = false;
    EXPECT_OK(sd_cpu_all_finite(k, 0, (const float *)&all, &all)); /* count 0: nothing is read */
    EXPECT(all, "all_finite of nothing is true");
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
    bool all;
    EXPECT_FAIL(sd_cpu_all_finite(k, 2, NULL, &all), SD_ERR_INVALID, "all_finite");
    EXPECT_FAIL(sd_cpu_all_finite(k, 2, a, NULL), SD_ERR_INVALID, "all_finite");
    EXPECT_FAIL(sd_cpu_all_finite(NULL, 2, a, &all), SD_ERR_INVALID, "all_finite");
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
    all_finite();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_elementwise");
}
