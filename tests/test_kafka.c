/* test_kafka.c: the Kafka source and publisher (stream/kafka.h) on librdkafka's in-process mock
 * cluster (three brokers on loopback ports): configuration errors and an unreachable broker
 * (bounded, naming the address); records produced to a topic per device, consumed through the
 * source, the ingest thread and a ring; offsets committed only for what the trainer took (or
 * acknowledged), so a new source in the same group resumes exactly there, without loss or replay;
 * records dropped on arrival (malformed, wrong shape, duplicates) counted by reason and committed;
 * pause/resume under backpressure that keeps the consumer in its group past max.poll.interval.ms;
 * a partition per device; every broker down mid-run; scadles-publish end to end. Every wait is
 * bounded. Skips (77) without librdkafka in the build. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/status.h"
#include "harness.h"
#include "stream/ingest.h"
#include "stream/kafka.h"
#include "stream/message.h"
#include "stream/rate.h"
#include "stream/ring.h"

#ifdef SCADLES_HAVE_KAFKA
#include <arpa/inet.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static rd_kafka_t *mock_rk;             /* the producer handle that owns the mock cluster */
static rd_kafka_mock_cluster_t *mcluster;
static char bootstraps[256];
static sd_kafka_pub *pub;

/* fast group timing for tests (passed through like any librdkafka setting). The mock cluster holds
 * a new group's first join for 3 s; a session timeout near that races it, so 6 s. */
static const char *const fast_conf[] = {"session.timeout.ms=6000", "heartbeat.interval.ms=500",
                                        "max.poll.interval.ms=6000", "reconnect.backoff.max.ms=200",
                                        "fetch.wait.max.ms=20", "fetch.error.backoff.ms=20"};

enum { SIDE = 4, PIX = SIDE * SIDE, CLASSES = 10 };

static size_t make_msg(uint8_t *buf, size_t cap, uint32_t dev, uint64_t seq) {
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SIDE, SIDE}, .label = (int32_t)(seq % CLASSES),
                     .device = dev, .seq = seq};
    uint8_t px[PIX];
    for (int i = 0; i < PIX; i++) px[i] = (uint8_t)(seq * 3 + (uint64_t)i);
    size_t len = 0;
    sd_status s = sd_msg_encode(&m, px, PIX, buf, cap, &len);
    EXPECT(s == SD_OK, "encode: %s", sd_last_error());
    return len;
}

static sd_msg_expect expect_dev(uint32_t dev) {
    return (sd_msg_expect){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SIDE, SIDE}, .classes = CLASSES,
                           .check_device = true, .device = dev, .max_payload = 32};
}

static sd_ring *make_ring(size_t n) {
    sd_ring_config c = {.max_samples = n, .max_sample_bytes = 64, .policy = SD_RING_PERSIST,
                        .when_full = SD_RING_FULL_DROP_NEWEST};
    sd_ring *r = NULL;
    sd_status s = sd_ring_create(&c, &r);
    EXPECT(s == SD_OK, "ring: %s", sd_last_error());
    return r;
}

static void produce(const char *topic, int32_t partition, uint32_t dev, uint64_t from, uint64_t to) {
    uint8_t buf[128];
    for (uint64_t s = from; s < to; s++) {
        size_t len = make_msg(buf, sizeof buf, dev, s);
        EXPECT_OK(sd_kafka_pub_send(pub, topic, partition, (int32_t)(s % CLASSES), buf, len));
    }
    EXPECT_OK(sd_kafka_pub_flush(pub, 10));
}

static bool wait_received(sd_ring *r, uint64_t n, double timeout_s) {
    double t0 = sd_clock_now();
    sd_ring_stats st;
    do {
        sd_ring_get_stats(r, &st);
        if (st.received >= n) return true;
        sd_clock_sleep_until(sd_clock_now() + 0.005);
    } while (sd_clock_now() - t0 < timeout_s);
    return false;
}

