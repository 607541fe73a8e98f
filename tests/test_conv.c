/* test_conv.c: the CPU conv2d kernels, both implementations (our kernels/cpu/conv.c and, in builds
 * with oneDNN, kernels/cpu/conv_dnnl.c), against the naive double-precision reference
 * (tests/ref/ref_dense.c): forward, backward with and without dx, on kernel sizes 1x1 to 7x7 and
 * 2x3, strides 1-3, padding 0-3, with and without bias, odd sizes, the Fashion-MNIST CNN and
 * ResNet-20 layer shapes at small batch, and shapes large enough to be split into bands;
 * finite-difference checks of dx, dw and db; batch sizes that change between calls on one
 * context; 1, 2 and 3 threads; and NULL pointers. Then ours against oneDNN on every shape, oneDNN
 * bitwise the same from call to call and from context to context at one thread count, more shapes
 * than its per-context cache holds, the caller's OpenMP thread count left as it was, and the
 * SCADLES_CONV switch (context.c). Then oneDNN's Winograd algorithm (SCADLES_WINOGRAD): every 3x3
 * stride-1 shape against the reference and by finite differences with Winograd forced on,
 * bitwise reproducible, and the auto rule choosing it exactly for the wide shapes (its results
 * equal forced-on's there and direct's elsewhere), and the variable's parsing.
 *
 * Tolerance: every output element is a float sum of up to a few thousand products of values in
 * [-1, 1], which the kernels order differently from the reference; float rounding then gives an
 * NMSE of about 1e-14..1e-12 against the double reference (measured worst: printed below). The
 * bound 1e-9 is 1000x above that and some 1e7x below what any indexing or missing-term bug gives
 * (one wrong term in a sum of Kd gives roughly 1/Kd >= 1e-3). Ours against oneDNN: both are float
 * sums of the same terms in different orders, so the same bound holds between them (measured
 * worst printed as "ours vs dnnl"). */
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_dense.h"
#include "tests/xwb_check.h"

#define NMSE_TOL 1e-9

static double worst_nmse, worst_fd, worst_cross, worst_wino;

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
    snprintf(o->shape, sizeof o->shape, "%s [%d,%d,%d,%d] k%d %dx%d s%dx%d p%dx%d (%d threads)",
             sd_cpu_conv_impl_name(k->conv), s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw,
             k->threads);
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

/* ---- ours against oneDNN, and oneDNN against itself ------------------------------------------ */

/* The outputs of one shape on one context: y, dx, dw, db of random inputs drawn from seed. */
typedef struct outs {
    float *y, *dx, *dw, *db;
} outs;

static void outs_free(outs *o) { free(o->y), free(o->dx), free(o->dw), free(o->db); }

static bool run_shape(sd_kctx *k, const sd_conv2d_params *p, uint64_t seed, outs *o) {
    const size_t xn = (size_t)p->n * p->c * p->h * p->w, wn = (size_t)p->k * p->c * p->kh * p->kw,
                 yn = (size_t)p->n * p->k * p->oh * p->ow;
    sd_test_rng r = {seed};
    float *x = malloc(xn * sizeof(float)), *w = malloc(wn * sizeof(float)), *b = malloc((size_t)p->k * sizeof(float)),
          *dy = malloc(yn * sizeof(float));
    *o = (outs){malloc(yn * sizeof(float)), malloc(xn * sizeof(float)), malloc(wn * sizeof(float)),
                malloc((size_t)p->k * sizeof(float))};
    bool ok = x && w && b && dy && o->y && o->dx && o->dw && o->db;
    EXPECT(ok, "allocation failed");
    if (ok) {
        sd_test_fill(&r, x, xn, -1.0f, 1.0f);
        sd_test_fill(&r, w, wn, -1.0f, 1.0f);
        sd_test_fill(&r, b, (size_t)p->k, -1.0f, 1.0f);
        sd_test_fill(&r, dy, yn, -1.0f, 1.0f);
        memset(o->db, 0, (size_t)p->k * sizeof(float));
        sd_status s1 = sd_cpu_conv2d_fwd(k, p, x, w, p->has_bias ? b : NULL, o->y);
        sd_status s2 = sd_cpu_conv2d_bwd(k, p, x, w, dy, o->dx, o->dw, p->has_bias ? o->db : NULL);
        EXPECT(s1 == SD_OK && s2 == SD_OK, "%s conv2d: %s", sd_cpu_conv_impl_name(k->conv), sd_last_error());
        ok = s1 == SD_OK && s2 == SD_OK;
    }
    free(x), free(w), free(b), free(dy);
    return ok;
}

