/* cuda_kernels.h: the exported CUDA kernels (one op family per .cu file in this folder), the
 * CUDA kernel context's lifetime and the pinned host allocation helper. A plain C header: C code
 * (the tests, the backend table, later the stream ring buffer) includes it; the .cu files define
 * these names with extern "C" linkage. The op declarations come from kernels/op_list.h, as do the
 * CPU twins' and the backend table's fields (kernels/backend.h).
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
extern "C" { /* these functions are C (ops.h and status.h have their own extern "C" blocks too) */
#endif

#include "kernels/op_list.h"
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

/* ---- the op kernels, one family per .cu file, with the signatures of kernels/op_list.h ----
 * sd_cuda_conv2d_fwd/bwd (conv.cu: cuDNN, algorithms chosen once per shape and cached),
 * sd_cuda_bn_* (batchnorm.cu), sd_cuda_relu_* (activation.cu), sd_cuda_maxpool_* / avgpool_* /
 * gap_* (pool.cu), sd_cuda_linear_* (linear.cu: cuBLAS sgemm), sd_cuda_xent_* (loss.cu; both wait
 * for the stream, see above), sd_cuda_add / axpy / scale / all_finite (elementwise.cu),
 * sd_cuda_dropout_* (dropout.cu), sd_cuda_sgd_update (optimizer.cu). */
SD_KERNEL_OPS(SD_CUDA_OP_DECL)

/* ---- topk.cu: Top-k by magnitude (gradient compression), the twin of sd_cpu_topk ---- */
/* The kk entries of x[0..n) (device memory) with the largest |x| to idx_out/val_out (device memory,
 * kk each; val_out[j] = x[idx_out[j]] bit for bit), in ASCENDING INDEX order: exactly the result of
 * sd_cpu_topk (kernels/cpu/cpu_kernels.h): ties by the lowest index, -0 == +0, +-inf above every
 * finite value, NaN (any sign or payload) above +-inf. Radix select (three histogram passes over x)
 * and an index-ordered compaction, no sort; enqueued on the compute stream, returns without waiting.
 * Scratch: a fixed block of about 74 KB owned by the context (allocated on the first call). kk = 0
 * does nothing (pointers may be NULL); kk > n is SD_ERR_INVALID; n >= 2^32 is SD_ERR_UNSUPPORTED. */
sd_status sd_cuda_topk(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t *idx_out, float *val_out);

#ifdef __cplusplus
}
#endif

#endif
