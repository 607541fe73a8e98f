/* bench_brokers.c: scadles-bench_brokers, broker throughput of the stream path. Kafka: samples/s
 * from librdkafka's in-process mock cluster through the Kafka source, the ingest thread (decode,
 * validate, CRC) and a ring drained by a trainer thread, against a bare librdkafka consume loop
 * (poll, touch the value, destroy) on the same cluster and topic, in fresh consumer groups (goal:
 * >= 80% of the bare loop). MQTT: samples/s through a local mosquitto (started on a free loopback
 * port, or --mqtt-port of a running one) at QoS 0 and 1, publisher and subscriber on this host.
 * 784-byte payloads (Fashion-MNIST-shaped u8 samples). Every timed run is validated: the ring
 * receives every sequence number exactly once, in order. Timing starts at the first sample (the
 * group join and the connection are not timed). */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "stream/ingest.h"
#include "stream/kafka.h"
#include "stream/message.h"
#include "stream/mqtt.h"
#include "stream/ring.h"

#ifdef SCADLES_HAVE_KAFKA
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#endif
#ifdef SCADLES_HAVE_MQTT
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#endif

enum { PAYLOAD = 784 };

/* CPU seconds of the whole process (every thread: the mock broker, librdkafka's, ours): the cost of
 * a path, which stays meaningful on a machine shared with other jobs. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct opts {
    long kafka_n, mqtt_n;
    int reps;
    bool kafka, mqtt;
    const char *mqtt_host;
    int mqtt_port;
} opts;

static void usage(FILE *f) {
    fprintf(f, "usage: scadles-bench_brokers [--kafka-messages N] [--mqtt-messages N] [--reps R] [--no-kafka]\n"
               "                             [--no-mqtt] [--mqtt-host H --mqtt-port P]\n"
               "  Kafka (mock cluster): our source -> ingest -> ring vs a bare librdkafka consume loop, samples/s.\n"
               "  MQTT (local mosquitto, started here unless --mqtt-port): QoS 0 and 1, samples/s.\n"
               "  defaults: --kafka-messages 200000 --mqtt-messages 100000 --reps 3\n");
}

__attribute__((unused)) static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- the trainer side: drains the ring, checks the sequence -------------------------------------- */
typedef struct drain {
    sd_ring *ring;
    atomic_bool stop;
    uint64_t taken, expect_next, bad_order;
    double first_t, last_t, first_cpu, last_cpu;
} drain;

__attribute__((unused)) static void *drain_main(void *arg) {
    drain *d = arg;
    enum { B = 1024 }; /* a trainer's step takes a batch, not the whole ring */
    uint8_t *raw = malloc((size_t)B * PAYLOAD);
    uint64_t *seqs = malloc(B * sizeof *seqs);
    sd_ring_batch b = {.raw = raw, .raw_stride = PAYLOAD, .seqs = seqs};
    while (!atomic_load(&d->stop)) {
        size_t got = 0;
        if (sd_ring_take_upto(d->ring, B, &b, &got) != SD_OK) break;
        if (!got) {
            sd_clock_sleep_until(sd_clock_now() + 0.0002);
            continue;
        }
        double now = sd_clock_now(), cpu = cpu_now();
        if (!d->taken) {
            d->first_t = now;
            d->first_cpu = cpu;
        }
        d->last_t = now;
        d->last_cpu = cpu;
        for (size_t i = 0; i < got; i++) {
            if (seqs[i] != d->expect_next) d->bad_order++;
            d->expect_next = seqs[i] + 1;
        }
        d->taken += got;
    }
    free(raw);
    free(seqs);
    return NULL;
}

__attribute__((unused)) static sd_ring *bench_ring(void) {
    sd_ring_config c = {.max_samples = 65536, .max_sample_bytes = PAYLOAD, .policy = SD_RING_PERSIST,
                        .when_full = SD_RING_FULL_BLOCK, .block_timeout_s = -1};
    sd_ring *r = NULL;
    if (sd_ring_create(&c, &r) != SD_OK) {
        fprintf(stderr, "scadles-bench_brokers: %s\n", sd_last_error_brief());
        exit(1);
    }
    return r;
}

__attribute__((unused)) static const sd_msg_expect bench_expect = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 28, 28}, .classes = 10};

__attribute__((unused)) static size_t make_msg(uint8_t *buf, uint64_t seq) {
    uint8_t px[PAYLOAD];
    for (int i = 0; i < PAYLOAD; i++) px[i] = (uint8_t)(seq + (uint64_t)i * 13);
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, 28, 28}, .label = (int32_t)(seq % 10), .seq = seq};
    size_t len = 0;
    sd_msg_encode(&m, px, PAYLOAD, buf, SD_MSG_HEADER_BYTES + PAYLOAD, &len);
    return len;
}

