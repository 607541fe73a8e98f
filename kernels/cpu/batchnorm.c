/* batchnorm.c: CPU batch normalisation over (N, H, W) per channel, NCHW, PyTorch semantics:
 * training normalises with the biased batch variance and feeds the unbiased one (n / (n - 1))
 * into running_var; running = (1 - momentum) * running + momentum * batch. Channels run in
 * parallel; per-channel sums are accumulated in double, shifted by the channel's first value so
 * that a large mean does not cancel the variance away. With p->relu the forward applies the ReLU
 * in the same pass and bn_relu_bwd masks the gradient as it reads it: one read and one write of
 * the activation fewer each way than batch norm and ReLU as two layers, with the same bits. */
#include <math.h>

#include <string.h>

#include "kernels/cpu/cpu_kernels.h"

/* Below this many elements a kernel runs on the calling thread (a team costs microseconds). */
#define SD_BN_PAR_MIN 16384

sd_status sd_cpu_bn_fwd_train(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                              const float *beta, float *y, float *running_mean, float *running_var,
                              float *save_mean, float *save_invstd) {
    if (!k || !p || !x || !gamma || !beta || !y || !running_mean || !running_var || !save_mean || !save_invstd)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d fwd_train: NULL argument (context, params, x, gamma, beta, y, running_mean, "
                       "running_var, save_mean and save_invstd are all required)");
    const int N = p->n, C = p->c;
    const size_t HW = (size_t)p->h * (size_t)p->w;
    const size_t M = (size_t)N * HW;
    if (M < 2)
        return SD_FAIL(SD_ERR_SHAPE,
                       "batchnorm2d fwd_train: input [%d,%d,%d,%d] has one value per channel; training needs "
                       "more than one (as in PyTorch)",
                       p->n, p->c, p->h, p->w);
    const size_t nstride = (size_t)C * HW;
    const double mom = p->momentum, eps = p->eps;
    const double inv_m = 1.0 / (double)M, unbias = (double)M / (double)(M - 1);

#pragma omp parallel for num_threads(k->threads) schedule(static) if (M * (size_t)C >= SD_BN_PAR_MIN)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW;
        const double pivot = xc[0];
        double s = 0.0, ss = 0.0;
        for (int n = 0; n < N; n++) {
            const float *row = xc + (size_t)n * nstride;
#pragma omp simd reduction(+ : s, ss)
            for (size_t i = 0; i < HW; i++) {
                const double d = (double)row[i] - pivot;
                s += d;
                ss += d * d;
            }
        }
        const double dmean = s * inv_m;
        double var = ss * inv_m - dmean * dmean;
        if (var < 0.0) var = 0.0;
        const double mean = pivot + dmean;
        const double invstd = 1.0 / sqrt(var + eps);
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
        running_mean[c] = (float)((1.0 - mom) * running_mean[c] + mom * mean);
        running_var[c] = (float)((1.0 - mom) * running_var[c] + mom * var * unbias);

        /* The mean as a float pair hi + lo: x - hi is exact near the mean, so y keeps full
         * precision even when |mean| >> std. */
        const float mhi = (float)mean, mlo = (float)(mean - (double)mhi);
        const float a = gamma[c] * (float)invstd, b = beta[c];
        float *yc = y + (size_t)c * HW;
        for (int n = 0; n < N; n++) {
            const float *row = xc + (size_t)n * nstride;
            float *out = yc + (size_t)n * nstride;
            if (p->relu) {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) {
                    const float v = ((row[i] - mhi) - mlo) * a + b;
                    out[i] = v < 0.0f ? 0.0f : v;
                }
            } else {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) out[i] = ((row[i] - mhi) - mlo) * a + b;
            }
        }
    }
    return SD_OK;
}

sd_status sd_cpu_bn_fwd_eval(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                             const float *beta, const float *running_mean, const float *running_var, float *y) {
    if (!k || !p || !x || !gamma || !beta || !running_mean || !running_var || !y)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d fwd_eval: NULL argument (context, params, x, gamma, beta, running_mean, "
                       "running_var and y are all required)");
    const int N = p->n, C = p->c;
    const size_t HW = (size_t)p->h * (size_t)p->w;
    const float eps = p->eps;

#pragma omp parallel for collapse(2) num_threads(k->threads) schedule(static) \
    if ((size_t)N * (size_t)C * HW >= SD_BN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            const float a = gamma[c] / sqrtf(running_var[c] + eps), m = running_mean[c], b = beta[c];
            const size_t off = ((size_t)n * (size_t)C + (size_t)c) * HW;
            const float *in = x + off;
            float *out = y + off;
            if (p->relu) {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) {
                    const float v = (in[i] - m) * a + b;
                    out[i] = v < 0.0f ? 0.0f : v;
                }
            } else {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) out[i] = (in[i] - m) * a + b;
            }
        }
    }
    return SD_OK;
}

