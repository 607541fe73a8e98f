/* clock_virtual.c: the virtual clock (clock.h). Time is what the model says: the stream arrivals of
 * each source's rate model, delivered by the clock as it advances; compute from the device
 * profiles (the slowest device sets the step); communication from the bytes of the exchange over
 * the slowest link. Deterministic: a run on the local backend is bitwise reproducible. */
#include <math.h>

#include "base/clock.h"
#include "comm/shaper.h"
#include "engine/profile.h"
#include "engine/step/clock.h"
#include "engine/trace.h"

static double max_d(double a, double b) { return a > b ? a : b; }

static sd_status v_start(sd_pipe *p) {
    const sd_source *src = &p->d.src;
    if (p->rank == 0) /* evaluation is not charged: it gets a track of its own (v_trace_eval) */
        (void)sd_trace_meta(p->in->trace, p->in->trace_pid, p->n, "Evaluation (wall seconds, off the virtual clock)");
    if (!src->ops->advance_to || !src->ops->next_time)
        return SD_FAIL(SD_ERR_INVALID, "stream.source %s needs clock \"real\" (a live stream cannot be played in "
                       "virtual time); set clock to real", sd_source_kind_name(p->e->stream.source));
    return SD_OK;
}

static double v_now(const sd_pipe *p) { return p->ls.T; }

static sd_status advance_to(sd_pipe *p, double t) {
    const sd_source *src = &p->d.src;
    return src->ops->advance_to(src->ctx, t, &p->d.sink);
}

/* ddp: the time this device's buffer first holds b samples, delivering arrivals up to it. */
static sd_status ready_time(sd_pipe *p, double now, int b, double *t_ready) {
    const sd_source *src = &p->d.src;
    TRY(advance_to(p, now));
    double t = now;
    while (sd_ring_size(p->d.ring) < (size_t)b) {
        double next = src->ops->next_time(src->ctx);
        if (!isfinite(next)) {
            *t_ready = INFINITY;
            return SD_OK;
        }
        TRY(advance_to(p, next));
        t = next;
    }
    *t_ready = t;
    return SD_OK;
}

static sd_status v_cut(sd_pipe *p, sd_step *s) {
    const sd_experiment *e = p->e;
    const double T = p->ls.T;
    if (p->ddp) { /* the slowest device's b-th sample sets the cut: the devices agree on it */
        TRY(ready_time(p, T, e->batch, &s->mine.t_ready));
        TRY(sd_share_records(p, &s->mine));
        s->T_cut = T;
        int slowest = 0;
        for (int j = 0; j < p->n; j++)
            if (p->all[j].t_ready > s->T_cut) {
                s->T_cut = p->all[j].t_ready;
                slowest = j;
            }
        if (s->T_cut - T > e->ddp_timeout_s)
            return SD_FAIL(SD_ERR_RUNTIME, "ddp: device %d's stream stalled: its batch of %d would be ready at %.1f s, "
                           "%.1f s after the step began (ddp_timeout_s %.1f); check the device's stream rate",
                           slowest, e->batch, p->all[slowest].t_ready, p->all[slowest].t_ready - T, e->ddp_timeout_s);
    } else { /* the end of the window: the same on every device */
        s->T_cut = max_d(T, p->ls.last_cut + e->window_s);
    }
    if (s->T_cut > e->time_budget_s) {
        s->end = true;
        return SD_OK;
    }
    TRY(advance_to(p, s->T_cut));
    p->ls.last_cut = s->T_cut;
    TRY(sd_ring_take_upto(p->d.ring, p->ddp ? (size_t)e->batch : (size_t)e->cap, &p->rb, &s->taken));
    s->mine.next_arrival = p->d.src.ops->next_time(p->d.src.ctx);
    return SD_OK;
}

/* Nothing arrived anywhere: time moves to the next arrival. */
static void v_idle(sd_pipe *p, sd_step *s) {
    if (!isfinite(s->next_any)) s->end = true;
    else p->ls.T = max_d(s->T_cut, s->next_any);
}

static sd_status v_charge_compute(sd_pipe *p, sd_step *s) {
    (void)p;
    s->compute = s->modelled_compute;
    return SD_OK;
}

