/* conv.c: CPU 2-D convolution (NCHW activations, OIHW weights, PyTorch cross-correlation) as
 * GEMMs on register-blocked micro-kernels written with GCC vector extensions (AVX-512 zmm with
 * -march=native on this project's machines, AVX/SSE/NEON otherwise). Each call is one OpenMP
 * region; a task is one sample (or a band of output rows of one sample), so a sample's data stays
 * in its core's L2 from the copy-in to the GEMM.
 *
 * Why not OpenBLAS here: the per-sample GEMMs are small (16..64 output channels), OpenBLAS's own
 * threads cannot be used inside an OpenMP region, and alternating OpenMP im2col with multithreaded
 * sgemm made the two runtimes' spinning threads fight for the cores (5-10x slower on 2 cores).
 *
 * No im2col. The GEMM's B operand (rows t = (c, ki, kj), columns = output pixels) is read in place
 * from a copy of the input band laid out so that every row t is one contiguous run: per channel,
 * one zero-padded plane per stride phase (stride 1: a single plane whose rows are W + pw apart,
 * the left padding of one row doubling as the right padding of the row before). Output (oh, ow)
 * is column q = oh * wq + ow of that grid; the few columns with ow >= OW are computed and dropped.
 * See igeom below.
 *
 * Forward: y = W * B. Weight gradient: dW^T[Kd][K] += B * dy^T (dy transposed per band, zero on
 * the dropped columns; per-thread partial sums reduced at the end); db = sums of dy. Input
 * gradient, stride 1: the transposed convolution (dy correlated with the flipped kernel, padding
 * K-1-p) through the same forward GEMM, so nothing is scattered; strided: dcol = W^T dy, then
 * col2im.
 *
 * Where the context says so (SCADLES_CONV, context.c), both entry points hand the call to oneDNN
 * (conv_dnnl.c) after checking their arguments, and compute here only the shapes it declines;
 * these kernels are the fallback without oneDNN and the reference the tests hold it to. */
#include <omp.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_kernels.h"

/* ---- vector shape ------------------------------------------------------------------------ */

#if defined(__AVX512F__)
#define SD_VL 16 /* floats per vector */
#define SD_MR 8  /* rows of a micro-tile */
#define SD_NV 3  /* vectors across a micro-tile: an 8 x 48 tile is 24 of the 32 zmm registers */
#elif defined(__AVX__)
#define SD_VL 8
#define SD_MR 4
#define SD_NV 3
#else
#define SD_VL 4 /* SSE2, NEON or whatever 16-byte vectors the target has */
#define SD_MR 4
#define SD_NV 3
#endif

typedef float sd_vf __attribute__((vector_size(SD_VL * sizeof(float))));
typedef float sd_vfu __attribute__((vector_size(SD_VL * sizeof(float)), aligned(sizeof(float)), may_alias));

static inline sd_vf vload(const float *p) { return *(const sd_vfu *)p; }
static inline void vstore(float *p, sd_vf v) { *(sd_vfu *)p = v; }
static inline sd_vf vbcast(float a) {
#if defined(__AVX512F__)
    return (sd_vf)_mm512_set1_ps(a);
#elif defined(__AVX__)
    return (sd_vf)_mm256_set1_ps(a);
#else
    return (sd_vf){a, a, a, a};
#endif
}

/* Bytes of B operand (plus output tile) one band aims for: it is re-read once per block of output
 * channels, so it should stay in L2. Larger samples are split into bands of output rows. */
#define SD_CONV_BAND_BYTES ((size_t)512 << 10)
/* SD_CONV_PAR_MIN_MACS (cpu_kernels.h): below it a call runs on the calling thread. */
/* Pixels per dW block: the block of transposed dy ([pixels][Kp]) should stay in L1. */
#define SD_CONV_DW_L1_FLOATS 6144

static inline size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }
static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
/* Row stride for a buffer of n columns: whole vectors, and never a multiple of 512 bytes, so a
 * walk down a column does not map every row to one L1 set. */
static inline size_t row_ld(size_t n) {
    size_t ld = round_up(n, SD_VL);
    return ld % 128 == 0 ? ld + SD_VL : ld;
}

/* Short copies and fills as inline vector loops. The empty asm hides the loop counter from the
 * compiler, which would otherwise turn the loops into memcpy/memset calls that cost more than the
 * 1..64 floats a row moves here. */
#define SD_OPAQUE(i) __asm__("" : "+r"(i))
static inline void copy_f(float *restrict d, const float *restrict s, int n) {
    int i = 0;
    for (; i + SD_VL <= n; i += SD_VL) {
        SD_OPAQUE(i);
        vstore(d + i, vload(s + i));
    }
    for (; i < n; i++) {
        SD_OPAQUE(i);
        d[i] = s[i];
    }
}
static inline void zero_f(float *d, int n) {
    int i = 0;
    for (; i + SD_VL <= n; i += SD_VL) {
        SD_OPAQUE(i);
        vstore(d + i, (sd_vf){0});
    }
    for (; i < n; i++) {
        SD_OPAQUE(i);
        d[i] = 0.0f;
    }
}

