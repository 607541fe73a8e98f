/* dropout.c: CPU dropout. The keep mask is a pure function of (seed, offset + i) through
 * sd_dropout_uniform (ops.h), so the CUDA twin draws the same mask: keep = u >= p, and kept
 * values are scaled by 1 / (1 - p) (PyTorch's inverted dropout). y may alias x, dx may alias dy. */
#include "kernels/cpu/cpu_kernels.h"

/* Below this many elements a kernel runs on the calling thread. */
#define SD_DROPOUT_PAR_MIN 32768

sd_status sd_cpu_dropout_fwd(sd_kctx *k, const sd_dropout_params *p, const float *x, float *y, uint8_t *mask) {
    if (!k || !p || !x || !y || !mask)
        return SD_FAIL(SD_ERR_INVALID, "dropout fwd: NULL argument (context, params, x, y and mask are required)");
    const size_t count = p->count;
    const float prob = p->p, scale = 1.0f / (1.0f - p->p);
    const uint64_t seed = p->seed, offset = p->offset;
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_DROPOUT_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        const int keep = sd_dropout_uniform(seed, offset + (uint64_t)i) >= prob;
        mask[i] = (uint8_t)keep;
        y[i] = keep ? x[i] * scale : 0.0f;
    }
    return SD_OK;
}

sd_status sd_cpu_dropout_bwd(sd_kctx *k, const sd_dropout_params *p, const float *dy, const uint8_t *mask,
                             float *dx) {
    if (!k || !p || !dy || !mask || !dx)
        return SD_FAIL(SD_ERR_INVALID, "dropout bwd: NULL argument (context, params, dy, mask and dx are required)");
    const size_t count = p->count;
    const float scale = 1.0f / (1.0f - p->p);
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= SD_DROPOUT_PAR_MIN)
    for (size_t i = 0; i < count; i++) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
    return SD_OK;
}