static size_t count_of(const sd_conv2d_params *p, int which) {
    return which == 0   ? (size_t)p->n * p->k * p->oh * p->ow
           : which == 1 ? (size_t)p->n * p->c * p->h * p->w
           : which == 2 ? (size_t)p->k * p->c * p->kh * p->kw
                        : (size_t)p->k;
}

/* Ours (context a) against oneDNN (context b) on shape s: NMSE of each output below NMSE_TOL. */
static void cross(sd_kctx *a, sd_kctx *b, const shape *s) {
    sd_conv2d_params p;
    EXPECT_OK(sd_conv2d_params_make(&p, s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, s->bias));
    outs o, d;
    const bool ok_o = run_shape(a, &p, 7, &o), ok_d = run_shape(b, &p, 7, &d);
    if (ok_o && ok_d) {
        const float *got[4] = {d.y, d.dx, d.dw, d.db}, *want[4] = {o.y, o.dx, o.dw, o.db};
        static const char *const what[4] = {"y", "dx", "dw", "db"};
        for (int i = 0; i < (s->bias ? 4 : 3); i++) {
            const double e = sd_nmse(got[i], want[i], count_of(&p, i));
            if (e > worst_cross) worst_cross = e;
            EXPECT(e < NMSE_TOL, "ours vs dnnl, %s: nmse %.3g for [%d,%d,%d,%d] k%d %dx%d s%d p%d bias %d", what[i], e,
                   s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->ph, s->bias);
        }
    }
    outs_free(&o);
    outs_free(&d);
}

/* oneDNN on shape s: a second call on the same context and a call on a fresh context with the same
 * thread count and Winograd mode give bitwise the same y, dx, dw, db. */
static void deterministic_on(sd_kctx *k, const shape *s) {
    sd_conv2d_params p;
    EXPECT_OK(sd_conv2d_params_make(&p, s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, s->bias));
    sd_kctx *fresh = NULL;
    EXPECT_OK(sd_cpu_kctx_create(k->threads, &fresh));
    if (!fresh) return;
    EXPECT_OK(sd_cpu_kctx_set_conv(fresh, SD_CPU_CONV_DNNL));
    EXPECT_OK(sd_cpu_kctx_set_winograd(fresh, k->winograd));
    outs r[3];
    bool ok = run_shape(k, &p, 11, &r[0]);
    ok = run_shape(k, &p, 11, &r[1]) && ok;
    ok = run_shape(fresh, &p, 11, &r[2]) && ok;
    for (int j = 1; ok && j < 3; j++) {
        const float *a[4] = {r[0].y, r[0].dx, r[0].dw, r[0].db}, *b[4] = {r[j].y, r[j].dx, r[j].dw, r[j].db};
        for (int i = 0; i < 4; i++)
            EXPECT(memcmp(a[i], b[i], count_of(&p, i) * sizeof(float)) == 0,
                   "dnnl on %d threads: output %d of [%d,%d,%d,%d] k%d %dx%d differs bitwise %s", k->threads, i, s->n,
                   s->c, s->h, s->w, s->k, s->kh, s->kw, j == 1 ? "on a second call" : "on a fresh context");
    }
    for (int j = 0; j < 3; j++) outs_free(&r[j]);
    sd_cpu_kctx_destroy(fresh);
}

/* More shapes than a context's oneDNN cache keeps (64): every one still right, the first again
 * after it was dropped; and the caller's OpenMP thread count is what it was. */
static void cache_and_threads(sd_kctx *k, sd_test_rng *rng) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(5);
    for (int n = 1; n <= 70; n++) {
        shape s = {n, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, n % 2};
        if (n % 10 == 1) parity(k, &s, rng); /* checked against the reference */
        else {
            sd_conv2d_params p;
            outs o;
            EXPECT_OK(sd_conv2d_params_make(&p, s.n, s.c, s.h, s.w, s.k, s.kh, s.kw, s.sh, s.sw, s.ph, s.pw, s.bias));
            run_shape(k, &p, 3, &o);
            outs_free(&o);
        }
    }
    shape first = {1, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1};
    parity(k, &first, rng);
    shape big = {2, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 0}; /* above SD_CONV_PAR_MIN_MACS: all threads */
    parity(k, &big, rng);
    EXPECT(omp_get_max_threads() == 5, "the caller's OpenMP thread count: %d after the convolutions, 5 before",
           omp_get_max_threads());
    omp_set_num_threads(before);
}

