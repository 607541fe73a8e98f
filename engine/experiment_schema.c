/* experiment_schema.c: the schema of experiment files (experiment_schema.h): the rate presets, the
 * JSON spellings of the enums, the field tables, the checks of strings, numbers and the special
 * values (rates, seeds, Kafka settings) that loading and validation share, the closest-spelling
 * suggestions and the error and key-path helpers of every message. docs/experiments.md. */
#include "engine/experiment_schema.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models.h"
#include "engine/optim.h"

/* ---- presets ----------------------------------------------------------------------------------- */
/* The paper's stream-rate sets (docs/experiments.md, ../shared/docs/SCADLES.md). */
const sd_exp_preset sd_exp_preset_table[] = {
    {"uniform_s1", 8, {50, 38, 12, 36, 34, 13, 82, 40}},
    {"uniform_s2", 10, {270, 218, 300, 246, 232, 284, 284, 236, 274, 228}},
    {"normal_s1", 10, {92, 38, 62, 42, 48, 88, 90, 22, 44, 28}},
};

const char *sd_experiment_presets(void) { return "uniform_s1 uniform_s2 normal_s1"; }

const sd_exp_preset *sd_exp_find_preset(const char *name) {
    for (size_t i = 0; i < SD_EXP_N_PRESETS; i++)
        if (!strcmp(sd_exp_preset_table[i].name, name)) return &sd_exp_preset_table[i];
    return NULL;
}

int sd_experiment_preset_rates(const char *name, double *rates) {
    const sd_exp_preset *p = name ? sd_exp_find_preset(name) : NULL;
    if (!p) return 0;
    if (rates) memcpy(rates, p->rates, (size_t)p->n * sizeof(double));
    return p->n;
}

/* ---- enum spellings (index = enum value) ------------------------------------------------------- */
static const char *const partition_names[] = {"iid", "slices", "dirichlet", NULL};
static const char *const arrival_names[] = {"constant", "poisson", NULL};
const char *const sd_exp_mode_names[] = {"ddp", "scadles", NULL};
static const char *const backend_names[] = {"local", "mpi", "tcp", NULL};
static const char *const clock_names[] = {"virtual", "real", NULL};
static const char *const policy_names[] = {"persistence", "truncation", "drop-oldest", NULL};
static const char *const full_names[] = {"drop-newest", "backpressure", NULL};
static const char *const compress_names[] = {"off", "always", "paper", "gain", NULL};
static const char *const exchange_names[] = {"allgather", "allreduce", "auto", NULL}; /* sd_sparse_exchange order */
static const char *const bn_names[] = {"local", "average", NULL};
static const char *const nonfinite_names[] = {"stop", "skip", NULL};
static const char *const link_emulation_names[] = {"off", "token_bucket", NULL};
static const char *const compute_names[] = {"cpu", "cuda", NULL};
static const char *const collectives_names[] = {"host", "nccl", NULL};
const char *const sd_exp_source_names[] = {"replay", "kafka", "mqtt", NULL};
/* stream/dataset.h's sd_dataset_open names and their class counts */
const char *const sd_exp_dataset_names[] = {"fashion-mnist", "mnist", "cifar10", "cifar100", NULL};
const int sd_exp_dataset_classes[] = {10, 10, 10, 100};

const char *sd_exp_mode_name(sd_exp_mode m) {
    return (unsigned)m < (unsigned)(sizeof sd_exp_mode_names / sizeof sd_exp_mode_names[0] - 1) ? sd_exp_mode_names[m] : "unknown";
}

const char *sd_exp_source_name(sd_source_kind s) {
    return (unsigned)s < (unsigned)(sizeof sd_exp_source_names / sizeof sd_exp_source_names[0] - 1) ? sd_exp_source_names[s] : "unknown";
}

int sd_exp_name_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

