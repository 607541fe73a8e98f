/* mqtt.c: the MQTT source and publisher over libmosquitto (mqtt.h; design in docs/brokers.md):
 * a client with its own network thread (connect, reconnect with backoff, keepalive), the source's
 * bounded queue between that thread and next(), and the publisher. Compiled to stubs returning
 * SD_ERR_UNSUPPORTED without SCADLES_HAVE_MQTT. */
#include "stream/mqtt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/message.h"
#include "stream/rate.h"

#define SD_MQTT_MISSING                                                                                          \
    "this build has no MQTT support: install libmosquitto (Debian: apt-get install libmosquitto-dev, and the " \
    "broker: mosquitto) and re-run cmake"

#ifndef SCADLES_HAVE_MQTT
/* ---- without libmosquitto -------------------------------------------------------------------- */
bool sd_mqtt_available(void) { return false; }
sd_status sd_mqtt_create(const sd_mqtt_config *c, sd_mqtt **out) {
    (void)c;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
void sd_mqtt_destroy(sd_mqtt *m) { (void)m; }
sd_source sd_mqtt_source(sd_mqtt *m) { return (sd_source){NULL, m}; }
void sd_mqtt_get_stats(sd_mqtt *m, sd_mqtt_stats *out) {
    (void)m;
    memset(out, 0, sizeof *out);
    out->granted_qos = -1;
}
sd_status sd_mqtt_pub_create(const sd_mqtt_conn *conn, int qos, sd_mqtt_pub **out) {
    (void)conn, (void)qos;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
sd_status sd_mqtt_pub_send(sd_mqtt_pub *p, const char *topic, const void *msg, size_t len) {
    (void)p, (void)topic, (void)msg, (void)len;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
sd_status sd_mqtt_pub_flush(sd_mqtt_pub *p, double timeout_s) {
    (void)p, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
uint64_t sd_mqtt_pub_outstanding(sd_mqtt_pub *p) {
    (void)p;
    return 0;
}
void sd_mqtt_pub_get_stats(sd_mqtt_pub *p, sd_mqtt_pub_stats *out) {
    (void)p;
    memset(out, 0, sizeof *out);
}
void sd_mqtt_pub_destroy(sd_mqtt_pub *p) { (void)p; }

#else
/* ---- with libmosquitto ----------------------------------------------------------------------- */
#include <mosquitto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

bool sd_mqtt_available(void) { return true; }

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void) { mosquitto_lib_init(); }
static atomic_uint client_counter;

static char *dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* An absolute CLOCK_MONOTONIC time s seconds from now, for condition waits. */
static struct timespec mono_in(double s) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (s < 0) s = 0;
    if (s > 1e6) s = 1e6;
    long long ns = (long long)t.tv_nsec + (long long)((s - (double)(long long)s) * 1e9);
    t.tv_sec += (time_t)s + (time_t)(ns / 1000000000LL);
    t.tv_nsec = (long)(ns % 1000000000LL);
    return t;
}

static void cond_init_mono(pthread_cond_t *c) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* A log line limit: 10 lines per 10 s per client, then a count. */
typedef sd_loglimit loglim; /* everything one client prints shares one rate limit */

static void note(loglim *l, bool quiet, const char *who, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void note(loglim *l, bool quiet, const char *who, const char *fmt, ...) {
    if (quiet) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sd_loglimit_note(l, false, false, who, line);
}

/* ================================================================================================
 * the client: one libmosquitto handle and the network thread that keeps it connected
 * ================================================================================================ */
typedef struct client {
    /* settings (owned copies) */
    char *host, *client_id, *username, *password, *cafile, *capath, *certfile, *keyfile, *tls_version;
    int port, keepalive, attempts;
    double timeout_s, bmin, bmax;
    bool tls_insecure, quiet, clean;
    char name[300];  /* "mqtt(trainer-3)" or "mqtt publisher" */
    char where[300]; /* host:port */
    const char *sub_topic; /* subscribe to this on every connection (the source) */
    int sub_qos;
    void (*on_msg)(void *owner, const struct mosquitto_message *m);
    void (*on_pub)(void *owner);
    void *owner;

    struct mosquitto *mosq;
    pthread_t thread;
    bool thread_started;
    loglim ll;

    pthread_mutex_t mu; /* below */
    pthread_cond_t cv;  /* any change of the connection state */
    bool stop, have_socket, connected, subscribed, refused, sub_refused, attempt_ok;
    int granted;
    uint64_t connects, disconnects, failures;
    int failed_since_ok;
    char last_err[256], refusal[256];
} client;

static sd_status client_init(client *c, const sd_mqtt_conn *k, const char *role, const char *label) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->cv);
    sd_loglimit_init(&c->ll);
    c->granted = -1;
    bool tls = (k->cafile && k->cafile[0]) || (k->capath && k->capath[0]);
    c->host = dup_str(k->host && k->host[0] ? k->host : "localhost");
    c->port = k->port ? k->port : (tls ? 8883 : 1883);
    char id[128];
    if (k->client_id && k->client_id[0])
        snprintf(id, sizeof id, "%s", k->client_id);
    else
        snprintf(id, sizeof id, "scadles-%s-%ld-%u", role, (long)getpid(), atomic_fetch_add(&client_counter, 1));
    c->client_id = dup_str(id);
    c->username = dup_str(k->username);
    c->password = dup_str(k->password);
    c->cafile = dup_str(k->cafile && k->cafile[0] ? k->cafile : NULL);
    c->capath = dup_str(k->capath && k->capath[0] ? k->capath : NULL);
    c->certfile = dup_str(k->certfile);
    c->keyfile = dup_str(k->keyfile);
    c->tls_version = dup_str(k->tls_version);
    c->keepalive = k->keepalive_s ? k->keepalive_s : 10;
    c->attempts = k->connect_attempts ? k->connect_attempts : 5;
    c->timeout_s = k->connect_timeout_s > 0 ? k->connect_timeout_s : 10.0;
    c->bmin = k->reconnect_min_s > 0 ? k->reconnect_min_s : 0.1;
    c->bmax = k->reconnect_max_s > 0 ? k->reconnect_max_s : 5.0;
    if (c->bmax < c->bmin) c->bmax = c->bmin;
    c->tls_insecure = k->tls_insecure;
    c->quiet = k->quiet;
    c->clean = true;
    snprintf(c->where, sizeof c->where, "%s:%d", c->host, c->port);
    snprintf(c->name, sizeof c->name, "%s", label);
    if (!c->host || !c->client_id || (k->username && !c->username) || (k->password && !c->password) ||
        (k->certfile && !c->certfile) || (k->keyfile && !c->keyfile) || (k->tls_version && !c->tls_version))
        return SD_FAIL(SD_ERR_OOM, "out of memory copying the MQTT settings");
    return SD_OK;
}

static void client_free(client *c) {
    free(c->host);
    free(c->client_id);
    free(c->username);
    free(c->password);
    free(c->cafile);
    free(c->capath);
    free(c->certfile);
    free(c->keyfile);
    free(c->tls_version);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    sd_loglimit_destroy(&c->ll);
}

static sd_status conn_check(const sd_mqtt_conn *k, const char *what) {
    if (k->port < 0 || k->port > 65535) return SD_FAIL(SD_ERR_INVALID, "%s: port %d must lie in 1..65535", what, k->port);
    if (k->keepalive_s < 0 || k->keepalive_s == 1 || k->keepalive_s > 65535)
        return SD_FAIL(SD_ERR_INVALID, "%s: keepalive_s %d must lie in 2..65535 (0: 10)", what, k->keepalive_s);
    if (k->connect_attempts < 0 || k->connect_attempts > 1000)
        return SD_FAIL(SD_ERR_INVALID, "%s: connect_attempts %d must lie in 0..1000 (0: 5)", what, k->connect_attempts);
    if (!(k->connect_timeout_s >= 0) || k->connect_timeout_s > 3600)
        return SD_FAIL(SD_ERR_INVALID, "%s: connect_timeout_s %g must lie in [0, 3600] (0: 10)", what, k->connect_timeout_s);
    if (!(k->reconnect_min_s >= 0) || !(k->reconnect_max_s >= 0) || k->reconnect_max_s > 3600)
        return SD_FAIL(SD_ERR_INVALID, "%s: reconnect backoff %g..%g s out of range", what, k->reconnect_min_s,
                       k->reconnect_max_s);
    bool tls = (k->cafile && k->cafile[0]) || (k->capath && k->capath[0]);
    if (!tls && ((k->certfile && k->certfile[0]) || (k->keyfile && k->keyfile[0]) || k->tls_insecure || k->tls_version))
        return SD_FAIL(SD_ERR_INVALID,
                       "%s: TLS options need the broker's CA (cafile or capath: the certificate that signed the broker's)",
                       what);
    if ((k->certfile && k->certfile[0]) != (k->keyfile && k->keyfile[0]))
        return SD_FAIL(SD_ERR_INVALID, "%s: a client certificate needs its key and the key its certificate (certfile and keyfile)",
                       what);
    if (k->password && !k->username) return SD_FAIL(SD_ERR_INVALID, "%s: a password needs a username", what);
    return SD_OK;
}

/* ---- callbacks (the network thread, inside mosquitto_loop) -------------------------------------- */
static void cb_connect(struct mosquitto *mosq, void *obj, int rc) {
    client *c = obj;
    pthread_mutex_lock(&c->mu);
    if (rc == 0) {
        c->connected = true;
        c->attempt_ok = true;
        c->connects++;
        c->failed_since_ok = 0;
        bool again = c->connects > 1;
        pthread_mutex_unlock(&c->mu);
        if (again) note(&c->ll, c->quiet, c->name, "reconnected to %s", c->where);
        if (c->sub_topic) {
            int e = mosquitto_subscribe(mosq, NULL, c->sub_topic, c->sub_qos);
            if (e != MOSQ_ERR_SUCCESS)
                note(&c->ll, c->quiet, c->name, "could not subscribe to %s: %s", c->sub_topic, mosquitto_strerror(e));
        }
        pthread_mutex_lock(&c->mu);
    } else {
        c->refused = true; /* the network thread counts the failed attempt when the broker closes it */
        snprintf(c->refusal, sizeof c->refusal, "%s", mosquitto_connack_string(rc));
        size_t rl = strlen(c->refusal);
        if (rl && c->refusal[rl - 1] == '.') c->refusal[rl - 1] = 0;
        snprintf(c->last_err, sizeof c->last_err, "refused: %.200s", c->refusal);
        note(&c->ll, c->quiet, c->name, "the broker at %s refused the connection: %s", c->where, c->refusal);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void cb_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted) {
    (void)mosq, (void)mid;
    client *c = obj;
    pthread_mutex_lock(&c->mu);
    if (n >= 1 && granted[0] >= 0 && granted[0] <= 2) {
        c->subscribed = true;
        c->granted = granted[0];
        if (granted[0] < c->sub_qos)
            note(&c->ll, c->quiet, c->name, "the broker granted QoS %d for %s (asked for %d)", granted[0], c->sub_topic,
                 c->sub_qos);
    } else {
        c->sub_refused = true;
        snprintf(c->last_err, sizeof c->last_err, "subscription to %s refused (not authorised for the topic?)",
                 c->sub_topic ? c->sub_topic : "?");
        note(&c->ll, c->quiet, c->name, "%s", c->last_err);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc) {
    (void)mosq;
    client *c = obj;
    pthread_mutex_lock(&c->mu);
    bool lost = c->connected && rc != 0 && !c->stop;
    if (lost) c->disconnects++;
    c->connected = false;
    c->subscribed = false;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (lost)
        note(&c->ll, c->quiet, c->name, "lost the connection to %s (%s); reconnecting with backoff %.2g..%.2g s", c->where,
             mosquitto_strerror(rc), c->bmin, c->bmax);
}

static void cb_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m) {
    (void)mosq;
    client *c = obj;
    if (c->on_msg) c->on_msg(c->owner, m);
}

static void cb_publish(struct mosquitto *mosq, void *obj, int mid) {
    (void)mosq, (void)mid;
    client *c = obj;
    if (c->on_pub) c->on_pub(c->owner);
}

static void set_err(client *c, int rc, int en) {
    pthread_mutex_lock(&c->mu);
    if (rc == MOSQ_ERR_ERRNO)
        snprintf(c->last_err, sizeof c->last_err, "%s", strerror(en));
    else if (rc == MOSQ_ERR_EAI)
        snprintf(c->last_err, sizeof c->last_err, "cannot resolve host name %s", c->host);
    else
        snprintf(c->last_err, sizeof c->last_err, "%s", mosquitto_strerror(rc));
    pthread_mutex_unlock(&c->mu);
}

/* The network thread: runs mosquitto_loop while connected, reconnects with backoff otherwise. */
static void *client_main(void *arg) {
    client *c = arg;
    double backoff = c->bmin;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool stop = c->stop, sock = c->have_socket;
        pthread_mutex_unlock(&c->mu);
        if (stop) break;
        if (!sock) {
            pthread_mutex_lock(&c->mu);
            struct timespec until = mono_in(backoff);
            while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT) {
            }
            stop = c->stop;
            c->attempt_ok = false;
            pthread_mutex_unlock(&c->mu);
            if (stop) break;
            errno = 0;
            int rc = mosquitto_reconnect_async(c->mosq);
            int en = errno;
            if (rc != MOSQ_ERR_SUCCESS) {
                set_err(c, rc, en);
                pthread_mutex_lock(&c->mu);
                c->failures++;
                c->failed_since_ok++;
                pthread_cond_broadcast(&c->cv);
                pthread_mutex_unlock(&c->mu);
                backoff = backoff * 2 < c->bmax ? backoff * 2 : c->bmax;
                continue;
            }
            pthread_mutex_lock(&c->mu);
            c->have_socket = true;
            pthread_mutex_unlock(&c->mu);
        }
        errno = 0;
        int rc = mosquitto_loop(c->mosq, 50, 1);
        int en = errno;
        if (rc != MOSQ_ERR_SUCCESS) {
            set_err(c, rc, en);
            pthread_mutex_lock(&c->mu);
            bool was_ok = c->attempt_ok;
            if (!was_ok) {
                c->failures++;
                c->failed_since_ok++;
            }
            c->have_socket = false;
            c->connected = false;
            c->subscribed = false;
            pthread_cond_broadcast(&c->cv);
            pthread_mutex_unlock(&c->mu);
            backoff = was_ok ? c->bmin : (backoff * 2 < c->bmax ? backoff * 2 : c->bmax);
            if (!was_ok && backoff == c->bmax)
                note(&c->ll, c->quiet, c->name, "still cannot connect to %s (%s); retrying every %.2g s", c->where,
                     c->last_err, c->bmax);
        } else {
            pthread_mutex_lock(&c->mu);
            if (c->connected) backoff = c->bmin;
            pthread_mutex_unlock(&c->mu);
        }
    }
    return NULL;
}

