/* kafka_source.c: the Kafka source (stream/kafka.h): the consumer's librdkafka callbacks and
 * rebalances, start (reach the brokers, join the group), next (backpressure, periodic commits,
 * re-assignment), stop (final commit, leave the group), the sd_source table, and create, destroy,
 * ack, checkpointed and commit. The offset bookkeeping is in kafka_offsets.c. */
#include "stream/kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/kafka_internal.h"

/* ---- librdkafka callbacks ---------------------------------------------------------------------- */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    sd_kafka *k = rd_kafka_opaque(rk);
    if (!k) return;
    if (level >= 7) { /* librdkafka's debug contexts, only produced when asked for (debug=...): all of them */
        fprintf(stderr, "scadles: %s: librdkafka %s: %s\n", k->name, fac, buf);
        return;
    }
    if (level > 4) return; /* syslog levels: keep warnings and worse */
    sd_kafka_note(&k->ll, k->conn.quiet, true, k->name, "librdkafka %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    sd_kafka *k = opaque;
    pthread_mutex_lock(&k->mu);
    k->st.errors++;
    pthread_mutex_unlock(&k->mu);
    sd_kafka_note(&k->ll, k->conn.quiet, true, k->name, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    (void)rk;
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *o, void *opaque) {
    (void)rk;
    sd_kafka_offsets_committed(opaque, err, o);
}

static void pause_list(sd_kafka *k, const rd_kafka_topic_partition_list_t *l, bool pause) {
    if (!l || !l->cnt) return;
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(l);
    if (pause)
        rd_kafka_pause_partitions(k->rk, c);
    else
        rd_kafka_resume_partitions(k->rk, c);
    rd_kafka_topic_partition_list_destroy(c);
}

static void rebalance(sd_kafka *k, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_t *rk = k->rk;
    bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        pthread_mutex_lock(&k->mu);
        for (int i = 0; i < parts->cnt; i++) {
            part *p = sd_kafka_part_get(k, parts->elems[i].partition);
            if (p) p->assigned = true;
        }
        k->st.assigns++;
        bool paused = k->paused;
        pthread_mutex_unlock(&k->mu);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(rk, parts);
        }
        if (paused) pause_list(k, parts, true);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* commit what is done before giving the partitions up; entries stay, so that records
         * fetched again (and dropped as duplicates) never overtake their stored originals */
        pthread_mutex_lock(&k->mu);
        sd_kafka_advance(k);
        sd_kafka_mark_unconfirmed(k);
        rd_kafka_topic_partition_list_t *l = sd_kafka_commit_list(k);
        pthread_mutex_unlock(&k->mu);
        if (l) {
            if (sd_kafka_commit_sync(k, l, 5.0) != SD_OK) {
                sd_kafka_note(&k->ll, k->conn.quiet, true, k->name, "%s", sd_last_error_brief());
                pthread_mutex_lock(&k->mu);
                sd_kafka_mark_dirty_again(k, l);
                pthread_mutex_unlock(&k->mu);
            }
            rd_kafka_topic_partition_list_destroy(l);
        }
        pthread_mutex_lock(&k->mu);
        for (int i = 0; i < parts->cnt; i++) {
            part *p = sd_kafka_part_get(k, parts->elems[i].partition);
            if (p) p->assigned = false;
        }
        k->st.revokes++;
        pthread_mutex_unlock(&k->mu);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
            if (e) rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(rk, NULL);
        }
    } else {
        sd_kafka_note(&k->ll, k->conn.quiet, true, k->name, "rebalance failed: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque) {
    (void)rk;
    rebalance(opaque, err, parts);
}

/* ---- the source table ---------------------------------------------------------------------- */
/* Before the user's pairs: a new group starts at the beginning of the topic (samples published
 * before the trainer started are not skipped); end-of-partition events are not wanted. */
static const char *const consumer_defaults[] = {"auto.offset.reset=earliest", "enable.partition.eof=false"};

static const char *k_name(void *ctx) { return ((sd_kafka *)ctx)->name; }

static sd_status k_start(void *ctx) {
    sd_kafka *k = ctx;
    if (k->rk) return SD_FAIL(SD_ERR_INVALID, "%s: started twice", k->name);
    rd_kafka_conf_t *conf = NULL;
    TRY(sd_kafka_conf_build(&k->conn, k, consumer_defaults, sizeof consumer_defaults / sizeof *consumer_defaults, &conf));
    sd_status s = sd_kafka_conf_set(conf, "group.id", k->group);
    if (s == SD_OK) s = sd_kafka_conf_set(conf, "enable.auto.commit", "false");
    if (s == SD_OK) s = sd_kafka_conf_set(conf, "enable.auto.offset.store", "false");
    if (s != SD_OK) {
        rd_kafka_conf_destroy(conf);
        return s;
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    if (!k->by_partition) rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return SD_FAIL(SD_ERR_RUNTIME, "%s: could not create a Kafka consumer: %s", k->name, err);
    }
    k->rk = rk;

    /* reachable brokers, and the topic (partition) exists */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, k->topic, NULL);
    bool missing = false;
    int nparts = 0;
    sd_loglimit_hold(&k->ll, true);
    rd_kafka_resp_err_t me = sd_kafka_wait_metadata(rk, rkt, k->by_partition ? k->partition : -1, k->conn.connect_timeout_s,
                                           true, &missing, &nparts);
    sd_loglimit_hold(&k->ll, false);
    if (rkt) rd_kafka_topic_destroy(rkt);
    if (me && !(missing && k->allow_missing_topic)) {
        char why[512];
        sd_loglimit_last(&k->ll, why, sizeof why, "no answer");
        if (missing && k->by_partition && nparts > 0)
            s = SD_FAIL(SD_ERR_IO,
                        "%s: topic %s on %s has %d partitions, not partition %d: create it with more partitions or pick "
                        "one below %d",
                        k->name, k->topic, sd_kafka_conn_where(&k->conn), nparts, (int)k->partition, nparts);
        else if (missing)
            s = SD_FAIL(SD_ERR_IO,
                        "%s: topic %s does not exist on %s (waited %.1f s): create it (kafka-topics.sh --create --topic "
                        "%s --partitions 1), start scadles-publish first, or check the topic prefix",
                        k->name, k->topic, sd_kafka_conn_where(&k->conn), k->conn.connect_timeout_s, k->topic);
        else
            s = SD_FAIL(SD_ERR_IO,
                        "%s: Kafka brokers at %s unreachable after %.1f s (%s; last: %s): start the brokers or fix the "
                        "address (--bootstrap host:port), and check the security settings (security.protocol, ssl.*, "
                        "sasl.*)",
                        k->name, sd_kafka_conn_where(&k->conn), k->conn.connect_timeout_s, rd_kafka_err2str(me), why);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        k->rk = NULL;
        return s;
    }

    rd_kafka_poll_set_consumer(rk);
    pthread_mutex_lock(&k->mu);
    k->qhead = k->qn = 0;
    k->has_infl = false;
    sd_ring_get_stats(k->ring, &k->last);
    k->disposed_base = k->last.consumed + k->last.truncated + k->last.dropped[SD_DROP_EVICTED] + k->last.samples;
    k->disposed = k->stored_ord = 0;
    k->any_ack = false;
    k->acked_seq = 0;
    k->any_ckpt = false;
    k->ckpt_seq = 0;
    k->nparts = 0;
    k->paused = false;
    k->lost_track = false;
    k->reassign = false;
    k->last_commit_t = sd_clock_now();
    memset(&k->st, 0, sizeof k->st);
    k->st.started = true;
    pthread_mutex_unlock(&k->mu);

    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t e;
    if (k->by_partition) {
        rd_kafka_topic_partition_list_add(l, k->topic, k->partition)->offset = RD_KAFKA_OFFSET_STORED;
        pthread_mutex_lock(&k->mu);
        part *p = sd_kafka_part_get(k, k->partition);
        if (p) p->assigned = true;
        k->st.assigns++;
        pthread_mutex_unlock(&k->mu);
        e = rd_kafka_assign(rk, l);
    } else {
        rd_kafka_topic_partition_list_add(l, k->topic, RD_KAFKA_PARTITION_UA);
        e = rd_kafka_subscribe(rk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        s = SD_FAIL(SD_ERR_IO, "%s: could not %s topic %s: %s", k->name, k->by_partition ? "assign" : "subscribe to",
                    k->topic, rd_kafka_err2str(e));
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        k->rk = NULL;
        return s;
    }
    return SD_OK;
}

/* Pauses or resumes fetching on the ring's occupancy (and the pending bound). Under mu. */
static void backpressure(sd_kafka *k) {
    const sd_ring_config *rc = sd_ring_get_config(k->ring);
    size_t maxb = rc->max_bytes ? rc->max_bytes : rc->max_samples * rc->max_sample_bytes;
    double occ = (double)k->last.samples / (double)rc->max_samples;
    double ob = maxb ? (double)k->last.bytes / (double)maxb : 0;
    if (ob > occ) occ = ob;
    size_t pending = k->qn;
    if (!k->paused && (occ >= k->pause_high || pending >= k->max_pending)) {
        rd_kafka_topic_partition_list_t *a = NULL;
        if (!rd_kafka_assignment(k->rk, &a) && a) {
            pause_list(k, a, true);
            rd_kafka_topic_partition_list_destroy(a);
        }
        k->paused = true;
        k->pause_t0 = sd_clock_now();
        k->st.pauses++;
        if (pending >= k->max_pending)
            sd_kafka_note(&k->ll, k->conn.quiet, false, k->name,
                 "%zu records wait to be committed: paused fetching (acknowledge with sd_kafka_ack, or use the "
                 "consumed commit mode)",
                 pending);
    } else if (k->paused && occ <= k->pause_low && pending < k->max_pending / 2 + 1) {
        rd_kafka_topic_partition_list_t *a = NULL;
        if (!rd_kafka_assignment(k->rk, &a) && a) {
            pause_list(k, a, false);
            rd_kafka_topic_partition_list_destroy(a);
        }
        k->paused = false;
        k->st.paused_s += sd_clock_now() - k->pause_t0;
        k->st.resumes++;
    }
    k->st.paused = k->paused;
}

/* librdkafka 2.0 leaves a partition whose committed offset it could not fetch (OffsetFetch answered
 * with a partition error, e.g. COORDINATOR_NOT_AVAILABLE) assigned but never fetched, until the
 * application assigns it again. So: assign the same partitions again, from the committed offset
 * (the fetch is retried); records fetched twice are dropped by the sink as duplicates and stay
 * behind their originals in the commit rule. Ingest thread, not under mu. */
static void assign_again(sd_kafka *k) {
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(k->rk, &a) || !a) return;
    if (a->cnt > 0) {
        for (int i = 0; i < a->cnt; i++) a->elems[i].offset = RD_KAFKA_OFFSET_STORED;
        bool coop = !k->by_partition && !strcmp(rd_kafka_rebalance_protocol(k->rk), "COOPERATIVE");
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(k->rk, a);
            if (e) rd_kafka_error_destroy(e);
            e = rd_kafka_incremental_assign(k->rk, a);
            if (e) rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(k->rk, a);
        }
        pthread_mutex_lock(&k->mu);
        bool paused = k->paused;
        k->st.reassigns++;
        pthread_mutex_unlock(&k->mu);
        if (paused) pause_list(k, a, true);
        sd_kafka_note(&k->ll, k->conn.quiet, false, k->name, "assigned %d partition%s again to retry fetching the committed offset",
             a->cnt, a->cnt == 1 ? "" : "s");
    }
    rd_kafka_topic_partition_list_destroy(a);
}

