/* test_dist_brokers.c: the distributed trainer streaming from brokers (stream.source kafka | mqtt,
 * docs/distributed.md, "Training from a broker"). Kafka against librdkafka's in-process mock
 * cluster: 2 devices, a known number of samples published per device, a real-clock scadles run
 * stopped with a checkpoint (--stop-at), more samples published, then resumed: every published
 * sample is trained or still buffered exactly once over the two invocations (sum of the global
 * batches + the final buffers + drops = published, no drops), and the group's committed offsets
 * cover everything the checkpoint held. MQTT against a mosquitto started on a loopback port: a few
 * seconds of training from samples published while it runs. And the configuration refusals
 * (broker source under the virtual clock, missing bootstrap servers or host). Skips (77) without
 * Fashion-MNIST, and the broker parts without librdkafka / libmosquitto / mosquitto. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "engine/distributed.h"
#include "engine/experiment.h"
#include "stream/kafka.h"
#include "stream/message.h"
#include "stream/mqtt.h"
#include "tests/broker_harness.h"
#include "tests/harness.h"

#ifdef SCADLES_HAVE_KAFKA
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#endif

#define DEVICES 2
#define IMG 784

/* The experiment every broker case trains: 2 devices, scadles, real clock, a quarter-width CNN. */
static void setup(sd_experiment *e, const char *out, const char *const *extra, int nextra) {
    sd_experiment_defaults(e);
    const char *sets[] = {"devices.rates=50,50", "modes=scadles", "clock=real", "window_s=0.5", "cap=128",
                          "eval_limit=100", "eval_every_s=1000", "target_accuracy=0.99", "threads=1", "width=0.25",
                          "stream.connect_timeout_s=5"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) EXPECT_OK(sd_experiment_set(e, sets[i]));
    char buf[600];
    snprintf(buf, sizeof buf, "out_dir=%s", out);
    EXPECT_OK(sd_experiment_set(e, buf));
    for (int i = 0; i < nextra; i++) EXPECT_OK(sd_experiment_set(e, extra[i]));
    EXPECT_OK(sd_experiment_resolve(e));
}

/* Encodes Fashion-MNIST-shaped sample `seq` of device dev (label seq % 10), message version 1 or 2. */
static size_t make_sample_v(uint8_t *buf, size_t cap, uint32_t dev, uint64_t seq, uint16_t version) {
    uint8_t px[IMG];
    for (int i = 0; i < IMG; i++) px[i] = (uint8_t)((seq * 7 + (uint64_t)i * 3 + dev) & 0xff);
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 28, 28}, .label = (int32_t)(seq % 10), .device = dev,
                     .seq = seq, .version = version};
    size_t len = 0;
    EXPECT_OK(sd_msg_encode(&m, px, sizeof px, buf, cap, &len));
    return len;
}
static size_t make_sample(uint8_t *buf, size_t cap, uint32_t dev, uint64_t seq) { return make_sample_v(buf, cap, dev, seq, 1); }

/* The whole of a small text file into buf ("" when it cannot be read). */
static const char *slurp(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return buf;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* The number after "key": in the text from `from` on (-1: absent). */
static long long json_num_after(const char *from, const char *key) {
    const char *p = sd_test_json_after(from, key);
    return p ? atoll(p) : -1;
}

/* Sums over metrics.jsonl: the global batches (streamed samples trained), and the last line's
 * buffers and drop count. */
typedef struct run_totals {
    long long trained, buffered, dropped;
    int steps;
} run_totals;

static run_totals read_metrics(const char *out) {
    run_totals t = {0, 0, 0, 0};
    char path[700];
    snprintf(path, sizeof path, "%s/scadles-seed1/metrics.jsonl", out);
    FILE *f = fopen(path, "r");
    EXPECT(f != NULL, "open %s", path);
    if (!f) return t;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        const char *g = strstr(line, "\"global_batch\": ");
        const char *d = strstr(line, "\"dropped\": ");
        const char *b = strstr(line, "\"buffer\": [");
        if (!g || !d || !b) continue;
        t.trained += atoll(g + 16);
        t.dropped = atoll(d + 11);
        t.buffered = 0;
        for (const char *p = b + 11; *p && *p != ']';) {
            t.buffered += strtoll(p, (char **)&p, 10);
            while (*p == ',' || *p == ' ') p++;
        }
        t.steps++;
    }
    fclose(f);
    return t;
}

