/* test_gemm.c: sd_cpu_sgemm against a naive double-precision triple loop: all four transpose
 * combinations, edge sizes around the micro-kernel tiles (8x48 block path, 4x6 dot path), leading
 * dimensions larger than the minimum, alpha/beta combinations (beta 0 over a NaN-filled C must not
 * read C), non-temporal stores of a large C, guard sentinels around C and untouched padding columns, the degenerate cases (m, n or k
 * zero, alpha zero), and the convolution / linear shapes of training at reduced batch.
 * Tolerance: NMSE <= 1e-10 against the double reference (float accumulation; K up to 8192 here,
 * where blocked float sums reach about 1e-12). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"

#define NMSE_MAX 1e-10

static double worst_nmse;

/* One call of sd_cpu_sgemm on random data, checked against the reference. `pad` adds to each
 * leading dimension (different amounts for A, B and C). */
static void run_case(sd_kctx *k, int ta, int tb, int m, int n, int kd, float alpha, float beta, int pad,
                     uint64_t seed) {
    sd_test_rng rng = {seed};
    int lda = (ta ? m : kd) + pad, ldb = (tb ? kd : n) + 2 * pad, ldc = n + 3 * pad;
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    if (ldc < 1) ldc = 1;
    size_t arows = ta ? (size_t)kd : (size_t)m, brows = tb ? (size_t)n : (size_t)kd;
    size_t asz = arows * lda, bsz = brows * ldb, csz = (size_t)m * ldc;
    float *a = malloc((asz ? asz : 1) * sizeof(float));
    float *b = malloc((bsz ? bsz : 1) * sizeof(float));
    float *c = sd_guard_alloc(csz ? csz : 1);
    float *c0 = malloc((csz ? csz : 1) * sizeof(float));
    float *got = malloc(((size_t)m * n + 1) * sizeof(float));
    float *want = malloc(((size_t)m * n + 1) * sizeof(float));
    if (!a || !b || !c || !c0 || !got || !want) {
        EXPECT(0, "allocation failed");
        goto done;
    }
    sd_test_fill(&rng, a, asz, -1.0f, 1.0f);
    sd_test_fill(&rng, b, bsz, -1.0f, 1.0f);
    sd_test_fill(&rng, c, csz, -1.0f, 1.0f);
    if (beta == 0.0f) /* the valid part of C is garbage the kernel must not read */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[(size_t)i * ldc + j] = NAN;
    memcpy(c0, c, csz * sizeof(float));

    sd_cpu_sgemm(k, ta, tb, m, n, kd, alpha, a, lda, b, ldb, beta, c, ldc);

    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < kd; p++) {
                double x = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double y = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += x * y;
            }
            double r = (double)alpha * s;
            if (beta != 0.0f) r += (double)beta * c0[(size_t)i * ldc + j];
            want[(size_t)i * n + j] = (float)r;
            got[(size_t)i * n + j] = c[(size_t)i * ldc + j];
        }
    size_t mn = (size_t)m * n;
    int padding_ok = 1;
    for (int i = 0; i < m; i++)
        for (int j = n; j < ldc; j++)
            if (memcmp(&c[(size_t)i * ldc + j], &c0[(size_t)i * ldc + j], sizeof(float)) != 0) padding_ok = 0;
    double e = sd_nmse(got, want, mn);
    if (e > worst_nmse) worst_nmse = e;
    EXPECT(sd_all_finite(got, mn), "non-finite output: ta=%d tb=%d m=%d n=%d k=%d beta=%g", ta, tb, m, n, kd,
           (double)beta);
    EXPECT(e <= NMSE_MAX, "nmse %.3g: ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pad=%d", e, ta, tb, m, n, kd,
           (double)alpha, (double)beta, pad);
    EXPECT(padding_ok, "wrote a padding column of C: ta=%d tb=%d m=%d n=%d k=%d ldc=%d", ta, tb, m, n, kd, ldc);
    EXPECT(sd_guard_ok(c, csz ? csz : 1), "wrote outside C: ta=%d tb=%d m=%d n=%d k=%d", ta, tb, m, n, kd);
