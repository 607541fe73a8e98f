/* test_golden_ops.c: every op of the CPU backend (and of the CUDA backend when it is built and a
 * GPU is present) against PyTorch's values in tests/data/golden_ops.bin (tests/golden/gen_golden.py,
 * format in docs/golden-format.md), through the backend table exactly as the layers call it; the
 * CPU backend twice where the build has oneDNN, with our convolutions and with oneDNN's. Also
 * checks that the golden reader rejects truncated and corrupt copies of the file.
 *
 * Tolerances (NMSE = sum((got - want)^2) / sum(want^2), per compared tensor):
 *   1e-10  relu, max/avg/global pooling, batch norm eval, softmax cross-entropy, SGD: a few flops
 *          per output, so only rounding differences remain (CPU measured: <= 1e-14).
 *   1e-8   conv2d, linear, batch norm training: long dot products and reductions summed in another
 *          order than PyTorch's (im2col + BLAS vs oneDNN; blocked sums) (CPU measured: <= 1e-13). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/golden_file.h"

#define TOL_EXACT 1e-10
#define TOL_GEMM 1e-8

/* ---- backend buffers with sentinel guards ------------------------------------------------------ */

#define GUARD 64             /* bytes on each side; keeps the 64-byte alignment of the payload */
#define GUARD_BYTE 0xA5
#define MAX_BUFS 32

typedef struct dbuf {
    unsigned char *base; /* backend allocation: GUARD + bytes + GUARD */
    size_t bytes;
} dbuf;

/* The buffers of one test case, freed together. ok drops to 0 on any allocation failure. */
typedef struct pool {
    const sd_backend *be;
    dbuf d[MAX_BUFS];
    int n, ok;
} pool;

static void *pool_alloc(pool *pl, size_t bytes) {
    if (!pl->ok) return NULL;
    if (pl->n == MAX_BUFS) {
        EXPECT(0, "test case needs more than %d buffers", MAX_BUFS);
        pl->ok = 0;
        return NULL;
    }
    const sd_backend *be = pl->be;
    size_t total = bytes + 2 * GUARD;
    unsigned char *host = malloc(total), *base = NULL;
    sd_status s = host ? be->ops->alloc(be->ctx, total, (void **)&base) : SD_ERR_OOM;
    if (s == SD_OK) {
        memset(host, GUARD_BYTE, total); /* guards and payload: unwritten outputs show up too */
        s = be->ops->upload(be->ctx, base, host, total);
        if (s != SD_OK) be->ops->free(be->ctx, base);
    }
    free(host);
    EXPECT(s == SD_OK, "%s: alloc of %zu bytes: %s", be->ops->name, bytes, sd_last_error());
    if (s != SD_OK) {
        pl->ok = 0;
        return NULL;
    }
    pl->d[pl->n].base = base;
    pl->d[pl->n].bytes = bytes;
    pl->n++;
    return base + GUARD;
}

static void *pool_upload(pool *pl, const void *src, size_t bytes) {
    void *p = pool_alloc(pl, bytes);
    if (!p) return NULL;
    sd_status s = pl->be->ops->upload(pl->be->ctx, p, src, bytes);
    EXPECT(s == SD_OK, "%s: upload of %zu bytes: %s", pl->be->ops->name, bytes, sd_last_error());
    if (s != SD_OK) pl->ok = 0;
    return s == SD_OK ? p : NULL;
}

static const dbuf *pool_find(const pool *pl, const void *p) {
    for (int i = 0; i < pl->n; i++)
        if (pl->d[i].base + GUARD == p) return &pl->d[i];
    return NULL;
}

static void pool_free(pool *pl) {
    for (int i = 0; i < pl->n; i++) pl->be->ops->free(pl->be->ctx, pl->d[i].base);
    pl->n = 0;
}

/* Downloads a whole buffer with its guards; returns the host copy (payload at + GUARD) or NULL. */
static unsigned char *pool_fetch(const pool *pl, const dbuf *d) {
    size_t total = d->bytes + 2 * GUARD;
    unsigned char *host = malloc(total);
    if (!host) return NULL;
    if (pl->be->ops->synchronize(pl->be->ctx) != SD_OK ||
        pl->be->ops->download(pl->be->ctx, host, d->base, total) != SD_OK) {
        free(host);
        return NULL;
    }
    return host;
}

