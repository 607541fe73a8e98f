/* bench_stream.c: scadles-bench_stream, the stream path's throughput: replay source -> message
 * encode -> decode and validate -> ring buffer, for 784-byte (1x28x28) and 3,072-byte (3x32x32)
 * u8 samples, against memcpy measured in the same run: the same samples copied from the same
 * dataset, in a shuffled order, into the same number of 64-byte aligned slots the ring fills
 * between two training steps (the bound: the one copy the path cannot avoid), and a bulk 64 MiB
 * memcpy for scale. Goals: >= 50% of the memcpy bandwidth and >= 1e6 784-byte samples/s on one
 * core. Every timed path is validated first: samples round-trip byte for byte, and the float take
 * matches sd_augment_batch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "base/rng.h"
#include "stream/augment.h"
#include "stream/crc32c.h"
#include "stream/ingest.h"
#include "stream/rate.h"
#include "stream/replay.h"
#include "stream/ring.h"

typedef struct opts {
    int64_t n;      /* dataset images; 0: the real training set's size (60000 for 28x28, 50000 for 32x32) */
    int step;       /* samples per training step (virtual-clock advance) */
    double seconds; /* per timed run */
    int reps;
} opts;

static void usage(FILE *f) {
    fprintf(f, "usage: scadles-bench_stream [--images N] [--step S] [--seconds T] [--reps R]\n"
               "  replay -> ring samples/s and GB/s for 784- and 3072-byte samples, against memcpy.\n"
               "  defaults: --images 0 (the training set sizes: 60000 Fashion-MNIST-shaped, 50000\n"
               "  CIFAR-shaped samples of random bytes) --step 256 --seconds 0.5 --reps 3\n");
}

static int parse_args(int argc, char **argv, opts *o) {
    *o = (opts){.n = 0, .step = 256, .seconds = 0.5, .reps = 3};
    static const sd_cli_option options[] = {
        {"--images", true, NULL}, {"--step", true, NULL}, {"--seconds", true, NULL}, {"--reps", true, NULL}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench_stream", usage, options, argc, argv);
    for (int i = 0; i < cli.n; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        char *end = NULL;
        if (!strcmp(a, "--images")) {
            o->n = strtoll(v, &end, 10);
        } else if (!strcmp(a, "--step")) {
            o->step = (int)strtol(v, &end, 10);
        } else if (!strcmp(a, "--seconds")) {
            o->seconds = strtod(v, &end);
        } else if (!strcmp(a, "--reps")) {
            o->reps = (int)strtol(v, &end, 10);
        }
        if (!end || *end) {
            fprintf(stderr, "scadles-bench_stream: %s needs a number, got '%s'\n", a, v);
            sd_cli_free(&cli);
            return -1;
        }
    }
    sd_cli_free(&cli);
    if (o->n < 0 || o->n > 1000000 || o->step < 1 || o->step > 65536 || !(o->seconds > 0) || o->reps < 1) {
        fprintf(stderr, "scadles-bench_stream: need 0 <= images <= 1e6, 1 <= step <= 65536, seconds > 0, reps >= 1\n");
        return -1;
    }
    return 0;
}

/* CPU time of the calling thread: the single-core rows are rates per CPU-second, so that other
 * processes on a shared machine slow them less (they still share caches and memory bandwidth). */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int fail(const char *what) {
    fprintf(stderr, "scadles-bench_stream: %s: %s\n", what, sd_last_error());
    return 1;
}

/* ---- the bound: memcpy ---------------------------------------------------------------------- */
static double time_memcpy_samples(const sd_dataset *d, const int64_t *perm, int step, double seconds, uint64_t *count) {
    size_t sz = (size_t)d->c * d->h * d->w, slot = (sz + 63) & ~(size_t)63;
    uint8_t *dst = NULL;
    if (posix_memalign((void **)&dst, 64, slot * (size_t)step) != 0) return 0;
    memset(dst, 0, slot * (size_t)step);
    uint64_t k = 0, j = 0;
    double t0 = sd_clock_now(), c0 = cpu_now();
    do {
        for (int i = 0; i < step; i++) {
            memcpy(dst + (size_t)i * slot, d->images + (size_t)perm[j] * sz, sz);
            if (++j == (uint64_t)d->n) j = 0;
        }
        k += (uint64_t)step;
    } while (sd_clock_now() - t0 < seconds);
    double t = cpu_now() - c0;
    volatile uint8_t sink = dst[k % slot];
    (void)sink;
    free(dst);
    *count = k;
    return t;
}

static double bulk_memcpy_gbs(void) {
    size_t n = (size_t)64 << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = cpu_now();
        memcpy(b, a, n);
        double t = cpu_now() - t0;
        if (n / t > best) best = (double)n / t;
        a[r] = b[n - 1 - r];
    }
    free(a);
    free(b);
    return best / 1e9;
}

