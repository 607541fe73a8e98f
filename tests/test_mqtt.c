/* test_mqtt.c: the MQTT source and publisher (stream/mqtt.h) against a real mosquitto broker that
 * the test starts on a free loopback port (anonymous, 127.0.0.1 only) and always kills: an
 * unreachable broker (a clear error after a bounded retry), exact delivery through the source, the
 * ingest thread and a ring at QoS 0, 1 and 2, a QoS 1 resend counted as a duplicate (not as
 * corruption), malformed messages dropped by reason, the internal queue's overflow policies, the
 * broker killed and restarted mid-run (the source reconnects, training goes on with what was
 * buffered, the lost messages show as sequence gaps), scadles-publish end to end, and a TLS
 * listener with password authentication (material from tests/mqtt/make_tls.sh: right and wrong
 * password through the publisher, the source and scadles-publish, each refused at once with a
 * message naming the broker, the user and the fix; anonymous; plain MQTT to the TLS port; a file
 * that is no CA and a CA that did not sign the broker's certificate) and a second listener that
 * requires a client certificate (without one: refused, saying so; with one: in). The helpers
 * shared with test_kafka.c are in broker_harness.h. Skips (77) without /usr/sbin/mosquitto or
 * without libmosquitto in the build. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/status.h"
#include "stream/ingest.h"
#include "stream/message.h"
#include "stream/mqtt.h"
#include "stream/ring.h"
#include "tests/broker_harness.h"
#include "tests/harness.h"

#define MOSQUITTO "/usr/sbin/mosquitto"

#ifdef SCADLES_HAVE_MQTT
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* ---- the broker ------------------------------------------------------------------------------- */
static pid_t broker_pid = -1;
static int broker_port;
static char broker_dir[64];

static void broker_kill(int sig) {
    if (broker_pid <= 0) return;
    kill(broker_pid, sig);
    double t0 = sd_clock_now();
    int st;
    while (waitpid(broker_pid, &st, WNOHANG) == 0) {
        if (sd_clock_now() - t0 > 2.0) {
            kill(broker_pid, SIGKILL);
            waitpid(broker_pid, &st, 0);
            break;
        }
        sd_clock_sleep_until(sd_clock_now() + 0.005);
    }
    broker_pid = -1;
}

static void broker_cleanup(void) {
    broker_kill(SIGKILL);
    if (broker_dir[0] && !strncmp(broker_dir, "/tmp/sd_mqtt_", 13)) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", broker_dir); /* the config, the log, the TLS material */
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", broker_dir);
        broker_dir[0] = 0;
    }
}

static void on_signal(int sig) {
    if (broker_pid > 0) kill(broker_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Starts mosquitto on `port` (0: a free one) with `extra` configuration lines (NULL: anonymous
 * access) and waits (at most 5 s) until it accepts connections. */
static bool broker_start_with(int port, const char *extra) {
    if (!broker_dir[0]) {
        snprintf(broker_dir, sizeof broker_dir, "/tmp/sd_mqtt_XXXXXX");
        if (!mkdtemp(broker_dir)) {
            broker_dir[0] = 0;
            return false;
        }
        chmod(broker_dir, 0755); /* mosquitto may drop to its own user */
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        int p = port ? port : sd_bh_free_port();
        char conf[128], log[128];
        snprintf(conf, sizeof conf, "%s/mosquitto.conf", broker_dir);
        snprintf(log, sizeof log, "%s/broker.log", broker_dir);
        FILE *f = fopen(conf, "w");
        if (!f) return false;
        fprintf(f, "listener %d 127.0.0.1\nallow_anonymous %s\npersistence false\nmax_queued_messages 100000\n"
                   "log_dest stderr\nlog_type error\nlog_type warning\n%s", p, extra ? "false" : "true", extra ? extra : "");
        fclose(f);
        chmod(conf, 0644);
        pid_t pid = fork();
        if (pid < 0) return false;
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execl(MOSQUITTO, "mosquitto", "-c", conf, (char *)NULL);
            _exit(127);
        }
        broker_pid = pid;
        broker_port = p;
        double t0 = sd_clock_now();
        while (sd_clock_now() - t0 < 5.0) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                broker_pid = -1;
                break; /* exited: the port was taken, or a bad config */
            }
            if (sd_bh_port_open(p)) return true;
            sd_clock_sleep_until(sd_clock_now() + 0.01);
        }
        broker_kill(SIGKILL);
        if (port) sd_clock_sleep_until(sd_clock_now() + 0.2); /* a fixed port: give the old one time */
    }
    return false;
}

static bool broker_start(int port) { return broker_start_with(port, NULL); }

static sd_mqtt_conn conn_here(void) {
    return (sd_mqtt_conn){.host = "127.0.0.1", .port = broker_port, .connect_attempts = 5, .connect_timeout_s = 5,
                          .reconnect_min_s = 0.05, .reconnect_max_s = 0.4, .keepalive_s = 5};
}

/* Publishing through an MQTT publisher to one topic (sd_bh_publish). */
typedef struct mqtt_to {
    sd_mqtt_pub *p;
    const char *topic;
} mqtt_to;

static sd_status mqtt_send(void *ctx, int32_t label, const void *msg, size_t len) {
    (void)label;
    const mqtt_to *t = ctx;
    return sd_mqtt_pub_send(t->p, t->topic, msg, len);
}

typedef struct rig {
    sd_ring *ring;
    sd_mqtt *src;
    sd_ingest *ing;
} rig;

