/* test_cuda_topk.c: the GPU Top-k (sd_cuda_topk, kernels/cuda/topk.cu) against the CPU Top-k
 * (sd_cpu_topk, itself tested against a sort in test_topk.c), bit for bit: the same indices and the
 * same value bits, for sizes 1 .. 25M (and one input past 32M, where the compaction tiles grow),
 * k = 1, n/100, n/10, n/2, n-1, n, and data shapes that stress the tie and special-value rules
 * (normal, all equal, few distinct values with +-0, NaN/inf/-0/subnormal mixes, mostly-zero spikes).
 * Also: nothing written past the kk outputs (sentinels), an unaligned input pointer, repeated calls
 * on the same context (scratch reuse), and the argument errors of the CPU twin.
 *
 * Without a usable GPU (or in a build without CUDA) the test reports "skipped" (exit 77) with the
 * reason; it never passes without running the GPU comparisons. SD_CUDA_REQUIRE=1 turns a missing
 * device into a failure. SD_CUDA_TOPK_MAX_N=N leaves out the sweeps over more than N entries (each is
 * named as left out): for runs under compute-sanitizer, which slows every kernel by 10-100x. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#ifdef SCADLES_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

#ifdef SCADLES_HAVE_CUDA

static sd_backend gpu;
static sd_kctx *cpu;

enum { D_NORMAL, D_EQUAL, D_FEW, D_SPECIAL, D_SPIKES, D_COUNT };
static const char *dname[D_COUNT] = {"normal", "all-equal", "few-distinct", "nan/inf/-0", "spikes"};

static float normal(sd_test_rng *r) {
    float u1 = sd_test_uniform(r, 1e-7f, 1.0f), u2 = sd_test_uniform(r, 0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void make(int kind, float *x, size_t n, uint64_t seed) {
    sd_test_rng r = {seed};
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case D_NORMAL: x[i] = normal(&r) * 1e-3f; break;
        case D_EQUAL: x[i] = (i & 1) ? -0.25f : 0.25f; break; /* one magnitude: every entry ties */
        case D_FEW: x[i] = (float)((int)(sd_test_next(&r) % 5) - 2) * ((sd_test_next(&r) & 1) ? 1.0f : -1.0f); break;
        case D_SPECIAL: {
            const uint64_t u = sd_test_next(&r) % 16;
            switch (u) {
            case 0: x[i] = NAN; break;
            case 1: x[i] = from_bits(0xffc00001u); break; /* negative NaN with a payload */
            case 2: x[i] = from_bits(0x7f800123u); break; /* signalling-pattern NaN */
            case 3: x[i] = INFINITY; break;
            case 4: x[i] = -INFINITY; break;
            case 5: x[i] = -0.0f; break;
            case 6: x[i] = 0.0f; break;
            case 7: x[i] = from_bits(0x00000001u); break; /* smallest subnormal */
            case 8: x[i] = -from_bits(0x00000001u); break;
            case 9: x[i] = 3.4028235e38f; break;
            default: x[i] = normal(&r); break;
            }
            break;
        }
        case D_SPIKES: x[i] = (sd_test_next(&r) % 1000 == 0) ? normal(&r) * 100.0f : 0.0f; break;
        }
    }
}

#define SENTINELS 16

/* Device buffers grown to the largest size seen. */
static float *d_x, *d_val;
static uint32_t *d_idx;
static size_t d_cap;

static int ensure(size_t n) {
    if (n <= d_cap) return 1;
    if (d_x) gpu.ops->free(gpu.ctx, d_x);
    if (d_val) gpu.ops->free(gpu.ctx, d_val);
    if (d_idx) gpu.ops->free(gpu.ctx, d_idx);
    d_x = d_val = NULL;
    d_idx = NULL;
    d_cap = 0;
    const size_t m = n + SENTINELS + 1;
    sd_status a = gpu.ops->alloc(gpu.ctx, m * sizeof(float), (void **)&d_x);
    sd_status b = a == SD_OK ? gpu.ops->alloc(gpu.ctx, m * sizeof(float), (void **)&d_val) : a;
    sd_status c = b == SD_OK ? gpu.ops->alloc(gpu.ctx, m * sizeof(uint32_t), (void **)&d_idx) : b;
    EXPECT(c == SD_OK, "allocating %zu device floats: %s", m, sd_last_error());
    if (c != SD_OK) return 0;
    d_cap = n;
    return 1;
}

