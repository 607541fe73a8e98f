/* batchnorm.cu: batch normalisation over (N, H, W) per channel on the GPU, NCHW, PyTorch semantics
 * as the CPU twin: training normalises with the biased batch variance and feeds the unbiased one
 * (m / (m - 1)) into running_var; running = (1 - momentum) * running + momentum * batch.
 *
 * Training forward and backward run one block per channel. The statistics are two-pass in double
 * (mean first, then the sum of squared deviations from it), so a large mean cannot cancel the
 * variance away; the normalisation uses the CPU twin's float arithmetic (the mean as a float pair
 * hi + lo, a = gamma * invstd), so both backends agree to rounding. One block per channel is
 * plenty for CIFAR-sized layers (m = N*H*W of a few thousand to a few hundred thousand); very wide
 * batches with few channels would want a split reduction. A fused ReLU (p->relu, bn_relu_bwd) is
 * the CPU twin's: the forward clamps as it writes, the backward masks dy by y > 0 as it reads. */
#include "kernels/cuda/cuda_common.cuh"

#define SD_BN_THREADS 512

/* Element j (0 <= j < N*HW) of channel c: sample j / HW, offset j % HW within the plane. */
static __device__ __forceinline__ size_t bn_index(size_t j, size_t hw, size_t nstride, size_t c) {
    if (j <= 0xffffffffu && hw <= 0xffffffffu) { /* 32-bit division: a fraction of the 64-bit cost */
        const unsigned q = (unsigned)j / (unsigned)hw, r = (unsigned)j - q * (unsigned)hw;
        return (size_t)q * nstride + c * hw + r;
    }
    return (j / hw) * nstride + c * hw + (j % hw);
}

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void bn_fwd_train_kernel(const float *x, const float *gamma, const float *beta, float *y,
                                           float *running_mean, float *running_var, float *save_mean,
                                           float *save_invstd, int C, size_t hw, size_t m, double eps, double mom,
                                           bool relu) {
    __shared__ double sh[33];
    const int c = blockIdx.x;
    const size_t nstride = (size_t)C * hw;
    /* pass 1: mean */
    double s = 0.0;
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) s += (double)x[bn_index(j, hw, nstride, c)];
    const double mean = sd_block_sum(s, sh) / (double)m;
    /* pass 2: biased variance about that mean */
    double ss = 0.0;
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) {
        const double d = (double)x[bn_index(j, hw, nstride, c)] - mean;
        ss += d * d;
    }
    const double var = sd_block_sum(ss, sh) / (double)m;
    const double invstd = 1.0 / sqrt(var + eps);
    if (threadIdx.x == 0) {
        const double unbias = (double)m / (double)(m - 1);
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
        running_mean[c] = (float)((1.0 - mom) * running_mean[c] + mom * mean);
        running_var[c] = (float)((1.0 - mom) * running_var[c] + mom * var * unbias);
    }
    /* pass 3: y = ((x - hi) - lo) * a + b, the CPU twin's arithmetic */
    const float mhi = (float)mean, mlo = (float)(mean - (double)mhi);
    const float a = gamma[c] * (float)invstd, b = beta[c];
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) {
        const size_t i = bn_index(j, hw, nstride, c);
        const float v = ((x[i] - mhi) - mlo) * a + b;
        y[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

static __global__ void bn_fwd_eval_kernel(const float *x, const float *gamma, const float *beta,
                                          const float *running_mean, const float *running_var, float *y, int C,
                                          size_t hw, size_t total, float eps, bool relu) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)((i / hw) % (size_t)C);
        const float a = gamma[c] / sqrtf(running_var[c] + eps);
        const float v = (x[i] - running_mean[c]) * a + beta[c];
        y[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

/* dx = gamma * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat)), written as
 * dx = A * dy + B * (x - mean) + C0 with per-channel A, B, C0 (the CPU twin's form). */
/* y: the fused ReLU's output (its mask y > 0 applies to dy), or NULL. */
static __global__ void bn_bwd_kernel(const float *x, const float *y, const float *gamma, const float *save_mean,
                                     const float *save_invstd, const float *dy, float *dx, float *dgamma, float *dbeta,
                                     int C, size_t hw, size_t m) {
    __shared__ double sh[33];
    const int c = blockIdx.x;
    const size_t nstride = (size_t)C * hw;
    const float mean = save_mean[c];
    const double invstd = save_invstd[c];
    double sdy = 0.0, sdyx = 0.0;
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) {
        const size_t i = bn_index(j, hw, nstride, c);
        const double g = !y || y[i] > 0.0f ? dy[i] : 0.0f;
        sdy += g;
        sdyx += g * (double)(x[i] - mean);
    }
    sdy = sd_block_sum(sdy, sh);
    sdyx = sd_block_sum(sdyx, sh);
    const double dg = sdyx * invstd; /* sum(dy * xhat) */
    if (threadIdx.x == 0) {
        dbeta[c] = (float)sdy;
        dgamma[c] = (float)dg;
    }
    if (!dx) return;
    const double inv_m = 1.0 / (double)m;
    const double A = (double)gamma[c] * invstd;
    const float a = (float)A, b = (float)(-A * invstd * dg * inv_m), c0 = (float)(-A * sdy * inv_m);
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) {
        const size_t i = bn_index(j, hw, nstride, c);
        dx[i] = a * (!y || y[i] > 0.0f ? dy[i] : 0.0f) + b * (x[i] - mean) + c0;
    }
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t bn_fwd_train_launch(const sd_bn_params *p, const float *x, const float *gamma, const float *beta,
                                       float *y, float *rm, float *rv, float *sm, float *si, cudaStream_t s) {
    const size_t hw = (size_t)p->h * (size_t)p->w, m = (size_t)p->n * hw;
    bn_fwd_train_kernel<<<p->c, SD_BN_THREADS, 0, s>>>(x, gamma, beta, y, rm, rv, sm, si, p->c, hw, m,
                                                       (double)p->eps, (double)p->momentum, p->relu);
    return cudaGetLastError();
}

static cudaError_t bn_fwd_eval_launch(const sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                                      const float *beta, const float *rm, const float *rv, float *y, cudaStream_t s) {
    const size_t hw = (size_t)p->h * (size_t)p->w, total = (size_t)p->n * (size_t)p->c * hw;
    bn_fwd_eval_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(x, gamma, beta, rm, rv, y,
                                                                                           p->c, hw, total, p->eps,
                                                                                           p->relu);
    return cudaGetLastError();
}

static cudaError_t bn_bwd_launch(const sd_bn_params *p, const float *x, const float *y, const float *gamma, const float *sm,
                                 const float *si, const float *dy, float *dx, float *dgamma, float *dbeta,
                                 cudaStream_t s) {
    const size_t hw = (size_t)p->h * (size_t)p->w, m = (size_t)p->n * hw;
    bn_bwd_kernel<<<p->c, SD_BN_THREADS, 0, s>>>(x, y, gamma, sm, si, dy, dx, dgamma, dbeta, p->c, hw, m);
    return cudaGetLastError();
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_bn_fwd_train(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                                          const float *beta, float *y, float *running_mean, float *running_var,
                                          float *save_mean, float *save_invstd) {
    if (!k || !p || !x || !gamma || !beta || !y || !running_mean || !running_var || !save_mean || !save_invstd)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d fwd_train: NULL argument (context, params, x, gamma, beta, y, running_mean, "
                       "running_var, save_mean and save_invstd are all required)");
    if ((size_t)p->n * (size_t)p->h * (size_t)p->w < 2)
        return SD_FAIL(SD_ERR_SHAPE,
                       "batchnorm2d fwd_train: input [%d,%d,%d,%d] has one value per channel; training needs "
                       "more than one (as in PyTorch)",
                       p->n, p->c, p->h, p->w);
    CUDA_CHECK(bn_fwd_train_launch(p, x, gamma, beta, y, running_mean, running_var, save_mean, save_invstd, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_bn_fwd_eval(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                                         const float *beta, const float *running_mean, const float *running_var,
                                         float *y) {
    if (!k || !p || !x || !gamma || !beta || !running_mean || !running_var || !y)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d fwd_eval: NULL argument (context, params, x, gamma, beta, running_mean, "
                       "running_var and y are all required)");
    CUDA_CHECK(bn_fwd_eval_launch(k, p, x, gamma, beta, running_mean, running_var, y, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_bn_bwd(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                                    const float *save_mean, const float *save_invstd, const float *dy, float *dx,
                                    float *dgamma, float *dbeta) {
    if (!k || !p || !x || !gamma || !save_mean || !save_invstd || !dy || !dgamma || !dbeta)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d bwd: NULL argument (context, params, x, gamma, save_mean, save_invstd, dy, "
                       "dgamma and dbeta are required; only dx may be NULL)");
    if (p->relu)
        return SD_FAIL(SD_ERR_INVALID, "batchnorm2d bwd: the params fuse a ReLU; its backward is bn_relu_bwd");
    CUDA_CHECK(bn_bwd_launch(p, x, NULL, gamma, save_mean, save_invstd, dy, dx, dgamma, dbeta, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_bn_relu_bwd(sd_kctx *k, const sd_bn_params *p, const float *x, const float *y,
                                         const float *gamma, const float *save_mean, const float *save_invstd,
                                         const float *dy, float *dx, float *dgamma, float *dbeta) {
    if (!k || !p || !x || !y || !gamma || !save_mean || !save_invstd || !dy || !dgamma || !dbeta)
        return SD_FAIL(SD_ERR_INVALID,
                       "batchnorm2d+relu bwd: NULL argument (context, params, x, y, gamma, save_mean, save_invstd, "
                       "dy, dgamma and dbeta are required; only dx may be NULL)");
    CUDA_CHECK(bn_bwd_launch(p, x, y, gamma, save_mean, save_invstd, dy, dx, dgamma, dbeta, k->stream));
    return SD_OK;
}