int sd_exp_name_index(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

/* "a, b, c" */
void sd_exp_join_names(const char *const *names, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", names[i]);
}

/* ---- suggestions: the closest spelling among the allowed ones ---------------------------------- */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(int));
    }
    return prev[lb];
}

/* The closest candidate within edit distance max(2, len/3), or one that is a prefix of the word
 * (or the word of it, 3+ characters), or shares its first two thirds; NULL when none is close. */
const char *sd_exp_closest(const char *word, const char *const *cands, int n) {
    const char *best = NULL;
    int best_d = 1 << 20;
    size_t lw = strlen(word);
    for (int i = 0; i < n; i++) {
        int d = edit_distance(word, cands[i]);
        size_t lc = strlen(cands[i]), m = lw < lc ? lw : lc, common = 0;
        while (common < m && word[common] == cands[i][common]) common++;
        int limit = lw / 3 > 2 ? (int)(lw / 3) : 2;
        bool prefix = (m >= 3 && common == m) || (common >= 4 && 3 * common >= 2 * lw);
        if (d > limit && !prefix) continue;
        if (d < best_d) best_d = d, best = cands[i];
    }
    return best;
}

/* ---- errors ------------------------------------------------------------------------------------ */
/* Every schema error: "<origin>: <key path>: <what>", status SD_ERR_INVALID. */
sd_status sd_exp_bad(const char *func, const char *file, int line, const char *origin, const char *path, const char *fmt, ...) {
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sd_set_error(SD_ERR_INVALID, func, file, line, "%s%s%s: %s", origin ? origin : "", origin ? ": " : "",
                        path && path[0] ? path : "(top level)", msg);
}