static uint64_t header_seq(const void *msg, size_t len) {
    if (!msg || len < 40) return 0;
    const uint8_t *b = (const uint8_t *)msg + 32;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static sd_status k_next(void *ctx, double timeout_s, sd_source_event *ev, const void **msg, size_t *len) {
    sd_kafka *k = ctx;
    *ev = SD_SOURCE_IDLE;
    if (!k->rk) return SD_FAIL(SD_ERR_INVALID, "%s: next before start", k->name);
    if (k->cur) {
        rd_kafka_message_destroy(k->cur);
        k->cur = NULL;
    }
    pthread_mutex_lock(&k->mu);
    sd_kafka_learn(k);
    sd_kafka_advance(k);
    backpressure(k);
    rd_kafka_topic_partition_list_t *l = NULL;
    double now = sd_clock_now();
    if (now - k->last_commit_t >= k->commit_interval_s) {
        l = sd_kafka_commit_list(k);
        k->last_commit_t = now;
    }
    pthread_mutex_unlock(&k->mu);
    if (l) {
        rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, l, 1);
        if (e) {
            pthread_mutex_lock(&k->mu);
            sd_kafka_mark_dirty_again(k, l);
            k->st.commit_errors++;
            pthread_mutex_unlock(&k->mu);
        }
        rd_kafka_topic_partition_list_destroy(l);
    }

    if (k->reassign && sd_clock_now() >= k->reassign_at) {
        k->reassign = false;
        assign_again(k);
    }

    rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, sd_kafka_ms_of(timeout_s));
    if (!m) return SD_OK;
    if (m->err) {
        rd_kafka_resp_err_t err = m->err;
        char what[512];
        snprintf(what, sizeof what, "%s", rd_kafka_message_errstr(m));
        /* a partition error without an offset on our topic: its committed offset could not be fetched */
        bool offset_fetch = m->rkt && m->offset == RD_KAFKA_OFFSET_INVALID && !strcmp(rd_kafka_topic_name(m->rkt), k->topic);
        rd_kafka_message_destroy(m);
        if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return SD_OK;
        if (offset_fetch && !k->reassign) {
            k->reassign = true;
            k->reassign_at = sd_clock_now() + 0.2;
        }
        char fatal[512];
        if (rd_kafka_fatal_error(k->rk, fatal, sizeof fatal))
            return SD_FAIL(SD_ERR_IO, "%s: fatal Kafka consumer error from %s: %s", k->name, sd_kafka_conn_where(&k->conn), fatal);
        pthread_mutex_lock(&k->mu);
        if (err == RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED)
            k->st.max_poll_exceeded++;
        else
            k->st.errors++;
        pthread_mutex_unlock(&k->mu);
        bool missing = err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        sd_kafka_note(&k->ll, k->conn.quiet || (missing && k->allow_missing_topic), true, k->name, "consumer: %s: %s",
             rd_kafka_err2name(err), what);
        return SD_OK;
    }
    /* what became of it is learned (and counted) at the next call */
    k->infl = (entry){.part = m->partition, .state = E_INFLIGHT, .offset = m->offset, .seq = header_seq(m->payload, m->len)};
    k->infl_len = m->len;
    k->has_infl = true;
    static const uint8_t empty[1] = {0};
    k->cur = m;
    *msg = m->payload ? m->payload : empty;
    *len = m->len;
    *ev = SD_SOURCE_MESSAGE;
    return SD_OK;
}

