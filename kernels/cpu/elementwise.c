/* elementwise.c: CPU elementwise ops for residual adds and gradient sums: y = a + b,
 * y += alpha * x, x *= alpha, and the finiteness check of a summed gradient. Outputs may alias
 * inputs element for element (y == a or y == b). */
#include <math.h>

#include "kernels/cpu/cpu_kernels.h"

/* Below this many elements a kernel runs on the calling thread. */
#define SD_EW_PAR_MIN 65536

sd_status sd_cpu_add(sd_kctx *k, size_t count, const float *a, const float *b, float *y) {
    if (!k || !a || !b || !y)
        return SD_FAIL(SD_ERR_INVALID, "elementwise add: NULL argument (context, a, b and y are required)");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
    return SD_OK;
}

sd_status sd_cpu_axpy(sd_kctx *k, size_t count, float alpha, const float *x, float *y) {
    if (!k || !x || !y)
        return SD_FAIL(SD_ERR_INVALID, "elementwise axpy: NULL argument (context, x and y are required)");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) y[i] += alpha * x[i];
    return SD_OK;
}

sd_status sd_cpu_scale(sd_kctx *k, size_t count, float alpha, float *x) {
    if (!k || !x) return SD_FAIL(SD_ERR_INVALID, "elementwise scale: NULL argument (context and x are required)");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) x[i] *= alpha;
    return SD_OK;
}

sd_status sd_cpu_all_finite(sd_kctx *k, size_t count, const float *x, bool *all) {
    if (!k || !x || !all)
        return SD_FAIL(SD_ERR_INVALID, "elementwise all_finite: NULL argument (context, x and all are required)");
    size_t bad = 0;
#pragma omp parallel for simd num_threads(k->threads) schedule(static) reduction(+ : bad) if (count >= SD_EW_PAR_MIN)
    for (size_t i = 0; i < count; i++) bad += !isfinite(x[i]);
    *all = bad == 0;
    return SD_OK;
}
