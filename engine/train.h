/* train.h: single-device training and evaluation: a model on a dataset for a number of epochs or
 * steps, SGD with a schedule, a live progress line, metrics.jsonl / eval.jsonl in an output
 * directory, checkpoints (model.safetensors for PyTorch users, train_state.safetensors for exact
 * resume). The distributed ScaDLES trainer builds on the same pieces.
 *
 * Input pipeline: when the backend has upload_async/upload_wait (engine/backend.h), the next batch is
 * assembled into a second host staging buffer (pinned memory with CUDA) and uploaded into a second
 * device buffer while the current step computes (CUDA: on the copy stream). The batches, and so the
 * results, are the same as with plain uploads: each batch depends only on (seed, epoch, step). */
#ifndef SD_ENGINE_TRAIN_H
#define SD_ENGINE_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/net.h"
#include "engine/optim.h"
#include "stream/augment.h"
#include "stream/dataset.h"

typedef struct sd_eval_result {
    double loss, top1, top5; /* mean loss; accuracies in [0, 1] */
    int64_t samples;
} sd_eval_result;

/* Evaluates net (evaluation mode) on all of d in batches of `batch`. */
sd_status sd_evaluate(sd_net *net, const sd_dataset *d, const sd_augment *aug, int batch, sd_eval_result *out);

typedef struct sd_train_config {
    const char *model;      /* engine/models.h name */
    float width;
    const char *dataset;    /* stream/dataset.h name */
    const char *data_root;  /* NULL = the dataset's default location */
    int epochs;             /* used when steps == 0 */
    int64_t steps;          /* total optimizer steps (0 = epochs x steps per epoch) */
    int batch, eval_batch;
    float lr;
    const char *schedule;   /* optim.h syntax; milestones in steps */
    int64_t warmup_steps;
    sd_optim_config optim;
    bool augment;           /* the dataset's training augmentation */
    int64_t train_limit;    /* use only the first N training samples (0 = all) */
    int64_t eval_limit;     /* evaluate on the first N test samples (0 = all) */
    int64_t eval_every;     /* steps between evaluations (0 = every epoch) */
    int64_t checkpoint_every; /* steps between checkpoints (0 = at the end only) */
    uint64_t seed;
    int threads;
    const char *out_dir;
    const char *resume;     /* a run directory to continue from, or NULL */
    int64_t stop_at;        /* end this invocation after this step, checkpointed (0 = run to the end) */
    bool progress;          /* live progress line on stderr */
    const char *backend;    /* "cpu" (default; NULL means cpu) or "cuda" */
    int device;             /* CUDA device index (backend "cuda") */
} sd_train_config;

void sd_train_config_defaults(sd_train_config *c);
/* Runs training; prints per-epoch time and accuracy to stdout. */
sd_status sd_train_run(const sd_train_config *c, sd_eval_result *final_eval);

#endif
