/* report.c: the experiment report declared in report.h. Reads summary.json and every run's
 * metrics.jsonl / eval.jsonl, converts them into gnuplot data files (report/data/), writes one
 * gnuplot script per plot (report/<plot>.gp, relative paths, run from report/), renders PNG and
 * SVG with the engine's gnuplot runner (engine/plot.h: no shell) and writes report.html. */
#include "engine/report.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "engine/plot.h"

#define PATH_LEN 4096
#define MAX_DEVICES 4096 /* per-device columns read from one line */

/* ---- state ---------------------------------------------------------------------------------- */
typedef struct run_info {
    char mode[64];
    unsigned long long seed;
    char stem[96];       /* "<mode>-seed<k>": the run's folder and the prefix of its data files */
    char label[112];     /* "<mode> seed <k>" */
    const cJSON *sum;    /* its object in summary.json */
    long metrics_rows, eval_rows, preq_rows, preqdev_rows;
    int dev_batches, dev_buffer, dev_preq; /* widest per-device array seen */
    bool compression_numeric;              /* a "compression" value other than on/off */
    double max_batch, max_buffer, max_bytes;          /* largest per-device or global value (0: a flat panel) */
} run_info;

typedef struct plot {
    const char *name, *title, *caption;
    bool present;  /* its script was written */
    bool rendered; /* its PNG and SVG exist */
} plot;

enum { P_ACCURACY, P_PREQ_DEV, P_BATCH, P_BUFFER, P_BYTES, P_COMPRESSION, P_COUNT };

typedef struct report {
    const char *dir;
    char rdir[PATH_LEN], ddir[PATH_LEN];
    FILE *notes_out;
    char **notes;
    int nnotes, cap_notes;
    cJSON *summary;
    const char *experiment;
    double target;
    bool has_target;
    int devices;
    char clock[32];
    run_info *runs;
    int nruns;
    const char *gnuplot;
    bool gnuplot_missing;
    plot plots[P_COUNT];
} report;

/* ---- small helpers -------------------------------------------------------------------------- */
static void note(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(report *r, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(r->notes_out, "report: note: %s\n", msg);
    if (r->nnotes == r->cap_notes) {
        int cap = r->cap_notes ? 2 * r->cap_notes : 8;
        char **n = realloc(r->notes, (size_t)cap * sizeof *n);
        if (!n) return;
        r->notes = n;
        r->cap_notes = cap;
    }
    char *s = strdup(msg);
    if (s) r->notes[r->nnotes++] = s;
}

static sd_status pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static sd_status pathf(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_LEN, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_LEN) return SD_FAIL(SD_ERR_INVALID, "report: a path under the run directory is longer than %d characters", PATH_LEN - 1);
    return SD_OK;
}

static bool file_exists(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static bool file_nonempty(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode) && s.st_size > 0;
}

static sd_status make_dir(const char *p) {
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return SD_FAIL(SD_ERR_IO, "cannot create %s: %s", p, strerror(errno));
    return SD_OK;
}

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

static bool get_num(const cJSON *o, const char *key, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) return false;
    *v = it->valuedouble;
    return true;
}

/* A number column: the value, or '?' (gnuplot's missing marker in these files). */
static void put_num(FILE *f, const cJSON *o, const char *key) {
    double v;
    if (get_num(o, key, &v)) fprintf(f, " %.9g", v);
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

/* A gnuplot single-quoted string ('' stands for one quote inside). */
static void gp_str(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        if (*s == '\n' || *s == '\r') fputc(' ', f);
        else fputc(*s, f);
    }
    fputc('\'', f);
}