/* Takes up to max_n; appends their seqs to out (count in *n). */
static size_t take(sd_ring *r, size_t max_n, uint64_t *out, size_t *n) {
    static uint64_t seqs[8192];
    int32_t labels[8192];
    if (max_n > 8192) max_n = 8192;
    size_t got = 0;
    sd_ring_batch b = {.labels = labels, .seqs = seqs};
    EXPECT_OK(sd_ring_take_upto(r, max_n, &b, &got));
    for (size_t i = 0; i < got; i++) {
        EXPECT(labels[i] == (int32_t)(seqs[i] % CLASSES), "label of seq %llu", (unsigned long long)seqs[i]);
        if (out) out[(*n)++] = seqs[i];
    }
    return got;
}

static bool seqs_are(const uint64_t *s, size_t n, uint64_t from, uint64_t to) {
    if (n != to - from) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] != from + i) return false;
    return true;
}

typedef struct rig {
    sd_ring *ring;
    sd_kafka *src;
    sd_ingest *ing;
} rig;

static bool rig_start(rig *g, const char *topic, const char *group, uint32_t dev, size_t ring_n, sd_kafka_config *extra) {
    memset(g, 0, sizeof *g);
    g->ring = make_ring(ring_n);
    sd_kafka_config c = extra ? *extra : (sd_kafka_config){0};
    c.conn.bootstrap = bootstraps;
    /* SD_KAFKA_DEBUG=cgrp,fetch,... adds librdkafka's debug contexts (printed through the source's log) */
    static const char *conf[16];
    size_t nc = sizeof fast_conf / sizeof *fast_conf;
    memcpy(conf, fast_conf, sizeof fast_conf);
    static char dbg[128];
    if (getenv("SD_KAFKA_DEBUG")) {
        snprintf(dbg, sizeof dbg, "debug=%s", getenv("SD_KAFKA_DEBUG"));
        conf[nc++] = dbg;
    }
    c.conn.conf = conf;
    c.conn.n_conf = nc;
    c.conn.connect_timeout_s = 5;
    c.topic = topic;
    c.group_id = group;
    c.ring = g->ring;
    sd_status s = sd_kafka_create(&c, &g->src);
    EXPECT(s == SD_OK, "create: %s", sd_last_error());
    if (s != SD_OK) return false;
    sd_ingest_config ic = {.source = sd_kafka_source(g->src), .ring = g->ring, .expect = expect_dev(dev)};
    s = sd_ingest_start(&ic, &g->ing);
    EXPECT(s == SD_OK, "ingest start: %s", sd_last_error());
    return s == SD_OK;
}

static void rig_stop(rig *g) {
    if (g->ing) EXPECT_OK(sd_ingest_stop(g->ing));
    g->ing = NULL;
    sd_kafka_destroy(g->src);
    sd_ring_destroy(g->ring);
    memset(g, 0, sizeof *g);
}

static void check_ring(sd_ring *r, const char *where) {
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    char why[256];
    EXPECT(sd_ring_stats_consistent(&st, why, sizeof why), "%s: %s", where, why);
}

/* Waits until the source's committed offset for partition reaches want. */
static bool wait_committed(sd_kafka *k, int32_t partition, int64_t want, double timeout_s) {
    double t0 = sd_clock_now();
    do {
        if (sd_kafka_committed_offset(k, partition) >= want) return true;
        sd_clock_sleep_until(sd_clock_now() + 0.01);
    } while (sd_clock_now() - t0 < timeout_s);
    return false;
}

/* The group's committed offset as the broker has it (an independent consumer asks). */
static int64_t broker_committed(const char *group, const char *topic, int32_t partition) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) return -2;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    int64_t o = -2;
    if (!rd_kafka_committed(rk, l, 5000)) o = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return o;
}