/* ---- micro-kernels ----------------------------------------------------------------------- */

/* C[MR][NV*VL] = init + sum_t a[t][0..MR) (x) B_t[0..NV*VL), with a packed [T][MR] and row t of B at
 * b + off[t]; init is bias[0..MR) or 0. The whole tile is stored, rows ldc apart. */
#define SD_DEF_TILE_FWD(NV)                                                                                \
    static void tile_fwd_##NV(int T, const float *restrict a, const float *restrict b,                      \
                              const size_t *restrict off, const float *restrict bias, float *restrict c,   \
                              size_t ldc) {                                                                 \
        sd_vf acc[SD_MR][NV];                                                                               \
        _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) {                                         \
            const sd_vf init = bias ? vbcast(bias[m]) : (sd_vf){0};                                         \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[m][v] = init;                         \
        }                                                                                                   \
        for (int t = 0; t < T; t++) {                                                                       \
            const float *bt = b + off[t];                                                                   \
            sd_vf bv[NV];                                                                                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bv[v] = vload(bt + v * SD_VL);            \
            const float *at = a + (size_t)t * SD_MR;                                                        \
            _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) {                                     \
                const sd_vf av = vbcast(at[m]);                                                             \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[m][v] += av * bv[v];              \
            }                                                                                               \
        }                                                                                                   \
        _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++)                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) vstore(c + (size_t)m * ldc + v * SD_VL, acc[m][v]); \
    }
SD_DEF_TILE_FWD(1)
SD_DEF_TILE_FWD(2)
SD_DEF_TILE_FWD(3)

static void tile_fwd(int nv, int T, const float *a, const float *b, const size_t *off, const float *bias, float *c,
                     size_t ldc) {
    if (nv == 3) tile_fwd_3(T, a, b, off, bias, c, ldc);
    else if (nv == 2) tile_fwd_2(T, a, b, off, bias, c, ldc);
    else tile_fwd_1(T, a, b, off, bias, c, ldc);
}

/* C[MR][NV*VL] += sum_p ar[m][p] (x) b[p][0..NV*VL): MR row pointers read as scalars, b rows ldb
 * apart, c rows ldc apart. */
#define SD_DEF_TILE_DW(NV)                                                                                 \
    static void tile_dw_##NV(int P, const float *const *ar, const float *restrict b, size_t ldb,           \
                             float *restrict c, size_t ldc) {                                               \
        const float *ap[SD_MR];                                                                             \
        sd_vf acc[SD_MR][NV];                                                                               \
        _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) {                                         \
            ap[m] = ar[m];                                                                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[m][v] = vload(c + (size_t)m * ldc + v * SD_VL); \
        }                                                                                                   \
        for (int p = 0; p < P; p++) {                                                                       \
            sd_vf bv[NV];                                                                                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bv[v] = vload(b + (size_t)p * ldb + v * SD_VL); \
            _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) {                                     \
                const sd_vf av = vbcast(ap[m][p]);                                                          \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[m][v] += av * bv[v];              \
            }                                                                                               \
        }                                                                                                   \
        _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++)                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) vstore(c + (size_t)m * ldc + v * SD_VL, acc[m][v]); \
    }
SD_DEF_TILE_DW(2)
SD_DEF_TILE_DW(3)

/* One vector across: two interleaved accumulator sets so the FMA chains hide their latency. */
static void tile_dw_1(int P, const float *const *ar, const float *restrict b, size_t ldb, float *restrict c,
                      size_t ldc) {
    const float *ap[SD_MR];
    sd_vf acc[SD_MR], acc2[SD_MR];
    _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) {
        ap[m] = ar[m];
        acc[m] = vload(c + (size_t)m * ldc);
        acc2[m] = (sd_vf){0};
    }
    int p = 0;
    for (; p + 2 <= P; p += 2) {
        const sd_vf b0 = vload(b + (size_t)p * ldb), b1 = vload(b + (size_t)(p + 1) * ldb);
        _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) {
            acc[m] += vbcast(ap[m][p]) * b0;
            acc2[m] += vbcast(ap[m][p + 1]) * b1;
        }
    }
    if (p < P) {
        const sd_vf b0 = vload(b + (size_t)p * ldb);
        _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) acc[m] += vbcast(ap[m][p]) * b0;
    }
    _Pragma("GCC unroll 16") for (int m = 0; m < SD_MR; m++) vstore(c + (size_t)m * ldc, acc[m] + acc2[m]);
}