static void html_esc(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static bool safe_name(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.'))
            return false;
    return true;
}

/* ---- summary.json --------------------------------------------------------------------------- */
static sd_status load_summary(report *r) {
    char path[PATH_LEN];
    TRY(pathf(path, "%s/summary.json", r->dir));
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
    r->has_target = get_num(r->summary, "target_accuracy", &r->target);
    double dv = 0;
    r->devices = get_num(r->summary, "devices", &dv) && dv >= 0 && dv <= 1e6 ? (int)dv : 0;
    r->runs = calloc((size_t)n, sizeof *r->runs);
    if (!r->runs) return SD_FAIL(SD_ERR_OOM, "report: no memory");
    r->nruns = n;
    for (int i = 0; i < n; i++) {
        run_info *ri = &r->runs[i];
        const cJSON *o = cJSON_GetArrayItem(runs, i);
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(o, "mode");
        double seed = -1;
        if (!cJSON_IsString(mode) || strlen(mode->valuestring) >= sizeof ri->mode || !safe_name(mode->valuestring) ||
            strchr(mode->valuestring, '.'))
            return SD_FAIL(SD_ERR_FORMAT, "%s: runs[%d] has no \"mode\" made of letters, digits, '_' and '-'", path, i);
        if (!get_num(o, "seed", &seed) || seed < 0 || seed >= 18446744073709551616.0 || seed != floor(seed))
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
    TRY(pathf(path, "%s/config.json", r->dir));
    char *ctext = NULL;
    if (file_exists(path) && read_text(path, &ctext) == SD_OK) {
        cJSON *c = cJSON_Parse(ctext);
        const cJSON *clk = cJSON_GetObjectItemCaseSensitive(c, "clock");
        if (cJSON_IsString(clk) && safe_name(clk->valuestring) && strlen(clk->valuestring) < 20)
            snprintf(r->clock, sizeof r->clock, "%s clock", clk->valuestring);
        cJSON_Delete(c);
        free(ctext);
    }
    sd_clear_error();
    return SD_OK;
}

/* Every run's metrics.jsonl and eval.jsonl must exist; one error names all that do not. */
static sd_status check_inputs(report *r) {
    char missing[1200];
    size_t len = 0;
    int count = 0;
    missing[0] = '\0';
    static const char *const files[] = {"metrics.jsonl", "eval.jsonl"};
    for (int i = 0; i < r->nruns; i++)
        for (int k = 0; k < 2; k++) {
            char p[PATH_LEN];
            TRY(pathf(p, "%s/%s/%s", r->dir, r->runs[i].stem, files[k]));
            if (file_exists(p)) continue;
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
static sd_status read_jsonl(report *r, const char *path, line_fn fn, void *ctx, long *rows) {
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
    if (st == SD_OK && bad) note(r, "%s: line %ld is incomplete (the run was cut short?); skipped", path, bad);
    free(line);
    fclose(f);
    return st;
}

typedef struct metrics_ctx {
    run_info *ri;
    FILE *m, *b, *buf;
} metrics_ctx;

static sd_status metrics_line(void *ctx, const cJSON *o, const char *path, long line) {
    metrics_ctx *c = ctx;
    double t;
    if (!get_num(o, "time", &t)) return SD_FAIL(SD_ERR_FORMAT, "%s:%ld: no numeric \"time\"", path, line);
    /* metrics.dat: 1 step 2 time 3 global_batch 4 bytes 5 compression 6 loss 7 lr 8 dropped
     * 9 buffer_total 10 wait 11 compute 12 comm */
    put_num(c->m, o, "step");
    fprintf(c->m, " %.9g", t);
    put_num(c->m, o, "global_batch");
    put_num(c->m, o, "bytes");
    double by;
    if (get_num(o, "bytes", &by) && by > c->ri->max_bytes) c->ri->max_bytes = by;
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
    if (get_num(o, "global_batch", &gb) && gb > c->ri->max_batch) c->ri->max_batch = gb;
    fputc('\n', c->b);
    if (nb > c->ri->dev_buffer) c->ri->dev_buffer = nb;
    if (nd > c->ri->dev_batches) c->ri->dev_batches = nd;
    return SD_OK;
}

typedef struct eval_ctx {
    run_info *ri;
    FILE *e, *p;
} eval_ctx;

static sd_status eval_line(void *ctx, const cJSON *o, const char *path, long line) {
    eval_ctx *c = ctx;
    double t, v;
    if (!get_num(o, "time", &t)) return SD_FAIL(SD_ERR_FORMAT, "%s:%ld: no numeric \"time\"", path, line);
    /* eval.dat: 1 time 2 top1 3 top5 4 test_loss 5 prequential 6 step 7 samples_trained */
    fprintf(c->e, "%.9g", t);
    put_num(c->e, o, "top1");
    put_num(c->e, o, "top5");
    put_num(c->e, o, "test_loss");
    put_num(c->e, o, "prequential");
    put_num(c->e, o, "step");
    put_num(c->e, o, "samples_trained");
    fputc('\n', c->e);
    if (get_num(o, "prequential", &v)) c->ri->preq_rows++;
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "prequential_dev"))) {
        fprintf(c->p, "%.9g", t);
        int nd = put_array(c->p, o, "prequential_dev", NULL);
        fputc('\n', c->p);
        if (nd > c->ri->dev_preq) c->ri->dev_preq = nd;
        if (nd > 0) c->ri->preqdev_rows++;
    }
    return SD_OK;
}

static sd_status open_w(const char *path, FILE **f) {
    *f = fopen(path, "w");
    if (!*f) return SD_FAIL(SD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return SD_OK;
}

/* Closes f; a failed write or close is an error naming path. */
static sd_status close_w(FILE *f, const char *path, sd_status st) {
    if (!f) return st;
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0) bad = true;
    if (st == SD_OK && bad) return SD_FAIL(SD_ERR_IO, "writing %s failed", path);
    return st;
}

static sd_status convert_run(report *r, run_info *ri) {
    char in[PATH_LEN], pm[PATH_LEN], pb[PATH_LEN], pbuf[PATH_LEN], pe[PATH_LEN], pp[PATH_LEN];
    TRY(pathf(pm, "%s/%s.metrics.dat", r->ddir, ri->stem));
    TRY(pathf(pb, "%s/%s.batches.dat", r->ddir, ri->stem));
    TRY(pathf(pbuf, "%s/%s.buffer.dat", r->ddir, ri->stem));
    TRY(pathf(pe, "%s/%s.eval.dat", r->ddir, ri->stem));
    TRY(pathf(pp, "%s/%s.prequential_dev.dat", r->ddir, ri->stem));

    metrics_ctx mc = {.ri = ri};
    sd_status st = open_w(pm, &mc.m);
    if (st == SD_OK) st = open_w(pb, &mc.b);
    if (st == SD_OK) st = open_w(pbuf, &mc.buf);
    if (st == SD_OK) {
        fprintf(mc.m, "# %s metrics: step time global_batch bytes compression loss lr dropped buffer_total wait compute comm\n", ri->label);
        fprintf(mc.b, "# %s: time, then the batch of each device\n", ri->label);
        fprintf(mc.buf, "# %s: time, total buffered, then each device's buffer\n", ri->label);
        st = pathf(in, "%s/%s/metrics.jsonl", r->dir, ri->stem);
    }
    if (st == SD_OK) st = read_jsonl(r, in, metrics_line, &mc, &ri->metrics_rows);
    st = close_w(mc.m, pm, st);
    st = close_w(mc.b, pb, st);
    st = close_w(mc.buf, pbuf, st);
    TRY(st);

    eval_ctx ec = {.ri = ri};
    st = open_w(pe, &ec.e);
    if (st == SD_OK) st = open_w(pp, &ec.p);
    if (st == SD_OK) {
        fprintf(ec.e, "# %s eval: time top1 top5 test_loss prequential step samples_trained\n", ri->label);
        fprintf(ec.p, "# %s: time, then each device's prequential accuracy\n", ri->label);
        st = pathf(in, "%s/%s/eval.jsonl", r->dir, ri->stem);
    }
    if (st == SD_OK) st = read_jsonl(r, in, eval_line, &ec, &ri->eval_rows);
    st = close_w(ec.e, pe, st);
    st = close_w(ec.p, pp, st);
    TRY(st);
    if (ri->metrics_rows == 0) note(r, "%s: metrics.jsonl has no steps; the run is left out of the step plots", ri->stem);
    if (ri->eval_rows == 0) note(r, "%s: eval.jsonl has no evaluations; the run is left out of the accuracy plot", ri->stem);
    return SD_OK;
}

/* ---- gnuplot scripts ------------------------------------------------------------------------ */
typedef void (*body_fn)(report *r, FILE *f);

static void gp_xlabel(report *r, FILE *f) { fprintf(f, "set xlabel 'time (s, %s)'\n", r->clock); }

static void body_accuracy(report *r, FILE *f) {
    fputs("set title ", f);
    gp_str(f, r->experiment);
    fputs(" . ': test top-1 against time'\n", f);
    gp_xlabel(r, f);
    fputs("set ylabel 'accuracy (%)'\nset key bottom right\nset offsets 0, 0, graph 0.05, graph 0.05\nplot ", f);
    bool first = true;
    for (int i = 0; i < r->nruns; i++) {
        run_info *ri = &r->runs[i];
        if (ri->eval_rows == 0) continue;
        fprintf(f, "%s'data/%s.eval.dat' using 1:($2*100) with linespoints lc %d pt 7 ps 0.5 lw 1.5 title ",
                first ? "" : ", \\\n     ", ri->stem, i + 1);
        gp_str(f, ri->label);
        fputs(" . ' test'", f);
        if (ri->preq_rows > 0) {
            fprintf(f, ", \\\n     'data/%s.eval.dat' using 1:($5*100) with lines lc %d dt 2 lw 1.5 title ", ri->stem, i + 1);
            gp_str(f, ri->label);
            fputs(" . ' prequential'", f);
        }
        first = false;
    }
    if (r->has_target) fprintf(f, ", \\\n     %.9g with lines lc 'black' dt 3 title 'target'", 100 * r->target);
    fputc('\n', f);
}

static int runs_with(report *r, bool metrics, bool preqdev) {
    int k = 0;
    for (int i = 0; i < r->nruns; i++)
        if (preqdev ? r->runs[i].preqdev_rows > 0 : metrics ? r->runs[i].metrics_rows > 0 : r->runs[i].eval_rows > 0) k++;
    return k;
}

static void body_preq_dev(report *r, FILE *f) {
    fprintf(f, "set multiplot layout %d,1 title 'prequential accuracy per device (each batch scored before training)'\n",
            runs_with(r, false, true));
    gp_xlabel(r, f);
    fputs("set ylabel 'accuracy (%)'\nset key outside right top\nset lmargin at screen 0.07\nset rmargin at screen 0.84\n"
          "set offsets 0, 0, graph 0.05, graph 0.05\n", f);
    for (int i = 0; i < r->nruns; i++) {
        run_info *ri = &r->runs[i];
        if (ri->preqdev_rows == 0) continue;
        fputs("set title ", f);
        gp_str(f, ri->label);
        fprintf(f, "\nplot for [j=2:%d] 'data/%s.prequential_dev.dat' using 1:(column(j)*100) with lines title sprintf('device %%d', j-2)\n",
                ri->dev_preq + 1, ri->stem);
    }
    fputs("unset multiplot\n", f);
}

/* batch and buffer: a panel of the totals of every run, then one panel per run by device */
static void body_per_device(report *r, FILE *f, bool buffer) {
    fprintf(f, "set multiplot layout %d,1\n", 1 + runs_with(r, true, false));
    gp_xlabel(r, f);
    fputs("set key outside right top\nset lmargin at screen 0.07\nset rmargin at screen 0.84\n"
          "set offsets 0, 0, graph 0.05, 0\n", f);
    double top = 0; /* all zero (e.g. scadles empties its buffers every step): a fixed range, no warning */
    for (int i = 0; i < r->nruns; i++) top = fmax(top, buffer ? r->runs[i].max_buffer : r->runs[i].max_batch);
    fputs(top > 0 ? "set yrange [0:*]\n" : "set yrange [0:1]\n", f);
    fprintf(f, "set title '%s'\nset ylabel 'samples'\nplot ",
            buffer ? "buffer occupancy, all devices (after each step)" : "global batch (samples trained per step, all devices)");
    bool first = true;
    for (int i = 0; i < r->nruns; i++) {
        run_info *ri = &r->runs[i];
        if (ri->metrics_rows == 0) continue;
        fprintf(f, "%s'data/%s.%s' using %s with steps lc %d lw 1.5 title ", first ? "" : ", \\\n     ", ri->stem,
                buffer ? "buffer.dat" : "metrics.dat", buffer ? "1:2" : "2:3", i + 1);
        gp_str(f, ri->label);
        first = false;
    }
    fputc('\n', f);
    for (int i = 0; i < r->nruns; i++) {
        run_info *ri = &r->runs[i];
        if (ri->metrics_rows == 0) continue;
        int nd = buffer ? ri->dev_buffer : ri->dev_batches;
        fputs("set title ", f);
        gp_str(f, ri->label);
        fprintf(f, " . ' by device'\nset yrange [0:%s]\n", (buffer ? ri->max_buffer : ri->max_batch) > 0 ? "*" : "1");
        if (nd == 0) { /* no per-device arrays in this run's metrics: leave its panel empty */
            fputs("set multiplot next\n", f);
            continue;
        }
        fprintf(f, "plot for [j=%d:%d] 'data/%s.%s' using 1:j with steps title sprintf('device %%d', j-%d)\n", buffer ? 3 : 2,
                nd + (buffer ? 2 : 1), ri->stem, buffer ? "buffer.dat" : "batches.dat", buffer ? 3 : 2);
    }
    fputs("unset multiplot\n", f);
}

static void body_batch(report *r, FILE *f) { body_per_device(r, f, false); }
static void body_buffer(report *r, FILE *f) { body_per_device(r, f, true); }

static void body_bytes(report *r, FILE *f) {
    fputs("set title 'gradient bytes sent, cumulative (metrics.jsonl \"bytes\")'\n", f);
    gp_xlabel(r, f);
    double top = 0;
    for (int i = 0; i < r->nruns; i++) top = fmax(top, r->runs[i].max_bytes);
    fprintf(f, "set ylabel 'MB'\nset key top left\nset yrange [0:%s]\nset offsets 0, 0, graph 0.05, 0\nplot ", top > 0 ? "*" : "1");
    bool first = true;
    for (int i = 0; i < r->nruns; i++) {
        run_info *ri = &r->runs[i];
        if (ri->metrics_rows == 0) continue;
        fprintf(f, "%s'data/%s.metrics.dat' using 2:($4/1e6) with lines lc %d lw 1.5 title ", first ? "" : ", \\\n     ",
                ri->stem, i + 1);
        gp_str(f, ri->label);
        first = false;
    }
    fputc('\n', f);
}

static void body_compression(report *r, FILE *f) {
    fprintf(f, "set multiplot layout %d,1 title 'gradient compression against time'\n", runs_with(r, true, false));
    gp_xlabel(r, f);
    fputs("set key off\nset lmargin at screen 0.07\nset rmargin at screen 0.84\n", f);
    for (int i = 0; i < r->nruns; i++) {
        run_info *ri = &r->runs[i];
        if (ri->metrics_rows == 0) continue;
        fputs("set title ", f);
        gp_str(f, ri->label);
        fputc('\n', f);
        if (ri->compression_numeric) fputs("set autoscale y\nset ytics autofreq\nset ylabel 'compression'\n", f);
        else fputs("set yrange [-0.1:1.1]\nset ytics ('off' 0, 'on' 1)\nset ylabel 'compression'\n", f);
        fprintf(f, "plot 'data/%s.metrics.dat' using 2:5 with steps lc %d lw 2\n", ri->stem, i + 1);
    }
    fputs("unset multiplot\n", f);
}

/* One script rendering the same body to <name>.png and <name>.svg. */
static sd_status write_script(report *r, plot *p, int w, int h, body_fn body) {
    char path[PATH_LEN];
    TRY(pathf(path, "%s/%s.gp", r->rdir, p->name));
    FILE *f;
    TRY(open_w(path, &f));
    fprintf(f, "# %s.gp: %s (ScaDLES report). Paths are relative: run `gnuplot %s.gp` in this folder.\n", p->name,
            p->title, p->name);
    for (int k = 0; k < 2; k++) {
        fputs("reset\n", f);
        if (k == 0) fprintf(f, "set terminal pngcairo size %d,%d noenhanced font ',10'\nset output '%s.png'\n", w, h, p->name);
        else fprintf(f, "set terminal svg size %d,%d dynamic noenhanced font 'sans,10'\nset output '%s.svg'\n", w, h, p->name);
        fputs("set datafile missing '?'\nset grid\nset xrange [0:*]\n", f);
        body(r, f);
        fputs("set output\n", f);
    }
    TRY(close_w(f, path, SD_OK));
    p->present = true;
    return SD_OK;
}

static sd_status write_scripts(report *r) {
    int km = runs_with(r, true, false), ke = runs_with(r, false, false), kp = runs_with(r, false, true);
    plot *P = r->plots;
    P[P_ACCURACY] = (plot){"accuracy", "Test accuracy against time",
                           "Test top-1 of each run at every evaluation (solid); prequential accuracy, the sliding-window "
                           "accuracy of incoming batches scored before training (dashed), when recorded.", false, false};
    P[P_PREQ_DEV] = (plot){"prequential_devices", "Prequential accuracy per device",
                           "Each device's prequential accuracy (eval.jsonl \"prequential_dev\").", false, false};
    P[P_BATCH] = (plot){"batch", "Batch sizes against time",
                        "Global batch per step (top) and each device's batch (one panel per run).", false, false};
    P[P_BUFFER] = (plot){"buffer", "Buffer occupancy against time",
                         "Samples buffered after each step: all devices (top) and each device (one panel per run).", false, false};
    P[P_BYTES] = (plot){"bytes", "Bytes sent against time",
                        "Cumulative wire bytes of the gradient collectives as recorded per step in metrics.jsonl "
                        "(summary.json's bytes_sent totals all devices).", false, false};
    P[P_COMPRESSION] = (plot){"compression", "Compression on/off against time",
                              "Whether each step's gradient was compressed (metrics.jsonl \"compression\").", false, false};
    if (ke > 0) TRY(write_script(r, &P[P_ACCURACY], 1100, 520, body_accuracy));
    else note(r, "no evaluations in any eval.jsonl: no accuracy plot");
    if (kp > 0) TRY(write_script(r, &P[P_PREQ_DEV], 1100, 60 + 260 * kp, body_preq_dev));
    if (km > 0) {
        TRY(write_script(r, &P[P_BATCH], 1100, 60 + 260 * (1 + km), body_batch));
        TRY(write_script(r, &P[P_BUFFER], 1100, 60 + 260 * (1 + km), body_buffer));
        TRY(write_script(r, &P[P_BYTES], 1100, 480, body_bytes));
        TRY(write_script(r, &P[P_COMPRESSION], 1100, 60 + 180 * km, body_compression));
    } else {
        note(r, "no steps in any metrics.jsonl: no batch, buffer, bytes or compression plots");
    }
    return SD_OK;
}

/* ---- rendering (engine/plot.h: gnuplot run in report/, no shell) ---------------------------- */
static sd_status render(report *r) {
    char logp[PATH_LEN];
    TRY(pathf(logp, "%s/gnuplot.log", r->rdir));
    TRY(sd_plot_log_reset(logp));
    for (int i = 0; i < P_COUNT; i++) {
        plot *p = &r->plots[i];
        char png[PATH_LEN], svg[PATH_LEN], script[128];
        TRY(pathf(png, "%s/%s.png", r->rdir, p->name));
        TRY(pathf(svg, "%s/%s.svg", r->rdir, p->name));
        remove(png); /* never show a stale image */
        remove(svg);
        if (!p->present || r->gnuplot_missing) continue;
        snprintf(script, sizeof script, "%s.gp", p->name);
        sd_plot_job job = {.gnuplot = r->gnuplot, .dir = r->rdir, .script = script, .log = logp};
        sd_status st = sd_plot_run(&job);
        if (st == SD_PLOT_NOT_FOUND) {
            r->gnuplot_missing = true;
            note(r, "%s; data and scripts written; render them with: cd %s && gnuplot <plot>.gp",
                 sd_last_error_brief(), r->rdir);
        } else if (st != SD_OK) {
            note(r, "%s", sd_last_error_brief());
        } else {
            p->rendered = file_nonempty(png) && file_nonempty(svg);
            if (!p->rendered)
                note(r, "gnuplot ran %s/%s but drew no %s.png and %s.svg (see %s)", r->rdir, script, p->name, p->name,
                     logp);
        }
        sd_clear_error(); /* a plot that was not drawn is a note, not a failure of the report */
    }
    return SD_OK;
}

/* ---- report.html ---------------------------------------------------------------------------- */
static void html_num(FILE *f, const cJSON *o, const char *key, const char *fmt, double scale, const char *none) {
    double v;
    if (get_num(o, key, &v)) fprintf(f, fmt, v * scale);
    else html_esc(f, none);
}

static void html_table(report *r, FILE *f) {
    fputs("<table>\n<tr><th>mode</th><th>seed</th><th>time to target (s)</th><th>speedup vs ddp</th>"
          "<th>final top-1</th><th>best top-1</th><th>samples trained</th><th>injected</th><th>dropped</th>"
          "<th>peak buffer</th><th>bytes sent</th><th>steps</th></tr>\n", f);
    for (int i = 0; i < r->nruns; i++) {
        const run_info *ri = &r->runs[i];
        const cJSON *o = ri->sum;
        fputs("<tr><td>", f);
        html_esc(f, ri->mode);
        fprintf(f, "</td><td>%llu</td><td>", ri->seed);
        html_num(f, o, "time_to_target_s", "%.1f", 1, "not reached");
        fputs("</td><td>", f);
        html_num(f, o, "speedup_vs_ddp", "%.2fx", 1, "-");
        fputs("</td><td>", f);
        html_num(f, o, "final_accuracy", "%.2f%%", 100, "-");
        fputs("</td><td>", f);
        html_num(f, o, "best_accuracy", "%.2f%%", 100, "-");
        static const char *const ints[] = {"samples_trained", "samples_injected", "samples_dropped", "peak_buffer",
                                           "bytes_sent", "steps"};
        for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
            fputs("</td><td>", f);
            html_num(f, o, ints[k], "%.0f", 1, "-");
        }
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}

static void html_links(report *r, FILE *f) {
    fputs("<p>Inputs: <a href=\"summary.json\">summary.json</a>", f);
    for (int i = 0; i < r->nruns; i++)
        fprintf(f, " &middot; %s: <a href=\"%s/metrics.jsonl\">metrics.jsonl</a>, <a href=\"%s/eval.jsonl\">eval.jsonl</a>",
                r->runs[i].stem, r->runs[i].stem, r->runs[i].stem);
    fputs("</p>\n", f);
    DIR *d = opendir(r->dir);
    if (!d) return;
    bool any = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 10 || strncmp(e->d_name, "trace", 5) != 0 || strcmp(e->d_name + n - 5, ".json") != 0 || !safe_name(e->d_name))
            continue;
        fprintf(f, "%s<a href=\"%s\">%s</a>", any ? ", " : "<p>Timeline traces (open in https://ui.perfetto.dev or chrome://tracing): ",
                e->d_name, e->d_name);
        any = true;
    }
    closedir(d);
    if (any) fputs("</p>\n", f);
}

