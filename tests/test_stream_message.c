/* test_stream_message.c: the stream message codec (stream/message.h) and CRC-32C (stream/crc32c.h).
 * Round trips for u8 and f32 payloads; every field made invalid in turn (the checksum resealed by
 * the layout of docs/stream-format.md, so the check under test is the one that fires) and rejected
 * with its own reason; encoder argument checks; duplicate detection; and 100k random mutations of
 * valid messages, each decoded from an exactly sized heap buffer (so ASan sees any overread), which
 * must be rejected or, when accepted, re-encode to the same bytes; the ingest path (sd_sink_deliver,
 * which checks the CRC while copying into the ring when there is room, and before pushing when
 * there is not) must give the same verdict as sd_msg_decode on every mutant. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/loglimit.h"
#include "base/status.h"
#include "stream/crc32c.h"
#include "stream/ingest.h"
#include "stream/message.h"
#include "stream/ring.h"
#include "tests/harness.h"

/* ---- helpers -------------------------------------------------------------------------------- */
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the checksum field as docs/stream-format.md specifies: CRC-32C of bytes [0, 44) then
 * of the payload (which follows the 48-byte header), stored little-endian at offset 44. */
static void reseal(uint8_t *m, size_t len) {
    if (len < 48) return;
    uint32_t plen = (uint32_t)m[40] | (uint32_t)m[41] << 8 | (uint32_t)m[42] << 16 | (uint32_t)m[43] << 24;
    size_t avail = len - 48;
    uint32_t crc = sd_crc32c(0, m, 44);
    crc = sd_crc32c(crc, m + 48, plen < avail ? plen : avail);
    put32(m + 44, crc);
}

/* Bitwise CRC-32C, the definition. */
static uint32_t crc_ref(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

/* A valid u8 message of shape c x h x w into buf; returns its length. */
static size_t make_u8(uint8_t *buf, size_t cap, uint32_t c, uint32_t h, uint32_t w, int32_t label, uint32_t device,
                      uint64_t seq, uint8_t seed) {
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {c, h, w, 0}, .label = label, .device = device, .seq = seq};
    size_t n = (size_t)c * h * w;
    uint8_t *px = malloc(n);
    for (size_t i = 0; i < n; i++) px[i] = (uint8_t)(seed + i * 7);
    size_t len = 0;
    sd_status s = sd_msg_encode(&m, px, n, buf, cap, &len);
    EXPECT(s == SD_OK, "encode failed: %s", sd_last_error());
    free(px);
    return len;
}

/* ---- CRC ---------------------------------------------------------------------------------------- */
static void test_crc_level(int level);

/* Every implementation the CPU has (tables, crc32 instruction, carry-less folding). */
static void test_crc(void) {
    int best = sd_crc32c_hw();
    printf("CRC-32C implementations: 0..%d\n", best);
    for (int level = 0; level <= best; level++) {
        EXPECT(sd_crc32c_select(level) == level, "select level %d", level);
        test_crc_level(level);
    }
    EXPECT(sd_crc32c_select(-1) == best, "back to the best");
}

static void test_crc_level(int level) {
    EXPECT(sd_crc32c(0, "123456789", 9) == 0xE3069283u, "level %d: check value 0x%08x", level,
           sd_crc32c(0, "123456789", 9));
    EXPECT(sd_crc32c_sw(0, "123456789", 9) == 0xE3069283u, "software check value");
    EXPECT(sd_crc32c(0, "", 0) == 0, "empty input gives 0");
    sd_test_rng rng = {42};
    enum { N = 9000 };
    uint8_t *b = malloc(N + 8);
    for (int i = 0; i < N + 8; i++) b[i] = (uint8_t)sd_test_next(&rng);
    int bad = 0;
    for (size_t n = 0; n < N; n = n < 1100 ? n + 1 : n * 5 / 4 + 3) { /* every length across the paths' boundaries */
        for (size_t off = 0; off < 8; off += 3) {
            uint32_t want = crc_ref(b + off, n);
            if (sd_crc32c(0, b + off, n) != want || sd_crc32c_sw(0, b + off, n) != want) bad++;
            size_t cut = n / 3;
            if (sd_crc32c(sd_crc32c(0, b + off, cut), b + off + cut, n - cut) != want) bad++;
        }
    }
    EXPECT(bad == 0, "level %d: %d CRC mismatches against the bitwise definition", level, bad);
    /* copy + CRC in one pass: same CRC, same bytes, nothing written past the end */
    uint8_t *dst = malloc(N + 16);
    bad = 0;
    for (size_t n = 0; n < N; n = n < 1100 ? n + 1 : n * 3 / 2 + 5) {
        memset(dst, 0xCD, N + 16);
        uint32_t c = sd_crc32c_copy(0x12345678u, dst + 1, b + 3, n);
        if (c != sd_crc32c(0x12345678u, b + 3, n) || memcmp(dst + 1, b + 3, n) != 0 || dst[0] != 0xCD ||
            dst[n + 1] != 0xCD)
            bad++;
    }
    EXPECT(bad == 0, "level %d: %d sd_crc32c_copy mismatches", level, bad);
    free(dst);
    free(b);
}

