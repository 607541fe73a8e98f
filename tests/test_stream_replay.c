/* test_stream_replay.c: rate models and arrivals (stream/rate.h), the replay source
 * (stream/replay.h) and the ingest thread (stream/ingest.h). Constant and Poisson rates in virtual
 * time (mean, and the mean and variance of counts per window), per-device uniform and truncated
 * normal draws, trace CSV parsing with its errors, determinism by seed; replay passes, reshuffles,
 * f32 payloads, drops counted by reason, backpressure on the virtual clock; on the real clock,
 * pacing over about half a second and a stop/start pausing the stream, and the ingest thread's
 * start/stop: while blocked on a full
 * ring, while idle, at the end of the stream, on a source failure, and with corrupt and duplicate
 * messages from a scripted source. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/status.h"
#include "stream/crc32c.h"
#include "stream/ingest.h"
#include "stream/rate.h"
#include "stream/replay.h"
#include "stream/ring.h"
#include "tests/harness.h"

/* ---- helpers -------------------------------------------------------------------------------- */
/* n images of c x h x w; image i starts with byte i, then a pattern; label i % classes. */
static void make_dataset(sd_dataset *d, int64_t n, int c, int h, int w, int classes) {
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->n = n;
    d->c = c;
    d->h = h;
    d->w = w;
    d->classes = classes;
    size_t img = (size_t)c * h * w;
    d->images = malloc((size_t)n * img);
    d->labels = malloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) {
        for (size_t j = 0; j < img; j++) d->images[(size_t)i * img + j] = (uint8_t)(j == 0 ? (size_t)i : (size_t)i * 17 + j * 5);
        d->labels[i] = (int32_t)(i % classes);
    }
}

static sd_ring *ring_for(size_t samples, size_t sample_bytes, sd_ring_policy p, sd_ring_when_full wf, double to) {
    sd_ring_config c = {.max_samples = samples, .max_sample_bytes = sample_bytes, .policy = p, .when_full = wf,
                        .block_timeout_s = to};
    sd_ring *r = NULL;
    sd_status s = sd_ring_create(&c, &r);
    EXPECT(s == SD_OK, "ring: %s", sd_last_error());
    return r;
}

static void check_stats(sd_ring *r, const char *where) {
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    char why[256];
    EXPECT(sd_ring_stats_consistent(&st, why, sizeof why), "%s: %s", where, why);
}

/* ---- rates ---------------------------------------------------------------------------------------- */
static void test_constant(void) {
    sd_arrivals g;
    sd_rate_model m = sd_rate_fixed(100, SD_ARRIVAL_CONSTANT);
    EXPECT_OK(sd_arrivals_init(&g, &m, 1, 0));
    int ok = 1;
    uint64_t by10 = 0;
    for (int k = 1; k <= 2000; k++) {
        double t = sd_arrivals_next(&g);
        ok &= fabs(t - k / 100.0) < 1e-12;
        by10 += t <= 10.0;
    }
    EXPECT(ok, "evenly spaced at k / rate");
    EXPECT(by10 == 1000, "1000 arrivals by t = 10 s (%llu)", (unsigned long long)by10);
    m = sd_rate_fixed(0, SD_ARRIVAL_POISSON);
    EXPECT_OK(sd_arrivals_init(&g, &m, 1, 0));
    EXPECT(isinf(sd_arrivals_next(&g)), "rate 0: no arrival, ever");
}

static void test_poisson(void) {
    const double rate = 200, T = 400;
    sd_arrivals g;
    sd_rate_model m = sd_rate_fixed(rate, SD_ARRIVAL_POISSON);
    EXPECT_OK(sd_arrivals_init(&g, &m, 12345, 3));
    int counts[400] = {0};
    double prev = 0, sum = 0, sum2 = 0, t;
    uint64_t n = 0;
    int mono = 1;
    while ((t = sd_arrivals_next(&g)) <= T) {
        mono &= t >= prev;
        double dt = t - prev;
        sum += dt;
        sum2 += dt * dt;
        prev = t;
        counts[(int)t]++;
        n++;
    }
    EXPECT(mono, "arrival times never decrease");
    double mean_dt = sum / (double)n, var_dt = sum2 / (double)n - mean_dt * mean_dt, cv = sqrt(var_dt) / mean_dt;
    EXPECT(fabs(mean_dt * rate - 1) < 0.02, "mean inter-arrival %.6f vs %.6f", mean_dt, 1 / rate);
    EXPECT(fabs(cv - 1) < 0.03, "inter-arrival coefficient of variation %.3f (exponential: 1)", cv);
    double cm = 0, cv2 = 0;
    for (int w = 0; w < 400; w++) cm += counts[w];
    cm /= 400;
    for (int w = 0; w < 400; w++) cv2 += (counts[w] - cm) * (counts[w] - cm);
    cv2 /= 399;
    EXPECT(fabs(cm / rate - 1) < 0.02, "mean count per 1 s window %.2f vs %.0f", cm, rate);
    EXPECT(fabs(cv2 / cm - 1) < 0.2, "count variance / mean %.3f (Poisson: 1)", cv2 / cm);
    printf("poisson %g/s over %g s: %llu arrivals, window mean %.2f var %.2f, inter-arrival cv %.3f\n", rate, T,
           (unsigned long long)n, cm, cv2, cv);
}

