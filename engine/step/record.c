/* record.c: stage "record the step": the step's phases and counters on the timeline
 * (engine/trace.h), the run's totals, and rank 0's line in metrics.jsonl and buffer.dat; the live
 * progress line. Also the run's output files themselves: opened afresh or, resuming, cut back to
 * their size at the checkpoint and appended to; every write is checked, and the first failure
 * names the file. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "engine/step/clock.h"
#include "engine/trace.h"

const char *const SD_OUT_NAMES[OUT_COUNT] = {"metrics.jsonl", "eval.jsonl", "eval.dat", "buffer.dat"};

/* JSON has no NaN/Inf: a non-finite value is written as null. */
void sd_json_num(char *buf, size_t n, double v) {
    if (isfinite(v)) snprintf(buf, n, "%.6f", v);
    else snprintf(buf, n, "null");
}

/* ---- the output files ------------------------------------------------------------------------------ */
static sd_status open_one(const char *dir, const char *name, int64_t resume_bytes, FILE **f) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (resume_bytes >= 0) {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return SD_FAIL(SD_ERR_IO, "resume: cannot find %s (%s); it holds the run's output up to the checkpoint; "
                           "resume with the out_dir the checkpoint was written in", path, strerror(errno));
        if ((int64_t)sb.st_size < resume_bytes)
            return SD_FAIL(SD_ERR_INVALID, "resume: %s has %lld bytes, fewer than the %lld it had at the checkpoint; "
                           "the run directory was changed since", path, (long long)sb.st_size, (long long)resume_bytes);
        if (truncate(path, (off_t)resume_bytes) != 0)
            return SD_FAIL(SD_ERR_IO, "resume: cannot cut %s back to %lld bytes: %s", path, (long long)resume_bytes,
                           strerror(errno));
    }
    *f = fopen(path, resume_bytes >= 0 ? "a" : "w");
    if (!*f) return SD_FAIL(SD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return SD_OK;
}

sd_status sd_outputs_open(sd_outputs *o, const char *dir, const int64_t *resume_bytes) {
    o->dir = dir;
    for (int i = 0; i < OUT_COUNT; i++) TRY(open_one(dir, SD_OUT_NAMES[i], resume_bytes[i], &o->f[i]));
    return SD_OK;
}

void sd_outputs_printf(sd_outputs *o, int which, const char *fmt, ...) {
    FILE *f = o->f[which];
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(f, fmt, ap);
    va_end(ap);
    if (r < 0 && !o->failed) {
        o->failed = which + 1;
        o->err = errno;
    }
}

static sd_status failure(const sd_outputs *o) {
    return SD_FAIL(SD_ERR_IO, "cannot write %s/%s: %s; check the disk (space, permissions)", o->dir,
                   SD_OUT_NAMES[o->failed - 1], strerror(o->err));
}

/* Flushes every file; positions (may be NULL) receive their sizes. */
sd_status sd_outputs_flush(sd_outputs *o, int64_t *positions) {
    for (int i = 0; i < OUT_COUNT; i++) {
        if (!o->f[i]) continue;
        long pos = fflush(o->f[i]) == 0 ? ftell(o->f[i]) : -1;
        if (pos < 0 && !o->failed) {
            o->failed = i + 1;
            o->err = errno;
        }
        if (positions) positions[i] = pos;
    }
    return o->failed ? failure(o) : SD_OK;
}

sd_status sd_outputs_close(sd_outputs *o) {
    for (int i = 0; i < OUT_COUNT; i++) {
        if (o->f[i] && fclose(o->f[i]) != 0 && !o->failed) {
            o->failed = i + 1;
            o->err = errno;
        }
        o->f[i] = NULL;
    }
    return o->failed ? failure(o) : SD_OK;
}

/* ---- the stage ---------------------------------------------------------------------------------------- */
/* Counters belong to the run; rank 0 holds every device's record. */
static void trace_counters(const sd_pipe *p, const sd_step *s) {
    const sd_dist_inputs *in = p->in;
    int64_t tot = 0;
    char cn[48];
    (void)sd_trace_counter(in->trace, in->trace_pid, "global batch", s->T_cut, "samples", (double)s->B);
    for (int j = 0; j < p->n; j++) {
        tot += p->all[j].buffered;
        snprintf(cn, sizeof cn, "batch device %d", j);
        (void)sd_trace_counter(in->trace, in->trace_pid, cn, s->T_cut, "samples", p->all[j].batch);
        snprintf(cn, sizeof cn, "buffer device %d", j);
        (void)sd_trace_counter(in->trace, in->trace_pid, cn, s->T_end, "samples", p->all[j].buffered);
    }
    (void)sd_trace_counter(in->trace, in->trace_pid, "buffer total", s->T_end, "samples", (double)tot);
    (void)sd_trace_counter(in->trace, in->trace_pid, "bytes sent (device 0)", s->T_end, "bytes",
                           (double)(sd_dev_wire_bytes(p->comm, &p->d) - p->wire0));
    (void)sd_trace_counter(in->trace, in->trace_pid, "compression", s->T_cut, "on", s->cs.compressed ? 1 : 0);
    if (s->xfer_known) {
        (void)sd_trace_counter(in->trace, in->trace_pid, "host->device (device 0)", s->T_end, "bytes",
                               (double)s->xfer.h2d_bytes);
        (void)sd_trace_counter(in->trace, in->trace_pid, "device->host (device 0)", s->T_end, "bytes",
                               (double)s->xfer.d2h_bytes);
    }
}