static int guards_intact(const unsigned char *host, size_t bytes) {
    for (size_t i = 0; i < GUARD; i++)
        if (host[i] != GUARD_BYTE || host[GUARD + bytes + i] != GUARD_BYTE) return 0;
    return 1;
}

/* ---- one test case ------------------------------------------------------------------------------ */

typedef struct tcase {
    const sd_backend *be;
    const sd_golden *g;
    const char *name; /* record group, e.g. "conv_a" */
    pool pl;
    int ok; /* 0 once a record is missing or malformed */
} tcase;

static void tcase_init(tcase *t, const sd_backend *be, const sd_golden *g, const char *name) {
    t->be = be;
    t->g = g;
    t->name = name;
    t->pl.be = be;
    t->pl.n = 0;
    t->pl.ok = 1;
    t->ok = 1;
}

static const float *rec_f32(tcase *t, const char *field, size_t n) {
    char name[2 * SD_GOLDEN_MAX_NAME + 2];
    const float *p = NULL;
    snprintf(name, sizeof name, "%s/%s", t->name, field);
    sd_status s = sd_golden_get_f32(t->g, name, n, &p);
    EXPECT(s == SD_OK, "%s", sd_last_error());
    if (s != SD_OK) t->ok = 0;
    return p;
}

static const int32_t *rec_i32(tcase *t, const char *field, size_t n) {
    char name[2 * SD_GOLDEN_MAX_NAME + 2];
    const int32_t *p = NULL;
    snprintf(name, sizeof name, "%s/%s", t->name, field);
    sd_status s = sd_golden_get_i32(t->g, name, n, &p);
    EXPECT(s == SD_OK, "%s", sd_last_error());
    if (s != SD_OK) t->ok = 0;
    return p;
}

/* Uploads golden record `field` (n floats) into a fresh backend buffer. */
static float *up_f32(tcase *t, const char *field, size_t n) {
    const float *h = rec_f32(t, field, n);
    return h ? pool_upload(&t->pl, h, n * sizeof(float)) : NULL;
}

static void *out_buf(tcase *t, size_t bytes) { return pool_alloc(&t->pl, bytes); }

/* Compares backend buffer `dev` (n floats) with golden record `field`: NMSE within tol, all
 * finite, guards intact. Prints one line per comparison. */
static void check_as(tcase *t, const char *field, const char *label, const float *dev, size_t n, double tol) {
    const float *want = rec_f32(t, field, n);
    const dbuf *d = pool_find(&t->pl, dev);
    if (!want || !d) {
        EXPECT(d != NULL, "%s/%s: output buffer missing", t->name, field);
        return;
    }
    unsigned char *host = pool_fetch(&t->pl, d);
    EXPECT(host != NULL, "%s %s/%s: download failed: %s", t->be->ops->name, t->name, label, sd_last_error());
    if (!host) return;
    const float *got = (const float *)(host + GUARD);
    double e = sd_nmse(got, want, n);
    printf("  %-5s %-10s %-14s n=%-6zu nmse %.2e (tol %.0e)\n", t->be->ops->name, t->name, label, n, e, tol);
    EXPECT(sd_all_finite(got, n), "%s %s/%s: non-finite output", t->be->ops->name, t->name, label);
    EXPECT(e <= tol, "%s %s/%s: nmse %.3e > %.0e (max |diff| %.3e)", t->be->ops->name, t->name, label, e, tol,
           sd_max_abs_diff(got, want, n));
    EXPECT(guards_intact(host, n * sizeof(float)), "%s %s/%s: wrote outside its %zu elements", t->be->ops->name,
           t->name, label, n);
    free(host);
}

static void check(tcase *t, const char *field, const float *dev, size_t n, double tol) {
    check_as(t, field, field, dev, n, tol);
}

static void check_guards_only(tcase *t, const char *what, const void *dev) {
    const dbuf *d = pool_find(&t->pl, dev);
    unsigned char *host = d ? pool_fetch(&t->pl, d) : NULL;
    EXPECT(host && guards_intact(host, d->bytes), "%s %s/%s: wrote outside its buffer", t->be->ops->name, t->name,
           what);
    free(host);
}

