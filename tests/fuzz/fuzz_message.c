/* fuzz_message.c: libFuzzer target for the stream message decoder (stream/message.h).
 *
 * Input: byte 0 = flags, then (flag EXPECT) 15 bytes of expectation, then the message bytes.
 *   flags bit 0 (RESEAL): recompute the CRC-32C field as docs/stream-format.md specifies before
 *                         decoding, so the checks after the checksum are reachable;
 *   flags bit 1 (EXPECT): decode against the expectation given by the next 15 bytes:
 *                         dtype u8, ndim u8, dims 4 x u16, classes u8, check_device u8, device u8,
 *                         max_payload u16 (x 16 bytes); an expectation sd_msg_expect_check refuses
 *                         is replaced by NULL (hard limits only).
 * The message is copied into an exactly sized heap buffer (ASan catches any read outside it).
 * Oracles: sd_msg_decode equals sd_msg_decode_header + CRC + deferred check (the documented
 * split); the ingest path (sd_sink_deliver, into a ring with room and into a full ring) gives the
 * same verdict; an accepted message has a consistent view and re-encodes to the same bytes; the
 * rings' counters stay consistent. Messages over 1 MiB are skipped (the rings are sized for them). */
#include "tests/fuzz/fuzz_util.h"

#include "stream/crc32c.h"
#include "stream/ingest.h"
#include "stream/message.h"
#include "stream/ring.h"

enum { F_RESEAL = 1, F_EXPECT = 2 };
#define FZ_MSG_MAX ((size_t)1 << 20)

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void reseal(uint8_t *m, size_t len) {
    if (len < SD_MSG_HEADER_BYTES) return;
    uint32_t plen = rd32(m + 40);
    size_t avail = len - SD_MSG_HEADER_BYTES;
    uint32_t crc = sd_crc32c(0, m, 44);
    crc = sd_crc32c(crc, m + SD_MSG_HEADER_BYTES, plen < avail ? plen : avail);
    for (int i = 0; i < 4; i++) m[44 + i] = (uint8_t)(crc >> (8 * i));
}

/* Created once; the roomy ring is emptied after every accepted delivery, the full one holds one
 * sample for ever (so every valid message meets a full ring). */
static sd_ring *roomy, *full;

static void rings_init(void) {
    if (roomy) return;
    sd_ring_config rc = {.max_samples = 4, .max_sample_bytes = FZ_MSG_MAX};
    FZ_CHECK(sd_ring_create(&rc, &roomy) == SD_OK, "creating the roomy ring");
    rc.max_samples = 1;
    FZ_CHECK(sd_ring_create(&rc, &full) == SD_OK, "creating the full ring");
    uint8_t one = 0;
    sd_msg_view filler = {.meta = {.dtype = SD_MSG_U8, .ndim = 1, .dims = {1}}, .payload = &one, .payload_len = 1};
    FZ_CHECK(sd_ring_push(full, &filler) == SD_DROP_NONE, "filling the full ring");
}

