/* clock.h: the trainer's time, as an interface with two implementations (docs/distributed.md,
 * "Clocks"). The stages ask the clock, never which clock it is:
 *   - virtual (clock_virtual.c): deterministic. Stream arrivals follow the rate models in virtual
 *     seconds (the clock delivers them from the source as it advances), compute is charged from
 *     the device profiles, communication from the bytes and the slowest link (comm/cost.h). A run
 *     on the local backend is bitwise reproducible; the training math is real either way.
 *   - real (clock_real.c): the wall clock. An ingest thread feeds each ring from its source, the
 *     step waits for the window (or for b samples), and compute and communication are measured.
 * Both are tables of function pointers, like the backends; a clock holds no per-run state of its
 * own: time lives in the pipe (sd_pipe.ls.T), so a checkpoint carries it. */
#ifndef SD_ENGINE_STEP_CLOCK_H
#define SD_ENGINE_STEP_CLOCK_H

#include "engine/step/pipeline.h"

typedef struct sd_clock_ops {
    const char *name; /* "virtual" or "real" (the experiment's spelling) */
    /* Starts the device's stream on this clock (after any restore): real starts the ingest thread;
     * virtual checks that the source can be played in virtual time. */
    sd_status (*start)(sd_pipe *p);
    /* Clock seconds now. */
    double (*now)(const sd_pipe *p);
    /* Waits until this step's batch is due (ddp: b samples on the slowest device; scadles: the end
     * of the window), takes it into the batch buffers and agrees with the other devices on the cut
     * (s->T_cut). s->end when the time budget is spent. */
    sd_status (*cut)(sd_pipe *p, sd_step *s);
    /* Nothing arrived on any device: moves time on; s->end when nothing more will arrive. */
    void (*idle)(sd_pipe *p, sd_step *s);
    /* Charges the step's compute (s->compute): virtual, the slowest device's modelled compute;
     * real, what this device measured since s->w_train0 (waiting for a GPU to finish first). */
    sd_status (*charge_compute)(sd_pipe *p, sd_step *s);
    /* Charges the exchange (s->comm_s): modelled (s->modelled_comm) or measured. */
    void (*charge_comm)(sd_pipe *p, sd_step *s);
    /* The step's end (s->T_end): cut + compute + communication, or the agreed wall reading. */
    sd_status (*end_step)(sd_pipe *p, sd_step *s);
    /* The timeline (engine/trace.h): where the stream wait, the step's phases and an evaluation
     * (wall seconds w0..w1) sit on this clock. */
    void (*trace_wait)(const sd_pipe *p, const sd_step *s);
    void (*trace_step)(const sd_pipe *p, const sd_step *s);
    void (*trace_eval)(const sd_pipe *p, double w0, double w1, double top1);
} sd_clock_ops;

struct sd_clock {
    const sd_clock_ops *ops;
};

/* The two clocks (static tables). */
const sd_clock *sd_clock_virtual(void);
const sd_clock *sd_clock_real(void);

/* Shared by both: a phase slice on this device's track (a NULL trace records nothing). */
void sd_trace_phase_slice(const sd_pipe *p, sd_trace_phase ph, double t0, double dur);

#endif
