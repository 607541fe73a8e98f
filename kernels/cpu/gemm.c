/* gemm.c: sd_cpu_sgemm, an AVX-512 SGEMM for the shapes im2col convolutions and linear layers
 * produce (row-major, the cblas_sgemm contract), with OpenBLAS as the fallback on CPUs without
 * AVX-512 (checked at run time; the file builds without -march=native).
 *
 * Design (two paths):
 *  - Block path (NN, TN, TT; NT unless the dot path suits it). BLIS-style: op(A) is packed per
 *    MC x KC block into 8-row micro-panels (zero padded). B is read in place when it is not
 *    transposed (its rows are contiguous along N, so the small-M conv shapes skip a copy): the
 *    first 8-row tile of a panel prefetches the next panel and copies this one to a contiguous
 *    buffer the other tiles read (rows a power-of-two stride apart would fight over cache sets).
 *    A transposed B is packed per KC x 48 micro-panel. Micro-kernel 8x48: 24 zmm accumulators,
 *    3 B loads and 8 broadcasts x 3 FMAs per k; edges use masked loads/stores. KC <= 256 (K cut
 *    into equal chunks), MC such that the packed A block is <= 384 KiB (Zen 5: 48 KiB L1d, 1 MiB
 *    L2 per core); with K <= 64 that is all of A. A C above 32 MiB written in one K chunk with
 *    beta 0 uses non-temporal stores.
 *  - Dot path (NT with K >= 512 and M <= 128, i.e. weight gradients C = A B^T, or N < 48). Both
 *    operands are contiguous along K, so a 4x6 tile of 24 zmm dot products runs over K chunks of
 *    1024 with no packing; lanes are reduced by a transposing shuffle tree. When M*N is small and
 *    K long the threads split K and add their private partial results at the end.
 * Threads: OpenMP over N panels (M tiles when N is narrow), or over K in the dot path; problems
 * under ~1M multiply-adds per thread use fewer threads. Packing buffers are thread-local,
 * allocated once and grown to a high-water mark bounded by the blocking sizes (A block 384 KiB,
 * B panel 48 KiB, partial results 4 MiB), never freed: the next call reuses them.
 */
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_kernels.h"

#define SD_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))
#define SD_INLINE static inline __attribute__((always_inline))

enum {
    MR = 8,             /* micro-kernel rows (block path) */
    NR = 48,            /* micro-kernel columns: 3 zmm */
    KC = 256,           /* longest K chunk of the block path */
    A_BLOCK = 96 * 1024, /* floats of one packed A block (384 KiB) */
    PF_DIST = 2 * NR,   /* prefetch distance for in-place B, in columns */
    DR = 4,             /* dot path: rows of A per tile */
    DN = 6,             /* dot path: rows of B (columns of C) per tile */
    DKC = 1024,         /* dot path: K chunk */
    DOT_MIN_K = 512,    /* NT with shorter K, or with M > DOT_MAX_M, goes through the block path */
    DOT_MAX_M = 128,
    PART_MAX = 1 << 20, /* most floats of partial results for a K split (4 MiB) */
    MAX_THREADS = 256,
};
#define STREAM_BYTES ((size_t)32 << 20) /* C this large will not stay in the cache anyway */
#define MIN_MACS_PER_THREAD (1 << 20) /* below this a thread costs more than it saves */

typedef struct sg_args {
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    size_t lda, ldb, ldc;
    int stream; /* write C with non-temporal stores (one K chunk, beta 0, C larger than the L3) */
} sg_args;

static int imin(int a, int b) { return a < b ? a : b; }

/* ---- thread-local buffers ------------------------------------------------------------------ */

enum { BUF_A, BUF_B, BUF_PART, BUF_COUNT };
static _Thread_local float *tl_buf[BUF_COUNT];
static _Thread_local size_t tl_cap[BUF_COUNT];