static bool rig_start(rig *g, const char *topic, int qos, uint32_t dev, size_t ring_n) {
    memset(g, 0, sizeof *g);
    g->ring = sd_bh_ring(ring_n);
    sd_mqtt_config c = {.conn = conn_here(), .topic = topic, .qos = qos, .ring = g->ring};
    sd_status s = sd_mqtt_create(&c, &g->src);
    EXPECT(s == SD_OK, "create: %s", sd_last_error());
    if (s != SD_OK) return false;
    sd_ingest_config ic = {.source = sd_mqtt_source(g->src), .ring = g->ring, .expect = sd_bh_expect(dev)};
    s = sd_ingest_start(&ic, &g->ing);
    EXPECT(s == SD_OK, "ingest start: %s", sd_last_error());
    return s == SD_OK;
}

static void rig_stop(rig *g) {
    if (g->ing) EXPECT_OK(sd_ingest_stop(g->ing));
    g->ing = NULL;
    sd_mqtt_destroy(g->src);
    sd_ring_destroy(g->ring);
    memset(g, 0, sizeof *g);
}

/* ---- tests --------------------------------------------------------------------------------------- */
static void test_config_errors(void) {
    sd_mqtt *m = NULL;
    sd_mqtt_config c = {.topic = "trainer-0", .qos = 3};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "qos 3 must be 0, 1 or 2");
    c = (sd_mqtt_config){.qos = 1};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "no topic");
    c = (sd_mqtt_config){.topic = "t", .conn = {.certfile = "c.pem"}};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "TLS options need the broker's CA");
    c = (sd_mqtt_config){.topic = "t", .conn = {.cafile = "ca.pem", .certfile = "c.pem"}};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "needs its key");
    c = (sd_mqtt_config){.topic = "t", .persistent_session = true};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "persistent session needs a client id");
    c = (sd_mqtt_config){.topic = "t", .block_timeout_s = 30};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "below keepalive_s / 2");
    c = (sd_mqtt_config){.topic = "t", .conn = {.password = "x"}};
    EXPECT_FAIL(sd_mqtt_create(&c, &m), SD_ERR_INVALID, "password needs a username");
    /* a TLS CA file that does not exist: at start, naming the file */
    c = (sd_mqtt_config){.topic = "t", .conn = {.cafile = "/nonexistent/ca.pem", .port = 1, .quiet = true}};
    EXPECT_OK(sd_mqtt_create(&c, &m));
    sd_source src = sd_mqtt_source(m);
    EXPECT_FAIL(src.ops->start(src.ctx), SD_ERR_INVALID, "/nonexistent/ca.pem");
    sd_mqtt_destroy(m);
}

static void test_unreachable(void) {
    int port = sd_bh_free_port(); /* nothing listens there */
    sd_mqtt_config c = {.conn = {.host = "127.0.0.1", .port = port, .connect_attempts = 3, .reconnect_min_s = 0.05,
                                 .connect_timeout_s = 5, .quiet = true},
                        .topic = "trainer-0"};
    sd_mqtt *m = NULL;
    EXPECT_OK(sd_mqtt_create(&c, &m));
    sd_source src = sd_mqtt_source(m);
    double t0 = sd_clock_now();
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d unreachable", port);
    EXPECT_FAIL(src.ops->start(src.ctx), SD_ERR_IO, where);
    double took = sd_clock_now() - t0;
    EXPECT(took < 3.0, "bounded: gave up after %.2f s", took);
    EXPECT(strstr(sd_last_error(), "3 connection attempts") && strstr(sd_last_error(), "refused"),
           "says how often and why: %s", sd_last_error());
    printf("unreachable broker: %s (after %.2f s)\n", sd_last_error(), took);
    sd_mqtt_destroy(m);
    sd_mqtt_pub *p = NULL;
    EXPECT_FAIL(sd_mqtt_pub_create(&c.conn, 1, &p), SD_ERR_IO, where);
    EXPECT(p == NULL, "no publisher");
    /* an unknown host name */
    c.conn.host = "no-such-host.invalid";
    EXPECT_FAIL(sd_mqtt_pub_create(&c.conn, 0, &p), SD_ERR_IO, "cannot resolve host name no-such-host.invalid");
}

