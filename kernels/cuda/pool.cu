/* pool.cu: pooling over NCHW planes on the GPU with the CPU twin's semantics (floor mode, padding
 * at most half the kernel):
 *   max pool: padding acts as -inf; the first maximum in row-major window order wins, NaN
 *     propagates (the last NaN of a window wins); argmax is the flat index iy * w + ix within the
 *     (n, c) input plane. A window with nothing above -inf reports its first in-bounds element.
 *   average pool: count_include_pad=True (the divisor counts padded cells, not cells past them).
 *   global average pool: [n, c, h, w] -> [n, c], summed in double.
 * Forward kernels run one thread per output. The backward kernels gather (one thread per input
 * element, visiting the windows that cover it) instead of scattering with atomics: no atomics,
 * run-to-run identical, and the sums are taken in the CPU twin's order, so the max and average
 * pool gradients match the CPU backend bit for bit. An argmax entry outside its plane is found by a
 * check kernel and reported as SD_ERR_INVALID at the next synchronize or download (asynchronously:
 * the backward itself does not wait). */
#include "kernels/cuda/cuda_common.cuh"

/* Decomposes a flat output index into plane, row and column. */
static __device__ __forceinline__ void split3(size_t o, size_t plane, int cols, size_t *pl, int *r, int *c) {
    *pl = o / plane;
    const size_t rem = o - *pl * plane;
    *r = (int)(rem / (size_t)cols);
    *c = (int)(rem - (size_t)*r * (size_t)cols);
}

/* Outputs whose window (start o * s - pad, length k) covers input coordinate i: [lo, hi] within
 * [0, n_out). Empty when lo > hi. */
static __device__ __forceinline__ void covering(int i, int k, int s, int pad, int n_out, int *lo, int *hi) {
    const int a = i + pad - k + 1; /* smallest o * s that still reaches i */
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    const int h = (i + pad) / s;
    *hi = h < n_out - 1 ? h : n_out - 1;
}

/* PyTorch's count_include_pad divisor along one axis: the window clipped to the padded input. */
static __device__ __forceinline__ int pad_extent(int o, int s, int pad, int k, int n) {
    const int start = o * s - pad;
    const int end = start + k < n + pad ? start + k : n + pad;
    return end - start;
}

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void maxpool_fwd_kernel(const float *x, float *y, int32_t *argmax, size_t total, int h, int w, int oh,
                                          int ow, int kh, int kw, int sh, int sw, int ph, int pw) {
    const size_t ohw = (size_t)oh * ow, hw = (size_t)h * w;
    for (size_t o = (size_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (size_t)gridDim.x * blockDim.x) {
        size_t pl;
        int oy, ox;
        split3(o, ohw, ow, &pl, &oy, &ox);
        const float *xp = x + pl * hw;
        const int h0 = oy * sh - ph, w0 = ox * sw - pw;
        const int hs = h0 > 0 ? h0 : 0, he = h0 + kh < h ? h0 + kh : h;
        const int ws = w0 > 0 ? w0 : 0, we = w0 + kw < w ? w0 + kw : w;
        float best = -INFINITY;
        int idx = hs * w + ws;
        for (int iy = hs; iy < he; iy++)
            for (int ix = ws; ix < we; ix++) {
                const float v = xp[iy * w + ix];
                if (v > best || v != v) {
                    best = v;
                    idx = iy * w + ix;
                }
            }
        y[o] = best;
        argmax[o] = idx;
    }
}

static __global__ void maxpool_check_kernel(const int32_t *argmax, size_t total, int hw, int *flag) {
    for (size_t o = (size_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (size_t)gridDim.x * blockDim.x)
        if (argmax[o] < 0 || argmax[o] >= hw) atomicMin(flag, o < 0x7ffffffe ? (int)o : 0x7ffffffe);
}

static __global__ void maxpool_bwd_kernel(const float *dy, const int32_t *argmax, float *dx, size_t total, int h, int w,
                                          int oh, int ow, int kh, int kw, int sh, int sw, int ph, int pw) {
    const size_t ohw = (size_t)oh * ow, hw = (size_t)h * w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t pl;
        int iy, ix;
        split3(i, hw, w, &pl, &iy, &ix);
        int oy0, oy1, ox0, ox1;
        covering(iy, kh, sh, ph, oh, &oy0, &oy1);
        covering(ix, kw, sw, pw, ow, &ox0, &ox1);
        const float *g = dy + pl * ohw;
        const int32_t *a = argmax + pl * ohw;
        const int32_t me = iy * w + ix;
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++)
            for (int ox = ox0; ox <= ox1; ox++) {
                const int o = oy * ow + ox;
                if (a[o] == me) acc += g[o];
            }
        dx[i] = acc;
    }
}