static void rm_rf(const char *dir) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- configuration refusals ---------------------------------------------------------------------- */
static void test_config(void) {
    sd_experiment e;
    sd_experiment_defaults(&e);
    EXPECT_OK(sd_experiment_set(&e, "stream.source=kafka"));
    EXPECT_OK(sd_experiment_set(&e, "stream.kafka.bootstrap=localhost:9092"));
    EXPECT_FAIL(sd_experiment_resolve(&e), SD_ERR_INVALID, "stream.source: kafka needs clock \"real\"");
    EXPECT_OK(sd_experiment_set(&e, "clock=real"));
    EXPECT_OK(sd_experiment_resolve(&e));
    EXPECT_OK(sd_experiment_set(&e, "stream.kafka.bootstrap="));
    EXPECT_FAIL(sd_experiment_resolve(&e), SD_ERR_INVALID, "stream.kafka.bootstrap: is empty");
    /* a bootstrap.servers pair in conf is enough */
    EXPECT_OK(sd_experiment_set(&e, "stream.kafka.conf={\"bootstrap.servers\": \"b:9092\", \"fetch.wait.max.ms\": 20}"));
    EXPECT_OK(sd_experiment_resolve(&e));
    EXPECT(e.stream.kafka.n_conf == 2 && !strcmp(e.stream.kafka.conf[1], "fetch.wait.max.ms=20"), "conf pairs: %d, '%s'",
           e.stream.kafka.n_conf, e.stream.kafka.conf[1]);
    EXPECT_FAIL(sd_experiment_set(&e, "stream.kafka.conf={\"enable.auto.commit\": true}"), SD_ERR_INVALID,
                "enable.auto.commit=true is not allowed");
    EXPECT_FAIL(sd_experiment_set(&e, "stream.kafka.conf=fetch.wait.max.ms"), SD_ERR_INVALID, "stream.kafka.conf");
    EXPECT_FAIL(sd_experiment_set(&e, "stream.kafak.bootstrap=x"), SD_ERR_INVALID, "did you mean 'kafka'?");
    /* the resolved config round-trips, conf pairs included */
    char *json = NULL;
    EXPECT_OK(sd_experiment_to_json(&e, &json));
    sd_experiment back;
    EXPECT_OK(sd_experiment_load_string(json ? json : "{}", "resolved", &back));
    EXPECT(!memcmp(&back, &e, sizeof e), "the resolved config with a stream section loads back to the same struct");
    free(json);

    sd_experiment_defaults(&e);
    EXPECT_OK(sd_experiment_set(&e, "stream.source=mqtt"));
    EXPECT_FAIL(sd_experiment_resolve(&e), SD_ERR_INVALID, "stream.source: mqtt needs clock \"real\"");
    EXPECT_OK(sd_experiment_set(&e, "clock=real"));
    EXPECT_FAIL(sd_experiment_resolve(&e), SD_ERR_INVALID, "stream.mqtt.host: is empty");
    EXPECT_OK(sd_experiment_set(&e, "stream.mqtt.host=127.0.0.1"));
    EXPECT_FAIL(sd_experiment_set(&e, "stream.mqtt.qos=3"), SD_ERR_INVALID, "stream.mqtt.qos");
    EXPECT_OK(sd_experiment_set(&e, "modes=ddp"));
    EXPECT_OK(sd_experiment_resolve(&e)); /* ddp and scadles both train from brokers */
    EXPECT_FAIL(sd_experiment_set(&e, "stream.topic_prefix=a b"), SD_ERR_INVALID, "stream.topic_prefix");
}

/* ---- Kafka: train, stop with a checkpoint, resume -------------------------------------------- */
#ifdef SCADLES_HAVE_KAFKA
/* fast group timing (as test_kafka.c), passed through stream.kafka.conf */
static void publish_kafka(sd_kafka_pub *pub, const char *prefix, uint64_t from, uint64_t to) {
    uint8_t buf[1024];
    for (int dev = 0; dev < DEVICES; dev++) {
        char topic[64];
        snprintf(topic, sizeof topic, "%s%d", prefix, dev);
        for (uint64_t s = from; s < to; s++) {
            size_t len = make_sample(buf, sizeof buf, (uint32_t)dev, s);
            EXPECT_OK(sd_kafka_pub_send(pub, topic, 0, (int32_t)(s % 10), buf, len));
        }
    }
    EXPECT_OK(sd_kafka_pub_flush(pub, 10));
}

