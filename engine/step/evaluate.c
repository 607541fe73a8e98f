/* evaluate.c: stage "evaluate". Every eval_every_s clock seconds, every eval_every_steps steps when
 * set, and after the last step: with bn average the devices first average their BN running
 * statistics; rank 0 scores the test set and writes eval.jsonl (top-1, top-5, test loss,
 * prequential accuracy per device) and eval.dat (and a line to the run's eval log, the single-device
 * trainer's stdout); every rank learns the accuracy. Reaching the target accuracy (when there is
 * one) ends the run: the comparison is time to target. The clock places the evaluation on the
 * timeline. */
#include "base/clock.h"
#include "engine/step/clock.h"
#include "engine/train.h"

/* eval.jsonl's line: the test scores and the prequential accuracy over the last SD_PREQ_WINDOW steps. */
static void eval_line(sd_pipe *p, const sd_eval_result *r) {
    sd_outputs *o = &p->out;
    char tl[32];
    sd_json_num(tl, sizeof tl, r->loss);
    sd_outputs_printf(o, OUT_EVAL, "{\"step\": %lld, \"time\": %.6f, \"top1\": %.6f, \"top5\": %.6f, \"test_loss\": %s, "
                                   "\"samples_trained\": %llu, \"prequential_dev\": [",
                      (long long)p->ls.step, p->ls.T, r->top1, r->top5, tl, (unsigned long long)p->sum->samples_trained);
    double pc = 0, ps = 0;
    for (int j = 0; j < p->n; j++) {
        double c = 0, sn = 0;
        for (int w = 0; w < SD_PREQ_WINDOW; w++) {
            c += p->preq->correct[w][j];
            sn += p->preq->seen[w][j];
        }
        pc += c;
        ps += sn;
        sd_outputs_printf(o, OUT_EVAL, "%s%.6f", j ? ", " : "", sn > 0 ? c / sn : 0.0);
    }
    sd_outputs_printf(o, OUT_EVAL, "], \"prequential\": %.6f, \"prequential_window_steps\": %d}\n", ps > 0 ? pc / ps : 0.0,
                      SD_PREQ_WINDOW);
    sd_outputs_printf(o, OUT_EVAL_DAT, "%.6f %.6f\n", p->ls.T, r->top1);
}

static sd_status evaluate(sd_pipe *p) {
    const sd_experiment *e = p->e;
    sd_dev *d = &p->d;
    const double w0 = sd_clock_now();
    while (p->ls.next_eval <= p->ls.T) p->ls.next_eval += e->eval_every_s;
    if (e->bn == SD_EXP_BN_AVERAGE && sd_net_buffer_count(d->net) > 0) {
        size_t nb = sd_net_buffer_count(d->net);
        TRY(sd_dev_sum(d, p->comm, sd_net_buffers(d->net), nb));
        TRY(d->be.ops->scale(d->be.ctx, nb, 1.0f / (float)p->n, sd_net_buffers(d->net)));
    }
    double acc[2] = {0, 0}; /* top-1, test loss */
    if (p->rank == 0) {
        sd_eval_result r;
        sd_augment ta;
        TRY(sd_augment_default(p->in->test, false, &ta));
        TRY(sd_evaluate(d->net, p->in->test, &ta, e->eval_batch, &r));
        acc[0] = r.top1;
        acc[1] = r.loss;
        p->sum->final_top5 = r.top5; /* rank 0's summary: the final line of the single-device trainer */
        eval_line(p, &r);
        if (p->in->eval_log) {
            fprintf(p->in->eval_log, "%sstep %lld | clock %.1f s | %llu samples trained | test loss %.4f | top-1 %.2f%% | "
                    "top-5 %.2f%%\n", p->in->quiet ? "" : "\n", (long long)p->ls.step, p->ls.T,
                    (unsigned long long)p->sum->samples_trained, r.loss, 100 * r.top1, 100 * r.top5);
            fflush(p->in->eval_log);
        }
        TRY(sd_outputs_flush(&p->out, NULL));
        p->ls.last_top1 = r.top1;
    }
    TRY(sd_comm_broadcast(p->comm, acc, sizeof acc, 0));
    p->clock->ops->trace_eval(p, w0, sd_clock_now(), acc[0]);
    sd_run_summary *out = p->sum;
    out->final_accuracy = acc[0];
    out->final_loss = acc[1];
    if (acc[0] > out->best_accuracy) out->best_accuracy = acc[0];
    if (e->target_accuracy > 0 && acc[0] >= e->target_accuracy && out->time_to_target_s < 0) {
        out->time_to_target_s = p->ls.T;
        p->stop = true; /* the comparison is time to target: stop there */
    }
    return SD_OK;
}

sd_status stage_evaluate(sd_pipe *p, sd_step *s) {
    (void)s;
    const sd_experiment *e = p->e;
    const bool last = (e->max_steps > 0 && p->ls.step >= e->max_steps) || p->ls.T >= e->time_budget_s;
    const bool by_steps = e->eval_every_steps > 0 && p->ls.step % e->eval_every_steps == 0;
    if (p->ls.T >= p->ls.next_eval || by_steps || last) TRY(evaluate(p));
    const sd_backend *be = &p->d.be; /* the next step's transfers count from here (record.c) */
    if (be->ops->transfers) be->ops->transfers(be->ctx, &p->xfer0);
    if (last) p->stop = true;
    return SD_OK;
}
