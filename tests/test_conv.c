/* test_conv.c: the CPU conv2d kernels (kernels/cpu/conv.c) against the naive double-precision
 * reference (tests/ref/ref_dense.c): forward, backward with and without dx, on kernel sizes 1x1
 * to 7x7 and 2x3, strides 1-3, padding 0-3, with and without bias, odd sizes, the Fashion-MNIST
 * CNN and ResNet-20 layer shapes at small batch, and shapes large enough to be split into bands;
 * finite-difference checks of dx, dw and db; batch sizes that change between calls on one
 * context; 1, 2 and 3 threads; and NULL pointers.
 *
 * Tolerance: every output element is a float sum of up to a few thousand products of values in
 * [-1, 1], which the kernels order differently from the reference; float rounding then gives an
 * NMSE of about 1e-14..1e-12 against the double reference (measured worst: printed below). The
 * bound 1e-9 is 1000x above that and some 1e7x below what any indexing or missing-term bug gives
 * (one wrong term in a sum of Kd gives roughly 1/Kd >= 1e-3). */
#include <stdbool.h>
#include <stdio.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_dense.h"
#include "tests/xwb_check.h"

#define NMSE_TOL 1e-9

static double worst_nmse, worst_fd;

typedef struct shape {
    int n, c, h, w, k, kh, kw, sh, sw, ph, pw, bias;
} shape;

/* The op of one shape for xwb_check: the kernels on context k, the reference. */
typedef struct conv_op {
    sd_kctx *k;
    sd_conv2d_params p;
    char shape[120];
} conv_op;

static sd_status k_fwd(void *c, const float *x, const float *w, const float *b, float *y) {
    conv_op *o = c;
    return sd_cpu_conv2d_fwd(o->k, &o->p, x, w, b, y);
}
static sd_status k_bwd(void *c, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    conv_op *o = c;
    return sd_cpu_conv2d_bwd(o->k, &o->p, x, w, dy, dx, dw, db);
}
static sd_status r_fwd(void *c, const float *x, const float *w, const float *b, float *y) {
    return ref_conv2d_fwd(&((conv_op *)c)->p, x, w, b, y);
}
static sd_status r_bwd(void *c, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    return ref_conv2d_bwd(&((conv_op *)c)->p, x, w, dy, dx, dw, db);
}

/* Fills *o and *op for shape s on context k; false (counted as a failure) if the shape is refused. */
static bool make_op(sd_kctx *k, const shape *s, conv_op *o, sd_xwb_op *op) {
    sd_status st = sd_conv2d_params_make(&o->p, s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph,
                                         s->pw, s->bias);
    EXPECT(st == SD_OK, "params: %s", sd_last_error());
    if (st != SD_OK) return false;
    o->k = k;
    snprintf(o->shape, sizeof o->shape, "[%d,%d,%d,%d] k%d %dx%d s%dx%d p%dx%d", s->n, s->c, s->h, s->w, s->k, s->kh,
             s->kw, s->sh, s->sw, s->ph, s->pw);
    const sd_conv2d_params *p = &o->p;
    *op = (sd_xwb_op){.name = "conv2d", .shape = o->shape, .xn = (size_t)p->n * p->c * p->h * p->w,
                      .wn = (size_t)p->k * p->c * p->kh * p->kw, .yn = (size_t)p->n * p->k * p->oh * p->ow,
                      .bn = (size_t)p->k, .bias = s->bias, .ctx = o, .fwd = k_fwd, .bwd = k_bwd, .ref_fwd = r_fwd,
                      .ref_bwd = r_bwd};
    return true;
}

/* Forward, backward with dx and backward without dx against the reference. */
static void parity(sd_kctx *k, const shape *s, sd_test_rng *rng) {
    conv_op o;
    sd_xwb_op op;
    if (make_op(k, s, &o, &op)) sd_xwb_parity(&op, NMSE_TOL, rng, &worst_nmse);
}

/* ---- finite differences (xwb_check.h): f = sum(y * r) is linear in each of x, w, b, so central
 * differences have no truncation error at any step; what remains is the float rounding of the
 * forward (f is a sum of a few hundred float outputs, absolute error ~1e-5) divided by 2 eps. A
 * large step, eps = 5e-2, keeps that near 1e-4 relative (measured worst printed at the end); the
 * bound is 5e-3, with a floor of 0.1 on the denominator (the gradients here are of order 1). A
 * wrong index or a missing term gives errors of order 1. */
