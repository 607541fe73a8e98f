/* replay.c: the replay source (replay.h): a dataset partition streamed at a rate model, encoded
 * message by message, on the virtual clock (sd_replay_advance_to) or the real one (the source
 * table, polled by the ingest thread). */
#include "base/clock.h"
#include "stream/replay.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sd_replay {
    sd_replay_config cfg;
    int64_t *order;      /* this pass's order of the partition */
    int64_t n, pos;      /* partition size, next position in order */
    uint64_t passes;
    sd_rng shuffle_rng;
    sd_arrivals arrivals;
    double next_t;       /* arrival time of the next message */
    uint64_t sent;
    sd_msg_meta meta;    /* shape, dtype and device of every message */
    size_t elems, payload_len;
    uint8_t *block;      /* allocation holding buf */
    uint8_t *buf;        /* the encoded message handed out; its payload starts 64-byte aligned */
    size_t cap;
    float *fbuf;         /* F32 payload staging */
    float lut[SD_AUGMENT_MAX_CHANNELS * 256];
    double t0;           /* real clock: wall time of virtual time 0 */
    double now;          /* real clock: the last wall time read (arrivals due by it need no new read) */
    double paused_at;    /* real clock: the stream's time when the source was stopped (0 before a start) */
    char name[48];
};

#define PREFETCH_AHEAD 4 /* images prefetched ahead of the one being encoded */

/* Uniform in [0, n) without division in the common case (Lemire's multiply-shift with rejection;
 * sd_rng_below divides twice per draw, which showed in the per-sample cost). */
