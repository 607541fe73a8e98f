/* test_cuda_parity.c: the CUDA backend against the CPU backend, op by op and end to end.
 *
 * Everywhere: the CUDA backend either comes up or fails cleanly (SD_ERR_UNSUPPORTED/SD_ERR_RUNTIME,
 * a message saying why, no table left behind), and the pinned host allocation helper works (it
 * falls back to pageable memory without a GPU). Without a usable GPU the test then reports
 * "skipped" (exit 77) naming the reason; it never passes without running the GPU checks. Set
 * SD_CUDA_REQUIRE=1 on GPU machines to turn a missing device into a failure instead.
 *
 * With a GPU, every op runs through both backend tables on the same random inputs (several shapes:
 * odd sizes, stride 2, padding, bias on and off, dx NULL) and the outputs are compared:
 *   bitwise equal: relu, max pool (values, argmax, gradient), dropout (masks, outputs, gradient),
 *                  add, scale (same float operations in the same order)
 *   NMSE <= 1e-8:  conv2d forward and backward (cuDNN may pick FFT or Winograd algorithms; TF32 is
 *                  disabled, so the error is fp32 rounding of a different summation order)
 *   NMSE <= 1e-10: linear (cuBLAS sgemm), batch norm (outputs, saved and running statistics,
 *                  gradients)
 *   NMSE <= 1e-12: average and global average pool, softmax and its gradient, axpy (FMA contraction
 *                  may differ)
 *   loss: relative difference <= 1e-6; SGD: max |difference| <= 1e-6 for weights and momentum
 * plus the error paths (labels out of range name the first bad index; a corrupt argmax is reported
 * at the next synchronisation; an oversized convolution is declined by supports_op), the cuDNN
 * algorithm cache (one entry per shape, reused), and ten SGD steps of ResNet-20 at batch 8 from
 * identical weights: losses within 1e-3 relative at every step, final weights and BN statistics
 * NMSE <= 1e-6. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models.h"
#include "engine/net.h"
#include "kernels/backend.h"
#include "tests/harness.h"
#ifdef SCADLES_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

#ifdef SCADLES_HAVE_CUDA

/* ---- the pinned host allocation helper (runs with or without a GPU) ---------------------------- */

static void test_host_alloc(void) {
    void *p = NULL;
    bool pinned = true;
    const size_t bytes = (size_t)1 << 20;
    EXPECT_OK(sd_cuda_host_alloc(bytes, &p, &pinned));
    EXPECT(p != NULL, "host alloc returned NULL");
    if (!p) return;
    EXPECT(((uintptr_t)p & 63) == 0, "host alloc: %p is not 64-byte aligned", p);
    memset(p, 0x5a, bytes);
    EXPECT(((unsigned char *)p)[bytes - 1] == 0x5a, "host alloc: memory not writable");
    printf("host alloc: %zu bytes, %s\n", bytes, pinned ? "pinned (cudaMallocHost)" : "pageable fallback");
    sd_cuda_host_free(p, pinned);
    EXPECT_FAIL(sd_cuda_host_alloc(bytes, NULL, &pinned), SD_ERR_INVALID, "NULL");
}

/* ---- paired buffers: one in each backend -------------------------------------------------------- */

static sd_backend cpu, gpu;
static sd_test_rng rng = {20240611u};

typedef struct dual {
    size_t n, esz;
    void *c, *g;
} dual;

static int dual_alloc(dual *d, size_t n, size_t esz) {
    d->n = n;
    d->esz = esz;
    d->c = d->g = NULL;
    sd_status a = cpu.ops->alloc(cpu.ctx, n * esz, &d->c);
    sd_status b = a == SD_OK ? gpu.ops->alloc(gpu.ctx, n * esz, &d->g) : a;
    EXPECT(a == SD_OK && b == SD_OK, "allocating %zu bytes: %s", n * esz, sd_last_error());
    return a == SD_OK && b == SD_OK;
}

static void dual_free(dual *d) {
    if (d->c) cpu.ops->free(cpu.ctx, d->c);
    if (d->g) gpu.ops->free(gpu.ctx, d->g);
    d->c = d->g = NULL;
}

static void dual_set(dual *d, const void *host) {
    memcpy(d->c, host, d->n * d->esz);
    EXPECT_OK(gpu.ops->upload(gpu.ctx, d->g, host, d->n * d->esz));
}

static void dual_rand(dual *d, float lo, float hi) {
    float *h = malloc(d->n * sizeof(float));
    sd_test_fill(&rng, h, d->n, lo, hi);
    dual_set(d, h);
    free(h);
}

/* NaN in every float (0xff bytes otherwise): an output element nobody writes shows up. */
static void dual_poison(dual *d) {
    void *h = malloc(d->n * d->esz);
    if (d->esz == sizeof(float))
        for (size_t i = 0; i < d->n; i++) ((float *)h)[i] = NAN;
    else
        memset(h, 0xff, d->n * d->esz);
    dual_set(d, h);
    free(h);
}

static void *dual_fetch(const dual *d) {
    void *h = malloc(d->n * d->esz);
    EXPECT_OK(gpu.ops->download(gpu.ctx, h, d->g, d->n * d->esz));
    return h;
}

static void check_nmse(const char *tag, const char *what, const dual *d, double bound) {
    float *h = dual_fetch(d);
    const double e = sd_nmse(h, (const float *)d->c, d->n);
    EXPECT(e <= bound, "%s: %s: NMSE %.3g exceeds %.1g (max |diff| %.3g)", tag, what, e, bound,
           sd_max_abs_diff(h, (const float *)d->c, d->n));
    printf("  %-44s %-12s nmse %.2e\n", tag, what, e);
    free(h);
}

static void check_same(const char *tag, const char *what, const dual *d) {
    unsigned char *h = dual_fetch(d);
    const unsigned char *c = d->c;
    size_t first = d->n;
    for (size_t i = 0; i < d->n && first == d->n; i++)
        if (memcmp(h + i * d->esz, c + i * d->esz, d->esz)) first = i;
    EXPECT(first == d->n, "%s: %s: not bitwise equal, first difference at element %zu of %zu", tag, what, first, d->n);
    printf("  %-44s %-12s %s\n", tag, what, first == d->n ? "bitwise equal" : "DIFFERENT");
    free(h);
}

#define CF(d) ((float *)(d).c)
#define GF(d) ((float *)(d).g)
#define CI(d) ((int32_t *)(d).c)
#define GI(d) ((int32_t *)(d).g)

/* ---- convolution --------------------------------------------------------------------------------- */

