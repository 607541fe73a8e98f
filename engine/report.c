/* report.c: the experiment report declared in report.h: its entry points, which run the steps
 * of report_internal.h in order (report_data.c, report_plots.c, report_html.c), and the notes,
 * path and file helpers those steps share. */
#include "engine/report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/report_internal.h"

/* ---- helpers shared by the report's files ---------------------------------------------------- */
void sd_rep_note(sd_rep *r, const char *fmt, ...) {
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

sd_status sd_rep_pathf(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_LEN, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_LEN) return SD_FAIL(SD_ERR_INVALID, "report: a path under the run directory is longer than %d characters", PATH_LEN - 1);
    return SD_OK;
}

bool sd_rep_file_exists(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

bool sd_rep_file_nonempty(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode) && s.st_size > 0;
}

sd_status sd_rep_make_dir(const char *p) {
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return SD_FAIL(SD_ERR_IO, "cannot create %s: %s", p, strerror(errno));
    return SD_OK;
}

bool sd_rep_get_num(const cJSON *o, const char *key, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) return false;
    *v = it->valuedouble;
    return true;
}

bool sd_rep_safe_name(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.'))
            return false;
    return true;
}

sd_status sd_rep_open_w(const char *path, FILE **f) {
    *f = fopen(path, "w");
    if (!*f) return SD_FAIL(SD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return SD_OK;
}

/* Closes f; a failed write or close is an error naming path. */
sd_status sd_rep_close_w(FILE *f, const char *path, sd_status st) {
    if (!f) return st;
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0) bad = true;
    if (st == SD_OK && bad) return SD_FAIL(SD_ERR_IO, "writing %s failed", path);
    return st;
}

/* ---- entry points --------------------------------------------------------------------------- */
static sd_status generate(sd_rep *r) {
    const char *dir = r->dir;
    if (!dir || !*dir) return SD_FAIL(SD_ERR_INVALID, "report: no run directory given");
    if (strchr(dir, '\'') || strchr(dir, '\n') || strchr(dir, '\r'))
        return SD_FAIL(SD_ERR_INVALID, "report: the run directory '%s' contains a single quote or a newline; "
                                       "rename or move it (such paths are refused rather than quoted)", dir);
    struct stat s;
    if (stat(dir, &s) != 0 || !S_ISDIR(s.st_mode))
        return SD_FAIL(SD_ERR_IO, "report: %s is not a directory (%s)", dir, strerror(errno ? errno : ENOTDIR));
    TRY(sd_rep_load_summary(r));
    TRY(sd_rep_check_inputs(r));
    TRY(sd_rep_pathf(r->rdir, "%s/report", dir));
    TRY(sd_rep_pathf(r->ddir, "%s/report/data", dir));
    TRY(sd_rep_make_dir(r->rdir));
    TRY(sd_rep_make_dir(r->ddir));
    for (int i = 0; i < r->nruns; i++) TRY(sd_rep_convert_run(r, &r->runs[i]));
    TRY(sd_rep_write_scripts(r));
    TRY(sd_rep_render(r));
    TRY(sd_rep_write_html(r));
    return SD_OK;
}

sd_status sd_report_generate_ex(const char *run_dir, const sd_report_options *opt) {
    sd_rep r;
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