static void gradcheck(sd_kctx *k, const shape *s, sd_test_rng *rng) {
    conv_op o;
    sd_xwb_op op;
    if (make_op(k, s, &o, &op)) sd_xwb_gradcheck(&op, rng, &worst_fd);
}

/* ---- bad input ---------------------------------------------------------------------------- */
static void bad_input(sd_kctx *k) {
    sd_conv2d_params p, pnb;
    EXPECT_OK(sd_conv2d_params_make(&p, 1, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1));
    EXPECT_OK(sd_conv2d_params_make(&pnb, 1, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 0));
    float x[50] = {0}, w[54] = {0}, b[3] = {0}, y[75], dy[75] = {0}, dx[50], dw[54], db[3];
    EXPECT_FAIL(sd_cpu_conv2d_fwd(k, &p, NULL, w, b, y), SD_ERR_INVALID, "conv2d fwd");
    EXPECT_FAIL(sd_cpu_conv2d_fwd(k, &p, x, NULL, b, y), SD_ERR_INVALID, "conv2d fwd");
    EXPECT_FAIL(sd_cpu_conv2d_fwd(k, &p, x, w, b, NULL), SD_ERR_INVALID, "conv2d fwd");
    EXPECT_FAIL(sd_cpu_conv2d_fwd(k, &p, x, w, NULL, y), SD_ERR_INVALID, "bias");
    EXPECT_FAIL(sd_cpu_conv2d_fwd(NULL, &p, x, w, b, y), SD_ERR_INVALID, "conv2d fwd");
    EXPECT_FAIL(sd_cpu_conv2d_fwd(k, NULL, x, w, b, y), SD_ERR_INVALID, "conv2d fwd");
    EXPECT_OK(sd_cpu_conv2d_fwd(k, &pnb, x, w, NULL, y)); /* no bias: b may be NULL */
    EXPECT_FAIL(sd_cpu_conv2d_bwd(k, &p, NULL, w, dy, dx, dw, db), SD_ERR_INVALID, "conv2d bwd");
    EXPECT_FAIL(sd_cpu_conv2d_bwd(k, &p, x, NULL, dy, dx, dw, db), SD_ERR_INVALID, "conv2d bwd");
    EXPECT_FAIL(sd_cpu_conv2d_bwd(k, &p, x, w, NULL, dx, dw, db), SD_ERR_INVALID, "conv2d bwd");
    EXPECT_FAIL(sd_cpu_conv2d_bwd(k, &p, x, w, dy, dx, NULL, db), SD_ERR_INVALID, "conv2d bwd");
    EXPECT_FAIL(sd_cpu_conv2d_bwd(k, &p, x, w, dy, dx, dw, NULL), SD_ERR_INVALID, "bias gradient");
    EXPECT_FAIL(sd_cpu_conv2d_bwd(NULL, &p, x, w, dy, dx, dw, db), SD_ERR_INVALID, "conv2d bwd");
    EXPECT_OK(sd_cpu_conv2d_bwd(k, &pnb, x, w, dy, NULL, dw, NULL)); /* no bias, no dx */
}

