/* compress_allreduce.c: the sparse allreduce, the compressor's exchange "allreduce"
 * (docs/compression.md, "The sparse allreduce"). The ring all-gather of every rank's Top-k sends
 * (n - 1) messages per rank, so its bytes grow with the device count; this exchange keeps them
 * near 2k pairs per rank whatever n is, in the manner of Ok-Topk's partitioned reduction:
 *
 *   0. the gradient is cut into n contiguous regions of equal length; rank j owns region j;
 *   1. every rank tells every rank how many of its pairs fall in each region (one small
 *      all-gather of a row of n counts and its gain);
 *   2. every rank sends each owner the pairs in the owner's region (one alltoallv: about
 *      k (n - 1) / n pairs per rank);
 *   3. each owner sums what it received in rank order and re-selects the Top-k of its region:
 *      per layer part (per_layer) or over the region, at the step's ratio, so the owners together
 *      keep about k pairs;
 *   4. one all-gather of the owners' selections: about k (n - 1) / n pairs per rank; every rank
 *      scatters them into the gradient, bitwise identical everywhere.
 *
 * Error feedback absorbs what the reduction drops: a rank's pair at an index the owners did not
 * keep (the result is 0 there) returns to that rank's residual, and with f16 values the owner keeps
 * the rounding excess of the sums it sends. So, summed over the ranks, what was applied plus the
 * residuals still equals the gradients (up to float rounding), as for the other exchanges. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "comm/compress_internal.h"
#include "comm/cost.h"

/* ---- layout ---------------------------------------------------------------------------------- */
void sd_cz_reduce_scratch_free(sd_compressor *z) {
    sd_cz_reduce_scratch *a = &z->ar;
    free(a->bounds);
    free(a->pos);
    free(a->rows);
    free(a->sb);
    free(a->sd);
    free(a->rb);
    free(a->rd);
    free(a->rnp);
    free(a->kq);
    free(a->gb);
    free(a->gd);
    sd_cz_be_free(z, a->sbuf);
    sd_cz_be_free(z, a->rbuf);
    sd_cz_be_free(z, a->idx2);
    sd_cz_be_free(z, a->val2);
    memset(a, 0, sizeof *a);
}

/* The per-rank arrays and the region bounds for n ranks. */
static sd_status ensure_layout(sd_compressor *z, int n) {
    sd_cz_reduce_scratch *a = &z->ar;
    if (a->n == n) return SD_OK;
    const size_t un = (size_t)n;
    size_t **arrs[] = {&a->sb, &a->sd, &a->rb, &a->rd, &a->rnp, &a->kq, &a->gb, &a->gd};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        free(*arrs[i]);
        *arrs[i] = malloc(un * sizeof(size_t));
    }
    free(a->bounds);
    free(a->pos);
    free(a->rows);
    a->bounds = malloc((un + 1) * sizeof(uint32_t));
    a->pos = malloc((un + 1) * sizeof(size_t));
    a->rows = malloc(un * (un + 1) * sizeof(uint32_t));
    bool ok = a->bounds && a->pos && a->rows;
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) ok = ok && *arrs[i];
    a->n = ok ? n : 0;
    a->q_ratio = -1; /* the quotas are for the old layout */
    if (!ok) return SD_FAIL(SD_ERR_OOM, "sparse allreduce: layout for %d ranks", n);
    for (int j = 0; j <= n; j++) a->bounds[j] = (uint32_t)((uint64_t)z->count * (uint64_t)j / un);
    return SD_OK;
}

/* Calls fn(z, lo, hi, kk, arg) for each part of region [rlo, rhi) the owner re-selects in: the
 * layers' parts (per_layer) or the region as one (the compressor's one block), each with its
 * Top-k size at `ratio`. Returns the pairs in all. */
typedef sd_status (*segment_fn)(sd_compressor *z, size_t lo, size_t hi, size_t kk, void *arg);
static sd_status each_segment(sd_compressor *z, uint32_t rlo, uint32_t rhi, double ratio, segment_fn fn, void *arg,
                              size_t *total) {
    size_t q = 0;
    for (int l = 0; l < z->nlayers; l++) {
        const size_t lo = z->loff[l] > rlo ? z->loff[l] : rlo;
        const size_t e = z->loff[l] + z->lcnt[l], hi = e < rhi ? e : rhi;
        if (lo >= hi) continue;
        const size_t kk = sd_cz_k_of(ratio, hi - lo);
        if (fn) TRY(fn(z, lo, hi, kk, arg));
        q += kk;
    }
    *total = q;
    return SD_OK;
}

/* Pairs every owner re-selects at `ratio` (a->kq) and the phase-2 message layout (a->gb, a->gd),
 * computed once per layout and ratio (auto's modelled time and the step it chose both ask). */
