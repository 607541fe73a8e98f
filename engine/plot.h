/* plot.h: the one gnuplot runner of the engine. Runs gnuplot on a script in a given folder
 * directly (fork + exec, no shell, so no path is ever quoted for one), appends gnuplot's output
 * and errors to a log file, and says which of three things happened: the script ran, gnuplot is
 * not installed, or gnuplot failed (see the log). Never exits. Used by the experiment runner
 * (engine/runner.c: <out_dir>/plot.gp draws <out_dir>/accuracy.png) and by the report
 * (engine/report_plots.c: <dir>/report/<plot>.gp draws <plot>.png and <plot>.svg). */
#ifndef SD_ENGINE_PLOT_H
#define SD_ENGINE_PLOT_H

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_plot_job {
    const char *gnuplot; /* the program, looked up on PATH unless it holds a '/'; NULL or "": "gnuplot" */
    const char *dir;     /* the folder gnuplot runs in (the script's relative paths start there);
                          * NULL or "": the current folder */
    const char *script;  /* the script as gnuplot is given it: relative to dir, or absolute */
    const char *log;     /* gnuplot's stdout and stderr are appended here (created when absent);
                          * a relative path is relative to the current folder, not to dir */
} sd_plot_job;

/* What sd_plot_run returns besides SD_OK (gnuplot ran and exited 0): */
#define SD_PLOT_NOT_FOUND SD_ERR_UNSUPPORTED /* "gnuplot not found (apt-get install gnuplot-nox)" */
#define SD_PLOT_FAILED SD_ERR_RUNTIME        /* "gnuplot failed on SCRIPT (...), see LOG"; also a
                                              * program that exists but cannot be started */
/* SD_ERR_IO: the log cannot be opened, dir cannot be entered, or no process could be made;
 * SD_ERR_INVALID: no job, script or log. The message (sd_last_error_brief()) says which. */
sd_status sd_plot_run(const sd_plot_job *job);

/* Empties the log (creating it when absent), for a caller whose sd_plot_run calls should leave
 * only this time's messages there. */
sd_status sd_plot_log_reset(const char *log);

#ifdef __cplusplus
}
#endif

#endif
