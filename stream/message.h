/* message.h: the stream message format (specified in docs/stream-format.md) and its codec. One
 * message carries one sample: a 48-byte little-endian header (magic, version, dtype, shape, label,
 * device id, sequence number, payload length, CRC-32C) and the payload. Version 2 has the same
 * layout; its sequence number carries the publisher's epoch in the high 32 bits, so a restarted
 * publisher is told apart from a resend (sd_msg_seq_check). Decoding validates every
 * field against hard limits and against what the experiment expects; each failure has its own
 * drop reason (sd_drop_reason), so the ingest path can count drops by reason. The ring buffer's
 * policy drops share the same enum. */
#ifndef SD_STREAM_MESSAGE_H
#define SD_STREAM_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_MSG_MAGIC 0x314D4453u /* the bytes "SDM1" read as a little-endian u32 */
#define SD_MSG_VERSION 2                 /* the newest version this build reads and writes */
#define SD_MSG_VERSION_MIN 1             /* the oldest it reads */
#define SD_MSG_HEADER_BYTES 48
#define SD_MSG_MAX_NDIM 4
#define SD_MSG_MAX_DIM 65535u              /* hard limit of one dimension */
#define SD_MSG_MAX_PAYLOAD (64u << 20)      /* hard limit of the payload: 64 MiB */

/* Element types of a payload (header byte 6). */
typedef enum sd_msg_dtype { SD_MSG_U8 = 1, SD_MSG_F32 = 2 } sd_msg_dtype;

/* Why a message (or a sample) did not make it into the ring. SD_DROP_NONE = accepted. The first
 * group comes from decoding (sd_msg_decode), DUPLICATE from the sequence check (sd_msg_seq_check),
 * the last group from the ring buffer's policy (stream/ring.h). */
typedef enum sd_drop_reason {
    SD_DROP_NONE = 0,
    SD_DROP_TRUNCATED,    /* fewer bytes than the header, or than header + declared payload */
    SD_DROP_BAD_MAGIC,    /* not "SDM1" */
    SD_DROP_BAD_VERSION,  /* a version this build does not read */
    SD_DROP_OVERSIZED,    /* payload over the hard limit, the experiment's limit or the ring's largest sample */
    SD_DROP_BAD_LENGTH,   /* payload length disagrees with shape x dtype size, or bytes after the payload */
    SD_DROP_BAD_DTYPE,    /* unknown dtype, or not the experiment's */
    SD_DROP_BAD_SHAPE,    /* ndim or a dimension out of range, unused dims not 0, or not the experiment's shape */
    SD_DROP_BAD_LABEL,    /* label < 0 or >= the experiment's class count */
    SD_DROP_BAD_DEVICE,   /* device id is not this stream's */
    SD_DROP_BAD_CHECKSUM, /* CRC-32C mismatch */
    SD_DROP_DUPLICATE,    /* sequence number not after the last accepted one (a resend or a reordering) */
    SD_DROP_RING_FULL,    /* ring full, policy drop-newest */
    SD_DROP_TIMEOUT,      /* ring full, policy backpressure, and the wait timed out */
    SD_DROP_EVICTED,      /* an accepted sample evicted by a newer one (policy drop-oldest) */
    SD_DROP_CLOSED,       /* the ring was closed (ingest stopping) */
    /* appended after the ring's group so that the counters of older checkpoints keep their places */
    SD_DROP_SEQ_JUMP,     /* sequence number too far ahead of the last accepted one (sd_msg_seq_check) */
    SD_DROP_COUNT
} sd_drop_reason;

/* "accepted", "truncated", "bad_magic", ... (snake case, stable: used as metric keys). */
const char *sd_drop_reason_name(sd_drop_reason r);

/* What a message says about its sample. dims[ndim..3] are 0. */
typedef struct sd_msg_meta {
    sd_msg_dtype dtype;
    int ndim;                        /* 1..4 */
    uint32_t dims[SD_MSG_MAX_NDIM];  /* each 1..SD_MSG_MAX_DIM; images are C,H,W */
    int32_t label;                   /* >= 0 */
    uint32_t device;                 /* the device (stream) the sample belongs to */
    uint64_t seq;                    /* the stream's sequence number; version 2: epoch << 32 | number */
    uint16_t version;                /* decoded: the message's version; encoding: 0 writes version 1 */
} sd_msg_meta;

/* Version 2 sequence numbers: the publisher's epoch (a number that grows each time the publisher
 * starts) in the high 32 bits, the message's number within the epoch in the low 32. A number that
 * outgrows 32 bits carries into the epoch, which reads as a restart. */
static inline uint64_t sd_msg_seq_make(uint32_t epoch, uint64_t number) { return ((uint64_t)epoch << 32) + number; }
static inline uint32_t sd_msg_seq_epoch(uint64_t seq) { return (uint32_t)(seq >> 32); }

/* A decoded message: its meta and a pointer to the payload inside the decoded buffer. */
typedef struct sd_msg_view {
    sd_msg_meta meta;
    const void *payload;
    size_t payload_len;
} sd_msg_view;

/* What the experiment expects. A zeroed struct accepts any message within the hard limits. */
typedef struct sd_msg_expect {
    sd_msg_dtype dtype;               /* 0: any */
    int ndim;                         /* 0: any shape; else the shape must be exactly dims[0..ndim) */
    uint32_t dims[SD_MSG_MAX_NDIM];
    int32_t classes;                  /* > 0: labels lie in [0, classes) */
    bool check_device;                /* true: the device id must be `device` */
    uint32_t device;
    size_t max_payload;               /* > 0: a lower payload limit than SD_MSG_MAX_PAYLOAD */
} sd_msg_expect;

