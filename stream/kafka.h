/* kafka.h: Kafka through librdkafka. The source consumes one device's stream (its own topic,
 * `trainer-<rank>`, or one partition of a shared topic) in a consumer group, hands every record's
 * value (one encoded stream message) to the ingest thread, pauses its partitions while the ring is
 * nearly full (still polling, so it stays in the group) and commits an offset only once every
 * record before it was consumed by the trainer or dropped (see the commit rule in docs/brokers.md).
 * The publisher sends encoded messages to a topic (used by scadles-publish). Broker addresses and
 * librdkafka settings (TLS, SASL, tuning) pass through as "key=value" pairs. Without librdkafka at
 * build time every create function returns SD_ERR_UNSUPPORTED naming the package to install. */
#ifndef SD_STREAM_KAFKA_H
#define SD_STREAM_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "stream/ring.h"
#include "stream/source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether this build has librdkafka (SCADLES_HAVE_KAFKA). */
bool sd_kafka_available(void);

/* ---- connection ------------------------------------------------------------------------------- */
/* Where the brokers are and how to talk to them. */
typedef struct sd_kafka_conn {
    const char *bootstrap;     /* "host:port[,host:port...]" (librdkafka's bootstrap.servers); required
                                  unless conf sets bootstrap.servers */
    const char *const *conf;   /* librdkafka properties, each "key=value" (security.protocol=SASL_SSL,
                                  ssl.ca.location=..., sasl.mechanisms=PLAIN, sasl.username=..., ...),
                                  applied after the engine's own settings; n_conf of them */
    size_t n_conf;
    double connect_timeout_s;  /* start/create: how long to keep trying to reach the brokers (and to see
                                  the topic) before failing with a message naming them; 0: 10 s */
    bool quiet;                /* true: librdkafka's log lines and the engine's drop/rebalance notes are
                                  not printed (they are still counted) */
} sd_kafka_conn;

/* ---- the source ------------------------------------------------------------------------------- */
/* When a record's offset may be committed. Either way a record dropped on arrival (malformed,
 * wrong shape or label, duplicate, a ring policy drop) is committable at once, and a record the
 * ring had not stored when the ingest stopped (ring closed) never is. */
typedef enum sd_kafka_commit {
    SD_KAFKA_COMMIT_CONSUMED = 0, /* a stored sample once it has left the ring: taken by the trainer,
                                     truncated after a step or evicted (drop-oldest); automatic */
    SD_KAFKA_COMMIT_ACKED         /* a stored sample once the trainer acknowledged it with sd_kafka_ack
                                     (e.g. after the step that used it, or at a checkpoint) */
} sd_kafka_commit;

typedef struct sd_kafka_config {
    sd_kafka_conn conn;
    const char *topic;         /* required: the device's topic, e.g. "trainer-3" */
    bool by_partition;         /* false: subscribe to `topic` in the group (a topic per device);
                                  true: consume only `partition` of it (a partition per device), assigned
                                  directly; offsets are still committed under the group id */
    int32_t partition;
    const char *group_id;      /* NULL: "scadles-<topic>" (by_partition: "scadles-<topic>-<partition>") */
    sd_ring *ring;             /* required: the ring the ingest thread delivers this source's messages
                                  into (watched for backpressure, and to learn what became of each record) */
    sd_kafka_commit commit;
    double commit_interval_s;  /* committable offsets are committed (asynchronously) at most this often,
                                  and synchronously at stop; 0: 0.2 s */
    double pause_high;         /* pause fetching when the ring holds this fraction of its samples or
                                  bytes; 0: 0.9. Must lie in (0, 1]. */
    double pause_low;          /* resume when it is down to this fraction; 0: 0.5. Must be < pause_high. */
    size_t max_pending;        /* records handed out but not yet committable; at this many, fetching pauses
                                  too (a trainer that never acknowledges under SD_KAFKA_COMMIT_ACKED);
                                  0: 1 << 20 */
    bool allow_missing_topic;  /* true: start even when the topic does not exist yet (it is picked up when
                                  it appears); false: a missing topic is an error after connect_timeout_s */
} sd_kafka_config;

typedef struct sd_kafka_stats {
    uint64_t messages, bytes;       /* records handed to the ingest thread, value bytes (each counted, with
                                       stored/rejected, when next() is called again) */
    uint64_t stored;                /* of them, stored in the ring */
    uint64_t rejected;              /* dropped on arrival (any reason; the ring counts them by reason) */
    uint64_t undelivered;           /* arrived while the ring was closed (ingest stopping): not committed */
    uint64_t committed;             /* records whose offsets have been committed (acknowledged by the broker) */
    uint64_t commits, commit_errors;
    uint64_t pauses, resumes;       /* backpressure: fetching paused / resumed */
    double paused_s;                /* time spent paused */
    uint64_t assigns, revokes;      /* group rebalances this consumer took part in */
    uint64_t errors;                /* consumer errors librdkafka reported (transport, broker, ...) */
    uint64_t max_poll_exceeded;     /* times the group dropped this consumer for not polling */
    uint64_t reassigns;             /* partitions assigned again because their committed offset could not be
                                       fetched (librdkafka would leave them unfetched) */
    size_t pending;                 /* records handed out (and counted) but not yet committable */
    bool paused;                    /* paused now */
    bool started;
} sd_kafka_stats;

