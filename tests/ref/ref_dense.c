/* ref_dense.c: the naive convolution and linear references declared in ref_dense.h. Every output
 * element is one double-precision sum written once, so no ordering or blocking can hide a bug
 * the optimized kernels share with it. */
#include "tests/ref/ref_dense.h"

#include <stddef.h>

/* ---- convolution -------------------------------------------------------------------------- */

#define X4(t, n, c, i, j, C, H, W) (t)[(((size_t)(n) * (C) + (c)) * (H) + (i)) * (W) + (j)]

sd_status ref_conv2d_fwd(const sd_conv2d_params *p, const float *x, const float *w, const float *b, float *y) {
    if (!p || !x || !w || !y || (p->has_bias && !b)) return SD_FAIL(SD_ERR_INVALID, "ref conv2d fwd: NULL argument");
    const int N = p->n, C = p->c, H = p->h, W = p->w, K = p->k, KH = p->kh, KW = p->kw, OH = p->oh, OW = p->ow;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = p->has_bias ? (double)b[k] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int ki = 0; ki < KH; ki++) {
                            const int ih = oh * p->sh - p->ph + ki;
                            if (ih < 0 || ih >= H) continue;
                            for (int kj = 0; kj < KW; kj++) {
                                const int iw = ow * p->sw - p->pw + kj;
                                if (iw < 0 || iw >= W) continue;
                                acc += (double)X4(w, k, c, ki, kj, C, KH, KW) * (double)X4(x, n, c, ih, iw, C, H, W);
                            }
                        }
                    X4(y, n, k, oh, ow, K, OH, OW) = (float)acc;
                }
    return SD_OK;
}

sd_status ref_conv2d_bwd(const sd_conv2d_params *p, const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db) {
    if (!p || !x || !w || !dy || !dw || (p->has_bias && !db))
        return SD_FAIL(SD_ERR_INVALID, "ref conv2d bwd: NULL argument");
    const int N = p->n, C = p->c, H = p->h, W = p->w, K = p->k, KH = p->kh, KW = p->kw, OH = p->oh, OW = p->ow;
    /* db[k] = sum dy[n][k][.][.] */
    if (p->has_bias)
        for (int k = 0; k < K; k++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++)
                for (int oh = 0; oh < OH; oh++)
                    for (int ow = 0; ow < OW; ow++) acc += (double)X4(dy, n, k, oh, ow, K, OH, OW);
            db[k] = (float)acc;
        }
    /* dw[k][c][ki][kj] = sum_{n,oh,ow} dy[n][k][oh][ow] x[n][c][oh*sh-ph+ki][ow*sw-pw+kj] */
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++) {
                    double acc = 0.0;
                    for (int n = 0; n < N; n++)
                        for (int oh = 0; oh < OH; oh++) {
                            const int ih = oh * p->sh - p->ph + ki;
                            if (ih < 0 || ih >= H) continue;
                            for (int ow = 0; ow < OW; ow++) {
                                const int iw = ow * p->sw - p->pw + kj;
                                if (iw < 0 || iw >= W) continue;
                                acc += (double)X4(dy, n, k, oh, ow, K, OH, OW) * (double)X4(x, n, c, ih, iw, C, H, W);
                            }
                        }
                    X4(dw, k, c, ki, kj, C, KH, KW) = (float)acc;
                }
    /* dx[n][c][ih][iw] = sum over (k, ki, kj) with oh = (ih+ph-ki)/sh, ow = (iw+pw-kj)/sw exact
     * and in range of dy[n][k][oh][ow] w[k][c][ki][kj] */
    if (dx)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                for (int ih = 0; ih < H; ih++)
                    for (int iw = 0; iw < W; iw++) {
                        double acc = 0.0;
                        for (int k = 0; k < K; k++)
                            for (int ki = 0; ki < KH; ki++) {
                                const int th = ih + p->ph - ki;
                                if (th < 0 || th % p->sh != 0 || th / p->sh >= OH) continue;
                                for (int kj = 0; kj < KW; kj++) {
                                    const int tw = iw + p->pw - kj;
                                    if (tw < 0 || tw % p->sw != 0 || tw / p->sw >= OW) continue;
                                    acc += (double)X4(dy, n, k, th / p->sh, tw / p->sw, K, OH, OW) *
                                           (double)X4(w, k, c, ki, kj, C, KH, KW);
                                }
                            }
                        X4(dx, n, c, ih, iw, C, H, W) = (float)acc;
                    }
    return SD_OK;
}

/* ---- linear ------------------------------------------------------------------------------- */

sd_status ref_linear_fwd(const sd_linear_params *p, const float *x, const float *w, const float *b, float *y) {
    if (!p || !x || !w || !y || (p->has_bias && !b)) return SD_FAIL(SD_ERR_INVALID, "ref linear fwd: NULL argument");
    for (int n = 0; n < p->n; n++)
        for (int o = 0; o < p->out; o++) {
            double acc = p->has_bias ? (double)b[o] : 0.0;
            for (int i = 0; i < p->in; i++) acc += (double)x[(size_t)n * p->in + i] * (double)w[(size_t)o * p->in + i];
            y[(size_t)n * p->out + o] = (float)acc;
        }
    return SD_OK;
}

sd_status ref_linear_bwd(const sd_linear_params *p, const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db) {
    if (!p || !x || !w || !dy || !dw || (p->has_bias && !db))
        return SD_FAIL(SD_ERR_INVALID, "ref linear bwd: NULL argument");
    const int N = p->n, IN = p->in, OUT = p->out;
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += (double)dy[(size_t)n * OUT + o] * (double)x[(size_t)n * IN + i];
            dw[(size_t)o * IN + i] = (float)acc;
        }
    if (dx)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IN; i++) {
                double acc = 0.0;
                for (int o = 0; o < OUT; o++) acc += (double)dy[(size_t)n * OUT + o] * (double)w[(size_t)o * IN + i];
                dx[(size_t)n * IN + i] = (float)acc;
            }
    if (p->has_bias)
        for (int o = 0; o < OUT; o++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += (double)dy[(size_t)n * OUT + o];
            db[o] = (float)acc;
        }
    return SD_OK;
}
