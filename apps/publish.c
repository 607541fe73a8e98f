/* publish.c: scadles-publish, streams a dataset partition (IID or label slices) into Kafka or MQTT
 * at a rate model, one topic per device (`trainer-<rank>`, or one partition per device of a shared
 * Kafka topic), as the edge devices' sensors would, and prints the rate it achieved per device.
 * Messages are the engine's stream format (stream/message.h) made by the replay source
 * (stream/replay.h), so the trainer's Kafka/MQTT source reads them unchanged. Usage and examples:
 * docs/brokers.md. Exit status: 0 done, 1 a broker or runtime failure, 2 a bad command line. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "base/rng.h"
#include "base/status.h"
#include "engine/experiment.h"
#include "stream/dataset.h"
#include "stream/kafka.h"
#include "stream/message.h"
#include "stream/mqtt.h"
#include "stream/partition.h"
#include "stream/rate.h"
#include "stream/replay.h"

#define MAX_CONF 64

typedef struct opts {
    int kafka; /* 1 kafka, 0 mqtt, -1 unset */
    const char *bootstrap, *host;
    int port;
    int devices, device; /* device -1: all */
    const char *rate;    /* a number, a comma-separated list of numbers or a preset name */
    sd_arrival_kind arrival;
    int slices;          /* 0: iid, else classes per device */
    const char *dataset, *data_root;
    bool test_set;
    int64_t synthetic_n;
    uint64_t count;      /* per device; 0: unlimited */
    double seconds;      /* 0: unlimited */
    int qos;
    const char *prefix;
    bool layout_partition;
    const char *topic;   /* layout partition: the shared topic */
    bool create_topics;
    uint64_t seed;
    uint32_t epoch;      /* the publisher's epoch (version-2 messages) */
    sd_msg_dtype dtype;
    const char *conf[MAX_CONF];
    int nconf;
    const char *username, *password, *cafile, *capath, *certfile, *keyfile, *tls_version, *client_id;
    bool tls_insecure;
    double connect_timeout;
    int connect_attempts;
    bool quiet;
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-publish --broker kafka|mqtt [options]\n"
            "  Streams a dataset partition into Kafka or MQTT at a rate model, one topic per device, and\n"
            "  prints the rate achieved. Runs until --count or --seconds is reached, or Ctrl-C.\n"
            "where:\n"
            "  --bootstrap HOST:PORT[,..]  Kafka brokers (default localhost:9092)\n"
            "  --host HOST --port PORT     MQTT broker (default localhost:1883, 8883 with TLS)\n"
            "what:\n"
            "  --devices N                 devices the dataset is partitioned over (default 1)\n"
            "  --device I|all              which device(s) this process publishes for (default all)\n"
            "  --rate R|R0,R1,..|PRESET    samples/s per device, or per-device rates as a list or a preset (device i\n"
            "                              gets rate[i %% length]); presets: %s (default 10)\n"
            "  --arrival constant|poisson  spacing of the arrivals (default constant)\n"
            "  --partition iid|slices:K    IID shares, or K contiguous classes per device (default iid)\n"
            "  --dataset NAME              fashion-mnist | mnist | cifar10 | cifar100 | synthetic (default fashion-mnist)\n"
            "  --data-root DIR             where the dataset files are (default: the dataset's usual place)\n"
            "  --test-set                  stream the test split instead of the training split\n"
            "  --synthetic-n N             images of the synthetic set (1x28x28, 10 classes; default 6000)\n"
            "  --dtype u8|f32              payload type (f32: pixel/255, as the reference's float samples; default u8)\n"
            "  --count M | --seconds S     messages per device, or seconds to run (default: until Ctrl-C)\n"
            "  --seed S                    shuffles, partition and Poisson arrivals (default 1)\n"
            "  --epoch E                   this publisher's epoch, 1..4294967295: the high half of every sequence\n"
            "                              number, so that the trainer tells a restart from a resend; it must grow\n"
            "                              with each start (default: seconds since 2020-01-01, which does)\n"
            "  --topic-prefix P            topics are P<device> (default trainer-)\n"
            "Kafka:\n"
            "  --layout topic|partition    a topic per device (default) or partition <device> of --topic\n"
            "  --topic NAME                the shared topic of --layout partition (default trainers)\n"
            "  --create-topics             create the topics first (1 partition each; --devices for the shared one)\n"
            "  -X KEY=VALUE                any librdkafka property, repeatable: TLS and SASL, e.g.\n"
            "                              -X security.protocol=SASL_SSL -X sasl.mechanisms=PLAIN\n"
            "                              -X sasl.username=U -X sasl.password=P -X ssl.ca.location=ca.pem\n"
            "MQTT:\n"
            "  --qos 0|1|2                 (default 1)\n"
            "  --username U --password P   broker credentials\n"
            "  --cafile F | --capath D     TLS: the CA of the broker's certificate; --certfile F --keyfile F for a\n"
            "                              client certificate; --tls-version tlsv1.2|tlsv1.3; --tls-insecure\n"
            "  --client-id ID\n"
            "both:\n"
            "  --connect-timeout S         how long to try to reach the broker at start (default 10)\n"
            "  --connect-attempts N        MQTT connection attempts at start (default 5)\n"
            "  --quiet                     only the summary\n",
            sd_experiment_presets());
}

