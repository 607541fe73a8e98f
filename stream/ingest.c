/* ingest.c: delivering messages into a ring (the sink) and the ingest thread (ingest.h). */
#include "stream/ingest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "stream/crc32c.h"

/* ---- the sink ---------------------------------------------------------------------------------- */
sd_status sd_sink_init(sd_sink *s, sd_ring *ring, const sd_msg_expect *expect) {
    if (!s || !ring) return SD_FAIL(SD_ERR_INVALID, "sd_sink_init needs a sink and a ring");
    TRY(sd_msg_expect_check(expect));
    memset(s, 0, sizeof *s);
    s->ring = ring;
    if (expect) s->expect = *expect;
    return SD_OK;
}

void sd_sink_resume(sd_sink *s, uint64_t last_seq) {
    s->seq.any = true;
    s->seq.last = last_seq;
}

/* The rest of a message's checks once its header passed, in sd_msg_decode's order: the checksum,
 * the experiment's checks, then the sequence number. */
typedef struct fill_ctx {
    const sd_msg_view *v;
    const sd_msg_check *chk;
    sd_msg_seq *seq;
} fill_ctx;

static sd_drop_reason finish_checks(const fill_ctx *f, uint32_t crc) {
    if (crc != f->chk->want) return SD_DROP_BAD_CHECKSUM;
    if (f->chk->deferred != SD_DROP_NONE) return f->chk->deferred;
    return sd_msg_seq_check(f->seq, f->v->meta.version, f->v->meta.seq);
}

/* Copies the payload into the ring and checks its CRC in the same pass. */
static sd_drop_reason fill_verified(void *dst, void *ctx) {
    const fill_ctx *f = ctx;
    return finish_checks(f, sd_crc32c_copy(f->chk->crc, dst, f->v->payload, f->v->payload_len));
}

sd_drop_reason sd_sink_deliver(sd_sink *s, const void *msg, size_t len) {
    sd_msg_view v;
    sd_msg_check chk;
    sd_drop_reason why = sd_msg_decode_header(msg, len, &s->expect, &v, &chk);
    if (why != SD_DROP_NONE) {
        sd_ring_count_drop(s->ring, why);
        return why;
    }
    fill_ctx f = {&v, &chk, &s->seq};
    /* common case: room now, so the payload is read once, verified while it is copied in */
    if (sd_ring_try_push_fill(s->ring, &v.meta, v.payload_len, fill_verified, &f, &why)) return why;
    /* full (or oversized): verify first, so a bad message never waits, evicts or counts as a policy drop */
    why = finish_checks(&f, sd_crc32c(chk.crc, v.payload, v.payload_len));
    if (why != SD_DROP_NONE) {
        sd_ring_count_drop(s->ring, why);
        return why;
    }
    return sd_ring_push(s->ring, &v);
}

/* ---- the thread -------------------------------------------------------------------------------- */
struct sd_ingest {
    sd_ingest_config cfg;
    sd_sink sink;
    pthread_t thread;
    atomic_bool stop;
    atomic_bool running, ended, failed;
    bool halted;        /* the thread was joined (sd_ingest_halt) */
    atomic_uint_least64_t messages, stored, idle_polls, seq_gaps, seq_refused, seq_restarts, seq_resyncs;
    sd_status err;      /* the thread's failure, read after join */
    char errmsg[1024];
};

static const char *source_name(const sd_source *s) {
    const char *n = s->ops->name ? s->ops->name(s->ctx) : NULL;
    return n ? n : "unnamed source";
}

static void *ingest_main(void *arg) {
    sd_ingest *g = arg;
    const sd_source *src = &g->cfg.source;
    const size_t sample_bytes = sd_ring_get_config(g->cfg.ring)->max_sample_bytes;
    while (!atomic_load_explicit(&g->stop, memory_order_acquire)) {
        if (g->cfg.hold_when_full && !sd_ring_wait_room(g->cfg.ring, sample_bytes, g->cfg.poll_s)) {
            if (sd_ring_closed(g->cfg.ring)) sd_clock_sleep_until(sd_clock_now() + g->cfg.poll_s);
            continue; /* full: the stream waits (the stop flag is looked at every poll) */
        }
        sd_source_event ev = SD_SOURCE_IDLE;
        const void *msg = NULL;
        size_t len = 0;
        sd_status s = src->ops->next(src->ctx, g->cfg.poll_s, &ev, &msg, &len);
        if (s != SD_OK) {
            g->err = s;
            snprintf(g->errmsg, sizeof g->errmsg, "%s", sd_last_error());
            atomic_store(&g->failed, true);
            sd_ring_close(g->cfg.ring); /* as at the end: a trainer waiting for a batch stops waiting */
            break;
        }
        if (ev == SD_SOURCE_END) {
            atomic_store(&g->ended, true);
            sd_ring_close(g->cfg.ring); /* a trainer waiting for a full batch stops waiting */
            break;
        }
        if (ev == SD_SOURCE_IDLE) {
            atomic_fetch_add_explicit(&g->idle_polls, 1, memory_order_relaxed);
            continue;
        }
        atomic_fetch_add_explicit(&g->messages, 1, memory_order_relaxed);
        if (sd_sink_deliver(&g->sink, msg, len) == SD_DROP_NONE)
            atomic_fetch_add_explicit(&g->stored, 1, memory_order_relaxed);
        atomic_store_explicit(&g->seq_gaps, g->sink.seq.gaps, memory_order_relaxed);
        atomic_store_explicit(&g->seq_refused, g->sink.seq.refused, memory_order_relaxed);
        atomic_store_explicit(&g->seq_restarts, g->sink.seq.restarts, memory_order_relaxed);
        atomic_store_explicit(&g->seq_resyncs, g->sink.seq.resyncs, memory_order_relaxed);
    }
    atomic_store(&g->running, false);
    return NULL;
}