/* Whether contexts a and b give bitwise the same y, dx, dw (and db) on shape s. */
static bool same_outputs(sd_kctx *a, sd_kctx *b, const shape *s) {
    sd_conv2d_params p;
    EXPECT_OK(sd_conv2d_params_make(&p, s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, s->bias));
    outs x, y;
    bool same = run_shape(a, &p, 5, &x) & run_shape(b, &p, 5, &y);
    for (int i = 0; same && i < (s->bias ? 4 : 3); i++) {
        const float *u[4] = {x.y, x.dx, x.dw, x.db}, *v[4] = {y.y, y.dx, y.dw, y.db};
        same = memcmp(u[i], v[i], count_of(&p, i) * sizeof(float)) == 0;
    }
    outs_free(&x);
    outs_free(&y);
    return same;
}

/* oneDNN's Winograd (conv_dnnl.c). Forced on (SD_CPU_WINO_ON), every 3x3 stride-1 shape of the
 * list against the double reference with the same NMSE bound as the direct sums (measured worst
 * printed as "winograd"; F(4x4, 3x3)'s transforms add rounding but stay far below the bound), a
 * finite-difference check and bitwise reproducibility; then the auto rule: on a wide shape its
 * results are forced-on's, on narrow, tiny-plane and strided shapes direct's. Where oneDNN has no
 * Winograd kernel (CPUs without AVX-512) forced-on falls back to direct, which the test reports. */
static void winograd(sd_kctx *on, const shape *shapes, int nshapes, sd_test_rng *rng) {
    sd_kctx *off = NULL, *au = NULL;
    EXPECT_OK(sd_cpu_kctx_create(on->threads, &off));
    EXPECT_OK(sd_cpu_kctx_create(on->threads, &au));
    if (!off || !au) goto done;
    EXPECT_OK(sd_cpu_kctx_set_conv(on, SD_CPU_CONV_DNNL));
    EXPECT_OK(sd_cpu_kctx_set_conv(off, SD_CPU_CONV_DNNL));
    EXPECT_OK(sd_cpu_kctx_set_conv(au, SD_CPU_CONV_DNNL));
    EXPECT_OK(sd_cpu_kctx_set_winograd(on, SD_CPU_WINO_ON));
    EXPECT_OK(sd_cpu_kctx_set_winograd(off, SD_CPU_WINO_OFF));
    EXPECT_OK(sd_cpu_kctx_set_winograd(au, SD_CPU_WINO_AUTO));
    const double saved = worst_nmse;
    worst_nmse = 0;
    int checked = 0;
    for (int i = 0; i < nshapes; i++) {
        const shape *t = &shapes[i];
        if (t->kh != 3 || t->kw != 3 || t->sh != 1 || t->sw != 1) continue;
        parity(on, t, rng);
        deterministic_on(on, t);
        checked++;
    }
    worst_wino = worst_nmse;
    worst_nmse = saved;
    const shape fd = {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1};
    gradcheck(on, &fd, rng);
    const shape wide = {2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 0}, narrow = {2, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 0},
                tiny = {2, 64, 2, 2, 64, 3, 3, 1, 1, 1, 1, 0}, strided = {2, 32, 16, 16, 32, 3, 3, 2, 2, 1, 1, 0};
    const bool has = !same_outputs(on, off, &wide);
    printf("test_conv: winograd: %d 3x3 stride-1 shapes, worst nmse %.3g (bound %.0e); oneDNN %s\n", checked,
           worst_wino, NMSE_TOL, has ? "has Winograd kernels here" : "has no Winograd kernel here (direct ran)");
    sd_conv2d_params pw, pn;
    EXPECT_OK(sd_conv2d_params_make(&pw, 2, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 0));
    EXPECT_OK(sd_conv2d_params_make(&pn, 2, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 0));
    EXPECT(sd_cpu_conv_wants_winograd(au, &pw) && !sd_cpu_conv_wants_winograd(au, &pn) &&
               sd_cpu_conv_wants_winograd(on, &pn) && !sd_cpu_conv_wants_winograd(off, &pw),
           "winograd rule: auto wide %d narrow %d, on narrow %d, off wide %d", sd_cpu_conv_wants_winograd(au, &pw),
           sd_cpu_conv_wants_winograd(au, &pn), sd_cpu_conv_wants_winograd(on, &pn),
           sd_cpu_conv_wants_winograd(off, &pw));
    if (has) {
        EXPECT(same_outputs(au, on, &wide), "winograd auto: [2,32,16,16] k32 3x3 did not run Winograd");
        EXPECT(same_outputs(au, off, &narrow), "winograd auto: [2,16,16,16] k32 (16 channels in) ran Winograd");
        EXPECT(same_outputs(au, off, &tiny), "winograd auto: a 2x2 plane ran Winograd");
        EXPECT(same_outputs(au, off, &strided), "winograd auto: a stride-2 shape ran Winograd");
    }
done:
    sd_cpu_kctx_destroy(off);
    sd_cpu_kctx_destroy(au);
}

