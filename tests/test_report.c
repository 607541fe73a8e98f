/* test_report.c: the experiment report (engine/report.h) on a fake experiment folder written
 * here: summary.json and two runs (ddp, scadles) with metrics.jsonl and eval.jsonl, the scadles
 * run with prequential fields, compression switching on and off, and a truncated last line.
 * Checks: report.html exists and references every plot (images when gnuplot is installed, the
 * scripts otherwise: both paths are exercised), PNG and SVG files exist and look like PNG and
 * SVG, the data files hold every complete line, the summary table shows the runs; errors: a
 * missing summary.json names its path, missing run files are all named, a malformed line in the
 * middle names file:line, a path with a single quote is refused. */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/report.h"
#include "tests/harness.h"

static const char *const plots[] = {"accuracy", "prequential_devices", "batch", "buffer", "bytes", "compression"};
#define NPLOTS (int)(sizeof plots / sizeof *plots)

/* ---- files ---------------------------------------------------------------------------------- */
static void write_file(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) {
        EXPECT(0, "cannot write %s", p);
        return;
    }
    fputs(text, f);
    fclose(f);
}

static char *slurp2(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return sd_test_slurp(p, NULL);
}

/* data rows: lines that are neither blank nor comments */
static int data_rows(const char *dir, const char *name) {
    char *s = slurp2(dir, name);
    if (!s) return -1;
    int n = 0;
    for (char *l = strtok(s, "\n"); l; l = strtok(NULL, "\n"))
        if (l[0] != '#') n++;
    free(s);
    return n;
}

static bool starts_with_file(const char *dir, const char *name, const char *magic) {
    char *s = slurp2(dir, name);
    bool ok = s && strstr(s, magic) != NULL && strlen(s) > 0;
    if (s && !strcmp(magic, "\x89PNG")) ok = memcmp(s, magic, 4) == 0;
    free(s);
    return ok;
}

static bool exists(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat s;
    return stat(p, &s) == 0 && s.st_size > 0;
}

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *ftw) {
    (void)s;
    (void)flag;
    (void)ftw;
    return remove(p);
}
static void rm_tree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- the fake experiment -------------------------------------------------------------------- */
static void make_run(const char *root, const char *stem, int steps, bool scadles) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, stem);
    mkdir(dir, 0755);
    size_t cap = 1 << 16, len = 0;
    char *m = malloc(cap);
    for (int s = 1; s <= steps; s++) {
        double t = scadles ? s * 1.0 : s * 5.3;
        int b0 = scadles ? 10 + s % 7 : 16, b1 = scadles ? 3 + s % 3 : 16, b2 = scadles ? 20 : 16;
        len += (size_t)snprintf(m + len, cap - len,
                                "{\"step\": %d, \"time\": %.3f, \"wait\": 0.1, \"compute\": 0.05, \"comm\": 0.01, "
                                "\"global_batch\": %d, \"loss\": %.4f, \"lr\": 0.05, \"dropped\": %d, \"bytes\": %d, "
                                "\"compression\": %s, \"batches\": [%d, %d, %d], \"buffer\": [%d, %d, %d]}\n",
                                s, t, b0 + b1 + b2, 2.3 / s, scadles ? 0 : 40 * s, 1000 * s,
                                scadles && (s / 5) % 2 ? "true" : "false", b0, b1, b2, s % 4, scadles ? 1 : 60 + s, 2);
    }
    if (scadles) /* a run killed mid-write: the last line is cut off */
        len += (size_t)snprintf(m + len, cap - len, "{\"step\": %d, \"time\": 99.0, \"global_batch\": 3", steps + 1);
    write_file(dir, "metrics.jsonl", m);
    len = 0;
    for (int k = 1; k <= 5; k++) {
        double t = (scadles ? 1.0 : 5.3) * steps * k / 5.0;
        len += (size_t)snprintf(m + len, cap - len,
                                "{\"step\": %d, \"time\": %.3f, \"top1\": %.3f, \"top5\": %.3f, \"test_loss\": %.3f, "
                                "\"samples_trained\": %d",
                                steps * k / 5, t, 0.5 + 0.07 * k, 0.9, 1.0 / k, 100 * k);
        if (scadles)
            len += (size_t)snprintf(m + len, cap - len, ", \"prequential\": %.3f, \"prequential_dev\": [%.2f, %s, %.2f]",
                                    0.45 + 0.07 * k, 0.4 + 0.05 * k, k == 1 ? "null" : "0.5", 0.6);
        len += (size_t)snprintf(m + len, cap - len, "}\n");
    }
    if (scadles) len += (size_t)snprintf(m + len, cap - len, "\n   \n"); /* trailing blank lines are fine */
    write_file(dir, "eval.jsonl", m);
    free(m);
}