static size_t quotas(sd_compressor *z, int n, double ratio) {
    sd_cz_reduce_scratch *a = &z->ar;
    if (a->q_ratio == ratio) return a->q_total;
    size_t total = 0;
    for (int j = 0; j < n; j++) {
        (void)each_segment(z, a->bounds[j], a->bounds[j + 1], ratio, NULL, NULL, &a->kq[j]); /* no fn: cannot fail */
        a->gb[j] = sd_cz_msg_bytes(a->kq[j], z->cfg.f16_values);
        a->gd[j] = total;
        total += a->gb[j];
    }
    a->q_ratio = ratio;
    a->q_total = total;
    return total;
}

/* ---- the modelled time (the auto choice) ----------------------------------------------------- */
double sd_cz_allreduce_model_time(const sd_compressor *zc, int n, size_t np, double ratio, double bandwidth_bps,
                                  double latency_s) {
    if (n <= 1) return 0;
    sd_compressor *z = (sd_compressor *)zc; /* the layout is a cache: filling it changes no result */
    if (ensure_layout(z, n) != SD_OK) return INFINITY;
    const double gathered = (double)quotas(z, n, ratio);
    const double pair = 4.0 + (z->cfg.f16_values ? 2.0 : 4.0);
    const double a2a = (double)(n - 1) * SD_COMPRESS_HEADER_BYTES + (double)np * (double)(n - 1) / (double)n * pair;
    return sd_ring_allgather_time(n, (double)n * (double)(n + 1) * 4.0, bandwidth_bps, latency_s) +
           sd_alltoallv_time(n, a2a, bandwidth_bps, latency_s) +
           sd_ring_allgather_time(n, gathered, bandwidth_bps, latency_s);
}

/* ---- one step -------------------------------------------------------------------------------- */
/* Writes one wire message (header, then indices and values of np pairs) at m in backend memory. */
static sd_status pack_msg(sd_compressor *z, unsigned char *m, const uint32_t *idx, const float *val, size_t np) {
    const sd_backend_ops *o = z->be.ops;
    sd_kctx *k = z->be.ctx;
    unsigned char hdr[SD_COMPRESS_HEADER_BYTES] = {0}; /* u32 pairs, f32 gain (0: the rows carry it) */
    const uint32_t n32 = (uint32_t)np;
    memcpy(hdr, &n32, 4);
    TRY(o->upload(k, m, hdr, sizeof hdr));
    if (!np) return SD_OK;
    TRY(o->copy(k, m + 8, idx, np * 4));
    if (z->cfg.f16_values) TRY(o->cz_to_f16(k, np, val, m + 8 + np * 4));
    else TRY(o->copy(k, m + 8 + np * 4, val, np * 4));
    return SD_OK;
}

typedef struct select_arg {
    const float *g; /* the received sums */
    size_t at;      /* pairs selected so far */
} select_arg;

static sd_status select_segment(sd_compressor *z, size_t lo, size_t hi, size_t kk, void *arg) {
    select_arg *sa = arg;
    TRY(z->be.ops->topk_select(z->be.ctx, sa->g + lo, hi - lo, kk, (uint32_t)lo, z->ar.idx2 + sa->at,
                               z->ar.val2 + sa->at));
    sa->at += kk;
    return SD_OK;
}

/* Phase 3: the owner's Top-k of its region of g (the received sums) into idx2 / val2. */
static sd_status reselect(sd_compressor *z, const float *g, int me, double ratio, size_t kq) {
    sd_cz_reduce_scratch *a = &z->ar;
    size_t have = a->cap2 * sizeof(uint32_t), havev = a->cap2 * sizeof(float);
    if (kq > a->cap2) {
        TRY(sd_cz_ensure_be(z, (void **)&a->idx2, &have, kq * sizeof(uint32_t)));
        TRY(sd_cz_ensure_be(z, (void **)&a->val2, &havev, kq * sizeof(float)));
        a->cap2 = kq;
    }
    select_arg sa = {.g = g, .at = 0};
    size_t total = 0;
    return each_segment(z, a->bounds[me], a->bounds[me + 1], ratio, select_segment, &sa, &total);
}

