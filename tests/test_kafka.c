/* test_kafka.c: the Kafka source and publisher (stream/kafka.h) on librdkafka's in-process mock
 * cluster (three brokers on loopback ports): configuration errors and an unreachable broker
 * (bounded, naming the address); records produced to a topic per device, consumed through the
 * source, the ingest thread and a ring; offsets committed only for what the trainer took (or
 * acknowledged), so a new source in the same group resumes exactly there, without loss or replay;
 * records dropped on arrival (malformed, wrong shape, duplicates) counted by reason and committed;
 * pause/resume under backpressure that keeps the consumer in its group past max.poll.interval.ms;
 * a partition per device; every broker down mid-run; scadles-publish end to end; TLS/SASL settings
 * librdkafka refuses (unknown mechanism, no username, missing or bad CA file) refused at create.
 * Fault injection (SD_KAFKA_TESTS=faults; ctest: test_kafka_faults): transient errors on JoinGroup,
 * SyncGroup, Heartbeat, OffsetFetch, OffsetCommit and Fetch, a leader move, the leader and the
 * coordinator down for a second, with every record delivered exactly once; and a restart after the
 * final commits failed (at-least-once, exactly the records taken after the last commit that landed
 * come again; with sd_ingest_config.resume they are dropped as counted duplicates). The helpers
 * shared with test_mqtt.c are in broker_harness.h. Every wait is bounded. Skips (77) without
 * librdkafka in the build. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/status.h"
#include "stream/ingest.h"
#include "stream/kafka.h"
#include "stream/message.h"
#include "stream/ring.h"
#include "tests/broker_harness.h"
#include "tests/harness.h"

#ifdef SCADLES_HAVE_KAFKA
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>

static rd_kafka_t *mock_rk;             /* the producer handle that owns the mock cluster */
static rd_kafka_mock_cluster_t *mcluster;
static char bootstraps[256];
static sd_kafka_pub *pub;

/* fast group timing for tests (passed through like any librdkafka setting). The mock cluster holds
 * a new group's first join for 3 s; a session timeout near that races it, so 6 s. */
static const char *const fast_conf[] = {"session.timeout.ms=6000", "heartbeat.interval.ms=500",
                                        "max.poll.interval.ms=6000", "reconnect.backoff.max.ms=200",
                                        "fetch.wait.max.ms=20", "fetch.error.backoff.ms=20"};

/* Publishes device dev's messages from..to-1 to topic (partition < 0: the partitioner's choice). */
typedef struct kafka_to {
    const char *topic;
    int32_t partition;
} kafka_to;

static sd_status kafka_send(void *ctx, int32_t label, const void *msg, size_t len) {
    const kafka_to *t = ctx;
    return sd_kafka_pub_send(pub, t->topic, t->partition, label, msg, len);
}

static void produce(const char *topic, int32_t partition, uint32_t dev, uint64_t from, uint64_t to) {
    kafka_to t = {topic, partition};
    sd_bh_publish(kafka_send, &t, dev, from, to);
    EXPECT_OK(sd_kafka_pub_flush(pub, 10));
}

typedef struct rig {
    sd_ring *ring;
    sd_kafka *src;
    sd_ingest *ing;
} rig;

/* Starts a Kafka source and its ingest thread into a fresh ring. resume_after (may be NULL): the
 * last sequence number the trainer already has (sd_ingest_config.resume). */
static bool rig_start_resume(rig *g, const char *topic, const char *group, uint32_t dev, size_t ring_n,
                             const sd_kafka_config *extra, const uint64_t *resume_after) {
    memset(g, 0, sizeof *g);
    g->ring = sd_bh_ring(ring_n);
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
    sd_ingest_config ic = {.source = sd_kafka_source(g->src), .ring = g->ring, .expect = sd_bh_expect(dev)};
    if (resume_after) {
        ic.resume = true;
        ic.resume_after_seq = *resume_after;
    }
    s = sd_ingest_start(&ic, &g->ing);
    EXPECT(s == SD_OK, "ingest start: %s", sd_last_error());
    return s == SD_OK;
}

static bool rig_start(rig *g, const char *topic, const char *group, uint32_t dev, size_t ring_n, sd_kafka_config *extra) {
    return rig_start_resume(g, topic, group, dev, ring_n, extra, NULL);
}