static void tile_dw(int nv, int P, const float *const *ar, const float *b, size_t ldb, float *c, size_t ldc) {
    if (nv == 3) tile_dw_3(P, ar, b, ldb, c, ldc);
    else if (nv == 2) tile_dw_2(P, ar, b, ldb, c, ldc);
    else tile_dw_1(P, ar, b, ldb, c, ldc);
}

/* ---- GEMM drivers ------------------------------------------------------------------------- */

/* Splits nvec vectors into the fewest tiles of at most SD_NV vectors, as even as possible: tile i
 * of n has base + (i < extra) vectors. */
static inline void even_tiles(size_t nvec, size_t *n, size_t *base, size_t *extra) {
    *n = (nvec + SD_NV - 1) / SD_NV;
    *base = *n ? nvec / *n : 0;
    *extra = *n ? nvec % *n : 0;
}

/* C[mblocks*MR][nvec*VL] = bias + A B: A packed [mblocks][T][MR], B row t at b + off[t] (whole
 * vectors read up to column nvec*VL), C rows ldc apart (whole tiles stored). */
static void gemm_packed(int mblocks, int T, const float *apack, const float *b, const size_t *off, size_t nvec,
                        const float *bias, float *c, size_t ldc) {
    size_t ntiles, base, extra, q0 = 0;
    even_tiles(nvec, &ntiles, &base, &extra);
    for (size_t i = 0; i < ntiles; i++) {
        const int nv = (int)(base + (i < extra));
        for (int mb = 0; mb < mblocks; mb++)
            tile_fwd(nv, T, apack + (size_t)mb * SD_MR * T, b + q0, off, bias ? bias + mb * SD_MR : NULL,
                     c + (size_t)mb * SD_MR * ldc + q0, ldc);
        q0 += (size_t)nv * SD_VL;
    }
}

/* part[r][0..kp) += sum_{q<P} A_r[q] dyt[q][0..kp) for r < kd, with A_r = a + off[r]. part has
 * roundup(kd, MR) rows; the rows past kd repeat row kd-1's data and are never read back. */
static void dw_accumulate(int kd, int kp, const float *a, const size_t *off, int P, const float *dyt, float *part) {
    const int pblk = imax(16, SD_CONV_DW_L1_FLOATS / kp);
    size_t ntiles, base, extra;
    even_tiles((size_t)kp / SD_VL, &ntiles, &base, &extra);
    for (int q0 = 0; q0 < P; q0 += pblk) {
        const int q = imin(pblk, P - q0);
        for (int rb = 0; rb < kd; rb += SD_MR) {
            const float *ar[SD_MR];
            for (int m = 0; m < SD_MR; m++) ar[m] = a + off[imin(rb + m, kd - 1)] + q0;
            size_t v0 = 0;
            for (size_t i = 0; i < ntiles; i++) {
                const int nv = (int)(base + (i < extra));
                tile_dw(nv, q, ar, dyt + (size_t)q0 * kp + v0 * SD_VL, (size_t)kp, part + (size_t)rb * kp + v0 * SD_VL,
                        (size_t)kp);
                v0 += (size_t)nv;
            }
        }
    }
}

/* dyt[q][kk] for q = oh * wq + ow on a band of nb output rows from oh0: dy[kk][oh0 + oh][ow] where
 * ow < OW, else 0; lanes [K, KP) are 0. */
static void transpose_dy(const float *restrict dyn, int K, int KP, size_t ohw, int OW, int oh0, int nb, int wq,
                         float *restrict dyt) {
    for (int oh = 0; oh < nb; oh++) {
        float *restrict rowbase = dyt + (size_t)oh * wq * KP;
        for (int kk = 0; kk < K; kk++) {
            const float *restrict s = dyn + (size_t)kk * ohw + (size_t)(oh0 + oh) * OW;
            for (int ow = 0; ow < OW; ow++) rowbase[(size_t)ow * KP + kk] = s[ow];
        }
        if (KP > K)
            for (int ow = 0; ow < OW; ow++) zero_f(rowbase + (size_t)ow * KP + K, KP - K);
        if (wq > OW) zero_f(rowbase + (size_t)OW * KP, (wq - OW) * KP);
    }
}

/* out[m][(o0 + oh) * wout + ow] = Yq[m][oh * wq + ow] for m < mrows, oh < nb, ow < wout. */
static void store_band(const float *Yq, size_t ldq, int mrows, int nb, int wq, int wout, size_t out_plane, int o0,
                       float *out) {
    for (int m = 0; m < mrows; m++) {
        float *d = out + (size_t)m * out_plane + (size_t)o0 * wout;
        const float *s = Yq + (size_t)m * ldq;
        if (wq == wout) {
            copy_f(d, s, nb * wout);
        } else {
            for (int oh = 0; oh < nb; oh++) copy_f(d + (size_t)oh * wout, s + (size_t)oh * wq, wout);
        }
    }
}