/* One line per step, flushed, so that `tail -f` shows the run as it happens. */
static sd_status metrics_line(sd_pipe *p, const sd_step *s, double wait, uint64_t dropped) {
    sd_outputs *o = &p->out;
    const sd_compress_step *cs = &s->cs;
    char lossbuf[32];
    sd_json_num(lossbuf, sizeof lossbuf, s->global_loss);
    sd_outputs_printf(o, OUT_METRICS,
                      "{\"step\": %lld, \"time\": %.6f, \"wait\": %.6f, \"compute\": %.6f, \"comm\": %.6f, "
                      "\"global_batch\": %lld, \"loss\": %s, \"lr\": %.6g, \"dropped\": %llu, "
                      "\"bytes\": %llu, \"step_bytes\": %llu, \"compression\": %s, \"ratio\": %.6g, "
                      "\"votes\": %d, \"rel_loss\": %.6g, \"mean_loss\": %.6g, \"gain\": %.6g, ",
                      (long long)p->ls.step, p->ls.T, wait, s->compute, s->comm_s, (long long)s->B, lossbuf,
                      (double)p->d.opt.last_lr, (unsigned long long)dropped,
                      (unsigned long long)(sd_dev_wire_bytes(p->comm, &p->d) - p->wire0),
                      (unsigned long long)s->step_bytes, cs->compressed ? "true" : "false", cs->ratio, cs->votes,
                      cs->rel_loss, cs->mean_loss, cs->gain);
    if (p->e->compression.policy != SD_COMPRESS_OFF) /* compressed runs: which exchange the step used */
        sd_outputs_printf(o, OUT_METRICS, "\"exchange\": \"%s\", ",
                          !cs->compressed ? "dense" : cs->exchange == SD_EXCHANGE_ALLREDUCE ? "allreduce" : "allgather");
    sd_outputs_printf(o, OUT_METRICS, "\"batches\": [");
    for (int j = 0; j < p->n; j++) sd_outputs_printf(o, OUT_METRICS, "%s%d", j ? ", " : "", p->all[j].batch);
    sd_outputs_printf(o, OUT_METRICS, "], \"buffer\": [");
    for (int j = 0; j < p->n; j++) sd_outputs_printf(o, OUT_METRICS, "%s%d", j ? ", " : "", p->all[j].buffered);
    if (s->xfer_known) /* a backend that counts its host <-> device copies (CUDA): this step's, device 0 */
        sd_outputs_printf(o, OUT_METRICS, "], \"h2d_bytes\": %llu, \"h2d_copies\": %llu, \"d2h_bytes\": %llu, "
                          "\"d2h_copies\": %llu}\n", (unsigned long long)s->xfer.h2d_bytes,
                          (unsigned long long)s->xfer.h2d_copies, (unsigned long long)s->xfer.d2h_bytes,
                          (unsigned long long)s->xfer.d2h_copies);
    else
        sd_outputs_printf(o, OUT_METRICS, "]}\n");
    int64_t tot = 0, mx = 0;
    for (int j = 0; j < p->n; j++) {
        tot += p->all[j].buffered;
        if (p->all[j].buffered > mx) mx = p->all[j].buffered;
    }
    sd_outputs_printf(o, OUT_BUFFER_DAT, "%.6f %lld %lld %lld\n", p->ls.T, (long long)tot, (long long)mx, (long long)s->B);
    if (fflush(o->f[OUT_METRICS]) != 0 && !o->failed) {
        o->failed = OUT_METRICS + 1;
        o->err = errno;
    }
    return o->failed ? SD_FAIL(SD_ERR_IO, "cannot write %s/%s: %s; check the disk (space, permissions)", o->dir,
                               SD_OUT_NAMES[o->failed - 1], strerror(o->err))
                     : SD_OK;
}