static void rig_stop(rig *g) {
    if (g->ing) EXPECT_OK(sd_ingest_stop(g->ing));
    g->ing = NULL;
    sd_kafka_destroy(g->src);
    sd_ring_destroy(g->ring);
    memset(g, 0, sizeof *g);
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

static void test_config_and_unreachable(void) {
    sd_ring *r = sd_bh_ring(16);
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
    /* settings librdkafka only checks when a handle is made: refused at create, naming the setting */
    const char *mech[] = {"security.protocol=SASL_SSL", "sasl.mechanisms=SCRAM-SHA-999", "sasl.username=u",
                          "sasl.password=p"};
    c.conn.conf = mech;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "SCRAM-SHA-999");
    EXPECT(strstr(sd_last_error(), "kafka(trainer-0)") && strstr(sd_last_error(), "SCRAM-SHA-256"),
           "names the source and the mechanisms there are: %s", sd_last_error());
    printf("unknown SASL mechanism: %s\n", sd_last_error_brief());
    const char *nouser[] = {"security.protocol=SASL_PLAINTEXT", "sasl.mechanisms=SCRAM-SHA-512"};
    c.conn.conf = nouser;
    c.conn.n_conf = 2;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "sasl.username");
    printf("SCRAM without a username: %s\n", sd_last_error_brief());
    const char *noca[] = {"security.protocol=SSL", "ssl.ca.location=/nonexistent/ca.pem"};
    c.conn.conf = noca;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "ssl.ca.location=/nonexistent/ca.pem");
    EXPECT(strstr(sd_last_error(), "No such file") && strstr(sd_last_error(), "CA certificate"),
           "says why and what the file must be: %s", sd_last_error());
    printf("missing CA file: %s\n", sd_last_error_brief());
    const char *badca[] = {"security.protocol=SSL", "ssl.ca.location=/etc/hostname"}; /* readable, not PEM */
    c.conn.conf = badca;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "librdkafka refused the settings");
    printf("a CA file that is no certificate: %s\n", sd_last_error_brief());
    const char *badproto[] = {"security.protocol=TLS"};
    c.conn.conf = badproto;
    c.conn.n_conf = 1;
    EXPECT_FAIL(sd_kafka_create(&c, &k), SD_ERR_INVALID, "security.protocol=TLS");
    /* the publisher refuses them the same way, before connecting */
    sd_kafka_pub *bp = NULL;
    c.conn.conf = mech;
    c.conn.n_conf = 4;
    EXPECT_FAIL(sd_kafka_pub_create(&c.conn, &bp), SD_ERR_INVALID, "SCRAM-SHA-999");
    c.conn.conf = noca;
    c.conn.n_conf = 2;
    EXPECT_FAIL(sd_kafka_pub_create(&c.conn, &bp), SD_ERR_INVALID, "/nonexistent/ca.pem");
    c.conn.conf = NULL;
    c.conn.n_conf = 0;

    /* nothing listens: a clear error after the bounded wait */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sd_bh_free_port());
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
    EXPECT(sd_bh_wait_received(g.ring, 1000, 15), "1000 records reached the ring");
    printf("kafka: first 1000 records after %.2f s (group join included)\n", sd_clock_now() - t0);
    n += sd_bh_take(g.ring, 600, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, 600), "took 0..599 in order (%zu)", n);
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
    EXPECT(sd_bh_wait_received(g.ring, 400, 15), "the remaining 400 arrived");
    sd_clock_sleep_until(sd_clock_now() + 0.3); /* nothing else comes */
    n = sd_bh_take(g.ring, 4096, seqs);
    EXPECT(sd_bh_seqs_are(seqs, n, 600, 1000), "resumed exactly at 600: %zu records, first %llu", n,
           n ? (unsigned long long)seqs[0] : 0ull);
    EXPECT(wait_committed(g.src, 0, 1000, 5), "all 1000 committed");
    sd_kafka_get_stats(g.src, &ks);
    EXPECT(ks.committed == 400 && ks.commit_errors == 0, "400 committed by this source (%llu)", (unsigned long long)ks.committed);
    sd_bh_check_ring(g.ring, "restart");
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
    EXPECT(sd_bh_wait_received(g.ring, 500, 15), "500 records");
    n += sd_bh_take(g.ring, 4096, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, 500), "took all 500");
    EXPECT_OK(sd_kafka_commit_now(g.src, 5));
    EXPECT(sd_kafka_committed_offset(g.src, 0) < 0, "nothing acknowledged, nothing committed (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    EXPECT_OK(sd_kafka_ack(g.src, 299)); /* the step that used 0..299 finished */
    EXPECT_OK(sd_kafka_commit_now(g.src, 5));
    EXPECT(sd_kafka_committed_offset(g.src, 0) == 300, "acknowledged through seq 299: offset 300 (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    rig_stop(&g);
    if (!rig_start(&g, "trainer-1", "grp-acked", 1, 4096, &x)) return;
    EXPECT(sd_bh_wait_received(g.ring, 200, 15), "200 again");
    sd_clock_sleep_until(sd_clock_now() + 0.3);
    n = sd_bh_take(g.ring, 4096, seqs);
    EXPECT(sd_bh_seqs_are(seqs, n, 300, 500), "resumed at the acknowledged seq 300 (%zu)", n);
    rig_stop(&g);
}

/* Bad records: dropped by reason, and (being dropped) committed. */
static void test_malformed(void) {
    uint8_t buf[256];
    size_t len;
    uint64_t seq = 0;
    const char *t = "trainer-2";
#define SEND(b, l) EXPECT_OK(sd_kafka_pub_send(pub, t, -1, 0, (b), (l)))
    len = sd_bh_make_msg(buf, sizeof buf, 2, seq++);
    SEND(buf, len);
    SEND(buf, 20);          /* truncated */
    SEND(NULL, 0);          /* an empty record (tombstone) */
    len = sd_bh_make_msg(buf, sizeof buf, 2, seq++);
    buf[1] ^= 0x10;         /* bad magic */
    SEND(buf, len);
    len = sd_bh_make_msg(buf, sizeof buf, 2, seq++);
    buf[len - 3] ^= 0x80;   /* bad checksum */
    SEND(buf, len);
    len = sd_bh_make_msg(buf, sizeof buf, 2, seq++);
    SEND(buf, len);
    SEND(buf, len);         /* duplicate */
    {
        float fx[4] = {0};
        uint8_t px[64] = {0};
        sd_msg_meta m = {.dtype = SD_MSG_F32, .ndim = 3, .dims = {1, 2, 2}, .label = 1, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, fx, 16, buf, sizeof buf, &len));
        SEND(buf, len);     /* wrong dtype */
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 2, .dims = {SD_BH_SIDE, SD_BH_SIDE}, .label = 1, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, SD_BH_PIX, buf, sizeof buf, &len));
        SEND(buf, len);     /* wrong shape */
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SD_BH_SIDE, SD_BH_SIDE}, .label = 10, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, SD_BH_PIX, buf, sizeof buf, &len));
        SEND(buf, len);     /* label out of range */
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 8, 8}, .label = 1, .device = 2, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, 64, buf, sizeof buf, &len));
        SEND(buf, len);     /* oversized for the experiment */
    }
    len = sd_bh_make_msg(buf, sizeof buf, 2, seq++);
    SEND(buf, len);