/* ---- the implicit layout ------------------------------------------------------------------ */

/* A correlation of cin planes hin x win, stride sh/sw, padding ph/pw, kernel kh x kw, into
 * hout x wout, computed in bands of `band` output rows. The input is stored as pa x pb phase
 * planes per channel (pa = min(sh, kh)): plane (a, b) row i, column j holds padded-input element
 * (sh*i + a, sw*j + b), so tap (ki, kj) of output (oh, ow) is plane (ki % sh, kj % sw) at row
 * oh + ki / sh, column ow + kj / sw, and output q = oh * wq + ow reads every B row t as one
 * contiguous run. With stride 1 and pw < kw the rows are only win + pw long: a read past a row's
 * end lands in the next row's left padding, which is the zero the right padding needs. */
typedef struct igeom {
    int cin, hin, win, kh, kw, sh, sw, ph, pw, hout, wout;
    int pa, pb;   /* phases per channel */
    int extra;    /* plane rows past the band: (kh - 1) / sh */
    int wq;       /* plane row stride = output grid row stride */
    int band;     /* output rows per band */
    int bands;
    size_t plane; /* floats per plane (band + extra rows, then zeros for whole-vector overrun) */
    size_t ldq;   /* row stride of the output tile buffer */
} igeom;

/* mout: output channels (sizes the band together with the planes); min_bands: per sample. */
static void igeom_make(igeom *g, int cin, int hin, int win, int kh, int kw, int sh, int sw, int ph, int pw, int mout,
                       int min_bands) {
    g->cin = cin, g->hin = hin, g->win = win, g->kh = kh, g->kw = kw, g->sh = sh, g->sw = sw, g->ph = ph, g->pw = pw;
    g->hout = (hin + 2 * ph - kh) / sh + 1;
    g->wout = (win + 2 * pw - kw) / sw + 1;
    g->pa = imin(sh, kh);
    g->pb = imin(sw, kw);
    g->extra = (kh - 1) / sh;
    g->wq = sw == 1 && pw < kw ? win + pw : g->wout + (kw - 1) / sw;
    const size_t planes = (size_t)cin * g->pa * g->pb;
    const size_t row_bytes = (planes + round_up((size_t)mout, SD_MR)) * g->wq * sizeof(float);
    int band = (int)(SD_CONV_BAND_BYTES / row_bytes);
    band = imin(imax(band, 1), g->hout);
    int bands = (g->hout + band - 1) / band;
    if (bands < min_bands) bands = imin(g->hout, min_bands);
    g->band = (g->hout + bands - 1) / bands;
    g->bands = (g->hout + g->band - 1) / g->band;
    g->plane = round_up((size_t)(g->band + g->extra) * g->wq + (kw - 1) / sw + SD_VL + 1, 16);
    g->ldq = row_ld((size_t)g->band * g->wq);
}

static inline size_t igeom_buf(const igeom *g) { return (size_t)g->cin * g->pa * g->pb * g->plane; }

/* Offsets of B's rows t = (c, ki, kj) within the planes. */
static void igeom_offsets(const igeom *g, size_t *off) {
    for (int c = 0; c < g->cin; c++)
        for (int ki = 0; ki < g->kh; ki++)
            for (int kj = 0; kj < g->kw; kj++)
                off[(c * g->kh + ki) * g->kw + kj] =
                    ((size_t)(c * g->pa + ki % g->sh) * g->pb + kj % g->sw) * g->plane + (size_t)(ki / g->sh) * g->wq +
                    kj / g->sw;
}

/* The planes of the band of nb output rows from o0 (zero outside the input, zeros to the end of
 * each plane). */
static void igeom_build(const igeom *g, const float *in, int o0, int nb, float *buf) {
    const int nrows = nb + g->extra, wq = g->wq, sw = g->sw;
    for (int c = 0; c < g->cin; c++)
        for (int a = 0; a < g->pa; a++)
            for (int b = 0; b < g->pb; b++) {
                float *pl = buf + ((size_t)(c * g->pa + a) * g->pb + b) * g->plane;
                /* Columns j in [jlo, jhi) read input column sw*j + b - pw inside [0, win). */
                const int jlo = imin(wq, imax(0, (g->pw - b + sw - 1) / sw));
                const int jhi = imax(jlo, imin(wq, (g->win + g->pw - b + sw - 1) / sw));
                for (int i = 0; i < nrows; i++) {
                    float *d = pl + (size_t)i * wq;
                    const int ih = g->sh * (o0 + i) + a - g->ph;
                    if (ih < 0 || ih >= g->hin) {
                        zero_f(d, wq);
                        continue;
                    }
                    const float *s = in + ((size_t)c * g->hin + ih) * g->win + (jlo * sw + b - g->pw);
                    zero_f(d, jlo);
                    if (sw == 1) copy_f(d + jlo, s, jhi - jlo);
                    else
                        for (int j = 0; j < jhi - jlo; j++) d[jlo + j] = s[(size_t)j * sw];
                    zero_f(d + jhi, wq - jhi);
                }
                zero_f(pl + (size_t)nrows * wq, (int)(g->plane - (size_t)nrows * wq));
            }
}