/* The exchange's modelled time; with link_emulation token_bucket the slowest link is a token bucket
 * (as tc's tbf and comm/shaper.h): its tokens, counted in seconds of the link, refill one second per
 * second while the link is idle, up to link_burst_bytes; the bandwidth part of the exchange is paid
 * from them first, and only what they lack takes time. The hops' latency is always paid. */
static void v_charge_comm(sd_pipe *p, sd_step *s) {
    if (p->link_burst_s <= 0) {
        s->comm_s = s->modelled_comm;
        return;
    }
    const double start = s->T_cut + s->compute;
    const double bw = max_d(0, s->modelled_comm - s->modelled_comm_lat);
    s->comm_s = s->modelled_comm_lat + sd_token_bucket_take(&p->ls.link_credit_s, p->link_burst_s, 1.0,
                                                            start - p->ls.link_free_at, bw);
    p->ls.link_free_at = start + s->comm_s;
}

static sd_status v_end_step(sd_pipe *p, sd_step *s) {
    (void)p;
    s->T_end = s->T_cut + s->compute + s->comm_s;
    return SD_OK;
}

static void v_trace_wait(const sd_pipe *p, const sd_step *s) {
    sd_trace_phase_slice(p, SD_TRACE_STREAM_WAIT, p->ls.T, s->T_cut - p->ls.T);
}

/* This device's modelled compute, split by the measured wall shares of its phases; the exchange
 * follows the slowest device's compute; the optimizer ends the step. */
static void v_trace_step(const sd_pipe *p, const sd_step *s) {
    double w_asm = s->w_up - s->w_cut, w_fwd = s->w_fwd - s->w_up, w_bwd = s->w_train1 - s->w_fwd,
           w_opt = s->w_opt - s->w_red;
    double w_all = w_asm + w_fwd + w_bwd + w_opt;
    double c = sd_compute_time(&p->compute[p->rank], s->mine.batch);
    double k = w_all > 0 ? c / w_all : 0, opt = w_opt * k, t0 = s->T_cut;
    if (w_all <= 0) { /* nothing measured: all of it is assembly */
        w_asm = 1;
        k = c;
    }
    sd_trace_phase_slice(p, SD_TRACE_BATCH_ASSEMBLY, t0, w_asm * k);
    t0 += w_asm * k;
    sd_trace_phase_slice(p, SD_TRACE_FORWARD, t0, w_fwd * k);
    t0 += w_fwd * k;
    sd_trace_phase_slice(p, SD_TRACE_BACKWARD, t0, w_bwd * k);
    sd_trace_phase_slice(p, SD_TRACE_COMMUNICATION, s->T_cut + s->compute - opt, s->comm_s);
    sd_trace_phase_slice(p, SD_TRACE_OPTIMIZER, s->T_end - opt, opt);
}

/* The virtual clock does not charge evaluation: rank 0 draws it on a track of its own, in wall seconds. */
static void v_trace_eval(const sd_pipe *p, double w0, double w1, double top1) {
    if (p->rank != 0) return;
    sd_trace_arg ea[2] = {{"top1", top1}, {"wall_s", w1 - w0}};
    (void)sd_trace_complete_args(p->in->trace, p->in->trace_pid, p->n, sd_trace_phase_name(SD_TRACE_EVALUATION), "eval",
                                 p->ls.T, w1 - w0, ea, 2);
}

static const sd_clock_ops virtual_ops = {.name = "virtual",
                                         .start = v_start,
                                         .now = v_now,
                                         .cut = v_cut,
                                         .idle = v_idle,
                                         .charge_compute = v_charge_compute,
                                         .charge_comm = v_charge_comm,
                                         .end_step = v_end_step,
                                         .trace_wait = v_trace_wait,
                                         .trace_step = v_trace_step,
                                         .trace_eval = v_trace_eval};
static const sd_clock virtual_clock = {&virtual_ops};

const sd_clock *sd_clock_virtual(void) { return &virtual_clock; }

void sd_trace_phase_slice(const sd_pipe *p, sd_trace_phase ph, double t0, double dur) {
    (void)sd_trace_complete(p->in->trace, p->in->trace_pid, p->rank, sd_trace_phase_name(ph), "step", t0,
                            dur > 0 ? dur : 0);
}
