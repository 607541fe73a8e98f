/* exchange.c: stage "exchange gradients". Dense: the gradient block is summed over the devices in
 * one allreduce (NCCL in GPU memory with collectives nccl, else over the run's communicator). With
 * compression on: Top-k + error feedback per device, switched by the policy (comm/compress.h), the
 * sum of what every device sent (with collectives nccl the compressor runs on the GPU and gathers
 * over NCCL: nothing of the gradient crosses to the host). The modelled time of what went on the wire is left for the clock,
 * which charges it (virtual) or the measured time (real). Also the compressor's construction from
 * the experiment. */
#include <math.h>
#include <stdlib.h>

#include "base/clock.h"
#include "comm/cost.h"
#include "engine/step/clock.h"

/* The experiment's "compression" section as the compressor's configuration. */
static void compress_config(const sd_experiment *e, sd_compress_config *c) {
    sd_compress_config_default(c);
    c->policy = e->compression.policy;
    c->ratio = e->compression.ratio;
    c->delta = e->compression.delta;
    c->per_layer = e->compression.per_layer;
    c->min_ratio = e->compression.min_ratio;
    c->max_ratio = e->compression.max_ratio;
    c->epsilon = e->compression.epsilon;
    c->f16_values = e->compression.f16_values;
    c->exchange = e->compression.exchange;
    /* auto models the slowest link of the run, as the virtual clock charges it */
    c->link_bandwidth_bps = INFINITY;
    c->link_latency_s = 0;
    for (int j = 0; j < e->devices.count; j++) {
        if (e->devices.dev[j].profile.bandwidth_bps < c->link_bandwidth_bps)
            c->link_bandwidth_bps = e->devices.dev[j].profile.bandwidth_bps;
        if (e->devices.dev[j].profile.latency_s > c->link_latency_s) c->link_latency_s = e->devices.dev[j].profile.latency_s;
    }
    c->momentum = e->compression.momentum_correction && e->compression.policy != SD_COMPRESS_OFF
                      ? e->optimizer.momentum : 0.0;
}

/* A compressor whose layers are the network's trainable tensors: on `be` (compute_backend cuda with
 * collectives nccl: the device's GPU, where the gradient is), or, NULL, on a CPU backend of its own
 * (the gradient's host view). */
sd_status sd_compressor_for(const sd_experiment *e, const sd_net *net, const sd_backend *be, int threads,
                            sd_compressor **out) {
    sd_compress_config c;
    compress_config(e, &c);
    const int nl = sd_net_trainable_layout(net, NULL, NULL, 0);
    size_t *off = malloc(sizeof(size_t) * (size_t)(nl > 0 ? nl : 1)), *cnt = malloc(sizeof(size_t) * (size_t)(nl > 0 ? nl : 1));
    sd_status s = off && cnt ? SD_OK : SD_FAIL(SD_ERR_OOM, "compressor: %d tensors", nl);
    if (s == SD_OK) {
        sd_net_trainable_layout(net, off, cnt, nl);
        s = sd_compressor_create_on(&c, sd_net_param_count(net), nl, off, cnt, be, threads, out);
    }
    free(off);
    free(cnt);
    return s;
}

/* Top-k + error feedback, switched by the policy; the sum of what every rank sent. */
static sd_status compressed(sd_pipe *p, sd_step *s) {
    sd_dev *d = &p->d;
    const sd_experiment *e = p->e;
    if (sd_momentum_corrected(e) && e->optimizer.weight_decay != 0 && s->mine.batch > 0) {
        /* this device's share b_i / B of the weight decay joins its gradient (and the velocity):
         * the shares sum to weight_decay x w, as the optimizer would add */
        const float wd = (float)(e->optimizer.weight_decay * (double)s->mine.batch / (double)s->B);
        TRY(d->be.ops->axpy(d->be.ctx, p->np, wd, sd_net_params(d->net), sd_net_grads(d->net)));
    }
    if (e->compression.time_aware) /* compressing pays only if a dense step would overrun its window;
                                     * the modelled compute is the max over devices: the same on every rank */
        sd_compressor_set_eligible(d->compressor, p->ddp || s->modelled_compute + p->dense_comm_s > e->window_s);
    if (d->gcomm) { /* the compressor is on the GPU: gradient, pairs and the gather stay in GPU memory (NCCL) */
        TRY(sd_compress_exchange_on(d->compressor, p->comm, d->gcomm, sd_net_grads(d->net), &s->cs));
    } else {        /* a compressor on the host: it works on a host view of the gradient */
        float *hg = NULL;
        TRY(sd_dev_host_view(d, sd_net_grads(d->net), p->np, &hg));
        TRY(sd_compress_exchange(d->compressor, p->comm, hg, &s->cs));
        TRY(sd_dev_host_view_back(d, sd_net_grads(d->net), hg, p->np));
    }
    s->modelled_comm = sd_compress_step_time(&s->cs, p->n, p->min_bw, p->max_lat);
    s->modelled_comm_lat = sd_compress_step_time(&s->cs, p->n, INFINITY, p->max_lat);
    return SD_OK;
}

sd_status stage_exchange(sd_pipe *p, sd_step *s) {
    sd_dev *d = &p->d;
    s->modelled_comm = p->dense_comm_s;
    s->modelled_comm_lat = p->dense_comm_lat_s;
    const uint64_t before = sd_dev_wire_bytes(p->comm, d);
    if (d->compressor) TRY(compressed(p, s));
    else TRY(sd_dev_sum(d, p->comm, sd_net_grads(d->net), p->np));
    s->step_bytes = sd_dev_wire_bytes(p->comm, d) - before;
    s->w_exch1 = sd_clock_now();
    p->clock->ops->charge_comm(p, s);
    return SD_OK;
}
