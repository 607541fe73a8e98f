/* test_stream_ring.c: the ring buffer (stream/ring.h). Configuration checks; the allocator hook;
 * take-up-to and take-exactly into floats (raw and normalised), raw bytes, labels and sequence
 * numbers; the sample and byte bounds; every policy (persist with drop-newest and backpressure,
 * truncation, drop-oldest) and counter; close; zero-copy acquire/release; a randomised
 * single-threaded run against a model queue (variable sizes, wrap-around, exact bounds); and a
 * concurrency stress test per policy: a producer thread pushes sequence-numbered samples, the
 * consumer takes random-sized chunks, and a checker verifies every accepted sample is consumed
 * exactly once, in order, with its bytes intact, and that the counters add up. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/status.h"
#include "stream/ring.h"
#include "tests/harness.h"

/* ---- helpers -------------------------------------------------------------------------------- */
static uint8_t pattern(uint64_t seq, size_t i) { return (uint8_t)(seq * 131 + i * 7 + 3); }

/* A u8 sample view of shape 1 x 1 x n whose bytes are pattern(seq, i); label = seq % 10. */
typedef struct sample_buf {
    uint8_t bytes[8192];
    sd_msg_view v;
} sample_buf;

static const sd_msg_view *mk(sample_buf *b, uint64_t seq, size_t n) {
    for (size_t i = 0; i < n; i++) b->bytes[i] = pattern(seq, i);
    b->v = (sd_msg_view){.meta = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 1, (uint32_t)n, 0},
                                  .label = (int32_t)(seq % 10), .device = 0, .seq = seq},
                         .payload = b->bytes,
                         .payload_len = n};
    return &b->v;
}

static void check_stats(sd_ring *r, const char *where) {
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    char why[256];
    bool ok = sd_ring_stats_consistent(&st, why, sizeof why);
    EXPECT(ok, "%s: counters do not add up: %s", where, why);
}

static sd_ring *make_ring(size_t samples, size_t sample_bytes, size_t bytes, sd_ring_policy p, sd_ring_when_full wf,
                          double timeout) {
    sd_ring_config c = {.max_samples = samples, .max_sample_bytes = sample_bytes, .max_bytes = bytes, .policy = p,
                        .when_full = wf, .block_timeout_s = timeout};
    sd_ring *r = NULL;
    sd_status s = sd_ring_create(&c, &r);
    EXPECT(s == SD_OK, "sd_ring_create: %s", sd_last_error());
    return r;
}

/* ---- configuration and allocator ----------------------------------------------------------------- */
typedef struct count_alloc {
    int allocs, frees;
    void *last;
    size_t bytes;
} count_alloc;

static void *ca_alloc(size_t n, void *ctx) {
    count_alloc *c = ctx;
    c->allocs++;
    c->bytes = n;
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    c->last = p;
    return p;
}
static void ca_free(void *p, void *ctx) {
    count_alloc *c = ctx;
    c->frees++;
    free(p);
}
static void *fail_alloc(size_t n, void *ctx) {
    (void)n;
    (void)ctx;
    return NULL;
}

static void test_config(void) {
    sd_ring *r = NULL;
    sd_ring_config c = {.max_samples = 0, .max_sample_bytes = 16};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "max_samples 0");
    c = (sd_ring_config){.max_samples = 4, .max_sample_bytes = 0};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "max_sample_bytes 0");
    c = (sd_ring_config){.max_samples = 4, .max_sample_bytes = 100, .max_bytes = 50};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "exceeds max_bytes");
    c = (sd_ring_config){.max_samples = 4, .max_sample_bytes = 16, .policy = (sd_ring_policy)7};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "policy 7");
    c = (sd_ring_config){.max_samples = 4, .max_sample_bytes = 16, .when_full = (sd_ring_when_full)5};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "when_full 5");
    c = (sd_ring_config){.max_samples = 1u << 27, .max_sample_bytes = 16};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "max_samples");
    sd_ring_allocator half = {.alloc = ca_alloc, .free = NULL, .name = "half"};
    c = (sd_ring_config){.max_samples = 4, .max_sample_bytes = 16, .allocator = &half};
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_INVALID, "'half' needs both");
    sd_ring_allocator none = {.alloc = fail_alloc, .free = ca_free, .name = "cudaMallocHost"};
    c.allocator = &none;
    EXPECT_FAIL(sd_ring_create(&c, &r), SD_ERR_OOM, "cudaMallocHost could not provide");
    EXPECT(r == NULL, "no ring on failure");

    count_alloc cnt = {0};
    sd_ring_allocator hook = {.alloc = ca_alloc, .free = ca_free, .ctx = &cnt, .name = "counting"};
    c = (sd_ring_config){.max_samples = 8, .max_sample_bytes = 100, .allocator = &hook};
    EXPECT_OK(sd_ring_create(&c, &r));
    EXPECT(cnt.allocs == 1, "one allocation (%d)", cnt.allocs);
    EXPECT(sd_ring_get_config(r)->max_bytes == 800, "max_bytes defaults to samples x sample bytes");
    sample_buf b;
    for (int i = 0; i < 8; i++) EXPECT(sd_ring_push(r, mk(&b, (uint64_t)i, 100 - (size_t)i)) == SD_DROP_NONE, "push");
    sd_ring_sample views[8];
    size_t n = 0;
    EXPECT_OK(sd_ring_acquire(r, 8, views, &n));
    int inside = n == 8;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = views[i].data;
        inside &= p >= (const uint8_t *)cnt.last && p + views[i].nbytes <= (const uint8_t *)cnt.last + cnt.bytes;
        inside &= ((uintptr_t)p % SD_RING_ALIGN) == 0;
    }
    EXPECT(inside, "samples live in the hook's allocation, 64-byte aligned");
    EXPECT_OK(sd_ring_release(r, n));
    sd_ring_destroy(r);
    EXPECT(cnt.frees == 1, "freed through the hook");
    sd_ring_destroy(NULL);
}