/* Threads come and go (the local comm backend runs one per device per run): a pthread key whose
 * destructor frees a thread's buffers when it exits. */
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *unused) {
    (void)unused;
    for (int i = 0; i < BUF_COUNT; i++) {
        free(tl_buf[i]);
        tl_buf[i] = NULL;
        tl_cap[i] = 0;
    }
}

static void tl_key_init(void) { (void)pthread_key_create(&tl_key, tl_free); }

/* The calling thread's buffer `slot` of at least `floats` floats (64-byte aligned), or NULL. */
static float *tl_get(int slot, size_t floats) {
    if (floats > tl_cap[slot]) {
        pthread_once(&tl_once, tl_key_init);
        (void)pthread_setspecific(tl_key, (void *)1); /* non-NULL: run tl_free at thread exit */
        free(tl_buf[slot]);
        tl_cap[slot] = 0;
        tl_buf[slot] = aligned_alloc(64, (floats * sizeof(float) + 63) & ~(size_t)63);
        if (!tl_buf[slot]) return NULL;
        tl_cap[slot] = floats;
    }
    return tl_buf[slot];
}

/* Plain loops for C[m0:m1, n0:n1]: only used when a packing buffer cannot be allocated. */
static void ref_block(const sg_args *g, int m0, int m1, int n0, int n1) {
    for (int i = m0; i < m1; i++)
        for (int j = n0; j < n1; j++) {
            float s = 0;
            for (int p = 0; p < g->k; p++) {
                float x = g->ta ? g->a[(size_t)p * g->lda + i] : g->a[(size_t)i * g->lda + p];
                float y = g->tb ? g->b[(size_t)j * g->ldb + p] : g->b[(size_t)p * g->ldb + j];
                s += x * y;
            }
            float *c = &g->c[(size_t)i * g->ldc + j];
            *c = g->beta == 0.0f ? g->alpha * s : g->alpha * s + g->beta * *c;
        }
}

/* ---- block path: packing ------------------------------------------------------------------- */

/* op(A)[i0:i0+mc, p0:p0+kc] into 8-row micro-panels: ap[t*kc*8 + k*8 + r]; rows past mc are 0. */
static SD_AVX512 void pack_a(const sg_args *g, int i0, int mc, int p0, int kc, float *restrict ap) {
    for (int t = 0; t < mc; t += MR) {
        int mr = imin(MR, mc - t);
        float *restrict dst = ap + (size_t)t * kc;
        if (g->ta) { /* op(A)[i][p] = A[p][i]: 8 contiguous floats per k */
            __mmask8 mk = (__mmask8)((1u << mr) - 1);
            const float *src = g->a + (size_t)p0 * g->lda + i0 + t;
            for (int k = 0; k < kc; k++) _mm256_store_ps(dst + 8 * k, _mm256_maskz_loadu_ps(mk, src + k * g->lda));
        } else if (mr == MR) { /* 8 rows x 8 k per step: transpose in registers */
            const float *src = g->a + (size_t)(i0 + t) * g->lda + p0;
            int k = 0;
            for (; k + 8 <= kc; k += 8) {
                __m256 r0 = _mm256_loadu_ps(src + 0 * g->lda + k), r1 = _mm256_loadu_ps(src + 1 * g->lda + k);
                __m256 r2 = _mm256_loadu_ps(src + 2 * g->lda + k), r3 = _mm256_loadu_ps(src + 3 * g->lda + k);
                __m256 r4 = _mm256_loadu_ps(src + 4 * g->lda + k), r5 = _mm256_loadu_ps(src + 5 * g->lda + k);
                __m256 r6 = _mm256_loadu_ps(src + 6 * g->lda + k), r7 = _mm256_loadu_ps(src + 7 * g->lda + k);
                __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
                __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
                __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
                __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
                __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
                __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
                __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
                __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
                float *d = dst + 8 * k;
                _mm256_store_ps(d + 0, _mm256_permute2f128_ps(s0, s4, 0x20));
                _mm256_store_ps(d + 8, _mm256_permute2f128_ps(s1, s5, 0x20));
                _mm256_store_ps(d + 16, _mm256_permute2f128_ps(s2, s6, 0x20));
                _mm256_store_ps(d + 24, _mm256_permute2f128_ps(s3, s7, 0x20));
                _mm256_store_ps(d + 32, _mm256_permute2f128_ps(s0, s4, 0x31));
                _mm256_store_ps(d + 40, _mm256_permute2f128_ps(s1, s5, 0x31));
                _mm256_store_ps(d + 48, _mm256_permute2f128_ps(s2, s6, 0x31));
                _mm256_store_ps(d + 56, _mm256_permute2f128_ps(s3, s7, 0x31));
            }
            for (; k < kc; k++)
                for (int r = 0; r < MR; r++) dst[8 * k + r] = src[(size_t)r * g->lda + k];
        } else {
            const float *src = g->a + (size_t)(i0 + t) * g->lda + p0;
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < MR; r++) dst[8 * k + r] = r < mr ? src[(size_t)r * g->lda + k] : 0.0f;
        }
    }
}