static void conv_case(int n, int c, int h, int w, int k, int kh, int kw, int sh, int sw, int ph, int pw, int bias,
                      int want_dx) {
    sd_conv2d_params p;
    EXPECT_OK(sd_conv2d_params_make(&p, n, c, h, w, k, kh, kw, sh, sw, ph, pw, bias));
    char tag[96];
    snprintf(tag, sizeof tag, "conv [%d,%d,%d,%d] k%d %dx%d s%d,%d p%d,%d%s%s", n, c, h, w, k, kh, kw, sh, sw, ph, pw,
             bias ? " bias" : "", want_dx ? "" : " dx=NULL");
    const size_t xn = (size_t)n * c * h * w, wn = (size_t)k * c * kh * kw, yn = (size_t)n * k * p.oh * p.ow;
    dual x, wt, b, y, dy, dx, dw, db;
    int ok = dual_alloc(&x, xn, 4) & dual_alloc(&wt, wn, 4) & dual_alloc(&b, (size_t)k, 4) & dual_alloc(&y, yn, 4) &
             dual_alloc(&dy, yn, 4) & dual_alloc(&dx, xn, 4) & dual_alloc(&dw, wn, 4) & dual_alloc(&db, (size_t)k, 4);
    if (ok) {
        dual_rand(&x, -1.0f, 1.0f);
        dual_rand(&wt, -0.5f, 0.5f);
        dual_rand(&b, -0.5f, 0.5f);
        dual_poison(&y);
        EXPECT_OK(cpu.ops->conv2d_fwd(cpu.ctx, &p, CF(x), CF(wt), bias ? CF(b) : NULL, CF(y)));
        EXPECT_OK(gpu.ops->conv2d_fwd(gpu.ctx, &p, GF(x), GF(wt), bias ? GF(b) : NULL, GF(y)));
        check_nmse(tag, "y", &y, 1e-8);

        dual_rand(&dy, -1.0f, 1.0f);
        dual_poison(&dx);
        dual_poison(&dw);
        dual_poison(&db);
        EXPECT_OK(cpu.ops->conv2d_bwd(cpu.ctx, &p, CF(x), CF(wt), CF(dy), want_dx ? CF(dx) : NULL, CF(dw),
                                      bias ? CF(db) : NULL));
        EXPECT_OK(gpu.ops->conv2d_bwd(gpu.ctx, &p, GF(x), GF(wt), GF(dy), want_dx ? GF(dx) : NULL, GF(dw),
                                      bias ? GF(db) : NULL));
        check_nmse(tag, "dw", &dw, 1e-8);
        if (bias) check_nmse(tag, "db", &db, 1e-8);
        if (want_dx) check_nmse(tag, "dx", &dx, 1e-8);
    }
    dual_free(&x), dual_free(&wt), dual_free(&b), dual_free(&y);
    dual_free(&dy), dual_free(&dx), dual_free(&dw), dual_free(&db);
}

static void test_conv(void) {
    conv_case(2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1);
    conv_case(3, 4, 11, 10, 6, 3, 3, 2, 2, 1, 1, 0, 1);
    conv_case(1, 5, 8, 8, 7, 1, 1, 2, 2, 0, 0, 1, 0);
    conv_case(2, 2, 9, 13, 3, 5, 3, 2, 1, 2, 0, 1, 1);
    conv_case(4, 16, 16, 16, 32, 3, 3, 2, 2, 1, 1, 0, 1);
    conv_case(8, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, 0, 0);

    /* The algorithm cache: one entry per shape, reused on the next call of the same shape. */
    const int before = sd_cuda_conv_algo_cache_size(gpu.ctx);
    EXPECT(before == 6, "cuDNN algorithm cache holds %d shapes after 6 distinct convolutions", before);
    conv_case(2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1);
    EXPECT(sd_cuda_conv_algo_cache_size(gpu.ctx) == before, "a repeated shape added a cache entry (%d -> %d)", before,
           sd_cuda_conv_algo_cache_size(gpu.ctx));

    /* A convolution too large for cuDNN's int-indexed 4-D descriptors is declined up front. */
    sd_conv2d_params big;
    EXPECT_OK(sd_conv2d_params_make(&big, 1024, 64, 256, 256, 64, 3, 3, 1, 1, 1, 1, 0));
    EXPECT(!gpu.ops->supports_op(gpu.ctx, SD_OP_CONV2D, &big), "a 2^32-element convolution input is accepted");
    EXPECT_FAIL(sd_backend_require(&gpu, SD_OP_CONV2D, &big), SD_ERR_UNSUPPORTED, "conv2d");
    EXPECT(gpu.ops->supports_op(gpu.ctx, SD_OP_RELU, NULL), "relu declined");
}

/* ---- batch norm ---------------------------------------------------------------------------------- */

