/* cuda_common.cuh: what every .cu file of the CUDA backend shares: the CUDA kernel context
 * (struct sd_kctx: device, streams, cuBLAS/cuDNN handles, the workspace, the cuDNN algorithm
 * cache, error flags), the CHECK_GEN-based CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK macros, and a
 * few device helpers (block reductions, launch geometry). C++ (nvcc) only; C code includes
 * cuda_kernels.h instead. */
#ifndef SD_CUDA_COMMON_CUH
#define SD_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>

extern "C" { /* the engine's headers have their own extern "C" blocks too; this one is harmless */
#include "base/status.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
}
#include "kernels/cuda/cuda_kernels.h"

/* ---- error checking ---------------------------------------------------------------------------
 * Built on CHECK_GEN (engine/status.h): on failure the function returns through SD_FAIL, whose
 * message names the function and file:line; the "to_string" below adds the library's name and text
 * for the code plus the host and the current device, e.g.
 *   runtime library error: cudaStreamSynchronize(k->stream) failed: cudaErrorIllegalAddress: an illegal
 *   memory access was encountered [host gpu07, device 0] (cuda_upload at backend_cuda.cu:149) */
const char *sd_cuda_describe(cudaError_t e);
const char *sd_cuda_describe(cublasStatus_t s);
const char *sd_cuda_describe(cudnnStatus_t s);

#define CUDA_CHECK(expr) CHECK_GEN(expr, cudaSuccess, sd_cuda_describe, SD_ERR_RUNTIME)
#define CUBLAS_CHECK(expr) CHECK_GEN(expr, CUBLAS_STATUS_SUCCESS, sd_cuda_describe, SD_ERR_RUNTIME)
#define CUDNN_CHECK(expr) CHECK_GEN(expr, CUDNN_STATUS_SUCCESS, sd_cuda_describe, SD_ERR_RUNTIME)

/* ---- the context ---------------------------------------------------------------------------- */

/* cuDNN algorithms chosen for one convolution shape (chosen lazily per direction, then reused). */
typedef struct sd_conv_algo_entry {
    int key[11]; /* n, c, h, w, k, kh, kw, sh, sw, ph, pw */
    int have;    /* SD_CONV_HAVE_* bits */
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws; /* workspace bytes each needs */
} sd_conv_algo_entry;

enum { SD_CONV_HAVE_FWD = 1, SD_CONV_HAVE_BWD_DATA = 2, SD_CONV_HAVE_BWD_FILTER = 4 };

/* Error flags kernels raise and the host reads back (with the loss, in one small copy). A flag
 * holds the smallest offending index (atomicMin); SD_CUDA_FLAG_NONE (every byte 0x7f, so one
 * cudaMemsetAsync resets it) means clear. */
#define SD_CUDA_FLAG_NONE 0x7f7f7f7f
enum { SD_CUDA_FLAG_LABEL = 0, SD_CUDA_FLAG_ARGMAX = 1, SD_CUDA_FLAG_NONFINITE = 2, SD_CUDA_NUM_FLAGS = 4 };

typedef struct sd_cuda_small {
    int flags[SD_CUDA_NUM_FLAGS];
    float loss;
    int pad[3];
} sd_cuda_small;

struct sd_kctx {
    int device;
    int sm_count;
    int cc_major, cc_minor;
    char name[256];
    cudaStream_t stream;      /* compute: every kernel, cuBLAS and cuDNN call */
    cudaStream_t copy_stream; /* host -> device staging overlapped with compute (upload_async) */
    cublasHandle_t cublas;
    cudnnHandle_t cudnn;
    /* cuDNN descriptors, re-set per call (setting one is a few stores). */
    cudnnTensorDescriptor_t x_desc, y_desc, b_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    /* Scratch for cuDNN and the loss: grown only past its high-water mark. */
    void *workspace;
    size_t workspace_bytes;
    size_t workspace_limit; /* largest workspace an algorithm may ask for (SD_CUDA_WORKSPACE_MB) */
    /* Algorithm cache, one entry per convolution shape (linear search: models have tens). */
    sd_conv_algo_entry *algos;
    int num_algos, cap_algos;
    int use_find; /* 1: cudnnFind* (benchmarks every algorithm), 0: cudnnGet*_v7 heuristics */
    /* Error flags and the loss scalar: device copy and a (pinned when possible) host mirror. */
    sd_cuda_small *d_small;
    sd_cuda_small *h_small;
    bool h_small_pinned;
    int argmax_check_pending; /* a maxpool backward raised/may raise the argmax flag */
    /* Top-k (topk.cu): a fixed-size device block allocated on the first call, kept until destroy. */
    void *topk_scratch;
    /* Asynchronous uploads (backend_cuda.cu, upload_async/upload_wait): copy_done is recorded on the
     * copy stream after each async copy; compute_mark on the compute stream at each upload_wait (the
     * point after which the compute stream no longer reads what the next async copy overwrites). */
    cudaEvent_t copy_done, compute_mark;
    int async_pending; /* async copies enqueued since the last upload_wait */
    sd_transfer_stats xfer; /* host <-> device traffic (the transfers entry): every copy counts itself */
    int mark_set;      /* compute_mark has been recorded (by an upload_wait) */
};

/* ---- helpers (cuda_common.cu) ---------------------------------------------------------------- */

/* Workspace of at least `bytes` (NULL when bytes is 0 and none exists yet). Growing waits for the
 * compute stream before freeing the old block. Valid until the next call that grows it. */
sd_status sd_cuda_workspace(sd_kctx *k, size_t bytes, void **out);
/* Blocks for a grid-stride loop over n items with `threads` per block: enough to fill the device,
 * never more than the items need, at least 1. */
unsigned sd_cuda_grid(const sd_kctx *k, size_t n, unsigned threads);
/* Waits for the compute stream and reports a flag raised by an earlier asynchronous op (the
 * maxpool backward's argmax check) as SD_ERR_INVALID. */
sd_status sd_cuda_sync_and_check(sd_kctx *k);
/* Copies the flags and loss to the host mirror and waits for the compute stream. */
sd_status sd_cuda_fetch_small(sd_kctx *k);

/* Every host <-> device copy of the backend counts itself (the transfers entry of the table). */
static inline void sd_cuda_count_h2d(sd_kctx *k, size_t bytes) {
    k->xfer.h2d_bytes += bytes;
    k->xfer.h2d_copies++;
}
static inline void sd_cuda_count_d2h(sd_kctx *k, size_t bytes) {
    k->xfer.d2h_bytes += bytes;
    k->xfer.d2h_copies++;
}

/* ---- device helpers -------------------------------------------------------------------------- */

#define SD_CUDA_THREADS 256

__device__ __forceinline__ double sd_warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float sd_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block, returned to every thread. sh: 33 doubles of shared memory; blockDim.x a
 * multiple of 32. The order is fixed by the launch shape, so results are run-to-run identical. */
__device__ __forceinline__ double sd_block_sum(double v, double *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = sd_warp_sum(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        double t = lane < nw ? sh[lane] : 0.0;
        t = sd_warp_sum(t);
        if (lane == 0) sh[32] = t;
    }
    __syncthreads();
    const double r = sh[32];
    __syncthreads(); /* sh may be reused right after */
    return r;
}

/* Maximum over the block (NaN ignored, as fmaxf), returned to every thread. sh: 33 floats. */
__device__ __forceinline__ float sd_block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = sd_warp_max(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? sh[lane] : -INFINITY;
        t = sd_warp_max(t);
        if (lane == 0) sh[32] = t;
    }
    __syncthreads();
    const float r = sh[32];
    __syncthreads();
    return r;
}

#endif
