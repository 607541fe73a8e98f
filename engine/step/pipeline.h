/* pipeline.h: the step pipeline's shared types, internal to engine/step/. One device's run is a
 * loop over named stages (engine/step/run.c), each in the file of its name:
 *
 *     checkpoint.c  stop here, with a checkpoint?        (stage_stop)
 *     cut.c         cut the batch (the clock says when)  (stage_cut)
 *     inject.c      mix pool samples into the batch      (stage_inject)
 *     agree.c       every device learns every device's record: batch sizes, buffers, stop requests
 *     train.c       forward, loss, backward on the local batch
 *     exchange.c    sum (or compress and gather) the gradients
 *     update.c      global loss, non-finite policy, optimizer step, the step's end time
 *     record.c      metrics line, trace, progress line
 *     evaluate.c    test accuracy when due; the target stops the run
 *
 * over a clock (clock.h: virtual or real; the stages never ask which) and a device (device.c: the
 * backend, model, optimizer, ring buffer, stream source, injection pool and compressor). */
#ifndef SD_ENGINE_STEP_PIPELINE_H
#define SD_ENGINE_STEP_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "comm/comm.h"
#include "comm/compress.h"
#include "engine/distributed.h"
#include "engine/net.h"
#include "engine/optim.h"
#include "engine/profile.h"
#include "kernels/backend.h"
#include "stream/augment.h"
#include "stream/ingest.h"
#include "stream/inject.h"
#include "stream/ring.h"
#include "stream/source.h"

/* Share of its partition each device contributes to the injection pool, and the pool's bound per
 * class (docs/distributed.md). */
#define SD_INJECT_SHARE 0.1
#define SD_INJECT_POOL_PER_CLASS 4096

/* Prequential (test-then-train) accuracy: every incoming stream sample is scored by the current
 * model (the training forward's logits, before the update) and counted over a sliding window of
 * the last SD_PREQ_WINDOW steps, per device and overall. */
#define SD_PREQ_WINDOW 20

typedef struct preq_window {
    float correct[SD_PREQ_WINDOW][SD_MAX_DEVICES];
    float seen[SD_PREQ_WINDOW][SD_MAX_DEVICES];
} preq_window;

/* The record every device contributes to the per-step allgather. */
typedef struct step_info {
    double t_ready;       /* ddp: when this device's buffer holds b samples (INFINITY: never);
                             real clock: this device's clock reading when its batch was cut */
    double next_arrival;  /* the device's next arrival after the cut (virtual clock) */
    int32_t batch;        /* samples trained on this step: stream + injected */
    int32_t stream_batch; /* of them, from the device's own stream */
    int32_t buffered;     /* buffer occupancy after the take */
    int32_t stop;         /* a stop request seen on this device (the signal's number), 0: none;
                             STOP_STREAM_DEAD: this device's live stream ended or failed */
    uint64_t dropped;     /* all drops so far (policy, truncation, decode) */
    uint32_t high_water;  /* the buffer's high-water mark (samples; buffer.capacity is at most 2^26) */
    uint32_t seq_refused; /* messages refused in a row by the sequence check, saturating (a stall from
                             SD_MSG_SEQ_STALL on); with high_water in one word, the record stays 48 bytes */
} step_info;
_Static_assert(sizeof(step_info) == 48, "the step record travels every step: its size is on the wire");

#define STOP_STREAM_DEAD (-1)

/* ---- the device -------------------------------------------------------------------------------- */
typedef struct sd_dev {
    sd_backend be;
    sd_net *net;
    sd_optimizer opt;
    sd_ring *ring;
    bool ring_pinned;     /* compute_backend cuda: the ring's storage came from cudaMallocHost */
    sd_source src;        /* this device's stream (stream/source.h), opened by kind */
    char src_name[400];   /* for messages: "kafka(trainer-1) from the brokers at host:9092" */
    sd_sink sink;
    sd_msg_expect expect;
    sd_ingest *ingest;    /* real clock: the thread feeding the ring from the source */
    sd_inject_pool *pool;
    sd_compressor *compressor; /* Top-k + error feedback (compression.policy != off) */
    sd_rng inject_rng;
    float *hx, *dx, *hlogits;
    int32_t *hy, *dy;
    int64_t *inj_idx;
    int max_batch;
    bool cuda;         /* compute_backend cuda: batches, gradients and BN buffers live on a GPU */
    int gpu;           /* cuda: the device index */
    sd_comm *gcomm;    /* collectives nccl: sums gradients and BN buffers in GPU memory; NULL: host views */
    bool hx_pinned, hy_pinned, hstage_pinned;
    float *hstage;     /* cuda: host copy of the gradient or BN buffers for the collectives (pinned) */
} sd_dev;