/* One comparison: x (host, n entries) at offset `off` floats into the device buffer. */
static void one_case(const char *shape, const float *x, size_t n, size_t kk, size_t off) {
    char tag[128];
    snprintf(tag, sizeof tag, "topk n=%zu k=%zu %s%s", n, kk, shape, off ? " (unaligned)" : "");
    if (!ensure(n + off)) return;
    uint32_t *ci = malloc((kk + 1) * sizeof *ci), *gi = malloc((kk + SENTINELS) * sizeof *gi);
    float *cv = malloc((kk + 1) * sizeof *cv), *gv = malloc((kk + SENTINELS) * sizeof *gv);
    if (!ci || !gi || !cv || !gv) {
        EXPECT(0, "%s: host buffers", tag);
        goto out;
    }
    EXPECT_OK(sd_cpu_topk(cpu, x, n, kk, ci, cv));
    EXPECT_OK(gpu.ops->upload(gpu.ctx, d_x + off, x, n * sizeof(float)));
    memset(gi, 0xab, (kk + SENTINELS) * sizeof *gi); /* sentinels: 0xabababab in both outputs */
    memset(gv, 0xab, (kk + SENTINELS) * sizeof *gv);
    EXPECT_OK(gpu.ops->upload(gpu.ctx, d_idx, gi, (kk + SENTINELS) * sizeof *gi));
    EXPECT_OK(gpu.ops->upload(gpu.ctx, d_val, gv, (kk + SENTINELS) * sizeof *gv));
    sd_status st = sd_cuda_topk(gpu.ctx, d_x + off, n, kk, d_idx, d_val);
    EXPECT(st == SD_OK, "%s: sd_cuda_topk returned %s: %s", tag, sd_status_str(st), sd_last_error());
    EXPECT_OK(gpu.ops->download(gpu.ctx, gi, d_idx, (kk + SENTINELS) * sizeof *gi));
    EXPECT_OK(gpu.ops->download(gpu.ctx, gv, d_val, (kk + SENTINELS) * sizeof *gv));
    size_t bad = 0, first = kk;
    for (size_t j = 0; j < kk; j++)
        if (gi[j] != ci[j] || memcmp(&gv[j], &cv[j], sizeof(float)) != 0) {
            if (!bad) first = j;
            bad++;
        }
    EXPECT(bad == 0, "%s: %zu of %zu pairs differ from sd_cpu_topk, first at %zu: gpu (%u, %a) cpu (%u, %a)", tag, bad,
           kk, first, first < kk ? gi[first] : 0u, first < kk ? (double)gv[first] : 0.0, first < kk ? ci[first] : 0u,
           first < kk ? (double)cv[first] : 0.0);
    int guard = 1;
    for (size_t j = kk; j < kk + SENTINELS; j++) {
        uint32_t u;
        memcpy(&u, &gv[j], sizeof u);
        if (gi[j] != 0xababababu || u != 0xababababu) guard = 0;
    }
    EXPECT(guard, "%s: wrote past the %zu outputs", tag, kk);
    if (bad || !guard) printf("  %-52s DIFFERENT\n", tag);
out:
    free(ci), free(gi), free(cv), free(gv);
}

/* SD_CUDA_TOPK_MAX_N: the largest sweep run (all of them when unset). */
static size_t g_max_n = SIZE_MAX;

static void sweep(size_t n, int shapes_mask) {
    if (n > g_max_n) {
        printf("  n=%-9zu left out (SD_CUDA_TOPK_MAX_N=%zu)\n", n, g_max_n);
        return;
    }
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x) {
        EXPECT(0, "host buffer of %zu floats", n);
        return;
    }
    const size_t ks[6] = {1, n / 100, n / 10, n / 2, n > 1 ? n - 1 : 1, n};
    int cases = 0;
    for (int d = 0; d < D_COUNT; d++) {
        if (!(shapes_mask & (1 << d))) continue;
        make(d, x, n, 0x70e4u + n * 31u + (uint64_t)d);
        size_t last = (size_t)-1;
        for (int j = 0; j < 6; j++) {
            const size_t kk = ks[j] ? ks[j] : 1;
            if (kk == last || kk > n) continue;
            last = kk;
            one_case(dname[d], x, n, kk, 0);
            cases++;
        }
    }
    printf("  n=%-9zu %d cases compared\n", n, cases);
    free(x);
}

