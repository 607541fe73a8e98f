/* ring.c: the bounded single-producer single-consumer sample buffer (declared in ring.h).
 *
 * Storage: one allocation holding the per-sample records (meta, offset, size) followed by a byte
 * ring. Samples are stored contiguously, each at a 64-byte boundary; one that does not fit before
 * the end of the byte ring wraps to offset 0 and the skipped tail counts as part of its span. The
 * byte ring has max_bytes + max_samples x 63 + max_sample_bytes bytes (rounded up to 64), which is
 * enough that whenever the sample and byte bounds admit a sample, a contiguous place exists (the
 * alignment slack covers the padding, the extra max_sample_bytes the wrap gap), so the two bounds
 * are exact and "physically full" never happens first.
 *
 * Concurrency: one mutex and two condition variables (room, available). Payload copies happen
 * outside the lock: the producer reserves the space under the lock, copies, then commits; the
 * consumer claims the oldest samples under the lock, copies them out, then releases. Claimed
 * samples are never evicted or truncated, and a reservation is never visible to the consumer, so
 * neither side touches bytes the other is copying. Small payloads are copied under the lock
 * instead (two lock round trips cost more than the copy). */
#include "stream/ring.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COPY_UNLOCKED_BYTES 4096 /* payloads above this are copied outside the lock */

typedef struct ring_rec {
    sd_msg_meta meta;
    size_t off;    /* payload offset in data */
    size_t nbytes; /* payload bytes */
    size_t span;   /* bytes of data this record holds: the wrap gap before it + its aligned size */
} ring_rec;

struct sd_ring {
    sd_ring_config cfg;
    sd_ring_allocator alloc;
    void *block;    /* the one allocation: recs, then data */
    ring_rec *recs; /* cfg.max_samples records, indexed by sample number mod max_samples */
    uint8_t *data;
    size_t phys;    /* bytes of data */

    pthread_mutex_t mu;
    pthread_cond_t room;  /* signalled when samples leave */
    pthread_cond_t avail; /* signalled when samples arrive or the ring closes */

    /* all below under mu */
    int waiting_room, waiting_avail;
    size_t avail_need;   /* samples the waiting consumer needs before it is worth waking it */
    uint64_t head, tail; /* samples [head, tail) are held */
    size_t claimed;      /* samples at head held by the consumer (acquire or a take in progress) */
    size_t rd, wr, used; /* byte ring: the held spans run from rd to wr; used = their total */
    size_t bytes;        /* payload bytes held */
    bool closed;
    sd_ring_stats st;
};

static size_t align_up(size_t n) { return (n + SD_RING_ALIGN - 1) & ~(size_t)(SD_RING_ALIGN - 1); }

