/* dropout.cu: dropout on the GPU with the CPU backend's counter-based mask: keep element i when
 * sd_dropout_uniform(seed, offset + i) >= p (ops.h), kept values scaled by 1 / (1 - p). The draw is
 * a device twin of ops.h's host function with identical integer arithmetic and the same exact
 * float conversion, so both backends produce bitwise equal masks (test_cuda_parity checks it).
 * y may alias x, dx may alias dy. */
#include "kernels/cuda/cuda_common.cuh"

/* ---- the draw: keep in step with sd_dropout_uniform in kernels/ops.h --------------------------- */

static __device__ __forceinline__ float dropout_uniform_dev(uint64_t seed, uint64_t index) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f); /* 24 bits: the conversion and the scaling are exact */
}

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void dropout_fwd_kernel(const float *x, float *y, uint8_t *mask, size_t n, float prob, float scale,
                                          uint64_t seed, uint64_t offset) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int keep = dropout_uniform_dev(seed, offset + (uint64_t)i) >= prob;
        mask[i] = (uint8_t)keep;
        y[i] = keep ? x[i] * scale : 0.0f;
    }
}

static __global__ void dropout_bwd_kernel(const float *dy, const uint8_t *mask, float *dx, size_t n, float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t dropout_fwd_launch(const sd_kctx *k, const sd_dropout_params *p, const float *x, float *y,
                                      uint8_t *mask, cudaStream_t s) {
    const float scale = 1.0f / (1.0f - p->p); /* as the CPU twin computes it */
    dropout_fwd_kernel<<<sd_cuda_grid(k, p->count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(
        x, y, mask, p->count, p->p, scale, p->seed, p->offset);
    return cudaGetLastError();
}

static cudaError_t dropout_bwd_launch(const sd_kctx *k, const sd_dropout_params *p, const float *dy,
                                      const uint8_t *mask, float *dx, cudaStream_t s) {
    const float scale = 1.0f / (1.0f - p->p);
    dropout_bwd_kernel<<<sd_cuda_grid(k, p->count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(dy, mask, dx, p->count,
                                                                                               scale);
    return cudaGetLastError();
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_dropout_fwd(sd_kctx *k, const sd_dropout_params *p, const float *x, float *y,
                                         uint8_t *mask) {
    if (!k || !p || !x || !y || !mask)
        return SD_FAIL(SD_ERR_INVALID, "dropout fwd: NULL argument (context, params, x, y and mask are required)");
    if (p->count == 0) return SD_OK;
    CUDA_CHECK(dropout_fwd_launch(k, p, x, y, mask, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_dropout_bwd(sd_kctx *k, const sd_dropout_params *p, const float *dy, const uint8_t *mask,
                                         float *dx) {
    if (!k || !p || !dy || !mask || !dx)
        return SD_FAIL(SD_ERR_INVALID, "dropout bwd: NULL argument (context, params, dy, mask and dx are required)");
    if (p->count == 0) return SD_OK;
    CUDA_CHECK(dropout_bwd_launch(k, p, dy, mask, dx, k->stream));
    return SD_OK;
}
