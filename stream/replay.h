/* replay.h: the replay source: streams one device's partition of an in-memory dataset at a rate
 * model, as a publisher would. It loops over the partition, reshuffling it (seeded) at the start of
 * every pass, and encodes every sample as a stream message, so the decode and validation path runs
 * exactly as for network sources. Two clocks: real (sd_replay_source: the ingest thread polls it and
 * it sleeps until each arrival) and virtual (sd_replay_advance_to: the trainer asks for everything
 * that has arrived by virtual time t, delivered synchronously into a sink). */
#ifndef SD_STREAM_REPLAY_H
#define SD_STREAM_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "stream/augment.h"
#include "stream/dataset.h"
#include "stream/ingest.h"
#include "stream/message.h"
#include "stream/rate.h"
#include "stream/source.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_replay_config {
    const sd_dataset *data;   /* must outlive the replay */
    const int64_t *indices;   /* the device's partition (copied); NULL: the whole dataset */
    int64_t n_indices;
    sd_rate_model rate;
    uint64_t seed;            /* with device: the arrivals and the shuffles */
    uint32_t device;          /* the device id written into every message */
    sd_msg_dtype dtype;       /* payload encoding: SD_MSG_U8 (0 means u8) or SD_MSG_F32 */
    const sd_augment *f32_norm; /* F32 payloads: (v/255 - mean[c]) / std[c]; NULL: v/255 */
    bool no_shuffle;          /* true: every pass in partition order */
    uint64_t max_messages;    /* 0: endless; else the stream ends after this many */
    uint64_t first_seq;       /* sequence number of the first message (resuming from a checkpoint) */
    uint32_t epoch;           /* 0: version-1 messages numbered first_seq + n; else version 2, numbered
                                 sd_msg_seq_make(epoch, first_seq + n) (a publisher's restarts) */
} sd_replay_config;

typedef struct sd_replay sd_replay;

/* Checks the configuration (dataset loaded, indices in range, partition not empty, rate model) and
 * prepares the first pass. */
sd_status sd_replay_create(const sd_replay_config *c, sd_replay **out);
void sd_replay_destroy(sd_replay *r);

/* The time (virtual seconds since the start) of the next message; INFINITY when none will come. */
double sd_replay_next_time(const sd_replay *r);
/* Encodes the next message regardless of its time. *msg is valid until the next call; *arrival is
 * its time. SD_SOURCE_END when max_messages have been sent. */
sd_status sd_replay_next_message(sd_replay *r, const void **msg, size_t *len, double *arrival, sd_source_event *ev);
/* Virtual clock: delivers every message due by time t into the sink, in order, and reports how
 * many were delivered (stored or dropped). When the ring applies backpressure and is full, the
 * remaining arrivals wait in the source (delivered by a later call), as in a broker: nothing is
 * dropped and nothing blocks. */
sd_status sd_replay_advance_to(sd_replay *r, double t, sd_sink *sink, uint64_t *delivered);

/* Real clock: the replay as a source for the ingest thread. The first start() takes the wall clock's
 * "now" as time 0; stop() pauses the stream's time until the next start(); next() sleeps until the
 * next arrival (at most its timeout). Use one replay with one clock: the virtual clock's
 * sd_replay_advance_to and the real clock's source share the stream position. */
sd_source sd_replay_source(sd_replay *r);

/* The device's drawn rate (FIXED/UNIFORM/NORMAL; 0 for a trace), messages sent, passes begun. */
double sd_replay_rate(const sd_replay *r);
uint64_t sd_replay_sent(const sd_replay *r);
uint64_t sd_replay_passes(const sd_replay *r);

/* ---- checkpoints --------------------------------------------------------------------------------
 * The stream position of a replay, enough to continue exactly where it was: this pass's order of
 * the partition (sd_replay_partition_size entries), the position in it, the counters, both random
 * streams (shuffles and arrivals) and the arrival generator's level. The real clock's pause point
 * is kept too, so a resumed real-clock stream goes on from its time instead of from 0. */
typedef struct sd_replay_state {
    int64_t pos;            /* next position in this pass's order, [0, partition size] */
    uint64_t passes, sent;
    sd_rng shuffle_rng;
    sd_rng arrival_rng;
    double arrival_rate;    /* the device's drawn rate */
    double arrival_target;  /* expected-count level of the next arrival */
    uint64_t arrival_count;
    uint64_t arrival_seg;   /* trace models: the segment of the last arrival */
    double next_t;          /* time of the next message (may be INFINITY) */
    double paused_at;       /* real clock: the stream's time when it was last stopped */
} sd_replay_state;

int64_t sd_replay_partition_size(const sd_replay *r);
/* Copies the state, and this pass's order into order[0..partition size) when order is not NULL. */
void sd_replay_get_state(const sd_replay *r, sd_replay_state *s, int64_t *order);
/* Restores a state taken from a replay of the same configuration. order must hold n =
 * sd_replay_partition_size entries that are a permutation of the partition (else SD_ERR_INVALID:
 * the checkpoint belongs to another partition or seed); pos must lie in [0, n]. The replay is
 * unchanged on failure. Not while the ingest thread runs it. */
sd_status sd_replay_set_state(sd_replay *r, const sd_replay_state *s, const int64_t *order, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