/* This step's host <-> device traffic: the backend's counters since the end of the previous step. */
static void step_transfers(sd_pipe *p, sd_step *s) {
    const sd_backend *be = &p->d.be;
    if (!be->ops->transfers) return;
    sd_transfer_stats now;
    be->ops->transfers(be->ctx, &now);
    s->xfer = (sd_transfer_stats){.h2d_bytes = now.h2d_bytes - p->xfer0.h2d_bytes,
                                  .h2d_copies = now.h2d_copies - p->xfer0.h2d_copies,
                                  .d2h_bytes = now.d2h_bytes - p->xfer0.d2h_bytes,
                                  .d2h_copies = now.d2h_copies - p->xfer0.d2h_copies};
    s->xfer_known = true; /* the evaluate stage takes the next snapshot: evaluations do not count */
}

/* A device whose stream keeps arriving but whose every message the sequence check refuses trains on
 * nothing: rank 0 says so once when it starts (and once when it ends), and the progress line and
 * summary.json count the stalled devices. */
static void report_stalls(sd_pipe *p) {
    if (p->rank != 0) return;
    for (int j = 0; j < p->n; j++) {
        const bool now = p->all[j].seq_refused >= SD_MSG_SEQ_STALL;
        if (now == p->stalled[j]) continue;
        p->stalled[j] = now;
        p->n_stalled += now ? 1 : -1;
        if (now)
            fprintf(stderr, "%swarning: device %d's stream is stalled at step %lld: its last %llu messages were all refused "
                            "by the sequence check (duplicates, or numbers too far ahead): its publisher restarted its "
                            "sequence, or redelivers old messages. Restart the publisher with a new epoch (scadles-publish "
                            "--epoch; version-2 messages), see docs/stream-format.md, \"Sequence numbers\"; drops.json "
                            "counts the refusals\n", p->in->quiet ? "" : "\n", j, (long long)p->ls.step,
                    (unsigned long long)p->all[j].seq_refused);
        else
            fprintf(stderr, "%snote: device %d's stream accepts messages again at step %lld\n", p->in->quiet ? "" : "\n", j,
                    (long long)p->ls.step);
    }
}

sd_status stage_record(sd_pipe *p, sd_step *s) {
    step_transfers(p, s);
    const double wait = s->T_cut - p->ls.T;
    if (p->in->trace) {
        p->clock->ops->trace_step(p, s);
        if (p->rank == 0) trace_counters(p, s);
    }
    p->ls.T = s->T_end;
    uint64_t dropped = 0, peak = 0;
    for (int j = 0; j < p->n; j++) {
        dropped += p->all[j].dropped;
        if (p->all[j].high_water > peak) peak = p->all[j].high_water;
    }
    sd_run_summary *out = p->sum;
    out->samples_trained += (uint64_t)s->Bstream;
    out->samples_injected += (uint64_t)(s->B - s->Bstream);
    out->samples_dropped = dropped;
    out->peak_buffer = peak;
    if (p->out.f[OUT_METRICS]) TRY(metrics_line(p, s, wait, dropped));
    report_stalls(p);
    return SD_OK;
}

/* The live progress line (rank 0, on a terminal): elapsed and clock time, step, global batch,
 * loss, accuracy, samples/s, buffers, drops, ETA to the time budget. */
void stage_progress(sd_pipe *p, const sd_step *s) {
    const sd_experiment *e = p->e;
    const double wall = sd_clock_now() - p->inv0, T = p->ls.T, done = T - p->ls_T0;
    if (p->rank != 0 || p->in->quiet || !(wall - p->last_print >= 0.5 || p->stop)) return;
    uint64_t buffered = 0;
    for (int j = 0; j < p->n; j++) buffered += (uint64_t)p->all[j].buffered;
    double eta = done > 0 ? (e->time_budget_s - T) * wall / done : 0;
    const int64_t steps = p->ls.step - p->step0;
    if (e->max_steps > 0 && steps > 0) {
        double eta_steps = (double)(e->max_steps - p->ls.step) * wall / (double)steps;
        if (eta_steps < eta) eta = eta_steps;
    }
    char acc[24], stalled[40] = "";
    if (p->n_stalled) snprintf(stalled, sizeof stalled, " | stalled %d", p->n_stalled);
    if (p->ls.last_top1 >= 0) snprintf(acc, sizeof acc, "%.2f%%", 100 * p->ls.last_top1);
    else snprintf(acc, sizeof acc, "-");
    fprintf(stderr, "\r  %s seed %llu | %5.1fs wall, clock %7.1fs | step %lld | batch %lld | loss %.4f | top-1 %s | "
                    "%.0f samples/s | buffered %llu | dropped %llu%s | ETA %.0fs   ",
            p->ddp ? "ddp" : "scadles", (unsigned long long)p->in->seed, wall, T, (long long)p->ls.step, (long long)s->B,
            (double)s->global_loss, acc, (double)p->sum->samples_trained / (wall > 0 ? wall : 1),
            (unsigned long long)buffered, (unsigned long long)p->sum->samples_dropped, stalled, eta > 0 ? eta : 0);
    p->last_print = wall;
}