/* n messages 0..n-1 at qos, exactly once and in order (QoS 0: losses allowed but counted). */
static void test_exact(int qos, int n) {
    char topic[32];
    snprintf(topic, sizeof topic, "trainer-q%d", qos);
    rig g;
    if (!rig_start(&g, topic, qos, 0, 8192)) return;
    sd_mqtt_conn pc = conn_here();
    sd_mqtt_pub *p = NULL;
    EXPECT_OK(sd_mqtt_pub_create(&pc, qos, &p));
    if (!p) {
        rig_stop(&g);
        return;
    }
    uint8_t buf[128];
    double t0 = sd_clock_now();
    for (int i = 0; i < n; i++) {
        size_t len = sd_bh_make_msg(buf, sizeof buf, 0, (uint64_t)i);
        EXPECT_OK(sd_mqtt_pub_send(p, topic, buf, len));
        if (qos == 0 && i % 500 == 499) sd_clock_sleep_until(sd_clock_now() + 0.002); /* let QoS 0 breathe */
    }
    EXPECT_OK(sd_mqtt_pub_flush(p, 10));
    bool all = sd_bh_wait_received(g.ring, (uint64_t)n, 10);
    double dt = sd_clock_now() - t0;
    static uint64_t seqs[8192];
    size_t got = sd_bh_take(g.ring, 8192, seqs);
    bool inorder = true;
    for (size_t i = 1; i < got; i++) inorder &= seqs[i] > seqs[i - 1];
    EXPECT(inorder, "qos %d: sequence numbers increase", qos);
    sd_ingest_stats is;
    sd_ingest_get_stats(g.ing, &is);
    sd_mqtt_stats ms;
    sd_mqtt_get_stats(g.src, &ms);
    uint64_t lost = (uint64_t)n - got;
    if (qos == 0) {
        /* loopback: none expected; whatever was lost is exactly what the counters say */
        uint64_t tail = got ? (uint64_t)n - 1 - seqs[got - 1] : (uint64_t)n;
        EXPECT(is.seq_gaps + tail == lost, "qos 0: %llu lost = %llu gaps + %llu at the end", (unsigned long long)lost,
               (unsigned long long)is.seq_gaps, (unsigned long long)tail);
        EXPECT(got > 0 && all == (lost == 0), "qos 0: delivered %zu of %d", got, n);
        if (lost) printf("note: qos 0 lost %llu of %d messages on loopback\n", (unsigned long long)lost, n);
    } else {
        EXPECT(all && got == (size_t)n && is.seq_gaps == 0, "qos %d: all %d delivered (got %zu, gaps %llu)", qos, n, got,
               (unsigned long long)is.seq_gaps);
        bool exact = got == (size_t)n;
        for (size_t i = 0; exact && i < got; i++) exact = seqs[i] == i;
        EXPECT(exact, "qos %d: exactly 0..%d in order", qos, n - 1);
    }
    EXPECT(ms.granted_qos == qos && ms.connects == 1 && ms.disconnects == 0 && ms.queue_dropped == 0,
           "qos %d granted %d, one connection, no queue drops", qos, ms.granted_qos);
    printf("mqtt qos %d: %zu of %d messages through source -> ingest -> ring in %.3f s (%.0f msg/s), queue high-water %zu\n",
           qos, got, n, dt, got / dt, ms.queue_hw);
    sd_bh_check_ring(g.ring, "exact");
    sd_mqtt_pub_destroy(p);
    rig_stop(&g);
}

/* QoS 1: a resend of an already delivered (device, seq) is a duplicate, not corruption. */
static void test_qos1_resend(void) {
    rig g;
    if (!rig_start(&g, "trainer-dup", 1, 0, 1024)) return;
    sd_mqtt_conn pc = conn_here();
    sd_mqtt_pub *p = NULL;
    EXPECT_OK(sd_mqtt_pub_create(&pc, 1, &p));
    if (!p) {
        rig_stop(&g);
        return;
    }
    uint8_t buf[128], again[128];
    size_t again_len = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = sd_bh_make_msg(buf, sizeof buf, 0, (uint64_t)i);
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-dup", buf, len));
        if (i == 100) {
            memcpy(again, buf, len);
            again_len = len;
        }
        if (i == 150 || i == 299) EXPECT_OK(sd_mqtt_pub_send(p, "trainer-dup", again, again_len)); /* the resend */
    }
    EXPECT_OK(sd_mqtt_pub_flush(p, 10));
    EXPECT(sd_bh_wait_received(g.ring, 302, 10), "302 messages reached the ring");
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    EXPECT(st.accepted == 300 && st.dropped[SD_DROP_DUPLICATE] == 2 && st.dropped[SD_DROP_BAD_CHECKSUM] == 0 &&
               st.rejected == 2,
           "300 stored, 2 duplicates, no corruption (accepted %llu dup %llu crc %llu)", (unsigned long long)st.accepted,
           (unsigned long long)st.dropped[SD_DROP_DUPLICATE], (unsigned long long)st.dropped[SD_DROP_BAD_CHECKSUM]);
    static uint64_t seqs[1024];
    size_t got = sd_bh_take(g.ring, 1024, seqs);
    bool exact = got == 300;
    for (size_t i = 0; exact && i < got; i++) exact = seqs[i] == i;
    EXPECT(exact, "seqs 0..299 exactly once");
    sd_mqtt_pub_destroy(p);
    EXPECT_OK(sd_ingest_stop(g.ing));
    g.ing = NULL;
    sd_mqtt_stats ms;
    sd_mqtt_get_stats(g.src, &ms);
    EXPECT(ms.rejected == 2 && ms.delivered == 302, "the source saw 2 of its 302 messages rejected (%llu)",
           (unsigned long long)ms.rejected);
    sd_bh_check_ring(g.ring, "resend");
    rig_stop(&g);
}