/* The shortest of %.15g..%.17g that reads back to exactly v. */
void sd_exp_fmt_double(double v, char *buf, size_t n) {
    if (!isfinite(v)) {
        snprintf(buf, n, "null");
        return;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* Key paths; an over-long one (not reachable through the schema) ends in "..." */
static void mark_truncated(char *out, int k) {
    if (k < 0 || k >= PATH_MAX_LEN) memcpy(out + PATH_MAX_LEN - 4, "...", 4);
}

void sd_exp_child_path(char *out, const char *path, const char *key) {
    int k = path && path[0] ? snprintf(out, PATH_MAX_LEN, "%s.%s", path, key) : snprintf(out, PATH_MAX_LEN, "%s", key);
    mark_truncated(out, k);
}

void sd_exp_index_path(char *out, const char *path, int i) { mark_truncated(out, snprintf(out, PATH_MAX_LEN, "%s[%d]", path, i)); }

/* ---- the schema -------------------------------------------------------------------------------- */
static sd_status check_name(const char *v, const char *origin, const char *path);
static sd_status check_path(const char *v, const char *origin, const char *path);
static sd_status check_text(const char *v, const char *origin, const char *path);
static sd_status check_model(const char *v, const char *origin, const char *path);
static sd_status check_dataset(const char *v, const char *origin, const char *path);
static sd_status check_schedule_syntax(const char *v, const char *origin, const char *path);
static sd_status check_topic_prefix(const char *v, const char *origin, const char *path);
static sd_status check_name_or_empty(const char *v, const char *origin, const char *path);
static sd_status check_path_or_empty(const char *v, const char *origin, const char *path);
static sd_status check_host(const char *v, const char *origin, const char *path);

#define MEMBER_SIZE(T, m) sizeof(((T *)0)->m)
#define FSTR(k, T, m, chk) {.key = k, .type = F_STR, .off = offsetof(T, m), .size = MEMBER_SIZE(T, m), .check = chk}
#define FNUM(k, T, m, l, h, fl) {.key = k, .type = F_NUM, .off = offsetof(T, m), .lo = l, .hi = h, .flags = fl, .scale = 1}
#define FINT(k, T, m, l, h) {.key = k, .type = F_INT, .off = offsetof(T, m), .lo = l, .hi = h, .scale = 1}
#define FI64(k, T, m, l, h) {.key = k, .type = F_I64, .off = offsetof(T, m), .lo = l, .hi = h, .scale = 1}
#define FU64(k, T, m, l, h) {.key = k, .type = F_U64, .off = offsetof(T, m), .lo = l, .hi = h, .scale = 1}
#define FBOOL(k, T, m) {.key = k, .type = F_BOOL, .off = offsetof(T, m)}
#define FENUM(k, T, m, nm) {.key = k, .type = F_ENUM, .off = offsetof(T, m), .names = nm}
#define FOBJ(k, T, m, tbl) {.key = k, .type = F_OBJ, .off = offsetof(T, m), .sub = tbl}
#define FEND {.key = NULL}

#define INF INFINITY
#define I53 9007199254740992.0

/* One device of devices.list: flat keys, units as in devices.compute and devices.link. */
#define DEVF(k, m, l, h, fl, sc, b) \
    {.key = k, .type = F_NUM, .off = offsetof(sd_exp_device, m), .lo = l, .hi = h, .flags = fl, .scale = sc, .bit = b}
const sd_exp_field sd_exp_device_fields[] = {
    DEVF("rate", rate, 0, RATE_MAX, LO_OPEN, 1, SD_EXP_DEV_RATE),
    DEVF("samples_per_s", profile.samples_per_s, 0, 1e12, LO_OPEN | FORM_MODELLED, 1, SD_EXP_DEV_SAMPLES_PER_S),
    DEVF("step_overhead_s", profile.step_overhead_s, 0, 3600, FORM_MODELLED, 1, SD_EXP_DEV_STEP_OVERHEAD),
    DEVF("bandwidth_bps", profile.bandwidth_bps, 0, 1e15, LO_OPEN, 1, SD_EXP_DEV_BANDWIDTH),
    DEVF("bandwidth_mbps", profile.bandwidth_bps, 0, 1e9, LO_OPEN | ALIAS, 1e6, SD_EXP_DEV_BANDWIDTH),
    DEVF("latency_s", profile.latency_s, 0, 3600, 0, 1, SD_EXP_DEV_LATENCY),
    DEVF("latency_ms", profile.latency_s, 0, 3.6e6, ALIAS, 1e-3, SD_EXP_DEV_LATENCY),
    {.key = "profile", .type = F_STR, .off = offsetof(sd_exp_device, profile.profile), .size = SD_PROFILE_PATH_LEN,
     .flags = FORM_MEASURED, .bit = SD_EXP_DEV_PROFILE, .check = check_path_or_empty},
    DEVF("slowdown", profile.slowdown, 0, 1e6, LO_OPEN, 1, SD_EXP_DEV_SLOWDOWN),
    FEND,
};

/* devices.compute: modelled (samples_per_s, step_overhead_s) or measured (profile), x slowdown */
static const sd_exp_field compute_fields[] = {
    FNUM("samples_per_s", sd_device_profile, samples_per_s, 0, 1e12, LO_OPEN | FORM_MODELLED),
    FNUM("step_overhead_s", sd_device_profile, step_overhead_s, 0, 3600, FORM_MODELLED),
    {.key = "profile", .type = F_STR, .off = offsetof(sd_device_profile, profile), .size = SD_PROFILE_PATH_LEN,
     .flags = FORM_MEASURED, .check = check_path_or_empty},
    FNUM("slowdown", sd_device_profile, slowdown, 0, 1e6, LO_OPEN),
    FEND,
};

static const sd_exp_field link_fields[] = {
    FNUM("bandwidth_bps", sd_device_profile, bandwidth_bps, 0, 1e15, LO_OPEN),
    {.key = "bandwidth_mbps", .type = F_NUM, .off = offsetof(sd_device_profile, bandwidth_bps), .lo = 0, .hi = 1e9,
     .flags = LO_OPEN | ALIAS, .scale = 1e6},
    FNUM("latency_s", sd_device_profile, latency_s, 0, 3600, 0),
    {.key = "latency_ms", .type = F_NUM, .off = offsetof(sd_device_profile, latency_s), .lo = 0, .hi = 3.6e6,
     .flags = ALIAS, .scale = 1e-3},
    FEND,
};

static const sd_exp_field devices_fields[] = {
    FINT("count", sd_exp_devices, count, 0, SD_MAX_DEVICES),
    {.key = "rates", .type = F_RATES, .off = offsetof(sd_exp_devices, rates)},
    FU64("rate_seed", sd_exp_devices, rate_seed, 0, I53),
    FENUM("arrival", sd_exp_devices, arrival, arrival_names),
    FOBJ("compute", sd_exp_devices, profile, compute_fields),
    FOBJ("link", sd_exp_devices, profile, link_fields),
    {.key = "list", .type = F_LIST, .off = 0},
    FEND,
};

typedef __typeof__(((sd_experiment *)0)->partition) partition_t;
typedef __typeof__(((sd_experiment *)0)->buffer) buffer_t;
typedef __typeof__(((sd_experiment *)0)->optimizer) optimizer_t;
typedef __typeof__(((sd_experiment *)0)->injection) injection_t;
typedef __typeof__(((sd_experiment *)0)->compression) compression_t;

static const sd_exp_field partition_fields[] = {
    FENUM("kind", partition_t, kind, partition_names),
    FINT("classes_per_device", partition_t, classes_per_device, 1, 1000),
    FNUM("alpha", partition_t, alpha, 0, 1e6, LO_OPEN),
    FEND,
};

static const sd_exp_field buffer_fields[] = {
    FENUM("policy", buffer_t, policy, policy_names),
    FI64("capacity", buffer_t, capacity, 1, 1 << 26),
    FENUM("full", buffer_t, full, full_names),
    FEND,
};

static const sd_exp_field optimizer_fields[] = {
    FNUM("lr", optimizer_t, lr, 0, 100, LO_OPEN),
    FNUM("momentum", optimizer_t, momentum, 0, 1, HI_OPEN),
    FNUM("weight_decay", optimizer_t, weight_decay, 0, 1, 0),
    FBOOL("nesterov", optimizer_t, nesterov),
    FSTR("schedule", optimizer_t, schedule, check_schedule_syntax),
    FI64("warmup_steps", optimizer_t, warmup_steps, 0, 1e12),
    FNUM("lr_scale_max", optimizer_t, lr_scale_max, 0, 1e6, 0),
    FEND,
};

static const sd_exp_field injection_fields[] = {
    FNUM("alpha", injection_t, alpha, 0, 1, 0),
    FNUM("beta", injection_t, beta, 0, 1, 0),
    FEND,
};

static const sd_exp_field compression_fields[] = {
    FENUM("policy", compression_t, policy, compress_names),
    FNUM("ratio", compression_t, ratio, 0, 1, LO_OPEN),
    FNUM("delta", compression_t, delta, 0, 1, 0),
    FBOOL("per_layer", compression_t, per_layer),
    FNUM("min_ratio", compression_t, min_ratio, 0, 1, LO_OPEN),
    FNUM("max_ratio", compression_t, max_ratio, 0, 1, LO_OPEN),
    FNUM("epsilon", compression_t, epsilon, 0, 1, LO_OPEN),
    FBOOL("f16_values", compression_t, f16_values),
    FBOOL("momentum_correction", compression_t, momentum_correction),
    FBOOL("time_aware", compression_t, time_aware),
    FENUM("exchange", compression_t, exchange, exchange_names),
    FEND,
};

typedef __typeof__(((sd_stream_config *)0)->mqtt) mqtt_t;

static const sd_exp_field kafka_fields[] = {
    FSTR("bootstrap", sd_exp_kafka, bootstrap, check_host),
    FSTR("group_id", sd_exp_kafka, group_id, check_name_or_empty),
    {.key = "conf", .type = F_KV, .off = 0},
    FEND,
};

static const sd_exp_field mqtt_fields[] = {
    FSTR("host", mqtt_t, host, check_host),
    FINT("port", mqtt_t, port, 0, 65535),
    FINT("qos", mqtt_t, qos, 0, 2),
    FSTR("username", mqtt_t, username, check_text),
    FSTR("password_file", mqtt_t, password_file, check_path_or_empty),
    FSTR("cafile", mqtt_t, cafile, check_path_or_empty),
    FEND,
};

static const sd_exp_field stream_fields[] = {
    FENUM("source", sd_stream_config, source, sd_exp_source_names),
    FSTR("topic_prefix", sd_stream_config, topic_prefix, check_topic_prefix),
    FNUM("connect_timeout_s", sd_stream_config, connect_timeout_s, 0, 600, LO_OPEN),
    FOBJ("kafka", sd_stream_config, kafka, kafka_fields),
    FOBJ("mqtt", sd_stream_config, mqtt, mqtt_fields),
    FEND,
};

const sd_exp_field sd_exp_top_fields[] = {
    FSTR("name", sd_experiment, name, check_name),
    FSTR("description", sd_experiment, description, check_text),
    FSTR("out_dir", sd_experiment, out_dir, check_path),
    FSTR("model", sd_experiment, model, check_model),
    FNUM("width", sd_experiment, width, 0, 16, LO_OPEN),
    FSTR("dataset", sd_experiment, dataset, check_dataset),
    FSTR("data_root", sd_experiment, data_root, check_path),
    FOBJ("partition", sd_experiment, partition, partition_fields),
    FOBJ("devices", sd_experiment, devices, devices_fields),
    {.key = "modes", .type = F_MODES, .off = 0},
    FENUM("backend", sd_experiment, backend, backend_names),
    FENUM("clock", sd_experiment, clock, clock_names),
    FINT("batch", sd_experiment, batch, 1, 65536),
    FNUM("window_s", sd_experiment, window_s, 0, 3600, LO_OPEN),
    FINT("cap", sd_experiment, cap, 1, 65536),
    FOBJ("buffer", sd_experiment, buffer, buffer_fields),
    FNUM("ddp_timeout_s", sd_experiment, ddp_timeout_s, 0, 1e6, LO_OPEN),
    FOBJ("optimizer", sd_experiment, optimizer, optimizer_fields),
    FOBJ("injection", sd_experiment, injection, injection_fields),
    FOBJ("compression", sd_experiment, compression, compression_fields),
    FENUM("bn", sd_experiment, bn, bn_names),
    FENUM("nonfinite", sd_experiment, nonfinite, nonfinite_names),
    FENUM("compute_backend", sd_experiment, compute_backend, compute_names),
    FENUM("collectives", sd_experiment, collectives, collectives_names),
    FENUM("link_emulation", sd_experiment, link_emulation, link_emulation_names),
    FNUM("link_burst_bytes", sd_experiment, link_burst_bytes, 0, 1e12, 0),
    FNUM("comm_timeout_s", sd_experiment, comm_timeout_s, 0, 1e6, LO_OPEN),
    FOBJ("stream", sd_experiment, stream, stream_fields),
    {.key = "seeds", .type = F_SEEDS, .off = 0},
    FNUM("target_accuracy", sd_experiment, target_accuracy, 0, 1, 0),
    FNUM("eval_every_s", sd_experiment, eval_every_s, 0, 1e9, LO_OPEN),
    FI64("eval_every_steps", sd_experiment, eval_every_steps, 0, 1e15),
    FI64("eval_limit", sd_experiment, eval_limit, 0, 1e12),
    FINT("eval_batch", sd_experiment, eval_batch, 1, 65536),
    FI64("train_limit", sd_experiment, train_limit, 0, 1e12),
    FBOOL("augment", sd_experiment, augment),
    FI64("checkpoint_every_steps", sd_experiment, checkpoint_every_steps, 0, 1e15),
    FNUM("time_budget_s", sd_experiment, time_budget_s, 0, 1e9, LO_OPEN),
    FI64("max_steps", sd_experiment, max_steps, 0, 1e15),
    FINT("threads", sd_experiment, threads, 0, 1024),
    FEND,
};

sd_status sd_exp_unknown_name(const char *const *names, const char *v, const char *origin, const char *path) {
    char list[300];
    sd_exp_join_names(names, list, sizeof list);
    const char *near = sd_exp_closest(v, (const char *const *)names, sd_exp_name_count(names));
    char hint[128] = "";
    if (near) snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
    return BAD(origin, path, "'%.80s' is not allowed%s (allowed: %s)", v, hint, list);
}

/* "a number > 0", "a number in [0, 1]", "an integer in 1..64" */
void sd_exp_range_text(const sd_exp_field *f, char *buf, size_t n) {
    if (f->type == F_NUM) {
        if (isinf(f->hi)) snprintf(buf, n, "a number %s %g", (f->flags & LO_OPEN) ? ">" : ">=", f->lo);
        else snprintf(buf, n, "a number in %c%g, %g%c", (f->flags & LO_OPEN) ? '(' : '[', f->lo, f->hi,
                      (f->flags & HI_OPEN) ? ')' : ']');
    } else {
        snprintf(buf, n, "an integer in %.0f..%.0f", f->lo, f->hi);
    }
}

/* Checks a number (in the field's JSON unit) against the field's type and range. */
sd_status sd_exp_check_number(const sd_exp_field *f, double v, const char *origin, const char *path) {
    bool ok = isfinite(v) && ((f->flags & LO_OPEN) ? v > f->lo : v >= f->lo) && ((f->flags & HI_OPEN) ? v < f->hi : v <= f->hi);
    if (ok && f->type != F_NUM) ok = v == floor(v);
    if (!ok) {
        char r[96], num[40];
        sd_exp_range_text(f, r, sizeof r);
        sd_exp_fmt_double(v, num, sizeof num);
        return BAD(origin, path, "%s is out of range; allowed: %s", num, r);
    }
    return SD_OK;
}

/* ---- string checks ----------------------------------------------------------------------------- */
static sd_status check_text(const char *v, const char *origin, const char *path) {
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20)
            return BAD(origin, path, "holds a control character (code %d); allowed: printable text", *p);
    return SD_OK;
}

static sd_status check_name(const char *v, const char *origin, const char *path) {
    if (!v[0]) return BAD(origin, path, "is empty; allowed: letters, digits, '_', '-' and '.'");
    if (!strcmp(v, ".") || !strcmp(v, ".."))
        return BAD(origin, path, "'%s' is not a name; allowed: letters, digits, '_', '-' and '.'", v);
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
            return BAD(origin, path, "'%.80s' holds '%c'; allowed: letters, digits, '_', '-' and '.'", v, *p);
    return SD_OK;
}

/* Paths are taken relative to the working directory as written; a ".." component is refused so
 * a file cannot direct output above where it is run (absolute paths are the user's choice). */
static sd_status check_path(const char *v, const char *origin, const char *path) {
    TRY(check_text(v, origin, path));
    const char *p = v;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return BAD(origin, path, "'%.120s' has a '..' component; allowed: a path without '..' (relative to the "
                       "directory the program runs in, or absolute)", v);
        p += len;
        if (*p == '/') p++;
    }
    return SD_OK;
}

