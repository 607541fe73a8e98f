/* test_sgd.c: the CPU SGD update against hand-computed PyTorch torch.optim.SGD values over three
 * steps (plain, momentum, Nesterov, weight decay, dampening, first_step), against the naive
 * reference on large randomised buffers (the threaded path), and the error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

/* Hand values carry 9 decimals; three float steps stay within this. */
#define SGD_HAND_TOL 1e-6
/* A handful of float roundings per element against the double reference. */
#define SGD_NMSE 1e-12

static sd_kctx *k;

typedef struct sgd_case {
    const char *name;
    float momentum, dampening, weight_decay;
    int nesterov;
    int first_step; /* first_step flag on step 1 (0 means a pre-filled buffer, buf0) */
    float buf0;
    double w[3], buf[3]; /* after steps 1, 2, 3 */
} sgd_case;

/* w0 = 1, constant gradient 0.5, lr 0.1; worked by hand from the formulas in ops.h:
 *   B: buf 0.5 -> 0.9*0.5+0.5 = 0.95 -> 0.9*0.95+0.5 = 1.355; w -= 0.1*buf: 0.95, 0.855, 0.7195
 *   C: Nesterov d = 0.5 + 0.9*buf: 0.95, 1.355, 1.7195; w: 0.905, 0.7695, 0.59755
 *   D: g' = 0.5 + 0.1*w: 0.6, 0.594, 0.58806; w: 0.94, 0.8806, 0.821794
 *   E: buf = 0.9*buf + 0.5*0.5 after a first buf of 0.5 (no dampening on step 1): 0.5, 0.7, 0.88
 *   F: momentum with weight decay: g' 0.6, 0.594, 0.58266; buf 0.6, 1.134, 1.60326
 *   G: no first step, buf pre-filled with 1: buf 1.4, 1.76, 2.084; w 0.86, 0.684, 0.4756
 *   H: Nesterov with weight decay: g' 0.6, 0.5886, 0.5725566; d 1.14, 1.60434, 2.00202354 */
static const sgd_case cases[] = {
    {"plain", 0.0f, 0.0f, 0.0f, 0, 1, 0.0f, {0.95, 0.9, 0.85}, {0, 0, 0}},
    {"momentum", 0.9f, 0.0f, 0.0f, 0, 1, 0.0f, {0.95, 0.855, 0.7195}, {0.5, 0.95, 1.355}},
    {"nesterov", 0.9f, 0.0f, 0.0f, 1, 1, 0.0f, {0.905, 0.7695, 0.59755}, {0.5, 0.95, 1.355}},
    {"weight decay", 0.0f, 0.0f, 0.1f, 0, 1, 0.0f, {0.94, 0.8806, 0.821794}, {0, 0, 0}},
    {"dampening", 0.9f, 0.5f, 0.0f, 0, 1, 0.0f, {0.95, 0.88, 0.792}, {0.5, 0.7, 0.88}},
    {"momentum + decay", 0.9f, 0.0f, 0.1f, 0, 1, 0.0f, {0.94, 0.8266, 0.666274}, {0.6, 1.134, 1.60326}},
    {"prefilled buffer", 0.9f, 0.0f, 0.0f, 0, 0, 1.0f, {0.86, 0.684, 0.4756}, {1.4, 1.76, 2.084}},
    {"nesterov + decay", 0.9f, 0.0f, 0.1f, 1, 1, 0.0f, {0.886, 0.725566, 0.525363646}, {0.6, 1.1286, 1.5882966}},
};

