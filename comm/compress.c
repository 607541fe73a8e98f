/* compress.c: Top-k gradient compression with error feedback and its policies (compress.h,
 * docs/compression.md): per-layer or whole-gradient selection through sd_cpu_topk, the paper's
 * vote, GraVAC-style ratio stepping, the one-allgatherv sparse exchange with a rank-order
 * scatter-add, binary16 values, and the byte accounting. */
#include "comm/compress.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/cost.h"
#include "kernels/cpu/cpu_kernels.h"

#define CZ_PAR_MIN 65536        /* elementwise loops below this run on the calling thread */
#define CZ_NORM_BLOCK 16384     /* fixed blocks of the deterministic sums of squares */
#define CZ_MAX_LEVELS 64        /* gain ladder length at most */

struct sd_compressor {
    sd_compress_config cfg;
    size_t count;
    int nlayers;
    size_t *loff, *lcnt;        /* layers sorted by offset (per_layer), or the one whole block */
    sd_kctx *kc;                /* private: threads and the Top-k scratch */
    float *residual;
    float *velocity;            /* momentum correction: u (NULL when cfg.momentum is 0) */
    bool residual_zero;         /* the residual is known to be all zeros */
    bool ineligible;            /* paper: the caller said compression cannot save time this step */
    uint32_t *idx;              /* this step's pairs: global indices, ascending */
    float *val;                 /* values as sent (after f16 rounding) */
    size_t cap_pairs;
    double *partial;            /* per-block partial sums of squares */
    size_t npartial;
    unsigned char *buf;         /* the gather buffer: every rank's message */
    size_t buf_bytes;
    size_t *sizes, *displs, *np; /* per rank: message bytes, offsets, pairs */
    int nranks;
    int nlevels;                /* gain: ladder length */
    sd_compress_state st;
};

