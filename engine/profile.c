/* profile.c: device profiles (profile.h): the defaults, the reader of device profile files
 * (scadles-bench --profile writes them; docs/experiments.md, "Device profile files"), the
 * interpolation of a model's table and the compute time the virtual clock charges. */
#include "engine/profile.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

sd_device_profile sd_device_profile_default(void) {
    return (sd_device_profile){.samples_per_s = 2000.0, .step_overhead_s = 0.005, .bandwidth_bps = 100e6,
                               .latency_s = 0.001, .profile = "", .slowdown = 1.0};
}

/* ---- reading a device profile file ------------------------------------------------------------- */
#define FIX_MEASURE "measure it with scadles-bench --profile --models %s --out FILE (docs/experiments.md, \"Device profile files\")"

static sd_status slurp(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return SD_FAIL(SD_ERR_IO, "%s: cannot open the device profile: %s; allowed: a file written by scadles-bench "
                       "--profile --out FILE (a path relative to the directory the program runs in, or absolute)", path,
                       strerror(errno));
    char *buf = malloc(SD_PROFILE_FILE_MAX + 2);
    if (!buf) {
        fclose(f);
        return SD_FAIL(SD_ERR_OOM, "%s: no memory to read the device profile", path);
    }
    size_t n = fread(buf, 1, SD_PROFILE_FILE_MAX + 1, f);
    bool err = ferror(f);
    fclose(f);
    if (err || n > SD_PROFILE_FILE_MAX) {
        free(buf);
        if (err) return SD_FAIL(SD_ERR_IO, "%s: cannot read the device profile (is it a folder?)", path);
        return SD_FAIL(SD_ERR_INVALID, "%s: larger than the 1 MiB limit of device profile files; allowed: a file written "
                       "by scadles-bench --profile", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return SD_OK;
}

static void line_col(const char *text, size_t off, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

static const char *jtype(const cJSON *j) {
    if (!j) return "missing";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a bool";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsArray(j)) return "an array";
    return "an object";
}

/* "a, b, c" of an object's keys */
static void key_list(const cJSON *o, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (const cJSON *c = o ? o->child : NULL; c && used < n; c = c->next)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "", c->string);
    if (!buf[0]) snprintf(buf, n, "none");
}

static sd_status read_number(const cJSON *o, const char *key, const char *path, const char *where, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return SD_FAIL(SD_ERR_INVALID, "%s: %s.%s: expected a finite number, got %s; allowed: a file written by "
                       "scadles-bench --profile", path, where, key, jtype(v));
    *out = v->valuedouble;
    return SD_OK;
}

static sd_status read_table(const cJSON *m, const char *path, const char *model, sd_compute_table *t) {
    char where[160];
    snprintf(where, sizeof where, "models.%s", model);
    const cJSON *tab = cJSON_GetObjectItemCaseSensitive(m, "table");
    int n = cJSON_IsArray(tab) ? cJSON_GetArraySize(tab) : -1;
    if (n < 1 || n > SD_PROFILE_MAX_POINTS)
        return SD_FAIL(SD_ERR_INVALID, "%s: %s.table: expected an array of 1..%d {\"batch\", \"seconds\"} points, got %s%s; "
                       "allowed: " FIX_MEASURE, path, where, SD_PROFILE_MAX_POINTS, n > 0 ? "an array of " : jtype(tab),
                       n > 0 ? "too many points" : "", model);
    int i = 0;
    for (const cJSON *pt = tab->child; pt; pt = pt->next, i++) {
        char at[200];
        snprintf(at, sizeof at, "%s.table[%d]", where, i);
        if (!cJSON_IsObject(pt))
            return SD_FAIL(SD_ERR_INVALID, "%s: %s: expected an object {\"batch\": B, \"seconds\": S}, got %s", path, at, jtype(pt));
        double b = 0, s = 0;
        TRY(read_number(pt, "batch", path, at, &b));
        TRY(read_number(pt, "seconds", path, at, &s));
        if (!(b >= 1 && b <= 1e9 && b == floor(b)))
            return SD_FAIL(SD_ERR_INVALID, "%s: %s.batch: %g is not a batch size; allowed: an integer in 1..1e9", path, at, b);
        if (i > 0 && !(b > t->batch[i - 1]))
            return SD_FAIL(SD_ERR_INVALID, "%s: %s.batch: %g does not follow %g: the batches must increase; allowed: the "
                           "points in increasing batch order, each batch once", path, at, b, t->batch[i - 1]);
        if (!(s > 0))
            return SD_FAIL(SD_ERR_INVALID, "%s: %s.seconds: %g is not a step time; allowed: a number > 0 (seconds of one "
                           "training step at batch %g)", path, at, s, b);
        if (i > 0 && s < t->seconds[i - 1])
            return SD_FAIL(SD_ERR_INVALID, "%s: %s.seconds: %g s at batch %g is less than %g s at batch %g: the times must "
                           "not decrease with the batch (a noisy measurement); allowed: non-decreasing times; " FIX_MEASURE
                           " again on a quieter machine or with more --iters", path, at, s, b, t->seconds[i - 1],
                           t->batch[i - 1], model);
        t->batch[i] = b;
        t->seconds[i] = s;
    }
    t->n = n;
    const cJSON *fit = cJSON_GetObjectItemCaseSensitive(m, "fit");
    snprintf(where + strlen(where), sizeof where - strlen(where), ".fit");
    if (!cJSON_IsObject(fit))
        return SD_FAIL(SD_ERR_INVALID, "%s: %s: expected an object {\"overhead_s\", \"per_sample_s\"}, got %s; allowed: "
                       FIX_MEASURE, path, where, jtype(fit), model);
    TRY(read_number(fit, "overhead_s", path, where, &t->overhead_s));
    TRY(read_number(fit, "per_sample_s", path, where, &t->per_sample_s));
    if (t->per_sample_s < 0)
        return SD_FAIL(SD_ERR_INVALID, "%s: %s.per_sample_s: %g is negative; allowed: a number >= 0 (the slope of the "
                       "table's seconds against the batch)", path, where, t->per_sample_s);
    return SD_OK;
}

static sd_status read_profile(const cJSON *root, const char *path, const char *model, double width, sd_compute_table *t) {
    if (!cJSON_IsObject(root))
        return SD_FAIL(SD_ERR_INVALID, "%s: expected a JSON object (a device profile), got %s; allowed: a file written by "
                       "scadles-bench --profile", path, jtype(root));
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, SD_PROFILE_FORMAT))
        return SD_FAIL(SD_ERR_INVALID, "%s: format: expected \"%s\", got %s%s%.60s%s: not a device profile; allowed: a file "
                       "written by scadles-bench --profile", path, SD_PROFILE_FORMAT, jtype(fmt), cJSON_IsString(fmt) ? " \"" : "",
                       cJSON_IsString(fmt) ? fmt->valuestring : "", cJSON_IsString(fmt) ? "\"" : "");
    double version = 0;
    TRY(read_number(root, "version", path, "(top level)", &version));
    if (version != SD_PROFILE_VERSION)
        return SD_FAIL(SD_ERR_INVALID, "%s: version: %g is not known to this build (it reads version %d); allowed: a file "
                       "written by this build's scadles-bench --profile", path, version, SD_PROFILE_VERSION);
    double threads = 0, conc = 0;
    TRY(read_number(root, "threads", path, "(top level)", &threads));
    TRY(read_number(root, "concurrency", path, "(top level)", &conc));
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (!cJSON_IsObject(models))
        return SD_FAIL(SD_ERR_INVALID, "%s: models: expected an object of model name -> table, got %s", path, jtype(models));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(models, model);
    if (!m) {
        char have[400];
        key_list(models, have, sizeof have);
        return SD_FAIL(SD_ERR_INVALID, "%s: models: has no table for model %s (it has: %s); allowed: a profile that "
                       "measured %s: " FIX_MEASURE ", or the modelled form (samples_per_s, step_overhead_s)", path, model,
                       have, model, model);
    }
    if (!cJSON_IsObject(m))
        return SD_FAIL(SD_ERR_INVALID, "%s: models.%s: expected an object (width, table, fit), got %s", path, model, jtype(m));
    double w = 1;
    if (cJSON_GetObjectItemCaseSensitive(m, "width")) {
        char where[160];
        snprintf(where, sizeof where, "models.%s", model);
        TRY(read_number(m, "width", path, where, &w));
    }
    if (w != width)
        return SD_FAIL(SD_ERR_INVALID, "%s: models.%s.width: the table was measured at width %g, the experiment trains "
                       "width %g; allowed: a table of the same width: scadles-bench --profile --width %g --models %s --out FILE",
                       path, model, w, width, width, model);
    TRY(read_table(m, path, model, t));
    t->threads = (int)threads;
    t->concurrency = (int)conc;
    return SD_OK;
}