/* ---- clocks for timed waits ------------------------------------------------------------------ */
static double mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static struct timespec to_timespec(double t) {
    struct timespec ts;
    double s = floor(t);
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((t - s) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits on cv until woken or the absolute monotonic deadline (< 0: none). false on timeout. */
static bool wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double deadline) {
    if (deadline < 0) {
        pthread_cond_wait(cv, mu);
        return true;
    }
    struct timespec ts = to_timespec(deadline);
    return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

/* ---- allocation -------------------------------------------------------------------------------- */
static void *default_alloc(size_t bytes, void *ctx) {
    (void)ctx;
    void *p = NULL;
    return posix_memalign(&p, SD_RING_ALIGN, bytes) == 0 ? p : NULL;
}

static void default_free(void *p, void *ctx) {
    (void)ctx;
    free(p);
}

const char *sd_ring_policy_name(sd_ring_policy p) {
    switch (p) {
    case SD_RING_PERSIST: return "persist";
    case SD_RING_TRUNCATE: return "truncate";
    case SD_RING_DROP_OLDEST: return "drop_oldest";
    }
    return "unknown";
}

sd_status sd_ring_create(const sd_ring_config *c, sd_ring **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "sd_ring_create needs a configuration and an output");
    *out = NULL;
    sd_ring_config cfg = *c;
    if (cfg.max_samples < 1 || cfg.max_samples > SD_RING_MAX_SAMPLES)
        return SD_FAIL(SD_ERR_INVALID, "ring max_samples %zu must lie in [1, %u]", cfg.max_samples,
                       SD_RING_MAX_SAMPLES);
    if (cfg.max_sample_bytes < 1 || cfg.max_sample_bytes > SD_MSG_MAX_PAYLOAD)
        return SD_FAIL(SD_ERR_INVALID, "ring max_sample_bytes %zu must lie in [1, %u] (the message payload limit)",
                       cfg.max_sample_bytes, SD_MSG_MAX_PAYLOAD);
    if (cfg.max_bytes == 0) {
        if (cfg.max_sample_bytes > SD_RING_MAX_BYTES / cfg.max_samples)
            return SD_FAIL(SD_ERR_INVALID,
                           "ring of %zu samples of %zu bytes exceeds %zu bytes; set max_bytes or fewer samples",
                           cfg.max_samples, cfg.max_sample_bytes, SD_RING_MAX_BYTES);
        cfg.max_bytes = cfg.max_samples * cfg.max_sample_bytes;
    }
    if (cfg.max_bytes > SD_RING_MAX_BYTES)
        return SD_FAIL(SD_ERR_INVALID, "ring max_bytes %zu exceeds the limit %zu", cfg.max_bytes, SD_RING_MAX_BYTES);
    if (cfg.max_sample_bytes > cfg.max_bytes)
        return SD_FAIL(SD_ERR_INVALID,
                       "ring max_sample_bytes %zu exceeds max_bytes %zu: no sample that large could be stored",
                       cfg.max_sample_bytes, cfg.max_bytes);
    if (cfg.policy != SD_RING_PERSIST && cfg.policy != SD_RING_TRUNCATE && cfg.policy != SD_RING_DROP_OLDEST)
        return SD_FAIL(SD_ERR_INVALID, "ring policy %d is unknown; use persist, truncate or drop_oldest",
                       (int)cfg.policy);
    if (cfg.when_full != SD_RING_FULL_DROP_NEWEST && cfg.when_full != SD_RING_FULL_BLOCK)
        return SD_FAIL(SD_ERR_INVALID, "ring when_full %d is unknown; use drop_newest or block", (int)cfg.when_full);
    if (isnan(cfg.block_timeout_s))
        return SD_FAIL(SD_ERR_INVALID, "ring block_timeout_s is NaN; use seconds, or < 0 for no limit");
    if (cfg.allocator && (!cfg.allocator->alloc || !cfg.allocator->free))
        return SD_FAIL(SD_ERR_INVALID, "ring allocator '%s' needs both alloc and free",
                       cfg.allocator->name ? cfg.allocator->name : "custom allocator");

    sd_ring *r = calloc(1, sizeof *r);
    if (!r) return SD_FAIL(SD_ERR_OOM, "out of memory for a ring buffer");
    r->cfg = cfg;
    if (cfg.allocator) {
        r->alloc = *cfg.allocator;
        if (!r->alloc.name) r->alloc.name = "custom allocator";
    } else {
        r->alloc = (sd_ring_allocator){default_alloc, default_free, NULL, "aligned malloc"};
    }
    r->cfg.allocator = NULL;
    size_t rec_bytes = align_up(cfg.max_samples * sizeof(ring_rec));
    r->phys = align_up(cfg.max_bytes + cfg.max_samples * (SD_RING_ALIGN - 1)) + align_up(cfg.max_sample_bytes);
    size_t total = rec_bytes + r->phys;
    r->block = r->alloc.alloc(total, r->alloc.ctx);
    if (!r->block) {
        sd_status s = SD_FAIL(SD_ERR_OOM, "%s could not provide %zu bytes for a ring of %zu samples / %zu bytes",
                              r->alloc.name, total, cfg.max_samples, cfg.max_bytes);
        free(r);
        return s;
    }
    if (((uintptr_t)r->block & (SD_RING_ALIGN - 1)) != 0) {
        r->alloc.free(r->block, r->alloc.ctx);
        free(r);
        return SD_FAIL(SD_ERR_INVALID, "ring allocator returned memory not aligned to %d bytes", SD_RING_ALIGN);
    }
    r->recs = r->block;
    r->data = (uint8_t *)r->block + rec_bytes;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->room, &ca);
    pthread_cond_init(&r->avail, &ca);
    pthread_condattr_destroy(&ca);
    *out = r;
    return SD_OK;
}

void sd_ring_destroy(sd_ring *r) {
    if (!r) return;
    pthread_cond_destroy(&r->room);
    pthread_cond_destroy(&r->avail);
    pthread_mutex_destroy(&r->mu);
    r->alloc.free(r->block, r->alloc.ctx);
    free(r);
}

const sd_ring_config *sd_ring_get_config(const sd_ring *r) { return &r->cfg; }