/* ---- the path --------------------------------------------------------------------------------- */
typedef struct path {
    sd_replay *rp;
    sd_ring *ring;
    sd_sink sink;
    double t, dt; /* virtual clock and its advance per step */
} path;

static sd_status path_open(path *p, const sd_dataset *d, int step, sd_ring_policy pol, bool no_shuffle) {
    size_t sz = (size_t)d->c * d->h * d->w;
    memset(p, 0, sizeof *p);
    const double rate = 1e6; /* virtual: only sets how many arrive per advance */
    sd_replay_config rc = {.data = d, .rate = sd_rate_fixed(rate, SD_ARRIVAL_CONSTANT), .seed = 2024, .device = 1,
                           .no_shuffle = no_shuffle};
    TRY(sd_replay_create(&rc, &p->rp));
    sd_ring_config gc = {.max_samples = (size_t)step * 2, .max_sample_bytes = sz, .policy = pol};
    TRY(sd_ring_create(&gc, &p->ring));
    sd_msg_expect e = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {(uint32_t)d->c, (uint32_t)d->h, (uint32_t)d->w},
                       .classes = d->classes, .check_device = true, .device = 1};
    TRY(sd_sink_init(&p->sink, p->ring, &e));
    p->dt = step / rate;
    return SD_OK;
}

static void path_close(path *p) {
    sd_replay_destroy(p->rp);
    sd_ring_destroy(p->ring);
}

/* One training step's arrivals into the ring. */
static sd_status path_step(path *p, uint64_t *got) {
    p->t += p->dt;
    return sd_replay_advance_to(p->rp, p->t, &p->sink, got);
}

static int validate(const sd_dataset *d, int step) {
    path p;
    if (path_open(&p, d, step, SD_RING_PERSIST, true) != SD_OK) return fail("validation path");
    uint64_t got = 0;
    if (path_step(&p, &got) != SD_OK) return fail("validation step");
    size_t sz = (size_t)d->c * d->h * d->w, k = got < 64 ? got : 64, n = 0;
    uint8_t *raw = malloc(k * sz);
    float *x = malloc(k * sz * sizeof(float)), *ref = malloc(k * sz * sizeof(float));
    int32_t *lab = malloc(k * sizeof(int32_t)), *rlab = malloc(k * sizeof(int32_t));
    uint64_t *seq = malloc(k * sizeof(uint64_t));
    int64_t *idx = malloc(k * sizeof(int64_t));
    sd_augment norm = {.mean = {0.49f, 0.48f, 0.45f, 0}, .std = {0.25f, 0.24f, 0.26f, 1}};
    /* the first k samples twice: raw bytes (acquire keeps them), then floats */
    sd_ring_sample *v = malloc(k * sizeof *v);
    int bad = 0;
    if (sd_ring_acquire(p.ring, k, v, &n) != SD_OK || n != k) bad++;
    for (size_t i = 0; i < n; i++) {
        idx[i] = (int64_t)(v[i].meta.seq % (uint64_t)d->n);
        memcpy(raw + i * sz, v[i].data, v[i].nbytes);
        bad += v[i].nbytes != sz || memcmp(v[i].data, d->images + (size_t)idx[i] * sz, sz) != 0;
    }
    sd_ring_release(p.ring, 0);
    sd_ring_batch out = {.x = x, .sample_elems = sz, .norm = &norm, .labels = lab, .seqs = seq};
    if (sd_ring_take_upto(p.ring, k, &out, &n) != SD_OK || n != k) bad++;
    if (sd_augment_batch(d, idx, (int)k, &norm, NULL, ref, rlab) != SD_OK) bad++;
    for (size_t i = 0; i < k * sz; i++) bad += x[i] != ref[i];
    for (size_t i = 0; i < k; i++) bad += lab[i] != rlab[i] || seq[i] != i;
    sd_ring_stats st;
    sd_ring_get_stats(p.ring, &st);
    bad += st.rejected != 0;
    printf("  validation: %zu samples round-trip exactly (bytes, labels, sequence numbers; float take equals "
           "sd_augment_batch): %s\n",
           k, bad ? "FAILED" : "ok");
    free(raw), free(x), free(ref), free(lab), free(rlab), free(seq), free(idx), free(v);
    path_close(&p);
    return bad ? 1 : 0;
}

/* Times replay -> ring with the trainer's side: 0 = truncate each step (ScaDLES truncation),
 * 1 = zero-copy acquire + release (the CUDA path's host side), 2 = take into normalised floats;
 * 3 = the same take, timed alone (the replay fills the ring untimed): the trainer's share of the
 * path, since in a run the ingest thread fills the ring on another core. */