/* ---- binary16 ------------------------------------------------------------------------------ */
uint16_t sd_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu)); /* quiet NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf (and inf) */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        if (ax <= 0x33000000u) return (uint16_t)sign;          /* <= 2^-25: rounds to 0 (tie to even) */
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e; /* 14..24: value / 2^-24 = m / 2^shift */
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r); /* r = 0x400 is the smallest normal: still right */
    }
    const uint32_t r = ax - 0x38000000u; /* rebias the exponent 127 -> 15 */
    uint32_t h = r >> 13;
    const uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float sd_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) x = sign | 0x7f800000u | (m << 13);
    else x = sign | ((e + 112u) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* The value a float becomes on the wire: saturated to +-65504 and rounded to binary16. */
static inline float f16_wire(float v) {
    if (v > SD_COMPRESS_F16_MAX) v = SD_COMPRESS_F16_MAX;
    else if (v < -SD_COMPRESS_F16_MAX) v = -SD_COMPRESS_F16_MAX;
    return sd_f16_to_f32(sd_f32_to_f16(v));
}

/* ---- config ---------------------------------------------------------------------------------- */
void sd_compress_config_default(sd_compress_config *c) {
    memset(c, 0, sizeof *c);
    c->policy = SD_COMPRESS_OFF;
    c->ratio = 0.1;
    c->delta = 0.3;
    c->per_layer = true;
    c->min_ratio = 0.001;
    c->max_ratio = 0.1;
    c->epsilon = 0.9;
}

static int gain_window(const sd_compress_config *c) { return c->gain_window > 0 ? c->gain_window : SD_COMPRESS_GAIN_WINDOW; }
static double gain_factor(const sd_compress_config *c) { return c->gain_factor > 0 ? c->gain_factor : SD_COMPRESS_GAIN_FACTOR; }

static sd_status check_config(const sd_compress_config *c) {
    if (c->policy < SD_COMPRESS_OFF || c->policy > SD_COMPRESS_GAIN)
        return SD_FAIL(SD_ERR_INVALID, "compression: unknown policy %d (off, always, paper, gain)", (int)c->policy);
    if (!(c->ratio > 0 && c->ratio <= 1))
        return SD_FAIL(SD_ERR_INVALID, "compression.ratio %g: must be in (0, 1]", c->ratio);
    if (!(c->delta >= 0 && c->delta <= 1))
        return SD_FAIL(SD_ERR_INVALID, "compression.delta %g: must be in [0, 1]", c->delta);
    if (!(c->momentum >= 0 && c->momentum < 1))
        return SD_FAIL(SD_ERR_INVALID, "compression momentum correction %g: must be in [0, 1) (optimizer.momentum)",
                       c->momentum);
    if (c->policy == SD_COMPRESS_GAIN) {
        if (!(c->min_ratio > 0 && c->min_ratio <= c->max_ratio && c->max_ratio <= 1))
            return SD_FAIL(SD_ERR_INVALID, "compression.min_ratio %g, max_ratio %g: need 0 < min <= max <= 1",
                           c->min_ratio, c->max_ratio);
        if (!(c->epsilon > 0 && c->epsilon <= 1))
            return SD_FAIL(SD_ERR_INVALID, "compression.epsilon %g: must be in (0, 1]", c->epsilon);
        if (c->gain_window < 0) return SD_FAIL(SD_ERR_INVALID, "compression gain_window %d: must be >= 0", c->gain_window);
        if (c->gain_factor != 0 && !(c->gain_factor > 1))
            return SD_FAIL(SD_ERR_INVALID, "compression gain_factor %g: must be > 1 (or 0 for the default)", c->gain_factor);
    }
    return SD_OK;
}

/* ---- sizes ----------------------------------------------------------------------------------- */
/* ceil(ratio * n) clamped to [1, n]; a product within 1e-9 relative of an integer counts as it. */
static size_t k_of(double ratio, size_t n) {
    if (n == 0) return 0;
    const double t = ratio * (double)n;
    size_t k = (size_t)t;
    if ((double)k < t * (1.0 - 1e-9)) k++;
    if (k < 1) k = 1;
    if (k > n) k = n;
    return k;
}

static double level_ratio(const sd_compressor *z, int level) {
    const double r = z->cfg.max_ratio / pow(gain_factor(&z->cfg), level);
    return r > z->cfg.min_ratio ? r : z->cfg.min_ratio;
}

static double current_ratio(const sd_compressor *z) {
    switch (z->cfg.policy) {
    case SD_COMPRESS_OFF: return 0;
    case SD_COMPRESS_GAIN: return level_ratio(z, z->st.level);
    default: return z->cfg.ratio;
    }
}

size_t sd_compressor_pairs(const sd_compressor *z, double ratio) {
    if (!z->cfg.per_layer) return k_of(ratio, z->count);
    size_t s = 0;
    for (int l = 0; l < z->nlayers; l++) s += k_of(ratio, z->lcnt[l]);
    return s;
}

static size_t value_bytes(const sd_compressor *z) { return z->cfg.f16_values ? 2 : 4; }

uint64_t sd_compressor_message_bytes(const sd_compressor *z, double ratio) {
    return SD_COMPRESS_HEADER_BYTES + (uint64_t)sd_compressor_pairs(z, ratio) * (4 + value_bytes(z));
}

double sd_compressor_ratio(const sd_compressor *z) { return current_ratio(z); }
size_t sd_compressor_count(const sd_compressor *z) { return z->count; }

/* ---- create / destroy ------------------------------------------------------------------------ */
static int resolve_threads(int threads) {
    if (threads > 0) return threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int cmp_layer(const void *a, const void *b) {
    const size_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

void sd_compressor_destroy(sd_compressor *z) {
    if (!z) return;
    free(z->loff);
    free(z->lcnt);
    sd_cpu_kctx_destroy(z->kc);
    free(z->residual);
    free(z->velocity);
    free(z->idx);
    free(z->val);
    free(z->partial);
    free(z->buf);
    free(z->sizes);
    free(z->displs);
    free(z->np);
    free(z);
}

sd_status sd_compressor_create(const sd_compress_config *c, size_t count, int nlayers, const size_t *layer_offset,
                               const size_t *layer_count, int threads, sd_compressor **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL config or output");
    *out = NULL;
    TRY(check_config(c));
    if (count == 0) return SD_FAIL(SD_ERR_INVALID, "compressor: empty gradient (count 0)");
    if (count > (size_t)UINT32_MAX)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "compressor: %zu floats exceed the 32-bit index range of the pairs", count);
    if (nlayers < 1 || !layer_offset || !layer_count)
        return SD_FAIL(SD_ERR_INVALID, "compressor: need at least one layer (offsets and counts), got %d", nlayers);
    /* sort (offset, count) pairs and check that they tile [0, count) */
    size_t *pairs = malloc(sizeof(size_t) * 2 * (size_t)nlayers);
    if (!pairs) return SD_FAIL(SD_ERR_OOM, "compressor: %d layers", nlayers);
    for (int l = 0; l < nlayers; l++) {
        pairs[2 * l] = layer_offset[l];
        pairs[2 * l + 1] = layer_count[l];
    }
    qsort(pairs, (size_t)nlayers, 2 * sizeof(size_t), cmp_layer);
    size_t at = 0;
    for (int l = 0; l < nlayers; l++) {
        if (pairs[2 * l] != at || pairs[2 * l + 1] == 0 || pairs[2 * l + 1] > count - at) {
            sd_status s = SD_FAIL(SD_ERR_INVALID,
                                  "compressor: layers must tile [0, %zu) without gaps, overlaps or empty layers: "
                                  "layer at offset %zu (%zu floats) where %zu was expected", count, pairs[2 * l],
                                  pairs[2 * l + 1], at);
            free(pairs);
            return s;
        }
        at += pairs[2 * l + 1];
    }
    if (at != count) {
        free(pairs);
        return SD_FAIL(SD_ERR_INVALID, "compressor: layers cover %zu of %zu floats", at, count);
    }
    sd_compressor *z = calloc(1, sizeof *z);
    if (!z) {
        free(pairs);
        return SD_FAIL(SD_ERR_OOM, "compressor: allocation failed");
    }
    z->cfg = *c;
    z->count = count;
    z->nlayers = c->per_layer ? nlayers : 1;
    z->loff = malloc(sizeof(size_t) * (size_t)z->nlayers);
    z->lcnt = malloc(sizeof(size_t) * (size_t)z->nlayers);
    z->kc = calloc(1, sizeof *z->kc);
    if (!z->loff || !z->lcnt || !z->kc) {
        free(pairs);
        sd_compressor_destroy(z);
        return SD_FAIL(SD_ERR_OOM, "compressor: allocation failed");
    }
    if (c->per_layer) {
        for (int l = 0; l < nlayers; l++) {
            z->loff[l] = pairs[2 * l];
            z->lcnt[l] = pairs[2 * l + 1];
        }
    } else {
        z->loff[0] = 0;
        z->lcnt[0] = count;
    }
    free(pairs);
    z->kc->threads = resolve_threads(threads);
    z->residual_zero = true;
    /* the ladder: levels 0..nlevels-1, the last one at min_ratio */
    z->nlevels = 1;
    if (c->policy == SD_COMPRESS_GAIN)
        while (z->nlevels < CZ_MAX_LEVELS && level_ratio(z, z->nlevels - 1) > c->min_ratio) z->nlevels++;
    const double rmax = c->policy == SD_COMPRESS_GAIN ? c->max_ratio : c->ratio;
    z->cap_pairs = c->policy == SD_COMPRESS_OFF ? 0 : sd_compressor_pairs(z, rmax);
    size_t maxn = count > z->cap_pairs ? count : z->cap_pairs;
    z->npartial = maxn / CZ_NORM_BLOCK + 1;
    sd_status s = SD_OK;
    if ((s = sd_cpu_alloc(count * sizeof(float), (void **)&z->residual)) != SD_OK ||
        (s = sd_cpu_alloc((z->cap_pairs ? z->cap_pairs : 1) * sizeof(uint32_t), (void **)&z->idx)) != SD_OK ||
        (s = sd_cpu_alloc((z->cap_pairs ? z->cap_pairs : 1) * sizeof(float), (void **)&z->val)) != SD_OK ||
        (s = sd_cpu_alloc(z->npartial * sizeof(double), (void **)&z->partial)) != SD_OK ||
        (c->momentum > 0 && (s = sd_cpu_alloc(count * sizeof(float), (void **)&z->velocity)) != SD_OK)) {
        sd_compressor_destroy(z);
        sd_add_context(__func__, __FILE__, __LINE__);
        return s;
    }
    memset(z->residual, 0, count * sizeof(float));
    if (z->velocity) memset(z->velocity, 0, count * sizeof(float));
    *out = z;
    return SD_OK;
}

/* ---- residual and state ---------------------------------------------------------------------- */
const float *sd_compressor_residual(const sd_compressor *z) { return z->residual; }

sd_status sd_compressor_set_residual(sd_compressor *z, const float *residual, size_t count) {
    if (!z || !residual) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL compressor or residual");
    if (count != z->count)
        return SD_FAIL(SD_ERR_SHAPE, "compressor: residual of %zu floats for a gradient of %zu", count, z->count);
    memcpy(z->residual, residual, count * sizeof(float));
    z->residual_zero = false;
    return SD_OK;
}

const float *sd_compressor_velocity(const sd_compressor *z) { return z ? z->velocity : NULL; }

void sd_compressor_set_eligible(sd_compressor *z, bool eligible) {
    if (z) z->ineligible = !eligible;
}

sd_status sd_compressor_set_velocity(sd_compressor *z, const float *velocity, size_t count) {
    if (!z || !velocity) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL compressor or velocity");
    if (!z->velocity)
        return SD_FAIL(SD_ERR_INVALID, "compressor: no momentum correction configured, so no velocity to restore; "
                       "the checkpoint was made with compression.momentum_correction on");
    if (count != z->count)
        return SD_FAIL(SD_ERR_SHAPE, "compressor: velocity of %zu floats for a gradient of %zu", count, z->count);
    memcpy(z->velocity, velocity, count * sizeof(float));
    return SD_OK;
}

void sd_compressor_get_state(const sd_compressor *z, sd_compress_state *s) { *s = z->st; }

sd_status sd_compressor_set_state(sd_compressor *z, const sd_compress_state *s) {
    if (!z || !s) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL compressor or state");
    if (s->level < 0 || s->level >= z->nlevels || s->window_steps < 0 || s->window_steps >= gain_window(&z->cfg) ||
        !(s->loss_sum >= 0))
        return SD_FAIL(SD_ERR_INVALID, "compressor state: level %d (ladder of %d), window step %d (window %d), "
                       "loss sum %g out of range", s->level, z->nlevels, s->window_steps, gain_window(&z->cfg), s->loss_sum);
    z->st = *s;
    return SD_OK;
}

/* ---- deterministic helpers ------------------------------------------------------------------- */
/* Sum of squares in double over fixed blocks, the blocks added in order: the same bits whatever
 * the thread count. */
static double sumsq(sd_compressor *z, const float *x, size_t n) {
    const size_t nb = (n + CZ_NORM_BLOCK - 1) / CZ_NORM_BLOCK;
    double *part = z->partial;
#pragma omp parallel for num_threads(z->kc->threads) schedule(static) if (n >= CZ_PAR_MIN)
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * CZ_NORM_BLOCK, hi = lo + CZ_NORM_BLOCK < n ? lo + CZ_NORM_BLOCK : n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * (double)x[i];
        part[b] = s;
    }
    double s = 0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    return s;
}

/* The gather layout for n ranks, each sending sizes[j] bytes. */
static sd_status ensure_ranks(sd_compressor *z, int n) {
    if (z->nranks == n) return SD_OK;
    free(z->sizes);
    free(z->displs);
    free(z->np);
    z->sizes = malloc(sizeof(size_t) * (size_t)n);
    z->displs = malloc(sizeof(size_t) * (size_t)n);
    z->np = malloc(sizeof(size_t) * (size_t)n);
    z->nranks = z->sizes && z->displs && z->np ? n : 0;
    if (!z->nranks) return SD_FAIL(SD_ERR_OOM, "compressor: layout for %d ranks", n);
    return SD_OK;
}

static sd_status ensure_buf(unsigned char **buf, size_t *have, size_t bytes) {
    if (bytes <= *have) return SD_OK;
    free(*buf);
    *buf = NULL;
    *have = 0;
    TRY(sd_cpu_alloc(bytes, (void **)buf));
    *have = bytes;
    return SD_OK;
}

/* ---- the wire format --------------------------------------------------------------------------
 * One message per rank: u32 npairs, f32 gain, npairs x u32 index, npairs x value (f32, or the
 * binary16 bits when f16), host byte order (little-endian on every supported machine), packed. */
static size_t msg_bytes(size_t np, bool f16) { return SD_COMPRESS_HEADER_BYTES + np * (4 + (f16 ? 2 : 4)); }

static void pack(unsigned char *m, const uint32_t *idx, const float *val, size_t np, float gain, bool f16) {
    const uint32_t n32 = (uint32_t)np;
    memcpy(m, &n32, 4);
    memcpy(m + 4, &gain, 4);
    memcpy(m + 8, idx, np * 4);
    unsigned char *v = m + 8 + np * 4;
    if (f16) {
        for (size_t j = 0; j < np; j++) {
            uint16_t h = sd_f32_to_f16(val[j]);
            memcpy(v + 2 * j, &h, 2);
        }
    } else {
        memcpy(v, val, np * 4);
    }
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

/* Checks every message (declared pairs, indices < count and non-decreasing), then sets out to
 * the rank-order sum. Threads own disjoint index ranges, so each element's additions happen in
 * rank order on one thread: deterministic. */
static sd_status scatter_sum(int threads, const unsigned char *buf, const size_t *displs, const size_t *np, int n,
                             bool f16, float *out, size_t count, int me) {
    size_t total = 0;
    int bad_rank = -1;
    for (int j = 0; j < n; j++) {
        const unsigned char *m = buf + displs[j];
        if (ld_u32(m) != np[j]) {
            return SD_FAIL(SD_ERR_FORMAT, "rank %d: sparse message of rank %d declares %u pairs, expected %zu", me, j,
                           ld_u32(m), np[j]);
        }
        const unsigned char *ip = m + 8;
        uint32_t prev = 0;
        for (size_t p = 0; p < np[j]; p++) {
            uint32_t i = ld_u32(ip + 4 * p);
            if (i >= count || i < prev) {
                bad_rank = j;
                break;
            }
            prev = i;
        }
        if (bad_rank >= 0) break;
        total += np[j];
    }
    if (bad_rank >= 0)
        return SD_FAIL(SD_ERR_FORMAT, "rank %d: sparse message of rank %d has indices out of order or >= %zu", me,
                       bad_rank, count);
    const int T = total >= CZ_PAR_MIN || count >= CZ_PAR_MIN ? threads : 1;
#pragma omp parallel num_threads(T) if (T > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const size_t lo = count * (size_t)t / (size_t)nt, hi = count * (size_t)(t + 1) / (size_t)nt;
        memset(out + lo, 0, (hi - lo) * sizeof(float));
        for (int j = 0; j < n; j++) {
            const unsigned char *ip = buf + displs[j] + 8, *vp = ip + 4 * np[j];
            size_t a = 0, b = np[j]; /* first pair with index >= lo */
            while (a < b) {
                size_t mid = a + (b - a) / 2;
                if (ld_u32(ip + 4 * mid) < lo) a = mid + 1;
                else b = mid;
            }
            for (size_t p = a; p < np[j]; p++) {
                uint32_t i = ld_u32(ip + 4 * p);
                if (i >= hi) break;
                out[i] += ld_val(vp, p, f16);
            }
        }
    }
    return SD_OK;
}

/* ---- the sparse exchange on its own ---------------------------------------------------------- */
sd_status sd_sparse_allgather_sum(sd_comm *comm, int threads, const uint32_t *idx, const float *val, size_t npairs,
                                  bool f16, float *out, size_t count, uint64_t *bytes_sent) {
    if (!comm) return SD_FAIL(SD_ERR_INVALID, "sparse allgather: NULL communicator");
    if ((npairs && (!idx || !val)) || (count && !out))
        return SD_FAIL(SD_ERR_INVALID, "rank %d: sparse allgather: NULL pairs or output", comm->rank);
    if (npairs > (size_t)UINT32_MAX || count > (size_t)UINT32_MAX + 1)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "rank %d: sparse allgather: %zu pairs over %zu floats exceed 32 bits",
                       comm->rank, npairs, count);
    const uint64_t wire0 = sd_comm_wire_bytes(comm);
    const int n = comm->size;
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)n);
    size_t *np = malloc(sizeof(size_t) * (size_t)n), *sizes = malloc(sizeof(size_t) * (size_t)n);
    size_t *displs = malloc(sizeof(size_t) * (size_t)n);
    unsigned char *buf = NULL;
    float *tmp = NULL; /* f16: the values as sent (saturated, then rounded), like the compressor */
    size_t total = 0, have = 0;
    sd_status s = SD_OK;
    if (!all || !np || !sizes || !displs) {
        s = SD_FAIL(SD_ERR_OOM, "rank %d: sparse allgather layout for %d ranks", comm->rank, n);
        goto done;
    }
    if ((s = sd_comm_allgather_u64(comm, (uint64_t)npairs, all)) != SD_OK) goto done;
    for (int j = 0; j < n; j++) {
        np[j] = (size_t)all[j];
        sizes[j] = msg_bytes(np[j], f16);
        displs[j] = total;
        total += sizes[j];
    }
    if ((s = ensure_buf(&buf, &have, total)) != SD_OK) goto done;
    if (f16 && npairs) {
        tmp = malloc(npairs * sizeof(float));
        if (!tmp) {
            s = SD_FAIL(SD_ERR_OOM, "rank %d: sparse allgather: %zu values", comm->rank, npairs);
            goto done;
        }
        for (size_t j = 0; j < npairs; j++) tmp[j] = f16_wire(val[j]);
    }
    pack(buf + displs[comm->rank], idx, tmp ? tmp : val, npairs, 0.0f, f16);
    if ((s = sd_comm_allgatherv(comm, buf + displs[comm->rank], sizes[comm->rank], buf, sizes, displs)) != SD_OK)
        goto done;
    s = scatter_sum(resolve_threads(threads), buf, displs, np, n, f16, out, count, comm->rank);
