/* report_data.c: the report's inputs. Reads summary.json (the runs, the target, the clock from
 * config.json), checks every run's metrics.jsonl and eval.jsonl exist, and converts them into
 * whitespace-separated gnuplot data files under report/data/ ('?' = missing), noting the widest
 * per-device arrays and largest values the scripts need. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "engine/report_internal.h"

static sd_status read_text(const char *path, char **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return SD_FAIL(SD_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) break;
            buf = b;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return bad ? SD_FAIL(SD_ERR_IO, "cannot read %s", path) : SD_FAIL(SD_ERR_OOM, "report: no memory for %s", path);
    }
    buf[len] = '\0';
    *out = buf;
    return SD_OK;
}

/* A number column: the value, or '?' (gnuplot's missing marker in these files). */
static void put_num(FILE *f, const cJSON *o, const char *key) {
    double v;
    if (sd_rep_get_num(o, key, &v)) fprintf(f, " %.9g", v);
    else fputs(" ?", f);
}

/* The elements of a JSON array as columns; returns the array's length (0 when absent) and
 * raises *max to the largest element (max may be NULL). */
static int put_array(FILE *f, const cJSON *o, const char *key, double *max) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    int n = 0;
    if (!cJSON_IsArray(a)) return 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) {
        if (n >= MAX_DEVICES) break;
        if (cJSON_IsNumber(it) && isfinite(it->valuedouble)) {
            fprintf(f, " %.9g", it->valuedouble);
            if (max && it->valuedouble > *max) *max = it->valuedouble;
        } else {
            fputs(" ?", f);
        }
        n++;
    }
    return n;
}

/* ---- summary.json --------------------------------------------------------------------------- */
sd_status sd_rep_load_summary(sd_rep *r) {
    char path[PATH_LEN];
    TRY(sd_rep_pathf(path, "%s/summary.json", r->dir));
    struct stat sb;
    int src = stat(path, &sb);
    if (src != 0 || !S_ISREG(sb.st_mode))
        return SD_FAIL(SD_ERR_IO, "no summary file %s: %s (the report reads an experiment's out_dir, where "
                                  "scadles-train writes summary.json when the runs end)",
                       path, src != 0 ? strerror(errno) : "not a regular file");
    char *text = NULL;
    TRY(read_text(path, &text));
    const char *end = NULL;
    r->summary = cJSON_ParseWithOpts(text, &end, true);
    if (!r->summary || !cJSON_IsObject(r->summary)) {
        long off = end ? (long)(end - text) : -1;
        free(text);
        return SD_FAIL(SD_ERR_FORMAT, "%s is not a JSON object (parse stopped at byte %ld)", path, off);
    }
    free(text);
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(r->summary, "runs");
    int n = cJSON_IsArray(runs) ? cJSON_GetArraySize(runs) : 0;
    if (n <= 0) return SD_FAIL(SD_ERR_FORMAT, "%s has no \"runs\" (an array of one object per mode and seed)", path);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(r->summary, "experiment");
    r->experiment = cJSON_IsString(name) ? name->valuestring : "experiment";
    r->has_target = sd_rep_get_num(r->summary, "target_accuracy", &r->target);
    double dv = 0;
    r->devices = sd_rep_get_num(r->summary, "devices", &dv) && dv >= 0 && dv <= 1e6 ? (int)dv : 0;
    r->runs = calloc((size_t)n, sizeof *r->runs);
    if (!r->runs) return SD_FAIL(SD_ERR_OOM, "report: no memory");
    r->nruns = n;
    for (int i = 0; i < n; i++) {
        sd_rep_run *ri = &r->runs[i];
        const cJSON *o = cJSON_GetArrayItem(runs, i);
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(o, "mode");
        double seed = -1;
        if (!cJSON_IsString(mode) || strlen(mode->valuestring) >= sizeof ri->mode || !sd_rep_safe_name(mode->valuestring) ||
            strchr(mode->valuestring, '.'))
            return SD_FAIL(SD_ERR_FORMAT, "%s: runs[%d] has no \"mode\" made of letters, digits, '_' and '-'", path, i);
        if (!sd_rep_get_num(o, "seed", &seed) || seed < 0 || seed >= 18446744073709551616.0 || seed != floor(seed))
            return SD_FAIL(SD_ERR_FORMAT, "%s: runs[%d] has no \"seed\" (a non-negative 64-bit integer)", path, i);
        snprintf(ri->mode, sizeof ri->mode, "%s", mode->valuestring);
        ri->seed = (unsigned long long)seed;
        if (snprintf(ri->stem, sizeof ri->stem, "%s-seed%llu", ri->mode, ri->seed) >= (int)sizeof ri->stem ||
            snprintf(ri->label, sizeof ri->label, "%s seed %llu", ri->mode, ri->seed) >= (int)sizeof ri->label)
            return SD_FAIL(SD_ERR_FORMAT, "%s: runs[%d]: mode name too long", path, i);
        ri->sum = o;
    }
    /* the clock, from the resolved config (optional: only labels the time axis) */
    snprintf(r->clock, sizeof r->clock, "clock");
    TRY(sd_rep_pathf(path, "%s/config.json", r->dir));
    char *ctext = NULL;
    if (sd_rep_file_exists(path) && read_text(path, &ctext) == SD_OK) {
        cJSON *c = cJSON_Parse(ctext);
        const cJSON *clk = cJSON_GetObjectItemCaseSensitive(c, "clock");
        if (cJSON_IsString(clk) && sd_rep_safe_name(clk->valuestring) && strlen(clk->valuestring) < 20)
            snprintf(r->clock, sizeof r->clock, "%s clock", clk->valuestring);
        cJSON_Delete(c);
        free(ctext);
    }
    sd_clear_error();
    return SD_OK;
}