static double time_path(const sd_dataset *d, int step, double seconds, int consumer, uint64_t *count) {
    path p;
    if (path_open(&p, d, step, consumer == 0 ? SD_RING_TRUNCATE : SD_RING_PERSIST, false) != SD_OK) return -1;
    size_t sz = (size_t)d->c * d->h * d->w;
    float *x = consumer >= 2 ? malloc((size_t)step * sz * sizeof(float)) : NULL;
    int32_t *lab = malloc((size_t)step * sizeof(int32_t));
    sd_ring_sample *v = malloc((size_t)step * sizeof *v);
    sd_augment norm = {.mean = {0.49f, 0.48f, 0.45f, 0}, .std = {0.25f, 0.24f, 0.26f, 1}};
    sd_ring_batch out = {.x = x, .sample_elems = sz, .norm = &norm, .labels = lab};
    uint64_t k = 0, got;
    size_t n;
    double t0 = sd_clock_now(), c0 = cpu_now(), t, take_s = 0;
    do {
        if (path_step(&p, &got) != SD_OK) return -1;
        if (consumer == 3) {
            double c1 = cpu_now();
            sd_ring_take_upto(p.ring, (size_t)step, &out, &n);
            take_s += cpu_now() - c1;
        } else if (consumer == 0) {
            sd_ring_end_step(p.ring);
        } else if (consumer == 1) {
            sd_ring_acquire(p.ring, (size_t)step, v, &n);
            sd_ring_release(p.ring, n);
        } else {
            sd_ring_take_upto(p.ring, (size_t)step, &out, &n);
        }
        k += got;
    } while (sd_clock_now() - t0 < seconds);
    t = consumer == 3 ? take_s : cpu_now() - c0;
    sd_ring_stats st;
    sd_ring_get_stats(p.ring, &st);
    if (st.accepted != k || st.rejected) {
        fprintf(stderr, "scadles-bench_stream: timed path dropped samples (%llu of %llu accepted)\n",
                (unsigned long long)st.accepted, (unsigned long long)k);
        t = -1;
    }
    free(x), free(lab), free(v);
    path_close(&p);
    *count = k;
    return t;
}

/* Two threads: the ingest thread runs the real-clock replay (rate far above what it can reach, so it
 * never sleeps) into a backpressure ring; this thread takes raw samples in steps. */
static double time_threaded(const sd_dataset *d, int step, double seconds, uint64_t *count) {
    size_t sz = (size_t)d->c * d->h * d->w;
    sd_replay *rp = NULL;
    sd_ring *ring = NULL;
    sd_replay_config rc = {.data = d, .rate = sd_rate_fixed(SD_RATE_MAX, SD_ARRIVAL_CONSTANT), .seed = 7, .device = 1};
    sd_ring_config gc = {.max_samples = (size_t)step * 4, .max_sample_bytes = sz, .when_full = SD_RING_FULL_BLOCK,
                         .block_timeout_s = -1};
    if (sd_replay_create(&rc, &rp) != SD_OK || sd_ring_create(&gc, &ring) != SD_OK) return -1;
    sd_ingest *g = NULL;
    sd_ingest_config ic = {.source = sd_replay_source(rp), .ring = ring,
                           .expect = {.dtype = SD_MSG_U8, .classes = d->classes}};
    uint8_t *raw = malloc((size_t)step * sz);
    sd_ring_batch out = {.raw = raw, .raw_stride = sz};
    if (sd_ingest_start(&ic, &g) != SD_OK) return -1;
    uint64_t k = 0;
    size_t n;
    double t0 = sd_clock_now(), t;
    do {
        sd_ring_take_exactly(ring, (size_t)step, 1.0, &out, &n);
        k += n;
    } while ((t = sd_clock_now() - t0) < seconds);
    sd_ingest_stop(g);
    sd_replay_destroy(rp);
    sd_ring_destroy(ring);
    free(raw);
    *count = k;
    return t;
}

