/* loss.c: CPU softmax cross-entropy over integer labels. The forward writes the softmax to probs
 * and the mean loss over the batch to a host float, using a max-shifted (stable) log-sum-exp;
 * the backward writes dlogits = (probs - onehot(labels)) * scale. Labels outside [0, classes)
 * are SD_ERR_INVALID, reported with the label and its index before anything is written.
 * dlogits may alias probs. */
#include <math.h>

#include "kernels/cpu/cpu_kernels.h"

/* Below this many logits a kernel runs on the calling thread. */
#define SD_XENT_PAR_MIN 32768

static sd_status check_labels(const char *who, const sd_xent_params *p, const int32_t *labels) {
    for (int i = 0; i < p->n; i++)
        if (labels[i] < 0 || labels[i] >= p->classes)
            return SD_FAIL(SD_ERR_INVALID, "softmax_xent %s: label %d at index %d is outside [0, %d)", who,
                           (int)labels[i], i, p->classes);
    return SD_OK;
}

sd_status sd_cpu_xent_fwd(sd_kctx *k, const sd_xent_params *p, const float *logits, const int32_t *labels,
                          float *probs, float *loss_out) {
    if (!k || !p || !logits || !labels || !probs || !loss_out)
        return SD_FAIL(SD_ERR_INVALID,
                       "softmax_xent fwd: NULL argument (context, params, logits, labels, probs and loss_out are "
                       "required)");
    TRY(check_labels("fwd", p, labels));
    const int N = p->n;
    const size_t C = (size_t)p->classes;
    double total = 0.0;
#pragma omp parallel for num_threads(k->threads) schedule(static) reduction(+ : total) \
    if ((size_t)N * C >= SD_XENT_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * C;
        float *pr = probs + (size_t)i * C;
        float m = z[0];
        for (size_t j = 1; j < C; j++) m = z[j] > m ? z[j] : m;
        double s = 0.0;
        for (size_t j = 0; j < C; j++) {
            const float e = expf(z[j] - m);
            pr[j] = e;
            s += e;
        }
        const float inv = (float)(1.0 / s);
#pragma omp simd
        for (size_t j = 0; j < C; j++) pr[j] *= inv;
        total += log(s) - (double)(z[labels[i]] - m); /* -log softmax(z)[label] */
    }
    *loss_out = (float)(total / (double)N);
    return SD_OK;
}

sd_status sd_cpu_xent_bwd(sd_kctx *k, const sd_xent_params *p, const float *probs, const int32_t *labels,
                          float scale, float *dlogits) {
    if (!k || !p || !probs || !labels || !dlogits)
        return SD_FAIL(SD_ERR_INVALID,
                       "softmax_xent bwd: NULL argument (context, params, probs, labels and dlogits are required)");
    TRY(check_labels("bwd", p, labels));
    const int N = p->n;
    const size_t C = (size_t)p->classes;
#pragma omp parallel for num_threads(k->threads) schedule(static) if ((size_t)N * C >= SD_XENT_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *pr = probs + (size_t)i * C;
        float *d = dlogits + (size_t)i * C;
        const int32_t y = labels[i];
        const float py = pr[y]; /* read before the row is written: dlogits may alias probs */
#pragma omp simd
        for (size_t j = 0; j < C; j++) d[j] = pr[j] * scale;
        d[y] = (py - 1.0f) * scale;
    }
    return SD_OK;
}