static void test_draws_and_determinism(void) {
    enum { DEV = 2000 };
    sd_arrivals g, h;
    sd_rate_model u = sd_rate_uniform(12, 82, SD_ARRIVAL_POISSON);
    double lo = 1e9, hi = -1, mean = 0;
    int distinct = 0;
    double prev = -1;
    for (uint32_t d = 0; d < DEV; d++) {
        EXPECT_OK(sd_arrivals_init(&g, &u, 7, d));
        lo = fmin(lo, g.rate);
        hi = fmax(hi, g.rate);
        mean += g.rate / DEV;
        distinct += g.rate != prev;
        prev = g.rate;
    }
    EXPECT(lo >= 12 && hi <= 82 && lo < 14 && hi > 80, "uniform draws cover [12, 82]: [%.2f, %.2f]", lo, hi);
    EXPECT(fabs(mean - 47) < 1.5 && distinct > DEV - 5, "uniform mean %.2f, %d distinct", mean, distinct);

    sd_rate_model nm = sd_rate_normal(50, 20, 10, 90, SD_ARRIVAL_CONSTANT);
    lo = 1e9, hi = -1, mean = 0;
    int below20 = 0;
    for (uint32_t d = 0; d < DEV; d++) {
        EXPECT_OK(sd_arrivals_init(&g, &nm, 7, d));
        lo = fmin(lo, g.rate);
        hi = fmax(hi, g.rate);
        mean += g.rate / DEV;
        below20 += g.rate < 20;
    }
    EXPECT(lo >= 10 && hi <= 90, "normal draws within the truncation [%.2f, %.2f]", lo, hi);
    EXPECT(fabs(mean - 50) < 1.5 && below20 > 40, "normal mean %.2f, %d below 20", mean, below20);
    sd_rate_model half = sd_rate_normal(5, 10, 0, INFINITY, SD_ARRIVAL_CONSTANT);
    int neg = 0;
    for (uint32_t d = 0; d < 200; d++) {
        EXPECT_OK(sd_arrivals_init(&g, &half, 1, d));
        neg += g.rate < 0;
    }
    EXPECT(neg == 0, "normal truncated at 0: no negative rates");

    /* determinism: same (seed, device) -> same times; another device or seed -> different */
    sd_rate_model p = sd_rate_uniform(10, 100, SD_ARRIVAL_POISSON);
    EXPECT_OK(sd_arrivals_init(&g, &p, 99, 4));
    EXPECT_OK(sd_arrivals_init(&h, &p, 99, 4));
    int same = 1;
    for (int k = 0; k < 1000; k++) same &= sd_arrivals_next(&g) == sd_arrivals_next(&h);
    EXPECT(same, "same seed and device: identical arrivals");
    EXPECT_OK(sd_arrivals_init(&g, &p, 99, 4));
    EXPECT_OK(sd_arrivals_init(&h, &p, 99, 5));
    EXPECT(g.rate != h.rate && sd_arrivals_next(&g) != sd_arrivals_next(&h), "another device differs");
    EXPECT_OK(sd_arrivals_init(&h, &p, 100, 4));
    EXPECT(g.rate != h.rate, "another seed differs");

    /* model checks */
    sd_rate_model bad = sd_rate_fixed(-1, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_arrivals_init(&g, &bad, 1, 0), SD_ERR_INVALID, "fixed rate -1");
    bad = sd_rate_fixed(NAN, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "fixed rate nan");
    bad = sd_rate_uniform(50, 10, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "uniform rate range [50, 10]");
    bad = sd_rate_normal(50, 0, 0, 100, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "positive finite sigma");
    bad = sd_rate_normal(0, 1, 100, 200, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "widen the truncation");
    bad = sd_rate_normal(50, 5, 60, 60, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "0 <= lo < hi");
    bad = sd_rate_traced(NULL, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "no trace loaded");
    bad = sd_rate_fixed(1, (sd_arrival_kind)9);
    EXPECT_FAIL(sd_rate_model_check(&bad), SD_ERR_INVALID, "arrival kind 9");
}

