/* bench_load.c: scadles-bench_load, a load test of the stream path: a source delivers at `ratio`
 * (10) times the training consumption rate for --seconds into one device's ring (persistence
 * policy, bounded capacity, drop-newest when full unless --when-full block) while this thread takes
 * batches at the training rate, as a trainer would. Every second it samples the process's resident
 * memory (VmRSS in /proc/self/status) and the ring's counters and checks that no accepted sample is
 * lost: accepted = taken + buffered (the ring's invariants), and at the end, after the ring is
 * drained, every sequence number the source sent was either taken exactly once, in order, or is
 * counted as a drop (by reason) or as a gap upstream. Exits 1 when resident memory grows beyond
 * the ring's storage plus a fixed margin over the baseline, or an invariant breaks; 2 on a bad
 * command line. Sources: the replay source on the real clock (default), or MQTT through a running
 * broker (--source mqtt --mqtt-port P: a publisher thread here paces the same replay stream into
 * the broker). Figures and how they were measured: docs/streams.md. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "base/rng.h"
#include "stream/dataset.h"
#include "stream/ingest.h"
#include "stream/mqtt.h"
#include "stream/rate.h"
#include "stream/replay.h"
#include "stream/ring.h"

#if defined(__SANITIZE_ADDRESS__)
#define SD_LOAD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SD_LOAD_ASAN 1
#endif
#endif
#ifndef SD_LOAD_ASAN
#define SD_LOAD_ASAN 0
#endif

typedef struct opts {
    double seconds, train_rate, ratio, margin_mb;
    int batch;
    long capacity;
    int c, h, w;
    bool block, quiet, mqtt;
    const char *mqtt_host;
    int mqtt_port, qos;
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-bench_load [--seconds S] [--train-rate R] [--ratio K] [--batch B] [--capacity N]\n"
            "                          [--shape CxHxW] [--when-full drop|block] [--rss-margin-mb M] [--quiet]\n"
            "                          [--source replay|mqtt] [--mqtt-host H] [--mqtt-port P] [--qos Q]\n"
            "  Ingests at K x the training rate into a bounded persist ring while taking batches of B at\n"
            "  R samples/s; samples VmRSS every second; checks that no accepted sample is lost and that\n"
            "  resident memory stays within the ring's storage + M MiB of the baseline.\n"
            "  defaults: --seconds 60 --train-rate 2000 --ratio 10 --batch 64 --capacity 4096 --shape 1x28x28\n"
            "            --when-full drop --rss-margin-mb 32 (ASan builds: 320) --source replay\n"
            "            (mqtt: --mqtt-host 127.0.0.1 --qos 1; start the broker yourself, e.g. mosquitto -p P)\n");
}

static const sd_cli_option OPTIONS[] = {
    {"--seconds", true, NULL}, {"--train-rate", true, NULL}, {"--ratio", true, NULL}, {"--batch", true, NULL},
    {"--capacity", true, NULL}, {"--rss-margin-mb", true, NULL}, {"--shape", true, "CxHxW"},
    {"--when-full", true, "drop|block"}, {"--source", true, "replay|mqtt"}, {"--mqtt-host", true, NULL},
    {"--mqtt-port", true, NULL}, {"--qos", true, NULL}, {"--quiet", false, NULL}, {NULL},
};

static int parse_values(const sd_cli *cli, opts *o) {
    *o = (opts){.seconds = 60, .train_rate = 2000, .ratio = 10, .margin_mb = SD_LOAD_ASAN ? 320 : 32, .batch = 64,
                .capacity = 4096, .c = 1, .h = 28, .w = 28, .mqtt_host = "127.0.0.1", .qos = 1};
    for (int i = 0; i < cli->n; i++) {
        const char *a = cli->args[i].flag, *v = cli->args[i].value;
        char *end = (char *)"";
        if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        } else if (!strcmp(a, "--seconds")) {
            o->seconds = strtod(v, &end);
        } else if (!strcmp(a, "--train-rate")) {
            o->train_rate = strtod(v, &end);
        } else if (!strcmp(a, "--ratio")) {
            o->ratio = strtod(v, &end);
        } else if (!strcmp(a, "--batch")) {
            o->batch = (int)strtol(v, &end, 10);
        } else if (!strcmp(a, "--capacity")) {
            o->capacity = strtol(v, &end, 10);
        } else if (!strcmp(a, "--rss-margin-mb")) {
            o->margin_mb = strtod(v, &end);
        } else if (!strcmp(a, "--shape")) {
            if (sscanf(v, "%dx%dx%d", &o->c, &o->h, &o->w) != 3) end = (char *)"x";
        } else if (!strcmp(a, "--when-full")) {
            if (strcmp(v, "drop") && strcmp(v, "block")) end = (char *)"x";
            o->block = !strcmp(v, "block");
        } else if (!strcmp(a, "--source")) {
            if (strcmp(v, "replay") && strcmp(v, "mqtt")) end = (char *)"x";
            o->mqtt = !strcmp(v, "mqtt");
        } else if (!strcmp(a, "--mqtt-host")) {
            o->mqtt_host = v;
        } else if (!strcmp(a, "--mqtt-port")) {
            o->mqtt_port = (int)strtol(v, &end, 10);
        } else if (!strcmp(a, "--qos")) {
            o->qos = (int)strtol(v, &end, 10);
        }
        if (*end) {
            fprintf(stderr, "scadles-bench_load: %s: bad value '%s' (see --help)\n", a, v);
            return -1;
        }
    }
    if (!(o->seconds > 0 && o->seconds <= 86400) || !(o->train_rate > 0 && o->train_rate <= 1e7) ||
        !(o->ratio >= 1 && o->ratio <= 1000) || o->batch < 1 || o->batch > 65536 || o->capacity < o->batch ||
        o->capacity > (1l << 24) || o->c < 1 || o->h < 1 || o->w < 1 || (long)o->c * o->h * o->w > (1l << 24) ||
        !(o->margin_mb >= 0) || o->qos < 0 || o->qos > 2 || (o->mqtt && (o->mqtt_port < 1 || o->mqtt_port > 65535))) {
        fprintf(stderr, "scadles-bench_load: need 0 < seconds <= 86400, 0 < train-rate <= 1e7, 1 <= ratio <= 1000, "
                        "1 <= batch <= capacity <= 16M, a shape of at most 16M elements, qos 0..2, and with --source "
                        "mqtt a --mqtt-port 1..65535\n");
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    sd_cli cli;
    sd_cli_parse(&cli, "bench_load", usage, OPTIONS, argc, argv);
    int rc = parse_values(&cli, o);
    sd_cli_free(&cli);
    return rc;
}

/* Resident memory of this process in bytes (VmRSS), 0 when unknown. */
static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = (size_t)strtoull(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb * 1024;
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

/* ---- MQTT: a publisher thread pacing the replay stream into the broker ------------------------------ */
typedef struct publisher {
    sd_replay *rp;
    sd_mqtt_pub *p;
    const char *topic;
    atomic_bool stop;
    uint64_t sent, failed;
    char err[256];
} publisher;

static void *publish_main(void *arg) {
    publisher *pb = arg;
    sd_source src = sd_replay_source(pb->rp);
    if (src.ops->start(src.ctx) != SD_OK) {
        snprintf(pb->err, sizeof pb->err, "%s", sd_last_error_brief());
        return NULL;
    }
    while (!atomic_load(&pb->stop)) {
        sd_source_event ev;
        const void *msg;
        size_t len;
        if (src.ops->next(src.ctx, 0.05, &ev, &msg, &len) != SD_OK) {
            snprintf(pb->err, sizeof pb->err, "%s", sd_last_error_brief());
            break;
        }
        if (ev != SD_SOURCE_MESSAGE) continue;
        /* libmosquitto queues without bound: keep what waits for the broker's acknowledgement bounded */
        while (sd_mqtt_pub_outstanding(pb->p) > 2000 && !atomic_load(&pb->stop))
            sd_clock_sleep_until(sd_clock_now() + 0.0005);
        if (sd_mqtt_pub_send(pb->p, pb->topic, msg, len) == SD_OK)
            pb->sent++;
        else
            pb->failed++;
    }
    src.ops->stop(src.ctx);
    return NULL;
}

/* ---- the run ------------------------------------------------------------------------------------ */
typedef struct consumer {
    uint64_t taken, holes, bad_order, last_seq;
    bool any;
} consumer;

static void consume(consumer *cs, const uint64_t *seqs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (cs->any && seqs[i] <= cs->last_seq) cs->bad_order++;
        else if (cs->any) cs->holes += seqs[i] - cs->last_seq - 1;
        else cs->holes += seqs[i]; /* the stream starts at 0 */
        cs->any = true;
        cs->last_seq = seqs[i];
    }
    cs->taken += n;
}