/* ---- explicit input gradient (strided convolutions): dcol = W^T dy, then col2im ------------- */

typedef struct ex_plan {
    int band, bands; /* output rows per band */
    size_t ld;       /* dcol row stride */
    int wp;          /* padded input width */
    size_t pad_n;    /* floats of one channel's padded dx band */
} ex_plan;

static void ex_plan_make(const sd_conv2d_params *p, int kdp, ex_plan *e) {
    const size_t row_bytes = (size_t)kdp * p->ow * sizeof(float);
    int band = (int)(SD_CONV_BAND_BYTES / row_bytes);
    band = imin(imax(band, 1), p->oh);
    e->bands = (p->oh + band - 1) / band;
    e->band = (p->oh + e->bands - 1) / e->bands;
    e->bands = (p->oh + e->band - 1) / e->band;
    e->ld = row_ld((size_t)e->band * p->ow);
    e->wp = p->w + 2 * p->pw;
    e->pad_n = round_up((size_t)((e->band - 1) * p->sh + p->kh) * e->wp, 16);
}

/* Scatters the band's dcol (rows (c, ki, kj), columns oh * OW + ow) into a zero-padded dx band
 * per channel and adds its interior to dxn (which starts at zero). */
static void col2im_band(const sd_conv2d_params *p, const ex_plan *e, const float *restrict dcol, int oh0, int oh1,
                        float *restrict dxn, float *restrict xp) {
    const int H = p->h, W = p->w, OW = p->ow, sh = p->sh, sw = p->sw, Wp = e->wp;
    const int nrows = (oh1 - 1 - oh0) * sh + p->kh, ih0 = oh0 * sh - p->ph, nb = oh1 - oh0;
    for (int c = 0; c < p->c; c++) {
        zero_f(xp, nrows * Wp);
        for (int ki = 0; ki < p->kh; ki++)
            for (int kj = 0; kj < p->kw; kj++) {
                const float *restrict row = dcol + (size_t)((c * p->kh + ki) * p->kw + kj) * e->ld;
                for (int o = 0; o < nb; o++) {
                    float *restrict d = xp + (size_t)(o * sh + ki) * Wp + kj;
                    const float *restrict s = row + (size_t)o * OW;
                    if (sw == 1)
                        for (int ow = 0; ow < OW; ow++) d[ow] += s[ow];
                    else
                        for (int ow = 0; ow < OW; ow++) d[ow * sw] += s[ow];
                }
            }
        float *restrict dxc = dxn + (size_t)c * H * W;
        for (int rr = 0; rr < nrows; rr++) {
            const int ih = ih0 + rr;
            if (ih < 0 || ih >= H) continue;
            float *restrict d = dxc + (size_t)ih * W;
            const float *restrict s = xp + (size_t)rr * Wp + p->pw;
            for (int j = 0; j < W; j++) d[j] += s[j];
        }
    }
}

/* ---- shared setup ------------------------------------------------------------------------- */

static inline int conv_threads(const sd_kctx *k, int64_t macs) {
    return k->threads > 1 && macs >= SD_CONV_PAR_MIN_MACS ? k->threads : 1;
}

/* Scratch carving: consecutive pieces, each rounded to 16 floats (64 bytes). */
static inline float *carve(float **cursor, size_t n) {
    float *p = *cursor;
    *cursor += round_up(n, 16);
    return p;
}

/* ---- which implementation ------------------------------------------------------------------ */

/* Whether a context set to oneDNN still computes the forward of shape p with the kernels of this
 * file: narrow 3x3 stride-1 shapes (<= SD_CONV_NARROW_CH channels in and out: ResNet-20's stem and
 * first stage), where oneDNN's direct forward reached 50-65% of the sgemm bound and ours 80-90%
 * (scadles-bench per-op with SCADLES_CONV=ours and dnnl, docs/performance.md). Their backward
 * stays oneDNN's: ours was no faster inside the model. Fixed per shape: runs stay reproducible. */
