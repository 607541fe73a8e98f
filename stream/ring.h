/* ring.h: the per-device sample buffer between the ingest thread (the single producer) and the
 * trainer (the single consumer). Bounded by samples and by payload bytes; the sample storage is
 * one allocation from an optional allocator hook (pinned host memory from the CUDA backend,
 * 64-byte aligned malloc otherwise). Policies: persistence (keep until consumed; when full, block
 * the producer with a timeout or drop the newest), truncation (the same, and after every training
 * step sd_ring_end_step() discards what the step did not take) and drop-oldest. Every sample that
 * arrives is counted once: received = accepted + rejected, and every accepted sample ends up
 * consumed, truncated, evicted, or still held. Design and counters: docs/streams.md. */
#ifndef SD_STREAM_RING_H
#define SD_STREAM_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "stream/augment.h"
#include "stream/message.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_RING_ALIGN 64                  /* every sample's bytes start on a 64-byte boundary */
#define SD_RING_MAX_SAMPLES (1u << 26)    /* hard limits of a ring's configuration */
#define SD_RING_MAX_BYTES ((size_t)1 << 38)

typedef enum sd_ring_policy {
    SD_RING_PERSIST = 0,  /* keep until consumed; when full: `when_full` */
    SD_RING_TRUNCATE,     /* as persist, and sd_ring_end_step() discards what the step left */
    SD_RING_DROP_OLDEST   /* when full, evict the oldest samples to make room for the newest */
} sd_ring_policy;

typedef enum sd_ring_when_full {
    SD_RING_FULL_DROP_NEWEST = 0, /* the arriving sample is dropped (SD_DROP_RING_FULL) */
    SD_RING_FULL_BLOCK            /* backpressure: the producer waits up to block_timeout_s (SD_DROP_TIMEOUT) */
} sd_ring_when_full;

/* Where the storage comes from. The CUDA backend passes cudaMallocHost/cudaFreeHost wrappers so
 * the trainer's host-to-device copies come straight from pinned memory. alloc returns memory
 * aligned to at least SD_RING_ALIGN, or NULL (reported as SD_ERR_OOM naming `name`). */
typedef struct sd_ring_allocator {
    void *(*alloc)(size_t bytes, void *ctx);
    void (*free)(void *p, void *ctx);
    void *ctx;
    const char *name; /* for messages, e.g. "cudaMallocHost"; NULL: "custom allocator" */
} sd_ring_allocator;

typedef struct sd_ring_config {
    size_t max_samples;          /* >= 1 */
    size_t max_sample_bytes;     /* the largest payload one sample may have (>= 1); larger: SD_DROP_OVERSIZED */
    size_t max_bytes;            /* payload bytes held at most; 0: max_samples x max_sample_bytes */
    sd_ring_policy policy;
    sd_ring_when_full when_full; /* persist and truncate */
    double block_timeout_s;      /* SD_RING_FULL_BLOCK: longest wait of one push; < 0: until room or close */
    const sd_ring_allocator *allocator; /* NULL: aligned malloc; copied, must outlive the ring */
} sd_ring_config;

/* Counters (monotonic since creation) and the state now. Invariants, at any quiescent moment:
 *   received = accepted + rejected,  rejected = sum of dropped[r] over every r but SD_DROP_EVICTED
 *   accepted = consumed + truncated + dropped[SD_DROP_EVICTED] + samples
 * Decode failures counted through sd_ring_count_drop() are in received and dropped too. */
typedef struct sd_ring_stats {
    uint64_t received;               /* messages that reached the ring's producer side */
    uint64_t accepted;               /* samples stored */
    uint64_t rejected;               /* received but not stored (decode drops and policy drops) */
    uint64_t dropped[SD_DROP_COUNT]; /* by reason; [SD_DROP_EVICTED] counts samples stored then evicted */
    uint64_t consumed;               /* samples the trainer took */
    uint64_t truncated;              /* samples discarded by sd_ring_truncate / sd_ring_end_step */
    uint64_t bytes_accepted, bytes_consumed; /* payload bytes */
    size_t samples, bytes;           /* held now (payload bytes) */
    size_t hw_samples, hw_bytes;     /* high-water marks */
    double blocked_s;                /* time the producer spent waiting for room (backpressure) */
} sd_ring_stats;