static sd_status check_name_or_empty(const char *v, const char *origin, const char *path) {
    return v[0] ? check_name(v, origin, path) : SD_OK;
}

static sd_status check_path_or_empty(const char *v, const char *origin, const char *path) {
    return v[0] ? check_path(v, origin, path) : SD_OK;
}

/* Topic names: Kafka allows letters, digits, '.', '_' and '-'; MQTT topic levels add '/'. */
static sd_status check_topic_prefix(const char *v, const char *origin, const char *path) {
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_-./", *p))
            return BAD(origin, path, "'%.80s' holds '%c'; allowed: letters, digits, '_', '-', '.' (and '/' for MQTT); device i "
                       "reads the topic <prefix><i>", v, *p);
    return SD_OK;
}

/* Host names, addresses and host:port lists: printable, no spaces. */
static sd_status check_host(const char *v, const char *origin, const char *path) {
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return BAD(origin, path, "'%.80s' holds a space or a character that is not printable ASCII; allowed: a host name "
                       "or address (Kafka: host:port[,host:port...])", v);
    return SD_OK;
}

static sd_status check_model(const char *v, const char *origin, const char *path) {
    const char *names = sd_model_names();
    size_t lv = strlen(v);
    const char *words[64];
    char copy[512];
    snprintf(copy, sizeof copy, "%s", names);
    int n = 0;
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w && n < 63; w = strtok_r(NULL, " ", &save)) {
        if (lv && strlen(w) == lv && !strcmp(w, v)) return SD_OK;
        words[n++] = w;
    }
    words[n] = NULL;
    return sd_exp_unknown_name(words, v, origin, path);
}