/* ---- traces --------------------------------------------------------------------------------------- */
static void test_trace(void) {
    const char *text = "# a test trace\r\ntime, rate\r\n0,10\r\n\r\n  5 , 0 \n10,20\n";
    sd_rate_trace t;
    EXPECT_OK(sd_rate_trace_parse(text, strlen(text), "t.csv", &t));
    EXPECT(t.n == 3 && t.time[2] == 10 && t.rate[2] == 20 && t.cum[1] == 50 && t.cum[2] == 50, "parsed 3 rows");
    EXPECT(sd_rate_trace_at(&t, 0) == 10 && sd_rate_trace_at(&t, 4.99) == 10 && sd_rate_trace_at(&t, 5) == 0 &&
               sd_rate_trace_at(&t, 1e6) == 20,
           "rate lookup");
    sd_rate_model m = sd_rate_traced(&t, SD_ARRIVAL_CONSTANT);
    sd_arrivals g;
    EXPECT_OK(sd_arrivals_init(&g, &m, 1, 0));
    uint64_t c5 = 0, c10 = 0, c15 = 0;
    double x, first = -1;
    while ((x = sd_arrivals_next(&g)) <= 15) {
        if (first < 0) first = x;
        c5 += x <= 5 + 1e-9;
        c10 += x <= 10 + 1e-9;
        c15++;
    }
    EXPECT(c5 == 50 && c10 == 50 && c15 == 150, "trace arrivals by 5/10/15 s: %llu %llu %llu", (unsigned long long)c5,
           (unsigned long long)c10, (unsigned long long)c15);
    EXPECT(fabs(first - 0.1) < 1e-12, "first arrival at 1/rate (%g)", first);
    sd_rate_trace_free(&t);

    /* Poisson on a two-level trace, and an end at rate 0 */
    const char *two = "0,100\n500,300\n1000,0\n";
    EXPECT_OK(sd_rate_trace_parse(two, strlen(two), "two.csv", &t));
    m = sd_rate_traced(&t, SD_ARRIVAL_POISSON);
    EXPECT_OK(sd_arrivals_init(&g, &m, 5, 1));
    uint64_t a = 0, b = 0;
    while (!isinf(x = sd_arrivals_next(&g))) {
        if (x < 500) a++;
        else b++;
        if (x > 1000 + 1e-9) break;
    }
    EXPECT(isinf(x), "no arrivals after the rate drops to 0 for good");
    EXPECT(fabs((double)a / 50000 - 1) < 0.02 && fabs((double)b / 150000 - 1) < 0.02,
           "Poisson counts follow the trace: %llu (50000) and %llu (150000)", (unsigned long long)a,
           (unsigned long long)b);
    sd_rate_trace_free(&t);

    struct bad {
        const char *text, *needle;
    } bads[] = {
        {"0,1\n2,1\n1,1\n", "t.csv:3: time 1 is not after the previous time 2"},
        {"0,1\n1,1\n1,2\n", "t.csv:3: time 1 is not after"},
        {"0,1\n1,-2\n", "t.csv:2: rate -2 must lie in"},
        {"0,1\n1,nan\n", "t.csv:2: rate \"nan\" is not a finite number"},
        {"0,inf\n", "t.csv:1: rate \"inf\""},
        {"-1,1\n", "t.csv:1: time -1 must lie in"},
        {"0,1\n1\n", "t.csv:2: expected two fields"},
        {"0,1,2\n", "t.csv:1: expected two fields"},
        {"0,1\nabc,1\n", "t.csv:2: time \"abc\" is not a finite number"},
        {"0,2e9\n", "t.csv:1: rate 2e+09 must lie in"},
        {"", "t.csv: no \"time,rate\" rows"},
        {"time,rate\n# nothing\n", "t.csv: no \"time,rate\" rows"},
        {"0,1\n,\n", "t.csv:2: time \"\" is not a finite number"},
    };
    for (size_t k = 0; k < sizeof bads / sizeof bads[0]; k++) {
        EXPECT_FAIL(sd_rate_trace_parse(bads[k].text, strlen(bads[k].text), "t.csv", &t), SD_ERR_FORMAT, bads[k].needle);
        EXPECT(t.n == 0 && t.time == NULL, "left empty on failure");
    }
    char longline[400];
    memset(longline, '1', sizeof longline);
    memcpy(longline, "0,", 2);
    EXPECT_FAIL(sd_rate_trace_parse(longline, sizeof longline, "t.csv", &t), SD_ERR_FORMAT,
                "t.csv:1: line of 400 characters exceeds");
    const char nul[] = "0,1\n1,\0002\n";
    EXPECT_FAIL(sd_rate_trace_parse(nul, sizeof nul - 1, "t.csv", &t), SD_ERR_FORMAT, "t.csv:2: line contains a NUL");

    /* files: the path names the error */
    char path[] = "/tmp/sd_trace_XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0, "temporary file");
    const char *ftext = "time,rate\n0,5\n3,1\n2,1\n";
    EXPECT(write(fd, ftext, strlen(ftext)) == (ssize_t)strlen(ftext), "write");
    close(fd);
    char needle[128];
    snprintf(needle, sizeof needle, "%s:4: time 2 is not after", path);
    EXPECT_FAIL(sd_rate_trace_load(path, &t), SD_ERR_FORMAT, needle);
    FILE *f = fopen(path, "w");
    fputs("0,5\n3,1\n", f);
    fclose(f);
    EXPECT_OK(sd_rate_trace_load(path, &t));
    EXPECT(t.n == 2 && t.rate[1] == 1, "loaded from a file");
    sd_rate_trace_free(&t);
    unlink(path);
    EXPECT_FAIL(sd_rate_trace_load("/nonexistent/trace.csv", &t), SD_ERR_IO, "/nonexistent/trace.csv");
}

