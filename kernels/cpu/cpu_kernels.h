/* cpu_kernels.h: the exported CPU kernels (one op family per .c file in this folder) and the CPU
 * kernel context. The op declarations come from kernels/op_list.h, as do the backend table's fields and the CUDA twins'. */
#ifndef SD_CPU_KERNELS_H
#define SD_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/op_list.h"
#include "kernels/ops.h"

/* The CPU kernel context: thread count and a scratch area that grows to a high-water mark. */
struct sd_kctx {
    int threads;
    void *scratch;
    size_t scratch_bytes;
};

/* Scratch of at least `bytes` (64-byte aligned), grown only past the high-water mark. The
 * pointer stays valid until the next call that grows it. */
sd_status sd_cpu_scratch(sd_kctx *k, size_t bytes, void **out);

/* context.c: create and destroy a CPU kernel context; threads <= 0 means all online cores.
 * OpenBLAS is set to one thread: all parallelism is OpenMP (see context.c). */
sd_status sd_cpu_kctx_create(int threads, sd_kctx **out);
void sd_cpu_kctx_destroy(sd_kctx *k);
/* Aligned host allocation used by the CPU backend and the scratch (64-byte alignment). */
sd_status sd_cpu_alloc(size_t bytes, void **out);

/* gemm.c: row-major C = alpha * op(A) * op(B) + beta * C, the same contract as cblas_sgemm
 * (trans_a/trans_b: 0 = as stored, 1 = transposed). Uses the AVX-512 kernels of this folder when
 * the CPU has them and the shape suits them, OpenBLAS otherwise. Threads from k->threads.
 * Never call it from inside an OpenMP parallel region. */
void sd_cpu_sgemm(sd_kctx *k, int trans_a, int trans_b, int m, int n, int kdim, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc);

/* The op kernels, one family per file, with the signatures of kernels/op_list.h:
 * sd_cpu_conv2d_fwd/bwd (conv.c: direct GEMM micro-kernels over zero-padded input planes, no
 * im2col, no BLAS, one OpenMP region per call), sd_cpu_bn_* (batchnorm.c), sd_cpu_relu_*
 * (activation.c), sd_cpu_maxpool_* / avgpool_* / gap_* (pool.c), sd_cpu_linear_* (linear.c, on
 * sd_cpu_sgemm), sd_cpu_xent_* (loss.c), sd_cpu_add / axpy / scale / all_finite (elementwise.c),
 * sd_cpu_dropout_* (dropout.c), sd_cpu_sgd_update (optimizer.c). */
SD_KERNEL_OPS(SD_CPU_OP_DECL)

/* topk.c: Top-k by magnitude (gradient compression). Writes the kk entries of x[0..n) with the
 * largest |x| to idx_out/val_out (kk each; val_out[j] = x[idx_out[j]], sign kept), in ASCENDING
 * INDEX order. Exactly kk entries, deterministic and independent of the thread count:
 *  - order by magnitude; ties (equal |x|) are broken by the lowest index;
 *  - -0.0 and +0.0 have magnitude 0 and tie; +-inf rank above every finite value;
 *  - NaN (any sign or payload) ranks ABOVE +-inf, so NaNs are selected first (they surface in the
 *    aggregated gradient instead of hiding in an error-feedback residual); NaNs tie by index.
 * Selects without sorting (a sampled or histogram threshold, one streaming pass, a radix select
 * among the candidates; see topk.c); threads from k->threads (n >= 131072), scratch from
 * sd_cpu_scratch (n < 131072: 8 bytes per entry; above: about 12 bytes per selected entry plus
 * 128 KiB per thread). kk = 0 does nothing (pointers may be NULL); kk > n is SD_ERR_INVALID;
 * n >= 2^32 is SD_ERR_UNSUPPORTED (indices are 32-bit). Never call it from inside an OpenMP
 * parallel region. */
sd_status sd_cpu_topk(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t *idx_out, float *val_out);

#endif