/* Runs an op and counts its status; the case stops at the first failure. */
#define OP(t, expr)                                                                                          \
    do {                                                                                                     \
        sd_status op_s_ = (expr);                                                                            \
        EXPECT(op_s_ == SD_OK, "%s %s: %s returned %s: %s", (t)->be->ops->name, (t)->name, #expr,            \
               sd_status_str(op_s_), sd_last_error());                                                       \
        if (op_s_ != SD_OK) goto done;                                                                       \
    } while (0)

#define NEED(t, cond) \
    do {              \
        if (!(t)->ok || !(t)->pl.ok || !(cond)) goto done; \
    } while (0)

static size_t sz(int a, int b, int c, int d) { return (size_t)a * (size_t)b * (size_t)c * (size_t)d; }

/* ---- ops ---------------------------------------------------------------------------------------- */

static void case_conv(tcase *t) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 12);
    NEED(t, m);
    sd_conv2d_params p;
    OP(t, sd_conv2d_params_make(&p, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11]));
    OP(t, sd_backend_require(be, SD_OP_CONV2D, &p));
    size_t nx = sz(p.n, p.c, p.h, p.w), nw = sz(p.k, p.c, p.kh, p.kw), ny = sz(p.n, p.k, p.oh, p.ow);
    float *x = up_f32(t, "x", nx), *w = up_f32(t, "w", nw), *b = p.has_bias ? up_f32(t, "b", p.k) : NULL;
    float *y = out_buf(t, ny * 4), *dy = up_f32(t, "dy", ny);
    float *dx = out_buf(t, nx * 4), *dw = out_buf(t, nw * 4), *db = p.has_bias ? out_buf(t, p.k * 4) : NULL;
    float *dw2 = out_buf(t, nw * 4), *db2 = p.has_bias ? out_buf(t, p.k * 4) : NULL;
    NEED(t, x && w && y && dy && dx && dw && dw2 && (!p.has_bias || (b && db && db2)));
    OP(t, be->ops->conv2d_fwd(be->ctx, &p, x, w, b, y));
    check(t, "y", y, ny, TOL_GEMM);
    OP(t, be->ops->conv2d_bwd(be->ctx, &p, x, w, dy, dx, dw, db));
    check(t, "dx", dx, nx, TOL_GEMM);
    check(t, "dw", dw, nw, TOL_GEMM);
    if (p.has_bias) check(t, "db", db, p.k, TOL_GEMM);
    /* The first layer passes dx = NULL: weight gradients must not change. */
    OP(t, be->ops->conv2d_bwd(be->ctx, &p, x, w, dy, NULL, dw2, db2));
    check_as(t, "dw", "dw(dx=NULL)", dw2, nw, TOL_GEMM);
    if (p.has_bias) check_as(t, "db", "db(dx=NULL)", db2, p.k, TOL_GEMM);
done:;
}

/* The case's batch-norm parameters (meta: n, c, h, w; hparams: eps, momentum), which the backend
 * must support; false (the failure counted) otherwise. */
static bool bn_case_params(tcase *t, sd_bn_params *p) {
    const int32_t *m = rec_i32(t, "meta", 4);
    const float *hp = rec_f32(t, "hparams", 2);
    NEED(t, m && hp);
    OP(t, sd_bn_params_make(p, m[0], m[1], m[2], m[3], hp[0], hp[1]));
    OP(t, sd_backend_require(t->be, SD_OP_BATCHNORM2D, p));
    return true;
done:
    return false;
}