done:
    if (s != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    else if (bytes_sent) *bytes_sent = sd_comm_wire_bytes(comm) - wire0;
    free(all);
    free(np);
    free(sizes);
    free(displs);
    free(buf);
    free(tmp);
    return s;
}

/* ---- one step -------------------------------------------------------------------------------- */
/* Top-k of a (= g + residual, in g) at `ratio` into z->idx / z->val (global indices, ascending). */
static sd_status select_pairs(sd_compressor *z, const float *a, double ratio, size_t *np) {
    size_t pos = 0;
    for (int l = 0; l < z->nlayers; l++) {
        const size_t off = z->loff[l], cnt = z->lcnt[l], kk = k_of(ratio, cnt);
        TRY(sd_cpu_topk(z->kc, a + off, cnt, kk, z->idx + pos, z->val + pos));
        if (off)
            for (size_t j = pos; j < pos + kk; j++) z->idx[j] += (uint32_t)off;
        pos += kk;
    }
    if (z->cfg.f16_values)
        for (size_t j = 0; j < pos; j++) z->val[j] = f16_wire(z->val[j]);
    *np = pos;
    return SD_OK;
}

static void add_residual(sd_compressor *z, float *g) {
    if (z->residual_zero) return;
    const float *r = z->residual;
    const size_t n = z->count;
#pragma omp parallel for simd num_threads(z->kc->threads) schedule(static) if (n >= CZ_PAR_MIN)
    for (size_t i = 0; i < n; i++) g[i] += r[i];
}

