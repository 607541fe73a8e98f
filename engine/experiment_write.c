/* experiment_write.c: an experiment written back as JSON (experiment.h): every key of the schema's
 * field tables (experiment_schema.h) but the aliases, numbers exact (the shortest text that reads
 * back to the same double), so that loading the text gives the same struct byte for byte; the
 * file is written next to its target and renamed into place. */
#include "engine/experiment_schema.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---- writing ----------------------------------------------------------------------------------- */
/* stream.kafka.conf: the stored "key=value" pairs as an object of strings. */
static cJSON *build_kv(const sd_exp_kafka *k) {
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
    sd_exp_fmt_double(v, b, sizeof b);
    return add_raw(obj, key, b);
}

static cJSON *build_object(const sd_exp_field *t, const char *base);

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
        for (const sd_exp_field *f = sd_exp_device_fields; ok && f->key; f++) {
            if ((f->flags & ALIAS) || !(d->set & f->bit)) continue;
            const char *src = (const char *)d + f->off;
            ok = f->type == F_STR ? add_item(o, f->key, cJSON_CreateString(src)) : add_double(o, f->key, *(const double *)src);
        }
    }
    if (ok) return a;
    cJSON_Delete(a);
    return NULL;
}

/* devices.compute names a profile file (its measured form, engine/profile.h) */
static bool names_profile(const sd_exp_field *t, const char *base) {
    for (; t->key; t++)
        if ((t->flags & FORM_MEASURED) && base[t->off]) return true;
    return false;
}

static cJSON *build_object(const sd_exp_field *t, const char *base) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    char b[48];
    const bool measured = names_profile(t, base); /* only the keys of the form in use: one object gives one form */
    for (const sd_exp_field *f = t; ok && f->key; f++) {
        if (f->flags & ALIAS) continue;
        if ((f->flags & FORM_MODELLED) ? measured : (f->flags & FORM_MEASURED) ? !measured : false) continue;
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
            ok = add_item(o, f->key, cJSON_CreateString(v >= 0 && v < sd_exp_name_count(f->names) ? f->names[v] : "invalid"));
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
        case F_KV: ok = add_item(o, f->key, build_kv((const sd_exp_kafka *)base)); break;
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
    cJSON *root = build_object(sd_exp_top_fields, (const char *)e);
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