/* ---- round trips -------------------------------------------------------------------------------- */
static void test_roundtrip_u8(void) {
    uint8_t buf[4096];
    size_t len = make_u8(buf, sizeof buf, 3, 8, 10, 7, 5, 0x0123456789abcdefull, 11);
    EXPECT(len == 48 + 240, "length %zu", len);
    EXPECT(memcmp(buf, "SDM1", 4) == 0, "magic bytes are \"SDM1\"");
    sd_msg_expect e = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {3, 8, 10}, .classes = 10, .check_device = true,
                       .device = 5};
    EXPECT_OK(sd_msg_expect_check(&e));
    sd_msg_view v;
    sd_drop_reason r = sd_msg_decode(buf, len, &e, &v);
    EXPECT(r == SD_DROP_NONE, "decode: %s", sd_drop_reason_name(r));
    EXPECT(v.meta.dtype == SD_MSG_U8 && v.meta.ndim == 3 && v.meta.dims[0] == 3 && v.meta.dims[1] == 8 &&
               v.meta.dims[2] == 10 && v.meta.dims[3] == 0,
           "shape");
    EXPECT(v.meta.label == 7 && v.meta.device == 5 && v.meta.seq == 0x0123456789abcdefull, "label/device/seq");
    EXPECT(v.payload == buf + 48 && v.payload_len == 240, "payload points into the buffer");
    int ok = 1;
    for (size_t i = 0; i < 240; i++) ok &= ((const uint8_t *)v.payload)[i] == (uint8_t)(11 + i * 7);
    EXPECT(ok, "payload bytes round-trip");
    EXPECT(sd_msg_decode(buf, len, NULL, &v) == SD_DROP_NONE, "NULL expect accepts a valid message");
}

static void test_roundtrip_f32(void) {
    float x[2 * 3 * 4 * 5];
    for (int i = 0; i < 120; i++) x[i] = (float)i * -0.37f + 1e-20f;
    x[3] = INFINITY;
    x[4] = NAN; /* the codec carries bytes; finiteness is the trainer's concern */
    sd_msg_meta m = {.dtype = SD_MSG_F32, .ndim = 4, .dims = {2, 3, 4, 5}, .label = 0, .device = 0, .seq = 1};
    uint8_t buf[1024];
    size_t len = 0;
    EXPECT_OK(sd_msg_encode(&m, x, sizeof x, buf, sizeof buf, &len));
    sd_msg_expect e = {.dtype = SD_MSG_F32, .ndim = 4, .dims = {2, 3, 4, 5}, .classes = 1};
    sd_msg_view v;
    EXPECT(sd_msg_decode(buf, len, &e, &v) == SD_DROP_NONE, "f32 decode");
    EXPECT(v.payload_len == sizeof x && memcmp(v.payload, x, sizeof x) == 0, "f32 payload bytes round-trip");
    EXPECT(v.meta.ndim == 4 && v.meta.dims[3] == 5 && sd_msg_meta_elems(&v.meta) == 120, "4-d shape");
    /* the wire format is little-endian: element 1 (-0.37f + 1e-20f) starts at byte 52 */
    uint32_t bits;
    memcpy(&bits, &x[1], 4);
    EXPECT(buf[52] == (uint8_t)bits && buf[55] == (uint8_t)(bits >> 24), "little-endian payload");
    /* 1-d */
    sd_msg_meta m1 = {.dtype = SD_MSG_F32, .ndim = 1, .dims = {3}, .label = 2, .seq = 9};
    float y[3] = {1, 2, 3};
    EXPECT_OK(sd_msg_encode(&m1, y, sizeof y, buf, sizeof buf, &len));
    EXPECT(sd_msg_decode(buf, len, NULL, &v) == SD_DROP_NONE && v.meta.ndim == 1 && v.meta.label == 2, "1-d");
}