/* ---- tests ------------------------------------------------------------------------------------------ */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t n = sizeof a;
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &n))
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static void test_config_and_unreachable(void) {
    sd_ring *r = make_ring(16);
    sd_kafka *k = NULL;
    sd_kafka_config c = {.topic = "trainer-0", .ring = r};
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "no brokers given");
    c.conn.bootstrap = "127.0.0.1:1";
    c.ring = NULL;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "needs the ring");
    c.ring = r;
    const char *bad_key[] = {"no.such.property=1"};
    c.conn.conf = bad_key;
    c.conn.n_conf = 1;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "no.such.property");
    const char *auto_commit[] = {"enable.auto.commit=true"};
    c.conn.conf = auto_commit;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "commits offsets itself");
    const char *not_kv[] = {"security.protocol"};
    c.conn.conf = not_kv;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "not key=value");
    c.conn.conf = NULL;
    c.conn.n_conf = 0;
    c.pause_high = 0.5;
    c.pause_low = 0.6;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "pause_low");
    c.pause_high = c.pause_low = 0;
    /* security settings pass through and are checked by librdkafka */
    const char *sasl[] = {"security.protocol=SASL_PLAINTEXT", "sasl.mechanisms=PLAIN", "sasl.username=u",
                          "sasl.password=p"};
    c.conn.conf = sasl;
    c.conn.n_conf = 4;
    EXPECT_OK(sd_kafka_create(&c, &k));
    sd_kafka_destroy(k);
    k = NULL;
    c.conn.conf = NULL;
    c.conn.n_conf = 0;

    /* nothing listens: a clear error after the bounded wait */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
    c.conn.bootstrap = addr;
    c.conn.connect_timeout_s = 1.5;
    c.conn.quiet = true;
    EXPECT_OK(sd_kafka_create(&c, &k));
    sd_source src = sd_kafka_source(k);
    double t0 = sd_clock_now();
    EXPECT_FAIL(src.ops->start(src.ctx), SD_ERR_IO, addr);
    double took = sd_clock_now() - t0;
    EXPECT(strstr(sd_last_error(), "unreachable after 1.5 s") && strstr(sd_last_error(), "--bootstrap"),
           "names the wait and the fix: %s", sd_last_error());
    EXPECT(took < 4, "bounded: %.2f s", took);
    printf("unreachable: %s (%.2f s)\n", sd_last_error_brief(), took);
    sd_kafka_destroy(k);
    sd_kafka_pub *p = NULL;
    EXPECT_FAIL(sd_kafka_pub_create(&c.conn, &p), SD_ERR_IO, addr);

    /* a topic that does not exist on a reachable cluster */
    c.conn.bootstrap = bootstraps;
    c.topic = "no-such-topic";
    c.conn.connect_timeout_s = 1;
    EXPECT_OK(sd_kafka_create(&c, &k));
    src = sd_kafka_source(k);
    /* librdkafka's mock cluster creates topics when asked for their metadata; a real one (with
     * auto.create.topics.enable=false) does not, and then start fails naming the topic */
    if (src.ops->start(src.ctx) == SD_OK)
        printf("note: the mock cluster auto-created no-such-topic; the missing-topic error is not exercised\n");
    else
        EXPECT(strstr(sd_last_error(), "topic no-such-topic does not exist") != NULL, "%s", sd_last_error());
    sd_kafka_destroy(k);
    sd_ring_destroy(r);
}