#undef SEND
    EXPECT_OK(sd_kafka_pub_flush(pub, 10));
    const uint64_t total = 12;
    rig g;
    if (!rig_start(&g, t, "grp-bad", 2, 256, NULL)) return;
    EXPECT(sd_bh_wait_received(g.ring, total, 15), "12 records reached the ring");
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    EXPECT(st.accepted == 3 && st.dropped[SD_DROP_TRUNCATED] == 2 && st.dropped[SD_DROP_BAD_MAGIC] == 1 &&
               st.dropped[SD_DROP_BAD_CHECKSUM] == 1 && st.dropped[SD_DROP_DUPLICATE] == 1 &&
               st.dropped[SD_DROP_BAD_DTYPE] == 1 && st.dropped[SD_DROP_BAD_SHAPE] == 1 &&
               st.dropped[SD_DROP_BAD_LABEL] == 1 && st.dropped[SD_DROP_OVERSIZED] == 1,
           "3 stored, 9 dropped by reason (accepted %llu)", (unsigned long long)st.accepted);
    /* the drops before the first untaken sample are committable; take the 3 and all 12 are */
    static uint64_t seqs[64];
    size_t n = sd_bh_take(g.ring, 64, seqs);
    EXPECT(n == 3 && seqs[0] == 0 && seqs[1] == 3 && seqs[2] == 8, "the 3 valid ones (%zu: %llu %llu %llu)", n, (unsigned long long)seqs[0], (unsigned long long)seqs[1], (unsigned long long)seqs[2]);
    EXPECT_OK(sd_kafka_commit_now(g.src, 5));
    /* the last record's outcome is learned on the next poll: wait for the automatic commit */
    EXPECT(wait_committed(g.src, 0, (int64_t)total, 5), "all 12 offsets committed (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    sd_kafka_stats ks;
    sd_kafka_get_stats(g.src, &ks);
    EXPECT(ks.rejected == 9 && ks.stored == 3, "the source learned 9 rejected, 3 stored (%llu, %llu)",
           (unsigned long long)ks.rejected, (unsigned long long)ks.stored);
    sd_bh_check_ring(g.ring, "malformed");
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
        size_t got = sd_bh_take(g.ring, 30, seqs + n);
        n += got;
        if (!got) sd_clock_sleep_until(sd_clock_now() + 0.002);
    }
    EXPECT(sd_bh_seqs_are(seqs, n, 0, N), "all %llu exactly once, in order (%zu)", (unsigned long long)N, n);
    sd_kafka_get_stats(g.src, &ks);
    sd_ring_get_stats(g.ring, &st);
    EXPECT(ks.pauses >= 2 && ks.resumes >= 2 && ks.revokes == 0 && st.dropped[SD_DROP_RING_FULL] == 0 && st.hw_samples <= 100,
           "paused %llu times, resumed %llu, never left the group, never dropped, high-water %zu",
           (unsigned long long)ks.pauses, (unsigned long long)ks.resumes, st.hw_samples);
    printf("backpressure: %llu pauses, %.2f s paused, ring high-water %zu of 100\n", (unsigned long long)ks.pauses,
           ks.paused_s, st.hw_samples);
    EXPECT(wait_committed(g.src, 0, (int64_t)N, 5), "all committed");
    sd_bh_check_ring(g.ring, "backpressure");
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
    EXPECT(sd_bh_wait_received(g.ring, 80, 10), "80 records of partition 1");
    sd_clock_sleep_until(sd_clock_now() + 0.2);
    n += sd_bh_take(g.ring, 50, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, 50), "0..49 of device 1");
    EXPECT(wait_committed(g.src, 1, 50, 5), "offset 50 of partition 1 committed");
    rig_stop(&g);
    x.partition = 1;
    if (!rig_start(&g, "trainers", NULL, 1, 256, &x)) return;
    EXPECT(sd_bh_wait_received(g.ring, 30, 10), "the other 30");
    n = sd_bh_take(g.ring, 256, seqs);
    EXPECT(sd_bh_seqs_are(seqs, n, 50, 80), "resumed at 50 (%zu)", n);
    rig_stop(&g);
    x.partition = 7;
    sd_ring *r = sd_bh_ring(4);
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
    EXPECT(sd_bh_wait_received(g.ring, 100, 15), "100 before the outage");
    for (int b = 1; b <= 3; b++) rd_kafka_mock_broker_set_down(mcluster, b);
    sd_clock_sleep_until(sd_clock_now() + 1.0);
    n += sd_bh_take(g.ring, 1024 - n, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, 100), "the buffered 100 are taken during the outage");
    for (int b = 1; b <= 3; b++) rd_kafka_mock_broker_set_up(mcluster, b);
    produce("trainer-4", -1, 4, 100, 200);
    EXPECT(sd_bh_wait_received(g.ring, 200, 15), "100 more after the brokers came back");
    n += sd_bh_take(g.ring, 1024 - n, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, 200), "no loss, no replay across the outage (%zu)", n);
    sd_kafka_stats ks;
    sd_kafka_get_stats(g.src, &ks);
    printf("brokers down for 1 s: %llu consumer errors counted, %llu revokes\n", (unsigned long long)ks.errors,
           (unsigned long long)ks.revokes);
    EXPECT(wait_committed(g.src, 0, 200, 10), "all 200 committed after the outage");
    rig_stop(&g);
}

