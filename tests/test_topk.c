/* test_topk.c: the CPU Top-k kernel (sd_cpu_topk) against a naive sort-based reference on many
 * sizes and shapes of data: n = 1, 2, k = 1, k = n, k = n - 1, ties (few distinct values, all
 * equal), NaN (ranks above inf, any sign and payload), +-inf, negative zeros, mostly-zero spikes,
 * layered magnitudes and patterns built to defeat the sampled threshold (both fallbacks), 1M
 * random entries, with 1, 2 and 3 threads (results must not depend on the thread count). Outputs
 * are compared bit for bit (indices and values) and guarded against writes past kk; the error
 * paths (k > n, NULL arguments) are checked too. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"

/* ---- the naive reference: sort by (magnitude desc, index asc), take kk, sort by index -------- */
typedef struct ref_ent { uint32_t key, idx; } ref_ent;

static uint32_t ref_key(float v) {
    if (isnan(v)) return 0x7f800001u; /* above +inf */
    float a = fabsf(v);
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    return u;
}
static int cmp_sel(const void *pa, const void *pb) {
    const ref_ent *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}
static int cmp_u32(const void *pa, const void *pb) {
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return a < b ? -1 : a > b;
}
static void ref_topk(const float *x, size_t n, size_t kk, uint32_t *idx, float *val) {
    ref_ent *e = malloc((n ? n : 1) * sizeof *e);
    for (size_t i = 0; i < n; i++) e[i] = (ref_ent){ref_key(x[i]), (uint32_t)i};
    qsort(e, n, sizeof *e, cmp_sel);
    for (size_t j = 0; j < kk; j++) idx[j] = e[j].idx;
    qsort(idx, kk, sizeof *idx, cmp_u32);
    for (size_t j = 0; j < kk; j++) val[j] = x[idx[j]];
    free(e);
}

/* ---- data shapes -------------------------------------------------------------------------- */
enum { D_UNIFORM, D_NORMAL, D_FEW, D_EQUAL, D_SPECIAL, D_SPIKES, D_LAYERED, D_TRAP_HI, D_TRAP_LO, D_RAMP, D_COUNT };
static const char *dname[D_COUNT] = {"uniform", "normal", "few-distinct", "all-equal", "nan/inf/-0",
                                     "spikes", "layered", "trap-high", "trap-low", "ramp"};

static float normal(sd_test_rng *r) {
    float u1 = sd_test_uniform(r, 1e-7f, 1.0f), u2 = sd_test_uniform(r, 0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static void make(int kind, float *x, size_t n, uint64_t seed) {
    sd_test_rng r = {seed};
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case D_UNIFORM: x[i] = sd_test_uniform(&r, -1, 1); break;
        case D_NORMAL: x[i] = normal(&r) * 1e-3f; break;
        case D_FEW: x[i] = (float)((int)(sd_test_next(&r) % 5) - 2); break; /* -2..2: ties and +-0 */
        case D_EQUAL: x[i] = (sd_test_next(&r) & 1) ? 0.5f : -0.5f; break;
        case D_SPECIAL: {
            uint64_t u = sd_test_next(&r) % 16;
            if (u == 0) x[i] = NAN;
            else if (u == 1) x[i] = -NAN;
            else if (u == 2) { uint32_t b = 0x7fc00123u; memcpy(&x[i], &b, 4); } /* payload NaN */
            else if (u == 3) x[i] = INFINITY;
            else if (u == 4) x[i] = -INFINITY;
            else if (u < 8) x[i] = -0.0f;
            else if (u < 10) x[i] = 0.0f;
            else if (u == 10) x[i] = 1e-45f; /* subnormal */
            else x[i] = sd_test_uniform(&r, -3, 3);
            break;
        }
        case D_SPIKES: x[i] = (sd_test_next(&r) % 1000 == 0) ? sd_test_uniform(&r, -9, 9) : ((i & 1) ? -0.0f : 0.0f); break;
        case D_LAYERED: x[i] = sd_test_uniform(&r, -1, 1) * powf(10.0f, (float)((i * 7 / (n ? n : 1)) % 7) - 3.0f); break;
        /* big values in every 16-entry run whose index is a multiple of 64 runs (the sampler may see
         * mostly or none of them): exercises the overflow and too-few fallbacks */
        case D_TRAP_HI: x[i] = ((i / 16) % 64 == 0) ? 100.0f + (float)(i % 7) : sd_test_uniform(&r, -1, 1); break;
        case D_TRAP_LO: x[i] = ((i / 16) % 64 == 0) ? sd_test_uniform(&r, -1, 1) * 1e-3f : sd_test_uniform(&r, -1, 1); break;
        case D_RAMP: x[i] = (float)i * ((i & 1) ? -1.0f : 1.0f); break;
        }
    }
}

static sd_kctx *ctx[3];
static const int nthreads[3] = {1, 2, 3};