static int bad(const char *flag, const char *val, const char *want) {
    fprintf(stderr, "scadles-publish: %s %s: %s (see --help)\n", flag, val ? val : "(missing)", want);
    return 2;
}

static bool num(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end = NULL;
    *out = strtod(s, &end);
    return end && !*end && isfinite(*out);
}

/* --rate: a preset's rates, one number, or a comma-separated list of 1..SD_MAX_DEVICES numbers into
 * rates[]. Returns how many, 0 when v is none of these, -1 when a number is out of (0, 1e9]. */
static int parse_rates(const char *v, double *rates) {
    if (!v || !*v) return 0;
    int n = sd_experiment_preset_rates(v, rates);
    if (n > 0) return n;
    char buf[1024];
    if (strlen(v) >= sizeof buf) return 0;
    snprintf(buf, sizeof buf, "%s", v);
    bool out_of_range = false;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double d;
        if (n == SD_MAX_DEVICES || !num(tok, &d)) return 0;
        if (!(d > 0 && d <= SD_RATE_MAX)) out_of_range = true;
        rates[n++] = d;
    }
    /* "1,,2" or a trailing comma leaves fewer numbers than the commas ask for */
    int commas = 0;
    for (const char *c = v; *c; c++) commas += *c == ',';
    if (n != commas + 1) return 0;
    return out_of_range ? -1 : n;
}

static const sd_cli_option OPTIONS[] = {
    {"--broker", true, "kafka|mqtt"}, {"--bootstrap", true, NULL}, {"--host", true, NULL}, {"--port", true, NULL},
    {"--devices", true, NULL}, {"--device", true, NULL}, {"--rate", true, NULL}, {"--arrival", true, NULL},
    {"--partition", true, NULL}, {"--dataset", true, NULL}, {"--data-root", true, NULL}, {"--test-set", false, NULL},
    {"--synthetic-n", true, NULL}, {"--dtype", true, NULL}, {"--count", true, NULL}, {"--seconds", true, NULL},
    {"--seed", true, NULL}, {"--epoch", true, NULL}, {"--qos", true, NULL}, {"--topic-prefix", true, NULL},
    {"--layout", true, NULL}, {"--topic", true, NULL}, {"--create-topics", false, NULL},
    {"-X", true, "KEY=VALUE, a librdkafka property"}, {"--username", true, NULL}, {"--password", true, NULL},
    {"--cafile", true, NULL}, {"--capath", true, NULL}, {"--certfile", true, NULL}, {"--keyfile", true, NULL},
    {"--tls-version", true, NULL}, {"--tls-insecure", false, NULL}, {"--client-id", true, NULL},
    {"--connect-timeout", true, NULL}, {"--connect-attempts", true, NULL}, {"--quiet", false, NULL}, {NULL},
};