/* ---- the encoder's checks ----------------------------------------------------------------------- */
static void test_encode_errors(void) {
    uint8_t px[64] = {0}, buf[256];
    size_t len;
    sd_msg_meta ok = {.dtype = SD_MSG_U8, .ndim = 2, .dims = {4, 4}, .label = 1};
    sd_msg_meta m = ok;
    m.dtype = (sd_msg_dtype)3;
    EXPECT_FAIL(sd_msg_encode(&m, px, 16, buf, sizeof buf, &len), SD_ERR_INVALID, "dtype 3 is unknown");
    m = ok;
    m.ndim = 0;
    EXPECT_FAIL(sd_msg_encode(&m, px, 16, buf, sizeof buf, &len), SD_ERR_INVALID, "ndim 0");
    m.ndim = 5;
    EXPECT_FAIL(sd_msg_encode(&m, px, 16, buf, sizeof buf, &len), SD_ERR_INVALID, "ndim 5");
    m = ok;
    m.dims[1] = 0;
    EXPECT_FAIL(sd_msg_encode(&m, px, 0, buf, sizeof buf, &len), SD_ERR_INVALID, "dims[1] = 0");
    m = ok;
    m.dims[2] = 1;
    EXPECT_FAIL(sd_msg_encode(&m, px, 16, buf, sizeof buf, &len), SD_ERR_INVALID, "beyond ndim");
    m = ok;
    m.label = -1;
    EXPECT_FAIL(sd_msg_encode(&m, px, 16, buf, sizeof buf, &len), SD_ERR_INVALID, "label -1");
    EXPECT_FAIL(sd_msg_encode(&ok, px, 15, buf, sizeof buf, &len), SD_ERR_INVALID, "need 16");
    EXPECT_FAIL(sd_msg_encode(&ok, px, 16, buf, 63, &len), SD_ERR_INVALID, "needs 64");
    EXPECT_FAIL(sd_msg_encode(&ok, NULL, 16, buf, sizeof buf, &len), SD_ERR_INVALID, "needs the meta");
    EXPECT_OK(sd_msg_encode(&ok, px, 16, buf, 64, &len));
    sd_msg_expect e = {.ndim = 5};
    EXPECT_FAIL(sd_msg_expect_check(&e), SD_ERR_INVALID, "expected ndim 5");
    e = (sd_msg_expect){.dtype = (sd_msg_dtype)9};
    EXPECT_FAIL(sd_msg_expect_check(&e), SD_ERR_INVALID, "expected dtype 9");
    e = (sd_msg_expect){.classes = -2};
    EXPECT_FAIL(sd_msg_expect_check(&e), SD_ERR_INVALID, "class count -2");
}

/* ---- every field rejected with its reason ------------------------------------------------------- */
typedef struct mut_case {
    const char *what;
    int off;            /* byte offset to overwrite (-1: none) */
    int width;          /* 1, 2 or 4 bytes */
    uint32_t value;
    int len_delta;      /* change of the buffer length */
    int reseal;         /* recompute the checksum after the change */
    sd_drop_reason want;
} mut_case;