#define SD_CONV_NARROW_CH 16
static bool ours_for_narrow_fwd(const sd_conv2d_params *p) {
    return p->kh == 3 && p->kw == 3 && p->sh == 1 && p->sw == 1 && p->c <= SD_CONV_NARROW_CH &&
           p->k <= SD_CONV_NARROW_CH;
}

/* ---- forward ------------------------------------------------------------------------------ */

sd_status sd_cpu_conv2d_fwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                            const float *b, float *y) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "conv2d fwd: NULL context or params");
    if (!x || !w || !y)
        return SD_FAIL(SD_ERR_INVALID, "conv2d fwd: NULL tensor (x %p, w %p, y %p are required)", (const void *)x,
                       (const void *)w, (const void *)y);
    if (p->has_bias && !b) return SD_FAIL(SD_ERR_INVALID, "conv2d fwd: has_bias is set but the bias b is NULL");
    if (k->conv == SD_CPU_CONV_DNNL && !ours_for_narrow_fwd(p)) {
        bool done = false;
        TRY(sd_cpu_dnnl_conv2d_fwd(k, p, x, w, b, y, &done));
        if (done) return SD_OK;
    }

    const int K = p->k, KD = p->c * p->kh * p->kw, KMR = (int)round_up((size_t)K, SD_MR);
    const size_t OHW = (size_t)p->oh * p->ow, xs = (size_t)p->c * p->h * p->w, ys = (size_t)K * OHW;
    const int T = conv_threads(k, (int64_t)p->n * K * (int64_t)OHW * KD);
    igeom g;
    igeom_make(&g, p->c, p->h, p->w, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw, K, (T + p->n - 1) / p->n);
    const size_t bbuf_n = igeom_buf(&g);
    const size_t per_thread = round_up(bbuf_n, 16) + round_up((size_t)KMR * g.ldq, 16);
    const size_t shared = round_up((size_t)KMR * KD, 16) + round_up((size_t)KD * 2, 16) + round_up((size_t)KMR, 16);
    void *s;
    TRY(sd_cpu_scratch(k, (shared + (size_t)T * per_thread) * sizeof(float), &s));
    float *cur = s;
    float *wpack = carve(&cur, (size_t)KMR * KD);
    size_t *off = (size_t *)(void *)carve(&cur, (size_t)KD * 2);
    float *bias = carve(&cur, (size_t)KMR);
    float *thread_base = cur;

    /* wpack[mb][t][m] = W[mb*MR + m][t] (zero rows past K): the A panels of y = W B. */
    for (int mb = 0; mb < KMR / SD_MR; mb++)
        for (int t = 0; t < KD; t++)
            for (int m = 0; m < SD_MR; m++) {
                const int kk = mb * SD_MR + m;
                wpack[((size_t)mb * KD + t) * SD_MR + m] = kk < K ? w[(size_t)kk * KD + t] : 0.0f;
            }
    for (int kk = 0; kk < KMR; kk++) bias[kk] = p->has_bias && kk < K ? b[kk] : 0.0f;
    igeom_offsets(&g, off);

    const int tasks = p->n * g.bands;
#pragma omp parallel num_threads(T)
    {
        float *tcur = thread_base + (size_t)omp_get_thread_num() * per_thread;
        float *bbuf = carve(&tcur, bbuf_n), *yq = carve(&tcur, (size_t)KMR * g.ldq);
#pragma omp for schedule(static)
        for (int task = 0; task < tasks; task++) {
            const int n = task / g.bands, o0 = (task % g.bands) * g.band, nb = imin(g.band, p->oh - o0);
            igeom_build(&g, x + (size_t)n * xs, o0, nb, bbuf);
            const size_t nvec = ((size_t)nb * g.wq + SD_VL - 1) / SD_VL;
            gemm_packed(KMR / SD_MR, KD, wpack, bbuf, off, nvec, p->has_bias ? bias : NULL, yq, g.ldq);
            store_band(yq, g.ldq, K, nb, g.wq, p->ow, OHW, o0, y + (size_t)n * ys);
        }
    }
    return SD_OK;
}

/* ---- backward ----------------------------------------------------------------------------- */

/* db[k] = sum over n, oh, ow of dy: float partial sums per plane in 16 lanes, double across
 * planes. Called inside the parallel region (an orphaned worksharing loop). */
static void bias_grad(const sd_conv2d_params *p, size_t ohw, const float *dy, float *db) {
#pragma omp for schedule(static)
    for (int kk = 0; kk < p->k; kk++) {
        double total = 0.0;
        for (int n = 0; n < p->n; n++) {
            const float *s = dy + ((size_t)n * p->k + kk) * ohw;
            float lane[16] = {0};
            size_t q = 0;
            for (; q + 16 <= ohw; q += 16)
                for (int j = 0; j < 16; j++) lane[j] += s[q + j];
            float part = 0.0f;
            for (; q < ohw; q++) part += s[q];
            for (int j = 0; j < 16; j++) part += lane[j];
            total += part;
        }
        db[kk] = (float)total;
    }
}