sd_status sd_ingest_start(const sd_ingest_config *c, sd_ingest **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "sd_ingest_start needs a configuration and an output");
    *out = NULL;
    if (!c->ring) return SD_FAIL(SD_ERR_INVALID, "sd_ingest_start needs a ring to deliver into");
    const sd_source_ops *ops = c->source.ops;
    if (!ops || !ops->start || !ops->next || !ops->stop)
        return SD_FAIL(SD_ERR_INVALID, "sd_ingest_start: the source table needs start, next and stop");
    if (!(c->poll_s >= 0) || c->poll_s > 10)
        return SD_FAIL(SD_ERR_INVALID, "sd_ingest_start: poll_s %g must lie in [0, 10] seconds (0: 0.02)", c->poll_s);
    sd_ingest *g = calloc(1, sizeof *g);
    if (!g) return SD_FAIL(SD_ERR_OOM, "out of memory for an ingest thread");
    g->cfg = *c;
    if (g->cfg.poll_s == 0) g->cfg.poll_s = 0.02;
    sd_status s = sd_sink_init(&g->sink, c->ring, &c->expect);
    if (s != SD_OK) {
        free(g);
        return s;
    }
    if (c->resume) sd_sink_resume(&g->sink, c->resume_after_seq);
    if (c->counters) {
        g->sink.seq.gaps = c->counters->gaps;
        g->sink.seq.restarts = c->counters->restarts;
        g->sink.seq.resyncs = c->counters->resyncs;
    }
    g->cfg.counters = NULL; /* (the caller's) */
    sd_ring_reopen(c->ring);
    s = ops->start(c->source.ctx);
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        free(g);
        return s;
    }
    atomic_store(&g->running, true);
    int rc = pthread_create(&g->thread, NULL, ingest_main, g);
    if (rc != 0) {
        ops->stop(c->source.ctx);
        s = SD_FAIL(SD_ERR_RUNTIME, "could not start the ingest thread for %s (pthread_create error %d)",
                    source_name(&c->source), rc);
        free(g);
        return s;
    }
    *out = g;
    return SD_OK;
}

sd_status sd_ingest_halt(sd_ingest *g) {
    if (!g) return SD_OK;
    if (!g->halted) {
        const sd_source *src = &g->cfg.source;
        atomic_store_explicit(&g->stop, true, memory_order_release);
        if (src->ops->interrupt) src->ops->interrupt(src->ctx);
        sd_ring_close(g->cfg.ring); /* wakes a push waiting for room */
        pthread_join(g->thread, NULL);
        g->halted = true;
    }
    if (g->err != SD_OK)
        return SD_FAIL(g->err, "ingest from %s failed: %s", source_name(&g->cfg.source), g->errmsg);
    return SD_OK;
}

void sd_ingest_sink_seq(sd_ingest *g, sd_msg_seq *out) { *out = g->sink.seq; }

const char *sd_ingest_error(sd_ingest *g) { return g->err != SD_OK ? g->errmsg : ""; }

sd_status sd_ingest_stop(sd_ingest *g) {
    if (!g) return SD_OK;
    const sd_source *src = &g->cfg.source;
    (void)sd_ingest_halt(g); /* its failure is reported below */
    sd_status stop = src->ops->stop(src->ctx);
    sd_status s = SD_OK;
    if (g->err != SD_OK)
        s = SD_FAIL(g->err, "ingest from %s failed: %s", source_name(src), g->errmsg);
    else if (stop != SD_OK)
        s = stop;
    free(g);
    return s;
}

void sd_ingest_get_stats(sd_ingest *g, sd_ingest_stats *out) {
    out->messages = atomic_load(&g->messages);
    out->stored = atomic_load(&g->stored);
    out->idle_polls = atomic_load(&g->idle_polls);
    out->seq_gaps = atomic_load(&g->seq_gaps);
    out->seq_refused = atomic_load(&g->seq_refused);
    out->seq_restarts = atomic_load(&g->seq_restarts);
    out->seq_resyncs = atomic_load(&g->seq_resyncs);
    out->ended = atomic_load(&g->ended);
    out->failed = atomic_load(&g->failed);
    out->running = atomic_load(&g->running);
}
