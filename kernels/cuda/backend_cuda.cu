/* backend_cuda.cu: the CUDA backend: creates the CUDA kernel context (device, streams, cuBLAS and
 * cuDNN handles) and fills the backend table (engine/backend.h) with the kernels of this folder.
 * Memory entries: alloc = cudaMalloc, upload/download = cudaMemcpyAsync on the compute stream and
 * a wait, copy/zero = asynchronous device copies and memsets on the compute stream; the optional
 * upload_async/upload_wait pair copies on the copy stream, ordered against the compute stream by
 * two events (double-buffered batch uploads that overlap the step before).
 *
 * Threading: one context drives one device from one host thread at a time (the create call makes
 * the device current for the calling thread). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

/* Default cap on the workspace one cuDNN algorithm may ask for (MiB); SD_CUDA_WORKSPACE_MB
 * overrides it. */
#define SD_CUDA_DEFAULT_WS_MB 1024

/* ---- context ----------------------------------------------------------------------------------- */

static sd_status kctx_init(sd_kctx *k) {
    CUDA_CHECK(cudaSetDevice(k->device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, k->device));
    snprintf(k->name, sizeof k->name, "%s", prop.name);
    k->sm_count = prop.multiProcessorCount;
    k->cc_major = prop.major;
    k->cc_minor = prop.minor;

    CUDA_CHECK(cudaStreamCreateWithFlags(&k->stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&k->copy_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&k->copy_done, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&k->compute_mark, cudaEventDisableTiming));

    /* fp32 parity with the CPU backend: no TF32 anywhere. cuBLAS's default math mode only uses
     * TF32 when asked (CUBLAS_TF32_TENSOR_OP_MATH); cuDNN's CUDNN_DEFAULT_MATH would permit TF32 on
     * Ampere and later, so the convolution descriptor is set to CUDNN_FMA_MATH (conv.cu). */
    CUBLAS_CHECK(cublasCreate(&k->cublas));
    CUBLAS_CHECK(cublasSetStream(k->cublas, k->stream));
    CUBLAS_CHECK(cublasSetMathMode(k->cublas, CUBLAS_DEFAULT_MATH));
    CUDNN_CHECK(cudnnCreate(&k->cudnn));
    CUDNN_CHECK(cudnnSetStream(k->cudnn, k->stream));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&k->x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&k->y_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&k->b_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&k->w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&k->conv_desc));

    CUDA_CHECK(cudaMalloc(&k->d_small, sizeof(sd_cuda_small)));
    CUDA_CHECK(cudaMemsetAsync(k->d_small, 0x7f, sizeof(sd_cuda_small), k->stream));
    void *h = NULL;
    TRY(sd_cuda_host_alloc(sizeof(sd_cuda_small), &h, &k->h_small_pinned));
    k->h_small = (sd_cuda_small *)h;

    const char *find = getenv("SD_CUDNN_FIND");
    k->use_find = !(find && !strcmp(find, "0"));
    const char *ws = getenv("SD_CUDA_WORKSPACE_MB");
    long mb = ws ? strtol(ws, NULL, 10) : SD_CUDA_DEFAULT_WS_MB;
    if (mb <= 0) mb = SD_CUDA_DEFAULT_WS_MB;
    k->workspace_limit = (size_t)mb << 20;
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    return SD_OK;
}

extern "C" void sd_cuda_kctx_destroy(sd_kctx *k) {
    if (!k) return;
    /* Best effort: errors here have nowhere to go; clear them so they do not leak into later calls. */
    if (cudaSetDevice(k->device) != cudaSuccess) (void)cudaGetLastError();
    if (k->stream && cudaStreamSynchronize(k->stream) != cudaSuccess) (void)cudaGetLastError();
    if (k->copy_stream && cudaStreamSynchronize(k->copy_stream) != cudaSuccess) (void)cudaGetLastError();
    if (k->conv_desc) cudnnDestroyConvolutionDescriptor(k->conv_desc);
    if (k->w_desc) cudnnDestroyFilterDescriptor(k->w_desc);
    if (k->b_desc) cudnnDestroyTensorDescriptor(k->b_desc);
    if (k->y_desc) cudnnDestroyTensorDescriptor(k->y_desc);
    if (k->x_desc) cudnnDestroyTensorDescriptor(k->x_desc);
    if (k->cudnn) cudnnDestroy(k->cudnn);
    if (k->cublas) cublasDestroy(k->cublas);
    if (k->workspace) cudaFree(k->workspace);
    if (k->d_small) cudaFree(k->d_small);
    if (k->topk_scratch) cudaFree(k->topk_scratch);
    if (k->copy_done) cudaEventDestroy(k->copy_done);
    if (k->compute_mark) cudaEventDestroy(k->compute_mark);
    sd_cuda_host_free(k->h_small, k->h_small_pinned);
    if (k->copy_stream) cudaStreamDestroy(k->copy_stream);
    if (k->stream) cudaStreamDestroy(k->stream);
    (void)cudaGetLastError();
    free(k->algos);
    free(k);
}

