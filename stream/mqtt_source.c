/* mqtt_source.c: the MQTT source (stream/mqtt.h): the bounded queue between the client's network
 * thread and next(), what became of each message handed out, the sd_source table, and create,
 * destroy and the counters. The connection itself is mqtt_client.c's. */
#include "stream/mqtt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/message.h"
#include "stream/mqtt_internal.h"

typedef struct slot {
    uint8_t *buf;
    size_t cap, len;
} slot;

struct sd_mqtt {
    client c;
    char *topic;
    int qos;
    size_t max_bytes;
    sd_mqtt_overflow overflow;
    double block_s;
    sd_ring *ring;

    pthread_mutex_t qmu; /* the queue and the counters below */
    pthread_cond_t avail, room;
    slot *q;
    size_t qcap, qhead, qn;
    bool interrupted, closing;
    uint8_t *cur; /* the message handed out last (swapped with a queue slot's buffer) */
    size_t cur_cap;
    sd_mqtt_stats st;

    /* what became of the previous message (the ingest thread only) */
    bool has_prev;
    uint64_t prev_seq;
    sd_ring_stats last;
};

static void src_on_msg(void *owner, const struct mosquitto_message *msg) {
    sd_mqtt *m = owner;
    size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    pthread_mutex_lock(&m->qmu);
    m->st.received++;
    m->st.bytes += len;
    if (len > m->max_bytes) {
        m->st.oversized_dropped++;
        pthread_mutex_unlock(&m->qmu);
        sd_mqtt_note(&m->c.ll, m->c.quiet, m->c.name, "dropped a %zu-byte message: over the %zu-byte limit (oversized)", len,
             m->max_bytes);
        return;
    }
    if (m->qn == m->qcap && m->overflow == SD_MQTT_OVERFLOW_BLOCK && msg->qos > 0) {
        double t0 = sd_clock_now();
        struct timespec until = sd_mqtt_mono_in(m->block_s);
        while (m->qn == m->qcap && !m->closing && pthread_cond_timedwait(&m->room, &m->qmu, &until) != ETIMEDOUT) {
        }
        m->st.blocked_s += sd_clock_now() - t0;
    }
    if (m->qn == m->qcap) {
        m->st.queue_dropped++;
        uint64_t n = m->st.queue_dropped;
        pthread_mutex_unlock(&m->qmu);
        sd_mqtt_note(&m->c.ll, m->c.quiet, m->c.name, "internal queue full (%zu messages): dropped a message (%llu so far)",
             m->qcap, (unsigned long long)n);
        return;
    }
    slot *s = &m->q[(m->qhead + m->qn) % m->qcap];
    if (s->cap < len || !s->buf) {
        size_t cap = len > 64 ? len : 64;
        uint8_t *b = realloc(s->buf, cap);
        if (!b) {
            m->st.queue_dropped++;
            pthread_mutex_unlock(&m->qmu);
            sd_mqtt_note(&m->c.ll, m->c.quiet, m->c.name, "out of memory queueing a %zu-byte message: dropped", len);
            return;
        }
        s->buf = b;
        s->cap = cap;
    }
    if (len) memcpy(s->buf, msg->payload, len);
    s->len = len;
    m->qn++;
    if (m->qn > m->st.queue_hw) m->st.queue_hw = m->qn;
    pthread_cond_signal(&m->avail);
    pthread_mutex_unlock(&m->qmu);
}

static const char *m_name(void *ctx) { return ((sd_mqtt *)ctx)->c.name; }

static sd_status m_start(void *ctx) {
    sd_mqtt *m = ctx;
    if (m->c.mosq) return SD_FAIL(SD_ERR_INVALID, "%s: started twice", m->c.name);
    pthread_mutex_lock(&m->qmu);
    m->interrupted = m->closing = false;
    m->has_prev = false;
    pthread_mutex_unlock(&m->qmu);
    if (m->ring) sd_ring_get_stats(m->ring, &m->last);
    return sd_mqtt_client_open(&m->c);
}

