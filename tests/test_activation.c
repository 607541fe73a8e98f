/* test_activation.c: the CPU ReLU against the naive reference (odd sizes, the threaded path,
 * in place), NaN propagation, a finite-difference check of the backward away from the kink,
 * and the NULL-pointer errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

/* ReLU selects values, so kernel and reference must agree exactly. */
#define RELU_NMSE 0.0
#define RELU_GRAD_TOL 1e-3

static sd_kctx *k;

static void parity(size_t n, uint64_t seed) {
    sd_test_rng r = {seed};
    float *x = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
    sd_test_fill(&r, x, n, -1, 1);
    sd_test_fill(&r, dy, n, -1, 1);
    float *y = sd_guard_alloc(n), *yr = malloc(n * sizeof(float));
    float *dx = sd_guard_alloc(n), *dxr = malloc(n * sizeof(float));
    EXPECT_OK(sd_cpu_relu_fwd(k, n, x, y));
    EXPECT_OK(ref_relu_fwd(n, x, yr));
    EXPECT(sd_nmse(y, yr, n) <= RELU_NMSE && sd_all_finite(y, n) && sd_guard_ok(y, n), "relu fwd n=%zu", n);
    EXPECT_OK(sd_cpu_relu_bwd(k, n, y, dy, dx));
    EXPECT_OK(ref_relu_bwd(n, yr, dy, dxr));
    EXPECT(sd_nmse(dx, dxr, n) <= RELU_NMSE && sd_all_finite(dx, n) && sd_guard_ok(dx, n), "relu bwd n=%zu", n);

    /* In place: y == x for the forward, dx == dy for the backward. */
    float *xi = sd_guard_alloc(n), *gi = sd_guard_alloc(n);
    memcpy(xi, x, n * sizeof(float));
    memcpy(gi, dy, n * sizeof(float));
    EXPECT_OK(sd_cpu_relu_fwd(k, n, xi, xi));
    EXPECT(memcmp(xi, yr, n * sizeof(float)) == 0 && sd_guard_ok(xi, n), "relu fwd in place n=%zu", n);
    EXPECT_OK(sd_cpu_relu_bwd(k, n, xi, gi, gi));
    EXPECT(memcmp(gi, dxr, n * sizeof(float)) == 0 && sd_guard_ok(gi, n), "relu bwd in place n=%zu", n);
    free(x); free(dy); free(yr); free(dxr);
    sd_guard_free(y); sd_guard_free(dx); sd_guard_free(xi); sd_guard_free(gi);
}

typedef struct relu_fd {
    size_t n;
    const float *x, *r;
    float *y;
} relu_fd;

static double relu_f(void *ctx, const float *unused) {
    (void)unused;
    relu_fd *c = ctx;
    if (sd_cpu_relu_fwd(k, c->n, c->x, c->y) != SD_OK) return NAN;
    double s = 0;
    for (size_t i = 0; i < c->n; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void gradcheck(void) {
    const size_t n = 257;
    sd_test_rng rng = {9};
    float x[257], r[257], y[257], dx[257];
    /* |x| >= 0.1 keeps every point 100 steps away from the kink at 0. */
    for (size_t i = 0; i < n; i++) {
        const float m = sd_test_uniform(&rng, 0.1f, 1.0f);
        x[i] = (sd_test_next(&rng) & 1) ? m : -m;
    }
    sd_test_fill(&rng, r, n, -1, 1);
    relu_fd ctx = {n, x, r, y};
    EXPECT_OK(sd_cpu_relu_fwd(k, n, x, y));
    EXPECT_OK(sd_cpu_relu_bwd(k, n, y, r, dx));
    const double e = sd_gradcheck(relu_f, &ctx, x, n, dx, 1e-3f, n, 1e-3, &rng);
    EXPECT(e <= RELU_GRAD_TOL, "relu gradcheck %.3g", e);
}

static void special_values(void) {
    const float x[4] = {NAN, -INFINITY, INFINITY, -0.0f};
    float y[4];
    EXPECT_OK(sd_cpu_relu_fwd(k, 4, x, y));
    EXPECT(isnan(y[0]), "relu(NaN) = %g, want NaN (PyTorch propagates it)", y[0]);
    EXPECT(y[1] == 0.0f && isinf(y[2]) && y[2] > 0 && y[3] == 0.0f, "relu(-inf, inf, -0) = %g %g %g", y[1], y[2], y[3]);
}

static void errors(void) {
    float a[4] = {0}, b[4];
    EXPECT_FAIL(sd_cpu_relu_fwd(k, 4, NULL, b), SD_ERR_INVALID, "relu");
    EXPECT_FAIL(sd_cpu_relu_fwd(k, 4, a, NULL), SD_ERR_INVALID, "relu");
    EXPECT_FAIL(sd_cpu_relu_fwd(NULL, 4, a, b), SD_ERR_INVALID, "relu");
    EXPECT_FAIL(sd_cpu_relu_bwd(k, 4, a, NULL, b), SD_ERR_INVALID, "relu");
    EXPECT_FAIL(sd_cpu_relu_bwd(k, 4, NULL, a, b), SD_ERR_INVALID, "relu");
    EXPECT_FAIL(sd_cpu_relu_bwd(k, 4, a, a, NULL), SD_ERR_INVALID, "relu");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_activation", sd_last_error());
    parity(1, 1);
    parity(7, 2);
    parity(1000, 3);
    parity(100003, 4); /* threaded path, odd tail */
    gradcheck();
    special_values();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_activation");
}
