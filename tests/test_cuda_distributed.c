/* test_cuda_distributed.c: the distributed trainer with compute_backend cuda against the same run
 * on the CPU backend: 4 devices, scadles with the paper's compression (momentum correction),
 * virtual clock, 8 steps of the Fashion-MNIST CNN; the per-step losses must agree within 1e-3
 * relative, both runs must take the same number of steps, and the BN statistics must be
 * identical across devices after the final averaging. Without a usable GPU, the cuda run must
 * fail cleanly (a status, a message naming compute_backend and the fix) and the test reports
 * skipped (exit 77; SD_CUDA_REQUIRE=1 makes that a failure). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/distributed.h"
#include "engine/experiment.h"
#include "tests/harness.h"

static void setup(sd_experiment *e, const char *out, const char *backend) {
    sd_experiment_defaults(e);
    char buf[600];
    const char *sets[] = {"devices.rates=40,25,12,30", "max_steps=8", "eval_limit=500", "eval_every_s=4",
                          "target_accuracy=0.99", "threads=1", "modes=scadles", "compression.policy=paper",
                          "compression.ratio=0.1"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) EXPECT_OK(sd_experiment_set(e, sets[i]));
    snprintf(buf, sizeof buf, "out_dir=%s", out);
    EXPECT_OK(sd_experiment_set(e, buf));
    snprintf(buf, sizeof buf, "compute_backend=%s", backend);
    EXPECT_OK(sd_experiment_set(e, buf));
    EXPECT_OK(sd_experiment_resolve(e));
}

/* The "loss" values of a metrics.jsonl, in order; returns how many (at most cap). */
static int losses(const char *path, double *out, int cap) {
    char *m = sd_test_slurp(path, NULL);
    int n = 0;
    for (char *l = m; l && n < cap && (l = strstr(l, "\"loss\": ")); l += 8) out[n++] = atof(l + 8);
    free(m);
    return n;
}

int main(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        return sd_test_skip("test_cuda_distributed", "Fashion-MNIST not installed (scripts/setup.sh installs it)");
    const char *req = getenv("SD_CUDA_REQUIRE");
    const int required = req && !strcmp(req, "1");
    char dir[] = "/tmp/sd_cudadist_XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char a[600], b[600], p[700];
    sd_experiment *e = malloc(sizeof *e);
    FILE *quiet = fopen("/dev/null", "w");

    snprintf(b, sizeof b, "%s/cuda", dir);
    setup(e, b, "cuda");
    sd_status st = sd_experiment_run(e, NULL, quiet);
    if (st != SD_OK) {
        char why[1400];
        snprintf(why, sizeof why, "compute_backend cuda unavailable: %s", sd_last_error());
        EXPECT(st == SD_ERR_UNSUPPORTED || st == SD_ERR_RUNTIME, "cuda run failed with %s", sd_status_str(st));
        EXPECT(strstr(sd_last_error(), "compute_backend") != NULL, "the message names compute_backend: %s",
               sd_last_error());
        free(e);
        fclose(quiet);
        if (required) EXPECT(0, "SD_CUDA_REQUIRE=1 but %s", why);
        if (sd_test_failed) return sd_test_finish("test_cuda_distributed");
        return sd_test_skip("test_cuda_distributed", why);
    }
    snprintf(a, sizeof a, "%s/cpu", dir);
    setup(e, a, "cpu");
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    double lc[64], lg[64];
    snprintf(p, sizeof p, "%s/scadles-seed1/metrics.jsonl", a);
    int nc = losses(p, lc, 64);
    snprintf(p, sizeof p, "%s/scadles-seed1/metrics.jsonl", b);
    int ng = losses(p, lg, 64);
    EXPECT(nc == 8 && ng == nc, "steps: cpu %d, cuda %d (want 8 each)", nc, ng);
    for (int i = 0; i < nc && i < ng; i++) {
        double rel = fabs(lc[i] - lg[i]) / fmax(1e-6, fabs(lc[i]));
        EXPECT(rel <= 1e-3, "step %d: loss cpu %.7f cuda %.7f (relative %.3g)", i + 1, lc[i], lg[i], rel);
        printf("  step %d: loss cpu %.7f cuda %.7f\n", i + 1, lc[i], lg[i]);
    }
    snprintf(p, sizeof p, "%s/summary.json", b);
    char *s = sd_test_slurp(p, NULL);
    EXPECT(sd_test_json_after(s, "bn_identical") && !strncmp(sd_test_json_after(s, "bn_identical"), "true", 4), "cuda: BN statistics identical on every device after averaging");
    free(s);
    free(e);
    fclose(quiet);
    return sd_test_finish("test_cuda_distributed");
}