static void test_each_field(void) {
    /* base: u8 1 x 4 x 4 (16 payload bytes), label 3, device 2, seq 100 */
    uint8_t base[64 + 48];
    size_t blen = make_u8(base, sizeof base, 1, 4, 4, 3, 2, 100, 1);
    EXPECT(blen == 64, "base length %zu", blen);
    const sd_msg_expect e = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 4, 4}, .classes = 10, .check_device = true,
                             .device = 2};
    const mut_case cases[] = {
        {"valid", -1, 0, 0, 0, 0, SD_DROP_NONE},
        {"header cut", -1, 0, 0, -(int)blen + 47, 0, SD_DROP_TRUNCATED},
        {"empty", -1, 0, 0, -(int)blen, 0, SD_DROP_TRUNCATED},
        {"payload cut", -1, 0, 0, -1, 0, SD_DROP_TRUNCATED},
        {"trailing byte", -1, 0, 0, +1, 0, SD_DROP_BAD_LENGTH},
        {"magic", 0, 4, 0x324D4453u, 0, 1, SD_DROP_BAD_MAGIC},
        {"magic byte order", 0, 4, 0x53444D31u, 0, 1, SD_DROP_BAD_MAGIC},
        {"version 0", 4, 2, 0, 0, 1, SD_DROP_BAD_VERSION},
        {"version 2 (same layout, epoch in the seq)", 4, 2, 2, 0, 1, SD_DROP_NONE},
        {"version 3", 4, 2, 3, 0, 1, SD_DROP_BAD_VERSION},
        {"dtype 0", 6, 1, 0, 0, 1, SD_DROP_BAD_DTYPE},
        {"dtype 3", 6, 1, 3, 0, 1, SD_DROP_BAD_DTYPE},
        {"ndim 0", 7, 1, 0, 0, 1, SD_DROP_BAD_SHAPE},
        {"ndim 5", 7, 1, 5, 0, 1, SD_DROP_BAD_SHAPE},
        {"dim 0", 12, 4, 0, 0, 1, SD_DROP_BAD_SHAPE},
        {"dim too large", 12, 4, 65536, 0, 1, SD_DROP_BAD_SHAPE},
        {"unused dim set", 20, 4, 1, 0, 1, SD_DROP_BAD_SHAPE},
        {"payload over hard limit", 40, 4, SD_MSG_MAX_PAYLOAD + 1, 0, 1, SD_DROP_OVERSIZED},
        {"payload huge", 40, 4, 0xFFFFFFFFu, 0, 1, SD_DROP_OVERSIZED},
        {"payload longer than buffer", 40, 4, 17, 0, 1, SD_DROP_TRUNCATED},
        {"payload shorter than buffer", 40, 4, 15, 0, 1, SD_DROP_BAD_LENGTH},
        {"shape disagrees with length", 16, 4, 3, 0, 1, SD_DROP_BAD_LENGTH},
        {"label -1", 24, 4, 0xFFFFFFFFu, 0, 1, SD_DROP_BAD_LABEL},
        {"label = classes", 24, 4, 10, 0, 1, SD_DROP_BAD_LABEL},
        {"label 9", 24, 4, 9, 0, 1, SD_DROP_NONE},
        {"device", 28, 4, 3, 0, 1, SD_DROP_BAD_DEVICE},
        {"seq changed, resealed", 32, 4, 7, 0, 1, SD_DROP_NONE},
        {"label changed, not resealed", 24, 4, 4, 0, 0, SD_DROP_BAD_CHECKSUM},
        {"checksum field", 44, 1, 0x5A, 0, 0, SD_DROP_BAD_CHECKSUM},
        {"payload byte", 50, 1, 0xEE, 0, 0, SD_DROP_BAD_CHECKSUM},
        {"last payload byte", 63, 1, 0x00, 0, 0, SD_DROP_BAD_CHECKSUM},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const mut_case *c = &cases[k];
        uint8_t m[128];
        memset(m, 0xAB, sizeof m);
        memcpy(m, base, blen);
        if (c->off >= 0) {
            if (c->width == 1) m[c->off] = (uint8_t)c->value;
            else if (c->width == 2) {
                m[c->off] = (uint8_t)c->value;
                m[c->off + 1] = (uint8_t)(c->value >> 8);
            } else put32(m + c->off, c->value);
        }
        size_t len = (size_t)((int)blen + c->len_delta);
        if (c->reseal) reseal(m, len);
        uint8_t *exact = malloc(len ? len : 1); /* exactly len bytes: ASan catches an overread */
        memcpy(exact, m, len);
        sd_msg_view v;
        sd_drop_reason got = sd_msg_decode(exact, len, &e, &v);
        EXPECT(got == c->want, "%s: got %s, want %s", c->what, sd_drop_reason_name(got), sd_drop_reason_name(c->want));
        free(exact);
    }

    /* the experiment's dtype and shape: messages that are valid on their own */
    uint8_t m[256];
    float f4[4] = {0};
    sd_msg_meta mf = {.dtype = SD_MSG_F32, .ndim = 3, .dims = {1, 2, 2}, .label = 1, .device = 2};
    size_t len;
    EXPECT_OK(sd_msg_encode(&mf, f4, 16, m, sizeof m, &len));
    EXPECT(sd_msg_decode(m, len, &e, NULL) == SD_DROP_BAD_DTYPE, "f32 where u8 is expected");
    EXPECT(sd_msg_decode(m, len, NULL, NULL) == SD_DROP_NONE, "f32 accepted without expectations");
    len = make_u8(m, sizeof m, 1, 2, 8, 1, 2, 0, 0); /* 16 bytes, shape 1x2x8 */
    EXPECT(sd_msg_decode(m, len, &e, NULL) == SD_DROP_BAD_SHAPE, "1x2x8 where 1x4x4 is expected");
    sd_msg_meta m2 = {.dtype = SD_MSG_U8, .ndim = 2, .dims = {4, 4}, .label = 1, .device = 2};
    uint8_t px[16] = {0};
    EXPECT_OK(sd_msg_encode(&m2, px, 16, m, sizeof m, &len));
    EXPECT(sd_msg_decode(m, len, &e, NULL) == SD_DROP_BAD_SHAPE, "2-d where 3-d is expected");
    sd_msg_expect small = e;
    small.max_payload = 15;
    len = make_u8(m, sizeof m, 1, 4, 4, 1, 2, 0, 0);
    EXPECT(sd_msg_decode(m, len, &small, NULL) == SD_DROP_OVERSIZED, "payload over the experiment's limit");
    sd_msg_expect anydev = e;
    anydev.check_device = false;
    len = make_u8(m, sizeof m, 1, 4, 4, 1, 77, 0, 0);
    EXPECT(sd_msg_decode(m, len, &e, NULL) == SD_DROP_BAD_DEVICE, "device 77 where 2 is expected");
    EXPECT(sd_msg_decode(m, len, &anydev, NULL) == SD_DROP_NONE, "any device");
    EXPECT(sd_msg_decode(NULL, 0, &e, NULL) == SD_DROP_TRUNCATED, "NULL buffer");
}