done:
    free(a);
    free(b);
    sd_guard_free(c);
    free(c0);
    free(got);
    free(want);
}

/* m = 0 or n = 0 leaves C alone; k = 0 or alpha = 0 gives beta * C without reading A or B. */
static void degenerate_cases(sd_kctx *k) {
    float c[6] = {1, 2, 3, 4, 5, 6}, a[6] = {1, 1, 1, 1, 1, 1};
    sd_cpu_sgemm(k, 0, 0, 0, 3, 2, 1.0f, a, 2, a, 3, 0.0f, c, 3);
    sd_cpu_sgemm(k, 0, 0, 2, 0, 2, 1.0f, a, 2, a, 3, 0.0f, c, 3);
    EXPECT(c[0] == 1 && c[5] == 6, "m = 0 / n = 0 changed C");
    sd_cpu_sgemm(k, 0, 0, 2, 3, 0, 1.0f, NULL, 1, NULL, 3, 0.5f, c, 3);
    EXPECT(c[0] == 0.5f && c[5] == 3.0f, "k = 0 with beta 0.5: got %g %g", (double)c[0], (double)c[5]);
    for (int i = 0; i < 6; i++) c[i] = NAN;
    sd_cpu_sgemm(k, 1, 1, 2, 3, 2, 0.0f, a, 2, a, 2, 0.0f, c, 3);
    EXPECT(c[0] == 0.0f && c[5] == 0.0f, "alpha 0 beta 0 over NaN: got %g %g", (double)c[0], (double)c[5]);
    run_case(k, 0, 0, 9, 50, 0, 1.0f, 1.0f, 1, 99);
    run_case(k, 1, 0, 9, 50, 5, 0.0f, 0.5f, 1, 98);
}

/* A C larger than the L3 with beta 0 and K <= 256 is written with non-temporal stores, which need
 * a 64-byte aligned C: check sampled rows of such a product (TN, as the input gradient). */
static void streaming_case(sd_kctx *k) {
    const int m = 1024, n = 8192, kd = 16;
    sd_test_rng rng = {4242};
    float *a = malloc((size_t)kd * m * sizeof(float)), *b = malloc((size_t)kd * n * sizeof(float));
    float *c = aligned_alloc(64, (size_t)m * n * sizeof(float));
    if (!a || !b || !c) {
        EXPECT(0, "allocation failed");
    } else {
        sd_test_fill(&rng, a, (size_t)kd * m, -1.0f, 1.0f);
        sd_test_fill(&rng, b, (size_t)kd * n, -1.0f, 1.0f);
        for (size_t i = 0; i < (size_t)m * n; i++) c[i] = NAN;
        sd_cpu_sgemm(k, 1, 0, m, n, kd, 1.5f, a, m, b, n, 0.0f, c, n);
        EXPECT(sd_all_finite(c, (size_t)m * n), "streaming case: non-finite output");
        static const int rows[] = {0, 1, 7, 8, 500, 1023};
        float *want = malloc((size_t)n * sizeof(float));
        for (size_t r = 0; want && r < sizeof rows / sizeof rows[0]; r++) {
            int i = rows[r];
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < kd; p++) s += (double)a[(size_t)p * m + i] * b[(size_t)p * n + j];
                want[j] = (float)(1.5 * s);
            }
            double e = sd_nmse(c + (size_t)i * n, want, (size_t)n);
            EXPECT(e <= NMSE_MAX, "streaming case row %d: nmse %.3g", i, e);
        }
        free(want);
    }
    free(a);
    free(b);
    free(c);
}

