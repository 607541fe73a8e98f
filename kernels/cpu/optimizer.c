/* optimizer.c: CPU SGD update with PyTorch torch.optim.SGD semantics (see ops.h):
 *   g' = g + weight_decay * w
 *   buf = first_step ? g' : momentum * buf + (1 - dampening) * g'   (only when momentum != 0)
 *   d   = nesterov ? g' + momentum * buf : buf                        (d = g' when momentum == 0)
 *   w  -= lr * d
 * The settings are loop invariants, so each case gets its own branch-free loop. buf may be NULL
 * when momentum is 0. */
#include "kernels/cpu/cpu_kernels.h"

/* Below this many parameters the update runs on the calling thread. */
#define SD_SGD_PAR_MIN 65536

sd_status sd_cpu_sgd_update(sd_kctx *k, const sd_sgd_params *p, float *w, const float *g, float *buf) {
    if (!k || !p || !w || !g)
        return SD_FAIL(SD_ERR_INVALID, "sgd update: NULL argument (context, params, w and g are required)");
    const size_t n = p->count;
    const float lr = p->lr, m = p->momentum, damp1 = 1.0f - p->dampening, wd = p->weight_decay;
    const int nt = k->threads;
    const int par = n >= SD_SGD_PAR_MIN;

    if (m == 0.0f) {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (par)
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] + wd * w[i]);
        return SD_OK;
    }
    if (!buf)
        return SD_FAIL(SD_ERR_INVALID, "sgd update: momentum %g needs a momentum buffer, got NULL", (double)m);

    if (p->first_step) {
        if (p->nesterov) {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (par)
            for (size_t i = 0; i < n; i++) {
                const float gp = g[i] + wd * w[i];
                buf[i] = gp;
                w[i] -= lr * (gp + m * gp);
            }
        } else {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (par)
            for (size_t i = 0; i < n; i++) {
                const float gp = g[i] + wd * w[i];
                buf[i] = gp;
                w[i] -= lr * gp;
            }
        }
        return SD_OK;
    }
    if (p->nesterov) {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (par)
        for (size_t i = 0; i < n; i++) {
            const float gp = g[i] + wd * w[i];
            const float b = m * buf[i] + damp1 * gp;
            buf[i] = b;
            w[i] -= lr * (gp + m * b);
        }
    } else {
#pragma omp parallel for simd num_threads(nt) schedule(static) if (par)
        for (size_t i = 0; i < n; i++) {
            const float gp = g[i] + wd * w[i];
            const float b = m * buf[i] + damp1 * gp;
            buf[i] = b;
            w[i] -= lr * b;
        }
    }
    return SD_OK;
}