static void test_reasons_and_seq(void) {
    int distinct = 1;
    for (int a = 0; a < SD_DROP_COUNT; a++) {
        const char *na = sd_drop_reason_name((sd_drop_reason)a);
        EXPECT(na && *na && strcmp(na, "unknown_reason") != 0, "reason %d has a name", a);
        for (int b = 0; b < a; b++) distinct &= strcmp(na, sd_drop_reason_name((sd_drop_reason)b)) != 0;
    }
    EXPECT(distinct, "reason names are distinct");
    EXPECT(strcmp(sd_drop_reason_name(SD_DROP_BAD_MAGIC), "bad_magic") == 0, "bad_magic");
    EXPECT(strcmp(sd_drop_reason_name(SD_DROP_BAD_CHECKSUM), "bad_checksum") == 0, "bad_checksum");
    EXPECT(strcmp(sd_drop_reason_name(SD_DROP_COUNT), "unknown_reason") == 0, "out of range");
    EXPECT(strcmp(sd_msg_dtype_name(SD_MSG_F32), "f32") == 0 && sd_msg_dtype_size(SD_MSG_F32) == 4, "f32 name/size");

    sd_msg_seq t = {0};
    EXPECT(sd_msg_seq_check(&t, 1, 5) == SD_DROP_NONE, "first number is accepted");
    EXPECT(sd_msg_seq_check(&t, 1, 5) == SD_DROP_DUPLICATE, "repeat is a duplicate");
    EXPECT(sd_msg_seq_check(&t, 1, 4) == SD_DROP_DUPLICATE && t.refused == 2, "older is a duplicate");
    EXPECT(sd_msg_seq_check(&t, 1, 6) == SD_DROP_NONE && t.gaps == 0 && t.refused == 0, "next");
    EXPECT(sd_msg_seq_check(&t, 1, 9) == SD_DROP_NONE && t.gaps == 2, "gap of 2 counted (%llu)",
           (unsigned long long)t.gaps);
    sd_msg_seq z = {0};
    EXPECT(sd_msg_seq_check(&z, 1, 0) == SD_DROP_NONE && sd_msg_seq_check(&z, 1, 0) == SD_DROP_DUPLICATE, "seq 0");
}

/* #20 item 5: one message must not stall a stream. A huge number is refused as a jump (the stream
 * goes on), a run of SD_MSG_SEQ_RESYNC consecutive numbers past the bound is taken (the publisher
 * really moved on), a version-2 epoch change is a restart, a version-1 restart stalls visibly. */