/* Runs one source through ingest into a fresh ring until n samples were taken (or timeout_s);
 * returns samples/s from the first to the last sample (and the process CPU seconds spent in
 * between in *cpu_s), 0 when the run failed validation. */
__attribute__((unused)) static double run_source(sd_source src, uint64_t n, double timeout_s, const char *what, sd_ring *ring,
                                                 double *cpu_s) {
    drain d = {.ring = ring};
    pthread_t th;
    pthread_create(&th, NULL, drain_main, &d);
    sd_ingest *ing = NULL;
    sd_ingest_config ic = {.source = src, .ring = ring, .expect = bench_expect};
    if (sd_ingest_start(&ic, &ing) != SD_OK) {
        fprintf(stderr, "scadles-bench_brokers: %s: %s\n", what, sd_last_error_brief());
        atomic_store(&d.stop, true);
        pthread_join(th, NULL);
        return 0;
    }
    double t0 = sd_clock_now();
    while (sd_clock_now() - t0 < timeout_s) {
        sd_ring_stats st;
        sd_ring_get_stats(ring, &st);
        if (st.received >= n && st.samples == 0) break;
        sd_clock_sleep_until(sd_clock_now() + 0.001);
    }
    sd_clock_sleep_until(sd_clock_now() + 0.01);
    atomic_store(&d.stop, true);
    pthread_join(th, NULL);
    sd_ingest_stop(ing);
    sd_ring_stats st;
    sd_ring_get_stats(ring, &st);
    bool ok = d.taken == n && d.bad_order == 0 && st.rejected == 0;
    if (!ok) {
        fprintf(stderr, "%s: validation failed: took %llu of %llu, %llu out of order, %llu rejected\n", what,
                (unsigned long long)d.taken, (unsigned long long)n, (unsigned long long)d.bad_order,
                (unsigned long long)st.rejected);
        return 0;
    }
    if (cpu_s) *cpu_s = d.last_cpu - d.first_cpu;
    return d.last_t > d.first_t ? (double)(n - 1) / (d.last_t - d.first_t) : 0;
}

/* ================================================================================================ */
#ifdef SCADLES_HAVE_KAFKA
/* The mock cluster keeps about 5 MB per partition: every round gets a fresh topic of ROUND records
 * (4.2 MB), consumed from its beginning by both paths through a direct assignment (no group join). */
enum { ROUND = 5000 };

/* A bare consume loop: poll, touch every value byte once (a checksum), destroy. Seconds from the
 * first record to the last, 0 when not all arrived. */
static double bare_kafka(const char *bootstraps, const char *topic, uint64_t n, uint64_t *sum, double *cpu_s) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "bare", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) return 0;
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    uint64_t got = 0, s = 0;
    double t0 = 0, t1 = 0, c0 = 0, c1 = 0, start = sd_clock_now();
    while (got < n && sd_clock_now() - start < 30) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) continue;
        if (!m->err) {
            const uint8_t *p = m->payload;
            uint64_t acc = 0;
            for (size_t i = 0; i + 8 <= m->len; i += 8) {
                uint64_t v;
                memcpy(&v, p + i, 8);
                acc += v;
            }
            s += acc;
            if (!got) {
                t0 = sd_clock_now();
                c0 = cpu_now();
            }
            got++;
            t1 = sd_clock_now();
            c1 = cpu_now();
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    *sum += s;
    if (got != n) {
        fprintf(stderr, "bare kafka loop: got %llu of %llu\n", (unsigned long long)got, (unsigned long long)n);
        return 0;
    }
    *cpu_s = c1 - c0;
    return t1 - t0;
}