static int parse_args(const sd_cli *cli, opts *o) {
    *o = (opts){.kafka = -1, .devices = 1, .device = -1, .rate = "10", .dataset = "fashion-mnist",
                .synthetic_n = 6000, .qos = 1, .prefix = "trainer-", .topic = "trainers", .seed = 1,
                .dtype = SD_MSG_U8, .connect_timeout = 10, .connect_attempts = 5};
    for (int i = 0; i < cli->n; i++) {
        const char *a = cli->args[i].flag, *v = cli->args[i].value;
        double d;
        if (!strcmp(a, "--broker")) {
            if (!v || (strcmp(v, "kafka") && strcmp(v, "mqtt"))) return bad(a, v, "must be kafka|mqtt");
            o->kafka = !strcmp(v, "kafka");
        } else if (!strcmp(a, "--bootstrap")) {
            if (!v || !*v) return bad(a, v, "needs HOST:PORT[,HOST:PORT...]");
            o->bootstrap = v;
        } else if (!strcmp(a, "--host")) {
            if (!v || !*v) return bad(a, v, "needs a host name or address");
            o->host = v;
        } else if (!strcmp(a, "--port")) {
            if (!num(v, &d) || d < 1 || d > 65535 || d != floor(d)) return bad(a, v, "must be a port 1..65535");
            o->port = (int)d;
        } else if (!strcmp(a, "--devices")) {
            if (!num(v, &d) || d < 1 || d > SD_MAX_DEVICES || d != floor(d))
                return bad(a, v, "must be a whole number 1..64");
            o->devices = (int)d;
        } else if (!strcmp(a, "--device")) {
            if (v && !strcmp(v, "all"))
                o->device = -1;
            else if (!num(v, &d) || d < 0 || d >= SD_MAX_DEVICES || d != floor(d))
                return bad(a, v, "must be a device number 0..devices-1, or all");
            else
                o->device = (int)d;
        } else if (!strcmp(a, "--rate")) {
            double rates[SD_MAX_DEVICES];
            int n = parse_rates(v, rates);
            if (n == 0) {
                char want[200];
                snprintf(want, sizeof want, "must be samples/s (> 0), a list of 1..%d of them (50,38,12), or one of the "
                         "presets %s", SD_MAX_DEVICES, sd_experiment_presets());
                return bad(a, v, want);
            }
            if (n < 0) return bad(a, v, "a rate must lie in (0, 1e9] samples/s");
            o->rate = v;
        } else if (!strcmp(a, "--arrival")) {
            if (!v || (strcmp(v, "constant") && strcmp(v, "poisson"))) return bad(a, v, "must be constant|poisson");
            o->arrival = !strcmp(v, "poisson") ? SD_ARRIVAL_POISSON : SD_ARRIVAL_CONSTANT;
        } else if (!strcmp(a, "--partition")) {
            if (v && !strcmp(v, "iid")) {
                o->slices = 0;
            } else if (v && !strncmp(v, "slices:", 7) && num(v + 7, &d) && d >= 1 && d <= 1000 && d == floor(d)) {
                o->slices = (int)d;
            } else {
                return bad(a, v, "must be iid or slices:K (K classes per device)");
            }
        } else if (!strcmp(a, "--dataset")) {
            if (!v || !*v) return bad(a, v, "needs fashion-mnist|mnist|cifar10|cifar100|synthetic");
            o->dataset = v;
        } else if (!strcmp(a, "--data-root")) {
            if (!v) return bad(a, v, "needs a directory");
            o->data_root = v;
        } else if (!strcmp(a, "--test-set")) {
            o->test_set = true;
        } else if (!strcmp(a, "--synthetic-n")) {
            if (!num(v, &d) || d < 1 || d > 1e7 || d != floor(d)) return bad(a, v, "must be 1..1e7");
            o->synthetic_n = (int64_t)d;
        } else if (!strcmp(a, "--dtype")) {
            if (!v || (strcmp(v, "u8") && strcmp(v, "f32"))) return bad(a, v, "must be u8|f32");
            o->dtype = !strcmp(v, "f32") ? SD_MSG_F32 : SD_MSG_U8;
        } else if (!strcmp(a, "--count")) {
            if (!num(v, &d) || d < 1 || d > 1e15 || d != floor(d)) return bad(a, v, "must be a whole number >= 1");
            o->count = (uint64_t)d;
        } else if (!strcmp(a, "--seconds")) {
            if (!num(v, &d) || !(d > 0) || d > 1e7) return bad(a, v, "must be > 0 seconds");
            o->seconds = d;
        } else if (!strcmp(a, "--seed")) {
            if (!num(v, &d) || d < 0 || d > 9007199254740992.0 || d != floor(d)) return bad(a, v, "must be a whole number >= 0");
            o->seed = (uint64_t)d;
        } else if (!strcmp(a, "--epoch")) {
            if (!num(v, &d) || d < 1 || d > 4294967295.0 || d != floor(d)) return bad(a, v, "must be a whole number in 1..4294967295");
            o->epoch = (uint32_t)d;
        } else if (!strcmp(a, "--qos")) {
            if (!v || strlen(v) != 1 || v[0] < '0' || v[0] > '2') return bad(a, v, "must be 0, 1 or 2");
            o->qos = v[0] - '0';
        } else if (!strcmp(a, "--topic-prefix")) {
            if (!v || !*v || strlen(v) > 200) return bad(a, v, "needs a prefix (e.g. trainer-)");
            o->prefix = v;
        } else if (!strcmp(a, "--layout")) {
            if (!v || (strcmp(v, "topic") && strcmp(v, "partition"))) return bad(a, v, "must be topic|partition");
            o->layout_partition = !strcmp(v, "partition");
        } else if (!strcmp(a, "--topic")) {
            if (!v || !*v || strlen(v) > 200) return bad(a, v, "needs a topic name");
            o->topic = v;
        } else if (!strcmp(a, "--create-topics")) {
            o->create_topics = true;
        } else if (!strcmp(a, "-X")) {
            if (!v || !strchr(v, '=') || v[0] == '=') return bad(a, v, "needs KEY=VALUE (a librdkafka property)");
            if (o->nconf == MAX_CONF) return bad(a, v, "too many -X settings (64 at most)");
            o->conf[o->nconf++] = v;
        } else if (!strcmp(a, "--username")) {
            if (!v) return bad(a, v, "needs a user name");
            o->username = v;
        } else if (!strcmp(a, "--password")) {
            if (!v) return bad(a, v, "needs a password");
            o->password = v;
        } else if (!strcmp(a, "--cafile")) {
            if (!v) return bad(a, v, "needs a PEM file");
            o->cafile = v;
        } else if (!strcmp(a, "--capath")) {
            if (!v) return bad(a, v, "needs a directory");
            o->capath = v;
        } else if (!strcmp(a, "--certfile")) {
            if (!v) return bad(a, v, "needs a PEM file");
            o->certfile = v;
        } else if (!strcmp(a, "--keyfile")) {
            if (!v) return bad(a, v, "needs a PEM file");
            o->keyfile = v;
        } else if (!strcmp(a, "--tls-version")) {
            if (!v) return bad(a, v, "needs tlsv1.2 or tlsv1.3");
            o->tls_version = v;
        } else if (!strcmp(a, "--tls-insecure")) {
            o->tls_insecure = true;
        } else if (!strcmp(a, "--client-id")) {
            if (!v || !*v) return bad(a, v, "needs an id");
            o->client_id = v;
        } else if (!strcmp(a, "--connect-timeout")) {
            if (!num(v, &d) || !(d > 0) || d > 3600) return bad(a, v, "must be in (0, 3600] seconds");
            o->connect_timeout = d;
        } else if (!strcmp(a, "--connect-attempts")) {
            if (!num(v, &d) || d < 1 || d > 1000 || d != floor(d)) return bad(a, v, "must be 1..1000");
            o->connect_attempts = (int)d;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = true;
        } else {
            fprintf(stderr, "scadles-publish: unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    if (o->kafka < 0) return bad("--broker", NULL, "must be kafka|mqtt");
    if (!o->epoch) { /* seconds since 2020-01-01: grows with every start a second or more apart */
        time_t now = time(NULL);
        o->epoch = now > 1577836800 ? (uint32_t)(now - 1577836800) : 1;
    }
    if (o->device >= o->devices) {
        fprintf(stderr, "scadles-publish: --device %d: there are only %d devices (0..%d)\n", o->device, o->devices,
                o->devices - 1);
        return 2;
    }
    if (o->count && o->seconds) {
        fprintf(stderr, "scadles-publish: give --count or --seconds, not both\n");
        return 2;
    }
    if (o->kafka && (o->host || o->port || o->username || o->cafile || o->capath || o->certfile || o->client_id)) {
        fprintf(stderr, "scadles-publish: --host/--port/--username/--cafile/--certfile/--client-id are MQTT options; for "
                        "Kafka use --bootstrap and -X (e.g. -X sasl.username=U)\n");
        return 2;
    }
    if (!o->kafka && (o->bootstrap || o->nconf || o->layout_partition || o->create_topics)) {
        fprintf(stderr, "scadles-publish: --bootstrap/-X/--layout/--create-topics are Kafka options; for MQTT use --host "
                        "and --port\n");
        return 2;
    }
    return 0;
}

static int parse(int argc, char **argv, opts *o) {
    sd_cli cli;
    sd_cli_parse(&cli, "publish", usage, OPTIONS, argc, argv);
    int rc = parse_args(&cli, o);
    sd_cli_free(&cli);
    return rc;
}

/* ---- the dataset --------------------------------------------------------------------------------- */
static sd_status open_dataset(const opts *o, sd_dataset *d) {
    if (strcmp(o->dataset, "synthetic")) return sd_dataset_open(o->dataset, o->data_root, !o->test_set, d);
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->n = o->synthetic_n;
    d->c = 1;
    d->h = d->w = 28;
    d->classes = 10;
    d->images = malloc((size_t)d->n * 784);
    d->labels = malloc((size_t)d->n * sizeof(int32_t));
    if (!d->images || !d->labels) {
        sd_dataset_free(d);
        return SD_FAIL(SD_ERR_OOM, "out of memory for %lld synthetic images", (long long)o->synthetic_n);
    }
    sd_rng r;
    sd_rng_seed(&r, o->seed);
    for (size_t i = 0; i < (size_t)d->n * 784; i += 8) {
        uint64_t v = sd_rng_u64(&r);
        memcpy(d->images + i, &v, 8);
    }
    for (int64_t i = 0; i < d->n; i++) d->labels[i] = (int32_t)(i % 10);
    return SD_OK;
}

/* ---- publishing ------------------------------------------------------------------------------------- */
static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct dev {
    int id;
    sd_replay *r;
    char topic[256];
    int32_t partition;
    double rate;
    uint64_t sent, lost;
    double last_t;
    bool done;
} dev;

int main(int argc, char **argv) {
    opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;

    double preset[SD_MAX_DEVICES];
    int npreset = parse_rates(o.rate, preset); /* checked by parse(): >= 1 */

    sd_dataset data = {0};
    sd_partition part = {0};
    dev devs[SD_MAX_DEVICES];
    int nd = 0;
    sd_kafka_pub *kp = NULL;
    sd_mqtt_pub *mp = NULL;
    rc = 1;

    sd_status s = open_dataset(&o, &data);
    if (s != SD_OK) {
        fprintf(stderr, "scadles-publish: %s\n", sd_last_error_brief());
        return 1;
    }
    s = o.slices ? sd_partition_slices(&data, o.devices, o.slices, o.seed, &part)
                 : sd_partition_iid(&data, o.devices, o.seed, &part);
    if (s != SD_OK) {
        fprintf(stderr, "scadles-publish: partitioning %s over %d devices: %s\n", data.name, o.devices, sd_last_error_brief());
        goto done;
    }
    for (int i = 0; i < o.devices; i++) {
        if (o.device >= 0 && i != o.device) continue;
        dev *d = &devs[nd];
        memset(d, 0, sizeof *d);
        d->id = i;
        double r = preset[i % npreset];
        sd_replay_config rc_ = {.data = &data, .indices = part.index[i], .n_indices = part.count[i],
                                .rate = sd_rate_fixed(r, o.arrival), .seed = o.seed, .device = (uint32_t)i,
                                .dtype = o.dtype, .max_messages = o.count, .epoch = o.epoch};
        s = sd_replay_create(&rc_, &d->r);
        if (s != SD_OK) {
            fprintf(stderr, "scadles-publish: device %d: %s\n", i, sd_last_error_brief());
            goto done;
        }
        d->rate = r;
        if (o.kafka && o.layout_partition) {
            snprintf(d->topic, sizeof d->topic, "%s", o.topic);
            d->partition = i;
        } else {
            snprintf(d->topic, sizeof d->topic, "%s%d", o.prefix, i);
            d->partition = -1;
        }
        nd++;
    }

    /* connect (bounded; the library's message names the broker and the fix) */
    if (o.kafka) {
        sd_kafka_conn kc = {.bootstrap = o.bootstrap ? o.bootstrap : "localhost:9092", .conf = o.conf,
                            .n_conf = (size_t)o.nconf, .connect_timeout_s = o.connect_timeout, .quiet = o.quiet};
        s = sd_kafka_pub_create(&kc, &kp);
        if (s == SD_OK && o.create_topics) {
            const char *names[SD_MAX_DEVICES];
            int n = 0;
            if (o.layout_partition)
                names[n++] = o.topic;
            else
                for (int i = 0; i < nd; i++) names[n++] = devs[i].topic;
            s = sd_kafka_pub_create_topics(kp, names, (size_t)n, o.layout_partition ? o.devices : 1, o.connect_timeout);
        }
    } else {
        sd_mqtt_conn mc = {.host = o.host, .port = o.port, .client_id = o.client_id, .username = o.username,
                           .password = o.password, .cafile = o.cafile, .capath = o.capath, .certfile = o.certfile,
                           .keyfile = o.keyfile, .tls_version = o.tls_version, .tls_insecure = o.tls_insecure,
                           .connect_attempts = o.connect_attempts, .connect_timeout_s = o.connect_timeout,
                           .quiet = o.quiet};
        s = sd_mqtt_pub_create(&mc, o.qos, &mp);
    }
    if (s != SD_OK) {
        fprintf(stderr, "scadles-publish: %s\n", sd_last_error_brief());
        goto done;
    }
    if (!o.quiet) {
        printf("scadles-publish: %s over %d device%s (%s), %s arrivals, to %s", data.name, o.devices,
               o.devices == 1 ? "" : "s", o.slices ? "label slices" : "iid",
               o.arrival == SD_ARRIVAL_POISSON ? "poisson" : "constant", o.kafka ? "kafka" : "mqtt");
        if (o.kafka && o.layout_partition) printf(" topic %s, partition = device", o.topic);
        printf(", epoch %u\n", o.epoch);
        fflush(stdout);
    }

    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    double t0 = sd_clock_now(), last_note = -1e9, max_lag = 0;
    uint64_t total = 0, bytes = 0;
    for (;;) {
        if (interrupted) break;
        int best = -1;
        double bt = INFINITY;
        for (int i = 0; i < nd; i++) {
            if (devs[i].done) continue;
            double t = sd_replay_next_time(devs[i].r);
            if (isinf(t) || (o.seconds > 0 && t > o.seconds)) {
                devs[i].done = true;
                continue;
            }
            if (t < bt) {
                bt = t;
                best = i;
            }
        }
        if (best < 0) break;
        double due = t0 + bt;
        for (double now = sd_clock_now(); now < due && !interrupted; now = sd_clock_now())
            sd_clock_sleep_until(due - now > 0.1 ? now + 0.1 : due);
        if (interrupted) break;
        double lag = sd_clock_now() - due;
        if (lag > max_lag) max_lag = lag;
        dev *d = &devs[best];
        const void *msg;
        size_t len;
        double arrival;
        sd_source_event ev;
        s = sd_replay_next_message(d->r, &msg, &len, &arrival, &ev);
        if (s != SD_OK) {
            fprintf(stderr, "scadles-publish: device %d: %s\n", d->id, sd_last_error_brief());
            goto done;
        }
        if (ev == SD_SOURCE_END) {
            d->done = true;
            continue;
        }
        if (o.kafka) {
            sd_msg_view v;
            sd_msg_check chk;
            int32_t label = sd_msg_decode_header(msg, len, NULL, &v, &chk) == SD_DROP_NONE ? v.meta.label : -1;
            s = sd_kafka_pub_send(kp, d->topic, d->partition, label, msg, len);
            if (s != SD_OK) {
                fprintf(stderr, "scadles-publish: %s\n", sd_last_error_brief());
                goto done;
            }
        } else {
            s = sd_mqtt_pub_send(mp, d->topic, msg, len);
            if (s != SD_OK) {
                d->lost++; /* the broker is away: the trainer sees a gap in the sequence numbers */
                double now = sd_clock_now();
                if (!o.quiet && now - last_note > 5) {
                    fprintf(stderr, "scadles-publish: %s (counting lost messages; reconnecting)\n", sd_last_error_brief());
                    last_note = now;
                }
                continue;
            }
        }
        d->sent++;
        d->last_t = sd_clock_now() - t0;
        total++;
        bytes += len;
    }
    double elapsed = sd_clock_now() - t0;
    s = o.kafka ? sd_kafka_pub_flush(kp, 30) : sd_mqtt_pub_flush(mp, 30);
    if (s != SD_OK) fprintf(stderr, "scadles-publish: %s\n", sd_last_error_brief());

    uint64_t lost = 0;
    for (int i = 0; i < nd; i++) {
        dev *d = &devs[i];
        double span = o.seconds > 0 ? (elapsed < o.seconds ? elapsed : o.seconds) : d->last_t;
        double got = span > 0 ? (double)d->sent / span : 0;
        lost += d->lost;
        printf("device %d -> %s: %llu messages, achieved %.1f/s (target %.1f/s, %.1f%%)", d->id, d->topic,
               (unsigned long long)d->sent, got, d->rate, d->rate > 0 ? 100 * got / d->rate : 0);
        if (d->partition >= 0) printf(" partition %d", (int)d->partition);
        if (d->lost) printf(", %llu lost while disconnected", (unsigned long long)d->lost);
        printf("\n");
    }
    printf("total: %llu messages (%.2f MB) in %.2f s, achieved %.1f messages/s; latest send %.1f ms behind schedule%s\n",
           (unsigned long long)total, bytes / 1e6, elapsed, elapsed > 0 ? total / elapsed : 0, max_lag * 1e3,
           interrupted ? " (interrupted)" : "");
    if (o.kafka) {
        sd_kafka_pub_stats ks;
        sd_kafka_pub_get_stats(kp, &ks);
        printf("kafka: %llu delivered, %llu failed\n", (unsigned long long)ks.delivered, (unsigned long long)ks.failed);
    } else {
        sd_mqtt_pub_stats ms;
        sd_mqtt_pub_get_stats(mp, &ms);
        printf("mqtt: qos %d, %llu completed, %llu lost, %llu reconnections\n", o.qos, (unsigned long long)ms.completed,
               (unsigned long long)lost, (unsigned long long)(ms.connects > 0 ? ms.connects - 1 : 0));
    }
    rc = s == SD_OK ? 0 : 1;
done:
    sd_kafka_pub_destroy(kp);
    sd_mqtt_pub_destroy(mp);
    for (int i = 0; i < nd; i++) sd_replay_destroy(devs[i].r);
    sd_partition_free(&part);
    sd_dataset_free(&data);
    return rc;
}
