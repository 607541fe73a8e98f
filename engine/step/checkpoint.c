/* checkpoint.c: stage "stop and checkpoint" (docs/checkpoints.md, "Distributed runs"). Every rank
 * decides alike whether to stop after this step (stop_at is common; stop requests travelled in the
 * last step's records); then the stream pauses, rank 0 flushes the outputs, and each device writes
 * <checkpoint_dir>/rank<r>.safetensors: weights, BN, momentum, the stream source's position, ring
 * contents and counters, injection pool, compressor state, the loop's clock and counters, the
 * output sizes. A source that commits (Kafka) commits only once the whole checkpoint is written.
 * Also the restore: a resumed run reads the same file back before any output is touched. */
#include <math.h>
#include <string.h>

#include "base/clock.h"
#include "engine/dist_checkpoint.h"
#include "engine/signals.h"
#include "engine/step/clock.h"

/* Summary fields the loop accumulates (F64 and U64 tensors "summary.f64", "summary.u64"). */
#define SUMMARY_F64 4
#define SUMMARY_U64 5

/* Writes <checkpoint_dir>/rank<r>.safetensors: everything this device needs to continue. */
static sd_status save_rank(const sd_pipe *p, const char *dir, const char *reason) {
    const sd_dist_inputs *in = p->in;
    const sd_dev *d = &p->d;
    const loop_state *ls = &p->ls;
    const sd_run_summary *out = p->sum;
    sd_dist_ckpt_id id = {.experiment = in->experiment_json, .devices = p->n, .run_index = in->run_index,
                          .mode = in->mode, .seed = in->seed, .step = ls->step};
    sd_dist_ckpt_writer cw;
    TRY(sd_dist_ckpt_writer_begin(&cw, &id, p->rank, reason));
    double clock[4] = {ls->T, ls->last_cut, ls->next_eval, ls->last_top1};
    double sf[SUMMARY_F64] = {out->time_to_target_s, out->final_accuracy, out->best_accuracy, out->wall_s};
    uint64_t su[SUMMARY_U64] = {(uint64_t)out->skipped_steps, out->samples_trained, out->samples_injected,
                                out->samples_dropped, out->peak_buffer};
    const int64_t pshape[2] = {SD_PREQ_WINDOW, SD_MAX_DEVICES};
    sd_status s = SD_OK;
#define PUT(x) if (s == SD_OK) s = (x)
    PUT(sd_dist_ckpt_put_net(&cw, d->net, &d->opt));
    PUT(sd_dist_ckpt_put_ring(&cw, d->ring, &d->sink));
    PUT(sd_dist_ckpt_put_source(&cw, &d->src));
    if (d->pool) {
        PUT(sd_dist_ckpt_put_pool(&cw, d->pool, p->n));
        PUT(sd_dist_ckpt_put_rng(&cw, "inject.rng", &d->inject_rng));
    }
    if (d->compressor) PUT(sd_dist_ckpt_put_compressor(&cw, d->compressor));
    PUT(sd_dist_ckpt_put(&cw, "loop.clock", SD_ST_F64, 1, (int64_t[]){4}, clock));
    if (p->link_burst_s > 0) /* the virtual clock's link bucket */
        PUT(sd_dist_ckpt_put(&cw, "loop.link", SD_ST_F64, 1, (int64_t[]){2},
                             ((double[]){ls->link_credit_s, ls->link_free_at})));
    PUT(sd_dist_ckpt_put_i64(&cw, "loop.step", ls->step));
    PUT(sd_dist_ckpt_put_u64(&cw, "loop.wire_bytes", ls->wire_bytes));
    PUT(sd_dist_ckpt_put(&cw, "loop.outputs", SD_ST_I64, 1, (int64_t[]){4}, ls->out_bytes));
    PUT(sd_dist_ckpt_put(&cw, "preq.correct", SD_ST_F32, 2, pshape, p->preq->correct));
    PUT(sd_dist_ckpt_put(&cw, "preq.seen", SD_ST_F32, 2, pshape, p->preq->seen));
    PUT(sd_dist_ckpt_put(&cw, "summary.f64", SD_ST_F64, 1, (int64_t[]){SUMMARY_F64}, sf));
    PUT(sd_dist_ckpt_put(&cw, "summary.u64", SD_ST_U64, 1, (int64_t[]){SUMMARY_U64}, su));
#undef PUT
    if (s != SD_OK) {
        sd_dist_ckpt_writer_abort(&cw);
        TRY(s);
    }
    char path[1100];
    sd_dist_ckpt_path(dir, p->rank, path, sizeof path);
    TRY(sd_dist_ckpt_writer_finish(&cw, path));
    return SD_OK;
}