typedef struct sd_ring sd_ring;

/* A sample as the consumer sees it in place (sd_ring_acquire): its meta and its payload bytes in
 * the ring's storage (pinned when the allocator is), valid until sd_ring_release. */
typedef struct sd_ring_sample {
    sd_msg_meta meta;
    const void *data;
    size_t nbytes;
} sd_ring_sample;

/* Where a take copies to. Every field may be NULL / 0 except that something must be wanted. */
typedef struct sd_ring_batch {
    float *x;                /* n x sample_elems floats, NCHW */
    size_t sample_elems;     /* elements per sample; every sample taken must have exactly this many */
    const sd_augment *norm;  /* u8 payloads: x = (v/255 - mean[c]) / std[c] with c the channel (dims[ndim-3]
                                when ndim >= 3, else one channel); NULL: x = v. f32 payloads are copied. */
    void *raw;               /* n x raw_stride bytes: the payloads as they arrived */
    size_t raw_stride;       /* >= every payload taken */
    int32_t *labels;         /* n labels */
    uint64_t *seqs;          /* n sequence numbers */
} sd_ring_batch;

/* ---- life ------------------------------------------------------------------------------------- */
/* Validates the configuration (each bad field is SD_ERR_INVALID naming it) and allocates the
 * storage: max_bytes + max_samples x 63 + max_sample_bytes bytes (alignment and wrap slack, so the
 * sample and byte bounds are exact) plus the per-sample records, in one allocation. */
sd_status sd_ring_create(const sd_ring_config *c, sd_ring **out);
/* Frees the ring; no thread may be using it. NULL is fine. */
void sd_ring_destroy(sd_ring *r);
/* Close: pushes are refused (SD_DROP_CLOSED) and wake up, waiting takes return what they have
 * (take_exactly: nothing). The consumer can still take what is held. Reopen undoes it. */
void sd_ring_close(sd_ring *r);
void sd_ring_reopen(sd_ring *r);
bool sd_ring_closed(sd_ring *r);

/* ---- producer (one thread) --------------------------------------------------------------------- */
/* Stores a copy of v's payload and meta. Returns SD_DROP_NONE when stored, else the reason it was
 * not (oversized, bad_length for an empty payload, ring_full, backpressure_timeout, ring_closed);
 * either way it is counted. With
 * drop-oldest the evicted samples are counted as dropped[SD_DROP_EVICTED]; if the consumer is
 * copying the oldest samples out at that moment, the push waits for it to finish. */
sd_drop_reason sd_ring_push(sd_ring *r, const sd_msg_view *v);
/* Fast path for a producer that writes (and checks) the payload itself, e.g. verifying a message's
 * CRC while copying it in. If a payload of nbytes fits right now, without evicting, waiting or
 * exceeding max_sample_bytes, reserves it and calls fill(dst, ctx), which writes the nbytes bytes
 * at dst and returns SD_DROP_NONE to keep the sample (meta as given) or the reason to drop it;
 * either way it is counted, and *result says which. Returns false, counting nothing and not
 * calling fill, when the sample does not fit now: use sd_ring_push then, which applies the policy.
 * fill runs under the ring's lock for small payloads: it must not call the ring. */
typedef sd_drop_reason (*sd_ring_fill_fn)(void *dst, void *ctx);
bool sd_ring_try_push_fill(sd_ring *r, const sd_msg_meta *meta, size_t nbytes, sd_ring_fill_fn fill, void *ctx,
                           sd_drop_reason *result);