static sd_status k_stop(void *ctx) {
    sd_kafka *k = ctx;
    if (!k->rk) return SD_OK;
    if (k->cur) {
        rd_kafka_message_destroy(k->cur);
        k->cur = NULL;
    }
    pthread_mutex_lock(&k->mu);
    sd_kafka_learn(k);
    sd_kafka_advance(k);
    if (k->paused) {
        k->st.paused_s += sd_clock_now() - k->pause_t0;
        k->paused = false;
    }
    sd_kafka_mark_unconfirmed(k);
    rd_kafka_topic_partition_list_t *l = sd_kafka_commit_list(k);
    pthread_mutex_unlock(&k->mu);
    sd_status s = SD_OK;
    if (l) {
        s = sd_kafka_commit_sync(k, l, 5.0);
        if (s != SD_OK)
            s = SD_FAIL(s, "%s (the next consumer in group %s fetches again what was not committed)",
                        sd_last_error_brief(), k->group);
        rd_kafka_topic_partition_list_destroy(l);
    }
    /* leave the group, bounded: close through a queue and serve its rebalance events */
    bool closed = false;
    rd_kafka_queue_t *q = rd_kafka_queue_new(k->rk);
    rd_kafka_error_t *ce = q ? rd_kafka_consumer_close_queue(k->rk, q) : NULL;
    if (ce) {
        rd_kafka_error_destroy(ce);
    } else if (q) {
        double deadline = sd_clock_now() + 5.0;
        while (!(closed = rd_kafka_consumer_closed(k->rk)) && sd_clock_now() < deadline) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (!ev) continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                rebalance(k, rd_kafka_event_error(ev), (rd_kafka_topic_partition_list_t *)rd_kafka_event_topic_partition_list(ev));
            rd_kafka_event_destroy(ev);
        }
    }
    if (q) rd_kafka_queue_destroy(q);
    rd_kafka_destroy_flags(k->rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    k->rk = NULL;
    pthread_mutex_lock(&k->mu);
    k->st.started = false;
    k->st.paused = false;
    pthread_mutex_unlock(&k->mu);
    return s;
}