/* SCADLES_WINOGRAD: auto, off, on, empty/unset (auto); anything else refused naming it. */
static void env_winograd(void) {
    const char *had = getenv("SCADLES_WINOGRAD");
    char *saved = had ? strdup(had) : NULL;
    static const struct { const char *v; int ok; sd_cpu_winograd want; } cases[] = {
        {NULL, 1, SD_CPU_WINO_AUTO}, {"", 1, SD_CPU_WINO_AUTO}, {"auto", 1, SD_CPU_WINO_AUTO},
        {"off", 1, SD_CPU_WINO_OFF}, {"on", 1, SD_CPU_WINO_ON},   {"yes", 0, SD_CPU_WINO_AUTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].v) setenv("SCADLES_WINOGRAD", cases[i].v, 1);
        else unsetenv("SCADLES_WINOGRAD");
        sd_kctx *k = NULL;
        sd_status st = sd_cpu_kctx_create(1, &k);
        if (cases[i].ok) {
            EXPECT(st == SD_OK && k && k->winograd == cases[i].want, "SCADLES_WINOGRAD=%s: %s, mode %s (want %s)",
                   cases[i].v ? cases[i].v : "(unset)", sd_status_str(st), k ? sd_cpu_winograd_name(k->winograd) : "-",
                   sd_cpu_winograd_name(cases[i].want));
        } else {
            EXPECT(st == SD_ERR_INVALID && !k, "SCADLES_WINOGRAD=%s: accepted", cases[i].v);
            EXPECT(strstr(sd_last_error(), "SCADLES_WINOGRAD") != NULL, "SCADLES_WINOGRAD=%s: message does not name it: %s",
                   cases[i].v, sd_last_error());
        }
        sd_cpu_kctx_destroy(k);
    }
    if (saved) setenv("SCADLES_WINOGRAD", saved, 1);
    else unsetenv("SCADLES_WINOGRAD");
    free(saved);
    sd_kctx *k = NULL;
    EXPECT_OK(sd_cpu_kctx_create(1, &k));
    if (k) EXPECT_FAIL(sd_cpu_kctx_set_winograd(k, (sd_cpu_winograd)9), SD_ERR_INVALID, "Winograd");
    sd_cpu_kctx_destroy(k);
}

/* SCADLES_CONV: ours, dnnl (only in builds with oneDNN), empty/unset (the default), anything else
 * refused with the variable named. The caller's value is put back. */
