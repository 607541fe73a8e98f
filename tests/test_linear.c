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
#include <stdio.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_dense.h"
#include "tests/xwb_check.h"

#define NMSE_TOL 1e-9

static double worst_nmse, worst_fd;

/* The op of one shape for xwb_check: the kernels on context k, the reference. */
typedef struct linear_op {
    sd_kctx *k;
    sd_linear_params p;
    char shape[80];
} linear_op;

static sd_status k_fwd(void *c, const float *x, const float *w, const float *b, float *y) {
    linear_op *o = c;
    return sd_cpu_linear_fwd(o->k, &o->p, x, w, b, y);
}
static sd_status k_bwd(void *c, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    linear_op *o = c;
    return sd_cpu_linear_bwd(o->k, &o->p, x, w, dy, dx, dw, db);
}
static sd_status r_fwd(void *c, const float *x, const float *w, const float *b, float *y) {
    return ref_linear_fwd(&((linear_op *)c)->p, x, w, b, y);
}
static sd_status r_bwd(void *c, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    return ref_linear_bwd(&((linear_op *)c)->p, x, w, dy, dx, dw, db);
}

static sd_xwb_op make_op(sd_kctx *k, int n, int in, int out, int bias, linear_op *o) {
    EXPECT_OK(sd_linear_params_make(&o->p, n, in, out, bias));
    o->k = k;
    snprintf(o->shape, sizeof o->shape, "n %d in %d out %d", n, in, out);
    return (sd_xwb_op){.name = "linear", .shape = o->shape, .xn = (size_t)n * in, .wn = (size_t)out * in,
                       .yn = (size_t)n * out, .bn = (size_t)out, .bias = bias, .ctx = o, .fwd = k_fwd, .bwd = k_bwd,
                       .ref_fwd = r_fwd, .ref_bwd = r_bwd};
}

/* Forward, backward with dx and backward without dx against the reference. */
static void parity(sd_kctx *k, int n, int in, int out, int bias, sd_test_rng *rng) {
    linear_op o;
    sd_xwb_op op = make_op(k, n, in, out, bias, &o);
    sd_xwb_parity(&op, NMSE_TOL, rng, &worst_nmse);
}

/* ---- finite differences (xwb_check.h): f = sum(y * r) is linear in each of x, w, b, so central
 * differences have no truncation error; they carry only the float rounding of the forward divided
 * by 2 eps. With eps = 5e-2 that is ~1e-4 relative (measured worst printed at the end); the bound
 * 5e-3 (denominator floor 0.1; the gradients are of order 1) leaves a wide margin, and a wrong term
 * gives errors of order 1. */
static void gradcheck(sd_kctx *k, int n, int in, int out, sd_test_rng *rng) {
    linear_op o;
    sd_xwb_op op = make_op(k, n, in, out, 1, &o);
    sd_xwb_gradcheck(&op, rng, &worst_fd);
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