/* relu: the fused batch norm + ReLU (sd_bn_params.relu forward, bn_relu_bwd) */
static void bn_case(int n, int c, int h, int w, float offset, int want_dx, bool relu) {
    sd_bn_params p;
    EXPECT_OK(sd_bn_params_make(&p, n, c, h, w, 1e-5f, 0.1f));
    p.relu = relu;
    char tag[96];
    snprintf(tag, sizeof tag, "batchnorm%s [%d,%d,%d,%d] mean~%g%s", relu ? "+relu" : "", n, c, h, w, (double)offset,
             want_dx ? "" : " dx=NULL");
    const size_t xn = (size_t)n * c * h * w;
    dual x, g, b, y, rm, rv, sm, si, dy, dx, dg, dbt;
    int ok = dual_alloc(&x, xn, 4) & dual_alloc(&g, c, 4) & dual_alloc(&b, c, 4) & dual_alloc(&y, xn, 4) &
             dual_alloc(&rm, c, 4) & dual_alloc(&rv, c, 4) & dual_alloc(&sm, c, 4) & dual_alloc(&si, c, 4) &
             dual_alloc(&dy, xn, 4) & dual_alloc(&dx, xn, 4) & dual_alloc(&dg, c, 4) & dual_alloc(&dbt, c, 4);
    if (ok) {
        dual_rand(&x, offset - 1.0f, offset + 1.0f);
        dual_rand(&g, 0.5f, 1.5f);
        dual_rand(&b, -0.5f, 0.5f);
        dual_rand(&rm, -0.1f, 0.1f);
        dual_rand(&rv, 0.5f, 1.5f);
        dual_poison(&y), dual_poison(&sm), dual_poison(&si);
        EXPECT_OK(cpu.ops->bn_fwd_train(cpu.ctx, &p, CF(x), CF(g), CF(b), CF(y), CF(rm), CF(rv), CF(sm), CF(si)));
        EXPECT_OK(gpu.ops->bn_fwd_train(gpu.ctx, &p, GF(x), GF(g), GF(b), GF(y), GF(rm), GF(rv), GF(sm), GF(si)));
        check_nmse(tag, "y", &y, 1e-10);
        check_nmse(tag, "save_mean", &sm, 1e-10);
        check_nmse(tag, "save_invstd", &si, 1e-10);
        check_nmse(tag, "running_mean", &rm, 1e-10);
        check_nmse(tag, "running_var", &rv, 1e-10);

        dual_poison(&y);
        EXPECT_OK(cpu.ops->bn_fwd_eval(cpu.ctx, &p, CF(x), CF(g), CF(b), CF(rm), CF(rv), CF(y)));
        EXPECT_OK(gpu.ops->bn_fwd_eval(gpu.ctx, &p, GF(x), GF(g), GF(b), GF(rm), GF(rv), GF(y)));
        check_nmse(tag, "y (eval)", &y, 1e-10);

        dual_rand(&dy, -1.0f, 1.0f);
        dual_poison(&dx), dual_poison(&dg), dual_poison(&dbt);
        if (relu) { /* the backward masks by the training forward's y: each side its own */
            EXPECT_OK(cpu.ops->bn_fwd_train(cpu.ctx, &p, CF(x), CF(g), CF(b), CF(y), CF(rm), CF(rv), CF(sm), CF(si)));
            EXPECT_OK(gpu.ops->bn_fwd_train(gpu.ctx, &p, GF(x), GF(g), GF(b), GF(y), GF(rm), GF(rv), GF(sm), GF(si)));
            EXPECT_OK(cpu.ops->bn_relu_bwd(cpu.ctx, &p, CF(x), CF(y), CF(g), CF(sm), CF(si), CF(dy),
                                           want_dx ? CF(dx) : NULL, CF(dg), CF(dbt)));
            EXPECT_OK(gpu.ops->bn_relu_bwd(gpu.ctx, &p, GF(x), GF(y), GF(g), GF(sm), GF(si), GF(dy),
                                           want_dx ? GF(dx) : NULL, GF(dg), GF(dbt)));
        } else {
            EXPECT_OK(cpu.ops->bn_bwd(cpu.ctx, &p, CF(x), CF(g), CF(sm), CF(si), CF(dy), want_dx ? CF(dx) : NULL, CF(dg),
                                      CF(dbt)));
            EXPECT_OK(gpu.ops->bn_bwd(gpu.ctx, &p, GF(x), GF(g), GF(sm), GF(si), GF(dy), want_dx ? GF(dx) : NULL, GF(dg),
                                      GF(dbt)));
        }
        check_nmse(tag, "dgamma", &dg, 1e-10);
        check_nmse(tag, "dbeta", &dbt, 1e-10);
        if (want_dx) check_nmse(tag, "dx", &dx, 1e-10);
    }
    dual_free(&x), dual_free(&g), dual_free(&b), dual_free(&y), dual_free(&rm), dual_free(&rv);
    dual_free(&sm), dual_free(&si), dual_free(&dy), dual_free(&dx), dual_free(&dg), dual_free(&dbt);
}

static void test_batchnorm(void) {
    bn_case(2, 3, 5, 7, 0.0f, 1, false);
    bn_case(8, 16, 4, 4, 0.5f, 1, false);
    bn_case(1, 5, 3, 3, 0.0f, 0, false);
    bn_case(4, 6, 9, 11, 1000.0f, 1, false); /* a mean far above the spread: the variance must survive */
    bn_case(16, 4, 32, 32, 0.0f, 1, false);  /* m = 16384 per channel: many rounds of the block loops */
    bn_case(2, 3, 5, 7, 0.0f, 1, true);
    bn_case(8, 16, 4, 4, 0.5f, 0, true);
}

/* ---- pooling ------------------------------------------------------------------------------------ */

static void pool_case(int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int special) {
    sd_pool2d_params p;
    EXPECT_OK(sd_pool2d_params_make(&p, n, c, h, w, kh, kw, sh, sw, ph, pw));
    char tag[96];
    snprintf(tag, sizeof tag, "pool [%d,%d,%d,%d] %dx%d s%d,%d p%d,%d%s", n, c, h, w, kh, kw, sh, sw, ph, pw,
             special ? " ties+NaN" : "");
    const size_t xn = (size_t)n * c * h * w, yn = (size_t)n * c * p.oh * p.ow;
    dual x, y, am, dy, dx;
    int ok = dual_alloc(&x, xn, 4) & dual_alloc(&y, yn, 4) & dual_alloc(&am, yn, 4) & dual_alloc(&dy, yn, 4) &
             dual_alloc(&dx, xn, 4);
    if (ok) {
        float *hx = malloc(xn * sizeof(float));
        sd_test_fill(&rng, hx, xn, -1.0f, 1.0f);
        if (special) { /* small integers (ties everywhere), some -inf and a few NaN */
            for (size_t i = 0; i < xn; i++) hx[i] = floorf(hx[i] * 2.0f);
            for (size_t i = 3; i < xn; i += 17) hx[i] = -INFINITY;
            for (size_t i = 5; i < xn; i += 29) hx[i] = NAN;
        }
        dual_set(&x, hx);
        dual_poison(&y), dual_poison(&am);
        EXPECT_OK(cpu.ops->maxpool_fwd(cpu.ctx, &p, CF(x), CF(y), CI(am)));
        EXPECT_OK(gpu.ops->maxpool_fwd(gpu.ctx, &p, GF(x), GF(y), GI(am)));
        check_same(tag, "max y", &y);
        check_same(tag, "max argmax", &am);
        dual_rand(&dy, -1.0f, 1.0f);
        dual_poison(&dx);
        EXPECT_OK(cpu.ops->maxpool_bwd(cpu.ctx, &p, CF(dy), CI(am), CF(dx)));
        EXPECT_OK(gpu.ops->maxpool_bwd(gpu.ctx, &p, GF(dy), GI(am), GF(dx)));
        check_same(tag, "max dx", &dx);

        if (!special) {
            dual_poison(&y);
            EXPECT_OK(cpu.ops->avgpool_fwd(cpu.ctx, &p, CF(x), CF(y)));
            EXPECT_OK(gpu.ops->avgpool_fwd(gpu.ctx, &p, GF(x), GF(y)));
            check_nmse(tag, "avg y", &y, 1e-12);
            dual_poison(&dx);
            EXPECT_OK(cpu.ops->avgpool_bwd(cpu.ctx, &p, CF(dy), CF(dx)));
            EXPECT_OK(gpu.ops->avgpool_bwd(gpu.ctx, &p, GF(dy), GF(dx)));
            check_nmse(tag, "avg dx", &dx, 1e-12);
        }

        /* A corrupt argmax: the backward is asynchronous, the next synchronisation reports it. */
        int32_t bad = (int32_t)(h * w + 5);
        EXPECT_OK(gpu.ops->upload(gpu.ctx, GI(am), &bad, sizeof bad));
        EXPECT_OK(gpu.ops->maxpool_bwd(gpu.ctx, &p, GF(dy), GI(am), GF(dx)));
        EXPECT_FAIL(gpu.ops->synchronize(gpu.ctx), SD_ERR_INVALID, "argmax");
        EXPECT_OK(gpu.ops->synchronize(gpu.ctx)); /* reported once, then clear */
        free(hx);
    }
    dual_free(&x), dual_free(&y), dual_free(&am), dual_free(&dy), dual_free(&dx);
}

