/* test_plot.c: the gnuplot runner (engine/plot.h). Without gnuplot, /bin/sh stands in for it
 * (the runner only execs "PROGRAM SCRIPT"), so every case runs on any machine: the script runs in
 * the given folder, its stdout and stderr are appended to the log (sd_plot_log_reset empties it),
 * a missing program is SD_PLOT_NOT_FOUND with "gnuplot not found (apt-get install gnuplot-nox)"
 * (also the default "gnuplot" with a PATH that lacks it), a non-zero exit is SD_PLOT_FAILED
 * naming the script and the log, a program that cannot be executed, a folder that cannot be
 * entered, an unwritable log and a job without a script are errors. With gnuplot installed a
 * real script draws a PNG and a broken one fails with gnuplot's message in the log. */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "engine/plot.h"
#include "tests/harness.h"

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    if (!f) {
        EXPECT(0, "cannot write %s", path);
        return;
    }
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *ftw) {
    (void)s, (void)flag, (void)ftw;
    return remove(p);
}

/* /bin/sh as the program: folder, log, exit status */
static void test_with_sh(const char *root) {
    char dir[1024], log[1100], p[1200];
    snprintf(dir, sizeof dir, "%s/work", root);
    snprintf(log, sizeof log, "%s/plot.log", root);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/ok.sh", dir);
    write_file(p, "echo to-stdout\necho to-stderr >&2\npwd > where.txt\n", 0644);
    sd_plot_job job = {.gnuplot = "/bin/sh", .dir = dir, .script = "ok.sh", .log = log};
    EXPECT_OK(sd_plot_log_reset(log));
    EXPECT_OK(sd_plot_run(&job));
    EXPECT_OK(sd_plot_run(&job));
    char *text = sd_test_slurp(log, NULL);
    EXPECT(count(text, "to-stdout\n") == 2 && count(text, "to-stderr\n") == 2, "both runs appended to the log: %s", text);
    EXPECT(text && strstr(text, "ok.sh"), "the log names the script: %s", text);
    free(text);
    snprintf(p, sizeof p, "%s/where.txt", dir);
    text = sd_test_slurp(p, NULL);
    char want[1100];
    snprintf(want, sizeof want, "%s\n", dir);
    EXPECT(text && strcmp(text, want) == 0, "the script ran in %s, not in %s", dir, text ? text : "(nothing)");
    free(text);
    EXPECT_OK(sd_plot_log_reset(log));
    text = sd_test_slurp(log, NULL);
    EXPECT(text && !*text, "sd_plot_log_reset empties the log");
    free(text);

    /* an absolute script path, no folder: the current one */
    snprintf(p, sizeof p, "%s/ok.sh", dir);
    sd_plot_job here = {.gnuplot = "/bin/sh", .script = p, .log = log};
    EXPECT_OK(sd_plot_run(&here));

    /* a failing script: SD_PLOT_FAILED naming the script and the log */
    snprintf(p, sizeof p, "%s/fail.sh", dir);
    write_file(p, "echo broken-line >&2\nexit 4\n", 0644);
    job.script = "fail.sh";
    char needle[2400];
    snprintf(needle, sizeof needle, "gnuplot failed on %s/fail.sh (exit status 4), see %s", dir, log);
    EXPECT_FAIL(sd_plot_run(&job), SD_PLOT_FAILED, needle);
    text = sd_test_slurp(log, NULL);
    EXPECT(text && strstr(text, "broken-line"), "the failure's message is in the log: %s", text);
    free(text);

    /* a folder that is not there; a log that cannot be written; no script */
    snprintf(p, sizeof p, "%s/not-there", root);
    sd_plot_job nodir = {.gnuplot = "/bin/sh", .dir = p, .script = "ok.sh", .log = log};
    EXPECT_FAIL(sd_plot_run(&nodir), SD_ERR_IO, "cannot run gnuplot in");
    snprintf(p, sizeof p, "%s/not-there/plot.log", root);
    sd_plot_job nolog = {.gnuplot = "/bin/sh", .dir = dir, .script = "ok.sh", .log = p};
    EXPECT_FAIL(sd_plot_run(&nolog), SD_ERR_IO, p);
    EXPECT_FAIL(sd_plot_log_reset(p), SD_ERR_IO, p);
    sd_plot_job noscript = {.dir = dir, .log = log};
    EXPECT_FAIL(sd_plot_run(&noscript), SD_ERR_INVALID, "script");
    EXPECT_FAIL(sd_plot_run(NULL), SD_ERR_INVALID, "script");
}

