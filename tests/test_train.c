/* test_train.c: single-device training (a one-device experiment, engine/train.h) on real
 * Fashion-MNIST (Debian's dataset-fashion-mnist): the options make the documented experiment, the
 * loss falls, the run directory holds what the docs promise, a run stopped and resumed from its
 * checkpoint ends with bitwise the weights of an uninterrupted one, a resume refuses options that
 * would change the run, schedules give the documented learning rates, and bad settings are
 * refused naming the flag. */
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

/* A request of n options (flag, key, value) over the small base every case here shares. */
#define MAXO 24
typedef struct req {
    sd_train_option o[MAXO];
    sd_train_request rq;
} req;

static void base(req *r, const char *out) {
    static const sd_train_option common[] = {
        {"--train-limit", "train_limit", "1280"}, {"--eval-limit", "eval_limit", "500"}, {"--steps", "max_steps", "12"},
        {"--lr", "optimizer.lr", "0.05"}, {"--threads", "threads", "2"}, {"--eval-every", "eval_every_steps", "6"}};
    memset(r, 0, sizeof *r);
    memcpy(r->o, common, sizeof common);
    r->rq.opts = r->o;
    r->rq.nopts = (int)(sizeof common / sizeof common[0]);
    r->rq.quiet = true;
    if (out) r->o[r->rq.nopts++] = (sd_train_option){"--out", "out_dir", out};
}

static void add(req *r, const char *flag, const char *key, const char *value) {
    r->rq.opts = r->o;
    if (r->rq.nopts < MAXO) r->o[r->rq.nopts++] = (sd_train_option){flag, key, value};
}