sd_status sd_compute_table_load(const char *path, const char *model, double width, sd_compute_table *out) {
    if (!path || !model || !out) return SD_FAIL(SD_ERR_INVALID, "device profile: NULL argument");
    size_t len = 0;
    char *text = NULL;
    TRY(slurp(path, &text, &len));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int line, col;
        line_col(text, off, &line, &col);
        free(text);
        return SD_FAIL(SD_ERR_FORMAT, "%s:%d:%d: malformed JSON (byte %zu); allowed: a file written by scadles-bench "
                       "--profile", path, line, col, off);
    }
    free(text);
    sd_compute_table t;
    memset(&t, 0, sizeof t);
    sd_status s = read_profile(root, path, model, width, &t);
    cJSON_Delete(root);
    if (s == SD_OK) *out = t;
    return s;
}

/* ---- the compute time ------------------------------------------------------------------------------ */
double sd_compute_table_seconds(const sd_compute_table *t, int batch) {
    if (batch <= 0 || t->n < 1) return 0.0;
    const double b = (double)batch;
    const int last = t->n - 1;
    if (b >= t->batch[last]) return t->seconds[last] + t->per_sample_s * (b - t->batch[last]);
    if (b <= t->batch[0]) { /* never cheaper per sample than the first point */
        double v = t->seconds[0] - t->per_sample_s * (t->batch[0] - b), floor_s = t->seconds[0] * b / t->batch[0];
        return v > floor_s ? v : floor_s;
    }
    int i = 1;
    while (t->batch[i] < b) i++; /* batch[i - 1] < b <= batch[i] */
    return t->seconds[i - 1] + (t->seconds[i] - t->seconds[i - 1]) * (b - t->batch[i - 1]) / (t->batch[i] - t->batch[i - 1]);
}

sd_status sd_compute_model_make(const sd_device_profile *p, const char *model, double width, sd_compute_model *out) {
    if (!p || !out) return SD_FAIL(SD_ERR_INVALID, "compute model: NULL argument");
    memset(out, 0, sizeof *out);
    out->samples_per_s = p->samples_per_s;
    out->step_overhead_s = p->step_overhead_s;
    out->slowdown = p->slowdown;
    if (!p->profile[0]) return SD_OK;
    out->measured = true;
    return sd_compute_table_load(p->profile, model, width, &out->table);
}

double sd_compute_time(const sd_compute_model *m, int batch) {
    if (batch <= 0) return 0.0;
    if (m->measured) return m->slowdown * sd_compute_table_seconds(&m->table, batch);
    return m->slowdown * (m->step_overhead_s + (double)batch / m->samples_per_s);
}
