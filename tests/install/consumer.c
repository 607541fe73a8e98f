/* consumer.c: a tiny program outside the engine's tree that uses the installed engine through its
 * public API only. tests/install/run_install_test.sh builds it twice against an installed prefix:
 * as C++ through find_package(scadles CONFIG) (CMakeLists.txt here) and as C through pkg-config;
 * the same source is valid C11 and C++17. It trains two steps of a one-device experiment on
 * Fashion-MNIST and checks what the run wrote: summary.json, eval.jsonl, and metrics.jsonl with
 * exactly two steps whose losses are finite, as is the summary's final test loss.
 * Usage: consumer OUT_DIR [DATA_ROOT]. Exit 0: passed, 1: failed (says why), 77: no dataset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <scadles/scadles.h>

static int fail(const char *what) {
    fprintf(stderr, "consumer: FAIL: %s\n", what);
    return 1;
}

/* Counts the lines of path holding "key": and whether every such value is finite; -1: unreadable. */
static int count_finite(const char *path, const char *key, int *all_finite) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[8192], pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    int n = 0;
    *all_finite = 1;
    while (fgets(line, sizeof line, f)) {
        const char *s = strstr(line, pat);
        if (!s) continue;
        double v = strtod(s + strlen(pat), NULL);
        n++;
        if (!isfinite(v)) *all_finite = 0;
    }
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: consumer OUT_DIR [DATA_ROOT]\n");
        return 2;
    }
    const char *out = argv[1], *root = argc > 2 ? argv[2] : "/usr/share/datasets/fashion-mnist";
    char path[1024];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", root);
    if (access(path, R_OK) != 0) {
        printf("consumer: skipped: Fashion-MNIST not found in %s (scripts/setup.sh installs dataset-fashion-mnist)\n", root);
        return 77;
    }
    printf("consumer: ScaDLES %s (version.h %d.%d.%d), models: %s\n", SD_VERSION_STRING, SD_VERSION_MAJOR,
           SD_VERSION_MINOR, SD_VERSION_PATCH, sd_model_names());

    /* one device streaming at 50 samples/s, ddp with batch 16, two steps (docs/experiments.md) */
    sd_experiment *e = (sd_experiment *)malloc(sizeof *e);
    if (!e) return fail("out of memory");
    sd_experiment_defaults(e);
    char set_out[600], set_root[600];
    snprintf(set_out, sizeof set_out, "out_dir=%s", out);
    snprintf(set_root, sizeof set_root, "data_root=%s", root);
    const char *sets[] = {"name=consumer", "devices.rates=50", "modes=ddp", "batch=16", "max_steps=2",
                          "eval_limit=200", "threads=1", set_out, set_root};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (sd_experiment_set(e, sets[i]) != SD_OK) {
            fprintf(stderr, "consumer: --set %s: %s\n", sets[i], sd_last_error());
            free(e);
            return 1;
        }
    sd_status s = sd_experiment_resolve(e);
    sd_run_control ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.quiet = true;
    if (s == SD_OK) s = sd_experiment_run_ctl(e, NULL, stdout, &ctl);
    free(e);
    if (s != SD_OK) {
        fprintf(stderr, "consumer: the run failed: %s: %s\n", sd_status_str(s), sd_last_error());
        return 1;
    }

    /* what the run wrote */
    if (ctl.last.steps != 2) return fail("the run's summary does not say 2 steps");
    if (!isfinite(ctl.last.final_loss)) return fail("the run's final test loss is not finite");
    snprintf(path, sizeof path, "%s/summary.json", out);
    if (access(path, R_OK) != 0) return fail("no summary.json in the output directory");
    int finite = 0;
    snprintf(path, sizeof path, "%s/ddp-seed1/metrics.jsonl", out);
    int steps = count_finite(path, "loss", &finite);
    if (steps != 2) {
        fprintf(stderr, "consumer: FAIL: %s: %d steps with a loss, wanted 2\n", path, steps);
        return 1;
    }
    if (!finite) return fail("a training loss in metrics.jsonl is not finite");
    snprintf(path, sizeof path, "%s/ddp-seed1/eval.jsonl", out);
    if (count_finite(path, "test_loss", &finite) < 1 || !finite) return fail("eval.jsonl has no finite test loss");
    printf("consumer: passed: 2 steps, final test loss %.4f, outputs in %s\n", ctl.last.final_loss, out);
    return 0;
}