static const char *summary_json =
    "{\"experiment\": \"fake <exp>\", \"target_accuracy\": 0.8, \"devices\": 3, \"runs\": [\n"
    "  {\"mode\": \"ddp\", \"seed\": 1, \"time_to_target_s\": null, \"final_accuracy\": 0.79, \"best_accuracy\": 0.8, "
    "\"samples_trained\": 960, \"samples_injected\": 0, \"samples_dropped\": 4321, \"peak_buffer\": 80, "
    "\"bytes_sent\": 123456789, \"steps\": 20, \"clock_s\": 106.0, \"wall_s\": 3.0, \"speedup_vs_ddp\": null, "
    "\"shared_per_device\": [0, 0, 0]},\n"
    "  {\"mode\": \"scadles\", \"seed\": 1, \"time_to_target_s\": 24.0, \"final_accuracy\": 0.85, \"best_accuracy\": 0.86, "
    "\"samples_trained\": 1000, \"samples_injected\": 77, \"samples_dropped\": 0, \"peak_buffer\": 7, "
    "\"bytes_sent\": 98765, \"steps\": 30, \"clock_s\": 30.0, \"wall_s\": 2.0, \"speedup_vs_ddp\": 2.5, "
    "\"shared_per_device\": [1, 2, 3]}\n]}\n";

static void make_experiment(const char *root) {
    write_file(root, "summary.json", summary_json);
    write_file(root, "config.json", "{\"name\": \"fake\", \"clock\": \"virtual\"}\n");
    write_file(root, "trace.json", "{\"traceEvents\": []}\n");
    make_run(root, "ddp-seed1", 20, false);
    make_run(root, "scadles-seed1", 30, true);
}

/* ---- tests ---------------------------------------------------------------------------------- */
static void test_report(const char *root, bool have_gnuplot) {
    make_experiment(root);
    char notes_path[1024];
    snprintf(notes_path, sizeof notes_path, "%s/notes.txt", root);
    FILE *notes = fopen(notes_path, "w+");
    sd_report_options o = {.notes = notes};
    EXPECT_OK(sd_report_generate_ex(root, &o));
    fclose(notes);
    char *ns = sd_test_slurp(notes_path, NULL);
    EXPECT(ns && strstr(ns, "scadles-seed1/metrics.jsonl: line 31 is incomplete"), "the truncated line is noted: %s",
           ns ? ns : "(none)");
    free(ns);

    /* every complete line became a data row; the truncated one did not */
    EXPECT(data_rows(root, "report/data/ddp-seed1.metrics.dat") == 20, "ddp metrics rows");
    EXPECT(data_rows(root, "report/data/scadles-seed1.metrics.dat") == 30, "scadles metrics rows (truncated line skipped)");
    EXPECT(data_rows(root, "report/data/scadles-seed1.batches.dat") == 30, "scadles batch rows");
    EXPECT(data_rows(root, "report/data/scadles-seed1.buffer.dat") == 30, "scadles buffer rows");
    EXPECT(data_rows(root, "report/data/scadles-seed1.eval.dat") == 5, "scadles eval rows");
    EXPECT(data_rows(root, "report/data/scadles-seed1.prequential_dev.dat") == 5, "prequential_dev rows");
    EXPECT(data_rows(root, "report/data/ddp-seed1.prequential_dev.dat") == 0, "ddp has no prequential fields");
    char *d = slurp2(root, "report/data/scadles-seed1.prequential_dev.dat");
    EXPECT(d && strstr(d, " ?"), "a null per-device value is written as missing");
    free(d);
    d = slurp2(root, "report/data/ddp-seed1.buffer.dat");
    EXPECT(d && strstr(d, "\n5.3 64 1 61 2\n"), "buffer.dat: time, total, per device: %s", d ? d : "(none)");
    free(d);

    char *html = slurp2(root, "report.html");
    EXPECT(html != NULL, "report.html exists");
    if (!html) return;
    for (int i = 0; i < NPLOTS; i++) {
        char ref[128];
        snprintf(ref, sizeof ref, have_gnuplot ? "<img src=\"report/%s.png\"" : "report/%s.gp", plots[i]);
        EXPECT(strstr(html, ref), "report.html references %s", ref);
        snprintf(ref, sizeof ref, "report/%s.gp", plots[i]);
        EXPECT(exists(root, ref), "%s written", ref);
    }
    EXPECT(strstr(html, "fake &lt;exp&gt;"), "the experiment name, escaped");
    EXPECT(strstr(html, "<td>ddp</td><td>1</td><td>not reached</td><td>-</td><td>79.00%</td>"), "the ddp row");
    EXPECT(strstr(html, "<td>scadles</td><td>1</td><td>24.0</td><td>2.50x</td><td>85.00%</td><td>86.00%</td><td>1000</td>"
                        "<td>77</td><td>0</td><td>7</td><td>98765</td>"),
           "the scadles row");
    EXPECT(strstr(html, "virtual clock"), "the clock from config.json");
    EXPECT(strstr(html, "<a href=\"trace.json\">"), "the trace is linked");
    EXPECT(strstr(html, "line 31 is incomplete"), "the note is on the page");
    free(html);

    if (have_gnuplot) {
        for (int i = 0; i < NPLOTS; i++) {
            char png[128], svg[128];
            snprintf(png, sizeof png, "report/%s.png", plots[i]);
            snprintf(svg, sizeof svg, "report/%s.svg", plots[i]);
            EXPECT(exists(root, png) && starts_with_file(root, png, "\x89PNG"), "%s is a PNG", png);
            EXPECT(exists(root, svg) && starts_with_file(root, svg, "<svg"), "%s is an SVG", svg);
        }
    } else {
        printf("test_report: note: gnuplot is not installed; the PNG/SVG checks are skipped (apt-get install gnuplot-nox)\n");
    }

    /* without gnuplot: data and scripts, and the page lists the scripts instead of images */
    FILE *quiet = fopen("/dev/null", "w");
    sd_report_options none = {.gnuplot = "/nonexistent/gnuplot-for-test", .notes = quiet};
    EXPECT_OK(sd_report_generate_ex(root, &none));
    if (quiet) fclose(quiet);
    html = slurp2(root, "report.html");
    EXPECT(html && !strstr(html, "<img"), "no images without gnuplot");
    EXPECT(html && strstr(html, "gnuplot is not installed"), "the page says gnuplot is missing");
    for (int i = 0; html && i < NPLOTS; i++) {
        char ref[128];
        snprintf(ref, sizeof ref, "<a href=\"report/%s.gp\">report/%s.gp</a>", plots[i], plots[i]);
        EXPECT(strstr(html, ref), "the page lists %s", ref);
        snprintf(ref, sizeof ref, "report/%s.png", plots[i]);
        EXPECT(!exists(root, ref), "no stale %s", ref);
    }
    free(html);
}