/* ---- the loop's state between two steps (what a checkpoint holds besides the device) ----------- */
typedef struct loop_state {
    double T, last_cut, next_eval, last_top1;
    double link_credit_s;     /* virtual clock, link_emulation token_bucket: the bucket's tokens as seconds of
                               * the slowest link at link_free_at (the end of the last exchange) */
    double link_free_at;
    int64_t step;
    uint64_t wire_bytes;      /* this rank's wire bytes since the run began */
    int64_t out_bytes[4];     /* rank 0: sizes of the outputs at the checkpoint (-1: write afresh) */
} loop_state;

/* The run's output files (rank 0): metrics.jsonl, eval.jsonl, eval.dat, buffer.dat. */
enum { OUT_METRICS = 0, OUT_EVAL, OUT_EVAL_DAT, OUT_BUFFER_DAT, OUT_COUNT };
extern const char *const SD_OUT_NAMES[OUT_COUNT];

typedef struct sd_outputs {
    FILE *f[OUT_COUNT];
    const char *dir;
    int failed;               /* the first output whose write failed, + 1 (0: none) */
    int err;                  /* its errno */
} sd_outputs;

typedef struct sd_clock sd_clock;

/* ---- one device's run ---------------------------------------------------------------------------- */
typedef struct sd_pipe {
    const sd_dist_inputs *in;
    const sd_experiment *e;
    sd_comm *comm;
    int rank, n;
    bool ddp;
    sd_dev d;
    const sd_clock *clock;
    size_t img, np;
    int classes;
    sd_augment norm;          /* the dataset's normalisation: what the ring's take applies */
    sd_augment aug;           /* augment: the dataset's training crop and flip, after the take */
    sd_ring_batch rb;
    double min_bw, max_lat;   /* the slowest link: the modelled collectives run over it */
    double dense_comm_s;      /* modelled time of a dense gradient allreduce */
    double dense_comm_lat_s;  /* its latency part (the hops) */
    double link_burst_s;      /* virtual clock with link_emulation token_bucket: the bucket's depth in seconds
                               * of the slowest link (link_burst_bytes x 8 / bandwidth); 0: no bucket */
    sd_compute_model *compute; /* every device's modelled compute (its profile, engine/profile.h) */
    loop_state ls;
    int64_t step0;            /* the step this invocation started from */
    int64_t last_ckpt;        /* the step of the last checkpoint written or resumed from */
    double ls_T0;             /* and its clock time */
    double wall_before;       /* wall seconds of earlier invocations of this run */
    double inv0;              /* wall clock when this invocation started */
    double origin;            /* real clock: the wall reading of clock time 0 (time goes on from T) */
    uint64_t wire0;           /* wire bytes before the run (mod 2^64: differences stay right) */
    sd_transfer_stats xfer0;  /* the backend's transfer counters at the end of the last step */
    step_info *all;           /* every device's record of this step */
    preq_window *preq;
    float *red;               /* [weighted loss, correct per device] */
    bool stop;                /* the run ends after this step (target reached, budget, max_steps) */
    bool stop_requested;      /* a stop request travelled in a step record: checkpoint and stop */
    int stop_signal;
    double last_print;
    bool stalled[SD_MAX_DEVICES]; /* rank 0: the devices reported as stalled (record stage) */
    int n_stalled;
    sd_outputs out;
    sd_run_summary *sum;
} sd_pipe;

