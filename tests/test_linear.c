/* test_linear.c: the CPU linear kernels (kernels/cpu/linear.c) against the naive double-precision
 * reference (tests/ref/ref_dense.c): forward, backward with and without dx, with and without bias,
 * on shapes from 1x1x1 to the Fashion-MNIST classifier (1568 -> 10) and shapes that cross the
 * bias-gradient blocking (more than 64 rows, more than 256 outputs); finite-difference checks of
 * dx, dw and db; batch sizes changing on one context; NULL pointers.
 *
 * Tolerance: each output is a float sum of up to 1568 products of values in [-1, 1] (dW: up to 130
 * rows), ordered differently by OpenBLAS than by the reference; that gives an NMSE of about 1e-14
 * (measured worst printed below). The bound 1e-9 is far above that and far below any missing or
 * misplaced term (roughly 1 / in >= 1e-4). */
#include <math.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/cpu/cpu_kernels.h"
#include "ref/ref_dense.h"

#define NMSE_TOL 1e-9

static double worst_nmse, worst_fd;

static float *rand_buf(sd_test_rng *r, size_t n) {
    float *b = malloc(n * sizeof(float)); /* exact size: ASan catches any over-read */
    if (b) sd_test_fill(r, b, n, -1.0f, 1.0f);
    return b;
}

static void check_out(const char *what, const sd_linear_params *p, const float *got, const float *want, size_t n) {
    const double e = sd_nmse(got, want, n);
    if (e > worst_nmse) worst_nmse = e;
    EXPECT(sd_guard_ok(got, n), "%s: guard overwritten for n %d in %d out %d", what, p->n, p->in, p->out);
    EXPECT(sd_all_finite(got, n), "%s: non-finite output for n %d in %d out %d", what, p->n, p->in, p->out);
    EXPECT(e < NMSE_TOL, "%s: nmse %.3g for n %d in %d out %d bias %d", what, e, p->n, p->in, p->out, p->has_bias);
}

static void parity(sd_kctx *k, int n, int in, int out, int bias, sd_test_rng *rng) {
    sd_linear_params p;
    EXPECT_OK(sd_linear_params_make(&p, n, in, out, bias));
    const size_t xn = (size_t)n * in, wn = (size_t)out * in, yn = (size_t)n * out, bn = (size_t)out;
    float *x = rand_buf(rng, xn), *w = rand_buf(rng, wn), *b = rand_buf(rng, bn), *dy = rand_buf(rng, yn);
    float *y = sd_guard_alloc(yn), *dx = sd_guard_alloc(xn), *dw = sd_guard_alloc(wn), *db = sd_guard_alloc(bn);
    float *ry = malloc(yn * sizeof(float)), *rdx = malloc(xn * sizeof(float)), *rdw = malloc(wn * sizeof(float)),
          *rdb = malloc(bn * sizeof(float));
    if (!x || !w || !b || !dy || !y || !dx || !dw || !db || !ry || !rdx || !rdw || !rdb) {
        EXPECT(0, "allocation failed");
        goto out;
    }
    const float *bb = bias ? b : NULL;
    EXPECT_OK(ref_linear_fwd(&p, x, w, bb, ry));
    EXPECT_OK(ref_linear_bwd(&p, x, w, dy, rdx, rdw, bias ? rdb : NULL));
    EXPECT_OK(sd_cpu_linear_fwd(k, &p, x, w, bb, y));
    check_out("linear fwd y", &p, y, ry, yn);
    EXPECT_OK(sd_cpu_linear_bwd(k, &p, x, w, dy, dx, dw, bias ? db : NULL));
    check_out("linear bwd dx", &p, dx, rdx, xn);
    check_out("linear bwd dw", &p, dw, rdw, wn);
    if (bias) check_out("linear bwd db", &p, db, rdb, bn);
    /* dx == NULL, and gradients are overwritten rather than accumulated. */
    for (size_t i = 0; i < wn; i++) dw[i] = 1e30f;
    for (size_t i = 0; i < bn; i++) db[i] = 1e30f;
    EXPECT_OK(sd_cpu_linear_bwd(k, &p, x, w, dy, NULL, dw, bias ? db : NULL));
    check_out("linear bwd (no dx) dw", &p, dw, rdw, wn);
    if (bias) check_out("linear bwd (no dx) db", &p, db, rdb, bn);
out:
    free(x), free(w), free(b), free(dy), free(ry), free(rdx), free(rdw), free(rdb);
    sd_guard_free(y), sd_guard_free(dx), sd_guard_free(dw), sd_guard_free(db);
}

/* ---- finite differences: f = sum(y * r) is linear in each of x, w, b, so central differences
 * have no truncation error; they carry only the float rounding of the forward divided by 2 eps.
 * With eps = 5e-2 that is ~1e-4 relative (measured worst printed at the end); the bound 5e-3
 * (denominator floor 0.1; the gradients are of order 1) leaves a wide margin, and a wrong term
 * gives errors of order 1. */
typedef struct fd_ctx {
    sd_kctx *k;
    const sd_linear_params *p;
    const float *x, *w, *b, *r;
    int which; /* 0: vary x, 1: w, 2: b */
    float *y;
} fd_ctx;

