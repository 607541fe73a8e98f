/* compress.c: the CPU kernels of the gradient compressor's steps (kernels/backend.h has their
 * contracts, comm/compress.h the compressor): Top-k selection with an index base, the momentum-
 * correction velocity, binary16 rounding and packing, deterministic sums of squares, the
 * error-feedback residual and the rank-order scatter-add of the gathered messages. Elementwise
 * loops run on the calling thread below CZ_PAR_MIN elements. The CUDA twins are in
 * kernels/cuda/compress.cu. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/f16.h"
#include "kernels/cpu/cpu_kernels.h"

#define CZ_PAR_MIN 65536    /* elementwise loops below this run on the calling thread */
#define CZ_NORM_BLOCK 16384 /* fixed blocks of the deterministic sums of squares */

sd_status sd_cpu_topk_select(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t base, uint32_t *idx_out,
                             float *val_out) {
    TRY(sd_cpu_topk(k, x, n, kk, idx_out, val_out));
    if (base)
        for (size_t j = 0; j < kk; j++) idx_out[j] += base;
    return SD_OK;
}

sd_status sd_cpu_cz_velocity(sd_kctx *k, size_t count, float mu, float *u, float *g) {
    if (count && (!u || !g)) return SD_FAIL(SD_ERR_INVALID, "compressor velocity: NULL buffer");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= CZ_PAR_MIN)
    for (size_t i = 0; i < count; i++) {
        u[i] = fmaf(mu, u[i], g[i]); /* fused, as the CUDA twin: the same bits on every build */
        g[i] = u[i];
    }
    return SD_OK;
}

sd_status sd_cpu_cz_f16_round(sd_kctx *k, size_t count, float *x) {
    (void)k;
    if (count && !x) return SD_FAIL(SD_ERR_INVALID, "compressor f16 rounding: NULL buffer");
    for (size_t j = 0; j < count; j++) x[j] = sd_f16_wire(x[j]);
    return SD_OK;
}

sd_status sd_cpu_cz_sumsq(sd_kctx *k, size_t count, const float *x, double *host_out) {
    if (!host_out || (count && !x)) return SD_FAIL(SD_ERR_INVALID, "compressor sum of squares: NULL argument");
    const size_t nb = (count + CZ_NORM_BLOCK - 1) / CZ_NORM_BLOCK;
    double *part = NULL;
    TRY(sd_cpu_scratch(k, (nb ? nb : 1) * sizeof(double), (void **)&part));
#pragma omp parallel for num_threads(k->threads) schedule(static) if (count >= CZ_PAR_MIN)
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * CZ_NORM_BLOCK, hi = lo + CZ_NORM_BLOCK < count ? lo + CZ_NORM_BLOCK : count;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * (double)x[i];
        part[b] = s;
    }
    double s = 0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    *host_out = s;
    return SD_OK;
}

sd_status sd_cpu_cz_residual(sd_kctx *k, size_t count, const float *a, size_t np, const uint32_t *idx, const float *val,
                             float *res, float *velocity) {
    if ((count && (!a || !res)) || (np && (!idx || !val)))
        return SD_FAIL(SD_ERR_INVALID, "compressor residual: NULL buffer");
#pragma omp parallel for simd num_threads(k->threads) schedule(static) if (count >= CZ_PAR_MIN)
    for (size_t i = 0; i < count; i++) res[i] = a[i];
    for (size_t j = 0; j < np; j++) {
        const float d = a[idx[j]] - val[j]; /* 0, or the f16 rounding / saturation excess */
        res[idx[j]] = isnan(d) ? 0.0f : d;  /* a NaN that was sent is not kept */
    }
    if (velocity) /* masking: what was sent leaves the velocity too */
        for (size_t j = 0; j < np; j++) velocity[idx[j]] = 0.0f;
    return SD_OK;
}

sd_status sd_cpu_cz_to_f16(sd_kctx *k, size_t count, const float *x, unsigned char *out) {
    (void)k;
    if (count && (!x || !out)) return SD_FAIL(SD_ERR_INVALID, "compressor f16 packing: NULL buffer");
    for (size_t j = 0; j < count; j++) {
        const uint16_t h = sd_f32_to_f16(x[j]);
        memcpy(out + 2 * j, &h, 2);
    }
    return SD_OK;
}

static inline uint32_t ld_u32(const unsigned char *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    return u;
}