static sd_status write_html(report *r) {
    char path[PATH_LEN], tmp[PATH_LEN];
    TRY(pathf(path, "%s/report.html", r->dir));
    TRY(pathf(tmp, "%s/report.html.tmp", r->dir));
    FILE *f;
    TRY(open_w(tmp, &f));
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>ScaDLES report: ", f);
    html_esc(f, r->experiment);
    fputs("</title>\n<style>\nbody{font-family:sans-serif;margin:2em;max-width:1200px}\n"
          "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}\n"
          "th{background:#eee}td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}\n"
          "code{background:#f4f4f4;padding:1px 4px}\n</style>\n</head>\n<body>\n<h1>ScaDLES report: ", f);
    html_esc(f, r->experiment);
    fputs("</h1>\n<p>", f);
    if (r->devices > 0) fprintf(f, "%d devices; ", r->devices);
    if (r->has_target) fprintf(f, "target test top-1 %.1f%%; ", 100 * r->target);
    fputs("times in seconds of the ", f);
    html_esc(f, r->clock);
    fputs(".</p>\n<h2>Summary</h2>\n", f);
    html_table(r, f);
    html_links(r, f);
    for (int i = 0; i < P_COUNT; i++) {
        const plot *p = &r->plots[i];
        if (!p->present) continue;
        fprintf(f, "<h2 id=\"%s\">", p->name);
        html_esc(f, p->title);
        fputs("</h2>\n<p>", f);
        html_esc(f, p->caption);
        fputs("</p>\n", f);
        if (p->rendered) {
            fprintf(f, "<p><img src=\"report/%s.png\" alt=\"", p->name);
            html_esc(f, p->title);
            fprintf(f, "\"></p>\n<p><a href=\"report/%s.svg\">SVG</a> &middot; script <a href=\"report/%s.gp\">report/%s.gp</a></p>\n",
                    p->name, p->name, p->name);
        } else {
            fprintf(f, "<p>Not rendered (%s): script <a href=\"report/%s.gp\">report/%s.gp</a>; render it with "
                       "<code>cd report &amp;&amp; gnuplot %s.gp</code>.</p>\n",
                    r->gnuplot_missing ? "gnuplot is not installed" : "gnuplot failed; see report/gnuplot.log", p->name,
                    p->name, p->name);
        }
    }
    if (r->nnotes > 0) {
        fputs("<h2>Notes</h2>\n<ul>\n", f);
        for (int i = 0; i < r->nnotes; i++) {
            fputs("<li>", f);
            html_esc(f, r->notes[i]);
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }
    fputs("<p>Data files (whitespace-separated, '?' = missing): <code>report/data/</code>.</p>\n</body>\n</html>\n", f);
    TRY(close_w(f, tmp, SD_OK));
    if (rename(tmp, path) != 0) {
        sd_status s = SD_FAIL(SD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        remove(tmp);
        return s;
    }
    return SD_OK;
}

/* ---- entry points --------------------------------------------------------------------------- */
static sd_status generate(report *r) {
    const char *dir = r->dir;
    if (!dir || !*dir) return SD_FAIL(SD_ERR_INVALID, "report: no run directory given");
    if (strchr(dir, '\'') || strchr(dir, '\n') || strchr(dir, '\r'))
        return SD_FAIL(SD_ERR_INVALID, "report: the run directory '%s' contains a single quote or a newline; "
                                       "rename or move it (such paths are refused rather than quoted)", dir);
    struct stat s;
    if (stat(dir, &s) != 0 || !S_ISDIR(s.st_mode))
        return SD_FAIL(SD_ERR_IO, "report: %s is not a directory (%s)", dir, strerror(errno ? errno : ENOTDIR));
    TRY(load_summary(r));
    TRY(check_inputs(r));
    TRY(pathf(r->rdir, "%s/report", dir));
    TRY(pathf(r->ddir, "%s/report/data", dir));
    TRY(make_dir(r->rdir));
    TRY(make_dir(r->ddir));
    for (int i = 0; i < r->nruns; i++) TRY(convert_run(r, &r->runs[i]));
    TRY(write_scripts(r));
    TRY(render(r));
    TRY(write_html(r));
    return SD_OK;
}

sd_status sd_report_generate_ex(const char *run_dir, const sd_report_options *opt) {
    report r;
    memset(&r, 0, sizeof r);
    r.dir = run_dir;
    r.notes_out = opt && opt->notes ? opt->notes : stderr;
    r.gnuplot = opt && opt->gnuplot && *opt->gnuplot ? opt->gnuplot : "gnuplot";
    errno = 0;
    sd_status st = generate(&r);
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    for (int i = 0; i < r.nnotes; i++) free(r.notes[i]);
    free(r.notes);
    free(r.runs);
    cJSON_Delete(r.summary);
    return st;
}

sd_status sd_report_generate(const char *run_dir) { return sd_report_generate_ex(run_dir, NULL); }
