/* kafka_publish.c: the Kafka publisher (sd_kafka_pub_* in stream/kafka.h): a librdkafka producer
 * that waits for the brokers at create, creates topics, sends records keyed by label and counts
 * deliveries. */
#include "stream/kafka.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/kafka_internal.h"

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
        sd_kafka_note(&p->ll, p->conn.quiet, true, p->name, "delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
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
    sd_kafka_note(&p->ll, p->conn.quiet, true, p->name, "librdkafka %s: %s", fac, buf);
}

static void pub_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    sd_kafka_pub *p = opaque;
    sd_kafka_note(&p->ll, p->conn.quiet, true, p->name, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

sd_status sd_kafka_pub_create(const sd_kafka_conn *conn, sd_kafka_pub **out) {
    if (!conn || !out) return SD_FAIL(SD_ERR_INVALID, "sd_kafka_pub_create needs a connection and an output");
    *out = NULL;
    TRY(sd_kafka_conn_check(conn));
    sd_kafka_pub *p = calloc(1, sizeof *p);
    if (!p) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka publisher");
    sd_loglimit_init(&p->ll);
    sd_status s = sd_kafka_conn_copy_from(&p->conn, conn);
    if (s != SD_OK) {
        free(p);
        return s;
    }
    snprintf(p->name, sizeof p->name, "kafka publisher(%s)", sd_kafka_conn_where(&p->conn));
    rd_kafka_conf_t *conf = NULL;
    s = sd_kafka_conf_build(&p->conn, p, NULL, 0, &conf);
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
    rd_kafka_resp_err_t me = sd_kafka_wait_metadata(p->rk, NULL, -1, p->conn.connect_timeout_s, true, &missing, NULL);
    sd_loglimit_hold(&p->ll, false);
    if (me) {
        char why[512];
        sd_loglimit_last(&p->ll, why, sizeof why, "no answer");
        s = SD_FAIL(SD_ERR_IO,
                    "Kafka brokers at %s unreachable after %.1f s (%s; last: %s): start the brokers or fix the address "
                    "(--bootstrap host:port), and check the security settings (security.protocol, ssl.*, sasl.*)",
                    sd_kafka_conn_where(&p->conn), p->conn.connect_timeout_s, rd_kafka_err2str(me), why);
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
        rd_kafka_AdminOptions_set_request_timeout(o, sd_kafka_ms_of(timeout_s > 0 ? timeout_s : 10), err, sizeof err);
        rd_kafka_CreateTopics(p->rk, nt, n, o, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, sd_kafka_ms_of(timeout_s > 0 ? timeout_s : 10) + 1000);
        if (!ev) {
            s = SD_FAIL(SD_ERR_IO, "creating topics on %s: no answer within %.1f s", sd_kafka_conn_where(&p->conn), timeout_s);
        } else if (rd_kafka_event_error(ev)) {
            s = SD_FAIL(SD_ERR_IO, "creating topics on %s failed: %s", sd_kafka_conn_where(&p->conn), rd_kafka_event_error_string(ev));
        } else {
            const rd_kafka_CreateTopics_result_t *r = rd_kafka_event_CreateTopics_result(ev);
            size_t cnt = 0;
            const rd_kafka_topic_result_t **tr = r ? rd_kafka_CreateTopics_result_topics(r, &cnt) : NULL;
            for (size_t i = 0; i < cnt && s == SD_OK; i++) {
                rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
                if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                    s = SD_FAIL(SD_ERR_IO, "creating topic %s on %s failed: %s", rd_kafka_topic_result_name(tr[i]),
                                sd_kafka_conn_where(&p->conn),
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
    rd_kafka_flush(p->rk, sd_kafka_ms_of(timeout_s));
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
    sd_kafka_conn_free(&p->conn);
    sd_loglimit_destroy(&p->ll);
    free(p);
}
