/* mqtt_client.c: what the MQTT source (mqtt_source.c) and publisher (mqtt_publish.c) share: one
 * libmosquitto handle with its own network thread (connect, reconnect with backoff, keepalive),
 * the connection settings and their checks, and the failure messages of a first connection. */
#include "stream/mqtt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/loglimit.h"
#include "stream/mqtt_internal.h"

bool sd_mqtt_available(void) { return true; }

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void) { mosquitto_lib_init(); }
static atomic_uint client_counter;

char *sd_mqtt_dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* An absolute CLOCK_MONOTONIC time s seconds from now, for condition waits. */
struct timespec sd_mqtt_mono_in(double s) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (s < 0) s = 0;
    if (s > 1e6) s = 1e6;
    long long ns = (long long)t.tv_nsec + (long long)((s - (double)(long long)s) * 1e9);
    t.tv_sec += (time_t)s + (time_t)(ns / 1000000000LL);
    t.tv_nsec = (long)(ns % 1000000000LL);
    return t;
}

void sd_mqtt_cond_init_mono(pthread_cond_t *c) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

void sd_mqtt_note(loglim *l, bool quiet, const char *who, const char *fmt, ...) {
    if (quiet) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sd_loglimit_note(l, false, false, who, line);
}

sd_status sd_mqtt_client_init(client *c, const sd_mqtt_conn *k, const char *role, const char *label) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    sd_mqtt_cond_init_mono(&c->cv);
    sd_loglimit_init(&c->ll);
    c->granted = -1;
    bool tls = (k->cafile && k->cafile[0]) || (k->capath && k->capath[0]);
    c->host = sd_mqtt_dup_str(k->host && k->host[0] ? k->host : "localhost");
    c->port = k->port ? k->port : (tls ? 8883 : 1883);
    char id[128];
    if (k->client_id && k->client_id[0])
        snprintf(id, sizeof id, "%s", k->client_id);
    else
        snprintf(id, sizeof id, "scadles-%s-%ld-%u", role, (long)getpid(), atomic_fetch_add(&client_counter, 1));
    c->client_id = sd_mqtt_dup_str(id);
    c->username = sd_mqtt_dup_str(k->username);
    c->password = sd_mqtt_dup_str(k->password);
    c->cafile = sd_mqtt_dup_str(k->cafile && k->cafile[0] ? k->cafile : NULL);
    c->capath = sd_mqtt_dup_str(k->capath && k->capath[0] ? k->capath : NULL);
    c->certfile = sd_mqtt_dup_str(k->certfile);
    c->keyfile = sd_mqtt_dup_str(k->keyfile);
    c->tls_version = sd_mqtt_dup_str(k->tls_version);
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

void sd_mqtt_client_free(client *c) {
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

sd_status sd_mqtt_conn_check(const sd_mqtt_conn *k, const char *what) {
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
        if (again) sd_mqtt_note(&c->ll, c->quiet, c->name, "reconnected to %s", c->where);
        if (c->sub_topic) {
            int e = mosquitto_subscribe(mosq, NULL, c->sub_topic, c->sub_qos);
            if (e != MOSQ_ERR_SUCCESS)
                sd_mqtt_note(&c->ll, c->quiet, c->name, "could not subscribe to %s: %s", c->sub_topic, mosquitto_strerror(e));
        }
        pthread_mutex_lock(&c->mu);
    } else {
        c->refused = true; /* the network thread counts the failed attempt when the broker closes it */
        snprintf(c->refusal, sizeof c->refusal, "%s", mosquitto_connack_string(rc));
        size_t rl = strlen(c->refusal);
        if (rl && c->refusal[rl - 1] == '.') c->refusal[rl - 1] = 0;
        snprintf(c->last_err, sizeof c->last_err, "refused: %.200s", c->refusal);
        sd_mqtt_note(&c->ll, c->quiet, c->name, "the broker at %s refused the connection: %s", c->where, c->refusal);
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
            sd_mqtt_note(&c->ll, c->quiet, c->name, "the broker granted QoS %d for %s (asked for %d)", granted[0], c->sub_topic,
                 c->sub_qos);
    } else {
        c->sub_refused = true;
        snprintf(c->last_err, sizeof c->last_err, "subscription to %s refused (not authorised for the topic?)",
                 c->sub_topic ? c->sub_topic : "?");
        sd_mqtt_note(&c->ll, c->quiet, c->name, "%s", c->last_err);
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
        sd_mqtt_note(&c->ll, c->quiet, c->name, "lost the connection to %s (%s); reconnecting with backoff %.2g..%.2g s", c->where,
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
            struct timespec until = sd_mqtt_mono_in(backoff);
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
                sd_mqtt_note(&c->ll, c->quiet, c->name, "still cannot connect to %s (%s); retrying every %.2g s", c->where,
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
void sd_mqtt_client_close(client *c) {
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
sd_status sd_mqtt_client_open(client *c) {
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
            sd_mqtt_client_close(c);
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
        sd_mqtt_client_close(c);
        return SD_FAIL(SD_ERR_RUNTIME, "%s: could not start the MQTT network thread (error %d)", c->name, prc);
    }
    c->thread_started = true;
    pthread_mutex_lock(&c->mu);
    struct timespec until = sd_mqtt_mono_in(c->timeout_s);
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
    sd_mqtt_client_close(c);
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
