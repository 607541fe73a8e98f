/* ref_misc.c: naive references for batch norm, ReLU, pooling, softmax cross-entropy,
 * elementwise, dropout and SGD (see ref_misc.h). Plain loops over the definitions, double
 * accumulators, gather formulations where the kernels scatter. */
#include "tests/ref/ref_misc.h"

#include <math.h>

#define REF_NULL(op) SD_FAIL(SD_ERR_INVALID, "ref " op ": NULL argument")

static size_t idx4(const int *dims, int n, int c, int y, int x) {
    return (((size_t)n * dims[1] + c) * dims[2] + y) * dims[3] + x;
}

/* ---- batch norm ---------------------------------------------------------------------------- */

sd_status ref_bn_fwd_train(const sd_bn_params *p, const float *x, const float *gamma, const float *beta, float *y,
                           float *running_mean, float *running_var, float *save_mean, float *save_invstd) {
    if (!p || !x || !gamma || !beta || !y || !running_mean || !running_var || !save_mean || !save_invstd)
        return REF_NULL("bn_fwd_train");
    const int d[4] = {p->n, p->c, p->h, p->w};
    const double m = (double)p->n * p->h * p->w;
    if (m < 2) return SD_FAIL(SD_ERR_SHAPE, "ref bn_fwd_train: one value per channel");
    for (int c = 0; c < p->c; c++) {
        double s = 0;
        for (int n = 0; n < p->n; n++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) s += x[idx4(d, n, c, i, j)];
        const double mean = s / m;
        double v = 0;
        for (int n = 0; n < p->n; n++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) {
                    const double t = x[idx4(d, n, c, i, j)] - mean;
                    v += t * t;
                }
        const double var = v / m;
        const double invstd = 1.0 / sqrt(var + (double)p->eps);
        for (int n = 0; n < p->n; n++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) {
                    const size_t o = idx4(d, n, c, i, j);
                    y[o] = (float)((x[o] - mean) * invstd * gamma[c] + beta[c]);
                }
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
        running_mean[c] = (float)((1.0 - p->momentum) * running_mean[c] + (double)p->momentum * mean);
        running_var[c] = (float)((1.0 - p->momentum) * running_var[c] + (double)p->momentum * v / (m - 1));
    }
    return SD_OK;
}

sd_status ref_bn_fwd_eval(const sd_bn_params *p, const float *x, const float *gamma, const float *beta,
                          const float *running_mean, const float *running_var, float *y) {
    if (!p || !x || !gamma || !beta || !running_mean || !running_var || !y) return REF_NULL("bn_fwd_eval");
    const int d[4] = {p->n, p->c, p->h, p->w};
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) {
                    const size_t o = idx4(d, n, c, i, j);
                    y[o] = (float)(((double)x[o] - running_mean[c]) / sqrt((double)running_var[c] + p->eps) *
                                       gamma[c] +
                                   beta[c]);
                }
    return SD_OK;
}

sd_status ref_bn_bwd(const sd_bn_params *p, const float *x, const float *gamma, const float *save_mean,
                     const float *save_invstd, const float *dy, float *dx, float *dgamma, float *dbeta) {
    if (!p || !x || !gamma || !save_mean || !save_invstd || !dy || !dgamma || !dbeta) return REF_NULL("bn_bwd");
    const int d[4] = {p->n, p->c, p->h, p->w};
    const double m = (double)p->n * p->h * p->w;
    for (int c = 0; c < p->c; c++) {
        const double mean = save_mean[c], invstd = save_invstd[c];
        double sdy = 0, sdyxh = 0;
        for (int n = 0; n < p->n; n++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) {
                    const size_t o = idx4(d, n, c, i, j);
                    sdy += dy[o];
                    sdyxh += dy[o] * ((x[o] - mean) * invstd);
                }
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)sdyxh;
        if (!dx) continue;
        for (int n = 0; n < p->n; n++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) {
                    const size_t o = idx4(d, n, c, i, j);
                    const double xhat = (x[o] - mean) * invstd;
                    dx[o] = (float)(gamma[c] * invstd / m * (m * dy[o] - sdy - xhat * sdyxh));
                }
    }
    return SD_OK;
}

/* ---- relu ---------------------------------------------------------------------------------- */

sd_status ref_relu_fwd(size_t count, const float *x, float *y) {
    if (!x || !y) return REF_NULL("relu_fwd");
    for (size_t i = 0; i < count; i++) y[i] = isnan(x[i]) ? x[i] : (x[i] > 0 ? x[i] : 0.0f); /* NaN stays */
    return SD_OK;
}

sd_status ref_relu_bwd(size_t count, const float *y, const float *dy, float *dx) {
    if (!y || !dy || !dx) return REF_NULL("relu_bwd");
    for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
    return SD_OK;
}

/* ---- pooling ------------------------------------------------------------------------------- */