/* Every run's metrics.jsonl and eval.jsonl must exist; one error names all that do not. */
sd_status sd_rep_check_inputs(sd_rep *r) {
    char missing[1200];
    size_t len = 0;
    int count = 0;
    missing[0] = '\0';
    static const char *const files[] = {"metrics.jsonl", "eval.jsonl"};
    for (int i = 0; i < r->nruns; i++)
        for (int k = 0; k < 2; k++) {
            char p[PATH_LEN];
            TRY(sd_rep_pathf(p, "%s/%s/%s", r->dir, r->runs[i].stem, files[k]));
            if (sd_rep_file_exists(p)) continue;
            count++;
            if (len + strlen(p) + 16 < sizeof missing) {
                len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%s", count > 1 ? ", " : "", p);
            } else if (len + 16 < sizeof missing) {
                len += (size_t)snprintf(missing + len, sizeof missing - len, ", ...");
                len = sizeof missing; /* stop appending */
            }
        }
    if (count > 0)
        return SD_FAIL(SD_ERR_IO, "%d run file%s listed by summary.json missing: %s", count, count > 1 ? "s" : "", missing);
    return SD_OK;
}

/* ---- .jsonl conversion ---------------------------------------------------------------------- */
typedef sd_status (*line_fn)(void *ctx, const cJSON *o, const char *path, long line);

/* Calls fn for each JSON object line. A line that does not parse is an error unless it is the
 * last non-blank line (a run cut short mid-write): that one is skipped with a note. */
static sd_status read_jsonl(sd_rep *r, const char *path, line_fn fn, void *ctx, long *rows) {
    FILE *f = fopen(path, "r");
    if (!f) return SD_FAIL(SD_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0, bad = 0;
    sd_status st = SD_OK;
    *rows = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = '\0';
        if (n == 0) continue;
        if (bad) {
            st = SD_FAIL(SD_ERR_FORMAT, "%s:%ld: not a complete JSON object (only a truncated last line is skipped)",
                         path, bad);
            break;
        }
        const char *end = NULL;
        cJSON *o = strlen(line) == (size_t)n ? cJSON_ParseWithOpts(line, &end, true) : NULL;
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            bad = lineno;
            continue;
        }
        st = fn(ctx, o, path, lineno);
        cJSON_Delete(o);
        if (st != SD_OK) break;
        (*rows)++;
    }
    if (st == SD_OK && ferror(f)) st = SD_FAIL(SD_ERR_IO, "reading %s failed", path);
    if (st == SD_OK && bad) sd_rep_note(r, "%s: line %ld is incomplete (the run was cut short?); skipped", path, bad);
    free(line);
    fclose(f);
    return st;
}