static void gap_case(int n, int c, int h, int w) {
    sd_pool2d_params p;
    EXPECT_OK(sd_pool2d_params_make(&p, n, c, h, w, 1, 1, 1, 1, 0, 0));
    char tag[96];
    snprintf(tag, sizeof tag, "global_avgpool [%d,%d,%d,%d]", n, c, h, w);
    const size_t xn = (size_t)n * c * h * w, yn = (size_t)n * c;
    dual x, y, dy, dx;
    if (dual_alloc(&x, xn, 4) & dual_alloc(&y, yn, 4) & dual_alloc(&dy, yn, 4) & dual_alloc(&dx, xn, 4)) {
        dual_rand(&x, -1.0f, 1.0f);
        dual_poison(&y);
        EXPECT_OK(cpu.ops->gap_fwd(cpu.ctx, &p, CF(x), CF(y)));
        EXPECT_OK(gpu.ops->gap_fwd(gpu.ctx, &p, GF(x), GF(y)));
        check_nmse(tag, "y", &y, 1e-12);
        dual_rand(&dy, -1.0f, 1.0f);
        dual_poison(&dx);
        EXPECT_OK(cpu.ops->gap_bwd(cpu.ctx, &p, CF(dy), CF(dx)));
        EXPECT_OK(gpu.ops->gap_bwd(gpu.ctx, &p, GF(dy), GF(dx)));
        check_nmse(tag, "dx", &dx, 1e-12);
    }
    dual_free(&x), dual_free(&y), dual_free(&dy), dual_free(&dx);
}

static void test_pool(void) {
    pool_case(2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0);
    pool_case(2, 2, 9, 7, 3, 3, 2, 2, 1, 1, 0);
    pool_case(1, 3, 5, 6, 3, 3, 1, 1, 1, 1, 0);
    pool_case(3, 2, 11, 9, 4, 2, 3, 2, 2, 1, 0);
    pool_case(2, 3, 9, 9, 2, 2, 2, 2, 0, 0, 1);
    pool_case(2, 2, 10, 7, 3, 3, 2, 1, 1, 1, 1);
    gap_case(2, 5, 7, 3);
    gap_case(8, 64, 8, 8);
}

/* ---- linear ------------------------------------------------------------------------------------- */

static void linear_case(int n, int in, int out, int bias, int want_dx) {
    sd_linear_params p;
    EXPECT_OK(sd_linear_params_make(&p, n, in, out, bias));
    char tag[96];
    snprintf(tag, sizeof tag, "linear n%d %d->%d%s%s", n, in, out, bias ? " bias" : "", want_dx ? "" : " dx=NULL");
    dual x, w, b, y, dy, dx, dw, db;
    int ok = dual_alloc(&x, (size_t)n * in, 4) & dual_alloc(&w, (size_t)out * in, 4) & dual_alloc(&b, out, 4) &
             dual_alloc(&y, (size_t)n * out, 4) & dual_alloc(&dy, (size_t)n * out, 4) &
             dual_alloc(&dx, (size_t)n * in, 4) & dual_alloc(&dw, (size_t)out * in, 4) & dual_alloc(&db, out, 4);
    if (ok) {
        dual_rand(&x, -1.0f, 1.0f);
        dual_rand(&w, -0.3f, 0.3f);
        dual_rand(&b, -0.5f, 0.5f);
        dual_poison(&y);
        EXPECT_OK(cpu.ops->linear_fwd(cpu.ctx, &p, CF(x), CF(w), bias ? CF(b) : NULL, CF(y)));
        EXPECT_OK(gpu.ops->linear_fwd(gpu.ctx, &p, GF(x), GF(w), bias ? GF(b) : NULL, GF(y)));
        check_nmse(tag, "y", &y, 1e-10);
        dual_rand(&dy, -1.0f, 1.0f);
        dual_poison(&dx), dual_poison(&dw), dual_poison(&db);
        EXPECT_OK(cpu.ops->linear_bwd(cpu.ctx, &p, CF(x), CF(w), CF(dy), want_dx ? CF(dx) : NULL, CF(dw),
                                      bias ? CF(db) : NULL));
        EXPECT_OK(gpu.ops->linear_bwd(gpu.ctx, &p, GF(x), GF(w), GF(dy), want_dx ? GF(dx) : NULL, GF(dw),
                                      bias ? GF(db) : NULL));
        check_nmse(tag, "dw", &dw, 1e-10);
        if (bias) check_nmse(tag, "db", &db, 1e-10);
        if (want_dx) check_nmse(tag, "dx", &dx, 1e-10);
    }
    dual_free(&x), dual_free(&w), dual_free(&b), dual_free(&y);
    dual_free(&dy), dual_free(&dx), dual_free(&dw), dual_free(&db);
}

static void test_linear(void) {
    linear_case(5, 7, 3, 1, 1);
    linear_case(16, 64, 10, 1, 1);
    linear_case(3, 33, 17, 0, 0);
    linear_case(130, 257, 300, 1, 1);
}

/* ---- softmax cross-entropy ------------------------------------------------------------------------ */

