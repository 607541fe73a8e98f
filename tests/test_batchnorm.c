/* test_batchnorm.c: the CPU batch norm kernels against the naive reference (training and eval
 * forward, backward with and without dx) on several shapes, finite-difference checks of dx,
 * dgamma and dbeta, hand-computed running mean/var updates, and the error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

/* NMSE bounds: sums are taken in double on both sides, so only float rounding of the outputs
 * and of save_mean / save_invstd separates kernel and reference. */
#define BN_FWD_NMSE 1e-12
#define BN_BWD_NMSE 1e-11
#define BN_STAT_NMSE 1e-13
/* Largest relative error of a finite-difference gradient check. */
#define BN_GRAD_TOL 1e-2

static sd_kctx *k;

static float *filled(sd_test_rng *r, size_t n, float lo, float hi) {
    float *b = malloc(n * sizeof(float));
    sd_test_fill(r, b, n, lo, hi);
    return b;
}

/* A guarded copy of src (or an unwritten guarded buffer when src is NULL). */
static float *guarded(const float *src, size_t n) {
    float *b = sd_guard_alloc(n);
    if (src) memcpy(b, src, n * sizeof(float));
    return b;
}

static void expect_close(const char *what, const float *got, const float *ref, size_t n, double bound,
                         const int *shape) {
    const double e = sd_nmse(got, ref, n);
    EXPECT(e <= bound, "%s [%d,%d,%d,%d]: nmse %.3g > %.3g", what, shape[0], shape[1], shape[2], shape[3], e,
           bound);
    EXPECT(sd_all_finite(got, n), "%s [%d,%d,%d,%d]: non-finite output", what, shape[0], shape[1], shape[2],
           shape[3]);
    EXPECT(sd_guard_ok(got, n), "%s [%d,%d,%d,%d]: wrote outside its output", what, shape[0], shape[1], shape[2],
           shape[3]);
}

/* ---- parity with the reference ------------------------------------------------------------ */