static void k_destroy(void *ctx) { sd_kafka_destroy(ctx); }
static sd_status k_checkpointed(void *ctx, uint64_t seq) { return sd_kafka_checkpointed(ctx, seq); }
static sd_status k_commit(void *ctx, double timeout_s) { return sd_kafka_commit_now(ctx, timeout_s); }

static const sd_source_ops kafka_ops = {.name = k_name,
                                        .start = k_start,
                                        .next = k_next,
                                        .stop = k_stop,
                                        .destroy = k_destroy,
                                        .checkpointed = k_checkpointed,
                                        .commit = k_commit};

sd_source sd_kafka_source(sd_kafka *k) { return (sd_source){&kafka_ops, k}; }

/* ---- life and the API ---------------------------------------------------------------------------- */
sd_status sd_kafka_create(const sd_kafka_config *c, sd_kafka **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_create needs a configuration and an output");
    *out = NULL;
    TRY(sd_kafka_conn_check(&c->conn));
    if (!c->topic || !c->topic[0]) return SD_FAIL(SD_ERR_INVALID, "Kafka source: no topic given (e.g. trainer-0)");
    if (strlen(c->topic) > 249) return SD_FAIL(SD_ERR_INVALID, "Kafka source: topic name over 249 characters");
    if (!c->ring)
        return SD_FAIL(SD_ERR_INVALID, "Kafka source %s: needs the ring its ingest thread delivers into", c->topic);
    if (c->by_partition && c->partition < 0)
        return SD_FAIL(SD_ERR_INVALID, "Kafka source %s: partition %d must be >= 0", c->topic, (int)c->partition);
    if (c->commit != SD_KAFKA_COMMIT_CONSUMED && c->commit != SD_KAFKA_COMMIT_ACKED)
        return SD_FAIL(SD_ERR_INVALID, "Kafka source %s: unknown commit mode %d", c->topic, (int)c->commit);
    double hi = c->pause_high > 0 ? c->pause_high : 0.9, lo = c->pause_low > 0 ? c->pause_low : 0.5;
    if (!(hi > 0 && hi <= 1) || !(lo >= 0 && lo < hi))
        return SD_FAIL(SD_ERR_INVALID, "Kafka source %s: need 0 <= pause_low (%g) < pause_high (%g) <= 1", c->topic, lo, hi);
    if (!(c->commit_interval_s >= 0) || c->commit_interval_s > 3600)
        return SD_FAIL(SD_ERR_INVALID, "Kafka source %s: commit_interval_s %g must lie in [0, 3600]", c->topic,
                       c->commit_interval_s);
    /* every pair must be one librdkafka accepts, and the offsets are ours to commit */
    for (size_t i = 0; i < c->conn.n_conf; i++) {
        const char *kv = c->conn.conf[i];
        if (kv && (!strncmp(kv, "enable.auto.commit=", 19) || !strncmp(kv, "enable.auto.offset.store=", 25)) &&
            strcmp(strchr(kv, '=') + 1, "false"))
            return SD_FAIL(SD_ERR_INVALID,
                           "Kafka source %s: '%s' is not allowed: the source commits offsets itself (the commit rule in "
                           "docs/brokers.md)",
                           c->topic, kv);
    }
    sd_kafka *k = calloc(1, sizeof *k);
    if (!k) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka source");
    sd_loglimit_init(&k->ll);
    pthread_mutex_init(&k->mu, NULL);
    sd_status s = sd_kafka_conn_copy_from(&k->conn, &c->conn);
    if (s != SD_OK) {
        free(k);
        return s;
    }
    k->by_partition = c->by_partition;
    k->partition = c->partition;
    if (c->by_partition)
        snprintf(k->name, sizeof k->name, "kafka(%s[%d])", c->topic, (int)c->partition);
    else
        snprintf(k->name, sizeof k->name, "kafka(%s)", c->topic);
    k->topic = sd_kafka_dup_str(c->topic);
    char g[320];
    if (c->group_id && c->group_id[0])
        snprintf(g, sizeof g, "%s", c->group_id);
    else if (c->by_partition)
        snprintf(g, sizeof g, "scadles-%s-%d", c->topic, (int)c->partition);
    else
        snprintf(g, sizeof g, "scadles-%s", c->topic);
    k->group = sd_kafka_dup_str(g);
    k->ring = c->ring;
    k->commit = c->commit;
    k->commit_interval_s = c->commit_interval_s > 0 ? c->commit_interval_s : 0.2;
    k->pause_high = hi;
    k->pause_low = lo;
    k->max_pending = c->max_pending ? c->max_pending : (size_t)1 << 20;
    k->allow_missing_topic = c->allow_missing_topic;
    if (!k->topic || !k->group) {
        sd_kafka_destroy(k);
        return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka source");
    }
    /* check the settings now rather than at start: each pair, then a trial handle (nothing connects) */
    rd_kafka_conf_t *conf = NULL;
    s = sd_kafka_conf_build(&k->conn, k, consumer_defaults, sizeof consumer_defaults / sizeof *consumer_defaults, &conf);
    if (s == SD_OK) s = sd_kafka_conf_set(conf, "group.id", k->group);
    if (s == SD_OK) {
        s = sd_kafka_conf_trial(conf, RD_KAFKA_CONSUMER, k->name);
        conf = NULL;
    }
    if (conf) rd_kafka_conf_destroy(conf);
    if (s != SD_OK) {
        sd_kafka_destroy(k);
        return s;
    }
    *out = k;
    return SD_OK;
}

