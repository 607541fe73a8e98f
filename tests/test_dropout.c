/* test_dropout.c: the CPU dropout against the naive reference (identical masks and values), the
 * mask's determinism in (seed, offset) and its keep rate, p = 0, a finite-difference check of
 * the backward, in-place use, and the NULL-pointer errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

/* Kept values are x * (1 / (1 - p)) in float (kernel) or x / (1 - p) in double (reference). */
#define DROPOUT_NMSE 1e-13
#define DROPOUT_GRAD_TOL 1e-3

static sd_kctx *k;

/* Byte buffers with guard bytes on both sides (sd_guard_alloc works in floats). */
#define BYTE_GUARD 64
static uint8_t *mask_alloc(size_t n) {
    uint8_t *raw = malloc(n + 2 * BYTE_GUARD);
    memset(raw, 0xA5, n + 2 * BYTE_GUARD);
    return raw + BYTE_GUARD;
}
static int mask_guard_ok(const uint8_t *m, size_t n) {
    for (size_t i = 0; i < BYTE_GUARD; i++)
        if (m[-1 - (ptrdiff_t)i] != 0xA5 || m[n + i] != 0xA5) return 0;
    return 1;
}
static void mask_free(uint8_t *m) { free(m - BYTE_GUARD); }

static void parity(size_t n, float prob, uint64_t seed, uint64_t offset) {
    sd_dropout_params p;
    EXPECT_OK(sd_dropout_params_make(&p, n, prob, seed, offset));
    sd_test_rng r = {seed ^ 0x55};
    float *x = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
    sd_test_fill(&r, x, n, -1, 1);
    sd_test_fill(&r, dy, n, -1, 1);
    float *y = sd_guard_alloc(n), *yr = malloc(n * sizeof(float));
    float *dx = sd_guard_alloc(n), *dxr = malloc(n * sizeof(float));
    uint8_t *m = mask_alloc(n), *mr = malloc(n);
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, m));
    EXPECT_OK(ref_dropout_fwd(&p, x, yr, mr));
    EXPECT(memcmp(m, mr, n) == 0 && mask_guard_ok(m, n), "dropout mask n=%zu p=%g differs or overflows", n, prob);
    const double e = sd_nmse(y, yr, n);
    EXPECT(e <= DROPOUT_NMSE && sd_all_finite(y, n) && sd_guard_ok(y, n), "dropout fwd n=%zu p=%g: nmse %.3g", n,
           prob, e);
    EXPECT_OK(sd_cpu_dropout_bwd(k, &p, dy, mr, dx));
    EXPECT_OK(ref_dropout_bwd(&p, dy, mr, dxr));
    const double eb = sd_nmse(dx, dxr, n);
    EXPECT(eb <= DROPOUT_NMSE && sd_all_finite(dx, n) && sd_guard_ok(dx, n), "dropout bwd n=%zu p=%g: nmse %.3g", n,
           prob, eb);
    /* In place: y == x, dx == dy. */
    float *io = sd_guard_alloc(n);
    memcpy(io, x, n * sizeof(float));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, io, io, m));
    EXPECT(memcmp(io, y, n * sizeof(float)) == 0 && sd_guard_ok(io, n), "dropout fwd in place n=%zu", n);
    memcpy(io, dy, n * sizeof(float));
    EXPECT_OK(sd_cpu_dropout_bwd(k, &p, io, m, io));
    EXPECT(memcmp(io, dx, n * sizeof(float)) == 0 && sd_guard_ok(io, n), "dropout bwd in place n=%zu", n);
    free(x); free(dy); free(yr); free(dxr); free(mr);
    sd_guard_free(y); sd_guard_free(dx); sd_guard_free(io);
    mask_free(m);
}