static sd_status check_dataset(const char *v, const char *origin, const char *path) {
    if (sd_exp_name_index(sd_exp_dataset_names, v) >= 0) return SD_OK;
    return sd_exp_unknown_name(sd_exp_dataset_names, v, origin, path);
}

/* Strips " (func at file:line)" and the "via" lines from sd_last_error(): the inner reason. */
void sd_exp_inner_reason(char *buf, size_t n) {
    snprintf(buf, n, "%s", sd_last_error());
    char *nl = strchr(buf, '\n');
    if (nl) *nl = '\0';
    char *at = strrchr(buf, '(');
    if (at && at > buf && strstr(at, " at ")) at[-1] = '\0';
    const char *colon = strstr(buf, ": ");
    if (colon) memmove(buf, colon + 2, strlen(colon + 2) + 1);
}

const char sd_exp_schedule_allowed[] = "constant, cosine (needs max_steps > 0) or multistep:S1,S2,...[@gamma] with steps increasing";

static sd_status check_schedule_syntax(const char *v, const char *origin, const char *path) {
    sd_lr_schedule s;
    if (sd_lr_schedule_parse(v, 1.0f, 1, &s) != SD_OK) {
        char why[512];
        sd_exp_inner_reason(why, sizeof why);
        return BAD(origin, path, "%s; allowed: %s", why, sd_exp_schedule_allowed);
    }
    return SD_OK;
}