static void parity(int n, int c, int h, int w, float center, uint64_t seed) {
    const int shape[4] = {n, c, h, w};
    sd_bn_params p;
    EXPECT_OK(sd_bn_params_make(&p, n, c, h, w, 1e-5f, 0.1f));
    const size_t cnt = (size_t)n * c * h * w;
    sd_test_rng r = {seed};
    float *x = filled(&r, cnt, center - 1.5f, center + 1.5f);
    float *dy = filled(&r, cnt, -1.0f, 1.0f);
    float *gamma = filled(&r, (size_t)c, 0.5f, 1.5f), *beta = filled(&r, (size_t)c, -0.5f, 0.5f);
    float *rm0 = filled(&r, (size_t)c, -0.2f, 0.2f), *rv0 = filled(&r, (size_t)c, 0.5f, 2.0f);

    float *y = guarded(NULL, cnt), *yr = malloc(cnt * sizeof(float));
    float *rm = guarded(rm0, (size_t)c), *rv = guarded(rv0, (size_t)c);
    float *rmr = guarded(rm0, (size_t)c), *rvr = guarded(rv0, (size_t)c);
    float *sm = guarded(NULL, (size_t)c), *si = guarded(NULL, (size_t)c);
    float *smr = malloc((size_t)c * sizeof(float)), *sir = malloc((size_t)c * sizeof(float));
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y, rm, rv, sm, si));
    EXPECT_OK(ref_bn_fwd_train(&p, x, gamma, beta, yr, rmr, rvr, smr, sir));
    expect_close("bn fwd_train y", y, yr, cnt, BN_FWD_NMSE, shape);
    expect_close("bn save_mean", sm, smr, (size_t)c, BN_STAT_NMSE, shape);
    expect_close("bn save_invstd", si, sir, (size_t)c, BN_STAT_NMSE, shape);
    expect_close("bn running_mean", rm, rmr, (size_t)c, BN_STAT_NMSE, shape);
    expect_close("bn running_var", rv, rvr, (size_t)c, BN_STAT_NMSE, shape);

    /* Backward from the reference's saved statistics, so both sides see the same inputs. */
    float *dx = guarded(NULL, cnt), *dxr = malloc(cnt * sizeof(float));
    float *dg = guarded(NULL, (size_t)c), *db = guarded(NULL, (size_t)c);
    float *dgr = malloc((size_t)c * sizeof(float)), *dbr = malloc((size_t)c * sizeof(float));
    EXPECT_OK(sd_cpu_bn_bwd(k, &p, x, gamma, smr, sir, dy, dx, dg, db));
    EXPECT_OK(ref_bn_bwd(&p, x, gamma, smr, sir, dy, dxr, dgr, dbr));
    if (cnt / (size_t)c > 2) {
        expect_close("bn bwd dx", dx, dxr, cnt, BN_BWD_NMSE, shape);
    } else {
        /* Two values per channel normalise to about -1 and +1 whatever x is, so dx is ~0 and only
         * its absolute error means anything. */
        const double e = sd_max_abs_diff(dx, dxr, cnt);
        EXPECT(e <= 1e-6, "bn bwd dx [%d,%d,%d,%d]: max abs diff %.3g", n, c, h, w, e);
        EXPECT(sd_guard_ok(dx, cnt) && sd_all_finite(dx, cnt), "bn bwd dx: guard or finite check");
    }
    expect_close("bn bwd dgamma", dg, dgr, (size_t)c, BN_BWD_NMSE, shape);
    expect_close("bn bwd dbeta", db, dbr, (size_t)c, BN_BWD_NMSE, shape);

    /* dx = NULL: the parameter gradients alone. */
    float *dg2 = guarded(NULL, (size_t)c), *db2 = guarded(NULL, (size_t)c);
    EXPECT_OK(sd_cpu_bn_bwd(k, &p, x, gamma, smr, sir, dy, NULL, dg2, db2));
    expect_close("bn bwd (no dx) dgamma", dg2, dgr, (size_t)c, BN_BWD_NMSE, shape);
    expect_close("bn bwd (no dx) dbeta", db2, dbr, (size_t)c, BN_BWD_NMSE, shape);

    /* Eval with the updated running statistics. */
    float *ye = guarded(NULL, cnt), *yer = malloc(cnt * sizeof(float));
    EXPECT_OK(sd_cpu_bn_fwd_eval(k, &p, x, gamma, beta, rmr, rvr, ye));
    EXPECT_OK(ref_bn_fwd_eval(&p, x, gamma, beta, rmr, rvr, yer));
    expect_close("bn fwd_eval y", ye, yer, cnt, BN_FWD_NMSE, shape);

    free(x); free(dy); free(gamma); free(beta); free(rm0); free(rv0); free(yr); free(smr); free(sir);
    free(dxr); free(dgr); free(dbr); free(yer);
    sd_guard_free(y); sd_guard_free(rm); sd_guard_free(rv); sd_guard_free(rmr); sd_guard_free(rvr);
    sd_guard_free(sm); sd_guard_free(si); sd_guard_free(dx); sd_guard_free(dg); sd_guard_free(db);
    sd_guard_free(dg2); sd_guard_free(db2); sd_guard_free(ye);
}

/* Eval is legal with one value per channel (batch 1, 1x1). */
static void eval_single(void) {
    const int shape[4] = {1, 5, 1, 1};
    sd_bn_params p;
    EXPECT_OK(sd_bn_params_make(&p, 1, 5, 1, 1, 1e-5f, 0.1f));
    sd_test_rng r = {77};
    float *x = filled(&r, 5, -2, 2), *g = filled(&r, 5, 0.5f, 1.5f), *b = filled(&r, 5, -1, 1);
    float *m = filled(&r, 5, -1, 1), *v = filled(&r, 5, 0.1f, 3);
    float *y = guarded(NULL, 5), yr[5];
    EXPECT_OK(sd_cpu_bn_fwd_eval(k, &p, x, g, b, m, v, y));
    EXPECT_OK(ref_bn_fwd_eval(&p, x, g, b, m, v, yr));
    expect_close("bn fwd_eval single", y, yr, 5, BN_FWD_NMSE, shape);
    free(x); free(g); free(b); free(m); free(v);
    sd_guard_free(y);
}