static void xent_case(int n, int classes) {
    sd_xent_params p;
    EXPECT_OK(sd_xent_params_make(&p, n, classes));
    char tag[96];
    snprintf(tag, sizeof tag, "softmax_xent n%d classes%d", n, classes);
    dual z, lab, pr, dz;
    if (dual_alloc(&z, (size_t)n * classes, 4) & dual_alloc(&lab, n, 4) & dual_alloc(&pr, (size_t)n * classes, 4) &
        dual_alloc(&dz, (size_t)n * classes, 4)) {
        dual_rand(&z, -5.0f, 5.0f);
        int32_t *hl = malloc((size_t)n * sizeof(int32_t));
        for (int i = 0; i < n; i++) hl[i] = (int32_t)(sd_test_next(&rng) % (uint64_t)classes);
        dual_set(&lab, hl);
        dual_poison(&pr);
        float lc = NAN, lg = NAN;
        EXPECT_OK(cpu.ops->xent_fwd(cpu.ctx, &p, CF(z), CI(lab), CF(pr), &lc));
        EXPECT_OK(gpu.ops->xent_fwd(gpu.ctx, &p, GF(z), GI(lab), GF(pr), &lg));
        const double rel = fabs((double)lc - (double)lg) / fmax(fabs((double)lc), 1e-6);
        EXPECT(rel <= 1e-6, "%s: loss cpu %.9g gpu %.9g (relative %.3g)", tag, (double)lc, (double)lg, rel);
        printf("  %-44s %-12s cpu %.7f gpu %.7f\n", tag, "loss", (double)lc, (double)lg);
        check_nmse(tag, "probs", &pr, 1e-12);
        dual_poison(&dz);
        EXPECT_OK(cpu.ops->xent_bwd(cpu.ctx, &p, CF(pr), CI(lab), 1.0f / (float)n, CF(dz)));
        EXPECT_OK(gpu.ops->xent_bwd(gpu.ctx, &p, GF(pr), GI(lab), 1.0f / (float)n, GF(dz)));
        check_nmse(tag, "dlogits", &dz, 1e-12);
        /* in place: dlogits aliasing probs */
        EXPECT_OK(cpu.ops->xent_bwd(cpu.ctx, &p, CF(pr), CI(lab), 0.5f, CF(pr)));
        EXPECT_OK(gpu.ops->xent_bwd(gpu.ctx, &p, GF(pr), GI(lab), 0.5f, GF(pr)));
        check_nmse(tag, "in place", &pr, 1e-12);

        if (n >= 4) { /* labels out of range: the first bad index is named, nothing else happens */
            hl[1] = -1;
            hl[3] = classes;
            dual_set(&lab, hl);
            char needle[64];
            snprintf(needle, sizeof needle, "label -1 at index 1 is outside [0, %d)", classes);
            EXPECT_FAIL(cpu.ops->xent_fwd(cpu.ctx, &p, CF(z), CI(lab), CF(pr), &lc), SD_ERR_INVALID, needle);
            EXPECT_FAIL(gpu.ops->xent_fwd(gpu.ctx, &p, GF(z), GI(lab), GF(pr), &lg), SD_ERR_INVALID, needle);
            EXPECT_FAIL(gpu.ops->xent_bwd(gpu.ctx, &p, GF(pr), GI(lab), 1.0f, GF(dz)), SD_ERR_INVALID, needle);
            hl[1] = 0;
            dual_set(&lab, hl);
            snprintf(needle, sizeof needle, "label %d at index 3", classes);
            EXPECT_FAIL(gpu.ops->xent_fwd(gpu.ctx, &p, GF(z), GI(lab), GF(pr), &lg), SD_ERR_INVALID, needle);
            hl[3] = 0;
            dual_set(&lab, hl);
            EXPECT_OK(gpu.ops->xent_fwd(gpu.ctx, &p, GF(z), GI(lab), GF(pr), &lg)); /* and it recovers */
        }
        free(hl);
    }
    dual_free(&z), dual_free(&lab), dual_free(&pr), dual_free(&dz);
}

static void test_xent(void) {
    xent_case(8, 10);
    xent_case(5, 1000);
    xent_case(1, 3);
    xent_case(300, 7);
}

/* ---- elementwise, dropout, SGD -------------------------------------------------------------------- */

static void test_elementwise(void) {
    const size_t sizes[] = {7, 1000003};
    for (int s = 0; s < 2; s++) {
        const size_t n = sizes[s];
        char tag[96];
        snprintf(tag, sizeof tag, "elementwise n%zu", n);
        dual a, b, y;
        if (dual_alloc(&a, n, 4) & dual_alloc(&b, n, 4) & dual_alloc(&y, n, 4)) {
            dual_rand(&a, -1.0f, 1.0f);
            dual_rand(&b, -1.0f, 1.0f);
            dual_poison(&y);
            EXPECT_OK(cpu.ops->add(cpu.ctx, n, CF(a), CF(b), CF(y)));
            EXPECT_OK(gpu.ops->add(gpu.ctx, n, GF(a), GF(b), GF(y)));
            check_same(tag, "add", &y);
            EXPECT_OK(cpu.ops->add(cpu.ctx, n, CF(y), CF(b), CF(y))); /* y aliases a */
            EXPECT_OK(gpu.ops->add(gpu.ctx, n, GF(y), GF(b), GF(y)));
            check_same(tag, "add in place", &y);
            EXPECT_OK(cpu.ops->axpy(cpu.ctx, n, -0.37f, CF(a), CF(y)));
            EXPECT_OK(gpu.ops->axpy(gpu.ctx, n, -0.37f, GF(a), GF(y)));
            check_nmse(tag, "axpy", &y, 1e-12);
            EXPECT_OK(cpu.ops->scale(cpu.ctx, n, 1.7f, CF(y)));
            EXPECT_OK(gpu.ops->scale(gpu.ctx, n, 1.7f, GF(y)));
            check_nmse(tag, "scale", &y, 1e-12);
            bool cf = false, gf = false; /* y is finite; then a NaN, then an Inf at the end */
            EXPECT_OK(cpu.ops->all_finite(cpu.ctx, n, CF(y), &cf));
            EXPECT_OK(gpu.ops->all_finite(gpu.ctx, n, GF(y), &gf));
            EXPECT(cf && gf, "%s all_finite of a finite vector: cpu %d gpu %d", tag, (int)cf, (int)gf);
            const float bad[2] = {NAN, INFINITY};
            for (int j = 0; j < 2; j++) {
                EXPECT_OK(gpu.ops->upload(gpu.ctx, GF(y) + (j ? n - 1 : n / 2), &bad[j], sizeof(float)));
                EXPECT_OK(gpu.ops->all_finite(gpu.ctx, n, GF(y), &gf));
                EXPECT(!gf, "%s all_finite missed %g at %zu", tag, (double)bad[j], j ? n - 1 : n / 2);
            }
            dual_poison(&y);
            EXPECT_OK(cpu.ops->relu_fwd(cpu.ctx, n, CF(a), CF(y)));
            EXPECT_OK(gpu.ops->relu_fwd(gpu.ctx, n, GF(a), GF(y)));
            check_same(tag, "relu y", &y);
            EXPECT_OK(cpu.ops->relu_bwd(cpu.ctx, n, CF(y), CF(b), CF(a))); /* dx into a */
            EXPECT_OK(gpu.ops->relu_bwd(gpu.ctx, n, GF(y), GF(b), GF(a)));
            check_same(tag, "relu dx", &a);
            dual_poison(&y);
            EXPECT_OK(cpu.ops->add_relu_fwd(cpu.ctx, n, CF(a), CF(b), CF(y)));
            EXPECT_OK(gpu.ops->add_relu_fwd(gpu.ctx, n, GF(a), GF(b), GF(y)));
            check_same(tag, "add+relu y", &y);
        }
        dual_free(&a), dual_free(&b), dual_free(&y);
    }
}

