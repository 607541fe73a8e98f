/* test_pool.c: the CPU max, average and global average pools against the naive reference
 * (square and rectangular windows, strides, padding, odd sizes, batch 1, the threaded path),
 * finite-difference checks of every backward, NaN propagation, and the error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

/* Max pool selects values: exact. Average pools sum a few floats (kernel) or doubles (reference). */
#define MAXPOOL_NMSE 0.0
#define AVGPOOL_NMSE 1e-12
#define GAP_NMSE 1e-13
#define POOL_GRAD_TOL 1e-3

static sd_kctx *k;

typedef struct shape {
    int n, c, h, w, kh, kw, sh, sw, ph, pw;
} shape;

static void expect_close(const char *what, const shape *s, const float *got, const float *ref, size_t n,
                         double bound) {
    const double e = sd_nmse(got, ref, n);
    EXPECT(e <= bound, "%s [%d,%d,%d,%d] k%dx%d s%dx%d p%dx%d: nmse %.3g > %.3g", what, s->n, s->c, s->h, s->w, s->kh,
           s->kw, s->sh, s->sw, s->ph, s->pw, e, bound);
    EXPECT(sd_all_finite(got, n), "%s [%d,%d,%d,%d] k%dx%d: non-finite output", what, s->n, s->c, s->h, s->w, s->kh,
           s->kw);
    EXPECT(sd_guard_ok(got, n), "%s [%d,%d,%d,%d] k%dx%d: wrote outside its output", what, s->n, s->c, s->h, s->w,
           s->kh, s->kw);
}

static int make(sd_pool2d_params *p, const shape *s) {
    sd_status st = sd_pool2d_params_make(p, s->n, s->c, s->h, s->w, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw);
    EXPECT(st == SD_OK, "pool params: %s", sd_last_error());
    return st == SD_OK;
}

/* ---- parity ------------------------------------------------------------------------------- */

static void parity(const shape *s, uint64_t seed) {
    sd_pool2d_params p;
    if (!make(&p, s)) return;
    const size_t in = (size_t)s->n * s->c * s->h * s->w, out = (size_t)s->n * s->c * p.oh * p.ow;
    sd_test_rng r = {seed};
    float *x = malloc(in * sizeof(float)), *dy = malloc(out * sizeof(float));
    sd_test_fill(&r, x, in, -1, 1);
    sd_test_fill(&r, dy, out, -1, 1);

    float *y = sd_guard_alloc(out), *yr = malloc(out * sizeof(float));
    int32_t *am = (int32_t *)sd_guard_alloc(out), *amr = malloc(out * sizeof(int32_t));
    float *dx = sd_guard_alloc(in), *dxr = malloc(in * sizeof(float));
    EXPECT_OK(sd_cpu_maxpool_fwd(k, &p, x, y, am));
    EXPECT_OK(ref_maxpool_fwd(&p, x, yr, amr));
    expect_close("maxpool fwd", s, y, yr, out, MAXPOOL_NMSE);
    EXPECT(memcmp(am, amr, out * sizeof(int32_t)) == 0, "maxpool argmax differs [%d,%d,%d,%d] k%dx%d s%dx%d p%dx%d",
           s->n, s->c, s->h, s->w, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw);
    EXPECT(sd_guard_ok((const float *)am, out), "maxpool argmax: wrote outside its output");
    EXPECT_OK(sd_cpu_maxpool_bwd(k, &p, dy, amr, dx));
    EXPECT_OK(ref_maxpool_bwd(&p, dy, amr, dxr));
    expect_close("maxpool bwd", s, dx, dxr, in, 1e-14); /* overlapping windows sum in another order */

    float *ya = sd_guard_alloc(out), *dxa = sd_guard_alloc(in);
    EXPECT_OK(sd_cpu_avgpool_fwd(k, &p, x, ya));
    EXPECT_OK(ref_avgpool_fwd(&p, x, yr));
    expect_close("avgpool fwd", s, ya, yr, out, AVGPOOL_NMSE);
    EXPECT_OK(sd_cpu_avgpool_bwd(k, &p, dy, dxa));
    EXPECT_OK(ref_avgpool_bwd(&p, dy, dxr));
    expect_close("avgpool bwd", s, dxa, dxr, in, AVGPOOL_NMSE);

    /* Global average pool on the same input (only n, c, h, w of the params matter). */
    const size_t nc = (size_t)s->n * s->c;
    float *yg = sd_guard_alloc(nc), *ygr = malloc(nc * sizeof(float)), *dxg = sd_guard_alloc(in);
    EXPECT_OK(sd_cpu_gap_fwd(k, &p, x, yg));
    EXPECT_OK(ref_gap_fwd(&p, x, ygr));
    expect_close("gap fwd", s, yg, ygr, nc, GAP_NMSE);
    EXPECT_OK(sd_cpu_gap_bwd(k, &p, dy, dxg)); /* dy holds at least n * c values */
    EXPECT_OK(ref_gap_bwd(&p, dy, dxr));
    expect_close("gap bwd", s, dxg, dxr, in, GAP_NMSE);

    free(x); free(dy); free(yr); free(amr); free(dxr); free(ygr);
    sd_guard_free(y); sd_guard_free((float *)am); sd_guard_free(dx); sd_guard_free(ya); sd_guard_free(dxa);
    sd_guard_free(yg); sd_guard_free(dxg);
}