/* ---- finite differences -------------------------------------------------------------------- */

typedef struct bn_fd {
    sd_bn_params p;
    const float *x, *gamma, *beta, *r;
    float *y, *rm, *rv, *sm, *si;
} bn_fd;

/* f = sum(bn_train(x; gamma, beta) * r); the arrays gradcheck perturbs are those of the context. */
static double bn_f(void *ctx, const float *unused) {
    (void)unused;
    bn_fd *c = ctx;
    const size_t cnt = (size_t)c->p.n * c->p.c * c->p.h * c->p.w;
    if (sd_cpu_bn_fwd_train(k, &c->p, c->x, c->gamma, c->beta, c->y, c->rm, c->rv, c->sm, c->si) != SD_OK)
        return NAN;
    double s = 0;
    for (size_t i = 0; i < cnt; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void gradcheck(int n, int ch, int h, int w, uint64_t seed) {
    sd_bn_params p;
    EXPECT_OK(sd_bn_params_make(&p, n, ch, h, w, 1e-5f, 0.1f));
    const size_t cnt = (size_t)n * ch * h * w, c = (size_t)ch;
    sd_test_rng rng = {seed};
    float *x = filled(&rng, cnt, -1, 1), *r = filled(&rng, cnt, -1, 1);
    float *gamma = filled(&rng, c, 0.5f, 1.5f), *beta = filled(&rng, c, -0.5f, 0.5f);
    float *y = malloc(cnt * sizeof(float)), *rm = calloc(c, sizeof(float)), *rv = calloc(c, sizeof(float));
    float *sm = malloc(c * sizeof(float)), *si = malloc(c * sizeof(float));
    float *dx = malloc(cnt * sizeof(float)), *dg = malloc(c * sizeof(float)), *db = malloc(c * sizeof(float));
    bn_fd ctx = {p, x, gamma, beta, r, y, rm, rv, sm, si};

    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y, rm, rv, sm, si));
    EXPECT_OK(sd_cpu_bn_bwd(k, &p, x, gamma, sm, si, r, dx, dg, db));
    const double ex = sd_gradcheck(bn_f, &ctx, x, cnt, dx, 1e-2f, cnt, 1e-2, &rng);
    const double eg = sd_gradcheck(bn_f, &ctx, gamma, c, dg, 1e-2f, c, 1e-2, &rng);
    const double eb = sd_gradcheck(bn_f, &ctx, beta, c, db, 1e-2f, c, 1e-2, &rng);
    EXPECT(ex <= BN_GRAD_TOL, "bn dx gradcheck [%d,%d,%d,%d]: %.3g", n, ch, h, w, ex);
    EXPECT(eg <= BN_GRAD_TOL, "bn dgamma gradcheck [%d,%d,%d,%d]: %.3g", n, ch, h, w, eg);
    EXPECT(eb <= BN_GRAD_TOL, "bn dbeta gradcheck [%d,%d,%d,%d]: %.3g", n, ch, h, w, eb);
    free(x); free(r); free(gamma); free(beta); free(y); free(rm); free(rv); free(sm); free(si);
    free(dx); free(dg); free(db);
}

/* ---- the fused ReLU: bitwise relu(bn(x)) forward, relu_bwd then bn_bwd backward ------------- */

