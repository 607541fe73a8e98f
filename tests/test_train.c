/* test_train.c: single-device training on real Fashion-MNIST (Debian's dataset-fashion-mnist):
 * the loss falls, the run directory holds what the docs promise, a run resumed from its
 * checkpoint ends bitwise identical to an uninterrupted one, schedules give the documented
 * learning rates, and bad settings are refused with clear messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/optim.h"
#include "engine/train.h"
#include "tests/harness.h"

static int same_file(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    char *x = sd_test_slurp(a, &la), *y = sd_test_slurp(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static void base_config(sd_train_config *c, const char *out) {
    sd_train_config_defaults(c);
    c->train_limit = 1280;
    c->eval_limit = 500;
    c->batch = 64;
    c->steps = 12;
    c->lr = 0.05f;
    c->threads = 2;
    c->progress = false;
    c->out_dir = out;
}

static void test_schedules(void) {
    sd_lr_schedule s;
    EXPECT_OK(sd_lr_schedule_parse("multistep:10,20@0.5", 0.4f, 100, &s));
    EXPECT(fabsf(sd_lr_at(&s, 9) - 0.4f) < 1e-7f && fabsf(sd_lr_at(&s, 10) - 0.2f) < 1e-7f &&
               fabsf(sd_lr_at(&s, 25) - 0.1f) < 1e-7f, "multistep: %g %g %g", (double)sd_lr_at(&s, 9),
           (double)sd_lr_at(&s, 10), (double)sd_lr_at(&s, 25));
    EXPECT_OK(sd_lr_schedule_parse("cosine", 1.0f, 100, &s));
    EXPECT(fabsf(sd_lr_at(&s, 0) - 1.0f) < 1e-6f && fabsf(sd_lr_at(&s, 50) - 0.5f) < 1e-6f && sd_lr_at(&s, 100) < 1e-6f,
           "cosine: %g %g %g", (double)sd_lr_at(&s, 0), (double)sd_lr_at(&s, 50), (double)sd_lr_at(&s, 100));
    EXPECT_OK(sd_lr_schedule_parse("constant", 0.1f, 100, &s));
    s.warmup_steps = 10;
    EXPECT(fabsf(sd_lr_at(&s, 0) - 0.01f) < 1e-7f && fabsf(sd_lr_at(&s, 5) - 0.055f) < 1e-7f &&
               fabsf(sd_lr_at(&s, 10) - 0.1f) < 1e-7f, "warm-up: %g %g %g", (double)sd_lr_at(&s, 0),
           (double)sd_lr_at(&s, 5), (double)sd_lr_at(&s, 10));
    EXPECT_FAIL(sd_lr_schedule_parse("multistep:20,10", 0.1f, 100, &s), SD_ERR_INVALID, "increasing");
    EXPECT_FAIL(sd_lr_schedule_parse("linear", 0.1f, 100, &s), SD_ERR_INVALID, "constant, cosine or multistep");
    EXPECT_FAIL(sd_lr_schedule_parse("constant", -1.0f, 100, &s), SD_ERR_INVALID, "learning rate");
}

int main(void) {
    test_schedules();
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("test_train: Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist); training part skipped\n");
        return sd_test_finish("test_train");
    }
    char dir[] = "/tmp/sd_train_XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char a[512], b[512], pa[600], pb[600];
    snprintf(a, sizeof a, "%s/straight", dir);
    snprintf(b, sizeof b, "%s/resumed", dir);

    sd_train_config c;
    sd_eval_result ra, rb;
    base_config(&c, a);
    EXPECT_OK(sd_train_run(&c, &ra));
    EXPECT(ra.samples == 500 && ra.top1 > 0.5, "12 steps at lr 0.05 reach %.1f%% on 500 test images", 100 * ra.top1);

    base_config(&c, b);
    c.steps = 12;
    c.checkpoint_every = 5;
    /* stop after 5 of the 12 steps (cosine schedule over all 12), then resume to 12 */
    sd_train_config first = c;
    first.stop_at = 5;
    EXPECT_OK(sd_train_run(&first, NULL));
    c.resume = b;
    EXPECT_OK(sd_train_run(&c, &rb));
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    EXPECT(same_file(pa, pb), "weights after 5 + 7 resumed steps are bitwise those of 12 straight steps");
    snprintf(pa, sizeof pa, "%s/train_state.safetensors", a);
    snprintf(pb, sizeof pb, "%s/train_state.safetensors", b);
    EXPECT(same_file(pa, pb), "optimizer state after resume matches");
    EXPECT(ra.top1 == rb.top1 && ra.loss == rb.loss, "final evaluation equal: %g/%g vs %g/%g", ra.top1, ra.loss, rb.top1, rb.loss);

    /* the run directory */
    const char *files[] = {"config.json", "metrics.jsonl", "eval.jsonl", "model.safetensors", "train_state.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        EXPECT(access(pa, R_OK) == 0, "run directory lacks %s", files[i]);
    }
    size_t len = 0;
    snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
    char *m = sd_test_slurp(pa, &len);
    int lines = 0;
    for (size_t i = 0; m && i < len; i++) lines += m[i] == '\n';
    EXPECT(lines == 12, "metrics.jsonl has %d lines, want one per step (12)", lines);
    free(m);

    /* bad settings */
    base_config(&c, a);
    c.model = "resnet7";
    EXPECT_FAIL(sd_train_run(&c, NULL), SD_ERR_INVALID, "resnet7");
    base_config(&c, a);
    c.dataset = "imagenet";
    EXPECT_FAIL(sd_train_run(&c, NULL), SD_ERR_INVALID, "imagenet");
    base_config(&c, a);
    c.schedule = "multistep:";
    EXPECT_FAIL(sd_train_run(&c, NULL), SD_ERR_INVALID, "multistep");
    base_config(&c, a);
    c.resume = dir; /* holds no checkpoint */
    EXPECT(sd_train_run(&c, NULL) != SD_OK && strstr(sd_last_error(), "model.safetensors"),
           "resume from a directory without a checkpoint names the file: %s", sd_last_error());

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    EXPECT(system(cmd) == 0, "cleanup");
    return sd_test_finish("test_train");
}
