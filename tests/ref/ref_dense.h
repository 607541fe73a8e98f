/* ref_dense.h: naive reference implementations (plain loops, double accumulators) of the dense
 * ops, convolution and linear. Signatures are those of the CPU kernels in
 * kernels/cpu/cpu_kernels.h minus the context; gradients are overwritten and a NULL dx is skipped,
 * as there. Only the tests use them; they favour the textbook formulas over speed. */
#ifndef SD_TESTS_REF_DENSE_H
#define SD_TESTS_REF_DENSE_H

#include "kernels/ops.h"

/* y[n][k][oh][ow] = b[k] + sum_{c,ki,kj} w[k][c][ki][kj] x[n][c][oh*sh-ph+ki][ow*sw-pw+kj]
 * (zero outside the input). b is read only when p->has_bias. */
sd_status ref_conv2d_fwd(const sd_conv2d_params *p, const float *x, const float *w, const float *b, float *y);
/* dx (optional), dw and, when p->has_bias, db. */
sd_status ref_conv2d_bwd(const sd_conv2d_params *p, const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db);

/* y[n][o] = b[o] + sum_i x[n][i] w[o][i]. */
sd_status ref_linear_fwd(const sd_linear_params *p, const float *x, const float *w, const float *b, float *y);
sd_status ref_linear_bwd(const sd_linear_params *p, const float *x, const float *w, const float *dy, float *dx,
                         float *dw, float *db);

#endif
