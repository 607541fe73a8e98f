/* test_profile.c: measured device profiles (engine/profile.h, docs/experiments.md "Device profile
 * files"). Three entries (tests/CMakeLists.txt):
 *   test_profile          a small profile file written here: the interpolation and extrapolation at
 *                         known points (exact values), the slowdown, the modelled form unchanged,
 *                         every refusal with its message, experiment files naming a profile (forms,
 *                         --set, round trip, resolve);
 *   test_profile_run      (SD_PROFILE_TESTS=run) a scadles experiment under the virtual clock with a
 *                         named profile and per-device slowdowns: every step's compute in
 *                         metrics.jsonl is the profile's prediction; the summary and config name the
 *                         file (skips without Fashion-MNIST);
 *   profile_bench_smoke   (--bench PATH) scadles-bench --profile on tiny batches: the file it writes
 *                         loads, says how it was measured and grows with the batch; its bad options
 *                         are refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/distributed.h"
#include "engine/experiment.h"
#include "engine/profile.h"
#include "tests/harness.h"

static char dir[] = "/tmp/sd_profile_XXXXXX";

/* dir/name with the given text; returns the path (static storage, one per slot). */
static const char *put(int slot, const char *name, const char *text) {
    static char paths[16][600];
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", dir, name);
    FILE *f = fopen(paths[slot], "w");
    EXPECT(f != NULL, "cannot write %s", paths[slot]);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return paths[slot];
}

/* A profile of fmnist_cnn (and of `other` when not NULL) with the table given as JSON. */
static const char *put_profile(int slot, const char *name, const char *table, const char *fit) {
    char text[4096];
    snprintf(text, sizeof text,
             "{\"format\": \"scadles-device-profile\", \"version\": 1, \"threads\": 1, \"concurrency\": 8,\n"
             " \"machine\": {\"cpu\": \"test\"},\n"
             " \"models\": {\"fmnist_cnn\": {\"width\": 1, \"table\": %s,\n"
             "   \"fit\": %s}}}\n", table, fit);
    return put(slot, name, text);
}


/* The good table: batches 2, 4, 8 at 0.5, 1.0, 1.5 s, fitted slope 0.125 s per sample (every
 * value and every interpolation below is exact in binary). */
#define GOOD_TABLE "[{\"batch\": 2, \"seconds\": 0.5}, {\"batch\": 4, \"seconds\": 1.0, \"min_s\": 0.9}, {\"batch\": 8, \"seconds\": 1.5}]"
#define GOOD_FIT "{\"overhead_s\": 0.25, \"per_sample_s\": 0.125}"

static void test_table(const char *good) {
    sd_compute_table t;
    memset(&t, 0, sizeof t);
    EXPECT_OK(sd_compute_table_load(good, "fmnist_cnn", 1.0, &t));
    EXPECT(t.n == 3 && t.batch[2] == 8 && t.seconds[1] == 1.0 && t.per_sample_s == 0.125 && t.overhead_s == 0.25 &&
               t.threads == 1 && t.concurrency == 8, "table read: n %d", t.n);
    const struct { int batch; double want; } pts[] = {
        {-3, 0}, {0, 0},                    /* no samples, no step */
        {1, 0.375},                         /* below the first point: 0.5 - 0.125 x 1 */
        {2, 0.5}, {3, 0.75}, {4, 1.0}, {6, 1.25}, {8, 1.5}, /* the points and between them */
        {10, 1.75}, {1000, 125.5},          /* beyond the last: 1.5 + 0.125 x (b - 8) */
    };
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        double got = sd_compute_table_seconds(&t, pts[i].batch);
        EXPECT(got == pts[i].want, "table at batch %d: %.17g s, want %.17g", pts[i].batch, got, pts[i].want);
    }
    /* below the first point the time per sample never drops under the first point's */
    sd_compute_table one;
    const char *p1 = put_profile(1, "one.json", "[{\"batch\": 16, \"seconds\": 0.5}]", "{\"overhead_s\": 0, \"per_sample_s\": 0.0625}");
    EXPECT_OK(sd_compute_table_load(p1, "fmnist_cnn", 1.0, &one));
    EXPECT(sd_compute_table_seconds(&one, 8) == 0.25 && sd_compute_table_seconds(&one, 12) == 0.375 &&
               sd_compute_table_seconds(&one, 20) == 0.75, "one point: %g %g %g", sd_compute_table_seconds(&one, 8),
           sd_compute_table_seconds(&one, 12), sd_compute_table_seconds(&one, 20));

    /* the clock's compute: slowdown x the table; the modelled form as it always was */
    sd_device_profile dp = sd_device_profile_default();
    snprintf(dp.profile, sizeof dp.profile, "%s", good);
    dp.slowdown = 1.5;
    sd_compute_model m;
    EXPECT_OK(sd_compute_model_make(&dp, "fmnist_cnn", 1.0, &m));
    EXPECT(m.measured && sd_compute_time(&m, 3) == 1.125 && sd_compute_time(&m, 8) == 2.25 && sd_compute_time(&m, 0) == 0,
           "slowdown 1.5: %g %g", sd_compute_time(&m, 3), sd_compute_time(&m, 8));
    sd_device_profile md = sd_device_profile_default();
    EXPECT_OK(sd_compute_model_make(&md, "fmnist_cnn", 1.0, &m));
    for (int b = 0; b <= 300; b += 7) {
        double old = b <= 0 ? 0.0 : md.step_overhead_s + (double)b / md.samples_per_s; /* the formula before profiles */
        EXPECT(!m.measured && sd_compute_time(&m, b) == old, "modelled form at batch %d: %.17g, want %.17g", b,
               sd_compute_time(&m, b), old);
    }
}