/* ---- replay, virtual clock --------------------------------------------------------------------------- */
static void test_replay_virtual(void) {
    sd_dataset d;
    make_dataset(&d, 10, 1, 4, 4, 3);
    const int64_t part[5] = {1, 3, 5, 7, 9};
    sd_replay *rp = NULL;
    sd_replay_config c = {.data = &d, .indices = part, .n_indices = 5, .rate = sd_rate_fixed(100, SD_ARRIVAL_CONSTANT),
                          .seed = 42, .device = 6, .first_seq = 1000};
    EXPECT_OK(sd_replay_create(&c, &rp));
    sd_ring *r = ring_for(64, 16, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sd_sink sink;
    sd_msg_expect e = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 4, 4}, .classes = 3, .check_device = true,
                       .device = 6};
    EXPECT_OK(sd_sink_init(&sink, r, &e));
    uint64_t k = 0;
    EXPECT_OK(sd_replay_advance_to(rp, 0.0999, &sink, &k));
    EXPECT(k == 9, "9 arrivals by 0.0999 s (%llu)", (unsigned long long)k);
    EXPECT_OK(sd_replay_advance_to(rp, 0.5, &sink, &k));
    EXPECT(k == 41 && sd_replay_sent(rp) == 50 && fabs(sd_replay_next_time(rp) - 0.51) < 1e-12, "50 by 0.5 s");
    uint8_t raw[50 * 16];
    uint64_t sq[50];
    int32_t lab[50];
    size_t n;
    sd_ring_batch out = {.raw = raw, .raw_stride = 16, .seqs = sq, .labels = lab};
    EXPECT_OK(sd_ring_take_upto(r, 50, &out, &n));
    EXPECT(n == 50, "all stored (%zu)", n);
    int ok = 1, perm = 1, differs = 0;
    int64_t first_pass[5];
    for (size_t i = 0; i < n; i++) {
        int64_t idx = raw[i * 16];
        ok &= sq[i] == 1000 + i && lab[i] == (int32_t)(idx % 3);
        ok &= memcmp(raw + i * 16, d.images + idx * 16, 16) == 0;
        if (i < 5) first_pass[i] = idx;
        else differs |= idx != first_pass[i % 5];
    }
    for (int p = 0; p < 10; p++) { /* every pass of 5 is a permutation of the partition */
        int seen = 0;
        for (int i = 0; i < 5; i++) seen |= 1 << raw[(p * 5 + i) * 16];
        perm &= seen == (1 << 1 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 9);
    }
    EXPECT(ok, "sequence numbers, labels and image bytes");
    EXPECT(perm && sd_replay_passes(rp) == 10, "each pass is a permutation of the partition");
    EXPECT(differs, "passes are reshuffled");
    check_stats(r, "replay virtual");
    sd_replay_destroy(rp);

    /* no_shuffle: partition order; the same seed gives the same stream byte for byte */
    c.no_shuffle = true;
    EXPECT_OK(sd_replay_create(&c, &rp));
    const void *msg;
    size_t len;
    sd_source_event ev;
    double at;
    ok = 1;
    for (int i = 0; i < 12; i++) {
        EXPECT_OK(sd_replay_next_message(rp, &msg, &len, &at, &ev));
        ok &= ev == SD_SOURCE_MESSAGE && ((const uint8_t *)msg)[48] == part[i % 5];
    }
    EXPECT(ok, "no_shuffle streams the partition in order");
    sd_replay_destroy(rp);
    c.no_shuffle = false;
    c.rate = sd_rate_uniform(10, 1000, SD_ARRIVAL_POISSON);
    sd_replay *a = NULL, *b = NULL;
    EXPECT_OK(sd_replay_create(&c, &a));
    EXPECT_OK(sd_replay_create(&c, &b));
    const void *ma, *mb;
    size_t la, lb;
    double ta, tb;
    sd_source_event ea, eb;
    int same = 1;
    for (int i = 0; i < 200; i++) {
        sd_replay_next_message(a, &ma, &la, &ta, &ea);
        sd_replay_next_message(b, &mb, &lb, &tb, &eb);
        same &= la == lb && ta == tb && memcmp(ma, mb, la) == 0;
    }
    EXPECT(same, "same seed: identical messages and times");
    sd_replay_destroy(b);
    c.seed = 43;
    EXPECT_OK(sd_replay_create(&c, &b));
    EXPECT(sd_replay_rate(a) != sd_replay_rate(b), "another seed: another drawn rate");
    sd_replay_destroy(a);
    sd_replay_destroy(b);

    /* rates in virtual time: Poisson 500/s for 20 s, constant 250/s */
    sd_ring_truncate(r);
    c.seed = 42;
    c.rate = sd_rate_fixed(500, SD_ARRIVAL_POISSON);
    EXPECT_OK(sd_replay_create(&c, &rp));
    uint64_t total = 0;
    for (int s = 1; s <= 20; s++) {
        EXPECT_OK(sd_replay_advance_to(rp, s, &sink, &k));
        total += k;
        sd_ring_truncate(r);
    }
    EXPECT(fabs((double)total / 10000 - 1) < 0.03, "Poisson 500/s: %llu in 20 virtual s", (unsigned long long)total);
    sd_replay_destroy(rp);
    c.rate = sd_rate_fixed(250, SD_ARRIVAL_CONSTANT);
    EXPECT_OK(sd_replay_create(&c, &rp));
    total = 0;
    for (int s = 1; s <= 20; s++) {
        EXPECT_OK(sd_replay_advance_to(rp, s, &sink, &k));
        total += k;
        sd_ring_truncate(r);
    }
    EXPECT(total == 5000, "constant 250/s: %llu in 20 virtual s", (unsigned long long)total);
    sd_replay_destroy(rp);

    /* max_messages ends the stream */
    c.max_messages = 7;
    EXPECT_OK(sd_replay_create(&c, &rp));
    EXPECT_OK(sd_replay_advance_to(rp, 1e6, &sink, &k));
    EXPECT(k == 7 && isinf(sd_replay_next_time(rp)), "7 then the end");
    EXPECT_OK(sd_replay_next_message(rp, &msg, &len, &at, &ev));
    EXPECT(ev == SD_SOURCE_END, "end reported");
    sd_replay_destroy(rp);
    sd_ring_destroy(r);

    /* configuration errors */
    sd_replay_config badc = c;
    int64_t badpart[2] = {1, 10};
    badc.indices = badpart;
    badc.n_indices = 2;
    EXPECT_FAIL(sd_replay_create(&badc, &rp), SD_ERR_INVALID, "indices[1] = 10 is outside [0, 10)");
    badc.n_indices = 0;
    EXPECT_FAIL(sd_replay_create(&badc, &rp), SD_ERR_INVALID, "partition is empty");
    badc = c;
    badc.data = NULL;
    EXPECT_FAIL(sd_replay_create(&badc, &rp), SD_ERR_INVALID, "loaded, non-empty dataset");
    badc = c;
    badc.rate = sd_rate_fixed(-5, SD_ARRIVAL_CONSTANT);
    EXPECT_FAIL(sd_replay_create(&badc, &rp), SD_ERR_INVALID, "fixed rate -5");
    sd_dataset_free(&d);
}