static void test_seq_jumps_and_epochs(void) {
    sd_msg_seq t = {0};
    for (uint64_t s = 0; s < 10; s++) EXPECT(sd_msg_seq_check(&t, 1, s) == SD_DROP_NONE, "seq %llu", (unsigned long long)s);
    /* the case of the issue: one well-formed message numbered far ahead */
    EXPECT(sd_msg_seq_check(&t, 1, UINT64_MAX - 5) == SD_DROP_SEQ_JUMP, "a huge number is a jump");
    EXPECT(t.last == 9 && t.refused == 1, "the jump changed nothing (last %llu)", (unsigned long long)t.last);
    EXPECT(sd_msg_seq_check(&t, 1, 10) == SD_DROP_NONE && t.gaps == 0 && t.refused == 0, "the stream goes on");
    /* the bound itself: SD_MSG_SEQ_MAX_JUMP - 1 skipped is a gap, SD_MSG_SEQ_MAX_JUMP is a jump */
    EXPECT(sd_msg_seq_check(&t, 1, 10 + SD_MSG_SEQ_MAX_JUMP) == SD_DROP_NONE && t.gaps == SD_MSG_SEQ_MAX_JUMP - 1,
           "a skip just under the bound is a gap (%llu)", (unsigned long long)t.gaps);
    uint64_t base = t.last, g0 = t.gaps;
    EXPECT(sd_msg_seq_check(&t, 1, base + 1 + SD_MSG_SEQ_MAX_JUMP) == SD_DROP_SEQ_JUMP, "a skip of the bound is a jump");
    /* a resync: SD_MSG_SEQ_RESYNC consecutive numbers past the bound; an interruption restarts the run */
    uint64_t far = base + 10 * SD_MSG_SEQ_MAX_JUMP;
    for (int i = 0; i < SD_MSG_SEQ_RESYNC - 2; i++)
        EXPECT(sd_msg_seq_check(&t, 1, far + (uint64_t)i) == SD_DROP_SEQ_JUMP, "run message %d refused", i);
    EXPECT(sd_msg_seq_check(&t, 1, far + 100) == SD_DROP_SEQ_JUMP && t.jump_run == 1, "a break restarts the run");
    for (int i = 1; i < SD_MSG_SEQ_RESYNC - 1; i++)
        EXPECT(sd_msg_seq_check(&t, 1, far + 100 + (uint64_t)i) == SD_DROP_SEQ_JUMP, "rerun message %d refused", i);
    uint64_t take = far + 100 + SD_MSG_SEQ_RESYNC - 1;
    EXPECT(sd_msg_seq_check(&t, 1, take) == SD_DROP_NONE && t.resyncs == 1 && t.last == take, "the 16th is taken");
    EXPECT(t.gaps == g0 + (take - base - 1) - (SD_MSG_SEQ_RESYNC - 1), "the refused run is not counted as gaps");
    EXPECT(sd_msg_seq_check(&t, 1, take + 1) == SD_DROP_NONE && t.refused == 0, "and the stream goes on from there");

    /* version 2: a publisher restart (new epoch, number from 0) is taken at once, without a gap */
    sd_msg_seq e = {0};
    for (uint64_t n = 0; n < 100; n++) EXPECT(sd_msg_seq_check(&e, 2, sd_msg_seq_make(1000, n)) == SD_DROP_NONE, "epoch 1000");
    EXPECT(sd_msg_seq_check(&e, 2, sd_msg_seq_make(1007, 0)) == SD_DROP_NONE && e.restarts == 1 && e.gaps == 0,
           "restart: epoch 1007 from 0 (restarts %llu gaps %llu)", (unsigned long long)e.restarts, (unsigned long long)e.gaps);
    EXPECT(sd_msg_seq_check(&e, 2, sd_msg_seq_make(1000, 100)) == SD_DROP_DUPLICATE, "the old epoch's late message");
    EXPECT(sd_msg_seq_check(&e, 2, sd_msg_seq_make(1007, 1)) == SD_DROP_NONE && e.gaps == 0, "the new epoch goes on");
    /* a new epoch numbered past the bound is a jump like any other */
    EXPECT(sd_msg_seq_check(&e, 2, sd_msg_seq_make(1008, SD_MSG_SEQ_MAX_JUMP)) == SD_DROP_SEQ_JUMP, "far into a new epoch");
    /* the number carrying into the epoch: a restart, nothing lost */
    sd_msg_seq c = {0};
    EXPECT(sd_msg_seq_check(&c, 2, sd_msg_seq_make(5, 0xFFFFFFFFull)) == SD_DROP_NONE, "last number of epoch 5");
    EXPECT(sd_msg_seq_check(&c, 2, sd_msg_seq_make(5, 0x100000000ull)) == SD_DROP_NONE && c.restarts == 1 && c.gaps == 0,
           "the carry into epoch 6");
    /* the same numbers as version 1: no epochs, so epoch 1007 of a v1 stream is a jump */
    sd_msg_seq v1 = {0};
    EXPECT(sd_msg_seq_check(&v1, 1, sd_msg_seq_make(1000, 5)) == SD_DROP_NONE, "v1 first");
    EXPECT(sd_msg_seq_check(&v1, 1, sd_msg_seq_make(1007, 0)) == SD_DROP_SEQ_JUMP, "v1 knows no epochs");
    /* a version-1 publisher restarting from 0: every message a duplicate, the stall is counted */
    for (int i = 0; i < SD_MSG_SEQ_STALL; i++) (void)sd_msg_seq_check(&v1, 1, (uint64_t)i);
    EXPECT(v1.refused == SD_MSG_SEQ_STALL + 1, "the stall is visible: %llu refusals in a row", (unsigned long long)v1.refused);

    /* the codec: version 2 round-trips with its epoch; version 1 stays the default; 3 is refused */
    uint8_t buf[64], px[4] = {1, 2, 3, 4};
    size_t len = 0;
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 1, .dims = {4}, .label = 1, .seq = sd_msg_seq_make(77, 3), .version = 2};
    EXPECT_OK(sd_msg_encode(&m, px, 4, buf, sizeof buf, &len));
    sd_msg_view v;
    EXPECT(sd_msg_decode(buf, len, NULL, &v) == SD_DROP_NONE && v.meta.version == 2 && sd_msg_seq_epoch(v.meta.seq) == 77 &&
               (uint32_t)v.meta.seq == 3 && buf[4] == 2,
           "version 2 round trip");
    m.version = 0;
    EXPECT_OK(sd_msg_encode(&m, px, 4, buf, sizeof buf, &len));
    EXPECT(buf[4] == 1 && sd_msg_decode(buf, len, NULL, &v) == SD_DROP_NONE && v.meta.version == 1, "version 0 writes 1");
    m.version = 3;
    EXPECT(sd_msg_encode(&m, px, 4, buf, sizeof buf, &len) == SD_ERR_INVALID, "version 3 cannot be written");
}

