/* mqtt_internal.h: what the MQTT files share; not part of the API (that is stream/mqtt.h): the
 * client (one libmosquitto handle and its network thread, mqtt_client.c) that the source
 * (mqtt_source.c) and the publisher (mqtt_publish.c) each own, and small helpers. Only compiled
 * with libmosquitto. */
#ifndef SD_STREAM_MQTT_INTERNAL_H
#define SD_STREAM_MQTT_INTERNAL_H

#include <mosquitto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "base/loglimit.h"
#include "base/status.h"
#include "stream/mqtt.h"

/* ---- helpers ----------------------------------------------------------------------------------- */
char *sd_mqtt_dup_str(const char *s);
/* An absolute CLOCK_MONOTONIC time s seconds from now, for condition waits. */
struct timespec sd_mqtt_mono_in(double s);
/* A condition variable that waits on CLOCK_MONOTONIC (with sd_mqtt_mono_in). */
void sd_mqtt_cond_init_mono(pthread_cond_t *c);

/* A log line limit: 10 lines per 10 s per client, then a count. */
typedef sd_loglimit loglim; /* everything one client prints shares one rate limit */

void sd_mqtt_note(loglim *l, bool quiet, const char *who, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- the client: one libmosquitto handle and the network thread that keeps it connected -------- */
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

/* Copies the settings (defaults filled in); role names a generated client id, label the client in
 * messages. SD_ERR_OOM when a copy fails (sd_mqtt_client_free cleans up either way). */
sd_status sd_mqtt_client_init(client *c, const sd_mqtt_conn *k, const char *role, const char *label);
void sd_mqtt_client_free(client *c);
/* The connection settings' checks; `what` names the source or publisher in the message. */
sd_status sd_mqtt_conn_check(const sd_mqtt_conn *k, const char *what);
/* Connects (and subscribes), bounded by attempts and the timeout; starts the network thread. */
sd_status sd_mqtt_client_open(client *c);
/* Disconnects and frees the handle. */
void sd_mqtt_client_close(client *c);

#endif