static int lines_of(const char *path) {
    size_t len = 0;
    char *m = sd_test_slurp(path, &len);
    int n = 0;
    for (size_t i = 0; m && i < len; i++) n += m[i] == '\n';
    free(m);
    return n;
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
    sd_experiment *e = malloc(sizeof *e);
    req r;
    sd_run_control ca, cb;

    /* the experiment the options make: a one-device ddp run, derived steps and evaluations */
    memset(&r, 0, sizeof r);
    EXPECT_OK(sd_train_experiment(&r.rq, e));
    EXPECT(e->devices.count == 1 && e->n_modes == 1 && e->modes[0] == SD_EXP_MODE_DDP && e->clock == SD_EXP_CLOCK_REAL &&
           e->max_steps == 5 * (60000 / 64) && e->eval_every_steps == 60000 / 64 && e->buffer.capacity == 4096 &&
           e->buffer.full == SD_EXP_FULL_BACKPRESSURE && e->target_accuracy == 0 && e->augment &&
           !strcmp(e->out_dir, "runs/train") && !strcmp(e->model, "fmnist_cnn"),
           "defaults: %d device(s), %lld steps, evaluation every %lld, capacity %lld", e->devices.count,
           (long long)e->max_steps, (long long)e->eval_every_steps, (long long)e->buffer.capacity);
    add(&r, "--batch", "batch", "3000");
    add(&r, "--epochs", "epochs", "2");
    add(&r, "--train-limit", "train_limit", "30000");
    add(&r, "--no-augment", "augment", "false");
    EXPECT_OK(sd_train_experiment(&r.rq, e));
    EXPECT(e->max_steps == 20 && e->eval_every_steps == 10 && e->buffer.capacity == 6000 && !e->augment,
           "2 epochs of 30000 in batches of 3000: %lld steps, evaluation every %lld, capacity %lld",
           (long long)e->max_steps, (long long)e->eval_every_steps, (long long)e->buffer.capacity);

    /* a short run: the loss falls; the run directory is an experiment's */
    base(&r, a);
    EXPECT_OK(sd_train_run(&r.rq, e, &ca));
    EXPECT(!ca.stopped && ca.last.steps == 12 && ca.last.final_accuracy > 0.5 && ca.last.final_top5 > ca.last.final_accuracy,
           "12 steps at lr 0.05 reach %.1f%% (top-5 %.1f%%) on 500 test images", 100 * ca.last.final_accuracy,
           100 * ca.last.final_top5);
    EXPECT(ca.last.samples_dropped == 0 && ca.last.samples_trained == 12 * 64,
           "backpressure: nothing dropped (%llu), every step a full batch (%llu samples)",
           (unsigned long long)ca.last.samples_dropped, (unsigned long long)ca.last.samples_trained);
    const char *files[] = {"config.json", "summary.json", "ddp-seed1/metrics.jsonl", "ddp-seed1/eval.jsonl",
                           "ddp-seed1/model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        EXPECT(access(pa, R_OK) == 0, "run directory lacks %s", files[i]);
    }
    snprintf(pa, sizeof pa, "%s/ddp-seed1/metrics.jsonl", a);
    EXPECT(lines_of(pa) == 12, "metrics.jsonl has %d lines, want one per step (12)", lines_of(pa));
    snprintf(pa, sizeof pa, "%s/ddp-seed1/eval.jsonl", a);
    EXPECT(lines_of(pa) == 2, "eval.jsonl has %d lines, want the evaluations at steps 6 and 12", lines_of(pa));

    /* stopped after 5 of the 12 steps (cosine over all 12, a checkpoint every 4), resumed to 12:
     * the weights are bitwise those of 12 straight steps */
    base(&r, b);
    add(&r, "--checkpoint-every", "checkpoint_every_steps", "4");
    r.rq.stop_at = 5;
    EXPECT_OK(sd_train_run(&r.rq, e, &cb));
    EXPECT(cb.stopped && cb.stopped_step == 5, "stopped after step %lld", (long long)cb.stopped_step);
    req again;
    memset(&again, 0, sizeof again);
    again.rq.resume = b;
    again.rq.quiet = true;
    add(&again, "--threads", "threads", "2"); /* accepted (another count is too, but changes the bits) */
    add(&again, "--lr", "optimizer.lr", "0.05"); /* repeating what the run has is fine */
    EXPECT_OK(sd_train_run(&again.rq, e, &cb));
    EXPECT(!cb.stopped && cb.last.steps == 12, "the resumed run finishes (%lld steps)", (long long)cb.last.steps);
    snprintf(pa, sizeof pa, "%s/ddp-seed1/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/ddp-seed1/model.safetensors", b);
    EXPECT(same_file(pa, pb), "weights after 5 + 7 resumed steps are bitwise those of 12 straight steps");
    EXPECT(ca.last.final_accuracy == cb.last.final_accuracy && ca.last.final_loss == cb.last.final_loss,
           "final evaluation equal: %g/%g vs %g/%g", ca.last.final_accuracy, ca.last.final_loss, cb.last.final_accuracy,
           cb.last.final_loss);
    snprintf(pb, sizeof pb, "%s/ddp-seed1/metrics.jsonl", b);
    EXPECT(lines_of(pb) == 12, "metrics.jsonl of the resumed run has %d lines (12)", lines_of(pb));

    /* a resumed run keeps its configuration */
    add(&again, "--lr", "optimizer.lr", "0.1");
    EXPECT_FAIL(sd_train_experiment(&again.rq, e), SD_ERR_INVALID, "--lr 0.1 would change optimizer.lr");
    again.rq.nopts = 0;
    add(&again, "--epochs", "epochs", "3");
    EXPECT_FAIL(sd_train_experiment(&again.rq, e), SD_ERR_INVALID, "--epochs 3 would change max_steps");
    again.rq.nopts = 0;
    again.rq.resume = "";
    EXPECT_FAIL(sd_train_experiment(&again.rq, e), SD_ERR_INVALID, "--resume needs the run directory");
    again.rq.resume = dir; /* holds no run */
    EXPECT_FAIL(sd_train_experiment(&again.rq, e), SD_ERR_IO, "config.json is missing");

    /* bad settings name the flag */
    base(&r, a);
    add(&r, "--model", "model", "resnet7");
    EXPECT_FAIL(sd_train_experiment(&r.rq, e), SD_ERR_INVALID, "--model resnet7");
    base(&r, a);
    add(&r, "--dataset", "dataset", "imagenet");
    EXPECT(sd_train_experiment(&r.rq, e) != SD_OK && strstr(sd_last_error(), "imagenet"), "unknown dataset: %s",
           sd_last_error());
    base(&r, a);
    add(&r, "--schedule", "optimizer.schedule", "multistep:");
    EXPECT_FAIL(sd_train_experiment(&r.rq, e), SD_ERR_INVALID, "multistep");
    base(&r, a);
    add(&r, "--seed", "seeds", "18014398509481985"); /* 2^54 + 1 */
    EXPECT_FAIL(sd_train_experiment(&r.rq, e), SD_ERR_INVALID, "--seed");
    base(&r, a);
    add(&r, "--epochs", "epochs", "2");
    EXPECT_FAIL(sd_train_experiment(&r.rq, e), SD_ERR_INVALID, "give one of them");
    memset(&r, 0, sizeof r); /* epochs need a batch to fit in the training set */
    add(&r, "--train-limit", "train_limit", "1280");
    add(&r, "--batch", "batch", "2000");
    EXPECT_FAIL(sd_train_experiment(&r.rq, e), SD_ERR_INVALID, "fewer than one batch");
    free(e);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    EXPECT(system(cmd) == 0, "cleanup");
    return sd_test_finish("test_train");
}