static __global__ void avgpool_fwd_kernel(const float *x, float *y, size_t total, int h, int w, int oh, int ow, int kh,
                                          int kw, int sh, int sw, int ph, int pw) {
    const size_t ohw = (size_t)oh * ow, hw = (size_t)h * w;
    for (size_t o = (size_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (size_t)gridDim.x * blockDim.x) {
        size_t pl;
        int oy, ox;
        split3(o, ohw, ow, &pl, &oy, &ox);
        const float *xp = x + pl * hw;
        const int h0 = oy * sh - ph, w0 = ox * sw - pw;
        const int hs = h0 > 0 ? h0 : 0, he = h0 + kh < h ? h0 + kh : h;
        const int ws = w0 > 0 ? w0 : 0, we = w0 + kw < w ? w0 + kw : w;
        /* Row sums, then their sum down the window: the CPU twin's order. */
        float total_sum = 0.0f;
        for (int iy = hs; iy < he; iy++) {
            float rs = 0.0f;
            for (int ix = ws; ix < we; ix++) rs += xp[iy * w + ix];
            total_sum = iy == hs ? rs : total_sum + rs;
        }
        const int div = pad_extent(oy, sh, ph, kh, h) * pad_extent(ox, sw, pw, kw, w);
        y[o] = total_sum / (float)div;
    }
}

static __global__ void avgpool_bwd_kernel(const float *dy, float *dx, size_t total, int h, int w, int oh, int ow,
                                          int kh, int kw, int sh, int sw, int ph, int pw) {
    const size_t ohw = (size_t)oh * ow, hw = (size_t)h * w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t pl;
        int iy, ix;
        split3(i, hw, w, &pl, &iy, &ix);
        int oy0, oy1, ox0, ox1;
        covering(iy, kh, sh, ph, oh, &oy0, &oy1);
        covering(ix, kw, sw, pw, ow, &ox0, &ox1);
        const float *g = dy + pl * ohw;
        /* The CPU twin spreads dy / divisor down the window rows first (oy ascending), then along
         * each row by window column (ox descending for a fixed input column). */
        float acc = 0.0f;
        for (int ox = ox1; ox >= ox0; ox--) {
            const float dw = (float)pad_extent(ox, sw, pw, kw, w);
            float t = 0.0f;
            for (int oy = oy0; oy <= oy1; oy++) {
                const float dh = (float)pad_extent(oy, sh, ph, kh, h);
                t += g[oy * ow + ox] / (dh * dw);
            }
            acc += t;
        }
        dx[i] = acc;
    }
}

/* One warp per (n, c) plane. */
static __global__ void gap_fwd_kernel(const float *x, float *y, size_t planes, size_t hw, double inv) {
    const size_t lane = threadIdx.x & 31;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const size_t warps = ((size_t)gridDim.x * blockDim.x) >> 5;
    for (size_t pl = warp; pl < planes; pl += warps) {
        const float *xp = x + pl * hw;
        double s = 0.0;
        for (size_t i = lane; i < hw; i += 32) s += (double)xp[i];
        s = sd_warp_sum(s);
        if (lane == 0) y[pl] = (float)(s * inv);
    }
}

static __global__ void gap_bwd_kernel(const float *dy, float *dx, size_t total, size_t hw, float inv) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dy[i / hw] * inv;
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

#define SD_POOL_GEOM p->h, p->w, p->oh, p->ow, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw

static size_t planes_of(const sd_pool2d_params *p) { return (size_t)p->n * (size_t)p->c; }

static cudaError_t maxpool_fwd_launch(const sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y,
                                      int32_t *argmax, cudaStream_t s) {
    const size_t total = planes_of(p) * (size_t)p->oh * (size_t)p->ow;
    maxpool_fwd_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(x, y, argmax, total,
                                                                                           SD_POOL_GEOM);
    return cudaGetLastError();
}