/* #20 item 5, end to end: device 0 is a version-2 publisher that sends one message numbered far
 * ahead and later restarts with a new epoch; device 1 is a version-1 publisher that restarts its
 * numbers from 1. Device 0 must lose nothing but the one message (a jump) and take the restart at
 * once; device 1 must show as stalled in drops.json and summary.json. */
static void test_kafka_sequences(rd_kafka_mock_cluster_t *mc, const char *bootstrap, sd_kafka_pub *pub) {
    const char *prefix = "dbs-";
    for (int dev = 0; dev < DEVICES; dev++) {
        char topic[64];
        snprintf(topic, sizeof topic, "%s%d", prefix, dev);
        rd_kafka_mock_topic_create(mc, topic, 1, 1);
    }
    uint8_t buf[1024];
    const uint64_t n = 150, v1n = SD_MSG_SEQ_STALL + 44;
    for (uint64_t s = 0; s < n; s++) {
        size_t len = make_sample_v(buf, sizeof buf, 0, sd_msg_seq_make(100, s), 2);
        EXPECT_OK(sd_kafka_pub_send(pub, "dbs-0", 0, 0, buf, len));
    }
    size_t len = make_sample_v(buf, sizeof buf, 0, sd_msg_seq_make(100, 1u << 31), 2); /* far ahead */
    EXPECT_OK(sd_kafka_pub_send(pub, "dbs-0", 0, 0, buf, len));
    for (uint64_t s = 0; s < n; s++) { /* the restart: a new epoch from 0 */
        len = make_sample_v(buf, sizeof buf, 0, sd_msg_seq_make(107, s), 2);
        EXPECT_OK(sd_kafka_pub_send(pub, "dbs-0", 0, 0, buf, len));
    }
    for (int pass = 0; pass < 2; pass++) /* version 1, restarting from 1: the second pass is all duplicates */
        for (uint64_t s = 1; s <= v1n; s++) {
            len = make_sample_v(buf, sizeof buf, 1, s, 1);
            EXPECT_OK(sd_kafka_pub_send(pub, "dbs-1", 0, 0, buf, len));
        }
    EXPECT_OK(sd_kafka_pub_flush(pub, 10));

    const char *out = "/tmp/sd_test_dist_brokers_seq";
    rm_rf(out);
    char bs[300], od[100];
    snprintf(bs, sizeof bs, "stream.kafka.bootstrap=%s", bootstrap);
    snprintf(od, sizeof od, "stream.topic_prefix=%s", prefix);
    const char *extra[] = {"stream.source=kafka", bs, od, "time_budget_s=4", "stream.kafka.group_id=dbs",
                           "buffer.capacity=4096"};
    sd_experiment e;
    setup(&e, out, extra, 6);
    EXPECT_OK(sd_experiment_run(&e, NULL, NULL));
    char drops[8192], summary[8192], path[700];
    snprintf(path, sizeof path, "%s/scadles-seed1/drops.json", out);
    slurp(path, drops, sizeof drops);
    snprintf(path, sizeof path, "%s/summary.json", out);
    slurp(path, summary, sizeof summary);
    const char *d0 = strstr(drops, "\"device\": 0"), *d1 = strstr(drops, "\"device\": 1");
    printf("kafka sequences: %s", drops);
    EXPECT(d0 && d1, "drops.json has both devices");
    EXPECT(json_num_after(d0, "seq_jump") == 1 && json_num_after(d0, "duplicate") == 0 && json_num_after(d0, "total") == 1,
           "device 0: only the message far ahead was dropped (jump %lld, duplicate %lld, total %lld)",
           json_num_after(d0, "seq_jump"), json_num_after(d0, "duplicate"), json_num_after(d0, "total"));
    EXPECT(json_num_after(d0, "seq_restarts") == 1 && json_num_after(d0, "seq_gaps") == 0 && d0 && strstr(d0, "\"stalled\": false"),
           "device 0: one publisher restart, no gap, not stalled");
    EXPECT(json_num_after(d1, "duplicate") == (long long)v1n && json_num_after(d1, "seq_refused_in_a_row") == (long long)v1n &&
               d1 && strstr(d1, "\"stalled\": true"),
           "device 1: the version-1 restart is %llu duplicates in a row, a stall (duplicate %lld, in a row %lld)",
           (unsigned long long)v1n, json_num_after(d1, "duplicate"), json_num_after(d1, "seq_refused_in_a_row"));
    EXPECT(json_num_after(summary, "stalled_devices") == 1, "summary.json: stalled_devices 1 (%lld)",
           json_num_after(summary, "stalled_devices"));
    EXPECT(json_num_after(summary, "samples_dropped") == 1 + (long long)v1n, "summary.json counts every drop (%lld)",
           json_num_after(summary, "samples_dropped"));
    rm_rf(out);
}