/* the program is not there: told apart from a failure */
static void test_not_found(const char *root) {
    char log[1100], prog[1100], empty[1100];
    snprintf(log, sizeof log, "%s/missing.log", root);
    sd_plot_job job = {.gnuplot = "/nonexistent/gnuplot-for-test", .dir = root, .script = "x.gp", .log = log};
    EXPECT_FAIL(sd_plot_run(&job), SD_PLOT_NOT_FOUND, "gnuplot not found (no program '/nonexistent/gnuplot-for-test'; apt-get install gnuplot-nox)");
    job.gnuplot = "sd-no-such-gnuplot-on-path";
    EXPECT_FAIL(sd_plot_run(&job), SD_PLOT_NOT_FOUND, "apt-get install gnuplot-nox");
    /* the default program with a PATH that lacks it: the plain message */
    snprintf(empty, sizeof empty, "%s/empty-bin", root);
    mkdir(empty, 0755);
    const char *old = getenv("PATH");
    char *saved = old ? strdup(old) : NULL;
    setenv("PATH", empty, 1);
    job.gnuplot = NULL;
    sd_status st = sd_plot_run(&job);
    EXPECT(st == SD_PLOT_NOT_FOUND && strcmp(sd_last_error_brief(), "gnuplot not found (apt-get install gnuplot-nox)") == 0,
           "default program off PATH: status %d, %s", st, sd_last_error_brief());
    if (saved) setenv("PATH", saved, 1);
    else unsetenv("PATH");
    free(saved);
    /* there but not executable: a failure to start, not "not installed" */
    snprintf(prog, sizeof prog, "%s/not-executable", root);
    write_file(prog, "#!/bin/sh\nexit 0\n", 0644);
    job.gnuplot = prog;
    EXPECT_FAIL(sd_plot_run(&job), SD_PLOT_FAILED, "cannot run gnuplot");
}

/* the real thing, when installed */
static void test_gnuplot(const char *root) {
    char dir[1024], log[1100], p[1200];
    snprintf(dir, sizeof dir, "%s/gp", root);
    snprintf(log, sizeof log, "%s/gp.log", root);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/line.gp", dir);
    write_file(p, "set terminal pngcairo size 200,100\nset output 'line.png'\nplot x\nset output\n", 0644);
    sd_plot_job job = {.dir = dir, .script = "line.gp", .log = log};
    EXPECT_OK(sd_plot_run(&job));
    snprintf(p, sizeof p, "%s/line.png", dir);
    size_t n = 0;
    char *png = sd_test_slurp(p, &n);
    EXPECT(png && n > 8 && memcmp(png, "\x89PNG", 4) == 0, "gnuplot drew %s (%zu bytes)", p, n);
    free(png);
    snprintf(p, sizeof p, "%s/bad.gp", dir);
    write_file(p, "plot no_such_function_here(x)\n", 0644);
    job.script = "bad.gp";
    EXPECT_FAIL(sd_plot_run(&job), SD_PLOT_FAILED, "gnuplot failed on");
    char *text = sd_test_slurp(log, NULL);
    EXPECT(text && strstr(text, "no_such_function_here"), "gnuplot's error is in the log: %s", text);
    free(text);
}

int main(void) {
    char root[] = "/tmp/sd_plot_XXXXXX";
    if (!mkdtemp(root)) return sd_test_skip("test_plot", "mkdtemp failed");
    test_with_sh(root);
    test_not_found(root);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) test_gnuplot(root);
    else printf("test_plot: note: gnuplot is not installed; the real-gnuplot case is skipped (apt-get install gnuplot-nox)\n");
    if (sd_test_failed == 0) nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    else printf("test_plot: files kept in %s\n", root);
    return sd_test_finish("test_plot");
}