/* ---- finite differences ---------------------------------------------------------------------- */

typedef struct pool_fd {
    sd_pool2d_params p;
    int kind; /* 0 max, 1 avg, 2 global */
    const float *x, *r;
    float *y;
    int32_t *am;
    size_t out;
} pool_fd;

static double pool_f(void *ctx, const float *unused) {
    (void)unused;
    pool_fd *c = ctx;
    sd_status st = c->kind == 0   ? sd_cpu_maxpool_fwd(k, &c->p, c->x, c->y, c->am)
                   : c->kind == 1 ? sd_cpu_avgpool_fwd(k, &c->p, c->x, c->y)
                                  : sd_cpu_gap_fwd(k, &c->p, c->x, c->y);
    if (st != SD_OK) return NAN;
    double s = 0;
    for (size_t i = 0; i < c->out; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void gradcheck(const shape *s, int kind, uint64_t seed) {
    static const char *names[3] = {"maxpool", "avgpool", "gap"};
    sd_pool2d_params p;
    if (!make(&p, s)) return;
    const size_t in = (size_t)s->n * s->c * s->h * s->w;
    const size_t out = kind == 2 ? (size_t)s->n * s->c : (size_t)s->n * s->c * p.oh * p.ow;
    sd_test_rng rng = {seed};
    float *x = malloc(in * sizeof(float)), *r = malloc(out * sizeof(float)), *y = malloc(out * sizeof(float));
    float *dx = malloc(in * sizeof(float));
    int32_t *am = malloc(out * sizeof(int32_t));
    /* Distinct values 0.01 apart (a shuffled ramp): no ties, and a 1e-3 step never changes the
     * winner of a max window. */
    for (size_t i = 0; i < in; i++) x[i] = 0.01f * (float)i - 0.005f * (float)in;
    for (size_t i = in - 1; i > 0; i--) {
        const size_t j = (size_t)(sd_test_next(&rng) % (i + 1));
        const float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
    sd_test_fill(&rng, r, out, -1, 1);
    pool_fd ctx = {p, kind, x, r, y, am, out};
    if (kind == 0) {
        EXPECT_OK(sd_cpu_maxpool_fwd(k, &p, x, y, am));
        EXPECT_OK(sd_cpu_maxpool_bwd(k, &p, r, am, dx));
    } else if (kind == 1) {
        EXPECT_OK(sd_cpu_avgpool_bwd(k, &p, r, dx));
    } else {
        EXPECT_OK(sd_cpu_gap_bwd(k, &p, r, dx));
    }
    const double e = sd_gradcheck(pool_f, &ctx, x, in, dx, 1e-3f, in, 1e-3, &rng);
    EXPECT(e <= POOL_GRAD_TOL, "%s gradcheck [%d,%d,%d,%d] k%dx%d s%dx%d p%dx%d: %.3g", names[kind], s->n, s->c,
           s->h, s->w, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, e);
    free(x); free(r); free(y); free(dx); free(am);
}

/* ---- special values and errors ---------------------------------------------------------------- */

static void nan_and_ties(void) {
    /* One 4x4 plane, 2x2 windows stride 2 (the fast path) and 3x3 stride 1 pad 1 (the generic one). */
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = 1.0f;
    x[5] = NAN;
    const shape shapes[2] = {{1, 1, 4, 4, 2, 2, 2, 2, 0, 0}, {1, 1, 4, 4, 3, 3, 1, 1, 1, 1}};
    for (int t = 0; t < 2; t++) {
        sd_pool2d_params p;
        if (!make(&p, &shapes[t])) return;
        float y[16], yr[16];
        int32_t am[16], amr[16];
        EXPECT_OK(sd_cpu_maxpool_fwd(k, &p, x, y, am));
        EXPECT_OK(ref_maxpool_fwd(&p, x, yr, amr));
        const int outs = p.oh * p.ow;
        EXPECT(isnan(y[0]) && am[0] == 5, "maxpool case %d: NaN must win its window (got %g at %d)", t, y[0], am[0]);
        int same = 1;
        for (int i = 0; i < outs; i++) same &= am[i] == amr[i] && (y[i] == yr[i] || (isnan(y[i]) && isnan(yr[i])));
        EXPECT(same, "maxpool case %d: NaN/tie handling differs from the reference", t);
    }
    /* Ties: the first maximum in row-major window order wins (PyTorch's rule). */
    float z[16] = {0};
    sd_pool2d_params p;
    if (!make(&p, &shapes[0])) return;
    float y[4];
    int32_t am[4];
    EXPECT_OK(sd_cpu_maxpool_fwd(k, &p, z, y, am));
    EXPECT(am[0] == 0 && am[1] == 2 && am[2] == 8 && am[3] == 10, "maxpool ties: argmax %d %d %d %d", am[0], am[1],
           am[2], am[3]);
}

static void errors(void) {
    sd_pool2d_params p;
    const shape s = {1, 1, 4, 4, 2, 2, 2, 2, 0, 0};
    if (!make(&p, &s)) return;
    float x[16] = {0}, y[4], dx[16];
    int32_t am[4] = {0, 1, 16, 3};
    EXPECT_FAIL(sd_cpu_maxpool_bwd(k, &p, y, am, dx), SD_ERR_INVALID, "argmax");
    am[2] = -1;
    EXPECT_FAIL(sd_cpu_maxpool_bwd(k, &p, y, am, dx), SD_ERR_INVALID, "argmax");
    EXPECT_FAIL(sd_cpu_maxpool_fwd(k, &p, x, y, NULL), SD_ERR_INVALID, "maxpool2d");
    EXPECT_FAIL(sd_cpu_maxpool_fwd(k, NULL, x, y, am), SD_ERR_INVALID, "maxpool2d");
    EXPECT_FAIL(sd_cpu_maxpool_bwd(k, &p, NULL, am, dx), SD_ERR_INVALID, "maxpool2d");
    EXPECT_FAIL(sd_cpu_avgpool_fwd(k, &p, NULL, y), SD_ERR_INVALID, "avgpool2d");
    EXPECT_FAIL(sd_cpu_avgpool_bwd(k, &p, y, NULL), SD_ERR_INVALID, "avgpool2d");
    EXPECT_FAIL(sd_cpu_gap_fwd(NULL, &p, x, y), SD_ERR_INVALID, "global_avgpool");
    EXPECT_FAIL(sd_cpu_gap_bwd(k, &p, NULL, dx), SD_ERR_INVALID, "global_avgpool");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_pool", sd_last_error());
    const shape shapes[] = {
        {2, 3, 8, 8, 2, 2, 2, 2, 0, 0},     /* 2x2 stride 2: the fast path */
        {1, 2, 7, 9, 2, 2, 2, 2, 0, 0},     /* fast path, odd sizes floor away the last row/column */
        {1, 2, 7, 9, 3, 3, 2, 2, 1, 1},     /* 3x3 stride 2 pad 1 */
        {2, 2, 5, 5, 3, 3, 1, 1, 1, 1},     /* overlapping windows */
        {3, 1, 6, 7, 2, 2, 1, 1, 0, 0},
        {1, 3, 4, 6, 2, 3, 1, 2, 1, 1},     /* rectangular window, stride and padding */
        {2, 4, 11, 10, 3, 3, 3, 3, 0, 0},
        {1, 1, 1, 1, 1, 1, 1, 1, 0, 0},     /* a single value */
        {1, 2, 3, 3, 3, 3, 1, 1, 1, 1},     /* batch 1, every window touches padding */
        {8, 16, 32, 32, 2, 2, 2, 2, 0, 0},  /* the threaded path */
        {4, 8, 24, 24, 3, 3, 2, 2, 1, 1},   /* threaded, generic (per-thread scratch) */
        {2, 8, 33, 31, 3, 3, 1, 1, 1, 1},   /* threaded, generic, stride 1 */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) parity(&shapes[i], 100 + i);
    const shape gshapes[] = {
        {2, 2, 6, 6, 2, 2, 2, 2, 0, 0},
        {1, 2, 5, 7, 3, 3, 2, 2, 1, 1},
        {2, 1, 5, 5, 3, 3, 1, 1, 1, 1},
        {1, 1, 4, 6, 2, 3, 1, 2, 1, 1},
    };
    for (size_t i = 0; i < sizeof gshapes / sizeof gshapes[0]; i++)
        for (int kind = 0; kind < 3; kind++) gradcheck(&gshapes[i], kind, 200 + 3 * i + (uint64_t)kind);
    nan_and_ties();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_pool");
}
