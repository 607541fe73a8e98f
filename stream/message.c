/* message.c: encoding and validating stream messages (declared in message.h; the byte layout is
 * specified in docs/stream-format.md). */
#include "stream/message.h"

#include <string.h>

#include "stream/crc32c.h"

/* ---- byte layout ----------------------------------------------------------------------------- */
enum {
    OFF_MAGIC = 0,    /* u32 */
    OFF_VERSION = 4,  /* u16 */
    OFF_DTYPE = 6,    /* u8 */
    OFF_NDIM = 7,     /* u8 */
    OFF_DIMS = 8,     /* 4 x u32 */
    OFF_LABEL = 24,   /* i32 */
    OFF_DEVICE = 28,  /* u32 */
    OFF_SEQ = 32,     /* u64 */
    OFF_LEN = 40,     /* u32 payload bytes */
    OFF_CRC = 44,     /* u32 CRC-32C of bytes [0, 44) then the payload */
};
_Static_assert(OFF_CRC + 4 == SD_MSG_HEADER_BYTES, "header layout");

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static inline void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void wr64(uint8_t *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* CRC-32C of header bytes [0, 44) (the part the checksum covers), inline: it is on every message's
 * path twice. */
#if defined(__SSE4_2__) && defined(__x86_64__)
#include <nmmintrin.h>
#define HEADER_WORDS 1 /* little-endian host with the crc32 instruction */
static inline uint32_t header_crc(const uint8_t *b) {
    uint64_t r = 0xFFFFFFFFu, v;
    for (int i = 0; i < 40; i += 8) {
        memcpy(&v, b + i, 8);
        r = _mm_crc32_u64(r, v);
    }
    uint32_t w;
    memcpy(&w, b + 40, 4);
    return ~_mm_crc32_u32((uint32_t)r, w);
}
#else
#define HEADER_WORDS 0
static inline uint32_t header_crc(const uint8_t *b) { return sd_crc32c(0, b, OFF_CRC); }
#endif

/* ---- names ------------------------------------------------------------------------------------ */
static const char *const reason_names[SD_DROP_COUNT] = {
    [SD_DROP_NONE] = "accepted",
    [SD_DROP_TRUNCATED] = "truncated",
    [SD_DROP_BAD_MAGIC] = "bad_magic",
    [SD_DROP_BAD_VERSION] = "bad_version",
    [SD_DROP_OVERSIZED] = "oversized",
    [SD_DROP_BAD_LENGTH] = "bad_length",
    [SD_DROP_BAD_DTYPE] = "bad_dtype",
    [SD_DROP_BAD_SHAPE] = "bad_shape",
    [SD_DROP_BAD_LABEL] = "bad_label",
    [SD_DROP_BAD_DEVICE] = "bad_device",
    [SD_DROP_BAD_CHECKSUM] = "bad_checksum",
    [SD_DROP_DUPLICATE] = "duplicate",
    [SD_DROP_RING_FULL] = "ring_full",
    [SD_DROP_TIMEOUT] = "backpressure_timeout",
    [SD_DROP_EVICTED] = "evicted_oldest",
    [SD_DROP_CLOSED] = "ring_closed",
    [SD_DROP_SEQ_JUMP] = "seq_jump",
};

const char *sd_drop_reason_name(sd_drop_reason r) {
    if ((int)r < 0 || r >= SD_DROP_COUNT) return "unknown_reason";
    return reason_names[r];
}

size_t sd_msg_dtype_size(sd_msg_dtype t) {
    switch (t) {
    case SD_MSG_U8: return 1;
    case SD_MSG_F32: return 4;
    }
    return 0;
}

const char *sd_msg_dtype_name(sd_msg_dtype t) {
    switch (t) {
    case SD_MSG_U8: return "u8";
    case SD_MSG_F32: return "f32";
    }
    return "unknown";
}

uint64_t sd_msg_meta_elems(const sd_msg_meta *m) {
    uint64_t e = 1;
    for (int i = 0; i < m->ndim && i < SD_MSG_MAX_NDIM; i++) e *= m->dims[i];
    return e;
}

/* ---- encoding --------------------------------------------------------------------------------- */
static sd_status check_meta(const sd_msg_meta *m, size_t payload_len) {
    if (!sd_msg_dtype_size(m->dtype))
        return SD_FAIL(SD_ERR_INVALID, "message dtype %d is unknown; use SD_MSG_U8 or SD_MSG_F32", (int)m->dtype);
    if (m->ndim < 1 || m->ndim > SD_MSG_MAX_NDIM)
        return SD_FAIL(SD_ERR_INVALID, "message ndim %d must lie in [1, %d]", m->ndim, SD_MSG_MAX_NDIM);
    for (int i = 0; i < SD_MSG_MAX_NDIM; i++) {
        if (i < m->ndim && (m->dims[i] < 1 || m->dims[i] > SD_MSG_MAX_DIM))
            return SD_FAIL(SD_ERR_INVALID, "message dims[%d] = %u must lie in [1, %u]", i, m->dims[i],
                           SD_MSG_MAX_DIM);
        if (i >= m->ndim && m->dims[i] != 0)
            return SD_FAIL(SD_ERR_INVALID, "message dims[%d] = %u must be 0 beyond ndim %d", i, m->dims[i], m->ndim);
    }
    if (m->label < 0) return SD_FAIL(SD_ERR_INVALID, "message label %d is negative", (int)m->label);
    if (m->version > SD_MSG_VERSION)
        return SD_FAIL(SD_ERR_INVALID, "message version %u is unknown; use 0 or 1 (no epoch) or 2 (epoch << 32 | number)",
                       (unsigned)m->version);
    if (payload_len > SD_MSG_MAX_PAYLOAD)
        return SD_FAIL(SD_ERR_INVALID, "message payload of %zu bytes exceeds the limit of %u bytes", payload_len,
                       SD_MSG_MAX_PAYLOAD);
    uint64_t want = sd_msg_meta_elems(m) * sd_msg_dtype_size(m->dtype);
    if (want != payload_len)
        return SD_FAIL(SD_ERR_INVALID, "message payload is %zu bytes but its shape and dtype %s need %llu",
                       payload_len, sd_msg_dtype_name(m->dtype), (unsigned long long)want);
    return SD_OK;
}

#if HEADER_WORDS
/* Builds bytes [0, 44) as five 64-bit words and a 32-bit one, stores them and returns their CRC
 * register, computed from the registers (reading back freshly written bytes would stall on store
 * forwarding). */
static uint32_t write_header_crc(const sd_msg_meta *m, size_t payload_len, uint8_t *b) {
    uint32_t d[SD_MSG_MAX_NDIM];
    for (int i = 0; i < SD_MSG_MAX_NDIM; i++) d[i] = i < m->ndim ? m->dims[i] : 0;
    uint64_t w[5] = {
        (uint64_t)SD_MSG_MAGIC | (uint64_t)(m->version ? m->version : 1) << 32 | (uint64_t)(uint8_t)m->dtype << 48 |
            (uint64_t)(uint8_t)m->ndim << 56,
        (uint64_t)d[0] | (uint64_t)d[1] << 32,
        (uint64_t)d[2] | (uint64_t)d[3] << 32,
        (uint64_t)(uint32_t)m->label | (uint64_t)m->device << 32,
        m->seq,
    };
    uint32_t len32 = (uint32_t)payload_len;
    memcpy(b, w, sizeof w);
    memcpy(b + OFF_LEN, &len32, 4);
    uint64_t r = 0xFFFFFFFFu;
    for (int i = 0; i < 5; i++) r = _mm_crc32_u64(r, w[i]);
    return ~_mm_crc32_u32((uint32_t)r, len32);
}
#else
static uint32_t write_header_crc(const sd_msg_meta *m, size_t payload_len, uint8_t *b) {
    wr32(b + OFF_MAGIC, SD_MSG_MAGIC);
    wr16(b + OFF_VERSION, m->version ? m->version : 1);
    b[OFF_DTYPE] = (uint8_t)m->dtype;
    b[OFF_NDIM] = (uint8_t)m->ndim;
    for (int i = 0; i < SD_MSG_MAX_NDIM; i++) wr32(b + OFF_DIMS + 4 * i, i < m->ndim ? m->dims[i] : 0);
    wr32(b + OFF_LABEL, (uint32_t)m->label);
    wr32(b + OFF_DEVICE, m->device);
    wr64(b + OFF_SEQ, m->seq);
    wr32(b + OFF_LEN, (uint32_t)payload_len);
    return header_crc(b);
}
#endif

sd_status sd_msg_encode(const sd_msg_meta *m, const void *payload, size_t payload_len, void *buf, size_t cap,
                        size_t *len) {
    if (!m || !buf || !len || (!payload && payload_len))
        return SD_FAIL(SD_ERR_INVALID, "sd_msg_encode needs the meta, the payload, an output buffer and a length");
    TRY(check_meta(m, payload_len));
    size_t total = sd_msg_size(payload_len);
    if (cap < total)
        return SD_FAIL(SD_ERR_INVALID, "message buffer holds %zu bytes but this message needs %zu (48 + payload)",
                       cap, total);
    uint8_t *b = buf;
    uint32_t crc = write_header_crc(m, payload_len, b); /* header[0, 44), then the payload, copied in the same pass */
    crc = sd_crc32c_copy(crc, b + SD_MSG_HEADER_BYTES, payload, payload_len);
    wr32(b + OFF_CRC, crc);
    *len = total;
    return SD_OK;
}

/* ---- decoding --------------------------------------------------------------------------------- */
sd_status sd_msg_expect_check(const sd_msg_expect *e) {
    if (!e) return SD_OK;
    if (e->dtype != 0 && !sd_msg_dtype_size(e->dtype))
        return SD_FAIL(SD_ERR_INVALID, "expected dtype %d is unknown; use 0 (any), SD_MSG_U8 or SD_MSG_F32",
                       (int)e->dtype);
    if (e->ndim < 0 || e->ndim > SD_MSG_MAX_NDIM)
        return SD_FAIL(SD_ERR_INVALID, "expected ndim %d must lie in [0, %d] (0: any shape)", e->ndim,
                       SD_MSG_MAX_NDIM);
    for (int i = 0; i < e->ndim; i++)
        if (e->dims[i] < 1 || e->dims[i] > SD_MSG_MAX_DIM)
            return SD_FAIL(SD_ERR_INVALID, "expected dims[%d] = %u must lie in [1, %u]", i, e->dims[i],
                           SD_MSG_MAX_DIM);
    if (e->classes < 0)
        return SD_FAIL(SD_ERR_INVALID, "expected class count %d is negative (0: any label >= 0)", (int)e->classes);
    if (e->max_payload > SD_MSG_MAX_PAYLOAD)
        return SD_FAIL(SD_ERR_INVALID, "expected payload limit %zu exceeds the hard limit %u", e->max_payload,
                       SD_MSG_MAX_PAYLOAD);
    return SD_OK;
}

sd_drop_reason sd_msg_decode_header(const void *buf, size_t len, const sd_msg_expect *expect, sd_msg_view *out,
                                    sd_msg_check *chk) {
    static const sd_msg_expect any = {0};
    const sd_msg_expect *e = expect ? expect : &any;
    const uint8_t *b = buf;
    if (!b || len < SD_MSG_HEADER_BYTES) return SD_DROP_TRUNCATED;
    if (rd32(b + OFF_MAGIC) != SD_MSG_MAGIC) return SD_DROP_BAD_MAGIC;
    uint16_t version = rd16(b + OFF_VERSION);
    if (version < SD_MSG_VERSION_MIN || version > SD_MSG_VERSION) return SD_DROP_BAD_VERSION;

    sd_msg_meta m;
    m.dtype = (sd_msg_dtype)b[OFF_DTYPE];
    size_t esize = sd_msg_dtype_size(m.dtype);
    if (!esize) return SD_DROP_BAD_DTYPE;
    m.ndim = b[OFF_NDIM];
    if (m.ndim < 1 || m.ndim > SD_MSG_MAX_NDIM) return SD_DROP_BAD_SHAPE;
    uint64_t elems = 1;
    for (int i = 0; i < SD_MSG_MAX_NDIM; i++) {
        m.dims[i] = rd32(b + OFF_DIMS + 4 * i);
        if (i < m.ndim) {
            if (m.dims[i] < 1 || m.dims[i] > SD_MSG_MAX_DIM) return SD_DROP_BAD_SHAPE;
            elems *= m.dims[i]; /* <= 65535^4 < 2^64 */
        } else if (m.dims[i] != 0) {
            return SD_DROP_BAD_SHAPE;
        }
    }
    uint32_t plen = rd32(b + OFF_LEN);
    size_t limit = e->max_payload ? e->max_payload : SD_MSG_MAX_PAYLOAD;
    if (plen > SD_MSG_MAX_PAYLOAD || plen > limit) return SD_DROP_OVERSIZED;
    if (len < SD_MSG_HEADER_BYTES + (size_t)plen) return SD_DROP_TRUNCATED;
    if (len > SD_MSG_HEADER_BYTES + (size_t)plen) return SD_DROP_BAD_LENGTH;
    if (elems > SD_MSG_MAX_PAYLOAD || elems * esize != plen) return SD_DROP_BAD_LENGTH;

    m.label = (int32_t)rd32(b + OFF_LABEL);
    m.device = rd32(b + OFF_DEVICE);
    m.seq = rd64(b + OFF_SEQ);
    m.version = version;
    sd_drop_reason deferred = SD_DROP_NONE;
    if (e->dtype && m.dtype != e->dtype) deferred = SD_DROP_BAD_DTYPE;
    if (!deferred && e->ndim) {
        if (m.ndim != e->ndim) deferred = SD_DROP_BAD_SHAPE;
        for (int i = 0; i < m.ndim && !deferred; i++)
            if (m.dims[i] != e->dims[i]) deferred = SD_DROP_BAD_SHAPE;
    }
    if (!deferred && (m.label < 0 || (e->classes > 0 && m.label >= e->classes))) deferred = SD_DROP_BAD_LABEL;
    if (!deferred && e->check_device && m.device != e->device) deferred = SD_DROP_BAD_DEVICE;

    chk->crc = header_crc(b);
    chk->want = rd32(b + OFF_CRC);
    chk->deferred = deferred;
    out->meta = m;
    out->payload = b + SD_MSG_HEADER_BYTES;
    out->payload_len = plen;
    return SD_DROP_NONE;
}

sd_drop_reason sd_msg_decode(const void *buf, size_t len, const sd_msg_expect *expect, sd_msg_view *out) {
    sd_msg_view v;
    sd_msg_check chk;
    sd_drop_reason r = sd_msg_decode_header(buf, len, expect, &v, &chk);
    if (r != SD_DROP_NONE) return r;
    if (sd_crc32c(chk.crc, v.payload, v.payload_len) != chk.want) return SD_DROP_BAD_CHECKSUM;
    if (chk.deferred != SD_DROP_NONE) return chk.deferred;
    if (out) *out = v;
    return SD_DROP_NONE;
}

static sd_drop_reason seq_refuse(sd_msg_seq *t, sd_drop_reason why) {
    t->refused++;
    return why;
}

sd_drop_reason sd_msg_seq_check(sd_msg_seq *t, uint16_t version, uint64_t seq) {
    if (t->any) {
        if (seq <= t->last) return seq_refuse(t, SD_DROP_DUPLICATE);
        uint64_t skipped = seq - t->last - 1;
        bool new_epoch = version >= 2 && sd_msg_seq_epoch(seq) != sd_msg_seq_epoch(t->last);
        if (new_epoch && (uint32_t)seq < SD_MSG_SEQ_MAX_JUMP) {
            t->restarts++; /* what the old epoch did not send is unknowable: no gap */
        } else if (skipped >= SD_MSG_SEQ_MAX_JUMP) {
            t->jump_run = t->jump_run && seq == t->jump_next ? t->jump_run + 1 : 1;
            t->jump_next = seq + 1;
            if (t->jump_run < SD_MSG_SEQ_RESYNC) return seq_refuse(t, SD_DROP_SEQ_JUMP);
            t->resyncs++; /* the run's earlier messages were seen (and refused): not gaps */
            t->gaps += skipped - (t->jump_run - 1);
        } else {
            t->gaps += skipped;
        }
    }
    t->any = true;
    t->last = seq;
    t->refused = 0;
    t->jump_run = 0;
    return SD_DROP_NONE;
}