void sd_kafka_destroy(sd_kafka *k) {
    if (!k) return;
    if (k->rk) k_stop(k);
    sd_kafka_conn_free(&k->conn);
    free(k->topic);
    free(k->group);
    free(k->q);
    free(k->parts);
    pthread_mutex_destroy(&k->mu);
    sd_loglimit_destroy(&k->ll);
    free(k);
}

sd_status sd_kafka_ack(sd_kafka *k, uint64_t seq) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_ack: no source");
    pthread_mutex_lock(&k->mu);
    if (!k->any_ack || seq > k->acked_seq) k->acked_seq = seq;
    k->any_ack = true;
    pthread_mutex_unlock(&k->mu);
    return SD_OK;
}

sd_status sd_kafka_checkpointed(sd_kafka *k, uint64_t seq) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_checkpointed: no source");
    if (!k->rk) return SD_FAIL(SD_ERR_INVALID, "%s: checkpointed while not started", k->name);
    if (k->cur) { /* the ingest thread has finished: the last record was delivered, or not */
        rd_kafka_message_destroy(k->cur);
        k->cur = NULL;
    }
    pthread_mutex_lock(&k->mu);
    sd_kafka_learn(k);
    if (!k->any_ckpt || seq > k->ckpt_seq) k->ckpt_seq = seq;
    k->any_ckpt = true;
    sd_kafka_advance(k);
    pthread_mutex_unlock(&k->mu);
    return SD_OK;
}