static void bench_kafka(const opts *o) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *mk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!mk) {
        fprintf(stderr, "kafka: no mock cluster: %s\n", err);
        return;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(mk);
    char bs[256];
    snprintf(bs, sizeof bs, "%s", rd_kafka_mock_cluster_bootstraps(mc));
    sd_kafka_conn kc = {.bootstrap = bs, .connect_timeout_s = 5};
    sd_kafka_pub *p = NULL;
    if (sd_kafka_pub_create(&kc, &p) != SD_OK) {
        fprintf(stderr, "kafka: %s\n", sd_last_error_brief());
        rd_kafka_destroy(mk);
        return;
    }
    int rounds = (int)((o->kafka_n + ROUND - 1) / ROUND);
    printf("kafka mock cluster %s: %d rounds of %d records of %d bytes (a fresh topic each)\n", bs, rounds, ROUND,
           SD_MSG_HEADER_BYTES + PAYLOAD);
    uint8_t buf[SD_MSG_HEADER_BYTES + PAYLOAD];
    double bare_t = 0, ours_t = 0, bare_c = 0, ours_c = 0;
    uint64_t bare_n = 0, ours_n = 0, sum = 0, pauses = 0;
    double *ratio_wall = calloc((size_t)rounds, sizeof(double)), *ratio_cpu = calloc((size_t)rounds, sizeof(double));
    int nr = 0;
    for (int r = 0; r < rounds; r++) {
        char topic[64];
        snprintf(topic, sizeof topic, "bench-%d", r);
        rd_kafka_mock_topic_create(mc, topic, 1, 1);
        for (uint64_t i = 0; i < ROUND; i++) {
            size_t len = make_msg(buf, i);
            if (sd_kafka_pub_send(p, topic, 0, (int32_t)(i % 10), buf, len) != SD_OK) {
                fprintf(stderr, "kafka: %s\n", sd_last_error_brief());
                goto out;
            }
        }
        if (sd_kafka_pub_flush(p, 30) != SD_OK) {
            fprintf(stderr, "kafka: %s\n", sd_last_error_brief());
            goto out;
        }
        double rb_t = 0, rb_c = 0, ro_t = 0, ro_c = 0;
        for (int which = 0; which < 2; which++) {
            if ((which ^ r) & 1) { /* alternate the order */
                double c = 0, t = bare_kafka(bs, topic, ROUND, &sum, &c);
                if (t <= 0) goto out;
                bare_t += t;
                bare_c += c;
                rb_t = t;
                rb_c = c;
                bare_n += ROUND - 1;
            } else {
                sd_ring *ring = bench_ring();
                char g[64];
                snprintf(g, sizeof g, "ours-%d", r);
                sd_kafka_config c = {.conn = {.bootstrap = bs, .connect_timeout_s = 5}, .topic = topic, .group_id = g,
                                     .by_partition = true, .partition = 0, .ring = ring};
                sd_kafka *k = NULL;
                double rate = 0, cpu = 0;
                if (sd_kafka_create(&c, &k) == SD_OK)
                    rate = run_source(sd_kafka_source(k), ROUND, 30, "kafka source", ring, &cpu);
                sd_kafka_stats ks;
                sd_kafka_get_stats(k, &ks);
                pauses += ks.pauses;
                sd_kafka_destroy(k);
                sd_ring_destroy(ring);
                if (rate <= 0) goto out;
                ours_t += (ROUND - 1) / rate;
                ours_c += cpu;
                ours_n += ROUND - 1;
                ro_t = (ROUND - 1) / rate;
                ro_c = cpu;
            }
        }
        if (ro_t > 0 && ro_c > 0) {
            ratio_wall[nr] = rb_t / ro_t;
            ratio_cpu[nr++] = rb_c / ro_c;
        }
    }
out:
    if (bare_t > 0 && ours_t > 0) {
        double bare = bare_n / bare_t, ours = ours_n / ours_t;
        printf("kafka wall clock: bare librdkafka loop %.0f samples/s (%.1f MB/s); source -> ingest (decode, CRC) -> "
               "ring -> trainer take %.0f samples/s (%.1f MB/s): %.0f%% of the bare loop (goal >= 80%%)\n",
               bare, bare * PAYLOAD / 1e6, ours, ours * PAYLOAD / 1e6, 100 * ours / bare);
        if (bare_c > 0 && ours_c > 0)
            printf("kafka per process CPU-second (all threads, mock broker included): bare %.0f samples, ours %.0f "
                   "samples: %.0f%% (%llu pauses)\n",
                   bare_n / bare_c, ours_n / ours_c, 100 * (ours_n / ours_c) / (bare_n / bare_c),
                   (unsigned long long)pauses);
    }
    if (nr) {
        qsort(ratio_wall, (size_t)nr, sizeof(double), cmp_double);
        qsort(ratio_cpu, (size_t)nr, sizeof(double), cmp_double);
        printf("kafka median over %d rounds of ours / bare: %.0f%% by wall clock, %.0f%% per CPU-second (quartiles "
               "%.0f%%..%.0f%%)\n",
               nr, 100 * ratio_wall[nr / 2], 100 * ratio_cpu[nr / 2], 100 * ratio_cpu[nr / 4], 100 * ratio_cpu[3 * nr / 4]);
    }
    free(ratio_wall);
    free(ratio_cpu);
    if (sum == 42) printf(" "); /* keep the checksum alive */
    sd_kafka_pub_destroy(p);
    rd_kafka_destroy(mk);
}
#endif

