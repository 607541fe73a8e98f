/* train.h: single-device training and the test-set evaluation every run uses.
 *
 * The single-device trainer is not a loop of its own: it is an experiment with one device
 * (docs/training.md), run by the same runner and step pipeline as the distributed ones. A replay
 * of the whole training set (reshuffled every pass) streams as fast as the device takes it into a
 * buffer with backpressure; the device trains in ddp mode on exactly `batch` samples a step under
 * the real clock, so the batches depend only on (seed, step) and a stopped run resumes exactly.
 * Every option is an experiment key set over that base (sd_train_experiment), so the run
 * directory, metrics.jsonl, eval.jsonl, summary.json, the checkpoint and the report are those of
 * any experiment: <out>/config.json, <out>/ddp-seed<seed>/{metrics.jsonl,eval.jsonl,model.safetensors},
 * <out>/checkpoint/. */
#ifndef SD_ENGINE_TRAIN_H
#define SD_ENGINE_TRAIN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/distributed.h"
#include "engine/experiment.h"
#include "engine/net.h"
#include "stream/augment.h"
#include "stream/dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_eval_result {
    double loss, top1, top5; /* mean loss; accuracies in [0, 1] */
    int64_t samples;
} sd_eval_result;

/* Evaluates net (evaluation mode) on all of d in batches of `batch`. */
sd_status sd_evaluate(sd_net *net, const sd_dataset *d, const sd_augment *aug, int batch, sd_eval_result *out);

/* One option of the trainer: what the user wrote (for messages) and the experiment key it sets
 * (docs/experiments.md). key "epochs" is the trainer's own: max_steps = epochs x steps per epoch. */
typedef struct sd_train_option {
    const char *flag;  /* "--lr" */
    const char *key;   /* "optimizer.lr" */
    const char *value; /* "0.05" */
} sd_train_option;

typedef struct sd_train_request {
    const sd_train_option *opts;
    int nopts;
    const char *resume;          /* a run directory (its config.json and checkpoint/) to continue; NULL: a new run */
    int64_t stop_at;             /* > 0: stop after this step with a checkpoint */
    bool quiet;                  /* no progress line */
    const atomic_int *stop_flag; /* engine/signals.h; NULL: none */
    FILE *log;                   /* the header and a line per evaluation (stdout); NULL: none */
} sd_train_request;

/* The experiment of a request: the trainer's base (docs/training.md), the options in order, then
 * what follows from them (max_steps from epochs, default 5; an evaluation per epoch unless
 * eval_every_steps is given; a buffer of max(4096, 2 x batch)). With resume, the experiment is the
 * run's own config.json, and an option that would change it is refused naming the flag and the
 * key (a resumed run keeps its configuration). SD_ERR_INVALID naming the flag for a bad value. */
sd_status sd_train_experiment(const sd_train_request *rq, sd_experiment *e);

/* Runs the request. ctl (out) says how the invocation ended: finished (ctl->last holds the final
 * evaluation) or stopped with a checkpoint (ctl->stopped). */
sd_status sd_train_run(const sd_train_request *rq, sd_experiment *e, sd_run_control *ctl);

#ifdef __cplusplus
}
#endif

#endif