sd_status ref_maxpool_fwd(const sd_pool2d_params *p, const float *x, float *y, int32_t *argmax) {
    if (!p || !x || !y || !argmax) return REF_NULL("maxpool_fwd");
    const int di[4] = {p->n, p->c, p->h, p->w}, dout[4] = {p->n, p->c, p->oh, p->ow};
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int oy = 0; oy < p->oh; oy++)
                for (int ox = 0; ox < p->ow; ox++) {
                    float best = -INFINITY;
                    int bi = -1;
                    for (int a = 0; a < p->kh; a++)
                        for (int b = 0; b < p->kw; b++) {
                            const int iy = oy * p->sh - p->ph + a, ix = ox * p->sw - p->pw + b;
                            if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) continue; /* -inf padding */
                            const float v = x[idx4(di, n, c, iy, ix)];
                            if (bi < 0 || v > best || isnan(v)) {
                                best = v;
                                bi = iy * p->w + ix;
                            }
                        }
                    y[idx4(dout, n, c, oy, ox)] = best;
                    argmax[idx4(dout, n, c, oy, ox)] = bi;
                }
    return SD_OK;
}

sd_status ref_maxpool_bwd(const sd_pool2d_params *p, const float *dy, const int32_t *argmax, float *dx) {
    if (!p || !dy || !argmax || !dx) return REF_NULL("maxpool_bwd");
    const int di[4] = {p->n, p->c, p->h, p->w}, dout[4] = {p->n, p->c, p->oh, p->ow};
    /* Gather: each input cell sums the dy of the windows that picked it. */
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int iy = 0; iy < p->h; iy++)
                for (int ix = 0; ix < p->w; ix++) {
                    double s = 0;
                    for (int oy = 0; oy < p->oh; oy++)
                        for (int ox = 0; ox < p->ow; ox++)
                            if (argmax[idx4(dout, n, c, oy, ox)] == iy * p->w + ix) s += dy[idx4(dout, n, c, oy, ox)];
                    dx[idx4(di, n, c, iy, ix)] = (float)s;
                }
    return SD_OK;
}

/* Cells of the window of output (oy, ox) inside the padded input: the count_include_pad divisor. */
static int ref_avg_divisor(const sd_pool2d_params *p, int oy, int ox) {
    int cnt = 0;
    for (int a = 0; a < p->kh; a++)
        for (int b = 0; b < p->kw; b++) {
            const int iy = oy * p->sh - p->ph + a, ix = ox * p->sw - p->pw + b;
            if (iy >= -p->ph && iy < p->h + p->ph && ix >= -p->pw && ix < p->w + p->pw) cnt++;
        }
    return cnt;
}

sd_status ref_avgpool_fwd(const sd_pool2d_params *p, const float *x, float *y) {
    if (!p || !x || !y) return REF_NULL("avgpool_fwd");
    const int di[4] = {p->n, p->c, p->h, p->w}, dout[4] = {p->n, p->c, p->oh, p->ow};
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int oy = 0; oy < p->oh; oy++)
                for (int ox = 0; ox < p->ow; ox++) {
                    double s = 0;
                    for (int a = 0; a < p->kh; a++)
                        for (int b = 0; b < p->kw; b++) {
                            const int iy = oy * p->sh - p->ph + a, ix = ox * p->sw - p->pw + b;
                            if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) s += x[idx4(di, n, c, iy, ix)];
                        }
                    y[idx4(dout, n, c, oy, ox)] = (float)(s / ref_avg_divisor(p, oy, ox));
                }
    return SD_OK;
}

sd_status ref_avgpool_bwd(const sd_pool2d_params *p, const float *dy, float *dx) {
    if (!p || !dy || !dx) return REF_NULL("avgpool_bwd");
    const int di[4] = {p->n, p->c, p->h, p->w}, dout[4] = {p->n, p->c, p->oh, p->ow};
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int iy = 0; iy < p->h; iy++)
                for (int ix = 0; ix < p->w; ix++) {
                    double s = 0;
                    for (int oy = 0; oy < p->oh; oy++)
                        for (int ox = 0; ox < p->ow; ox++) {
                            const int y0 = oy * p->sh - p->ph, x0 = ox * p->sw - p->pw;
                            if (iy >= y0 && iy < y0 + p->kh && ix >= x0 && ix < x0 + p->kw)
                                s += (double)dy[idx4(dout, n, c, oy, ox)] / ref_avg_divisor(p, oy, ox);
                        }
                    dx[idx4(di, n, c, iy, ix)] = (float)s;
                }
    return SD_OK;
}

sd_status ref_gap_fwd(const sd_pool2d_params *p, const float *x, float *y) {
    if (!p || !x || !y) return REF_NULL("gap_fwd");
    const int di[4] = {p->n, p->c, p->h, p->w};
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++) {
            double s = 0;
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++) s += x[idx4(di, n, c, i, j)];
            y[(size_t)n * p->c + c] = (float)(s / ((double)p->h * p->w));
        }
    return SD_OK;
}

