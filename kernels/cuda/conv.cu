/* conv.cu: 2-D convolution on cuDNN (NCHW, OIHW, PyTorch's cross-correlation): forward, backward
 * data, backward filter, bias add (cudnnAddTensor) and bias gradient (cudnnConvolutionBackwardBias).
 *
 * Algorithms are chosen once per shape and direction and cached in the context: by default with
 * cudnnFind*Algorithm (cuDNN times every algorithm on scratch buffers of its own), with
 * SD_CUDNN_FIND=0 with the cudnnGet*_v7 heuristics (no timing runs). Among the candidates, in the
 * order cuDNN ranks them (fastest first), the first deterministic one that succeeded and fits the
 * workspace cap is taken, else the first one that succeeded and fits. The math type is
 * CUDNN_FMA_MATH: plain fp32 FMA, never TF32, so results match the CPU backend to fp32 rounding.
 *
 * The three name tiers here: cuDNN supplies the kernels; the static functions below bind the
 * descriptors and run them on the context's compute stream (set on the cuDNN handle); the two
 * sd_cuda_conv2d_* entry points have the CPU twins' signatures. (The legacy convolution API used
 * here is deprecated in cuDNN 9 in favour of the graph API, but present and supported.) */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

/* ---- descriptors ------------------------------------------------------------------------------- */

static sd_status set_descriptors(sd_kctx *k, const sd_conv2d_params *p) {
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(k->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, p->n, p->c, p->h, p->w));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(k->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, p->k, p->c, p->kh, p->kw));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(k->conv_desc, p->ph, p->pw, p->sh, p->sw, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(k->conv_desc, CUDNN_FMA_MATH));
    int on = 0, ok = 0, oh = 0, ow = 0;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(k->conv_desc, k->x_desc, k->w_desc, &on, &ok, &oh, &ow));
    if (on != p->n || ok != p->k || oh != p->oh || ow != p->ow)
        return SD_FAIL(SD_ERR_SHAPE, "conv2d: cuDNN computes output [%d,%d,%d,%d], the params say [%d,%d,%d,%d]", on, ok,
                       oh, ow, p->n, p->k, p->oh, p->ow);
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(k->y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, p->n, p->k, p->oh, p->ow));
    if (p->has_bias)
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(k->b_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, p->k, 1, 1));
    return SD_OK;
}

/* ---- algorithm cache --------------------------------------------------------------------------- */

static void shape_key(const sd_conv2d_params *p, int key[11]) {
    const int v[11] = {p->n, p->c, p->h, p->w, p->k, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw};
    memcpy(key, v, sizeof v);
}

static sd_status algo_entry(sd_kctx *k, const sd_conv2d_params *p, sd_conv_algo_entry **out) {
    int key[11];
    shape_key(p, key);
    for (int i = 0; i < k->num_algos; i++)
        if (!memcmp(k->algos[i].key, key, sizeof key)) {
            *out = &k->algos[i];
            return SD_OK;
        }
    if (k->num_algos == k->cap_algos) {
        const int cap = k->cap_algos ? 2 * k->cap_algos : 32;
        sd_conv_algo_entry *a = (sd_conv_algo_entry *)realloc(k->algos, (size_t)cap * sizeof *a);
        if (!a) return SD_FAIL(SD_ERR_OOM, "conv2d: growing the cuDNN algorithm cache to %d entries failed", cap);
        k->algos = a;
        k->cap_algos = cap;
    }
    sd_conv_algo_entry *e = &k->algos[k->num_algos++];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, sizeof key);
    *out = e;
    return SD_OK;
}

/* Index of the algorithm to use in cuDNN's ranked list, or -1: the first deterministic success
 * within the workspace cap, else the first success within it. TF32 variants are skipped. */
template <typename Perf> static int pick(const Perf *perf, int got, size_t limit) {
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < got; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > limit) continue;
            if (perf[i].mathType == CUDNN_TENSOR_OP_MATH || perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
                continue;
            if (pass == 0 && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
            return i;
        }
    return -1;
}

static sd_status no_algo(const sd_kctx *k, const sd_conv2d_params *p, const char *dir, int got) {
    return SD_FAIL(SD_ERR_UNSUPPORTED,
                   "conv2d %s: none of the %d cuDNN algorithms for input [%d,%d,%d,%d], %d filters %dx%d, stride %dx%d, "
                   "padding %dx%d runs in fp32 within the %zu MiB workspace cap (raise SD_CUDA_WORKSPACE_MB)",
                   dir, got, p->n, p->c, p->h, p->w, p->k, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw,
                   k->workspace_limit >> 20);
}

static sd_status choose_fwd(sd_kctx *k, const sd_conv2d_params *p, sd_conv_algo_entry *e) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    if (k->use_find)
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(k->cudnn, k->x_desc, k->w_desc, k->conv_desc, k->y_desc,
                                                         CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    else
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(k->cudnn, k->x_desc, k->w_desc, k->conv_desc, k->y_desc,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    const int i = pick(perf, got, k->workspace_limit);
    if (i < 0) return no_algo(k, p, "forward", got);
    e->fwd = perf[i].algo;
    CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(k->cudnn, k->x_desc, k->w_desc, k->conv_desc, k->y_desc, e->fwd,
                                                        &e->fwd_ws));
    e->have |= SD_CONV_HAVE_FWD;
    return SD_OK;
}