void sd_ring_close(sd_ring *r) {
    pthread_mutex_lock(&r->mu);
    r->closed = true;
    pthread_cond_broadcast(&r->room);
    pthread_cond_broadcast(&r->avail);
    pthread_mutex_unlock(&r->mu);
}

void sd_ring_reopen(sd_ring *r) {
    pthread_mutex_lock(&r->mu);
    r->closed = false;
    pthread_mutex_unlock(&r->mu);
}

bool sd_ring_closed(sd_ring *r) {
    pthread_mutex_lock(&r->mu);
    bool c = r->closed;
    pthread_mutex_unlock(&r->mu);
    return c;
}

/* ---- the byte ring (under mu) ------------------------------------------------------------------ */
static size_t held(const sd_ring *r) { return (size_t)(r->tail - r->head); }

static bool fits_bounds(const sd_ring *r, size_t n) {
    return held(r) < r->cfg.max_samples && r->bytes + n <= r->cfg.max_bytes;
}

/* Finds a contiguous place for `need` (aligned) bytes; on success reserves it. */
static bool place(sd_ring *r, size_t need, size_t *off, size_t *span) {
    if (r->used + need > r->phys) return false;
    if (r->used == 0) r->rd = r->wr = 0; /* nothing held or reserved: start over at 0 */
    if (r->wr >= r->rd) {                /* held bytes run from rd to wr without wrapping */
        if (r->phys - r->wr >= need) {
            *off = r->wr;
            *span = need;
        } else if (r->rd >= need) {
            *off = 0;
            *span = (r->phys - r->wr) + need; /* the skipped tail belongs to this record */
        } else {
            return false;
        }
    } else { /* held bytes wrap: free bytes are [wr, rd) */
        if (r->rd - r->wr < need) return false;
        *off = r->wr;
        *span = need;
    }
    r->wr = *off + need;
    r->used += *span;
    return true;
}

/* Removes the oldest held sample (not claimed). */
static void remove_front(sd_ring *r) {
    ring_rec *rec = &r->recs[r->head % r->cfg.max_samples];
    r->used -= rec->span;
    r->rd = rec->off + align_up(rec->nbytes);
    r->bytes -= rec->nbytes;
    r->head++;
    if (r->used == 0) r->rd = r->wr = 0;
}

static void wake_producer(sd_ring *r) {
    if (r->waiting_room) pthread_cond_broadcast(&r->room);
}

/* ---- producer ---------------------------------------------------------------------------------- */
/* Publishes the sample whose bytes were written at [off, off + n) (under mu). */
static void commit(sd_ring *r, const sd_msg_meta *meta, size_t off, size_t n, size_t span) {
    ring_rec *rec = &r->recs[r->tail % r->cfg.max_samples];
    rec->meta = *meta;
    rec->off = off;
    rec->nbytes = n;
    rec->span = span;
    r->tail++;
    r->bytes += n;
    r->st.accepted++;
    r->st.bytes_accepted += n;
    if (held(r) > r->st.hw_samples) r->st.hw_samples = held(r);
    if (r->bytes > r->st.hw_bytes) r->st.hw_bytes = r->bytes;
    if (r->waiting_avail && held(r) >= r->avail_need) pthread_cond_broadcast(&r->avail);
}

static sd_drop_reason reject(sd_ring *r, sd_drop_reason why) {
    r->st.rejected++;
    r->st.dropped[why]++;
    return why;
}

void sd_ring_count_drop(sd_ring *r, sd_drop_reason why) {
    /* not a reason a message can be rejected for: count it somewhere rather than corrupt the sums */
    if ((int)why <= SD_DROP_NONE || why >= SD_DROP_COUNT || why == SD_DROP_EVICTED) why = SD_DROP_BAD_LENGTH;
    pthread_mutex_lock(&r->mu);
    r->st.received++;
    reject(r, why);
    pthread_mutex_unlock(&r->mu);
}

/* has_room's test, with the lock held */
static bool room_locked(sd_ring *r, size_t nbytes) {
    size_t need = align_up(nbytes);
    if (!(nbytes <= r->cfg.max_sample_bytes && fits_bounds(r, nbytes) && r->used + need <= r->phys)) return false;
    size_t rd = r->rd, wr = r->wr, used = r->used, off, span;
    bool ok = place(r, need, &off, &span); /* try the placement without keeping it */
    r->rd = rd;
    r->wr = wr;
    r->used = used;
    return ok;
}