static void test_replay_f32_drops_backpressure(void) {
    sd_dataset d;
    make_dataset(&d, 6, 2, 3, 3, 6);
    sd_augment norm = {.mean = {0.5f, 0.1f, 0, 0}, .std = {0.25f, 2.0f, 1, 1}};
    sd_replay_config c = {.data = &d, .rate = sd_rate_fixed(10, SD_ARRIVAL_CONSTANT), .seed = 1, .device = 0,
                          .dtype = SD_MSG_F32, .f32_norm = &norm, .no_shuffle = true};
    sd_replay *rp;
    EXPECT_OK(sd_replay_create(&c, &rp));
    sd_ring *r = ring_for(16, 18 * 4, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sd_sink sink;
    sd_msg_expect e = {.dtype = SD_MSG_F32, .ndim = 3, .dims = {2, 3, 3}, .classes = 6};
    EXPECT_OK(sd_sink_init(&sink, r, &e));
    uint64_t k;
    EXPECT_OK(sd_replay_advance_to(rp, 0.6, &sink, &k));
    float x[6 * 18];
    size_t n;
    sd_ring_batch out = {.x = x, .sample_elems = 18};
    EXPECT_OK(sd_ring_take_upto(r, 6, &out, &n));
    double err = 0;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 18; j++) {
            int ch = j / 9;
            float want = ((float)d.images[i * 18 + j] / 255.0f - norm.mean[ch]) / norm.std[ch];
            err = fmax(err, fabs((double)x[i * 18 + j] - want));
        }
    EXPECT(n == 6 && err < 1e-6, "f32 payloads carry the normalised image (%zu, error %g)", n, err);
    sd_replay_destroy(rp);

    /* drops counted by reason through the sink: a label range and a device the stream does not meet */
    c.dtype = SD_MSG_U8;
    c.device = 3;
    EXPECT_OK(sd_replay_create(&c, &rp));
    sd_msg_expect e2 = {.classes = 4};
    EXPECT_OK(sd_sink_init(&sink, r, &e2));
    EXPECT_OK(sd_replay_advance_to(rp, 0.6, &sink, &k)); /* labels 0..5: 4 and 5 are out of range */
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.dropped[SD_DROP_BAD_LABEL] == 2 && st.accepted == 10, "2 bad labels (%llu)",
           (unsigned long long)st.dropped[SD_DROP_BAD_LABEL]);
    sd_msg_expect e3 = {.check_device = true, .device = 4};
    EXPECT_OK(sd_sink_init(&sink, r, &e3));
    EXPECT_OK(sd_replay_advance_to(rp, 1.0, &sink, &k));
    sd_ring_get_stats(r, &st);
    EXPECT(k == 4 && st.dropped[SD_DROP_BAD_DEVICE] == 4, "device 3 where 4 is expected");
    sd_msg_expect bad = {.ndim = 7};
    EXPECT_FAIL(sd_sink_init(&sink, r, &bad), SD_ERR_INVALID, "expected ndim 7");
    check_stats(r, "drops");
    sd_replay_destroy(rp);
    sd_ring_destroy(r);

    /* backpressure on the virtual clock: arrivals wait in the source, nothing is lost */
    r = ring_for(8, 18, SD_RING_PERSIST, SD_RING_FULL_BLOCK, -1);
    c.device = 0;
    EXPECT_OK(sd_replay_create(&c, &rp));
    EXPECT_OK(sd_sink_init(&sink, r, NULL));
    EXPECT_OK(sd_replay_advance_to(rp, 2.0, &sink, &k)); /* 20 due, room for 8 */
    EXPECT(k == 8 && sd_replay_sent(rp) == 8 && sd_ring_size(r) == 8, "8 delivered, 12 wait (%llu)",
           (unsigned long long)k);
    uint64_t sq[8];
    sd_ring_batch sb = {.seqs = sq};
    EXPECT_OK(sd_ring_take_upto(r, 5, &sb, &n));
    EXPECT_OK(sd_replay_advance_to(rp, 2.0, &sink, &k));
    EXPECT(k == 5 && sd_ring_size(r) == 8, "5 more after 5 were taken");
    sd_ring_get_stats(r, &st);
    EXPECT(st.rejected == 0 && st.received == 13, "nothing dropped");
    sd_replay_destroy(rp);
    sd_ring_destroy(r);
    sd_dataset_free(&d);
}