/* Consume, take 600 of 1000, stop; a new source in the same group gets exactly 600..999. */
static void test_commit_and_restart(void) {
    produce("trainer-0", -1, 0, 0, 1000);
    static uint64_t seqs[4096];
    size_t n = 0;
    rig g;
    if (!rig_start(&g, "trainer-0", "grp-restart", 0, 4096, NULL)) return;
    double t0 = sd_clock_now();
    EXPECT(wait_received(g.ring, 1000, 15), "1000 records reached the ring");
    printf("kafka: first 1000 records after %.2f s (group join included)\n", sd_clock_now() - t0);
    take(g.ring, 600, seqs, &n);
    EXPECT(seqs_are(seqs, n, 0, 600), "took 0..599 in order (%zu)", n);
    EXPECT(wait_committed(g.src, 0, 600, 5), "offset 600 committed by itself (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    EXPECT(sd_kafka_committed_offset(g.src, 0) == 600, "not beyond what was taken: %lld",
           (long long)sd_kafka_committed_offset(g.src, 0));
    sd_kafka_stats ks;
    sd_kafka_get_stats(g.src, &ks);
    EXPECT(ks.messages == 1000 && ks.stored == 1000 && ks.rejected == 0 && ks.pending == 400,
           "1000 handed out and stored, 400 pending (%llu %llu %zu)", (unsigned long long)ks.messages,
           (unsigned long long)ks.stored, ks.pending);
    rig_stop(&g);
    EXPECT(broker_committed("grp-restart", "trainer-0", 0) == 600, "the broker has offset 600 for the group");

    /* restart: a new source, same group, a fresh ring */
    if (!rig_start(&g, "trainer-0", "grp-restart", 0, 4096, NULL)) return;
    EXPECT(wait_received(g.ring, 400, 15), "the remaining 400 arrived");
    sd_clock_sleep_until(sd_clock_now() + 0.3); /* nothing else comes */
    n = 0;
    take(g.ring, 4096, seqs, &n);
    EXPECT(seqs_are(seqs, n, 600, 1000), "resumed exactly at 600: %zu records, first %llu", n,
           n ? (unsigned long long)seqs[0] : 0ull);
    EXPECT(wait_committed(g.src, 0, 1000, 5), "all 1000 committed");
    sd_kafka_get_stats(g.src, &ks);
    EXPECT(ks.committed == 400 && ks.commit_errors == 0, "400 committed by this source (%llu)", (unsigned long long)ks.committed);
    check_ring(g.ring, "restart");
    rig_stop(&g);
}

/* Acknowledged mode: taking from the ring is not enough; the trainer's acks decide. */
static void test_acked(void) {
    produce("trainer-1", -1, 1, 0, 500);
    static uint64_t seqs[4096];
    size_t n = 0;
    rig g;
    sd_kafka_config x = {.commit = SD_KAFKA_COMMIT_ACKED};
    if (!rig_start(&g, "trainer-1", "grp-acked", 1, 4096, &x)) return;
    EXPECT(wait_received(g.ring, 500, 15), "500 records");
    take(g.ring, 4096, seqs, &n);
    EXPECT(seqs_are(seqs, n, 0, 500), "took all 500");
    EXPECT_OK(sd_kafka_commit_now(g.src, 5));
    EXPECT(sd_kafka_committed_offset(g.src, 0) < 0, "nothing acknowledged, nothing committed (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    EXPECT_OK(sd_kafka_ack(g.src, 299)); /* the step that used 0..299 finished */
    EXPECT_OK(sd_kafka_commit_now(g.src, 5));
    EXPECT(sd_kafka_committed_offset(g.src, 0) == 300, "acknowledged through seq 299: offset 300 (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    rig_stop(&g);
    if (!rig_start(&g, "trainer-1", "grp-acked", 1, 4096, &x)) return;
    EXPECT(wait_received(g.ring, 200, 15), "200 again");
    sd_clock_sleep_until(sd_clock_now() + 0.3);
    n = 0;
    take(g.ring, 4096, seqs, &n);
    EXPECT(seqs_are(seqs, n, 300, 500), "resumed at the acknowledged seq 300 (%zu)", n);
    rig_stop(&g);
}

/* Bad records: dropped by reason, and (being dropped) committed. */
static void test_malformed(void) {
    uint8_t buf[256];
    size_t len;
    uint64_t seq = 0;
    const char *t = "trainer-2";
#define SEND(b, l) EXPECT_OK(sd_kafka_pub_send(pub, t, -1, 0, (b), (l)))
    len = make_msg(buf, sizeof buf, 2, seq++);
    SEND(buf, len);
    SEND(buf, 20);          /* truncated */
    SEND(NULL, 0);          /* an empty record (tombstone) */
    len = make_msg(buf, sizeof buf, 2, seq++);
    buf[1] ^= 0x10;         /* bad magic */
    SEND(buf, len);
    len = make_msg(buf, sizeof buf, 2, seq++);
    buf[len - 3] ^= 0x80;   /* bad checksum */
    SEND(buf, len);
    len = make_msg(buf, sizeof buf, 2, seq++);
    SEND(buf, len);
    SEND(buf, len);         /* duplicate */
    {
        float fx[4] = {0};
        uint8_t px[64] = {0};
        sd_msg_meta m = {.dtype = SD_MSG_F32, .ndim = 3, .dims = {1, 2, 2}, .label = 1, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, fx, 16, buf, sizeof buf, &len));
        SEND(buf, len);     /* wrong dtype */
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 2, .dims = {SIDE, SIDE}, .label = 1, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, PIX, buf, sizeof buf, &len));
        SEND(buf, len);     /* wrong shape */
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SIDE, SIDE}, .label = 10, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, PIX, buf, sizeof buf, &len));
        SEND(buf, len);     /* label out of range */
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 8, 8}, .label = 1, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, 64, buf, sizeof buf, &len));
        SEND(buf, len);     /* oversized for the experiment */
    }
    len = make_msg(buf, sizeof buf, 2, seq++);
    SEND(buf, len);