/* ================================================================================================ */
#ifdef SCADLES_HAVE_MQTT
static pid_t broker_pid = -1;

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static bool port_open(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons((uint16_t)port)};
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

/* Starts /usr/sbin/mosquitto on a free loopback port; returns the port or -1. */
static int spawn_broker(char *conf_path, size_t cap) {
    int port = free_port();
    snprintf(conf_path, cap, "/tmp/sd_bench_mosquitto_%d.conf", (int)getpid());
    FILE *f = fopen(conf_path, "w");
    if (!f) return -1;
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n"
               "max_inflight_messages 1000\nlog_dest none\n", port);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl("/usr/sbin/mosquitto", "mosquitto", "-c", conf_path, (char *)NULL);
        _exit(127);
    }
    if (pid < 0) return -1;
    broker_pid = pid;
    double t0 = sd_clock_now();
    while (sd_clock_now() - t0 < 5) {
        if (port_open(port)) return port;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        sd_clock_sleep_until(sd_clock_now() + 0.01);
    }
    return -1;
}

typedef struct pubjob {
    sd_mqtt_pub *p;
    const char *topic;
    uint64_t n;
    double secs;
} pubjob;

static void *pub_main(void *arg) {
    pubjob *j = arg;
    uint8_t buf[SD_MSG_HEADER_BYTES + PAYLOAD];
    double t0 = sd_clock_now();
    for (uint64_t i = 0; i < j->n; i++) {
        size_t len = make_msg(buf, i);
        /* keep at most 2000 in flight, so QoS 0 is not dropped by the broker for a slow reader */
        while (sd_mqtt_pub_outstanding(j->p) > 2000) sd_clock_sleep_until(sd_clock_now() + 0.0001);
        if (sd_mqtt_pub_send(j->p, j->topic, buf, len) != SD_OK) break;
    }
    sd_mqtt_pub_flush(j->p, 60);
    j->secs = sd_clock_now() - t0;
    return NULL;
}

