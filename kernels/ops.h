/* ops.h: the parameter blocks of every compute op, shared by the CPU kernels (kernels/cpu),
 * the CUDA kernels (kernels/cuda) and the naive references the tests use (tests/ref).
 *
 * Conventions for every op:
 *   - float32, NCHW activations, OIHW convolution weights, [out, in] linear weights (PyTorch's).
 *   - Gradients are written, not accumulated: dx, dw, db are overwritten. Callers that need a sum
 *     (a tensor feeding two consumers) add the pieces with the elementwise ops.
 *   - A NULL dx means "the input gradient is not needed" (the network's first layer).
 *   - Params are validated by the sd_*_params_make constructors in ops.c; kernels trust a made
 *     params block and only check pointers. */
#ifndef SD_KERNELS_OPS_H
#define SD_KERNELS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque per-backend kernel context (threads, CUDA stream and library handles, scratch). */
typedef struct sd_kctx sd_kctx;

typedef enum sd_op {
    SD_OP_CONV2D,
    SD_OP_BATCHNORM2D,
    SD_OP_RELU,
    SD_OP_MAXPOOL2D,
    SD_OP_AVGPOOL2D,
    SD_OP_GLOBAL_AVGPOOL,
    SD_OP_LINEAR,
    SD_OP_SOFTMAX_XENT,
    SD_OP_ELEMENTWISE, /* add, axpy, scale: residual add and gradient sums */
    SD_OP_DROPOUT,
    SD_OP_SGD,
    SD_OP_COUNT
} sd_op;

const char *sd_op_name(sd_op op);

/* ---- convolution ------------------------------------------------------------------------ */
typedef struct sd_conv2d_params {
    int n, c, h, w;     /* input */
    int k, kh, kw;      /* output channels, kernel size */
    int sh, sw, ph, pw; /* stride, zero padding */
    int oh, ow;         /* output size (computed) */
    int has_bias;
} sd_conv2d_params;

sd_status sd_conv2d_params_make(sd_conv2d_params *p, int n, int c, int h, int w, int k, int kh, int kw,
                                int sh, int sw, int ph, int pw, int has_bias);

/* ---- batch norm (per channel over N, H, W) -------------------------------------------------- */
typedef struct sd_bn_params {
    int n, c, h, w;
    float eps;      /* PyTorch default 1e-5 */
    float momentum; /* running = (1 - momentum) * running + momentum * batch; PyTorch default 0.1 */
    bool relu;      /* the forward ops write max(0, bn(x)), a ReLU fused into the pass (the layer graph sets
                       it where a ReLU is the only reader; sd_bn_params_make leaves it false); its backward
                       is bn_relu_bwd, and bn_bwd refuses such params */
} sd_bn_params;

sd_status sd_bn_params_make(sd_bn_params *p, int n, int c, int h, int w, float eps, float momentum);

/* ---- pooling ------------------------------------------------------------------------------ */
typedef struct sd_pool2d_params {
    int n, c, h, w;
    int kh, kw, sh, sw, ph, pw;
    int oh, ow; /* computed, floor mode */
} sd_pool2d_params;

/* Max pool pads with -inf; average pool counts padding in the divisor (PyTorch's default
 * count_include_pad=True). Padding must be at most half the kernel, as in PyTorch. */
sd_status sd_pool2d_params_make(sd_pool2d_params *p, int n, int c, int h, int w, int kh, int kw, int sh,
                                int sw, int ph, int pw);

/* ---- linear ------------------------------------------------------------------------------- */
typedef struct sd_linear_params {
    int n, in, out;
    int has_bias;
} sd_linear_params;

sd_status sd_linear_params_make(sd_linear_params *p, int n, int in, int out, int has_bias);

/* ---- softmax cross-entropy over integer labels ------------------------------------------- */
typedef struct sd_xent_params {
    int n, classes;
} sd_xent_params;

sd_status sd_xent_params_make(sd_xent_params *p, int n, int classes);

/* ---- dropout ------------------------------------------------------------------------------ */
/* The keep mask is a pure function of (seed, offset + i), so CPU and CUDA draw the same mask. */
typedef struct sd_dropout_params {
    size_t count;    /* elements */
    float p;         /* drop probability in [0, 1) */
    uint64_t seed;   /* per run */
    uint64_t offset; /* advance per call so every step draws a fresh mask */
} sd_dropout_params;

sd_status sd_dropout_params_make(sd_dropout_params *p, size_t count, float prob, uint64_t seed,
                                 uint64_t offset);
/* The counter-based draw both backends use: a uniform in [0, 1) from (seed, index). */
static inline float sd_dropout_uniform(uint64_t seed, uint64_t index) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* ---- SGD update (PyTorch torch.optim.SGD semantics) --------------------------------------- */
/* g' = g + weight_decay * w
 * buf = first_step ? g' : momentum * buf + (1 - dampening) * g'   (only when momentum != 0)
 * d   = nesterov ? g' + momentum * buf : buf                        (d = g' when momentum == 0)
 * w  -= lr * d */
typedef struct sd_sgd_params {
    size_t count;
    float lr, momentum, dampening, weight_decay;
    int nesterov;
    int first_step; /* 1 on the first update of this buffer (PyTorch initialises buf = g') */
} sd_sgd_params;

sd_status sd_sgd_params_make(sd_sgd_params *p, size_t count, float lr, float momentum, float dampening,
                             float weight_decay, int nesterov, int first_step);

#ifdef __cplusplus
}
#endif

#endif