/* op(B)[p0:p0+kc, j0:j0+nr] for a transposed B (op(B)[p][j] = B[j][p]) into bp[k*NR + j]; the
 * columns past nr are left alone (the edge kernel masks them). */
static void pack_bt(const sg_args *g, int p0, int kc, int j0, int nr, float *restrict bp) {
    for (int j = 0; j < nr; j++) {
        const float *src = g->b + (size_t)(j0 + j) * g->ldb + p0;
        for (int k = 0; k < kc; k++) bp[k * NR + j] = src[k];
    }
}

/* ---- block path: the 8x48 micro-kernel ----------------------------------------------------- */

SD_INLINE __mmask16 cols_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* C[0:mr, 0:nr] (= or +=) alpha * Apanel(8 x kc) * B(kc x 48, row stride ldb); beta == 0 never
 * reads C. The prefetch variant also walks `pf` over the rows of the next panel of an in-place B
 * and copies this panel to `bcopy`; `stream` writes full tiles with non-temporal stores. */
SD_INLINE SD_AVX512 void ukr_body(int kc, const float *restrict a, const float *restrict b, size_t ldb,
                                  const float *pf, float *restrict bcopy, float *restrict c, size_t ldc, int mr,
                                  int nr, float alpha, float beta, int stream, const int edge, const int prefetch) {
    __m512 acc[MR][3];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_ps();
    __mmask16 m0 = 0xFFFF, m1 = 0xFFFF, m2 = 0xFFFF;
    if (edge) {
        m0 = cols_mask(nr);
        m1 = cols_mask(nr - 16);
        m2 = cols_mask(nr - 32);
    }
#pragma GCC unroll 2
    for (int k = 0; k < kc; k++) {
        __m512 b0, b1, b2;
        if (edge) {
            b0 = _mm512_maskz_loadu_ps(m0, b);
            b1 = _mm512_maskz_loadu_ps(m1, b + 16);
            b2 = _mm512_maskz_loadu_ps(m2, b + 32);
        } else {
            b0 = _mm512_loadu_ps(b);
            b1 = _mm512_loadu_ps(b + 16);
            b2 = _mm512_loadu_ps(b + 32);
        }
        if (prefetch) { /* the first tile of an in-place panel: prefetch the next, copy this one */
            _mm512_store_ps(bcopy, b0);
            _mm512_store_ps(bcopy + 16, b1);
            _mm512_store_ps(bcopy + 32, b2);
            bcopy += NR;
            _mm_prefetch((const char *)pf, _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + 32), _MM_HINT_T0);
            pf += ldb;
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(ar, b2, acc[r][2]);
        }
        a += MR;
        b += ldb;
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 mk[3] = {m0, m1, m2};
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        float *cr = c + (size_t)r * ldc;
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++) {
            __m512 x = _mm512_mul_ps(acc[r][v], va);
            if (edge) {
                if (beta == 1.0f) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk[v], cr + 16 * v));
                else if (beta != 0.0f) x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk[v], cr + 16 * v), x);
                _mm512_mask_storeu_ps(cr + 16 * v, mk[v], x);
            } else {
                if (beta == 1.0f) x = _mm512_add_ps(x, _mm512_loadu_ps(cr + 16 * v));
                else if (beta != 0.0f) x = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16 * v), x);
                if (stream) _mm512_stream_ps(cr + 16 * v, x);
                else _mm512_storeu_ps(cr + 16 * v, x);
            }
        }
    }
}