bool sd_ring_wait_room(sd_ring *r, size_t nbytes, double timeout_s) {
    pthread_mutex_lock(&r->mu);
    const double t0 = mono_now(), deadline = t0 + (timeout_s > 0 ? timeout_s : 0);
    bool ok = room_locked(r, nbytes);
    while (!ok && !r->closed && timeout_s > 0) {
        r->waiting_room++;
        bool woke = wait_until(&r->room, &r->mu, deadline);
        r->waiting_room--;
        ok = room_locked(r, nbytes);
        if (!woke) break;
    }
    if (!ok) r->st.blocked_s += mono_now() - t0;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

bool sd_ring_has_room(sd_ring *r, size_t nbytes) {
    pthread_mutex_lock(&r->mu);
    bool ok = room_locked(r, nbytes);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

sd_drop_reason sd_ring_push(sd_ring *r, const sd_msg_view *v) {
    const size_t n = v->payload_len, need = align_up(n);
    size_t off = 0, span = 0;
    double deadline = -2; /* computed at the first wait */
    pthread_mutex_lock(&r->mu);
    r->st.received++;
    sd_drop_reason why = SD_DROP_NONE;
    if (n == 0 || n > r->cfg.max_sample_bytes) {
        why = reject(r, n == 0 ? SD_DROP_BAD_LENGTH : SD_DROP_OVERSIZED);
        goto out;
    }
    bool timed_out = false;
    for (;;) {
        if (r->closed) {
            why = reject(r, SD_DROP_CLOSED);
            goto out;
        }
        if (fits_bounds(r, n) && place(r, need, &off, &span)) break;
        if (r->cfg.policy == SD_RING_DROP_OLDEST) {
            if (held(r) == 0) { /* cannot happen: an empty ring admits any sample <= max_sample_bytes */
                why = reject(r, SD_DROP_RING_FULL);
                goto out;
            }
            if (r->claimed == 0) {
                remove_front(r);
                r->st.dropped[SD_DROP_EVICTED]++;
                continue;
            }
            /* the oldest samples are being copied out: wait for the consumer to let go of them */
            double t0 = mono_now();
            r->waiting_room++;
            pthread_cond_wait(&r->room, &r->mu);
            r->waiting_room--;
            r->st.blocked_s += mono_now() - t0;
            continue;
        }
        if (r->cfg.when_full == SD_RING_FULL_DROP_NEWEST) {
            why = reject(r, SD_DROP_RING_FULL);
            goto out;
        }
        if (timed_out || r->cfg.block_timeout_s == 0) {
            why = reject(r, SD_DROP_TIMEOUT);
            goto out;
        }
        double t0 = mono_now();
        if (deadline == -2) deadline = r->cfg.block_timeout_s < 0 ? -1 : t0 + r->cfg.block_timeout_s;
        r->waiting_room++;
        timed_out = !wait_until(&r->room, &r->mu, deadline); /* one more look at the top, then give up */
        r->waiting_room--;
        r->st.blocked_s += mono_now() - t0;
    }
    /* reserved [off, off + need): copy the bytes, then publish the sample */
    if (n > COPY_UNLOCKED_BYTES) {
        pthread_mutex_unlock(&r->mu);
        memcpy(r->data + off, v->payload, n);
        pthread_mutex_lock(&r->mu);
    } else {
        memcpy(r->data + off, v->payload, n);
    }
    commit(r, &v->meta, off, n, span);
out:
    pthread_mutex_unlock(&r->mu);
    return why;
}

bool sd_ring_try_push_fill(sd_ring *r, const sd_msg_meta *meta, size_t nbytes, sd_ring_fill_fn fill, void *ctx,
                           sd_drop_reason *result) {
    const size_t need = align_up(nbytes);
    size_t off, span;
    pthread_mutex_lock(&r->mu);
    size_t wr0 = r->wr; /* when nothing is held or reserved, rd = wr = 0 already */
    if (r->closed || nbytes == 0 || nbytes > r->cfg.max_sample_bytes || !fits_bounds(r, nbytes) ||
        !place(r, need, &off, &span)) {
        pthread_mutex_unlock(&r->mu);
        return false;
    }
    sd_drop_reason why;
    if (nbytes > COPY_UNLOCKED_BYTES) {
        pthread_mutex_unlock(&r->mu);
        why = fill(r->data + off, ctx);
        pthread_mutex_lock(&r->mu);
    } else {
        why = fill(r->data + off, ctx);
    }
    r->st.received++;
    if (why == SD_DROP_NONE) {
        commit(r, meta, off, nbytes, span);
    } else {
        /* give the reservation back: it is the newest allocation, so wr returns to where it was
         * (the consumer may have freed older samples meanwhile, which only moved rd) */
        r->used -= span;
        r->wr = wr0;
        if (r->used == 0) r->rd = r->wr = 0;
        if ((int)why < 0 || why >= SD_DROP_COUNT || why == SD_DROP_EVICTED) why = SD_DROP_BAD_LENGTH;
        reject(r, why);
    }
    pthread_mutex_unlock(&r->mu);
    *result = why;
    return true;
}

/* ---- consumer ---------------------------------------------------------------------------------- */
static int sample_channels(const sd_msg_meta *m) { return m->ndim >= 3 ? (int)m->dims[m->ndim - 3] : 1; }

/* Checks that the claimed records [head, head + k) can be written to out. */
static sd_status check_batch(const sd_ring *r, uint64_t head, size_t k, const sd_ring_batch *out) {
    for (size_t i = 0; i < k; i++) {
        const ring_rec *rec = &r->recs[(head + i) % r->cfg.max_samples];
        if (out->x) {
            size_t elems = rec->nbytes / sd_msg_dtype_size(rec->meta.dtype);
            if (elems != out->sample_elems)
                return SD_FAIL(SD_ERR_SHAPE,
                               "sample seq %llu has %zu elements (%s) but the batch holds %zu per sample; "
                               "set sample_elems to the stream's sample size",
                               (unsigned long long)rec->meta.seq, elems, sd_msg_dtype_name(rec->meta.dtype),
                               out->sample_elems);
            if (out->norm && rec->meta.dtype == SD_MSG_U8 && sample_channels(&rec->meta) > SD_AUGMENT_MAX_CHANNELS)
                return SD_FAIL(SD_ERR_SHAPE, "sample seq %llu has %d channels; normalisation handles at most %d",
                               (unsigned long long)rec->meta.seq, sample_channels(&rec->meta),
                               SD_AUGMENT_MAX_CHANNELS);
        }
        if (out->raw && rec->nbytes > out->raw_stride)
            return SD_FAIL(SD_ERR_SHAPE, "sample seq %llu has %zu bytes but raw_stride is %zu",
                           (unsigned long long)rec->meta.seq, rec->nbytes, out->raw_stride);
    }
    return SD_OK;
}

static sd_status check_out(const sd_ring_batch *out, const char *fn) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "%s needs a batch to copy into", fn);
    if (out->x && out->sample_elems == 0)
        return SD_FAIL(SD_ERR_INVALID, "%s: batch x is set but sample_elems is 0", fn);
    if (out->raw && out->raw_stride == 0) return SD_FAIL(SD_ERR_INVALID, "%s: batch raw is set but raw_stride is 0", fn);
    if (out->norm)
        for (int c = 0; c < SD_AUGMENT_MAX_CHANNELS; c++)
            if (!(out->norm->std[c] > 0.0f) || !isfinite(out->norm->std[c]) || !isfinite(out->norm->mean[c]))
                return SD_FAIL(SD_ERR_INVALID,
                               "%s: normalisation channel %d has mean %g, std %g; std must be positive and both "
                               "finite (unused channels too: set them to 0 and 1)",
                               fn, c, (double)out->norm->mean[c], (double)out->norm->std[c]);
    return SD_OK;
}

