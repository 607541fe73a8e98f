/* experiment_load.c: loading experiments (experiment.h): JSON text and files applied onto the
 * struct through the schema's field tables (experiment_schema.h), with the special values (rates,
 * modes, seeds, Kafka settings), and the --set key=value overrides, which become the same JSON.
 * Every message names the origin, the key path and what is allowed. */
#include "engine/experiment_schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---- JSON values in messages ------------------------------------------------------------------- */
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
        sd_exp_fmt_double(j->valuedouble, buf, n);
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

/* ---- keys -------------------------------------------------------------------------------------- */
static const sd_exp_field *find_field(const sd_exp_field *t, const char *key) {
    for (; t->key; t++)
        if (!strcmp(t->key, key)) return t;
    return NULL;
}

static void join_keys(const sd_exp_field *t, char *buf, size_t n) {
    const char *names[64];
    int k = 0;
    for (; t->key && k < 63; t++) names[k++] = t->key;
    names[k] = NULL;
    sd_exp_join_names(names, buf, n);
}

static sd_status unknown_key(const sd_exp_field *t, const char *key, const char *origin, const char *path) {
    const char *names[64];
    int k = 0;
    for (const sd_exp_field *f = t; f->key && k < 63; f++) names[k++] = f->key;
    names[k] = NULL;
    const char *near = sd_exp_closest(key, names, k);
    char keys[900];
    sd_exp_join_names(names, keys, sizeof keys);
    char hint[128] = "";
    if (near) snprintf(hint, sizeof hint, "; did you mean '%s'?", near);
    return BAD(origin, path, "unknown key%s (allowed keys here: %s)", hint, keys);
}

/* ---- special values: rates, modes, seeds ------------------------------------------------------- */
static sd_status apply_rates(sd_exp_rates *out, const cJSON *j, const char *origin, const char *path) {
    sd_exp_rates r;
    memset(&r, 0, sizeof r);
    char p[PATH_MAX_LEN], d[128];
    if (cJSON_IsString(j)) {
        if (!sd_exp_find_preset(j->valuestring)) {
            const char *names[SD_EXP_N_PRESETS + 1];
            for (size_t i = 0; i < SD_EXP_N_PRESETS; i++) names[i] = sd_exp_preset_table[i].name;
            names[SD_EXP_N_PRESETS] = NULL;
            const char *near = sd_exp_closest(j->valuestring, names, (int)SD_EXP_N_PRESETS);
            return BAD(origin, path, "'%.80s' is not a preset%s%s%s; allowed: %s", j->valuestring, near ? "; did you mean '" : "",
                       near ? near : "", near ? "'?" : "", sd_exp_rates_allowed);
        }
        r.kind = SD_EXP_RATES_PRESET;
        snprintf(r.preset, sizeof r.preset, "%s", j->valuestring);
    } else if (cJSON_IsArray(j)) {
        int n = cJSON_GetArraySize(j);
        if (n < 1 || n > SD_MAX_DEVICES) return BAD(origin, path, "an array of %d rates; allowed: %s", n, sd_exp_rates_allowed);
        r.kind = SD_EXP_RATES_LIST;
        int i = 0;
        for (const cJSON *x = j->child; x; x = x->next, i++) {
            if (!cJSON_IsNumber(x)) {
                sd_exp_index_path(p, path, i);
                jdesc(x, d, sizeof d);
                return BAD(origin, p, "expected a rate (a number in (0, 1e9] samples/s), got %s", d);
            }
            r.values[i] = x->valuedouble;
        }
        r.n = n;
    } else if (cJSON_IsObject(j)) {
        const cJSON *x = j->child;
        if (!x || x->next)
            return BAD(origin, path, "a distribution object needs exactly one key, uniform or normal; allowed: %s", sd_exp_rates_allowed);
        sd_exp_child_path(p, path, x->string);
        if (!strcmp(x->string, "uniform")) r.kind = SD_EXP_RATES_UNIFORM;
        else if (!strcmp(x->string, "normal")) r.kind = SD_EXP_RATES_NORMAL;
        else {
            static const char *const dist_names[] = {"uniform", "normal", NULL};
            const char *near = sd_exp_closest(x->string, dist_names, 2);
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
        return BAD(origin, path, "expected %s; got %s", sd_exp_rates_allowed, d);
    }
    TRY(sd_exp_check_rates(&r, origin, path));
    memcpy(out, &r, sizeof r);
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
        sd_exp_index_path(p, "modes", i);
        if (!cJSON_IsString(x)) {
            jdesc(x, d, sizeof d);
            return BAD(origin, p, "expected \"ddp\" or \"scadles\", got %s", d);
        }
        int k = sd_exp_name_index(sd_exp_mode_names, x->valuestring);
        if (k < 0) return sd_exp_unknown_name(sd_exp_mode_names, x->valuestring, origin, p);
        for (int q = 0; q < i; q++)
            if ((int)m[q] == k) return BAD(origin, p, "'%s' appears twice; allowed: each of ddp, scadles at most once", x->valuestring);
        m[i] = (sd_exp_mode)k;
    }
    e->n_modes = n;
    memset(e->modes, 0, sizeof e->modes);
    memcpy(e->modes, m, (size_t)n * sizeof m[0]);
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
        sd_exp_index_path(p, "seeds", i);
        double v = cJSON_IsNumber(x) ? x->valuedouble : -1;
        if (!cJSON_IsNumber(x) || !(v >= 0 && v <= SD_EXP_SEED_MAX && v == floor(v))) {
            jdesc(x, d, sizeof d);
            return BAD(origin, p, "expected an integer in [0, 2^53], got %s", d);
        }
        tmp.seeds[i] = (uint64_t)v;
    }
    TRY(sd_exp_check_seeds(&tmp, origin));
    e->n_seeds = n;
    memset(e->seeds, 0, sizeof e->seeds);
    memcpy(e->seeds, tmp.seeds, (size_t)n * sizeof(uint64_t));
    return SD_OK;
}

