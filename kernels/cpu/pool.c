/* pool.c: CPU pooling over NCHW planes, PyTorch semantics (floor mode, padding at most half the
 * kernel): max pool (padding acts as -inf; the first maximum in row-major window order wins, and
 * NaN propagates: the last NaN of a window wins, as in PyTorch's CPU kernel), average pool
 * (count_include_pad=True: the divisor counts padded cells), and global average pool
 * ([n, c, h, w] -> [n, c]). (n, c) planes run in parallel.
 *
 * Max pool argmax: argmax[((n * c + ch) * oh + oy) * ow + ox] is the flat index iy * w + ix of
 * the winning input element within its own (n, ch) input plane of h * w values (PyTorch's
 * return_indices convention), not an index into the whole tensor.
 *
 * Windows are separable, so the general kernels work in two vectorisable passes over a plane:
 * along each input row (a strided sweep per window column) into a per-thread [h, ow] scratch,
 * then down the columns. The 2x2 stride-2 pools have their own single-pass loops. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"

/* Below this many input elements a kernel runs on the calling thread. */
#define SD_POOL_PAR_MIN 16384

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Output columns ox whose window column b (0 <= b < kw) falls inside the input row:
 * 0 <= ox * sw - pw + b < w. Returns 0 when there are none. */
static inline int col_range(const sd_pool2d_params *p, int b, int *lo, int *hi) {
    const int last = p->w - 1 + p->pw - b;
    if (last < 0) return 0;
    *lo = p->pw > b ? (p->pw - b + p->sw - 1) / p->sw : 0;
    *hi = imin(last / p->sw, p->ow - 1);
    return *lo <= *hi;
}

/* The common 2x2 window, stride 2, no padding: the max and average pools have single-pass loops. */
static inline int is_2x2s2(const sd_pool2d_params *p) {
    return p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0;
}

/* Input rows that some output window reads: [0, rows). */
static inline int rows_used(const sd_pool2d_params *p) { return imin(p->h, (p->oh - 1) * p->sh - p->ph + p->kh); }

typedef struct pool_scratch {
    float *f;   /* threads slices of `per` floats */
    int32_t *i; /* threads slices of `per` ints (max pool only) */
    size_t per; /* h * ow, rounded up to 16 */
} pool_scratch;

static sd_status pool_scratch_get(sd_kctx *k, const sd_pool2d_params *p, int with_index, pool_scratch *s) {
    s->per = (size_t)p->h * (size_t)p->ow;
    s->per = (s->per + 15) & ~(size_t)15; /* keep every slice 64-byte aligned */
    const size_t bytes = (size_t)k->threads * s->per * (sizeof(float) + (with_index ? sizeof(int32_t) : 0));
    void *mem;
    TRY(sd_cpu_scratch(k, bytes, &mem));
    s->f = mem;
    s->i = with_index ? (int32_t *)(s->f + (size_t)k->threads * s->per) : NULL;
    return SD_OK;
}

/* ---- max pool ----------------------------------------------------------------------------- */

/* Row pass of the max pool for one input row; sw is a literal at the call sites that matter so
 * the strided loads vectorise as permutes instead of element inserts. */
static inline __attribute__((always_inline)) void maxpool_row(const sd_pool2d_params *p, const float *row,
                                                              float *v, int32_t *c, const int sw) {
    const int OW = p->ow;
    for (int ox = 0; ox < OW; ox++) {
        v[ox] = -INFINITY;
        c[ox] = imax(ox * sw - p->pw, 0); /* PyTorch's index when nothing beats -inf */
    }
    for (int b = 0; b < p->kw; b++) {
        int lo, hi;
        if (!col_range(p, b, &lo, &hi)) continue;
        const int off = b - p->pw;
#pragma omp simd
        for (int ox = lo; ox <= hi; ox++) {
            const int ix = ox * sw + off;
            const float val = row[ix];
            const int take = val > v[ox] || val != val;
            v[ox] = take ? val : v[ox];
            c[ox] = take ? ix : c[ox];
        }
    }
}