/* Makes the libmosquitto handle with every option set. */
static sd_status client_make(client *c) {
    pthread_once(&lib_once, lib_init);
    c->mosq = mosquitto_new(c->client_id, c->clean, c);
    if (!c->mosq)
        return SD_FAIL(errno == EINVAL ? SD_ERR_INVALID : SD_ERR_OOM, "%s: could not create an MQTT client (%s)", c->name,
                       errno == EINVAL ? "a persistent session needs a client id" : "out of memory");
    mosquitto_threaded_set(c->mosq, true);
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_connect_callback_set(c->mosq, cb_connect);
    mosquitto_disconnect_callback_set(c->mosq, cb_disconnect);
    mosquitto_subscribe_callback_set(c->mosq, cb_subscribe);
    mosquitto_message_callback_set(c->mosq, cb_message);
    mosquitto_publish_callback_set(c->mosq, cb_publish);
    int rc;
    if (c->username && (rc = mosquitto_username_pw_set(c->mosq, c->username, c->password)) != MOSQ_ERR_SUCCESS)
        return SD_FAIL(SD_ERR_INVALID, "%s: username/password: %s", c->name, mosquitto_strerror(rc));
    if (c->cafile || c->capath) {
        rc = mosquitto_tls_set(c->mosq, c->cafile, c->capath, c->certfile, c->keyfile, NULL);
        if (rc != MOSQ_ERR_SUCCESS)
            return SD_FAIL(SD_ERR_INVALID, "%s: TLS settings (cafile %s, capath %s, certfile %s, keyfile %s): %s", c->name,
                           c->cafile ? c->cafile : "-", c->capath ? c->capath : "-", c->certfile ? c->certfile : "-",
                           c->keyfile ? c->keyfile : "-",
                           rc == MOSQ_ERR_INVAL ? "a file is missing or unreadable" : mosquitto_strerror(rc));
        if (c->tls_version && (rc = mosquitto_tls_opts_set(c->mosq, 1, c->tls_version, NULL)) != MOSQ_ERR_SUCCESS)
            return SD_FAIL(SD_ERR_INVALID, "%s: TLS version %s: %s", c->name, c->tls_version, mosquitto_strerror(rc));
        if (c->tls_insecure) mosquitto_tls_insecure_set(c->mosq, true);
    }
    return SD_OK;
}

