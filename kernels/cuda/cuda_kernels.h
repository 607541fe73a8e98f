/* cuda_kernels.h: the exported CUDA kernels (one op family per .cu file in this folder), the
 * CUDA kernel context's lifetime and the pinned host allocation helper. A plain C header: C code
 * (the tests, the backend table, later the stream ring buffer) includes it; the .cu files define
 * these names with extern "C" linkage. Signatures match the CPU twins in kernels/cpu/cpu_kernels.h
 * and the backend table in engine/backend.h.
 *
 * Every entry point enqueues its work on the context's compute stream and returns without waiting,
 * except where noted (xent_fwd/xent_bwd wait, because the loss and the label check come back to
 * the host). Pointers are device memory unless named host_. */
#ifndef SD_CUDA_KERNELS_H
#define SD_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* ops.h and status.h have no extern "C" block of their own: their functions are C */
#endif

#include "kernels/ops.h"

/* ---- context (backend_cuda.cu) ---- */
/* Selects `device`, creates the compute and copy streams, the cuBLAS and cuDNN handles (both on
 * the compute stream, fp32 math without TF32) and the small device/host scratch used for error
 * flags and scalars. SD_ERR_UNSUPPORTED when there is no usable CUDA device. */
sd_status sd_cuda_kctx_create(int device, sd_kctx **out);
void sd_cuda_kctx_destroy(sd_kctx *k);
/* The context's compute stream (a cudaStream_t), for code that overlaps copies with compute. */
void *sd_cuda_stream(sd_kctx *k);
/* Number of cuDNN convolution shapes whose algorithms were chosen so far (the cache size). */
int sd_cuda_conv_algo_cache_size(const sd_kctx *k);

/* Host memory for staging (the stream ring buffer): page-locked via cudaMallocHost when possible,
 * otherwise 64-byte aligned pageable memory with a note on stderr. *pinned tells which, and must
 * be handed back to sd_cuda_host_free. Works (falling back) on machines without a GPU. */
sd_status sd_cuda_host_alloc(size_t bytes, void **ptr, bool *pinned);
/* The number of CUDA devices this process sees (>= 1), or SD_ERR_UNSUPPORTED naming why none. */
sd_status sd_cuda_device_count(int *count);
void sd_cuda_host_free(void *ptr, bool pinned);

/* ---- conv.cu: cuDNN convolution, algorithms chosen once per shape and cached ---- */
sd_status sd_cuda_conv2d_fwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                             const float *b, float *y);
sd_status sd_cuda_conv2d_bwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *db);

/* ---- batchnorm.cu ---- */
sd_status sd_cuda_bn_fwd_train(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                               const float *beta, float *y, float *running_mean, float *running_var,
                               float *save_mean, float *save_invstd);
sd_status sd_cuda_bn_fwd_eval(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                              const float *beta, const float *running_mean, const float *running_var, float *y);
sd_status sd_cuda_bn_bwd(sd_kctx *k, const sd_bn_params *p, const float *x, const float *gamma,
                         const float *save_mean, const float *save_invstd, const float *dy, float *dx,
                         float *dgamma, float *dbeta);

/* ---- activation.cu ---- */
sd_status sd_cuda_relu_fwd(sd_kctx *k, size_t count, const float *x, float *y);
sd_status sd_cuda_relu_bwd(sd_kctx *k, size_t count, const float *y, const float *dy, float *dx);

/* ---- pool.cu ---- */
sd_status sd_cuda_maxpool_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y, int32_t *argmax);
sd_status sd_cuda_maxpool_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, const int32_t *argmax,
                              float *dx);
sd_status sd_cuda_avgpool_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y);
sd_status sd_cuda_avgpool_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx);
sd_status sd_cuda_gap_fwd(sd_kctx *k, const sd_pool2d_params *p, const float *x, float *y);
sd_status sd_cuda_gap_bwd(sd_kctx *k, const sd_pool2d_params *p, const float *dy, float *dx);

/* ---- linear.cu: cuBLAS sgemm ---- */
sd_status sd_cuda_linear_fwd(sd_kctx *k, const sd_linear_params *p, const float *x, const float *w,
                             const float *b, float *y);
sd_status sd_cuda_linear_bwd(sd_kctx *k, const sd_linear_params *p, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *db);

/* ---- loss.cu (both wait for the stream: see above) ---- */
sd_status sd_cuda_xent_fwd(sd_kctx *k, const sd_xent_params *p, const float *logits, const int32_t *labels,
                           float *probs, float *loss_out);
sd_status sd_cuda_xent_bwd(sd_kctx *k, const sd_xent_params *p, const float *probs, const int32_t *labels,
                           float scale, float *dlogits);

/* ---- elementwise.cu ---- */
sd_status sd_cuda_add(sd_kctx *k, size_t count, const float *a, const float *b, float *y);
sd_status sd_cuda_axpy(sd_kctx *k, size_t count, float alpha, const float *x, float *y);
sd_status sd_cuda_scale(sd_kctx *k, size_t count, float alpha, float *x);
sd_status sd_cuda_all_finite(sd_kctx *k, size_t count, const float *x, bool *all);

/* ---- dropout.cu ---- */
sd_status sd_cuda_dropout_fwd(sd_kctx *k, const sd_dropout_params *p, const float *x, float *y, uint8_t *mask);
sd_status sd_cuda_dropout_bwd(sd_kctx *k, const sd_dropout_params *p, const float *dy, const uint8_t *mask,
                              float *dx);

/* ---- topk.cu: Top-k by magnitude (gradient compression), the twin of sd_cpu_topk ---- */
/* The kk entries of x[0..n) (device memory) with the largest |x| to idx_out/val_out (device memory,
 * kk each; val_out[j] = x[idx_out[j]] bit for bit), in ASCENDING INDEX order: exactly the result of
 * sd_cpu_topk (kernels/cpu/cpu_kernels.h): ties by the lowest index, -0 == +0, +-inf above every
 * finite value, NaN (any sign or payload) above +-inf. Radix select (three histogram passes over x)
 * and an index-ordered compaction, no sort; enqueued on the compute stream, returns without waiting.
 * Scratch: a fixed block of about 74 KB owned by the context (allocated on the first call). kk = 0
 * does nothing (pointers may be NULL); kk > n is SD_ERR_INVALID; n >= 2^32 is SD_ERR_UNSUPPORTED. */
sd_status sd_cuda_topk(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t *idx_out, float *val_out);

/* ---- optimizer.cu ---- */
sd_status sd_cuda_sgd_update(sd_kctx *k, const sd_sgd_params *p, float *w, const float *g, float *buf);

#ifdef __cplusplus
}
#endif

#endif