static void test_errors(const char *root) {
    char dir[1024], p[1200];
    /* no summary.json */
    snprintf(dir, sizeof dir, "%s/empty", root);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/summary.json", dir);
    EXPECT_FAIL(sd_report_generate(dir), SD_ERR_IO, p);
    /* summary.json names runs whose files are not there: every one is named */
    write_file(dir, "summary.json",
               "{\"runs\": [{\"mode\": \"ddp\", \"seed\": 7}, {\"mode\": \"scadles\", \"seed\": 7}]}");
    snprintf(p, sizeof p, "%s/scadles-seed7/eval.jsonl", dir);
    EXPECT_FAIL(sd_report_generate(dir), SD_ERR_IO, p);
    snprintf(p, sizeof p, "%s/ddp-seed7/metrics.jsonl", dir);
    EXPECT(strstr(sd_last_error(), p) && strstr(sd_last_error(), "4 run files"), "all missing files named: %s", sd_last_error());
    /* a malformed summary */
    write_file(dir, "summary.json", "{\"runs\": [");
    EXPECT_FAIL(sd_report_generate(dir), SD_ERR_FORMAT, "summary.json");
    write_file(dir, "summary.json", "{\"runs\": [{\"mode\": \"../x\", \"seed\": 1}]}");
    EXPECT_FAIL(sd_report_generate(dir), SD_ERR_FORMAT, "mode");
    /* a malformed line that is not the last one */
    write_file(dir, "summary.json", "{\"runs\": [{\"mode\": \"ddp\", \"seed\": 1}]}");
    snprintf(p, sizeof p, "%s/ddp-seed1", dir);
    mkdir(p, 0755);
    write_file(p, "eval.jsonl", "{\"time\": 1, \"top1\": 0.5}\n");
    write_file(p, "metrics.jsonl", "{\"time\": 1, \"step\": 1}\n{\"time\": 2, \"st\n{\"time\": 3, \"step\": 3}\n");
    EXPECT_FAIL(sd_report_generate(dir), SD_ERR_FORMAT, "metrics.jsonl:2");
    write_file(p, "metrics.jsonl", "{\"time\": 1, \"step\": 1}\n{\"step\": 2}\n");
    EXPECT_FAIL(sd_report_generate(dir), SD_ERR_FORMAT, "metrics.jsonl:2: no numeric \"time\"");
    /* paths that cannot be quoted safely are refused before anything runs */
    EXPECT_FAIL(sd_report_generate("/tmp/it's"), SD_ERR_INVALID, "single quote");
    EXPECT_FAIL(sd_report_generate("/tmp/a\nb"), SD_ERR_INVALID, "newline");
    EXPECT_FAIL(sd_report_generate(NULL), SD_ERR_INVALID, "no run directory");
    snprintf(p, sizeof p, "%s/not-there", root);
    EXPECT_FAIL(sd_report_generate(p), SD_ERR_IO, p);
}

int main(void) {
    char root[] = "/tmp/sd_report_XXXXXX";
    if (!mkdtemp(root)) return sd_test_skip("test_report", "mkdtemp failed");
    bool have_gnuplot = system("command -v gnuplot >/dev/null 2>&1") == 0;
    test_report(root, have_gnuplot);
    test_errors(root);
    if (sd_test_failed == 0) rm_tree(root);
    else printf("test_report: files kept in %s\n", root);
    return sd_test_finish("test_report");
}