static void client_join(client *c) {
    if (!c->thread_started) return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    c->thread_started = false;
}

/* Disconnects and frees the handle. */
static void client_close(client *c) {
    client_join(c);
    if (c->mosq) {
        pthread_mutex_lock(&c->mu);
        bool conn = c->connected;
        pthread_mutex_unlock(&c->mu);
        if (conn) {
            mosquitto_disconnect(c->mosq);
            mosquitto_loop(c->mosq, 20, 1); /* writes the DISCONNECT */
        }
        mosquitto_destroy(c->mosq);
        c->mosq = NULL;
    }
    pthread_mutex_lock(&c->mu);
    c->connected = c->subscribed = c->have_socket = false;
    pthread_mutex_unlock(&c->mu);
}

/* Connects (and subscribes), bounded by attempts and the timeout; starts the network thread. */
static sd_status client_open(client *c) {
    TRY(client_make(c));
    pthread_mutex_lock(&c->mu);
    c->stop = c->refused = c->sub_refused = c->connected = c->subscribed = c->attempt_ok = false;
    c->failed_since_ok = 0;
    c->granted = -1;
    c->last_err[0] = 0;
    pthread_mutex_unlock(&c->mu);
    double t0 = sd_clock_now();
    errno = 0;
    int rc = mosquitto_connect_async(c->mosq, c->host, c->port, c->keepalive);
    int en = errno;
    pthread_mutex_lock(&c->mu);
    c->have_socket = rc == MOSQ_ERR_SUCCESS;
    pthread_mutex_unlock(&c->mu);
    if (rc != MOSQ_ERR_SUCCESS) {
        if (rc == MOSQ_ERR_INVAL) {
            sd_status s = SD_FAIL(SD_ERR_INVALID, "%s: bad broker address %s", c->name, c->where);
            client_close(c);
            return s;
        }
        set_err(c, rc, en);
        pthread_mutex_lock(&c->mu);
        c->failures++;
        c->failed_since_ok++;
        pthread_mutex_unlock(&c->mu);
    }
    int prc = pthread_create(&c->thread, NULL, client_main, c);
    if (prc) {
        client_close(c);
        return SD_FAIL(SD_ERR_RUNTIME, "%s: could not start the MQTT network thread (error %d)", c->name, prc);
    }
    c->thread_started = true;
    pthread_mutex_lock(&c->mu);
    struct timespec until = mono_in(c->timeout_s);
    bool timed_out = false;
    while (!(c->connected && (!c->sub_topic || c->subscribed)) && !c->refused && !c->sub_refused &&
           c->failed_since_ok < c->attempts && !timed_out)
        timed_out = pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT;
    bool ok = c->connected && (!c->sub_topic || c->subscribed);
    bool refused = c->refused, sub_refused = c->sub_refused;
    int failed = c->failed_since_ok;
    char last[256], refusal[256];
    snprintf(last, sizeof last, "%s", c->last_err[0] ? c->last_err : "no answer");
    snprintf(refusal, sizeof refusal, "%s", c->refusal);
    pthread_mutex_unlock(&c->mu);
    if (ok) return SD_OK;
    double took = sd_clock_now() - t0;
    client_close(c);
    if (refused && c->username)
        return SD_FAIL(SD_ERR_IO,
                       "%s: the MQTT broker at %s refused the connection for user '%s': %s: check the username and "
                       "password (--username/--password) against the broker's password file",
                       c->name, c->where, c->username, refusal);
    if (refused)
        return SD_FAIL(SD_ERR_IO,
                       "%s: the MQTT broker at %s refused the anonymous connection: %s: give a username and password "
                       "(--username/--password) the broker knows",
                       c->name, c->where, refusal);
    if (sub_refused)
        return SD_FAIL(SD_ERR_IO, "%s: the MQTT broker at %s refused the subscription to %s: check its ACL for this user",
                       c->name, c->where, c->sub_topic);
    if (strstr(last, "TLS"))
        return SD_FAIL(SD_ERR_IO,
                       "%s: no TLS connection to the MQTT broker at %s: %d attempt%s failed in %.1f s (last: %s): check the "
                       "CA file (it must have signed the broker's certificate), the host name the certificate names, "
                       "that the port is the broker's TLS listener%s",
                       c->name, c->where, failed, failed == 1 ? "" : "s", took, last,
                       c->certfile ? ", and that the broker accepts the client certificate"
                                   : ", and whether the broker requires a client certificate (--certfile/--keyfile)");
    bool tls = c->cafile || c->capath;
    if (tls && strstr(last, "connection was lost")) /* TCP connected, then the broker hung up: the TLS handshake */
        return SD_FAIL(SD_ERR_IO,
                       "%s: the MQTT broker at %s closed the TLS connection: %d attempt%s failed in %.1f s (last: %s): %s; "
                       "also check the CA file and that the port is the broker's TLS listener",
                       c->name, c->where, failed, failed == 1 ? "" : "s", took, last,
                       c->certfile ? "check that the broker accepts the client certificate (signed by its CA)"
                                   : "if the broker requires a client certificate, give one (--certfile/--keyfile)");
    return SD_FAIL(SD_ERR_IO,
                   "%s: MQTT broker at %s unreachable: %d connection attempt%s failed in %.1f s (last: %s): start the "
                   "broker (e.g. mosquitto -p %d) or fix the address (--host/--port)%s",
                   c->name, c->where, failed, failed == 1 ? "" : "s", took, last, c->port,
                   c->cafile || c->capath ? "; with TLS, check the CA file and that the port is the broker's TLS listener" : "");
}