sd_status sd_cz_allreduce_step(sd_compressor *z, sd_comm *comm, sd_comm *data, float *g, size_t np, double ratio,
                               sd_compress_step *s) {
    const sd_backend_ops *o = z->be.ops;
    sd_kctx *k = z->be.ctx;
    const int n = data->size, me = data->rank;
    const bool f16 = z->cfg.f16_values;
    TRY(ensure_layout(z, n));
    sd_cz_reduce_scratch *a = &z->ar;
    const size_t un = (size_t)n, row = un + 1;

    /* 1. this rank's pairs by region, and every rank's row of counts (and gain) */
    TRY(o->cz_split(k, np, z->idx, n, a->bounds, a->pos));
    a->pos[n] = np;
    uint32_t *mine = a->rows + (size_t)me * row;
    const float gain = (float)s->gain;
    memcpy(&mine[0], &gain, 4);
    for (int j = 0; j < n; j++) mine[j + 1] = (uint32_t)(a->pos[j + 1] - a->pos[j]);
    for (int j = 0; j < n; j++) a->rb[j] = row * 4;
    TRY(sd_comm_allgatherv(comm, mine, row * 4, a->rows, a->rb, NULL));

    /* 2. the alltoallv: this rank's pairs to their regions' owners */
    size_t sext = 0, rext = 0;
    uint64_t a2a_max = 0; /* the most any rank sends: what the slowest link carries */
    for (int i = 0; i < n; i++) {
        const uint32_t *ri = a->rows + (size_t)i * row;
        uint64_t sent = 0, tot = 0;
        for (int j = 0; j < n; j++) {
            tot += ri[j + 1];
            if (j != i) sent += sd_cz_msg_bytes(ri[j + 1], f16);
        }
        if (sent > a2a_max) a2a_max = sent;
        if (tot > z->cap_pairs)
            return SD_FAIL(SD_ERR_FORMAT, "rank %d: sparse allreduce: rank %d declares %llu pairs, more than the %zu "
                           "any rank selects: the ranks run different layouts or ratios", me, i,
                           (unsigned long long)tot, z->cap_pairs);
    }
    for (int j = 0; j < n; j++) {
        a->sb[j] = sd_cz_msg_bytes(mine[j + 1], f16);
        a->sd[j] = sext;
        sext += a->sb[j];
        a->rnp[j] = a->rows[(size_t)j * row + 1 + (size_t)me];
        a->rb[j] = sd_cz_msg_bytes(a->rnp[j], f16);
        a->rd[j] = rext;
        rext += a->rb[j];
    }
    TRY(sd_cz_ensure_be(z, (void **)&a->sbuf, &a->sbuf_bytes, sext));
    TRY(sd_cz_ensure_be(z, (void **)&a->rbuf, &a->rbuf_bytes, rext));
    for (int j = 0; j < n; j++)
        TRY(pack_msg(z, a->sbuf + a->sd[j], z->idx + a->pos[j], z->val + a->pos[j], a->pos[j + 1] - a->pos[j]));
    /* residual = a - C(a) before g is reused for the sums; masking of the velocity */
    TRY(o->cz_residual(k, z->count, g, np, z->idx, z->val, z->residual, z->velocity));
    z->residual_zero = false;
    TRY(sd_comm_alltoallv(data, a->sbuf, a->sb, a->sd, a->rbuf, a->rb, a->rd));

    /* 3. the owner's sums (rank order) and its re-selection; f16: the owner keeps the rounding excess */
    sd_status sc = o->cz_scatter_sum(k, a->rbuf, n, a->rd, a->rnp, f16, g, z->count);
    if (sc != SD_OK) return SD_FAIL(sc, "rank %d: sparse allreduce: %s", me, sd_last_error_brief());
    const size_t gathered = quotas(z, n, ratio);
    TRY(reselect(z, g, me, ratio, a->kq[me]));
    if (f16) TRY(o->cz_round_excess(k, a->kq[me], a->idx2, a->val2, z->residual));

    /* 4. every owner's selection to every rank; g = their sum */
    TRY(sd_cz_ensure_be(z, (void **)&z->buf, &z->buf_bytes, gathered));
    TRY(pack_msg(z, z->buf + a->gd[me], a->idx2, a->val2, a->kq[me]));
    TRY(sd_comm_allgatherv(data, z->buf + a->gd[me], a->gb[me], z->buf, a->gb, a->gd));
    sc = o->cz_scatter_sum(k, z->buf, n, a->gd, a->kq, f16, g, z->count);
    if (sc != SD_OK) return SD_FAIL(sc, "rank %d: sparse allreduce: %s", me, sd_last_error_brief());
    /* what the owners did not keep of this rank's pairs returns to its residual */
    TRY(o->cz_unsent(k, np, z->idx, z->val, g, z->residual));

    double gsum = 0;
    uint64_t ptotal = 0;
    for (int j = 0; j < n; j++) {
        float gj;
        memcpy(&gj, &a->rows[(size_t)j * row], 4);
        gsum += (double)gj;
        ptotal += a->kq[j];
    }
    s->exchange = SD_EXCHANGE_ALLREDUCE;
    s->gain_mean = gsum / (double)n;
    s->pairs = np;
    s->pairs_total = ptotal;
    s->payload_bytes = sext;
    s->gathered_bytes = gathered;
    s->header_bytes = (uint64_t)un * row * 4;
    s->a2a_max_bytes = a2a_max;
    return SD_OK;
}
