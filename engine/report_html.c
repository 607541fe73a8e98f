/* report_html.c: the report's page. Writes report.html (through report.html.tmp, renamed when
 * complete): the summary table from summary.json, links to the inputs and traces, each plot's
 * image or, when it was not rendered, its script, and the notes. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/report_internal.h"

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

/* ---- report.html ---------------------------------------------------------------------------- */
static void html_num(FILE *f, const cJSON *o, const char *key, const char *fmt, double scale, const char *none) {
    double v;
    if (sd_rep_get_num(o, key, &v)) fprintf(f, fmt, v * scale);
    else html_esc(f, none);
}

static void html_table(sd_rep *r, FILE *f) {
    fputs("<table>\n<tr><th>mode</th><th>seed</th><th>time to target (s)</th><th>speedup vs ddp</th>"
          "<th>final top-1</th><th>best top-1</th><th>samples trained</th><th>injected</th><th>dropped</th>"
          "<th>peak buffer</th><th>bytes sent</th><th>steps</th></tr>\n", f);
    for (int i = 0; i < r->nruns; i++) {
        const sd_rep_run *ri = &r->runs[i];
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

static void html_links(sd_rep *r, FILE *f) {
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
        if (n < 10 || strncmp(e->d_name, "trace", 5) != 0 || strcmp(e->d_name + n - 5, ".json") != 0 || !sd_rep_safe_name(e->d_name))
            continue;
        fprintf(f, "%s<a href=\"%s\">%s</a>", any ? ", " : "<p>Timeline traces (open in https://ui.perfetto.dev or chrome://tracing): ",
                e->d_name, e->d_name);
        any = true;
    }
    closedir(d);
    if (any) fputs("</p>\n", f);
}

sd_status sd_rep_write_html(sd_rep *r) {
    char path[PATH_LEN], tmp[PATH_LEN];
    TRY(sd_rep_pathf(path, "%s/report.html", r->dir));
    TRY(sd_rep_pathf(tmp, "%s/report.html.tmp", r->dir));
    FILE *f;
    TRY(sd_rep_open_w(tmp, &f));
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
        const sd_rep_plot *p = &r->plots[i];
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
    TRY(sd_rep_close_w(f, tmp, SD_OK));
    if (rename(tmp, path) != 0) {
        sd_status s = SD_FAIL(SD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        remove(tmp);
        return s;
    }
    return SD_OK;
}
