/* report.h: the experiment report. Reads an experiment's out_dir (summary.json, and each run's
 * <mode>-seed<k>/metrics.jsonl and eval.jsonl), writes gnuplot data files and scripts, renders
 * them to PNG and SVG, and writes report.html with the plots and the summary table
 * (docs/observability.md). Layout it creates under DIR:
 *   DIR/report.html                     the page (relative links into report/)
 *   DIR/report/<plot>.gp                one gnuplot script per plot (run from DIR/report)
 *   DIR/report/<plot>.png, <plot>.svg   the rendered plots (when gnuplot is installed)
 *   DIR/report/data/<mode>-seed<k>.*.dat  whitespace-separated columns, '?' = missing
 *   DIR/report/gnuplot.log              gnuplot's own output
 * Plots: accuracy (test top-1, and prequential accuracy when eval.jsonl has "prequential"),
 * prequential_devices (when eval.jsonl has "prequential_dev"), batch (global and per device),
 * buffer (total and per device), bytes (cumulative), compression (on/off).
 *
 * Robustness: a truncated last line of a .jsonl file (a run that was killed) is skipped with a
 * note; a malformed line elsewhere is an error naming file:line; missing files are an error
 * naming every one. Without gnuplot the data and scripts are still written, a note says so and
 * the page lists the script paths instead of images. gnuplot runs without a shell (engine/plot.h);
 * DIR may not contain a single quote or a newline (refused with SD_ERR_INVALID). The code:
 * report.c (entry points), report_data.c, report_plots.c, report_html.c (report_internal.h). */
#ifndef SD_ENGINE_REPORT_H
#define SD_ENGINE_REPORT_H

#include <stdio.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_report_options {
    const char *gnuplot; /* the gnuplot program (looked up on PATH); NULL: "gnuplot" */
    FILE *notes;         /* where notes go (skipped lines, gnuplot missing); NULL: stderr */
} sd_report_options;

/* Generates the report of the experiment whose out_dir is run_dir (it holds summary.json).
 * SD_OK also when gnuplot is missing or a plot could not be rendered (a note says which). */
sd_status sd_report_generate(const char *run_dir);
sd_status sd_report_generate_ex(const char *run_dir, const sd_report_options *opt);

#ifdef __cplusplus
}
#endif

#endif