sd_status sd_cpu_conv2d_bwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "conv2d bwd: NULL context or params");
    if (!x || !w || !dy || !dw)
        return SD_FAIL(SD_ERR_INVALID, "conv2d bwd: NULL tensor (x %p, w %p, dy %p, dw %p are required)",
                       (const void *)x, (const void *)w, (const void *)dy, (const void *)dw);
    if (p->has_bias && !db)
        return SD_FAIL(SD_ERR_INVALID, "conv2d bwd: has_bias is set but the bias gradient db is NULL");
    if (k->conv == SD_CPU_CONV_DNNL) {
        bool done = false;
        TRY(sd_cpu_dnnl_conv2d_bwd(k, p, x, w, dy, dx, dw, db, &done));
        if (done) return SD_OK;
    }

    const int K = p->k, C = p->c, KH = p->kh, KW = p->kw, KD = C * KH * KW;
    const int KDP = (int)round_up((size_t)KD, SD_MR), KP = (int)round_up((size_t)K, SD_VL);
    const int KDX = K * KH * KW, CMR = (int)round_up((size_t)C, SD_MR); /* the transposed convolution */
    const size_t OHW = (size_t)p->oh * p->ow, HW = (size_t)p->h * p->w, xs = (size_t)C * HW, ys = (size_t)K * OHW;
    const int T = conv_threads(k, (int64_t)p->n * K * (int64_t)OHW * KD * (dx ? 2 : 1));
    /* dX as a stride-1 correlation of dy with the flipped kernel needs stride 1 and padding below
     * the kernel size; other convolutions take dcol = W^T dy and col2im. */
    const int dx_implicit = p->sh == 1 && p->sw == 1 && p->ph < KH && p->pw < KW;

    /* gx: x planes in bands of y rows (dW). gd: dy planes in bands of dx rows (implicit dX).
     * e: dcol in bands of y rows (explicit dX). */
    igeom gx, gd;
    ex_plan e;
    igeom_make(&gx, C, p->h, p->w, KH, KW, p->sh, p->sw, p->ph, p->pw, K, 1);
    const size_t bbuf_n = igeom_buf(&gx), dyt_n = (size_t)gx.band * gx.wq * KP;
    size_t dbuf_n = 0, yq_n = 0, dcol_n = 0, xp_n = 0, dyp_n = 0;
    if (dx && dx_implicit) {
        igeom_make(&gd, K, p->oh, p->ow, KH, KW, 1, 1, KH - 1 - p->ph, KW - 1 - p->pw, C, 1);
        dbuf_n = igeom_buf(&gd);
        yq_n = (size_t)CMR * gd.ldq;
    } else if (dx) {
        ex_plan_make(p, KDP, &e);
        dcol_n = (size_t)KDP * e.ld;
        xp_n = e.pad_n;
        dyp_n = (size_t)K * round_up((size_t)e.band * p->ow, SD_VL);
    }
    const size_t part_n = (size_t)KDP * KP;
    const size_t per_thread = round_up(part_n, 16) + round_up(bbuf_n, 16) + round_up(dyt_n, 16) + round_up(dbuf_n, 16) +
                              round_up(yq_n, 16) + round_up(dcol_n, 16) + round_up(xp_n, 16) + round_up(dyp_n, 16) +
                              round_up((size_t)K * 2, 16);
    const size_t wt_n = !dx ? 0 : dx_implicit ? (size_t)CMR * KDX : (size_t)KDP * K;
    const size_t shared = round_up(wt_n, 16) + round_up((size_t)KD * 2, 16) + round_up((size_t)KDX * 2, 16);
    void *s;
    TRY(sd_cpu_scratch(k, (shared + (size_t)T * per_thread) * sizeof(float), &s));
    float *cur = s;
    float *wt = carve(&cur, wt_n);
    size_t *offx = (size_t *)(void *)carve(&cur, (size_t)KD * 2);
    size_t *offd = (size_t *)(void *)carve(&cur, (size_t)KDX * 2);
    float *thread_base = cur;

    igeom_offsets(&gx, offx);
    if (dx && dx_implicit) {
        igeom_offsets(&gd, offd);
        /* wt[mb][(kk,ki,kj)][m] = W[kk][mb*MR + m][KH-1-ki][KW-1-kj]: the flipped kernel with input
         * and output channels swapped (zero rows past C). */
        for (int mb = 0; mb < CMR / SD_MR; mb++)
            for (int t = 0; t < KDX; t++) {
                const int kk = t / (KH * KW), ki = (t / KW) % KH, kj = t % KW;
                for (int m = 0; m < SD_MR; m++) {
                    const int c = mb * SD_MR + m;
                    wt[((size_t)mb * KDX + t) * SD_MR + m] =
                        c < C ? w[(((size_t)kk * C + c) * KH + (KH - 1 - ki)) * KW + (KW - 1 - kj)] : 0.0f;
                }
            }
    } else if (dx) {
        /* wt[mb][kk][m] = W[kk][mb*MR + m] (zero past Kd): the A panels of dcol = W^T dy. */
        for (int mb = 0; mb < KDP / SD_MR; mb++)
            for (int kk = 0; kk < K; kk++)
                for (int m = 0; m < SD_MR; m++) {
                    const int r = mb * SD_MR + m;
                    wt[((size_t)mb * K + kk) * SD_MR + m] = r < KD ? w[(size_t)kk * KD + r] : 0.0f;
                }
    }