static void case_bn_train(tcase *t) {
    const sd_backend *be = t->be;
    sd_bn_params p;
    NEED(t, bn_case_params(t, &p));
    size_t nx = sz(p.n, p.c, p.h, p.w), c = (size_t)p.c;
    float *x = up_f32(t, "x", nx), *gamma = up_f32(t, "gamma", c), *beta = up_f32(t, "beta", c);
    float *rm = up_f32(t, "running_mean0", c), *rv = up_f32(t, "running_var0", c);
    float *y = out_buf(t, nx * 4), *sm = out_buf(t, c * 4), *si = out_buf(t, c * 4);
    float *dy = up_f32(t, "dy", nx), *dx = out_buf(t, nx * 4), *dg = out_buf(t, c * 4), *dbt = out_buf(t, c * 4);
    NEED(t, x && gamma && beta && rm && rv && y && sm && si && dy && dx && dg && dbt);
    OP(t, be->ops->bn_fwd_train(be->ctx, &p, x, gamma, beta, y, rm, rv, sm, si));
    check(t, "y", y, nx, TOL_GEMM);
    check(t, "running_mean", rm, c, TOL_GEMM);
    check(t, "running_var", rv, c, TOL_GEMM);
    check(t, "save_mean", sm, c, TOL_GEMM);
    check(t, "save_invstd", si, c, TOL_GEMM);
    OP(t, be->ops->bn_bwd(be->ctx, &p, x, gamma, sm, si, dy, dx, dg, dbt));
    check(t, "dx", dx, nx, TOL_GEMM);
    check(t, "dgamma", dg, c, TOL_GEMM);
    check(t, "dbeta", dbt, c, TOL_GEMM);
done:;
}

static void case_bn_eval(tcase *t) {
    const sd_backend *be = t->be;
    sd_bn_params p;
    NEED(t, bn_case_params(t, &p));
    size_t nx = sz(p.n, p.c, p.h, p.w), c = (size_t)p.c;
    float *x = up_f32(t, "x", nx), *gamma = up_f32(t, "gamma", c), *beta = up_f32(t, "beta", c);
    float *rm = up_f32(t, "running_mean", c), *rv = up_f32(t, "running_var", c), *y = out_buf(t, nx * 4);
    NEED(t, x && gamma && beta && rm && rv && y);
    OP(t, be->ops->bn_fwd_eval(be->ctx, &p, x, gamma, beta, rm, rv, y));
    check(t, "y", y, nx, TOL_EXACT);
done:;
}

static void case_relu(tcase *t) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 4);
    NEED(t, m);
    OP(t, sd_backend_require(be, SD_OP_RELU, NULL));
    size_t n = sz(m[0], m[1], m[2], m[3]);
    float *x = up_f32(t, "x", n), *y = out_buf(t, n * 4), *dy = up_f32(t, "dy", n), *dx = out_buf(t, n * 4);
    NEED(t, x && y && dy && dx);
    OP(t, be->ops->relu_fwd(be->ctx, n, x, y));
    check(t, "y", y, n, TOL_EXACT);
    OP(t, be->ops->relu_bwd(be->ctx, n, y, dy, dx));
    check(t, "dx", dx, n, TOL_EXACT);
    /* the fused residual add + ReLU: relu(x + 0) is PyTorch's relu(x) (up to the sign of zeros) */
    OP(t, be->ops->zero(be->ctx, dx, n * sizeof(float)));
    OP(t, be->ops->add_relu_fwd(be->ctx, n, x, dx, y));
    check(t, "y", y, n, TOL_EXACT);
done:;
}

static void case_pool(tcase *t, int is_max) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 10);
    NEED(t, m);
    sd_pool2d_params p;
    OP(t, sd_pool2d_params_make(&p, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9]));
    OP(t, sd_backend_require(be, is_max ? SD_OP_MAXPOOL2D : SD_OP_AVGPOOL2D, &p));
    size_t nx = sz(p.n, p.c, p.h, p.w), ny = sz(p.n, p.c, p.oh, p.ow);
    float *x = up_f32(t, "x", nx), *y = out_buf(t, ny * 4), *dy = up_f32(t, "dy", ny), *dx = out_buf(t, nx * 4);
    int32_t *arg = is_max ? out_buf(t, ny * sizeof(int32_t)) : NULL;
    NEED(t, x && y && dy && dx && (!is_max || arg));
    if (is_max) {
        OP(t, be->ops->maxpool_fwd(be->ctx, &p, x, y, arg));
        check(t, "y", y, ny, TOL_EXACT);
        check_guards_only(t, "argmax", arg);
        OP(t, be->ops->maxpool_bwd(be->ctx, &p, dy, arg, dx));
    } else {
        OP(t, be->ops->avgpool_fwd(be->ctx, &p, x, y));
        check(t, "y", y, ny, TOL_EXACT);
        OP(t, be->ops->avgpool_bwd(be->ctx, &p, dy, dx));
    }
    check(t, "dx", dx, nx, TOL_EXACT);