/* ---- the compressor's ops (kernels/backend.h: topk_select, cz_*): bitwise as the CPU twins ---- */

static void test_compress_ops(void) {
    const size_t n = 300007, kk = 3001;
    const uint32_t base = 12345;
    char tag[64];
    snprintf(tag, sizeof tag, "compress n%zu", n);
    dual x, u, g, idx, val, res, vel, out;
    unsigned char *msg = NULL;
    if (dual_alloc(&x, n, 4) & dual_alloc(&u, n, 4) & dual_alloc(&g, n, 4) & dual_alloc(&idx, kk, 4) &
        dual_alloc(&val, kk, 4) & dual_alloc(&res, n, 4) & dual_alloc(&vel, n, 4) & dual_alloc(&out, n, 4)) {
        dual_rand(&x, -3.0f, 3.0f);
        dual_rand(&u, -1.0f, 1.0f);
        dual_rand(&g, -1.0f, 1.0f);
        EXPECT_OK(cpu.ops->cz_velocity(cpu.ctx, n, 0.9f, CF(u), CF(g)));
        EXPECT_OK(gpu.ops->cz_velocity(gpu.ctx, n, 0.9f, GF(u), GF(g)));
        check_same(tag, "velocity u", &u);
        check_same(tag, "velocity g", &g);
        EXPECT_OK(cpu.ops->topk_select(cpu.ctx, CF(x), n, kk, base, (uint32_t *)idx.c, CF(val)));
        EXPECT_OK(gpu.ops->topk_select(gpu.ctx, GF(x), n, kk, base, (uint32_t *)idx.g, GF(val)));
        check_same(tag, "topk idx", &idx);
        check_same(tag, "topk val", &val);
        /* values large and small for the f16 rounding: saturation, subnormals */
        float *h = malloc(kk * sizeof *h);
        for (size_t j = 0; j < kk; j++) h[j] = CF(val)[j] * (j % 3 == 0 ? 40000.0f : j % 3 == 1 ? 1e-6f : 1.0f);
        dual_set(&val, h);
        free(h);
        EXPECT_OK(cpu.ops->cz_f16_round(cpu.ctx, kk, CF(val)));
        EXPECT_OK(gpu.ops->cz_f16_round(gpu.ctx, kk, GF(val)));
        check_same(tag, "f16 round", &val);
        double sc = 0, sg = 0;
        EXPECT_OK(cpu.ops->cz_sumsq(cpu.ctx, n, CF(x), &sc));
        EXPECT_OK(gpu.ops->cz_sumsq(gpu.ctx, n, GF(x), &sg));
        EXPECT(fabs(sc - sg) <= 1e-12 * sc, "%s: sumsq cpu %.17g gpu %.17g", tag, sc, sg);
        /* the residual of x against the selected pairs (idx - base: indices into x) */
        uint32_t *hi = malloc(kk * sizeof *hi);
        memcpy(hi, idx.c, kk * sizeof *hi);
        for (size_t j = 0; j < kk; j++) hi[j] -= base;
        dual_set(&idx, hi);
        free(hi);
        dual_rand(&vel, -1.0f, 1.0f);
        EXPECT_OK(cpu.ops->cz_residual(cpu.ctx, n, CF(x), kk, (uint32_t *)idx.c, CF(val), CF(res), CF(vel)));
        EXPECT_OK(gpu.ops->cz_residual(gpu.ctx, n, GF(x), kk, (uint32_t *)idx.g, GF(val), GF(res), GF(vel)));
        check_same(tag, "residual", &res);
        check_same(tag, "velocity mask", &vel);
        /* two messages in the wire format at unaligned offsets (f16 values: 6 bytes per pair), summed */
        const size_t np[2] = {kk, kk}, mb = 8 + kk * 6, displs[2] = {0, mb};
        if (gpu.ops->alloc(gpu.ctx, 2 * mb, (void **)&msg) == SD_OK) {
            unsigned char *hm = malloc(2 * mb), *cm = malloc(2 * mb);
            for (int r = 0; r < 2; r++) {
                const uint32_t n32 = (uint32_t)kk;
                const float gain = 0.5f;
                memcpy(cm + displs[r], &n32, 4);
                memcpy(cm + displs[r] + 4, &gain, 4);
                memcpy(cm + displs[r] + 8, idx.c, kk * 4);
                EXPECT_OK(cpu.ops->cz_to_f16(cpu.ctx, kk, CF(val), cm + displs[r] + 8 + kk * 4));
                EXPECT_OK(gpu.ops->upload(gpu.ctx, msg + displs[r], cm + displs[r], 8 + kk * 4));
                EXPECT_OK(gpu.ops->cz_to_f16(gpu.ctx, kk, GF(val), msg + displs[r] + 8 + kk * 4));
            }
            EXPECT_OK(gpu.ops->download(gpu.ctx, hm, msg, 2 * mb));
            EXPECT(!memcmp(hm, cm, 2 * mb), "%s: the packed f16 messages differ", tag);
            dual_poison(&out);
            EXPECT_OK(cpu.ops->cz_scatter_sum(cpu.ctx, cm, 2, displs, np, true, CF(out), n));
            EXPECT_OK(gpu.ops->cz_scatter_sum(gpu.ctx, msg, 2, displs, np, true, GF(out), n));
            check_same(tag, "scatter sum", &out);
            const uint32_t bad = (uint32_t)n; /* an index >= count in the second message */
            EXPECT_OK(gpu.ops->upload(gpu.ctx, msg + displs[1] + 8 + 4 * (kk - 1), &bad, 4));
            EXPECT_FAIL(gpu.ops->cz_scatter_sum(gpu.ctx, msg, 2, displs, np, true, GF(out), n), SD_ERR_FORMAT,
                        "rank 1");
            free(hm);
            free(cm);
            gpu.ops->free(gpu.ctx, msg);
        }
        /* the sparse allreduce's steps: split by bounds, rounding excess, unsent pairs back */
        const uint32_t bounds[5] = {0, (uint32_t)(n / 7), (uint32_t)(n / 2), (uint32_t)(n - 5), (uint32_t)n};
        size_t pc[5], pg[5];
        EXPECT_OK(cpu.ops->cz_split(cpu.ctx, kk, (uint32_t *)idx.c, 5, bounds, pc));
        EXPECT_OK(gpu.ops->cz_split(gpu.ctx, kk, (uint32_t *)idx.g, 5, bounds, pg));
        EXPECT(!memcmp(pc, pg, sizeof pc) && pc[0] == 0 && pc[4] == kk, "%s: split positions differ", tag);
        float *hv = malloc(kk * sizeof *hv);
        for (size_t j = 0; j < kk; j++) hv[j] = CF(x)[j] * (j % 4 == 0 ? 1e-9f : 1.0f); /* some round to 0 */
        dual_set(&val, hv);
        free(hv);
        EXPECT_OK(cpu.ops->cz_round_excess(cpu.ctx, kk, (uint32_t *)idx.c, CF(val), CF(res)));
        EXPECT_OK(gpu.ops->cz_round_excess(gpu.ctx, kk, (uint32_t *)idx.g, GF(val), GF(res)));
        check_same(tag, "round excess val", &val);
        check_same(tag, "round excess res", &res);
        float *ho = malloc(n * sizeof *ho); /* the reduced result: 0 at every third index (not kept) */
        for (size_t i = 0; i < n; i++) ho[i] = i % 3 == 0 ? 0.0f : CF(x)[i];
        dual_set(&out, ho);
        free(ho);
        EXPECT_OK(cpu.ops->cz_unsent(cpu.ctx, kk, (uint32_t *)idx.c, CF(val), CF(out), CF(res)));
        EXPECT_OK(gpu.ops->cz_unsent(gpu.ctx, kk, (uint32_t *)idx.g, GF(val), GF(out), GF(res)));
        check_same(tag, "unsent", &res);
    }
    dual_free(&x), dual_free(&u), dual_free(&g), dual_free(&idx), dual_free(&val), dual_free(&res), dual_free(&vel),
        dual_free(&out);
}