/* The offset group `group` committed for partition 0 of topic (-1: none), read by a separate consumer. */
static int64_t committed_offset(const char *bootstrap, const char *group, const char *topic) {
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) return -2;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    int64_t off = -2;
    if (rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return off;
}

static void test_kafka(void) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        printf("kafka: skipped: this librdkafka has no mock cluster\n");
        return;
    }
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    EXPECT(mock_rk != NULL, "mock cluster: %s", err);
    if (!mock_rk) return;
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(mock_rk);
    char bootstrap[256];
    snprintf(bootstrap, sizeof bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(mc));
    const char *prefix = "dbk-";
    for (int dev = 0; dev < DEVICES; dev++) {
        char topic[64];
        snprintf(topic, sizeof topic, "%s%d", prefix, dev);
        rd_kafka_mock_topic_create(mc, topic, 1, 1);
    }
    sd_kafka_pub *pub = NULL;
    sd_kafka_conn pc = {.bootstrap = bootstrap, .connect_timeout_s = 5};
    EXPECT_OK(sd_kafka_pub_create(&pc, &pub));
    if (!pub) {
        rd_kafka_destroy(mock_rk);
        return;
    }
    double ts = sd_clock_now();
    test_kafka_sequences(mc, bootstrap, pub);
    printf("-- kafka sequences: %.2f s\n", sd_clock_now() - ts);
    const uint64_t first = 300, more = 100;
    publish_kafka(pub, prefix, 1, 1 + first);

    const char *out = "/tmp/sd_test_dist_brokers_kafka";
    rm_rf(out);
    char bs[300], cf[600];
    snprintf(bs, sizeof bs, "stream.kafka.bootstrap=%s", bootstrap);
    snprintf(cf, sizeof cf, "%s", "stream.kafka.conf={\"session.timeout.ms\": 6000, \"heartbeat.interval.ms\": 500, "
             "\"max.poll.interval.ms\": 6000, \"reconnect.backoff.max.ms\": 200, \"fetch.wait.max.ms\": 20, "
             "\"fetch.error.backoff.ms\": 20}");
    char od[600];
    snprintf(od, sizeof od, "stream.topic_prefix=%s", prefix);
    const char *extra[] = {"stream.source=kafka", bs, cf, od, "time_budget_s=14", "stream.kafka.group_id=dbk"};
    sd_experiment e;
    setup(&e, out, extra, 6);

    /* first invocation: stops after step 2 with a checkpoint; the offsets are committed after it */
    double t0 = sd_clock_now();
    sd_run_control ctl = {.stop_at = 2};
    EXPECT_OK(sd_experiment_run_ctl(&e, NULL, NULL, &ctl));
    EXPECT(ctl.stopped && ctl.stopped_step == 2, "stopped after step 2 (stopped %d, step %lld)", ctl.stopped,
           (long long)ctl.stopped_step);
    run_totals a = read_metrics(out);
    printf("kafka: first invocation %.1f s: %d steps, trained %lld, buffered %lld, dropped %lld\n", sd_clock_now() - t0,
           a.steps, a.trained, a.buffered, a.dropped);
    EXPECT(a.steps == 2 && a.trained > 0, "samples were trained before the stop (%lld in %d steps)", a.trained, a.steps);
    /* the group committed everything the devices received, the checkpoint holding what was not trained */
    for (int dev = 0; dev < DEVICES; dev++) {
        char topic[64], group[64];
        snprintf(topic, sizeof topic, "%s%d", prefix, dev);
        snprintf(group, sizeof group, "dbk-%d", dev);
        int64_t off = committed_offset(bootstrap, group, topic);
        EXPECT(off > 0 && off <= (int64_t)first, "device %d: committed offset %lld after the checkpoint", dev, (long long)off);
    }

    /* more samples while the trainer is away, then the second invocation resumes */
    publish_kafka(pub, prefix, 1 + first, 1 + first + more);
    t0 = sd_clock_now();
    sd_run_control ctl2 = {.resume_dir = ctl.checkpoint_dir};
    EXPECT_OK(sd_experiment_run_ctl(&e, NULL, NULL, &ctl2));
    EXPECT(!ctl2.stopped, "the resumed run finished");
    run_totals b = read_metrics(out);
    printf("kafka: resumed invocation %.1f s: %d steps in all, trained %lld, buffered %lld, dropped %lld (published %llu)\n",
           sd_clock_now() - t0, b.steps, b.trained, b.buffered, b.dropped,
           (unsigned long long)(DEVICES * (first + more)));
    EXPECT(b.steps > a.steps && b.trained > a.trained, "the resumed run trained (%lld > %lld)", b.trained, a.trained);
    EXPECT(b.dropped == 0, "nothing dropped (no duplicate reached the ring): %lld", b.dropped);
    EXPECT(b.trained + b.buffered + b.dropped == (long long)(DEVICES * (first + more)),
           "every published sample trained or buffered exactly once over both invocations: %lld + %lld + %lld != %llu",
           b.trained, b.buffered, b.dropped, (unsigned long long)(DEVICES * (first + more)));
    for (int dev = 0; dev < DEVICES; dev++) {
        char topic[64], group[64];
        snprintf(topic, sizeof topic, "%s%d", prefix, dev);
        snprintf(group, sizeof group, "dbk-%d", dev);
        int64_t off = committed_offset(bootstrap, group, topic);
        EXPECT(off == (int64_t)(first + more), "device %d: everything committed at the end (offset %lld)", dev, (long long)off);
    }

    /* a broker that is not there: the run stops at setup naming the device and the brokers */
    int port = sd_bh_free_port();
    char bad[300];
    snprintf(bad, sizeof bad, "stream.kafka.bootstrap=127.0.0.1:%d", port);
    const char *extra2[] = {"stream.source=kafka", bad, "stream.connect_timeout_s=1", "time_budget_s=3"};
    sd_experiment e2;
    setup(&e2, "/tmp/sd_test_dist_brokers_kafka_bad", extra2, 4);
    EXPECT_FAIL(sd_experiment_run(&e2, NULL, NULL), SD_ERR_IO, "could not start its stream kafka(trainer-");
    rm_rf("/tmp/sd_test_dist_brokers_kafka_bad");
    rm_rf(out);
    sd_kafka_pub_destroy(pub);
    rd_kafka_destroy(mock_rk);
}
#endif