/* ---- real clock and the ingest thread --------------------------------------------------------- */
static void test_real_clock_pacing(void) {
    sd_dataset d;
    make_dataset(&d, 20, 1, 2, 2, 2);
    sd_replay_config c = {.data = &d, .rate = sd_rate_fixed(200, SD_ARRIVAL_CONSTANT), .seed = 3};
    sd_replay *rp;
    EXPECT_OK(sd_replay_create(&c, &rp));
    sd_ring *r = ring_for(1000, 4, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sd_ingest *g = NULL;
    sd_ingest_config ic = {.source = sd_replay_source(rp), .ring = r};
    double t0 = sd_clock_now();
    EXPECT_OK(sd_ingest_start(&ic, &g));
    sd_clock_sleep_until(t0 + 0.25);
    size_t at_quarter = sd_ring_size(r);
    sd_clock_sleep_until(t0 + 0.5);
    size_t at_half = sd_ring_size(r);
    EXPECT_OK(sd_ingest_stop(g));
    double took = sd_clock_now() - t0;
    printf("real clock 200/s: %zu samples at 0.25 s, %zu at 0.5 s (expected 50, 100)\n", at_quarter, at_half);
    EXPECT(at_quarter >= 25 && at_quarter <= 75, "paced: %zu at 0.25 s", at_quarter);
    EXPECT(at_half >= 60 && at_half <= 140, "paced: %zu at 0.5 s", at_half);
    EXPECT(took < 1.5, "stopped promptly (%.3f s)", took);
    EXPECT(sd_ring_closed(r), "stop closes the ring");
    check_stats(r, "pacing");

    /* stop pauses the stream's time: after 0.3 s stopped and 0.15 s running again, about 30 more
     * arrive, not the 90 that a clock running through the pause would owe */
    sd_clock_sleep_until(sd_clock_now() + 0.3);
    size_t before = sd_ring_size(r);
    t0 = sd_clock_now();
    EXPECT_OK(sd_ingest_start(&ic, &g));
    sd_clock_sleep_until(t0 + 0.15);
    EXPECT_OK(sd_ingest_stop(g));
    size_t more = sd_ring_size(r) - before;
    EXPECT(more >= 10 && more <= 60, "after a restart: %zu more in 0.15 s (expected 30)", more);
    sd_replay_destroy(rp);
    sd_ring_destroy(r);
    sd_dataset_free(&d);
}

static void test_ingest_backpressure_stop(void) {
    sd_dataset d;
    make_dataset(&d, 20, 1, 2, 2, 2);
    sd_replay_config c = {.data = &d, .rate = sd_rate_fixed(1e5, SD_ARRIVAL_CONSTANT), .seed = 3};
    sd_replay *rp;
    EXPECT_OK(sd_replay_create(&c, &rp));
    sd_ring *r = ring_for(4, 4, SD_RING_PERSIST, SD_RING_FULL_BLOCK, -1); /* waits forever */
    sd_ingest *g = NULL;
    sd_ingest_config ic = {.source = sd_replay_source(rp), .ring = r, .poll_s = 0.05};
    EXPECT_OK(sd_ingest_start(&ic, &g));
    double t0 = sd_clock_now();
    while (sd_ring_size(r) < 4 && sd_clock_now() - t0 < 2) sd_clock_sleep_until(sd_clock_now() + 0.005);
    sd_clock_sleep_until(sd_clock_now() + 0.1); /* the producer is now blocked on the full ring */
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    sd_ingest_stats is;
    sd_ingest_get_stats(g, &is);
    EXPECT(st.samples == 4 && st.accepted == 4 && is.running, "full and blocked (%zu held)", st.samples);
    double ts = sd_clock_now();
    EXPECT_OK(sd_ingest_stop(g));
    double stop_s = sd_clock_now() - ts;
    EXPECT(stop_s < 0.5, "stop while blocked on backpressure took %.3f s", stop_s);
    sd_ring_get_stats(r, &st);
    EXPECT(st.dropped[SD_DROP_CLOSED] == 1 && st.received == 5 && st.blocked_s > 0.05,
           "the blocked sample counted as ring_closed (%llu), blocked %.3f s",
           (unsigned long long)st.dropped[SD_DROP_CLOSED], st.blocked_s);
    check_stats(r, "backpressure stop");
    printf("ingest stop under backpressure: %.1f ms\n", stop_s * 1e3);
    sd_replay_destroy(rp);

    /* stop while the source sleeps between slow arrivals */
    c.rate = sd_rate_fixed(0.2, SD_ARRIVAL_CONSTANT);
    EXPECT_OK(sd_replay_create(&c, &rp));
    ic.source = sd_replay_source(rp);
    EXPECT_OK(sd_ingest_start(&ic, &g));
    sd_clock_sleep_until(sd_clock_now() + 0.1);
    sd_ingest_get_stats(g, &is);
    ts = sd_clock_now();
    EXPECT_OK(sd_ingest_stop(g));
    stop_s = sd_clock_now() - ts;
    EXPECT(stop_s < 0.3 && is.idle_polls >= 1, "stop while idle took %.3f s (%llu idle polls)", stop_s,
           (unsigned long long)is.idle_polls);
    sd_replay_destroy(rp);

    /* the end of the stream closes the ring: a DDP wait ends at once */
    sd_ring_destroy(r);
    r = ring_for(64, 4, SD_RING_PERSIST, SD_RING_FULL_BLOCK, -1);
    c.rate = sd_rate_fixed(1e4, SD_ARRIVAL_CONSTANT);
    c.max_messages = 20;
    EXPECT_OK(sd_replay_create(&c, &rp));
    ic.source = sd_replay_source(rp);
    ic.ring = r;
    EXPECT_OK(sd_ingest_start(&ic, &g));
    uint64_t sq[64];
    sd_ring_batch out = {.seqs = sq};
    size_t n;
    ts = sd_clock_now();
    EXPECT_OK(sd_ring_take_exactly(r, 30, 5.0, &out, &n));
    EXPECT(n == 0 && sd_clock_now() - ts < 1.0, "take_exactly(30) ends when the stream of 20 ends");
    sd_ingest_get_stats(g, &is);
    EXPECT(is.ended && is.messages == 20 && is.stored == 20, "ended after 20");
    EXPECT_OK(sd_ring_take_upto(r, 64, &out, &n));
    EXPECT(n == 20 && sq[19] == 19, "the 20 are there");
    EXPECT_OK(sd_ingest_stop(g));
    sd_replay_destroy(rp);
    sd_ring_destroy(r);
    sd_dataset_free(&d);
}

/* A scripted source: hands out prepared messages, then ends or fails. */
typedef struct script {
    uint8_t msgs[8][64];
    size_t lens[8];
    int n, pos;
    bool fail_at_end;
    int started, stopped;
} script;

static const char *script_name(void *ctx) {
    (void)ctx;
    return "scripted";
}
static sd_status script_start(void *ctx) {
    ((script *)ctx)->started++;
    return SD_OK;
}
static sd_status script_stop(void *ctx) {
    ((script *)ctx)->stopped++;
    return SD_OK;
}
static sd_status script_next(void *ctx, double timeout_s, sd_source_event *ev, const void **msg, size_t *len) {
    (void)timeout_s;
    script *s = ctx;
    if (s->pos == s->n) {
        if (s->fail_at_end) return SD_FAIL(SD_ERR_IO, "broker connection lost");
        *ev = SD_SOURCE_END;
        return SD_OK;
    }
    *msg = s->msgs[s->pos];
    *len = s->lens[s->pos];
    s->pos++;
    *ev = SD_SOURCE_MESSAGE;
    return SD_OK;
}
static const sd_source_ops script_ops = {.name = script_name, .start = script_start, .next = script_next, .stop = script_stop};

static void script_add(script *s, uint64_t seq, int corrupt) {
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 1, .dims = {4}, .label = 1, .seq = seq};
    uint8_t px[4] = {1, 2, 3, (uint8_t)seq};
    sd_msg_encode(&m, px, 4, s->msgs[s->n], 64, &s->lens[s->n]);
    if (corrupt) s->msgs[s->n][50] ^= 0x40;
    s->n++;
}