int main(void) {
    sd_test_rng rng = {42};
    sd_kctx *k2 = NULL, *k1 = NULL, *k3 = NULL;
    EXPECT_OK(sd_cpu_kctx_create(2, &k2));
    EXPECT_OK(sd_cpu_kctx_create(1, &k1));
    EXPECT_OK(sd_cpu_kctx_create(3, &k3));
    if (!k2 || !k1 || !k3) return sd_test_finish("test_conv");

    /* n, c, h, w, k, kh, kw, sh, sw, ph, pw, bias */
    static const shape shapes[] = {
        {2, 3, 5, 7, 4, 1, 1, 1, 1, 0, 0, 1},      /* 1x1, plane not a whole number of vectors */
        {3, 8, 4, 4, 16, 1, 1, 1, 1, 0, 0, 0},     /* 1x1 on a 16-pixel plane (no im2col) */
        {2, 16, 8, 8, 8, 1, 1, 1, 1, 0, 0, 1},     /* 1x1, no im2col in forward and backward */
        {2, 16, 8, 8, 32, 1, 1, 2, 2, 0, 0, 0},    /* 1x1 stride 2 (ResNet shortcut) */
        {1, 2, 6, 6, 3, 1, 1, 2, 2, 0, 0, 0},      /* input rows and columns no window reads */
        {2, 3, 9, 9, 5, 3, 3, 1, 1, 1, 1, 1},
        {2, 4, 11, 10, 6, 3, 3, 2, 2, 1, 1, 0},
        {1, 2, 8, 8, 3, 3, 3, 2, 2, 0, 0, 1},      /* last input row unread */
        {2, 2, 12, 12, 7, 5, 5, 1, 1, 2, 2, 1},
        {1, 3, 15, 17, 8, 7, 7, 2, 2, 3, 3, 1},
        {2, 3, 7, 11, 5, 2, 3, 1, 3, 0, 2, 1},     /* 2x3 kernel, stride 1x3 */
        {2, 2, 10, 10, 3, 3, 3, 3, 3, 0, 0, 0},    /* stride 3 */
        {1, 2, 9, 9, 4, 7, 7, 3, 3, 3, 3, 1},      /* stride 3, padding 3 */
        {1, 2, 5, 5, 3, 3, 3, 1, 1, 3, 3, 1},      /* padding larger than half the kernel */
        {2, 1, 4, 6, 2, 2, 2, 1, 2, 1, 0, 1},      /* asymmetric stride and padding */
        {3, 5, 13, 11, 9, 3, 3, 1, 1, 1, 1, 1},    /* odd everything */
        {2, 4, 6, 6, 17, 3, 3, 1, 1, 1, 1, 1},     /* K just past a tile */
        {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1},      /* 1x1x1 */
        {5, 3, 3, 3, 2, 3, 3, 1, 1, 0, 0, 1},      /* one output pixel */
        {2, 1, 28, 28, 16, 5, 5, 1, 1, 2, 2, 1},   /* Fashion-MNIST CNN conv1 */
        {2, 16, 14, 14, 32, 5, 5, 1, 1, 2, 2, 1},  /* Fashion-MNIST CNN conv2 */
        {2, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 0},   /* ResNet-20 stem */
        {2, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 0},  /* ResNet-20 stage 1 */
        {2, 16, 32, 32, 32, 3, 3, 2, 2, 1, 1, 0},  /* stage 2 entry */
        {2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 0},  /* stage 2 */
        {2, 32, 16, 16, 64, 3, 3, 2, 2, 1, 1, 0},  /* stage 3 entry */
        {2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 0},    /* stage 3 */
        {2, 64, 32, 32, 8, 3, 3, 1, 1, 1, 1, 1},
        {1, 64, 64, 64, 8, 3, 3, 1, 1, 1, 1, 1},   /* a sample split into bands (backward too) */
        {1, 64, 64, 64, 8, 3, 3, 2, 2, 1, 1, 0},   /* bands, strided */
        {1, 48, 40, 21, 5, 3, 3, 1, 1, 1, 1, 1},   /* bands of uneven height */
    };
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < nshapes; i++) parity(k2, &shapes[i], &rng);

    /* Other thread counts (the dW partial sums are per thread) on a few shapes. */
    static const int subset[] = {2, 6, 15, 20, 28};
    for (int i = 0; i < (int)(sizeof subset / sizeof subset[0]); i++) {
        parity(k1, &shapes[subset[i]], &rng);
        parity(k3, &shapes[subset[i]], &rng);
    }

    /* Batch size changing on one context, shrinking and growing (scratch is reused). */
    static const int batches[] = {5, 2, 9, 1, 4};
    for (int i = 0; i < 5; i++) {
        shape s = {batches[i], 6, 10, 9, 12, 3, 3, 1, 1, 1, 1, 1};
        parity(k2, &s, &rng);
        shape t = {batches[i], 16, 8, 8, 8, 1, 1, 1, 1, 0, 0, 0};
        parity(k2, &t, &rng);
    }

    static const shape fd[] = {
        {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1},     /* stride 1: dx by the transposed convolution */
        {2, 3, 6, 7, 4, 3, 3, 2, 1, 1, 2, 1},     /* strided: dx by col2im */
        {2, 16, 4, 4, 3, 1, 1, 1, 1, 0, 0, 1},
        {1, 2, 7, 6, 3, 2, 3, 3, 2, 0, 1, 1},
    };
    for (int i = 0; i < (int)(sizeof fd / sizeof fd[0]); i++) gradcheck(k2, &fd[i], &rng);

    bad_input(k2);
    printf("test_conv: worst nmse %.3g (bound %.0e), worst finite-difference error %.3g (bound 5e-3)\n", worst_nmse,
           NMSE_TOL, worst_fd);
    sd_cpu_kctx_destroy(k1);
    sd_cpu_kctx_destroy(k2);
    sd_cpu_kctx_destroy(k3);
    return sd_test_finish("test_conv");
}
