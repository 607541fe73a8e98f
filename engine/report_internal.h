/* report_internal.h: what the files of the experiment report (report.h) share, and nothing
 * outside them includes: the report's state (its runs, plots and notes) and the steps
 * sd_report_generate_ex takes in order. Who does what:
 *   engine/report.c         entry points; notes, paths and file helpers every step uses
 *   engine/report_data.c    summary.json, each run's metrics.jsonl and eval.jsonl -> report/data/ files
 *   engine/report_plots.c   one gnuplot script per plot (report/<plot>.gp), rendered by engine/plot.h
 *   engine/report_html.c    report.html: the summary table, the plots, links and notes */
#ifndef SD_ENGINE_REPORT_INTERNAL_H
#define SD_ENGINE_REPORT_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>

#include "base/status.h"

#define PATH_LEN 4096
#define MAX_DEVICES 4096 /* per-device columns read from one line */

typedef struct sd_rep_run {
    char mode[64];
    unsigned long long seed;
    char stem[96];       /* "<mode>-seed<k>": the run's folder and the prefix of its data files */
    char label[112];     /* "<mode> seed <k>" */
    const cJSON *sum;    /* its object in summary.json */
    long metrics_rows, eval_rows, preq_rows, preqdev_rows;
    int dev_batches, dev_buffer, dev_preq; /* widest per-device array seen */
    bool compression_numeric;              /* a "compression" value other than on/off */
    double max_batch, max_buffer, max_bytes;          /* largest per-device or global value (0: a flat panel) */
} sd_rep_run;

typedef struct sd_rep_plot {
    const char *name, *title, *caption;
    bool present;  /* its script was written */
    bool rendered; /* its PNG and SVG exist */
} sd_rep_plot;

enum { P_ACCURACY, P_PREQ_DEV, P_BATCH, P_BUFFER, P_BYTES, P_COMPRESSION, P_COUNT };

typedef struct sd_rep {
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
    sd_rep_run *runs;
    int nruns;
    const char *gnuplot;
    bool gnuplot_missing;
    sd_rep_plot plots[P_COUNT];
} sd_rep;

/* ---- helpers (report.c) --------------------------------------------------------------------- */
/* A note on the notes stream ("report: note: ...") that the page lists too. */
void sd_rep_note(sd_rep *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Formats a path into out (PATH_LEN bytes); too long is SD_ERR_INVALID. */
sd_status sd_rep_pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool sd_rep_file_exists(const char *p);
bool sd_rep_file_nonempty(const char *p);
sd_status sd_rep_make_dir(const char *p);
/* A finite number under key. */
bool sd_rep_get_num(const cJSON *o, const char *key, double *v);
/* Letters, digits, '_', '-' and '.' only (safe in a file name, a gnuplot string and HTML). */
bool sd_rep_safe_name(const char *s);
sd_status sd_rep_open_w(const char *path, FILE **f);
/* Closes f; a failed write or close is an error naming path (st, when not SD_OK, wins). */
sd_status sd_rep_close_w(FILE *f, const char *path, sd_status st);

/* ---- the steps, in order ---------------------------------------------------------------------- */
sd_status sd_rep_load_summary(sd_rep *r);               /* report_data.c: summary.json, config.json's clock */
sd_status sd_rep_check_inputs(sd_rep *r);               /* report_data.c: every run file exists */
sd_status sd_rep_convert_run(sd_rep *r, sd_rep_run *ri); /* report_data.c: one run's .jsonl -> .dat */
sd_status sd_rep_write_scripts(sd_rep *r);              /* report_plots.c: report/<plot>.gp */
sd_status sd_rep_render(sd_rep *r);                     /* report_plots.c: gnuplot -> .png, .svg */
sd_status sd_rep_write_html(sd_rep *r);                 /* report_html.c: report.html */

#endif