/* Counts a message rejected before the ring (a decode or duplicate drop): received and dropped[why].
 * why must be a reason other than SD_DROP_NONE and SD_DROP_EVICTED (others count as bad_length). */
void sd_ring_count_drop(sd_ring *r, sd_drop_reason why);
/* Whether a payload of nbytes would be stored now without dropping, evicting or waiting (for the
 * virtual clock, which defers arrivals instead of blocking). */
bool sd_ring_has_room(sd_ring *r, size_t nbytes);
/* Waits up to timeout_s for sd_ring_has_room(nbytes) (a producer that keeps its next sample until
 * there is room, so nothing is dropped: the real-clock replay under backpressure); false on
 * timeout or when the ring is closed. The wait counts in blocked_s. */
bool sd_ring_wait_room(sd_ring *r, size_t nbytes, double timeout_s);

/* ---- consumer (one thread) --------------------------------------------------------------------- */
/* ScaDLES: takes up to max_n of the oldest samples without waiting; *taken says how many (0 when
 * empty). A sample whose element count differs from out->sample_elems (when x is wanted) or whose
 * payload exceeds raw_stride is SD_ERR_SHAPE naming its sequence number, and nothing is taken. */
sd_status sd_ring_take_upto(sd_ring *r, size_t max_n, const sd_ring_batch *out, size_t *taken);
/* DDP baseline: waits until n samples are held, then takes exactly n. On timeout (timeout_s < 0:
 * no limit) or when the ring is closed with fewer than n, takes nothing: *taken = 0, SD_OK.
 * n > max_samples can never be met: SD_ERR_INVALID. */
sd_status sd_ring_take_exactly(sd_ring *r, size_t n, double timeout_s, const sd_ring_batch *out, size_t *taken);
/* Zero copy: views of up to max_n of the oldest samples in place, held for the consumer until
 * sd_ring_release(r, k), which consumes the first k of them (k <= *n) and hands the rest back.
 * Hold them briefly: truncation skips them and a drop-oldest producer waits for them. */
sd_status sd_ring_acquire(sd_ring *r, size_t max_n, sd_ring_sample *views, size_t *n);
sd_status sd_ring_release(sd_ring *r, size_t consumed);
/* Discards every sample held (counted as truncated) and returns how many. While samples are
 * acquired and not released it discards nothing (returns 0): release first. */
size_t sd_ring_truncate(sd_ring *r);
/* Call after every training step: truncates under SD_RING_TRUNCATE, does nothing otherwise. */
size_t sd_ring_end_step(sd_ring *r);

/* ---- state ------------------------------------------------------------------------------------- */
void sd_ring_get_stats(sd_ring *r, sd_ring_stats *out);
size_t sd_ring_size(sd_ring *r); /* samples held now */
const sd_ring_config *sd_ring_get_config(const sd_ring *r);
/* Checks the invariants above on a snapshot; false with the broken one in why (may be NULL). */
bool sd_ring_stats_consistent(const sd_ring_stats *s, char *why, size_t why_cap);
const char *sd_ring_policy_name(sd_ring_policy p); /* "persist", "truncate", "drop_oldest" */

/* ---- checkpoints --------------------------------------------------------------------------------
 * Saving: sd_ring_acquire every held sample (sd_ring_size of them), copy their metas and payloads,
 * sd_ring_release(r, 0) to hand them back untouched, and sd_ring_get_stats for the counters.
 * Restoring: into an empty ring of the same configuration, the samples in the same order (oldest
 * first) and the counters; the ring then behaves as the saved one did (the sample and byte bounds
 * are exact, so where the bytes sit does not matter). SD_ERR_INVALID, and the ring unchanged, when
 * the ring is not empty, a sample does not fit (the configuration differs) or the counters do not
 * add up (sd_ring_stats_consistent, and samples / bytes equal to what is restored). Not while a
 * producer runs. */
sd_status sd_ring_restore(sd_ring *r, const sd_ring_sample *samples, size_t n, const sd_ring_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