static void env_switch(void) {
    const char *had = getenv("SCADLES_CONV");
    char *saved = had ? strdup(had) : NULL;
    const sd_cpu_conv_impl dflt = sd_cpu_conv_dnnl_available() ? SD_CPU_CONV_DNNL : SD_CPU_CONV_OURS;
    sd_kctx *k = NULL;
    static const struct { const char *v; int ok; sd_cpu_conv_impl want; } cases[] = {
        {NULL, 1, SD_CPU_CONV_OURS}, {"", 1, SD_CPU_CONV_OURS}, {"ours", 1, SD_CPU_CONV_OURS},
        {"dnnl", 1, SD_CPU_CONV_DNNL}, {"cudnn", 0, SD_CPU_CONV_OURS}, {"OURS", 0, SD_CPU_CONV_OURS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].v) setenv("SCADLES_CONV", cases[i].v, 1);
        else unsetenv("SCADLES_CONV");
        const bool dnnl_case = cases[i].v && strcmp(cases[i].v, "dnnl") == 0;
        const bool ok = cases[i].ok && (!dnnl_case || sd_cpu_conv_dnnl_available());
        const sd_cpu_conv_impl want = !cases[i].v || !*cases[i].v ? dflt : cases[i].want;
        sd_status st = sd_cpu_kctx_create(1, &k);
        if (ok) {
            EXPECT(st == SD_OK && k && k->conv == want, "SCADLES_CONV=%s: %s, conv %s (want %s)",
                   cases[i].v ? cases[i].v : "(unset)", sd_status_str(st), k ? sd_cpu_conv_impl_name(k->conv) : "-",
                   sd_cpu_conv_impl_name(want));
        } else {
            EXPECT(st == SD_ERR_INVALID && !k, "SCADLES_CONV=%s: accepted", cases[i].v);
            EXPECT(strstr(sd_last_error(), "SCADLES_CONV") != NULL, "SCADLES_CONV=%s: message does not name it: %s",
                   cases[i].v, sd_last_error());
        }
        sd_cpu_kctx_destroy(k);
        k = NULL;
    }
    if (saved) setenv("SCADLES_CONV", saved, 1);
    else unsetenv("SCADLES_CONV");
    free(saved);
    EXPECT_OK(sd_cpu_kctx_create(1, &k));
    if (k && !sd_cpu_conv_dnnl_available())
        EXPECT_FAIL(sd_cpu_kctx_set_conv(k, SD_CPU_CONV_DNNL), SD_ERR_UNSUPPORTED, "oneDNN");
    if (k) EXPECT_FAIL(sd_cpu_kctx_set_conv(k, (sd_cpu_conv_impl)7), SD_ERR_INVALID, "unknown");
    sd_cpu_kctx_destroy(k);
}

int main(void) {
    sd_test_rng rng = {42};
    sd_kctx *k2 = NULL, *k1 = NULL, *k3 = NULL, *kd = NULL;
    EXPECT_OK(sd_cpu_kctx_create(2, &k2));
    EXPECT_OK(sd_cpu_kctx_create(1, &k1));
    EXPECT_OK(sd_cpu_kctx_create(3, &k3));
    EXPECT_OK(sd_cpu_kctx_create(2, &kd));
    if (!k2 || !k1 || !k3 || !kd) return sd_test_finish("test_conv");
    const bool dnnl = sd_cpu_conv_dnnl_available();
    printf("test_conv: implementations checked: ours%s\n", dnnl ? ", dnnl (oneDNN)" : " (this build has no oneDNN)");
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
    static const sd_cpu_conv_impl impls[] = {SD_CPU_CONV_OURS, SD_CPU_CONV_DNNL};
    for (int im = 0; im < (dnnl ? 2 : 1); im++) {
        worst_nmse = worst_fd = 0;
        EXPECT_OK(sd_cpu_kctx_set_conv(k1, impls[im]));
        EXPECT_OK(sd_cpu_kctx_set_conv(k2, impls[im]));
        EXPECT_OK(sd_cpu_kctx_set_conv(k3, impls[im]));
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
        printf("test_conv: %s: worst nmse %.3g (bound %.0e), worst finite-difference error %.3g (bound 5e-3)\n",
               sd_cpu_conv_impl_name(impls[im]), worst_nmse, NMSE_TOL, worst_fd);
    }

    if (dnnl) {
        EXPECT_OK(sd_cpu_kctx_set_conv(k2, SD_CPU_CONV_OURS));
        EXPECT_OK(sd_cpu_kctx_set_conv(kd, SD_CPU_CONV_DNNL));
        for (int i = 0; i < nshapes; i++) cross(k2, kd, &shapes[i]);
        for (int i = 0; i < nshapes; i++) deterministic_on(kd, &shapes[i]);
        EXPECT_OK(sd_cpu_kctx_set_conv(k1, SD_CPU_CONV_DNNL));
        deterministic_on(k1, &shapes[22]);
        cache_and_threads(kd, &rng);
        winograd(k3, shapes, nshapes, &rng);
    }
    env_switch();
    env_winograd();
    if (dnnl) printf("test_conv: ours vs dnnl: worst nmse %.3g (bound %.0e)\n", worst_cross, NMSE_TOL);
    sd_cpu_kctx_destroy(k1);
    sd_cpu_kctx_destroy(k2);
    sd_cpu_kctx_destroy(k3);
    sd_cpu_kctx_destroy(kd);
    return sd_test_finish("test_conv");
}