static void get_f64s(const sd_st_tensor *t, double *v, size_t n) { memcpy(v, t->data, n * sizeof *v); }

/* The loop's state and the summary so far, from an opened rank file. */
static sd_status load_loop(const sd_st_file *f, sd_pipe *p) {
    loop_state *ls = &p->ls;
    sd_run_summary *out = p->sum;
    const sd_st_tensor *t = NULL;
    double c[4];
    TRY(sd_dist_ckpt_get(f, "loop.clock", SD_ST_F64, 4, &t));
    get_f64s(t, c, 4);
    ls->T = c[0];
    ls->last_cut = c[1];
    ls->next_eval = c[2];
    ls->last_top1 = c[3];
    if (p->link_burst_s > 0) {
        TRY(sd_dist_ckpt_get(f, "loop.link", SD_ST_F64, 2, &t));
        get_f64s(t, c, 2);
        ls->link_credit_s = c[0];
        ls->link_free_at = c[1];
    }
    TRY(sd_dist_ckpt_get_i64(f, "loop.step", &ls->step));
    TRY(sd_dist_ckpt_get_u64(f, "loop.wire_bytes", &ls->wire_bytes));
    TRY(sd_dist_ckpt_get(f, "loop.outputs", SD_ST_I64, 4, &t));
    memcpy(ls->out_bytes, t->data, sizeof ls->out_bytes);
    TRY(sd_dist_ckpt_get(f, "preq.correct", SD_ST_F32, (size_t)SD_PREQ_WINDOW * SD_MAX_DEVICES, &t));
    memcpy(p->preq->correct, t->data, sizeof p->preq->correct);
    TRY(sd_dist_ckpt_get(f, "preq.seen", SD_ST_F32, (size_t)SD_PREQ_WINDOW * SD_MAX_DEVICES, &t));
    memcpy(p->preq->seen, t->data, sizeof p->preq->seen);
    double v[SUMMARY_F64];
    TRY(sd_dist_ckpt_get(f, "summary.f64", SD_ST_F64, SUMMARY_F64, &t));
    get_f64s(t, v, SUMMARY_F64);
    out->time_to_target_s = v[0];
    out->final_accuracy = v[1];
    out->best_accuracy = v[2];
    out->wall_s = v[3];
    uint64_t u[SUMMARY_U64];
    TRY(sd_dist_ckpt_get(f, "summary.u64", SD_ST_U64, SUMMARY_U64, &t));
    memcpy(u, t->data, sizeof u);
    out->skipped_steps = (int64_t)u[0];
    out->samples_trained = u[1];
    out->samples_injected = u[2];
    out->samples_dropped = u[3];
    out->peak_buffer = u[4];
    return SD_OK;
}

/* Reads <resume_dir>/rank<r>.safetensors back into a freshly set-up device and the loop state. */
static sd_status load_rank(sd_pipe *p) {
    const sd_dist_inputs *in = p->in;
    sd_dev *d = &p->d;
    char path[1100];
    sd_dist_ckpt_path(in->resume_dir, p->rank, path, sizeof path);
    sd_dist_ckpt_id want = {.experiment = in->experiment_json, .devices = p->n}, got;
    sd_st_file *f = NULL;
    TRY(sd_dist_ckpt_open(path, &want, p->rank, &f, &got));
    sd_status s = SD_OK;
#define GET(x) if (s == SD_OK) s = (x)
    if (got.run_index != in->run_index || got.step != in->resume_step)
        s = SD_FAIL(SD_ERR_INVALID, "%s holds step %lld of run %d but %s/%s says step %lld of run %d: the checkpoint "
                    "was interrupted while it was being written; resume from a complete copy or start again", path,
                    (long long)got.step, got.run_index, in->resume_dir, SD_DIST_CKPT_RUN_FILE,
                    (long long)in->resume_step, in->run_index);
    GET(sd_dist_ckpt_get_net(f, d->net, &d->opt));
    GET(sd_dist_ckpt_get_ring(f, d->ring, &d->sink));
    GET(sd_dist_ckpt_get_source(f, &d->src));
    if (d->pool) {
        GET(sd_dist_ckpt_get_pool(f, d->pool, p->n));
        GET(sd_dist_ckpt_get_rng(f, "inject.rng", &d->inject_rng));
    }
    if (d->compressor) GET(sd_dist_ckpt_get_compressor(f, d->compressor));
    GET(load_loop(f, p));
    if (s == SD_OK && p->ls.step != got.step)
        s = SD_FAIL(SD_ERR_FORMAT, "%s: loop.step %lld disagrees with the metadata's step %lld; the file is damaged",
                    path, (long long)p->ls.step, (long long)got.step);
#undef GET
    sd_st_close(f);
    TRY(s);
    return SD_OK;
}