done:;
}

static void case_gap(tcase *t) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 4);
    NEED(t, m);
    sd_pool2d_params p;
    OP(t, sd_pool2d_params_make(&p, m[0], m[1], m[2], m[3], m[2], m[3], 1, 1, 0, 0));
    OP(t, sd_backend_require(be, SD_OP_GLOBAL_AVGPOOL, &p));
    size_t nx = sz(p.n, p.c, p.h, p.w), ny = (size_t)p.n * (size_t)p.c;
    float *x = up_f32(t, "x", nx), *y = out_buf(t, ny * 4), *dy = up_f32(t, "dy", ny), *dx = out_buf(t, nx * 4);
    NEED(t, x && y && dy && dx);
    OP(t, be->ops->gap_fwd(be->ctx, &p, x, y));
    check(t, "y", y, ny, TOL_EXACT);
    OP(t, be->ops->gap_bwd(be->ctx, &p, dy, dx));
    check(t, "dx", dx, nx, TOL_EXACT);
done:;
}

static void case_linear(tcase *t) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 4);
    NEED(t, m);
    sd_linear_params p;
    OP(t, sd_linear_params_make(&p, m[0], m[1], m[2], m[3]));
    OP(t, sd_backend_require(be, SD_OP_LINEAR, &p));
    size_t nx = (size_t)p.n * p.in, nw = (size_t)p.out * p.in, ny = (size_t)p.n * p.out, nb = (size_t)p.out;
    float *x = up_f32(t, "x", nx), *w = up_f32(t, "w", nw), *b = p.has_bias ? up_f32(t, "b", nb) : NULL;
    float *y = out_buf(t, ny * 4), *dy = up_f32(t, "dy", ny);
    float *dx = out_buf(t, nx * 4), *dw = out_buf(t, nw * 4), *db = p.has_bias ? out_buf(t, nb * 4) : NULL;
    float *dw2 = out_buf(t, nw * 4), *db2 = p.has_bias ? out_buf(t, nb * 4) : NULL;
    NEED(t, x && w && y && dy && dx && dw && dw2 && (!p.has_bias || (b && db && db2)));
    OP(t, be->ops->linear_fwd(be->ctx, &p, x, w, b, y));
    check(t, "y", y, ny, TOL_GEMM);
    OP(t, be->ops->linear_bwd(be->ctx, &p, x, w, dy, dx, dw, db));
    check(t, "dx", dx, nx, TOL_GEMM);
    check(t, "dw", dw, nw, TOL_GEMM);
    if (p.has_bias) check(t, "db", db, nb, TOL_GEMM);
    OP(t, be->ops->linear_bwd(be->ctx, &p, x, w, dy, NULL, dw2, db2));
    check_as(t, "dw", "dw(dx=NULL)", dw2, nw, TOL_GEMM);
    if (p.has_bias) check_as(t, "db", "db(dx=NULL)", db2, nb, TOL_GEMM);
done:;
}

static void case_xent(tcase *t) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 2);
    NEED(t, m);
    sd_xent_params p;
    OP(t, sd_xent_params_make(&p, m[0], m[1]));
    OP(t, sd_backend_require(be, SD_OP_SOFTMAX_XENT, &p));
    size_t nl = (size_t)p.n * p.classes;
    const int32_t *lab_h = rec_i32(t, "labels", (size_t)p.n);
    const float *loss_want = rec_f32(t, "loss", 1);
    NEED(t, lab_h && loss_want);
    float *logits = up_f32(t, "logits", nl), *probs = out_buf(t, nl * 4), *dl = out_buf(t, nl * 4);
    int32_t *lab = pool_upload(&t->pl, lab_h, (size_t)p.n * sizeof(int32_t));
    NEED(t, logits && probs && dl && lab);
    float loss = 0.0f;
    OP(t, be->ops->xent_fwd(be->ctx, &p, logits, lab, probs, &loss));
    double e = sd_nmse(&loss, loss_want, 1);
    printf("  %-5s %-10s %-14s loss %.7g want %.7g nmse %.2e (tol %.0e)\n", be->ops->name, t->name, "loss",
           (double)loss, (double)loss_want[0], e, TOL_EXACT);
    EXPECT(e <= TOL_EXACT, "%s %s: loss %.9g, PyTorch %.9g (nmse %.3e)", be->ops->name, t->name, (double)loss,
           (double)loss_want[0], e);
    check(t, "probs", probs, nl, TOL_EXACT);
    OP(t, be->ops->xent_bwd(be->ctx, &p, probs, lab, 1.0f / (float)p.n, dl));
    check(t, "dlogits", dl, nl, TOL_EXACT);