/* Normalisation: x = (v / 255 - mean) / std in float, the expression of stream/augment.c's table,
 * so the values are bit-identical to sd_augment_batch's (IEEE division and subtraction, nothing to
 * contract). Written out rather than looked up because it vectorises (a table gather was about 3x
 * slower), and each division done as a multiply by the rounded reciprocal with one FMA correction
 * (q = a*r, q += (a - q*b)*r): the correctly rounded quotient for almost every divisor, and the
 * vector divides were most of the time. "Almost" is checked, not assumed: per take, each channel's
 * 256 possible results are compared with the two divisions, and a channel where any differs keeps
 * the divisions (norm_plan). */
typedef struct norm_plan {
    float r255, rsd[SD_AUGMENT_MAX_CHANNELS];
    bool fast[SD_AUGMENT_MAX_CHANNELS];
} norm_plan;

static inline float div_rcp(float a, float b, float rb) {
    const float q = a * rb;
    return fmaf(fmaf(-q, b, a), rb, q);
}

static void plan_norm(const sd_augment *norm, norm_plan *pl) {
    pl->r255 = 1.0f / 255.0f;
    for (int ch = 0; ch < SD_AUGMENT_MAX_CHANNELS; ch++) {
        const float mean = norm->mean[ch], sd = norm->std[ch];
        pl->rsd[ch] = 1.0f / sd;
        bool ok = isfinite(pl->rsd[ch]) && pl->rsd[ch] != 0.0f;
        for (int v = 0; ok && v < 256; v++) {
            const float want = ((float)v / 255.0f - mean) / sd;
            const float got = div_rcp(div_rcp((float)v, 255.0f, pl->r255) - mean, sd, pl->rsd[ch]);
            ok = memcmp(&want, &got, sizeof want) == 0;
        }
        pl->fast[ch] = ok;
    }
}

