/* train.c: the test-set evaluation every run uses (sd_evaluate), and the single-device trainer:
 * its options turned into a one-device experiment (sd_train_experiment) that the experiment
 * runner trains (sd_train_run); train.h says why that is the same pipeline as a distributed run. */
#include "engine/train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/dist_checkpoint.h"

/* ---- evaluation -------------------------------------------------------------------------- */

sd_status sd_evaluate(sd_net *net, const sd_dataset *d, const sd_augment *aug, int batch, sd_eval_result *out) {
    if (!net || !d || !aug || !out || batch <= 0) return SD_FAIL(SD_ERR_INVALID, "evaluate: bad arguments");
    memset(out, 0, sizeof *out);
    sd_backend *be = sd_net_backend(net);
    int classes = sd_net_classes(net);
    if (d->classes > classes)
        return SD_FAIL(SD_ERR_SHAPE, "evaluate: dataset %s has %d classes but the model outputs %d", d->name, d->classes, classes);
    size_t img = (size_t)d->c * d->h * d->w;
    float *hx = malloc((size_t)batch * img * sizeof(float));
    int32_t *hy = malloc((size_t)batch * sizeof(int32_t));
    float *hlogits = malloc((size_t)batch * classes * sizeof(float));
    int64_t *idx = malloc((size_t)batch * sizeof(int64_t));
    float *dx = NULL;
    int32_t *dy = NULL;
    sd_status st = SD_OK;
    if (!hx || !hy || !hlogits || !idx) { st = SD_FAIL(SD_ERR_OOM, "evaluate: host buffers"); goto done; }
    if ((st = be->ops->alloc(be->ctx, (size_t)batch * img * sizeof(float), (void **)&dx)) != SD_OK) goto done;
    if ((st = be->ops->alloc(be->ctx, (size_t)batch * sizeof(int32_t), (void **)&dy)) != SD_OK) goto done;
    double loss_sum = 0;
    int64_t c1 = 0, c5 = 0;
    for (int64_t start = 0; start < d->n; start += batch) {
        int n = (int)((d->n - start) < batch ? (d->n - start) : batch);
        for (int i = 0; i < n; i++) idx[i] = start + i;
        sd_augment_draw none = {0};
        for (int i = 0; i < n; i++) {
            if ((st = sd_augment_image(d, idx[i], aug, &none, hx + (size_t)i * img)) != SD_OK) goto done;
            hy[i] = d->labels[idx[i]];
        }
        float loss = 0;
        if ((st = be->ops->upload(be->ctx, dx, hx, (size_t)n * img * sizeof(float))) != SD_OK ||
            (st = be->ops->upload(be->ctx, dy, hy, (size_t)n * sizeof(int32_t))) != SD_OK ||
            (st = sd_net_forward(net, dx, n, false)) != SD_OK ||
            (st = sd_net_loss(net, dy, 0.0f, &loss)) != SD_OK ||
            (st = be->ops->download(be->ctx, hlogits, sd_net_output(net), (size_t)n * classes * sizeof(float))) != SD_OK)
            goto done;
        loss_sum += (double)loss * n;
        for (int i = 0; i < n; i++) {
            const float *l = hlogits + (size_t)i * classes;
            float target = l[hy[i]];
            int above = 0; /* classes scoring strictly higher than the label (ties favour the label) */
            for (int j = 0; j < classes; j++) above += l[j] > target;
            c1 += above == 0;
            c5 += above < 5;
        }
    }
    out->samples = d->n;
    out->loss = loss_sum / (double)d->n;
    out->top1 = (double)c1 / (double)d->n;
    out->top5 = (double)c5 / (double)d->n;
done:
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    if (dx) be->ops->free(be->ctx, dx);
    if (dy) be->ops->free(be->ctx, dy);
    free(hx); free(hy); free(hlogits); free(idx);
    return st;
}

/* ---- the single-device trainer as a one-device experiment ----------------------------------- */

/* The trainer's base (docs/training.md): one device in ddp mode, fed by a replay as fast as it
 * takes samples (the buffer applies backpressure: nothing is dropped), under the real clock; the
 * Fashion-MNIST CNN's recipe (lr 0.02, cosine, momentum 0.9, weight decay 5e-4, augmentation);
 * no target, no time budget: the run is max_steps long. */
