/* ref_misc.h: naive reference implementations (plain loops, double accumulators) of the
 * non-convolution ops: batch norm, ReLU, pooling, softmax cross-entropy, elementwise, dropout and
 * SGD. Signatures are those of the CPU kernels in kernels/cpu/cpu_kernels.h minus the context.
 * They favour the textbook formulation over speed; the op tests compare the kernels with them. */
#ifndef SD_TESTS_REF_MISC_H
#define SD_TESTS_REF_MISC_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

sd_status ref_bn_fwd_train(const sd_bn_params *p, const float *x, const float *gamma, const float *beta, float *y,
                           float *running_mean, float *running_var, float *save_mean, float *save_invstd);
sd_status ref_bn_fwd_eval(const sd_bn_params *p, const float *x, const float *gamma, const float *beta,
                          const float *running_mean, const float *running_var, float *y);
sd_status ref_bn_bwd(const sd_bn_params *p, const float *x, const float *gamma, const float *save_mean,
                     const float *save_invstd, const float *dy, float *dx, float *dgamma, float *dbeta);

sd_status ref_relu_fwd(size_t count, const float *x, float *y);
sd_status ref_relu_bwd(size_t count, const float *y, const float *dy, float *dx);

/* argmax: flat index iy * w + ix within the (n, c) input plane, as the CPU kernel. */
sd_status ref_maxpool_fwd(const sd_pool2d_params *p, const float *x, float *y, int32_t *argmax);
sd_status ref_maxpool_bwd(const sd_pool2d_params *p, const float *dy, const int32_t *argmax, float *dx);
sd_status ref_avgpool_fwd(const sd_pool2d_params *p, const float *x, float *y);
sd_status ref_avgpool_bwd(const sd_pool2d_params *p, const float *dy, float *dx);
sd_status ref_gap_fwd(const sd_pool2d_params *p, const float *x, float *y);
sd_status ref_gap_bwd(const sd_pool2d_params *p, const float *dy, float *dx);

sd_status ref_xent_fwd(const sd_xent_params *p, const float *logits, const int32_t *labels, float *probs,
                       float *loss_out);
sd_status ref_xent_bwd(const sd_xent_params *p, const float *probs, const int32_t *labels, float scale,
                       float *dlogits);

sd_status ref_add(size_t count, const float *a, const float *b, float *y);
sd_status ref_axpy(size_t count, float alpha, const float *x, float *y);
sd_status ref_scale(size_t count, float alpha, float *x);

sd_status ref_dropout_fwd(const sd_dropout_params *p, const float *x, float *y, uint8_t *mask);
sd_status ref_dropout_bwd(const sd_dropout_params *p, const float *dy, const uint8_t *mask, float *dx);

sd_status ref_sgd_update(const sd_sgd_params *p, float *w, const float *g, float *buf);

#endif
