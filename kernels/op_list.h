/* op_list.h: the one list of compute ops every backend implements. Each entry is
 * X(name, (parameters)), the parameters starting with the kernel context; every op returns
 * sd_status. From it come the op fields of the backend table (kernels/backend.h), the
 * declarations of the CPU and CUDA twins sd_cpu_<name> / sd_cuda_<name>
 * (kernels/cpu/cpu_kernels.h, kernels/cuda/cuda_kernels.h) and the table initialisers
 * (backend_cpu.c, backend_cuda.cu), so adding an op is one line here plus its two kernels.
 * What each op computes: kernels/backend.h (the contract) and the .c/.cu file of its family. */
#ifndef SD_KERNELS_OP_LIST_H
#define SD_KERNELS_OP_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_KERNEL_OPS(X)                                                                                          \
    /* conv.c / conv.cu */                                                                                        \
    X(conv2d_fwd, (sd_kctx * k, const sd_conv2d_params *p, const float *x, const float *w, const float *b,        \
                   float *y))                                                                                     \
    X(conv2d_bwd, (sd_kctx * k, const sd_conv2d_params *p, const float *x, const float *w, const float *dy,       \
                   float *dx, float *dw, float *db))                                                              \
    /* batchnorm.c / batchnorm.cu */                                                                              \
    X(bn_fwd_train, (sd_kctx * k, const sd_bn_params *p, const float *x, const float *gamma, const float *beta,   \
                     float *y, float *running_mean, float *running_var, float *save_mean, float *save_invstd))    \
    X(bn_fwd_eval, (sd_kctx * k, const sd_bn_params *p, const float *x, const float *gamma, const float *beta,    \
                    const float *running_mean, const float *running_var, float *y))                               \
    X(bn_bwd, (sd_kctx * k, const sd_bn_params *p, const float *x, const float *gamma, const float *save_mean,    \
               const float *save_invstd, const float *dy, float *dx, float *dgamma, float *dbeta))                \
    X(bn_relu_bwd, (sd_kctx * k, const sd_bn_params *p, const float *x, const float *y, const float *gamma,      \
                    const float *save_mean, const float *save_invstd, const float *dy, float *dx, float *dgamma,  \
                    float *dbeta))                                                                                \
    /* activation.c / activation.cu */                                                                            \
    X(relu_fwd, (sd_kctx * k, size_t count, const float *x, float *y))                                            \
    X(relu_bwd, (sd_kctx * k, size_t count, const float *y, const float *dy, float *dx))                          \
    X(add_relu_fwd, (sd_kctx * k, size_t count, const float *a, const float *b, float *y))                        \
    /* pool.c / pool.cu */                                                                                        \
    X(maxpool_fwd, (sd_kctx * k, const sd_pool2d_params *p, const float *x, float *y, int32_t *argmax))           \
    X(maxpool_bwd, (sd_kctx * k, const sd_pool2d_params *p, const float *dy, const int32_t *argmax, float *dx))   \
    X(avgpool_fwd, (sd_kctx * k, const sd_pool2d_params *p, const float *x, float *y))                            \
    X(avgpool_bwd, (sd_kctx * k, const sd_pool2d_params *p, const float *dy, float *dx))                          \
    X(gap_fwd, (sd_kctx * k, const sd_pool2d_params *p, const float *x, float *y))                                \
    X(gap_bwd, (sd_kctx * k, const sd_pool2d_params *p, const float *dy, float *dx))                              \
    /* linear.c / linear.cu */                                                                                    \
    X(linear_fwd, (sd_kctx * k, const sd_linear_params *p, const float *x, const float *w, const float *b,        \
                   float *y))                                                                                     \
    X(linear_bwd, (sd_kctx * k, const sd_linear_params *p, const float *x, const float *w, const float *dy,       \
                   float *dx, float *dw, float *db))                                                              \
    /* loss.c / loss.cu */                                                                                        \
    X(xent_fwd, (sd_kctx * k, const sd_xent_params *p, const float *logits, const int32_t *labels, float *probs,  \
                 float *loss_out))                                                                                \
    X(xent_bwd, (sd_kctx * k, const sd_xent_params *p, const float *probs, const int32_t *labels, float scale,    \
                 float *dlogits))                                                                                 \
    /* elementwise.c / elementwise.cu */                                                                          \
    X(add, (sd_kctx * k, size_t count, const float *a, const float *b, float *y))                                 \
    X(axpy, (sd_kctx * k, size_t count, float alpha, const float *x, float *y))                                   \
    X(scale, (sd_kctx * k, size_t count, float alpha, float *x))                                                  \
    X(all_finite, (sd_kctx * k, size_t count, const float *x, bool *all))                                         \
    /* dropout.c / dropout.cu */                                                                                  \
    X(dropout_fwd, (sd_kctx * k, const sd_dropout_params *p, const float *x, float *y, uint8_t *mask))            \
    X(dropout_bwd, (sd_kctx * k, const sd_dropout_params *p, const float *dy, const uint8_t *mask, float *dx))    \
    /* optimizer.c / optimizer.cu */                                                                              \
    X(sgd_update, (sd_kctx * k, const sd_sgd_params *p, float *w, const float *g, float *buf))                    \
    /* compress.c / compress.cu: the gradient compressor's steps (comm/compress.h) */                             \
    X(topk_select, (sd_kctx * k, const float *x, size_t n, size_t kk, uint32_t base, uint32_t *idx_out,           \
                    float *val_out))                                                                              \
    X(cz_velocity, (sd_kctx * k, size_t count, float mu, float *u, float *g))                                     \
    X(cz_f16_round, (sd_kctx * k, size_t count, float *x))                                                        \
    X(cz_sumsq, (sd_kctx * k, size_t count, const float *x, double *host_out))                                    \
    X(cz_residual, (sd_kctx * k, size_t count, const float *a, size_t np, const uint32_t *idx, const float *val,  \
                    float *res, float *velocity))                                                                 \
    X(cz_to_f16, (sd_kctx * k, size_t count, const float *x, unsigned char *out))                                 \
    X(cz_scatter_sum, (sd_kctx * k, const unsigned char *buf, int n, const size_t *displs, const size_t *np,      \
                       bool f16, float *out, size_t count))                                                      \
    X(cz_split, (sd_kctx * k, size_t np, const uint32_t *idx, int nb, const uint32_t *bounds_host,              \
                 size_t *pos_host))                                                                              \
    X(cz_unsent, (sd_kctx * k, size_t np, const uint32_t *idx, const float *val, const float *out, float *res))  \
    X(cz_round_excess, (sd_kctx * k, size_t np, const uint32_t *idx, float *val, float *res))

/* What the list makes: a table field, a CPU or CUDA declaration. */
#define SD_OP_FIELD(name, params) sd_status(*name) params;
#define SD_CPU_OP_DECL(name, params) sd_status sd_cpu_##name params;
#define SD_CUDA_OP_DECL(name, params) sd_status sd_cuda_##name params;

#ifdef __cplusplus
}
#endif

#endif