static void by_hand(const sgd_case *c, size_t n) {
    float *w = sd_guard_alloc(n), *buf = sd_guard_alloc(n), *g = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        w[i] = 1.0f;
        g[i] = 0.5f;
        buf[i] = c->buf0;
    }
    for (int step = 0; step < 3; step++) {
        sd_sgd_params p;
        EXPECT_OK(sd_sgd_params_make(&p, n, 0.1f, c->momentum, c->dampening, c->weight_decay, c->nesterov,
                                     step == 0 && c->first_step));
        EXPECT_OK(sd_cpu_sgd_update(k, &p, w, g, c->momentum != 0.0f ? buf : NULL));
        double ew = 0, eb = 0;
        for (size_t i = 0; i < n; i++) {
            ew = fmax(ew, fabs(w[i] - c->w[step]));
            if (c->momentum != 0.0f) eb = fmax(eb, fabs(buf[i] - c->buf[step]));
        }
        EXPECT(ew <= SGD_HAND_TOL && eb <= SGD_HAND_TOL,
               "sgd %s n=%zu step %d: w %.9g (want %.9g), buf %.9g (want %.9g)", c->name, n, step + 1, w[0],
               c->w[step], buf[0], c->buf[step]);
    }
    EXPECT(sd_guard_ok(w, n) && sd_guard_ok(buf, n), "sgd %s n=%zu: wrote outside w or buf", c->name, n);
    if (c->momentum == 0.0f) {
        int untouched = 1;
        for (size_t i = 0; i < n; i++) untouched &= buf[i] == c->buf0;
        EXPECT(untouched, "sgd %s: buffer touched without momentum", c->name);
    }
    sd_guard_free(w); sd_guard_free(buf);
    free(g);
}

/* Random w, g and buffers against the reference for every case, three steps. */
static void parity(const sgd_case *c, size_t n, uint64_t seed) {
    sd_test_rng r = {seed};
    float *w = sd_guard_alloc(n), *buf = sd_guard_alloc(n), *g = malloc(n * sizeof(float));
    float *wr = malloc(n * sizeof(float)), *bufr = malloc(n * sizeof(float));
    sd_test_fill(&r, w, n, -1, 1);
    sd_test_fill(&r, buf, n, -0.5f, 0.5f);
    memcpy(wr, w, n * sizeof(float));
    memcpy(bufr, buf, n * sizeof(float));
    for (int step = 0; step < 3; step++) {
        sd_test_fill(&r, g, n, -1, 1);
        sd_sgd_params p;
        EXPECT_OK(sd_sgd_params_make(&p, n, 0.05f, c->momentum, c->dampening, c->weight_decay, c->nesterov,
                                     step == 0 && c->first_step));
        EXPECT_OK(sd_cpu_sgd_update(k, &p, w, g, buf));
        EXPECT_OK(ref_sgd_update(&p, wr, g, bufr));
    }
    const double ew = sd_nmse(w, wr, n);
    EXPECT(ew <= SGD_NMSE && sd_all_finite(w, n) && sd_guard_ok(w, n), "sgd %s n=%zu: w nmse %.3g", c->name, n, ew);
    if (c->momentum != 0.0f) {
        const double eb = sd_nmse(buf, bufr, n);
        EXPECT(eb <= SGD_NMSE && sd_all_finite(buf, n) && sd_guard_ok(buf, n), "sgd %s n=%zu: buf nmse %.3g",
               c->name, n, eb);
    }
    sd_guard_free(w); sd_guard_free(buf);
    free(g); free(wr); free(bufr);
}

static void errors(void) {
    sd_sgd_params p;
    float w[3] = {1, 2, 3}, g[3] = {1, 1, 1};
    EXPECT_OK(sd_sgd_params_make(&p, 3, 0.1f, 0.9f, 0.0f, 0.0f, 0, 1));
    EXPECT_FAIL(sd_cpu_sgd_update(k, &p, w, g, NULL), SD_ERR_INVALID, "momentum buffer");
    EXPECT(w[0] == 1 && w[1] == 2 && w[2] == 3, "a failed update must not touch w");
    EXPECT_FAIL(sd_cpu_sgd_update(k, &p, NULL, g, w), SD_ERR_INVALID, "sgd");
    EXPECT_FAIL(sd_cpu_sgd_update(k, &p, w, NULL, w), SD_ERR_INVALID, "sgd");
    EXPECT_FAIL(sd_cpu_sgd_update(k, NULL, w, g, w), SD_ERR_INVALID, "sgd");
    EXPECT_FAIL(sd_cpu_sgd_update(NULL, &p, w, g, w), SD_ERR_INVALID, "sgd");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_sgd", sd_last_error());
    const size_t ncases = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < ncases; i++) {
        by_hand(&cases[i], 1);
        by_hand(&cases[i], 37);
        parity(&cases[i], 1001, 10 + i);
        parity(&cases[i], 270001, 50 + i); /* threaded path */
    }
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_sgd");
}
