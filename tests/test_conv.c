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
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/cpu/cpu_kernels.h"
#include "ref/ref_dense.h"

#define NMSE_TOL 1e-9

static double worst_nmse, worst_fd;

typedef struct shape {
    int n, c, h, w, k, kh, kw, sh, sw, ph, pw, bias;
} shape;

static float *rand_buf(sd_test_rng *r, size_t n) {
    float *b = malloc(n * sizeof(float)); /* exact size: ASan catches any over-read */
    if (b) sd_test_fill(r, b, n, -1.0f, 1.0f);
    return b;
}

static void check_out(const char *what, const shape *s, const float *got, const float *want, size_t n) {
    const double e = sd_nmse(got, want, n);
    if (e > worst_nmse) worst_nmse = e;
    EXPECT(sd_guard_ok(got, n), "%s: guard overwritten for [%d,%d,%d,%d] k%d %dx%d s%dx%d p%dx%d", what, s->n, s->c,
           s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw);
    EXPECT(sd_all_finite(got, n), "%s: non-finite output for [%d,%d,%d,%d] k%d %dx%d s%dx%d p%dx%d", what, s->n,
           s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw);
    EXPECT(e < NMSE_TOL, "%s: nmse %.3g for [%d,%d,%d,%d] k%d %dx%d s%dx%d p%dx%d bias %d", what, e, s->n, s->c, s->h,
           s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, s->bias);
}

/* Forward, backward with dx and backward without dx against the reference. */
static void parity(sd_kctx *k, const shape *s, sd_test_rng *rng) {
    sd_conv2d_params p;
    sd_status st = sd_conv2d_params_make(&p, s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw,
                                         s->bias);
    EXPECT(st == SD_OK, "params: %s", sd_last_error());
    if (st != SD_OK) return;
    const size_t xn = (size_t)p.n * p.c * p.h * p.w, wn = (size_t)p.k * p.c * p.kh * p.kw;
    const size_t yn = (size_t)p.n * p.k * p.oh * p.ow, bn = (size_t)p.k;
    float *x = rand_buf(rng, xn), *w = rand_buf(rng, wn), *b = rand_buf(rng, bn), *dy = rand_buf(rng, yn);
    float *y = sd_guard_alloc(yn), *dx = sd_guard_alloc(xn), *dw = sd_guard_alloc(wn), *db = sd_guard_alloc(bn);
    float *ry = malloc(yn * sizeof(float)), *rdx = malloc(xn * sizeof(float)), *rdw = malloc(wn * sizeof(float)),
          *rdb = malloc(bn * sizeof(float));
    if (!x || !w || !b || !dy || !y || !dx || !dw || !db || !ry || !rdx || !rdw || !rdb) {
        EXPECT(0, "allocation failed");
        goto out;
    }
    const float *bias = s->bias ? b : NULL;
    EXPECT_OK(ref_conv2d_fwd(&p, x, w, bias, ry));
    EXPECT_OK(ref_conv2d_bwd(&p, x, w, dy, rdx, rdw, s->bias ? rdb : NULL));

    EXPECT_OK(sd_cpu_conv2d_fwd(k, &p, x, w, bias, y));
    check_out("conv2d fwd y", s, y, ry, yn);
    EXPECT_OK(sd_cpu_conv2d_bwd(k, &p, x, w, dy, dx, dw, s->bias ? db : NULL));
    check_out("conv2d bwd dx", s, dx, rdx, xn);
    check_out("conv2d bwd dw", s, dw, rdw, wn);
    if (s->bias) check_out("conv2d bwd db", s, db, rdb, bn);

    /* dx == NULL: the weight gradients alone, overwritten again (not accumulated). */
    for (size_t i = 0; i < wn; i++) dw[i] = 1e30f;
    for (size_t i = 0; i < bn; i++) db[i] = 1e30f;
    EXPECT_OK(sd_cpu_conv2d_bwd(k, &p, x, w, dy, NULL, dw, s->bias ? db : NULL));
    check_out("conv2d bwd (no dx) dw", s, dw, rdw, wn);
    if (s->bias) check_out("conv2d bwd (no dx) db", s, db, rdb, bn);
out:
    free(x), free(w), free(b), free(dy), free(ry), free(rdx), free(rdw), free(rdb);
    sd_guard_free(y), sd_guard_free(dx), sd_guard_free(dw), sd_guard_free(db);
}