static const char *const BASE[] = {
    "name=train", "description=single-device training (scadles-train without --config)", "modes=ddp",
    "devices.rates=1000000000", "clock=real", "backend=local", "buffer.policy=persistence", "buffer.full=backpressure",
    "optimizer.lr=0.02", "optimizer.schedule=cosine", "optimizer.momentum=0.9", "optimizer.weight_decay=5e-4",
    "augment=true", "eval_every_s=1e9", "time_budget_s=1e9", "target_accuracy=0", "seeds=1", "out_dir=runs/train",
    "bn=local", "ddp_timeout_s=600"};

static sd_status set_key(sd_experiment *e, const char *key, const char *value, const char *flag) {
    char buf[1200];
    if (snprintf(buf, sizeof buf, "%s=%s", key, value) >= (int)sizeof buf)
        return SD_FAIL(SD_ERR_INVALID, "%s: the value is longer than %zu characters", flag, sizeof buf - 100);
    if (sd_experiment_set(e, buf) != SD_OK) {
        char why[800];
        const char *brief = sd_last_error_brief();
        snprintf(why, sizeof why, "%s", strncmp(brief, "--set: ", 7) ? brief : brief + 7); /* the flag says it */
        return SD_FAIL(SD_ERR_INVALID, "%s %s: %s", flag, value, why);
    }
    return SD_OK;
}

/* Training steps of one pass over the (train_limit'ed) training set: the partial last batch is
 * dropped, as DataLoader(drop_last=True). Opens the training set to count it. */
static sd_status steps_per_epoch(const sd_experiment *e, int64_t *out) {
    sd_dataset d = {0};
    TRY(sd_dataset_open(e->dataset, e->data_root[0] ? e->data_root : NULL, true, &d));
    int64_t n = e->train_limit > 0 && e->train_limit < d.n ? e->train_limit : d.n;
    sd_dataset_free(&d);
    if (n / e->batch <= 0)
        return SD_FAIL(SD_ERR_INVALID, "train: %lld training samples are fewer than one batch of %d; lower --batch",
                       (long long)n, e->batch);
    *out = n / e->batch;
    return SD_OK;
}

static const sd_train_option *find_opt(const sd_train_request *rq, const char *key) {
    const sd_train_option *last = NULL;
    for (int i = 0; i < rq->nopts; i++)
        if (!strcmp(rq->opts[i].key, key)) last = &rq->opts[i];
    return last;
}

/* A new run: the base, the options, then what follows from them. */
static sd_status new_experiment(const sd_train_request *rq, sd_experiment *e) {
    sd_experiment_defaults(e);
    for (size_t i = 0; i < sizeof BASE / sizeof BASE[0]; i++) TRY(sd_experiment_set(e, BASE[i]));
    double epochs = 5;
    for (int i = 0; i < rq->nopts; i++) {
        const sd_train_option *o = &rq->opts[i];
        if (strcmp(o->key, "epochs")) {
            TRY(set_key(e, o->key, o->value, o->flag));
            continue;
        }
        char *end = NULL;
        epochs = strtod(o->value, &end);
        if (!*o->value || *end || !(epochs >= 1 && epochs <= 1e6 && epochs == floor(epochs)))
            return SD_FAIL(SD_ERR_INVALID, "%s needs a whole number of epochs in [1, 1e6], got '%s'", o->flag, o->value);
    }
    if (find_opt(rq, "max_steps") && find_opt(rq, "epochs"))
        return SD_FAIL(SD_ERR_INVALID, "%s and %s both say how long to train; give one of them",
                       find_opt(rq, "epochs")->flag, find_opt(rq, "max_steps")->flag);
    const bool steps_given = find_opt(rq, "max_steps"), eval_given = find_opt(rq, "eval_every_steps");
    int64_t per_epoch = 0; /* counting opens the training set: only when needed */
    if (!steps_given || !eval_given) TRY(steps_per_epoch(e, &per_epoch));
    if (!steps_given) e->max_steps = (int64_t)epochs * per_epoch;
    if (!eval_given) e->eval_every_steps = per_epoch; /* an evaluation per epoch */
    e->buffer.capacity = e->batch * 2 > 4096 ? e->batch * 2 : 4096;
    return sd_experiment_resolve(e);
}

/* Two experiments are the same run when their checkpoint identities are (kernel threads may differ). */
static sd_status same_run(const sd_experiment *a, const sd_experiment *b, bool *same) {
    char *ja = NULL, *jb = NULL;
    sd_status s = sd_dist_ckpt_experiment_json(a, &ja);
    if (s == SD_OK) s = sd_dist_ckpt_experiment_json(b, &jb);
    *same = s == SD_OK && !strcmp(ja, jb);
    free(ja);
    free(jb);
    return s;
}