static bool same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static void fused_relu(int n, int ch, int h, int w, float shift, uint64_t seed) {
    sd_bn_params p, pr;
    EXPECT_OK(sd_bn_params_make(&p, n, ch, h, w, 1e-5f, 0.1f));
    EXPECT(!p.relu, "sd_bn_params_make leaves relu off");
    pr = p;
    pr.relu = true;
    const size_t cnt = (size_t)n * ch * h * w, c = (size_t)ch;
    sd_test_rng rng = {seed};
    float *x = filled(&rng, cnt, -1 + shift, 1 + shift), *dy = filled(&rng, cnt, -1, 1);
    float *gamma = filled(&rng, c, -1.5f, 1.5f), *beta = filled(&rng, c, -0.5f, 0.5f);
    float *y0 = malloc(cnt * sizeof(float)), *r0 = malloc(cnt * sizeof(float)), *g = malloc(cnt * sizeof(float));
    float *y1 = malloc(cnt * sizeof(float)), *dx0 = malloc(cnt * sizeof(float)), *dx1 = malloc(cnt * sizeof(float));
    float *rm0 = calloc(c, sizeof(float)), *rv0 = calloc(c, sizeof(float)), *rm1 = calloc(c, sizeof(float)),
          *rv1 = calloc(c, sizeof(float)), *sm0 = malloc(c * sizeof(float)), *si0 = malloc(c * sizeof(float)),
          *sm1 = malloc(c * sizeof(float)), *si1 = malloc(c * sizeof(float)), *dg0 = malloc(c * sizeof(float)),
          *db0 = malloc(c * sizeof(float)), *dg1 = malloc(c * sizeof(float)), *db1 = malloc(c * sizeof(float));
    /* two layers apart */
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y0, rm0, rv0, sm0, si0));
    EXPECT_OK(sd_cpu_relu_fwd(k, cnt, y0, r0));
    EXPECT_OK(sd_cpu_relu_bwd(k, cnt, r0, dy, g));
    EXPECT_OK(sd_cpu_bn_bwd(k, &p, x, gamma, sm0, si0, g, dx0, dg0, db0));
    /* fused */
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &pr, x, gamma, beta, y1, rm1, rv1, sm1, si1));
    EXPECT_OK(sd_cpu_bn_relu_bwd(k, &pr, x, y1, gamma, sm1, si1, dy, dx1, dg1, db1));
    size_t zeros = 0;
    for (size_t i = 0; i < cnt; i++) zeros += y1[i] == 0.0f;
    EXPECT(zeros > 0 && zeros < cnt, "[%d,%d,%d,%d]: the ReLU cuts %zu of %zu values (want some, not all)", n, ch, h, w,
           zeros, cnt);
    EXPECT(same_bits(r0, y1, cnt) && same_bits(rm0, rm1, c) && same_bits(rv0, rv1, c) && same_bits(sm0, sm1, c) &&
               same_bits(si0, si1, c),
           "[%d,%d,%d,%d]: fused forward bitwise relu(bn(x)) and the same statistics", n, ch, h, w);
    EXPECT(same_bits(dx0, dx1, cnt) && same_bits(dg0, dg1, c) && same_bits(db0, db1, c),
           "[%d,%d,%d,%d]: fused backward bitwise relu_bwd then bn_bwd", n, ch, h, w);
    EXPECT_OK(sd_cpu_bn_relu_bwd(k, &pr, x, y1, gamma, sm1, si1, dy, NULL, dg1, db1)); /* dx not needed */
    EXPECT(same_bits(dg0, dg1, c) && same_bits(db0, db1, c), "fused backward without dx: same dgamma, dbeta");
    /* evaluation */
    EXPECT_OK(sd_cpu_bn_fwd_eval(k, &p, x, gamma, beta, rm0, rv0, y0));
    EXPECT_OK(sd_cpu_relu_fwd(k, cnt, y0, r0));
    EXPECT_OK(sd_cpu_bn_fwd_eval(k, &pr, x, gamma, beta, rm0, rv0, y1));
    EXPECT(same_bits(r0, y1, cnt), "[%d,%d,%d,%d]: fused evaluation bitwise relu(bn_eval(x))", n, ch, h, w);
    /* the unfused backward refuses fused params, and the fused one needs y */
    EXPECT_FAIL(sd_cpu_bn_bwd(k, &pr, x, gamma, sm1, si1, dy, dx1, dg1, db1), SD_ERR_INVALID, "its backward is bn_relu_bwd");
    EXPECT_FAIL(sd_cpu_bn_relu_bwd(k, &pr, x, NULL, gamma, sm1, si1, dy, dx1, dg1, db1), SD_ERR_INVALID, "x, y, gamma");
    free(x); free(dy); free(gamma); free(beta); free(y0); free(r0); free(g); free(y1); free(dx0); free(dx1);
    free(rm0); free(rv0); free(rm1); free(rv1); free(sm0); free(si0); free(sm1); free(si1);
    free(dg0); free(db0); free(dg1); free(db1);
}

