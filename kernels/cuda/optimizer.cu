/* optimizer.cu: the SGD update on the GPU with the CPU twin's formula (PyTorch torch.optim.SGD,
 * see ops.h):
 *   g' = g + weight_decay * w
 *   buf = first_step ? g' : momentum * buf + (1 - dampening) * g'   (only when momentum != 0)
 *   d   = nesterov ? g' + momentum * buf : buf                        (d = g' when momentum == 0)
 *   w  -= lr * d
 * One kernel; the case is uniform across the grid, so the branches do not diverge. buf may be NULL
 * when momentum is 0. */
#include "kernels/cuda/cuda_common.cuh"

/* ---- kernel ------------------------------------------------------------------------------------ */

static __global__ void sgd_kernel(float *w, const float *g, float *buf, size_t n, float lr, float m, float damp1,
                                  float wd, int nesterov, int first_step) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gp = g[i] + wd * w[i];
        if (m == 0.0f) {
            w[i] -= lr * gp;
            continue;
        }
        const float b = first_step ? gp : m * buf[i] + damp1 * gp;
        buf[i] = b;
        w[i] -= lr * (nesterov ? gp + m * b : b);
    }
}

/* ---- launcher (stream last) -------------------------------------------------------------------- */

static cudaError_t sgd_launch(const sd_kctx *k, const sd_sgd_params *p, float *w, const float *g, float *buf,
                              cudaStream_t s) {
    sgd_kernel<<<sd_cuda_grid(k, p->count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(
        w, g, buf, p->count, p->lr, p->momentum, 1.0f - p->dampening, p->weight_decay, p->nesterov, p->first_step);
    return cudaGetLastError();
}

/* ---- entry point ------------------------------------------------------------------------------- */

extern "C" sd_status sd_cuda_sgd_update(sd_kctx *k, const sd_sgd_params *p, float *w, const float *g, float *buf) {
    if (!k || !p || !w || !g)
        return SD_FAIL(SD_ERR_INVALID, "sgd update: NULL argument (context, params, w and g are required)");
    if (p->momentum != 0.0f && !buf)
        return SD_FAIL(SD_ERR_INVALID, "sgd update: momentum %g needs a momentum buffer, got NULL", (double)p->momentum);
    if (p->count == 0) return SD_OK;
    CUDA_CHECK(sgd_launch(k, p, w, g, buf, k->stream));
    return SD_OK;
}
