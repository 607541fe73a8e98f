/* elementwise.cu: the elementwise ops of residual adds and gradient sums on the GPU: y = a + b,
 * y += alpha * x, x *= alpha, and the finiteness check of a summed gradient (a device flag read
 * back with the loss mirror). Outputs may alias inputs element for element (y == a or y == b). */
#include "kernels/cuda/cuda_common.cuh"

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void add_kernel(const float *a, const float *b, float *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

static __global__ void axpy_kernel(float alpha, const float *x, float *y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += alpha * x[i];
}

static __global__ void scale_kernel(float alpha, float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

/* Any non-finite element clears the flag to 0 (every writer writes the same value). */
static __global__ void nonfinite_kernel(const float *x, size_t n, int *flag) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        if (!isfinite(x[i])) *flag = 0;
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t add_launch(const sd_kctx *k, const float *a, const float *b, float *y, size_t n, cudaStream_t s) {
    add_kernel<<<sd_cuda_grid(k, n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(a, b, y, n);
    return cudaGetLastError();
}

static cudaError_t axpy_launch(const sd_kctx *k, float alpha, const float *x, float *y, size_t n, cudaStream_t s) {
    axpy_kernel<<<sd_cuda_grid(k, n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(alpha, x, y, n);
    return cudaGetLastError();
}

static cudaError_t scale_launch(const sd_kctx *k, float alpha, float *x, size_t n, cudaStream_t s) {
    scale_kernel<<<sd_cuda_grid(k, n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(alpha, x, n);
    return cudaGetLastError();
}

static cudaError_t nonfinite_launch(const sd_kctx *k, const float *x, size_t n, int *flag, cudaStream_t s) {
    cudaError_t e = cudaMemsetAsync(flag, 0x7f, sizeof(int), s); /* SD_CUDA_FLAG_NONE */
    if (e != cudaSuccess) return e;
    nonfinite_kernel<<<sd_cuda_grid(k, n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(x, n, flag);
    return cudaGetLastError();
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_add(sd_kctx *k, size_t count, const float *a, const float *b, float *y) {
    if (!k || !a || !b || !y)
        return SD_FAIL(SD_ERR_INVALID, "elementwise add: NULL argument (context, a, b and y are required)");
    if (count == 0) return SD_OK;
    CUDA_CHECK(add_launch(k, a, b, y, count, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_axpy(sd_kctx *k, size_t count, float alpha, const float *x, float *y) {
    if (!k || !x || !y)
        return SD_FAIL(SD_ERR_INVALID, "elementwise axpy: NULL argument (context, x and y are required)");
    if (count == 0) return SD_OK;
    CUDA_CHECK(axpy_launch(k, alpha, x, y, count, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_scale(sd_kctx *k, size_t count, float alpha, float *x) {
    if (!k || !x) return SD_FAIL(SD_ERR_INVALID, "elementwise scale: NULL argument (context and x are required)");
    if (count == 0) return SD_OK;
    CUDA_CHECK(scale_launch(k, alpha, x, count, k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_all_finite(sd_kctx *k, size_t count, const float *x, bool *all) {
    if (!k || !x || !all)
        return SD_FAIL(SD_ERR_INVALID, "elementwise all_finite: NULL argument (context, x and all are required)");
    if (count == 0) {
        *all = true;
        return SD_OK;
    }
    CUDA_CHECK(nonfinite_launch(k, x, count, &k->d_small->flags[SD_CUDA_FLAG_NONFINITE], k->stream));
    TRY(sd_cuda_fetch_small(k));
    *all = k->h_small->flags[SD_CUDA_FLAG_NONFINITE] == SD_CUDA_FLAG_NONE;
    return SD_OK;
}