#undef SEND
    EXPECT_OK(sd_kafka_pub_flush(pub, 10));
    const uint64_t total = 12;
    rig g;
    if (!rig_start(&g, t, "grp-bad", 2, 256, NULL)) return;
    EXPECT(wait_received(g.ring, total, 15), "12 records reached the ring");
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    EXPECT(st.accepted == 3 && st.dropped[SD_DROP_TRUNCATED] == 2 && st.dropped[SD_DROP_BAD_MAGIC] == 1 &&
               st.dropped[SD_DROP_BAD_CHECKSUM] == 1 && st.dropped[SD_DROP_DUPLICATE] == 1 &&
               st.dropped[SD_DROP_BAD_DTYPE] == 1 && st.dropped[SD_DROP_BAD_SHAPE] == 1 &&
               st.dropped[SD_DROP_BAD_LABEL] == 1 && st.dropped[SD_DROP_OVERSIZED] == 1,
           "3 stored, 9 dropped by reason (accepted %llu)", (unsigned long long)st.accepted);
    /* the drops before the first untaken sample are committable; take the 3 and all 12 are */
    static uint64_t seqs[64];
    size_t n = 0;
    take(g.ring, 64, seqs, &n);
    EXPECT(n == 3 && seqs[0] == 0 && seqs[1] == 3 && seqs[2] == 8, "the 3 valid ones (%zu: %llu %llu %llu)", n, (unsigned long long)seqs[0], (unsigned long long)seqs[1], (unsigned long long)seqs[2]);
    EXPECT_OK(sd_kafka_commit_now(g.src, 5));
    /* the last record's outcome is learned on the next poll: wait for the automatic commit */
    EXPECT(wait_committed(g.src, 0, (int64_t)total, 5), "all 12 offsets committed (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    sd_kafka_stats ks;
    sd_kafka_get_stats(g.src, &ks);
    EXPECT(ks.rejected == 9 && ks.stored == 3, "the source learned 9 rejected, 3 stored (%llu, %llu)",
           (unsigned long long)ks.rejected, (unsigned long long)ks.stored);
    check_ring(g.ring, "malformed");
    rig_stop(&g);
}

/* Backpressure: the ring fills, the source pauses and keeps polling past max.poll.interval.ms
 * (6 s here) without leaving the group; then everything arrives exactly once. */