/* ---- takes -------------------------------------------------------------------------------------- */
static void test_take_upto(void) {
    sd_ring *r = make_ring(16, 64, 0, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    float x[16 * 6];
    int32_t y[16];
    uint64_t sq[16];
    size_t n = 99;
    sd_ring_batch out = {.x = x, .sample_elems = 6, .labels = y, .seqs = sq};
    EXPECT_OK(sd_ring_take_upto(r, 4, &out, &n));
    EXPECT(n == 0, "empty ring gives 0 (%zu)", n);
    for (uint64_t s = 0; s < 5; s++) EXPECT(sd_ring_push(r, mk(&b, s, 6)) == SD_DROP_NONE, "push %llu", (unsigned long long)s);
    EXPECT(sd_ring_size(r) == 5, "5 held");
    EXPECT_OK(sd_ring_take_upto(r, 3, &out, &n));
    EXPECT(n == 3, "took 3 (%zu)", n);
    int ok = 1;
    for (size_t i = 0; i < 3; i++) {
        ok &= sq[i] == i && y[i] == (int32_t)(i % 10);
        for (size_t j = 0; j < 6; j++) ok &= x[i * 6 + j] == (float)pattern(i, j);
    }
    EXPECT(ok, "raw float copy, labels and seqs of the oldest three");
    EXPECT_OK(sd_ring_take_upto(r, 10, &out, &n));
    EXPECT(n == 2 && sq[0] == 3 && sq[1] == 4, "the rest: up to 10 gives 2");

    /* normalisation: 2 channels of 1 x 3 */
    sd_augment norm = {.mean = {0.5f, 0.25f, 0, 0}, .std = {0.5f, 2.0f, 1, 1}};
    uint8_t px[6] = {0, 255, 51, 10, 20, 30};
    sd_msg_view v = {.meta = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {2, 1, 3}, .label = 4, .seq = 77},
                     .payload = px, .payload_len = 6};
    EXPECT(sd_ring_push(r, &v) == SD_DROP_NONE, "push 2-channel");
    out.norm = &norm;
    EXPECT_OK(sd_ring_take_upto(r, 1, &out, &n));
    double err = 0;
    for (int i = 0; i < 6; i++) {
        int ch = i / 3;
        float want = ((float)px[i] / 255.0f - norm.mean[ch]) / norm.std[ch];
        err = fmax(err, fabs((double)x[i] - want));
    }
    EXPECT(n == 1 && err < 1e-6, "normalised per channel (max error %g)", err);

    /* bit for bit the division expression (sd_augment_batch's), for every byte value, under the
     * datasets' means and stds and 300 random ones: the take divides by multiplying with the
     * reciprocal and one FMA correction where that is exact for all 256 values of a channel and
     * keeps the divisions where it is not (stream/ring.c, norm_plan); the count of pairs that need
     * the divisions is printed: the subnormal std at the end needs them, so both ways run */
    {
        uint8_t all[256];
        for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
        sd_msg_view av = {.meta = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 16, 16}, .seq = 90},
                          .payload = all, .payload_len = 256};
        float xs[256];
        int32_t ys[1];
        sd_ring_batch ab = {.x = xs, .sample_elems = 256, .labels = ys};
        uint64_t st = 12345;
        int bad = 0, slow = 0, pairs = 0;
        sd_ring *r2 = make_ring(4, 256, 0, SD_RING_DROP_OLDEST, (sd_ring_when_full)0, 0);
        for (int t = 0; r2 && t < 307; t++) {
            sd_augment an = {.mean = {0}, .std = {1, 1, 1, 1}};
            static const float known[6][2] = {{0.2860f, 0.3530f}, {0.1307f, 0.3081f}, {0.4914f, 0.2470f},
                                              {0.4822f, 0.2435f}, {0.4465f, 0.2616f}, {0.5071f, 0.2673f}};
            if (t < 6) {
                an.mean[0] = known[t][0], an.std[0] = known[t][1];
            } else if (t == 306) { /* a subnormal std: its reciprocal overflows, the divisions stay */
                an.mean[0] = 0.5f, an.std[0] = 1e-39f;
            } else {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                an.mean[0] = (float)((st >> 40) % 1000) / 1000.0f;
                an.std[0] = 0.01f + (float)((st >> 20) % 100000) / 20000.0f;
            }
            ab.norm = &an;
            EXPECT(sd_ring_push(r2, &av) == SD_DROP_NONE, "push all byte values");
            EXPECT_OK(sd_ring_take_upto(r2, 1, &ab, &n));
            bool differs = false;
            for (int i = 0; i < 256; i++) {
                const float want = ((float)i / 255.0f - an.mean[0]) / an.std[0];
                bad += memcmp(&want, &xs[i], sizeof want) != 0;
                const float rs = 1.0f / an.std[0], r2 = 1.0f / 255.0f, q1 = (float)i * r2;
                const float a1 = fmaf(fmaf(-q1, 255.0f, (float)i), r2, q1) - an.mean[0], q2 = a1 * rs;
                const float fast = fmaf(fmaf(-q2, an.std[0], a1), rs, q2);
                differs |= memcmp(&want, &fast, sizeof want) != 0;
            }
            slow += differs;
            pairs++;
        }
        sd_ring_destroy(r2);
        printf("test_stream_ring: normalised take bit for bit over %d mean/std pairs x 256 byte values: %d "
               "differences; %d pairs need the divisions\n", pairs, bad, slow);
        EXPECT(bad == 0, "normalised take: %d values differ from (v/255 - mean)/std", bad);
        EXPECT(slow >= 1 && slow < pairs, "normalised take: %d of %d pairs need the divisions (want both ways)", slow,
               pairs);
    }

    /* f32 payloads are copied as they are, norm or not */
    float fx[6] = {1.5f, -2, 3, NAN, 5, 6};
    sd_msg_view fv = {.meta = {.dtype = SD_MSG_F32, .ndim = 1, .dims = {6}, .seq = 78}, .payload = fx,
                      .payload_len = sizeof fx};
    EXPECT(sd_ring_push(r, &fv) == SD_DROP_NONE, "push f32");
    EXPECT_OK(sd_ring_take_upto(r, 1, &out, &n));
    EXPECT(n == 1 && memcmp(x, fx, sizeof fx) == 0, "f32 copied bit for bit");

    /* raw bytes */
    uint8_t raw[4 * 16];
    sd_ring_batch rb = {.raw = raw, .raw_stride = 16, .seqs = sq};
    EXPECT(sd_ring_push(r, mk(&b, 100, 10)) == SD_DROP_NONE, "push");
    EXPECT(sd_ring_push(r, mk(&b, 101, 16)) == SD_DROP_NONE, "push");
    EXPECT_OK(sd_ring_take_upto(r, 4, &rb, &n));
    ok = n == 2;
    for (size_t j = 0; j < 10; j++) ok &= raw[j] == pattern(100, j);
    for (size_t j = 0; j < 16; j++) ok &= raw[16 + j] == pattern(101, j);
    EXPECT(ok, "raw payload bytes at raw_stride");

    /* a sample that does not fit the batch: SD_ERR_SHAPE, nothing taken */
    EXPECT(sd_ring_push(r, mk(&b, 200, 7)) == SD_DROP_NONE, "push 7 elements");
    out.norm = NULL;
    EXPECT_FAIL(sd_ring_take_upto(r, 4, &out, &n), SD_ERR_SHAPE, "seq 200 has 7 elements");
    EXPECT(n == 0 && sd_ring_size(r) == 1, "nothing taken");
    rb.raw_stride = 4;
    EXPECT_FAIL(sd_ring_take_upto(r, 4, &rb, &n), SD_ERR_SHAPE, "raw_stride is 4");
    sd_ring_batch empty = {.x = x, .sample_elems = 0};
    EXPECT_FAIL(sd_ring_take_upto(r, 4, &empty, &n), SD_ERR_INVALID, "sample_elems is 0");
    sd_augment badn = {.mean = {0}, .std = {0, 1, 1, 1}};
    sd_ring_batch bn = {.x = x, .sample_elems = 7, .norm = &badn};
    EXPECT_FAIL(sd_ring_take_upto(r, 4, &bn, &n), SD_ERR_INVALID, "std must be positive");
    check_stats(r, "take_upto");
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.accepted == 10 && st.consumed == 9 && st.samples == 1 && st.hw_samples == 5, "counters: %llu %llu %zu %zu",
           (unsigned long long)st.accepted, (unsigned long long)st.consumed, st.samples, st.hw_samples);
    EXPECT(st.bytes_accepted == 5 * 6 + 6 + 24 + 10 + 16 + 7 && st.bytes == 7, "byte counters %llu %zu",
           (unsigned long long)st.bytes_accepted, st.bytes);
    sd_ring_destroy(r);
}

