/* mqtt_publish.c: the MQTT publisher (sd_mqtt_pub_* in stream/mqtt.h): a client without a
 * subscription that publishes encoded messages at a QoS and counts completions. */
#include "stream/mqtt.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "stream/mqtt_internal.h"

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
    TRY(sd_mqtt_conn_check(conn, "MQTT publisher"));
    if (qos < 0 || qos > 2) return SD_FAIL(SD_ERR_INVALID, "MQTT publisher: qos %d must be 0, 1 or 2", qos);
    sd_mqtt_pub *p = calloc(1, sizeof *p);
    if (!p) return SD_FAIL(SD_ERR_OOM, "out of memory for an MQTT publisher");
    sd_status s = sd_mqtt_client_init(&p->c, conn, "pub", "mqtt publisher");
    p->qos = qos;
    p->c.on_pub = pub_on_pub;
    p->c.owner = p;
    if (s == SD_OK) s = sd_mqtt_client_open(&p->c);
    if (s != SD_OK) {
        sd_mqtt_client_free(&p->c);
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
    struct timespec until = sd_mqtt_mono_in(timeout_s);
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
    sd_mqtt_client_close(&p->c);
    sd_mqtt_client_free(&p->c);
    free(p);
}