static void test_backpressure(void) {
    const uint64_t N = 400; /* the mock answers a fetch at the end of the log after 0.5 s: each resume costs that */
    produce("trainer-3", -1, 3, 0, N);
    rig g;
    sd_kafka_config x = {.pause_high = 0.9, .pause_low = 0.5};
    if (!rig_start(&g, "trainer-3", "grp-bp", 3, 100, &x)) return;
    sd_kafka_stats ks;
    double t0 = sd_clock_now();
    do {
        sd_clock_sleep_until(sd_clock_now() + 0.01);
        sd_kafka_get_stats(g.src, &ks);
    } while (!ks.paused && sd_clock_now() - t0 < 15);
    EXPECT(ks.paused && ks.pauses == 1, "paused once the ring was 90%% full");
    sd_clock_sleep_until(sd_clock_now() + 6.5); /* past max.poll.interval.ms */
    sd_kafka_get_stats(g.src, &ks);
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    EXPECT(ks.paused && ks.max_poll_exceeded == 0 && ks.revokes == 0 && ks.assigns == 1,
           "still in the group after 6.5 s paused (max poll exceeded %llu, revokes %llu, assigns %llu)",
           (unsigned long long)ks.max_poll_exceeded, (unsigned long long)ks.revokes, (unsigned long long)ks.assigns);
    EXPECT(st.samples >= 90 && st.samples <= 100 && st.dropped[SD_DROP_RING_FULL] == 0,
           "the ring holds %zu, nothing dropped", st.samples);
    static uint64_t seqs[4096];
    size_t n = 0;
    t0 = sd_clock_now();
    while (n < N && sd_clock_now() - t0 < 20) {
        if (!take(g.ring, 30, seqs, &n)) sd_clock_sleep_until(sd_clock_now() + 0.002);
    }
    EXPECT(seqs_are(seqs, n, 0, N), "all %llu exactly once, in order (%zu)", (unsigned long long)N, n);
    sd_kafka_get_stats(g.src, &ks);
    sd_ring_get_stats(g.ring, &st);
    EXPECT(ks.pauses >= 2 && ks.resumes >= 2 && ks.revokes == 0 && st.dropped[SD_DROP_RING_FULL] == 0 && st.hw_samples <= 100,
           "paused %llu times, resumed %llu, never left the group, never dropped, high-water %zu",
           (unsigned long long)ks.pauses, (unsigned long long)ks.resumes, st.hw_samples);
    printf("backpressure: %llu pauses, %.2f s paused, ring high-water %zu of 100\n", (unsigned long long)ks.pauses,
           ks.paused_s, st.hw_samples);
    EXPECT(wait_committed(g.src, 0, (int64_t)N, 5), "all committed");
    check_ring(g.ring, "backpressure");
    rig_stop(&g);
}

/* A partition per device: partition 1 of a shared topic. */
static void test_by_partition(void) {
    produce("trainers", 0, 0, 0, 50);
    produce("trainers", 1, 1, 0, 80);
    produce("trainers", 2, 2, 0, 30);
    static uint64_t seqs[256];
    size_t n = 0;
    rig g;
    sd_kafka_config x = {.by_partition = true, .partition = 1};
    if (!rig_start(&g, "trainers", NULL, 1, 256, &x)) return;
    EXPECT(wait_received(g.ring, 80, 10), "80 records of partition 1");
    sd_clock_sleep_until(sd_clock_now() + 0.2);
    take(g.ring, 50, seqs, &n);
    EXPECT(seqs_are(seqs, n, 0, 50), "0..49 of device 1");
    EXPECT(wait_committed(g.src, 1, 50, 5), "offset 50 of partition 1 committed");
    rig_stop(&g);
    x.partition = 1;
    if (!rig_start(&g, "trainers", NULL, 1, 256, &x)) return;
    EXPECT(wait_received(g.ring, 30, 10), "the other 30");
    n = 0;
    take(g.ring, 256, seqs, &n);
    EXPECT(seqs_are(seqs, n, 50, 80), "resumed at 50 (%zu)", n);
    rig_stop(&g);
    x.partition = 7;
    sd_ring *r = make_ring(4);
    sd_kafka_config c = x;
    c.conn = (sd_kafka_conn){.bootstrap = bootstraps, .connect_timeout_s = 1, .quiet = true};
    c.topic = "trainers";
    c.ring = r;
    sd_kafka *k = NULL;
    EXPECT_OK(sd_kafka_create(&c, &k));
    sd_source s = sd_kafka_source(k);
    EXPECT_FAIL(s.ops->start(s.ctx), SD_ERR_IO, "has 3 partitions, not partition 7");
    sd_kafka_destroy(k);
    sd_ring_destroy(r);
}

/* Every broker goes down: the source keeps its group membership attempts going, training goes on
 * with what is buffered, errors are counted; when they are back, consumption resumes. */
