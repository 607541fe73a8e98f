/* update.c: stage "apply the update". The devices sum their weighted losses and their prequential
 * scores (each stream sample scored by the model before it trains on it) in one small allreduce;
 * a non-finite loss or summed gradient stops the run or skips the update (nonfinite: stop | skip),
 * every rank deciding alike; otherwise SGD steps with the mode's learning-rate scale (scadles:
 * lr x sum(b) / (N x b_ref), ddp: lr). The clock then ends the step. */
#include <math.h>
#include <string.h>

#include "base/clock.h"
#include "engine/step/clock.h"

/* Stream samples (the first n of the batch) whose label has the highest logit (ties: the label
 * loses only to a strictly higher logit, as in sd_evaluate). */
static int count_correct(const float *logits, const int32_t *labels, int n, int classes) {
    int c = 0;
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * classes;
        int above = 0;
        for (int j = 0; j < classes; j++) above += l[j] > l[labels[i]];
        c += above == 0;
    }
    return c;
}

/* The run stops on a non-finite loss or gradient: say where it came from (#20 item 6). Every rank
 * is here (the decision is collective). Inputs cannot be the cause (streams carry u8 samples,
 * normalised here). The parameters may already be non-finite (an update overflowed them: every
 * replica is the same, so rank 0's check speaks for all); on the first step after a resume the
 * loaded weights (finite, as the resume checks, but too large) produce it; otherwise the step
 * itself diverged. The step number is metrics.jsonl's. */
static sd_status nonfinite_stop(sd_pipe *p, const sd_step *s) {
    sd_dev *d = &p->d;
    const sd_experiment *e = p->e;
    const long long step = (long long)p->ls.step + 1;
    bool params = true;
    TRY(d->be.ops->all_finite(d->be.ctx, p->np, sd_net_params(d->net), &params));
    uint8_t bad = params ? 0 : 1;
    TRY(sd_comm_broadcast(p->comm, &bad, 1, 0));
    if (bad)
        return SD_FAIL(SD_ERR_NUMERIC, "step %lld: the model's parameters are already not finite: an earlier update "
                       "overflowed them (finite gradients times optimizer.lr %g); lower optimizer.lr or set nonfinite "
                       "to \"skip\"", step, e->optimizer.lr);
    if (p->in->resume_dir && p->ls.step == p->step0)
        return SD_FAIL(SD_ERR_NUMERIC, "step %lld, the first after resuming from %s: the loss (%g) or the summed "
                       "gradient is not finite with the loaded weights, before this invocation trained at all: the "
                       "checkpoint's weights produce it (they are finite, but check how they were made); resume from "
                       "an earlier checkpoint", step, p->in->resume_dir, (double)s->global_loss);
    return SD_FAIL(SD_ERR_NUMERIC, "step %lld: the loss (%g) or the summed gradient is not finite: the training "
                   "diverged at this step (inputs and parameters were finite); lower optimizer.lr (%g) or set "
                   "nonfinite to \"skip\"", step, (double)s->global_loss, e->optimizer.lr);
}

sd_status stage_update(sd_pipe *p, sd_step *s) {
    sd_dev *d = &p->d;
    const sd_experiment *e = p->e;
    int correct = 0;
    if (s->mine.stream_batch > 0) {
        TRY(d->be.ops->download(d->be.ctx, d->hlogits, sd_net_output(d->net),
                                (size_t)s->mine.stream_batch * p->classes * sizeof(float)));
        correct = count_correct(d->hlogits, d->hy, s->mine.stream_batch, p->classes);
    }
    float *red = p->red;
    memset(red, 0, ((size_t)p->n + 1) * sizeof *red);
    red[0] = s->loss * (float)s->mine.batch / (float)s->B;
    red[1 + p->rank] = (float)correct;
    TRY(sd_comm_allreduce_sum(p->comm, red, (size_t)p->n + 1));
    s->w_red = sd_clock_now();
    s->global_loss = red[0];
    int slot = (int)(p->ls.step % SD_PREQ_WINDOW);
    for (int j = 0; j < p->n; j++) {
        p->preq->correct[slot][j] = red[1 + j];
        p->preq->seen[slot][j] = (float)p->all[j].stream_batch;
    }
    /* lr scales with the samples that streamed in; injected copies raise the batch's
     * diversity, not the step size; optimizer.lr_scale_max caps the scale (fast streams whose
     * global batch would scale the lr past what the model trains at) */
    double scale = (double)s->Bstream / ((double)p->n * e->batch);
    if (e->optimizer.lr_scale_max > 0 && scale > e->optimizer.lr_scale_max) scale = e->optimizer.lr_scale_max;
    s->lr_scale = p->ddp ? 1.0f : (float)scale;
    /* NaN/Inf: every rank holds the same summed gradient and loss, so all decide alike */
    bool finite = isfinite(s->global_loss);
    if (finite) TRY(d->be.ops->all_finite(d->be.ctx, p->np, sd_net_grads(d->net), &finite)); /* where the sum lives */
    if (!finite && e->nonfinite == SD_EXP_NONFINITE_STOP) return nonfinite_stop(p, s);
    if (finite) TRY(sd_optim_step(&d->opt, d->net, s->lr_scale));
    else p->sum->skipped_steps++;
    s->w_opt = sd_clock_now();
    p->ls.step++;
    return p->clock->ops->end_step(p, s);
}