/* Malformed messages: each dropped and counted by its reason, the valid ones around them kept. */
static void test_malformed(void) {
    rig g;
    memset(&g, 0, sizeof g);
    g.ring = sd_bh_ring(256);
    sd_mqtt_config c = {.conn = conn_here(), .topic = "trainer-bad", .qos = 1, .ring = g.ring, .max_message_bytes = 4096};
    EXPECT_OK(sd_mqtt_create(&c, &g.src));
    sd_ingest_config ic = {.source = sd_mqtt_source(g.src), .ring = g.ring, .expect = sd_bh_expect(0)};
    EXPECT_OK(sd_ingest_start(&ic, &g.ing));
    sd_mqtt_conn pc = conn_here();
    sd_mqtt_pub *p = NULL;
    EXPECT_OK(sd_mqtt_pub_create(&pc, 1, &p));
    if (!p || !g.ing) {
        sd_mqtt_pub_destroy(p);
        rig_stop(&g);
        return;
    }
    uint8_t buf[8192];
    uint64_t seq = 0;
    size_t len;
#define SEND_OK()                                                    \
    do {                                                             \
        len = sd_bh_make_msg(buf, sizeof buf, 0, seq++);                   \
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));     \
    } while (0)
    SEND_OK();
    /* truncated: half a header, and an empty payload */
    len = sd_bh_make_msg(buf, sizeof buf, 0, seq++);
    EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, 20));
    EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, 0));
    SEND_OK();
    /* bad magic */
    len = sd_bh_make_msg(buf, sizeof buf, 0, seq++);
    buf[0] ^= 0xff;
    EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
    /* bad checksum: one payload bit */
    len = sd_bh_make_msg(buf, sizeof buf, 0, seq++);
    buf[len - 1] ^= 0x01;
    EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
    SEND_OK();
    /* wrong dtype (f32), wrong shape (1x2x2), label out of range, another device's message */
    {
        float fx[SD_BH_PIX] = {0};
        sd_msg_meta m = {.dtype = SD_MSG_F32, .ndim = 3, .dims = {1, 2, 2}, .label = 1, .device = 0, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, fx, 16, buf, sizeof buf, &len));
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
        uint8_t px[SD_BH_PIX] = {0};
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 2, 2}, .label = 1, .device = 0, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, 4, buf, sizeof buf, &len));
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SD_BH_SIDE, SD_BH_SIDE}, .label = 12, .device = 0, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, px, SD_BH_PIX, buf, sizeof buf, &len));
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
        m.label = 3;
        m.device = 5;
        m.seq = seq++;
        EXPECT_OK(sd_msg_encode(&m, px, SD_BH_PIX, buf, sizeof buf, &len));
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
        /* oversized for the experiment (payload 64 > 32) */
        uint8_t big[64] = {0};
        m = (sd_msg_meta){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 8, 8}, .label = 1, .device = 0, .seq = seq++};
        EXPECT_OK(sd_msg_encode(&m, big, 64, buf, sizeof buf, &len));
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len));
    }
    SEND_OK();
    /* trailing garbage after the payload */
    len = sd_bh_make_msg(buf, sizeof buf, 0, seq++);
    buf[len] = 0;
    EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, len + 1));
    /* over the source's own 4096-byte limit: never queued */
    memset(buf, 0xab, sizeof buf);
    EXPECT_OK(sd_mqtt_pub_send(p, "trainer-bad", buf, 5000));
    SEND_OK();
#undef SEND_OK
    EXPECT_OK(sd_mqtt_pub_flush(p, 10));
    EXPECT(sd_bh_wait_received(g.ring, 15, 10), "15 messages reached the ring");
    sd_clock_sleep_until(sd_clock_now() + 0.05);
    sd_ring_stats st;
    sd_ring_get_stats(g.ring, &st);
    EXPECT(st.accepted == 5, "5 valid messages stored (%llu)", (unsigned long long)st.accepted);
    EXPECT(st.dropped[SD_DROP_TRUNCATED] == 2, "truncated %llu", (unsigned long long)st.dropped[SD_DROP_TRUNCATED]);
    EXPECT(st.dropped[SD_DROP_BAD_MAGIC] == 1, "bad magic %llu", (unsigned long long)st.dropped[SD_DROP_BAD_MAGIC]);
    EXPECT(st.dropped[SD_DROP_BAD_CHECKSUM] == 1, "checksum %llu", (unsigned long long)st.dropped[SD_DROP_BAD_CHECKSUM]);
    EXPECT(st.dropped[SD_DROP_BAD_DTYPE] == 1, "dtype %llu", (unsigned long long)st.dropped[SD_DROP_BAD_DTYPE]);
    EXPECT(st.dropped[SD_DROP_BAD_SHAPE] == 1, "shape %llu", (unsigned long long)st.dropped[SD_DROP_BAD_SHAPE]);
    EXPECT(st.dropped[SD_DROP_BAD_LABEL] == 1, "label %llu", (unsigned long long)st.dropped[SD_DROP_BAD_LABEL]);
    EXPECT(st.dropped[SD_DROP_BAD_DEVICE] == 1, "device %llu", (unsigned long long)st.dropped[SD_DROP_BAD_DEVICE]);
    EXPECT(st.dropped[SD_DROP_OVERSIZED] == 1, "oversized %llu", (unsigned long long)st.dropped[SD_DROP_OVERSIZED]);
    EXPECT(st.dropped[SD_DROP_BAD_LENGTH] == 1, "bad length %llu", (unsigned long long)st.dropped[SD_DROP_BAD_LENGTH]);
    EXPECT(st.received == 15 && st.rejected == 10, "15 received, 10 rejected");
    sd_mqtt_pub_destroy(p);
    EXPECT_OK(sd_ingest_stop(g.ing));
    g.ing = NULL;
    sd_mqtt_stats ms;
    sd_mqtt_get_stats(g.src, &ms);
    EXPECT(ms.oversized_dropped == 1 && ms.received == 16 && ms.delivered == 15 && ms.rejected == 10,
           "source: 16 received, 1 over its limit, 15 delivered, 10 rejected (%llu %llu %llu %llu)",
           (unsigned long long)ms.received, (unsigned long long)ms.oversized_dropped, (unsigned long long)ms.delivered,
           (unsigned long long)ms.rejected);
    sd_bh_check_ring(g.ring, "malformed");
    rig_stop(&g);
}

/* The internal queue: drop when full (QoS 0), hold when full (QoS 1, backpressure). No ingest
 * thread: the test plays it, so the queue fills. */