sd_status sd_compress_exchange(sd_compressor *z, sd_comm *comm, float *g, sd_compress_step *stats) {
    if (!z || !comm || !g) return SD_FAIL(SD_ERR_INVALID, "compress exchange: NULL compressor, communicator or gradient");
    sd_compress_step s;
    memset(&s, 0, sizeof s);
    const uint64_t wire0 = sd_comm_wire_bytes(comm);
    const int n = comm->size;
    const size_t count = z->count;
    s.dense_bytes = (uint64_t)count * sizeof(float);

    if (z->cfg.policy == SD_COMPRESS_OFF) { /* the plain dense path */
        add_residual(z, g); /* only after set_residual */
        TRY(sd_comm_allreduce_sum(comm, g, count));
        if (!z->residual_zero) memset(z->residual, 0, count * sizeof(float));
        z->residual_zero = true;
        z->st.steps++;
        s.payload_bytes = s.gathered_bytes = s.dense_bytes;
        s.bytes_sent = sd_comm_wire_bytes(comm) - wire0;
        if (stats) *stats = s;
        return SD_OK;
    }

    /* momentum correction: g becomes the velocity u = momentum x u + g */
    if (z->velocity) {
        float *u = z->velocity;
        const float mu = (float)z->cfg.momentum;
#pragma omp parallel for simd num_threads(z->kc->threads) schedule(static) if (count >= CZ_PAR_MIN)
        for (size_t i = 0; i < count; i++) {
            u[i] = mu * u[i] + g[i];
            g[i] = u[i];
        }
    }
    /* a = g + residual; C(a) at this step's ratio; how much of the norm it keeps */
    add_residual(z, g);
    const double ratio = current_ratio(z);
    size_t np = 0;
    TRY(select_pairs(z, g, ratio, &np));
    const double na2 = sumsq(z, g, count), nc2 = sumsq(z, z->val, np);
    const double na = sqrt(na2), nc = sqrt(nc2);
    s.ratio = ratio;
    s.norm = na;
    s.gain = na > 0 ? nc / na : 1.0;
    s.rel_loss = na > 0 ? fabs(na - nc) / na : 0.0;
    if (!isfinite(na)) s.gain = s.rel_loss = NAN;

    /* the vote (paper) */
    bool sparse = true;
    const uint64_t steps = z->st.steps + 1;
    const double loss_sum = z->st.loss_sum + s.rel_loss;
    s.vote = 1;
    s.votes = n;
    s.mean_loss = loss_sum / (double)steps;
    if (z->cfg.policy == SD_COMPRESS_PAPER) {
        s.vote = s.mean_loss <= z->cfg.delta && !z->ineligible; /* NaN votes dense */
        TRY(sd_comm_vote(comm, s.vote, &s.votes));
        s.voted = true;
        sparse = 2 * s.votes >= n;
    }

    if (!sparse) { /* dense: send a, flush the residual */
        TRY(sd_comm_allreduce_sum(comm, g, count));
        memset(z->residual, 0, count * sizeof(float));
        z->residual_zero = true;
        z->st.steps = steps;
        z->st.loss_sum = loss_sum;
        s.payload_bytes = s.gathered_bytes = s.dense_bytes;
        s.next_ratio = current_ratio(z);
        s.bytes_sent = sd_comm_wire_bytes(comm) - wire0;
        if (stats) *stats = s;
        return SD_OK;
    }

    /* sparse: every rank sends the same number of pairs (same layout and ratio), so the layout
     * is known without asking */
    TRY(ensure_ranks(z, n));
    const bool f16 = z->cfg.f16_values;
    const size_t mb = msg_bytes(np, f16);
    for (int j = 0; j < n; j++) {
        z->sizes[j] = mb;
        z->displs[j] = (size_t)j * mb;
        z->np[j] = np;
    }
    TRY(ensure_buf(&z->buf, &z->buf_bytes, (size_t)n * mb));
    unsigned char *mine = z->buf + z->displs[comm->rank];
    pack(mine, z->idx, z->val, np, (float)s.gain, f16);
    /* residual = a - C(a): a everywhere, minus what is sent where it is sent */
    float *res = z->residual;
#pragma omp parallel for simd num_threads(z->kc->threads) schedule(static) if (count >= CZ_PAR_MIN)
    for (size_t i = 0; i < count; i++) res[i] = g[i];
    for (size_t j = 0; j < np; j++) {
        const float d = g[z->idx[j]] - z->val[j]; /* 0, or the f16 rounding / saturation excess */
        z->residual[z->idx[j]] = isnan(d) ? 0.0f : d; /* a NaN that was sent is not kept */
    }
    z->residual_zero = false;
    if (z->velocity) /* masking: what was sent leaves the velocity too */
        for (size_t j = 0; j < np; j++) z->velocity[z->idx[j]] = 0.0f;
    TRY(sd_comm_allgatherv(comm, mine, mb, z->buf, z->sizes, z->displs));
    TRY(scatter_sum(z->kc->threads, z->buf, z->displs, z->np, n, f16, g, count, comm->rank));
    double gsum = 0;
    for (int j = 0; j < n; j++) {
        float gj;
        memcpy(&gj, z->buf + z->displs[j] + 4, 4);
        gsum += (double)gj;
    }
    s.gain_mean = gsum / (double)n;
    z->st.steps = steps;
    z->st.loss_sum = loss_sum;
    if (z->cfg.policy == SD_COMPRESS_GAIN) {
        /* the window mean of the mean gain decides: >= epsilon compresses more (next level down
         * the ratio ladder), < epsilon compresses less (a level up); then a new window starts */
        z->st.window_gain_sum += s.gain_mean;
        if (++z->st.window_steps >= gain_window(&z->cfg)) {
            const double w = z->st.window_gain_sum / (double)z->st.window_steps;
            z->st.last_window_gain = w;
            if (w >= z->cfg.epsilon) {
                if (z->st.level < z->nlevels - 1) z->st.level++;
            } else if (z->st.level > 0) {
                z->st.level--;
            }
            z->st.window_steps = 0;
            z->st.window_gain_sum = 0;
        }
        s.gain_smoothed = z->st.last_window_gain;
    }
    s.compressed = true;
    s.pairs = np;
    s.pairs_total = (uint64_t)np * (uint64_t)n;
    s.payload_bytes = mb;
    s.gathered_bytes = (uint64_t)mb * (uint64_t)n;
    s.next_ratio = current_ratio(z);
    s.bytes_sent = sd_comm_wire_bytes(comm) - wire0;
    if (stats) *stats = s;
    return SD_OK;
}

double sd_compress_step_time(const sd_compress_step *s, int n, double bandwidth_bps, double latency_s) {
    double t = 0;
    if (s->voted) t += sd_ring_allreduce_time(n, (double)sizeof(int), bandwidth_bps, latency_s);
    if (s->compressed) t += sd_ring_allgather_time(n, (double)s->gathered_bytes, bandwidth_bps, latency_s);
    else t += sd_ring_allreduce_time(n, (double)s->dense_bytes, bandwidth_bps, latency_s);
    return t;
}