/* Checks that an expectation can be met at all (known dtype, ndim 0..4 with dims in range,
 * classes >= 0, max_payload within the hard limit); SD_ERR_INVALID naming the field otherwise. */
sd_status sd_msg_expect_check(const sd_msg_expect *e);

/* Bytes per element of dtype (0 for an unknown value) and its name ("u8", "f32", "unknown"). */
size_t sd_msg_dtype_size(sd_msg_dtype t);
const char *sd_msg_dtype_name(sd_msg_dtype t);

/* Elements of the shape (product of dims[0..ndim)). */
uint64_t sd_msg_meta_elems(const sd_msg_meta *m);

/* Header + payload bytes of a message carrying `payload_len` bytes. */
static inline size_t sd_msg_size(size_t payload_len) { return SD_MSG_HEADER_BYTES + payload_len; }

/* Writes a message into buf (cap bytes) and its length to *len. The meta must satisfy the hard
 * limits and payload_len must equal elems x dtype size; otherwise SD_ERR_INVALID naming the field.
 * cap < sd_msg_size(payload_len) is SD_ERR_INVALID with the size needed. payload may be NULL only
 * when payload_len is 0 (never, as every dim is >= 1). */
sd_status sd_msg_encode(const sd_msg_meta *m, const void *payload, size_t payload_len, void *buf, size_t cap,
                        size_t *len);

/* Decodes and validates the message in buf[0..len) (one message exactly: trailing bytes are
 * SD_DROP_BAD_LENGTH). expect may be NULL (= zeroed: hard limits only). Returns SD_DROP_NONE and
 * fills *out (its payload points into buf), or the reason of the first failed check, in this
 * order: truncated header, magic, version, dtype known, shape well formed, payload limit
 * (oversized), buffer length (truncated / bad_length), payload length = elems x size (bad_length),
 * checksum, then the experiment: dtype, shape, label, device. *out is unspecified after a drop.
 * Never reads outside buf[0..len). */
sd_drop_reason sd_msg_decode(const void *buf, size_t len, const sd_msg_expect *expect, sd_msg_view *out);

/* Decoding in two halves, for a receiver that checks the payload's CRC while copying it out
 * (stream/ingest.c): sd_msg_decode_header runs every check that needs only the header and the
 * length and fills *out; what remains is in *chk: continue chk->crc over the payload (sd_crc32c or
 * sd_crc32c_copy) and compare with chk->want (else SD_DROP_BAD_CHECKSUM), then report
 * chk->deferred, the first failed experiment check (dtype, shape, label, device), if any. Together
 * they give exactly sd_msg_decode's result. */
typedef struct sd_msg_check {
    uint32_t crc;            /* CRC-32C of header bytes [0, 44), to be continued over the payload */
    uint32_t want;           /* the checksum the message carries */
    sd_drop_reason deferred; /* SD_DROP_NONE or the experiment check that failed */
} sd_msg_check;

sd_drop_reason sd_msg_decode_header(const void *buf, size_t len, const sd_msg_expect *expect, sd_msg_view *out,
                                    sd_msg_check *chk);

/* The sequence check of one stream (docs/stream-format.md, "Sequence numbers"). */
#define SD_MSG_SEQ_MAX_JUMP (1ull << 20) /* a number may skip at most this many ahead of the last accepted */
#define SD_MSG_SEQ_RESYNC 16             /* ... unless this many consecutive numbers follow it: then it is taken */
#define SD_MSG_SEQ_STALL 256             /* refusals in a row after which the stream counts as stalled */

typedef struct sd_msg_seq {
    bool any;          /* a number has been accepted */
    uint64_t last;     /* the last accepted number */
    uint64_t gaps;     /* numbers skipped so far (messages lost upstream, or dropped there) */
    uint64_t restarts; /* version 2: new publisher epochs seen (restarts of the publisher) */
    uint64_t resyncs;  /* jumps past SD_MSG_SEQ_MAX_JUMP taken after SD_MSG_SEQ_RESYNC consecutive numbers */
    uint64_t refused;  /* messages refused in a row since the last accepted one (duplicates, jumps) */
    uint64_t jump_next;/* the run of refused jumps: the number that would continue it, and its length */
    uint32_t jump_run;
} sd_msg_seq;

/* Checks the sequence number of a message of version `version` (sd_msg_meta.version):
 * - seq <= t->last: SD_DROP_DUPLICATE (a resend, a reordering, or a message of an earlier epoch);
 * - version 2, a new epoch whose number lies within SD_MSG_SEQ_MAX_JUMP: a restart of the
 *   publisher; taken, counted in t->restarts, no gap counted;
 * - more than SD_MSG_SEQ_MAX_JUMP numbers skipped: SD_DROP_SEQ_JUMP, unless it is the
 *   SD_MSG_SEQ_RESYNC-th consecutive number of such a run (the publisher really moved on): then it
 *   is taken, counted in t->resyncs and the numbers never seen in t->gaps;
 * - else taken, the skipped numbers (seq - last - 1) counted in t->gaps.
 * Every refusal adds one to t->refused, every accepted message resets it. A zeroed sd_msg_seq
 * starts fresh and takes any first number. */
sd_drop_reason sd_msg_seq_check(sd_msg_seq *t, uint16_t version, uint64_t seq);

#ifdef __cplusplus
}
#endif

#endif