static void test_overflow(void) {
    uint8_t buf[128];
    for (int mode = 0; mode < 2; mode++) {
        sd_mqtt_config c = {.conn = conn_here(), .topic = mode ? "trainer-blk" : "trainer-ovf", .qos = mode,
                            .queue_capacity = 8, .overflow = mode ? SD_MQTT_OVERFLOW_BLOCK : SD_MQTT_OVERFLOW_DROP,
                            .block_timeout_s = 1.0};
        c.conn.quiet = true;
        sd_mqtt *m = NULL;
        EXPECT_OK(sd_mqtt_create(&c, &m));
        sd_source src = sd_mqtt_source(m);
        EXPECT_OK(src.ops->start(src.ctx));
        sd_mqtt_conn pc = conn_here();
        sd_mqtt_pub *p = NULL;
        EXPECT_OK(sd_mqtt_pub_create(&pc, mode, &p));
        int n = mode ? 40 : 100;
        for (int i = 0; p && i < n; i++) {
            size_t len = sd_bh_make_msg(buf, sizeof buf, 0, (uint64_t)i);
            EXPECT_OK(sd_mqtt_pub_send(p, c.topic, buf, len));
        }
        sd_mqtt_stats ms;
        double t0 = sd_clock_now();
        do {
            sd_clock_sleep_until(sd_clock_now() + 0.01);
            sd_mqtt_get_stats(m, &ms);
        } while (ms.received < (mode ? 9u : (uint64_t)n) && sd_clock_now() - t0 < 5);
        sd_clock_sleep_until(sd_clock_now() + 0.2); /* the queue stays full a while */
        int got = 0;
        uint64_t last = 0;
        bool inorder = true;
        t0 = sd_clock_now();
        while (sd_clock_now() - t0 < 5) {
            sd_source_event ev;
            const void *msg;
            size_t len;
            EXPECT_OK(src.ops->next(src.ctx, 0.05, &ev, &msg, &len));
            if (ev != SD_SOURCE_MESSAGE) {
                sd_mqtt_get_stats(m, &ms);
                if (ms.received + ms.queue_dropped >= (uint64_t)n || !mode) break;
                continue;
            }
            sd_msg_view v;
            EXPECT(sd_msg_decode(msg, len, NULL, &v) == SD_DROP_NONE, "intact");
            if (got) inorder &= v.meta.seq > last;
            last = v.meta.seq;
            got++;
            if (got == n) break;
        }
        sd_mqtt_get_stats(m, &ms);
        if (mode == 0) {
            EXPECT(got == 8 && ms.queue_dropped == (uint64_t)n - 8 && ms.queue_hw == 8,
                   "drop: the queue kept 8, dropped %llu of %d (got %d)", (unsigned long long)ms.queue_dropped, n, got);
        } else {
            EXPECT(got == n && ms.queue_dropped == 0 && ms.blocked_s > 0.1,
                   "block: all %d delivered (got %d), none dropped (%llu), held %.2f s", n, got,
                   (unsigned long long)ms.queue_dropped, ms.blocked_s);
        }
        EXPECT(inorder, "in order");
        sd_mqtt_pub_destroy(p);
        EXPECT_OK(src.ops->stop(src.ctx));
        sd_mqtt_destroy(m);
    }
}

/* The broker dies mid-run and comes back on the same port. */
static void test_broker_restart(void) {
    rig g;
    if (!rig_start(&g, "trainer-rs", 1, 0, 1024)) return;
    sd_mqtt_conn pc = conn_here();
    pc.quiet = true;
    sd_mqtt_pub *p = NULL;
    EXPECT_OK(sd_mqtt_pub_create(&pc, 1, &p));
    if (!p) {
        rig_stop(&g);
        return;
    }
    uint8_t buf[128];
    for (int i = 0; i < 50; i++) {
        size_t len = sd_bh_make_msg(buf, sizeof buf, 0, (uint64_t)i);
        EXPECT_OK(sd_mqtt_pub_send(p, "trainer-rs", buf, len));
    }
    EXPECT_OK(sd_mqtt_pub_flush(p, 10));
    EXPECT(sd_bh_wait_received(g.ring, 50, 10), "50 before the broker dies");

    broker_kill(SIGKILL);
    sd_mqtt_stats ms;
    double t0 = sd_clock_now();
    do {
        sd_clock_sleep_until(sd_clock_now() + 0.01);
        sd_mqtt_get_stats(g.src, &ms);
    } while (ms.disconnects == 0 && sd_clock_now() - t0 < 10);
    EXPECT(ms.disconnects == 1 && !ms.connected, "the source noticed (%llu disconnects)", (unsigned long long)ms.disconnects);
    /* training goes on with what was buffered */
    static uint64_t seqs[1024];
    size_t got = sd_bh_take(g.ring, 1024, seqs);
    EXPECT(got == 50 && seqs[0] == 0 && seqs[49] == 49, "50 buffered samples taken while the broker is down (%zu)", got);
    /* what is published meanwhile is lost */
    for (int i = 50; i < 60; i++) {
        size_t len = sd_bh_make_msg(buf, sizeof buf, 0, (uint64_t)i);
        EXPECT(sd_mqtt_pub_send(p, "trainer-rs", buf, len) == SD_ERR_IO, "message %d not sent while down", i);
    }
    sd_clock_sleep_until(sd_clock_now() + 0.3); /* a few failed reconnects */
    EXPECT(broker_start(broker_port), "broker restarted on port %d", broker_port);
    t0 = sd_clock_now();
    sd_mqtt_pub_stats ps;
    do {
        sd_clock_sleep_until(sd_clock_now() + 0.01);
        sd_mqtt_get_stats(g.src, &ms);
        sd_mqtt_pub_get_stats(p, &ps);
    } while (!(ms.connected && ps.connected) && sd_clock_now() - t0 < 10);
    EXPECT(ms.connected && ms.connects == 2 && ms.connect_failures >= 1, "the source reconnected (%llu connects, %llu failed attempts)",
           (unsigned long long)ms.connects, (unsigned long long)ms.connect_failures);
    EXPECT(ps.connected && ps.connects == 2 && ps.failed == 10, "the publisher reconnected, 10 messages failed");
    printf("broker restart: source back after %.2f s (%llu failed attempts)\n", sd_clock_now() - t0,
           (unsigned long long)ms.connect_failures);
    mqtt_to to = {p, "trainer-rs"};
    sd_bh_publish(mqtt_send, &to, 0, 60, 100);
    EXPECT_OK(sd_mqtt_pub_flush(p, 10));
    sd_bh_drain_exact(g.ring, 90, 60, 100, 10, "after the restart");
    sd_ingest_stats is;
    sd_ingest_get_stats(g.ing, &is);
    EXPECT(is.seq_gaps == 10 && is.stored == 90, "the gap shows: %llu sequence numbers missing, %llu stored",
           (unsigned long long)is.seq_gaps, (unsigned long long)is.stored);
    sd_mqtt_pub_destroy(p);
    sd_bh_check_ring(g.ring, "restart");
    rig_stop(&g);
}

