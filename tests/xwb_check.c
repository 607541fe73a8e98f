/* xwb_check.c: parity and finite-difference checks of y = f(x, w, b) ops (xwb_check.h). */
#include "tests/xwb_check.h"

#include <math.h>
#include <stdlib.h>

static float *rand_buf(sd_test_rng *r, size_t n) {
    float *b = malloc((n ? n : 1) * sizeof(float)); /* exact size: ASan catches any over-read */
    if (b) sd_test_fill(r, b, n, -1.0f, 1.0f);
    return b;
}

static void check_out(const sd_xwb_op *op, const char *what, const float *got, const float *want, size_t n,
                      double tol, double *worst) {
    const double e = sd_nmse(got, want, n);
    if (e > *worst) *worst = e;
    EXPECT(sd_guard_ok(got, n), "%s %s: guard overwritten for %s", op->name, what, op->shape);
    EXPECT(sd_all_finite(got, n), "%s %s: non-finite output for %s", op->name, what, op->shape);
    EXPECT(e < tol, "%s %s: nmse %.3g for %s bias %d", op->name, what, e, op->shape, op->bias);
}

void sd_xwb_parity(const sd_xwb_op *op, double tol, sd_test_rng *rng, double *worst) {
    const size_t xn = op->xn, wn = op->wn, yn = op->yn, bn = op->bn;
    float *x = rand_buf(rng, xn), *w = rand_buf(rng, wn), *b = rand_buf(rng, bn), *dy = rand_buf(rng, yn);
    float *y = sd_guard_alloc(yn), *dx = sd_guard_alloc(xn), *dw = sd_guard_alloc(wn), *db = sd_guard_alloc(bn);
    float *ry = malloc(yn * sizeof(float)), *rdx = malloc(xn * sizeof(float)), *rdw = malloc(wn * sizeof(float)),
          *rdb = malloc(bn * sizeof(float));
    if (!x || !w || !b || !dy || !y || !dx || !dw || !db || !ry || !rdx || !rdw || !rdb) {
        EXPECT(0, "%s: allocation failed for %s", op->name, op->shape);
        goto out;
    }
    const float *bias = op->bias ? b : NULL;
    EXPECT_OK(op->ref_fwd(op->ctx, x, w, bias, ry));
    EXPECT_OK(op->ref_bwd(op->ctx, x, w, dy, rdx, rdw, op->bias ? rdb : NULL));

    EXPECT_OK(op->fwd(op->ctx, x, w, bias, y));
    check_out(op, "fwd y", y, ry, yn, tol, worst);
    EXPECT_OK(op->bwd(op->ctx, x, w, dy, dx, dw, op->bias ? db : NULL));
    check_out(op, "bwd dx", dx, rdx, xn, tol, worst);
    check_out(op, "bwd dw", dw, rdw, wn, tol, worst);
    if (op->bias) check_out(op, "bwd db", db, rdb, bn, tol, worst);

    /* dx == NULL: the weight gradients alone, overwritten again (not accumulated). */
    for (size_t i = 0; i < wn; i++) dw[i] = 1e30f;
    for (size_t i = 0; i < bn; i++) db[i] = 1e30f;
    EXPECT_OK(op->bwd(op->ctx, x, w, dy, NULL, dw, op->bias ? db : NULL));
    check_out(op, "bwd (no dx) dw", dw, rdw, wn, tol, worst);
    if (op->bias) check_out(op, "bwd (no dx) db", db, rdb, bn, tol, worst);
out:
    free(x), free(w), free(b), free(dy), free(ry), free(rdx), free(rdw), free(rdb);
    sd_guard_free(y), sd_guard_free(dx), sd_guard_free(dw), sd_guard_free(db);
}

/* f = sum(y * r) with one of x, w, b replaced by the varied vector. */
typedef struct fd_ctx {
    const sd_xwb_op *op;
    const float *x, *w, *b, *r;
    int which; /* 0: vary x, 1: w, 2: b */
    float *y;
} fd_ctx;

static double fd_f(void *vctx, const float *v) {
    fd_ctx *c = vctx;
    const float *x = c->which == 0 ? v : c->x, *w = c->which == 1 ? v : c->w, *b = c->which == 2 ? v : c->b;
    if (c->op->fwd(c->op->ctx, x, w, c->op->bias ? b : NULL, c->y) != SD_OK) return NAN;
    double s = 0.0;
    for (size_t i = 0; i < c->op->yn; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

void sd_xwb_gradcheck(const sd_xwb_op *op, sd_test_rng *rng, double *worst) {
    const size_t xn = op->xn, wn = op->wn, yn = op->yn, bn = op->bn;
    float *x = rand_buf(rng, xn), *w = rand_buf(rng, wn), *b = rand_buf(rng, bn), *r = rand_buf(rng, yn);
    float *y = malloc(yn * sizeof(float)), *dx = malloc(xn * sizeof(float)), *dw = malloc(wn * sizeof(float)),
          *db = malloc(bn * sizeof(float));
    if (!x || !w || !b || !r || !y || !dx || !dw || !db) {
        EXPECT(0, "%s: allocation failed for %s", op->name, op->shape);
        goto out;
    }
    /* The gradient of sum(y * r) is the backward applied to dy = r. */
    EXPECT_OK(op->bwd(op->ctx, x, w, r, dx, dw, op->bias ? db : NULL));
    fd_ctx c = {op, x, w, b, r, 0, y};
    float *vary[3] = {x, w, b};
    const float *grad[3] = {dx, dw, db};
    const size_t count[3] = {xn, wn, bn};
    const char *names[3] = {"dx", "dw", "db"};
    for (int i = 0; i < (op->bias ? 3 : 2); i++) {
        c.which = i;
        double e = sd_gradcheck(fd_f, &c, vary[i], count[i], grad[i], 5e-2f, count[i], 1e-1, rng);
        if (e > *worst) *worst = e;
        EXPECT(e < 5e-3, "%s gradcheck %s for %s: worst relative error %.3g", op->name, names[i], op->shape, e);
    }
out:
    free(x), free(w), free(b), free(r), free(y), free(dx), free(dw), free(db);
}
