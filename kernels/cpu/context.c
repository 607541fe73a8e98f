/* context.c: the CPU kernel context: thread count (of the OpenMP loops, oneDNN's included), a
 * scratch area that grows only past its high-water mark, so a batch size that changes every
 * step causes no reallocation once the largest batch has been seen, and the choice of
 * convolution (SCADLES_CONV: ours or dnnl) and of oneDNN's 3x3 algorithm (SCADLES_WINOGRAD). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu/cpu_kernels.h"

/* Allocations of 2 MiB and more (parameters, activation arenas, scratch) are 2 MiB aligned and
 * rounded, and advised as transparent huge pages (MADV_HUGEPAGE; a no-op where THP is "never").
 * With 4 KiB pages the memory-bound passes of a training step (batch norm, add, copies) ran 2-4x
 * slower in some runs than in others, by where their pages fell; with huge pages ResNet-20 at batch
 * 64 trained 20-30% faster and steadily (docs/performance.md). */
sd_status sd_cpu_alloc(size_t bytes, void **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "cpu alloc: output pointer is NULL");
    *out = NULL;
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return SD_FAIL(SD_ERR_OOM, "cpu alloc: %zu bytes overflows", bytes);
    const size_t huge = (size_t)2 << 20;
    const bool big = rounded >= huge;
    if (big) rounded = (rounded + huge - 1) & ~(huge - 1);
    void *p = aligned_alloc(big ? huge : 64, rounded);
    if (!p) return SD_FAIL(SD_ERR_OOM, "cpu alloc: %zu bytes failed; reduce the batch or the model", bytes);
    if (big) (void)madvise(p, rounded, MADV_HUGEPAGE);
    *out = p;
    return SD_OK;
}

const char *sd_cpu_conv_impl_name(sd_cpu_conv_impl impl) { return impl == SD_CPU_CONV_DNNL ? "dnnl" : "ours"; }

/* SCADLES_CONV: unset or empty, oneDNN where the build has it. */
static sd_status conv_from_env(sd_cpu_conv_impl *out) {
    const char *v = getenv("SCADLES_CONV");
    *out = sd_cpu_conv_dnnl_available() ? SD_CPU_CONV_DNNL : SD_CPU_CONV_OURS;
    if (!v || !*v) return SD_OK;
    if (strcmp(v, "ours") == 0) {
        *out = SD_CPU_CONV_OURS;
    } else if (strcmp(v, "dnnl") == 0) {
        if (!sd_cpu_conv_dnnl_available())
            return SD_FAIL(SD_ERR_INVALID, "SCADLES_CONV=dnnl, but this build has no oneDNN (configure did not find "
                           "libdnnl-dev, or SCADLES_DNNL=OFF, or a ThreadSanitizer build): unset SCADLES_CONV or set it "
                           "to ours");
        *out = SD_CPU_CONV_DNNL;
    } else {
        return SD_FAIL(SD_ERR_INVALID, "SCADLES_CONV=%s: expected ours (kernels/cpu/conv.c) or dnnl (oneDNN), or unset",
                       v);
    }
    return SD_OK;
}

const char *sd_cpu_winograd_name(sd_cpu_winograd mode) {
    return mode == SD_CPU_WINO_OFF ? "off" : mode == SD_CPU_WINO_ON ? "on" : "auto";
}

/* SCADLES_WINOGRAD: unset or empty, auto. */
static sd_status winograd_from_env(sd_cpu_winograd *out) {
    const char *v = getenv("SCADLES_WINOGRAD");
    *out = SD_CPU_WINO_AUTO;
    if (!v || !*v || strcmp(v, "auto") == 0) return SD_OK;
    if (strcmp(v, "off") == 0) *out = SD_CPU_WINO_OFF;
    else if (strcmp(v, "on") == 0) *out = SD_CPU_WINO_ON;
    else
        return SD_FAIL(SD_ERR_INVALID, "SCADLES_WINOGRAD=%s: expected auto (Winograd for 3x3 stride-1 convolutions with "
                       ">= %d channels in and out), on (every 3x3 stride-1 one) or off (direct only), or unset",
                       v, SD_WINOGRAD_MIN_CH);
    return SD_OK;
}

sd_status sd_cpu_kctx_set_winograd(sd_kctx *k, sd_cpu_winograd mode) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "cpu context: NULL context");
    if (mode != SD_CPU_WINO_AUTO && mode != SD_CPU_WINO_OFF && mode != SD_CPU_WINO_ON)
        return SD_FAIL(SD_ERR_INVALID, "cpu context: unknown Winograd mode %d", (int)mode);
    k->winograd = mode;
    return SD_OK;
}

sd_status sd_cpu_kctx_set_conv(sd_kctx *k, sd_cpu_conv_impl impl) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "cpu context: NULL context");
    if (impl != SD_CPU_CONV_OURS && impl != SD_CPU_CONV_DNNL)
        return SD_FAIL(SD_ERR_INVALID, "cpu context: unknown convolution implementation %d", (int)impl);
    if (impl == SD_CPU_CONV_DNNL && !sd_cpu_conv_dnnl_available())
        return SD_FAIL(SD_ERR_UNSUPPORTED, "cpu context: this build has no oneDNN convolutions");
    k->conv = impl;
    return SD_OK;
}

sd_status sd_cpu_kctx_create(int threads, sd_kctx **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "cpu context: output pointer is NULL");
    *out = NULL;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    sd_cpu_conv_impl conv;
    sd_cpu_winograd wino;
    TRY(conv_from_env(&conv));
    TRY(winograd_from_env(&wino));
    sd_kctx *k = calloc(1, sizeof *k);
    if (!k) return SD_FAIL(SD_ERR_OOM, "cpu context: allocation failed");
    k->threads = threads;
    k->conv = conv;
    k->winograd = wino;
    /* Every parallel loop of the CPU kernels, GEMM included (gemm.c), is OpenMP; OpenBLAS only
     * serves sd_cpu_sgemm's fallback and runs single-threaded, because its thread pool and
     * OpenMP's spin against each other on few cores (3x slower training measured with both). */
    openblas_set_num_threads(1);
    omp_set_num_threads(threads);
    *out = k;
    return SD_OK;
}

void sd_cpu_kctx_destroy(sd_kctx *k) {
    if (!k) return;
    sd_cpu_dnnl_ctx_destroy(k->dnnl);
    free(k->scratch);
    free(k);
}

sd_status sd_cpu_scratch(sd_kctx *k, size_t bytes, void **out) {
    if (!k || !out) return SD_FAIL(SD_ERR_INVALID, "cpu scratch: NULL context or output");
    if (bytes > k->scratch_bytes) {
        free(k->scratch);
        k->scratch = NULL;
        k->scratch_bytes = 0;
        TRY(sd_cpu_alloc(bytes, &k->scratch));
        k->scratch_bytes = bytes;
    }
    *out = k->scratch;
    return SD_OK;
}
