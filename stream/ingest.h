/* ingest.h: the path from an encoded message to the ring buffer, and the ingest thread that runs it
 * for one source. sd_sink_deliver() decodes and validates a message against the experiment, checks
 * its sequence number for duplicates, counts a drop by reason or pushes the sample into the ring;
 * the virtual-clock replay calls it directly, the ingest thread calls it for every message its
 * source produces. Stopping the thread is bounded in time even while it waits on a full ring. */
#ifndef SD_STREAM_INGEST_H
#define SD_STREAM_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "stream/message.h"
#include "stream/ring.h"
#include "stream/source.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The receiving end of one device's stream. */
typedef struct sd_sink {
    sd_ring *ring;
    sd_msg_expect expect;
    sd_msg_seq seq; /* duplicate detection; seq.gaps counts sequence numbers never seen */
} sd_sink;

/* Checks expect (NULL: hard limits only) and sets up the sink. */
sd_status sd_sink_init(sd_sink *s, sd_ring *ring, const sd_msg_expect *expect);
/* Resuming a stream: the trainer already has every sample up to sequence number last_seq (e.g. from
 * a checkpoint, or the last one it took before a restart), so messages numbered <= last_seq are
 * dropped as duplicates (counted; a broker source treats them as done and commits past them) and a
 * message numbered last_seq + 1 counts no gap. Call after sd_sink_init, before the first message. */
void sd_sink_resume(sd_sink *s, uint64_t last_seq);
/* Decodes, validates, checks the sequence number and pushes into the ring. Returns SD_DROP_NONE
 * when stored, else the reason, which is already counted in the ring's stats. */
sd_drop_reason sd_sink_deliver(sd_sink *s, const void *msg, size_t len);

/* ---- the ingest thread ------------------------------------------------------------------------- */
typedef struct sd_ingest_config {
    sd_source source;          /* started by sd_ingest_start, stopped by sd_ingest_stop */
    sd_ring *ring;             /* reopened at start, closed at stop */
    sd_msg_expect expect;
    double poll_s;             /* longest wait in one source poll (bounds the stop time); 0: 0.02 s */
    bool hold_when_full;       /* true: ask the source for its next message only once the ring has room for
                                  a sample (a replay under backpressure: nothing is dropped, the stream
                                  waits); false: deliver as messages come (a broker applies its own) */
    bool resume;               /* true: the trainer already has every sample numbered <= resume_after_seq */
    uint64_t resume_after_seq; /* (sd_sink_resume): a redelivery of those is dropped as a duplicate */
    const sd_msg_seq *counters;/* optional: its gaps, restarts and resyncs go on counting (a restored sink) */
} sd_ingest_config;

typedef struct sd_ingest_stats {
    uint64_t messages;   /* messages the source delivered */
    uint64_t stored;     /* of them, stored in the ring */
    uint64_t idle_polls; /* polls that timed out empty */
    uint64_t seq_gaps;   /* sequence numbers skipped */
    uint64_t seq_refused;  /* messages refused in a row by the sequence check (sd_msg_seq.refused) */
    uint64_t seq_restarts, seq_resyncs; /* publisher epochs begun, jumps taken (sd_msg_seq) */
    bool ended;          /* the source reported the end of its stream */
    bool failed;         /* the source failed (sd_ingest_error says why); the ring was closed */
    bool running;        /* the thread has not finished */
} sd_ingest_stats;

typedef struct sd_ingest sd_ingest;

/* Starts the source and a thread that polls it and delivers every message into the ring. */
sd_status sd_ingest_start(const sd_ingest_config *c, sd_ingest **out);
/* Stops the thread (a push waiting on a full ring is woken by closing the ring and counted as
 * SD_DROP_CLOSED), joins it, stops the source and frees the ingest. Returns the thread's failure
 * (a source error), or the source's stop failure, else SD_OK. NULL is fine. */
sd_status sd_ingest_stop(sd_ingest *g);
/* Stops and joins the thread (as sd_ingest_stop does, closing the ring) but leaves the source
 * started, so that the caller can act on it after saving what the ring holds (e.g. commit a Kafka
 * consumer's offsets once a checkpoint is written); sd_ingest_stop then stops the source and frees.
 * Returns the thread's failure, if any (sd_ingest_stop reports it again). Idempotent. */
sd_status sd_ingest_halt(sd_ingest *g);
/* The sink's sequence state: whether a message was stored, the last stored sequence number (the
 * one to resume after) and the gaps seen. Exact once the thread has finished (sd_ingest_halt). */
void sd_ingest_sink_seq(sd_ingest *g, sd_msg_seq *out);
void sd_ingest_get_stats(sd_ingest *g, sd_ingest_stats *out);
/* The source's failure message when the thread ended on one (else ""); valid until sd_ingest_stop. */
const char *sd_ingest_error(sd_ingest *g);

#ifdef __cplusplus
}
#endif

#endif