sd_status sd_kafka_commit_now(sd_kafka *k, double timeout_s) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_commit_now: no source");
    if (!k->rk) return SD_FAIL(SD_ERR_INVALID, "%s: commit while not started", k->name);
    sd_ring_stats s;
    sd_ring_get_stats(k->ring, &s);
    pthread_mutex_lock(&k->mu);
    sd_kafka_update_disposed(k, &s);
    sd_kafka_advance(k);
    sd_kafka_mark_unconfirmed(k);
    rd_kafka_topic_partition_list_t *l = sd_kafka_commit_list(k);
    pthread_mutex_unlock(&k->mu);
    if (!l) return SD_OK;
    sd_status st = sd_kafka_commit_sync(k, l, timeout_s > 0 ? timeout_s : 5.0);
    if (st != SD_OK) {
        pthread_mutex_lock(&k->mu);
        sd_kafka_mark_dirty_again(k, l);
        pthread_mutex_unlock(&k->mu);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return st;
}

int64_t sd_kafka_committed_offset(sd_kafka *k, int32_t partition) {
    if (!k) return -1;
    pthread_mutex_lock(&k->mu);
    int64_t o = -1;
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].id == partition) o = k->parts[i].committed;
    pthread_mutex_unlock(&k->mu);
    return o;
}

void sd_kafka_get_stats(sd_kafka *k, sd_kafka_stats *out) {
    if (!k) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&k->mu);
    *out = k->st;
    if (k->paused) out->paused_s += sd_clock_now() - k->pause_t0;
    pthread_mutex_unlock(&k->mu);
}
