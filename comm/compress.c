/* compress.c: Top-k gradient compression with error feedback and its policies (compress.h,
 * docs/compression.md): the paper's vote, GraVAC-style ratio stepping, the one-allgatherv sparse
 * exchange and the byte accounting. The per-element work (per-layer or whole-gradient Top-k, the
 * velocity, binary16 values, norms, the residual, the rank-order scatter-add) runs through the
 * backend table (kernels/backend.h: topk_select, cz_*), so the compressor's state lives where the
 * gradient lives: host memory on the CPU backend, GPU memory on CUDA. */
#include "comm/compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/f16.h"
#include "comm/cost.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "comm/compress_internal.h"

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
    c->exchange = SD_EXCHANGE_ALLGATHER;
    c->link_bandwidth_bps = 100e6;
    c->link_latency_s = 1e-3;
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
    if (c->exchange < SD_EXCHANGE_ALLGATHER || c->exchange > SD_EXCHANGE_AUTO)
        return SD_FAIL(SD_ERR_INVALID, "compression: unknown exchange %d (allgather, allreduce, auto)", (int)c->exchange);
    if (c->exchange == SD_EXCHANGE_AUTO &&
        (!(c->link_bandwidth_bps > 0) || !isfinite(c->link_bandwidth_bps) || !(c->link_latency_s >= 0) ||
         !isfinite(c->link_latency_s)))
        return SD_FAIL(SD_ERR_INVALID, "compression exchange auto: the modelled link (%g bit/s, %g s) needs a positive "
                       "finite bandwidth and a finite latency >= 0", c->link_bandwidth_bps, c->link_latency_s);
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
size_t sd_cz_k_of(double ratio, size_t n) {
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
    if (!z->cfg.per_layer) return sd_cz_k_of(ratio, z->count);
    size_t s = 0;
    for (int l = 0; l < z->nlayers; l++) s += sd_cz_k_of(ratio, z->lcnt[l]);
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

void sd_cz_be_free(sd_compressor *z, void *p) {
    if (p && z->be.ops) z->be.ops->free(z->be.ctx, p);
}

void sd_compressor_destroy(sd_compressor *z) {
    if (!z) return;
    free(z->loff);
    free(z->lcnt);
    sd_cz_be_free(z, z->residual);
    sd_cz_be_free(z, z->velocity);
    sd_cz_be_free(z, z->idx);
    sd_cz_be_free(z, z->val);
    sd_cz_be_free(z, z->buf);
    sd_cz_reduce_scratch_free(z); /* before the backend that holds its buffers */
    if (z->own_be && z->be.ops) sd_backend_destroy(&z->be);
    free(z->sizes);
    free(z->displs);
    free(z->np);
    free(z);
}

sd_status sd_compressor_create(const sd_compress_config *c, size_t count, int nlayers, const size_t *layer_offset,
                               const size_t *layer_count, int threads, sd_compressor **out) {
    return sd_compressor_create_on(c, count, nlayers, layer_offset, layer_count, NULL, threads, out);
}

sd_status sd_compressor_create_on(const sd_compress_config *c, size_t count, int nlayers, const size_t *layer_offset,
                                  const size_t *layer_count, const sd_backend *be, int threads, sd_compressor **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL config or output");
    if (be && !be->ops) return SD_FAIL(SD_ERR_INVALID, "compressor: a backend without its table");
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
    if (!z->loff || !z->lcnt) {
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
    sd_status s = SD_OK;
    if (be) {
        z->be = *be;
    } else if ((s = sd_backend_cpu_create(&z->be, resolve_threads(threads))) != SD_OK) {
        sd_compressor_destroy(z);
        return s;
    } else {
        z->own_be = true;
    }
    z->residual_zero = true;
    /* the ladder: levels 0..nlevels-1, the last one at min_ratio */
    z->nlevels = 1;
    if (c->policy == SD_COMPRESS_GAIN)
        while (z->nlevels < CZ_MAX_LEVELS && level_ratio(z, z->nlevels - 1) > c->min_ratio) z->nlevels++;
    const double rmax = c->policy == SD_COMPRESS_GAIN ? c->max_ratio : c->ratio;
    z->cap_pairs = c->policy == SD_COMPRESS_OFF ? 0 : sd_compressor_pairs(z, rmax);
    const sd_backend_ops *o = z->be.ops;
    sd_kctx *k = z->be.ctx;
    if ((s = o->alloc(k, count * sizeof(float), (void **)&z->residual)) != SD_OK ||
        (s = o->alloc(k, (z->cap_pairs ? z->cap_pairs : 1) * sizeof(uint32_t), (void **)&z->idx)) != SD_OK ||
        (s = o->alloc(k, (z->cap_pairs ? z->cap_pairs : 1) * sizeof(float), (void **)&z->val)) != SD_OK ||
        (c->momentum > 0 && (s = o->alloc(k, count * sizeof(float), (void **)&z->velocity)) != SD_OK) ||
        (s = o->zero(k, z->residual, count * sizeof(float))) != SD_OK ||
        (z->velocity && (s = o->zero(k, z->velocity, count * sizeof(float))) != SD_OK)) {
        sd_compressor_destroy(z);
        sd_add_context(__func__, __FILE__, __LINE__);
        return s;
    }
    *out = z;
    return SD_OK;
}

/* ---- residual and state ---------------------------------------------------------------------- */
const float *sd_compressor_residual(const sd_compressor *z) { return z->residual; }

sd_status sd_compressor_set_residual(sd_compressor *z, const float *residual, size_t count) {
    if (!z || !residual) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL compressor or residual");
    if (count != z->count)
        return SD_FAIL(SD_ERR_SHAPE, "compressor: residual of %zu floats for a gradient of %zu", count, z->count);
    TRY(z->be.ops->upload(z->be.ctx, z->residual, residual, count * sizeof(float)));
    z->residual_zero = false;
    return SD_OK;
}

const float *sd_compressor_velocity(const sd_compressor *z) { return z ? z->velocity : NULL; }

sd_status sd_compressor_get_residual(const sd_compressor *z, float *host) {
    if (!z || !host) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL compressor or output");
    return z->be.ops->download(z->be.ctx, host, z->residual, z->count * sizeof(float));
}

sd_status sd_compressor_get_velocity(const sd_compressor *z, float *host) {
    if (!z || !host) return SD_FAIL(SD_ERR_INVALID, "compressor: NULL compressor or output");
    if (!z->velocity) return SD_FAIL(SD_ERR_INVALID, "compressor: no momentum correction configured, so no velocity");
    return z->be.ops->download(z->be.ctx, host, z->velocity, z->count * sizeof(float));
}

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
    TRY(z->be.ops->upload(z->be.ctx, z->velocity, velocity, count * sizeof(float)));
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

sd_status sd_cz_ensure_be(sd_compressor *z, void **buf, size_t *have, size_t bytes) {
    if (*buf && bytes <= *have) return SD_OK;
    sd_cz_be_free(z, *buf);
    *buf = NULL;
    *have = 0;
    TRY(z->be.ops->alloc(z->be.ctx, bytes ? bytes : 1, buf));
    *have = bytes;
    return SD_OK;
}

/* ---- the wire format --------------------------------------------------------------------------
 * One message per rank: u32 npairs, f32 gain, npairs x u32 index, npairs x value (f32, or the
 * binary16 bits when f16), host byte order (little-endian on every supported machine), packed. */
size_t sd_cz_msg_bytes(size_t np, bool f16) { return SD_COMPRESS_HEADER_BYTES + np * (4 + (f16 ? 2 : 4)); }

static void pack(unsigned char *m, const uint32_t *idx, const float *val, size_t np, float gain, bool f16) {
    const uint32_t n32 = (uint32_t)np;
    memcpy(m, &n32, 4);
    memcpy(m + 4, &gain, 4);
    memcpy(m + 8, idx, np * 4);
    unsigned char *v = m + 8 + np * 4;
    sd_kctx kc = {.threads = 1}; /* the CPU kernel the compressor's own packing uses */
    if (f16) (void)sd_cpu_cz_to_f16(&kc, np, val, v); /* cannot fail: np > 0 comes with both buffers */
    else memcpy(v, val, np * 4);
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
        sizes[j] = sd_cz_msg_bytes(np[j], f16);
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
        for (size_t j = 0; j < npairs; j++) tmp[j] = sd_f16_wire(val[j]);
    }
    pack(buf + displs[comm->rank], idx, tmp ? tmp : val, npairs, 0.0f, f16);
    if ((s = sd_comm_allgatherv(comm, buf + displs[comm->rank], sizes[comm->rank], buf, sizes, displs)) != SD_OK)
        goto done;
    sd_kctx kc = {.threads = resolve_threads(threads)}; /* the CPU scatter needs no scratch */
    s = sd_cpu_cz_scatter_sum(&kc, buf, n, displs, np, f16, out, count);
    if (s != SD_OK) s = SD_FAIL(s, "rank %d: %s", comm->rank, sd_last_error_brief());
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
    const sd_backend_ops *o = z->be.ops;
    size_t pos = 0;
    for (int l = 0; l < z->nlayers; l++) {
        const size_t off = z->loff[l], cnt = z->lcnt[l], kk = sd_cz_k_of(ratio, cnt);
        TRY(o->topk_select(z->be.ctx, a + off, cnt, kk, (uint32_t)off, z->idx + pos, z->val + pos));
        pos += kk;
    }
    if (z->cfg.f16_values) TRY(o->cz_f16_round(z->be.ctx, pos, z->val));
    *np = pos;
    return SD_OK;
}

static sd_status add_residual(sd_compressor *z, float *g) {
    if (z->residual_zero) return SD_OK;
    return z->be.ops->add(z->be.ctx, z->count, g, z->residual, g);
}

static uint64_t wire_bytes(const sd_comm *comm, const sd_comm *data) {
    return sd_comm_wire_bytes(comm) + (data != comm ? sd_comm_wire_bytes(data) : 0);
}

/* Dense: a (in g) summed over the ranks; the residual flushed. */
static sd_status dense_step(sd_compressor *z, sd_comm *data, float *g) {
    TRY(sd_comm_allreduce_sum(data, g, z->count));
    if (!z->residual_zero) TRY(z->be.ops->zero(z->be.ctx, z->residual, z->count * sizeof(float)));
    z->residual_zero = true;
    return SD_OK;
}

/* Sparse: every rank sends the same number of pairs (same layout and ratio), so the layout is
 * known without asking. Packs this rank's message, keeps residual = a - C(a), gathers every
 * message and leaves their rank-order sum in g; s->gain_mean from the gathered headers. */
static sd_status sparse_step(sd_compressor *z, sd_comm *data, float *g, size_t np, sd_compress_step *s) {
    const sd_backend_ops *o = z->be.ops;
    sd_kctx *k = z->be.ctx;
    const int n = data->size, me = data->rank;
    TRY(ensure_ranks(z, n));
    const bool f16 = z->cfg.f16_values;
    const size_t mb = sd_cz_msg_bytes(np, f16);
    for (int j = 0; j < n; j++) {
        z->sizes[j] = mb;
        z->displs[j] = (size_t)j * mb;
        z->np[j] = np;
    }
    TRY(sd_cz_ensure_be(z, (void **)&z->buf, &z->buf_bytes, (size_t)n * mb));
    unsigned char *mine = z->buf + z->displs[me];
    unsigned char hdr[SD_COMPRESS_HEADER_BYTES]; /* u32 pairs, f32 gain */
    const uint32_t n32 = (uint32_t)np;
    const float gain = (float)s->gain;
    memcpy(hdr, &n32, 4);
    memcpy(hdr + 4, &gain, 4);
    TRY(o->upload(k, mine, hdr, sizeof hdr));
    if (np) TRY(o->copy(k, mine + 8, z->idx, np * 4));
    if (np && f16) TRY(o->cz_to_f16(k, np, z->val, mine + 8 + np * 4));
    else if (np) TRY(o->copy(k, mine + 8 + np * 4, z->val, np * 4));
    /* residual = a - C(a): a everywhere, minus what is sent where it is sent; masking of the velocity */
    TRY(o->cz_residual(k, z->count, g, np, z->idx, z->val, z->residual, z->velocity));
    z->residual_zero = false;
    TRY(sd_comm_allgatherv(data, mine, mb, z->buf, z->sizes, z->displs));
    sd_status sc = o->cz_scatter_sum(k, z->buf, n, z->displs, z->np, f16, g, z->count);
    if (sc != SD_OK) return SD_FAIL(sc, "rank %d: %s", me, sd_last_error_brief());
    double gsum = 0;
    for (int j = 0; j < n; j++) {
        float gj;
        TRY(o->download(k, &gj, z->buf + z->displs[j] + 4, 4));
        gsum += (double)gj;
    }
    s->gain_mean = gsum / (double)n;
    s->pairs = np;
    s->pairs_total = (uint64_t)np * (uint64_t)n;
    s->payload_bytes = mb;
    s->gathered_bytes = (uint64_t)mb * (uint64_t)n;
    s->exchange = SD_EXCHANGE_ALLGATHER;
    return SD_OK;
}

/* Which sparse exchange this step: the config's, or for auto the lower modelled time on the
 * config's link (the same inputs on every rank, so the same choice). */
static bool use_allreduce(sd_compressor *z, int n, size_t np, double ratio) {
    switch (z->cfg.exchange) {
    case SD_EXCHANGE_ALLREDUCE: return true;
    case SD_EXCHANGE_AUTO: {
        if (n <= 2) return false; /* nothing to save: the all-gather already sends one message */
        const double bw = z->cfg.link_bandwidth_bps, lat = z->cfg.link_latency_s;
        const double ag = sd_ring_allgather_time(n, (double)n * (double)sd_cz_msg_bytes(np, z->cfg.f16_values), bw, lat);
        return sd_cz_allreduce_model_time(z, n, np, ratio, bw, lat) < ag;
    }
    default: return false;
    }
}

/* gain: the window mean of the mean gain decides: >= epsilon compresses more (next level down the
 * ratio ladder), < epsilon compresses less (a level up); then a new window starts. */
static void gain_decide(sd_compressor *z, sd_compress_step *s) {
    z->st.window_gain_sum += s->gain_mean;
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
    s->gain_smoothed = z->st.last_window_gain;
}

sd_status sd_compress_exchange(sd_compressor *z, sd_comm *comm, float *g, sd_compress_step *stats) {
    return sd_compress_exchange_on(z, comm, comm, g, stats);
}

sd_status sd_compress_exchange_on(sd_compressor *z, sd_comm *comm, sd_comm *data, float *g, sd_compress_step *stats) {
    if (!z || !comm || !data || !g)
        return SD_FAIL(SD_ERR_INVALID, "compress exchange: NULL compressor, communicator or gradient");
    if (data->size != comm->size || data->rank != comm->rank)
        return SD_FAIL(SD_ERR_INVALID, "compress exchange: the data communicator (rank %d of %d) is not the same group "
                       "as the vote's (rank %d of %d)", data->rank, data->size, comm->rank, comm->size);
    sd_compress_step s;
    memset(&s, 0, sizeof s);
    const uint64_t wire0 = wire_bytes(comm, data);
    const int n = comm->size;
    const size_t count = z->count;
    const sd_backend_ops *o = z->be.ops;
    s.dense_bytes = (uint64_t)count * sizeof(float);

    if (z->cfg.policy == SD_COMPRESS_OFF) { /* the plain dense path */
        TRY(add_residual(z, g)); /* only after set_residual */
        TRY(dense_step(z, data, g));
        z->st.steps++;
        s.payload_bytes = s.gathered_bytes = s.dense_bytes;
        s.bytes_sent = wire_bytes(comm, data) - wire0;
        if (stats) *stats = s;
        return SD_OK;
    }

    /* momentum correction: g becomes the velocity u = momentum x u + g */
    if (z->velocity) TRY(o->cz_velocity(z->be.ctx, count, (float)z->cfg.momentum, z->velocity, g));
    /* a = g + residual; C(a) at this step's ratio; how much of the norm it keeps */
    TRY(add_residual(z, g));
    const double ratio = current_ratio(z);
    size_t np = 0;
    TRY(select_pairs(z, g, ratio, &np));
    double na2 = 0, nc2 = 0;
    TRY(o->cz_sumsq(z->be.ctx, count, g, &na2));
    TRY(o->cz_sumsq(z->be.ctx, np, z->val, &nc2));
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
        TRY(dense_step(z, data, g));
        s.payload_bytes = s.gathered_bytes = s.dense_bytes;
    } else {
        if (use_allreduce(z, n, np, ratio)) TRY(sd_cz_allreduce_step(z, comm, data, g, np, ratio, &s));
        else TRY(sparse_step(z, data, g, np, &s));
        s.compressed = true;
    }
    z->st.steps = steps;
    z->st.loss_sum = loss_sum;
    if (sparse && z->cfg.policy == SD_COMPRESS_GAIN) gain_decide(z, &s);
    s.next_ratio = current_ratio(z);
    s.bytes_sent = wire_bytes(comm, data) - wire0;
    if (stats) *stats = s;
    return SD_OK;
}

double sd_compress_step_time(const sd_compress_step *s, int n, double bandwidth_bps, double latency_s) {
    double t = 0;
    if (s->voted) t += sd_ring_allreduce_time(n, (double)sizeof(int), bandwidth_bps, latency_s);
    if (s->compressed && s->exchange == SD_EXCHANGE_ALLREDUCE)
        t += sd_ring_allgather_time(n, (double)s->header_bytes, bandwidth_bps, latency_s) +
             sd_alltoallv_time(n, (double)s->a2a_max_bytes, bandwidth_bps, latency_s) +
             sd_ring_allgather_time(n, (double)s->gathered_bytes, bandwidth_bps, latency_s);
    else if (s->compressed) t += sd_ring_allgather_time(n, (double)s->gathered_bytes, bandwidth_bps, latency_s);
    else t += sd_ring_allreduce_time(n, (double)s->dense_bytes, bandwidth_bps, latency_s);
    return t;
}