/* ================================================================================================
 * the source
 * ================================================================================================ */
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
        note(&m->c.ll, m->c.quiet, m->c.name, "dropped a %zu-byte message: over the %zu-byte limit (oversized)", len,
             m->max_bytes);
        return;
    }
    if (m->qn == m->qcap && m->overflow == SD_MQTT_OVERFLOW_BLOCK && msg->qos > 0) {
        double t0 = sd_clock_now();
        struct timespec until = mono_in(m->block_s);
        while (m->qn == m->qcap && !m->closing && pthread_cond_timedwait(&m->room, &m->qmu, &until) != ETIMEDOUT) {
        }
        m->st.blocked_s += sd_clock_now() - t0;
    }
    if (m->qn == m->qcap) {
        m->st.queue_dropped++;
        uint64_t n = m->st.queue_dropped;
        pthread_mutex_unlock(&m->qmu);
        note(&m->c.ll, m->c.quiet, m->c.name, "internal queue full (%zu messages): dropped a message (%llu so far)",
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
            note(&m->c.ll, m->c.quiet, m->c.name, "out of memory queueing a %zu-byte message: dropped", len);
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
    return client_open(&m->c);
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
        note(&m->c.ll, m->c.quiet, m->c.name, "dropped a message (header seq %llu): %s", (unsigned long long)m->prev_seq,
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
        struct timespec until = mono_in(timeout_s);
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
    client_close(&m->c);
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
    TRY(conn_check(&c->conn, what));
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
    cond_init_mono(&m->avail);
    cond_init_mono(&m->room);
    char label[300];
    snprintf(label, sizeof label, "mqtt(%.200s)", c->topic);
    sd_status s = client_init(&m->c, &c->conn, "sub", label);
    m->topic = dup_str(c->topic);
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
    client_free(&m->c);
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

/* ================================================================================================
 * the publisher
 * ================================================================================================ */
struct sd_mqtt_pub {
    client c;
    int qos;
    atomic_uint_least64_t sent, completed, failed;
};

static void pub_on_pub(void *owner) {
    sd_mqtt_pub *p = owner;
    atomic_fetch_add(&p->completed, 1);
    pthread_mutex_lock(&p->c.mu);
    pthread_cond_broadcast(&p->c.cv);
    pthread_mutex_unlock(&p->c.mu);
}

sd_status sd_mqtt_pub_create(const sd_mqtt_conn *conn, int qos, sd_mqtt_pub **out) {
    if (!conn || !out) return SD_FAIL(SD_ERR_INVALID, "sd_mqtt_pub_create needs a connection and an output");
    *out = NULL;
    TRY(conn_check(conn, "MQTT publisher"));
    if (qos < 0 || qos > 2) return SD_FAIL(SD_ERR_INVALID, "MQTT publisher: qos %d must be 0, 1 or 2", qos);
    sd_mqtt_pub *p = calloc(1, sizeof *p);
    if (!p) return SD_FAIL(SD_ERR_OOM, "out of memory for an MQTT publisher");
    sd_status s = client_init(&p->c, conn, "pub", "mqtt publisher");
    p->qos = qos;
    p->c.on_pub = pub_on_pub;
    p->c.owner = p;
    if (s == SD_OK) s = client_open(&p->c);
    if (s != SD_OK) {
        client_free(&p->c);
        free(p);
        return s;
    }
    *out = p;
    return SD_OK;
}

sd_status sd_mqtt_pub_send(sd_mqtt_pub *p, const char *topic, const void *msg, size_t len) {
    if (!p || !topic || (!msg && len)) return SD_FAIL(SD_ERR_INVALID, "sd_mqtt_pub_send needs a publisher, a topic and bytes");
    if (len > 268435455u) return SD_FAIL(SD_ERR_INVALID, "MQTT publisher: a %zu-byte message is over MQTT's limit", len);
    pthread_mutex_lock(&p->c.mu);
    bool up = p->c.connected;
    pthread_mutex_unlock(&p->c.mu);
    int rc = up ? mosquitto_publish(p->c.mosq, NULL, topic, (int)len, msg, p->qos, false) : MOSQ_ERR_NO_CONN;
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_add(&p->failed, 1);
        if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST)
            return SD_FAIL(SD_ERR_IO, "MQTT publisher: not connected to %s (reconnecting); message to %s not sent",
                           p->c.where, topic);
        return SD_FAIL(SD_ERR_IO, "MQTT publisher: publishing to %s on %s failed: %s", topic, p->c.where,
                       mosquitto_strerror(rc));
    }
    atomic_fetch_add(&p->sent, 1);
    return SD_OK;
}

uint64_t sd_mqtt_pub_outstanding(sd_mqtt_pub *p) {
    if (!p) return 0;
    uint64_t s = atomic_load(&p->sent), c = atomic_load(&p->completed);
    return s > c ? s - c : 0;
}

sd_status sd_mqtt_pub_flush(sd_mqtt_pub *p, double timeout_s) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "sd_mqtt_pub_flush: no publisher");
    pthread_mutex_lock(&p->c.mu);
    struct timespec until = mono_in(timeout_s);
    while (sd_mqtt_pub_outstanding(p) && pthread_cond_timedwait(&p->c.cv, &p->c.mu, &until) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&p->c.mu);
    uint64_t left = sd_mqtt_pub_outstanding(p);
    if (left)
        return SD_FAIL(SD_ERR_IO, "MQTT publisher: %llu messages to %s not completed within %.1f s",
                       (unsigned long long)left, p->c.where, timeout_s);
    return SD_OK;
}

void sd_mqtt_pub_get_stats(sd_mqtt_pub *p, sd_mqtt_pub_stats *out) {
    memset(out, 0, sizeof *out);
    if (!p) return;
    out->sent = atomic_load(&p->sent);
    out->completed = atomic_load(&p->completed);
    out->failed = atomic_load(&p->failed);
    pthread_mutex_lock(&p->c.mu);
    out->connects = p->c.connects;
    out->disconnects = p->c.disconnects;
    out->connect_failures = p->c.failures;
    out->connected = p->c.connected;
    pthread_mutex_unlock(&p->c.mu);
}

void sd_mqtt_pub_destroy(sd_mqtt_pub *p) {
    if (!p) return;
    client_close(&p->c);
    client_free(&p->c);
    free(p);
}

#endif /* SCADLES_HAVE_MQTT */