/* ---- MQTT: a few seconds of training from a mosquitto on a loopback port ----------------------- */
#ifdef SCADLES_HAVE_MQTT
#define MOSQUITTO "/usr/sbin/mosquitto"
static pid_t broker_pid = -1;
static char broker_dir[64];

static void broker_stop(void) {
    if (broker_pid > 0) {
        kill(broker_pid, SIGKILL);
        waitpid(broker_pid, NULL, 0);
        broker_pid = -1;
    }
    if (broker_dir[0]) {
        rm_rf(broker_dir);
        broker_dir[0] = 0;
    }
}

static int broker_start(void) {
    snprintf(broker_dir, sizeof broker_dir, "/tmp/sd_dbm_XXXXXX");
    if (!mkdtemp(broker_dir)) return -1;
    chmod(broker_dir, 0755);
    int p = sd_bh_free_port();
    char confp[128], log[128];
    snprintf(confp, sizeof confp, "%s/mosquitto.conf", broker_dir);
    snprintf(log, sizeof log, "%s/broker.log", broker_dir);
    FILE *f = fopen(confp, "w");
    if (!f) return -1;
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
               "log_dest stderr\nlog_type error\n", p);
    fclose(f);
    chmod(confp, 0644);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(MOSQUITTO, "mosquitto", "-c", confp, (char *)NULL);
        _exit(127);
    }
    broker_pid = pid;
    double t0 = sd_clock_now();
    while (sd_clock_now() - t0 < 5.0) {
        if (sd_bh_port_open(p)) return p;
        sd_clock_sleep_until(sd_clock_now() + 0.01);
    }
    return -1;
}

