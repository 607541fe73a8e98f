/* ops.c: validation of op parameter blocks; shared by every backend. */
#include "kernels/ops.h"

#include <math.h>

static const char *const sd_op_names[SD_OP_COUNT] = {
    "conv2d", "batchnorm2d", "relu", "maxpool2d", "avgpool2d", "global_avgpool",
    "linear", "softmax_xent", "elementwise", "dropout", "sgd",
};

const char *sd_op_name(sd_op op) { return (op >= 0 && op < SD_OP_COUNT) ? sd_op_names[op] : "unknown-op"; }

/* Largest extent of any one dimension and of any one tensor we accept (elements). */
#define SD_MAX_DIM (1 << 24)
#define SD_MAX_ELEMS ((int64_t)1 << 34)

static int dims_ok(int n, int c, int h, int w) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return 0;
    if (n > SD_MAX_DIM || c > SD_MAX_DIM || h > SD_MAX_DIM || w > SD_MAX_DIM) return 0;
    return (int64_t)n * c * h * w <= SD_MAX_ELEMS;
}

sd_status sd_conv2d_params_make(sd_conv2d_params *p, int n, int c, int h, int w, int k, int kh, int kw,
                                int sh, int sw, int ph, int pw, int has_bias) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "conv2d: params pointer is NULL");
    if (!dims_ok(n, c, h, w) || k <= 0 || k > SD_MAX_DIM)
        return SD_FAIL(SD_ERR_SHAPE, "conv2d: input [%d,%d,%d,%d] and %d output channels must all be positive", n,
                       c, h, w, k);
    if (kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || ph < 0 || pw < 0)
        return SD_FAIL(SD_ERR_INVALID, "conv2d: kernel %dx%d stride %dx%d padding %dx%d: kernel and stride must be >= 1, padding >= 0",
                       kh, kw, sh, sw, ph, pw);
    if (h + 2 * ph < kh || w + 2 * pw < kw)
        return SD_FAIL(SD_ERR_SHAPE, "conv2d: kernel %dx%d larger than padded input %dx%d", kh, kw, h + 2 * ph,
                       w + 2 * pw);
    p->n = n; p->c = c; p->h = h; p->w = w;
    p->k = k; p->kh = kh; p->kw = kw;
    p->sh = sh; p->sw = sw; p->ph = ph; p->pw = pw;
    p->oh = (h + 2 * ph - kh) / sh + 1;
    p->ow = (w + 2 * pw - kw) / sw + 1;
    p->has_bias = has_bias ? 1 : 0;
    if ((int64_t)n * k * p->oh * p->ow > SD_MAX_ELEMS)
        return SD_FAIL(SD_ERR_SHAPE, "conv2d: output [%d,%d,%d,%d] too large", n, k, p->oh, p->ow);
    return SD_OK;
}

sd_status sd_bn_params_make(sd_bn_params *p, int n, int c, int h, int w, float eps, float momentum) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "batchnorm2d: params pointer is NULL");
    if (!dims_ok(n, c, h, w))
        return SD_FAIL(SD_ERR_SHAPE, "batchnorm2d: input [%d,%d,%d,%d] must be positive", n, c, h, w);
    if (!(eps > 0.0f) || !isfinite(eps))
        return SD_FAIL(SD_ERR_INVALID, "batchnorm2d: eps %g must be positive and finite", (double)eps);
    if (!(momentum >= 0.0f && momentum <= 1.0f))
        return SD_FAIL(SD_ERR_INVALID, "batchnorm2d: momentum %g must be in [0, 1]", (double)momentum);
    p->n = n; p->c = c; p->h = h; p->w = w;
    p->eps = eps; p->momentum = momentum;
    p->relu = false;
    return SD_OK;
}

