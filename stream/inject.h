/* inject.h: the data-injection pool. ScaDLES counters non-IID streams by mixing into every batch
 * a few samples of classes the device lacks; the reference draws them from a central per-class
 * loader over the whole dataset, which assumes every device can see every other device's data.
 * Here the only way a sample moves between devices is this pool: devices contribute samples
 * explicitly (dataset indices of their own data), the pool keeps them in bounded per-class
 * buckets, draws hand them to other devices, and per-device counters account for every sample
 * shared, given and received. Definitions, the reference's behaviour and where we differ:
 * docs/partition-injection.md.
 *
 * Not thread-safe: calls on one pool must not overlap. The trainer contributes and draws at step
 * boundaries in device order, which is also what makes a run reproducible. */
#ifndef SD_STREAM_INJECT_H
#define SD_STREAM_INJECT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/rng.h"
#include "base/status.h"
#include "stream/dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_INJECT_MAX_DEVICES 4096
#define SD_INJECT_MAX_ENTRIES ((int64_t)1 << 28) /* classes x capacity_per_class at most */

typedef struct sd_inject_pool sd_inject_pool;

/* Per-device counters, monotonic since the pool was created. Over all devices:
 *   sum(drawn_by_others) = sum(received) = samples handed out by sd_inject_draw,
 *   drawn_by_others[i] = sum over j of flow(i, j),  received[j] = sum over i of flow(i, j),
 *   flow(i, i) = 0,  shared = evicted + what the device still has in the pool. */
typedef struct sd_inject_stats {
    uint64_t shared;          /* samples the device contributed to the pool */
    uint64_t evicted;         /* of those, replaced by newer ones when their class bucket was full */
    uint64_t held;            /* of those, in the pool now */
    uint64_t drawn_by_others; /* times one of its samples was handed to another device */
    uint64_t received;        /* samples it drew from the pool (all from other devices) */
    uint64_t draws;           /* sd_inject_draw calls for it */
    uint64_t short_draws;     /* of those, calls that returned fewer than the full k x m (see below) */
} sd_inject_stats;

/* A pool over dataset d (labels are read from it; d must outlive the pool) for `devices` devices
 * (1..SD_INJECT_MAX_DEVICES), with a bucket of capacity_per_class entries for every class
 * (>= 1; classes x capacity <= SD_INJECT_MAX_ENTRIES). A full bucket is a ring: a new
 * contribution replaces the oldest entry of that class (first in, first out). */
sd_status sd_inject_pool_create(const sd_dataset *d, int devices, int64_t capacity_per_class, sd_inject_pool **out);
void sd_inject_pool_destroy(sd_inject_pool *p);

/* Device `device` puts the samples dataset_indices[0..n) (its own data) into the pool, in order:
 * each goes to the bucket of its label as (dataset index, label, device). Every class it
 * contributes becomes one of its own classes for good (never injected into it). All indices are
 * checked before anything changes: one outside [0, d->n) is SD_ERR_INVALID naming it. A sample
 * contributed twice is held twice. */
sd_status sd_inject_pool_contribute(sd_inject_pool *p, int device, const int64_t *dataset_indices, int64_t n);

/* Contributes a share of indices[0..n): ceil(share x n) of them (share in [0, 1]), chosen without
 * replacement by a partial Fisher-Yates over a copy (draw t swaps position t with
 * t + sd_rng_below(n - t)), contributed in the chosen order. indices is not modified. */
sd_status sd_inject_pool_contribute_share(sd_inject_pool *p, int device, const int64_t *indices, int64_t n,
                                          double share, sd_rng *rng);

/* The reference's sizes: k = ceil(alpha x devices_total) classes and m = ceil(beta x local_batch_n)
 * samples from EACH of them, so at most k x m samples per draw. The ceilings are taken as
 * ceil(x - 1e-9) so that 0.28 x 25 is 7 (plain floating point gives 7.000000000000001 -> 8).
 * Returns k x m, or -1 when an argument is out of range (see sd_inject_draw). */
int64_t sd_inject_draw_max(int local_batch_n, double alpha, double beta, int devices_total);

/* Draws injected samples for one batch of `device`:
 *  1. eligible classes, ascending: those the device has never contributed and whose bucket holds
 *     at least one sample from another device;
 *  2. k' = min(k, eligible) of them chosen uniformly without replacement (partial Fisher-Yates:
 *     for t = 0..k'-1 swap eligible[t] with eligible[t + sd_rng_below(eligible - t)]);
 *  3. from each chosen class in that order, m' = min(m, candidates) of the bucket's entries
 *     contributed by other devices (oldest first), again by partial Fisher-Yates: distinct entries
 *     within one draw. Drawing copies: the samples stay in the pool for later draws.
 * Writes the dataset indices to out_indices[0..*n_out), grouped by class in the chosen order.
 * alpha and beta lie in [0, 1]; local_batch_n >= 0; devices_total >= 1; max_out must be at least
 * sd_inject_draw_max(...) whatever the pool holds. An empty pool (or no eligible class) gives
 * *n_out = 0 and SD_OK. A rejected call changes nothing, rng included. */
sd_status sd_inject_draw(sd_inject_pool *p, int device, int local_batch_n, double alpha, double beta,
                         int devices_total, sd_rng *rng, int64_t *out_indices, int max_out, int *n_out);

/* Counters of one device; SD_ERR_INVALID for a device out of range. */
sd_status sd_inject_pool_stats(const sd_inject_pool *p, int device, sd_inject_stats *out);
/* How many samples contributed by `from` were handed to `to`; 0 for devices out of range. */
uint64_t sd_inject_pool_flow(const sd_inject_pool *p, int from, int to);
/* Entries held in the bucket of class `cls` now (-1 when cls is out of range). */
int64_t sd_inject_pool_held(const sd_inject_pool *p, int cls);
/* Whether `cls` is one of device's own classes (it contributed that class). */
bool sd_inject_pool_owns(const sd_inject_pool *p, int device, int cls);
/* One line per device: shared, evicted, held, drawn by others, received, draws. */
sd_status sd_inject_pool_print(const sd_inject_pool *p, FILE *f);

/* ---- checkpoints --------------------------------------------------------------------------------
 * Draws change only the counters (drawn_by_others, received, draws, short_draws) and the flow
 * matrix; the buckets change only by contributions. A checkpoint therefore saves every device's
 * counters (sd_inject_pool_stats) and the flows (sd_inject_pool_flow), and a resumed run rebuilds
 * the pool by the same contributions and restores them: stats[devices], flow[devices x devices]
 * (flow[from * devices + to]). SD_ERR_INVALID, and the pool unchanged, when a device's shared,
 * evicted or held count differs from the pool's (the pool was built from other contributions) or
 * the flows do not add up to the counters. */
sd_status sd_inject_pool_restore_counters(sd_inject_pool *p, const sd_inject_stats *stats, const uint64_t *flow);

#ifdef __cplusplus
}
#endif

#endif