static cudaError_t maxpool_bwd_launch(const sd_kctx *k, const sd_pool2d_params *p, const float *dy,
                                      const int32_t *argmax, float *dx, cudaStream_t s) {
    const size_t outs = planes_of(p) * (size_t)p->oh * (size_t)p->ow;
    maxpool_check_kernel<<<sd_cuda_grid(k, outs, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(
        argmax, outs, p->h * p->w, &k->d_small->flags[SD_CUDA_FLAG_ARGMAX]);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    const size_t total = planes_of(p) * (size_t)p->h * (size_t)p->w;
    maxpool_bwd_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(dy, argmax, dx, total,
                                                                                           SD_POOL_GEOM);
    return cudaGetLastError();
}

static cudaError_t avgpool_fwd_launch(const sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y,
                                      cudaStream_t s) {
    const size_t total = planes_of(p) * (size_t)p->oh * (size_t)p->ow;
    avgpool_fwd_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(x, y, total, SD_POOL_GEOM);
    return cudaGetLastError();
}

static cudaError_t avgpool_bwd_launch(const sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx,
                                      cudaStream_t s) {
    const size_t total = planes_of(p) * (size_t)p->h * (size_t)p->w;
    avgpool_bwd_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(dy, dx, total,
                                                                                           SD_POOL_GEOM);
    return cudaGetLastError();
}

static cudaError_t gap_fwd_launch(const sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y,
                                  cudaStream_t s) {
    const size_t planes = planes_of(p), hw = (size_t)p->h * (size_t)p->w;
    gap_fwd_kernel<<<sd_cuda_grid(k, planes * 32, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(x, y, planes, hw,
                                                                                             1.0 / (double)hw);
    return cudaGetLastError();
}

static cudaError_t gap_bwd_launch(const sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx,
                                  cudaStream_t s) {
    const size_t hw = (size_t)p->h * (size_t)p->w, total = planes_of(p) * hw;
    gap_bwd_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(dy, dx, total, hw,
                                                                                       1.0f / (float)hw);
    return cudaGetLastError();
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_maxpool_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y,
                                         int32_t *argmax) {
    if (!k || !p || !x || !y || !argmax)
        return SD_FAIL(SD_ERR_INVALID, "maxpool2d fwd: NULL argument (context, params, x, y and argmax are required)");
    if ((size_t)p->h * (size_t)p->w > (size_t)INT32_MAX)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "maxpool2d fwd: input plane %dx%d exceeds the int32 argmax range", p->h,
                       p->w);
    CUDA_CHECK(maxpool_fwd_launch(k, p, x, y, argmax, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_maxpool_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, const int32_t *argmax,
                                         float *dx) {
    if (!k || !p || !dy || !argmax || !dx)
        return SD_FAIL(SD_ERR_INVALID, "maxpool2d bwd: NULL argument (context, params, dy, argmax and dx are required)");
    if ((size_t)p->h * (size_t)p->w > (size_t)INT32_MAX)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "maxpool2d bwd: input plane %dx%d exceeds the int32 argmax range", p->h,
                       p->w);
    k->argmax_check_pending = 1;
    CUDA_CHECK(maxpool_bwd_launch(k, p, dy, argmax, dx, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_avgpool_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y) {
    if (!k || !p || !x || !y)
        return SD_FAIL(SD_ERR_INVALID, "avgpool2d fwd: NULL argument (context, params, x and y are required)");
    CUDA_CHECK(avgpool_fwd_launch(k, p, x, y, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_avgpool_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx) {
    if (!k || !p || !dy || !dx)
        return SD_FAIL(SD_ERR_INVALID, "avgpool2d bwd: NULL argument (context, params, dy and dx are required)");
    CUDA_CHECK(avgpool_bwd_launch(k, p, dy, dx, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_gap_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y) {
    if (!k || !p || !x || !y)
        return SD_FAIL(SD_ERR_INVALID, "global_avgpool fwd: NULL argument (context, params, x and y are required)");
    CUDA_CHECK(gap_fwd_launch(k, p, x, y, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_gap_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx) {
    if (!k || !p || !dy || !dx)
        return SD_FAIL(SD_ERR_INVALID, "global_avgpool bwd: NULL argument (context, params, dy and dx are required)");
    CUDA_CHECK(gap_bwd_launch(k, p, dy, dx, k->stream));
    return SD_OK;
}