/* ---- special values: rates, seeds -------------------------------------------------------------- */
const char sd_exp_rates_allowed[] =
    "a preset (uniform_s1, uniform_s2, normal_s1), an array of 1..64 rates in (0, 1e9], {\"uniform\": [lo, hi]} "
    "with 0 <= lo <= hi <= 1e9, hi > 0, or {\"normal\": [mu, sigma]} with mu in (0, 1e9], sigma in [0, 1e9]";

sd_status sd_exp_check_rates(const sd_exp_rates *r, const char *origin, const char *path) {
    char p[PATH_MAX_LEN];
    switch (r->kind) {
    case SD_EXP_RATES_PRESET:
        if (!memchr(r->preset, 0, sizeof r->preset) || !sd_exp_find_preset(r->preset))
            return BAD(origin, path, "'%.*s' is not a preset; allowed: %s", (int)sizeof r->preset - 1, r->preset, sd_exp_rates_allowed);
        return SD_OK;
    case SD_EXP_RATES_LIST:
        if (r->n < 1 || r->n > SD_MAX_DEVICES)
            return BAD(origin, path, "an array of %d rates; allowed: %s", r->n, sd_exp_rates_allowed);
        for (int i = 0; i < r->n; i++)
            if (!(r->values[i] > 0 && r->values[i] <= RATE_MAX)) {
                sd_exp_index_path(p, path, i);
                return BAD(origin, p, "rate %.17g samples/s is out of range; allowed: a number in (0, 1e9]", r->values[i]);
            }
        return SD_OK;
    case SD_EXP_RATES_UNIFORM:
        sd_exp_child_path(p, path, "uniform");
        if (!(isfinite(r->a) && isfinite(r->b) && r->a >= 0 && r->a <= r->b && r->b > 0 && r->b <= RATE_MAX))
            return BAD(origin, p, "[%.17g, %.17g] is not a valid range; allowed: [lo, hi] with 0 <= lo <= hi <= 1e9 and hi > 0",
                       r->a, r->b);
        return SD_OK;
    case SD_EXP_RATES_NORMAL:
        sd_exp_child_path(p, path, "normal");
        if (!(isfinite(r->a) && r->a > 0 && r->a <= RATE_MAX && isfinite(r->b) && r->b >= 0 && r->b <= RATE_MAX))
            return BAD(origin, p, "[%.17g, %.17g] is not valid; allowed: [mu, sigma] with mu in (0, 1e9] and sigma in [0, 1e9] "
                       "(draws are truncated to (0, 1e9])", r->a, r->b);
        return SD_OK;
    }
    return BAD(origin, path, "rate source kind %d is unknown; allowed: %s", (int)r->kind, sd_exp_rates_allowed);
}

