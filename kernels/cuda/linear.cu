/* linear.cu: the fully connected layer on the GPU with cuBLAS sgemm, PyTorch layout (x [n, in],
 * W [out, in], row-major): y = x W^T + b; backward dx = dy W, dW = dy^T x, db = column sums of dy.
 *
 * cuBLAS is column-major; a row-major [r][c] matrix is the column-major c x r matrix of its
 * transpose, so each row-major product C = A B is computed as C^T = B^T A^T with the operands
 * swapped (the usual trick):
 *   y^T  [out x n]  = W  (W^T stored, transposed)     * x^T        -> sgemm(T, N, out, n, in)
 *   dW^T [in x out] = x^T                              * (dy^T)^T   -> sgemm(N, T, in, out, n)
 *   dx^T [in x n]   = W^T (stored as is)               * dy^T       -> sgemm(N, N, in, n, out)
 * As in the CPU twin, the bias is broadcast into y first and the GEMM accumulates onto it (beta 1).
 * The handle's math mode is CUBLAS_DEFAULT_MATH (no TF32, see backend_cuda.cu). */
#include "kernels/cuda/cuda_common.cuh"

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void bias_broadcast_kernel(const float *b, float *y, size_t total, int out) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % (size_t)out];
}

/* db[j] = sum_i dy[i][j], one thread per column (adjacent threads read adjacent columns), in double. */
static __global__ void bias_grad_kernel(const float *dy, float *db, int n, int out) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < out; j += gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += (double)dy[(size_t)i * out + j];
        db[j] = (float)s;
    }
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t bias_broadcast_launch(const sd_kctx *k, const float *b, float *y, int n, int out, cudaStream_t s) {
    const size_t total = (size_t)n * (size_t)out;
    bias_broadcast_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(b, y, total, out);
    return cudaGetLastError();
}

static cudaError_t bias_grad_launch(const sd_kctx *k, const float *dy, float *db, int n, int out, cudaStream_t s) {
    bias_grad_kernel<<<sd_cuda_grid(k, (size_t)out, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(dy, db, n, out);
    return cudaGetLastError();
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_linear_fwd(sd_kctx *k, const sd_linear_params *p, const float *x, const float *w,
                                        const float *b, float *y) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "linear fwd: NULL context or params");
    if (!x || !w || !y)
        return SD_FAIL(SD_ERR_INVALID, "linear fwd: NULL tensor (x %p, w %p, y %p are required)", (const void *)x,
                       (const void *)w, (const void *)y);
    if (p->has_bias && !b) return SD_FAIL(SD_ERR_INVALID, "linear fwd: has_bias is set but the bias b is NULL");
    const int n = p->n, in = p->in, out = p->out;
    if (p->has_bias) CUDA_CHECK(bias_broadcast_launch(k, b, y, n, out, k->stream));
    const float one = 1.0f, beta = p->has_bias ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasSgemm(k->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, in, x, in, &beta, y, out));
    return SD_OK;
}

extern "C" sd_status sd_cuda_linear_bwd(sd_kctx *k, const sd_linear_params *p, const float *x, const float *w,
                                        const float *dy, float *dx, float *dw, float *db) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "linear bwd: NULL context or params");
    if (!x || !w || !dy || !dw)
        return SD_FAIL(SD_ERR_INVALID, "linear bwd: NULL tensor (x %p, w %p, dy %p, dw %p are required)",
                       (const void *)x, (const void *)w, (const void *)dy, (const void *)dw);
    if (p->has_bias && !db)
        return SD_FAIL(SD_ERR_INVALID, "linear bwd: has_bias is set but the bias gradient db is NULL");
    const int n = p->n, in = p->in, out = p->out;
    const float one = 1.0f, zero = 0.0f;
    /* dW[out][in] = dy^T x */
    CUBLAS_CHECK(cublasSgemm(k->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x, in, dy, out, &zero, dw, in));
    /* dx[n][in] = dy W */
    if (dx) CUBLAS_CHECK(cublasSgemm(k->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w, in, dy, out, &zero, dx, in));
    if (p->has_bias) CUDA_CHECK(bias_grad_launch(k, dy, db, n, out, k->stream));
    return SD_OK;
}
