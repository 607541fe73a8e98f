/* profile.h: the compute model of the virtual clock. A device profile gives a device's compute in
 * one of two forms: modelled (a fixed per-step cost plus samples / throughput) or measured (a
 * device profile file written by `scadles-bench --profile`: per model, the seconds of one training
 * step at each measured batch size, interpolated), either times a slowdown factor; and the
 * device's link (bandwidth, latency) that comm/cost.h turns into the time of a collective.
 * (Stream arrival times live in stream/rate.h.) The training math is real under both clocks; only
 * time is modelled. The file format: docs/experiments.md, "Device profile files". */
#ifndef SD_ENGINE_PROFILE_H
#define SD_ENGINE_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_PROFILE_PATH_LEN 256        /* a device profile file's path, with the NUL */
#define SD_PROFILE_MAX_POINTS 32       /* batch sizes in one model's table */
#define SD_PROFILE_FILE_MAX (1 << 20)  /* device profile files larger than 1 MiB are refused */
#define SD_PROFILE_FORMAT "scadles-device-profile"
#define SD_PROFILE_VERSION 1

typedef struct sd_device_profile {
    double samples_per_s;   /* modelled form: training throughput (forward + backward) of the device */
    double step_overhead_s; /* modelled form: fixed cost per step (kernel launches, batch assembly) */
    double bandwidth_bps;   /* link bandwidth, bits per second */
    double latency_s;       /* link latency per message */
    char profile[SD_PROFILE_PATH_LEN]; /* measured form: a device profile file ("": the modelled form) */
    double slowdown;        /* compute time x slowdown, in either form (> 0; 1: as modelled or measured) */
} sd_device_profile;

/* The documented default profile (docs/distributed.md): 2000 samples/s, 5 ms per step,
 * 100 Mbit/s, 1 ms, no profile file, slowdown 1. */
sd_device_profile sd_device_profile_default(void);

/* One model's table of a device profile file: the median seconds of one step at each measured
 * batch size, and the straight line fitted to them (used beyond the ends of the table). */
typedef struct sd_compute_table {
    int n;                                /* points, 1..SD_PROFILE_MAX_POINTS */
    double batch[SD_PROFILE_MAX_POINTS];  /* increasing integers >= 1 */
    double seconds[SD_PROFILE_MAX_POINTS];/* > 0, non-decreasing with the batch */
    double overhead_s, per_sample_s;      /* the fit: seconds ~ overhead_s + per_sample_s x batch (per_sample_s >= 0) */
    int threads, concurrency;             /* how the file says it was measured */
} sd_compute_table;

/* Reads the table of `model` (measured at channel multiplier `width`) from the device profile
 * file `path`. Unreadable: SD_ERR_IO; not JSON: SD_ERR_FORMAT (path:line:column); not a device
 * profile, no table for the model or the width, a table that is empty, too long, has batches that
 * do not increase or times that are negative, not finite or decrease with the batch:
 * SD_ERR_INVALID. Every message starts with the path, names the key in the file and the fix. */
sd_status sd_compute_table_load(const char *path, const char *model, double width, sd_compute_table *out);

/* Seconds of one step on `batch` samples from a table: 0 for batch <= 0; piecewise linear
 * between the measured points; beyond the last point the last time plus per_sample_s for each
 * further sample; below the first, the first time less per_sample_s for each missing sample, but
 * never less than the first point's time per sample times the batch. */
double sd_compute_table_seconds(const sd_compute_table *t, int batch);

/* What the virtual clock charges a device: its profile's form, resolved. */
typedef struct sd_compute_model {
    bool measured;           /* the table (true) or step_overhead_s + batch / samples_per_s */
    double samples_per_s, step_overhead_s;
    double slowdown;
    sd_compute_table table;  /* measured */
} sd_compute_model;

/* The compute model of a device profile: the modelled form as it is, or the measured form with
 * the table of `model` at `width` read from the profile's file (sd_compute_table_load's errors). */
sd_status sd_compute_model_make(const sd_device_profile *p, const char *model, double width, sd_compute_model *out);

/* Modelled compute time of one step on `batch` samples (0 samples: no step, 0 s):
 * slowdown x (step_overhead_s + batch / samples_per_s), or slowdown x the table's seconds. */
double sd_compute_time(const sd_compute_model *m, int batch);

#ifdef __cplusplus
}
#endif

#endif