/* One plane, any window: row maxima (value and column) into hv/hi, then column maxima. The
 * update rule "v > best or v is NaN" applied in row-major order within each pass gives the same
 * winner as applying it in row-major order over the whole window. */
static void maxpool_plane(const sd_pool2d_params *p, const float *x, float *y, int32_t *am, float *hv,
                          int32_t *hi) {
    const int W = p->w, OW = p->ow, rows = rows_used(p);
    for (int iy = 0; iy < rows; iy++) {
        const float *row = x + (size_t)iy * W;
        float *v = hv + (size_t)iy * OW;
        int32_t *c = hi + (size_t)iy * OW;
        if (p->sw == 1)
            maxpool_row(p, row, v, c, 1);
        else if (p->sw == 2)
            maxpool_row(p, row, v, c, 2);
        else
            maxpool_row(p, row, v, c, p->sw);
    }
    for (int oy = 0; oy < p->oh; oy++) {
        const int hs0 = oy * p->sh - p->ph;
        const int hs = imax(hs0, 0), he = imin(hs0 + p->kh, p->h);
        float *yo = y + (size_t)oy * OW;
        int32_t *ao = am + (size_t)oy * OW;
        const float *v0 = hv + (size_t)hs * OW;
        const int32_t *c0 = hi + (size_t)hs * OW;
        const int32_t base0 = hs * W;
#pragma omp simd
        for (int ox = 0; ox < OW; ox++) {
            yo[ox] = v0[ox];
            ao[ox] = base0 + c0[ox];
        }
        for (int iy = hs + 1; iy < he; iy++) {
            const float *v = hv + (size_t)iy * OW;
            const int32_t *c = hi + (size_t)iy * OW;
            const int32_t base = iy * W;
#pragma omp simd
            for (int ox = 0; ox < OW; ox++) {
                const float val = v[ox];
                const int take = val > yo[ox] || val != val;
                yo[ox] = take ? val : yo[ox];
                ao[ox] = take ? base + c[ox] : ao[ox];
            }
        }
    }
}

/* One plane, the common 2x2 window with stride 2 and no padding, in one pass (same rules). */
static void maxpool_plane_2x2s2(const sd_pool2d_params *p, const float *x, float *y, int32_t *am) {
    const int W = p->w, OH = p->oh, OW = p->ow;
    for (int oy = 0; oy < OH; oy++) {
        const float *r0 = x + (size_t)(2 * oy) * W, *r1 = r0 + W;
        const int32_t base = 2 * oy * W;
        float *yr = y + (size_t)oy * OW;
        int32_t *ar = am + (size_t)oy * OW;
#pragma omp simd
        for (int ox = 0; ox < OW; ox++) {
            const int ix = 2 * ox;
            /* Starting from the first element is where the -inf start lands too (NaN or -inf
             * first elements included). */
            float best = r0[ix];
            int32_t bi = base + ix;
            float v = r0[ix + 1];
            int t = v > best || v != v;
            best = t ? v : best;
            bi = t ? base + ix + 1 : bi;
            v = r1[ix];
            t = v > best || v != v;
            best = t ? v : best;
            bi = t ? base + W + ix : bi;
            v = r1[ix + 1];
            t = v > best || v != v;
            best = t ? v : best;
            bi = t ? base + W + ix + 1 : bi;
            yr[ox] = best;
            ar[ox] = bi;
        }
    }
}

sd_status sd_cpu_maxpool_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y, int32_t *argmax) {
    if (!k || !p || !x || !y || !argmax)
        return SD_FAIL(SD_ERR_INVALID,
                       "maxpool2d fwd: NULL argument (context, params, x, y and argmax are required)");
    const size_t HW = (size_t)p->h * (size_t)p->w, OHW = (size_t)p->oh * (size_t)p->ow;
    if (HW > (size_t)INT32_MAX)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "maxpool2d fwd: input plane %dx%d exceeds the int32 argmax range",
                       p->h, p->w);
    const size_t planes = (size_t)p->n * (size_t)p->c;
    const int fast = is_2x2s2(p);
    pool_scratch s = {0};
    if (!fast) TRY(pool_scratch_get(k, p, 1, &s));