/* ---- stream.kafka.conf ------------------------------------------------------------------------- */
static sd_status apply_kv(sd_exp_kafka *k, const cJSON *j, const char *origin, const char *path) {
    char d[128], p[PATH_MAX_LEN];
    if (!cJSON_IsObject(j)) {
        jdesc(j, d, sizeof d);
        return BAD(origin, path, "expected %s; got %s", sd_exp_conf_allowed, d);
    }
    sd_exp_kafka tmp;
    memcpy(&tmp, k, sizeof tmp);
    for (const cJSON *c = j->child; c; c = c->next) {
        sd_exp_child_path(p, path, c->string);
        for (const cJSON *q = j->child; q != c; q = q->next)
            if (!strcmp(q->string, c->string)) return BAD(origin, p, "is given twice; allowed: each key once");
        size_t klen = strlen(c->string);
        if (!klen || strchr(c->string, '='))
            return BAD(origin, p, "'%.80s' is not a setting name; allowed: %s", c->string, sd_exp_conf_allowed);
        char val[SD_STREAM_CONF_LEN];
        if (cJSON_IsString(c)) snprintf(val, sizeof val, "%s", c->valuestring);
        else if (cJSON_IsBool(c)) snprintf(val, sizeof val, "%s", cJSON_IsTrue(c) ? "true" : "false");
        else if (cJSON_IsNumber(c)) sd_exp_fmt_double(c->valuedouble, val, sizeof val);
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
        TRY(sd_exp_check_kv_pair(tmp.conf[at], origin, p));
    }
    memcpy(k, &tmp, sizeof tmp);
    return SD_OK;
}

/* ---- applying JSON onto the struct ------------------------------------------------------------- */
static sd_status apply_object(const sd_exp_field *t, char *base, const cJSON *j, const char *origin, const char *path);