sd_status sd_pool2d_params_make(sd_pool2d_params *p, int n, int c, int h, int w, int kh, int kw, int sh,
                                int sw, int ph, int pw) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "pool2d: params pointer is NULL");
    if (!dims_ok(n, c, h, w))
        return SD_FAIL(SD_ERR_SHAPE, "pool2d: input [%d,%d,%d,%d] must be positive", n, c, h, w);
    if (kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || ph < 0 || pw < 0)
        return SD_FAIL(SD_ERR_INVALID, "pool2d: kernel %dx%d stride %dx%d padding %dx%d: kernel and stride must be >= 1, padding >= 0",
                       kh, kw, sh, sw, ph, pw);
    if (2 * ph > kh || 2 * pw > kw)
        return SD_FAIL(SD_ERR_INVALID, "pool2d: padding %dx%d must be at most half the kernel %dx%d", ph, pw, kh, kw);
    if (h + 2 * ph < kh || w + 2 * pw < kw)
        return SD_FAIL(SD_ERR_SHAPE, "pool2d: kernel %dx%d larger than padded input %dx%d", kh, kw, h + 2 * ph,
                       w + 2 * pw);
    p->n = n; p->c = c; p->h = h; p->w = w;
    p->kh = kh; p->kw = kw; p->sh = sh; p->sw = sw; p->ph = ph; p->pw = pw;
    p->oh = (h + 2 * ph - kh) / sh + 1;
    p->ow = (w + 2 * pw - kw) / sw + 1;
    return SD_OK;
}

sd_status sd_linear_params_make(sd_linear_params *p, int n, int in, int out, int has_bias) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "linear: params pointer is NULL");
    if (n <= 0 || in <= 0 || out <= 0 || n > SD_MAX_DIM || in > SD_MAX_DIM || out > SD_MAX_DIM)
        return SD_FAIL(SD_ERR_SHAPE, "linear: batch %d, in %d, out %d must be positive", n, in, out);
    p->n = n; p->in = in; p->out = out; p->has_bias = has_bias ? 1 : 0;
    return SD_OK;
}

sd_status sd_xent_params_make(sd_xent_params *p, int n, int classes) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "softmax_xent: params pointer is NULL");
    if (n <= 0 || classes <= 0 || n > SD_MAX_DIM || classes > SD_MAX_DIM)
        return SD_FAIL(SD_ERR_SHAPE, "softmax_xent: batch %d and classes %d must be positive", n, classes);
    p->n = n; p->classes = classes;
    return SD_OK;
}

sd_status sd_dropout_params_make(sd_dropout_params *p, size_t count, float prob, uint64_t seed,
                                 uint64_t offset) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "dropout: params pointer is NULL");
    if (count == 0) return SD_FAIL(SD_ERR_SHAPE, "dropout: element count must be positive");
    if (!(prob >= 0.0f && prob < 1.0f))
        return SD_FAIL(SD_ERR_INVALID, "dropout: probability %g must be in [0, 1)", (double)prob);
    p->count = count; p->p = prob; p->seed = seed; p->offset = offset;
    return SD_OK;
}

sd_status sd_sgd_params_make(sd_sgd_params *p, size_t count, float lr, float momentum, float dampening,
                             float weight_decay, int nesterov, int first_step) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "sgd: params pointer is NULL");
    if (count == 0) return SD_FAIL(SD_ERR_SHAPE, "sgd: parameter count must be positive");
    if (!isfinite(lr) || lr < 0.0f) return SD_FAIL(SD_ERR_INVALID, "sgd: learning rate %g must be finite and >= 0", (double)lr);
    if (!(momentum >= 0.0f && momentum < 1.0f))
        return SD_FAIL(SD_ERR_INVALID, "sgd: momentum %g must be in [0, 1)", (double)momentum);
    if (!(dampening >= 0.0f && dampening <= 1.0f))
        return SD_FAIL(SD_ERR_INVALID, "sgd: dampening %g must be in [0, 1]", (double)dampening);
    if (!isfinite(weight_decay) || weight_decay < 0.0f)
        return SD_FAIL(SD_ERR_INVALID, "sgd: weight decay %g must be finite and >= 0", (double)weight_decay);
    if (nesterov && (momentum <= 0.0f || dampening != 0.0f))
        return SD_FAIL(SD_ERR_INVALID, "sgd: Nesterov momentum needs momentum > 0 and dampening 0 (got %g, %g)",
                       (double)momentum, (double)dampening);
    p->count = count; p->lr = lr; p->momentum = momentum; p->dampening = dampening;
    p->weight_decay = weight_decay; p->nesterov = nesterov ? 1 : 0; p->first_step = first_step ? 1 : 0;
    return SD_OK;
}