static void u8_to_float(const uint8_t *src, float *x, size_t n, float mean, float sd, const norm_plan *pl, int ch) {
    if (pl->fast[ch]) {
        const float r255 = pl->r255, rsd = pl->rsd[ch];
#pragma omp simd
        for (size_t i = 0; i < n; i++) x[i] = div_rcp(div_rcp((float)src[i], 255.0f, r255) - mean, sd, rsd);
        return;
    }
#pragma omp simd
    for (size_t i = 0; i < n; i++) x[i] = ((float)src[i] / 255.0f - mean) / sd;
}

static void to_float(const ring_rec *rec, const uint8_t *src, const sd_augment *norm, const norm_plan *pl, float *x) {
    size_t elems = rec->nbytes / sd_msg_dtype_size(rec->meta.dtype);
    if (rec->meta.dtype == SD_MSG_F32) {
        memcpy(x, src, rec->nbytes);
        return;
    }
    if (!norm) {
#pragma omp simd
        for (size_t i = 0; i < elems; i++) x[i] = (float)src[i];
        return;
    }
    size_t c = (size_t)sample_channels(&rec->meta);
    size_t outer = rec->meta.ndim == 4 ? rec->meta.dims[0] : 1;
    size_t plane = elems / (c * outer);
    for (size_t o = 0; o < outer; o++)
        for (size_t ch = 0; ch < c; ch++)
            u8_to_float(src + (o * c + ch) * plane, x + (o * c + ch) * plane, plane, norm->mean[ch], norm->std[ch], pl,
                        (int)ch);
}

/* Copies claimed records [head, head + k) out (no lock held: they are ours). */
static void copy_batch(sd_ring *r, uint64_t head, size_t k, const sd_ring_batch *out) {
    norm_plan pl;
    if (out->x && out->norm && k > 0) plan_norm(out->norm, &pl);
    for (size_t i = 0; i < k; i++) {
        const ring_rec *rec = &r->recs[(head + i) % r->cfg.max_samples];
        const uint8_t *src = r->data + rec->off;
        if (out->x) to_float(rec, src, out->norm, &pl, out->x + i * out->sample_elems);
        if (out->raw) memcpy((uint8_t *)out->raw + i * out->raw_stride, src, rec->nbytes);
        if (out->labels) out->labels[i] = rec->meta.label;
        if (out->seqs) out->seqs[i] = rec->meta.seq;
    }
}

/* Consumes the first `consumed` claimed samples and ends the claim (under mu). */
static void release_locked(sd_ring *r, size_t consumed) {
    for (size_t i = 0; i < consumed; i++) {
        r->st.bytes_consumed += r->recs[r->head % r->cfg.max_samples].nbytes;
        remove_front(r);
    }
    r->st.consumed += consumed;
    r->claimed = 0;
    wake_producer(r);
}

/* Claims k samples (under mu, k <= held), copies them out unlocked, consumes them. */
static sd_status take_claimed(sd_ring *r, size_t k, const sd_ring_batch *out, size_t *taken) {
    uint64_t head = r->head;
    sd_status s = check_batch(r, head, k, out);
    if (s != SD_OK || k == 0) {
        pthread_mutex_unlock(&r->mu);
        return s;
    }
    r->claimed = k;
    pthread_mutex_unlock(&r->mu);
    copy_batch(r, head, k, out);
    pthread_mutex_lock(&r->mu);
    release_locked(r, k);
    pthread_mutex_unlock(&r->mu);
    *taken = k;
    return SD_OK;
}

sd_status sd_ring_take_upto(sd_ring *r, size_t max_n, const sd_ring_batch *out, size_t *taken) {
    if (!r || !taken) return SD_FAIL(SD_ERR_INVALID, "sd_ring_take_upto needs a ring and a count output");
    *taken = 0;
    TRY(check_out(out, "sd_ring_take_upto"));
    pthread_mutex_lock(&r->mu);
    if (r->claimed) {
        pthread_mutex_unlock(&r->mu);
        return SD_FAIL(SD_ERR_INVALID, "sd_ring_take_upto: %zu samples are acquired; release them first", r->claimed);
    }
    size_t k = held(r) < max_n ? held(r) : max_n;
    return take_claimed(r, k, out, taken);
}

