/* test_distributed.c: the distributed trainer on the local backend, on real Fashion-MNIST:
 * the same experiment twice gives bitwise identical metrics; scadles weights a device whose
 * window brought nothing with 0 and carries on while ddp fails after its timeout naming the
 * device; truncation keeps every buffer within one window's arrivals; the summary adds up. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/distributed.h"
#include "engine/experiment.h"
#include "tests/harness.h"

/* A small, fast experiment: 4 devices, a few virtual seconds, 500 test images. */
static void small_with(sd_experiment *e, const char *out, const char *mode, const char *const *extra, int nextra) {
    sd_experiment_defaults(e);
    char buf[512];
    const char *sets[] = {"devices.rates=40,25,12,30", "max_steps=12", "eval_limit=500", "eval_every_s=3",
                          "target_accuracy=0.99", "threads=1"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) EXPECT_OK(sd_experiment_set(e, sets[i]));
    snprintf(buf, sizeof buf, "out_dir=%s", out);
    EXPECT_OK(sd_experiment_set(e, buf));
    snprintf(buf, sizeof buf, "modes=%s", mode);
    EXPECT_OK(sd_experiment_set(e, buf));
    for (int i = 0; i < nextra; i++) EXPECT_OK(sd_experiment_set(e, extra[i]));
    EXPECT_OK(sd_experiment_resolve(e));
}

static FILE *devnull(void) { return fopen("/dev/null", "w"); }

/* The contents of dir/file (malloc'd, NUL-terminated), or NULL. */
static char *read_out(const char *dir, const char *file) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return sd_test_slurp(path, NULL);
}

/* The number after the first "key": in a JSON text (NULL allowed), NAN when absent. */
static double num_after(const char *m, const char *key) {
    const char *s = sd_test_json_after(m, key);
    return s ? atof(s) : NAN;
}

/* The number after "key": in dir/summary.json (the first run's), NAN when absent. */
static double summary_num(const char *dir, const char *key) {
    char *m = read_out(dir, "summary.json");
    double v = num_after(m, key);
    free(m);
    return v;
}

/* Whether some "key" of dir/summary.json has a value that starts with `value`. */
static bool summary_has(const char *dir, const char *key, const char *value) {
    char *m = read_out(dir, "summary.json");
    bool has = false;
    for (const char *p = m; !has && (p = sd_test_json_after(p, key)) != NULL;) has = !strncmp(p, value, strlen(value));
    free(m);
    return has;
}

/* Whether dir/file contains `text`. */
static bool out_has(const char *dir, const char *file, const char *text) {
    char *m = read_out(dir, file);
    bool has = m && strstr(m, text);
    free(m);
    return has;
}