#pragma omp parallel num_threads(T)
    {
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        float *tcur = thread_base + (size_t)tid * per_thread;
        float *part = carve(&tcur, part_n), *bbuf = carve(&tcur, bbuf_n), *dyt = carve(&tcur, dyt_n);
        float *dbuf = carve(&tcur, dbuf_n), *yq = carve(&tcur, yq_n), *dcol = carve(&tcur, dcol_n);
        float *xp = carve(&tcur, xp_n), *dyp = carve(&tcur, dyp_n);
        size_t *offk = (size_t *)(void *)carve(&tcur, (size_t)K * 2);
        zero_f(part, (int)part_n);
        if (p->has_bias) bias_grad(p, OHW, dy, db);

#pragma omp for schedule(static)
        for (int n = 0; n < p->n; n++) {
            const float *dyn = dy + (size_t)n * ys, *xn = x + (size_t)n * xs;
            float *dxn = dx ? dx + (size_t)n * xs : NULL;
            /* dW over bands of output rows. */
            for (int o0 = 0; o0 < p->oh; o0 += gx.band) {
                const int nb = imin(gx.band, p->oh - o0);
                igeom_build(&gx, xn, o0, nb, bbuf);
                transpose_dy(dyn, K, KP, OHW, p->ow, o0, nb, gx.wq, dyt);
                dw_accumulate(KD, KP, bbuf, offx, nb * gx.wq, dyt, part);
            }
            if (!dxn) continue;
            if (dx_implicit) {
                /* dX: the transposed convolution, over bands of dx rows. */
                for (int o0 = 0; o0 < p->h; o0 += gd.band) {
                    const int nb = imin(gd.band, p->h - o0);
                    igeom_build(&gd, dyn, o0, nb, dbuf);
                    const size_t nvec = ((size_t)nb * gd.wq + SD_VL - 1) / SD_VL;
                    gemm_packed(CMR / SD_MR, KDX, wt, dbuf, offd, nvec, NULL, yq, gd.ldq);
                    store_band(yq, gd.ldq, C, nb, gd.wq, p->w, HW, o0, dxn);
                }
                continue;
            }
            memset(dxn, 0, xs * sizeof(float));
            for (int o0 = 0; o0 < p->oh; o0 += e.band) {
                const int nb = imin(e.band, p->oh - o0), npix = nb * p->ow;
                const size_t nvp = round_up((size_t)npix, SD_VL), j0 = (size_t)o0 * p->ow;
                /* dcol = W^T dy over this band; B = dy rows (a zero-padded copy when the band is not
                 * a whole number of vectors, so whole-vector reads stay inside it). */
                const float *bsrc = dyn + j0;
                size_t ldb = OHW;
                if (nvp != (size_t)npix) {
                    for (int kk = 0; kk < K; kk++) {
                        copy_f(dyp + (size_t)kk * nvp, dyn + (size_t)kk * OHW + j0, npix);
                        zero_f(dyp + (size_t)kk * nvp + npix, (int)nvp - npix);
                    }
                    bsrc = dyp;
                    ldb = nvp;
                }
                for (int kk = 0; kk < K; kk++) offk[kk] = (size_t)kk * ldb;
                gemm_packed(KDP / SD_MR, K, wt, bsrc, offk, nvp / SD_VL, NULL, dcol, e.ld);
                col2im_band(p, &e, dcol, o0, o0 + nb, dxn, xp);
            }
        }
        /* dw[kk][r] = sum over threads of part[r][kk] (the loop's implicit barrier comes first). */
#pragma omp for schedule(static)
        for (int kk = 0; kk < K; kk++)
            for (int r = 0; r < KD; r++) {
                float acc = 0.0f;
                for (int t = 0; t < nth; t++) acc += thread_base[(size_t)t * per_thread + (size_t)r * KP + kk];
                dw[(size_t)kk * KD + r] = acc;
            }
    }
    return SD_OK;
}
