/* distributed.h: distributed ScaDLES training. N devices, each with its own stream (a replay of
 * its partition at its rate, or, under the real clock, a Kafka or MQTT topic), bounded buffer, replica of the model and optimizer, synchronised
 * every step through a collective backend (comm/). Two modes (docs/distributed.md):
 *   ddp      every device waits until its buffer holds the fixed batch b and trains on exactly b;
 *            equal-weight average of the gradients; the reference learning rate.
 *   scadles  every window each device trains on min(buffered, cap) samples (0 is allowed: weight
 *            0); gradients weighted by b_i / sum(b); lr = lr_ref x sum(b) / (N x b_ref).
 * Under the virtual clock, time is modelled (stream arrivals, device profiles, ring-collective
 * costs) and a run on the local backend is bitwise reproducible. */
#ifndef SD_ENGINE_DISTRIBUTED_H
#define SD_ENGINE_DISTRIBUTED_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "comm/comm.h"
#include "engine/experiment.h"
#include "engine/trace.h"
#include "stream/dataset.h"
#include "stream/partition.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one run (one mode, one seed) achieved. Written by rank 0 (identical on every rank). */
typedef struct sd_run_summary {
    sd_exp_mode mode;
    uint64_t seed;
    double time_to_target_s;   /* clock seconds until the target accuracy; < 0: not reached */
    double final_accuracy;     /* top-1 of the last evaluation */
    double final_loss;         /* and its test loss, */
    double final_top5;         /* and (rank 0 only) its top-5; neither is in summary.json */
    double best_accuracy;
    int64_t steps;
    int64_t skipped_steps;     /* updates skipped for a non-finite loss or gradient (nonfinite: skip) */
    double clock_s;            /* clock seconds the run covered */
    double wall_s;
    uint64_t samples_trained;  /* sum of global batches (stream samples only) */
    uint64_t samples_injected; /* pool samples mixed into batches */
    uint64_t samples_dropped;  /* buffer policy drops + truncations + decode drops, all devices */
    uint64_t peak_buffer;      /* largest buffer occupancy of any device (samples) */
    int stalled_devices;       /* devices whose stream was stalled at the end: SD_MSG_SEQ_STALL or more messages
                                  in a row refused by the sequence check (docs/stream-format.md) */
    uint64_t bytes_sent;       /* wire bytes of the gradient collectives, all devices */
    uint64_t shared[64];       /* per device: samples contributed to the injection pool */
    int devices;
    bool bn_identical;         /* every device ended with bitwise the same BN running statistics */
    double speedup_vs_ddp;     /* filled by the experiment runner; 0 when there is no ddp run */
    bool stopped;              /* the run stopped early (stop_at or a stop request) and wrote its checkpoint */
    int stop_signal;           /* stopped by a stop request: its signal number (0: stop_at) */
} sd_run_summary;

/* How an experiment is driven beyond its configuration: exact resume from a checkpoint, a
 * deterministic stop, a stop request (engine/signals.h), and how the invocation ended. A stopped
 * run writes a checkpoint directory (<out_dir>/checkpoint: one safetensors file per rank and
 * run.safetensors, docs/checkpoints.md); resuming from it with the same experiment continues the
 * run bitwise identically under the virtual clock: metrics.jsonl and eval.jsonl are truncated to
 * where the checkpoint was taken and appended to. */
typedef struct sd_run_control {
    const char *resume_dir;   /* a checkpoint directory to continue from; NULL or "": start afresh */
    int64_t stop_at;          /* > 0: stop with a checkpoint once a run of this invocation has done this
                                 many steps (a run resumed at or past it goes on to the next stop) */
    const atomic_int *stop_flag; /* nonzero (the signal's number): every device finishes its
                                 step, all agree on the step, checkpoint, stop; NULL: none */
    bool quiet;               /* no progress line even on a terminal */
    FILE *eval_log;           /* rank 0: a line per evaluation (the single-device trainer: stdout); NULL: none */
    /* out */
    bool stopped;             /* the invocation ended early with a checkpoint */
    int stop_signal;          /* the signal that asked for it (0: stop_at) */
    int64_t stopped_step;     /* steps done in the stopped run */
    sd_exp_mode stopped_mode;
    uint64_t stopped_seed;
    char checkpoint_dir[SD_EXP_PATH_LEN + 16];
    sd_run_summary last;      /* the summary of the last run this invocation trained (rank 0's) */
} sd_run_control;

