/* cpu_kernels.h: the exported CPU kernels (one op family per .c file in this folder) and the CPU
 * kernel context. The op declarations come from kernels/op_list.h, as do the backend table's fields and the CUDA twins'. */
#ifndef SD_CPU_KERNELS_H
#define SD_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/op_list.h"
#include "kernels/ops.h"

/* Which code computes the 2-D convolutions of a context: our kernels (conv.c) or oneDNN's
 * primitives (conv_dnnl.c, in builds that found it: SCADLES_HAVE_DNNL). */
typedef enum sd_cpu_conv_impl { SD_CPU_CONV_OURS = 0, SD_CPU_CONV_DNNL = 1 } sd_cpu_conv_impl;

/* Which algorithm oneDNN uses for 3x3 stride-1 convolutions (SCADLES_WINOGRAD): Winograd F(4x4, 3x3)
 * (fewer multiplications; results differ from the direct sum by float rounding) where it is faster
 * (auto: >= SD_WINOGRAD_MIN_CH channels in and out and at least one full 4x4 output tile; measured
 * in docs/performance.md), everywhere oneDNN has it (on), or never (off: the direct algorithm, as
 * PyTorch's CPU convolutions). Other shapes always run direct. The choice is fixed per shape, so
 * runs stay bitwise reproducible. */
typedef enum sd_cpu_winograd { SD_CPU_WINO_AUTO = 0, SD_CPU_WINO_OFF = 1, SD_CPU_WINO_ON = 2 } sd_cpu_winograd;
#define SD_WINOGRAD_MIN_CH 32

/* conv_dnnl.c: a context's oneDNN engine, stream and primitive cache (opaque). */
typedef struct sd_dnnl_ctx sd_dnnl_ctx;

/* The CPU kernel context: thread count, a scratch area that grows to a high-water mark, the
 * convolution implementation and, for oneDNN, its per-context state (created at the first
 * convolution, freed with the context). A context is used by one thread at a time. */
struct sd_kctx {
    int threads;
    void *scratch;
    size_t scratch_bytes;
    sd_cpu_conv_impl conv;
    sd_cpu_winograd winograd;
    sd_dnnl_ctx *dnnl;
};

/* Scratch of at least `bytes` (64-byte aligned), grown only past the high-water mark. The
 * pointer stays valid until the next call that grows it. */
sd_status sd_cpu_scratch(sd_kctx *k, size_t bytes, void **out);

/* context.c: create and destroy a CPU kernel context; threads <= 0 means all online cores.
 * OpenBLAS is set to one thread: all parallelism is OpenMP (see context.c). The convolution
 * implementation comes from the environment: SCADLES_CONV=ours or dnnl; unset or empty, oneDNN
 * where the build has it, else ours. Any other value, or dnnl in a build without oneDNN, is
 * SD_ERR_INVALID naming the variable. SCADLES_WINOGRAD=auto, off or on (unset: auto) likewise. */
sd_status sd_cpu_kctx_create(int threads, sd_kctx **out);
void sd_cpu_kctx_destroy(sd_kctx *k);
/* Chooses the context's convolution implementation (tests and comparisons; the environment
 * variable is the user's switch). SD_CPU_CONV_DNNL in a build without oneDNN: SD_ERR_UNSUPPORTED. */
sd_status sd_cpu_kctx_set_conv(sd_kctx *k, sd_cpu_conv_impl impl);
/* Chooses the context's Winograd mode (tests and the benchmark's per-op comparison). */
sd_status sd_cpu_kctx_set_winograd(sd_kctx *k, sd_cpu_winograd mode);
/* "auto", "off" or "on". */
const char *sd_cpu_winograd_name(sd_cpu_winograd mode);
/* "ours" or "dnnl". */
const char *sd_cpu_conv_impl_name(sd_cpu_conv_impl impl);
/* Whether context k runs shape p with oneDNN's Winograd algorithm (its mode and shape rule; a
 * shape oneDNN has no Winograd kernel for still falls back to direct inside conv_dnnl.c). */
bool sd_cpu_conv_wants_winograd(const sd_kctx *k, const sd_conv2d_params *p);
/* Whether this build has oneDNN's convolutions (configure found it, SCADLES_DNNL on, not TSan). */
bool sd_cpu_conv_dnnl_available(void);
/* Aligned host allocation used by the CPU backend and the scratch (64-byte alignment). */
sd_status sd_cpu_alloc(size_t bytes, void **out);

/* gemm.c: row-major C = alpha * op(A) * op(B) + beta * C, the same contract as cblas_sgemm
 * (trans_a/trans_b: 0 = as stored, 1 = transposed). Uses the AVX-512 kernels of this folder when
 * the CPU has them and the shape suits them, OpenBLAS otherwise. Threads from k->threads.
 * Never call it from inside an OpenMP parallel region. */
void sd_cpu_sgemm(sd_kctx *k, int trans_a, int trans_b, int m, int n, int kdim, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc);

/* The op kernels, one family per file, with the signatures of kernels/op_list.h:
 * sd_cpu_conv2d_fwd/bwd (conv.c: oneDNN's primitives through conv_dnnl.c when the context says
 * so, else direct GEMM micro-kernels over zero-padded input planes, no im2col, no BLAS, one
 * OpenMP region per call), sd_cpu_bn_* (batchnorm.c), sd_cpu_relu_*
 * (activation.c), sd_cpu_maxpool_* / avgpool_* / gap_* (pool.c), sd_cpu_linear_* (linear.c, on
 * sd_cpu_sgemm), sd_cpu_xent_* (loss.c), sd_cpu_add / axpy / scale / all_finite (elementwise.c),
 * sd_cpu_dropout_* (dropout.c), sd_cpu_sgd_update (optimizer.c). */
SD_KERNEL_OPS(SD_CPU_OP_DECL)

/* Below this many multiply-adds a convolution runs on the calling thread, ours (conv.c) and
 * oneDNN's (conv_dnnl.c): a parallel region costs a few microseconds of wake-up, and more when the
 * machine is busy. */
#define SD_CONV_PAR_MIN_MACS ((int64_t)1 << 18)

/* conv_dnnl.c: the convolutions through oneDNN (argument checks are the caller's, conv.c).
 * *done is false when oneDNN has no implementation for the shape: the caller computes it with our
 * kernels (the refusal is remembered per shape). Primitives, reorders and their descriptors are
 * made once per shape and thread count and kept in k->dnnl; the reordered tensors and oneDNN's
 * scratchpads live in the context's scratch. Without oneDNN in the build these say
 * SD_ERR_UNSUPPORTED. */
sd_status sd_cpu_dnnl_conv2d_fwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                 const float *b, float *y, bool *done);
sd_status sd_cpu_dnnl_conv2d_bwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, bool *done);
void sd_cpu_dnnl_ctx_destroy(sd_dnnl_ctx *d);

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