sd_status sd_ring_take_exactly(sd_ring *r, size_t n, double timeout_s, const sd_ring_batch *out, size_t *taken) {
    if (!r || !taken) return SD_FAIL(SD_ERR_INVALID, "sd_ring_take_exactly needs a ring and a count output");
    *taken = 0;
    TRY(check_out(out, "sd_ring_take_exactly"));
    if (n > r->cfg.max_samples)
        return SD_FAIL(SD_ERR_INVALID,
                       "sd_ring_take_exactly: a batch of %zu can never be met by a ring of %zu samples; raise "
                       "max_samples or lower the batch",
                       n, r->cfg.max_samples);
    if (isnan(timeout_s)) return SD_FAIL(SD_ERR_INVALID, "sd_ring_take_exactly: timeout is NaN");
    pthread_mutex_lock(&r->mu);
    if (r->claimed) {
        pthread_mutex_unlock(&r->mu);
        return SD_FAIL(SD_ERR_INVALID, "sd_ring_take_exactly: samples are acquired; release them first");
    }
    double deadline = timeout_s < 0 ? -1 : mono_now() + timeout_s;
    r->avail_need = n; /* the producer wakes us when the batch is complete, not per sample */
    while (held(r) < n && !r->closed) {
        if (timeout_s == 0) break;
        r->waiting_avail++;
        bool woken = wait_until(&r->avail, &r->mu, deadline);
        r->waiting_avail--;
        if (!woken) break;
    }
    r->avail_need = 0;
    if (held(r) < n) {
        pthread_mutex_unlock(&r->mu);
        return SD_OK; /* timed out or closed: nothing taken */
    }
    return take_claimed(r, n, out, taken);
}

sd_status sd_ring_acquire(sd_ring *r, size_t max_n, sd_ring_sample *views, size_t *n) {
    if (!r || !n || (max_n && !views))
        return SD_FAIL(SD_ERR_INVALID, "sd_ring_acquire needs a ring, room for the views and a count output");
    *n = 0;
    pthread_mutex_lock(&r->mu);
    if (r->claimed) {
        size_t c = r->claimed;
        pthread_mutex_unlock(&r->mu);
        return SD_FAIL(SD_ERR_INVALID, "sd_ring_acquire: %zu samples are already acquired; release them first", c);
    }
    size_t k = held(r) < max_n ? held(r) : max_n;
    for (size_t i = 0; i < k; i++) {
        const ring_rec *rec = &r->recs[(r->head + i) % r->cfg.max_samples];
        views[i].meta = rec->meta;
        views[i].data = r->data + rec->off;
        views[i].nbytes = rec->nbytes;
    }
    r->claimed = k;
    pthread_mutex_unlock(&r->mu);
    *n = k;
    return SD_OK;
}

sd_status sd_ring_release(sd_ring *r, size_t consumed) {
    if (!r) return SD_FAIL(SD_ERR_INVALID, "sd_ring_release needs a ring");
    pthread_mutex_lock(&r->mu);
    if (consumed > r->claimed) {
        size_t c = r->claimed;
        pthread_mutex_unlock(&r->mu);
        return SD_FAIL(SD_ERR_INVALID, "sd_ring_release of %zu samples but only %zu are acquired", consumed, c);
    }
    release_locked(r, consumed);
    pthread_mutex_unlock(&r->mu);
    return SD_OK;
}

size_t sd_ring_truncate(sd_ring *r) {
    pthread_mutex_lock(&r->mu);
    size_t k = r->claimed ? 0 : held(r);
    for (size_t i = 0; i < k; i++) remove_front(r);
    r->st.truncated += k;
    if (k) wake_producer(r);
    pthread_mutex_unlock(&r->mu);
    return k;
}

size_t sd_ring_end_step(sd_ring *r) { return r->cfg.policy == SD_RING_TRUNCATE ? sd_ring_truncate(r) : 0; }

/* ---- state ------------------------------------------------------------------------------------- */
void sd_ring_get_stats(sd_ring *r, sd_ring_stats *out) {
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    out->samples = held(r);
    out->bytes = r->bytes;
    pthread_mutex_unlock(&r->mu);
}

size_t sd_ring_size(sd_ring *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = held(r);
    pthread_mutex_unlock(&r->mu);
    return n;
}