extern "C" sd_status sd_cuda_device_count(int *count) {
    if (!count) return SD_FAIL(SD_ERR_INVALID, "cuda device count: output pointer is NULL");
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *count = 0;
        return SD_FAIL(SD_ERR_UNSUPPORTED, "no CUDA device: cudaGetDeviceCount returned %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    }
    if (*count <= 0) return SD_FAIL(SD_ERR_UNSUPPORTED, "no CUDA device: cudaGetDeviceCount returned 0 devices");
    return SD_OK;
}

extern "C" sd_status sd_cuda_kctx_create(int device, sd_kctx **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "cuda context: output pointer is NULL");
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return SD_FAIL(SD_ERR_UNSUPPORTED,
                       "no CUDA device: cudaGetDeviceCount returned %s (%s); use the cpu backend on this machine",
                       cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (count <= 0)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "no CUDA device: cudaGetDeviceCount returned 0 devices; use the cpu backend");
    if (device < 0 || device >= count)
        return SD_FAIL(SD_ERR_INVALID, "CUDA device %d requested but this machine has %d (0..%d)", device, count,
                       count - 1);
    sd_kctx *k = (sd_kctx *)calloc(1, sizeof *k);
    if (!k) return SD_FAIL(SD_ERR_OOM, "cuda context: allocation failed");
    k->device = device;
    sd_status st = kctx_init(k);
    if (st != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        sd_cuda_kctx_destroy(k);
        return st;
    }
    *out = k;
    return SD_OK;
}

extern "C" void *sd_cuda_stream(sd_kctx *k) { return k ? (void *)k->stream : NULL; }

extern "C" int sd_cuda_conv_algo_cache_size(const sd_kctx *k) { return k ? k->num_algos : 0; }

/* ---- memory entries ---------------------------------------------------------------------------- */

static sd_status cuda_alloc(sd_kctx *k, size_t bytes, void **out) {
    if (!k || !out) return SD_FAIL(SD_ERR_INVALID, "cuda alloc: NULL context or output");
    *out = NULL;
    if (bytes == 0) bytes = 64;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes); /* 256-byte aligned */
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
        return SD_FAIL(SD_ERR_OOM,
                       "cuda alloc: cudaMalloc of %zu bytes on device %d (%s) failed: %s; %zu of %zu MiB free; "
                       "reduce the batch or the model",
                       bytes, k->device, k->name, sd_cuda_describe(e), free_b >> 20, total_b >> 20);
    }
    *out = p;
    return SD_OK;
}

static void cuda_free(sd_kctx *k, void *ptr) {
    (void)k;
    if (ptr && cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

static sd_status cuda_upload(sd_kctx *k, void *dst, const void *host_src, size_t bytes) {
    if (bytes == 0) return SD_OK;
    if (!k || !dst || !host_src) return SD_FAIL(SD_ERR_INVALID, "cuda upload: NULL context or pointer (%zu bytes)", bytes);
    /* From pageable memory this stages through the driver; the stream ring buffer will use pinned
     * memory (sd_cuda_host_alloc) and the copy stream. */
    sd_cuda_count_h2d(k, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, k->stream));
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    return SD_OK;
}

/* The copy waits for the compute work enqueued before the last upload_wait (the double-buffering
 * rule of engine/backend.h); the first call, before any upload_wait, waits for everything so far. */
static sd_status cuda_upload_async(sd_kctx *k, void *dst, const void *host_src, size_t bytes) {
    if (bytes == 0) return SD_OK;
    if (!k || !dst || !host_src)
        return SD_FAIL(SD_ERR_INVALID, "cuda upload_async: NULL context or pointer (%zu bytes)", bytes);
    if (!k->mark_set) {
        CUDA_CHECK(cudaEventRecord(k->compute_mark, k->stream));
        k->mark_set = 1;
    }
    CUDA_CHECK(cudaStreamWaitEvent(k->copy_stream, k->compute_mark, 0));
    sd_cuda_count_h2d(k, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, k->copy_stream));
    CUDA_CHECK(cudaEventRecord(k->copy_done, k->copy_stream));
    k->async_pending++;
    return SD_OK;
}

static sd_status cuda_upload_wait(sd_kctx *k) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "cuda upload_wait: NULL context");
    if (k->async_pending) {
        CUDA_CHECK(cudaStreamWaitEvent(k->stream, k->copy_done, 0)); /* later compute sees the data */
        CUDA_CHECK(cudaEventSynchronize(k->copy_done));              /* host sources reusable */
        k->async_pending = 0;
    }
    CUDA_CHECK(cudaEventRecord(k->compute_mark, k->stream)); /* the next async copy starts after this point */
    k->mark_set = 1;
    return SD_OK;
}