static SD_AVX512 void ukr_full(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc,
                               float alpha, float beta, int stream) {
    ukr_body(kc, a, b, ldb, NULL, NULL, c, ldc, MR, NR, alpha, beta, stream, 0, 0);
}
/* Also copies the kc x 48 panel of an in-place B to `bcopy` (row stride 48) for the next tiles:
 * rows of B a power-of-two stride apart share cache sets, so re-reading them in place misses. */
static SD_AVX512 void ukr_full_pf(int kc, const float *a, const float *b, size_t ldb, const float *pf,
                                  float *bcopy, float *c, size_t ldc, float alpha, float beta, int stream) {
    ukr_body(kc, a, b, ldb, pf, bcopy, c, ldc, MR, NR, alpha, beta, stream, 0, 1);
}
static SD_AVX512 void ukr_edge(int kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc, int mr,
                               int nr, float alpha, float beta) {
    ukr_body(kc, a, b, ldb, NULL, NULL, c, ldc, mr, nr, alpha, beta, 0, 1, 0);
}

/* ---- block path: blocking loops ------------------------------------------------------------ */

/* C[m0:m1, n0:n1] on the calling thread. */
static void block_gemm(const sg_args *g, int m0, int m1, int n0, int n1) {
    if (m0 >= m1 || n0 >= n1) return;
    int nkc = (g->k + KC - 1) / KC;
    int kcmax = (g->k + nkc - 1) / nkc; /* equal chunks: K = 288 runs as 2 x 144 */
    int mcmax = (A_BLOCK / kcmax) / MR * MR;
    if (mcmax < MR) mcmax = MR;
    if (mcmax > m1 - m0) mcmax = (m1 - m0 + MR - 1) / MR * MR;
    float *ap = tl_get(BUF_A, (size_t)mcmax * kcmax);
    float *bp = tl_get(BUF_B, (size_t)kcmax * NR);
    if (!ap || !bp) {
        ref_block(g, m0, m1, n0, n1);
        return;
    }
    for (int pc = 0; pc < g->k; pc += kcmax) {
        int kc = imin(kcmax, g->k - pc);
        float beta = pc == 0 ? g->beta : 1.0f;
        for (int ic = m0; ic < m1; ic += mcmax) {
            int mc = imin(mcmax, m1 - ic);
            pack_a(g, ic, mc, pc, kc, ap);
            for (int jr = n0; jr < n1; jr += NR) {
                int nr = imin(NR, n1 - jr);
                const float *bpan;
                size_t bstride;
                const float *pf = NULL;
                if (g->tb) {
                    pack_bt(g, pc, kc, jr, nr, bp);
                    bpan = bp;
                    bstride = NR;
                } else {
                    bpan = g->b + (size_t)pc * g->ldb + jr;
                    bstride = g->ldb;
                    pf = jr + PF_DIST + NR <= n1 ? bpan + PF_DIST : bpan; /* a prefetch of this panel is harmless */
                }
                float *cpan = g->c + (size_t)ic * g->ldc + jr;
                for (int ir = 0; ir < mc; ir += MR) {
                    int mr = imin(MR, mc - ir);
                    const float *apan = ap + (size_t)ir * kc;
                    float *ct = cpan + (size_t)ir * g->ldc;
                    if (mr == MR && nr == NR) {
                        if (pf && ir == 0) {
                            ukr_full_pf(kc, apan, bpan, bstride, pf, bp, ct, g->ldc, g->alpha, beta, g->stream);
                            bpan = bp;
                            bstride = NR;
                        } else {
                            ukr_full(kc, apan, bpan, bstride, ct, g->ldc, g->alpha, beta, g->stream);
                        }
                    } else {
                        ukr_edge(kc, apan, bpan, bstride, ct, g->ldc, mr, nr, g->alpha, beta);
                    }
                }
            }
        }
    }
    if (g->stream) _mm_sfence();
}