/* Runs every context on (x, n, kk) and compares with the reference; returns 0 when all agree. */
static int check_one(const char *what, const float *x, size_t n, size_t kk) {
    uint32_t *ri = malloc((kk + 1) * sizeof *ri), *gi = malloc((kk + 2) * sizeof *gi);
    float *rv = malloc((kk + 1) * sizeof *rv);
    ref_topk(x, n, kk, ri, rv);
    int bad = 0;
    for (int c = 0; c < 3; c++) {
        float *gv = sd_guard_alloc(kk);
        for (size_t j = 0; j < kk + 2; j++) gi[j] = 0xdeadbeefu;
        sd_status st = sd_cpu_topk(ctx[c], x, n, kk, gi, gv);
        EXPECT(st == SD_OK, "%s n=%zu k=%zu threads=%d: %s", what, n, kk, nthreads[c], sd_last_error());
        size_t wrong = 0;
        for (size_t j = 0; j < kk; j++)
            if (gi[j] != ri[j] || memcmp(&gv[j], &rv[j], sizeof(float)) != 0) wrong++;
        int guards = sd_guard_ok(gv, kk) && gi[kk] == 0xdeadbeefu && gi[kk + 1] == 0xdeadbeefu;
        EXPECT(wrong == 0 && guards, "%s n=%zu k=%zu threads=%d: %zu of %zu entries differ from the sort reference%s",
               what, n, kk, nthreads[c], wrong, kk, guards ? "" : ", wrote past k");
        if (wrong || !guards || st != SD_OK) bad = 1;
        sd_guard_free(gv);
    }
    free(ri);
    free(gi);
    free(rv);
    return bad;
}

static void test_sizes(void) {
    static const size_t ns[] = {1, 2, 3, 5, 16, 17, 31, 100, 1000, 4095, 4096, 4097, 10007, 65536, 65539, 131072,
                                200003, 400000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        size_t n = ns[a];
        float *x = malloc(n * sizeof *x);
        for (int d = 0; d < D_COUNT; d++) {
            make(d, x, n, 1000 + 17 * n + (size_t)d);
            size_t ks[] = {1, 2, n / 1000, n / 100, n / 10, n / 3, n / 2, n - 1, n};
            for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
                size_t kk = ks[b];
                if (kk == 0 || kk > n) continue;
                if (b > 0 && ks[b - 1] == kk) continue;
                if (check_one(dname[d], x, n, kk)) goto next; /* one report per shape is enough */
            }
        next:;
        }
        free(x);
    }
}

/* 1M random entries at the ratios the compressor uses. */
static void test_1m(void) {
    const size_t n = 1u << 20;
    float *x = malloc(n * sizeof *x);
    make(D_NORMAL, x, n, 42);
    check_one("1M normal", x, n, n / 100);
    check_one("1M normal", x, n, n / 10);
    make(D_UNIFORM, x, n, 43);
    check_one("1M uniform", x, n, n / 1000);
    make(D_FEW, x, n, 44);
    check_one("1M few-distinct", x, n, n / 10);
    free(x);
}

/* Explicit small cases whose answer is known by hand. */
static void test_by_hand(void) {
    uint32_t idx[8];
    float val[8];
    float x1[] = {-3.0f};
    EXPECT_OK(sd_cpu_topk(ctx[0], x1, 1, 1, idx, val));
    EXPECT(idx[0] == 0 && val[0] == -3.0f, "n=1: got %u %g", idx[0], (double)val[0]);
    float x2[] = {1.0f, -2.0f};
    EXPECT_OK(sd_cpu_topk(ctx[0], x2, 2, 1, idx, val));
    EXPECT(idx[0] == 1 && val[0] == -2.0f, "n=2 k=1: got %u %g", idx[0], (double)val[0]);
    float xt[] = {1.0f, -1.0f, 1.0f, 0.5f};
    EXPECT_OK(sd_cpu_topk(ctx[0], xt, 4, 2, idx, val));
    EXPECT(idx[0] == 0 && idx[1] == 1 && val[1] == -1.0f, "ties by lowest index: got %u %u", idx[0], idx[1]);
    float xn[] = {1.0f, NAN, INFINITY, -0.0f, 2.0f};
    EXPECT_OK(sd_cpu_topk(ctx[0], xn, 5, 2, idx, val));
    EXPECT(idx[0] == 1 && idx[1] == 2 && isnan(val[0]) && isinf(val[1]), "NaN above inf: got %u %u", idx[0], idx[1]);
    float xz[] = {-0.0f, 0.0f, -0.0f};
    EXPECT_OK(sd_cpu_topk(ctx[0], xz, 3, 2, idx, val));
    EXPECT(idx[0] == 0 && idx[1] == 1 && signbit(val[0]) && !signbit(val[1]), "zeros tie, sign kept: got %u %u", idx[0],
           idx[1]);
    EXPECT_OK(sd_cpu_topk(ctx[0], xz, 3, 0, NULL, NULL)); /* k = 0: nothing */
}

static void test_errors(void) {
    float x[4] = {0};
    uint32_t idx[4];
    float val[4];
    EXPECT_FAIL(sd_cpu_topk(ctx[0], x, 4, 5, idx, val), SD_ERR_INVALID, "exceeds");
    EXPECT_FAIL(sd_cpu_topk(NULL, x, 4, 1, idx, val), SD_ERR_INVALID, "context");
    EXPECT_FAIL(sd_cpu_topk(ctx[0], NULL, 4, 1, idx, val), SD_ERR_INVALID, "NULL");
    EXPECT_FAIL(sd_cpu_topk(ctx[0], x, 4, 1, idx, NULL), SD_ERR_INVALID, "NULL");
}

int main(void) {
    for (int c = 0; c < 3; c++)
        if (sd_cpu_kctx_create(nthreads[c], &ctx[c]) != SD_OK) {
            fprintf(stderr, "%s\n", sd_last_error());
            return 1;
        }
    test_by_hand();
    test_errors();
    test_sizes();
    test_1m();
    for (int c = 0; c < 3; c++) sd_cpu_kctx_destroy(ctx[c]);
    return sd_test_finish("test_topk");
}