/* ---- finite differences: f = sum(y * r) is linear in each of x, w, b, so central differences
 * have no truncation error at any step; what remains is the float rounding of the forward (f is a
 * sum of a few hundred float outputs, absolute error ~1e-5) divided by 2 eps. A large step,
 * eps = 5e-2, keeps that near 1e-4 relative (measured worst printed at the end); the bound is 5e-3,
 * with a floor of 0.1 on the denominator (the gradients here are of order 1). A wrong index or a
 * missing term gives errors of order 1. */
typedef struct fd_ctx {
    sd_kctx *k;
    const sd_conv2d_params *p;
    const float *x, *w, *b, *r;
    int which; /* 0: vary x, 1: w, 2: b */
    float *y;
} fd_ctx;

static double fd_f(void *vctx, const float *v) {
    fd_ctx *c = vctx;
    const float *x = c->which == 0 ? v : c->x, *w = c->which == 1 ? v : c->w, *b = c->which == 2 ? v : c->b;
    if (sd_cpu_conv2d_fwd(c->k, c->p, x, w, c->p->has_bias ? b : NULL, c->y) != SD_OK) return NAN;
    const size_t yn = (size_t)c->p->n * c->p->k * c->p->oh * c->p->ow;
    double s = 0.0;
    for (size_t i = 0; i < yn; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void gradcheck(sd_kctx *k, const shape *s, sd_test_rng *rng) {
    sd_conv2d_params p;
    EXPECT_OK(sd_conv2d_params_make(&p, s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw,
                                    s->bias));
    const size_t xn = (size_t)p.n * p.c * p.h * p.w, wn = (size_t)p.k * p.c * p.kh * p.kw;
    const size_t yn = (size_t)p.n * p.k * p.oh * p.ow, bn = (size_t)p.k;
    float *x = rand_buf(rng, xn), *w = rand_buf(rng, wn), *b = rand_buf(rng, bn), *r = rand_buf(rng, yn);
    float *y = malloc(yn * sizeof(float)), *dx = malloc(xn * sizeof(float)), *dw = malloc(wn * sizeof(float)),
          *db = malloc(bn * sizeof(float));
    if (!x || !w || !b || !r || !y || !dx || !dw || !db) {
        EXPECT(0, "allocation failed");
        goto out;
    }
    /* The gradient of sum(y * r) is the backward applied to dy = r. */
    EXPECT_OK(sd_cpu_conv2d_bwd(k, &p, x, w, r, dx, dw, s->bias ? db : NULL));
    fd_ctx c = {k, &p, x, w, b, r, 0, y};
    double e = sd_gradcheck(fd_f, &c, x, xn, dx, 5e-2f, xn, 1e-1, rng);
    if (e > worst_fd) worst_fd = e;
    EXPECT(e < 5e-3, "conv2d gradcheck dx: worst relative error %.3g", e);
    c.which = 1;
    e = sd_gradcheck(fd_f, &c, w, wn, dw, 5e-2f, wn, 1e-1, rng);
    if (e > worst_fd) worst_fd = e;
    EXPECT(e < 5e-3, "conv2d gradcheck dw: worst relative error %.3g", e);
    if (s->bias) {
        c.which = 2;
        e = sd_gradcheck(fd_f, &c, b, bn, db, 5e-2f, bn, 1e-1, rng);
        if (e > worst_fd) worst_fd = e;
        EXPECT(e < 5e-3, "conv2d gradcheck db: worst relative error %.3g", e);
    }
out:
    free(x), free(w), free(b), free(r), free(y), free(dx), free(dw), free(db);
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
