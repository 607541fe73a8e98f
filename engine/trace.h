/* trace.h: a Chrome-trace writer (the JSON Object format, {"traceEvents": [...]}) for the
 * distributed trainer's timeline: one track per device and run, a slice per phase of a step
 * (stream wait, batch assembly, forward, backward, compression, communication, optimizer,
 * evaluation) and counters (buffer occupancy, batch sizes, bytes, compression on/off). The file
 * opens in chrome://tracing and https://ui.perfetto.dev (docs/observability.md).
 *
 * Timestamps are seconds on whatever clock the caller passes (virtual seconds under the virtual
 * clock, wall seconds under the real one); they are written as microseconds. Every call is
 * thread-safe (one mutex per trace; device threads share one trace) and output is buffered.
 * A NULL trace is valid everywhere and records nothing, so callers can trace unconditionally.
 * Event calls return SD_ERR_INVALID for bad arguments (nothing is written) and SD_ERR_IO when a
 * write fails; failures are also remembered, and sd_trace_close() reports the first one, so a
 * trainer may ignore per-event results and check only the close. */
#ifndef SD_ENGINE_TRACE_H
#define SD_ENGINE_TRACE_H

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_trace sd_trace;

/* The phases of one training step, in the order they happen on a device. */
typedef enum sd_trace_phase {
    SD_TRACE_STREAM_WAIT = 0, /* waiting for the stream: ddp until b samples, scadles until the window ends */
    SD_TRACE_BATCH_ASSEMBLY,  /* take from the ring buffer, decode/normalise, injection, upload */
    SD_TRACE_FORWARD,
    SD_TRACE_BACKWARD,
    SD_TRACE_COMPRESSION,     /* gradient compression (Top-k), when on */
    SD_TRACE_COMMUNICATION,   /* the gradient allreduce */
    SD_TRACE_OPTIMIZER,
    SD_TRACE_EVALUATION,
    SD_TRACE_PHASE_COUNT
} sd_trace_phase;

/* "stream_wait", "batch_assembly", "forward", "backward", "compression", "communication",
 * "optimizer", "evaluation"; "unknown" outside the enum. */
const char *sd_trace_phase_name(sd_trace_phase p);

/* A numeric argument shown in the viewer's details pane of a slice. */
typedef struct sd_trace_arg {
    const char *key;
    double value;
} sd_trace_arg;

/* Creates (truncates) the trace file at `path`. */
sd_status sd_trace_open(const char *path, sd_trace **out);

/* Names a process (a run: tid < 0, e.g. "scadles seed 1") or a thread (a device: tid >= 0,
 * e.g. "Device 3"); also sets the sort index to pid / tid so tracks appear in numeric order. */
sd_status sd_trace_meta(sd_trace *t, int pid, int tid, const char *name);

/* A complete slice ("ph":"X") on track (pid = run, tid = device) from ts_s to ts_s + dur_s
 * seconds. name is the phase (sd_trace_phase_name), cat a category ("step", "eval"; NULL: none).
 * ts_s and dur_s must be finite, dur_s >= 0, |ts_s| + dur_s <= 9e9. Times are written on a
 * nanosecond grid and the end (not the duration) is rounded, so a slice starting at exactly
 * ts_s + dur_s of the previous one on the same track abuts it in the file too (no overlap). */
sd_status sd_trace_complete(sd_trace *t, int pid, int tid, const char *name, const char *cat, double ts_s, double dur_s);
/* The same with numeric arguments (batch size, samples, measured wall seconds, ...). */
sd_status sd_trace_complete_args(sd_trace *t, int pid, int tid, const char *name, const char *cat, double ts_s,
                                 double dur_s, const sd_trace_arg *args, int nargs);

/* A counter sample ("ph":"C"): the counter track `name` of process pid takes `value` for series
 * `key` from ts_s on. Counters belong to a process (a run), not a thread: give per-device
 * counters their own names ("buffer device 3"). value must be finite. */
sd_status sd_trace_counter(sd_trace *t, int pid, const char *name, double ts_s, const char *key, double value);

/* A string recorded in the file's "otherData" (shown by the viewers as metadata), e.g.
 * ("clock", "virtual"), ("experiment", "uniform_s1"). Keeps at most 16 entries; a key set
 * twice keeps the last value. */
sd_status sd_trace_info(sd_trace *t, const char *key, const char *value);

/* Writes buffered events to the file (the file is still incomplete JSON until the close). */
sd_status sd_trace_flush(sd_trace *t);

/* Writes the closing bracket and otherData, closes the file and frees t (NULL: no-op). Returns
 * the first failure of any earlier call on t, else the close's own result. */
sd_status sd_trace_close(sd_trace *t);
/* The same close (the file is complete JSON, t is freed) for cleanup paths that are already
 * returning another failure: reports nothing and leaves the thread's error message alone. */
void sd_trace_close_quietly(sd_trace *t);

#ifdef __cplusplus
}
#endif

#endif
