/* bench_sgemm_openblas.c: our sgemm (kernels/cpu/gemm.c, sd_cpu_sgemm: what the linear layers call)
 * against OpenBLAS's cblas_sgemm at the shapes of our models' layers, batch 64 (docs/performance.md).
 * Shapes: the linear layers (forward, dW, dx) as kernels/cpu/linear.c calls them, and the im2col
 * GEMMs of the convolutions per image (x64 per batch), the shapes an im2col engine would hand a
 * BLAS (our conv.c runs its own micro-kernels and does not call sgemm). Run it with
 * `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to let OpenBLAS pick its kernels; it prints the
 * core OpenBLAS uses. Validates C against a double-precision reference first; repetitions
 * alternate ours and OpenBLAS. Usage: bench_sgemm_openblas THREADS [REPS [both|ours|openblas]]:
 * `both` interleaves the two in one process (fair at one thread); with two threads OpenBLAS's
 * pthread pool and our OpenMP pool spin against each other in one process, so run_sgemm_openblas.sh
 * runs one library per process, alternating processes. Each table row is followed by a RAW line of
 * the samples for that script. Not a ctest test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "base/clock.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/bench/bench_stats.h"

char *openblas_get_config(void);
char *openblas_get_corename(void);
void openblas_set_num_threads(int);

typedef struct shape { const char *label; int ta, tb, m, n, k, calls; } shape;

static void ref_gemm(const shape *s, const float *a, const float *b, double *c) {
    for (int i = 0; i < s->m; i++)
        for (int j = 0; j < s->n; j++) {
            double acc = 0;
            for (int l = 0; l < s->k; l++) {
                double av = s->ta ? a[(size_t)l * s->m + i] : a[(size_t)i * s->k + l];
                double bv = s->tb ? b[(size_t)j * s->k + l] : b[(size_t)l * s->n + j];
                acc += av * bv;
            }
            c[(size_t)i * s->n + j] = acc;
        }
}

static double nmse(const float *x, const double *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += (x[i] - ref[i]) * (x[i] - ref[i]);
        r += ref[i] * ref[i];
    }
    return r > 0 ? e / r : e;
}

static void run(int which, sd_kctx *kc, const shape *s, const float *a, const float *b, float *c) {
    int lda = s->ta ? s->m : s->k, ldb = s->tb ? s->k : s->n;
    for (int i = 0; i < s->calls; i++) {
        if (which)
            cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->m,
                        s->n, s->k, 1.0f, a, lda, b, ldb, 0.0f, c, s->n);
        else
            sd_cpu_sgemm(kc, s->ta, s->tb, s->m, s->n, s->k, 1.0f, a, lda, b, ldb, 0.0f, c, s->n);
    }
}

/* conv layer -> its three im2col GEMMs per image: y = W col, dW = dy col^T, dcol = W^T dy */
#define CONV(lbl, k, ckk, p) {lbl " fwd", 0, 0, k, p, ckk, 64}, {lbl " dW", 0, 1, k, ckk, p, 64}, \
                             {lbl " dcol", 1, 0, ckk, p, k, 64}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0, reps = argc > 2 ? atoi(argv[2]) : 11;
    const char *mode = argc > 3 ? argv[3] : "both";
    int lo = 0, hi = 1; /* libraries run: 0 = ours, 1 = OpenBLAS */
    if (!strcmp(mode, "ours")) hi = 0;
    else if (!strcmp(mode, "openblas")) lo = 1;
    else if (strcmp(mode, "both")) lo = 2;
    if (threads < 1 || threads > 64 || reps < 1 || reps > 1000 || lo > hi)
        bs_die("usage: %s THREADS(1..64) [REPS 1..1000 [both|ours|openblas]]", argv[0]);
    const shape shapes[] = {
        {"cnn fc fwd 64x1568->10", 0, 1, 64, 10, 1568, 1},
        {"cnn fc dW", 1, 0, 10, 1568, 64, 1},
        {"cnn fc dx", 0, 0, 64, 1568, 10, 1},
        {"r20 fc fwd 64x64->10", 0, 1, 64, 10, 64, 1},
        {"r20 fc dW", 1, 0, 10, 64, 64, 1},
        {"r20 fc dx", 0, 0, 64, 64, 10, 1},
        CONV("cnn conv2 16->32 5x5 @14", 32, 400, 196),
        CONV("r20 16->16 3x3 @32", 16, 144, 1024),
        CONV("r20 32->32 3x3 @16", 32, 288, 256),
        CONV("r20 64->64 3x3 @8", 64, 576, 64),
        CONV("r20 16->32 3x3 s2 @32", 32, 144, 256),
    };
    sd_kctx *kc = NULL;
    if (sd_cpu_kctx_create(threads, &kc) != SD_OK) bs_die("cannot create the CPU kernel context");
    openblas_set_num_threads(threads); /* after the context, which sets OpenBLAS to one thread */
    const char *ct = getenv("OPENBLAS_CORETYPE"), *l2 = getenv("OPENBLAS_L2_SIZE");
    printf("sgemm: ours vs OpenBLAS, %d threads; OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s\n", threads,
           ct ? ct : "(unset)", l2 ? l2 : "(unset)");
    printf("OpenBLAS config: %s; core: %s\n", openblas_get_config(), openblas_get_corename());
    printf("load before %.2f\n", bs_load1());
    printf("%-30s %-6s %-26s %-26s %s\n", "shape (m n k) x calls", "", "ours GFLOP/s med [min-max]",
           "OpenBLAS GFLOP/s med [min-max]", "ours/OB");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        size_t as = (size_t)s->m * s->k, bsz = (size_t)s->k * s->n, cs = (size_t)s->m * s->n;
        float *a = NULL, *b = NULL, *c = NULL;
        double *ref = malloc(cs * sizeof *ref);
        if (sd_cpu_alloc(as * 4, (void **)&a) != SD_OK || sd_cpu_alloc(bsz * 4, (void **)&b) != SD_OK ||
            sd_cpu_alloc(cs * 4, (void **)&c) != SD_OK || !ref)
            bs_die("out of memory");
        uint64_t st = 12345 + si;
        for (size_t i = 0; i < as; i++) a[i] = (float)((st = st * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
        for (size_t i = 0; i < bsz; i++) b[i] = (float)((st = st * 6364136223846793005ull + 1) >> 40) / 16777216.0f - 0.5f;
        ref_gemm(s, a, b, ref);
        for (int w = 0; w < 2; w++) {
            run(w, kc, &(shape){s->label, s->ta, s->tb, s->m, s->n, s->k, 1}, a, b, c);
            double e = nmse(c, ref, cs);
            if (!(e < 1e-10)) bs_die("%s: %s result differs from the reference (NMSE %.3g)", s->label, w ? "OpenBLAS" : "our", e);
        }
        double g[2][1000], flops = 2.0 * s->m * s->n * s->k * s->calls;
        int inner = 1;
        while (inner < 1000 && flops * inner < 2e8) inner *= 2; /* about 2 ms and more per sample */
        for (int w = lo; w <= hi; w++) run(w, kc, s, a, b, c); /* warm up */
        for (int r = 0; r < reps; r++)
            for (int w = lo; w <= hi; w++) {
                int which = lo == hi ? lo : (r + w) % 2;
                double t0 = sd_clock_now();
                for (int i = 0; i < inner; i++) run(which, kc, s, a, b, c);
                g[which][r] = flops * inner / (sd_clock_now() - t0) / 1e9;
            }
        for (int w = lo; w <= hi; w++) {
            printf("RAW\t%s\t%s", s->label, w ? "openblas" : "ours");
            for (int r = 0; r < reps; r++) printf("\t%.2f", g[w][r]);
            printf("\n");
        }
        char dims[64];
        snprintf(dims, sizeof dims, "%d %d %d%s%s x%d", s->m, s->n, s->k, s->ta ? " At" : "", s->tb ? " Bt" : "", s->calls);
        if (lo == hi) { /* one library: its column only */
            bs_summary o = bs_summarize(g[lo], reps);
            printf("%-30s %-22s %s %6.1f [%6.1f-%6.1f]\n", s->label, dims, lo ? "OpenBLAS" : "ours", o.median, o.min,
                   o.max);
        } else {
            bs_summary o = bs_summarize(g[0], reps), p = bs_summarize(g[1], reps);
            printf("%-30s %-22s %6.1f [%6.1f-%6.1f]     %6.1f [%6.1f-%6.1f]     %.2fx\n", s->label, dims, o.median,
                   o.min, o.max, p.median, p.min, p.max, o.median / p.median);
        }
        free(ref);
        free(a);
        free(b);
        free(c);
    }
    printf("load after %.2f\n", bs_load1());
    sd_cpu_kctx_destroy(kc);
    return 0;
}
