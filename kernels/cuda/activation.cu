/* activation.cu: ReLU forward and backward on the GPU, the CPU twin's semantics: y = x < 0 ? 0 : x
 * (NaN passes through), dx = y > 0 ? dy : 0 (from the forward's output, so the forward may run in
 * place and dx may alias dy); and a residual add fused with its ReLU, y = relu(a + b). */
#include "kernels/cuda/cuda_common.cuh"

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void relu_fwd_kernel(const float *x, float *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

static __global__ void add_relu_fwd_kernel(const float *a, const float *b, float *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float t = __fadd_rn(a[i], b[i]); /* no contraction: the CPU twin's bits */
        y[i] = t < 0.0f ? 0.0f : t;
    }
}

static __global__ void relu_bwd_kernel(const float *y, const float *dy, float *dx, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t relu_fwd_launch(const sd_kctx *k, const float *x, float *y, size_t n, cudaStream_t s) {
    relu_fwd_kernel<<<sd_cuda_grid(k, n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(x, y, n);
    return cudaGetLastError();
}

static cudaError_t relu_bwd_launch(const sd_kctx *k, const float *y, const float *dy, float *dx, size_t n,
                                   cudaStream_t s) {
    relu_bwd_kernel<<<sd_cuda_grid(k, n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(y, dy, dx, n);
    return cudaGetLastError();
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_add_relu_fwd(sd_kctx *k, size_t count, const float *a, const float *b, float *y) {
    if (!k || !a || !b || !y)
        return SD_FAIL(SD_ERR_INVALID, "add+relu fwd: NULL argument (context, a, b and y are required)");
    if (count == 0) return SD_OK;
    add_relu_fwd_kernel<<<sd_cuda_grid(k, count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(a, b, y, count);
    CUDA_CHECK(cudaGetLastError());
    return SD_OK;
}

extern "C" sd_status sd_cuda_relu_fwd(sd_kctx *k, size_t count, const float *x, float *y) {
    if (!k || !x || !y) return SD_FAIL(SD_ERR_INVALID, "relu fwd: NULL argument (context, x and y are required)");
    if (count == 0) return SD_OK;
    CUDA_CHECK(relu_fwd_launch(k, x, y, count, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_relu_bwd(sd_kctx *k, size_t count, const float *y, const float *dy, float *dx) {
    if (!k || !y || !dy || !dx)
        return SD_FAIL(SD_ERR_INVALID, "relu bwd: NULL argument (context, y, dy and dx are required)");
    if (count == 0) return SD_OK;
    CUDA_CHECK(relu_bwd_launch(k, y, dy, dx, count, k->stream));
    return SD_OK;
}