done:;
}

static void case_sgd(tcase *t) {
    const sd_backend *be = t->be;
    const int32_t *m = rec_i32(t, "meta", 3);
    const float *hp = rec_f32(t, "hparams", 4);
    NEED(t, m && hp && m[0] > 0 && m[2] > 0);
    size_t n = (size_t)m[0];
    float *w = up_f32(t, "w0", n), *g = out_buf(t, n * 4), *buf = out_buf(t, n * 4);
    NEED(t, w && g && buf);
    for (int step = 1; step <= m[2]; step++) {
        char field[16];
        snprintf(field, sizeof field, "g%d", step);
        const float *gh = rec_f32(t, field, n);
        NEED(t, gh);
        OP(t, be->ops->upload(be->ctx, g, gh, n * 4));
        sd_sgd_params p;
        OP(t, sd_sgd_params_make(&p, n, hp[0], hp[1], hp[2], hp[3], m[1], step == 1));
        OP(t, sd_backend_require(be, SD_OP_SGD, &p));
        OP(t, be->ops->sgd_update(be->ctx, &p, w, g, buf));
        snprintf(field, sizeof field, "w%d", step);
        check(t, field, w, n, TOL_EXACT);
    }
done:;
}

/* ---- dispatch ----------------------------------------------------------------------------------- */

enum { K_CONV, K_BN, K_BN_EVAL, K_RELU, K_MAXPOOL, K_AVGPOOL, K_GAP, K_LINEAR, K_XENT, K_SGD, K_COUNT };
static const char *const kind_prefix[K_COUNT] = {"conv_",    "bn_",      "bn_eval_", "relu_",  "maxpool_",
                                                 "avgpool_", "gap_",     "linear_",  "xent_",  "sgd_"};

static int kind_of(const char *group) {
    int best = -1;
    size_t best_len = 0;
    for (int k = 0; k < K_COUNT; k++) {
        size_t l = strlen(kind_prefix[k]);
        if (strncmp(group, kind_prefix[k], l) == 0 && l > best_len) best = k, best_len = l;
    }
    return best;
}

/* Every group with a "<group>/meta" record is one case; "cnn" belongs to the network test. */
static void run_backend(const sd_backend *be, const sd_golden *g) {
    int seen[K_COUNT] = {0};
    printf("%s backend:\n", be->ops->name);
    for (size_t i = 0; i < sd_golden_count(g); i++) {
        const char *name = sd_golden_at(g, i)->name;
        const char *slash = strrchr(name, '/');
        if (!slash || strcmp(slash, "/meta") != 0) continue;
        char group[SD_GOLDEN_MAX_NAME + 1];
        size_t gl = (size_t)(slash - name);
        memcpy(group, name, gl);
        group[gl] = '\0';
        if (strcmp(group, "cnn") == 0) continue;
        int k = kind_of(group);
        EXPECT(k >= 0, "golden group \"%s\" has no checker in test_golden_ops.c", group);
        if (k < 0) continue;
        seen[k]++;
        tcase t;
        tcase_init(&t, be, g, group);
        switch (k) {
        case K_CONV: case_conv(&t); break;
        case K_BN: case_bn_train(&t); break;
        case K_BN_EVAL: case_bn_eval(&t); break;
        case K_RELU: case_relu(&t); break;
        case K_MAXPOOL: case_pool(&t, 1); break;
        case K_AVGPOOL: case_pool(&t, 0); break;
        case K_GAP: case_gap(&t); break;
        case K_LINEAR: case_linear(&t); break;
        case K_XENT: case_xent(&t); break;
        case K_SGD: case_sgd(&t); break;
        }
        pool_free(&t.pl);
    }
    /* A regenerated file that lost a whole op family must not pass quietly. */
    for (int k = 0; k < K_COUNT; k++)
        EXPECT(seen[k] > 0, "golden file has no \"%s*\" case", kind_prefix[k]);
}

