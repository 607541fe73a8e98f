/* kafka_offsets.c: the Kafka source's commit rule (docs/brokers.md): the records handed out in
 * order, what the ingest did with each (learned from the ring's counters), the partitions' commit
 * points that only move past a done prefix, the lists to commit and a commit that waits for the
 * broker's answer. */
#include "stream/kafka.h"

#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/kafka_internal.h"

part *sd_kafka_part_get(sd_kafka *k, int32_t id) {
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].id == id) return &k->parts[i];
    if (k->nparts == k->capparts) {
        size_t cap = k->capparts ? 2 * k->capparts : 8;
        part *p = realloc(k->parts, cap * sizeof *p);
        if (!p) return NULL;
        k->parts = p;
        k->capparts = cap;
    }
    part *p = &k->parts[k->nparts++];
    *p = (part){.id = id, .next_commit = -1, .committed = -1, .first_offset = -1};
    return p;
}

static bool q_push(sd_kafka *k, const entry *e) {
    if (k->qn == k->qcap) {
        size_t cap = k->qcap ? 2 * k->qcap : 1024;
        entry *n = malloc(cap * sizeof *n);
        if (!n) return false;
        for (size_t i = 0; i < k->qn; i++) n[i] = k->q[(k->qhead + i) & (k->qcap - 1)];
        free(k->q);
        k->q = n;
        k->qcap = cap;
        k->qhead = 0;
    }
    k->q[(k->qhead + k->qn) & (k->qcap - 1)] = *e;
    k->qn++;
    return true;
}

static bool entry_done(const sd_kafka *k, const entry *e) {
    if (e->state == E_REJECTED) return true;
    if (e->state != E_STORED) return false;
    if (k->any_ckpt && e->seq <= k->ckpt_seq) return true;
    if (k->commit == SD_KAFKA_COMMIT_ACKED) return k->any_ack && e->seq <= k->acked_seq;
    return e->ord <= k->disposed;
}

/* Pops the done prefix and moves the partitions' commit points (the commit rule). Under mu. */
void sd_kafka_advance(sd_kafka *k) {
    while (k->qn) {
        entry *e = &k->q[k->qhead];
        if (!entry_done(k, e)) break;
        part *p = sd_kafka_part_get(k, e->part);
        if (p && e->offset + 1 > p->next_commit) {
            p->next_commit = e->offset + 1;
            p->dirty = true;
        }
        k->qhead = (k->qhead + 1) & (k->qcap - 1);
        k->qn--;
    }
    k->st.pending = k->qn;
}

/* What the ring has let go of since start (taken, truncated, evicted), in stored order. Any thread. */
void sd_kafka_update_disposed(sd_kafka *k, const sd_ring_stats *s) {
    uint64_t d = s->consumed + s->truncated + s->dropped[SD_DROP_EVICTED];
    d = d > k->disposed_base ? d - k->disposed_base : 0;
    if (d > k->disposed) k->disposed = d;
}

/* Learns what the ingest did with the record handed out last, from the ring's counters (the
 * ingest thread delivers each record before asking for the next). Ingest thread (or after it
 * finished) only; under mu. */
void sd_kafka_learn(sd_kafka *k) {
    sd_ring_stats s;
    sd_ring_get_stats(k->ring, &s);
    if (k->has_infl) {
        entry e = k->infl;
        k->has_infl = false;
        k->st.messages++;
        k->st.bytes += k->infl_len;
        part *pt = sd_kafka_part_get(k, e.part);
        if (pt && pt->first_offset < 0) pt->first_offset = e.offset;
        const char *why = NULL;
        if (s.received == k->last.received) {
            e.state = E_HOLD; /* never delivered: the ingest stopped before delivering it */
            k->st.undelivered++;
        } else if (s.accepted > k->last.accepted) {
            e.state = E_STORED;
            e.ord = ++k->stored_ord;
            k->st.stored++;
        } else if (s.dropped[SD_DROP_CLOSED] > k->last.dropped[SD_DROP_CLOSED]) {
            e.state = E_HOLD; /* the ring was closing: not a policy drop, so not committable */
            k->st.undelivered++;
        } else {
            e.state = E_REJECTED;
            k->st.rejected++;
            for (int r = 1; r < SD_DROP_COUNT; r++)
                if (r != SD_DROP_EVICTED && s.dropped[r] > k->last.dropped[r]) {
                    why = sd_drop_reason_name((sd_drop_reason)r);
                    break;
                }
        }
        if (why)
            sd_kafka_note(&k->ll, k->conn.quiet, false, k->name, "dropped the record at partition %d offset %lld: %s",
                 (int)e.part, (long long)e.offset, why);
        if (!q_push(k, &e) && !k->lost_track) {
            k->lost_track = true;
            sd_kafka_note(&k->ll, k->conn.quiet, true, k->name,
                 "out of memory tracking offsets: no further commits from this consumer (records from offset %lld on "
                 "will be fetched again after a restart)",
                 (long long)e.offset);
        }
    }
    k->last = s;
    sd_kafka_update_disposed(k, &s);
}