typedef struct metrics_ctx {
    sd_rep_run *ri;
    FILE *m, *b, *buf;
} metrics_ctx;

static sd_status metrics_line(void *ctx, const cJSON *o, const char *path, long line) {
    metrics_ctx *c = ctx;
    double t;
    if (!sd_rep_get_num(o, "time", &t)) return SD_FAIL(SD_ERR_FORMAT, "%s:%ld: no numeric \"time\"", path, line);
    /* metrics.dat: 1 step 2 time 3 global_batch 4 bytes 5 compression 6 loss 7 lr 8 dropped
     * 9 buffer_total 10 wait 11 compute 12 comm */
    put_num(c->m, o, "step");
    fprintf(c->m, " %.9g", t);
    put_num(c->m, o, "global_batch");
    put_num(c->m, o, "bytes");
    double by;
    if (sd_rep_get_num(o, "bytes", &by) && by > c->ri->max_bytes) c->ri->max_bytes = by;
    const cJSON *cmp = cJSON_GetObjectItemCaseSensitive(o, "compression");
    if (cJSON_IsBool(cmp)) {
        fputs(cJSON_IsTrue(cmp) ? " 1" : " 0", c->m);
    } else if (cJSON_IsNumber(cmp) && isfinite(cmp->valuedouble)) {
        fprintf(c->m, " %.9g", cmp->valuedouble);
        if (cmp->valuedouble != 0 && cmp->valuedouble != 1) c->ri->compression_numeric = true;
    } else {
        fputs(" ?", c->m);
    }
    put_num(c->m, o, "loss");
    put_num(c->m, o, "lr");
    put_num(c->m, o, "dropped");
    /* buffer.dat: 1 time 2 total 3.. per device; batches.dat: 1 time 2.. per device */
    fprintf(c->buf, "%.9g", t);
    const cJSON *ba = cJSON_GetObjectItemCaseSensitive(o, "buffer");
    double total = 0;
    if (cJSON_IsArray(ba)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, ba) if (cJSON_IsNumber(it) && isfinite(it->valuedouble)) total += it->valuedouble;
        fprintf(c->buf, " %.9g", total);
        fprintf(c->m, " %.9g", total);
        if (total > c->ri->max_buffer) c->ri->max_buffer = total;
    } else {
        fputs(" ?", c->buf);
        fputs(" ?", c->m);
    }
    int nb = put_array(c->buf, o, "buffer", &c->ri->max_buffer);
    fputc('\n', c->buf);
    put_num(c->m, o, "wait");
    put_num(c->m, o, "compute");
    put_num(c->m, o, "comm");
    fputc('\n', c->m);
    fprintf(c->b, "%.9g", t);
    int nd = put_array(c->b, o, "batches", &c->ri->max_batch);
    double gb;
    if (sd_rep_get_num(o, "global_batch", &gb) && gb > c->ri->max_batch) c->ri->max_batch = gb;
    fputc('\n', c->b);
    if (nb > c->ri->dev_buffer) c->ri->dev_buffer = nb;
    if (nd > c->ri->dev_batches) c->ri->dev_batches = nd;
    return SD_OK;
}

typedef struct eval_ctx {
    sd_rep_run *ri;
    FILE *e, *p;
} eval_ctx;