static sd_status apply_list(sd_exp_devices *dv, const cJSON *j, const char *origin, const char *path) {
    char d[128], p[PATH_MAX_LEN], keys[300];
    if (!cJSON_IsArray(j)) {
        jdesc(j, d, sizeof d);
        join_keys(sd_exp_device_fields, keys, sizeof keys);
        return BAD(origin, path, "expected an array of device objects (keys: %s), got %s", keys, d);
    }
    int n = cJSON_GetArraySize(j);
    if (n > SD_MAX_DEVICES) return BAD(origin, path, "has %d entries; allowed: at most %d", n, SD_MAX_DEVICES);
    int i = 0;
    for (const cJSON *x = j->child; x; x = x->next, i++) {
        sd_exp_index_path(p, path, i);
        TRY(apply_object(sd_exp_device_fields, (char *)&dv->dev[i], x, origin, p));
    }
    if (n > dv->list_len) dv->list_len = n;
    return SD_OK;
}

static sd_status apply_value(const sd_exp_field *f, char *base, const cJSON *j, const char *origin, const char *path) {
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
        if (f->bit) ((sd_exp_device *)base)->set |= f->bit;
        return SD_OK;
    }
    case F_NUM:
    case F_INT:
    case F_I64:
    case F_U64: {
        if (!cJSON_IsNumber(j)) {
            sd_exp_range_text(f, r, sizeof r);
            jdesc(j, d, sizeof d);
            return BAD(origin, path, "expected %s, got %s", r, d);
        }
        double v = j->valuedouble;
        TRY(sd_exp_check_number(f, v, origin, path));
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
            sd_exp_join_names(f->names, list, sizeof list);
            jdesc(j, d, sizeof d);
            return BAD(origin, path, "expected one of %s (a string), got %s", list, d);
        }
        int k = sd_exp_name_index(f->names, j->valuestring);
        if (k < 0) return sd_exp_unknown_name(f->names, j->valuestring, origin, path);
        *(int *)dst = k;
        return SD_OK;
    }
    case F_OBJ: return apply_object(f->sub, (char *)dst, j, origin, path);
    case F_LIST: return apply_list((sd_exp_devices *)base, j, origin, path);
    case F_RATES: return apply_rates((sd_exp_rates *)dst, j, origin, path);
    case F_MODES: return apply_modes((sd_experiment *)base, j, origin);
    case F_SEEDS: return apply_seeds((sd_experiment *)base, j, origin);
    case F_KV: return apply_kv((sd_exp_kafka *)base, j, origin, path);
    }
    return BAD(origin, path, "internal: field type %d", (int)f->type);
}

/* The two forms of a device's compute (engine/profile.h), after an object (devices.compute, or one
 * devices.list entry) was applied: it may give keys of one form only, and the form it gives
 * replaces the other, so the struct holds one form's values (which is what the writer writes): a
 * named profile resets samples_per_s and step_overhead_s (devices.compute: to their defaults; a
 * list entry: to not given), and samples_per_s or step_overhead_s clear the profile. */
static sd_status apply_forms(const sd_exp_field *t, char *base, const cJSON *j, const char *origin, const char *path) {
    const char *modelled = NULL, *named = NULL;
    for (const cJSON *c = j->child; c; c = c->next) {
        const sd_exp_field *f = find_field(t, c->string);
        if (f && (f->flags & FORM_MODELLED)) modelled = c->string;
        if (f && (f->flags & FORM_MEASURED) && cJSON_IsString(c) && c->valuestring[0]) named = c->valuestring;
    }
    if (!modelled && !named) return SD_OK;
    if (modelled && named)
        return BAD(origin, path, "names the profile '%.120s' and gives %s: a device's compute is either measured (profile, "
                   "times slowdown) or modelled (samples_per_s and step_overhead_s, times slowdown); allowed: one of the two "
                   "forms: remove %s, or the profile", named, modelled, modelled);
    const sd_device_profile def = sd_device_profile_default();
    for (const sd_exp_field *f = t; f->key; f++) {
        char *dst = base + f->off;
        if (named && (f->flags & FORM_MODELLED) && !(f->flags & ALIAS)) {
            if (f->bit) { /* a list entry: not given, the device takes the measured form */
                *(double *)dst = 0;
                ((sd_exp_device *)base)->set &= ~f->bit;
            } else { /* devices.compute (an sd_device_profile): the defaults */
                memcpy(dst, (const char *)&def + f->off, sizeof(double));
            }
        }
        if (modelled && (f->flags & FORM_MEASURED)) {
            memset(dst, 0, f->size);
            if (f->bit) ((sd_exp_device *)base)->set &= ~f->bit;
        }
    }
    return SD_OK;
}