/* ---- the reader rejects corrupt files ----------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Writes bytes to a fresh mkstemp file under dir; returns 0 on failure. */
static int write_temp(const char *dir, const void *bytes, size_t len, char *path, size_t path_size) {
    snprintf(path, path_size, "%s/sd_golden_XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    const unsigned char *p = bytes;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0) {
            close(fd);
            unlink(path);
            return 0;
        }
        p += w;
        left -= (size_t)w;
    }
    return close(fd) == 0;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Loads `bytes` from a temp copy and expects SD_ERR_FORMAT with a message naming the copy and,
 * when given, `also` (a record name or the kind of damage). */
static void expect_rejected(const char *dir, const char *what, const unsigned char *bytes, size_t len,
                            const char *also) {
    char path[4096];
    if (!write_temp(dir, bytes, len, path, sizeof path)) {
        EXPECT(0, "%s: cannot write a temp copy under %s", what, dir);
        return;
    }
    sd_golden *g = (sd_golden *)1;
    sd_status s = sd_golden_load(path, &g);
    const char *msg = sd_last_error();
    EXPECT(s == SD_ERR_FORMAT, "%s: load returned %s: %s", what, sd_status_str(s), msg);
    EXPECT(g == NULL, "%s: *out not cleared on failure", what);
    EXPECT(strstr(msg, path) != NULL, "%s: message does not name the file: %s", what, msg);
    if (also) EXPECT(strstr(msg, also) != NULL, "%s: message does not mention \"%s\": %s", what, also, msg);
    if (s == SD_OK) sd_golden_free(g);
    unlink(path);
}

static void test_corrupt(const char *good_path, const sd_golden *good) {
    size_t len = 0;
    unsigned char *orig = slurp(good_path, &len);
    EXPECT(orig != NULL && len > 64, "cannot re-read %s", good_path);
    if (!orig || len <= 64) {
        free(orig);
        return;
    }
    unsigned char *b = malloc(len + 8);
    EXPECT(b != NULL, "out of memory");
    if (!b) {
        free(orig);
        return;
    }
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    const char *last = sd_golden_at(good, sd_golden_count(good) - 1)->name;
    const char *first = sd_golden_at(good, 0)->name;
    uint32_t first_len = (uint32_t)strlen(first);
    size_t first_ndim_at = 16 + 4 + first_len + 4;

    memcpy(b, orig, len);
    b[0] = 'X';
    expect_rejected(tmp, "wrong magic", b, len, "magic");

    memcpy(b, orig, len);
    put_u32(b + 8, 2);
    expect_rejected(tmp, "wrong version", b, len, "version");

    memcpy(b, orig, len);
    put_u32(b + 12, 0xFFFFFFFFu);
    expect_rejected(tmp, "absurd record count", b, len, "records");

    memcpy(b, orig, len);
    put_u32(b + 12, (uint32_t)sd_golden_count(good) - 1);
    expect_rejected(tmp, "record count one short", b, len, "after the last");

    memcpy(b, orig, len);
    put_u32(b + 16, 0);
    expect_rejected(tmp, "empty name", b, len, "name length");

    memcpy(b, orig, len);
    put_u32(b + first_ndim_at - 4, 7);
    expect_rejected(tmp, "unknown dtype", b, len, first);

    memcpy(b, orig, len);
    put_u32(b + first_ndim_at, 9);
    expect_rejected(tmp, "too many dims", b, len, first);

    memcpy(b, orig, len);
    put_u32(b + first_ndim_at + 4, 0x7FFFFFFFu);
    expect_rejected(tmp, "dims larger than the file", b, len, first);

    expect_rejected(tmp, "truncated in the last record's data", orig, len - 10, last);
    expect_rejected(tmp, "truncated inside the header", orig, 12, "header");

    memcpy(b, orig, len);
    memset(b + len, 0, 3);
    expect_rejected(tmp, "trailing bytes", b, len + 3, "after the last");

    /* Cut anywhere: the first records byte by byte, then strided through the file. */
    int cuts = 0;
    for (size_t cut = 0; cut < len; cut += cut < 160 ? 1 : len / 97) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", cut);
        expect_rejected(tmp, what, orig, cut, NULL);
        cuts++;
    }
    printf("corrupt copies: 11 named cases and %d truncations rejected as expected\n", cuts);

    sd_golden *g = (sd_golden *)1;
    EXPECT_FAIL(sd_golden_load("/nonexistent/dir/golden_ops.bin", &g), SD_ERR_IO, "/nonexistent/dir/golden_ops.bin");
    EXPECT(g == NULL, "*out not cleared when the file is missing");
    free(b);
    free(orig);
}