typedef struct sd_kafka sd_kafka;

/* Checks the configuration (topic, ring, fractions, every conf pair librdkafka accepts: a bad key or
 * value is SD_ERR_INVALID with librdkafka's message) and prepares the source. Nothing connects
 * until start. Without librdkafka: SD_ERR_UNSUPPORTED. */
sd_status sd_kafka_create(const sd_kafka_config *c, sd_kafka **out);
/* Stops (if needed) and frees. NULL is fine. */
void sd_kafka_destroy(sd_kafka *k);

/* The source table for the ingest thread (name "kafka(<topic>)" or "kafka(<topic>[<partition>])").
 * start: creates the consumer, waits (at most connect_timeout_s) until the brokers answer and the
 *        topic exists, else SD_ERR_IO naming the brokers and what to check; then joins the group.
 * next:  one record (its value, valid until the next call), or idle; also learns what the ingest
 *        did with the previous record, pauses or resumes on the ring's occupancy and commits what
 *        is committable. A fatal consumer error is SD_ERR_IO.
 * stop:  commits what is committable (bounded wait), leaves the group and destroys the consumer.
 * Contract: only the ingest thread that delivers into config.ring calls next, and it delivers each
 * record into that ring before calling next again (what sd_ingest does). The source may be started
 * again after stop; give it an empty ring (or truncate the old one), since samples left in the
 * ring were not committed and will be fetched again. */
sd_source sd_kafka_source(sd_kafka *k);

/* SD_KAFKA_COMMIT_ACKED: the trainer has finished with every sample of this stream whose sequence
 * number is <= seq (the last one it took, after the step that used it). Any thread; cheap. Stored
 * samples carry strictly increasing sequence numbers (the sink drops anything else), so this marks
 * a prefix of them. Under SD_KAFKA_COMMIT_CONSUMED it is accepted and ignored. */
sd_status sd_kafka_ack(sd_kafka *k, uint64_t seq);
/* Checkpoints: the trainer saved every sample of this stream it still held, up to and including
 * sequence number seq (the last one stored in the ring), together with its model, so those samples
 * are done in either commit mode: the next sd_kafka_commit_now commits past them and a consumer in
 * the same group resumes after them. Call after the ingest thread stopped delivering
 * (sd_ingest_halt) and before sd_ingest_stop; it first learns what became of the record handed out
 * last. Records the ring had not stored (ring closed) stay uncommitted. */
sd_status sd_kafka_checkpointed(sd_kafka *k, uint64_t seq);
/* Commits what is committable now and waits (at most timeout_s) for the broker's answer: e.g. at a
 * checkpoint. SD_ERR_IO when the commit fails or times out. Any thread while started. */
sd_status sd_kafka_commit_now(sd_kafka *k, double timeout_s);
/* The next offset committed for partition (the offset of the first record not yet committed), -1
 * when none has been committed by this source since start. */
int64_t sd_kafka_committed_offset(sd_kafka *k, int32_t partition);
void sd_kafka_get_stats(sd_kafka *k, sd_kafka_stats *out);

/* ---- the publisher ---------------------------------------------------------------------------- */
typedef struct sd_kafka_pub_stats {
    uint64_t sent;       /* records handed to librdkafka */
    uint64_t delivered;  /* acknowledged by the brokers */
    uint64_t failed;     /* delivery failed (the last reason is in last_error) */
    uint64_t queue_full_waits; /* sends that waited for librdkafka's queue to drain */
    char last_error[256];
} sd_kafka_pub_stats;

typedef struct sd_kafka_pub sd_kafka_pub;

/* Creates a producer and waits (at most conn->connect_timeout_s) until the brokers answer; an
 * unreachable broker is SD_ERR_IO naming the addresses and the fix. */
sd_status sd_kafka_pub_create(const sd_kafka_conn *conn, sd_kafka_pub **out);
/* Creates topics with `partitions` partitions (replication: the brokers' default); topics that
 * exist already are fine. SD_ERR_IO with the broker's reason otherwise (e.g. no permission). */
sd_status sd_kafka_pub_create_topics(sd_kafka_pub *p, const char *const *topics, size_t n, int partitions,
                                     double timeout_s);
/* Queues one record: value = msg[0..len), key = the 4-byte little-endian label (as the reference
 * publisher does; NULL key when label < 0), partition < 0: the partitioner chooses. Waits while
 * librdkafka's queue is full (at most 10 s, then SD_ERR_IO). */
sd_status sd_kafka_pub_send(sd_kafka_pub *p, const char *topic, int32_t partition, int32_t label, const void *msg,
                            size_t len);
/* Serves delivery reports without waiting (call now and then; send does it too). */
void sd_kafka_pub_poll(sd_kafka_pub *p);
/* Waits until every queued record was delivered or failed (at most timeout_s); SD_ERR_IO when some
 * are still queued or failed, with the count and the last reason. */
sd_status sd_kafka_pub_flush(sd_kafka_pub *p, double timeout_s);
void sd_kafka_pub_get_stats(sd_kafka_pub *p, sd_kafka_pub_stats *out);
void sd_kafka_pub_destroy(sd_kafka_pub *p);

#ifdef __cplusplus
}
#endif

#endif