static sd_status eval_line(void *ctx, const cJSON *o, const char *path, long line) {
    eval_ctx *c = ctx;
    double t, v;
    if (!sd_rep_get_num(o, "time", &t)) return SD_FAIL(SD_ERR_FORMAT, "%s:%ld: no numeric \"time\"", path, line);
    /* eval.dat: 1 time 2 top1 3 top5 4 test_loss 5 prequential 6 step 7 samples_trained */
    fprintf(c->e, "%.9g", t);
    put_num(c->e, o, "top1");
    put_num(c->e, o, "top5");
    put_num(c->e, o, "test_loss");
    put_num(c->e, o, "prequential");
    put_num(c->e, o, "step");
    put_num(c->e, o, "samples_trained");
    fputc('\n', c->e);
    if (sd_rep_get_num(o, "prequential", &v)) c->ri->preq_rows++;
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "prequential_dev"))) {
        fprintf(c->p, "%.9g", t);
        int nd = put_array(c->p, o, "prequential_dev", NULL);
        fputc('\n', c->p);
        if (nd > c->ri->dev_preq) c->ri->dev_preq = nd;
        if (nd > 0) c->ri->preqdev_rows++;
    }
    return SD_OK;
}

sd_status sd_rep_convert_run(sd_rep *r, sd_rep_run *ri) {
    char in[PATH_LEN], pm[PATH_LEN], pb[PATH_LEN], pbuf[PATH_LEN], pe[PATH_LEN], pp[PATH_LEN];
    TRY(sd_rep_pathf(pm, "%s/%s.metrics.dat", r->ddir, ri->stem));
    TRY(sd_rep_pathf(pb, "%s/%s.batches.dat", r->ddir, ri->stem));
    TRY(sd_rep_pathf(pbuf, "%s/%s.buffer.dat", r->ddir, ri->stem));
    TRY(sd_rep_pathf(pe, "%s/%s.eval.dat", r->ddir, ri->stem));
    TRY(sd_rep_pathf(pp, "%s/%s.prequential_dev.dat", r->ddir, ri->stem));

    metrics_ctx mc = {.ri = ri};
    sd_status st = sd_rep_open_w(pm, &mc.m);
    if (st == SD_OK) st = sd_rep_open_w(pb, &mc.b);
    if (st == SD_OK) st = sd_rep_open_w(pbuf, &mc.buf);
    if (st == SD_OK) {
        fprintf(mc.m, "# %s metrics: step time global_batch bytes compression loss lr dropped buffer_total wait compute comm\n", ri->label);
        fprintf(mc.b, "# %s: time, then the batch of each device\n", ri->label);
        fprintf(mc.buf, "# %s: time, total buffered, then each device's buffer\n", ri->label);
        st = sd_rep_pathf(in, "%s/%s/metrics.jsonl", r->dir, ri->stem);
    }
    if (st == SD_OK) st = read_jsonl(r, in, metrics_line, &mc, &ri->metrics_rows);
    st = sd_rep_close_w(mc.m, pm, st);
    st = sd_rep_close_w(mc.b, pb, st);
    st = sd_rep_close_w(mc.buf, pbuf, st);
    TRY(st);

    eval_ctx ec = {.ri = ri};
    st = sd_rep_open_w(pe, &ec.e);
    if (st == SD_OK) st = sd_rep_open_w(pp, &ec.p);
    if (st == SD_OK) {
        fprintf(ec.e, "# %s eval: time top1 top5 test_loss prequential step samples_trained\n", ri->label);
        fprintf(ec.p, "# %s: time, then each device's prequential accuracy\n", ri->label);
        st = sd_rep_pathf(in, "%s/%s/eval.jsonl", r->dir, ri->stem);
    }
    if (st == SD_OK) st = read_jsonl(r, in, eval_line, &ec, &ri->eval_rows);
    st = sd_rep_close_w(ec.e, pe, st);
    st = sd_rep_close_w(ec.p, pp, st);
    TRY(st);
    if (ri->metrics_rows == 0) sd_rep_note(r, "%s: metrics.jsonl has no steps; the run is left out of the step plots", ri->stem);
    if (ri->eval_rows == 0) sd_rep_note(r, "%s: eval.jsonl has no evaluations; the run is left out of the accuracy plot", ri->stem);
    return SD_OK;
}
