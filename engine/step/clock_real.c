/* clock_real.c: the real clock (clock.h). Time is the wall clock since the run began (a resumed run
 * goes on from the checkpoint's time): an ingest thread feeds each device's ring from its source,
 * ddp waits for b samples and scadles sleeps to the end of its window, compute and communication
 * are measured, and the ranks agree on the latest clock reading. */
#include <math.h>

#include "base/clock.h"
#include "engine/step/clock.h"
#include "engine/trace.h"

static double max_d(double a, double b) { return a > b ? a : b; }

static sd_status r_start(sd_pipe *p) {
    p->origin = p->inv0 - p->ls.T; /* clock time goes on from T */
    return sd_dev_stream_start(p);
}

static double r_now(const sd_pipe *p) { return sd_clock_now() - p->origin; }

/* A live stream whose ingest thread ended or failed: this device reports it in its record. */
static bool stream_dead(const sd_dev *d) {
    if (!d->ingest) return false;
    sd_ingest_stats is;
    sd_ingest_get_stats(d->ingest, &is);
    return is.failed || is.ended || !is.running;
}

static sd_status r_cut(sd_pipe *p, sd_step *s) {
    const sd_experiment *e = p->e;
    const double T = p->ls.T;
    if (p->ddp) {
        TRY(sd_ring_take_exactly(p->d.ring, (size_t)e->batch, e->ddp_timeout_s, &p->rb, &s->taken));
    } else {
        sd_clock_sleep_until(p->origin + max_d(T, p->ls.last_cut + e->window_s));
        TRY(sd_ring_take_upto(p->d.ring, (size_t)e->cap, &p->rb, &s->taken));
    }
    s->mine.t_ready = r_now(p);
    s->mine.batch = (int32_t)s->taken;
    if (p->d.src.ops && !p->d.src.ops->save && stream_dead(&p->d)) s->mine.stop = STOP_STREAM_DEAD;
    TRY(sd_share_records(p, &s->mine));
    for (int j = 0; j < p->n; j++)
        if (p->all[j].stop == STOP_STREAM_DEAD) return sd_stream_dead(p, j);
    s->T_cut = T;
    for (int j = 0; j < p->n; j++) s->T_cut = max_d(s->T_cut, p->all[j].t_ready);
    if (p->ddp)
        for (int j = 0; j < p->n; j++)
            if (p->all[j].batch < e->batch)
                return SD_FAIL(SD_ERR_RUNTIME, "ddp: device %d's stream stalled: fewer than %d samples arrived within "
                               "ddp_timeout_s %.1f; check the device's stream", j, e->batch, e->ddp_timeout_s);
    if (s->T_cut > e->time_budget_s) {
        s->end = true;
        return SD_OK;
    }
    p->ls.last_cut = s->T_cut;
    return SD_OK; /* (next_arrival stays 0: the ingest thread owns the source) */
}

/* Nothing arrived anywhere: the next window. */
static void r_idle(sd_pipe *p, sd_step *s) { p->ls.T = s->T_cut; }

static sd_status r_charge_compute(sd_pipe *p, sd_step *s) {
    if (p->d.cuda) TRY(p->d.be.ops->synchronize(p->d.be.ctx)); /* measured compute ends with the backward */
    s->w_train1 = sd_clock_now();
    s->compute = s->w_train1 - s->w_train0;
    return SD_OK;
}

static void r_charge_comm(sd_pipe *p, sd_step *s) {
    (void)p;
    s->comm_s = s->w_exch1 - s->w_train1;
}

static sd_status r_end_step(sd_pipe *p, sd_step *s) {
    double tt[1] = {r_now(p)};
    TRY(sd_comm_broadcast(p->comm, tt, sizeof tt, 0)); /* agree on the latest clock reading */
    s->T_end = tt[0];
    return SD_OK;
}

static void r_trace_wait(const sd_pipe *p, const sd_step *s) {
    sd_trace_phase_slice(p, SD_TRACE_STREAM_WAIT, s->w_iter - p->origin, s->w_cut - s->w_iter);
}

/* Measured on this device, seconds since the run began. */
static void r_trace_step(const sd_pipe *p, const sd_step *s) {
    const double o = p->origin;
    sd_trace_phase_slice(p, SD_TRACE_BATCH_ASSEMBLY, s->w_cut - o, s->w_up - s->w_cut);
    sd_trace_phase_slice(p, SD_TRACE_FORWARD, s->w_up - o, s->w_fwd - s->w_up);
    sd_trace_phase_slice(p, SD_TRACE_BACKWARD, s->w_fwd - o, s->w_train1 - s->w_fwd);
    sd_trace_phase_slice(p, SD_TRACE_COMMUNICATION, s->w_train1 - o, s->w_red - s->w_train1);
    sd_trace_phase_slice(p, SD_TRACE_OPTIMIZER, s->w_red - o, s->w_opt - s->w_red);
}

static void r_trace_eval(const sd_pipe *p, double w0, double w1, double top1) {
    (void)top1;
    sd_trace_phase_slice(p, SD_TRACE_EVALUATION, w0 - p->origin, w1 - w0);
}

static const sd_clock_ops real_ops = {.name = "real",
                                      .start = r_start,
                                      .now = r_now,
                                      .cut = r_cut,
                                      .idle = r_idle,
                                      .charge_compute = r_charge_compute,
                                      .charge_comm = r_charge_comm,
                                      .end_step = r_end_step,
                                      .trace_wait = r_trace_wait,
                                      .trace_step = r_trace_step,
                                      .trace_eval = r_trace_eval};
static const sd_clock real_clock = {&real_ops};

const sd_clock *sd_clock_real(void) { return &real_clock; }
