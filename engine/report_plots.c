/* report_plots.c: the report's plots. Writes one gnuplot script per plot (report/<plot>.gp,
 * paths relative to report/, drawing <plot>.png then <plot>.svg) from what report_data.c found,
 * and renders them with the engine's gnuplot runner (engine/plot.h), logging to
 * report/gnuplot.log. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/plot.h"
#include "engine/report_internal.h"

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

/* ---- gnuplot scripts ------------------------------------------------------------------------ */
typedef void (*body_fn)(sd_rep *r, FILE *f);

static void gp_xlabel(sd_rep *r, FILE *f) { fprintf(f, "set xlabel 'time (s, %s)'\n", r->clock); }

static void body_accuracy(sd_rep *r, FILE *f) {
    fputs("set title ", f);
    gp_str(f, r->experiment);
    fputs(" . ': test top-1 against time'\n", f);
    gp_xlabel(r, f);
    fputs("set ylabel 'accuracy (%)'\nset key bottom right\nset offsets 0, 0, graph 0.05, graph 0.05\nplot ", f);
    bool first = true;
    for (int i = 0; i < r->nruns; i++) {
        sd_rep_run *ri = &r->runs[i];
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

static int runs_with(sd_rep *r, bool metrics, bool preqdev) {
    int k = 0;
    for (int i = 0; i < r->nruns; i++)
        if (preqdev ? r->runs[i].preqdev_rows > 0 : metrics ? r->runs[i].metrics_rows > 0 : r->runs[i].eval_rows > 0) k++;
    return k;
}

static void body_preq_dev(sd_rep *r, FILE *f) {
    fprintf(f, "set multiplot layout %d,1 title 'prequential accuracy per device (each batch scored before training)'\n",
            runs_with(r, false, true));
    gp_xlabel(r, f);
    fputs("set ylabel 'accuracy (%)'\nset key outside right top\nset lmargin at screen 0.07\nset rmargin at screen 0.84\n"
          "set offsets 0, 0, graph 0.05, graph 0.05\n", f);
    for (int i = 0; i < r->nruns; i++) {
        sd_rep_run *ri = &r->runs[i];
        if (ri->preqdev_rows == 0) continue;
        fputs("set title ", f);
        gp_str(f, ri->label);
        fprintf(f, "\nplot for [j=2:%d] 'data/%s.prequential_dev.dat' using 1:(column(j)*100) with lines title sprintf('device %%d', j-2)\n",
                ri->dev_preq + 1, ri->stem);
    }
    fputs("unset multiplot\n", f);
}

/* batch and buffer: a panel of the totals of every run, then one panel per run by device */
static void body_per_device(sd_rep *r, FILE *f, bool buffer) {
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
        sd_rep_run *ri = &r->runs[i];
        if (ri->metrics_rows == 0) continue;
        fprintf(f, "%s'data/%s.%s' using %s with steps lc %d lw 1.5 title ", first ? "" : ", \\\n     ", ri->stem,
                buffer ? "buffer.dat" : "metrics.dat", buffer ? "1:2" : "2:3", i + 1);
        gp_str(f, ri->label);
        first = false;
    }
    fputc('\n', f);
    for (int i = 0; i < r->nruns; i++) {
        sd_rep_run *ri = &r->runs[i];
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

static void body_batch(sd_rep *r, FILE *f) { body_per_device(r, f, false); }
static void body_buffer(sd_rep *r, FILE *f) { body_per_device(r, f, true); }

static void body_bytes(sd_rep *r, FILE *f) {
    fputs("set title 'gradient bytes sent, cumulative (metrics.jsonl \"bytes\")'\n", f);
    gp_xlabel(r, f);
    double top = 0;
    for (int i = 0; i < r->nruns; i++) top = fmax(top, r->runs[i].max_bytes);
    fprintf(f, "set ylabel 'MB'\nset key top left\nset yrange [0:%s]\nset offsets 0, 0, graph 0.05, 0\nplot ", top > 0 ? "*" : "1");
    bool first = true;
    for (int i = 0; i < r->nruns; i++) {
        sd_rep_run *ri = &r->runs[i];
        if (ri->metrics_rows == 0) continue;
        fprintf(f, "%s'data/%s.metrics.dat' using 2:($4/1e6) with lines lc %d lw 1.5 title ", first ? "" : ", \\\n     ",
                ri->stem, i + 1);
        gp_str(f, ri->label);
        first = false;
    }
    fputc('\n', f);
}

static void body_compression(sd_rep *r, FILE *f) {
    fprintf(f, "set multiplot layout %d,1 title 'gradient compression against time'\n", runs_with(r, true, false));
    gp_xlabel(r, f);
    fputs("set key off\nset lmargin at screen 0.07\nset rmargin at screen 0.84\n", f);
    for (int i = 0; i < r->nruns; i++) {
        sd_rep_run *ri = &r->runs[i];
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
static sd_status write_script(sd_rep *r, sd_rep_plot *p, int w, int h, body_fn body) {
    char path[PATH_LEN];
    TRY(sd_rep_pathf(path, "%s/%s.gp", r->rdir, p->name));
    FILE *f;
    TRY(sd_rep_open_w(path, &f));
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
    TRY(sd_rep_close_w(f, path, SD_OK));
    p->present = true;
    return SD_OK;
}

sd_status sd_rep_write_scripts(sd_rep *r) {
    int km = runs_with(r, true, false), ke = runs_with(r, false, false), kp = runs_with(r, false, true);
    sd_rep_plot *P = r->plots;
    P[P_ACCURACY] = (sd_rep_plot){"accuracy", "Test accuracy against time",
                                  "Test top-1 of each run at every evaluation (solid); prequential accuracy, the "
                                  "sliding-window accuracy of incoming batches scored before training (dashed), when "
                                  "recorded.", false, false};
    P[P_PREQ_DEV] = (sd_rep_plot){"prequential_devices", "Prequential accuracy per device",
                                  "Each device's prequential accuracy (eval.jsonl \"prequential_dev\").", false, false};
    P[P_BATCH] = (sd_rep_plot){"batch", "Batch sizes against time",
                               "Global batch per step (top) and each device's batch (one panel per run).", false, false};
    P[P_BUFFER] = (sd_rep_plot){"buffer", "Buffer occupancy against time",
                                "Samples buffered after each step: all devices (top) and each device (one panel per run).",
                                false, false};
    P[P_BYTES] = (sd_rep_plot){"bytes", "Bytes sent against time",
                               "Cumulative wire bytes of the gradient collectives as recorded per step in metrics.jsonl "
                               "(summary.json's bytes_sent totals all devices).", false, false};
    P[P_COMPRESSION] = (sd_rep_plot){"compression", "Compression on/off against time",
                                     "Whether each step's gradient was compressed (metrics.jsonl \"compression\").",
                                     false, false};
    if (ke > 0) TRY(write_script(r, &P[P_ACCURACY], 1100, 520, body_accuracy));
    else sd_rep_note(r, "no evaluations in any eval.jsonl: no accuracy plot");
    if (kp > 0) TRY(write_script(r, &P[P_PREQ_DEV], 1100, 60 + 260 * kp, body_preq_dev));
    if (km > 0) {
        TRY(write_script(r, &P[P_BATCH], 1100, 60 + 260 * (1 + km), body_batch));
        TRY(write_script(r, &P[P_BUFFER], 1100, 60 + 260 * (1 + km), body_buffer));
        TRY(write_script(r, &P[P_BYTES], 1100, 480, body_bytes));
        TRY(write_script(r, &P[P_COMPRESSION], 1100, 60 + 180 * km, body_compression));
    } else {
        sd_rep_note(r, "no steps in any metrics.jsonl: no batch, buffer, bytes or compression plots");
    }
    return SD_OK;
}

/* ---- rendering (engine/plot.h: gnuplot run in report/, no shell) ---------------------------- */
sd_status sd_rep_render(sd_rep *r) {
    char logp[PATH_LEN];
    TRY(sd_rep_pathf(logp, "%s/gnuplot.log", r->rdir));
    TRY(sd_plot_log_reset(logp));
    for (int i = 0; i < P_COUNT; i++) {
        sd_rep_plot *p = &r->plots[i];
        char png[PATH_LEN], svg[PATH_LEN], script[128];
        TRY(sd_rep_pathf(png, "%s/%s.png", r->rdir, p->name));
        TRY(sd_rep_pathf(svg, "%s/%s.svg", r->rdir, p->name));
        remove(png); /* never show a stale image */
        remove(svg);
        if (!p->present || r->gnuplot_missing) continue;
        snprintf(script, sizeof script, "%s.gp", p->name);
        sd_plot_job job = {.gnuplot = r->gnuplot, .dir = r->rdir, .script = script, .log = logp};
        sd_status st = sd_plot_run(&job);
        if (st == SD_PLOT_NOT_FOUND) {
            r->gnuplot_missing = true;
            sd_rep_note(r, "%s; data and scripts written; render them with: cd %s && gnuplot <plot>.gp",
                        sd_last_error_brief(), r->rdir);
        } else if (st != SD_OK) {
            sd_rep_note(r, "%s", sd_last_error_brief());
        } else {
            p->rendered = sd_rep_file_nonempty(png) && sd_rep_file_nonempty(svg);
            if (!p->rendered)
                sd_rep_note(r, "gnuplot ran %s/%s but drew no %s.png and %s.svg (see %s)", r->rdir, script, p->name,
                            p->name, logp);
        }
        sd_clear_error(); /* a plot that was not drawn is a note, not a failure of the report */
    }
    return SD_OK;
}