/* #20 item 4: the drop log's rate limit says what it suppressed, also when the drops stop before
 * the next line would have said it (the count comes with sd_loglimit_destroy). */
static void test_loglimit_says_suppressed(void) {
    fflush(stderr);
    FILE *cap = tmpfile();
    int saved = dup(2);
    EXPECT(cap && saved >= 0 && dup2(fileno(cap), 2) >= 0, "capture stderr");
    sd_loglimit l;
    sd_loglimit_init(&l);
    for (int i = 0; i < 25; i++) sd_loglimit_note(&l, false, false, "kafka(t-0)", "dropped a record: duplicate");
    sd_loglimit_destroy(&l);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[4096] = "";
    rewind(cap);
    size_t n = fread(text, 1, sizeof text - 1, cap);
    text[n] = 0;
    fclose(cap);
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "dropped a record")); p++) lines++;
    EXPECT(lines == 10, "10 lines printed (%d)", lines);
    EXPECT(strstr(text, "scadles: kafka(t-0): 15 similar lines suppressed") != NULL, "the suppressed count is said: %s", text);
}

/* ---- fuzz --------------------------------------------------------------------------------------- */
static const uint32_t interesting[] = {0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 65535, 65536,
                                       0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu, SD_MSG_MAX_PAYLOAD,
                                       SD_MSG_MAX_PAYLOAD + 1, 48, 16, 784, 3072};