/* dx = gamma * invstd / M * (M * g - sum(g) - xhat * sum(g * xhat)), written as
 * dx = A * g + B * (x - mean) + C0 with per-channel A, B, C0; g = dy, or with a fused ReLU (y given)
 * g = y > 0 ? dy : 0, relu_bwd's expression. */
/* y > 0 ? g : +0.0f, as relu_bwd computes it, by a bit mask: GCC leaves the select as a branch
 * inside the double reductions below (7x slower on random signs), but vectorises this. */
static inline float relu_mask(float y, float g) {
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= -(uint32_t)(y > 0.0f);
    float r;
    memcpy(&r, &bits, sizeof r);
    return r;
}

static sd_status bn_bwd(sd_kctx *k, const sd_bn_params *p, const float *x, const float *y, const float *gamma,
                        const float *save_mean, const float *save_invstd, const float *dy, float *dx, float *dgamma,
                        float *dbeta) {
    const int N = p->n, C = p->c;
    const size_t HW = (size_t)p->h * (size_t)p->w;
    const size_t M = (size_t)N * HW;
    const size_t nstride = (size_t)C * HW;
    const double inv_m = 1.0 / (double)M;

#pragma omp parallel for num_threads(k->threads) schedule(static) if (M * (size_t)C >= SD_BN_PAR_MIN)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW, *dyc = dy + (size_t)c * HW, *yc = y ? y + (size_t)c * HW : NULL;
        const float mean = save_mean[c];
        const double invstd = save_invstd[c];
        double sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++) {
            const float *xr = xc + (size_t)n * nstride, *gr = dyc + (size_t)n * nstride;
            if (yc) {
                const float *yr = yc + (size_t)n * nstride;
#pragma omp simd reduction(+ : sdy, sdyx)
                for (size_t i = 0; i < HW; i++) {
                    const double g = relu_mask(yr[i], gr[i]);
                    sdy += g;
                    sdyx += g * (double)(xr[i] - mean);
                }
            } else {
#pragma omp simd reduction(+ : sdy, sdyx)
                for (size_t i = 0; i < HW; i++) {
                    const double g = gr[i];
                    sdy += g;
                    sdyx += g * (double)(xr[i] - mean);
                }
            }
        }
        const double dg = sdyx * invstd; /* sum(g * xhat) */
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)dg;
        if (!dx) continue;
        const double A = (double)gamma[c] * invstd;
        const float a = (float)A, b = (float)(-A * invstd * dg * inv_m), c0 = (float)(-A * sdy * inv_m);
        float *dxc = dx + (size_t)c * HW;
        for (int n = 0; n < N; n++) {
            const float *xr = xc + (size_t)n * nstride, *gr = dyc + (size_t)n * nstride;
            float *out = dxc + (size_t)n * nstride;
            if (yc) {
                const float *yr = yc + (size_t)n * nstride;
#pragma omp simd
                for (size_t i = 0; i < HW; i++) out[i] = a * relu_mask(yr[i], gr[i]) + b * (xr[i] - mean) + c0;
            } else {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) out[i] = a * gr[i] + b * (xr[i] - mean) + c0;
            }
        }
    }
    return SD_OK;
}

sd_status sd_cpu_bn_bwd(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                        const float *save_mean, const float *save_invstd, const float *dy, float *dx,
                        float *dgamma, float *dbeta) {
    if (!k || !p || !x || !gamma || !save_mean || !save_invstd || !dy || !dgamma || !dbeta)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d bwd: NULL argument (context, params, x, gamma, save_mean, save_invstd, dy, "
                       "dgamma and dbeta are required; only dx may be NULL)");
    if (p->relu)
        return SD_FAIL(SD_ERR_INVALID, "batchnorm2d bwd: the params fuse a ReLU; its backward is bn_relu_bwd");
    return bn_bwd(k, p, x, NULL, gamma, save_mean, save_invstd, dy, dx, dgamma, dbeta);
}

sd_status sd_cpu_bn_relu_bwd(sd_kctx *k, const sd_bn_params *p, const float *x, const float *y, const float *gamma,
                             const float *save_mean, const float *save_invstd, const float *dy, float *dx,
                             float *dgamma, float *dbeta) {
    if (!k || !p || !x || !y || !gamma || !save_mean || !save_invstd || !dy || !dgamma || !dbeta)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d+relu bwd: NULL argument (context, params, x, y, gamma, save_mean, save_invstd, "
                       "dy, dgamma and dbeta are required; only dx may be NULL)");
    return bn_bwd(k, p, x, y, gamma, save_mean, save_invstd, dy, dx, dgamma, dbeta);
}