sd_status ref_gap_bwd(const sd_pool2d_params *p, const float *dy, float *dx) {
    if (!p || !dy || !dx) return REF_NULL("gap_bwd");
    const int di[4] = {p->n, p->c, p->h, p->w};
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int i = 0; i < p->h; i++)
                for (int j = 0; j < p->w; j++)
                    dx[idx4(di, n, c, i, j)] = (float)((double)dy[(size_t)n * p->c + c] / ((double)p->h * p->w));
    return SD_OK;
}

/* ---- softmax cross-entropy ------------------------------------------------------------------ */

sd_status ref_xent_fwd(const sd_xent_params *p, const float *logits, const int32_t *labels, float *probs,
                       float *loss_out) {
    if (!p || !logits || !labels || !probs || !loss_out) return REF_NULL("xent_fwd");
    double total = 0;
    for (int i = 0; i < p->n; i++) {
        if (labels[i] < 0 || labels[i] >= p->classes)
            return SD_FAIL(SD_ERR_INVALID, "ref xent_fwd: label %d at index %d out of range", (int)labels[i], i);
        const float *z = logits + (size_t)i * p->classes;
        double m = z[0];
        for (int j = 1; j < p->classes; j++) m = fmax(m, z[j]);
        double s = 0;
        for (int j = 0; j < p->classes; j++) s += exp((double)z[j] - m);
        const double lse = m + log(s);
        for (int j = 0; j < p->classes; j++) probs[(size_t)i * p->classes + j] = (float)exp((double)z[j] - lse);
        total += lse - z[labels[i]];
    }
    *loss_out = (float)(total / p->n);
    return SD_OK;
}

sd_status ref_xent_bwd(const sd_xent_params *p, const float *probs, const int32_t *labels, float scale,
                       float *dlogits) {
    if (!p || !probs || !labels || !dlogits) return REF_NULL("xent_bwd");
    for (int i = 0; i < p->n; i++) {
        if (labels[i] < 0 || labels[i] >= p->classes)
            return SD_FAIL(SD_ERR_INVALID, "ref xent_bwd: label %d at index %d out of range", (int)labels[i], i);
        for (int j = 0; j < p->classes; j++) {
            const size_t o = (size_t)i * p->classes + j;
            dlogits[o] = (float)(((double)probs[o] - (j == labels[i] ? 1.0 : 0.0)) * scale);
        }
    }
    return SD_OK;
}

/* ---- elementwise ---------------------------------------------------------------------------- */

sd_status ref_add(size_t count, const float *a, const float *b, float *y) {
    if (!a || !b || !y) return REF_NULL("add");
    for (size_t i = 0; i < count; i++) y[i] = (float)((double)a[i] + b[i]);
    return SD_OK;
}

sd_status ref_axpy(size_t count, float alpha, const float *x, float *y) {
    if (!x || !y) return REF_NULL("axpy");
    for (size_t i = 0; i < count; i++) y[i] = (float)((double)y[i] + (double)alpha * x[i]);
    return SD_OK;
}

sd_status ref_scale(size_t count, float alpha, float *x) {
    if (!x) return REF_NULL("scale");
    for (size_t i = 0; i < count; i++) x[i] = (float)((double)x[i] * alpha);
    return SD_OK;
}

/* ---- dropout -------------------------------------------------------------------------------- */

sd_status ref_dropout_fwd(const sd_dropout_params *p, const float *x, float *y, uint8_t *mask) {
    if (!p || !x || !y || !mask) return REF_NULL("dropout_fwd");
    for (size_t i = 0; i < p->count; i++) {
        const float u = sd_dropout_uniform(p->seed, p->offset + i);
        mask[i] = u >= p->p ? 1 : 0;
        y[i] = mask[i] ? (float)((double)x[i] / (1.0 - p->p)) : 0.0f;
    }
    return SD_OK;
}

sd_status ref_dropout_bwd(const sd_dropout_params *p, const float *dy, const uint8_t *mask, float *dx) {
    if (!p || !dy || !mask || !dx) return REF_NULL("dropout_bwd");
    for (size_t i = 0; i < p->count; i++) dx[i] = mask[i] ? (float)((double)dy[i] / (1.0 - p->p)) : 0.0f;
    return SD_OK;
}

/* ---- SGD ------------------------------------------------------------------------------------ */

sd_status ref_sgd_update(const sd_sgd_params *p, float *w, const float *g, float *buf) {
    if (!p || !w || !g || (p->momentum != 0 && !buf)) return REF_NULL("sgd_update");
    for (size_t i = 0; i < p->count; i++) {
        double gp = (double)g[i] + (double)p->weight_decay * w[i];
        double d = gp;
        if (p->momentum != 0) {
            double b = p->first_step ? gp : (double)p->momentum * buf[i] + (1.0 - p->dampening) * gp;
            buf[i] = (float)b;
            d = p->nesterov ? gp + (double)p->momentum * b : b;
        }
        w[i] = (float)((double)w[i] - (double)p->lr * d);
    }
    return SD_OK;
}