/* ---- fault injection (librdkafka's mock: request errors, leader moves, brokers down) ------------------- */
/* Kafka protocol request types (ApiKey) the mock cluster can fail. */
enum { API_FETCH = 1, API_OFFSET_COMMIT = 8, API_OFFSET_FETCH = 9, API_JOIN_GROUP = 11, API_HEARTBEAT = 12,
       API_SYNC_GROUP = 14 };

/* Takes from the ring into seqs (cap entries) until *n reaches want or timeout_s passes. */
static bool take_until(sd_ring *r, uint64_t *seqs, size_t cap, size_t *n, size_t want, double timeout_s) {
    double t0 = sd_clock_now();
    while (*n < want && sd_clock_now() - t0 < timeout_s) {
        size_t got = sd_bh_take(r, cap - *n < 64 ? cap - *n : 64, seqs + *n);
        *n += got;
        if (!got) sd_clock_sleep_until(sd_clock_now() + 0.002);
    }
    return *n >= want;
}

/* Errors left on a broker's stack for a request type (0: the client was answered with all of them). */
static size_t errors_left(int32_t broker, int16_t api) {
    size_t n = 0;
    return rd_kafka_mock_broker_error_stack_cnt(mcluster, broker, api, &n) ? 99 : n;
}

/* Waits (at most timeout_s) until the broker has served every error pushed for api. */
static bool served(int32_t broker, int16_t api, double timeout_s) {
    double t0 = sd_clock_now();
    while (errors_left(broker, api) && sd_clock_now() - t0 < timeout_s) sd_clock_sleep_until(sd_clock_now() + 0.02);
    return errors_left(broker, api) == 0;
}