typedef struct delayed_push {
    sd_ring *r;
    double delay;
    int count;
    uint64_t first_seq;
    sd_drop_reason last;
    double done_at;
} delayed_push;

static void *delayed_push_main(void *arg) {
    delayed_push *d = arg;
    sd_clock_sleep_until(sd_clock_now() + d->delay);
    sample_buf b;
    for (int i = 0; i < d->count; i++) d->last = sd_ring_push(d->r, mk(&b, d->first_seq + (uint64_t)i, 8));
    d->done_at = sd_clock_now();
    return NULL;
}

static void test_take_exactly(void) {
    sd_ring *r = make_ring(8, 8, 0, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    uint64_t sq[8];
    sd_ring_batch out = {.seqs = sq};
    size_t n = 9;
    EXPECT(sd_ring_push(r, mk(&b, 0, 8)) == SD_DROP_NONE && sd_ring_push(r, mk(&b, 1, 8)) == SD_DROP_NONE, "push 2");
    double t0 = sd_clock_now();
    EXPECT_OK(sd_ring_take_exactly(r, 3, 0.1, &out, &n));
    double waited = sd_clock_now() - t0;
    EXPECT(n == 0 && sd_ring_size(r) == 2, "timeout takes nothing (%zu)", n);
    EXPECT(waited >= 0.09 && waited < 1.0, "waited the timeout (%.3f s)", waited);
    EXPECT_OK(sd_ring_take_exactly(r, 3, 0, &out, &n));
    EXPECT(n == 0, "timeout 0: no wait, nothing taken");

    /* a producer delivers the third sample after 50 ms: the wait ends with exactly 3 */
    delayed_push d = {.r = r, .delay = 0.05, .count = 2, .first_seq = 2};
    pthread_t th;
    pthread_create(&th, NULL, delayed_push_main, &d);
    t0 = sd_clock_now();
    EXPECT_OK(sd_ring_take_exactly(r, 3, 5.0, &out, &n));
    waited = sd_clock_now() - t0;
    pthread_join(th, NULL);
    EXPECT(n == 3 && sq[0] == 0 && sq[1] == 1 && sq[2] == 2, "exactly 3, in order (%zu)", n);
    EXPECT(waited >= 0.03 && waited < 3.0, "woke on arrival (%.3f s)", waited);
    EXPECT(sd_ring_size(r) == 1, "the 4th stays");

    EXPECT_FAIL(sd_ring_take_exactly(r, 9, 1.0, &out, &n), SD_ERR_INVALID, "can never be met");
    /* close ends a wait at once */
    sd_ring_close(r);
    EXPECT(sd_ring_closed(r), "closed");
    t0 = sd_clock_now();
    EXPECT_OK(sd_ring_take_exactly(r, 4, -1, &out, &n));
    EXPECT(n == 0 && sd_clock_now() - t0 < 0.5, "closed: no wait, nothing taken");
    EXPECT_OK(sd_ring_take_upto(r, 4, &out, &n));
    EXPECT(n == 1 && sq[0] == 3, "a closed ring still hands out what it holds");
    EXPECT(sd_ring_push(r, mk(&b, 9, 8)) == SD_DROP_CLOSED, "a closed ring refuses pushes");
    sd_ring_reopen(r);
    EXPECT(sd_ring_push(r, mk(&b, 10, 8)) == SD_DROP_NONE, "reopened");
    check_stats(r, "take_exactly");
    sd_ring_destroy(r);
}

/* ---- bounds and policies ------------------------------------------------------------------------ */
static void test_bounds_drop_newest(void) {
    sd_ring *r = make_ring(4, 100, 0, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    for (uint64_t s = 0; s < 6; s++) {
        sd_drop_reason want = s < 4 ? SD_DROP_NONE : SD_DROP_RING_FULL;
        EXPECT(sd_ring_push(r, mk(&b, s, 10)) == want, "sample bound, push %llu", (unsigned long long)s);
    }
    EXPECT(sd_ring_push(r, mk(&b, 6, 101)) == SD_DROP_OVERSIZED, "over max_sample_bytes");
    EXPECT(sd_ring_push(r, mk(&b, 7, 0)) == SD_DROP_BAD_LENGTH, "an empty payload");
    sd_ring_count_drop(r, SD_DROP_BAD_CHECKSUM);
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.received == 9 && st.accepted == 4 && st.rejected == 5 && st.dropped[SD_DROP_RING_FULL] == 2 &&
               st.dropped[SD_DROP_OVERSIZED] == 1 && st.dropped[SD_DROP_BAD_CHECKSUM] == 1,
           "counters by reason");
    check_stats(r, "drop newest");
    EXPECT(!sd_ring_has_room(r, 1), "full: no room");
    sd_ring_destroy(r);

    /* the byte bound: 25 bytes hold two samples of 10 but not three; a 5-byte one still fits */
    r = make_ring(100, 20, 25, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    EXPECT(sd_ring_push(r, mk(&b, 0, 10)) == SD_DROP_NONE && sd_ring_push(r, mk(&b, 1, 10)) == SD_DROP_NONE, "2 x 10");
    EXPECT(sd_ring_has_room(r, 5) && !sd_ring_has_room(r, 6), "room for exactly 5 more bytes");
    EXPECT(sd_ring_push(r, mk(&b, 2, 10)) == SD_DROP_RING_FULL, "byte bound");
    EXPECT(sd_ring_push(r, mk(&b, 3, 5)) == SD_DROP_NONE, "5 bytes fit exactly");
    sd_ring_get_stats(r, &st);
    EXPECT(st.bytes == 25 && st.hw_bytes == 25 && st.samples == 3, "25 bytes held");
    check_stats(r, "byte bound");
    sd_ring_destroy(r);
}

static void test_drop_oldest(void) {
    sd_ring *r = make_ring(4, 16, 0, SD_RING_DROP_OLDEST, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    for (uint64_t s = 0; s < 7; s++) EXPECT(sd_ring_push(r, mk(&b, s, 16)) == SD_DROP_NONE, "always accepted");
    uint64_t sq[8];
    uint8_t raw[8 * 16];
    sd_ring_batch out = {.seqs = sq, .raw = raw, .raw_stride = 16};
    size_t n;
    EXPECT_OK(sd_ring_take_upto(r, 8, &out, &n));
    int ok = n == 4;
    for (size_t i = 0; i < n; i++) {
        ok &= sq[i] == 3 + i;
        for (size_t j = 0; j < 16; j++) ok &= raw[i * 16 + j] == pattern(3 + i, j);
    }
    EXPECT(ok, "the newest 4 survive, bytes intact");
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.dropped[SD_DROP_EVICTED] == 3 && st.accepted == 7 && st.rejected == 0, "3 evicted");
    check_stats(r, "drop oldest");
    /* evicting to make bytes room: a large sample evicts several small ones */
    sd_ring_destroy(r);
    r = make_ring(8, 40, 40, SD_RING_DROP_OLDEST, SD_RING_FULL_DROP_NEWEST, 0);
    for (uint64_t s = 0; s < 4; s++) EXPECT(sd_ring_push(r, mk(&b, s, 10)) == SD_DROP_NONE, "4 x 10 bytes");
    EXPECT(sd_ring_push(r, mk(&b, 4, 25)) == SD_DROP_NONE, "25 bytes");
    sd_ring_get_stats(r, &st);
    EXPECT(st.dropped[SD_DROP_EVICTED] == 3 && st.samples == 2 && st.bytes == 35, "evicted 3 for 25 bytes (%llu)",
           (unsigned long long)st.dropped[SD_DROP_EVICTED]);
    check_stats(r, "drop oldest by bytes");
    sd_ring_destroy(r);
}

static void test_truncation(void) {
    sd_ring *r = make_ring(16, 8, 0, SD_RING_TRUNCATE, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    uint64_t sq[16];
    sd_ring_batch out = {.seqs = sq};
    size_t n;
    for (uint64_t s = 0; s < 5; s++) sd_ring_push(r, mk(&b, s, 8));
    EXPECT_OK(sd_ring_take_upto(r, 2, &out, &n));
    EXPECT(sd_ring_end_step(r) == 3 && sd_ring_size(r) == 0, "end of step discards the 3 left");
    for (uint64_t s = 5; s < 8; s++) sd_ring_push(r, mk(&b, s, 8));
    EXPECT_OK(sd_ring_take_upto(r, 8, &out, &n));
    EXPECT(n == 3 && sq[0] == 5, "later samples are kept until the next step ends");
    EXPECT(sd_ring_end_step(r) == 0, "nothing left");
    /* acquired samples are not truncated */
    for (uint64_t s = 8; s < 12; s++) sd_ring_push(r, mk(&b, s, 8));
    sd_ring_sample v[4];
    EXPECT_OK(sd_ring_acquire(r, 2, v, &n));
    EXPECT(sd_ring_truncate(r) == 0 && sd_ring_size(r) == 4, "no truncation while acquired");
    EXPECT_OK(sd_ring_release(r, 1));
    EXPECT(sd_ring_truncate(r) == 3, "after release: the other 3");
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.truncated == 6 && st.consumed == 6 && st.accepted == 12, "truncated %llu consumed %llu",
           (unsigned long long)st.truncated, (unsigned long long)st.consumed);
    check_stats(r, "truncation");
    sd_ring_destroy(r);

    r = make_ring(16, 8, 0, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    for (uint64_t s = 0; s < 5; s++) sd_ring_push(r, mk(&b, s, 8));
    EXPECT(sd_ring_end_step(r) == 0 && sd_ring_size(r) == 5, "persistence keeps everything across steps");
    EXPECT(sd_ring_truncate(r) == 5, "an explicit truncate still works");
    sd_ring_destroy(r);
}

static void test_acquire_release(void) {
    sd_ring *r = make_ring(8, 32, 0, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    for (uint64_t s = 0; s < 5; s++) sd_ring_push(r, mk(&b, s, 20 + s));
    sd_ring_sample v[8];
    size_t n;
    EXPECT_OK(sd_ring_acquire(r, 3, v, &n));
    int ok = n == 3;
    for (size_t i = 0; i < n; i++) {
        ok &= v[i].meta.seq == i && v[i].nbytes == 20 + i && v[i].meta.label == (int32_t)i;
        for (size_t j = 0; j < v[i].nbytes; j++) ok &= ((const uint8_t *)v[i].data)[j] == pattern(i, j);
    }
    EXPECT(ok, "views of the oldest 3 in place");
    uint64_t sq[8];
    sd_ring_batch out = {.seqs = sq};
    EXPECT_FAIL(sd_ring_take_upto(r, 1, &out, &n), SD_ERR_INVALID, "release them first");
    EXPECT_FAIL(sd_ring_acquire(r, 1, v, &n), SD_ERR_INVALID, "already acquired");
    EXPECT_FAIL(sd_ring_release(r, 4), SD_ERR_INVALID, "only 3 are acquired");
    EXPECT_OK(sd_ring_release(r, 2));
    EXPECT_OK(sd_ring_take_upto(r, 8, &out, &n));
    EXPECT(n == 3 && sq[0] == 2, "released but not consumed comes back first");
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.consumed == 5 && st.bytes_consumed == 20 + 21 + 22 + 23 + 24, "consumed 5");
    check_stats(r, "acquire");
    sd_ring_destroy(r);
}

/* ---- backpressure -------------------------------------------------------------------------------- */
static void test_backpressure(void) {
    sd_ring *r = make_ring(2, 8, 0, SD_RING_PERSIST, SD_RING_FULL_BLOCK, 0.1);
    sample_buf b;
    sd_ring_push(r, mk(&b, 0, 8));
    sd_ring_push(r, mk(&b, 1, 8));
    double t0 = sd_clock_now();
    EXPECT(sd_ring_push(r, mk(&b, 2, 8)) == SD_DROP_TIMEOUT, "full: the wait times out");
    double waited = sd_clock_now() - t0;
    EXPECT(waited >= 0.09 && waited < 1.0, "waited the timeout (%.3f s)", waited);
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.blocked_s >= 0.09 && st.dropped[SD_DROP_TIMEOUT] == 1, "blocked time %.3f counted", st.blocked_s);
    sd_ring_destroy(r);

    /* no timeout: a producer blocks until the consumer takes one */
    r = make_ring(2, 8, 0, SD_RING_PERSIST, SD_RING_FULL_BLOCK, -1);
    sd_ring_push(r, mk(&b, 0, 8));
    sd_ring_push(r, mk(&b, 1, 8));
    delayed_push d = {.r = r, .delay = 0, .count = 1, .first_seq = 2};
    pthread_t th;
    pthread_create(&th, NULL, delayed_push_main, &d);
    sd_clock_sleep_until(sd_clock_now() + 0.05);
    uint64_t sq[2];
    sd_ring_batch out = {.seqs = sq};
    size_t n;
    t0 = sd_clock_now();
    EXPECT_OK(sd_ring_take_upto(r, 1, &out, &n));
    pthread_join(th, NULL);
    EXPECT(d.last == SD_DROP_NONE && d.done_at >= t0, "the producer went on after the take");
    EXPECT_OK(sd_ring_take_upto(r, 2, &out, &n));
    EXPECT(n == 2 && sq[0] == 1 && sq[1] == 2, "nothing lost");
    /* close wakes a blocked producer */
    sd_ring_push(r, mk(&b, 3, 8));
    sd_ring_push(r, mk(&b, 4, 8));
    d = (delayed_push){.r = r, .delay = 0, .count = 1, .first_seq = 5};
    pthread_create(&th, NULL, delayed_push_main, &d);
    sd_clock_sleep_until(sd_clock_now() + 0.05);
    t0 = sd_clock_now();
    sd_ring_close(r);
    pthread_join(th, NULL);
    EXPECT(d.last == SD_DROP_CLOSED && d.done_at - t0 < 0.5, "close released the producer (%s)",
           sd_drop_reason_name(d.last));
    check_stats(r, "backpressure");
    sd_ring_destroy(r);
}

/* ---- the producer's fill path ------------------------------------------------------------------- */
typedef struct fill_arg {
    const sd_msg_view *v;
    sd_drop_reason verdict;
} fill_arg;

/* Writes the sample's bytes (garbage when it will reject, as a failed check would leave them). */
static sd_drop_reason fill_pattern(void *dst, void *ctx) {
    const fill_arg *f = ctx;
    if (f->verdict == SD_DROP_NONE) memcpy(dst, f->v->payload, f->v->payload_len);
    else memset(dst, 0xEE, f->v->payload_len);
    return f->verdict;
}

static void test_fill(void) {
    /* large payloads (filled outside the lock), a rejected fill hands its room back, also across the wrap */
    sd_ring *r = make_ring(4, 5000, 10000, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sample_buf b;
    sd_drop_reason got = SD_DROP_COUNT;
    fill_arg keep = {mk(&b, 0, 5000), SD_DROP_NONE};
    EXPECT(sd_ring_try_push_fill(r, &keep.v->meta, 5000, fill_pattern, &keep, &got) && got == SD_DROP_NONE, "fill 0");
    EXPECT(sd_ring_push(r, mk(&b, 1, 5000)) == SD_DROP_NONE, "push 1");
    fill_arg no = {mk(&b, 99, 5000), SD_DROP_NONE};
    EXPECT(!sd_ring_try_push_fill(r, &no.v->meta, 5000, fill_pattern, &no, &got), "full: the fast path declines");
    uint64_t sq[4];
    uint8_t *raw = malloc(4 * 5000);
    sd_ring_batch out = {.raw = raw, .raw_stride = 5000, .seqs = sq};
    size_t n;
    EXPECT_OK(sd_ring_take_upto(r, 1, &out, &n));
    fill_arg rej = {mk(&b, 2, 5000), SD_DROP_BAD_CHECKSUM};
    EXPECT(sd_ring_try_push_fill(r, &rej.v->meta, 5000, fill_pattern, &rej, &got) && got == SD_DROP_BAD_CHECKSUM,
           "a rejected fill (this one wraps to offset 0)");
    EXPECT(sd_ring_has_room(r, 5000), "its room is back");
    fill_arg k3 = {mk(&b, 3, 5000), SD_DROP_NONE};
    EXPECT(sd_ring_try_push_fill(r, &k3.v->meta, 5000, fill_pattern, &k3, &got) && got == SD_DROP_NONE, "fill 3");
    EXPECT_OK(sd_ring_take_upto(r, 4, &out, &n));
    int ok = n == 2 && sq[0] == 1 && sq[1] == 3;
    for (size_t j = 0; ok && j < 5000; j++) ok &= raw[j] == pattern(1, j) && raw[5000 + j] == pattern(3, j);
    EXPECT(ok, "the kept samples are intact and in order");
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.received == 4 && st.accepted == 3 && st.dropped[SD_DROP_BAD_CHECKSUM] == 1, "fill counters");
    check_stats(r, "fill");
    sd_ring_close(r);
    fill_arg c = {mk(&b, 4, 10), SD_DROP_NONE};
    EXPECT(!sd_ring_try_push_fill(r, &c.v->meta, 10, fill_pattern, &c, &got), "closed: declines");
    free(raw);
    sd_ring_destroy(r);
}

/* ---- randomised single-threaded run against a model -------------------------------------------- */
static void test_model(void) {
    enum { CAPN = 13, MAXS = 300, MAXB = 1500, STEPS = 200000 };
    sd_ring *r = make_ring(CAPN, MAXS, MAXB, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    uint64_t q_seq[CAPN];
    size_t q_len[CAPN];
    size_t qh = 0, qn = 0, qbytes = 0;
    sd_test_rng rng = {7};
    sample_buf b;
    uint8_t raw[CAPN * MAXS];
    uint64_t sq[CAPN];
    int mism = 0;
    uint64_t next = 0;
    for (int step = 0; step < STEPS && mism == 0; step++) {
        uint64_t x = sd_test_next(&rng);
        if (x % 3 != 0) {
            size_t len = 1 + (size_t)((x >> 8) % MAXS);
            bool fits = qn < CAPN && qbytes + len <= MAXB;
            int how = (int)((x >> 40) % 3); /* push, fill and keep, fill and reject */
            sd_drop_reason got;
            if (how == 0) {
                got = sd_ring_push(r, mk(&b, next, len));
            } else {
                fill_arg fa = {mk(&b, next, len), how == 2 ? SD_DROP_BAD_CHECKSUM : SD_DROP_NONE};
                if (!sd_ring_try_push_fill(r, &fa.v->meta, len, fill_pattern, &fa, &got)) {
                    if (fits) mism++; /* the fast path must take what fits */
                    got = sd_ring_push(r, fa.v);
                } else if (!fits) {
                    mism++;
                }
                if (how == 2 && fits) {
                    if (got != SD_DROP_BAD_CHECKSUM) mism++;
                    next++;
                    continue;
                }
            }
            if ((got == SD_DROP_NONE) != fits) mism++;
            if (fits) {
                q_seq[(qh + qn) % CAPN] = next;
                q_len[(qh + qn) % CAPN] = len;
                qn++;
                qbytes += len;
            }
            next++;
        } else {
            size_t want = (size_t)((x >> 8) % (CAPN + 2));
            sd_ring_batch out = {.raw = raw, .raw_stride = MAXS, .seqs = sq};
            size_t n;
            if (sd_ring_take_upto(r, want, &out, &n) != SD_OK) mism++;
            if (n != (want < qn ? want : qn)) mism++;
            for (size_t i = 0; i < n && !mism; i++) {
                uint64_t s = q_seq[qh];
                size_t len = q_len[qh];
                if (sq[i] != s) mism++;
                for (size_t j = 0; j < len; j++)
                    if (raw[i * MAXS + j] != pattern(s, j)) {
                        mism++;
                        break;
                    }
                qh = (qh + 1) % CAPN;
                qn--;
                qbytes -= len;
            }
        }
    }
    EXPECT(mism == 0, "ring and model disagree (%d)", mism);
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.samples == qn && st.bytes == qbytes && st.hw_samples == CAPN, "occupancy %zu/%zu bytes %zu/%zu",
           st.samples, qn, st.bytes, qbytes);
    check_stats(r, "model");
    sd_ring_destroy(r);
}

/* ---- concurrency stress ------------------------------------------------------------------------ */
#define STRESS_MAX 4000000
typedef struct stress {
    sd_ring *r;
    double until;
    atomic_bool done;
    uint64_t pushed;
    uint8_t *accepted; /* [seq] = 1 when the push returned accepted */
    size_t max_len;    /* sample sizes vary in [1, max_len] */
} stress;

static size_t stress_len(uint64_t seq, size_t max_len) { return 1 + (size_t)(seq * 2654435761u % max_len); }

static void *stress_producer(void *arg) {
    stress *s = arg;
    sample_buf b;
    uint64_t seq = 0;
    while (seq < STRESS_MAX) {
        if ((seq & 255) == 0 && sd_clock_now() > s->until) break;
        const sd_msg_view *v = mk(&b, seq, stress_len(seq, s->max_len));
        sd_drop_reason why;
        fill_arg fa = {v, SD_DROP_NONE};
        if (!(seq & 1) || !sd_ring_try_push_fill(s->r, &v->meta, v->payload_len, fill_pattern, &fa, &why))
            why = sd_ring_push(s->r, v); /* odd numbers try the fill path first */
        s->accepted[seq] = why == SD_DROP_NONE;
        seq++;
    }
    s->pushed = seq;
    atomic_store(&s->done, true);
    return NULL;
}

static void run_stress(const char *name, sd_ring_policy p, sd_ring_when_full wf, size_t max_len, double seconds) {
    sd_ring *r = make_ring(64, max_len, 32 * max_len, p, wf, -1);
    stress s = {.r = r, .until = sd_clock_now() + seconds, .max_len = max_len};
    s.accepted = calloc(STRESS_MAX, 1);
    uint8_t *consumed = calloc(STRESS_MAX, 1);
    enum { CHUNK = 40 };
    uint8_t *raw = malloc(CHUNK * max_len);
    uint64_t sq[CHUNK];
    int32_t lab[CHUNK];
    sd_ring_sample views[CHUNK];
    pthread_t th;
    pthread_create(&th, NULL, stress_producer, &s);
    sd_test_rng rng = {(uint64_t)p * 10 + (uint64_t)wf};
    int64_t last = -1;
    uint64_t order_err = 0, byte_err = 0, calls = 0, got = 0;
    for (;;) {
        bool fin = atomic_load(&s.done);
        uint64_t x = sd_test_next(&rng);
        size_t want = 1 + (size_t)(x % CHUNK), n = 0;
        int mode = (int)((x >> 16) % 4);
        calls++;
        if (mode == 3) { /* zero copy, consuming a random prefix */
            if (sd_ring_acquire(r, want, views, &n) != SD_OK) order_err++;
            size_t keep = n ? (size_t)((x >> 24) % (n + 1)) : 0;
            for (size_t i = 0; i < keep; i++) {
                sq[i] = views[i].meta.seq;
                lab[i] = views[i].meta.label;
                memcpy(raw + i * max_len, views[i].data, views[i].nbytes);
            }
            if (sd_ring_release(r, keep) != SD_OK) order_err++;
            n = keep;
        } else {
            sd_ring_batch out = {.raw = raw, .raw_stride = max_len, .seqs = sq, .labels = lab};
            sd_status st = mode == 2 ? sd_ring_take_exactly(r, want, 0.002, &out, &n)
                                     : sd_ring_take_upto(r, want, &out, &n);
            if (st != SD_OK) order_err++;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t q = sq[i];
            if ((int64_t)q <= last || q >= STRESS_MAX) {
                order_err++;
                continue;
            }
            last = (int64_t)q;
            consumed[q]++;
            if (lab[i] != (int32_t)(q % 10)) byte_err++;
            size_t len = stress_len(q, max_len);
            for (size_t j = 0; j < len; j += 13)
                if (raw[i * max_len + j] != pattern(q, j)) {
                    byte_err++;
                    break;
                }
        }
        got += n;
        if (p == SD_RING_TRUNCATE && (x >> 40) % 8 == 0) sd_ring_end_step(r);
        if (fin && sd_ring_size(r) == 0) break;
    }
    pthread_join(th, NULL);
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    uint64_t acc = 0, cons = 0, dup = 0, stray = 0;
    for (uint64_t q = 0; q < s.pushed; q++) {
        acc += s.accepted[q];
        cons += consumed[q] != 0;
        dup += consumed[q] > 1;
        stray += consumed[q] && !s.accepted[q];
    }
    EXPECT(order_err == 0, "%s: %llu out-of-order or failed takes", name, (unsigned long long)order_err);
    EXPECT(byte_err == 0, "%s: %llu samples with wrong bytes or labels", name, (unsigned long long)byte_err);
    EXPECT(dup == 0 && stray == 0, "%s: %llu consumed twice, %llu consumed but never accepted", name,
           (unsigned long long)dup, (unsigned long long)stray);
    EXPECT(st.received == s.pushed && st.accepted == acc && st.consumed == got && cons == got,
           "%s: received %llu/%llu accepted %llu/%llu consumed %llu/%llu", name, (unsigned long long)st.received,
           (unsigned long long)s.pushed, (unsigned long long)st.accepted, (unsigned long long)acc,
           (unsigned long long)st.consumed, (unsigned long long)got);
    check_stats(r, name);
    EXPECT(st.samples == 0, "%s: drained", name);
    /* policy-specific accounting of what was accepted but not consumed */
    uint64_t lost = acc - cons;
    if (p == SD_RING_DROP_OLDEST)
        EXPECT(lost == st.dropped[SD_DROP_EVICTED], "%s: %llu lost, %llu evicted", name, (unsigned long long)lost,
               (unsigned long long)st.dropped[SD_DROP_EVICTED]);
    else if (p == SD_RING_TRUNCATE)
        EXPECT(lost == st.truncated, "%s: %llu lost, %llu truncated", name, (unsigned long long)lost,
               (unsigned long long)st.truncated);
    else
        EXPECT(lost == 0, "%s: %llu accepted samples never consumed", name, (unsigned long long)lost);
    if (wf == SD_RING_FULL_BLOCK && p == SD_RING_PERSIST)
        EXPECT(acc == s.pushed, "%s: backpressure loses nothing (%llu of %llu)", name, (unsigned long long)acc,
               (unsigned long long)s.pushed);
    printf("stress %-22s pushed %8llu accepted %8llu consumed %8llu evicted %6llu truncated %6llu full %6llu "
           "hw %zu/%zu B, %llu takes\n",
           name, (unsigned long long)s.pushed, (unsigned long long)acc, (unsigned long long)got,
           (unsigned long long)st.dropped[SD_DROP_EVICTED], (unsigned long long)st.truncated,
           (unsigned long long)st.dropped[SD_DROP_RING_FULL], st.hw_samples, st.hw_bytes, (unsigned long long)calls);
    free(s.accepted);
    free(consumed);
    free(raw);
    sd_ring_destroy(r);
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 0.4;
    test_config();
    test_take_upto();
    test_take_exactly();
    test_bounds_drop_newest();
    test_drop_oldest();
    test_truncation();
    test_acquire_release();
    test_backpressure();
    test_fill();
    test_model();
    /* sizes up to 700 bytes are copied under the lock, up to 6000 partly outside it */
    run_stress("persist/backpressure", SD_RING_PERSIST, SD_RING_FULL_BLOCK, 700, secs);
    run_stress("persist/drop-newest", SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 700, secs);
    run_stress("drop-oldest", SD_RING_DROP_OLDEST, SD_RING_FULL_DROP_NEWEST, 700, secs);
    run_stress("truncate", SD_RING_TRUNCATE, SD_RING_FULL_DROP_NEWEST, 700, secs);
    run_stress("backpressure/6000B", SD_RING_PERSIST, SD_RING_FULL_BLOCK, 6000, secs);
    run_stress("drop-oldest/6000B", SD_RING_DROP_OLDEST, SD_RING_FULL_DROP_NEWEST, 6000, secs);
    return sd_test_finish("test_stream_ring");
}