#pragma omp parallel for num_threads(k->threads) schedule(static) if (planes * HW >= SD_POOL_PAR_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        if (fast) {
            maxpool_plane_2x2s2(p, x + pl * HW, y + pl * OHW, argmax + pl * OHW);
        } else {
            const size_t t = (size_t)omp_get_thread_num() * s.per;
            maxpool_plane(p, x + pl * HW, y + pl * OHW, argmax + pl * OHW, s.f + t, s.i + t);
        }
    }
    return SD_OK;
}

sd_status sd_cpu_maxpool_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, const int32_t *argmax,
                             float *dx) {
    if (!k || !p || !dy || !argmax || !dx)
        return SD_FAIL(SD_ERR_INVALID,
                       "maxpool2d bwd: NULL argument (context, params, dy, argmax and dx are required)");
    const size_t HW = (size_t)p->h * (size_t)p->w, OHW = (size_t)p->oh * (size_t)p->ow;
    const size_t planes = (size_t)p->n * (size_t)p->c;
    int bad = 0;
#pragma omp parallel for num_threads(k->threads) schedule(static) reduction(| : bad) \
    if (planes * HW >= SD_POOL_PAR_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        float *dxp = dx + pl * HW;
        const float *g = dy + pl * OHW;
        const int32_t *a = argmax + pl * OHW;
        memset(dxp, 0, HW * sizeof(float));
        for (size_t o = 0; o < OHW; o++) {
            const uint32_t i = (uint32_t)a[o];
            if (i < HW)
                dxp[i] += g[o];
            else
                bad = 1;
        }
    }
    if (bad)
        return SD_FAIL(SD_ERR_INVALID,
                       "maxpool2d bwd: argmax holds an index outside the %dx%d input plane (not from maxpool fwd "
                       "with these params?)",
                       p->h, p->w);
    return SD_OK;
}

/* ---- average pool (count_include_pad=True) ----------------------------------------------- */

/* PyTorch's divisor along one axis: the window clipped to the padded input (before clipping to
 * the input itself). */
static inline int pad_extent(int o, int s, int pad, int k, int n) {
    const int start = o * s - pad;
    return imin(start + k, n + pad) - start;
}

/* Row pass of the average pool for one input row (sw a literal where it matters, as above). */
static inline __attribute__((always_inline)) void avgpool_row(const sd_pool2d_params *p, const float *row,
                                                              float *acc, const int sw) {
    memset(acc, 0, (size_t)p->ow * sizeof(float));
    for (int b = 0; b < p->kw; b++) {
        int lo, hi;
        if (!col_range(p, b, &lo, &hi)) continue;
        const int off = b - p->pw;
#pragma omp simd
        for (int ox = lo; ox <= hi; ox++) acc[ox] += row[ox * sw + off];
    }
}

/* One plane: row sums of each window's columns into hs[h, ow], then column sums / divisor. */
static void avgpool_plane(const sd_pool2d_params *p, const float *x, float *y, float *hs) {
    const int W = p->w, OW = p->ow, rows = rows_used(p);
    for (int iy = 0; iy < rows; iy++) {
        const float *row = x + (size_t)iy * W;
        float *acc = hs + (size_t)iy * OW;
        if (p->sw == 1)
            avgpool_row(p, row, acc, 1);
        else if (p->sw == 2)
            avgpool_row(p, row, acc, 2);
        else
            avgpool_row(p, row, acc, p->sw);
    }
    for (int oy = 0; oy < p->oh; oy++) {
        const int h0 = oy * p->sh - p->ph;
        const int h_lo = imax(h0, 0), h_hi = imin(h0 + p->kh, p->h);
        const int dh = pad_extent(oy, p->sh, p->ph, p->kh, p->h);
        float *yo = y + (size_t)oy * OW;
        memcpy(yo, hs + (size_t)h_lo * OW, (size_t)OW * sizeof(float));
        for (int iy = h_lo + 1; iy < h_hi; iy++) {
            const float *acc = hs + (size_t)iy * OW;
#pragma omp simd
            for (int ox = 0; ox < OW; ox++) yo[ox] += acc[ox];
        }
        const int sw = p->sw, pw = p->pw, kw = p->kw, wpad = W + pw;
#pragma omp simd
        for (int ox = 0; ox < OW; ox++) {
            const int start = ox * sw - pw;
            const int dw = imin(start + kw, wpad) - start;
            yo[ox] /= (float)(dh * dw);
        }
    }
}