static sd_status apply_object(const sd_exp_field *t, char *base, const cJSON *j, const char *origin, const char *path) {
    char d[128], p[PATH_MAX_LEN], keys[900];
    if (!cJSON_IsObject(j)) {
        jdesc(j, d, sizeof d);
        join_keys(t, keys, sizeof keys);
        return BAD(origin, path, "expected an object (keys: %s), got %s", keys, d);
    }
    for (const cJSON *c = j->child; c; c = c->next) {
        sd_exp_child_path(p, path, c->string);
        const sd_exp_field *f = find_field(t, c->string);
        if (!f) return unknown_key(t, c->string, origin, p);
        for (const cJSON *q = j->child; q != c; q = q->next) {
            if (!strcmp(q->string, c->string)) return BAD(origin, p, "is given twice; allowed: each key once");
            const sd_exp_field *g = find_field(t, q->string);
            if (g && g->off == f->off && ((f->flags | g->flags) & ALIAS))
                return BAD(origin, p, "and %s give the same value in different units; allowed: one of them", q->string);
        }
        TRY(apply_value(f, base, c, origin, p));
    }
    return apply_forms(t, base, j, origin, path);
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

/* The first integer literal (no fraction, no exponent) outside strings whose value exceeds 2^53,
 * where a JSON number (a double, as cJSON reads it) stops being exact: a seed of
 * 9007199254740993 would silently become ...992. Returns its offset and sets *n to its length, or
 * -1. (Literals with a fraction or an exponent are meant as reals and are left alone.) */
static long find_inexact_integer(const char *text, size_t *n) {
    bool in_str = false;
    for (const char *s = text; *s; s++) {
        if (in_str) {
            if (*s == '"') in_str = false;
            else if (*s == '\\' && s[1]) s++;
            continue;
        }
        if (*s == '"') {
            in_str = true;
            continue;
        }
        if (!(*s >= '0' && *s <= '9')) continue;
        const char *a = s, *d = s;
        while (*d >= '0' && *d <= '9') d++;
        s = d - 1;
        if (*d == '.' || *d == 'e' || *d == 'E') continue;
        const char *z = a;
        while (z < d - 1 && *z == '0') z++; /* (leading zeros are malformed JSON; cJSON says so) */
        size_t digits = (size_t)(d - z);
        if (digits > 16 || (digits == 16 && memcmp(z, "9007199254740992", 16) > 0)) {
            const char *b = a > text && a[-1] == '-' ? a - 1 : a;
            *n = (size_t)(d - b);
            return (long)(b - text);
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
    size_t big_len = 0;
    long big = find_inexact_integer(text, &big_len);
    if (big >= 0) {
        line_col(text, (size_t)big, &line, &col);
        return SD_FAIL(SD_ERR_INVALID, "%s:%d:%d: the integer %.*s is above 2^53 (9007199254740992), where a JSON number "
                       "is no longer exact (it would be read as a different number); seeds and counts must lie in "
                       "[0, 2^53]; write a real with an exponent (e.g. 1e17) if that is what you mean", origin, line, col,
                       (int)(big_len < 40 ? big_len : 40), text + big);
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
    sd_status s = apply_object(sd_exp_top_fields, (char *)tmp, root, origin, "");
    cJSON_Delete(root);
    if (s == SD_OK) memcpy(e, tmp, sizeof *e);
    free(tmp);
    return s;
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
static sd_status set_walk(char *key, const char *origin, struct seg *segs, int *nseg, char *path, const sd_exp_field **leaf,
                          bool *leaf_entry) {
    const sd_exp_field *t = sd_exp_top_fields, *f = NULL;
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
                sd_exp_child_path(p2, path, s);
                return BAD(origin, p2, "malformed index; allowed: name[N] with N in 0..%d", SD_MAX_DEVICES - 1);
            }
            *br = '\0';
            if (idx < 0 || idx >= SD_MAX_DEVICES) {
                char p2[PATH_MAX_LEN];
                sd_exp_child_path(p2, path, s);
                return BAD(origin, p2, "index %ld is out of range; allowed: 0..%d", idx, SD_MAX_DEVICES - 1);
            }
            g->index = (int)idx;
        }
        if (strlen(s) >= sizeof g->name || !s[0]) return BAD(origin, path, "malformed key '%.60s'", s);
        snprintf(g->name, sizeof g->name, "%s", s);
        char p2[PATH_MAX_LEN];
        sd_exp_child_path(p2, path, s);
        if (!t) return BAD(origin, path, "is not an object, so it has no key '%s'", s);
        f = find_field(t, s);
        *leaf = f;
        if (!f) return unknown_key(t, s, origin, p2);
        memcpy(path, p2, PATH_MAX_LEN);
        *leaf_entry = false;
        if (g->index >= 0) {
            if (f->type != F_LIST) return BAD(origin, path, "is not a list; an index [N] applies to devices.list only");
            sd_exp_index_path(p2, path, g->index);
            memcpy(path, p2, PATH_MAX_LEN);
            t = sd_exp_device_fields;
            *leaf_entry = true;
        } else {
            t = f->type == F_OBJ ? f->sub : NULL;
        }
    }
    return SD_OK;
}

/* A value that is not JSON text, converted to the leaf's type (NULL: no memory). */
static cJSON *set_scalar(const sd_exp_field *f, bool leaf_entry, const char *value) {
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
    const size_t kl = strlen(key);
    if (kl && (key[0] == '.' || key[kl - 1] == '.' || strstr(key, "..")))
        return SD_FAIL(SD_ERR_INVALID, "--set '%.120s': the key '%s' has an empty part (a dot at an end, or two in a "
                       "row); write the path with single dots, e.g. optimizer.lr=0.1", assignment, key);
    char *value = strdup(eq + 1);
    if (!value) return SD_FAIL(SD_ERR_OOM, "--set: no memory");
    trim(value);
    if (!strcmp(key, "seeds")) { /* JSON numbers are doubles: refuse what they would round */
        for (const char *q = value; *q;) {
            while (*q == ' ' || *q == ',' || *q == '[' || *q == ']') q++;
            if (!*q) break;
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(q, &end, 10);
            if (end != q && (errno == ERANGE || v > (1ull << 53))) {
                sd_status bad = SD_FAIL(SD_ERR_INVALID, "--set: seeds: %.*s is above 2^53 (9007199254740992), where a "
                                        "JSON number is no longer exact; allowed: integers in [0, 2^53]", (int)(end - q), q);
                free(value);
                return bad;
            }
            q = end != q ? end : q + 1;
        }
    }

    /* walk the key path through the schema */
    struct seg segs[SET_MAX_DEPTH];
    int nseg = 0;
    char path[PATH_MAX_LEN] = "";
    const sd_exp_field *f = NULL;
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
    st = apply_object(sd_exp_top_fields, (char *)tmp, v, origin, "");
    cJSON_Delete(v);
    if (st == SD_OK) memcpy(e, tmp, sizeof *e);
    free(tmp);
out:
    free(value);
    return st;
}
