/* cuda_common.cu: shared helpers of the CUDA backend: error descriptions for the CHECK macros, the
 * workspace that grows to a high-water mark, launch geometry, reading back the device error flags,
 * and the pinned host allocation with its pageable fallback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

#include "kernels/cuda/cuda_common.cuh"

/* ---- error descriptions ------------------------------------------------------------------------ */

/* "<code name>: <text> [host H, device D]" in a per-thread buffer (valid until the next call). */
static const char *describe(const char *code, const char *text) {
    static thread_local char buf[512];
    char host[128] = "?";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        dev = -1;
        (void)cudaGetLastError();
    }
    snprintf(buf, sizeof buf, "%s: %s [host %s, device %d]", code, text, host, dev);
    return buf;
}

const char *sd_cuda_describe(cudaError_t e) { return describe(cudaGetErrorName(e), cudaGetErrorString(e)); }

const char *sd_cuda_describe(cublasStatus_t s) {
    char code[32];
    snprintf(code, sizeof code, "cublas status %d", (int)s);
    return describe(code, cublasGetStatusString(s));
}

const char *sd_cuda_describe(cudnnStatus_t s) {
    char code[32];
    snprintf(code, sizeof code, "cudnn status %d", (int)s);
    return describe(code, cudnnGetErrorString(s));
}

/* ---- workspace ------------------------------------------------------------------------------- */

sd_status sd_cuda_workspace(sd_kctx *k, size_t bytes, void **out) {
    if (!k || !out) return SD_FAIL(SD_ERR_INVALID, "cuda workspace: NULL context or output");
    if (bytes > k->workspace_bytes) {
        if (k->workspace) {
            /* Kernels queued earlier may still read the old block. */
            CUDA_CHECK(cudaStreamSynchronize(k->stream));
            CUDA_CHECK(cudaFree(k->workspace));
            k->workspace = NULL;
            k->workspace_bytes = 0;
        }
        const size_t mib = (size_t)1 << 20;
        const size_t grown = (bytes + mib - 1) / mib * mib;
        cudaError_t e = cudaMalloc(&k->workspace, grown);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            k->workspace = NULL;
            return SD_FAIL(SD_ERR_OOM, "cuda workspace: cudaMalloc of %zu bytes failed: %s; reduce the batch", grown,
                           sd_cuda_describe(e));
        }
        k->workspace_bytes = grown;
    }
    *out = k->workspace;
    return SD_OK;
}

/* ---- launch geometry --------------------------------------------------------------------------- */

unsigned sd_cuda_grid(const sd_kctx *k, size_t n, unsigned threads) {
    const size_t need = (n + threads - 1) / threads;
    const size_t cap = (size_t)(k->sm_count > 0 ? k->sm_count : 1) * 32;
    const size_t g = need < cap ? need : cap;
    return g ? (unsigned)g : 1u;
}

/* ---- flags ------------------------------------------------------------------------------------- */

sd_status sd_cuda_fetch_small(sd_kctx *k) {
    sd_cuda_count_d2h(k, sizeof(sd_cuda_small));
    CUDA_CHECK(cudaMemcpyAsync(k->h_small, k->d_small, sizeof(sd_cuda_small), cudaMemcpyDeviceToHost, k->stream));
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    return SD_OK;
}

sd_status sd_cuda_sync_and_check(sd_kctx *k) {
    if (!k->argmax_check_pending) {
        CUDA_CHECK(cudaStreamSynchronize(k->stream));
        return SD_OK;
    }
    TRY(sd_cuda_fetch_small(k));
    k->argmax_check_pending = 0;
    const int bad = k->h_small->flags[SD_CUDA_FLAG_ARGMAX];
    if (bad != SD_CUDA_FLAG_NONE) {
        CUDA_CHECK(cudaMemsetAsync(&k->d_small->flags[SD_CUDA_FLAG_ARGMAX], 0x7f, sizeof(int), k->stream));
        return SD_FAIL(SD_ERR_INVALID,
                       "maxpool2d bwd (reported at the next synchronisation): argmax entry %d holds an index outside "
                       "its input plane (not from maxpool fwd with these params?)",
                       bad);
    }
    return SD_OK;
}

/* ---- pinned host memory ------------------------------------------------------------------------ */

sd_status sd_cuda_host_alloc(size_t bytes, void **ptr, bool *pinned) {
    if (!ptr || !pinned) return SD_FAIL(SD_ERR_INVALID, "cuda host alloc: NULL output pointer");
    *ptr = NULL;
    *pinned = false;
    if (bytes == 0) bytes = 64;
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes);
    if (e == cudaSuccess && p) {
        *ptr = p;
        *pinned = true;
        return SD_OK;
    }
    (void)cudaGetLastError(); /* not sticky; clear it so later checks do not see it */
    static std::atomic_flag noted = ATOMIC_FLAG_INIT; /* log the fallback once per process */
    if (!noted.test_and_set())
        fprintf(stderr, "scadles: cudaMallocHost(%zu bytes) failed (%s: %s); using pageable memory (slower copies)\n",
                bytes, cudaGetErrorName(e), cudaGetErrorString(e));
    const size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return SD_FAIL(SD_ERR_OOM, "cuda host alloc: %zu bytes overflows", bytes);
    p = aligned_alloc(64, rounded);
    if (!p) return SD_FAIL(SD_ERR_OOM, "cuda host alloc: %zu bytes of pageable fallback memory failed", bytes);
    *ptr = p;
    return SD_OK;
}

void sd_cuda_host_free(void *ptr, bool pinned) {
    if (!ptr) return;
    if (pinned) {
        if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
    } else {
        free(ptr);
    }
}