sd_status sd_exp_check_seeds(const sd_experiment *e, const char *origin) {
    if (e->n_seeds < 1 || e->n_seeds > SD_EXP_MAX_SEEDS)
        return BAD(origin, "seeds", "has %d entries; allowed: 1..%d distinct integers in [0, 2^53]", e->n_seeds, SD_EXP_MAX_SEEDS);
    char p[PATH_MAX_LEN];
    for (int i = 0; i < e->n_seeds; i++) {
        sd_exp_index_path(p, "seeds", i);
        if ((double)e->seeds[i] > SD_EXP_SEED_MAX)
            return BAD(origin, p, "%" PRIu64 " is out of range; allowed: an integer in [0, 2^53]", e->seeds[i]);
        for (int k = 0; k < i; k++)
            if (e->seeds[k] == e->seeds[i])
                return BAD(origin, p, "seed %" PRIu64 " appears twice; allowed: distinct seeds", e->seeds[i]);
    }
    return SD_OK;
}

/* ---- stream.kafka.conf: librdkafka settings as an object of key -> value ----------------------- */
const char sd_exp_conf_allowed[] =
    "an object of librdkafka settings, each \"key\": \"value\" (a string, number or bool), e.g. {\"security.protocol\": "
    "\"SSL\", \"fetch.wait.max.ms\": 20}; null removes a key";

/* Checks one stored "key=value" pair (what code may have set directly, and what apply_kv makes). */
sd_status sd_exp_check_kv_pair(const char *kv, const char *origin, const char *path) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return BAD(origin, path, "'%.80s' is not key=value; allowed: %s", kv, sd_exp_conf_allowed);
    for (const char *q = kv; *q; q++)
        if ((unsigned char)*q < 0x20) return BAD(origin, path, "holds a control character; allowed: printable text");
    size_t klen = (size_t)(eq - kv);
    const char *val = eq + 1;
    if ((klen == 18 && !strncmp(kv, "enable.auto.commit", klen)) || (klen == 24 && !strncmp(kv, "enable.auto.offset.store", klen))) {
        if (strcmp(val, "false"))
            return BAD(origin, path, "%.*s=%s is not allowed: the Kafka source commits offsets itself, with the trainer's "
                       "progress and its checkpoints (docs/brokers.md); allowed: leave it out", (int)klen, kv, val);
    }
    if (klen == 8 && !strncmp(kv, "group.id", klen))
        return BAD(origin, path, "group.id is set by the source; allowed: stream.kafka.group_id (device i joins <group_id>-<i>)");
    return SD_OK;
}
