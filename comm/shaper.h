/* shaper.h: an emulated thin link for runs on the real clock. A shaped communicator wraps
 * another one (local, MPI, ...) and, after each collective, holds this rank back the way a
 * token-bucket link of the device's bandwidth would have: the bytes the rank sent (the ring
 * accounting of comm.h, i.e. what the virtual clock charges) are paid for with tokens that refill
 * at bandwidth / 8 bytes per second up to a bucket of burst_bytes; a call that finds too few
 * tokens waits for the missing ones. Each ring hop of the collective also costs latency_s.
 *
 * The virtual clock charges the same bytes and hops with engine/profile.h's formulas, so a run on
 * the real clock with emulation and the same run on the virtual clock see comparable link costs
 * (the bucket lets short bursts through at once; with burst_bytes = 0 it is a plain rate limit).
 * To shape a real network link instead, see docs/compression.md ("Shaping a real link").
 *
 * The data still moves at the inner backend's speed; only completion is delayed, so the results
 * are the inner backend's, bitwise. */
#ifndef SD_COMM_SHAPER_H
#define SD_COMM_SHAPER_H

#include "base/clock.h"
#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_SHAPER_DEFAULT_BURST_BYTES 65536.0

typedef struct sd_shaper_config {
    double bandwidth_bps; /* token rate in bits per second, > 0 */
    double latency_s;     /* per ring hop, >= 0 */
    double burst_bytes;   /* bucket depth in bytes, >= 0 (the bucket starts full) */
    /* The clock; NULL: sd_clock_now / sd_clock_sleep_until (stream/rate.h). Tests pass a fake. */
    double (*now)(void *clock_ctx);
    void (*sleep_until)(void *clock_ctx, double t);
    void *clock_ctx;
} sd_shaper_config;

/* The token bucket both link models share (the shaper in bytes, the virtual clock in seconds of the
 * link): `*tokens` held `idle` seconds ago, refilled at `rate` per second up to `depth`, then
 * `amount` taken. Returns the seconds until the missing tokens have arrived (0 when there were
 * enough); the bucket is then empty, or holds what was left. */
static inline double sd_token_bucket_take(double *tokens, double depth, double rate, double idle, double amount) {
    double t = *tokens + (idle > 0 ? idle * rate : 0);
    if (t > depth) t = depth;
    if (t >= amount) {
        *tokens = t - amount;
        return 0;
    }
    *tokens = 0;
    return (amount - t) / rate;
}

/* A communicator with inner's rank and size that shapes every collective of inner. inner stays
 * owned by the caller and must outlive the result; sd_comm_destroy on the result frees only the
 * wrapper. The result's counters are kept by the sd_comm_* wrappers as for any backend. */
sd_status sd_comm_shaped_create(sd_comm *inner, const sd_shaper_config *cfg, sd_comm **out);

/* Seconds this rank was held back so far (token waits plus hop latencies). 0 for a communicator
 * that is not shaped. */
double sd_comm_shaped_delay_s(const sd_comm *c);

#ifdef __cplusplus
}
#endif

#endif