static void test_publish_app(void) {
    char exe[600];
    if (!sd_bh_app_path("scadles-publish", exe, sizeof exe)) {
        printf("scadles-publish not built next to this test: skipping its checks\n");
        return;
    }
    static char out[65536];
    /* device 1 of 2 on a synthetic dataset shaped as ours (1x4x4? no: 1x28x28), 300 messages at 3000/s */
    sd_ring_config rc = {.max_samples = 1024, .max_sample_bytes = 784, .policy = SD_RING_PERSIST};
    sd_ring *ring = NULL;
    EXPECT_OK(sd_ring_create(&rc, &ring));
    sd_mqtt *m = NULL;
    sd_mqtt_config c = {.conn = conn_here(), .topic = "pub-trainer-1", .qos = 1, .ring = ring};
    EXPECT_OK(sd_mqtt_create(&c, &m));
    sd_ingest *ing = NULL;
    sd_ingest_config ic = {.source = sd_mqtt_source(m), .ring = ring,
                           .expect = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 28, 28}, .classes = 10,
                                      .check_device = true, .device = 1}};
    EXPECT_OK(sd_ingest_start(&ic, &ing));
    char port[16];
    snprintf(port, sizeof port, "%d", broker_port);
    char *argv[] = {exe, "--broker", "mqtt", "--host", "127.0.0.1", "--port", port, "--devices", "2", "--device", "1",
                    "--rate", "3000", "--count", "300", "--dataset", "synthetic", "--qos", "1", "--topic-prefix",
                    "pub-trainer-", NULL};
    int rc_pub = sd_bh_run_capture(argv, out, sizeof out, 30);
    EXPECT(rc_pub == 0, "scadles-publish exit %d:\n%s", rc_pub, out);
    EXPECT(strstr(out, "achieved") != NULL, "prints the achieved rate:\n%s", out);
    printf("%s", out);
    EXPECT(sd_bh_wait_received(ring, 300, 10), "300 messages from scadles-publish");
    static uint64_t seqs[1024];
    int32_t labels[1024];
    size_t got = 0;
    sd_ring_batch b = {.labels = labels, .seqs = seqs};
    EXPECT_OK(sd_ring_take_upto(ring, 1024, &b, &got));
    bool exact = got == 300;
    const uint32_t epoch = got ? sd_msg_seq_epoch(seqs[0]) : 0; /* version 2: the publisher's epoch above 0..299 */
    exact &= epoch != 0 && strstr(out, "epoch ") && (uint32_t)strtoul(strstr(out, "epoch ") + 6, NULL, 10) == epoch;
    for (size_t i = 0; exact && i < got; i++) exact = seqs[i] == sd_msg_seq_make(epoch, i) && labels[i] >= 0 && labels[i] < 10;
    EXPECT(exact, "seqs (epoch %u) 0..299 of device 1, in order (%zu)", epoch, got);
    EXPECT_OK(sd_ingest_stop(ing));
    sd_mqtt_destroy(m);
    sd_ring_destroy(ring);

    /* an unreachable broker: bounded, non-zero, names the address and the fix */
    char dead[16];
    snprintf(dead, sizeof dead, "%d", sd_bh_free_port());
    char *argv2[] = {exe, "--broker", "mqtt", "--host", "127.0.0.1", "--port", dead, "--devices", "1", "--rate", "10",
                     "--count", "5", "--dataset", "synthetic", NULL};
    double t0 = sd_clock_now();
    int rc2 = sd_bh_run_capture(argv2, out, sizeof out, 30);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%s", dead);
    EXPECT(rc2 != 0 && rc2 != -1 && strstr(out, where) && strstr(out, "mosquitto"),
           "unreachable: exit %d in %.1f s:\n%s", rc2, sd_clock_now() - t0, out);
    /* bad flags */
    char *argv3[] = {exe, "--broker", "mqtt", "--rate", "fast", NULL};
    int rc3 = sd_bh_run_capture(argv3, out, sizeof out, 30);
    EXPECT(rc3 == 2 && strstr(out, "--rate"), "bad --rate: exit %d:\n%s", rc3, out);
    /* a list of per-device rates (what scripts/edge_cluster.sh passes from the trainer's config.json):
     * device i gets rate[i % length]; malformed lists and out-of-range rates are refused */
    char *argv5[] = {exe, "--broker", "mqtt", "--host", "127.0.0.1", "--port", port, "--devices", "3", "--rate",
                     "2000,3000", "--count", "20", "--dataset", "synthetic", "--topic-prefix", "pub-list-", NULL};
    int rc5 = sd_bh_run_capture(argv5, out, sizeof out, 30);
    EXPECT(rc5 == 0 && strstr(out, "device 0 -> pub-list-0: 20 messages") && strstr(out, "(target 2000.0/s") &&
               strstr(out, "device 1 -> pub-list-1: 20 messages") && strstr(out, "(target 3000.0/s") &&
               strstr(out, "device 2 -> pub-list-2: 20 messages"),
           "--rate 2000,3000 over 3 devices: exit %d:\n%s", rc5, out);
    const char *bad_lists[] = {"1,,2", "1,2,", ",1", "1,0", "1,x"};
    for (size_t i = 0; i < sizeof bad_lists / sizeof *bad_lists; i++) {
        char *argv6[] = {exe, "--broker", "mqtt", "--rate", (char *)bad_lists[i], NULL};
        int rc6 = sd_bh_run_capture(argv6, out, sizeof out, 30);
        EXPECT(rc6 == 2 && strstr(out, "--rate"), "--rate %s: exit %d:\n%s", bad_lists[i], rc6, out);
    }
    char *argv4[] = {exe, "--broker", "amqp", NULL};
    int rc4 = sd_bh_run_capture(argv4, out, sizeof out, 30);
    EXPECT(rc4 == 2 && strstr(out, "kafka|mqtt"), "bad --broker: exit %d:\n%s", rc4, out);
}