static void check_ring(sd_ring *r, const char *which) {
    sd_ring_stats st;
    char why[256];
    sd_ring_get_stats(r, &st);
    FZ_CHECK(sd_ring_stats_consistent(&st, why, sizeof why), "%s ring: %s", which, why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t flags = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    sd_msg_expect ex = {0};
    const sd_msg_expect *e = NULL;
    if (flags & F_EXPECT) {
        if (n < 15) return 0;
        ex.dtype = (sd_msg_dtype)p[0];
        ex.ndim = p[1];
        for (int i = 0; i < SD_MSG_MAX_NDIM; i++) ex.dims[i] = (uint32_t)(p[2 + 2 * i] | p[3 + 2 * i] << 8);
        ex.classes = p[10];
        ex.check_device = p[11] & 1;
        ex.device = p[12];
        ex.max_payload = (size_t)(p[13] | p[14] << 8) * 16;
        p += 15;
        n -= 15;
        e = sd_msg_expect_check(&ex) == SD_OK ? &ex : NULL;
    }
    if (n > FZ_MSG_MAX) return 0;

    uint8_t *msg = malloc(n ? n : 1);
    if (!msg) return 0;
    if (n) memcpy(msg, p, n);
    if (flags & F_RESEAL) reseal(msg, n);

    /* the whole decoder */
    sd_msg_view v;
    memset(&v, 0, sizeof v);
    sd_drop_reason r = sd_msg_decode(msg, n, e, &v);
    if (fz_verbose()) fprintf(stderr, "  decode (%s): %s\n", e ? "expect" : "no expect", sd_drop_reason_name(r));
    FZ_CHECK((int)r >= 0 && r <= SD_DROP_BAD_CHECKSUM, "decode returned reason %d (%s), not a decoding reason",
             (int)r, sd_drop_reason_name(r));
    FZ_CHECK(sd_drop_reason_name(r) != NULL, "reason %d has no name", (int)r);

    /* the two halves must agree with it */
    sd_msg_view hv;
    sd_msg_check chk;
    sd_drop_reason h = sd_msg_decode_header(msg, n, e, &hv, &chk);
    if (h == SD_DROP_NONE) {
        FZ_CHECK(hv.payload == msg + SD_MSG_HEADER_BYTES && hv.payload_len == n - SD_MSG_HEADER_BYTES,
                 "header decode: payload %p+%zu, buffer %p+%zu", hv.payload, hv.payload_len, (void *)msg, n);
        if (sd_crc32c(chk.crc, hv.payload, hv.payload_len) != chk.want) h = SD_DROP_BAD_CHECKSUM;
        else h = chk.deferred;
    }
    FZ_CHECK(h == r, "sd_msg_decode says %s but decode_header + CRC + deferred says %s", sd_drop_reason_name(r),
             sd_drop_reason_name(h));

    if (r == SD_DROP_NONE) {
        /* accepted: consistent, in bounds, and the same bytes when encoded again */
        const sd_msg_meta *m = &v.meta;
        FZ_CHECK(v.payload == msg + SD_MSG_HEADER_BYTES && v.payload_len + SD_MSG_HEADER_BYTES == n,
                 "accepted view points outside the message");
        FZ_CHECK(sd_msg_dtype_size(m->dtype) > 0 && m->ndim >= 1 && m->ndim <= SD_MSG_MAX_NDIM && m->label >= 0,
                 "accepted meta out of range: dtype %d ndim %d label %d", (int)m->dtype, m->ndim, (int)m->label);
        FZ_CHECK(v.payload_len == sd_msg_meta_elems(m) * sd_msg_dtype_size(m->dtype), "payload length %zu vs shape",
                 v.payload_len);
        if (e) {
            FZ_CHECK(!e->dtype || m->dtype == e->dtype, "dtype %d accepted, expected %d", (int)m->dtype, (int)e->dtype);
            FZ_CHECK(!e->classes || m->label < e->classes, "label %d accepted with %d classes", (int)m->label,
                     (int)e->classes);
            FZ_CHECK(!e->check_device || m->device == e->device, "device %u accepted, expected %u", m->device,
                     e->device);
            FZ_CHECK(!e->max_payload || v.payload_len <= e->max_payload, "payload %zu accepted over limit %zu",
                     v.payload_len, e->max_payload);
        }
        uint8_t *again = malloc(n);
        size_t again_len = 0;
        FZ_CHECK(again && sd_msg_encode(m, v.payload, v.payload_len, again, n, &again_len) == SD_OK,
                 "re-encoding an accepted message failed");
        FZ_CHECK(again_len == n && memcmp(again, msg, n) == 0, "re-encoded message differs (%zu vs %zu bytes)",
                 again_len, n);
        free(again);
    }

    /* the ingest path: the same verdict with room (CRC checked while copying) and when full */
    rings_init();
    sd_sink sink;
    FZ_CHECK(sd_sink_init(&sink, roomy, e) == SD_OK, "sink init");
    sd_drop_reason fast = sd_sink_deliver(&sink, msg, n);
    sd_ring_truncate(roomy);
    FZ_CHECK(sd_sink_init(&sink, full, e) == SD_OK, "sink init");
    sd_drop_reason slow = sd_sink_deliver(&sink, msg, n);
    FZ_CHECK(fast == r, "decode says %s, the sink with room says %s", sd_drop_reason_name(r),
             sd_drop_reason_name(fast));
    FZ_CHECK(slow == (r == SD_DROP_NONE ? SD_DROP_RING_FULL : r), "decode says %s, the sink into a full ring says %s",
             sd_drop_reason_name(r), sd_drop_reason_name(slow));
    check_ring(roomy, "roomy");
    check_ring(full, "full");

    /* duplicate detection on the message's sequence number */
    if (r == SD_DROP_NONE) {
        sd_msg_seq t = {0};
        FZ_CHECK(sd_msg_seq_check(&t, v.meta.version, v.meta.seq) == SD_DROP_NONE, "first sequence number refused");
        FZ_CHECK(sd_msg_seq_check(&t, v.meta.version, v.meta.seq) == SD_DROP_DUPLICATE, "a resend was not a duplicate");
    }
    free(msg);
    return 0;
}
