/* test_activation.c: the CPU ReLU against the naive reference (odd sizes, the threaded path,
 * in place), NaN propagation, a finite-difference check of the backward away from the kink,
 * and the NULL-pointer errors; the fused residual add + ReLU (add_relu_fwd) bitwise add then
 * relu_fwd, in place on either input, NaN and signed zeros included. */
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

/* add_relu_fwd against sd_cpu_add then sd_cpu_relu_fwd, bit for bit; in place (y == a, y == b);
 * with NaN, infinities and zeros of both signs among the inputs. */
static void add_relu(size_t n, uint64_t seed) {
    sd_test_rng r = {seed};
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *s = malloc(n * sizeof(float));
    float *want = malloc(n * sizeof(float)), *y = sd_guard_alloc(n), *ya = sd_guard_alloc(n), *yb = sd_guard_alloc(n);
    sd_test_fill(&r, a, n, -1, 1);
    sd_test_fill(&r, b, n, -1, 1);
    static const float special[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f};
    for (size_t i = 0; i < n && i < 25; i++) a[i] = special[i % 5], b[i] = special[i / 5];
    EXPECT_OK(sd_cpu_add(k, n, a, b, s));
    EXPECT_OK(sd_cpu_relu_fwd(k, n, s, want)); /* checked against the reference above, which maps -0 to +0 */
    EXPECT_OK(sd_cpu_add_relu_fwd(k, n, a, b, y));
    memcpy(ya, a, n * sizeof(float));
    memcpy(yb, b, n * sizeof(float));
    EXPECT_OK(sd_cpu_add_relu_fwd(k, n, ya, b, ya));
    EXPECT_OK(sd_cpu_add_relu_fwd(k, n, a, yb, yb));
    EXPECT(memcmp(y, want, n * sizeof(float)) == 0 && sd_guard_ok(y, n), "add+relu n=%zu: bitwise add then relu", n);
    EXPECT(memcmp(ya, want, n * sizeof(float)) == 0 && memcmp(yb, want, n * sizeof(float)) == 0 && sd_guard_ok(ya, n) &&
               sd_guard_ok(yb, n),
           "add+relu n=%zu in place on a and on b", n);
    EXPECT_FAIL(sd_cpu_add_relu_fwd(k, n, NULL, b, y), SD_ERR_INVALID, "add+relu");
    EXPECT_FAIL(sd_cpu_add_relu_fwd(k, n, a, b, NULL), SD_ERR_INVALID, "add+relu");
    free(a); free(b); free(s); free(want);
    sd_guard_free(y); sd_guard_free(ya); sd_guard_free(yb);
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
    add_relu(25, 5);
    add_relu(100003, 6); /* threaded path */
    gradcheck();
    special_values();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_activation");
}