void sd_kafka_offsets_committed(sd_kafka *k, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *o) {
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    pthread_mutex_lock(&k->mu);
    if (err) {
        k->st.commit_errors++;
    } else {
        k->st.commits++;
    }
    for (int i = 0; o && i < o->cnt; i++) {
        const rd_kafka_topic_partition_t *t = &o->elems[i];
        if (strcmp(t->topic, k->topic)) continue;
        part *p = sd_kafka_part_get(k, t->partition);
        if (!p) continue;
        if (err || t->err) {
            /* not committed: ask again with the next commit, even if nothing else moves */
            if (p->next_commit > p->committed) p->dirty = true;
            continue;
        }
        if (t->offset >= 0 && t->offset > p->committed) p->committed = t->offset;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].committed > k->parts[i].first_offset && k->parts[i].first_offset >= 0)
            n += (uint64_t)(k->parts[i].committed - k->parts[i].first_offset);
    k->st.committed = n;
    pthread_mutex_unlock(&k->mu);
    if (err)
        sd_kafka_note(&k->ll, k->conn.quiet, true, k->name, "offset commit failed: %s (retried with the next commit)",
             rd_kafka_err2str(err));
}

/* The dirty, assigned partitions' commit points as a list (NULL: nothing to commit). Under mu. */
rd_kafka_topic_partition_list_t *sd_kafka_commit_list(sd_kafka *k) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (k->lost_track) return NULL;
    for (size_t i = 0; i < k->nparts; i++) {
        part *p = &k->parts[i];
        if (!p->dirty || p->next_commit < 0 || !p->assigned) continue;
        if (!l) l = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(l, k->topic, p->id)->offset = p->next_commit;
        p->dirty = false;
    }
    return l;
}

/* Marks every partition whose commit point the broker has not confirmed, so the next commit_list
 * includes it even when an asynchronous commit of it is still in flight (whose answer a stop would
 * never see). Under mu. */
void sd_kafka_mark_unconfirmed(sd_kafka *k) {
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].next_commit > k->parts[i].committed) k->parts[i].dirty = true;
}

void sd_kafka_mark_dirty_again(sd_kafka *k, const rd_kafka_topic_partition_list_t *l) {
    for (int i = 0; l && i < l->cnt; i++) {
        part *p = sd_kafka_part_get(k, l->elems[i].partition);
        if (p) p->dirty = true;
    }
}

/* Commits l and waits for the broker's answer at most timeout_s. */
sd_status sd_kafka_commit_sync(sd_kafka *k, rd_kafka_topic_partition_list_t *l, double timeout_s) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(k->rk);
    if (!q) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka queue");
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(k->rk, l, q, NULL, NULL);
    sd_status s = SD_OK;
    if (err) {
        s = SD_FAIL(SD_ERR_IO, "%s: offset commit to %s failed: %s", k->name, sd_kafka_conn_where(&k->conn), rd_kafka_err2str(err));
    } else {
        double deadline = sd_clock_now() + timeout_s;
        rd_kafka_event_t *ev = NULL;
        while (!ev && sd_clock_now() < deadline) {
            ev = rd_kafka_queue_poll(q, sd_kafka_ms_of(deadline - sd_clock_now()) + 1);
            if (ev && rd_kafka_event_type(ev) != RD_KAFKA_EVENT_OFFSET_COMMIT) {
                rd_kafka_event_destroy(ev);
                ev = NULL;
            }
        }
        if (!ev) {
            s = SD_FAIL(SD_ERR_IO, "%s: offset commit to %s not answered within %.1f s", k->name,
                        sd_kafka_conn_where(&k->conn), timeout_s);
        } else {
            err = rd_kafka_event_error(ev);
            const rd_kafka_topic_partition_list_t *o = rd_kafka_event_topic_partition_list(ev);
            sd_kafka_offsets_committed(k, err, o);
            for (int i = 0; !err && o && i < o->cnt; i++) err = o->elems[i].err;
            if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                s = SD_FAIL(SD_ERR_IO, "%s: offset commit to %s failed: %s", k->name, sd_kafka_conn_where(&k->conn),
                            rd_kafka_err2str(err));
            rd_kafka_event_destroy(ev);
        }
    }
    rd_kafka_queue_destroy(q);
    return s;
}
