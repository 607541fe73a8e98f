/* rate.h: when samples arrive. A rate model says how fast one device's stream runs (a fixed rate,
 * a per-device rate drawn from uniform[lo, hi] or a truncated normal, or a time-varying trace read
 * from CSV) and how arrivals are spaced (evenly, or as a Poisson process). An sd_arrivals generator,
 * seeded by (seed, device), yields successive arrival times in virtual seconds, identically on
 * every run. Design: docs/streams.md. (The wall clock is base/clock.h.) */
#ifndef SD_STREAM_RATE_H
#define SD_STREAM_RATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"
#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_RATE_MAX 1e9                  /* samples/s: the largest rate a model may have */
#define SD_RATE_TRACE_MAX_POINTS 1000000 /* rows of a trace */
#define SD_RATE_TRACE_MAX_LINE 256       /* characters of one CSV line */
#define SD_RATE_TRACE_MAX_TIME 1e9       /* seconds */

/* ---- rate models ------------------------------------------------------------------------------- */
typedef enum sd_rate_kind {
    SD_RATE_FIXED = 0, /* `rate` samples/s */
    SD_RATE_UNIFORM,   /* the device's rate is drawn once from uniform[lo, hi] */
    SD_RATE_NORMAL,    /* drawn once from normal(mu, sigma) truncated to [lo, hi] */
    SD_RATE_TRACE      /* rate(t) from a trace, piecewise constant */
} sd_rate_kind;

typedef enum sd_arrival_kind {
    SD_ARRIVAL_CONSTANT = 0, /* evenly spaced: the k-th arrival is where the expected count reaches k */
    SD_ARRIVAL_POISSON       /* a (possibly inhomogeneous) Poisson process with that rate */
} sd_arrival_kind;

/* A time-varying rate: rate[i] holds on [time[i], time[i+1]); the last rate holds after the last
 * time; before time[0] the rate is 0. */
typedef struct sd_rate_trace {
    size_t n;
    double *time;  /* strictly increasing, >= 0 */
    double *rate;  /* >= 0, finite, <= SD_RATE_MAX */
    double *cum;   /* cum[i] = expected arrivals by time[i] */
} sd_rate_trace;

typedef struct sd_rate_model {
    sd_rate_kind kind;
    sd_arrival_kind arrival;
    double rate;                 /* FIXED */
    double lo, hi;               /* UNIFORM: the range; NORMAL: the truncation (0 <= lo < hi; hi may be INFINITY) */
    double mu, sigma;            /* NORMAL */
    const sd_rate_trace *trace;  /* TRACE: not owned; must outlive the generators */
} sd_rate_model;

/* Convenience constructors (values are checked by sd_rate_model_check / sd_arrivals_init). */
sd_rate_model sd_rate_fixed(double rate, sd_arrival_kind arrival);
sd_rate_model sd_rate_uniform(double lo, double hi, sd_arrival_kind arrival);
sd_rate_model sd_rate_normal(double mu, double sigma, double lo, double hi, sd_arrival_kind arrival);
sd_rate_model sd_rate_traced(const sd_rate_trace *trace, sd_arrival_kind arrival);

/* SD_ERR_INVALID naming the bad field: a negative, NaN or too large rate, lo > hi, sigma <= 0, a
 * truncation interval that holds less than 1e-6 of the normal's mass, a missing trace. */
sd_status sd_rate_model_check(const sd_rate_model *m);

/* Parses a trace from CSV text: lines "time,rate" (seconds, samples/s), optional header line
 * "time,rate", blank lines and lines starting with '#' ignored, spaces around fields allowed.
 * `name` (the file name) starts every error, with the line number: "trace.csv:7: ...".
 * SD_ERR_FORMAT for a malformed line, a time not after the previous one, a negative / NaN / too
 * large value, a line over SD_RATE_TRACE_MAX_LINE characters, more than SD_RATE_TRACE_MAX_POINTS
 * rows, or no rows. On failure *out is left empty. */
sd_status sd_rate_trace_parse(const char *text, size_t len, const char *name, sd_rate_trace *out);
/* Reads a trace file (SD_ERR_IO naming the path when it cannot be read). */
sd_status sd_rate_trace_load(const char *path, sd_rate_trace *out);
void sd_rate_trace_free(sd_rate_trace *t);
/* The trace's rate at time t. */
double sd_rate_trace_at(const sd_rate_trace *t, double time);

/* ---- arrivals ---------------------------------------------------------------------------------- */
/* One device's arrival times. */
typedef struct sd_arrivals {
    sd_rate_model model;
    sd_rng rng;
    double rate;     /* the device's rate (FIXED, UNIFORM, NORMAL); TRACE: 0 */
    double target;   /* expected-count level of the next arrival */
    uint64_t count;  /* arrivals produced */
    size_t seg;      /* TRACE: the segment the last arrival fell in */
} sd_arrivals;

/* Seeds the generator from (seed, device): the device's rate is drawn first (UNIFORM, NORMAL),
 * then the arrivals. Checks the model. */
sd_status sd_arrivals_init(sd_arrivals *g, const sd_rate_model *m, uint64_t seed, uint32_t device);
/* The next arrival time in virtual seconds since the stream started (non-decreasing), or
 * INFINITY when the rate is 0 from then on. */
double sd_arrivals_next(sd_arrivals *g);

#ifdef __cplusplus
}
#endif

#endif