static void mask_properties(void) {
    const size_t n = 100000;
    const float prob = 0.3f;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    sd_dropout_params p;
    EXPECT_OK(sd_dropout_params_make(&p, n, prob, 1234, 0));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, a));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, b));
    EXPECT(memcmp(a, b, n) == 0, "same seed and offset must draw the same mask");
    EXPECT_OK(sd_dropout_params_make(&p, n, prob, 1234, n));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, c));
    size_t same = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        same += a[i] == c[i];
        kept += a[i];
    }
    /* Independent masks agree on p^2 + (1-p)^2 = 58% of the elements, not all of them. */
    EXPECT(same < n * 6 / 10 + 2000 && same > n * 56 / 100 - 2000, "masks at offsets 0 and n agree on %zu of %zu",
           same, n);
    /* A shifted offset is the same stream shifted: offset 1 reproduces offset 0 from element 1. */
    EXPECT_OK(sd_dropout_params_make(&p, n, prob, 1234, 1));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, c));
    EXPECT(memcmp(a + 1, c, n - 1) == 0, "offset 1 must continue the offset-0 stream");
    EXPECT(memcmp(a, c, n) != 0, "offset 1 must differ element-wise from offset 0");
    EXPECT_OK(sd_dropout_params_make(&p, n, prob, 999, 0));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, c));
    EXPECT(memcmp(a, c, n) != 0, "another seed must draw another mask");
    /* Keep rate within 3 sigma of 1 - p. */
    const double rate = (double)kept / n, sigma = sqrt(prob * (1.0 - prob) / n);
    EXPECT(fabs(rate - (1.0 - prob)) <= 3 * sigma, "keep rate %.5f, want %.5f +- %.5f", rate, 1.0 - prob, 3 * sigma);
    /* Kept values are scaled by 1 / (1 - p), so the mean is preserved. */
    int scaled = 1;
    EXPECT_OK(sd_dropout_params_make(&p, n, prob, 1234, 0));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, a));
    for (size_t i = 0; i < n; i++) scaled &= a[i] ? y[i] == 1.0f / (1.0f - prob) : y[i] == 0.0f;
    EXPECT(scaled, "kept values must be x / (1 - p), dropped ones 0");

    /* p = 0 keeps everything unchanged. */
    EXPECT_OK(sd_dropout_params_make(&p, n, 0.0f, 5, 77));
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, a));
    size_t all = 0;
    for (size_t i = 0; i < n; i++) all += a[i] == 1 && y[i] == 1.0f;
    EXPECT(all == n, "p = 0 dropped %zu elements", n - all);
    free(x); free(y); free(a); free(b); free(c);
}

typedef struct drop_fd {
    sd_dropout_params p;
    const float *x, *r;
    float *y;
    uint8_t *m;
} drop_fd;

static double drop_f(void *ctx, const float *unused) {
    (void)unused;
    drop_fd *c = ctx;
    if (sd_cpu_dropout_fwd(k, &c->p, c->x, c->y, c->m) != SD_OK) return NAN;
    double s = 0;
    for (size_t i = 0; i < c->p.count; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void gradcheck(void) {
    const size_t n = 301;
    sd_dropout_params p;
    EXPECT_OK(sd_dropout_params_make(&p, n, 0.4f, 42, 1000));
    sd_test_rng rng = {3};
    float x[301], r[301], y[301], dx[301];
    uint8_t m[301];
    sd_test_fill(&rng, x, n, -1, 1);
    sd_test_fill(&rng, r, n, -1, 1);
    EXPECT_OK(sd_cpu_dropout_fwd(k, &p, x, y, m));
    EXPECT_OK(sd_cpu_dropout_bwd(k, &p, r, m, dx));
    drop_fd ctx = {p, x, r, y, m};
    const double e = sd_gradcheck(drop_f, &ctx, x, n, dx, 1e-2f, n, 1e-3, &rng);
    EXPECT(e <= DROPOUT_GRAD_TOL, "dropout gradcheck %.3g", e);
}

static void errors(void) {
    sd_dropout_params p;
    EXPECT_OK(sd_dropout_params_make(&p, 4, 0.5f, 1, 0));
    float x[4] = {0}, y[4];
    uint8_t m[4];
    EXPECT_FAIL(sd_cpu_dropout_fwd(k, &p, NULL, y, m), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_fwd(k, &p, x, NULL, m), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_fwd(k, &p, x, y, NULL), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_fwd(k, NULL, x, y, m), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_fwd(NULL, &p, x, y, m), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_bwd(k, &p, x, NULL, y), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_bwd(k, &p, NULL, m, y), SD_ERR_INVALID, "dropout");
    EXPECT_FAIL(sd_cpu_dropout_bwd(k, &p, x, m, NULL), SD_ERR_INVALID, "dropout");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_dropout", sd_last_error());
    parity(1, 0.5f, 1, 0);
    parity(17, 0.1f, 2, 5);
    parity(1000, 0.5f, 3, 123456789);
    parity(100003, 0.25f, 4, 7); /* threaded path */
    parity(5000, 0.9f, 5, 0);
    mask_properties();
    gradcheck();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_dropout");
}