/* ---- one step ------------------------------------------------------------------------------------ */
typedef struct sd_step {
    step_info mine;
    bool end;                 /* the run ends before this step: budget spent, or nothing more will come */
    bool idle;                /* nothing arrived on any device: no step, the clock moved on */
    double T_cut;             /* the cut: the time the batch was taken */
    size_t taken;             /* stream samples taken from the ring */
    int64_t B, Bstream;       /* global batch (stream + injected), its stream part */
    double next_any;          /* the earliest next arrival over the devices (virtual clock) */
    double modelled_compute;  /* the slowest device's modelled compute (device profiles) */
    double modelled_comm;     /* the exchange's modelled time (comm/cost.h) */
    double modelled_comm_lat; /* its latency part (the same collectives over a link of infinite bandwidth) */
    double compute, comm_s;   /* what the clock charged for them */
    bool async_up;            /* the batch went up with upload_async while the records were exchanged */
    float loss;               /* this device's loss (sum over its batch / B) */
    float global_loss;        /* the weighted mean loss over every device */
    sd_compress_step cs;
    uint64_t step_bytes;      /* wire bytes of this step's exchange */
    float lr_scale;
    double T_end;             /* the step's end on the clock */
    /* wall-clock stamps of the step's phases (sd_clock_now): where they sit on the timeline is the
     * clock's business (clock.h, trace_step) */
    double w_iter, w_cut, w_up, w_fwd, w_train0, w_train1, w_exch1, w_red, w_opt;
    bool xfer_known;          /* the backend counts its host <-> device copies (CUDA) */
    sd_transfer_stats xfer;   /* this step's, from the end of the previous step (its evaluation excluded) */
} sd_step;

/* ---- stages (each in its own file) ------------------------------------------------------------- */
sd_status stage_stop(sd_pipe *p, bool *stopped);           /* checkpoint.c */
sd_status stage_cut(sd_pipe *p, sd_step *s);               /* cut.c */
sd_status stage_inject(sd_pipe *p, sd_step *s);            /* inject.c */
sd_status stage_agree(sd_pipe *p, sd_step *s);             /* agree.c */
sd_status stage_train(sd_pipe *p, sd_step *s);             /* train.c */
sd_status stage_exchange(sd_pipe *p, sd_step *s);          /* exchange.c */
sd_status stage_update(sd_pipe *p, sd_step *s);            /* update.c */
sd_status stage_record(sd_pipe *p, sd_step *s);            /* record.c */
sd_status stage_evaluate(sd_pipe *p, sd_step *s);          /* evaluate.c */
void stage_progress(sd_pipe *p, const sd_step *s);         /* record.c */

/* ---- the pieces the stages share --------------------------------------------------------------- */
/* device.c */
sd_status sd_dev_setup(const sd_dist_inputs *in, int rank, int n, sd_dev *d);
void sd_dev_free(sd_dev *d);
sd_status sd_dev_grad_comm(const sd_experiment *e, sd_comm *comm, sd_dev *d);
sd_status sd_dev_stream_start(sd_pipe *p);                 /* the ingest thread (real clock) */
sd_status sd_dev_sum(sd_dev *d, sd_comm *comm, float *buf, size_t count);
sd_status sd_dev_host_view(sd_dev *d, float *dev, size_t count, float **view);
sd_status sd_dev_host_view_back(sd_dev *d, float *dev, const float *view, size_t count);
uint64_t sd_dev_wire_bytes(const sd_comm *comm, const sd_dev *d);
bool sd_momentum_corrected(const sd_experiment *e);
/* agree.c */
sd_status sd_share_records(sd_pipe *p, const step_info *mine);
uint64_t sd_ring_drops(const sd_ring_stats *s); /* every drop: truncations and every reason */
sd_status sd_stream_dead(sd_pipe *p, int j);
/* record.c */
sd_status sd_outputs_open(sd_outputs *o, const char *dir, const int64_t *resume_bytes);
void sd_outputs_printf(sd_outputs *o, int which, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
sd_status sd_outputs_flush(sd_outputs *o, int64_t *positions);
sd_status sd_outputs_close(sd_outputs *o);
void sd_json_num(char *buf, size_t n, double v);
/* checkpoint.c */
sd_status sd_pipe_restore(sd_pipe *p);
/* exchange.c */
sd_status sd_compressor_for(const sd_experiment *e, const sd_net *net, const sd_backend *be, int threads,
                            sd_compressor **out);

#endif