static void test_ingest_script(void) {
    script s = {0};
    script_add(&s, 0, 0);
    script_add(&s, 1, 0);
    script_add(&s, 1, 0); /* duplicate */
    script_add(&s, 2, 1); /* corrupt */
    script_add(&s, 3, 0);
    s.lens[s.n] = 10; /* a truncated message */
    memcpy(s.msgs[s.n], s.msgs[0], 10);
    s.n++;
    sd_ring *r = ring_for(16, 4, SD_RING_PERSIST, SD_RING_FULL_DROP_NEWEST, 0);
    sd_ingest *g;
    sd_ingest_config ic = {.source = {&script_ops, &s}, .ring = r};
    EXPECT_OK(sd_ingest_start(&ic, &g));
    double t0 = sd_clock_now();
    sd_ingest_stats is;
    do {
        sd_clock_sleep_until(sd_clock_now() + 0.002);
        sd_ingest_get_stats(g, &is);
    } while (is.running && sd_clock_now() - t0 < 2);
    EXPECT(is.ended && is.messages == 6 && is.stored == 3 && is.seq_gaps == 1, "6 messages, 3 stored, 1 gap");
    EXPECT_OK(sd_ingest_stop(g));
    EXPECT(s.started == 1 && s.stopped == 1, "source started and stopped once");
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    EXPECT(st.received == 6 && st.accepted == 3 && st.dropped[SD_DROP_DUPLICATE] == 1 &&
               st.dropped[SD_DROP_BAD_CHECKSUM] == 1 && st.dropped[SD_DROP_TRUNCATED] == 1,
           "drops by reason: duplicate %llu checksum %llu truncated %llu",
           (unsigned long long)st.dropped[SD_DROP_DUPLICATE], (unsigned long long)st.dropped[SD_DROP_BAD_CHECKSUM],
           (unsigned long long)st.dropped[SD_DROP_TRUNCATED]);
    check_stats(r, "script");

    /* a failing source: the error comes back from stop, naming the source */
    script f = {0};
    script_add(&f, 0, 0);
    f.fail_at_end = true;
    sd_ring_truncate(r);
    ic.source = (sd_source){&script_ops, &f};
    EXPECT_OK(sd_ingest_start(&ic, &g));
    t0 = sd_clock_now();
    do {
        sd_clock_sleep_until(sd_clock_now() + 0.002);
        sd_ingest_get_stats(g, &is);
    } while (is.running && sd_clock_now() - t0 < 2);
    EXPECT(!is.running && !is.ended, "the thread ended on the failure");
    EXPECT_FAIL(sd_ingest_stop(g), SD_ERR_IO, "ingest from scripted failed");
    EXPECT(strstr(sd_last_error(), "broker connection lost") != NULL, "the source's message is kept: %s",
           sd_last_error());
    /* a source table without next is refused */
    static const sd_source_ops half = {.name = script_name, .start = script_start, .stop = script_stop};
    ic.source = (sd_source){&half, &f};
    EXPECT_FAIL(sd_ingest_start(&ic, &g), SD_ERR_INVALID, "needs start, next and stop");
    EXPECT_OK(sd_ingest_stop(NULL));
    sd_ring_destroy(r);
}

int main(void) {
    test_constant();
    test_poisson();
    test_draws_and_determinism();
    test_trace();
    test_replay_virtual();
    test_replay_f32_drops_backpressure();
    test_real_clock_pacing();
    test_ingest_backpressure_stop();
    test_ingest_script();
    return sd_test_finish("test_stream_replay");
}