/* Every device restores its state before any output is touched; all ranks learn whether all did. */
sd_status sd_pipe_restore(sd_pipe *p) {
    sd_status mine = load_rank(p);
    uint64_t oks[SD_MAX_DEVICES];
    TRY(sd_comm_allgather_u64(p->comm, (uint64_t)mine, oks));
    TRY(mine);
    for (int j = 0; j < p->n; j++)
        if (oks[j] != SD_OK)
            return SD_FAIL((sd_status)oks[j], "device %d could not restore its state from %s (its message says why)", j,
                           p->in->resume_dir);
    return SD_OK;
}

/* Rank 0's verdict on one step of the write, for every rank: a failure names rank 0's reason there
 * and says so elsewhere. */
static sd_status agree_rank0(sd_pipe *p, sd_status mine, const char *what) {
    uint64_t v = (uint64_t)mine;
    char why[600] = "";
    if (mine != SD_OK) snprintf(why, sizeof why, "%s", sd_last_error_brief());
    TRY(sd_comm_broadcast(p->comm, &v, sizeof v, 0));
    if (v == SD_OK) return SD_OK;
    if (p->rank == 0) return SD_FAIL((sd_status)v, "%s", why);
    return SD_FAIL((sd_status)v, "rank 0 could not %s %s (its message says why)", what, p->in->checkpoint_dir);
}

/* Writes the checkpoint of this step: rank 0 empties <checkpoint_dir>.new, every device writes its
 * rank file there, rank 0 adds run.safetensors (this run's identity and the finished runs'
 * summaries) and switches the complete folder in (engine/dist_checkpoint.h), so a kill at any
 * moment leaves one complete checkpoint. Then a committing source (Kafka) marks what its ring held
 * as done and commits synchronously: the committed offsets never run ahead of a complete
 * checkpoint. A failed commit is a note: the resumed run drops the redelivered samples as
 * duplicates (sink.seq), so nothing trains twice. The checkpoint's own collectives are not counted
 * as the run's wire bytes, so a run with checkpoints sends what one without them sends. */
static sd_status write_checkpoint(sd_pipe *p, const char *reason) {
    const sd_dist_inputs *in = p->in;
    sd_dev *d = &p->d;
    const uint64_t wire_before = sd_dev_wire_bytes(p->comm, d);
    char next[1100];
    sd_dist_ckpt_sibling(in->checkpoint_dir, ".new", next, sizeof next);
    TRY(agree_rank0(p, p->rank == 0 ? sd_dist_ckpt_begin(in->checkpoint_dir) : SD_OK, "prepare the checkpoint beside"));
    sd_status mine = save_rank(p, next, reason);
    uint64_t oks[SD_MAX_DEVICES];
    TRY(sd_comm_allgather_u64(p->comm, (uint64_t)mine, oks));
    TRY(mine);
    for (int j = 0; j < p->n; j++)
        if (oks[j] != SD_OK)
            return SD_FAIL((sd_status)oks[j], "device %d could not write its part of the checkpoint %s (its message says "
                           "why); the previous checkpoint in %s is kept", j, next, in->checkpoint_dir);
    sd_status run = SD_OK;
    if (p->rank == 0) {
        sd_dist_ckpt_id id = {.experiment = in->experiment_json, .devices = p->n, .run_index = in->run_index,
                              .mode = in->mode, .seed = in->seed, .step = p->ls.step};
        run = sd_dist_ckpt_write_run(next, &id, in->done_runs, reason);
        if (run == SD_OK) run = sd_dist_ckpt_switch(in->checkpoint_dir);
    }
    TRY(agree_rank0(p, run, "complete the checkpoint"));
    p->last_ckpt = p->ls.step;
    const sd_source *src = &d->src;
    if (src->ops->commit) {
        if (d->sink.seq.any && src->ops->checkpointed) TRY(src->ops->checkpointed(src->ctx, d->sink.seq.last));
        if (src->ops->commit(src->ctx, 10.0) != SD_OK)
            fprintf(stderr, "note: device %d: %s: the offsets were not committed with the checkpoint (%s); a resume "
                    "drops what the brokers deliver again up to sequence number %llu as duplicates\n", p->rank,
                    d->src_name, sd_last_error_brief(), (unsigned long long)d->sink.seq.last);
    }
    p->wire0 += sd_dev_wire_bytes(p->comm, d) - wire_before;
    return SD_OK;
}

