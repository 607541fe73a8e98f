/* kafka_internal.h: what the Kafka files share; not part of the API (that is stream/kafka.h). The
 * owned copy of the connection settings and the configuration helpers (kafka_config.c), the
 * consumer's state (struct sd_kafka, used by kafka_source.c) and the offset bookkeeping behind the
 * commit rule (kafka_offsets.c; docs/brokers.md). Only compiled with librdkafka. */
#ifndef SD_STREAM_KAFKA_INTERNAL_H
#define SD_STREAM_KAFKA_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/loglimit.h"
#include "base/status.h"
#include "stream/kafka.h"
#include "stream/ring.h"

/* ---- shared helpers and the connection (kafka_config.c) --------------------------------------- */
char *sd_kafka_dup_str(const char *s);
/* Seconds as librdkafka milliseconds: 0 for s <= 0, capped at 1e9. */
int sd_kafka_ms_of(double s);

/* Everything one handle prints goes through one rate limit (stream/loglimit.h). */
typedef sd_loglimit loglim;

void sd_kafka_note(loglim *l, bool quiet, bool remember, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Copies of the connection's strings, owned by the source or publisher. */
typedef struct conn_copy {
    char *bootstrap;
    char **conf;
    size_t n_conf;
    double connect_timeout_s;
    bool quiet;
} conn_copy;

/* Sets one property on conf; SD_ERR_INVALID with librdkafka's reason for a bad one. */
sd_status sd_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *val);
/* The connection's own checks: conf given with n_conf, the timeout's range, some brokers named. */
sd_status sd_kafka_conn_check(const sd_kafka_conn *c);
void sd_kafka_conn_free(conn_copy *c);
sd_status sd_kafka_conn_copy_from(conn_copy *d, const sd_kafka_conn *c);
/* The brokers as a message names them. */
const char *sd_kafka_conn_where(const conn_copy *c);
/* A new conf with the brokers, our defaults and then the user's pairs (so they can override them). */
sd_status sd_kafka_conf_build(const conn_copy *c, void *opaque, const char *const *defaults, size_t n_defaults,
                              rd_kafka_conf_t **out);
/* Makes a handle of the given type from conf with no brokers (so nothing connects) and destroys it;
 * conf is consumed. A refusal is SD_ERR_INVALID naming `who`, librdkafka's reason and what to fix. */
sd_status sd_kafka_conf_trial(rd_kafka_conf_t *conf, rd_kafka_type_t type, const char *who);
/* Waits until the brokers answer a metadata request (and, with rkt, the topic has partition
 * `need_partition` or any when < 0). *topic_missing tells which of the two failed. */
rd_kafka_resp_err_t sd_kafka_wait_metadata(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t need_partition,
                                           double timeout_s, bool serve_poll, bool *topic_missing, int *partitions);

/* ---- the source's state ------------------------------------------------------------------------ */
enum { E_INFLIGHT = 0, E_STORED, E_REJECTED, E_HOLD };

typedef struct entry {
    int32_t part;
    uint8_t state;
    int64_t offset;
    uint64_t seq; /* from the header (meaningful for stored records) */
    uint64_t ord; /* stored records: 1, 2, ... in the order the ring stored them */
} entry;

typedef struct part {
    int32_t id;
    bool assigned;
    bool dirty;            /* next_commit moved since the last commit request */
    int64_t next_commit;   /* offset after the highest contiguous done record; -1: none */
    int64_t committed;     /* acknowledged by the broker; -1: none */
    int64_t first_offset;  /* first record seen since start (for the committed count); -1: none */
} part;

struct sd_kafka {
    conn_copy conn;
    char *topic, *group;
    bool by_partition;
    int32_t partition;
    sd_ring *ring;
    sd_kafka_commit commit;
    double commit_interval_s, pause_high, pause_low;
    size_t max_pending;
    bool allow_missing_topic;
    char name[300];

    rd_kafka_t *rk;
    rd_kafka_message_t *cur;
    loglim ll;

    pthread_mutex_t mu; /* everything below */
    entry *q;           /* records handed out and not yet committable, in hand-out order */
    size_t qcap, qhead, qn;
    entry infl;         /* the record handed out last, while what became of it is unknown; written by */
    bool has_infl;      /* the ingest thread without mu (only it and learn, on that thread, use them) */
    size_t infl_len;
    sd_ring_stats last; /* the ring's counters when next() last looked */
    uint64_t disposed_base, disposed, stored_ord;
    uint64_t acked_seq;
    bool any_ack;
    uint64_t ckpt_seq;  /* sd_kafka_checkpointed: stored records numbered <= ckpt_seq are done */
    bool any_ckpt;
    part *parts;
    size_t nparts, capparts;
    bool paused;
    bool lost_track;    /* out of memory for the record list: stop committing (never commit ahead) */
    bool reassign;      /* the committed offset of an assigned partition could not be fetched: assign again */
    double pause_t0, last_commit_t, reassign_at;
    sd_kafka_stats st;
};

/* ---- the commit rule (kafka_offsets.c) --------------------------------------------------------- */
/* The partition's entry, added when new; NULL when out of memory. Under mu. */
part *sd_kafka_part_get(sd_kafka *k, int32_t id);
/* Pops the done prefix and moves the partitions' commit points (the commit rule). Under mu. */
void sd_kafka_advance(sd_kafka *k);
/* What the ring has let go of since start (taken, truncated, evicted), in stored order. Any thread. */
void sd_kafka_update_disposed(sd_kafka *k, const sd_ring_stats *s);
/* Learns what the ingest did with the record handed out last, from the ring's counters. Ingest
 * thread (or after it finished) only; under mu. */
void sd_kafka_learn(sd_kafka *k);
/* A commit's answer (the offset commit callback, or a synchronous commit's event). Takes mu. */
void sd_kafka_offsets_committed(sd_kafka *k, rd_kafka_resp_err_t err, const rd_kafka_topic_partition_list_t *o);
/* The dirty, assigned partitions' commit points as a list (NULL: nothing to commit). Under mu. */
rd_kafka_topic_partition_list_t *sd_kafka_commit_list(sd_kafka *k);
/* Marks every partition whose commit point the broker has not confirmed. Under mu. */
void sd_kafka_mark_unconfirmed(sd_kafka *k);
/* Marks the partitions of a commit that failed, so the next commit asks again. Under mu. */
void sd_kafka_mark_dirty_again(sd_kafka *k, const rd_kafka_topic_partition_list_t *l);
/* Commits l and waits for the broker's answer at most timeout_s. */
sd_status sd_kafka_commit_sync(sd_kafka *k, rd_kafka_topic_partition_list_t *l, double timeout_s);

#endif