static sd_status cuda_download(sd_kctx *k, void *host_dst, const void *src, size_t bytes) {
    if (bytes == 0) return SD_OK;
    if (!k || !host_dst || !src)
        return SD_FAIL(SD_ERR_INVALID, "cuda download: NULL context or pointer (%zu bytes)", bytes);
    sd_cuda_count_d2h(k, bytes);
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, k->stream));
    TRY(sd_cuda_sync_and_check(k));
    return SD_OK;
}

/* Regions must not overlap (they never do in the engine); dst == src is a no-op. */
static sd_status cuda_copy(sd_kctx *k, void *dst, const void *src, size_t bytes) {
    if (bytes == 0 || dst == src) return SD_OK;
    if (!k || !dst || !src) return SD_FAIL(SD_ERR_INVALID, "cuda copy: NULL context or pointer (%zu bytes)", bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, k->stream));
    return SD_OK;
}

static sd_status cuda_zero(sd_kctx *k, void *ptr, size_t bytes) {
    if (bytes == 0) return SD_OK;
    if (!k || !ptr) return SD_FAIL(SD_ERR_INVALID, "cuda zero: NULL context or pointer (%zu bytes)", bytes);
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, k->stream));
    return SD_OK;
}

static sd_status cuda_synchronize(sd_kctx *k) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "cuda synchronize: NULL context");
    TRY(sd_cuda_sync_and_check(k));
    return SD_OK;
}

/* ---- supports_op ------------------------------------------------------------------------------- */

/* Says why on stderr (sd_backend_require then reports SD_ERR_UNSUPPORTED naming the op). */
static bool decline(sd_op op, const char *why) {
    fprintf(stderr, "scadles: the cuda backend declines %s: %s\n", sd_op_name(op), why);
    return false;
}

static bool cuda_supports_op(sd_kctx *k, sd_op op, const void *params) {
    (void)k;
    if (op < 0 || op >= SD_OP_COUNT) return false;
    const long long imax = 2147483647LL;
    switch (op) {
    case SD_OP_CONV2D: {
        if (!params) return true;
        const sd_conv2d_params *p = (const sd_conv2d_params *)params;
        const long long xe = (long long)p->n * p->c * p->h * p->w, ye = (long long)p->n * p->k * p->oh * p->ow;
        const long long we = (long long)p->k * p->c * p->kh * p->kw;
        const long long big = xe > ye ? (xe > we ? xe : we) : (ye > we ? ye : we);
        if (big > imax) {
            char why[160];
            snprintf(why, sizeof why,
                     "a tensor of %lld elements exceeds the 2^31-1 that cuDNN's 4-D descriptors index; split the batch", big);
            return decline(op, why);
        }
        return true;
    }
    case SD_OP_MAXPOOL2D: {
        if (!params) return true;
        const sd_pool2d_params *p = (const sd_pool2d_params *)params;
        const long long hw = (long long)p->h * p->w;
        if (hw > imax) {
            char why[128];
            snprintf(why, sizeof why, "an input plane of %lld elements exceeds the int32 argmax range", hw);
            return decline(op, why);
        }
        return true;
    }
    default: return true; /* every other op and shape its params constructor accepts */
    }
}

static void cuda_destroy(sd_kctx *k) { sd_cuda_kctx_destroy(k); }

static void cuda_transfers(sd_kctx *k, sd_transfer_stats *out) { *out = k->xfer; }

/* ---- the table --------------------------------------------------------------------------------- */

static sd_backend_ops make_cuda_ops(void) {
    sd_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.alloc = cuda_alloc;
    o.free = cuda_free;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.copy = cuda_copy;
    o.zero = cuda_zero;
    o.synchronize = cuda_synchronize;
    o.supports_op = cuda_supports_op;
    o.destroy = cuda_destroy;
    o.upload_async = cuda_upload_async;
    o.upload_wait = cuda_upload_wait;
    o.transfers = cuda_transfers;
#define CUDA_ENTRY(name, params) o.name = sd_cuda_##name;
    SD_KERNEL_OPS(CUDA_ENTRY)
#undef CUDA_ENTRY
    return o;
}

extern "C" sd_status sd_backend_cuda_create(sd_backend *be, int device) {
    if (!be) return SD_FAIL(SD_ERR_INVALID, "cuda backend: NULL backend");
    be->ops = NULL;
    be->ctx = NULL;
    static const sd_backend_ops ops = make_cuda_ops(); /* initialised once, thread-safe */
    sd_kctx *k = NULL;
    TRY(sd_cuda_kctx_create(device, &k));
    be->ops = &ops;
    be->ctx = k;
    return SD_OK;
}