static void test_sizes(void) {
    const int all = (1 << D_COUNT) - 1;
    const size_t small[] = {1, 2, 3, 5, 31, 32, 33, 255, 256, 257, 1000, 4095, 8191, 8192, 8193, 10007, 65539, 131072,
                            200003};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) sweep(small[i], all);
    sweep(1000003, all);
    sweep((size_t)10 << 20, (1 << D_NORMAL) | (1 << D_EQUAL) | (1 << D_SPECIAL));
    sweep((size_t)25 << 20, (1 << D_NORMAL) | (1 << D_SPIKES));
    /* past TK_MAX_TILES x TK_TILE (32M): tiles larger than 8192 entries */
    sweep(((size_t)32 << 20) + 1001, 1 << D_NORMAL);
}

static void test_misc(void) {
    const size_t n = 300007;
    float *x = malloc(n * sizeof *x);
    if (!x) return;
    make(D_SPECIAL, x, n, 99);
    one_case("nan/inf/-0", x, n, 4321, 1); /* x at an odd float offset: no alignment assumed */
    one_case("nan/inf/-0", x, n, 4321, 0); /* the same again: scratch reused, same result */
    make(D_NORMAL, x, n, 7);
    for (int rep = 0; rep < 3; rep++) one_case("normal (repeated)", x, n, n / 7, 0);
    free(x);

    /* argument errors, as sd_cpu_topk */
    EXPECT_FAIL(sd_cuda_topk(NULL, d_x, 10, 1, d_idx, d_val), SD_ERR_INVALID, "context");
    EXPECT_FAIL(sd_cuda_topk(gpu.ctx, d_x, 10, 11, d_idx, d_val), SD_ERR_INVALID, "exceeds");
    EXPECT_FAIL(sd_cuda_topk(gpu.ctx, NULL, 10, 1, d_idx, d_val), SD_ERR_INVALID, "NULL");
    EXPECT_FAIL(sd_cuda_topk(gpu.ctx, d_x, (size_t)UINT32_MAX + 1, 1, d_idx, d_val), SD_ERR_UNSUPPORTED, "32-bit");
    EXPECT_OK(sd_cuda_topk(gpu.ctx, NULL, 10, 0, NULL, NULL));
    EXPECT_OK(gpu.ops->synchronize(gpu.ctx));
}

#endif /* SCADLES_HAVE_CUDA */

int main(void) {
    const char *req = getenv("SD_CUDA_REQUIRE");
    const int required = req && !strcmp(req, "1");
    sd_backend probe = {0};
    const sd_status st = sd_backend_cuda_create(&probe, 0);
    if (st != SD_OK) {
        char why[1200];
        snprintf(why, sizeof why, "%s", sd_last_error_brief());
        EXPECT(st == SD_ERR_UNSUPPORTED || st == SD_ERR_RUNTIME, "cuda create failed with %s", sd_status_str(st));
        if (required) {
            EXPECT(0, "SD_CUDA_REQUIRE=1 but %s", why);
            return sd_test_finish("test_cuda_topk");
        }
        if (sd_test_failed) return sd_test_finish("test_cuda_topk");
        return sd_test_skip("test_cuda_topk", why);
    }
#ifdef SCADLES_HAVE_CUDA
    gpu = probe;
    const char *max_n = getenv("SD_CUDA_TOPK_MAX_N");
    if (max_n && *max_n) g_max_n = (size_t)strtoull(max_n, NULL, 10);
    if (sd_cpu_kctx_create(0, &cpu) != SD_OK) {
        fprintf(stderr, "test_cuda_topk: cpu context: %s\n", sd_last_error());
        sd_backend_destroy(&gpu);
        return 1;
    }
    printf("test_cuda_topk: sd_cuda_topk against sd_cpu_topk, bitwise\n");
    test_sizes();
    test_misc();
    if (d_x) gpu.ops->free(gpu.ctx, d_x);
    if (d_val) gpu.ops->free(gpu.ctx, d_val);
    if (d_idx) gpu.ops->free(gpu.ctx, d_idx);
    sd_cpu_kctx_destroy(cpu);
    sd_backend_destroy(&gpu);
#else
    sd_backend_destroy(&probe);
    EXPECT(0, "sd_backend_cuda_create succeeded in a build without SCADLES_HAVE_CUDA");
#endif
    return sd_test_finish("test_cuda_topk");
}