static void test_dropout(void) {
    const size_t n = 100003;
    const float probs[] = {0.0f, 0.3f, 0.9f};
    for (int t = 0; t < 3; t++) {
        sd_dropout_params p;
        EXPECT_OK(sd_dropout_params_make(&p, n, probs[t], 0x1234567890abcdefull + (uint64_t)t, (uint64_t)(t + 5) << 32));
        char tag[96];
        snprintf(tag, sizeof tag, "dropout n%zu p%.1f", n, (double)probs[t]);
        dual x, y, m, dy, dx;
        if (dual_alloc(&x, n, 4) & dual_alloc(&y, n, 4) & dual_alloc(&m, n, 1) & dual_alloc(&dy, n, 4) &
            dual_alloc(&dx, n, 4)) {
            dual_rand(&x, -1.0f, 1.0f);
            dual_poison(&y), dual_poison(&m);
            EXPECT_OK(cpu.ops->dropout_fwd(cpu.ctx, &p, CF(x), CF(y), (uint8_t *)m.c));
            EXPECT_OK(gpu.ops->dropout_fwd(gpu.ctx, &p, GF(x), GF(y), (uint8_t *)m.g));
            check_same(tag, "mask", &m);
            check_same(tag, "y", &y);
            size_t kept = 0;
            for (size_t i = 0; i < n; i++) kept += ((uint8_t *)m.c)[i];
            const double frac = (double)kept / (double)n;
            EXPECT(fabs(frac - (1.0 - probs[t])) < 0.01, "%s: kept %.4f, expected about %.2f", tag, frac,
                   1.0 - probs[t]);
            dual_rand(&dy, -1.0f, 1.0f);
            dual_poison(&dx);
            EXPECT_OK(cpu.ops->dropout_bwd(cpu.ctx, &p, CF(dy), (uint8_t *)m.c, CF(dx)));
            EXPECT_OK(gpu.ops->dropout_bwd(gpu.ctx, &p, GF(dy), (uint8_t *)m.g, GF(dx)));
            check_same(tag, "dx", &dx);
        }
        dual_free(&x), dual_free(&y), dual_free(&m), dual_free(&dy), dual_free(&dx);
    }
}

static void check_close(const char *tag, const char *what, const dual *d, double bound) {
    float *h = dual_fetch(d);
    const double e = sd_max_abs_diff(h, (const float *)d->c, d->n);
    EXPECT(e <= bound, "%s: %s: max |diff| %.3g exceeds %.1g", tag, what, e, bound);
    printf("  %-44s %-12s max |diff| %.2e\n", tag, what, e);
    free(h);
}

static void test_sgd(void) {
    struct { float lr, m, damp, wd; int nesterov; } cfg[] = {
        {0.1f, 0.0f, 0.0f, 0.0f, 0}, {0.1f, 0.0f, 0.0f, 5e-4f, 0}, {0.05f, 0.9f, 0.0f, 5e-4f, 0},
        {0.05f, 0.9f, 0.1f, 1e-4f, 0}, {0.05f, 0.9f, 0.0f, 5e-4f, 1},
    };
    const size_t n = 10007;
    for (int c = 0; c < 5; c++) {
        char tag[96];
        snprintf(tag, sizeof tag, "sgd lr%g m%g damp%g wd%g%s", (double)cfg[c].lr, (double)cfg[c].m,
                 (double)cfg[c].damp, (double)cfg[c].wd, cfg[c].nesterov ? " nesterov" : "");
        dual w, g, buf;
        if (dual_alloc(&w, n, 4) & dual_alloc(&g, n, 4) & dual_alloc(&buf, n, 4)) {
            dual_rand(&w, -1.0f, 1.0f);
            dual_rand(&buf, -0.1f, 0.1f);
            for (int step = 0; step < 3; step++) {
                sd_sgd_params p;
                EXPECT_OK(sd_sgd_params_make(&p, n, cfg[c].lr, cfg[c].m, cfg[c].damp, cfg[c].wd, cfg[c].nesterov,
                                             step == 0));
                dual_rand(&g, -1.0f, 1.0f);
                float *bc = cfg[c].m != 0.0f ? CF(buf) : NULL, *bg = cfg[c].m != 0.0f ? GF(buf) : NULL;
                EXPECT_OK(cpu.ops->sgd_update(cpu.ctx, &p, CF(w), CF(g), bc));
                EXPECT_OK(gpu.ops->sgd_update(gpu.ctx, &p, GF(w), GF(g), bg));
            }
            check_close(tag, "w", &w, 1e-6);
            if (cfg[c].m != 0.0f) check_close(tag, "momentum", &buf, 1e-6);
        }
        dual_free(&w), dual_free(&g), dual_free(&buf);
    }
}

/* ---- ResNet-20: ten training steps on both backends ----------------------------------------------- */