/* The read-only inputs every device of one run shares (loaded once per process). */
typedef struct sd_dist_inputs {
    const sd_experiment *e;
    sd_exp_mode mode;
    uint64_t seed;
    const sd_dataset *train, *test;
    const sd_partition *part;
    const char *run_dir;       /* where rank 0 writes metrics.jsonl and eval.jsonl */
    int threads_per_device;    /* CPU kernel threads of each device */
    bool quiet;                /* no progress line */
    FILE *eval_log;            /* rank 0: one line per evaluation (the single-device trainer: stdout); NULL: none */
    sd_trace *trace;           /* timeline (engine/trace.h), shared by the device threads; NULL: off */
    int trace_pid;             /* this run's process in the trace (run index + 1) */
    int run_index;             /* which mode x seed run this is (seed-major), for checkpoints */
    const char *experiment_json; /* the checkpoint identity (sd_dist_ckpt_experiment_json); NULL: no checkpoints */
    const char *checkpoint_dir;  /* where a stopped run writes its rank files */
    const char *resume_dir;      /* this run continues from the rank files there; NULL: from the start */
    int64_t resume_step;         /* the step the checkpoint holds (every rank checks its file against it) */
    int64_t stop_at;             /* sd_run_control.stop_at */
    const atomic_int *stop_flag;
    const sd_run_summary *done_runs; /* the summaries of the runs finished before this one (run.safetensors);
                                        Kafka sources write that file themselves before committing */
    const sd_compute_model *compute; /* every device's compute model (sd_dist_compute_models), built once per
                                        process; NULL: each device builds them (reading the profile files) */
} sd_dist_inputs;

/* The compute model of each of e's devices.count devices into out (engine/profile.h: modelled, or
 * the experiment's model's table of the profile file the device names; a file shared by several
 * devices is read once). Reads files with cJSON: call it from one thread at a time. */
sd_status sd_dist_compute_models(const sd_experiment *e, sd_compute_model *out);

/* The device loop of rank comm->rank; returns when the run ends, or when it stops early with its
 * rank file written (out->stopped). Every rank must call it. */
sd_status sd_dist_device_run(const sd_dist_inputs *in, sd_comm *comm, sd_run_summary *out);

/* Runs every mode x seed of a resolved experiment on the local backend (N device threads in this
 * process), or, under mpirun or a torchrun-style launch, on the MPI or TCP backend (pass the communicator:
 * one rank per device).
 * Prints the comparison table and writes summary.json, the resolved config and a plot (gnuplot,
 * when installed) under e->out_dir. comm NULL = local backend. */
sd_status sd_experiment_run(const sd_experiment *e, sd_comm *mpi_comm, FILE *table);
/* The same with resume, stop_at and stop requests (ctl may be NULL: sd_experiment_run). When the
 * invocation stops early, ctl says where and the checkpoint is complete; summary.json and the plot
 * are written by the invocation that finishes the experiment. A checkpoint of another experiment
 * configuration or device count, or a damaged one, is refused (SD_ERR_INVALID / SD_ERR_FORMAT
 * naming the file and what differs) before anything is trained. */
sd_status sd_experiment_run_ctl(const sd_experiment *e, sd_comm *mpi_comm, FILE *table, sd_run_control *ctl);

/* Writes summary.json (what sd_experiment_run leaves in out_dir) to path: the experiment's name,
 * target and device count, and one object per run (mode, seed, time to target, accuracies, sample
 * counts, bytes, steps, speedup, ...; docs/distributed.md). SD_ERR_IO naming path when the file
 * cannot be created or written. */
sd_status sd_run_summaries_write(const sd_experiment *e, const sd_run_summary *runs, int nruns, const char *path);

#ifdef __cplusplus
}
#endif

#endif