static void test_brokers_down(void) {
    produce("trainer-4", -1, 4, 0, 100);
    static uint64_t seqs[1024];
    size_t n = 0;
    rig g;
    if (!rig_start(&g, "trainer-4", "grp-down", 4, 1024, NULL)) return;
    EXPECT(wait_received(g.ring, 100, 15), "100 before the outage");
    for (int b = 1; b <= 3; b++) rd_kafka_mock_broker_set_down(mcluster, b);
    sd_clock_sleep_until(sd_clock_now() + 1.0);
    take(g.ring, 1024, seqs, &n);
    EXPECT(seqs_are(seqs, n, 0, 100), "the buffered 100 are taken during the outage");
    for (int b = 1; b <= 3; b++) rd_kafka_mock_broker_set_up(mcluster, b);
    produce("trainer-4", -1, 4, 100, 200);
    EXPECT(wait_received(g.ring, 200, 15), "100 more after the brokers came back");
    take(g.ring, 1024, seqs, &n);
    EXPECT(seqs_are(seqs, n, 0, 200), "no loss, no replay across the outage (%zu)", n);
    sd_kafka_stats ks;
    sd_kafka_get_stats(g.src, &ks);
    printf("brokers down for 1 s: %llu consumer errors counted, %llu revokes\n", (unsigned long long)ks.errors,
           (unsigned long long)ks.revokes);
    EXPECT(wait_committed(g.src, 0, 200, 10), "all 200 committed after the outage");
    rig_stop(&g);
}