static void test_fuzz(void) {
    enum { ITERS = 100000, CAP = 4096 };
    uint8_t seeds[3][CAP];
    size_t seed_len[3];
    seed_len[0] = make_u8(seeds[0], CAP, 1, 4, 4, 3, 2, 10, 5);
    seed_len[1] = make_u8(seeds[1], CAP, 1, 28, 28, 9, 2, 11, 6);
    float fx[6] = {1, -2, 3, -4, 5, -6};
    sd_msg_meta mf = {.dtype = SD_MSG_F32, .ndim = 2, .dims = {2, 3}, .label = 1, .device = 2, .seq = 12};
    EXPECT_OK(sd_msg_encode(&mf, fx, sizeof fx, seeds[2], CAP, &seed_len[2]));
    const sd_msg_expect exps[2] = {{0}, {.classes = 10, .check_device = true, .device = 2}};

    sd_test_rng rng = {20240611};
    uint64_t by_reason[SD_DROP_COUNT] = {0};
    int bad_reason = 0, bad_accept = 0, bad_sink = 0;
    uint64_t sink_accepted = 0;
    /* the ingest path: a ring with room (fast path) and a full one (slow path) */
    sd_ring *roomy = NULL, *full = NULL;
    sd_ring_config rc = {.max_samples = 4, .max_sample_bytes = CAP};
    EXPECT_OK(sd_ring_create(&rc, &roomy));
    rc.max_samples = 1;
    EXPECT_OK(sd_ring_create(&rc, &full));
    uint8_t one = 0;
    sd_msg_view filler = {.meta = {.dtype = SD_MSG_U8, .ndim = 1, .dims = {1}}, .payload = &one, .payload_len = 1};
    EXPECT(sd_ring_push(full, &filler) == SD_DROP_NONE, "fill the full ring");
    uint8_t work[CAP + 64], again[CAP + 64];
    for (int it = 0; it < ITERS; it++) {
        int which = (int)(sd_test_next(&rng) % 3);
        size_t len = seed_len[which];
        memcpy(work, seeds[which], len);
        int nmut = 1 + (int)(sd_test_next(&rng) % 4);
        for (int k = 0; k < nmut; k++) {
            uint64_t x = sd_test_next(&rng);
            if (len == 0) break;
            switch (x % 6) {
            case 0: work[(x >> 8) % len] ^= (uint8_t)(1u << ((x >> 40) % 8)); break; /* flip a bit */
            case 1: work[(x >> 8) % len] = (uint8_t)(x >> 40); break;               /* set a byte */
            case 2: { /* an interesting value in a header field */
                size_t off = ((x >> 8) % 12) * 4;
                put32(work + off, interesting[(x >> 32) % (sizeof interesting / sizeof interesting[0])]);
                break;
            }
            case 3: len = (x >> 8) % (len + 1); break; /* cut */
            case 4: { /* append bytes */
                size_t add = 1 + (x >> 8) % 32;
                if (len + add <= CAP) {
                    for (size_t i = 0; i < add; i++) work[len + i] = (uint8_t)sd_test_next(&rng);
                    len += add;
                }
                break;
            }
            default: work[4 + (x >> 8) % 4] = (uint8_t)(x >> 40); break; /* version / dtype / ndim */
            }
        }
        if (sd_test_next(&rng) & 1) reseal(work, len); /* half resealed: exercises the checks after the CRC */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, work, len);
        const sd_msg_expect *e = &exps[sd_test_next(&rng) & 1];
        sd_msg_view v;
        sd_drop_reason r = sd_msg_decode(exact, len, e, &v);
        if (it % 5 == 0) { /* the same verdict through the sink, on both of its paths */
            sd_sink sink;
            sd_sink_init(&sink, roomy, e);
            sd_drop_reason fast = sd_sink_deliver(&sink, exact, len);
            sink_accepted += fast == SD_DROP_NONE;
            sd_ring_truncate(roomy);
            sd_sink_init(&sink, full, e);
            sd_drop_reason slow = sd_sink_deliver(&sink, exact, len);
            if (fast != r || slow != (r == SD_DROP_NONE ? SD_DROP_RING_FULL : r)) {
                if (bad_sink++ < 5)
                    fprintf(stderr, "mutant %d: decode %s, sink fast %s, slow %s\n", it, sd_drop_reason_name(r),
                            sd_drop_reason_name(fast), sd_drop_reason_name(slow));
            }
        }
        if ((int)r < 0 || r > SD_DROP_BAD_CHECKSUM) {
            bad_reason++;
        } else {
            by_reason[r]++;
            if (r == SD_DROP_NONE) {
                /* accepted: consistent, in bounds, and the same bytes when encoded again */
                size_t again_len = 0;
                int ok = v.payload == exact + 48 && v.payload_len + 48 == len &&
                         v.payload_len == sd_msg_meta_elems(&v.meta) * sd_msg_dtype_size(v.meta.dtype) &&
                         v.meta.label >= 0 && (!e->classes || v.meta.label < e->classes) &&
                         sd_msg_encode(&v.meta, v.payload, v.payload_len, again, sizeof again, &again_len) == SD_OK &&
                         again_len == len && memcmp(again, exact, len) == 0;
                if (!ok) bad_accept++;
            }
        }
        free(exact);
    }
    EXPECT(bad_reason == 0, "%d decodes returned a reason outside the decode set", bad_reason);
    EXPECT(bad_accept == 0, "%d accepted mutants were inconsistent", bad_accept);
    EXPECT(bad_sink == 0, "%d mutants got another verdict from the ingest path", bad_sink);
    sd_ring_stats st;
    sd_ring_get_stats(roomy, &st);
    char why[200];
    bool consistent = sd_ring_stats_consistent(&st, why, sizeof why);
    EXPECT(consistent, "ingest counters: %s", why);
    EXPECT(st.received == ITERS / 5 && st.accepted == sink_accepted, "ingest counted %llu received, %llu accepted (%llu)",
           (unsigned long long)st.received, (unsigned long long)st.accepted, (unsigned long long)sink_accepted);
    sd_ring_destroy(roomy);
    sd_ring_destroy(full);
    EXPECT(by_reason[SD_DROP_NONE] > 0 && by_reason[SD_DROP_BAD_CHECKSUM] > 0 && by_reason[SD_DROP_TRUNCATED] > 0,
           "the fuzz reaches accept, checksum and truncation");
    printf("fuzz: %d mutants:", ITERS);
    for (int r = 0; r <= SD_DROP_BAD_CHECKSUM; r++)
        printf(" %s=%llu", sd_drop_reason_name((sd_drop_reason)r), (unsigned long long)by_reason[r]);
    printf("\n");
}

int main(void) {
    test_crc();
    test_roundtrip_u8();
    test_roundtrip_f32();
    test_encode_errors();
    test_each_field();
    test_reasons_and_seq();
    test_seq_jumps_and_epochs();
    test_loglimit_says_suppressed();
    test_fuzz();
    return sd_test_finish("test_stream_message");
}