/* The stream stops delivering before the checkpoint. A source with a position of its own (the
 * replay) pauses: what it delivered stays in the ring, its time stops. A broker source stays
 * connected until the checkpoint is written (its offsets are committed after it); the last sequence
 * number stored is saved with the ring, so a resume drops anything redelivered up to it. */
static sd_status pause_stream(sd_dev *d) {
    if (!d->ingest) return SD_OK;
    if (!d->src.ops->save) {
        TRY(sd_ingest_halt(d->ingest));
        sd_ingest_sink_seq(d->ingest, &d->sink.seq);
        return SD_OK;
    }
    sd_status si = sd_ingest_stop(d->ingest);
    d->ingest = NULL;
    return si;
}

/* The checkpoint of this step: the stream pauses, the loop state that is not kept up to date
 * step by step (wire bytes, output sizes, wall time) is taken, then the files are written. */
static sd_status checkpoint_here(sd_pipe *p, const char *reason) {
    sd_dev *d = &p->d;
    TRY(pause_stream(d));
    p->ls.wire_bytes = sd_dev_wire_bytes(p->comm, d) - p->wire0;
    if (p->rank == 0) TRY(sd_outputs_flush(&p->out, p->ls.out_bytes));
    p->sum->wall_s = p->wall_before + (sd_clock_now() - p->inv0);
    return write_checkpoint(p, reason);
}

/* checkpoint_every_steps: the checkpoint of this step, and the run goes on. The stream (a replay:
 * resolve refuses periodic checkpoints of broker streams) pauses while it is written. */
static sd_status periodic_checkpoint(sd_pipe *p) {
    const bool live = p->d.ingest != NULL;
    char reason[64];
    snprintf(reason, sizeof reason, "every %lld steps", (long long)p->e->checkpoint_every_steps);
    TRY(checkpoint_here(p, reason));
    if (live) TRY(sd_dev_stream_start(p));
    return SD_OK;
}

sd_status stage_stop(sd_pipe *p, bool *stopped) {
    const sd_dist_inputs *in = p->in;
    *stopped = false;
    if (!in->experiment_json) return SD_OK;
    const bool at_stop = in->stop_at > 0 && p->ls.step >= in->stop_at && p->step0 < in->stop_at;
    if (!(p->stop_requested || at_stop)) {
        const int64_t every = p->e->checkpoint_every_steps;
        if (every > 0 && p->ls.step != p->last_ckpt && p->ls.step % every == 0) TRY(periodic_checkpoint(p));
        return SD_OK;
    }
    sd_dev *d = &p->d;
    char reason[64]; /* as the runner words it */
    if (p->stop_requested) snprintf(reason, sizeof reason, "signal %d", p->stop_signal);
    else snprintf(reason, sizeof reason, "stop_at %lld", (long long)in->stop_at);
    TRY(checkpoint_here(p, reason));
    if (d->ingest) {
        sd_status si = sd_ingest_stop(d->ingest);
        d->ingest = NULL;
        TRY(si);
    }
    sd_run_summary *out = p->sum;
    out->steps = p->ls.step;
    out->clock_s = p->ls.T;
    out->stopped = true;
    out->stop_signal = p->stop_requested ? p->stop_signal : 0;
    *stopped = true;
    return SD_OK;
}