typedef struct mqtt_feed {
    int port;
    volatile int stop;
    uint64_t sent;
} mqtt_feed;

/* Publishes to both devices' topics at about 100 samples/s each until told to stop. */
static void *feed_main(void *arg) {
    mqtt_feed *m = arg;
    sd_mqtt_conn c = {.host = "127.0.0.1", .port = m->port, .connect_timeout_s = 5, .quiet = true};
    sd_mqtt_pub *p = NULL;
    if (sd_mqtt_pub_create(&c, 1, &p) != SD_OK) return NULL;
    uint8_t buf[1024];
    for (uint64_t s = 1; !m->stop; s++) {
        for (int dev = 0; dev < DEVICES; dev++) {
            char topic[32];
            snprintf(topic, sizeof topic, "dbm-%d", dev);
            size_t len = make_sample(buf, sizeof buf, (uint32_t)dev, s);
            if (sd_mqtt_pub_send(p, topic, buf, len) == SD_OK) m->sent++;
        }
        sd_clock_sleep_until(sd_clock_now() + 0.01);
    }
    (void)sd_mqtt_pub_flush(p, 2);
    sd_mqtt_pub_destroy(p);
    return NULL;
}

static void test_mqtt(void) {
    if (access(MOSQUITTO, X_OK) != 0) {
        printf("mqtt: skipped: %s not installed (apt-get install mosquitto)\n", MOSQUITTO);
        return;
    }
    int port = broker_start();
    EXPECT(port > 0, "mosquitto started");
    if (port <= 0) {
        broker_stop();
        return;
    }
    mqtt_feed feed = {.port = port};
    pthread_t th;
    EXPECT(pthread_create(&th, NULL, feed_main, &feed) == 0, "publisher thread");
    const char *out = "/tmp/sd_test_dist_brokers_mqtt";
    rm_rf(out);
    char pt[64];
    snprintf(pt, sizeof pt, "stream.mqtt.port=%d", port);
    const char *extra[] = {"stream.source=mqtt", "stream.mqtt.host=127.0.0.1", pt, "stream.topic_prefix=dbm-",
                           "time_budget_s=4"};
    sd_experiment e;
    setup(&e, out, extra, 5);
    double t0 = sd_clock_now();
    EXPECT_OK(sd_experiment_run(&e, NULL, NULL));
    feed.stop = 1;
    pthread_join(th, NULL);
    run_totals t = read_metrics(out);
    printf("mqtt: %.1f s: %d steps, trained %lld, buffered %lld, dropped %lld (published %llu)\n", sd_clock_now() - t0,
           t.steps, t.trained, t.buffered, t.dropped, (unsigned long long)feed.sent);
    EXPECT(t.steps > 0 && t.trained > 0, "trained from MQTT (%lld samples in %d steps)", t.trained, t.steps);
    EXPECT(t.trained + t.buffered + t.dropped <= (long long)feed.sent, "no more samples than were published");
    /* the broker goes away mid-run: MQTT reconnects forever, so the run goes on with what it has
     * and ends at its budget; (a fatal source error ends it naming the device: the Kafka case) */
    rm_rf(out);
    broker_stop();
}
#endif

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    double t0 = sd_clock_now();
    test_config();
    printf("-- config: %.2f s\n", sd_clock_now() - t0);
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        return sd_test_skip("test_dist_brokers", "Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)");
#ifdef SCADLES_HAVE_KAFKA
    t0 = sd_clock_now();
    test_kafka();
    printf("-- kafka: %.2f s\n", sd_clock_now() - t0);
#else
    printf("kafka: skipped: built without librdkafka (apt-get install librdkafka-dev, re-run cmake)\n");
#endif
#ifdef SCADLES_HAVE_MQTT
    t0 = sd_clock_now();
    test_mqtt();
    printf("-- mqtt: %.2f s\n", sd_clock_now() - t0);
#else
    printf("mqtt: skipped: built without libmosquitto (apt-get install libmosquitto-dev, re-run cmake)\n");
#endif
#if !defined(SCADLES_HAVE_KAFKA) && !defined(SCADLES_HAVE_MQTT)
    return sd_test_skip("test_dist_brokers", "built without librdkafka and libmosquitto");
#endif
    return sd_test_finish("test_dist_brokers");
}