int main(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        return sd_test_skip("test_distributed", "Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)");
    char dir[] = "/tmp/sd_dist_XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char a[600], b[600];
    sd_experiment *e = malloc(sizeof *e);
    FILE *quiet = devnull();

    /* 1. determinism: two runs, identical metrics and evaluations, both modes (ddp batch 16 and
     * 6 steps: some 2-3 evaluations, a third of the time of the defaults under ASan) */
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    const char *det[] = {"batch=16", "max_steps=6"};
    small_with(e, a, "ddp,scadles", det, 2);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    small_with(e, b, "ddp,scadles", det, 2);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    const char *files[] = {"ddp-seed1/metrics.jsonl", "ddp-seed1/eval.jsonl", "scadles-seed1/metrics.jsonl",
                           "scadles-seed1/eval.jsonl"};
    for (size_t i = 0; i < 4; i++) {
        char *x = read_out(a, files[i]), *y = read_out(b, files[i]);
        EXPECT(x && y && x[0] && !strcmp(x, y), "%s differs between two identical runs", files[i]);
        free(x);
        free(y);
    }
    /* the scadles run: global batch = what arrived in each 1 s window (rates sum to 107/s) */
    char *m = read_out(a, "scadles-seed1/metrics.jsonl");
    double gb = num_after(m, "global_batch");
    EXPECT(gb >= 100 && gb <= 110, "scadles first global batch %g, want the ~107 samples of one window", gb);
    free(m);
    EXPECT(summary_has(a, "mode", "\"ddp\"") && summary_has(a, "mode", "\"scadles\"") &&
           !isnan(summary_num(a, "bytes_sent")), "summary.json lists both runs");

    /* 1b. the lr scale: global batch / (devices x batch), 107 / 256 for scadles, capped by
     * optimizer.lr_scale_max: lr 0.05 x 0.2 on every step; uncapped in the runs above (batch 16) */
    snprintf(a, sizeof a, "%s/lrcap", dir);
    const char *lrcap[] = {"optimizer.lr_scale_max=0.2", "max_steps=3"};
    small_with(e, a, "scadles", lrcap, 2);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    m = read_out(a, "scadles-seed1/metrics.jsonl");
    int lr_steps = 0, lr_bad = 0;
    for (const char *l = m; l && (l = strstr(l, "\"lr\": ")); l++, lr_steps++)
        if (fabs(atof(l + 6) - 0.05 * 0.2) > 1e-7) lr_bad++;
    EXPECT(lr_steps == 3 && lr_bad == 0, "lr_scale_max 0.2: %d of %d steps trained at another lr than 0.01", lr_bad,
           lr_steps);
    free(m);
    m = read_out(dir, "a/scadles-seed1/metrics.jsonl");
    double lr0 = num_after(m, "lr");
    EXPECT(fabs(lr0 - 0.05 * gb / (4 * 16)) < 1e-6, "without a cap the lr scales with the global batch: %g, want %g", lr0,
           0.05 * gb / (4 * 16));
    free(m);

    /* 2. a stalled stream: device 2 at 0.01 samples/s */
    snprintf(a, sizeof a, "%s/stall", dir);
    const char *stall[] = {"devices.rates=40,25,0.01,30", "ddp_timeout_s=20"};
    small_with(e, a, "scadles", stall, 2);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    EXPECT(out_has(a, "scadles-seed1/metrics.jsonl", "\"batches\": [40, 25, 0, 30]"),
           "scadles trains with device 2 at weight 0");
    small_with(e, a, "ddp", stall, 2);
    sd_status st = sd_experiment_run(e, NULL, quiet);
    EXPECT(st == SD_ERR_RUNTIME && strstr(sd_last_error(), "device 2") && strstr(sd_last_error(), "ddp_timeout_s"),
           "ddp fails naming the stalled device and the timeout: %s", sd_last_error());

    /* 3. truncation: no buffer ever holds more than one window's arrivals */
    snprintf(a, sizeof a, "%s/trunc", dir);
    const char *trunc[] = {"buffer.policy=truncation", "cap=16"};
    small_with(e, a, "scadles", trunc, 2);
    sd_comm *none = NULL;
    EXPECT_OK(sd_experiment_run(e, none, quiet));
    double peak = summary_num(a, "peak_buffer");
    /* the fastest stream (40/s) brings 40 per 1 s window, plus one for a boundary arrival */
    EXPECT(peak >= 16 && peak <= 41, "truncation peak buffer %g, want within one window's arrivals (<= 41)", peak);
    EXPECT(summary_num(a, "samples_dropped") > 0, "truncation drops what the cap left");

    /* 4. the real clock: streams paced by the wall clock through ingest threads; in 3 s scadles
     * trains on about what arrived (107 samples/s), ddp fails on a stream that cannot fill b */
    snprintf(a, sizeof a, "%s/real", dir);
    const char *realc[] = {"clock=real", "time_budget_s=3", "eval_every_s=1.5", "max_steps=0"};
    small_with(e, a, "scadles", realc, 4);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    double trained = summary_num(a, "samples_trained");
    EXPECT(trained >= 107 && trained <= 107 * 4, "real clock: %g samples trained in 3 s at 107 samples/s", trained);
    /* 4b. the real clock with an emulated 2 Mbit/s link (token bucket of depth 0): every step's
     * measured communication takes at least its wire bytes at 2 Mbit/s (a lower bound: robust to a
     * loaded machine) */
    snprintf(a, sizeof a, "%s/shaped", dir);
    const char *shaped[] = {"clock=real", "time_budget_s=3", "eval_every_s=10", "max_steps=0",
                            "link_emulation=token_bucket", "link_burst_bytes=0", "devices.link.bandwidth_mbps=2"};
    small_with(e, a, "scadles", shaped, 7);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    m = read_out(a, "scadles-seed1/metrics.jsonl");
    int shaped_steps = 0, shaped_short = 0;
    for (char *l = m; l && (l = strstr(l, "\"comm\": ")); l++) {
        double comm = atof(l + 8);
        char *sb = strstr(l, "\"step_bytes\": ");
        double bytes = sb ? atof(sb + 14) : 0;
        shaped_steps++;
        if (!(bytes > 0) || comm < 0.999 * bytes * 8 / 2e6) shaped_short++;
    }
    EXPECT(shaped_steps >= 1 && shaped_short == 0, "emulated link: %d of %d steps communicated faster than 2 Mbit/s "
           "allows (or sent nothing)", shaped_short, shaped_steps);
    free(m);
    /* 4c. the virtual clock with link_emulation token_bucket: a 0.5 Mbit/s link (a dense step's bytes
     * take 2.8 s) with a 100,000-byte bucket (1.6 s). Replaying the bucket from metrics.jsonl (tokens
     * refill while the link is idle: between the end of one exchange, `time`, and the start of the
     * next, `time - comm`) gives every step's charge; the first step pays 1.6 s less than the
     * plain rate */
    snprintf(a, sizeof a, "%s/vbucket", dir);
    const char *vbucket[] = {"link_emulation=token_bucket", "link_burst_bytes=100000", "devices.link.bandwidth_mbps=0.5",
                             "devices.link.latency_ms=0", "max_steps=5"};
    small_with(e, a, "scadles", vbucket, 5);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    m = read_out(a, "scadles-seed1/metrics.jsonl");
    const double depth = 100000 * 8 / 0.5e6;
    double credit = depth, free_at = 0, first_gap = 0;
    int vsteps = 0, vbad = 0;
    for (char *l = m; l && (l = strstr(l, "\"time\": ")); l++) {
        double t = atof(l + 8), comm = num_after(l, "comm"), bytes = num_after(l, "step_bytes");
        double start = t - comm, bw = bytes * 8 / 0.5e6;
        credit = fmin(depth, credit + fmax(0, start - free_at));
        double want = fmax(0, bw - credit);
        if (vsteps == 0) first_gap = bw - comm;
        if (fabs(comm - want) > 1e-5) vbad++;
        credit = fmax(0, credit - bw);
        free_at = t;
        vsteps++;
    }
    EXPECT(vsteps == 5 && vbad == 0, "virtual token bucket: %d of %d steps charged otherwise than the bucket's replay",
           vbad, vsteps);
    EXPECT(fabs(first_gap - depth) < 1e-5, "the first step's exchange is paid %g s less than the plain rate, want %g",
           first_gap, depth);
    free(m);
    const char *realstall[] = {"clock=real", "time_budget_s=3", "devices.rates=80,70,0.01,90", "ddp_timeout_s=2",
                               "max_steps=0"};
    small_with(e, a, "ddp", realstall, 5);
    st = sd_experiment_run(e, NULL, quiet);
    EXPECT(st == SD_ERR_RUNTIME && strstr(sd_last_error(), "device 2"), "real-clock ddp names the stalled device: %s",
           sd_last_error());

    /* 5. NaN/Inf: a learning rate that blows up stops the run naming the step, or, with
     * nonfinite=skip, the updates are skipped and counted */
    snprintf(a, sizeof a, "%s/nan", dir);
    const char *nan_stop[] = {"optimizer.lr=100", "max_steps=20"};
    small_with(e, a, "scadles", nan_stop, 2);
    st = sd_experiment_run(e, NULL, quiet);
    EXPECT(st == SD_ERR_NUMERIC && strstr(sd_last_error(), "not finite") && strstr(sd_last_error(), "step ") &&
               strstr(sd_last_error(), "the training diverged at this step (inputs and parameters were finite)"),
           "a non-finite step stops the run naming it and its cause: %s", sd_last_error());
    const char *nan_skip[] = {"optimizer.lr=100", "max_steps=10", "nonfinite=skip"};
    small_with(e, a, "scadles", nan_skip, 3);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    EXPECT(summary_num(a, "skipped_steps") > 0, "skipped steps counted: %g", summary_num(a, "skipped_steps"));

    /* 6. batch norm: with bn=average the devices' running statistics are averaged before each
     * evaluation and every device adopts them; with bn=local each keeps its own (ResNet-20 on
     * windows of 4-10 samples: a quarter of the default rates' work) */
    const char *bnavg[] = {"model=resnet20", "max_steps=3", "eval_every_s=100", "eval_limit=100",
                           "devices.rates=10,6,4,8"};
    snprintf(a, sizeof a, "%s/bn_avg", dir);
    small_with(e, a, "scadles", bnavg, 5);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    EXPECT(summary_has(a, "bn_identical", "true"), "bn average: identical statistics on every device");
    const char *bnloc[] = {"model=resnet20", "max_steps=3", "eval_every_s=100", "eval_limit=100", "bn=local",
                           "devices.rates=10,6,4,8"};
    snprintf(a, sizeof a, "%s/bn_local", dir);
    small_with(e, a, "scadles", bnloc, 6);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    EXPECT(summary_has(a, "bn_identical", "false"), "bn local: each device keeps its own statistics");

    /* 7. bad input: a device count the MPI world does not match */
    const char *mpi[] = {"backend=mpi"};
    small_with(e, a, "scadles", mpi, 1);
    EXPECT_FAIL(sd_experiment_check_ranks(e, 3), SD_ERR_INVALID, "devices.count");

    fclose(quiet);
    free(e);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    EXPECT(system(cmd) == 0, "cleanup");
    return sd_test_finish("test_distributed");
}
