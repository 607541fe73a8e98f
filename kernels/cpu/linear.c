/* linear.c: CPU fully connected layer on sd_cpu_sgemm (gemm.c), PyTorch layout (x [n, in],
 * W [out, in]): y = x W^T + b; backward dx = dy W, dW = dy^T x, db = column sums of dy. */
#include "kernels/cpu/cpu_kernels.h"

/* Below this many elements a loop runs on the calling thread. */
#define SD_LINEAR_PAR_MIN 65536

sd_status sd_cpu_linear_fwd(sd_kctx *k, const sd_linear_params *p, const float *x, const float *w,
                            const float *b, float *y) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "linear fwd: NULL context or params");
    if (!x || !w || !y)
        return SD_FAIL(SD_ERR_INVALID, "linear fwd: NULL tensor (x %p, w %p, y %p are required)", (const void *)x,
                       (const void *)w, (const void *)y);
    if (p->has_bias && !b) return SD_FAIL(SD_ERR_INVALID, "linear fwd: has_bias is set but the bias b is NULL");
    const int n = p->n, in = p->in, out = p->out;
    if (p->has_bias) {
        /* Start y at the bias and let the GEMM accumulate onto it. */
#pragma omp parallel for num_threads(k->threads) schedule(static) if ((size_t)n * out >= SD_LINEAR_PAR_MIN)
        for (int i = 0; i < n; i++) {
            float *yr = y + (size_t)i * out;
            for (int j = 0; j < out; j++) yr[j] = b[j];
        }
    }
    sd_cpu_sgemm(k, 0, 1, n, out, in, 1.0f, x, in, w, in, p->has_bias ? 1.0f : 0.0f, y, out);
    return SD_OK;
}

sd_status sd_cpu_linear_bwd(sd_kctx *k, const sd_linear_params *p, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db) {
    if (!k || !p) return SD_FAIL(SD_ERR_INVALID, "linear bwd: NULL context or params");
    if (!x || !w || !dy || !dw)
        return SD_FAIL(SD_ERR_INVALID, "linear bwd: NULL tensor (x %p, w %p, dy %p, dw %p are required)",
                       (const void *)x, (const void *)w, (const void *)dy, (const void *)dw);
    if (p->has_bias && !db)
        return SD_FAIL(SD_ERR_INVALID, "linear bwd: has_bias is set but the bias gradient db is NULL");
    const int n = p->n, in = p->in, out = p->out;

    /* dW[out][in] = dy^T x */
    sd_cpu_sgemm(k, 1, 0, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
    /* dx[n][in] = dy W */
    if (dx) sd_cpu_sgemm(k, 0, 0, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
    if (p->has_bias) {
        /* Column sums: float over blocks of rows (vectorised along out), double across blocks. Each
         * thread owns a slice of columns. */
        enum { ROWS = 64, COLS = 256 };
        const int slices = (out + COLS - 1) / COLS;
#pragma omp parallel for num_threads(k->threads) schedule(static) if ((size_t)n * out >= SD_LINEAR_PAR_MIN)
        for (int s = 0; s < slices; s++) {
            const int j0 = s * COLS, j1 = j0 + COLS < out ? j0 + COLS : out;
            double total[COLS] = {0};
            for (int i0 = 0; i0 < n; i0 += ROWS) {
                const int i1 = i0 + ROWS < n ? i0 + ROWS : n;
                float part[COLS] = {0};
                for (int i = i0; i < i1; i++) {
                    const float *r = dy + (size_t)i * out;
                    for (int j = j0; j < j1; j++) part[j - j0] += r[j];
                }
                for (int j = j0; j < j1; j++) total[j - j0] += part[j - j0];
            }
            for (int j = j0; j < j1; j++) db[j] = (float)total[j - j0];
        }
    }
    return SD_OK;
}