/* A numbered stream consumed in a group while the cluster misbehaves: transient errors on the group
 * requests (JoinGroup, SyncGroup, Heartbeat, OffsetFetch, OffsetCommit) at the coordinator and on
 * Fetch at the leader, then the partition's leader moves, the leader goes down for a second, and
 * the coordinator goes down for a second. Every record reaches the ring exactly once and in order,
 * the commits land, and what the application can see of the errors is counted. */
static void test_fault_requests(void) {
    const char *t = "trainer-5", *grp = "grp-faults";
    enum { N = 1000 };
    static uint64_t seqs[N + 64];
    size_t n = 0;
    rd_kafka_mock_partition_set_leader(mcluster, t, 0, 1);
    rd_kafka_mock_coordinator_set(mcluster, "group", grp, 2);
    produce(t, -1, 5, 0, 200);
    /* the group's first join, its sync, the committed-offset fetch and the first fetches all fail once
     * or twice (retried by librdkafka); REQUEST_TIMED_OUT on Fetch is reported to the application */
    rd_kafka_mock_broker_push_request_error_rtts(mcluster, 2, API_JOIN_GROUP, 1,
                                                 RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, 0);
    rd_kafka_mock_broker_push_request_error_rtts(mcluster, 2, API_SYNC_GROUP, 1,
                                                 RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, 0);
    rd_kafka_mock_broker_push_request_error_rtts(mcluster, 2, API_OFFSET_FETCH, 2,
                                                 RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, 0,
                                                 RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, 0);
    rd_kafka_mock_broker_push_request_error_rtts(mcluster, 1, API_FETCH, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                                 0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0,
                                                 RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, 0);
    rig g;
    double t0 = sd_clock_now();
    if (!rig_start(&g, t, grp, 5, 4096, NULL)) return;
    EXPECT(take_until(g.ring, seqs, N, &n, 200, 30), "the first 200 through the failing join and fetches (%zu)", n);
    printf("faults: first 200 after %.2f s (join, sync, offset fetch and fetch errors)\n", sd_clock_now() - t0);
    EXPECT(served(2, API_JOIN_GROUP, 5) && served(2, API_SYNC_GROUP, 5) && served(2, API_OFFSET_FETCH, 5) &&
               served(1, API_FETCH, 5),
           "every injected join, sync, offset-fetch and fetch error was served (left %zu %zu %zu %zu)",
           errors_left(2, API_JOIN_GROUP), errors_left(2, API_SYNC_GROUP), errors_left(2, API_OFFSET_FETCH),
           errors_left(1, API_FETCH));

    /* heartbeats and commits fail while consuming: the commits are retried until they land */
    rd_kafka_mock_broker_push_request_error_rtts(mcluster, 2, API_HEARTBEAT, 2,
                                                 RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, 0,
                                                 RD_KAFKA_RESP_ERR_NOT_COORDINATOR, 0);
    rd_kafka_mock_broker_push_request_error_rtts(
        mcluster, 2, API_OFFSET_COMMIT, 8, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, 0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0);
    produce(t, -1, 5, 200, 400);
    EXPECT(take_until(g.ring, seqs, N, &n, 400, 20), "400 through failing heartbeats and commits (%zu)", n);
    EXPECT(wait_committed(g.src, 0, 400, 15), "offset 400 committed in the end (%lld)",
           (long long)sd_kafka_committed_offset(g.src, 0));
    EXPECT(served(2, API_HEARTBEAT, 5) && served(2, API_OFFSET_COMMIT, 5),
           "every heartbeat and commit error was served (left %zu, %zu)", errors_left(2, API_HEARTBEAT),
           errors_left(2, API_OFFSET_COMMIT));

    /* the partition's leader moves from broker 1 to 3 */
    rd_kafka_mock_partition_set_leader(mcluster, t, 0, 3);
    produce(t, -1, 5, 400, 600);
    EXPECT(take_until(g.ring, seqs, N, &n, 600, 20), "600 after the leader moved (%zu)", n);
    /* the leader is down for a second */
    rd_kafka_mock_broker_set_down(mcluster, 3);
    sd_clock_sleep_until(sd_clock_now() + 1.0);
    rd_kafka_mock_broker_set_up(mcluster, 3);
    produce(t, -1, 5, 600, 800);
    EXPECT(take_until(g.ring, seqs, N, &n, 800, 20), "800 after the leader came back (%zu)", n);
    /* the group coordinator is down for a second while records arrive */
    rd_kafka_mock_broker_set_down(mcluster, 2);
    produce(t, -1, 5, 800, 1000);
    sd_clock_sleep_until(sd_clock_now() + 1.0);
    rd_kafka_mock_broker_set_up(mcluster, 2);
    EXPECT(take_until(g.ring, seqs, N, &n, N, 20), "all %d after the coordinator came back (%zu)", N, n);
    sd_clock_sleep_until(sd_clock_now() + 0.3); /* nothing more comes */
    n += sd_bh_take(g.ring, 64, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, N), "every record exactly once, in order (%zu)", n);
    EXPECT(wait_committed(g.src, 0, N, 15), "all %d committed (%lld)", N, (long long)sd_kafka_committed_offset(g.src, 0));
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    sd_kafka_stats ks;
    sd_kafka_get_stats(g.src, &ks);
    /* a record fetched twice (a re-fetch after a rebalance) would be dropped as a duplicate, counted */
    EXPECT(st.accepted == N && st.rejected == st.dropped[SD_DROP_DUPLICATE] && ks.stored == N,
           "stored %llu, the only drops duplicates (%llu rejected, %llu duplicates)", (unsigned long long)st.accepted,
           (unsigned long long)st.rejected, (unsigned long long)st.dropped[SD_DROP_DUPLICATE]);
    EXPECT(ks.errors > 0 && ks.commit_errors > 0, "the errors are counted: %llu consumer errors, %llu failed commits",
           (unsigned long long)ks.errors, (unsigned long long)ks.commit_errors);
    printf("faults: %d records exactly once; %llu consumer errors, %llu failed commits of %llu, %llu duplicates "
           "dropped, %llu assigns, %llu revokes; %.2f s in all\n",
           N, (unsigned long long)ks.errors, (unsigned long long)ks.commit_errors,
           (unsigned long long)(ks.commits + ks.commit_errors), (unsigned long long)st.dropped[SD_DROP_DUPLICATE],
           (unsigned long long)ks.assigns, (unsigned long long)ks.revokes, sd_clock_now() - t0);
    sd_bh_check_ring(g.ring, "faults");
    rig_stop(&g);
    EXPECT(broker_committed(grp, t, 0) == N, "the broker has offset %d for the group", N);
}