/* A TLS listener with password authentication (material from tests/mqtt/make_tls.sh). */
static void test_tls_auth(void) {
    const char *src = getenv("SD_SOURCE_DIR");
    char script[512], dir[128], cmd[1024];
    snprintf(script, sizeof script, "%s/tests/mqtt/make_tls.sh", src && *src ? src : ".");
    snprintf(dir, sizeof dir, "%s/tls", broker_dir);
    snprintf(cmd, sizeof cmd, "sh '%s' '%s' alice s3cret", script, dir);
    if (access(script, R_OK) || system(cmd)) {
        printf("note: no TLS material (%s with openssl and mosquitto_passwd): TLS and password checks skipped\n", script);
        return;
    }
    /* a second CA, which signed nothing the broker has */
    char dir2[160];
    snprintf(dir2, sizeof dir2, "%s/other-ca", broker_dir);
    snprintf(cmd, sizeof cmd, "sh '%s' '%s'", script, dir2);
    bool have_other = system(cmd) == 0;
    /* the first listener: TLS + password; a second one also requires a client certificate */
    int port2 = sd_bh_free_port();
    char extra[2048];
    snprintf(extra, sizeof extra,
             "cafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\npassword_file %s/passwd\n"
             "listener %d 127.0.0.1\ncafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n"
             "require_certificate true\n",
             dir, dir, dir, dir, port2, dir, dir, dir);
    broker_kill(SIGTERM);
    if (!broker_start_with(0, extra)) {
        EXPECT(false, "a TLS broker with password authentication started");
        return;
    }
    char ca[160], crt[160], key[160];
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    snprintf(crt, sizeof crt, "%s/client.crt", dir);
    snprintf(key, sizeof key, "%s/client.key", dir);
    sd_mqtt_conn good = conn_here();
    good.cafile = ca;
    good.username = "alice";
    good.password = "s3cret";
    good.quiet = true;
    /* the right CA and credentials (and a client certificate): exact delivery */
    sd_ring *ring = sd_bh_ring(256);
    sd_mqtt_config c = {.conn = good, .topic = "trainer-tls", .qos = 1, .ring = ring};
    c.conn.certfile = crt;
    c.conn.keyfile = key;
    sd_mqtt *m = NULL;
    EXPECT_OK(sd_mqtt_create(&c, &m));
    sd_ingest *ing = NULL;
    sd_ingest_config ic = {.source = sd_mqtt_source(m), .ring = ring, .expect = sd_bh_expect(0)};
    EXPECT_OK(sd_ingest_start(&ic, &ing));
    sd_mqtt_pub *p = NULL;
    EXPECT_OK(sd_mqtt_pub_create(&good, 1, &p));
    if (p && ing) {
        mqtt_to to = {p, "trainer-tls"};
        sd_bh_publish(mqtt_send, &to, 0, 0, 100);
        EXPECT_OK(sd_mqtt_pub_flush(p, 10));
    }
    sd_bh_drain_exact(ring, 100, 0, 100, 10, "over TLS with a password");
    sd_mqtt_pub_destroy(p);
    if (ing) EXPECT_OK(sd_ingest_stop(ing));
    sd_mqtt_destroy(m);
    sd_ring_destroy(ring);
    /* a wrong password: refused at once, naming the broker, the user and the fix */
    sd_mqtt_conn bad = good;
    bad.password = "wrong";
    bad.connect_attempts = 3;
    double t0 = sd_clock_now();
    p = NULL;
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", broker_port);
    EXPECT_FAIL(sd_mqtt_pub_create(&bad, 1, &p), SD_ERR_IO, "refused the connection for user 'alice'");
    EXPECT(strstr(sd_last_error(), where) && strstr(sd_last_error(), "--username/--password") &&
               strstr(sd_last_error(), "not authorised") && sd_clock_now() - t0 < 3,
           "names the broker, the broker's reason and what to check, at once: %s", sd_last_error());
    printf("wrong password: %s\n", sd_last_error_brief());
    /* the same for the source: its start fails, at once */
    sd_mqtt_config bc = {.conn = bad, .topic = "trainer-tls", .qos = 1};
    EXPECT_OK(sd_mqtt_create(&bc, &m));
    sd_source bs = sd_mqtt_source(m);
    t0 = sd_clock_now();
    EXPECT_FAIL(bs.ops->start(bs.ctx), SD_ERR_IO, "refused the connection for user 'alice'");
    EXPECT(sd_clock_now() - t0 < 3, "the source gives up at once (%.2f s)", sd_clock_now() - t0);
    sd_mqtt_destroy(m);
    m = NULL;
    /* and scadles-publish: exit status 1 with that message, no hang */
    char exe[600];
    if (sd_bh_app_path("scadles-publish", exe, sizeof exe)) {
        static char out[16384];
        char port[16];
        snprintf(port, sizeof port, "%d", broker_port);
        char *argv[] = {exe, "--broker", "mqtt", "--host", "127.0.0.1", "--port", port, "--cafile", ca, "--username",
                        "alice", "--password", "wrong", "--devices", "1", "--count", "5", "--dataset", "synthetic", NULL};
        t0 = sd_clock_now();
        int rc = sd_bh_run_capture(argv, out, sizeof out, 30);
        EXPECT(rc == 1 && strstr(out, where) && strstr(out, "'alice'") && strstr(out, "--password") &&
                   sd_clock_now() - t0 < 10,
               "scadles-publish with a wrong password: exit %d after %.1f s:\n%s", rc, sd_clock_now() - t0, out);
    }
    /* anonymous: refused too, saying a username is needed */
    bad = good;
    bad.username = bad.password = NULL;
    EXPECT_FAIL(sd_mqtt_pub_create(&bad, 1, &p), SD_ERR_IO, "refused the anonymous connection");
    EXPECT(strstr(sd_last_error(), "give a username and password") != NULL, "%s", sd_last_error());
    /* plain MQTT to the TLS port, and TLS with a CA that did not sign the broker's certificate: bounded failures */
    bad = good;
    bad.cafile = NULL;
    bad.connect_attempts = 2;
    bad.connect_timeout_s = 3;
    t0 = sd_clock_now();
    EXPECT_FAIL(sd_mqtt_pub_create(&bad, 1, &p), SD_ERR_IO, "unreachable");
    EXPECT(sd_clock_now() - t0 < 4, "plain to a TLS port: bounded (%.2f s)", sd_clock_now() - t0);
    bad = good;
    bad.cafile = crt; /* the client's certificate is no CA */
    bad.connect_attempts = 2;
    bad.connect_timeout_s = 3;
    t0 = sd_clock_now();
    EXPECT_FAIL(sd_mqtt_pub_create(&bad, 1, &p), SD_ERR_IO, "no TLS connection to the MQTT broker");
    EXPECT(sd_clock_now() - t0 < 4, "wrong CA: bounded (%.2f s)", sd_clock_now() - t0);
    printf("wrong CA: %s\n", sd_last_error_brief());
    if (have_other) { /* a real CA, but not the broker's */
        char ca2[200];
        snprintf(ca2, sizeof ca2, "%s/ca.crt", dir2);
        bad.cafile = ca2;
        t0 = sd_clock_now();
        EXPECT_FAIL(sd_mqtt_pub_create(&bad, 1, &p), SD_ERR_IO, "no TLS connection to the MQTT broker");
        EXPECT(strstr(sd_last_error(), "CA file") && sd_clock_now() - t0 < 4, "unknown CA: bounded, names the CA file (%.2f s): %s",
               sd_clock_now() - t0, sd_last_error());
        printf("unknown CA: %s\n", sd_last_error_brief());
    }
    /* a listener that requires a client certificate: without one, refused (bounded, says so); with one, in */
    bad = good;
    bad.port = port2;
    bad.connect_attempts = 2;
    bad.connect_timeout_s = 3;
    t0 = sd_clock_now();
    EXPECT_FAIL(sd_mqtt_pub_create(&bad, 1, &p), SD_ERR_IO, "client certificate");
    EXPECT(sd_clock_now() - t0 < 4, "no client certificate: bounded (%.2f s)", sd_clock_now() - t0);
    printf("no client certificate: %s\n", sd_last_error_brief());
    bad.certfile = crt;
    bad.keyfile = key;
    EXPECT_OK(sd_mqtt_pub_create(&bad, 1, &p));
    sd_mqtt_pub_destroy(p);
    p = NULL;
    broker_kill(SIGTERM);
}