static sd_status choose_bwd_data(sd_kctx *k, const sd_conv2d_params *p, sd_conv_algo_entry *e) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int got = 0;
    if (k->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(k->cudnn, k->w_desc, k->y_desc, k->conv_desc, k->x_desc,
                                                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(k->cudnn, k->w_desc, k->y_desc, k->conv_desc, k->x_desc,
                                                                CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
    const int i = pick(perf, got, k->workspace_limit);
    if (i < 0) return no_algo(k, p, "backward data", got);
    e->bwd_data = perf[i].algo;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(k->cudnn, k->w_desc, k->y_desc, k->conv_desc, k->x_desc,
                                                             e->bwd_data, &e->bwd_data_ws));
    e->have |= SD_CONV_HAVE_BWD_DATA;
    return SD_OK;
}

static sd_status choose_bwd_filter(sd_kctx *k, const sd_conv2d_params *p, sd_conv_algo_entry *e) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = 0;
    if (k->use_find)
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(k->cudnn, k->x_desc, k->y_desc, k->conv_desc, k->w_desc,
                                                                CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(k->cudnn, k->x_desc, k->y_desc, k->conv_desc,
                                                                  k->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                  &got, perf));
    const int i = pick(perf, got, k->workspace_limit);
    if (i < 0) return no_algo(k, p, "backward filter", got);
    e->bwd_filter = perf[i].algo;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(k->cudnn, k->x_desc, k->y_desc, k->conv_desc, k->w_desc,
                                                               e->bwd_filter, &e->bwd_filter_ws));
    e->have |= SD_CONV_HAVE_BWD_FILTER;
    return SD_OK;
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_conv2d_fwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                        const float *b, float *y) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "conv2d fwd: NULL context or params");
    if (!x || !w || !y)
        return SD_FAIL(SD_ERR_INVALID, "conv2d fwd: NULL tensor (x %p, w %p, y %p are required)", (const void *)x,
                       (const void *)w, (const void *)y);
    if (p->has_bias && !b) return SD_FAIL(SD_ERR_INVALID, "conv2d fwd: has_bias is set but the bias b is NULL");
    TRY(set_descriptors(k, p));
    sd_conv_algo_entry *e = NULL;
    TRY(algo_entry(k, p, &e));
    if (!(e->have & SD_CONV_HAVE_FWD)) TRY(choose_fwd(k, p, e));
    void *ws = NULL;
    TRY(sd_cuda_workspace(k, e->fwd_ws, &ws));
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionForward(k->cudnn, &one, k->x_desc, x, k->w_desc, w, k->conv_desc, e->fwd, ws, e->fwd_ws,
                                        &zero, k->y_desc, y));
    if (p->has_bias) CUDNN_CHECK(cudnnAddTensor(k->cudnn, &one, k->b_desc, b, &one, k->y_desc, y));
    return SD_OK;
}

extern "C" sd_status sd_cuda_conv2d_bwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                        const float *dy, float *dx, float *dw, float *db) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "conv2d bwd: NULL context or params");
    if (!x || !w || !dy || !dw)
        return SD_FAIL(SD_ERR_INVALID, "conv2d bwd: NULL tensor (x %p, w %p, dy %p, dw %p are required)",
                       (const void *)x, (const void *)w, (const void *)dy, (const void *)dw);
    if (p->has_bias && !db)
        return SD_FAIL(SD_ERR_INVALID, "conv2d bwd: has_bias is set but the bias gradient db is NULL");
    TRY(set_descriptors(k, p));
    sd_conv_algo_entry *e = NULL;
    TRY(algo_entry(k, p, &e));
    if (!(e->have & SD_CONV_HAVE_BWD_FILTER)) TRY(choose_bwd_filter(k, p, e));
    if (dx && !(e->have & SD_CONV_HAVE_BWD_DATA)) TRY(choose_bwd_data(k, p, e));
    const size_t need = dx && e->bwd_data_ws > e->bwd_filter_ws ? e->bwd_data_ws : e->bwd_filter_ws;
    void *ws = NULL;
    TRY(sd_cuda_workspace(k, need, &ws));
    const float one = 1.0f, zero = 0.0f;
    if (p->has_bias) CUDNN_CHECK(cudnnConvolutionBackwardBias(k->cudnn, &one, k->y_desc, dy, &zero, k->b_desc, db));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(k->cudnn, &one, k->x_desc, x, k->y_desc, dy, k->conv_desc, e->bwd_filter,
                                               ws, e->bwd_filter_ws, &zero, k->w_desc, dw));
    if (dx)
        CUDNN_CHECK(cudnnConvolutionBackwardData(k->cudnn, &one, k->w_desc, w, k->y_desc, dy, k->conv_desc, e->bwd_data,
                                                 ws, e->bwd_data_ws, &zero, k->x_desc, dx));
    return SD_OK;
}