static void run_block(const sg_args *g, int threads) {
    if (threads <= 1) {
        block_gemm(g, 0, g->m, 0, g->n);
        return;
    }
    int npan = (g->n + NR - 1) / NR, mt = (g->m + MR - 1) / MR;
    int split_n = npan >= 4 * threads || npan >= mt;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (split_n) {
            int p0 = (int)((long)npan * t / nt), p1 = (int)((long)npan * (t + 1) / nt);
            block_gemm(g, 0, g->m, p0 * NR, imin(g->n, p1 * NR));
        } else {
            int q0 = (int)((long)mt * t / nt), q1 = (int)((long)mt * (t + 1) / nt);
            block_gemm(g, q0 * MR, imin(g->m, q1 * MR), 0, g->n);
        }
    }
}

/* ---- dot path ------------------------------------------------------------------------------ */

/* Sums of 16 vectors: lane 4*(p%4) + p/4 of the result holds the sum of v[p]. */
SD_INLINE SD_AVX512 __m512 reduce16(const __m512 *v) {
    __m512 t[8], u[4], s[2];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++)
        t[q] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * q], v[2 * q + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * q], v[2 * q + 1], 0xEE));
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
        u[q] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * q], t[2 * q + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * q], t[2 * q + 1], 0xDD));
#pragma GCC unroll 2
    for (int q = 0; q < 2; q++)
        s[q] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * q], u[2 * q + 1], 0x88),
                             _mm512_shuffle_ps(u[2 * q], u[2 * q + 1], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], 0x88), _mm512_shuffle_ps(s[0], s[1], 0xDD));
}

/* s[r*nj + j] = sum_k A[r][k] * B[j][k] over kc for r < DR (rows past mi repeat row mi-1), j < nj. */
SD_INLINE SD_AVX512 void dot_body(const float *a, size_t lda, int mi, const float *b, size_t ldb, int kc,
                                  float *restrict s, const int nj) {
    const float *ar[DR], *br[DN];
#pragma GCC unroll 4
    for (int r = 0; r < DR; r++) ar[r] = a + (size_t)(r < mi ? r : mi - 1) * lda;
#pragma GCC unroll 6
    for (int j = 0; j < nj; j++) br[j] = b + (size_t)j * ldb;
    __m512 acc[DR][DN];
#pragma GCC unroll 4
    for (int r = 0; r < DR; r++)
#pragma GCC unroll 6
        for (int j = 0; j < nj; j++) acc[r][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 va[DR];
#pragma GCC unroll 4
        for (int r = 0; r < DR; r++) va[r] = _mm512_loadu_ps(ar[r] + k);
#pragma GCC unroll 6
        for (int j = 0; j < nj; j++) {
            __m512 vb = _mm512_loadu_ps(br[j] + k);
#pragma GCC unroll 4
            for (int r = 0; r < DR; r++) acc[r][j] = _mm512_fmadd_ps(va[r], vb, acc[r][j]);
        }
    }
    if (k < kc) {
        __mmask16 mk = (__mmask16)((1u << (kc - k)) - 1);
        __m512 va[DR];
#pragma GCC unroll 4
        for (int r = 0; r < DR; r++) va[r] = _mm512_maskz_loadu_ps(mk, ar[r] + k);
#pragma GCC unroll 6
        for (int j = 0; j < nj; j++) {
            __m512 vb = _mm512_maskz_loadu_ps(mk, br[j] + k);
#pragma GCC unroll 4
            for (int r = 0; r < DR; r++) acc[r][j] = _mm512_fmadd_ps(va[r], vb, acc[r][j]);
        }
    }
    __m512 v[32];
#pragma GCC unroll 4
    for (int r = 0; r < DR; r++)
#pragma GCC unroll 6
        for (int j = 0; j < nj; j++) v[r * nj + j] = acc[r][j];
#pragma GCC unroll 32
    for (int p = DR * nj; p < 32; p++) v[p] = _mm512_setzero_ps();
    float tmp[32] __attribute__((aligned(64)));
    _mm512_store_ps(tmp, reduce16(v));
    if (DR * nj > 16) _mm512_store_ps(tmp + 16, reduce16(v + 16));
#pragma GCC unroll 24
    for (int p = 0; p < DR * nj; p++) s[p] = tmp[(p & ~15) + 4 * (p & 3) + ((p & 15) >> 2)];
}

