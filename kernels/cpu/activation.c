/* activation.c: CPU ReLU forward and backward, and a residual add fused with its ReLU
 * (add_relu_fwd: y = relu(a + b), bitwise add then relu_fwd). The backward reads the forward's output
 * (dx = y > 0 ? dy : 0), so the forward may run in place (y == x) and dx may alias dy. */
#include "kernels/cpu/cpu_kernels.h"

/* Below this many elements a kernel runs on the calling thread. */
#define SD_ACT_PAR_MIN 65536

sd_status sd_cpu_relu_fwd(sd_kctx *k, size_t count, const float *x, float *y) {
    if (!k || !x || !y) return SD_FAIL(SD_ERR_INVALID, "relu fwd: NULL argument (context, x and y are required)");
    /* x < 0 ? 0 : x keeps NaN visible (as PyTorch's relu does). */
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_ACT_PAR_MIN)
    for (size_t i = 0; i < count; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    return SD_OK;
}

sd_status sd_cpu_add_relu_fwd(sd_kctx *k, size_t count, const float *a, const float *b, float *y) {
    if (!k || !a || !b || !y)
        return SD_FAIL(SD_ERR_INVALID, "add+relu fwd: NULL argument (context, a, b and y are required)");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_ACT_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        const float t = a[i] + b[i];
        y[i] = t < 0.0f ? 0.0f : t;
    }
    return SD_OK;
}

sd_status sd_cpu_relu_bwd(sd_kctx *k, size_t count, const float *y, const float *dy, float *dx) {
    if (!k || !y || !dy || !dx)
        return SD_FAIL(SD_ERR_INVALID, "relu bwd: NULL argument (context, y, dy and dx are required)");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_ACT_PAR_MIN)
    for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return SD_OK;
}