static void test_resnet20(void) {
    const sd_model_spec spec = {.name = "resnet20", .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    const int batch = 8, steps = 10;
    sd_net *nc = NULL, *ng = NULL;
    EXPECT_OK(sd_model_build(&cpu, &spec, 7, &nc));
    EXPECT_OK(sd_model_build(&gpu, &spec, 7, &ng));
    if (!nc || !ng) {
        sd_net_destroy(nc);
        sd_net_destroy(ng);
        return;
    }
    const size_t np = sd_net_param_count(nc), nb = sd_net_buffer_count(nc);
    /* Identical starting point: the CPU net's weights and statistics (host memory) into the GPU net. */
    EXPECT_OK(gpu.ops->upload(gpu.ctx, sd_net_params(ng), sd_net_params(nc), np * sizeof(float)));
    if (nb) EXPECT_OK(gpu.ops->upload(gpu.ctx, sd_net_buffers(ng), sd_net_buffers(nc), nb * sizeof(float)));

    const size_t xn = (size_t)batch * 3 * 32 * 32;
    dual x, lab, mom;
    if (dual_alloc(&x, xn, 4) & dual_alloc(&lab, batch, 4) & dual_alloc(&mom, np, 4)) {
        EXPECT_OK(cpu.ops->zero(cpu.ctx, mom.c, np * sizeof(float)));
        EXPECT_OK(gpu.ops->zero(gpu.ctx, mom.g, np * sizeof(float)));
        int32_t hl[8];
        for (int step = 0; step < steps; step++) {
            dual_rand(&x, -2.0f, 2.0f);
            for (int i = 0; i < batch; i++) hl[i] = (int32_t)(sd_test_next(&rng) % 10u);
            dual_set(&lab, hl);
            float lc = NAN, lg = NAN;
            EXPECT_OK(sd_net_forward(nc, CF(x), batch, true));
            EXPECT_OK(sd_net_forward(ng, GF(x), batch, true));
            EXPECT_OK(sd_net_loss(nc, CI(lab), 1.0f / (float)batch, &lc));
            EXPECT_OK(sd_net_loss(ng, GI(lab), 1.0f / (float)batch, &lg));
            EXPECT_OK(sd_net_backward(nc));
            EXPECT_OK(sd_net_backward(ng));
            sd_sgd_params p;
            EXPECT_OK(sd_sgd_params_make(&p, np, 0.05f, 0.9f, 0.0f, 5e-4f, 0, step == 0));
            EXPECT_OK(cpu.ops->sgd_update(cpu.ctx, &p, sd_net_params(nc), sd_net_grads(nc), CF(mom)));
            EXPECT_OK(gpu.ops->sgd_update(gpu.ctx, &p, sd_net_params(ng), sd_net_grads(ng), GF(mom)));
            const double rel = fabs((double)lc - (double)lg) / fmax(fabs((double)lc), 1e-6);
            EXPECT(rel <= 1e-3, "resnet20 step %d: loss cpu %.7f gpu %.7f (relative %.3g)", step, (double)lc,
                   (double)lg, rel);
            printf("  resnet20 step %d: loss cpu %.7f gpu %.7f relative diff %.2e\n", step, (double)lc, (double)lg,
                   rel);
        }
        float *hp = malloc(np * sizeof(float));
        EXPECT_OK(gpu.ops->download(gpu.ctx, hp, sd_net_params(ng), np * sizeof(float)));
        const double e = sd_nmse(hp, sd_net_params(nc), np);
        EXPECT(e <= 1e-6, "resnet20: final weights NMSE %.3g exceeds 1e-6", e);
        printf("  resnet20 after %d steps: weights nmse %.2e (%zu parameters)\n", steps, e, np);
        free(hp);
        if (nb) {
            float *hb = malloc(nb * sizeof(float));
            EXPECT_OK(gpu.ops->download(gpu.ctx, hb, sd_net_buffers(ng), nb * sizeof(float)));
            const double eb = sd_nmse(hb, sd_net_buffers(nc), nb);
            EXPECT(eb <= 1e-6, "resnet20: final BN statistics NMSE %.3g exceeds 1e-6", eb);
            printf("  resnet20 after %d steps: BN statistics nmse %.2e\n", steps, eb);
            free(hb);
        }
    }
    dual_free(&x), dual_free(&lab), dual_free(&mom);
    sd_net_destroy(nc);
    sd_net_destroy(ng);
}

#endif /* SCADLES_HAVE_CUDA */

/* ---- main ------------------------------------------------------------------------------------------ */

int main(void) {
    const char *req = getenv("SD_CUDA_REQUIRE");
    const int required = req && !strcmp(req, "1");
#ifdef SCADLES_HAVE_CUDA
    test_host_alloc();
#endif
    sd_backend probe = {0};
    const sd_status st = sd_backend_cuda_create(&probe, 0);
    if (st != SD_OK) {
        char why[1200];
        snprintf(why, sizeof why, "CUDA backend unavailable: %s", sd_last_error());
        /* Failing cleanly is checked: a status that says so, a message, no half-made backend. */
        EXPECT(st == SD_ERR_UNSUPPORTED || st == SD_ERR_RUNTIME, "cuda create failed with %s", sd_status_str(st));
        EXPECT(probe.ops == NULL && probe.ctx == NULL, "a failed create left a backend behind");
        EXPECT(strstr(sd_last_error(), "CUDA") != NULL, "the failure message does not say CUDA: %s", sd_last_error());
        if (required) {
            EXPECT(0, "SD_CUDA_REQUIRE=1 but %s", why);
            return sd_test_finish("test_cuda_parity");
        }
        if (sd_test_failed) return sd_test_finish("test_cuda_parity");
        return sd_test_skip("test_cuda_parity", why);
    }
#ifdef SCADLES_HAVE_CUDA
    gpu = probe;
    if (sd_backend_cpu_create(&cpu, 0) != SD_OK) {
        fprintf(stderr, "test_cuda_parity: cpu backend: %s\n", sd_last_error());
        sd_backend_destroy(&gpu);
        return 1;
    }
    printf("test_cuda_parity: comparing backend '%s' with '%s'\n", gpu.ops->name, cpu.ops->name);
    test_conv();
    test_batchnorm();
    test_pool();
    test_linear();
    test_xent();
    test_elementwise();
    test_compress_ops();
    test_dropout();
    test_sgd();
    test_resnet20();
    sd_backend_destroy(&gpu);
    sd_backend_destroy(&cpu);
#else
    sd_backend_destroy(&probe);
    EXPECT(0, "sd_backend_cuda_create succeeded in a build without SCADLES_HAVE_CUDA");
#endif
    return sd_test_finish("test_cuda_parity");
}
