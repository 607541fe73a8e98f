/* run.c: one device's run as a loop over the stages of engine/step/ (pipeline.h lists them). Every
 * rank runs the same loop; all collectives are called by every rank in the same order. The loop
 * itself is the few lines of device_loop; the rest sets the run up (device, clock, outputs,
 * restore) and finishes it (BN agreement, totals, the final weights). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "comm/cost.h"
#include "comm/comm_tcp.h"
#include "comm/shaper.h"
#include "engine/checkpoint.h"
#include "engine/step/clock.h"

static sd_status device_loop(sd_pipe *p) {
    for (;;) {
        bool stopped = false;
        TRY(stage_stop(p, &stopped)); /* a stop request or stop_at: checkpoint, then end */
        if (stopped) return SD_OK;
        sd_step s;
        TRY(stage_cut(p, &s)); /* the clock says when the batch is due */
        if (s.end) return SD_OK;
        TRY(stage_inject(p, &s));
        TRY(stage_agree(p, &s)); /* every device learns every device's record */
        if (s.end) return SD_OK;
        if (s.idle) continue;    /* nothing arrived anywhere: the clock moved on */
        TRY(stage_train(p, &s));
        TRY(stage_exchange(p, &s));
        TRY(stage_update(p, &s));
        TRY(stage_record(p, &s));
        TRY(stage_evaluate(p, &s));
        stage_progress(p, &s);
        if (p->stop) return SD_OK; /* target reached, time budget or max_steps */
    }
}

/* ---- set-up and finish ------------------------------------------------------------------------------ */
sd_status sd_dist_compute_models(const sd_experiment *e, sd_compute_model *out) {
    for (int j = 0; j < e->devices.count; j++) {
        const sd_device_profile *dp = &e->devices.dev[j].profile;
        int k = 0;
        while (k < j && !(dp->profile[0] && !strcmp(dp->profile, e->devices.dev[k].profile.profile))) k++;
        if (k < j) { /* the same file as device k: its table, this device's slowdown */
            out[j] = out[k];
            out[j].slowdown = dp->slowdown;
        } else {
            TRY(sd_compute_model_make(dp, e->model, e->width, &out[j]));
        }
    }
    return SD_OK;
}

static sd_status pipe_setup(sd_pipe *p) {
    const sd_experiment *e = p->e;
    const sd_dist_inputs *in = p->in;
    if (p->n != e->devices.count)
        return SD_FAIL(SD_ERR_INVALID, "the run has %d ranks but the experiment lists %d devices (devices.count)", p->n,
                       e->devices.count);
    p->all = calloc((size_t)p->n, sizeof *p->all);
    p->preq = calloc(1, sizeof *p->preq);
    p->red = calloc((size_t)p->n + 1, sizeof *p->red);
    p->compute = calloc((size_t)p->n, sizeof *p->compute);
    if (!p->all || !p->preq || !p->red || !p->compute) return SD_FAIL(SD_ERR_OOM, "step records");
    if (in->compute) memcpy(p->compute, in->compute, (size_t)p->n * sizeof *p->compute);
    else TRY(sd_dist_compute_models(e, p->compute));
    p->ddp = in->mode == SD_EXP_MODE_DDP;
    p->clock = e->clock == SD_EXP_CLOCK_REAL ? sd_clock_real() : sd_clock_virtual();
    TRY(sd_dev_setup(in, p->rank, p->n, &p->d));
    TRY(sd_dev_grad_comm(e, p->comm, &p->d));
    char tname[48];
    snprintf(tname, sizeof tname, "Device %d", p->rank);
    (void)sd_trace_meta(in->trace, in->trace_pid, p->rank, tname);
    p->classes = sd_net_classes(p->d.net);
    p->np = sd_net_param_count(p->d.net);
    const sd_dataset *tr = in->train;
    p->img = (size_t)tr->c * tr->h * tr->w;
    TRY(sd_augment_default(tr, false, &p->norm));
    TRY(sd_augment_default(tr, e->augment, &p->aug));
    p->rb = (sd_ring_batch){.sample_elems = p->img, .norm = &p->norm};
    p->min_bw = INFINITY;
    p->max_lat = 0;
    for (int j = 0; j < p->n; j++) {
        if (e->devices.dev[j].profile.bandwidth_bps < p->min_bw) p->min_bw = e->devices.dev[j].profile.bandwidth_bps;
        if (e->devices.dev[j].profile.latency_s > p->max_lat) p->max_lat = e->devices.dev[j].profile.latency_s;
    }
    p->dense_comm_s = sd_ring_allreduce_time(p->n, (double)p->np * sizeof(float), p->min_bw, p->max_lat);
    p->dense_comm_lat_s = sd_ring_allreduce_time(p->n, (double)p->np * sizeof(float), INFINITY, p->max_lat);
    p->link_burst_s = e->clock == SD_EXP_CLOCK_VIRTUAL && e->link_emulation == SD_EXP_LINK_TOKEN_BUCKET
                          ? e->link_burst_bytes * 8.0 / p->min_bw
                          : 0.0;
    p->ls = (loop_state){.T = 0, .last_cut = -INFINITY, .next_eval = e->eval_every_s, .last_top1 = -1, .step = 0,
                         .link_credit_s = p->link_burst_s, .link_free_at = 0, .out_bytes = {-1, -1, -1, -1}};
    memset(p->sum, 0, sizeof *p->sum);
    p->sum->time_to_target_s = -1;
    return SD_OK;
}