/* The trainer is stopped while every offset commit fails: what it took after the last commit that
 * landed is fetched again by the next consumer (at-least-once), and only that. A restart that is
 * told the last sequence number the trainer took (sd_ingest_config.resume) drops exactly those
 * redeliveries as counted duplicates, commits past them, and stores only what the trainer never
 * had: exactly once into the ring. */
static void test_fault_commit_restart(void) {
    const char *t = "trainer-6", *grp = "grp-cfail";
    enum { N = 1000 };
    rd_kafka_mock_coordinator_set(mcluster, "group", grp, 2);
    produce(t, 0, 6, 0, N);
    static uint64_t seqs[N];
    size_t n = 0;
    rig g;
    sd_kafka_config x = {.by_partition = true, .partition = 0};
    if (!rig_start(&g, t, grp, 6, 4096, &x)) return;
    EXPECT(sd_bh_wait_received(g.ring, N, 15), "%d records", N);
    n = sd_bh_take(g.ring, 300, seqs);
    EXPECT(wait_committed(g.src, 0, 300, 5), "offset 300 committed");
    /* from now on every commit fails (more errors than librdkafka retries) */
    /* (on the coordinator's own stack: once a broker has a stack for a request type, the mock
     * never looks at the cluster-wide one) */
    for (int i = 0; i < 3000; i++)
        rd_kafka_mock_broker_push_request_error_rtts(
            mcluster, 2, API_OFFSET_COMMIT, 1,
            i % 3 ? RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT : RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, 0);
    n += sd_bh_take(g.ring, 400, seqs + n);
    EXPECT(sd_bh_seqs_are(seqs, n, 0, 700), "took 0..699 (%zu)", n);
    uint64_t last_taken = seqs[n - 1];
    sd_kafka_stats ks;
    double t0 = sd_clock_now();
    do {
        sd_clock_sleep_until(sd_clock_now() + 0.02);
        sd_kafka_get_stats(g.src, &ks);
    } while (ks.commit_errors == 0 && sd_clock_now() - t0 < 10);
    EXPECT(ks.commit_errors > 0 && sd_kafka_committed_offset(g.src, 0) == 300,
           "the commits fail, counted (%llu), the committed offset stays 300 (%lld)",
           (unsigned long long)ks.commit_errors, (long long)sd_kafka_committed_offset(g.src, 0));
    t0 = sd_clock_now();
    sd_status s = sd_ingest_stop(g.ing);
    g.ing = NULL;
    double took = sd_clock_now() - t0;
    EXPECT(s == SD_ERR_IO && strstr(sd_last_error(), "offset commit") && strstr(sd_last_error(), grp) &&
               strstr(sd_last_error(), "fetches again"),
           "stop reports the failed commit, naming the group and the consequence: %s", sd_last_error());
    EXPECT(took < 8, "stop is bounded while commits fail (%.2f s)", took);
    printf("stop with failing commits (%.2f s): %s\n", took, sd_last_error_brief());
    rig_stop(&g);
    /* the failure ends: the group moves to broker 1 (the mock cannot clear one broker's stack, so
     * broker 2 keeps failing commits for the rest of this run; no later test commits there) */
    rd_kafka_mock_coordinator_set(mcluster, "group", grp, 1);
    int64_t committed = broker_committed(grp, t, 0);
    EXPECT(committed == 300, "the broker kept offset 300 (%lld)", (long long)committed);

    /* restart without telling it what the trainer has: at-least-once, exactly 300..999 come again */
    if (!rig_start(&g, t, grp, 6, 4096, &x)) return;
    EXPECT(sd_bh_wait_received(g.ring, N - 300, 15), "700 records again");
    sd_clock_sleep_until(sd_clock_now() + 0.2);
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    EXPECT(st.received == N - 300 && st.accepted == N - 300, "redelivered from the committed offset: %llu (want 700)",
           (unsigned long long)st.received);
    rig_stop(&g); /* nothing taken: nothing more committed */
    EXPECT(broker_committed(grp, t, 0) == 300, "still 300");

    /* restart told the last sequence number taken (699): the 400 redeliveries it already had are
     * dropped as duplicates and committed past; exactly 700..999 reach the ring */
    if (!rig_start_resume(&g, t, grp, 6, 4096, &x, &last_taken)) return;
    EXPECT(sd_bh_drain_exact(g.ring, N - 300, 700, N, 15, "resumed after seq 699"), "resume");
    sd_ring_get_stats(g.ring, &st);
    sd_kafka_get_stats(g.src, &ks);
    EXPECT(st.dropped[SD_DROP_DUPLICATE] == 400 && st.rejected == 400 && ks.rejected == 400,
           "the redeliveries (taken %llu - committed 300) counted as duplicates: %llu",
           (unsigned long long)(last_taken + 1), (unsigned long long)st.dropped[SD_DROP_DUPLICATE]);
    EXPECT(wait_committed(g.src, 0, N, 10), "committed through %d, duplicates included", N);
    sd_bh_check_ring(g.ring, "commit restart");
    rig_stop(&g);
    EXPECT(broker_committed(grp, t, 0) == N, "the broker has offset %d", N);
}