/* One plane, 2x2 windows with stride 2 and no padding: every divisor is 4. */
static void avgpool_plane_2x2s2(const sd_pool2d_params *p, const float *x, float *y) {
    const int W = p->w, OW = p->ow;
    for (int oy = 0; oy < p->oh; oy++) {
        const float *r0 = x + (size_t)(2 * oy) * W, *r1 = r0 + W;
        float *yr = y + (size_t)oy * OW;
#pragma omp simd
        for (int ox = 0; ox < OW; ox++)
            yr[ox] = ((r0[2 * ox] + r0[2 * ox + 1]) + (r1[2 * ox] + r1[2 * ox + 1])) * 0.25f;
    }
}

sd_status sd_cpu_avgpool_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y) {
    if (!k || !p || !x || !y)
        return SD_FAIL(SD_ERR_INVALID, "avgpool2d fwd: NULL argument (context, params, x and y are required)");
    const size_t HW = (size_t)p->h * (size_t)p->w, OHW = (size_t)p->oh * (size_t)p->ow;
    const size_t planes = (size_t)p->n * (size_t)p->c;
    const int fast = is_2x2s2(p);
    pool_scratch s = {0};
    if (!fast) TRY(pool_scratch_get(k, p, 0, &s));
#pragma omp parallel for num_threads(k->threads) schedule(static) if (planes * HW >= SD_POOL_PAR_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        if (fast)
            avgpool_plane_2x2s2(p, x + pl * HW, y + pl * OHW);
        else
            avgpool_plane(p, x + pl * HW, y + pl * OHW, s.f + (size_t)omp_get_thread_num() * s.per);
    }
    return SD_OK;
}

/* Row pass of the average pool backward: spread each window's row sum over its columns. */
static inline __attribute__((always_inline)) void avgpool_row_bwd(const sd_pool2d_params *p, const float *acc,
                                                                  float *row, const int sw) {
    for (int b = 0; b < p->kw; b++) {
        int lo, hi;
        if (!col_range(p, b, &lo, &hi)) continue;
        const int off = b - p->pw;
        /* Within one window column b, distinct ox hit distinct ix (sw >= 1). */
#pragma omp simd
        for (int ox = lo; ox <= hi; ox++) row[ox * sw + off] += acc[ox];
    }
}

/* One plane, the transpose of the forward: dy / divisor spread down the window rows into
 * t[h, ow], then along each row's window columns into dx. */
static void avgpool_plane_bwd(const sd_pool2d_params *p, const float *dy, float *dx, float *t) {
    const int W = p->w, OW = p->ow, rows = rows_used(p);
    memset(t, 0, (size_t)rows * OW * sizeof(float));
    const int sw = p->sw, pw = p->pw, kw = p->kw, wpad = W + pw;
    for (int oy = 0; oy < p->oh; oy++) {
        const int h0 = oy * p->sh - p->ph;
        const int h_lo = imax(h0, 0), h_hi = imin(h0 + p->kh, p->h);
        const float dh = (float)pad_extent(oy, p->sh, p->ph, p->kh, p->h);
        const float *g = dy + (size_t)oy * OW;
        for (int iy = h_lo; iy < h_hi; iy++) {
            float *acc = t + (size_t)iy * OW;
#pragma omp simd
            for (int ox = 0; ox < OW; ox++) {
                const int start = ox * sw - pw;
                const int dw = imin(start + kw, wpad) - start;
                acc[ox] += g[ox] / (dh * (float)dw);
            }
        }
    }
    memset(dx, 0, (size_t)p->h * W * sizeof(float));
    for (int iy = 0; iy < rows; iy++) {
        float *row = dx + (size_t)iy * W;
        const float *acc = t + (size_t)iy * OW;
        if (sw == 1)
            avgpool_row_bwd(p, acc, row, 1);
        else if (sw == 2)
            avgpool_row_bwd(p, acc, row, 2);
        else
            avgpool_row_bwd(p, acc, row, sw);
    }
}

