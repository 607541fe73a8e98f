/* kafka_config.c: what the Kafka consumer (kafka_source.c) and producer (kafka_publish.c) share:
 * the owned copy of the connection settings, building and checking a librdkafka configuration
 * (each pair, the files it names, a trial handle), and waiting for the brokers' metadata. */
#include "stream/kafka.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/kafka_internal.h"

bool sd_kafka_available(void) { return true; }

char *sd_kafka_dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int sd_kafka_ms_of(double s) {
    if (!(s > 0)) return 0;
    if (s > 1e6) return 1000000000;
    return (int)(s * 1000 + 0.5);
}

void sd_kafka_note(loglim *l, bool quiet, bool remember, const char *who, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sd_loglimit_note(l, quiet, remember, who, line);
}

/* Sets every property on conf; SD_ERR_INVALID with librdkafka's reason for a bad one. */
sd_status sd_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *val) {
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
        TRY(sd_kafka_conf_set(conf, key, eq + 1));
    }
    return SD_OK;
}

sd_status sd_kafka_conn_check(const sd_kafka_conn *c) {
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


void sd_kafka_conn_free(conn_copy *c) {
    free(c->bootstrap);
    for (size_t i = 0; i < c->n_conf; i++) free(c->conf[i]);
    free(c->conf);
    memset(c, 0, sizeof *c);
}

sd_status sd_kafka_conn_copy_from(conn_copy *d, const sd_kafka_conn *c) {
    memset(d, 0, sizeof *d);
    d->connect_timeout_s = c->connect_timeout_s > 0 ? c->connect_timeout_s : 10.0;
    d->quiet = c->quiet;
    d->bootstrap = sd_kafka_dup_str(c->bootstrap);
    d->conf = calloc(c->n_conf ? c->n_conf : 1, sizeof *d->conf);
    if ((c->bootstrap && !d->bootstrap) || !d->conf) goto oom;
    for (size_t i = 0; i < c->n_conf; i++) {
        if (!(d->conf[i] = sd_kafka_dup_str(c->conf[i]))) goto oom;
        d->n_conf = i + 1;
    }
    return SD_OK;
oom:
    sd_kafka_conn_free(d);
    return SD_FAIL(SD_ERR_OOM, "out of memory copying the Kafka settings");
}

/* The brokers as a message names them. */
const char *sd_kafka_conn_where(const conn_copy *c) {
    if (c->bootstrap && c->bootstrap[0]) return c->bootstrap;
    for (size_t i = 0; i < c->n_conf; i++)
        if (!strncmp(c->conf[i], "bootstrap.servers=", 18)) return c->conf[i] + 18;
    return "(no brokers)";
}

/* A new conf with the brokers, our defaults and then the user's pairs (so they can override them). */
sd_status sd_kafka_conf_build(const conn_copy *c, void *opaque, const char *const *defaults, size_t n_defaults,
                              rd_kafka_conf_t **out) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) return SD_FAIL(SD_ERR_OOM, "out of memory for a Kafka configuration");
    sd_status s = SD_OK;
    if (c->bootstrap && c->bootstrap[0]) s = sd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap);
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

sd_status sd_kafka_conf_trial(rd_kafka_conf_t *conf, rd_kafka_type_t type, const char *who) {
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
rd_kafka_resp_err_t sd_kafka_wait_metadata(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t need_partition,
                                           double timeout_s, bool serve_poll, bool *topic_missing, int *partitions) {
    double deadline = sd_clock_now() + timeout_s;
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR__TIMED_OUT;
    *topic_missing = false;
    if (partitions) *partitions = 0;
    for (;;) {
        double left = deadline - sd_clock_now();
        if (left <= 0) return last;
        const struct rd_kafka_metadata *md = NULL;
        int ms = sd_kafka_ms_of(left < 1.0 ? left : 1.0);
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