int main(void) {
    sd_kctx *k = NULL;
    EXPECT_OK(sd_cpu_kctx_create(2, &k));
    if (!k) return sd_test_finish("test_gemm");

    degenerate_cases(k);

    /* Edge sizes around the tiles, every transpose combination, rotating alpha/beta/padding. */
    static const int sizes[] = {1, 2, 7, 15, 16, 17, 31, 33, 100};
    static const int ks[] = {1, 17, 100, 300};
    static const float alphas[] = {1.0f, -0.5f, 2.0f};
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    int ns = (int)(sizeof sizes / sizeof sizes[0]), nk = (int)(sizeof ks / sizeof ks[0]);
    uint64_t seed = 1;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int im = 0; im < ns; im++)
                for (int in = 0; in < ns; in++)
                    for (int ik = 0; ik < nk; ik++) {
                        int idx = im * 7 + in * 3 + ik;
                        run_case(k, ta, tb, sizes[im], sizes[in], ks[ik], alphas[idx % 3], betas[(idx / 3) % 3],
                                 (idx % 4 == 0) ? 0 : 1 + idx % 5, seed++);
                    }

    /* Every alpha/beta pair on one shape per path, with odd leading dimensions. */
    for (int ia = 0; ia < 3; ia++)
        for (int ib = 0; ib < 3; ib++) {
            run_case(k, 0, 0, 37, 101, 45, alphas[ia], betas[ib], 3, seed++);
            run_case(k, 0, 1, 37, 101, 453, alphas[ia], betas[ib], 3, seed++);
            run_case(k, 1, 1, 37, 101, 45, alphas[ia], betas[ib], 3, seed++);
        }

    /* Several K chunks, several M blocks, the M split (narrow N), the N split. */
    run_case(k, 0, 0, 1000, 60, 300, 1.0f, 0.0f, 5, seed++);
    run_case(k, 1, 0, 700, 150, 530, 1.0f, 0.5f, 0, seed++);
    run_case(k, 1, 1, 130, 97, 600, 1.0f, 0.0f, 1, seed++);
    run_case(k, 0, 0, 40, 2000, 70, -1.0f, 1.0f, 7, seed++);
    /* Dot path (NT, K >= 512 and M <= 128, or N < 48): K split across threads (long K, small
     * M*N) with a K tail, and the N / M splits. */
    run_case(k, 0, 1, 16, 25, 8195, 1.0f, 0.0f, 3, seed++);
    run_case(k, 0, 1, 21, 31, 5000, 0.5f, 0.5f, 1, seed++);
    run_case(k, 0, 1, 60, 700, 600, 1.0f, 1.0f, 0, seed++);
    run_case(k, 0, 1, 700, 10, 1100, 1.0f, 0.0f, 2, seed++);

    /* Training shapes (small CNN and ResNet-20) at reduced P (P = output pixels x batch). */
    static const int conv[][3] = {/* K_out, C*KH*KW, P */
                                  {16, 27, 2048}, {16, 144, 1024}, {32, 288, 1024}, {64, 576, 512},
                                  {32, 144, 1024}, {16, 25, 1568}, {32, 400, 784}};
    for (size_t s = 0; s < sizeof conv / sizeof conv[0]; s++) {
        int ko = conv[s][0], ckk = conv[s][1], p = conv[s][2];
        run_case(k, 0, 0, ko, p, ckk, 1.0f, 0.0f, 0, seed++);  /* forward */
        run_case(k, 0, 1, ko, ckk, p, 1.0f, 0.0f, 0, seed++);  /* weight gradient */
        run_case(k, 1, 0, ckk, p, ko, 1.0f, 0.0f, 0, seed++);  /* input gradient */
    }
    run_case(k, 0, 1, 32, 288, 4096, 1.0f, 1.0f, 0, seed++); /* weight gradient, K split, accumulate */
    run_case(k, 0, 1, 64, 10, 1568, 1.0f, 0.0f, 0, seed++);  /* linear forward y = x W^T */
    run_case(k, 0, 0, 64, 1568, 10, 1.0f, 0.0f, 0, seed++);  /* dx = dy W */
    run_case(k, 1, 0, 10, 1568, 64, 1.0f, 0.0f, 0, seed++);  /* dW = dy^T x */
    run_case(k, 0, 1, 64, 10, 64, 1.0f, 0.0f, 0, seed++);    /* ResNet fc */
    run_case(k, 0, 0, 64, 64, 10, 1.0f, 0.0f, 0, seed++);
    run_case(k, 1, 0, 10, 64, 64, 1.0f, 0.0f, 0, seed++);
    streaming_case(k);

    printf("test_gemm: worst nmse %.3g (bound %.0e)\n", worst_nmse, NMSE_MAX);
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_gemm");
}