static int bench_size(const opts *o, int c, int h, int w, double bulk_gbs, int *goal_fail) {
    sd_dataset d = {0};
    snprintf(d.name, sizeof d.name, "synthetic");
    d.n = o->n ? o->n : (c == 1 ? 60000 : 50000);
    d.c = c, d.h = h, d.w = w, d.classes = 10;
    size_t sz = (size_t)c * h * w;
    d.images = malloc((size_t)d.n * sz);
    d.labels = malloc((size_t)d.n * sizeof(int32_t));
    int64_t *perm = malloc((size_t)d.n * sizeof(int64_t));
    if (!d.images || !d.labels || !perm) {
        fprintf(stderr, "scadles-bench_stream: out of memory for %lld images\n", (long long)d.n);
        return 1;
    }
    sd_rng rng;
    sd_rng_seed(&rng, 1);
    for (size_t i = 0; i < (size_t)d.n * sz; i += 8) {
        uint64_t r = sd_rng_u64(&rng);
        memcpy(d.images + i, &r, (size_t)d.n * sz - i < 8 ? (size_t)d.n * sz - i : 8);
    }
    for (int64_t i = 0; i < d.n; i++) {
        d.labels[i] = (int32_t)sd_rng_below(&rng, 10);
        perm[i] = i;
    }
    sd_shuffle(perm, d.n, &rng);
    printf("\n%zu-byte samples (%dx%dx%d u8), dataset %lld images (%.1f MB), step %d samples\n", sz, c, h, w,
           (long long)d.n, (double)d.n * sz / 1e6, o->step);
    if (validate(&d, o->step)) return 1;

    uint64_t k = 0;
    time_path(&d, o->step, 0.1, 0, &k); /* warm-up */
    time_memcpy_samples(&d, perm, o->step, 0.1, &k);
    double best_m = 0, best_p[4] = {0, 0, 0, 0}, best_thr = 0;
    for (int r = 0; r < o->reps; r++) {
        double t = time_memcpy_samples(&d, perm, o->step, o->seconds, &k);
        if (k / t > best_m) best_m = k / t;
        for (int cns = 0; cns < 4; cns++) {
            t = time_path(&d, o->step, o->seconds, cns, &k);
            if (t < 0) return 1;
            if (k / t > best_p[cns]) best_p[cns] = k / t;
        }
        t = time_threaded(&d, o->step, o->seconds, &k);
        if (t > 0 && k / t > best_thr) best_thr = k / t;
    }
    double gb = (double)sz / 1e9;
    printf("  %-50s %10.3f M samples/s %7.2f GB/s\n", "memcpy, same samples into step-sized slots (bound)",
           best_m / 1e6, best_m * gb);
    const char *names[4] = {"replay->ring, truncate per step (1 core)", "replay->ring, acquire/release (1 core)",
                            "replay->ring->float take, normalised (1 core)", "ring->float take alone, normalised (1 core)"};
    for (int cns = 0; cns < 4; cns++)
        printf("  %-50s %10.3f M samples/s %7.2f GB/s  %5.1f%% of memcpy  %5.1f%% of bulk memcpy\n", names[cns],
               best_p[cns] / 1e6, best_p[cns] * gb, 100 * best_p[cns] / best_m, 100 * best_p[cns] * gb / bulk_gbs);
    printf("  %-50s %10.3f M samples/s %7.2f GB/s  %5.1f%% of memcpy\n", "ingest thread->ring->take raw (2 threads)",
           best_thr / 1e6, best_thr * gb, 100 * best_thr / best_m);
    double ratio = best_p[0] / best_m, fratio = best_p[3] / best_m;
    bool ok_bw = ratio >= 0.5 && fratio >= 0.5, ok_rate = sz != 784 || best_p[0] >= 1e6;
    printf("  goal >= 50%% of memcpy: %s (replay->ring %.1f%%, ring->float take %.1f%%)", ok_bw ? "met" : "NOT met",
           100 * ratio, 100 * fratio);
    if (sz == 784) printf("; goal >= 1 M samples/s on one core: %s (%.2f M/s)", ok_rate ? "met" : "NOT met", best_p[0] / 1e6);
    printf("\n");
    if (!ok_bw || !ok_rate) (*goal_fail)++;
    free(perm);
    sd_dataset_free(&d);
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    if (parse_args(argc, argv, &o)) return 2;
    double bulk = bulk_memcpy_gbs();
    char load[64] = "?";
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (!fgets(load, sizeof load, lf)) snprintf(load, sizeof load, "?");
        load[strcspn(load, "\n")] = 0;
        fclose(lf);
    }
    printf("scadles-bench_stream: CRC-32C %s; bulk memcpy (64 MiB) %.2f GB/s; best of %d runs of %.2f s each;\n"
           "  1-core rows are per CPU-second of the thread (CLOCK_THREAD_CPUTIME_ID), the 2-thread row per wall\n"
           "  second; load average now: %s\n",
           sd_crc32c_hw() == 2   ? "VPCLMULQDQ folding (crc32 instruction below 319 bytes)"
           : sd_crc32c_hw() == 1 ? "crc32 instruction, 3 streams"
                                 : "software (slicing-by-8)",
           bulk, o.reps, o.seconds,
           load);
    int goal_fail = 0;
    if (bench_size(&o, 1, 28, 28, bulk, &goal_fail)) return 1;
    if (bench_size(&o, 3, 32, 32, bulk, &goal_fail)) return 1;
    printf("\n%s\n", goal_fail ? "some goals NOT met" : "all goals met");
    return 0;
}