/* A resumed run: its own config.json; an option may only repeat what it holds (or set threads). */
static sd_status resumed_experiment(const sd_train_request *rq, sd_experiment *e) {
    if (!rq->resume[0]) return SD_FAIL(SD_ERR_INVALID, "--resume needs the run directory (the --out of the run to continue)");
    char path[SD_EXP_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/config.json", rq->resume);
    if (access(path, R_OK) != 0)
        return SD_FAIL(SD_ERR_IO, "--resume %s: %s is missing (%s); give the --out directory of the run to continue",
                       rq->resume, path, strerror(errno));
    TRY(sd_experiment_load_file(path, e));
    TRY(sd_experiment_resolve(e));
    char here[PATH_MAX], there[PATH_MAX];
    if (!realpath(rq->resume, here) || !realpath(e->out_dir, there) || strcmp(here, there))
        return SD_FAIL(SD_ERR_INVALID, "--resume %s: that run was started with out_dir '%s', which is not this folder "
                       "from here; resume from the directory it was started in", rq->resume, e->out_dir);
    sd_experiment *t = malloc(sizeof *t);
    if (!t) return SD_FAIL(SD_ERR_OOM, "train: experiment copy");
    sd_status s = SD_OK;
    for (int i = 0; i < rq->nopts && s == SD_OK; i++) {
        const sd_train_option *o = &rq->opts[i];
        *t = *e;
        if (!strcmp(o->key, "epochs")) {
            int64_t per_epoch = 0;
            char steps[64];
            s = steps_per_epoch(e, &per_epoch);
            snprintf(steps, sizeof steps, "%.0f", strtod(o->value, NULL) * (double)per_epoch);
            if (s == SD_OK) s = set_key(t, "max_steps", steps, o->flag);
        } else {
            s = set_key(t, o->key, o->value, o->flag);
        }
        if (s == SD_OK) s = sd_experiment_resolve(t);
        bool same = false;
        if (s == SD_OK) s = same_run(e, t, &same);
        if (s == SD_OK && !same)
            s = SD_FAIL(SD_ERR_INVALID, "--resume %s: %s %s would change %s, but a resumed run keeps the configuration "
                        "it was started with (%s); drop %s, or start a new run with another --out", rq->resume, o->flag,
                        o->value, !strcmp(o->key, "epochs") ? "max_steps" : o->key, path, o->flag);
        if (s == SD_OK && !strcmp(o->key, "threads")) e->threads = t->threads;
    }
    free(t);
    return s;
}

sd_status sd_train_experiment(const sd_train_request *rq, sd_experiment *e) {
    if (!rq || !e || (rq->nopts > 0 && !rq->opts)) return SD_FAIL(SD_ERR_INVALID, "train: no request");
    for (int i = 0; i < rq->nopts; i++)
        if (!rq->opts[i].flag || !rq->opts[i].key || !rq->opts[i].value)
            return SD_FAIL(SD_ERR_INVALID, "train: option %d lacks its flag, key or value", i);
    return rq->resume ? resumed_experiment(rq, e) : new_experiment(rq, e);
}

sd_status sd_train_run(const sd_train_request *rq, sd_experiment *e, sd_run_control *ctl) {
    TRY(sd_train_experiment(rq, e));
    char ckpt[SD_EXP_PATH_LEN + 16];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint", e->out_dir);
    *ctl = (sd_run_control){.resume_dir = rq->resume ? ckpt : NULL, .stop_at = rq->stop_at,
                            .stop_flag = rq->stop_flag, .quiet = rq->quiet, .eval_log = rq->log};
    if (rq->log) {
        fprintf(rq->log, "train: %s (width %g) on %s, batch %d, %lld steps (evaluation every %lld), lr %g %s, "
                "momentum %g, weight decay %g%s, seed %llu, %s; outputs in %s/ddp-seed%llu%s\n", e->model,
                e->width, e->dataset, e->batch, (long long)e->max_steps, (long long)e->eval_every_steps,
                e->optimizer.lr, e->optimizer.schedule, e->optimizer.momentum, e->optimizer.weight_decay,
                e->augment ? ", augmented" : "", (unsigned long long)e->seeds[0],
                e->compute_backend == SD_EXP_COMPUTE_CUDA ? "cuda" : "cpu", e->out_dir,
                (unsigned long long)e->seeds[0], rq->resume ? " (resumed)" : "");
        fflush(rq->log);
    }
    TRY(sd_experiment_run_ctl(e, NULL, NULL, ctl));
    return SD_OK;
}
