/* mqtt.h: MQTT through libmosquitto. The source subscribes to one device's topic
 * (`trainer-<rank>`) at QoS 0, 1 or 2, copies every message (one encoded stream message) into a
 * bounded internal queue from its network thread and hands them to the ingest thread in order;
 * the connection is re-established with exponential backoff when it drops, and the sink's
 * sequence check turns QoS 1 redeliveries into counted duplicates. The publisher sends encoded
 * messages to a topic (used by scadles-publish). TLS and username/password are options. Without
 * libmosquitto at build time every create function returns SD_ERR_UNSUPPORTED naming the package.
 * Design, counters and the overflow policy: docs/brokers.md. */
#ifndef SD_STREAM_MQTT_H
#define SD_STREAM_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "stream/ring.h"
#include "stream/source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this build has libmosquitto (SCADLES_HAVE_MQTT). */
bool sd_mqtt_available(void);

/* ---- connection ------------------------------------------------------------------------------- */
typedef struct sd_mqtt_conn {
    const char *host;          /* NULL: "localhost" */
    int port;                  /* 0: 1883, or 8883 with TLS */
    const char *client_id;     /* NULL: a generated one (scadles-<role>-<pid>-<n>) */
    const char *username;      /* NULL: anonymous */
    const char *password;
    /* TLS, on when cafile or capath is set: the CA that signed the broker's certificate, and for
     * client authentication a certificate and its key (PEM). */
    const char *cafile, *capath, *certfile, *keyfile;
    const char *tls_version;   /* NULL: libmosquitto's default; "tlsv1.2", "tlsv1.3" */
    bool tls_insecure;         /* skip the host name check of the broker's certificate (testing only) */
    int keepalive_s;           /* 0: 10 */
    int connect_attempts;      /* start/create: connection attempts before giving up; 0: 5 */
    double connect_timeout_s;  /* start/create: the longest wait for the first connection; 0: 10 s */
    double reconnect_min_s;    /* backoff between attempts: starts here, doubles per failure ... 0: 0.1 s */
    double reconnect_max_s;    /* ... up to this; 0: 5 s. A lost connection is retried forever. */
    bool quiet;                /* true: connection and drop notes are not printed (still counted) */
} sd_mqtt_conn;

/* ---- the source ------------------------------------------------------------------------------- */
/* What the network thread does when the internal queue is full. */
typedef enum sd_mqtt_overflow {
    SD_MQTT_OVERFLOW_DROP = 0, /* drop the arriving message and count it (queue_dropped) */
    SD_MQTT_OVERFLOW_BLOCK     /* QoS 1/2: hold it (and its PUBACK/PUBREC, so the broker keeps the rest
                                  queued for us) up to block_timeout_s, then drop and count it. QoS 0: as DROP. */
} sd_mqtt_overflow;

typedef struct sd_mqtt_config {
    sd_mqtt_conn conn;
    const char *topic;         /* required: the device's topic, e.g. "trainer-3" */
    int qos;                   /* 0, 1 or 2 */
    bool persistent_session;   /* false: a clean session per connection. true: the broker keeps the
                                  subscription and queues QoS 1/2 messages while we are disconnected (needs
                                  conn.client_id, stable across runs) */
    size_t queue_capacity;     /* messages held between the network thread and next(); 0: 4096 */
    size_t max_message_bytes;  /* larger messages are dropped before queueing (oversized_dropped);
                                  0: the format's limit (48-byte header + 64 MiB) */
    sd_mqtt_overflow overflow;
    double block_timeout_s;    /* SD_MQTT_OVERFLOW_BLOCK: 0: 0.5 s; must stay below keepalive_s / 2 */
    sd_ring *ring;             /* optional: the ring the ingest delivers into, to log each drop with its
                                  reason (rate limited) and count rejected messages here too */
} sd_mqtt_config;

typedef struct sd_mqtt_stats {
    uint64_t received, bytes;   /* messages the broker delivered to us, their bytes */
    uint64_t delivered;         /* handed to the ingest thread */
    uint64_t rejected;          /* of those, dropped by the sink (with config.ring; by reason in the ring) */
    uint64_t queue_dropped;     /* the internal queue was full */
    uint64_t oversized_dropped; /* over max_message_bytes */
    uint64_t discarded_at_stop; /* still queued when the source stopped */
    uint64_t connects;          /* successful connections (the first one included) */
    uint64_t disconnects;       /* connections lost */
    uint64_t connect_failures;  /* attempts that failed (refused, unreachable, timed out) */
    double blocked_s;           /* time the network thread held messages on a full queue */
    size_t queued, queue_hw;    /* in the queue now, and its high-water mark */
    int granted_qos;            /* what the broker granted the subscription (-1: not subscribed) */
    bool connected;             /* connected and subscribed now */
} sd_mqtt_stats;

typedef struct sd_mqtt sd_mqtt;

/* Checks the configuration (topic, qos, TLS files given in pairs, ...). Nothing connects until
 * start. Without libmosquitto: SD_ERR_UNSUPPORTED. */
sd_status sd_mqtt_create(const sd_mqtt_config *c, sd_mqtt **out);
void sd_mqtt_destroy(sd_mqtt *m);

/* The source table for the ingest thread (name "mqtt(<topic>)").
 * start: connects (up to connect_attempts tries within connect_timeout_s, with backoff) and
 *        subscribes; an unreachable broker is SD_ERR_IO naming host:port and the fix, a refused
 *        connection (bad credentials) SD_ERR_IO with the broker's reason, at once.
 * next:  the oldest queued message (valid until the next call), or idle after timeout_s. While
 *        the connection is down it keeps handing out what is queued, then idles.
 * stop:  disconnects; messages still queued are discarded and counted.
 * interrupt: makes a waiting next() return at once. */
sd_source sd_mqtt_source(sd_mqtt *m);
void sd_mqtt_get_stats(sd_mqtt *m, sd_mqtt_stats *out);

/* ---- the publisher ---------------------------------------------------------------------------- */
typedef struct sd_mqtt_pub_stats {
    uint64_t sent;        /* messages handed to libmosquitto */
    uint64_t completed;   /* written (QoS 0) or acknowledged by the broker (QoS 1, 2) */
    uint64_t failed;      /* not sent: no connection at the time (lost; the trainer sees a gap) */
    uint64_t connects, disconnects, connect_failures;
    bool connected;
} sd_mqtt_pub_stats;

typedef struct sd_mqtt_pub sd_mqtt_pub;

/* Connects (bounded as for the source; SD_ERR_IO naming host:port on failure). qos: 0, 1, 2. */
sd_status sd_mqtt_pub_create(const sd_mqtt_conn *conn, int qos, sd_mqtt_pub **out);
/* Publishes msg[0..len) to topic. SD_ERR_IO while disconnected (the message is not sent and is
 * counted as failed; the connection is being re-established in the background). */
sd_status sd_mqtt_pub_send(sd_mqtt_pub *p, const char *topic, const void *msg, size_t len);
/* Waits until every sent message is completed (at most timeout_s); SD_ERR_IO with the count if not. */
sd_status sd_mqtt_pub_flush(sd_mqtt_pub *p, double timeout_s);
/* Messages sent and not yet completed. */
uint64_t sd_mqtt_pub_outstanding(sd_mqtt_pub *p);
void sd_mqtt_pub_get_stats(sd_mqtt_pub *p, sd_mqtt_pub_stats *out);
void sd_mqtt_pub_destroy(sd_mqtt_pub *p);

#ifdef __cplusplus
}
#endif

#endif