/* ---- running statistics by hand ------------------------------------------------------------ */

static void running_stats(void) {
    /* x [2, 2, 1, 2]: channel 0 holds 1 2 | 3 4 (mean 2.5, biased var 1.25, unbiased 5/3),
     * channel 1 holds 0 0 | 2 -2 (mean 0, biased var 2, unbiased 8/3). */
    const float x[8] = {1, 2, 0, 0, 3, 4, 2, -2};
    const float gamma[2] = {1, 1}, beta[2] = {0, 0};
    sd_bn_params p;
    EXPECT_OK(sd_bn_params_make(&p, 2, 2, 1, 2, 1e-5f, 0.1f));
    float y[8], rm[2] = {0, 1}, rv[2] = {1, 1}, sm[2], si[2];
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y, rm, rv, sm, si));
    EXPECT(fabsf(sm[0] - 2.5f) < 1e-6f && fabsf(sm[1]) < 1e-6f, "save_mean %g %g", sm[0], sm[1]);
    EXPECT(fabs(si[0] - 1 / sqrt(1.25 + 1e-5)) < 1e-6 && fabs(si[1] - 1 / sqrt(2 + 1e-5)) < 1e-6,
           "save_invstd %g %g", si[0], si[1]);
    /* running = 0.9 * running + 0.1 * batch (unbiased variance). */
    EXPECT(fabsf(rm[0] - 0.25f) < 1e-6f && fabsf(rm[1] - 0.9f) < 1e-6f, "step 1 running_mean %g %g", rm[0], rm[1]);
    EXPECT(fabsf(rv[0] - 1.0666667f) < 1e-6f && fabsf(rv[1] - 1.1666667f) < 1e-6f, "step 1 running_var %g %g",
           rv[0], rv[1]);
    EXPECT(fabsf(y[0] - (float)((1 - 2.5) / sqrt(1.25 + 1e-5))) < 1e-6f, "y[0] %g", y[0]);
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y, rm, rv, sm, si));
    EXPECT(fabsf(rm[0] - 0.475f) < 1e-6f && fabsf(rm[1] - 0.81f) < 1e-6f, "step 2 running_mean %g %g", rm[0], rm[1]);
    EXPECT(fabsf(rv[0] - 1.1266667f) < 1e-6f && fabsf(rv[1] - 1.3166667f) < 1e-6f, "step 2 running_var %g %g",
           rv[0], rv[1]);

    /* momentum 1: the running statistics become the batch's; momentum 0: they stay. */
    EXPECT_OK(sd_bn_params_make(&p, 2, 2, 1, 2, 1e-5f, 1.0f));
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y, rm, rv, sm, si));
    EXPECT(fabsf(rm[0] - 2.5f) < 1e-6f && fabsf(rm[1]) < 1e-6f, "momentum 1 running_mean %g %g", rm[0], rm[1]);
    EXPECT(fabsf(rv[0] - 5.0f / 3) < 1e-6f && fabsf(rv[1] - 8.0f / 3) < 1e-6f, "momentum 1 running_var %g %g",
           rv[0], rv[1]);
    EXPECT_OK(sd_bn_params_make(&p, 2, 2, 1, 2, 1e-5f, 0.0f));
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, gamma, beta, y, rm, rv, sm, si));
    EXPECT(fabsf(rm[0] - 2.5f) < 1e-6f && fabsf(rv[1] - 8.0f / 3) < 1e-6f, "momentum 0 changed the running stats");
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void errors(void) {
    sd_bn_params p;
    float x[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1}, b[4] = {0}, y[4], rm[4] = {0}, rv[4] = {1, 1, 1, 1}, sm[4],
          si[4];
    /* One value per channel in training: PyTorch refuses, so do we. */
    EXPECT_OK(sd_bn_params_make(&p, 1, 4, 1, 1, 1e-5f, 0.1f));
    EXPECT_FAIL(sd_cpu_bn_fwd_train(k, &p, x, g, b, y, rm, rv, sm, si), SD_ERR_SHAPE, "one value per channel");
    EXPECT_OK(sd_bn_params_make(&p, 1, 1, 2, 2, 1e-5f, 0.1f));
    EXPECT_OK(sd_cpu_bn_fwd_train(k, &p, x, g, b, y, rm, rv, sm, si));
    EXPECT_FAIL(sd_cpu_bn_fwd_train(k, &p, NULL, g, b, y, rm, rv, sm, si), SD_ERR_INVALID, "batchnorm2d");
    EXPECT_FAIL(sd_cpu_bn_fwd_train(k, &p, x, g, b, y, NULL, rv, sm, si), SD_ERR_INVALID, "batchnorm2d");
    EXPECT_FAIL(sd_cpu_bn_fwd_train(NULL, &p, x, g, b, y, rm, rv, sm, si), SD_ERR_INVALID, "batchnorm2d");
    EXPECT_FAIL(sd_cpu_bn_fwd_eval(k, &p, x, g, b, rm, NULL, y), SD_ERR_INVALID, "batchnorm2d");
    EXPECT_FAIL(sd_cpu_bn_fwd_eval(k, NULL, x, g, b, rm, rv, y), SD_ERR_INVALID, "batchnorm2d");
    EXPECT_FAIL(sd_cpu_bn_bwd(k, &p, x, g, sm, si, x, y, NULL, b), SD_ERR_INVALID, "batchnorm2d");
    EXPECT_FAIL(sd_cpu_bn_bwd(k, &p, x, g, sm, NULL, x, y, g, b), SD_ERR_INVALID, "batchnorm2d");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_batchnorm", sd_last_error());
    parity(2, 3, 5, 7, 0.0f, 1);
    parity(1, 4, 3, 3, 0.0f, 2);   /* batch 1 */
    parity(3, 5, 1, 1, 0.0f, 3);   /* 1x1 planes */
    parity(1, 2, 1, 2, 0.0f, 4);   /* two values per channel */
    parity(4, 16, 8, 8, 0.0f, 5);
    parity(8, 16, 32, 32, 0.0f, 6); /* a ResNet-20 stage-1 layer at batch 8 (threaded path) */
    parity(5, 7, 9, 11, 100.0f, 7); /* |mean| >> std */
    parity(2, 3, 17, 13, -3000.0f, 8);
    eval_single();
    gradcheck(2, 3, 3, 4, 11);
    gradcheck(1, 2, 5, 3, 12);
    fused_relu(2, 3, 5, 7, 0.0f, 21);
    fused_relu(8, 16, 32, 32, 0.0f, 22); /* threaded path */
    fused_relu(3, 5, 9, 11, 50.0f, 23);  /* |mean| >> std */
    running_stats();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_batchnorm");
}