/* One plane, 2x2 stride 2 without padding: each input cell belongs to at most one window
 * (cells floored away at the right and bottom edges get 0). */
static void avgpool_plane_bwd_2x2s2(const sd_pool2d_params *p, const float *dy, float *dx) {
    const int W = p->w, OW = p->ow;
    for (int oy = 0; oy < p->oh; oy++) {
        float *r0 = dx + (size_t)(2 * oy) * W, *r1 = r0 + W;
        const float *g = dy + (size_t)oy * OW;
#pragma omp simd
        for (int ox = 0; ox < OW; ox++) {
            const float v = g[ox] * 0.25f;
            r0[2 * ox] = v;
            r0[2 * ox + 1] = v;
            r1[2 * ox] = v;
            r1[2 * ox + 1] = v;
        }
        if (W > 2 * OW) r0[W - 1] = r1[W - 1] = 0.0f;
    }
    if (p->h > 2 * p->oh) memset(dx + (size_t)(p->h - 1) * W, 0, (size_t)W * sizeof(float));
}

sd_status sd_cpu_avgpool_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx) {
    if (!k || !p || !dy || !dx)
        return SD_FAIL(SD_ERR_INVALID, "avgpool2d bwd: NULL argument (context, params, dy and dx are required)");
    const size_t HW = (size_t)p->h * (size_t)p->w, OHW = (size_t)p->oh * (size_t)p->ow;
    const size_t planes = (size_t)p->n * (size_t)p->c;
    const int fast = is_2x2s2(p);
    pool_scratch s = {0};
    if (!fast) TRY(pool_scratch_get(k, p, 0, &s));
#pragma omp parallel for num_threads(k->threads) schedule(static) if (planes * HW >= SD_POOL_PAR_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        if (fast)
            avgpool_plane_bwd_2x2s2(p, dy + pl * OHW, dx + pl * HW);
        else
            avgpool_plane_bwd(p, dy + pl * OHW, dx + pl * HW, s.f + (size_t)omp_get_thread_num() * s.per);
    }
    return SD_OK;
}

/* ---- global average pool ------------------------------------------------------------------- */

sd_status sd_cpu_gap_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y) {
    if (!k || !p || !x || !y)
        return SD_FAIL(SD_ERR_INVALID, "global_avgpool fwd: NULL argument (context, params, x and y are required)");
    const size_t HW = (size_t)p->h * (size_t)p->w;
    const size_t planes = (size_t)p->n * (size_t)p->c;
    const double inv = 1.0 / (double)HW;
#pragma omp parallel for num_threads(k->threads) schedule(static) if (planes * HW >= SD_POOL_PAR_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * HW;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = 0; i < HW; i++) s += xp[i];
        y[pl] = (float)(s * inv);
    }
    return SD_OK;
}

sd_status sd_cpu_gap_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx) {
    if (!k || !p || !dy || !dx)
        return SD_FAIL(SD_ERR_INVALID, "global_avgpool bwd: NULL argument (context, params, dy and dx are required)");
    const size_t HW = (size_t)p->h * (size_t)p->w;
    const size_t planes = (size_t)p->n * (size_t)p->c;
    const float inv = 1.0f / (float)HW;
#pragma omp parallel for num_threads(k->threads) schedule(static) if (planes * HW >= SD_POOL_PAR_MIN)
    for (size_t pl = 0; pl < planes; pl++) {
        const float v = dy[pl] * inv;
        float *dxp = dx + pl * HW;
#pragma omp simd
        for (size_t i = 0; i < HW; i++) dxp[i] = v;
    }
    return SD_OK;
}