static uint64_t header_seq(const void *msg, size_t len) {
    if (len < 40) return 0;
    const uint8_t *b = (const uint8_t *)msg + 32;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* With the ring: what the sink did with the previous message (it delivers each before asking
 * for the next); a drop is counted and logged with its reason. */
static void learn(sd_mqtt *m) {
    if (!m->ring) return;
    sd_ring_stats s;
    sd_ring_get_stats(m->ring, &s);
    if (m->has_prev && s.received > m->last.received && s.accepted == m->last.accepted) {
        const char *why = NULL;
        for (int r = 1; r < SD_DROP_COUNT && !why; r++)
            if (r != SD_DROP_EVICTED && s.dropped[r] > m->last.dropped[r]) why = sd_drop_reason_name((sd_drop_reason)r);
        pthread_mutex_lock(&m->qmu);
        m->st.rejected++;
        pthread_mutex_unlock(&m->qmu);
        sd_mqtt_note(&m->c.ll, m->c.quiet, m->c.name, "dropped a message (header seq %llu): %s", (unsigned long long)m->prev_seq,
             why ? why : "unknown");
    }
    m->has_prev = false;
    m->last = s;
}

static sd_status m_next(void *ctx, double timeout_s, sd_source_event *ev, const void **msg, size_t *len) {
    sd_mqtt *m = ctx;
    *ev = SD_SOURCE_IDLE;
    learn(m);
    pthread_mutex_lock(&m->qmu);
    if (!m->qn && timeout_s > 0 && !m->interrupted) {
        struct timespec until = sd_mqtt_mono_in(timeout_s);
        while (!m->qn && !m->interrupted && pthread_cond_timedwait(&m->avail, &m->qmu, &until) != ETIMEDOUT) {
        }
    }
    m->interrupted = false;
    if (!m->qn) {
        pthread_mutex_unlock(&m->qmu);
        return SD_OK;
    }
    slot *s = &m->q[m->qhead];
    uint8_t *b = m->cur;
    size_t cap = m->cur_cap;
    m->cur = s->buf;
    m->cur_cap = s->cap;
    *len = s->len;
    s->buf = b;
    s->cap = cap;
    s->len = 0;
    m->qhead = (m->qhead + 1) % m->qcap;
    m->qn--;
    m->st.delivered++;
    pthread_cond_signal(&m->room);
    pthread_mutex_unlock(&m->qmu);
    static const uint8_t empty[1] = {0};
    *msg = m->cur ? m->cur : empty;
    m->has_prev = true;
    m->prev_seq = header_seq(*msg, *len);
    *ev = SD_SOURCE_MESSAGE;
    return SD_OK;
}

static sd_status m_stop(void *ctx) {
    sd_mqtt *m = ctx;
    pthread_mutex_lock(&m->qmu);
    m->closing = true; /* a network thread blocked on a full queue lets go */
    pthread_cond_broadcast(&m->room);
    pthread_mutex_unlock(&m->qmu);
    learn(m);
    sd_mqtt_client_close(&m->c);
    pthread_mutex_lock(&m->qmu);
    m->st.discarded_at_stop += m->qn;
    m->qn = 0;
    m->qhead = 0;
    pthread_mutex_unlock(&m->qmu);
    return SD_OK;
}

static void m_interrupt(void *ctx) {
    sd_mqtt *m = ctx;
    pthread_mutex_lock(&m->qmu);
    m->interrupted = true;
    pthread_cond_broadcast(&m->avail);
    pthread_mutex_unlock(&m->qmu);
}

static void m_destroy(void *ctx) { sd_mqtt_destroy(ctx); }

static const sd_source_ops mqtt_ops = {
    .name = m_name, .start = m_start, .next = m_next, .stop = m_stop, .interrupt = m_interrupt, .destroy = m_destroy};

sd_source sd_mqtt_source(sd_mqtt *m) { return (sd_source){&mqtt_ops, m}; }

sd_status sd_mqtt_create(const sd_mqtt_config *c, sd_mqtt **out) {
    if (!c || !out) return SD_FAIL(SD_ERR_INVALID, "sd_mqtt_create needs a configuration and an output");
    *out = NULL;
    if (!c->topic || !c->topic[0]) return SD_FAIL(SD_ERR_INVALID, "MQTT source: no topic given (e.g. trainer-0)");
    if (strlen(c->topic) > 65535) return SD_FAIL(SD_ERR_INVALID, "MQTT source: topic over 65535 bytes");
    char what[300];
    snprintf(what, sizeof what, "MQTT source %.200s", c->topic);
    TRY(sd_mqtt_conn_check(&c->conn, what));
    if (c->qos < 0 || c->qos > 2) return SD_FAIL(SD_ERR_INVALID, "%s: qos %d must be 0, 1 or 2", what, c->qos);
    if (c->persistent_session && !(c->conn.client_id && c->conn.client_id[0]))
        return SD_FAIL(SD_ERR_INVALID, "%s: a persistent session needs a client id that stays the same across runs", what);
    if (c->queue_capacity > ((size_t)1 << 24))
        return SD_FAIL(SD_ERR_INVALID, "%s: queue_capacity %zu over 16M messages", what, c->queue_capacity);
    if (c->overflow != SD_MQTT_OVERFLOW_DROP && c->overflow != SD_MQTT_OVERFLOW_BLOCK)
        return SD_FAIL(SD_ERR_INVALID, "%s: unknown overflow policy %d", what, (int)c->overflow);
    int keep = c->conn.keepalive_s ? c->conn.keepalive_s : 10;
    double blk = c->block_timeout_s > 0 ? c->block_timeout_s : 0.5;
    if (!(c->block_timeout_s >= 0) || blk >= keep / 2.0)
        return SD_FAIL(SD_ERR_INVALID, "%s: block_timeout_s %g must be below keepalive_s / 2 (%g s)", what, blk, keep / 2.0);
    sd_mqtt *m = calloc(1, sizeof *m);
    if (!m) return SD_FAIL(SD_ERR_OOM, "out of memory for an MQTT source");
    pthread_mutex_init(&m->qmu, NULL);
    sd_mqtt_cond_init_mono(&m->avail);
    sd_mqtt_cond_init_mono(&m->room);
    char label[300];
    snprintf(label, sizeof label, "mqtt(%.200s)", c->topic);
    sd_status s = sd_mqtt_client_init(&m->c, &c->conn, "sub", label);
    m->topic = sd_mqtt_dup_str(c->topic);
    m->qos = c->qos;
    m->qcap = c->queue_capacity ? c->queue_capacity : 4096;
    m->q = calloc(m->qcap, sizeof *m->q);
    m->max_bytes = c->max_message_bytes ? c->max_message_bytes : sd_msg_size(SD_MSG_MAX_PAYLOAD);
    m->overflow = c->overflow;
    m->block_s = blk;
    m->ring = c->ring;
    m->st.granted_qos = -1;
    if (s == SD_OK && (!m->topic || !m->q)) s = SD_FAIL(SD_ERR_OOM, "out of memory for an MQTT source");
    if (s != SD_OK) {
        sd_mqtt_destroy(m);
        return s;
    }
    m->c.sub_topic = m->topic;
    m->c.sub_qos = c->qos;
    m->c.clean = !c->persistent_session;
    m->c.on_msg = src_on_msg;
    m->c.owner = m;
    *out = m;
    return SD_OK;
}

void sd_mqtt_destroy(sd_mqtt *m) {
    if (!m) return;
    if (m->c.mosq) m_stop(m);
    sd_mqtt_client_free(&m->c);
    for (size_t i = 0; m->q && i < m->qcap; i++) free(m->q[i].buf);
    free(m->q);
    free(m->cur);
    free(m->topic);
    pthread_mutex_destroy(&m->qmu);
    pthread_cond_destroy(&m->avail);
    pthread_cond_destroy(&m->room);
    free(m);
}

void sd_mqtt_get_stats(sd_mqtt *m, sd_mqtt_stats *out) {
    memset(out, 0, sizeof *out);
    out->granted_qos = -1;
    if (!m) return;
    pthread_mutex_lock(&m->qmu);
    *out = m->st;
    out->queued = m->qn;
    pthread_mutex_unlock(&m->qmu);
    pthread_mutex_lock(&m->c.mu);
    out->connects = m->c.connects;
    out->disconnects = m->c.disconnects;
    out->connect_failures = m->c.failures;
    out->connected = m->c.connected && m->c.subscribed;
    out->granted_qos = m->c.subscribed ? m->c.granted : -1;
    pthread_mutex_unlock(&m->c.mu);
}