static void bench_mqtt(const opts *o) {
    if (access("/usr/sbin/mosquitto", X_OK) && !o->mqtt_port) {
        printf("mqtt: /usr/sbin/mosquitto not found and no --mqtt-port: skipped\n");
        return;
    }
    char conf[128] = "";
    int port = o->mqtt_port ? o->mqtt_port : spawn_broker(conf, sizeof conf);
    const char *host = o->mqtt_host ? o->mqtt_host : "127.0.0.1";
    if (port < 0) {
        printf("mqtt: could not start mosquitto\n");
        return;
    }
    printf("mqtt broker %s:%d%s\n", host, port, o->mqtt_port ? "" : " (started here)");
    uint64_t n = (uint64_t)o->mqtt_n;
    for (int qos = 0; qos <= 1; qos++) {
        double best = 0, best_pub = 0;
        for (int r = 0; r < o->reps; r++) {
            char topic[64];
            snprintf(topic, sizeof topic, "bench-q%d-%d", qos, r);
            sd_ring *ring = bench_ring();
            sd_mqtt_config c = {.conn = {.host = host, .port = port}, .topic = topic, .qos = qos, .ring = ring,
                                .queue_capacity = 65536, .overflow = SD_MQTT_OVERFLOW_BLOCK};
            sd_mqtt *m = NULL;
            sd_mqtt_pub *p = NULL;
            sd_mqtt_conn pc = {.host = host, .port = port};
            if (sd_mqtt_create(&c, &m) != SD_OK) {
                fprintf(stderr, "mqtt: %s\n", sd_last_error_brief());
                sd_ring_destroy(ring);
                break;
            }
            /* the subscription must be up before publishing: run_source starts it, so start the
             * publisher thread a little later */
            pubjob j = {.topic = topic, .n = n};
            if (sd_mqtt_pub_create(&pc, qos, &p) != SD_OK) {
                fprintf(stderr, "mqtt: %s\n", sd_last_error_brief());
                sd_mqtt_destroy(m);
                sd_ring_destroy(ring);
                break;
            }
            j.p = p;
            drain d = {.ring = ring};
            pthread_t dth, pth;
            pthread_create(&dth, NULL, drain_main, &d);
            sd_ingest *ing = NULL;
            sd_ingest_config ic = {.source = sd_mqtt_source(m), .ring = ring, .expect = bench_expect};
            if (sd_ingest_start(&ic, &ing) != SD_OK) {
                fprintf(stderr, "mqtt: %s\n", sd_last_error_brief());
                atomic_store(&d.stop, true);
                pthread_join(dth, NULL);
                sd_mqtt_pub_destroy(p);
                sd_mqtt_destroy(m);
                sd_ring_destroy(ring);
                break;
            }
            pthread_create(&pth, NULL, pub_main, &j);
            double t0 = sd_clock_now();
            while (sd_clock_now() - t0 < 120) {
                sd_ring_stats st;
                sd_ring_get_stats(ring, &st);
                if (st.received >= n && st.samples == 0) break;
                if (j.secs > 0 && sd_clock_now() - t0 > j.secs + 5) break; /* losses: do not wait forever */
                sd_clock_sleep_until(sd_clock_now() + 0.001);
            }
            pthread_join(pth, NULL);
            sd_clock_sleep_until(sd_clock_now() + 0.01);
            atomic_store(&d.stop, true);
            pthread_join(dth, NULL);
            sd_ingest_stats is;
            sd_ingest_get_stats(ing, &is);
            sd_ingest_stop(ing);
            sd_mqtt_stats ms;
            sd_mqtt_get_stats(m, &ms);
            double rate = d.last_t > d.first_t ? (double)(d.taken - 1) / (d.last_t - d.first_t) : 0;
            bool ok = d.taken + is.seq_gaps == n || d.taken == n;
            printf("  qos %d rep %d: published %llu in %.2f s (%.0f/s); received %llu (%.0f samples/s, %.1f MB/s), "
                   "%llu lost (gaps), %llu queue drops, network thread held %.2f s%s\n",
                   qos, r, (unsigned long long)n, j.secs, n / j.secs, (unsigned long long)d.taken, rate,
                   rate * PAYLOAD / 1e6, (unsigned long long)(n - d.taken), (unsigned long long)ms.queue_dropped,
                   ms.blocked_s, ok && d.bad_order == 0 ? "" : " (VALIDATION FAILED)");
            if (ok && d.bad_order == 0 && rate > best) best = rate;
            if (n / j.secs > best_pub) best_pub = n / j.secs;
            sd_mqtt_pub_destroy(p);
            sd_mqtt_destroy(m);
            sd_ring_destroy(ring);
        }
        printf("mqtt qos %d best of %d: %.0f samples/s received through source -> ingest -> ring (publisher %.0f/s)\n",
               qos, o->reps, best, best_pub);
    }
    if (broker_pid > 0) {
        kill(broker_pid, SIGTERM);
        waitpid(broker_pid, NULL, 0);
        unlink(conf);
    }
}
#endif

int main(int argc, char **argv) {
    opts o = {.kafka_n = 200000, .mqtt_n = 100000, .reps = 3, .kafka = true, .mqtt = true};
    static const sd_cli_option options[] = {
        {"--kafka-messages", true, NULL}, {"--mqtt-messages", true, NULL}, {"--reps", true, NULL},
        {"--no-kafka", false, NULL}, {"--no-mqtt", false, NULL}, {"--mqtt-host", true, NULL},
        {"--mqtt-port", true, NULL}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench_brokers", usage, options, argc, argv);
    for (int i = 0; i < cli.n; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        if (!strcmp(a, "--kafka-messages")) {
            o.kafka_n = atol(v);
        } else if (!strcmp(a, "--mqtt-messages")) {
            o.mqtt_n = atol(v);
        } else if (!strcmp(a, "--reps")) {
            o.reps = atoi(v);
        } else if (!strcmp(a, "--no-kafka")) {
            o.kafka = false;
        } else if (!strcmp(a, "--no-mqtt")) {
            o.mqtt = false;
        } else if (!strcmp(a, "--mqtt-host")) {
            o.mqtt_host = v;
        } else if (!strcmp(a, "--mqtt-port")) {
            o.mqtt_port = atoi(v);
        }
    }
    sd_cli_free(&cli);
    if (o.kafka_n < 2 || o.mqtt_n < 2 || o.reps < 1 || o.mqtt_port < 0 || o.mqtt_port > 65535) {
        fprintf(stderr, "scadles-bench_brokers: need messages >= 2, reps >= 1, a port 1..65535\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
#ifdef SCADLES_HAVE_KAFKA
    if (o.kafka) bench_kafka(&o);
#else
    if (o.kafka) printf("kafka: this build has no librdkafka: skipped\n");
#endif
#ifdef SCADLES_HAVE_MQTT
    if (o.mqtt) bench_mqtt(&o);
#else
    if (o.mqtt) printf("mqtt: this build has no libmosquitto: skipped\n");
#endif
    return 0;
}