static uint64_t below(sd_rng *rng, uint64_t n) {
    unsigned __int128 m = (unsigned __int128)sd_rng_u64(rng) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = (0 - n) % n;
        while (low < threshold) {
            m = (unsigned __int128)sd_rng_u64(rng) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

/* Starts a pass: a Fisher-Yates shuffle of the partition (for i = n-1 down to 1, swap i with a
 * uniform j in [0, i]) unless no_shuffle. */
static void new_pass(sd_replay *r) {
    for (int64_t i = r->n - 1; i > 0 && !r->cfg.no_shuffle; i--) {
        int64_t j = (int64_t)below(&r->shuffle_rng, (uint64_t)i + 1), t = r->order[i];
        r->order[i] = r->order[j];
        r->order[j] = t;
    }
    r->pos = 0;
    r->passes++;
}

sd_status sd_replay_create(const sd_replay_config *c, sd_replay **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "sd_replay_create needs a configuration and an output");
    *out = NULL;
    const sd_dataset *d = c->data;
    if (!d || d->n <= 0 || !d->images || !d->labels)
        return SD_FAIL(SD_ERR_INVALID, "replay needs a loaded, non-empty dataset");
    if (d->c < 1 || d->h < 1 || d->w < 1 || (uint32_t)d->c > SD_MSG_MAX_DIM || (uint32_t)d->h > SD_MSG_MAX_DIM ||
        (uint32_t)d->w > SD_MSG_MAX_DIM)
        return SD_FAIL(SD_ERR_INVALID, "replay: dataset '%s' images %dx%dx%d do not fit a message shape", d->name, d->c,
                       d->h, d->w);
    sd_msg_dtype dtype = c->dtype ? c->dtype : SD_MSG_U8;
    if (dtype != SD_MSG_U8 && dtype != SD_MSG_F32)
        return SD_FAIL(SD_ERR_INVALID, "replay dtype %d is unknown; use SD_MSG_U8 or SD_MSG_F32", (int)c->dtype);
    if (dtype == SD_MSG_F32 && d->c > SD_AUGMENT_MAX_CHANNELS)
        return SD_FAIL(SD_ERR_INVALID, "replay: f32 payloads handle at most %d channels, dataset '%s' has %d",
                       SD_AUGMENT_MAX_CHANNELS, d->name, d->c);
    if (c->indices && c->n_indices <= 0)
        return SD_FAIL(SD_ERR_INVALID, "replay partition is empty (n_indices %lld); give the device some samples",
                       (long long)c->n_indices);
    if (c->f32_norm)
        for (int ch = 0; ch < d->c && ch < SD_AUGMENT_MAX_CHANNELS; ch++)
            if (!(c->f32_norm->std[ch] > 0) || !isfinite(c->f32_norm->std[ch]) || !isfinite(c->f32_norm->mean[ch]))
                return SD_FAIL(SD_ERR_INVALID, "replay f32_norm channel %d: std must be positive, mean and std finite",
                               ch);
    int64_t n = c->indices ? c->n_indices : d->n;
    for (int64_t i = 0; c->indices && i < n; i++)
        if (c->indices[i] < 0 || c->indices[i] >= d->n)
            return SD_FAIL(SD_ERR_INVALID, "replay partition index indices[%lld] = %lld is outside [0, %lld) of '%s'",
                           (long long)i, (long long)c->indices[i], (long long)d->n, d->name);

    sd_replay *r = calloc(1, sizeof *r);
    if (!r) return SD_FAIL(SD_ERR_OOM, "out of memory for a replay source");
    r->cfg = *c;
    r->cfg.dtype = dtype;
    r->cfg.indices = NULL;
    r->n = n;
    r->meta = (sd_msg_meta){.dtype = dtype, .ndim = 3, .dims = {(uint32_t)d->c, (uint32_t)d->h, (uint32_t)d->w, 0},
                            .device = c->device, .version = c->epoch ? 2 : 1};
    r->elems = (size_t)d->c * d->h * d->w;
    r->payload_len = r->elems * sd_msg_dtype_size(dtype);
    r->cap = sd_msg_size(r->payload_len);
    r->order = malloc((size_t)n * sizeof *r->order);
    if (posix_memalign((void **)&r->block, 64, r->cap + 64) != 0) r->block = NULL;
    r->buf = r->block ? r->block + 64 - SD_MSG_HEADER_BYTES % 64 : NULL;
    if (dtype == SD_MSG_F32) r->fbuf = malloc(r->payload_len);
    sd_status s = SD_OK;
    if (!r->order || !r->buf || (dtype == SD_MSG_F32 && !r->fbuf)) {
        s = SD_FAIL(SD_ERR_OOM, "out of memory for a replay of %lld samples", (long long)n);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) r->order[i] = c->indices ? c->indices[i] : i;
    if (dtype == SD_MSG_F32)
        for (int ch = 0; ch < d->c; ch++) {
            float mean = c->f32_norm ? c->f32_norm->mean[ch] : 0.0f, sd = c->f32_norm ? c->f32_norm->std[ch] : 1.0f;
            for (int v = 0; v < 256; v++) r->lut[ch * 256 + v] = ((float)v / 255.0f - mean) / sd;
        }
    s = sd_arrivals_init(&r->arrivals, &c->rate, c->seed, c->device);
    if (s != SD_OK) goto fail;
    /* the shuffles draw from their own stream, so the arrival times do not depend on the partition */
    sd_rng_seed(&r->shuffle_rng, c->seed ^ (0xC2B2AE3D27D4EB4Full * ((uint64_t)c->device + 1)) ^ 0x5bd1e995ull);
    new_pass(r);
    r->next_t = sd_arrivals_next(&r->arrivals);
    snprintf(r->name, sizeof r->name, "replay(device %u)", c->device);
    *out = r;
    return SD_OK;
fail:
    sd_replay_destroy(r);
    return s;
}

void sd_replay_destroy(sd_replay *r) {
    if (!r) return;
    free(r->order);
    free(r->block);
    free(r->fbuf);
    free(r);
}

double sd_replay_rate(const sd_replay *r) { return r->arrivals.rate; }
uint64_t sd_replay_sent(const sd_replay *r) { return r->sent; }
uint64_t sd_replay_passes(const sd_replay *r) { return r->passes; }

static bool finished(const sd_replay *r) { return r->cfg.max_messages && r->sent >= r->cfg.max_messages; }

double sd_replay_next_time(const sd_replay *r) { return finished(r) ? INFINITY : r->next_t; }

sd_status sd_replay_next_message(sd_replay *r, const void **msg, size_t *len, double *arrival, sd_source_event *ev) {
    if (!r || !msg || !len || !ev)
        return SD_FAIL(SD_ERR_INVALID, "sd_replay_next_message needs the replay and outputs");
    if (finished(r) || isinf(r->next_t)) {
        *ev = SD_SOURCE_END;
        return SD_OK;
    }
    if (r->pos == r->n) new_pass(r);
    const sd_dataset *d = r->cfg.data;
    int64_t idx = r->order[r->pos++];
    const uint8_t *img = d->images + (size_t)idx * r->elems;
    /* the order is known ahead: start loading a later image now, so that reading this pass's
     * shuffled images overlaps memory latency with encoding (a large dataset lives in DRAM) */
    if (r->pos + PREFETCH_AHEAD - 1 < r->n) {
        const char *next = (const char *)(d->images + (size_t)r->order[r->pos + PREFETCH_AHEAD - 1] * r->elems);
        for (size_t off = 0; off < r->elems; off += 64) __builtin_prefetch(next + off, 0, 3);
    }
    const void *payload = img;
    if (r->cfg.dtype == SD_MSG_F32) {
        size_t plane = (size_t)d->h * d->w;
        for (int ch = 0; ch < d->c; ch++) {
            const float *l = r->lut + ch * 256;
            for (size_t i = 0; i < plane; i++) r->fbuf[ch * plane + i] = l[img[ch * plane + i]];
        }
        payload = r->fbuf;
    }
    r->meta.label = d->labels[idx];
    r->meta.seq = r->cfg.epoch ? sd_msg_seq_make(r->cfg.epoch, r->cfg.first_seq + r->sent) : r->cfg.first_seq + r->sent;
    TRY(sd_msg_encode(&r->meta, payload, r->payload_len, r->buf, r->cap, len));
    *msg = r->buf;
    if (arrival) *arrival = r->next_t;
    *ev = SD_SOURCE_MESSAGE;
    r->sent++;
    r->next_t = sd_arrivals_next(&r->arrivals);
    return SD_OK;
}

sd_status sd_replay_advance_to(sd_replay *r, double t, sd_sink *sink, uint64_t *delivered) {
    if (!r || !sink || !sink->ring) return SD_FAIL(SD_ERR_INVALID, "sd_replay_advance_to needs a replay and a sink");
    if (isnan(t)) return SD_FAIL(SD_ERR_INVALID, "sd_replay_advance_to: time is NaN");
    const sd_ring_config *rc = sd_ring_get_config(sink->ring);
    bool backpressure = rc->policy != SD_RING_DROP_OLDEST && rc->when_full == SD_RING_FULL_BLOCK;
    uint64_t k = 0;
    while (!finished(r) && r->next_t <= t) {
        if (backpressure && !sd_ring_has_room(sink->ring, r->payload_len)) break; /* wait in the source */
        const void *msg;
        size_t len;
        sd_source_event ev;
        TRY(sd_replay_next_message(r, &msg, &len, NULL, &ev));
        if (ev != SD_SOURCE_MESSAGE) break;
        sd_sink_deliver(sink, msg, len);
        k++;
    }
    if (delivered) *delivered = k;
    return SD_OK;
}

/* ---- the real-clock source table --------------------------------------------------------------- */
static const char *replay_name(void *ctx) { return ((sd_replay *)ctx)->name; }

/* The stream's time 0 is the first start; a stop and a later start pause it, so the stream goes on
 * where it stopped instead of owing every arrival of the pause at once. */
static sd_status replay_start(void *ctx) {
    sd_replay *r = ctx;
    r->now = sd_clock_now();
    r->t0 = r->now - r->paused_at;
    return SD_OK;
}

static sd_status replay_next(void *ctx, double timeout_s, sd_source_event *ev, const void **msg, size_t *len) {
    sd_replay *r = ctx;
    if (finished(r) || isinf(r->next_t)) {
        *ev = SD_SOURCE_END;
        return SD_OK;
    }
    double due = r->t0 + r->next_t;
    if (due > r->now) { /* not known to be due yet: look at the clock, sleep if early */
        r->now = sd_clock_now();
        if (due > r->now) {
            sd_clock_sleep_until(fmin(due, r->now + timeout_s));
            r->now = sd_clock_now();
            if (due > r->now) {
                *ev = SD_SOURCE_IDLE;
                return SD_OK;
            }
        }
    }
    return sd_replay_next_message(r, msg, len, NULL, ev);
}

static sd_status replay_stop(void *ctx) {
    sd_replay *r = ctx;
    r->paused_at = sd_clock_now() - r->t0;
    return SD_OK;
}

static void replay_destroy(void *ctx) { sd_replay_destroy(ctx); }

/* ---- virtual time ---------------------------------------------------------------------------------- */
static sd_status replay_advance(void *ctx, double t, sd_sink *sink) { return sd_replay_advance_to(ctx, t, sink, NULL); }
static double replay_next_time(void *ctx) { return sd_replay_next_time(ctx); }

/* ---- the position in a checkpoint (base/archive.h): replay.order (this pass's order), replay.pos,
 * replay.counts (passes, sent, arrivals, trace segment), replay.times (drawn rate, arrival level,
 * next arrival, real-clock pause point), replay.shuffle_rng and replay.arrival_rng ---------------------- */
static sd_status replay_save(void *ctx, const sd_archive *a) {
    const sd_replay *r = ctx;
    int64_t n = sd_replay_partition_size(r);
    int64_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return SD_FAIL(SD_ERR_OOM, "checkpoint: stream order of %lld samples", (long long)n);
    sd_replay_state st;
    sd_replay_get_state(r, &st, order);
    sd_status s = a->ops->put(a->ctx, "replay.order", SD_ARC_I64, 1, (int64_t[]){n}, order);
    free(order);
    TRY(s);
    TRY(a->ops->put(a->ctx, "replay.pos", SD_ARC_I64, 0, NULL, &st.pos));
    uint64_t u[4] = {st.passes, st.sent, st.arrival_count, st.arrival_seg};
    TRY(a->ops->put(a->ctx, "replay.counts", SD_ARC_U64, 1, (int64_t[]){4}, u));
    double d[4] = {st.arrival_rate, st.arrival_target, st.next_t, st.paused_at};
    TRY(a->ops->put(a->ctx, "replay.times", SD_ARC_F64, 1, (int64_t[]){4}, d));
    TRY(a->ops->put(a->ctx, "replay.shuffle_rng", SD_ARC_U64, 1, (int64_t[]){4}, st.shuffle_rng.s));
    TRY(a->ops->put(a->ctx, "replay.arrival_rng", SD_ARC_U64, 1, (int64_t[]){4}, st.arrival_rng.s));
    return SD_OK;
}

static sd_status get_rng(const sd_archive *a, const char *name, sd_rng *rng) {
    const void *p = NULL;
    TRY(a->ops->get(a->ctx, name, SD_ARC_U64, 4, &p, NULL));
    sd_rng r;
    memcpy(r.s, p, sizeof r.s);
    if (!(r.s[0] | r.s[1] | r.s[2] | r.s[3]))
        return SD_FAIL(SD_ERR_FORMAT, "%s: random state '%s' is all zeros (xoshiro cannot run from it); the checkpoint "
                       "is damaged", a->ops->where(a->ctx), name);
    *rng = r;
    return SD_OK;
}

static sd_status replay_load(void *ctx, const sd_archive *a) {
    sd_replay *r = ctx;
    int64_t n = sd_replay_partition_size(r);
    const void *o = NULL, *c = NULL, *tm = NULL, *pos = NULL;
    size_t saved = 0;
    TRY(a->ops->get(a->ctx, "replay.order", SD_ARC_I64, 0, &o, &saved));
    if ((int64_t)saved != n)
        return SD_FAIL(SD_ERR_INVALID, "%s: the saved stream holds %zu samples but this device's partition has %lld; "
                       "the checkpoint belongs to another partition (seed, partition or devices differ)",
                       a->ops->where(a->ctx), saved, (long long)n);
    TRY(a->ops->get(a->ctx, "replay.counts", SD_ARC_U64, 4, &c, NULL));
    TRY(a->ops->get(a->ctx, "replay.times", SD_ARC_F64, 4, &tm, NULL));
    TRY(a->ops->get(a->ctx, "replay.pos", SD_ARC_I64, 1, &pos, NULL));
    sd_replay_state st;
    memset(&st, 0, sizeof st);
    memcpy(&st.pos, pos, sizeof st.pos);
    TRY(get_rng(a, "replay.shuffle_rng", &st.shuffle_rng));
    TRY(get_rng(a, "replay.arrival_rng", &st.arrival_rng));
    uint64_t u[4];
    double d[4];
    memcpy(u, c, sizeof u);
    memcpy(d, tm, sizeof d);
    st.passes = u[0];
    st.sent = u[1];
    st.arrival_count = u[2];
    st.arrival_seg = u[3];
    st.arrival_rate = d[0];
    st.arrival_target = d[1];
    st.next_t = d[2];
    st.paused_at = d[3];
    int64_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return SD_FAIL(SD_ERR_OOM, "checkpoint: stream order of %lld samples", (long long)n);
    memcpy(order, o, (size_t)n * sizeof *order);
    sd_status s = sd_replay_set_state(r, &st, order, n);
    free(order);
    TRY(s);
    return SD_OK;
}

static const sd_source_ops replay_ops = {.name = replay_name,
                                         .start = replay_start,
                                         .next = replay_next,
                                         .stop = replay_stop,
                                         .destroy = replay_destroy,
                                         .advance_to = replay_advance,
                                         .next_time = replay_next_time,
                                         .save = replay_save,
                                         .load = replay_load};

sd_source sd_replay_source(sd_replay *r) { return (sd_source){&replay_ops, r}; }

/* ---- checkpoints ------------------------------------------------------------------------------- */
int64_t sd_replay_partition_size(const sd_replay *r) { return r->n; }

void sd_replay_get_state(const sd_replay *r, sd_replay_state *s, int64_t *order) {
    memset(s, 0, sizeof *s);
    s->pos = r->pos;
    s->passes = r->passes;
    s->sent = r->sent;
    s->shuffle_rng = r->shuffle_rng;
    s->arrival_rng = r->arrivals.rng;
    s->arrival_rate = r->arrivals.rate;
    s->arrival_target = r->arrivals.target;
    s->arrival_count = r->arrivals.count;
    s->arrival_seg = (uint64_t)r->arrivals.seg;
    s->next_t = r->next_t;
    s->paused_at = r->paused_at;
    if (order) memcpy(order, r->order, (size_t)r->n * sizeof *order);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

sd_status sd_replay_set_state(sd_replay *r, const sd_replay_state *s, const int64_t *order, int64_t n) {
    if (!r || !s || !order) return SD_FAIL(SD_ERR_INVALID, "sd_replay_set_state needs a replay, a state and an order");
    if (n != r->n)
        return SD_FAIL(SD_ERR_INVALID, "%s: the saved stream order has %lld samples but this device's partition has "
                       "%lld; the checkpoint belongs to another partition (seed, partition or devices differ)",
                       r->name, (long long)n, (long long)r->n);
    if (s->pos < 0 || s->pos > n)
        return SD_FAIL(SD_ERR_INVALID, "%s: saved position %lld is outside [0, %lld]", r->name, (long long)s->pos,
                       (long long)n);
    if (isnan(s->next_t) || isnan(s->arrival_target) || !(s->arrival_rate >= 0) || isnan(s->paused_at))
        return SD_FAIL(SD_ERR_INVALID, "%s: saved arrival state is not a number; the checkpoint is damaged", r->name);
    if (r->cfg.rate.kind == SD_RATE_TRACE && s->arrival_seg >= r->cfg.rate.trace->n)
        return SD_FAIL(SD_ERR_INVALID, "%s: saved trace segment %llu is outside the trace's %zu rows", r->name,
                       (unsigned long long)s->arrival_seg, r->cfg.rate.trace->n);
    /* the saved order must be a permutation of this partition (whatever pass it is in) */
    int64_t *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return SD_FAIL(SD_ERR_OOM, "%s: checking a saved order of %lld samples", r->name, (long long)n);
    }
    memcpy(a, order, (size_t)n * sizeof *a);
    memcpy(b, r->order, (size_t)n * sizeof *b);
    qsort(a, (size_t)n, sizeof *a, cmp_i64);
    qsort(b, (size_t)n, sizeof *b, cmp_i64);
    bool same = memcmp(a, b, (size_t)n * sizeof *a) == 0;
    free(a);
    free(b);
    if (!same)
        return SD_FAIL(SD_ERR_INVALID, "%s: the saved stream order is not a permutation of this device's partition; "
                       "the checkpoint belongs to another partition (seed, partition or devices differ)", r->name);
    memcpy(r->order, order, (size_t)n * sizeof *order);
    r->pos = s->pos;
    r->passes = s->passes;
    r->sent = s->sent;
    r->shuffle_rng = s->shuffle_rng;
    r->arrivals.rng = s->arrival_rng;
    r->arrivals.rate = s->arrival_rate;
    r->arrivals.target = s->arrival_target;
    r->arrivals.count = s->arrival_count;
    r->arrivals.seg = (size_t)s->arrival_seg;
    r->next_t = s->next_t;
    r->paused_at = s->paused_at;
    return SD_OK;
}
