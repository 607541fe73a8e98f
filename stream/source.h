/* source.h: the interface every stream source fills (replay, stream/replay.h; Kafka, stream/kafka.h;
 * MQTT, stream/mqtt.h): a table of function pointers plus a context, as the backends are. A source
 * hands out encoded messages (docs/stream-format.md); the ingest thread (stream/ingest.h) decodes,
 * validates and stores them, so every source goes through the same checks. Optional entries say
 * what else a source can do: play in virtual time (the replay), take acknowledgements and commit
 * them (Kafka), save its position in a checkpoint (the replay). sd_source_open opens a device's
 * source by kind from the experiment's "stream" section, so the trainer names no concrete source. */
#ifndef SD_STREAM_SOURCE_H
#define SD_STREAM_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "base/archive.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sd_sink;          /* stream/ingest.h */
struct sd_replay_config; /* stream/replay.h */

typedef enum sd_source_event {
    SD_SOURCE_MESSAGE = 0, /* *msg, *len hold one message */
    SD_SOURCE_IDLE,        /* nothing arrived within the timeout */
    SD_SOURCE_END          /* the stream is finished; no more messages */
} sd_source_event;

typedef struct sd_source_ops {
    /* A short name for messages and metrics, e.g. "replay(device 3)" or "kafka(trainer-3)". */
    const char *(*name)(void *ctx);
    /* Connects / starts the clock. Called once, by the thread that starts ingestion. */
    sd_status (*start)(void *ctx);
    /* Waits at most timeout_s seconds for the next message. On SD_SOURCE_MESSAGE, *msg points at
     * *len bytes owned by the source and valid until the next call. Called from the ingest thread
     * only. A failure (broker gone, ...) is a status with a message; the ingest thread stops. */
    sd_status (*next)(void *ctx, double timeout_s, sd_source_event *ev, const void **msg, size_t *len);
    /* Disconnects. Called once after the ingest thread has finished. */
    sd_status (*stop)(void *ctx);
    /* Optional (may be NULL): makes a `next` blocked in another thread return soon (IDLE). Sources
     * whose next() honours its timeout need none. */
    void (*interrupt)(void *ctx);
    /* Optional: frees the source (after stop, or when it never started). NULL: nothing owned. */
    void (*destroy)(void *ctx);

    /* ---- optional: virtual time (engine/clock.h's virtual clock). NULL: the source runs on the
     * wall clock only (brokers), and a virtual-clock run refuses it. ---- */
    /* Delivers every message due by virtual time t into the sink, synchronously, in order. */
    sd_status (*advance_to)(void *ctx, double t, struct sd_sink *sink);
    /* The virtual time of the next message; INFINITY when none will come. */
    double (*next_time)(void *ctx);

    /* ---- optional: acknowledgements. NULL: nothing to acknowledge (the replay's position travels in
     * the checkpoint; MQTT acknowledges on receipt). ---- */
    /* Every message numbered <= seq is held by a complete checkpoint: the source may commit past it. */
    sd_status (*checkpointed)(void *ctx, uint64_t seq);
    /* Commits what was marked checkpointed, waiting at most timeout_s. */
    sd_status (*commit)(void *ctx, double timeout_s);

    /* ---- optional: the source's own position in a checkpoint (base/archive.h). NULL: it has none
     * (a broker keeps the position). Not while the ingest thread runs the source. ---- */
    sd_status (*save)(void *ctx, const sd_archive *a);
    sd_status (*load)(void *ctx, const sd_archive *a);
} sd_source_ops;

typedef struct sd_source {
    const sd_source_ops *ops;
    void *ctx;
} sd_source;

/* ---- which source, and how to reach it (the experiment's "stream" section) ---------------------
 * Each device's samples come from the built-in replay of its partition (either clock), or from a
 * broker topic <topic_prefix><rank> that scadles-publish (or any publisher of the stream format)
 * fills; broker sources need the real clock. */
typedef enum sd_source_kind { SD_SOURCE_KIND_REPLAY = 0, SD_SOURCE_KIND_KAFKA, SD_SOURCE_KIND_MQTT } sd_source_kind; /* "replay" "kafka" "mqtt" */

#define SD_STREAM_NAME_LEN 64   /* names, with the NUL */
#define SD_STREAM_PATH_LEN 256  /* hosts, paths */
#define SD_STREAM_MAX_CONF 32   /* stream.kafka.conf pairs */
#define SD_STREAM_CONF_LEN 512  /* one "key=value" pair, with the NUL */

/* The broker settings (docs/experiments.md, "stream"). Strings "" mean "not given". */
typedef struct sd_stream_config {
    sd_source_kind source;                 /* default replay */
    char topic_prefix[SD_STREAM_NAME_LEN]; /* device i reads topic <topic_prefix><i>; default "trainer-" */
    double connect_timeout_s;              /* how long a source may take to reach its broker at start, (0, 600], default 10 */
    struct {
        char bootstrap[SD_STREAM_PATH_LEN]; /* "host:port[,host:port...]" (bootstrap.servers); required for kafka unless conf has
                                               bootstrap.servers */
        char group_id[SD_STREAM_NAME_LEN];  /* "" = one group per device, scadles-<topic>; else device i joins <group_id>-<i> */
        int n_conf;                         /* 0..SD_STREAM_MAX_CONF */
        char conf[SD_STREAM_MAX_CONF][SD_STREAM_CONF_LEN]; /* librdkafka "key=value" pairs, in the file's order */
    } kafka;
    struct {
        char host[SD_STREAM_PATH_LEN];          /* the broker's host name or address; required for mqtt */
        int port;                               /* 0: 1883, or 8883 with TLS */
        int qos;                                /* 0, 1 or 2; default 1 */
        char username[SD_STREAM_NAME_LEN];      /* "" = anonymous */
        char password_file[SD_STREAM_PATH_LEN]; /* a file whose first line is the password (kept out of the config) */
        char cafile[SD_STREAM_PATH_LEN];        /* TLS on: the CA that signed the broker's certificate */
    } mqtt;
} sd_stream_config;

/* ---- opening a device's source ----------------------------------------------------------------- */
typedef struct sd_source_request {
    const sd_stream_config *stream;         /* which kind, and the broker settings */
    int device;                             /* broker topic <topic_prefix><device> */
    const struct sd_replay_config *replay;  /* replay: the partition, rate and seed (brokers: unused) */
    struct sd_ring *ring;                   /* brokers: the ring whose room paces their consumers */
} sd_source_request;

/* Opens (creates, connects nothing yet) device r->device's source. desc (desc_cap bytes, may be
 * NULL) receives a description for messages, e.g. "kafka(trainer-1) from the brokers at host:9092".
 * The MQTT password comes from stream.mqtt.password_file (its first line). */
sd_status sd_source_open(const sd_source_request *r, sd_source *out, char *desc, size_t desc_cap);
/* Destroys an opened source (ops->destroy); a zeroed sd_source is fine. */
void sd_source_close(sd_source *s);
/* The spelling of a kind ("replay", "kafka", "mqtt"). */
const char *sd_source_kind_name(sd_source_kind k);

#ifdef __cplusplus
}
#endif

#endif