bool sd_ring_stats_consistent(const sd_ring_stats *s, char *why, size_t why_cap) {
    uint64_t rejected = 0;
    for (int i = 0; i < SD_DROP_COUNT; i++)
        if (i != SD_DROP_EVICTED) rejected += s->dropped[i];
    char tmp[8];
    if (!why) {
        why = tmp;
        why_cap = sizeof tmp;
    }
    if (s->dropped[SD_DROP_NONE] != 0) {
        snprintf(why, why_cap, "dropped[accepted] = %llu, must be 0", (unsigned long long)s->dropped[SD_DROP_NONE]);
        return false;
    }
    if (rejected != s->rejected) {
        snprintf(why, why_cap, "rejected %llu != sum of arrival drops %llu", (unsigned long long)s->rejected,
                 (unsigned long long)rejected);
        return false;
    }
    if (s->received != s->accepted + s->rejected) {
        snprintf(why, why_cap, "received %llu != accepted %llu + rejected %llu", (unsigned long long)s->received,
                 (unsigned long long)s->accepted, (unsigned long long)s->rejected);
        return false;
    }
    uint64_t out = s->consumed + s->truncated + s->dropped[SD_DROP_EVICTED] + s->samples;
    if (s->accepted != out) {
        snprintf(why, why_cap, "accepted %llu != consumed %llu + truncated %llu + evicted %llu + held %zu",
                 (unsigned long long)s->accepted, (unsigned long long)s->consumed,
                 (unsigned long long)s->truncated, (unsigned long long)s->dropped[SD_DROP_EVICTED], s->samples);
        return false;
    }
    if (s->hw_samples < s->samples || s->hw_bytes < s->bytes) {
        snprintf(why, why_cap, "high-water marks below the current occupancy");
        return false;
    }
    return true;
}

/* ---- checkpoints ------------------------------------------------------------------------------- */
sd_status sd_ring_restore(sd_ring *r, const sd_ring_sample *samples, size_t n, const sd_ring_stats *stats) {
    if (!r || !stats || (n && !samples)) return SD_FAIL(SD_ERR_INVALID, "sd_ring_restore needs a ring, samples and counters");
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!samples[i].data || samples[i].nbytes == 0 || samples[i].nbytes > r->cfg.max_sample_bytes)
            return SD_FAIL(SD_ERR_INVALID, "ring restore: sample %zu has %zu bytes; this ring stores 1..%zu per sample "
                           "(the checkpoint belongs to another configuration)", i, samples[i].nbytes,
                           r->cfg.max_sample_bytes);
        bytes += samples[i].nbytes;
    }
    if (n > r->cfg.max_samples || bytes > r->cfg.max_bytes)
        return SD_FAIL(SD_ERR_INVALID, "ring restore: %zu samples / %zu bytes do not fit a ring of %zu samples / %zu "
                       "bytes (the checkpoint belongs to another buffer.capacity)", n, bytes, r->cfg.max_samples,
                       r->cfg.max_bytes);
    sd_ring_stats want = *stats;
    want.samples = n;
    want.bytes = bytes;
    char why[256];
    if (stats->samples != n || stats->bytes != bytes || !sd_ring_stats_consistent(&want, why, sizeof why))
        return SD_FAIL(SD_ERR_INVALID, "ring restore: the saved counters do not match the %zu saved samples (%s); the "
                       "checkpoint is damaged", n, stats->samples != n || stats->bytes != bytes ? "held count" : why);
    pthread_mutex_lock(&r->mu);
    if (held(r) != 0 || r->claimed) {
        size_t h = held(r);
        pthread_mutex_unlock(&r->mu);
        return SD_FAIL(SD_ERR_INVALID, "ring restore: the ring holds %zu samples; restore into an empty ring", h);
    }
    r->rd = r->wr = r->used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t off = 0, span = 0;
        /* cannot fail: an empty ring of this configuration admits what fitted the bounds above */
        if (!place(r, align_up(samples[i].nbytes), &off, &span)) {
            while (held(r)) remove_front(r);
            pthread_mutex_unlock(&r->mu);
            return SD_FAIL(SD_ERR_INVALID, "ring restore: no room for sample %zu", i);
        }
        memcpy(r->data + off, samples[i].data, samples[i].nbytes);
        commit(r, &samples[i].meta, off, samples[i].nbytes, span);
    }
    r->st = want;
    pthread_mutex_unlock(&r->mu);
    return SD_OK;
}