static SD_AVX512 void dot_tile(const float *a, size_t lda, int mi, const float *b, size_t ldb, int nj, int kc,
                               float *s) {
    switch (nj) {
    case 6: dot_body(a, lda, mi, b, ldb, kc, s, 6); break;
    case 5: dot_body(a, lda, mi, b, ldb, kc, s, 5); break;
    case 4: dot_body(a, lda, mi, b, ldb, kc, s, 4); break;
    case 3: dot_body(a, lda, mi, b, ldb, kc, s, 3); break;
    case 2: dot_body(a, lda, mi, b, ldb, kc, s, 2); break;
    default: dot_body(a, lda, mi, b, ldb, kc, s, 1); break;
    }
}

/* dst[m0:m1, n0:n1] (row stride ldd) = alpha * A[m0:m1, k0:k1] B[n0:n1, k0:k1]^T + beta * dst. */
static void dot_gemm(const sg_args *g, int m0, int m1, int n0, int n1, int k0, int k1, float *dst, size_t ldd,
                     float beta0) {
    if (m0 >= m1 || n0 >= n1) return;
    if (k0 >= k1) { /* an empty K share still owes beta * dst */
        for (int i = m0; i < m1; i++)
            for (int j = n0; j < n1; j++) {
                float *d = &dst[(size_t)i * ldd + j];
                *d = beta0 == 0.0f ? 0.0f : beta0 * *d;
            }
        return;
    }
    int mcmax = (A_BLOCK / DKC) / DR * DR; /* rows of A per L2 block */
    for (int kk = k0; kk < k1; kk += DKC) {
        int kc = imin(DKC, k1 - kk);
        float beta = kk == k0 ? beta0 : 1.0f;
        for (int ic = m0; ic < m1; ic += mcmax) {
            int ie = imin(m1, ic + mcmax);
            for (int j = n0; j < n1; j += DN) {
                int nj = imin(DN, n1 - j);
                for (int i = ic; i < ie; i += DR) {
                    int mi = imin(DR, ie - i);
                    float s[DR * DN];
                    dot_tile(g->a + (size_t)i * g->lda + kk, g->lda, mi, g->b + (size_t)j * g->ldb + kk, g->ldb, nj,
                             kc, s);
                    for (int r = 0; r < mi; r++) {
                        float *d = dst + (size_t)(i + r) * ldd + j;
                        for (int q = 0; q < nj; q++) {
                            float x = g->alpha * s[r * nj + q];
                            d[q] = beta == 0.0f ? x : beta == 1.0f ? d[q] + x : x + beta * d[q];
                        }
                    }
                }
            }
        }
    }
}