int main(void) {
    if (access(MOSQUITTO, X_OK)) return sd_test_skip("test_mqtt", MOSQUITTO " not found (Debian: apt-get install mosquitto)");
    atexit(broker_cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGABRT, on_signal);
    signal(SIGSEGV, on_signal);
    signal(SIGPIPE, SIG_IGN);
    test_config_errors();
    test_unreachable();
    if (!broker_start(0)) {
        EXPECT(false, "could not start %s on a loopback port", MOSQUITTO);
        return sd_test_finish("test_mqtt");
    }
    printf("mosquitto running on 127.0.0.1:%d (pid %d)\n", broker_port, (int)broker_pid);
    test_exact(0, 2000);
    test_exact(1, 2000);
    test_exact(2, 500);
    test_qos1_resend();
    test_malformed();
    test_overflow();
    test_publish_app();
    test_broker_restart();
    test_tls_auth();
    broker_cleanup();
    return sd_test_finish("test_mqtt");
}

#else
int main(void) {
    if (access(MOSQUITTO, X_OK)) return sd_test_skip("test_mqtt", MOSQUITTO " not found (Debian: apt-get install mosquitto)");
    return sd_test_skip("test_mqtt", "built without libmosquitto (Debian: apt-get install libmosquitto-dev, re-run cmake)");
}
#endif
