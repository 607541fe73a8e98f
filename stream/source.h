/* source.h: the interface every stream source fills (replay; Kafka, stream/kafka.h; MQTT,
 * stream/mqtt.h): a table of function pointers plus a context, as the backends are. A source hands out encoded messages
 * (docs/stream-format.md); the ingest thread (stream/ingest.h) decodes, validates and stores them,
 * so every source goes through the same checks. */
#ifndef SD_STREAM_SOURCE_H
#define SD_STREAM_SOURCE_H

#include <stddef.h>

#include "engine/status.h"

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
} sd_source_ops;

typedef struct sd_source {
    const sd_source_ops *ops;
    void *ctx;
} sd_source;

#endif
