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
#include "harness.h"

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

static void small(sd_experiment *e, const char *out, const char *mode) { small_with(e, out, mode, NULL, 0); }

static FILE *devnull(void) { return fopen("/dev/null", "w"); }

int main(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        return sd_test_skip("test_distributed", "Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)");
    char dir[] = "/tmp/sd_dist_XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char a[600], b[600], p1[700], p2[700];
    sd_experiment *e = malloc(sizeof *e);
    FILE *quiet = devnull();

    /* 1. determinism: two runs, identical metrics and evaluations, both modes */
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    small(e, a, "ddp,scadles");
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    small(e, b, "ddp,scadles");
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    const char *files[] = {"ddp-seed1/metrics.jsonl", "ddp-seed1/eval.jsonl", "scadles-seed1/metrics.jsonl",
                           "scadles-seed1/eval.jsonl"};
    for (size_t i = 0; i < 4; i++) {
        size_t la = 0, lb = 0;
        snprintf(p1, sizeof p1, "%s/%s", a, files[i]);
        snprintf(p2, sizeof p2, "%s/%s", b, files[i]);
        char *x = sd_test_slurp(p1, &la), *y = sd_test_slurp(p2, &lb);
        EXPECT(x && y && la > 0 && la == lb && !memcmp(x, y, la), "%s differs between two identical runs", files[i]);
        free(x);
        free(y);
    }
    /* the scadles run: global batch = what arrived in each 1 s window (rates sum to 107/s) */
    size_t len = 0;
    snprintf(p1, sizeof p1, "%s/scadles-seed1/metrics.jsonl", a);
    char *m = sd_test_slurp(p1, &len);
    int gb = -1;
    if (m) {
        char *s = strstr(m, "\"global_batch\": ");
        if (s) gb = atoi(s + 16);
    }
    EXPECT(gb >= 100 && gb <= 110, "scadles first global batch %d, want the ~107 samples of one window", gb);
    free(m);
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    m = sd_test_slurp(p1, &len);
    EXPECT(m && strstr(m, "\"mode\": \"ddp\"") && strstr(m, "\"mode\": \"scadles\"") && strstr(m, "\"bytes_sent\""),
           "summary.json lists both runs");
    free(m);

    /* 2. a stalled stream: device 2 at 0.01 samples/s */
    snprintf(a, sizeof a, "%s/stall", dir);
    const char *stall[] = {"devices.rates=40,25,0.01,30", "ddp_timeout_s=20"};
    small_with(e, a, "scadles", stall, 2);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    snprintf(p1, sizeof p1, "%s/scadles-seed1/metrics.jsonl", a);
    m = sd_test_slurp(p1, &len);
    EXPECT(m && strstr(m, "\"batches\": [40, 25, 0, 30]"), "scadles trains with device 2 at weight 0: %.200s", m ? m : "");
    free(m);
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
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    m = sd_test_slurp(p1, &len);
    char *pk = m ? strstr(m, "\"peak_buffer\": ") : NULL;
    int peak = pk ? atoi(pk + 15) : -1;
    /* the fastest stream (40/s) brings 40 per 1 s window, plus one for a boundary arrival */
    EXPECT(peak >= 16 && peak <= 41, "truncation peak buffer %d, want within one window's arrivals (<= 41)", peak);
    EXPECT(m && strstr(m, "\"samples_dropped\": 0") == NULL, "truncation drops what the cap left");
    free(m);

    /* 4. the real clock: streams paced by the wall clock through ingest threads; in 3 s scadles
     * trains on about what arrived (107 samples/s), ddp fails on a stream that cannot fill b */
    snprintf(a, sizeof a, "%s/real", dir);
    const char *realc[] = {"clock=real", "time_budget_s=3", "eval_every_s=1.5", "max_steps=0"};
    small_with(e, a, "scadles", realc, 4);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    m = sd_test_slurp(p1, &len);
    char *tr = m ? strstr(m, "\"samples_trained\": ") : NULL;
    long trained = tr ? atol(tr + 19) : -1;
    EXPECT(trained >= 107 && trained <= 107 * 4, "real clock: %ld samples trained in 3 s at 107 samples/s", trained);
    free(m);
    /* 4b. the real clock with an emulated 2 Mbit/s link (token bucket of depth 0): every step's
     * measured communication takes at least its wire bytes at 2 Mbit/s (a lower bound: robust to a
     * loaded machine) */
    snprintf(a, sizeof a, "%s/shaped", dir);
    const char *shaped[] = {"clock=real", "time_budget_s=3", "eval_every_s=10", "max_steps=0",
                            "link_emulation=token_bucket", "link_burst_bytes=0", "devices.link.bandwidth_mbps=2"};
    small_with(e, a, "scadles", shaped, 7);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    snprintf(p1, sizeof p1, "%s/scadles-seed1/metrics.jsonl", a);
    m = sd_test_slurp(p1, &len);
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
    const char *badlink[] = {"link_emulation=token_bucket"}; /* the virtual clock models the link already */
    sd_experiment_defaults(e);
    EXPECT_OK(sd_experiment_set(e, badlink[0]));
    EXPECT_FAIL(sd_experiment_resolve(e), SD_ERR_INVALID, "link_emulation");
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
    EXPECT(st == SD_ERR_NUMERIC && strstr(sd_last_error(), "not finite") && strstr(sd_last_error(), "step "),
           "a non-finite step stops the run naming it: %s", sd_last_error());
    const char *nan_skip[] = {"optimizer.lr=100", "max_steps=20", "nonfinite=skip"};
    small_with(e, a, "scadles", nan_skip, 3);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    m = sd_test_slurp(p1, &len);
    char *sk = m ? strstr(m, "\"skipped_steps\": ") : NULL;
    EXPECT(sk && atoi(sk + 17) > 0, "skipped steps counted: %.40s", sk ? sk : "(none)");
    free(m);

    /* 6. batch norm: with bn=average the devices' running statistics are averaged before each
     * evaluation and every device adopts them; with bn=local each keeps its own */
    const char *bnavg[] = {"model=resnet20", "max_steps=3", "eval_every_s=100", "eval_limit=100"};
    snprintf(a, sizeof a, "%s/bn_avg", dir);
    small_with(e, a, "scadles", bnavg, 4);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    m = sd_test_slurp(p1, &len);
    EXPECT(m && strstr(m, "\"bn_identical\": true"), "bn average: identical statistics on every device");
    free(m);
    const char *bnloc[] = {"model=resnet20", "max_steps=3", "eval_every_s=100", "eval_limit=100", "bn=local"};
    snprintf(a, sizeof a, "%s/bn_local", dir);
    small_with(e, a, "scadles", bnloc, 5);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    snprintf(p1, sizeof p1, "%s/summary.json", a);
    m = sd_test_slurp(p1, &len);
    EXPECT(m && strstr(m, "\"bn_identical\": false"), "bn local: each device keeps its own statistics");
    free(m);

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