/* scadles-publish (a separate process) into the mock cluster. */
static int run_capture(char *const argv[], char *out, size_t cap) {
    int pfd[2];
    if (pipe(pfd)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    size_t used = 0;
    int st = 0;
    double t0 = sd_clock_now();
    bool done = false;
    while (sd_clock_now() - t0 < 30) {
        ssize_t r = read(pfd[0], out + used, cap - 1 - used);
        if (r > 0) used += (size_t)r;
        if (!done && waitpid(pid, &st, WNOHANG) == pid) done = true;
        if (done && r <= 0) break;
        if (r <= 0) sd_clock_sleep_until(sd_clock_now() + 0.005);
    }
    out[used] = 0;
    close(pfd[0]);
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_publish_app(void) {
    char self[512], exe[600];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return;
    self[len] = 0;
    *strrchr(self, '/') = 0;
    snprintf(exe, sizeof exe, "%s/../apps/scadles-publish", self);
    if (access(exe, X_OK)) {
        printf("scadles-publish not built next to this test: skipping its checks\n");
        return;
    }
    static char out[65536];
    /* the mock cluster does not implement CreateTopics: make them here (--create-topics works on a real one) */
    rd_kafka_mock_topic_create(mcluster, "app-trainer-0", 1, 3);
    rd_kafka_mock_topic_create(mcluster, "app-trainer-1", 1, 3);
    char *argv[] = {exe, "--broker", "kafka", "--bootstrap", bootstraps, "--devices", "2", "--rate", "uniform_s2",
                    "--count", "150", "--dataset", "synthetic", "--topic-prefix", "app-trainer-", "--partition",
                    "slices:5", NULL};
    int rc = run_capture(argv, out, sizeof out);
    EXPECT(rc == 0 && strstr(out, "achieved"), "scadles-publish exit %d:\n%s", rc, out);
    printf("%s", out);
    /* both devices' consumers at once (their group joins overlap) */
    sd_ring *r[2] = {NULL, NULL};
    sd_kafka *k[2] = {NULL, NULL};
    sd_ingest *ing[2] = {NULL, NULL};
    char topic[2][32];
    for (uint32_t d = 0; d < 2; d++) {
        snprintf(topic[d], sizeof topic[d], "app-trainer-%u", d);
        sd_ring_config rc2 = {.max_samples = 512, .max_sample_bytes = 784};
        EXPECT_OK(sd_ring_create(&rc2, &r[d]));
        sd_kafka_config c = {.conn = {.bootstrap = bootstraps, .conf = fast_conf,
                                      .n_conf = sizeof fast_conf / sizeof *fast_conf, .connect_timeout_s = 5},
                             .topic = topic[d], .ring = r[d]};
        EXPECT_OK(sd_kafka_create(&c, &k[d]));
        sd_ingest_config ic = {.source = sd_kafka_source(k[d]), .ring = r[d],
                               .expect = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 28, 28}, .classes = 10,
                                          .check_device = true, .device = d}};
        EXPECT_OK(sd_ingest_start(&ic, &ing[d]));
    }
    for (uint32_t d = 0; d < 2; d++) {
        EXPECT(wait_received(r[d], 150, 15), "150 records on %s", topic[d]);
        static uint64_t seqs[512];
        int32_t labels[512];
        size_t got = 0;
        sd_ring_batch bt = {.labels = labels, .seqs = seqs};
        EXPECT_OK(sd_ring_take_upto(r[d], 512, &bt, &got));
        bool ok = got == 150;
        /* label slices, 5 classes per device: device d holds classes 5d..5d+4 */
        for (size_t i = 0; ok && i < got; i++) ok = seqs[i] == i && labels[i] / 5 == (int32_t)d;
        EXPECT(ok, "%s: seqs 0..149, labels in device %u's slice (%zu)", topic[d], d, got);
    }
    for (uint32_t d = 0; d < 2; d++) {
        EXPECT_OK(sd_ingest_stop(ing[d]));
        sd_kafka_destroy(k[d]);
        sd_ring_destroy(r[d]);
    }
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", free_port());
    char *argv2[] = {exe, "--broker", "kafka", "--bootstrap", dead, "--connect-timeout", "1", "--count", "3",
                     "--dataset", "synthetic", "--quiet", NULL};
    rc = run_capture(argv2, out, sizeof out);
    EXPECT(rc == 1 && strstr(out, dead) && strstr(out, "unreachable"), "unreachable: exit %d:\n%s", rc, out);
    char *argv3[] = {exe, "--broker", "kafka", "--host", "x", NULL};
    rc = run_capture(argv3, out, sizeof out);
    EXPECT(rc == 2 && strstr(out, "MQTT options"), "MQTT flag with Kafka: exit %d:\n%s", rc, out);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return sd_test_skip("test_kafka", "this librdkafka has no mock cluster (test.mock.num.brokers)");
    }
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!mock_rk) {
        EXPECT(false, "mock cluster: %s", err);
        return sd_test_finish("test_kafka");
    }
    mcluster = rd_kafka_handle_mock_cluster(mock_rk);
    snprintf(bootstraps, sizeof bootstraps, "%s", rd_kafka_mock_cluster_bootstraps(mcluster));
    printf("mock cluster: %s\n", bootstraps);
    const char *topics[] = {"trainer-0", "trainer-1", "trainer-2", "trainer-3", "trainer-4"};
    for (int i = 0; i < 5; i++) rd_kafka_mock_topic_create(mcluster, topics[i], 1, 3);
    rd_kafka_mock_topic_create(mcluster, "trainers", 3, 3);
    sd_kafka_conn pc = {.bootstrap = bootstraps, .connect_timeout_s = 5};
    EXPECT_OK(sd_kafka_pub_create(&pc, &pub));
    if (!pub) return sd_test_finish("test_kafka");

    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {{"config_and_unreachable", test_config_and_unreachable},
                 {"commit_and_restart", test_commit_and_restart},
                 {"acked", test_acked},
                 {"malformed", test_malformed},
                 {"backpressure", test_backpressure},
                 {"by_partition", test_by_partition},
                 {"publish_app", test_publish_app},
                 {"brokers_down", test_brokers_down}};
    const char *only = getenv("SD_TEST_ONLY"); /* e.g. SD_TEST_ONLY=backpressure */
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        if (only && !strstr(only, tests[i].name)) continue;
        double t0 = sd_clock_now();
        tests[i].fn();
        printf("-- %s: %.2f s\n", tests[i].name, sd_clock_now() - t0);
    }

    sd_kafka_pub_destroy(pub);
    rd_kafka_destroy(mock_rk);
    return sd_test_finish("test_kafka");
}

#else
int main(void) {
    return sd_test_skip("test_kafka", "built without librdkafka (Debian: apt-get install librdkafka-dev, re-run cmake)");
}
#endif