static double fd_f(void *vctx, const float *v) {
    fd_ctx *c = vctx;
    const float *x = c->which == 0 ? v : c->x, *w = c->which == 1 ? v : c->w, *b = c->which == 2 ? v : c->b;
    if (sd_cpu_linear_fwd(c->k, c->p, x, w, c->p->has_bias ? b : NULL, c->y) != SD_OK) return NAN;
    double s = 0.0;
    for (size_t i = 0; i < (size_t)c->p->n * c->p->out; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void gradcheck(sd_kctx *k, int n, int in, int out, sd_test_rng *rng) {
    sd_linear_params p;
    EXPECT_OK(sd_linear_params_make(&p, n, in, out, 1));
    const size_t xn = (size_t)n * in, wn = (size_t)out * in, yn = (size_t)n * out, bn = (size_t)out;
    float *x = rand_buf(rng, xn), *w = rand_buf(rng, wn), *b = rand_buf(rng, bn), *r = rand_buf(rng, yn);
    float *y = malloc(yn * sizeof(float)), *dx = malloc(xn * sizeof(float)), *dw = malloc(wn * sizeof(float)),
          *db = malloc(bn * sizeof(float));
    if (!x || !w || !b || !r || !y || !dx || !dw || !db) {
        EXPECT(0, "allocation failed");
        goto out;
    }
    EXPECT_OK(sd_cpu_linear_bwd(k, &p, x, w, r, dx, dw, db));
    fd_ctx c = {k, &p, x, w, b, r, 0, y};
    double e = sd_gradcheck(fd_f, &c, x, xn, dx, 5e-2f, xn, 1e-1, rng);
    if (e > worst_fd) worst_fd = e;
    EXPECT(e < 5e-3, "linear gradcheck dx: worst relative error %.3g", e);
    c.which = 1;
    e = sd_gradcheck(fd_f, &c, w, wn, dw, 5e-2f, wn, 1e-1, rng);
    if (e > worst_fd) worst_fd = e;
    EXPECT(e < 5e-3, "linear gradcheck dw: worst relative error %.3g", e);
    c.which = 2;
    e = sd_gradcheck(fd_f, &c, b, bn, db, 5e-2f, bn, 1e-1, rng);
    if (e > worst_fd) worst_fd = e;
    EXPECT(e < 5e-3, "linear gradcheck db: worst relative error %.3g", e);
out:
    free(x), free(w), free(b), free(r), free(y), free(dx), free(dw), free(db);
}

static void bad_input(sd_kctx *k) {
    sd_linear_params p, pnb;
    EXPECT_OK(sd_linear_params_make(&p, 2, 3, 4, 1));
    EXPECT_OK(sd_linear_params_make(&pnb, 2, 3, 4, 0));
    float x[6] = {0}, w[12] = {0}, b[4] = {0}, y[8], dy[8] = {0}, dx[6], dw[12], db[4];
    EXPECT_FAIL(sd_cpu_linear_fwd(k, &p, NULL, w, b, y), SD_ERR_INVALID, "linear fwd");
    EXPECT_FAIL(sd_cpu_linear_fwd(k, &p, x, NULL, b, y), SD_ERR_INVALID, "linear fwd");
    EXPECT_FAIL(sd_cpu_linear_fwd(k, &p, x, w, b, NULL), SD_ERR_INVALID, "linear fwd");
    EXPECT_FAIL(sd_cpu_linear_fwd(k, &p, x, w, NULL, y), SD_ERR_INVALID, "bias");
    EXPECT_FAIL(sd_cpu_linear_fwd(NULL, &p, x, w, b, y), SD_ERR_INVALID, "linear fwd");
    EXPECT_FAIL(sd_cpu_linear_fwd(k, NULL, x, w, b, y), SD_ERR_INVALID, "linear fwd");
    EXPECT_OK(sd_cpu_linear_fwd(k, &pnb, x, w, NULL, y));
    EXPECT_FAIL(sd_cpu_linear_bwd(k, &p, NULL, w, dy, dx, dw, db), SD_ERR_INVALID, "linear bwd");
    EXPECT_FAIL(sd_cpu_linear_bwd(k, &p, x, NULL, dy, dx, dw, db), SD_ERR_INVALID, "linear bwd");
    EXPECT_FAIL(sd_cpu_linear_bwd(k, &p, x, w, NULL, dx, dw, db), SD_ERR_INVALID, "linear bwd");
    EXPECT_FAIL(sd_cpu_linear_bwd(k, &p, x, w, dy, dx, NULL, db), SD_ERR_INVALID, "linear bwd");
    EXPECT_FAIL(sd_cpu_linear_bwd(k, &p, x, w, dy, dx, dw, NULL), SD_ERR_INVALID, "bias gradient");
    EXPECT_FAIL(sd_cpu_linear_bwd(NULL, &p, x, w, dy, dx, dw, db), SD_ERR_INVALID, "linear bwd");
    EXPECT_OK(sd_cpu_linear_bwd(k, &pnb, x, w, dy, NULL, dw, NULL));
}

int main(void) {
    sd_test_rng rng = {7};
    sd_kctx *k = NULL;
    EXPECT_OK(sd_cpu_kctx_create(2, &k));
    if (!k) return sd_test_finish("test_linear");

    /* n, in, out, bias */
    static const int shapes[][4] = {
        {1, 1, 1, 1},    {1, 1, 1, 0},     {4, 7, 3, 1},     {3, 5, 8, 0},       {64, 1568, 10, 1},
        {64, 1568, 10, 0}, {33, 100, 257, 1}, {130, 5, 300, 1}, {17, 64, 513, 1}, {2, 300, 1, 1},
    };
    for (int i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); i++)
        parity(k, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], &rng);

    /* Batch size changing on one context, shrinking and growing. */
    static const int batches[] = {64, 5, 100, 1, 32};
    for (int i = 0; i < 5; i++) parity(k, batches[i], 96, 10, 1, &rng);

    gradcheck(k, 3, 7, 5, &rng);
    gradcheck(k, 1, 20, 3, &rng);

    bad_input(k);
    printf("test_linear: worst nmse %.3g (bound %.0e), worst finite-difference error %.3g (bound 5e-3)\n", worst_nmse,
           NMSE_TOL, worst_fd);
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_linear");
}