static inline float ld_val(const unsigned char *v, size_t j, bool f16) {
    if (f16) {
        uint16_t h;
        memcpy(&h, v + 2 * j, 2);
        return sd_f16_to_f32(h);
    }
    float f;
    memcpy(&f, v + 4 * j, 4);
    return f;
}

/* Threads own disjoint index ranges, so each element's additions happen in message order on one
 * thread: deterministic whatever the thread count. */
sd_status sd_cpu_cz_scatter_sum(sd_kctx *k, const unsigned char *buf, int n, const size_t *displs, const size_t *np,
                                bool f16, float *out, size_t count) {
    if (n < 0 || (n && (!buf || !displs || !np)) || (count && !out))
        return SD_FAIL(SD_ERR_INVALID, "compressor scatter: NULL argument");
    size_t total = 0;
    for (int j = 0; j < n; j++) {
        const unsigned char *m = buf + displs[j];
        if (ld_u32(m) != np[j])
            return SD_FAIL(SD_ERR_FORMAT, "sparse message of rank %d declares %u pairs, expected %zu", j, ld_u32(m),
                           np[j]);
        const unsigned char *ip = m + 8;
        uint32_t prev = 0;
        for (size_t p = 0; p < np[j]; p++) {
            const uint32_t i = ld_u32(ip + 4 * p);
            if (i >= count || i < prev)
                return SD_FAIL(SD_ERR_FORMAT, "sparse message of rank %d has indices out of order or >= %zu", j, count);
            prev = i;
        }
        total += np[j];
    }
    const int T = total >= CZ_PAR_MIN || count >= CZ_PAR_MIN ? k->threads : 1;
#pragma omp parallel num_threads(T) if (T > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const size_t lo = count * (size_t)t / (size_t)nt, hi = count * (size_t)(t + 1) / (size_t)nt;
        memset(out + lo, 0, (hi - lo) * sizeof(float));
        for (int j = 0; j < n; j++) {
            const unsigned char *ip = buf + displs[j] + 8, *vp = ip + 4 * np[j];
            size_t a = 0, b = np[j]; /* first pair with index >= lo */
            while (a < b) {
                const size_t mid = a + (b - a) / 2;
                if (ld_u32(ip + 4 * mid) < lo) a = mid + 1;
                else b = mid;
            }
            for (size_t p = a; p < np[j]; p++) {
                const uint32_t i = ld_u32(ip + 4 * p);
                if (i >= hi) break;
                out[i] += ld_val(vp, p, f16);
            }
        }
    }
    return SD_OK;
}

/* ---- the sparse allreduce's steps ------------------------------------------------------------ */
sd_status sd_cpu_cz_split(sd_kctx *k, size_t np, const uint32_t *idx, int nb, const uint32_t *bounds_host,
                          size_t *pos_host) {
    (void)k;
    if (nb < 0 || (nb && (!bounds_host || !pos_host)) || (np && !idx))
        return SD_FAIL(SD_ERR_INVALID, "compressor split: NULL argument");
    for (int b = 0; b < nb; b++) {
        size_t lo = 0, hi = np; /* lower bound of bounds_host[b] */
        while (lo < hi) {
            const size_t mid = lo + (hi - lo) / 2;
            if (idx[mid] < bounds_host[b]) lo = mid + 1;
            else hi = mid;
        }
        pos_host[b] = lo;
    }
    return SD_OK;
}

sd_status sd_cpu_cz_unsent(sd_kctx *k, size_t np, const uint32_t *idx, const float *val, const float *out, float *res) {
    (void)k;
    if (np && (!idx || !val || !out || !res)) return SD_FAIL(SD_ERR_INVALID, "compressor unsent: NULL buffer");
    for (size_t j = 0; j < np; j++)
        if (out[idx[j]] == 0.0f && !isnan(val[j])) res[idx[j]] += val[j];
    return SD_OK;
}

sd_status sd_cpu_cz_round_excess(sd_kctx *k, size_t np, const uint32_t *idx, float *val, float *res) {
    (void)k;
    if (np && (!idx || !val || !res)) return SD_FAIL(SD_ERR_INVALID, "compressor rounding excess: NULL buffer");
    for (size_t j = 0; j < np; j++) {
        const float w = sd_f16_wire(val[j]), d = val[j] - w;
        if (w != 0.0f && isfinite(d)) res[idx[j]] += d;
        val[j] = w;
    }
    return SD_OK;
}