static void test_lookup(const sd_golden *g) {
    const sd_golden_record *r = NULL;
    EXPECT_FAIL(sd_golden_find(g, "no/such/record", &r), SD_ERR_INVALID, "no/such/record");
    EXPECT(r == NULL, "find left a record behind");
    const float *f = NULL;
    EXPECT_FAIL(sd_golden_get_f32(g, "conv_a/meta", 0, &f), SD_ERR_FORMAT, "conv_a/meta");
    EXPECT_FAIL(sd_golden_get_f32(g, "conv_a/x", 7, &f), SD_ERR_FORMAT, "conv_a/x");
    EXPECT_OK(sd_golden_find(g, "conv_a/x", &r));
    if (r) {
        EXPECT(sd_golden_ndim(r) == 4 && sd_golden_numel(r) == (size_t)sd_golden_dim(r, 0) * sd_golden_dim(r, 1) *
                                                                   sd_golden_dim(r, 2) * sd_golden_dim(r, 3),
               "conv_a/x shape");
        EXPECT(sd_golden_f32(r) != NULL && sd_golden_i32(r) == NULL, "conv_a/x dtype accessors");
        EXPECT(sd_golden_dim(r, 4) == 0 && sd_golden_dim(r, -1) == 0, "dim out of range");
    }
}

/* ---- main --------------------------------------------------------------------------------------- */

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the result lines in order with FAIL lines */
    char path[4096];
    sd_test_data_path("golden_ops.bin", path, sizeof path);
    sd_golden *g = NULL;
    EXPECT_OK(sd_golden_load(path, &g));
    if (!g) return sd_test_finish("test_golden_ops");
    printf("%s: %zu records\n", path, sd_golden_count(g));

    test_lookup(g);
    test_corrupt(path, g);

    /* The CPU backend once per convolution implementation (our kernels; oneDNN where built). */
    sd_backend cpu = {0};
    EXPECT_OK(sd_backend_cpu_create(&cpu, 2));
    if (cpu.ops) {
        static const sd_cpu_conv_impl impls[] = {SD_CPU_CONV_OURS, SD_CPU_CONV_DNNL};
        for (int i = 0; i < (sd_cpu_conv_dnnl_available() ? 2 : 1); i++) {
            EXPECT_OK(sd_cpu_kctx_set_conv(cpu.ctx, impls[i]));
            printf("convolutions: %s\n", sd_cpu_conv_impl_name(impls[i]));
            run_backend(&cpu, g);
        }
        if (!sd_cpu_conv_dnnl_available()) printf("convolutions: dnnl not checked (this build has no oneDNN)\n");
        sd_backend_destroy(&cpu);
    }

    sd_backend cuda = {0};
    sd_status s = sd_backend_cuda_create(&cuda, 0);
    if (s == SD_OK) {
        run_backend(&cuda, g);
        sd_backend_destroy(&cuda);
    } else {
        printf("cuda backend: not checked here (%s)\n", sd_status_str(s));
    }

    sd_golden_free(g);
    return sd_test_finish("test_golden_ops");
}