static int run(const opts *o) {
    const size_t sz = (size_t)o->c * o->h * o->w;
    const double in_rate = o->train_rate * o->ratio;
    size_t rss_start = rss_bytes();
    /* a synthetic dataset of random bytes, touched before the baseline is taken */
    sd_dataset d = {0};
    snprintf(d.name, sizeof d.name, "synthetic");
    d.n = 4096;
    d.c = o->c, d.h = o->h, d.w = o->w, d.classes = 10;
    d.images = malloc((size_t)d.n * sz);
    d.labels = malloc((size_t)d.n * sizeof(int32_t));
    uint8_t *raw = malloc((size_t)o->batch * sz);
    uint64_t *seqs = malloc((size_t)o->batch * sizeof *seqs);
    if (!d.images || !d.labels || !raw || !seqs) {
        fprintf(stderr, "scadles-bench_load: out of memory for the dataset\n");
        return 1;
    }
    sd_rng rng;
    sd_rng_seed(&rng, 11);
    for (size_t i = 0; i < (size_t)d.n * sz; i++) d.images[i] = (uint8_t)sd_rng_u64(&rng);
    for (int64_t i = 0; i < d.n; i++) d.labels[i] = (int32_t)sd_rng_below(&rng, 10);
    memset(raw, 0, (size_t)o->batch * sz);

    sd_mqtt *m = NULL;
    publisher pb = {.topic = "scadles-load-0"};
    sd_ingest *ing = NULL;
    sd_replay_config rc = {.data = &d, .rate = sd_rate_fixed(in_rate, SD_ARRIVAL_CONSTANT), .seed = 5, .device = 0};
    sd_replay *rp = NULL;
    sd_ring *ring = NULL;
    sd_ring_config gc = {.max_samples = (size_t)o->capacity, .max_sample_bytes = sz, .policy = SD_RING_PERSIST,
                         .when_full = o->block ? SD_RING_FULL_BLOCK : SD_RING_FULL_DROP_NEWEST, .block_timeout_s = -1};
    if (sd_replay_create(&rc, &rp) != SD_OK) goto fail;
    size_t rss_base = rss_bytes();
    if (sd_ring_create(&gc, &ring) != SD_OK) goto fail;
    /* what the ring may come to hold: its byte ring (alignment and wrap slack included) and records */
    size_t ring_bytes = (size_t)o->capacity * sz + (size_t)o->capacity * 63 + sz + (size_t)o->capacity * 128;
    size_t bound = rss_base + ring_bytes + (size_t)(o->margin_mb * 1024 * 1024);

    pthread_t pth;
    bool pub_started = false;
    sd_source src = sd_replay_source(rp);
    if (o->mqtt) {
        sd_mqtt_config mc = {.conn = {.host = o->mqtt_host, .port = o->mqtt_port, .connect_timeout_s = 5,
                                      .quiet = o->quiet},
                             .topic = pb.topic, .qos = o->qos, .ring = ring};
        if (sd_mqtt_create(&mc, &m) != SD_OK) goto fail;
        src = sd_mqtt_source(m);
    }
    sd_ingest_config ic = {.source = src, .ring = ring,
                           .expect = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {(uint32_t)o->c, (uint32_t)o->h, (uint32_t)o->w},
                                      .classes = 10, .check_device = true, .device = 0}};
    if (sd_ingest_start(&ic, &ing) != SD_OK) goto fail;
    if (o->mqtt) {
        sd_mqtt_conn pc = {.host = o->mqtt_host, .port = o->mqtt_port, .connect_timeout_s = 5};
        if (sd_mqtt_pub_create(&pc, o->qos, &pb.p) != SD_OK) {
            sd_ingest_stop(ing);
            goto fail;
        }
        pb.rp = rp;
        pthread_create(&pth, NULL, publish_main, &pb);
        pub_started = true;
    }
    printf("scadles-bench_load: %s source at %.0f samples/s (%.0f x the training rate %.0f/s) into a persist ring of "
           "%ld samples of %zu bytes (%s when full); batches of %d every %.2f ms; %.0f s%s\n",
           o->mqtt ? "mqtt" : "replay", in_rate, o->ratio, o->train_rate, o->capacity, sz,
           o->block ? "backpressure" : "drop-newest", o->batch, 1e3 * o->batch / o->train_rate, o->seconds,
           SD_LOAD_ASAN ? " (AddressSanitizer build: larger memory margin)" : "");
    printf("memory: VmRSS %.1f MiB at start, %.1f MiB baseline (dataset made), ring storage up to %.1f MiB, bound %.1f "
           "MiB (margin %.0f MiB)\n",
           mib(rss_start), mib(rss_base), mib(ring_bytes), mib(bound), o->margin_mb);

    consumer cs = {0};
    sd_ring_batch b = {.raw = raw, .raw_stride = sz, .seqs = seqs};
    const double step = o->batch / o->train_rate, t0 = sd_clock_now();
    double next_step = t0 + step, next_sample = t0 + 1.0;
    size_t rss_min = (size_t)-1, rss_max = 0, rss_now = 0;
    int failures = 0, second = 0;
    char why[256];
    for (;;) {
        double now = sd_clock_now();
        if (now - t0 >= o->seconds) break;
        if (now >= next_step) {
            size_t got = 0;
            if (sd_ring_take_upto(ring, (size_t)o->batch, &b, &got) != SD_OK) {
                fprintf(stderr, "scadles-bench_load: take: %s\n", sd_last_error_brief());
                failures++;
                break;
            }
            consume(&cs, seqs, got);
            next_step += step;
            if (next_step < now - 1.0) next_step = now; /* fell far behind (a stalled machine): do not burst */
        }
        if (now >= next_sample) {
            second++;
            next_sample += 1.0;
            rss_now = rss_bytes();
            if (rss_now < rss_min) rss_min = rss_now;
            if (rss_now > rss_max) rss_max = rss_now;
            sd_ring_stats st;
            sd_ring_get_stats(ring, &st);
            /* while running, one push may be under way (counted received, not yet stored or dropped: a
             * producer waiting for room); the full invariants are checked once the source has stopped */
            why[0] = 0;
            bool ok = st.consumed == cs.taken && st.accepted == st.consumed + st.samples && st.truncated == 0 &&
                      st.dropped[SD_DROP_EVICTED] == 0 && st.received >= st.accepted + st.rejected &&
                      st.received - (st.accepted + st.rejected) <= 1;
            if (!ok) {
                fprintf(stderr, "scadles-bench_load: invariant broken at %d s: accepted %llu, taken %llu (ring says %llu), "
                                "buffered %zu%s%s\n",
                        second, (unsigned long long)st.accepted, (unsigned long long)cs.taken,
                        (unsigned long long)st.consumed, st.samples, why[0] ? ": " : "", why);
                failures++;
            }
            if (rss_now > bound) {
                fprintf(stderr, "scadles-bench_load: resident memory %.1f MiB at %d s exceeds the bound %.1f MiB\n",
                        mib(rss_now), second, mib(bound));
                failures++;
            }
            if (!o->quiet && (second % 10 == 0 || second <= 3))
                printf("  %3d s: VmRSS %6.1f MiB  received %9llu  accepted %8llu  taken %8llu  buffered %5zu  dropped "
                       "%9llu\n",
                       second, mib(rss_now), (unsigned long long)st.received, (unsigned long long)st.accepted,
                       (unsigned long long)cs.taken, st.samples, (unsigned long long)st.rejected);
            if (failures) break;
        }
        double wake = next_step < next_sample ? next_step : next_sample;
        sd_clock_sleep_until(wake);
    }
    double elapsed = sd_clock_now() - t0;

    /* stop the source, then drain what the ring holds: every accepted sample must come out */
    if (pub_started) {
        atomic_store(&pb.stop, true);
        pthread_join(pth, NULL);
        sd_mqtt_pub_flush(pb.p, 5);
        sd_clock_sleep_until(sd_clock_now() + 0.5); /* what the broker still delivers */
    }
    sd_ingest_stats is;
    sd_ingest_get_stats(ing, &is);
    sd_status stop = sd_ingest_stop(ing);
    if (stop != SD_OK) {
        fprintf(stderr, "scadles-bench_load: the source failed: %s\n", sd_last_error_brief());
        failures++;
    }
    sd_ring_stats st;
    sd_ring_get_stats(ring, &st);
    /* the counters after the thread has stopped (messages may have grown since the snapshot) */
    uint64_t messages = st.received, gaps = is.seq_gaps;
    for (;;) {
        size_t got = 0;
        if (sd_ring_take_upto(ring, (size_t)o->batch, &b, &got) != SD_OK || !got) break;
        consume(&cs, seqs, got);
    }
    sd_ring_get_stats(ring, &st);
    size_t rss_end = rss_bytes();
    if (rss_end > rss_max) rss_max = rss_end;
    if (rss_end < rss_min) rss_min = rss_end;
    uint64_t span = cs.any ? cs.last_seq + 1 : 0; /* sequence numbers 0..last taken */
    uint64_t tail = 0;                            /* received after the last taken one: all dropped */
    if (messages + gaps > span) tail = messages + gaps - span;
    bool accounted = sd_ring_stats_consistent(&st, why, sizeof why) && st.accepted == cs.taken && st.samples == 0 &&
                     cs.bad_order == 0 && st.received == st.accepted + st.rejected &&
                     cs.holes + tail == st.rejected + gaps;
    if (!accounted) {
        fprintf(stderr,
                "scadles-bench_load: accounting broken: accepted %llu, taken %llu, left %zu, out of order %llu, "
                "received %llu, rejected %llu, holes in the taken sequence %llu + %llu after it vs drops %llu + "
                "upstream gaps %llu%s%s\n",
                (unsigned long long)st.accepted, (unsigned long long)cs.taken, st.samples,
                (unsigned long long)cs.bad_order, (unsigned long long)st.received, (unsigned long long)st.rejected,
                (unsigned long long)cs.holes, (unsigned long long)tail, (unsigned long long)st.rejected,
                (unsigned long long)gaps, why[0] ? ": " : "", why);
        failures++;
    }
    printf("ran %.1f s: source delivered %llu (%.0f/s), accepted %llu (%.0f/s), taken %llu (%.0f/s), dropped %llu "
           "(%.1f%%: ring_full %llu, backpressure_timeout %llu, ring_closed %llu, other %llu), upstream gaps %llu\n",
           elapsed, (unsigned long long)messages, messages / elapsed, (unsigned long long)st.accepted,
           st.accepted / elapsed, (unsigned long long)cs.taken, cs.taken / elapsed, (unsigned long long)st.rejected,
           messages ? 100.0 * (double)st.rejected / (double)messages : 0.0,
           (unsigned long long)st.dropped[SD_DROP_RING_FULL], (unsigned long long)st.dropped[SD_DROP_TIMEOUT],
           (unsigned long long)st.dropped[SD_DROP_CLOSED],
           (unsigned long long)(st.rejected - st.dropped[SD_DROP_RING_FULL] - st.dropped[SD_DROP_TIMEOUT] -
                                st.dropped[SD_DROP_CLOSED]),
           (unsigned long long)gaps);
    printf("ring high water %zu of %ld samples (%.1f MiB); producer blocked %.2f s\n", st.hw_samples, o->capacity,
           mib(st.hw_bytes), st.blocked_s);
    if (o->mqtt) {
        sd_mqtt_stats ms;
        sd_mqtt_get_stats(m, &ms);
        printf("mqtt qos %d: published %llu (%llu failed), received %llu, queue drops %llu, queue high water %zu\n",
               o->qos, (unsigned long long)pb.sent, (unsigned long long)pb.failed, (unsigned long long)ms.received,
               (unsigned long long)ms.queue_dropped, ms.queue_hw);
        if (pb.err[0]) {
            fprintf(stderr, "scadles-bench_load: publisher: %s\n", pb.err);
            failures++;
        }
    }
    printf("VmRSS: start %.1f MiB, baseline %.1f MiB, min %.1f MiB, max %.1f MiB, end %.1f MiB (bound %.1f MiB)\n",
           mib(rss_start), mib(rss_base), mib(rss_min), mib(rss_max), mib(rss_end), mib(bound));
    if (rss_max > bound) {
        fprintf(stderr, "scadles-bench_load: resident memory peaked at %.1f MiB, over the bound %.1f MiB\n", mib(rss_max),
                mib(bound));
        failures++;
    }
    printf("%s: every accepted sample taken exactly once and in order; every other sequence number a counted drop "
           "or gap; memory bounded\n",
           failures ? "FAILED" : "ok");
    sd_mqtt_pub_destroy(pb.p);
    sd_mqtt_destroy(m);
    sd_ring_destroy(ring);
    sd_replay_destroy(rp);
    sd_dataset_free(&d);
    free(raw);
    free(seqs);
    return failures ? 1 : 0;
fail:
    fprintf(stderr, "scadles-bench_load: %s\n", sd_last_error_brief());
    sd_mqtt_pub_destroy(pb.p);
    sd_mqtt_destroy(m);
    sd_ring_destroy(ring);
    sd_replay_destroy(rp);
    sd_dataset_free(&d);
    free(raw);
    free(seqs);
    return 1;
}

int main(int argc, char **argv) {
    opts o;
    if (parse_args(argc, argv, &o)) return 2;
    if (o.mqtt && !sd_mqtt_available()) {
        fprintf(stderr, "scadles-bench_load: this build has no MQTT support (install libmosquitto-dev, re-run cmake)\n");
        return 1;
    }
    return run(&o);
}