static void test_refusals(const char *good) {
    sd_compute_table t;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.json", dir);
    EXPECT_MSG(sd_compute_table_load(missing, "fmnist_cnn", 1, &t), SD_ERR_IO, missing, "cannot open the device profile",
               "scadles-bench --profile");
    const char *bad_json = put(2, "bad.json", "{\"format\": \"scadles-device-profile\",\n  \"version\": 1,,}\n");
    EXPECT_MSG(sd_compute_table_load(bad_json, "fmnist_cnn", 1, &t), SD_ERR_FORMAT, "bad.json:2:", "malformed JSON");
    const char *not_prof = put(3, "other.json", "{\"format\": \"something-else\"}");
    EXPECT_MSG(sd_compute_table_load(not_prof, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "other.json: format",
               "not a device profile");
    EXPECT_MSG(sd_compute_table_load(good, "resnet20", 1, &t), SD_ERR_INVALID, "has no table for model resnet20",
               "(it has: fmnist_cnn)", "--models resnet20");
    EXPECT_MSG(sd_compute_table_load(good, "fmnist_cnn", 2, &t), SD_ERR_INVALID, "models.fmnist_cnn.width",
               "measured at width 1", "--width 2");
    const char *down = put_profile(4, "down.json", "[{\"batch\": 2, \"seconds\": 0.5}, {\"batch\": 4, \"seconds\": 0.25}]", GOOD_FIT);
    EXPECT_MSG(sd_compute_table_load(down, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "models.fmnist_cnn.table[1].seconds",
               "must not decrease", "quieter machine");
    const char *neg = put_profile(5, "neg.json", "[{\"batch\": 2, \"seconds\": -0.5}]", GOOD_FIT);
    EXPECT_MSG(sd_compute_table_load(neg, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "table[0].seconds", "-0.5 is not a step time",
               "> 0");
    const char *order = put_profile(6, "order.json", "[{\"batch\": 4, \"seconds\": 0.5}, {\"batch\": 4, \"seconds\": 0.6}]", GOOD_FIT);
    EXPECT_MSG(sd_compute_table_load(order, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "table[1].batch", "must increase");
    const char *frac = put_profile(7, "frac.json", "[{\"batch\": 2.5, \"seconds\": 0.5}]", GOOD_FIT);
    EXPECT_MSG(sd_compute_table_load(frac, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "table[0].batch", "not a batch size");
    const char *empty = put_profile(8, "empty.json", "[]", GOOD_FIT);
    EXPECT_MSG(sd_compute_table_load(empty, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "models.fmnist_cnn.table", "1..32");
    const char *slope = put_profile(9, "slope.json", GOOD_TABLE, "{\"overhead_s\": 0.25, \"per_sample_s\": -1}");
    EXPECT_MSG(sd_compute_table_load(slope, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "fit.per_sample_s", "negative");
    const char *nofit = put_profile(10, "nofit.json", GOOD_TABLE, "{\"overhead_s\": 0.25}");
    EXPECT_MSG(sd_compute_table_load(nofit, "fmnist_cnn", 1, &t), SD_ERR_INVALID, "fit.per_sample_s", "expected a finite number");
}

/* ---- experiment files naming a profile ----------------------------------------------------------- */
static sd_status load_resolve(const char *json, sd_experiment *e) {
    sd_status s = sd_experiment_load_string(json, "exp.json", e);
    return s != SD_OK ? s : sd_experiment_resolve(e);
}

static void expect_round_trip(const sd_experiment *e, const char *what) {
    char *text = NULL;
    EXPECT_OK(sd_experiment_to_json(e, &text));
    sd_experiment *back = malloc(sizeof *back);
    memset(back, 0xa5, sizeof *back);
    EXPECT_OK(sd_experiment_load_string(text ? text : "", "round-trip", back));
    EXPECT(memcmp(e, back, sizeof *e) == 0, "%s: load(write(e)) differs from e:\n%s", what, text ? text : "");
    free(back);
    free(text);
}

static void test_experiments(const char *good) {
    sd_experiment *e = malloc(sizeof *e), *again = malloc(sizeof *again);
    char json[2048];
    /* the defaults measured, device 3 twice as slow, device 5 modelled */
    snprintf(json, sizeof json,
             "{\"devices\": {\"rates\": \"uniform_s1\", \"compute\": {\"profile\": \"%s\"},"
             " \"list\": [{}, {}, {}, {\"slowdown\": 2}, {}, {\"samples_per_s\": 1000}]}}", good);
    EXPECT_OK(sd_experiment_load_string(json, "exp.json", e));
    expect_round_trip(e, "named profile, unresolved");
    EXPECT_OK(sd_experiment_resolve(e));
    for (int i = 0; i < e->devices.count; i++) {
        const sd_exp_device *d = &e->devices.dev[i];
        if (i == 5)
            EXPECT(!d->profile.profile[0] && d->profile.samples_per_s == 1000 && d->profile.step_overhead_s == 0.005 &&
                       d->profile.slowdown == 1 && d->set == SD_EXP_DEV_RESOLVED_MODELLED, "device 5 modelled");
        else
            EXPECT(!strcmp(d->profile.profile, good) && d->profile.slowdown == (i == 3 ? 2 : 1) &&
                       d->profile.samples_per_s == 0 && d->set == SD_EXP_DEV_RESOLVED_MEASURED,
                   "device %d measured: '%s' slowdown %g set 0x%x", i, d->profile.profile, d->profile.slowdown, d->set);
    }
    expect_round_trip(e, "named profile, resolved");
    *again = *e;
    EXPECT_OK(sd_experiment_resolve(again));
    EXPECT(memcmp(e, again, sizeof *e) == 0, "resolve is idempotent with a profile");
    char *text = NULL;
    EXPECT_OK(sd_experiment_to_json(e, &text));
    const char *compute = text ? strstr(text, "\"compute\"") : NULL;
    const char *link = text ? strstr(text, "\"link\"") : NULL;
    bool only_profile = compute && link && strstr(compute, "\"profile\"") && strstr(compute, "\"profile\"") < link &&
                        (!strstr(compute, "\"samples_per_s\"") || strstr(compute, "\"samples_per_s\"") > link);
    EXPECT(only_profile, "the written devices.compute names the profile and not samples_per_s:\n%s", text ? text : "");
    free(text);
    sd_compute_model cm[SD_MAX_DEVICES];
    EXPECT_OK(sd_dist_compute_models(e, cm));
    EXPECT(sd_compute_time(&cm[0], 3) == 0.75 && sd_compute_time(&cm[3], 3) == 1.5 &&
               sd_compute_time(&cm[5], 100) == 0.005 + 100.0 / 1000.0, "per-device models: %g %g %g",
           sd_compute_time(&cm[0], 3), sd_compute_time(&cm[3], 3), sd_compute_time(&cm[5], 100));

    /* --set: the form given last wins; a profile for one device; the modelled form back */
    EXPECT_OK(sd_experiment_set(e, "devices.compute.samples_per_s=500"));
    EXPECT(!e->devices.profile.profile[0] && e->devices.profile.samples_per_s == 500, "--set samples_per_s clears the profile");
    sd_experiment_defaults(e);
    snprintf(json, sizeof json, "devices.list[2].profile=%s", good);
    EXPECT_OK(sd_experiment_set(e, json));
    EXPECT_OK(sd_experiment_set(e, "devices.list[2].slowdown=0.5"));
    EXPECT_OK(sd_experiment_resolve(e));
    EXPECT(e->devices.dev[2].set == SD_EXP_DEV_RESOLVED_MEASURED && e->devices.dev[2].profile.slowdown == 0.5 &&
               e->devices.dev[1].set == SD_EXP_DEV_RESOLVED_MODELLED, "one device measured via --set");
    expect_round_trip(e, "one device measured");

    /* refusals naming the key */
    snprintf(json, sizeof json, "{\"devices\": {\"compute\": {\"profile\": \"%s\", \"samples_per_s\": 900}}}", good);
    EXPECT_MSG(load_resolve(json, e), SD_ERR_INVALID, "exp.json: devices.compute: names the profile", "and gives samples_per_s",
               "one of the two forms");
    snprintf(json, sizeof json, "{\"devices\": {\"list\": [{}, {\"step_overhead_s\": 0, \"profile\": \"%s\"}]}}", good);
    EXPECT_MSG(load_resolve(json, e), SD_ERR_INVALID, "devices.list[1]: names the profile", "step_overhead_s");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.json", dir);
    snprintf(json, sizeof json, "{\"devices\": {\"compute\": {\"profile\": \"%s\"}}}", missing);
    EXPECT_MSG(load_resolve(json, e), SD_ERR_INVALID, "devices.compute.profile:", missing, "cannot open the device profile");
    snprintf(json, sizeof json, "{\"model\": \"resnet20\", \"dataset\": \"cifar10\", \"devices\": {\"compute\": {\"profile\": \"%s\"}}}", good);
    EXPECT_MSG(load_resolve(json, e), SD_ERR_INVALID, "devices.compute.profile:", "has no table for model resnet20");
    snprintf(json, sizeof json, "{\"devices\": {\"list\": [{}, {}, {\"profile\": \"%s/down.json\"}]}}", dir);
    EXPECT_MSG(load_resolve(json, e), SD_ERR_INVALID, "devices.list[2].profile:", "must not decrease");
    snprintf(json, sizeof json, "{\"devices\": {\"compute\": {\"profile\": \"%s/bad.json\"}}}", dir);
    EXPECT_MSG(load_resolve(json, e), SD_ERR_INVALID, "devices.compute.profile:", "malformed JSON");
    EXPECT_MSG(load_resolve("{\"devices\": {\"compute\": {\"slowdown\": 0}}}", e), SD_ERR_INVALID, "devices.compute.slowdown",
               "out of range");
    EXPECT_MSG(load_resolve("{\"devices\": {\"compute\": {\"profile\": \"runs/../p.json\"}}}", e), SD_ERR_INVALID,
               "devices.compute.profile", "'..' component");
    EXPECT_MSG(load_resolve("{\"devices\": {\"compute\": {\"profile\": 3}}}", e), SD_ERR_INVALID, "devices.compute.profile",
               "expected a string");
    free(e);
    free(again);
}

/* ---- a run under the virtual clock ------------------------------------------------------------------ */
/* The number after "key": at or after p, NAN when absent. */
static double num_at(const char *p, const char *key) {
    const char *s = sd_test_json_after(p, key);
    return s ? atof(s) : NAN;
}

static int test_run(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        return sd_test_skip("test_profile_run", "Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)");
    /* a table over the batches scadles cuts from 40, 25, 12, 30 samples/s in 1 s windows */
    const char *prof = put_profile(11, "run.json",
                                   "[{\"batch\": 1, \"seconds\": 0.01}, {\"batch\": 16, \"seconds\": 0.05},"
                                   " {\"batch\": 32, \"seconds\": 0.2}]", "{\"overhead_s\": 0.001, \"per_sample_s\": 0.006}");
    sd_compute_table t;
    EXPECT_OK(sd_compute_table_load(prof, "fmnist_cnn", 1, &t));
    const double slow[4] = {1, 2, 1, 0.5};
    char out[600], set[800];
    snprintf(out, sizeof out, "%s/run", dir);
    sd_experiment *e = malloc(sizeof *e);
    sd_experiment_defaults(e);
    const char *sets[] = {"devices.rates=40,25,12,30", "max_steps=8", "eval_limit=200", "eval_every_s=100",
                          "target_accuracy=0.99", "threads=1", "modes=scadles", "devices.arrival=poisson", "devices.list[1].slowdown=2",
                          "devices.list[3].slowdown=0.5"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) EXPECT_OK(sd_experiment_set(e, sets[i]));
    snprintf(set, sizeof set, "out_dir=%s", out);
    EXPECT_OK(sd_experiment_set(e, set));
    snprintf(set, sizeof set, "devices.compute.profile=%s", prof);
    EXPECT_OK(sd_experiment_set(e, set));
    EXPECT_OK(sd_experiment_resolve(e));
    FILE *quiet = fopen("/dev/null", "w");
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    if (quiet) fclose(quiet);
    char path[700];
    snprintf(path, sizeof path, "%s/scadles-seed1/metrics.jsonl", out);
    char *m = sd_test_slurp(path, NULL);
    EXPECT(m != NULL, "cannot read %s", path);
    int lines = 0, distinct = 0;
    double last_want = -1;
    for (char *line = m; line && *line; lines++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        double compute = num_at(line, "compute");
        const char *b = sd_test_json_after(line, "batches");
        double want = 0;
        int batch[4] = {0};
        for (int j = 0; b && j < 4; j++) {
            b = strpbrk(b, "0123456789");
            batch[j] = b ? atoi(b) : -1;
            double c = slow[j] * sd_compute_table_seconds(&t, batch[j]);
            if (c > want) want = c;
            b = b ? strpbrk(b, ",]") : NULL;
        }
        EXPECT(fabs(compute - want) <= 0.5e-6, "step %d: compute %.6f s, the profile predicts %.6f s (batches %d %d %d %d)",
               lines, compute, want, batch[0], batch[1], batch[2], batch[3]);
        if (want != last_want) distinct++;
        last_want = want;
        line = nl ? nl + 1 : NULL;
    }
    EXPECT(lines == 8 && distinct >= 2, "%d steps with %d different compute times", lines, distinct);
    free(m);
    snprintf(path, sizeof path, "%s/summary.json", out);
    char *s = sd_test_slurp(path, NULL);
    const char *model = sd_test_json_after(s, "model"), *sl = s ? strstr(s, "\"device\":\t3") : NULL;
    EXPECT(s && sd_test_json_after(s, "compute") && strstr(s, prof) && model && !strncmp(model, "\"fmnist_cnn\"", 12) && sl &&
               num_at(sl, "slowdown") == 0.5, "summary.json names the profile, the model and the slowdowns:\n%s", s ? s : "");
    free(s);
    snprintf(path, sizeof path, "%s/config.json", out);
    s = sd_test_slurp(path, NULL);
    EXPECT(s && strstr(s, prof), "config.json names the profile");
    free(s);
    free(e);
    return sd_test_finish("test_profile_run");
}

/* ---- scadles-bench --profile ---------------------------------------------------------------------- */
static int run_cmd(const char *cmd) {
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* Batches 16x and 8x apart, so that a loaded machine (CI runs tests in parallel) cannot make a
 * larger batch measure faster: the reader refuses such a table. */
static int test_bench(const char *bench) {
    char out[600], cmd[2000];
    snprintf(out, sizeof out, "%s/bench.json", dir);
    snprintf(cmd, sizeof cmd, "'%s' --profile --models fmnist_cnn --batches 1,16,128 --iters 3 --warmup 1 --concurrency 2 "
             "--note 'test_profile smoke' --out '%s' > %s/bench.log 2>&1", bench, out, dir);
    int rc = run_cmd(cmd);
    EXPECT(rc == 0, "%s: exit %d", cmd, rc);
    sd_compute_table t;
    EXPECT_OK(sd_compute_table_load(out, "fmnist_cnn", 1, &t));
    EXPECT(t.n == 3 && t.batch[0] == 1 && t.batch[2] == 128 && t.threads == 1 && t.concurrency == 2 && t.seconds[0] > 0 &&
               t.seconds[2] > 2 * t.seconds[0] && t.per_sample_s > 0, "the measured table: %g %g %g s, slope %g",
           t.seconds[0], t.seconds[1], t.seconds[2], t.per_sample_s);
    char *text = sd_test_slurp(out, NULL);
    EXPECT(text && strstr(text, "\"machine\"") && strstr(text, "\"cores_online\"") && strstr(text, "test_profile smoke") &&
               strstr(text, "\"min_s\"") && strstr(text, "\"max_s\"") && strstr(text, "\"overhead_s\""),
           "the file describes the machine and the spread:\n%s", text ? text : "");
    free(text);
    /* the throughput repetition (--one) and the interleaved table around it (no peer: its numbers are
     * PyTorch's business; the ratio line is the same code with both sides) */
    snprintf(cmd, sizeof cmd, "'%s' --one fmnist_cnn --batch 8 --iters 2 --warmup 1 --threads 1 --layers > %s/one.log 2>&1",
             bench, dir);
    rc = run_cmd(cmd);
    snprintf(out, sizeof out, "%s/one.log", dir);
    text = sd_test_slurp(out, NULL);
    double sps = 0, flop = 0;
    long peak = 0, base = 0;
    const char *line = text ? strstr(text, "samples_per_s=") : NULL;
    EXPECT(rc == 0 && line && sscanf(line, "samples_per_s=%lf step_ms=%*f peak_rss_kb=%ld base_rss_kb=%ld", &sps, &peak, &base) == 3 &&
               strstr(line, "train_flop=") && sscanf(strstr(line, "train_flop="), "train_flop=%lf", &flop) == 1,
           "--one prints its key=value line: exit %d, %s", rc, text ? text : "");
    /* the CNN's convolutions and linear layer, 2 FLOPs a multiply-add: conv1 28x28x16 outputs x 25,
     * conv2 14x14x32 x 400, linear 1568 x 10; training is 3 passes but conv1 has no input gradient */
    const double fwd = 2.0 * (28 * 28 * 16 * 25 + 14 * 14 * 32 * 400 + 1568 * 10);
    EXPECT(sps > 0 && peak > base && base > 0 && flop == 3 * fwd - 2.0 * 28 * 28 * 16 * 25,
           "samples/s %g, peak %ld kB above base %ld kB, %g FLOP a sample (want %g)", sps, peak, base, flop,
           3 * fwd - 2.0 * 28 * 28 * 16 * 25);
    /* --layers: a row per layer (the CNN's relus are its own: no batch norm to fuse into) and the
     * per-kind summary */
    EXPECT(text && strstr(text, "per-layer time, ms per step (mean of 2 steps)") && strstr(text, "conv2d       16x28x28") &&
               strstr(text, "linear       10x1x1") && strstr(text, "by kind") && strstr(text, "rest"),
           "--layers prints the per-layer table: %s", text ? text : "");
    free(text);
    snprintf(cmd, sizeof cmd, "'%s' --models fmnist_cnn --reps 2 --no-peer --no-ops --batch 8 --iters 2 --warmup 1 "
             "--threads 1 > %s/reps.log 2>&1", bench, dir);
    rc = run_cmd(cmd);
    snprintf(out, sizeof out, "%s/reps.log", dir);
    text = sd_test_slurp(out, NULL);
    EXPECT(rc == 0 && text && strstr(text, "2 interleaved repetitions") && strstr(text, "16.4 MFLOP/sample") &&
               strstr(text, "of the sgemm bound") && strstr(text, "peak RSS") && !strstr(text, "torch "),
           "the repetitions' table: exit %d, %s", rc, text ? text : "");
    free(text);
    const struct { const char *args, *needle; } bad[] = {
        {"--profile --models fmnist_cnn", "needs --out"},
        {"--profile --batches 8,4 --out x.json", "increasing integers"},
        {"--profile --batch 8 --out x.json", "does not apply to --profile"},
        {"--concurrency 4", "applies to --profile only"},
        {"--profile --models nosuch --out x.json", "'nosuch' is unknown"},
        {"--profile --models fmnist_cnn --out /nonexistent-dir/x.json", "cannot create"},
        {"--reps 0", "--reps needs an integer in [1, 64]"},
        {"--one fmnist_cnn,resnet20", "--one takes one model"},
        {"--layers", "--layers goes with --one"},
        {"--profile --reps 2 --out x.json", "does not apply to --profile"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' %s > %s/bad.log 2>&1", bench, bad[i].args, dir);
        rc = run_cmd(cmd);
        snprintf(out, sizeof out, "%s/bad.log", dir);
        char *log = sd_test_slurp(out, NULL);
        EXPECT(rc == 2 && log && strstr(log, bad[i].needle), "scadles-bench %s: exit %d, want 2 and \"%s\": %s", bad[i].args,
               rc, bad[i].needle, log ? log : "");
        free(log);
    }
    return sd_test_finish("profile_bench_smoke");
}

int main(int argc, char **argv) {
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    const char *good = put_profile(0, "good.json", GOOD_TABLE, GOOD_FIT);
    int rc;
    const char *which = getenv("SD_PROFILE_TESTS");
    if (argc == 3 && !strcmp(argv[1], "--bench")) {
        rc = test_bench(argv[2]);
    } else if (which && !strcmp(which, "run")) {
        rc = test_run();
    } else {
        test_table(good);
        test_refusals(good);
        test_experiments(good);
        rc = sd_test_finish("test_profile");
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", dir);
    return rc;
}
