/* experiment.c: experiment files (experiment.h): the schema as a table of fields, the JSON loader
 * and --set over that table, resolution of rate presets and distributions into per-device values,
 * validation with key paths in every message, and the exact JSON writer. Schema:
 * docs/experiments.md. */
#include "engine/experiment.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/rng.h"
#include "engine/models.h"
#include "engine/optim.h"

_Static_assert(sizeof(sd_exp_mode) == sizeof(int) && sizeof(sd_exp_bn) == sizeof(int),
               "enum fields are stored through int pointers");

#define PATH_MAX_LEN 256 /* key paths in messages */
#define RATE_MAX 1e9     /* samples/s, as stream/rate.h's SD_RATE_MAX */

/* ---- presets ----------------------------------------------------------------------------------- */
typedef struct preset {
    const char *name;
    int n;
    double rates[SD_MAX_DEVICES];
} preset;

/* The paper's stream-rate sets (docs/experiments.md, ../shared/docs/SCADLES.md). */
static const preset presets[] = {
    {"uniform_s1", 8, {50, 38, 12, 36, 34, 13, 82, 40}},
    {"uniform_s2", 10, {270, 218, 300, 246, 232, 284, 284, 236, 274, 228}},
    {"normal_s1", 10, {92, 38, 62, 42, 48, 88, 90, 22, 44, 28}},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

const char *sd_experiment_presets(void) { return "uniform_s1 uniform_s2 normal_s1"; }

static const preset *find_preset(const char *name) {
    for (size_t i = 0; i < N_PRESETS; i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

int sd_experiment_preset_rates(const char *name, double *rates) {
    const preset *p = name ? find_preset(name) : NULL;
    if (!p) return 0;
    if (rates) memcpy(rates, p->rates, (size_t)p->n * sizeof(double));
    return p->n;
}

/* ---- enum spellings (index = enum value) ------------------------------------------------------- */
static const char *const partition_names[] = {"iid", "slices", "dirichlet", NULL};
static const char *const arrival_names[] = {"constant", "poisson", NULL};
static const char *const mode_names[] = {"ddp", "scadles", NULL};
static const char *const backend_names[] = {"local", "mpi", NULL};
static const char *const clock_names[] = {"virtual", "real", NULL};
static const char *const policy_names[] = {"persistence", "truncation", "drop-oldest", NULL};
static const char *const full_names[] = {"drop-newest", "backpressure", NULL};
static const char *const compress_names[] = {"off", "always", "paper", "gain", NULL};
static const char *const bn_names[] = {"local", "average", NULL};
static const char *const nonfinite_names[] = {"stop", "skip", NULL};
static const char *const link_emulation_names[] = {"off", "token_bucket", NULL};
static const char *const compute_names[] = {"cpu", "cuda", NULL};
static const char *const collectives_names[] = {"host", "nccl", NULL};
static const char *const source_names[] = {"replay", "kafka", "mqtt", NULL};
/* stream/dataset.h's sd_dataset_open names and their class counts */
static const char *const dataset_names[] = {"fashion-mnist", "mnist", "cifar10", "cifar100", NULL};
static const int dataset_classes[] = {10, 10, 10, 100};

const char *sd_exp_mode_name(sd_exp_mode m) {
    return (unsigned)m < (unsigned)(sizeof mode_names / sizeof mode_names[0] - 1) ? mode_names[m] : "unknown";
}

const char *sd_exp_source_name(sd_source_kind s) {
    return (unsigned)s < (unsigned)(sizeof source_names / sizeof source_names[0] - 1) ? source_names[s] : "unknown";
}

static int name_count(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

static int name_index(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

/* "a, b, c" */
static void join_names(const char *const *names, char *buf, size_t n) {
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
static const char *closest(const char *word, const char *const *cands, int n) {
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
static sd_status bad_(const char *func, int line, const char *origin, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static sd_status bad_(const char *func, int line, const char *origin, const char *path, const char *fmt, ...) {
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sd_set_error(SD_ERR_INVALID, func, __FILE__, line, "%s%s%s: %s", origin ? origin : "", origin ? ": " : "",
                        path && path[0] ? path : "(top level)", msg);
}
#define BAD(origin, path, ...) bad_(__func__, __LINE__, (origin), (path), __VA_ARGS__)

static void fmt_double(double v, char *buf, size_t n);

static const char *jtype(const cJSON *j) {
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return cJSON_IsTrue(j) ? "true" : "false";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "an unknown JSON value";
}

/* A short description of a JSON value for messages: "a string (\"abc\")", "a number (3)". */
static void jdesc(const cJSON *j, char *buf, size_t n) {
    if (cJSON_IsString(j))
        snprintf(buf, n, "a string (\"%.60s%s\")", j->valuestring, strlen(j->valuestring) > 60 ? "..." : "");
    else if (cJSON_IsNumber(j))
        fmt_double(j->valuedouble, buf, n);
    else
        snprintf(buf, n, "%s", jtype(j));
}

/* Line and column (1-based) of byte `off` of text. */
static void line_col(const char *text, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

/* Key paths; an over-long one (not reachable through the schema) ends in "..." */
static void mark_truncated(char *out, int k) {
    if (k < 0 || k >= PATH_MAX_LEN) memcpy(out + PATH_MAX_LEN - 4, "...", 4);
}

static void child_path(char *out, const char *path, const char *key) {
    int k = path && path[0] ? snprintf(out, PATH_MAX_LEN, "%s.%s", path, key) : snprintf(out, PATH_MAX_LEN, "%s", key);
    mark_truncated(out, k);
}

static void index_path(char *out, const char *path, int i) { mark_truncated(out, snprintf(out, PATH_MAX_LEN, "%s[%d]", path, i)); }

/* ---- the schema -------------------------------------------------------------------------------- */
typedef enum ftype { F_STR, F_NUM, F_INT, F_I64, F_U64, F_BOOL, F_ENUM, F_OBJ, F_LIST, F_RATES, F_MODES, F_SEEDS, F_KV } ftype;

enum { LO_OPEN = 1, HI_OPEN = 2, ALIAS = 4 };

typedef sd_status (*str_check_fn)(const char *value, const char *origin, const char *path);

typedef struct field {
    const char *key;
    ftype type;
    size_t off;                /* from the start of the struct the table describes */
    size_t size;               /* F_STR: capacity with the NUL */
    double lo, hi;             /* numbers: the allowed range, in the JSON's unit */
    unsigned flags;            /* LO_OPEN, HI_OPEN: the bound is excluded; ALIAS: another unit, not written */
    double scale;              /* stored = JSON value x scale (numbers; 1 when written) */
    const char *const *names;  /* F_ENUM */
    const struct field *sub;   /* F_OBJ: the nested table */
    unsigned bit;              /* device list entries: SD_EXP_DEV_* */
    str_check_fn check;        /* F_STR */
} field;

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
static const field device_fields[] = {
    DEVF("rate", rate, 0, RATE_MAX, LO_OPEN, 1, SD_EXP_DEV_RATE),
    DEVF("samples_per_s", profile.samples_per_s, 0, 1e12, LO_OPEN, 1, SD_EXP_DEV_SAMPLES_PER_S),
    DEVF("step_overhead_s", profile.step_overhead_s, 0, 3600, 0, 1, SD_EXP_DEV_STEP_OVERHEAD),
    DEVF("bandwidth_bps", profile.bandwidth_bps, 0, 1e15, LO_OPEN, 1, SD_EXP_DEV_BANDWIDTH),
    DEVF("bandwidth_mbps", profile.bandwidth_bps, 0, 1e9, LO_OPEN | ALIAS, 1e6, SD_EXP_DEV_BANDWIDTH),
    DEVF("latency_s", profile.latency_s, 0, 3600, 0, 1, SD_EXP_DEV_LATENCY),
    DEVF("latency_ms", profile.latency_s, 0, 3.6e6, ALIAS, 1e-3, SD_EXP_DEV_LATENCY),
    FEND,
};

static const field compute_fields[] = {
    FNUM("samples_per_s", sd_device_profile, samples_per_s, 0, 1e12, LO_OPEN),
    FNUM("step_overhead_s", sd_device_profile, step_overhead_s, 0, 3600, 0),
    FEND,
};

static const field link_fields[] = {
    FNUM("bandwidth_bps", sd_device_profile, bandwidth_bps, 0, 1e15, LO_OPEN),
    {.key = "bandwidth_mbps", .type = F_NUM, .off = offsetof(sd_device_profile, bandwidth_bps), .lo = 0, .hi = 1e9,
     .flags = LO_OPEN | ALIAS, .scale = 1e6},
    FNUM("latency_s", sd_device_profile, latency_s, 0, 3600, 0),
    {.key = "latency_ms", .type = F_NUM, .off = offsetof(sd_device_profile, latency_s), .lo = 0, .hi = 3.6e6,
     .flags = ALIAS, .scale = 1e-3},
    FEND,
};

static const field devices_fields[] = {
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

static const field partition_fields[] = {
    FENUM("kind", partition_t, kind, partition_names),
    FINT("classes_per_device", partition_t, classes_per_device, 1, 1000),
    FNUM("alpha", partition_t, alpha, 0, 1e6, LO_OPEN),
    FEND,
};

static const field buffer_fields[] = {
    FENUM("policy", buffer_t, policy, policy_names),
    FI64("capacity", buffer_t, capacity, 1, 1 << 26),
    FENUM("full", buffer_t, full, full_names),
    FEND,
};

static const field optimizer_fields[] = {
    FNUM("lr", optimizer_t, lr, 0, 100, LO_OPEN),
    FNUM("momentum", optimizer_t, momentum, 0, 1, HI_OPEN),
    FNUM("weight_decay", optimizer_t, weight_decay, 0, 1, 0),
    FBOOL("nesterov", optimizer_t, nesterov),
    FSTR("schedule", optimizer_t, schedule, check_schedule_syntax),
    FI64("warmup_steps", optimizer_t, warmup_steps, 0, 1e12),
    FEND,
};

static const field injection_fields[] = {
    FNUM("alpha", injection_t, alpha, 0, 1, 0),
    FNUM("beta", injection_t, beta, 0, 1, 0),
    FEND,
};

static const field compression_fields[] = {
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
    FEND,
};

typedef __typeof__(((sd_stream_config *)0)->kafka) kafka_t;
typedef __typeof__(((sd_stream_config *)0)->mqtt) mqtt_t;

static const field kafka_fields[] = {
    FSTR("bootstrap", kafka_t, bootstrap, check_host),
    FSTR("group_id", kafka_t, group_id, check_name_or_empty),
    {.key = "conf", .type = F_KV, .off = 0},
    FEND,
};

static const field mqtt_fields[] = {
    FSTR("host", mqtt_t, host, check_host),
    FINT("port", mqtt_t, port, 0, 65535),
    FINT("qos", mqtt_t, qos, 0, 2),
    FSTR("username", mqtt_t, username, check_text),
    FSTR("password_file", mqtt_t, password_file, check_path_or_empty),
    FSTR("cafile", mqtt_t, cafile, check_path_or_empty),
    FEND,
};

static const field stream_fields[] = {
    FENUM("source", sd_stream_config, source, source_names),
    FSTR("topic_prefix", sd_stream_config, topic_prefix, check_topic_prefix),
    FNUM("connect_timeout_s", sd_stream_config, connect_timeout_s, 0, 600, LO_OPEN),
    FOBJ("kafka", sd_stream_config, kafka, kafka_fields),
    FOBJ("mqtt", sd_stream_config, mqtt, mqtt_fields),
    FEND,
};

static const field top_fields[] = {
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
    FNUM("target_accuracy", sd_experiment, target_accuracy, 0, 1, LO_OPEN),
    FNUM("eval_every_s", sd_experiment, eval_every_s, 0, 1e9, LO_OPEN),
    FI64("eval_limit", sd_experiment, eval_limit, 0, 1e12),
    FNUM("time_budget_s", sd_experiment, time_budget_s, 0, 1e9, LO_OPEN),
    FI64("max_steps", sd_experiment, max_steps, 0, 1e15),
    FINT("threads", sd_experiment, threads, 0, 1024),
    FEND,
};

static const field *find_field(const field *t, const char *key) {
    for (; t->key; t++)
        if (!strcmp(t->key, key)) return t;
    return NULL;
}

static void join_keys(const field *t, char *buf, size_t n) {
    const char *names[64];
    int k = 0;
    for (; t->key && k < 63; t++) names[k++] = t->key;
    names[k] = NULL;
    join_names(names, buf, n);
}

static sd_status unknown_key(const field *t, const char *key, const char *origin, const char *path) {
    const char *names[64];
    int k = 0;
    for (const field *f = t; f->key && k < 63; f++) names[k++] = f->key;
    names[k] = NULL;
    const char *near = closest(key, names, k);
    char keys[900];
    join_names(names, keys, sizeof keys);
    char hint[128] = "";
    if (near) snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
    return BAD(origin, path, "unknown key%s (allowed keys here: %s)", hint, keys);
}

static sd_status unknown_name(const char *const *names, const char *v, const char *origin, const char *path) {
    char list[300];
    join_names(names, list, sizeof list);
    const char *near = closest(v, (const char *const *)names, name_count(names));
    char hint[128] = "";
    if (near) snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
    return BAD(origin, path, "'%.80s' is not allowed%s (allowed: %s)", v, hint, list);
}

/* "a number > 0", "a number in [0, 1]", "an integer in 1..64" */
static void range_text(const field *f, char *buf, size_t n) {
    if (f->type == F_NUM) {
        if (isinf(f->hi)) snprintf(buf, n, "a number %s %g", (f->flags & LO_OPEN) ? ">" : ">=", f->lo);
        else snprintf(buf, n, "a number in %c%g, %g%c", (f->flags & LO_OPEN) ? '(' : '[', f->lo, f->hi,
                      (f->flags & HI_OPEN) ? ')' : ']');
    } else {
        snprintf(buf, n, "an integer in %.0f..%.0f", f->lo, f->hi);
    }
}

/* Checks a number (in the field's JSON unit) against the field's type and range. */
static sd_status check_number(const field *f, double v, const char *origin, const char *path) {
    bool ok = isfinite(v) && ((f->flags & LO_OPEN) ? v > f->lo : v >= f->lo) && ((f->flags & HI_OPEN) ? v < f->hi : v <= f->hi);
    if (ok && f->type != F_NUM) ok = v == floor(v);
    if (!ok) {
        char r[96], num[40];
        range_text(f, r, sizeof r);
        fmt_double(v, num, sizeof num);
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
    return unknown_name(words, v, origin, path);
}

static sd_status check_dataset(const char *v, const char *origin, const char *path) {
    if (name_index(dataset_names, v) >= 0) return SD_OK;
    return unknown_name(dataset_names, v, origin, path);
}

/* Strips " (func at file:line)" and the "via" lines from sd_last_error(): the inner reason. */
static void inner_reason(char *buf, size_t n) {
    snprintf(buf, n, "%s", sd_last_error());
    char *nl = strchr(buf, '\n');
    if (nl) *nl = '\0';
    char *at = strrchr(buf, '(');
    if (at && at > buf && strstr(at, " at ")) at[-1] = '\0';
    const char *colon = strstr(buf, ": ");
    if (colon) memmove(buf, colon + 2, strlen(colon + 2) + 1);
}

static const char schedule_allowed[] = "constant, cosine (needs max_steps > 0) or multistep:S1,S2,...[@gamma] with steps increasing";

static sd_status check_schedule_syntax(const char *v, const char *origin, const char *path) {
    sd_lr_schedule s;
    if (sd_lr_schedule_parse(v, 1.0f, 1, &s) != SD_OK) {
        char why[512];
        inner_reason(why, sizeof why);
        return BAD(origin, path, "%s; allowed: %s", why, schedule_allowed);
    }
    return SD_OK;
}

/* ---- special values: rates, modes, seeds ------------------------------------------------------- */
static const char rates_allowed[] =
    "a preset (uniform_s1, uniform_s2, normal_s1), an array of 1..64 rates in (0, 1e9], {\"uniform\": [lo, hi]} "
    "with 0 <= lo <= hi <= 1e9, hi > 0, or {\"normal\": [mu, sigma]} with mu in (0, 1e9], sigma in [0, 1e9]";

static sd_status check_rates(const sd_exp_rates *r, const char *origin, const char *path) {
    char p[PATH_MAX_LEN];
    switch (r->kind) {
    case SD_EXP_RATES_PRESET:
        if (!memchr(r->preset, 0, sizeof r->preset) || !find_preset(r->preset))
            return BAD(origin, path, "'%.*s' is not a preset; allowed: %s", (int)sizeof r->preset - 1, r->preset, rates_allowed);
        return SD_OK;
    case SD_EXP_RATES_LIST:
        if (r->n < 1 || r->n > SD_MAX_DEVICES)
            return BAD(origin, path, "an array of %d rates; allowed: %s", r->n, rates_allowed);
        for (int i = 0; i < r->n; i++)
            if (!(r->values[i] > 0 && r->values[i] <= RATE_MAX)) {
                index_path(p, path, i);
                return BAD(origin, p, "rate %.17g samples/s is out of range; allowed: a number in (0, 1e9]", r->values[i]);
            }
        return SD_OK;
    case SD_EXP_RATES_UNIFORM:
        child_path(p, path, "uniform");
        if (!(isfinite(r->a) && isfinite(r->b) && r->a >= 0 && r->a <= r->b && r->b > 0 && r->b <= RATE_MAX))
            return BAD(origin, p, "[%.17g, %.17g] is not a valid range; allowed: [lo, hi] with 0 <= lo <= hi <= 1e9 and hi > 0",
                       r->a, r->b);
        return SD_OK;
    case SD_EXP_RATES_NORMAL:
        child_path(p, path, "normal");
        if (!(isfinite(r->a) && r->a > 0 && r->a <= RATE_MAX && isfinite(r->b) && r->b >= 0 && r->b <= RATE_MAX))
            return BAD(origin, p, "[%.17g, %.17g] is not valid; allowed: [mu, sigma] with mu in (0, 1e9] and sigma in [0, 1e9] "
                       "(draws are truncated to (0, 1e9])", r->a, r->b);
        return SD_OK;
    }
    return BAD(origin, path, "rate source kind %d is unknown; allowed: %s", (int)r->kind, rates_allowed);
}

static sd_status apply_rates(sd_exp_rates *out, const cJSON *j, const char *origin, const char *path) {
    sd_exp_rates r;
    memset(&r, 0, sizeof r);
    char p[PATH_MAX_LEN], d[128];
    if (cJSON_IsString(j)) {
        if (!find_preset(j->valuestring)) {
            const char *names[N_PRESETS + 1];
            for (size_t i = 0; i < N_PRESETS; i++) names[i] = presets[i].name;
            names[N_PRESETS] = NULL;
            const char *near = closest(j->valuestring, names, (int)N_PRESETS);
            return BAD(origin, path, "'%.80s' is not a preset%s%s%s; allowed: %s", j->valuestring, near ? "; did you mean '" : "",
                       near ? near : "", near ? "'?" : "", rates_allowed);
        }
        r.kind = SD_EXP_RATES_PRESET;
        snprintf(r.preset, sizeof r.preset, "%s", j->valuestring);
    } else if (cJSON_IsArray(j)) {
        int n = cJSON_GetArraySize(j);
        if (n < 1 || n > SD_MAX_DEVICES) return BAD(origin, path, "an array of %d rates; allowed: %s", n, rates_allowed);
        r.kind = SD_EXP_RATES_LIST;
        int i = 0;
        for (const cJSON *x = j->child; x; x = x->next, i++) {
            if (!cJSON_IsNumber(x)) {
                index_path(p, path, i);
                jdesc(x, d, sizeof d);
                return BAD(origin, p, "expected a rate (a number in (0, 1e9] samples/s), got %s", d);
            }
            r.values[i] = x->valuedouble;
        }
        r.n = n;
    } else if (cJSON_IsObject(j)) {
        const cJSON *x = j->child;
        if (!x || x->next)
            return BAD(origin, path, "a distribution object needs exactly one key, uniform or normal; allowed: %s", rates_allowed);
        child_path(p, path, x->string);
        if (!strcmp(x->string, "uniform")) r.kind = SD_EXP_RATES_UNIFORM;
        else if (!strcmp(x->string, "normal")) r.kind = SD_EXP_RATES_NORMAL;
        else {
            static const char *const dist_names[] = {"uniform", "normal", NULL};
            const char *near = closest(x->string, dist_names, 2);
            return BAD(origin, p, "unknown distribution%s%s%s; allowed: uniform ([lo, hi]) or normal ([mu, sigma])",
                       near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
        }
        if (!cJSON_IsArray(x) || cJSON_GetArraySize(x) != 2 || !cJSON_IsNumber(x->child) || !cJSON_IsNumber(x->child->next)) {
            jdesc(x, d, sizeof d);
            return BAD(origin, p, "expected an array of two numbers (%s), got %s",
                       r.kind == SD_EXP_RATES_UNIFORM ? "[lo, hi]" : "[mu, sigma]", d);
        }
        r.a = x->child->valuedouble;
        r.b = x->child->next->valuedouble;
    } else {
        jdesc(j, d, sizeof d);
        return BAD(origin, path, "expected %s; got %s", rates_allowed, d);
    }
    TRY(check_rates(&r, origin, path));
    memcpy(out, &r, sizeof r);
    return SD_OK;
}

static sd_status check_modes(const sd_experiment *e, const char *origin) {
    if (e->n_modes < 1 || e->n_modes > SD_EXP_MAX_MODES)
        return BAD(origin, "modes", "has %d entries; allowed: one or both of ddp, scadles (an array, no duplicates)", e->n_modes);
    char p[PATH_MAX_LEN];
    for (int i = 0; i < e->n_modes; i++) {
        index_path(p, "modes", i);
        if ((unsigned)e->modes[i] >= SD_EXP_MAX_MODES) return BAD(origin, p, "mode %d is unknown; allowed: ddp, scadles", (int)e->modes[i]);
        for (int k = 0; k < i; k++)
            if (e->modes[k] == e->modes[i])
                return BAD(origin, p, "'%s' appears twice; allowed: each of ddp, scadles at most once", mode_names[e->modes[i]]);
    }
    return SD_OK;
}

static sd_status apply_modes(sd_experiment *e, const cJSON *j, const char *origin) {
    char d[128], p[PATH_MAX_LEN];
    if (!cJSON_IsArray(j)) {
        jdesc(j, d, sizeof d);
        return BAD(origin, "modes", "expected an array of one or both of \"ddp\", \"scadles\", got %s", d);
    }
    int n = cJSON_GetArraySize(j);
    if (n < 1) return BAD(origin, "modes", "is empty; allowed: one or both of ddp, scadles");
    sd_exp_mode m[SD_EXP_MAX_MODES];
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++) {
        index_path(p, "modes", i);
        if (!cJSON_IsString(x)) {
            jdesc(x, d, sizeof d);
            return BAD(origin, p, "expected \"ddp\" or \"scadles\", got %s", d);
        }
        int k = name_index(mode_names, x->valuestring);
        if (k < 0) return unknown_name(mode_names, x->valuestring, origin, p);
        for (int q = 0; q < i; q++)
            if ((int)m[q] == k) return BAD(origin, p, "'%s' appears twice; allowed: each of ddp, scadles at most once", x->valuestring);
        m[i] = (sd_exp_mode)k;
    }
    e->n_modes = n;
    memset(e->modes, 0, sizeof e->modes);
    memcpy(e->modes, m, (size_t)n * sizeof m[0]);
    return SD_OK;
}

static sd_status check_seeds(const sd_experiment *e, const char *origin) {
    if (e->n_seeds < 1 || e->n_seeds > SD_EXP_MAX_SEEDS)
        return BAD(origin, "seeds", "has %d entries; allowed: 1..%d distinct integers in [0, 2^53]", e->n_seeds, SD_EXP_MAX_SEEDS);
    char p[PATH_MAX_LEN];
    for (int i = 0; i < e->n_seeds; i++) {
        index_path(p, "seeds", i);
        if ((double)e->seeds[i] > SD_EXP_SEED_MAX)
            return BAD(origin, p, "%" PRIu64 " is out of range; allowed: an integer in [0, 2^53]", e->seeds[i]);
        for (int k = 0; k < i; k++)
            if (e->seeds[k] == e->seeds[i])
                return BAD(origin, p, "seed %" PRIu64 " appears twice; allowed: distinct seeds", e->seeds[i]);
    }
    return SD_OK;
}

static sd_status apply_seeds(sd_experiment *e, const cJSON *j, const char *origin) {
    char d[128], p[PATH_MAX_LEN];
    if (!cJSON_IsArray(j)) {
        jdesc(j, d, sizeof d);
        return BAD(origin, "seeds", "expected an array of 1..%d integers in [0, 2^53], got %s", SD_EXP_MAX_SEEDS, d);
    }
    int n = cJSON_GetArraySize(j);
    if (n < 1 || n > SD_EXP_MAX_SEEDS)
        return BAD(origin, "seeds", "has %d entries; allowed: 1..%d distinct integers in [0, 2^53]", n, SD_EXP_MAX_SEEDS);
    sd_experiment tmp;
    tmp.n_seeds = n;
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++) {
        index_path(p, "seeds", i);
        double v = cJSON_IsNumber(x) ? x->valuedouble : -1;
        if (!cJSON_IsNumber(x) || !(v >= 0 && v <= SD_EXP_SEED_MAX && v == floor(v))) {
            jdesc(x, d, sizeof d);
            return BAD(origin, p, "expected an integer in [0, 2^53], got %s", d);
        }
        tmp.seeds[i] = (uint64_t)v;
    }
    TRY(check_seeds(&tmp, origin));
    e->n_seeds = n;
    memset(e->seeds, 0, sizeof e->seeds);
    memcpy(e->seeds, tmp.seeds, (size_t)n * sizeof(uint64_t));
    return SD_OK;
}

/* ---- stream.kafka.conf: librdkafka settings as an object of key -> value ------------------------ */
static const char conf_allowed[] =
    "an object of librdkafka settings, each \"key\": \"value\" (a string, number or bool), e.g. {\"security.protocol\": "
    "\"SSL\", \"fetch.wait.max.ms\": 20}; null removes a key";

/* Checks one stored "key=value" pair (what code may have set directly, and what apply_kv makes). */
static sd_status check_kv_pair(const char *kv, const char *origin, const char *path) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return BAD(origin, path, "'%.80s' is not key=value; allowed: %s", kv, conf_allowed);
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

static sd_status apply_kv(kafka_t *k, const cJSON *j, const char *origin, const char *path) {
    char d[128], p[PATH_MAX_LEN];
    if (!cJSON_IsObject(j)) {
        jdesc(j, d, sizeof d);
        return BAD(origin, path, "expected %s; got %s", conf_allowed, d);
    }
    kafka_t tmp;
    memcpy(&tmp, k, sizeof tmp);
    for (const cJSON *c = j->child; c; c = c->next) {
        child_path(p, path, c->string);
        for (const cJSON *q = j->child; q != c; q = q->next)
            if (!strcmp(q->string, c->string)) return BAD(origin, p, "is given twice; allowed: each key once");
        size_t klen = strlen(c->string);
        if (!klen || strchr(c->string, '=')) return BAD(origin, p, "'%.80s' is not a setting name; allowed: %s", c->string, conf_allowed);
        char val[SD_STREAM_CONF_LEN];
        if (cJSON_IsString(c)) snprintf(val, sizeof val, "%s", c->valuestring);
        else if (cJSON_IsBool(c)) snprintf(val, sizeof val, "%s", cJSON_IsTrue(c) ? "true" : "false");
        else if (cJSON_IsNumber(c)) fmt_double(c->valuedouble, val, sizeof val);
        else if (!cJSON_IsNull(c)) {
            jdesc(c, d, sizeof d);
            return BAD(origin, p, "expected a string, number or bool (or null to remove the key), got %s", d);
        }
        int at = -1;
        for (int i = 0; i < tmp.n_conf; i++)
            if (!strncmp(tmp.conf[i], c->string, klen) && tmp.conf[i][klen] == '=') at = i;
        if (cJSON_IsNull(c)) {
            if (at >= 0) {
                memmove(tmp.conf[at], tmp.conf[at + 1], (size_t)(tmp.n_conf - at - 1) * sizeof tmp.conf[0]);
                tmp.n_conf--;
                memset(tmp.conf[tmp.n_conf], 0, sizeof tmp.conf[0]);
            }
            continue;
        }
        if (klen + 1 + strlen(val) >= SD_STREAM_CONF_LEN)
            return BAD(origin, p, "key and value are %zu characters long; allowed: at most %d", klen + 1 + strlen(val),
                       SD_STREAM_CONF_LEN - 2);
        if (at < 0) {
            if (tmp.n_conf >= SD_STREAM_MAX_CONF)
                return BAD(origin, p, "one setting too many; allowed: at most %d settings", SD_STREAM_MAX_CONF);
            at = tmp.n_conf++;
        }
        memset(tmp.conf[at], 0, sizeof tmp.conf[0]);
        size_t vlen = strlen(val); /* klen + 1 + vlen < SD_STREAM_CONF_LEN, checked above */
        memcpy(tmp.conf[at], c->string, klen);
        tmp.conf[at][klen] = '=';
        memcpy(tmp.conf[at] + klen + 1, val, vlen);
        TRY(check_kv_pair(tmp.conf[at], origin, p));
    }
    memcpy(k, &tmp, sizeof tmp);
    return SD_OK;
}

static sd_status validate_kv(const kafka_t *k, const char *path) {
    if (k->n_conf < 0 || k->n_conf > SD_STREAM_MAX_CONF)
        return BAD(NULL, path, "has %d settings; allowed: at most %d", k->n_conf, SD_STREAM_MAX_CONF);
    char p[PATH_MAX_LEN];
    for (int i = 0; i < k->n_conf; i++) {
        index_path(p, path, i);
        if (!memchr(k->conf[i], 0, sizeof k->conf[i])) return BAD(NULL, p, "is not NUL-terminated within %d bytes", SD_STREAM_CONF_LEN);
        TRY(check_kv_pair(k->conf[i], NULL, p));
    }
    return SD_OK;
}

static cJSON *build_kv(const kafka_t *k) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < k->n_conf && i < SD_STREAM_MAX_CONF; i++) {
        char key[SD_STREAM_CONF_LEN];
        snprintf(key, sizeof key, "%s", k->conf[i]);
        char *eq = strchr(key, '=');
        if (!eq) continue;
        *eq = '\0';
        cJSON *v = cJSON_CreateString(eq + 1);
        if (!v || !cJSON_AddItemToObject(o, key, v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* ---- applying JSON onto the struct ------------------------------------------------------------- */
static sd_status apply_object(const field *t, char *base, const cJSON *j, const char *origin, const char *path);

static sd_status apply_list(sd_exp_devices *dv, const cJSON *j, const char *origin, const char *path) {
    char d[128], p[PATH_MAX_LEN], keys[300];
    if (!cJSON_IsArray(j)) {
        jdesc(j, d, sizeof d);
        join_keys(device_fields, keys, sizeof keys);
        return BAD(origin, path, "expected an array of device objects (keys: %s), got %s", keys, d);
    }
    int n = cJSON_GetArraySize(j);
    if (n > SD_MAX_DEVICES) return BAD(origin, path, "has %d entries; allowed: at most %d", n, SD_MAX_DEVICES);
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++) {
        index_path(p, path, i);
        TRY(apply_object(device_fields, (char *)&dv->dev[i], x, origin, p));
    }
    if (n > dv->list_len) dv->list_len = n;
    return SD_OK;
}

static sd_status apply_value(const field *f, char *base, const cJSON *j, const char *origin, const char *path) {
    char d[128], r[96];
    void *dst = base + f->off;
    switch (f->type) {
    case F_STR: {
        if (!cJSON_IsString(j)) {
            jdesc(j, d, sizeof d);
            return BAD(origin, path, "expected a string, got %s", d);
        }
        size_t len = strlen(j->valuestring);
        if (len >= f->size)
            return BAD(origin, path, "'%.40s...' is %zu characters long; allowed: at most %zu", j->valuestring, len, f->size - 1);
        if (f->check) TRY(f->check(j->valuestring, origin, path));
        memset(dst, 0, f->size);
        memcpy(dst, j->valuestring, len);
        return SD_OK;
    }
    case F_NUM:
    case F_INT:
    case F_I64:
    case F_U64: {
        if (!cJSON_IsNumber(j)) {
            range_text(f, r, sizeof r);
            jdesc(j, d, sizeof d);
            return BAD(origin, path, "expected %s, got %s", r, d);
        }
        double v = j->valuedouble;
        TRY(check_number(f, v, origin, path));
        if (f->type == F_NUM) *(double *)dst = v * f->scale;
        else if (f->type == F_INT) *(int *)dst = (int)v;
        else if (f->type == F_I64) *(int64_t *)dst = (int64_t)v;
        else *(uint64_t *)dst = (uint64_t)v;
        if (f->bit) ((sd_exp_device *)base)->set |= f->bit;
        return SD_OK;
    }
    case F_BOOL:
        if (!cJSON_IsBool(j)) {
            jdesc(j, d, sizeof d);
            return BAD(origin, path, "expected true or false, got %s", d);
        }
        *(bool *)dst = cJSON_IsTrue(j);
        return SD_OK;
    case F_ENUM: {
        if (!cJSON_IsString(j)) {
            char list[300];
            join_names(f->names, list, sizeof list);
            jdesc(j, d, sizeof d);
            return BAD(origin, path, "expected one of %s (a string), got %s", list, d);
        }
        int k = name_index(f->names, j->valuestring);
        if (k < 0) return unknown_name(f->names, j->valuestring, origin, path);
        *(int *)dst = k;
        return SD_OK;
    }
    case F_OBJ: return apply_object(f->sub, (char *)dst, j, origin, path);
    case F_LIST: return apply_list((sd_exp_devices *)base, j, origin, path);
    case F_RATES: return apply_rates((sd_exp_rates *)dst, j, origin, path);
    case F_MODES: return apply_modes((sd_experiment *)base, j, origin);
    case F_SEEDS: return apply_seeds((sd_experiment *)base, j, origin);
    case F_KV: return apply_kv((kafka_t *)base, j, origin, path);
    }
    return BAD(origin, path, "internal: field type %d", (int)f->type);
}

static sd_status apply_object(const field *t, char *base, const cJSON *j, const char *origin, const char *path) {
    char d[128], p[PATH_MAX_LEN], keys[900];
    if (!cJSON_IsObject(j)) {
        jdesc(j, d, sizeof d);
        join_keys(t, keys, sizeof keys);
        return BAD(origin, path, "expected an object (keys: %s), got %s", keys, d);
    }
    for (const cJSON *c = j->child; c; c = c->next) {
        child_path(p, path, c->string);
        const field *f = find_field(t, c->string);
        if (!f) return unknown_key(t, c->string, origin, p);
        for (const cJSON *q = j->child; q != c; q = q->next) {
            if (!strcmp(q->string, c->string)) return BAD(origin, p, "is given twice; allowed: each key once");
            const field *g = find_field(t, q->string);
            if (g && g->off == f->off && ((f->flags | g->flags) & ALIAS))
                return BAD(origin, p, "and %s give the same value in different units; allowed: one of them", q->string);
        }
        TRY(apply_value(f, base, c, origin, p));
    }
    return SD_OK;
}

/* Refuses "\u0000" inside JSON strings (it would cut the C string short); gives its offset. */
static long find_nul_escape(const char *text) {
    bool in_str = false;
    for (const char *s = text; *s; s++) {
        if (!in_str) {
            if (*s == '"') in_str = true;
            continue;
        }
        if (*s == '"') in_str = false;
        else if (*s == '\\') {
            if (s[1] == 'u' && s[2] == '0' && s[3] == '0' && s[4] == '0' && s[5] == '0') return (long)(s - text);
            if (s[1]) s++;
        }
    }
    return -1;
}

/* Parses text (NUL-terminated, len bytes) and applies it onto *e; *e is changed only on success.
 * (cJSON also records the error position in a process-wide variable; we use only the position it
 * returns, but loading from several threads at once is not supported by cJSON.) */
static sd_status load_text(const char *text, size_t len, const char *origin, sd_experiment *e) {
    if (len > SD_EXP_FILE_MAX)
        return SD_FAIL(SD_ERR_INVALID, "%s: %zu bytes is larger than the 1 MiB (%d bytes) limit of experiment files", origin, len,
                       SD_EXP_FILE_MAX);
    int line, col;
    long nul = find_nul_escape(text);
    if (nul >= 0) {
        line_col(text, (size_t)nul, &line, &col);
        return SD_FAIL(SD_ERR_FORMAT, "%s:%d:%d: a string holds \\u0000 (NUL); allowed: strings without NUL", origin, line, col);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        line_col(text, off, &line, &col);
        char near[32];
        size_t k = 0;
        for (const char *s = text + off; *s && k < 20; s++) near[k++] = (*s == '\n' || *s == '\r' || *s == '\t') ? ' ' : *s;
        near[k] = '\0';
        return SD_FAIL(SD_ERR_FORMAT, "%s:%d:%d: malformed JSON at byte %zu%s%s%s", origin, line, col, off,
                       k ? " near '" : " (unexpected end of text)", near, k ? "'" : "");
    }
    sd_experiment *tmp = malloc(sizeof *tmp);
    if (!tmp) {
        cJSON_Delete(root);
        return SD_FAIL(SD_ERR_OOM, "%s: no memory for the experiment", origin);
    }
    memcpy(tmp, e, sizeof *tmp);
    sd_status s = apply_object(top_fields, (char *)tmp, root, origin, "");
    cJSON_Delete(root);
    if (s == SD_OK) memcpy(e, tmp, sizeof *e);
    free(tmp);
    return s;
}

/* ---- defaults ---------------------------------------------------------------------------------- */
void sd_experiment_defaults(sd_experiment *e) {
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "experiment");
    snprintf(e->model, sizeof e->model, "fmnist_cnn");
    e->width = 1.0;
    snprintf(e->dataset, sizeof e->dataset, "fashion-mnist");
    e->partition.kind = SD_EXP_PART_IID;
    e->partition.classes_per_device = 1;
    e->partition.alpha = 0.5;
    e->devices.count = 0;
    e->devices.rates.kind = SD_EXP_RATES_PRESET;
    snprintf(e->devices.rates.preset, sizeof e->devices.rates.preset, "uniform_s1");
    e->devices.rate_seed = 1;
    e->devices.arrival = SD_EXP_ARRIVAL_CONSTANT;
    e->devices.profile = sd_device_profile_default();
    e->n_modes = 2;
    e->modes[0] = SD_EXP_MODE_DDP;
    e->modes[1] = SD_EXP_MODE_SCADLES;
    e->backend = SD_EXP_BACKEND_LOCAL;
    e->clock = SD_EXP_CLOCK_VIRTUAL;
    e->batch = 64;
    e->window_s = 1.0;
    e->cap = 256;
    e->buffer.policy = SD_EXP_BUF_PERSISTENCE;
    e->buffer.capacity = 4096;
    e->buffer.full = SD_EXP_FULL_DROP_NEWEST;
    e->ddp_timeout_s = 30.0;
    e->optimizer.lr = 0.05;
    e->optimizer.momentum = 0.9;
    e->optimizer.weight_decay = 5e-4;
    e->optimizer.nesterov = false;
    snprintf(e->optimizer.schedule, sizeof e->optimizer.schedule, "constant");
    e->optimizer.warmup_steps = 0;
    e->compression.policy = SD_COMPRESS_OFF;
    e->compression.ratio = 0.1;
    e->compression.delta = 0.3;
    e->compression.per_layer = true;
    e->compression.min_ratio = 0.001;
    e->compression.max_ratio = 0.1;
    e->compression.epsilon = 0.9;
    e->compression.f16_values = false;
    e->compression.momentum_correction = true;
    e->bn = SD_EXP_BN_AVERAGE;
    e->n_seeds = 1;
    e->seeds[0] = 1;
    e->target_accuracy = 0.85;
    e->eval_every_s = 10.0;
    e->eval_limit = 0;
    e->time_budget_s = 600.0;
    e->link_burst_bytes = 65536.0;
    e->comm_timeout_s = 600.0;
    e->stream.source = SD_SOURCE_KIND_REPLAY;
    snprintf(e->stream.topic_prefix, sizeof e->stream.topic_prefix, "trainer-");
    e->stream.connect_timeout_s = 10.0;
    e->stream.mqtt.qos = 1;
    e->max_steps = 0;
    e->threads = 0;
}

/* ---- loading ----------------------------------------------------------------------------------- */
sd_status sd_experiment_load_string(const char *json, const char *origin, sd_experiment *e) {
    if (!json || !e) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    if (!origin) origin = "<string>";
    sd_experiment *tmp = malloc(sizeof *tmp);
    if (!tmp) return SD_FAIL(SD_ERR_OOM, "%s: no memory for the experiment", origin);
    sd_experiment_defaults(tmp);
    sd_status s = load_text(json, strlen(json), origin, tmp);
    if (s == SD_OK) memcpy(e, tmp, sizeof *e);
    free(tmp);
    return s;
}

sd_status sd_experiment_load_file(const char *path, sd_experiment *e) {
    if (!path || !e) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return SD_FAIL(SD_ERR_IO, "cannot open experiment file '%s': %s", path, strerror(errno));
    size_t cap = SD_EXP_FILE_MAX + 1, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return SD_FAIL(SD_ERR_OOM, "%s: no memory to read the file", path);
    }
    while (n < cap) {
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0) break;
        n += got;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return SD_FAIL(SD_ERR_IO, "cannot read experiment file '%s'", path);
    }
    if (n > SD_EXP_FILE_MAX) {
        free(buf);
        return SD_FAIL(SD_ERR_INVALID, "%s: the file is larger than the 1 MiB (%d bytes) limit of experiment files", path,
                       SD_EXP_FILE_MAX);
    }
    buf[n] = '\0';
    const char *nul = memchr(buf, '\0', n);
    if (nul) {
        int line, col;
        line_col(buf, (size_t)(nul - buf), &line, &col);
        free(buf);
        return SD_FAIL(SD_ERR_FORMAT, "%s:%d:%d: a NUL byte in the file; allowed: JSON text", path, line, col);
    }
    sd_experiment *tmp = malloc(sizeof *tmp);
    if (!tmp) {
        free(buf);
        return SD_FAIL(SD_ERR_OOM, "%s: no memory for the experiment", path);
    }
    sd_experiment_defaults(tmp);
    sd_status s = load_text(buf, n, path, tmp);
    free(buf);
    if (s == SD_OK) memcpy(e, tmp, sizeof *e);
    free(tmp);
    return s;
}

/* ---- --set key=value --------------------------------------------------------------------------- */
static void trim(char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    size_t k = 0;
    while (isspace((unsigned char)s[k])) k++;
    if (k) memmove(s, s + k, n - k + 1);
}

/* A number when the whole text is one (finite), else a string (the applier then names the type). */
static cJSON *scalar_from_text(const char *text) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (text[0] && end && *end == '\0' && isfinite(v) && !isspace((unsigned char)text[0])) return cJSON_CreateNumber(v);
    return cJSON_CreateString(text);
}

/* "a,b,c" -> [a, b, c]; items numbers or strings as they read (empty text: []). */
static cJSON *list_from_text(const char *text, bool numbers) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    char *copy = strdup(text);
    if (!copy) {
        cJSON_Delete(arr);
        return NULL;
    }
    if (copy[0]) {
        char *p = copy;
        for (;;) {
            char *comma = strchr(p, ',');
            if (comma) *comma = '\0';
            trim(p);
            cJSON *item = numbers ? scalar_from_text(p) : cJSON_CreateString(p);
            if (!item || !cJSON_AddItemToArray(arr, item)) {
                cJSON_Delete(item);
                cJSON_Delete(arr);
                free(copy);
                return NULL;
            }
            if (!comma) break;
            p = comma + 1;
        }
    }
    free(copy);
    return arr;
}

static bool looks_numeric_list(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s) && !strchr(".,+-eE ", *s)) return false;
    return true;
}

#define SET_MAX_DEPTH 8

/* One segment of a --set key path: "list[3]" is name "list", index 3 (-1: no index). */
struct seg {
    char name[64];
    int index;
};

/* Walks the key path (key is cut up in place) through the schema: the segments (*nseg), the
 * dotted path for messages (path, PATH_MAX_LEN bytes, "" on entry), the leaf field (*leaf, NULL
 * for an empty key) and whether the path ends at one devices.list entry (*leaf_entry). */
static sd_status set_walk(char *key, const char *origin, struct seg *segs, int *nseg, char *path, const field **leaf,
                          bool *leaf_entry) {
    const field *t = top_fields, *f = NULL;
    char *save = NULL;
    for (char *s = strtok_r(key, ".", &save); s; s = strtok_r(NULL, ".", &save)) {
        if (*nseg == SET_MAX_DEPTH) return BAD(origin, path, "the key path is too deep");
        struct seg *g = &segs[(*nseg)++];
        g->index = -1;
        char *br = strchr(s, '[');
        if (br) {
            char *end = NULL;
            long idx = strtol(br + 1, &end, 10);
            if (end == br + 1 || *end != ']' || end[1] != '\0') {
                char p2[PATH_MAX_LEN];
                child_path(p2, path, s);
                return BAD(origin, p2, "malformed index; allowed: name[N] with N in 0..%d", SD_MAX_DEVICES - 1);
            }
            *br = '\0';
            if (idx < 0 || idx >= SD_MAX_DEVICES) {
                char p2[PATH_MAX_LEN];
                child_path(p2, path, s);
                return BAD(origin, p2, "index %ld is out of range; allowed: 0..%d", idx, SD_MAX_DEVICES - 1);
            }
            g->index = (int)idx;
        }
        if (strlen(s) >= sizeof g->name || !s[0]) return BAD(origin, path, "malformed key '%.60s'", s);
        snprintf(g->name, sizeof g->name, "%s", s);
        char p2[PATH_MAX_LEN];
        child_path(p2, path, s);
        if (!t) return BAD(origin, path, "is not an object, so it has no key '%s'", s);
        f = find_field(t, s);
        *leaf = f;
        if (!f) return unknown_key(t, s, origin, p2);
        memcpy(path, p2, PATH_MAX_LEN);
        *leaf_entry = false;
        if (g->index >= 0) {
            if (f->type != F_LIST) return BAD(origin, path, "is not a list; an index [N] applies to devices.list only");
            index_path(p2, path, g->index);
            memcpy(path, p2, PATH_MAX_LEN);
            t = device_fields;
            *leaf_entry = true;
        } else {
            t = f->type == F_OBJ ? f->sub : NULL;
        }
    }
    return SD_OK;
}

/* A value that is not JSON text, converted to the leaf's type (NULL: no memory). */
static cJSON *set_scalar(const field *f, bool leaf_entry, const char *value) {
    cJSON *v = NULL;
    if (leaf_entry) {
        v = cJSON_CreateString(value);
    } else {
        switch (f->type) {
        case F_NUM:
        case F_INT:
        case F_I64:
        case F_U64: v = scalar_from_text(value); break;
        case F_BOOL:
            v = !strcmp(value, "true") ? cJSON_CreateTrue() : !strcmp(value, "false") ? cJSON_CreateFalse() : cJSON_CreateString(value);
            break;
        case F_MODES: v = list_from_text(value, false); break;
        case F_SEEDS: v = list_from_text(value, true); break;
        case F_RATES: v = looks_numeric_list(value) ? list_from_text(value, true) : cJSON_CreateString(value); break;
        default: v = cJSON_CreateString(value); break;
        }
    }
    return v;
}

/* Wraps v in the objects (and list entries) of the path: {"devices": {"list": [{}, {}, {}, {"rate": v}]}}
 * (NULL, v deleted: no memory). */
static cJSON *set_wrap(cJSON *v, const struct seg *segs, int nseg) {
    for (int i = nseg - 1; v && i >= 0; i--) {
        if (segs[i].index >= 0) {
            cJSON *arr = cJSON_CreateArray();
            for (int k = 0; arr && k < segs[i].index; k++) {
                cJSON *empty = cJSON_CreateObject();
                if (!empty || !cJSON_AddItemToArray(arr, empty)) {
                    cJSON_Delete(empty);
                    cJSON_Delete(arr);
                    arr = NULL;
                }
            }
            if (!arr || !cJSON_AddItemToArray(arr, v)) {
                cJSON_Delete(arr);
                cJSON_Delete(v);
                v = NULL;
                break;
            }
            v = arr;
        }
        cJSON *obj = cJSON_CreateObject();
        if (!obj || !cJSON_AddItemToObject(obj, segs[i].name, v)) {
            cJSON_Delete(obj);
            cJSON_Delete(v);
            v = NULL;
            break;
        }
        v = obj;
    }
    return v;
}

sd_status sd_experiment_set(sd_experiment *e, const char *assignment) {
    if (!e || !assignment) return SD_FAIL(SD_ERR_INVALID, "--set: NULL argument");
    const char *origin = "--set";
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return SD_FAIL(SD_ERR_INVALID, "--set '%.120s': expected key=value, e.g. optimizer.lr=0.1 or modes=ddp,scadles", assignment);
    char key[PATH_MAX_LEN];
    size_t klen = (size_t)(eq - assignment);
    if (klen >= sizeof key) return SD_FAIL(SD_ERR_INVALID, "--set: the key '%.60s...' is too long", assignment);
    memcpy(key, assignment, klen);
    key[klen] = '\0';
    trim(key);
    char *value = strdup(eq + 1);
    if (!value) return SD_FAIL(SD_ERR_OOM, "--set: no memory");
    trim(value);

    /* walk the key path through the schema */
    struct seg segs[SET_MAX_DEPTH];
    int nseg = 0;
    char path[PATH_MAX_LEN] = "";
    const field *f = NULL;
    bool leaf_entry = false; /* the path ends at one devices.list entry */
    sd_status st = set_walk(key, origin, segs, &nseg, path, &f, &leaf_entry);
    if (st != SD_OK) goto out;
    if (!f) {
        st = SD_FAIL(SD_ERR_INVALID, "--set '%.120s': expected key=value with a key", assignment);
        goto out;
    }

    /* the value, converted to the leaf's type */
    cJSON *v = NULL;
    if ((value[0] == '[' || value[0] == '{') && (leaf_entry || f->type != F_STR)) {
        const char *end = NULL;
        v = cJSON_ParseWithOpts(value, &end, 1);
        if (!v) {
            st = SD_FAIL(SD_ERR_FORMAT, "--set: %s: the value is not valid JSON (column %ld)", path,
                         end ? (long)(end - value) + 1 : 1L);
            goto out;
        }
    } else {
        v = set_scalar(f, leaf_entry, value);
    }
    v = set_wrap(v, segs, nseg);
    if (!v) {
        st = SD_FAIL(SD_ERR_OOM, "--set: no memory");
        goto out;
    }
    sd_experiment *tmp = malloc(sizeof *tmp);
    if (!tmp) {
        cJSON_Delete(v);
        st = SD_FAIL(SD_ERR_OOM, "--set: no memory");
        goto out;
    }
    memcpy(tmp, e, sizeof *tmp);
    st = apply_object(top_fields, (char *)tmp, v, origin, "");
    cJSON_Delete(v);
    if (st == SD_OK) memcpy(e, tmp, sizeof *e);
    free(tmp);
out:
    free(value);
    return st;
}

/* ---- resolution and validation ----------------------------------------------------------------- */
/* Checks every stored value of a table against the schema (what code may have set directly). */
static sd_status validate_table(const field *t, const char *base, const char *path) {
    char p[PATH_MAX_LEN];
    for (const field *f = t; f->key; f++) {
        if (f->flags & ALIAS) continue;
        child_path(p, path, f->key);
        const void *src = base + f->off;
        switch (f->type) {
        case F_STR:
            if (!memchr(src, 0, f->size)) return BAD(NULL, p, "is not NUL-terminated within %zu bytes", f->size);
            if (f->check) TRY(f->check((const char *)src, NULL, p));
            break;
        case F_NUM: TRY(check_number(f, *(const double *)src / f->scale, NULL, p)); break;
        case F_INT: TRY(check_number(f, *(const int *)src, NULL, p)); break;
        case F_I64: TRY(check_number(f, (double)*(const int64_t *)src, NULL, p)); break;
        case F_U64: TRY(check_number(f, (double)*(const uint64_t *)src, NULL, p)); break;
        case F_BOOL: break;
        case F_ENUM: {
            int v = *(const int *)src;
            if (v < 0 || v >= name_count(f->names)) {
                char list[300];
                join_names(f->names, list, sizeof list);
                return BAD(NULL, p, "value %d is not allowed; allowed: %s", v, list);
            }
            break;
        }
        case F_OBJ: TRY(validate_table(f->sub, (const char *)src, p)); break;
        case F_LIST: {
            const sd_exp_devices *dv = (const sd_exp_devices *)base;
            if (dv->list_len < 0 || dv->list_len > SD_MAX_DEVICES)
                return BAD(NULL, p, "has %d entries; allowed: at most %d", dv->list_len, SD_MAX_DEVICES);
            break;
        }
        case F_RATES: TRY(check_rates((const sd_exp_rates *)src, NULL, p)); break;
        case F_MODES: TRY(check_modes((const sd_experiment *)base, NULL)); break;
        case F_SEEDS: TRY(check_seeds((const sd_experiment *)base, NULL)); break;
        case F_KV: TRY(validate_kv((const kafka_t *)base, p)); break;
        }
    }
    return SD_OK;
}

/* A device's values, whatever their source, against the device schema. */
static sd_status validate_device(const sd_exp_device *d, int i) {
    char path[PATH_MAX_LEN], p[PATH_MAX_LEN];
    index_path(path, "devices.list", i);
    for (const field *f = device_fields; f->key; f++) {
        if (f->flags & ALIAS) continue;
        child_path(p, path, f->key);
        TRY(check_number(f, *(const double *)((const char *)d + f->off), NULL, p));
    }
    return SD_OK;
}

static sd_status resolve_devices(sd_exp_devices *dv) {
    const sd_exp_rates *r = &dv->rates;
    int n_src = 0;
    char src_name[96];
    if (r->kind == SD_EXP_RATES_PRESET) {
        n_src = find_preset(r->preset)->n;
        snprintf(src_name, sizeof src_name, "preset '%s'", r->preset);
    } else if (r->kind == SD_EXP_RATES_LIST) {
        n_src = r->n;
        snprintf(src_name, sizeof src_name, "array");
    }
    if (dv->count == 0) {
        dv->count = n_src;
        if (dv->count == 0)
            return BAD(NULL, "devices.count", "is needed when devices.rates is a distribution; allowed: 1..%d", SD_MAX_DEVICES);
    } else if (n_src && dv->count != n_src) {
        return BAD(NULL, "devices.count", "is %d but devices.rates (%s) has %d rates; allowed: devices.count = %d (or leave it "
                   "out), or devices.rates with %d values or a distribution", dv->count, src_name, n_src, n_src, dv->count);
    }
    if (dv->list_len > dv->count)
        return BAD(NULL, "devices.list", "has %d entries but devices.count is %d; allowed: at most devices.count entries",
                   dv->list_len, dv->count);

    double rates[SD_MAX_DEVICES];
    if (r->kind == SD_EXP_RATES_PRESET) {
        memcpy(rates, find_preset(r->preset)->rates, sizeof rates);
    } else if (r->kind == SD_EXP_RATES_LIST) {
        memcpy(rates, r->values, sizeof rates);
    } else {
        /* one draw per device in device order, every device drawn (an override does not shift the others) */
        sd_rng g;
        sd_rng_seed(&g, dv->rate_seed);
        for (int i = 0; i < dv->count; i++) {
            double v = 0;
            int tries = 0;
            do {
                if (++tries > 10000)
                    return BAD(NULL, "devices.rates", "the distribution gave no rate in (0, 1e9] in 10000 draws; allowed: %s",
                               rates_allowed);
                v = r->kind == SD_EXP_RATES_UNIFORM ? r->a + (r->b - r->a) * sd_rng_double(&g) : r->a + r->b * sd_rng_normal(&g);
            } while (!(v > 0 && v <= RATE_MAX));
            rates[i] = v;
        }
    }
    for (int i = 0; i < dv->count; i++) {
        sd_exp_device *d = &dv->dev[i];
        if (!(d->set & SD_EXP_DEV_RATE)) d->rate = rates[i];
        if (!(d->set & SD_EXP_DEV_SAMPLES_PER_S)) d->profile.samples_per_s = dv->profile.samples_per_s;
        if (!(d->set & SD_EXP_DEV_STEP_OVERHEAD)) d->profile.step_overhead_s = dv->profile.step_overhead_s;
        if (!(d->set & SD_EXP_DEV_BANDWIDTH)) d->profile.bandwidth_bps = dv->profile.bandwidth_bps;
        if (!(d->set & SD_EXP_DEV_LATENCY)) d->profile.latency_s = dv->profile.latency_s;
        d->set = SD_EXP_DEV_ALL;
        TRY(validate_device(d, i));
    }
    for (int i = dv->count; i < SD_MAX_DEVICES; i++) memset(&dv->dev[i], 0, sizeof dv->dev[i]);
    dv->list_len = dv->count;
    return SD_OK;
}

sd_status sd_experiment_resolve(sd_experiment *e) {
    if (!e) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    TRY(validate_table(top_fields, (const char *)e, ""));
    for (int i = 0; i < e->devices.list_len; i++)
        if (e->devices.dev[i].set & ~SD_EXP_DEV_ALL) {
            char p[PATH_MAX_LEN];
            index_path(p, "devices.list", i);
            return BAD(NULL, p, "internal flags 0x%x are not SD_EXP_DEV_* bits", e->devices.dev[i].set);
        }

    sd_experiment *r = malloc(sizeof *r);
    if (!r) return SD_FAIL(SD_ERR_OOM, "resolve: no memory");
    memcpy(r, e, sizeof *r);
    sd_status s = resolve_devices(&r->devices);
    if (s != SD_OK) {
        free(r);
        return s;
    }

    /* out_dir */
    if (!r->out_dir[0]) {
        char buf[SD_EXP_PATH_LEN + 16];
        snprintf(buf, sizeof buf, "runs/%s", r->name);
        if (strlen(buf) >= sizeof r->out_dir) {
            free(r);
            return BAD(NULL, "out_dir", "runs/<name> is too long; allowed: at most %zu characters", sizeof r->out_dir - 1);
        }
        memset(r->out_dir, 0, sizeof r->out_dir);
        memcpy(r->out_dir, buf, strlen(buf));
    }

    /* cross-field rules */
    int classes = dataset_classes[name_index(dataset_names, r->dataset)];
    if (r->partition.kind == SD_EXP_PART_SLICES && r->partition.classes_per_device > classes)
        s = BAD(NULL, "partition.classes_per_device", "is %d but %s has %d classes; allowed: 1..%d", r->partition.classes_per_device,
                r->dataset, classes, classes);
    bool ddp = false;
    for (int i = 0; i < r->n_modes; i++) ddp |= r->modes[i] == SD_EXP_MODE_DDP;
    if (s == SD_OK && ddp && r->buffer.capacity < r->batch)
        s = BAD(NULL, "buffer.capacity", "is %" PRId64 " samples, smaller than batch %d: ddp could never gather a batch; "
                "allowed: buffer.capacity >= batch", r->buffer.capacity, r->batch);
    if (s == SD_OK && r->compression.policy == SD_COMPRESS_GAIN && r->compression.min_ratio > r->compression.max_ratio)
        s = BAD(NULL, "compression.min_ratio", "%g is above compression.max_ratio %g; allowed: min_ratio <= max_ratio",
                r->compression.min_ratio, r->compression.max_ratio);
    if (s == SD_OK && r->link_emulation != SD_EXP_LINK_OFF && r->clock != SD_EXP_CLOCK_REAL)
        s = BAD(NULL, "link_emulation", "token_bucket needs clock \"real\" (the virtual clock already charges every "
                "collective to the device's link); allowed: off, or set clock to real");
    if (s == SD_OK && r->collectives == SD_EXP_COLL_NCCL && r->compute_backend != SD_EXP_COMPUTE_CUDA)
        s = BAD(NULL, "collectives", "nccl sums gradients in GPU memory, but compute_backend is cpu; allowed: host, or "
                "set compute_backend to cuda");
    else if (s == SD_OK && r->collectives == SD_EXP_COLL_NCCL && r->backend != SD_EXP_BACKEND_MPI)
        s = BAD(NULL, "collectives", "nccl needs one process per GPU under mpirun; allowed: host, or set backend to "
                "mpi and start the run with mpirun -n <devices>");
    else if (s == SD_OK && r->collectives == SD_EXP_COLL_NCCL && r->link_emulation != SD_EXP_LINK_OFF)
        s = BAD(NULL, "collectives", "nccl cannot be shaped by link_emulation (NCCL moves the data itself); allowed: "
                "host with link_emulation token_bucket, or nccl with link_emulation off");
    if (s == SD_OK && r->stream.source != SD_SOURCE_KIND_REPLAY) {
        const char *src = source_names[r->stream.source];
        bool conf_bootstrap = false;
        for (int i = 0; i < r->stream.kafka.n_conf; i++) conf_bootstrap |= !strncmp(r->stream.kafka.conf[i], "bootstrap.servers=", 18);
        if (r->clock != SD_EXP_CLOCK_REAL)
            s = BAD(NULL, "stream.source", "%s needs clock \"real\": the virtual clock models every arrival itself from "
                    "devices.rates, while a broker delivers samples when they are published; allowed: stream.source replay "
                    "with either clock, or clock real with kafka or mqtt", src);
        else if (r->stream.source == SD_SOURCE_KIND_KAFKA && !r->stream.kafka.bootstrap[0] && !conf_bootstrap)
            s = BAD(NULL, "stream.kafka.bootstrap", "is empty but stream.source is kafka; allowed: the brokers as "
                    "host:port[,host:port...], e.g. \"localhost:9092\" (or a bootstrap.servers pair in stream.kafka.conf)");
        else if (r->stream.source == SD_SOURCE_KIND_MQTT && !r->stream.mqtt.host[0])
            s = BAD(NULL, "stream.mqtt.host", "is empty but stream.source is mqtt; allowed: the broker's host name or "
                    "address, e.g. \"127.0.0.1\" (port in stream.mqtt.port, default 1883)");
        else if (r->stream.source == SD_SOURCE_KIND_MQTT && r->stream.mqtt.password_file[0] && !r->stream.mqtt.username[0])
            s = BAD(NULL, "stream.mqtt.password_file", "is set without stream.mqtt.username; allowed: both, or neither "
                    "(anonymous)");
    }
    if (s == SD_OK && (r->injection.alpha > 0) != (r->injection.beta > 0))
        s = BAD(NULL, r->injection.alpha > 0 ? "injection.beta" : "injection.alpha",
                "is 0 while the other is not; allowed: both in (0, 1] (injection on) or both 0 (off)");
    if (s == SD_OK) {
        sd_lr_schedule sch;
        if (!strcmp(r->optimizer.schedule, "cosine") && r->max_steps <= 0) {
            s = BAD(NULL, "optimizer.schedule", "cosine needs the number of steps: set max_steps > 0; allowed: %s", schedule_allowed);
        } else if (sd_lr_schedule_parse(r->optimizer.schedule, (float)r->optimizer.lr, r->max_steps, &sch) != SD_OK) {
            char why[512];
            inner_reason(why, sizeof why);
            s = BAD(NULL, "optimizer.schedule", "%s; allowed: %s", why, schedule_allowed);
        }
    }
    if (s == SD_OK) memcpy(e, r, sizeof *e);
    free(r);
    return s;
}

sd_status sd_experiment_check_ranks(const sd_experiment *e, int ranks) {
    if (!e) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    if (e->backend == SD_EXP_BACKEND_LOCAL) {
        if (ranks != 1)
            return BAD(NULL, "backend", "is local (devices as threads of one process) but the job has %d processes; allowed: "
                       "backend mpi for multi-process jobs, or run one process", ranks);
        return SD_OK;
    }
    if (e->devices.count < 1)
        return BAD(NULL, "devices.count", "is not resolved yet (0); call sd_experiment_resolve first");
    if (ranks != e->devices.count)
        return BAD(NULL, "devices.count", "is %d but the MPI job has %d ranks; allowed: devices.count = the number of ranks "
                   "(mpirun -n %d, or --set devices.count=%d with rates for %d devices)", e->devices.count, ranks,
                   e->devices.count, ranks, ranks);
    return SD_OK;
}

/* ---- writing ----------------------------------------------------------------------------------- */
/* The shortest of %.15g..%.17g that reads back to exactly v. */
static void fmt_double(double v, char *buf, size_t n) {
    if (!isfinite(v)) {
        snprintf(buf, n, "null");
        return;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static bool add_raw(cJSON *obj, const char *key, const char *text) {
    cJSON *x = cJSON_CreateRaw(text);
    if (!x) return false;
    if (key ? !cJSON_AddItemToObject(obj, key, x) : !cJSON_AddItemToArray(obj, x)) {
        cJSON_Delete(x);
        return false;
    }
    return true;
}

static bool add_item(cJSON *obj, const char *key, cJSON *x) {
    if (!x) return false;
    if (key ? !cJSON_AddItemToObject(obj, key, x) : !cJSON_AddItemToArray(obj, x)) {
        cJSON_Delete(x);
        return false;
    }
    return true;
}

static bool add_double(cJSON *obj, const char *key, double v) {
    char b[40];
    fmt_double(v, b, sizeof b);
    return add_raw(obj, key, b);
}

static cJSON *build_object(const field *t, const char *base);

static cJSON *build_rates(const sd_exp_rates *r) {
    if (r->kind == SD_EXP_RATES_PRESET) return cJSON_CreateString(r->preset);
    cJSON *a = cJSON_CreateArray();
    bool ok = a != NULL;
    if (r->kind == SD_EXP_RATES_LIST) {
        for (int i = 0; ok && i < r->n && i < SD_MAX_DEVICES; i++) ok = add_double(a, NULL, r->values[i]);
        if (ok) return a;
        cJSON_Delete(a);
        return NULL;
    }
    ok = ok && add_double(a, NULL, r->a) && add_double(a, NULL, r->b);
    cJSON *o = ok ? cJSON_CreateObject() : NULL;
    if (!o || !add_item(o, r->kind == SD_EXP_RATES_NORMAL ? "normal" : "uniform", a)) {
        if (!o) cJSON_Delete(a);
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *build_list(const sd_exp_devices *dv) {
    cJSON *a = cJSON_CreateArray();
    bool ok = a != NULL;
    for (int i = 0; ok && i < dv->list_len && i < SD_MAX_DEVICES; i++) {
        const sd_exp_device *d = &dv->dev[i];
        cJSON *o = cJSON_CreateObject();
        ok = add_item(a, NULL, o);
        for (const field *f = device_fields; ok && f->key; f++)
            if (!(f->flags & ALIAS) && (d->set & f->bit)) ok = add_double(o, f->key, *(const double *)((const char *)d + f->off));
    }
    if (ok) return a;
    cJSON_Delete(a);
    return NULL;
}

static cJSON *build_object(const field *t, const char *base) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    char b[48];
    for (const field *f = t; ok && f->key; f++) {
        if (f->flags & ALIAS) continue;
        const void *src = base + f->off;
        switch (f->type) {
        case F_STR: ok = add_item(o, f->key, cJSON_CreateString((const char *)src)); break;
        case F_NUM: ok = add_double(o, f->key, *(const double *)src); break;
        case F_INT: snprintf(b, sizeof b, "%d", *(const int *)src), ok = add_raw(o, f->key, b); break;
        case F_I64: snprintf(b, sizeof b, "%" PRId64, *(const int64_t *)src), ok = add_raw(o, f->key, b); break;
        case F_U64: snprintf(b, sizeof b, "%" PRIu64, *(const uint64_t *)src), ok = add_raw(o, f->key, b); break;
        case F_BOOL: ok = add_item(o, f->key, cJSON_CreateBool(*(const bool *)src)); break;
        case F_ENUM: {
            int v = *(const int *)src;
            ok = add_item(o, f->key, cJSON_CreateString(v >= 0 && v < name_count(f->names) ? f->names[v] : "invalid"));
            break;
        }
        case F_OBJ: ok = add_item(o, f->key, build_object(f->sub, (const char *)src)); break;
        case F_LIST: ok = add_item(o, f->key, build_list((const sd_exp_devices *)base)); break;
        case F_RATES: ok = add_item(o, f->key, build_rates((const sd_exp_rates *)src)); break;
        case F_MODES: {
            const sd_experiment *e = (const sd_experiment *)base;
            cJSON *a = cJSON_CreateArray();
            ok = add_item(o, f->key, a);
            for (int i = 0; ok && i < e->n_modes && i < SD_EXP_MAX_MODES; i++)
                ok = add_item(a, NULL, cJSON_CreateString(sd_exp_mode_name(e->modes[i])));
            break;
        }
        case F_KV: ok = add_item(o, f->key, build_kv((const kafka_t *)base)); break;
        case F_SEEDS: {
            const sd_experiment *e = (const sd_experiment *)base;
            cJSON *a = cJSON_CreateArray();
            ok = add_item(o, f->key, a);
            for (int i = 0; ok && i < e->n_seeds && i < SD_EXP_MAX_SEEDS; i++) {
                snprintf(b, sizeof b, "%" PRIu64, e->seeds[i]);
                ok = add_raw(a, NULL, b);
            }
            break;
        }
        }
    }
    if (ok) return o;
    cJSON_Delete(o);
    return NULL;
}

sd_status sd_experiment_to_json(const sd_experiment *e, char **out) {
    if (!e || !out) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    *out = NULL;
    cJSON *root = build_object(top_fields, (const char *)e);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return SD_FAIL(SD_ERR_OOM, "experiment: no memory to write JSON");
    size_t n = strlen(text);
    char *copy = malloc(n + 2);
    if (copy) {
        memcpy(copy, text, n);
        copy[n] = '\n';
        copy[n + 1] = '\0';
    }
    cJSON_free(text);
    if (!copy) return SD_FAIL(SD_ERR_OOM, "experiment: no memory to write JSON");
    *out = copy;
    return SD_OK;
}

sd_status sd_experiment_write_json(const sd_experiment *e, const char *path) {
    if (!e || !path) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    char *text = NULL;
    TRY(sd_experiment_to_json(e, &text));
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 8);
    if (!tmp) {
        free(text);
        return SD_FAIL(SD_ERR_OOM, "experiment: no memory");
    }
    snprintf(tmp, plen + 8, "%s.tmp", path);
    /* written next to the target and renamed, so a reader never sees half a file */
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        sd_status s = SD_FAIL(SD_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        free(text);
        return s;
    }
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        sd_status s = SD_FAIL(SD_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    return SD_OK;
}
