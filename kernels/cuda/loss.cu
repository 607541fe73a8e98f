/* loss.cu: softmax cross-entropy over integer labels on the GPU, the CPU twin's semantics: the
 * forward writes the softmax to probs (max-shifted, sums in double) and the mean loss over the
 * batch to a host float; the backward writes dlogits = (probs - onehot(labels)) * scale (dlogits
 * may alias probs).
 *
 * Labels live in device memory. A check kernel records the first index whose label is outside
 * [0, classes) in a device flag; the compute kernels see the flag and write nothing, and the host
 * reads the flag back (with the loss, in one small copy) and returns SD_ERR_INVALID naming the
 * index and the label, as the CPU backend does. Both entry points therefore wait for the stream:
 * once per training step, where the loss has to come back anyway. */
#include "kernels/cuda/cuda_common.cuh"

#define SD_XENT_THREADS 128

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void label_check_kernel(const int32_t *labels, int n, int classes, int *flag) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        if (labels[i] < 0 || labels[i] >= classes) atomicMin(flag, i);
}

/* One block per row: max, exp and sum (double), normalise; row_loss[i] = log(sum) - (z[y] - max). */
static __global__ void xent_fwd_kernel(const float *logits, const int32_t *labels, float *probs, double *row_loss,
                                       int classes, const int *flag) {
    if (*flag != SD_CUDA_FLAG_NONE) return;
    __shared__ double shd[33];
    __shared__ float shf[33];
    const int i = blockIdx.x;
    const float *z = logits + (size_t)i * classes;
    float *pr = probs + (size_t)i * classes;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, z[j]);
    m = sd_block_max(m, shf);
    double s = 0.0;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        const float e = expf(z[j] - m);
        pr[j] = e;
        s += e;
    }
    s = sd_block_sum(s, shd);
    const float inv = (float)(1.0 / s);
    for (int j = threadIdx.x; j < classes; j += blockDim.x) pr[j] *= inv; /* this thread's own writes */
    if (threadIdx.x == 0) row_loss[i] = log(s) - (double)(z[labels[i]] - m);
}

/* One block: the mean of the row losses in a fixed order. */
static __global__ void xent_mean_kernel(const double *row_loss, int n, float *loss, const int *flag) {
    if (*flag != SD_CUDA_FLAG_NONE) return;
    __shared__ double sh[33];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += row_loss[i];
    s = sd_block_sum(s, sh);
    if (threadIdx.x == 0) *loss = (float)(s / (double)n);
}

static __global__ void xent_bwd_kernel(const float *probs, const int32_t *labels, float scale, float *dlogits,
                                       size_t total, int classes, const int *flag) {
    if (*flag != SD_CUDA_FLAG_NONE) return;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t i = idx / (size_t)classes;
        const int j = (int)(idx - i * (size_t)classes);
        const float pv = probs[idx]; /* read before the write: dlogits may alias probs */
        dlogits[idx] = j == labels[i] ? (pv - 1.0f) * scale : pv * scale;
    }
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t label_check_launch(const sd_kctx *k, const int32_t *labels, int n, int classes, int *flag,
                                      cudaStream_t s) {
    cudaError_t e = cudaMemsetAsync(flag, 0x7f, sizeof(int), s); /* SD_CUDA_FLAG_NONE */
    if (e != cudaSuccess) return e;
    label_check_kernel<<<sd_cuda_grid(k, (size_t)n, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(labels, n, classes,
                                                                                               flag);
    return cudaGetLastError();
}

static cudaError_t xent_fwd_launch(const sd_xent_params *p, const float *logits, const int32_t *labels, float *probs,
                                   double *row_loss, float *loss, const int *flag, cudaStream_t s) {
    xent_fwd_kernel<<<p->n, SD_XENT_THREADS, 0, s>>>(logits, labels, probs, row_loss, p->classes, flag);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    xent_mean_kernel<<<1, 256, 0, s>>>(row_loss, p->n, loss, flag);
    return cudaGetLastError();
}

static cudaError_t xent_bwd_launch(const sd_kctx *k, const sd_xent_params *p, const float *probs,
                                   const int32_t *labels, float scale, float *dlogits, const int *flag,
                                   cudaStream_t s) {
    const size_t total = (size_t)p->n * (size_t)p->classes;
    xent_bwd_kernel<<<sd_cuda_grid(k, total, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, s>>>(probs, labels, scale, dlogits,
                                                                                        total, p->classes, flag);
    return cudaGetLastError();
}

/* After the host mirror was fetched: SD_ERR_INVALID naming the first bad label, or SD_OK. */
static sd_status report_labels(sd_kctx *k, const char *who, const sd_xent_params *p, const int32_t *labels) {
    const int bad = k->h_small->flags[SD_CUDA_FLAG_LABEL];
    if (bad == SD_CUDA_FLAG_NONE) return SD_OK;
    int32_t label = 0;
    sd_cuda_count_d2h(k, sizeof label);
    CUDA_CHECK(cudaMemcpyAsync(&label, labels + bad, sizeof label, cudaMemcpyDeviceToHost, k->stream));
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    return SD_FAIL(SD_ERR_INVALID, "softmax_xent %s: label %d at index %d is outside [0, %d)", who, (int)label, bad,
                   p->classes);
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_xent_fwd(sd_kctx *k, const sd_xent_params *p, const float *logits, const int32_t *labels,
                                      float *probs, float *loss_out) {
    if (!k || !p || !logits || !labels || !probs || !loss_out)
        return SD_FAIL(SD_ERR_INVALID,
                       "softmax_xent fwd: NULL argument (context, params, logits, labels, probs and loss_out are "
                       "required)");
    void *ws = NULL;
    TRY(sd_cuda_workspace(k, (size_t)p->n * sizeof(double), &ws));
    int *flag = &k->d_small->flags[SD_CUDA_FLAG_LABEL];
    CUDA_CHECK(label_check_launch(k, labels, p->n, p->classes, flag, k->stream));
    CUDA_CHECK(xent_fwd_launch(p, logits, labels, probs, (double *)ws, &k->d_small->loss, flag, k->stream));
    TRY(sd_cuda_fetch_small(k));
    TRY(report_labels(k, "fwd", p, labels));
    *loss_out = k->h_small->loss;
    return SD_OK;
}

extern "C" sd_status sd_cuda_xent_bwd(sd_kctx *k, const sd_xent_params *p, const float *probs, const int32_t *labels,
                                      float scale, float *dlogits) {
    if (!k || !p || !probs || !labels || !dlogits)
        return SD_FAIL(SD_ERR_INVALID,
                       "softmax_xent bwd: NULL argument (context, params, probs, labels and dlogits are required)");
    int *flag = &k->d_small->flags[SD_CUDA_FLAG_LABEL];
    CUDA_CHECK(label_check_launch(k, labels, p->n, p->classes, flag, k->stream));
    CUDA_CHECK(xent_bwd_launch(k, p, probs, labels, scale, dlogits, flag, k->stream));
    TRY(sd_cuda_fetch_small(k));
    TRY(report_labels(k, "bwd", p, labels));
    return SD_OK;
}