static void test_publish_app(void) {
    char exe[600];
    if (!sd_bh_app_path("scadles-publish", exe, sizeof exe)) {
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
    int rc = sd_bh_run_capture(argv, out, sizeof out, 30);
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
        EXPECT(sd_bh_wait_received(r[d], 150, 15), "150 records on %s", topic[d]);
        static uint64_t seqs[512];
        int32_t labels[512];
        size_t got = 0;
        sd_ring_batch bt = {.labels = labels, .seqs = seqs};
        EXPECT_OK(sd_ring_take_upto(r[d], 512, &bt, &got));
        bool ok = got == 150;
        /* label slices, 5 classes per device: device d holds classes 5d..5d+4 */
        /* version 2: the publisher's epoch (printed, nonzero) above the numbers 0..149 */
        const uint32_t epoch = got ? sd_msg_seq_epoch(seqs[0]) : 0;
        ok &= epoch != 0 && strstr(out, "epoch ") && (uint32_t)strtoul(strstr(out, "epoch ") + 6, NULL, 10) == epoch;
        for (size_t i = 0; ok && i < got; i++) ok = seqs[i] == sd_msg_seq_make(epoch, i) && labels[i] / 5 == (int32_t)d;
        EXPECT(ok, "%s: seqs (epoch %u) 0..149, labels in device %u's slice (%zu)", topic[d], epoch, d, got);
    }
    for (uint32_t d = 0; d < 2; d++) {
        EXPECT_OK(sd_ingest_stop(ing[d]));
        sd_kafka_destroy(k[d]);
        sd_ring_destroy(r[d]);
    }
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", sd_bh_free_port());
    char *argv2[] = {exe, "--broker", "kafka", "--bootstrap", dead, "--connect-timeout", "1", "--count", "3",
                     "--dataset", "synthetic", "--quiet", NULL};
    rc = sd_bh_run_capture(argv2, out, sizeof out, 30);
    EXPECT(rc == 1 && strstr(out, dead) && strstr(out, "unreachable"), "unreachable: exit %d:\n%s", rc, out);
    char *argv3[] = {exe, "--broker", "kafka", "--host", "x", NULL};
    rc = sd_bh_run_capture(argv3, out, sizeof out, 30);
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
    const char *topics[] = {"trainer-0", "trainer-1", "trainer-2", "trainer-3", "trainer-4", "trainer-5", "trainer-6"};
    for (int i = 0; i < 7; i++) rd_kafka_mock_topic_create(mcluster, topics[i], 1, 3);
    rd_kafka_mock_topic_create(mcluster, "trainers", 3, 3);
    sd_kafka_conn pc = {.bootstrap = bootstraps, .connect_timeout_s = 5};
    EXPECT_OK(sd_kafka_pub_create(&pc, &pub));
    if (!pub) return sd_test_finish("test_kafka");

    static const struct {
        const char *name;
        void (*fn)(void);
        bool fault; /* a fault-injection case */
    } tests[] = {{"config_and_unreachable", test_config_and_unreachable, false},
                 {"commit_and_restart", test_commit_and_restart, false},
                 {"acked", test_acked, false},
                 {"malformed", test_malformed, false},
                 {"backpressure", test_backpressure, false},
                 {"by_partition", test_by_partition, false},
                 {"publish_app", test_publish_app, false},
                 {"brokers_down", test_brokers_down, false},
                 {"fault_requests", test_fault_requests, true},
                 {"fault_commit_restart", test_fault_commit_restart, true}};
    const char *only = getenv("SD_TEST_ONLY"); /* e.g. SD_TEST_ONLY=backpressure,acked */
    /* SD_KAFKA_TESTS=core|faults|all (default all): ctest runs the two halves as test_kafka and
     * test_kafka_faults, so that each stays well under a minute */
    const char *part = getenv("SD_KAFKA_TESTS");
    bool want_core = !part || strcmp(part, "faults"), want_faults = !part || strcmp(part, "core");
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        if (only && !strstr(only, tests[i].name)) continue;
        if (tests[i].fault ? !want_faults : !want_core) continue;
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
