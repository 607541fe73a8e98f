/* kafka.c: the Kafka source and publisher over librdkafka (kafka.h; design and the commit rule in
 * docs/brokers.md). Compiled to stubs returning SD_ERR_UNSUPPORTED without SCADLES_HAVE_KAFKA. */
#include "stream/kafka.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/message.h"
#include "stream/rate.h"

#define SD_KAFKA_MISSING                                                                                    \
    "this build has no Kafka support: install librdkafka (Debian: apt-get install librdkafka-dev, which " \
    "pkg-config finds as 'rdkafka') and re-run cmake"

#ifndef SCADLES_HAVE_KAFKA
/* ---- without librdkafka ---------------------------------------------------------------------- */
bool sd_kafka_available(void) { return false; }
sd_status sd_kafka_create(const sd_kafka_config *c, sd_kafka **out) {
    (void)c;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
void sd_kafka_destroy(sd_kafka *k) { (void)k; }
sd_source sd_kafka_source(sd_kafka *k) { return (sd_source){NULL, k}; }
sd_status sd_kafka_ack(sd_kafka *k, uint64_t seq) {
    (void)k, (void)seq;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_checkpointed(sd_kafka *k, uint64_t seq) {
    (void)k, (void)seq;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_commit_now(sd_kafka *k, double timeout_s) {
    (void)k, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
int64_t sd_kafka_committed_offset(sd_kafka *k, int32_t partition) {
    (void)k, (void)partition;
    return -1;
}
void sd_kafka_get_stats(sd_kafka *k, sd_kafka_stats *out) {
    (void)k;
    memset(out, 0, sizeof *out);
}
sd_status sd_kafka_pub_create(const sd_kafka_conn *conn, sd_kafka_pub **out) {
    (void)conn;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_pub_create_topics(sd_kafka_pub *p, const char *const *topics, size_t n, int partitions,
                                     double timeout_s) {
    (void)p, (void)topics, (void)n, (void)partitions, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_pub_send(sd_kafka_pub *p, const char *topic, int32_t partition, int32_t label, const void *msg,
                            size_t len) {
    (void)p, (void)topic, (void)partition, (void)label, (void)msg, (void)len;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
void sd_kafka_pub_poll(sd_kafka_pub *p) { (void)p; }
sd_status sd_kafka_pub_flush(sd_kafka_pub *p, double timeout_s) {
    (void)p, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
void sd_kafka_pub_get_stats(sd_kafka_pub *p, sd_kafka_pub_stats *out) {
    (void)p;
    memset(out, 0, sizeof *out);
}
void sd_kafka_pub_destroy(sd_kafka_pub *p) { (void)p; }

#else
/* ---- with librdkafka ------------------------------------------------------------------------- */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>

bool sd_kafka_available(void) { return true; }

static char *dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int ms_of(double s) {
    if (!(s > 0)) return 0;
    if (s > 1e6) return 1000000000;
    return (int)(s * 1000 + 0.5);
}

/* Everything one handle prints goes through one rate limit (stream/loglimit.h). */
typedef sd_loglimit loglim;

static void note(loglim *l, bool quiet, bool remember, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void note(loglim *l, bool quiet, bool remember, const char *who, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sd_loglimit_note(l, quiet, remember, who, line);
}

/* Sets every property on conf; SD_ERR_INVALID with librdkafka's reason for a bad one. */
static sd_status conf_set(rd_kafka_conf_t *conf, const char *key, const char *val) {
    char err[512];
    if (rd_kafka_conf_set(conf, key, val, err, sizeof err) != RD_KAFKA_CONF_OK)
        return SD_FAIL(SD_ERR_INVALID, "Kafka setting %s=%s: %s", key,
                       strstr(key, "password") || strstr(key, "secret") ? "(hidden)" : val, err);
    return SD_OK;
}

/* The settings that name a file (TLS material, the Kerberos keytab): a missing or unreadable file
 * is refused here, naming the setting and the file, rather than at the first connection. */
static sd_status conf_check_file(const char *key, const char *val) {
    static const char *const file_keys[] = {"ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
                                            "ssl.keystore.location", "ssl.crl.location", "sasl.kerberos.keytab"};
    bool is_file = false;
    for (size_t i = 0; i < sizeof file_keys / sizeof *file_keys; i++) is_file |= !strcmp(key, file_keys[i]);
    if (!is_file || !val[0]) return SD_OK;
    if (!strcmp(key, "ssl.ca.location") && !strcmp(val, "probe")) return SD_OK; /* librdkafka: the system's CAs */
    if (access(val, R_OK) == 0) return SD_OK;
    return SD_FAIL(SD_ERR_INVALID,
                   "Kafka setting %s=%s: %s: give the path of a readable PEM file (%s)", key, val, strerror(errno),
                   !strcmp(key, "ssl.ca.location")
                       ? "the CA certificate that signed the brokers' certificates, or 'probe' for the system's CAs"
                   : !strcmp(key, "ssl.key.location") ? "the client's private key, with ssl.key.password if encrypted"
                   : !strcmp(key, "ssl.certificate.location") ? "the client's certificate, for brokers that require one"
                                                              : "see docs/brokers.md");
}

static sd_status conf_set_pairs(rd_kafka_conf_t *conf, const char *const *pairs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *kv = pairs[i];
        const char *eq = kv ? strchr(kv, '=') : NULL;
        if (!eq || eq == kv)
            return SD_FAIL(SD_ERR_INVALID, "Kafka setting '%s' is not key=value (e.g. security.protocol=SASL_SSL)",
                           kv ? kv : "(null)");
        char key[256];
        size_t kl = (size_t)(eq - kv);
        if (kl >= sizeof key) return SD_FAIL(SD_ERR_INVALID, "Kafka setting key too long in '%.40s...'", kv);
        memcpy(key, kv, kl);
        key[kl] = 0;
        TRY(conf_check_file(key, eq + 1));
        TRY(conf_set(conf, key, eq + 1));
    }
    return SD_OK;
}

static sd_status conn_check(const sd_kafka_conn *c) {
    if (c->n_conf && !c->conf) return SD_FAIL(SD_ERR_INVALID, "Kafka: n_conf = %zu but conf is NULL", c->n_conf);
    if (!(c->connect_timeout_s >= 0) || c->connect_timeout_s > 3600)
        return SD_FAIL(SD_ERR_INVALID, "Kafka: connect_timeout_s %g must lie in [0, 3600] (0: 10 s)", c->connect_timeout_s);
    bool has = c->bootstrap && c->bootstrap[0];
    for (size_t i = 0; i < c->n_conf && !has; i++)
        has = c->conf[i] && !strncmp(c->conf[i], "bootstrap.servers=", 18) && c->conf[i][18];
    if (!has)
        return SD_FAIL(SD_ERR_INVALID,
                       "Kafka: no brokers given: set the bootstrap servers (host:port[,host:port...], e.g. --bootstrap "
                       "localhost:9092)");
    return SD_OK;
}

/* Copies of the connection's strings, owned by the source or publisher. */
typedef struct conn_copy {
    char *bootstrap;
    char **conf;
    size_t n_conf;
    double connect_timeout_s;
    bool quiet;
} conn_copy;

static void conn_free(conn_copy *c) {
    free(c->bootstrap);
    for (size_t i = 0; i < c->n_conf; i++) free(c->conf[i]);
    free(c->conf);
    memset(c, 0, sizeof *c);
}

static sd_status conn_copy_from(conn_copy *d, const sd_kafka_conn *c) {
    memset(d, 0, sizeof *d);
    d->connect_timeout_s = c->connect_timeout_s > 0 ? c->connect_timeout_s : 10.0;
    d->quiet = c->quiet;
    d->bootstrap = dup_str(c->bootstrap);
    d->conf = calloc(c->n_conf ? c->n_conf : 1, sizeof *d->conf);
    if ((c->bootstrap && !d->bootstrap) || !d->conf) goto oom;
    for (size_t i = 0; i < c->n_conf; i++) {
        if (!(d->conf[i] = dup_str(c->conf[i]))) goto oom;
        d->n_conf = i + 1;
    }
    return SD_OK;
oom:
    conn_free(d);
    return SD_FAIL(SD_ERR_OOM, "out of memory copying the Kafka settings");
}

/* The brokers as a message names them. */
static const char *conn_where(const conn_copy *c) {
    if (c->bootstrap && c->bootstrap[0]) return c->bootstrap;
    for (size_t i = 0; i < c->n_conf; i++)
        if (!strncmp(c->conf[i], "bootstrap.servers=", 18)) return c->conf[i] + 18;
    return "(no brokers)";
}

/* A new conf with the brokers, our defaults and then the user's pairs (so they can override them). */
static sd_status conf_build(const conn_copy *c, void *opaque, const char *const *defaults, size_t n_defaults,
                            rd_kafka_conf_t **out) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka configuration");
    sd_status s = SD_OK;
    if (c->bootstrap && c->bootstrap[0]) s = conf_set(conf, "bootstrap.servers", c->bootstrap);
    if (s == SD_OK) s = conf_set_pairs(conf, defaults, n_defaults);
    if (s == SD_OK) s = conf_set_pairs(conf, (const char *const *)c->conf, c->n_conf);
    if (s != SD_OK) {
        rd_kafka_conf_destroy(conf);
        return s;
    }
    rd_kafka_conf_set_opaque(conf, opaque);
    *out = conf;
    return SD_OK;
}

/* librdkafka checks some settings only when a handle is made (the SASL mechanism and its username
 * and password, the TLS material, consumer-only constraints). Makes a handle of the given type from
 * conf with no brokers (so nothing connects) and destroys it; conf is consumed. A refusal is
 * SD_ERR_INVALID naming `who`, librdkafka's reason and what to fix. */
static void trial_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf; /* a trial handle prints nothing */
}

static sd_status conf_trial(rd_kafka_conf_t *conf, rd_kafka_type_t type, const char *who) {
    char err[512];
    if (rd_kafka_conf_set(conf, "bootstrap.servers", "", err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return SD_FAIL(SD_ERR_RUNTIME, "%s: could not check the Kafka settings: %s", who, err);
    }
    rd_kafka_conf_set_log_cb(conf, trial_log);
    rd_kafka_conf_set_opaque(conf, NULL);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return SD_FAIL(SD_ERR_INVALID,
                       "%s: librdkafka refused the settings: %s: fix the setting it names (security.protocol "
                       "PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL; sasl.mechanisms PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|GSSAPI|"
                       "OAUTHBEARER with sasl.username and sasl.password; ssl.*.location readable PEM files; see "
                       "docs/brokers.md)",
                       who, err);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return SD_OK;
}

/* Waits until the brokers answer a metadata request (and, with rkt, the topic has partition
 * `need_partition` or any when < 0). *topic_missing tells which of the two failed. */
static rd_kafka_resp_err_t wait_metadata(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t need_partition, double timeout_s,
                                         bool serve_poll, bool *topic_missing, int *partitions) {
    double deadline = sd_clock_now() + timeout_s;
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR__TIMED_OUT;
    *topic_missing = false;
    if (partitions) *partitions = 0;
    for (;;) {
        double left = deadline - sd_clock_now();
        if (left <= 0) return last;
        const struct rd_kafka_metadata *md = NULL;
        int ms = ms_of(left < 1.0 ? left : 1.0);
        if (ms < 1) ms = 1;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, ms);
        if (serve_poll) rd_kafka_poll(rk, 0);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            bool ok = true;
            if (rkt) {
                ok = false;
                for (int i = 0; i < md->topic_cnt; i++) {
                    const struct rd_kafka_metadata_topic *t = &md->topics[i];
                    if (strcmp(t->topic, rd_kafka_topic_name(rkt))) continue;
                    if (partitions) *partitions = t->partition_cnt;
                    ok = t->err == RD_KAFKA_RESP_ERR_NO_ERROR && t->partition_cnt > 0 &&
                         (need_partition < 0 || need_partition < t->partition_cnt);
                }
                *topic_missing = !ok;
                last = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
            }
            rd_kafka_metadata_destroy(md);
            if (ok) return RD_KAFKA_RESP_ERR_NO_ERROR;
            sd_clock_sleep_until(sd_clock_now() + 0.05);
        } else {
            last = err;
            *topic_missing = false;
            if (err != RD_KAFKA_RESP_ERR__TIMED_OUT && err != RD_KAFKA_RESP_ERR__TRANSPORT)
                sd_clock_sleep_until(sd_clock_now() + 0.05);
        }
    }
}

/* ================================================================================================
 * the source
 * ================================================================================================ */
enum { E_INFLIGHT = 0, E_STORED, E_REJECTED, E_HOLD };

typedef struct entry {
    int32_t part;
    uint8_t state;
    int64_t offset;
    uint64_t seq; /* from the header (meaningful for stored records) */
    uint64_t ord; /* stored records: 1, 2, ... in the order the ring stored them */
} entry;

typedef struct part {
    int32_t id;
    bool assigned;
    bool dirty;            /* next_commit moved since the last commit request */
    int64_t next_commit;   /* offset after the highest contiguous done record; -1: none */
    int64_t committed;     /* acknowledged by the broker; -1: none */
    int64_t first_offset;  /* first record seen since start (for the committed count); -1: none */
} part;

struct sd_kafka {
    conn_copy conn;
    char *topic, *group;
    bool by_partition;
    int32_t partition;
    sd_ring *ring;
    sd_kafka_commit commit;
    double commit_interval_s, pause_high, pause_low;
    size_t max_pending;
    bool allow_missing_topic;
    char name[300];

    rd_kafka_t *rk;
    rd_kafka_message_t *cur;
    loglim ll;

    pthread_mutex_t mu; /* everything below */
    entry *q;           /* records handed out and not yet committable, in hand-out order */
    size_t qcap, qhead, qn;
    entry infl;         /* the record handed out last, while what became of it is unknown; written by */
    bool has_infl;      /* the ingest thread without mu (only it and learn, on that thread, use them) */
    size_t infl_len;
    sd_ring_stats last; /* the ring's counters when next() last looked */
    uint64_t disposed_base, disposed, stored_ord;
    uint64_t acked_seq;
    bool any_ack;
    uint64_t ckpt_seq;  /* sd_kafka_checkpointed: stored records numbered <= ckpt_seq are done */
    bool any_ckpt;
    part *parts;
    size_t nparts, capparts;
    bool paused;
    bool lost_track;    /* out of memory for the record list: stop committing (never commit ahead) */
    bool reassign;      /* the committed offset of an assigned partition could not be fetched: assign again */
    double pause_t0, last_commit_t, reassign_at;
    sd_kafka_stats st;
};

static part *part_get(sd_kafka *k, int32_t id) {
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
static void advance(sd_kafka *k) {
    while (k->qn) {
        entry *e = &k->q[k->qhead];
        if (!entry_done(k, e)) break;
        part *p = part_get(k, e->part);
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
static void update_disposed(sd_kafka *k, const sd_ring_stats *s) {
    uint64_t d = s->consumed + s->truncated + s->dropped[SD_DROP_EVICTED];
    d = d > k->disposed_base ? d - k->disposed_base : 0;
    if (d > k->disposed) k->disposed = d;
}

/* Learns what the ingest did with the record handed out last, from the ring's counters (the
 * ingest thread delivers each record before asking for the next). Ingest thread (or after it
 * finished) only; under mu. */
static void learn(sd_kafka *k) {
    sd_ring_stats s;
    sd_ring_get_stats(k->ring, &s);
    if (k->has_infl) {
        entry e = k->infl;
        k->has_infl = false;
        k->st.messages++;
        k->st.bytes += k->infl_len;
        part *pt = part_get(k, e.part);
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
            note(&k->ll, k->conn.quiet, false, k->name, "dropped the record at partition %d offset %lld: %s",
                 (int)e.part, (long long)e.offset, why);
        if (!q_push(k, &e) && !k->lost_track) {
            k->lost_track = true;
            note(&k->ll, k->conn.quiet, true, k->name,
                 "out of memory tracking offsets: no further commits from this consumer (records from offset %lld on "
                 "will be fetched again after a restart)",
                 (long long)e.offset);
        }
    }
    k->last = s;
    update_disposed(k, &s);
}

static void handle_offsets_committed(sd_kafka *k, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *o) {
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
        part *p = part_get(k, t->partition);
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
        note(&k->ll, k->conn.quiet, true, k->name, "offset commit failed: %s (retried with the next commit)",
             rd_kafka_err2str(err));
}

/* The dirty, assigned partitions' commit points as a list (NULL: nothing to commit). Under mu. */
static rd_kafka_topic_partition_list_t *commit_list(sd_kafka *k) {
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
static void mark_unconfirmed(sd_kafka *k) {
    for (size_t i = 0; i < k->nparts; i++)
        if (k->parts[i].next_commit > k->parts[i].committed) k->parts[i].dirty = true;
}

static void mark_dirty_again(sd_kafka *k, const rd_kafka_topic_partition_list_t *l) {
    for (int i = 0; l && i < l->cnt; i++) {
        part *p = part_get(k, l->elems[i].partition);
        if (p) p->dirty = true;
    }
}

/* Commits l and waits for the broker's answer at most timeout_s. */
static sd_status commit_sync(sd_kafka *k, rd_kafka_topic_partition_list_t *l, double timeout_s) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(k->rk);
    if (!q) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka queue");
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(k->rk, l, q, NULL, NULL);
    sd_status s = SD_OK;
    if (err) {
        s = SD_FAIL(SD_ERR_IO, "%s: offset commit to %s failed: %s", k->name, conn_where(&k->conn), rd_kafka_err2str(err));
    } else {
        double deadline = sd_clock_now() + timeout_s;
        rd_kafka_event_t *ev = NULL;
        while (!ev && sd_clock_now() < deadline) {
            ev = rd_kafka_queue_poll(q, ms_of(deadline - sd_clock_now()) + 1);
            if (ev && rd_kafka_event_type(ev) != RD_KAFKA_EVENT_OFFSET_COMMIT) {
                rd_kafka_event_destroy(ev);
                ev = NULL;
            }
        }
        if (!ev) {
            s = SD_FAIL(SD_ERR_IO, "%s: offset commit to %s not answered within %.1f s", k->name,
                        conn_where(&k->conn), timeout_s);
        } else {
            err = rd_kafka_event_error(ev);
            const rd_kafka_topic_partition_list_t *o = rd_kafka_event_topic_partition_list(ev);
            handle_offsets_committed(k, err, o);
            for (int i = 0; !err && o && i < o->cnt; i++) err = o->elems[i].err;
            if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                s = SD_FAIL(SD_ERR_IO, "%s: offset commit to %s failed: %s", k->name, conn_where(&k->conn),
                            rd_kafka_err2str(err));
            rd_kafka_event_destroy(ev);
        }
    }
    rd_kafka_queue_destroy(q);
    return s;
}

/* ---- librdkafka callbacks ---------------------------------------------------------------------- */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    sd_kafka *k = rd_kafka_opaque(rk);
    if (!k) return;
    if (level >= 7) { /* librdkafka's debug contexts, only produced when asked for (debug=...): all of them */
        fprintf(stderr, "scadles: %s: librdkafka %s: %s\n", k->name, fac, buf);
        return;
    }
    if (level > 4) return; /* syslog levels: keep warnings and worse */
    note(&k->ll, k->conn.quiet, true, k->name, "librdkafka %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    sd_kafka *k = opaque;
    pthread_mutex_lock(&k->mu);
    k->st.errors++;
    pthread_mutex_unlock(&k->mu);
    note(&k->ll, k->conn.quiet, true, k->name, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    (void)rk;
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *o, void *opaque) {
    (void)rk;
    handle_offsets_committed(opaque, err, o);
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
            part *p = part_get(k, parts->elems[i].partition);
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
        advance(k);
        mark_unconfirmed(k);
        rd_kafka_topic_partition_list_t *l = commit_list(k);
        pthread_mutex_unlock(&k->mu);
        if (l) {
            if (commit_sync(k, l, 5.0) != SD_OK) {
                note(&k->ll, k->conn.quiet, true, k->name, "%s", sd_last_error_brief());
                pthread_mutex_lock(&k->mu);
                mark_dirty_again(k, l);
                pthread_mutex_unlock(&k->mu);
            }
            rd_kafka_topic_partition_list_destroy(l);
        }
        pthread_mutex_lock(&k->mu);
        for (int i = 0; i < parts->cnt; i++) {
            part *p = part_get(k, parts->elems[i].partition);
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
        note(&k->ll, k->conn.quiet, true, k->name, "rebalance failed: %s", rd_kafka_err2str(err));
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
    TRY(conf_build(&k->conn, k, consumer_defaults, sizeof consumer_defaults / sizeof *consumer_defaults, &conf));
    sd_status s = conf_set(conf, "group.id", k->group);
    if (s == SD_OK) s = conf_set(conf, "enable.auto.commit", "false");
    if (s == SD_OK) s = conf_set(conf, "enable.auto.offset.store", "false");
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
    rd_kafka_resp_err_t me = wait_metadata(rk, rkt, k->by_partition ? k->partition : -1, k->conn.connect_timeout_s,
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
                        k->name, k->topic, conn_where(&k->conn), nparts, (int)k->partition, nparts);
        else if (missing)
            s = SD_FAIL(SD_ERR_IO,
                        "%s: topic %s does not exist on %s (waited %.1f s): create it (kafka-topics.sh --create --topic "
                        "%s --partitions 1), start scadles-publish first, or check the topic prefix",
                        k->name, k->topic, conn_where(&k->conn), k->conn.connect_timeout_s, k->topic);
        else
            s = SD_FAIL(SD_ERR_IO,
                        "%s: Kafka brokers at %s unreachable after %.1f s (%s; last: %s): start the brokers or fix the "
                        "address (--bootstrap host:port), and check the security settings (security.protocol, ssl.*, "
                        "sasl.*)",
                        k->name, conn_where(&k->conn), k->conn.connect_timeout_s, rd_kafka_err2str(me), why);
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
        part *p = part_get(k, k->partition);
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
            note(&k->ll, k->conn.quiet, false, k->name,
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
        note(&k->ll, k->conn.quiet, false, k->name, "assigned %d partition%s again to retry fetching the committed offset",
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
    learn(k);
    advance(k);
    backpressure(k);
    rd_kafka_topic_partition_list_t *l = NULL;
    double now = sd_clock_now();
    if (now - k->last_commit_t >= k->commit_interval_s) {
        l = commit_list(k);
        k->last_commit_t = now;
    }
    pthread_mutex_unlock(&k->mu);
    if (l) {
        rd_kafka_resp_err_t e = rd_kafka_commit(k->rk, l, 1);
        if (e) {
            pthread_mutex_lock(&k->mu);
            mark_dirty_again(k, l);
            k->st.commit_errors++;
            pthread_mutex_unlock(&k->mu);
        }
        rd_kafka_topic_partition_list_destroy(l);
    }

    if (k->reassign && sd_clock_now() >= k->reassign_at) {
        k->reassign = false;
        assign_again(k);
    }

    rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, ms_of(timeout_s));
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
            return SD_FAIL(SD_ERR_IO, "%s: fatal Kafka consumer error from %s: %s", k->name, conn_where(&k->conn), fatal);
        pthread_mutex_lock(&k->mu);
        if (err == RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED)
            k->st.max_poll_exceeded++;
        else
            k->st.errors++;
        pthread_mutex_unlock(&k->mu);
        bool missing = err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        note(&k->ll, k->conn.quiet || (missing && k->allow_missing_topic), true, k->name, "consumer: %s: %s",
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
    learn(k);
    advance(k);
    if (k->paused) {
        k->st.paused_s += sd_clock_now() - k->pause_t0;
        k->paused = false;
    }
    mark_unconfirmed(k);
    rd_kafka_topic_partition_list_t *l = commit_list(k);
    pthread_mutex_unlock(&k->mu);
    sd_status s = SD_OK;
    if (l) {
        s = commit_sync(k, l, 5.0);
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
    TRY(conn_check(&c->conn));
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
    sd_status s = conn_copy_from(&k->conn, &c->conn);
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
    k->topic = dup_str(c->topic);
    char g[320];
    if (c->group_id && c->group_id[0])
        snprintf(g, sizeof g, "%s", c->group_id);
    else if (c->by_partition)
        snprintf(g, sizeof g, "scadles-%s-%d", c->topic, (int)c->partition);
    else
        snprintf(g, sizeof g, "scadles-%s", c->topic);
    k->group = dup_str(g);
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
    s = conf_build(&k->conn, k, consumer_defaults, sizeof consumer_defaults / sizeof *consumer_defaults, &conf);
    if (s == SD_OK) s = conf_set(conf, "group.id", k->group);
    if (s == SD_OK) {
        s = conf_trial(conf, RD_KAFKA_CONSUMER, k->name);
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
    conn_free(&k->conn);
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
    learn(k);
    if (!k->any_ckpt || seq > k->ckpt_seq) k->ckpt_seq = seq;
    k->any_ckpt = true;
    advance(k);
    pthread_mutex_unlock(&k->mu);
    return SD_OK;
}

sd_status sd_kafka_commit_now(sd_kafka *k, double timeout_s) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_commit_now: no source");
    if (!k->rk) return SD_FAIL(SD_ERR_INVALID, "%s: commit while not started", k->name);
    sd_ring_stats s;
    sd_ring_get_stats(k->ring, &s);
    pthread_mutex_lock(&k->mu);
    update_disposed(k, &s);
    advance(k);
    mark_unconfirmed(k);
    rd_kafka_topic_partition_list_t *l = commit_list(k);
    pthread_mutex_unlock(&k->mu);
    if (!l) return SD_OK;
    sd_status st = commit_sync(k, l, timeout_s > 0 ? timeout_s : 5.0);
    if (st != SD_OK) {
        pthread_mutex_lock(&k->mu);
        mark_dirty_again(k, l);
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

/* ================================================================================================
 * the publisher
 * ================================================================================================ */
struct sd_kafka_pub {
    conn_copy conn;
    rd_kafka_t *rk;
    loglim ll;
    atomic_uint_least64_t sent, delivered, failed, waits;
    char name[300];
};

static void pub_on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    sd_kafka_pub *p = opaque;
    if (m->err) {
        atomic_fetch_add(&p->failed, 1);
        note(&p->ll, p->conn.quiet, true, p->name, "delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
             rd_kafka_err2str(m->err));
    } else {
        atomic_fetch_add(&p->delivered, 1);
    }
}

static void pub_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    sd_kafka_pub *p = rd_kafka_opaque(rk);
    if (!p) return;
    if (level >= 7) {
        fprintf(stderr, "scadles: %s: librdkafka %s: %s\n", p->name, fac, buf);
        return;
    }
    if (level > 4) return;
    note(&p->ll, p->conn.quiet, true, p->name, "librdkafka %s: %s", fac, buf);
}

static void pub_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    sd_kafka_pub *p = opaque;
    note(&p->ll, p->conn.quiet, true, p->name, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

sd_status sd_kafka_pub_create(const sd_kafka_conn *conn, sd_kafka_pub **out) {
    if (!conn || !out) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_pub_create needs a connection and an output");
    *out = NULL;
    TRY(conn_check(conn));
    sd_kafka_pub *p = calloc(1, sizeof *p);
    if (!p) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka publisher");
    sd_loglimit_init(&p->ll);
    sd_status s = conn_copy_from(&p->conn, conn);
    if (s != SD_OK) {
        free(p);
        return s;
    }
    snprintf(p->name, sizeof p->name, "kafka publisher(%s)", conn_where(&p->conn));
    rd_kafka_conf_t *conf = NULL;
    s = conf_build(&p->conn, p, NULL, 0, &conf);
    if (s != SD_OK) {
        sd_kafka_pub_destroy(p);
        return s;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, pub_on_dr);
    rd_kafka_conf_set_log_cb(conf, pub_on_log);
    rd_kafka_conf_set_error_cb(conf, pub_on_error);
    char err[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        s = SD_FAIL(SD_ERR_INVALID,
                    "%s: librdkafka refused the settings: %s: fix the setting it names (security.protocol, "
                    "sasl.mechanisms with sasl.username and sasl.password, ssl.*.location; see docs/brokers.md)",
                    p->name, err);
        sd_kafka_pub_destroy(p);
        return s;
    }
    bool missing = false;
    sd_loglimit_hold(&p->ll, true);
    rd_kafka_resp_err_t me = wait_metadata(p->rk, NULL, -1, p->conn.connect_timeout_s, true, &missing, NULL);
    sd_loglimit_hold(&p->ll, false);
    if (me) {
        char why[512];
        sd_loglimit_last(&p->ll, why, sizeof why, "no answer");
        s = SD_FAIL(SD_ERR_IO,
                    "Kafka brokers at %s unreachable after %.1f s (%s; last: %s): start the brokers or fix the address "
                    "(--bootstrap host:port), and check the security settings (security.protocol, ssl.*, sasl.*)",
                    conn_where(&p->conn), p->conn.connect_timeout_s, rd_kafka_err2str(me), why);
        sd_kafka_pub_destroy(p);
        return s;
    }
    *out = p;
    return SD_OK;
}

sd_status sd_kafka_pub_create_topics(sd_kafka_pub *p, const char *const *topics, size_t n, int partitions,
                                     double timeout_s) {
    if (!p || (n && !topics) || partitions < 1)
        return SD_FAIL(SD_ERR_INVALID, "sd_kafka_pub_create_topics needs a publisher, topics and partitions >= 1");
    if (!n) return SD_OK;
    char err[512];
    rd_kafka_NewTopic_t **nt = calloc(n, sizeof *nt);
    if (!nt) return SD_FAIL(SD_ERR_OOM, "out of memory creating topics");
    sd_status s = SD_OK;
    for (size_t i = 0; i < n && s == SD_OK; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, -1, err, sizeof err);
        if (!nt[i]) s = SD_FAIL(SD_ERR_INVALID, "topic %s: %s", topics[i], err);
    }
    rd_kafka_queue_t *q = s == SD_OK ? rd_kafka_queue_new(p->rk) : NULL;
    rd_kafka_AdminOptions_t *o = s == SD_OK ? rd_kafka_AdminOptions_new(p->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS) : NULL;
    if (s == SD_OK && (!q || !o)) s = SD_FAIL(SD_ERR_OOM, "out of memory creating topics");
    if (s == SD_OK) {
        rd_kafka_AdminOptions_set_request_timeout(o, ms_of(timeout_s > 0 ? timeout_s : 10), err, sizeof err);
        rd_kafka_CreateTopics(p->rk, nt, n, o, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ms_of(timeout_s > 0 ? timeout_s : 10) + 1000);
        if (!ev) {
            s = SD_FAIL(SD_ERR_IO, "creating topics on %s: no answer within %.1f s", conn_where(&p->conn), timeout_s);
        } else if (rd_kafka_event_error(ev)) {
            s = SD_FAIL(SD_ERR_IO, "creating topics on %s failed: %s", conn_where(&p->conn), rd_kafka_event_error_string(ev));
        } else {
            const rd_kafka_CreateTopics_result_t *r = rd_kafka_event_CreateTopics_result(ev);
            size_t cnt = 0;
            const rd_kafka_topic_result_t **tr = r ? rd_kafka_CreateTopics_result_topics(r, &cnt) : NULL;
            for (size_t i = 0; i < cnt && s == SD_OK; i++) {
                rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
                if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                    s = SD_FAIL(SD_ERR_IO, "creating topic %s on %s failed: %s", rd_kafka_topic_result_name(tr[i]),
                                conn_where(&p->conn),
                                rd_kafka_topic_result_error_string(tr[i]) ? rd_kafka_topic_result_error_string(tr[i])
                                                                          : rd_kafka_err2str(e));
            }
        }
        if (ev) rd_kafka_event_destroy(ev);
    }
    if (o) rd_kafka_AdminOptions_destroy(o);
    if (q) rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < n; i++)
        if (nt[i]) rd_kafka_NewTopic_destroy(nt[i]);
    free(nt);
    return s;
}

sd_status sd_kafka_pub_send(sd_kafka_pub *p, const char *topic, int32_t partition, int32_t label, const void *msg,
                            size_t len) {
    if (!p || !topic || (!msg && len)) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_pub_send needs a publisher, a topic and bytes");
    uint8_t key[4] = {(uint8_t)label, (uint8_t)(label >> 8), (uint8_t)(label >> 16), (uint8_t)((uint32_t)label >> 24)};
    void *kp = label >= 0 ? key : NULL;
    size_t kl = label >= 0 ? sizeof key : 0;
    double deadline = 0;
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
            RD_KAFKA_V_VALUE((void *)msg, len), RD_KAFKA_V_KEY(kp, kl),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (!e) break;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return SD_FAIL(SD_ERR_IO, "%s: could not queue a record for %s: %s", p->name, topic, rd_kafka_err2str(e));
        if (deadline == 0) {
            deadline = sd_clock_now() + 10.0;
            atomic_fetch_add(&p->waits, 1);
        }
        if (sd_clock_now() > deadline) {
            char why[512];
            sd_loglimit_last(&p->ll, why, sizeof why, "no answer");
            return SD_FAIL(SD_ERR_IO, "%s: the send queue stayed full for 10 s: the brokers are not taking records (%s)",
                           p->name, why);
        }
        rd_kafka_poll(p->rk, 10);
    }
    atomic_fetch_add(&p->sent, 1);
    rd_kafka_poll(p->rk, 0);
    return SD_OK;
}

void sd_kafka_pub_poll(sd_kafka_pub *p) {
    if (p && p->rk) rd_kafka_poll(p->rk, 0);
}

sd_status sd_kafka_pub_flush(sd_kafka_pub *p, double timeout_s) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_pub_flush: no publisher");
    rd_kafka_flush(p->rk, ms_of(timeout_s));
    int left = rd_kafka_outq_len(p->rk);
    uint64_t failed = atomic_load(&p->failed);
    char why[512];
    sd_loglimit_last(&p->ll, why, sizeof why, "no answer");
    if (left > 0)
        return SD_FAIL(SD_ERR_IO, "%s: %d records still undelivered after %.1f s (last problem: %s)", p->name, left,
                       timeout_s, why);
    if (failed)
        return SD_FAIL(SD_ERR_IO, "%s: %llu records could not be delivered (last problem: %s)", p->name,
                       (unsigned long long)failed, why);
    return SD_OK;
}

void sd_kafka_pub_get_stats(sd_kafka_pub *p, sd_kafka_pub_stats *out) {
    memset(out, 0, sizeof *out);
    if (!p) return;
    out->sent = atomic_load(&p->sent);
    out->delivered = atomic_load(&p->delivered);
    out->failed = atomic_load(&p->failed);
    out->queue_full_waits = atomic_load(&p->waits);
    sd_loglimit_last(&p->ll, out->last_error, sizeof out->last_error, "");
}

void sd_kafka_pub_destroy(sd_kafka_pub *p) {
    if (!p) return;
    if (p->rk) {
        rd_kafka_flush(p->rk, 2000);
        rd_kafka_destroy(p->rk);
    }
    conn_free(&p->conn);
    sd_loglimit_destroy(&p->ll);
    free(p);
}

#endif /* SCADLES_HAVE_KAFKA */