static void run_dot(const sg_args *g, int threads) {
    if (threads <= 1) {
        dot_gemm(g, 0, g->m, 0, g->n, 0, g->k, g->c, g->ldc, g->beta);
        return;
    }
    size_t mn = (size_t)g->m * g->n;
    float *part = NULL;
    if (mn * (size_t)(threads - 1) <= PART_MAX && g->k >= 4 * DKC) part = tl_get(BUF_PART, mn * (size_t)(threads - 1));
    if (part) { /* split K; thread 0 writes C, the others a partial result each, then add */
#pragma omp parallel num_threads(threads)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            int per = ((g->k + nt - 1) / nt + 15) & ~15;
            int k0 = imin(g->k, t * per), k1 = imin(g->k, (t + 1) * per);
            if (t == 0) dot_gemm(g, 0, g->m, 0, g->n, k0, k1, g->c, g->ldc, g->beta);
            else dot_gemm(g, 0, g->m, 0, g->n, k0, k1, part + (size_t)(t - 1) * mn, (size_t)g->n, 0.0f);
#pragma omp barrier
            int r0 = (int)((long)g->m * t / nt), r1 = (int)((long)g->m * (t + 1) / nt);
            for (int i = r0; i < r1; i++) {
                float *c = g->c + (size_t)i * g->ldc;
                for (int q = 1; q < nt; q++) {
                    const float *p = part + (size_t)(q - 1) * mn + (size_t)i * g->n;
                    for (int j = 0; j < g->n; j++) c[j] += p[j];
                }
            }
        }
        return;
    }
    int nt6 = (g->n + DN - 1) / DN, mt4 = (g->m + DR - 1) / DR;
    int split_n = nt6 >= 4 * threads || nt6 >= mt4;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (split_n) {
            int q0 = (int)((long)nt6 * t / nt), q1 = (int)((long)nt6 * (t + 1) / nt);
            dot_gemm(g, 0, g->m, q0 * DN, imin(g->n, q1 * DN), 0, g->k, g->c, g->ldc, g->beta);
        } else {
            int q0 = (int)((long)mt4 * t / nt), q1 = (int)((long)mt4 * (t + 1) / nt);
            dot_gemm(g, q0 * DR, imin(g->m, q1 * DR), 0, g->n, 0, g->k, g->c, g->ldc, g->beta);
        }
    }
}

/* ---- entry point --------------------------------------------------------------------------- */

static int have_avx512(void) {
    static int cached = -1; /* every thread computes the same value */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

void sd_cpu_sgemm(sd_kctx *k, int trans_a, int trans_b, int m, int n, int kdim, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (kdim <= 0 || alpha == 0.0f) { /* C = beta * C; beta == 0 does not read C */
        for (int i = 0; i < m; i++) {
            float *cr = c + (size_t)i * ldc;
            for (int j = 0; j < n; j++) cr[j] = beta == 0.0f ? 0.0f : beta * cr[j];
        }
        return;
    }
    if (!have_avx512()) {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n,
                    kdim, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    sg_args g = {.ta = trans_a != 0, .tb = trans_b != 0, .m = m, .n = n, .k = kdim, .alpha = alpha, .beta = beta,
                 .a = a, .b = b, .c = c, .lda = (size_t)lda, .ldb = (size_t)ldb, .ldc = (size_t)ldc};
    g.stream = beta == 0.0f && kdim <= KC && (size_t)m * n * sizeof(float) >= STREAM_BYTES && ldc % 16 == 0 &&
               ((uintptr_t)c & 63) == 0;
    double macs = (double)m * n * kdim;
    int threads = k && k->threads > 0 ? k->threads : 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (macs < (double)threads * MIN_MACS_PER_THREAD) threads = (int)(macs / MIN_MACS_PER_THREAD);
    if (threads < 1) threads = 1;
    /* NT: the dot path needs no packing, which pays when M is small against a long K, and when N
     * is too narrow for 48-column tiles; the block path wins on big, squarer shapes. */
    if (!g.ta && g.tb && ((kdim >= DOT_MIN_K && m <= DOT_MAX_M) || (n < NR && kdim >= 16))) run_dot(&g, threads);
    else run_block(&g, threads);
}