/* BN statistics are the same on every device iff the last evaluation averaged them (bn average). */
static sd_status bn_agreement(sd_pipe *p) {
    sd_dev *d = &p->d;
    uint64_t h = 1469598103934665603ull, hs[SD_MAX_DEVICES];
    float *hb = NULL;
    if (sd_net_buffer_count(d->net) > 0) TRY(sd_dev_host_view(d, sd_net_buffers(d->net), sd_net_buffer_count(d->net), &hb));
    const unsigned char *b = (const unsigned char *)hb;
    for (size_t i = 0; b && i < sd_net_buffer_count(d->net) * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    TRY(sd_comm_allgather_u64(p->comm, h, hs));
    p->sum->bn_identical = true;
    for (int j = 0; j < p->n; j++) p->sum->bn_identical &= hs[j] == hs[0];
    return SD_OK;
}

/* Every drop of the run, whatever step it fell in (a live stream keeps delivering, and dropping,
 * after the last step): the ingest stops first, then the totals of every device become the run's
 * samples_dropped, and rank 0 writes <run_dir>/drops.json with each device's counts by reason and
 * its sequence state (gaps, publisher restarts, resyncs, refusals in a row: a stall). */
static sd_status final_drops(sd_pipe *p) {
    sd_dev *d = &p->d;
    if (d->ingest) {
        (void)sd_ingest_halt(d->ingest); /* (its failure is reported by the stop) */
        sd_ingest_sink_seq(d->ingest, &d->sink.seq);
        sd_status si = sd_ingest_stop(d->ingest); /* the run is over: a failing stream is a note now */
        d->ingest = NULL;
        if (si != SD_OK && p->rank == 0) fprintf(stderr, "note: after the last step: %s\n", sd_last_error_brief());
    }
    /* [0]: truncated by the policy, [r]: dropped[r], [COUNT]: the total, then the sequence state */
    enum { SEQ0 = SD_DROP_COUNT + 1, NR = SEQ0 + 4 };
    sd_ring_stats rs;
    sd_ring_get_stats(d->ring, &rs);
    uint64_t mine[NR], *all = malloc(sizeof(uint64_t) * NR * (size_t)p->n);
    if (!all) return SD_FAIL(SD_ERR_OOM, "drop counts of %d devices", p->n);
    mine[0] = rs.truncated;
    for (int r = 1; r < SD_DROP_COUNT; r++) mine[r] = rs.dropped[r];
    mine[SD_DROP_COUNT] = sd_ring_drops(&rs);
    const sd_msg_seq *q = &d->sink.seq;
    mine[SEQ0] = q->gaps, mine[SEQ0 + 1] = q->restarts, mine[SEQ0 + 2] = q->resyncs, mine[SEQ0 + 3] = q->refused;
    size_t sizes[SD_MAX_DEVICES], displs[SD_MAX_DEVICES];
    for (int j = 0; j < p->n; j++) {
        sizes[j] = sizeof mine;
        displs[j] = (size_t)j * sizeof mine;
    }
    sd_status s = sd_comm_allgatherv(p->comm, mine, sizeof mine, all, sizes, displs);
    if (s == SD_OK) {
        uint64_t total = 0;
        p->sum->stalled_devices = 0;
        for (int j = 0; j < p->n; j++) {
            total += all[(size_t)j * NR + SD_DROP_COUNT];
            p->sum->stalled_devices += all[(size_t)j * NR + SEQ0 + 3] >= SD_MSG_SEQ_STALL;
        }
        p->sum->samples_dropped = total;
    }
    if (s == SD_OK && p->rank == 0) {
        char path[1100];
        snprintf(path, sizeof path, "%s/drops.json", p->in->run_dir);
        FILE *f = fopen(path, "w");
        bool ok = f != NULL;
        if (f) {
            fprintf(f, "{\"devices\": [\n");
            for (int j = 0; j < p->n; j++) {
                const uint64_t *a = all + (size_t)j * NR;
                fprintf(f, "  {\"device\": %d, \"total\": %llu, \"truncated_by_policy\": %llu", j,
                        (unsigned long long)a[SD_DROP_COUNT], (unsigned long long)a[0]);
                for (int r = 1; r < SD_DROP_COUNT; r++)
                    fprintf(f, ", \"%s\": %llu", sd_drop_reason_name((sd_drop_reason)r), (unsigned long long)a[r]);
                fprintf(f, ", \"seq_gaps\": %llu, \"seq_restarts\": %llu, \"seq_resyncs\": %llu, \"seq_refused_in_a_row\": %llu, "
                           "\"stalled\": %s}%s\n",
                        (unsigned long long)a[SEQ0], (unsigned long long)a[SEQ0 + 1], (unsigned long long)a[SEQ0 + 2],
                        (unsigned long long)a[SEQ0 + 3], a[SEQ0 + 3] >= SD_MSG_SEQ_STALL ? "true" : "false",
                        j + 1 < p->n ? "," : "");
            }
            fprintf(f, "]}\n");
            ok = !ferror(f);
            ok &= fclose(f) == 0;
        }
        if (!ok) s = SD_FAIL(SD_ERR_IO, "cannot write %s: %s; check the disk (space, permissions)", path, strerror(errno));
    }
    free(all);
    return s;
}

static sd_status run_finish(sd_pipe *p) {
    sd_run_summary *out = p->sum;
    TRY(bn_agreement(p));
    uint64_t mine_bytes = sd_dev_wire_bytes(p->comm, &p->d) - p->wire0, all_bytes[SD_MAX_DEVICES];
    TRY(sd_comm_allgather_u64(p->comm, mine_bytes, all_bytes));
    for (int j = 0; j < p->n; j++) out->bytes_sent += all_bytes[j];
    TRY(final_drops(p));
    if (p->d.pool)
        for (int j = 0; j < p->n && j < 64; j++) {
            sd_inject_stats s;
            if (sd_inject_pool_stats(p->d.pool, j, &s) == SD_OK) out->shared[j] = s.shared;
        }
    out->steps = p->ls.step;
    out->clock_s = p->ls.T;
    out->wall_s = p->wall_before + (sd_clock_now() - p->inv0);
    if (p->rank == 0 && !p->in->quiet) fprintf(stderr, "\n");
    if (p->rank == 0) { /* the final weights, loadable by PyTorch (docs/checkpoints.md) */
        char path[1100], num[32];
        snprintf(path, sizeof path, "%s/model.safetensors", p->in->run_dir);
        snprintf(num, sizeof num, "%lld", (long long)p->ls.step);
        sd_ckpt_kv kv[] = {{"model", p->e->model}, {"dataset", p->e->dataset}, {"mode", p->ddp ? "ddp" : "scadles"},
                           {"step", num}};
        TRY(sd_checkpoint_save(p->d.net, path, &(sd_ckpt_meta){kv, 4}));
    }
    return SD_OK;
}

static sd_status run(sd_pipe *p) {
    TRY(pipe_setup(p));
    if (p->in->resume_dir) TRY(sd_pipe_restore(p)); /* before any output is touched */
    p->step0 = p->ls.step;
    p->last_ckpt = p->ls.step;
    p->ls_T0 = p->ls.T;
    p->wall_before = p->sum->wall_s;
    p->inv0 = sd_clock_now();
    p->last_print = -1;
    if (p->rank == 0) TRY(sd_outputs_open(&p->out, p->in->run_dir, p->ls.out_bytes));
    TRY(p->clock->ops->start(p));
    if (p->d.be.ops->transfers) p->d.be.ops->transfers(p->d.be.ctx, &p->xfer0); /* steps count from here */
    p->sum->mode = p->in->mode;
    p->sum->seed = p->in->seed;
    p->sum->devices = p->n;
    p->wire0 = sd_dev_wire_bytes(p->comm, &p->d) - p->ls.wire_bytes;
    TRY(device_loop(p));
    if (p->sum->stopped) return SD_OK; /* the checkpoint holds the rest; the totals come when the run finishes */
    return run_finish(p);
}

static sd_status device_run(const sd_dist_inputs *in, sd_comm *comm, int gpu_slot, sd_run_summary *out) {
    sd_pipe p;
    memset(&p, 0, sizeof p);
    p.d.gpu = gpu_slot; /* compute_backend cuda: the GPU is this modulo the GPUs the process sees */
    p.in = in;
    p.e = in->e;
    p.comm = comm;
    p.rank = comm->rank;
    p.n = comm->size;
    p.sum = out;
    sd_status st = run(&p);
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    sd_status sc = sd_outputs_close(&p.out);
    if (st == SD_OK) st = sc;
    free(p.all);
    free(p.compute);
    free(p.preq);
    free(p.red);
    sd_dev_free(&p.d);
    return st;
}

/* With link_emulation on the real clock, this device's collectives run through a token-bucket link
 * of its own bandwidth and latency (comm/shaper.h); otherwise on comm as given (on the virtual
 * clock the bucket is modelled: clock_virtual.c). The GPU slot is the
 * rank, or LOCAL_RANK where a torchrun-style launch gave it (comm/comm_tcp.h). */
sd_status sd_dist_device_run(const sd_dist_inputs *in, sd_comm *comm, sd_run_summary *out) {
    const sd_experiment *e = in->e;
    const int slot = sd_comm_tcp_local_rank(comm) >= 0 ? sd_comm_tcp_local_rank(comm) : comm->rank;
    if (e->link_emulation == SD_EXP_LINK_OFF || e->clock != SD_EXP_CLOCK_REAL) return device_run(in, comm, slot, out);
    if (comm->rank < 0 || comm->rank >= e->devices.count)
        return SD_FAIL(SD_ERR_INVALID, "rank %d outside the experiment's %d devices", comm->rank, e->devices.count);
    const sd_device_profile *pr = &e->devices.dev[comm->rank].profile;
    sd_shaper_config sc = {.bandwidth_bps = pr->bandwidth_bps, .latency_s = pr->latency_s,
                           .burst_bytes = e->link_burst_bytes};
    sd_comm *shaped = NULL;
    TRY(sd_comm_shaped_create(comm, &sc, &shaped));
    sd_status st = device_run(in, shaped, slot, out);
    sd_comm_destroy(shaped);
    return st;
}
