/* compress.h: gradient compression for the edge exchange: Top-k by magnitude with a per-device
 * error-feedback residual, exchanged as (u32 index, value) pairs in ONE allgatherv per step and
 * summed in rank order; the policies that choose between that and the dense allreduce (off,
 * always, paper = the ScaDLES vote, gain = GraVAC-style ratio stepping); the exact bytes sent.
 * docs/compression.md has the rules, the wire format and the measured costs.
 *
 * Use (one compressor per device, created with the same config and layout on every rank):
 *
 *     sd_compress_config cc;
 *     sd_compress_config_default(&cc);   // then the experiment's "compression" section
 *     sd_compressor *z;
 *     TRY(sd_compressor_create(&cc, count, nlayers, layer_offset, layer_count, threads, &z));
 *     ... per step, after backward (gradient already weighted by b_i / B):
 *     sd_compress_step s;
 *     TRY(sd_compress_exchange(z, comm, sd_net_grads(net), &s)); // grads = sum over ranks
 *     comm_time = sd_compress_step_time(&s, n, min_bandwidth, max_latency);
 *     ... s.bytes_sent, s.compressed, s.ratio, ... go to metrics.jsonl
 *     sd_compressor_destroy(z);
 *
 * Every rank must call sd_compress_exchange the same number of times, in the same order as its
 * other collectives. The gradient block is in the compressor's backend memory (host memory for
 * sd_compressor_create; see sd_compressor_create_on). Deterministic: the same inputs give bitwise identical results on every rank
 * and in every run, whatever the thread count.
 *
 * Error feedback. Each step the device works on a = g + residual. On a SPARSE step it sends C(a)
 * (Top-k of a, values as sent on the wire, i.e. after the optional f16 rounding) and keeps
 * residual = a - C(a). On a DENSE step (policy off, or the paper vote said no) it sends all of a
 * and resets residual = 0. Either way, over any number of steps,
 *     (everything the device sent) + residual == (sum of its gradients)
 * (exactly in exact arithmetic; in float, up to the rounding of the additions a = g + residual).
 * The reference code keeps updating the residual on dense steps without sending it; we do not:
 * a dense step flushes the residual, so no gradient mass is ever lost or delayed past it. */
#ifndef SD_COMM_COMPRESS_H
#define SD_COMM_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/f16.h"
#include "base/status.h"
#include "comm/comm.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gain policy defaults (used when the config leaves them 0) */
#define SD_COMPRESS_GAIN_WINDOW 10  /* steps per decision window */
#define SD_COMPRESS_GAIN_FACTOR 2.0 /* ratio step: divide or multiply by this */
#define SD_COMPRESS_F16_MAX SD_F16_MAX /* f16 values are saturated to +-this (the excess stays in the residual) */
#define SD_COMPRESS_HEADER_BYTES 8  /* per rank and step: u32 pairs, f32 gain */

/* When to compress (the experiment's compression.policy, docs/compression.md). */
typedef enum sd_compress_policy {
    SD_COMPRESS_OFF = 0, /* "off": dense allreduce */
    SD_COMPRESS_ALWAYS,  /* "always": Top-k + error feedback every step */
    SD_COMPRESS_PAPER,   /* "paper": the ScaDLES vote (mean relative norm loss <= delta) */
    SD_COMPRESS_GAIN     /* "gain": GraVAC-style ratio stepping between min_ratio and max_ratio */
} sd_compress_policy;

/* How a sparse step exchanges (the experiment's compression.exchange, docs/compression.md). */
typedef enum sd_compress_exchange {
    SD_EXCHANGE_ALLGATHER = 0, /* "allgather": one ring all-gather of every rank's pairs (bytes grow with n) */
    SD_EXCHANGE_ALLREDUCE,     /* "allreduce": the sparse allreduce (compress_allreduce.c): about 2k pairs per rank */
    SD_EXCHANGE_AUTO           /* "auto": per step, the one with the lower modelled time on the config's link */
} sd_sparse_exchange;

typedef struct sd_compress_config {
    sd_compress_policy policy;     /* off | always | paper | gain */
    double ratio;                  /* always, paper: Top-k fraction kept, (0, 1] */
    double delta;                  /* paper: vote threshold on the running mean of the relative norm loss, [0, 1] */
    bool per_layer;                /* Top-k per layer (true) or over the whole gradient */
    double min_ratio, max_ratio;   /* gain: the ratio ladder's range, 0 < min <= max <= 1 */
    double epsilon;                /* gain: threshold of the smoothed gain, (0, 1] */
    bool f16_values;               /* values as IEEE binary16 (6 bytes per pair instead of 8) */
    int gain_window;               /* gain: steps per decision (0: SD_COMPRESS_GAIN_WINDOW) */
    double gain_factor;            /* gain: ladder factor > 1 (0: SD_COMPRESS_GAIN_FACTOR) */
    double momentum;               /* momentum correction (DGC): 0 = off; in [0, 1): each rank keeps a
                                      velocity u = momentum x u + g and compresses u + residual instead
                                      of g + residual; sent entries of u are cleared (masking). The
                                      caller then applies the sum with plain SGD (no momentum). */
    sd_sparse_exchange exchange;   /* sparse steps: allgather (the library default), allreduce or auto */
    double link_bandwidth_bps;     /* auto: the link the choice models (bits/s, > 0; default 100 Mbit/s) */
    double link_latency_s;         /* auto: its latency per message (>= 0; default 1 ms) */
} sd_compress_config;

/* The experiment defaults (policy off, ratio 0.1, delta 0.3, per layer, 0.001..0.1, epsilon 0.9),
 * exchange allgather on a 100 Mbit/s, 1 ms link (experiments default to exchange auto). */
void sd_compress_config_default(sd_compress_config *c);

/* What one exchange did, identical on every rank except where marked "this rank". */
typedef struct sd_compress_step {
    bool compressed;         /* Top-k pairs were exchanged (false: dense allreduce) */
    bool voted;              /* a vote collective took place (policy paper) */
    int vote;                /* this rank: paper: its vote (1 = compress); always/gain 1; off 0 */
    int votes;               /* paper: ranks that voted to compress; always/gain: all ranks; off: 0 */
    double ratio;            /* the Top-k ratio used this step (0 for policy off) */
    uint64_t pairs;          /* this rank: pairs sent (0 on dense steps) */
    uint64_t pairs_total;    /* pairs over all ranks (0 on dense steps); allreduce: the pairs the owners kept */
    uint64_t payload_bytes;  /* this rank: its message: dense 4*count, sparse 8 + pairs*(4 + 4 or 2) */
    uint64_t gathered_bytes; /* sparse: all ranks' messages together (the allgather size; allreduce: the
                                owners' selections, its last all-gather); dense: 4*count */
    uint64_t dense_bytes;    /* 4 * count, for comparison */
    uint64_t bytes_sent;     /* this rank: wire bytes of every collective of the call (vote included),
                                by the ring accounting of comm.h: what metrics.jsonl reports */
    double norm;             /* this rank: ||a||, a = g + residual (0 for policy off) */
    double rel_loss;         /* this rank: (||a|| - ||C(a)||) / ||a|| (0 when ||a|| = 0 or policy off) */
    double mean_loss;        /* this rank: running mean of rel_loss over all steps so far, this one included
                                (policy paper votes with it: mean_loss <= delta) */
    double gain;             /* this rank: ||C(a)|| / ||a|| (1 when ||a|| = 0; 0 for policy off) */
    double gain_mean;        /* sparse steps: mean of gain over ranks, in rank order */
    double gain_smoothed;    /* gain: the window mean of gain_mean that made the last decision (0 before) */
    double next_ratio;       /* the ratio the next step will use */
    int exchange;            /* sparse steps: the exchange used (SD_EXCHANGE_ALLGATHER or _ALLREDUCE) */
    uint64_t header_bytes;   /* allreduce: every rank's row of region counts together (its first all-gather) */
    uint64_t a2a_max_bytes;  /* allreduce: the most bytes any rank sent in the alltoallv (the slowest link's) */
} sd_compress_step;

/* Policy state besides the residual, for checkpoints (all ranks hold the same except loss_sum). */
typedef struct sd_compress_state {
    uint64_t steps;          /* exchanges done */
    double loss_sum;         /* paper: sum of rel_loss (mean_loss = loss_sum / steps) */
    int level;               /* gain: ladder position (ratio = max(min_ratio, max_ratio / factor^level)) */
    int window_steps;        /* gain: steps into the current window */
    double window_gain_sum;  /* gain: sum of gain_mean over those steps */
    double last_window_gain; /* gain: the last decision's window mean */
} sd_compress_state;

typedef struct sd_compressor sd_compressor;

/* A compressor for a gradient block of `count` floats (count < 2^32) made of `nlayers` tensors
 * layer_offset[i], layer_count[i] that tile [0, count) exactly (any order). With per_layer the
 * Top-k is taken per tensor, k_i = ceil(ratio * layer_count[i]) clamped to [1, layer_count[i]];
 * otherwise over the whole block, k = ceil(ratio * count) (the layers are then only checked).
 * threads: CPU threads for the Top-k, norms and scatter (<= 0: all online cores); the compressor
 * keeps a CPU backend of its own (kernel context and scratch), so it works the same beside any
 * backend, on host memory. */
sd_status sd_compressor_create(const sd_compress_config *c, size_t count, int nlayers, const size_t *layer_offset,
                               const size_t *layer_count, int threads, sd_compressor **out);
/* The same on a given backend (kernels/backend.h; borrowed: it must outlive the compressor): the
 * residual, velocity, pairs and gather buffer live in its memory and the per-element work runs
 * through its table (topk_select, cz_*), so with a CUDA backend the gradient passed to
 * sd_compress_exchange_on is GPU memory and nothing of it crosses to the host. NULL: a CPU backend
 * of the compressor's own with `threads` threads (what sd_compressor_create does). */
sd_status sd_compressor_create_on(const sd_compress_config *c, size_t count, int nlayers, const size_t *layer_offset,
                                  const size_t *layer_count, const sd_backend *be, int threads, sd_compressor **out);
/* NULL is allowed. */
void sd_compressor_destroy(sd_compressor *z);

/* One step. g: this rank's (already weighted) gradient, count floats, host memory. With momentum
 * correction, g first becomes the velocity u = momentum x u + g (a below is u + residual; sparse
 * steps clear u where they send; dense steps send u + residual and keep u). Decides dense
 * or sparse by the policy (policy paper: one sd_comm_vote), applies error feedback, exchanges
 * (dense: sd_comm_allreduce_sum of g + residual; sparse: one sd_comm_allgatherv of every rank's
 * pairs, then a scatter-add in rank order) and leaves in g the SUM over ranks of what they sent,
 * bitwise identical on every rank. stats may be NULL. On failure g is unspecified; a failure before
 * the collectives (allocation) leaves the residual and the policy state unchanged, a failed
 * collective leaves the group unusable (comm.h). */
sd_status sd_compress_exchange(sd_compressor *z, sd_comm *comm, float *g, sd_compress_step *stats);
/* The same with two communicators over the same ranks: `comm` carries the vote, `data` the dense
 * allreduce and the sparse allgatherv, whose buffers are in the compressor's backend memory (an
 * NCCL communicator for a compressor on a CUDA backend: the exchange stays in GPU memory). The
 * bytes of both count in bytes_sent. sd_compress_exchange is this with data = comm. */
sd_status sd_compress_exchange_on(sd_compressor *z, sd_comm *comm, sd_comm *data, float *g, sd_compress_step *stats);

/* Modelled time of the step's communication under the virtual clock (comm/cost.h): the vote
 * (if any) as a ring allreduce of 4 bytes, then the ring allgather of gathered_bytes (sparse
 * allgather) or the ring allreduce of dense_bytes (dense), over n ranks on the given link. The
 * sparse allreduce: the ring all-gather of header_bytes, the pairwise alltoallv of a2a_max_bytes
 * and the ring all-gather of gathered_bytes. */
double sd_compress_step_time(const sd_compress_step *s, int n, double bandwidth_bps, double latency_s);

/* Policy paper: whether compressing can pay this step (e.g. the step is held up by its
 * communication); false makes this rank vote dense whatever its norm loss says. Sticky until the
 * next call; true (eligible) at creation. Other policies ignore it. Every rank should pass the same
 * value (derive it from shared information) or the majority decides. */
void sd_compressor_set_eligible(sd_compressor *z, bool eligible);

/* Pairs one rank sends per sparse step at `ratio`, and the bytes of its message (header included). */
size_t sd_compressor_pairs(const sd_compressor *z, double ratio);
uint64_t sd_compressor_message_bytes(const sd_compressor *z, double ratio);
/* The ratio the next step will use (policy off: 0). */
double sd_compressor_ratio(const sd_compressor *z);
size_t sd_compressor_count(const sd_compressor *z);

/* ---- checkpoints: the residual (count floats), the velocity and the policy state ------------ */
/* The residual and velocity in the compressor's backend memory (host memory only on a CPU
 * backend); sd_compressor_get_* copy them to the host on any backend. */
const float *sd_compressor_residual(const sd_compressor *z);
sd_status sd_compressor_get_residual(const sd_compressor *z, float *host);
sd_status sd_compressor_get_velocity(const sd_compressor *z, float *host);
sd_status sd_compressor_set_residual(sd_compressor *z, const float *residual, size_t count);
/* The momentum-correction velocity (count floats); NULL when config momentum is 0. */
const float *sd_compressor_velocity(const sd_compressor *z);
/* SD_ERR_INVALID when the compressor has no momentum correction. */
sd_status sd_compressor_set_velocity(sd_compressor *z, const float *velocity, size_t count);
void sd_compressor_get_state(const sd_compressor *z, sd_compress_state *s);
sd_status sd_compressor_set_state(sd_compressor *z, const sd_compress_state *s);

/* ---- the sparse exchange on its own ------------------------------------------------------- */
/* Every rank contributes npairs (may differ per rank, 0 allowed) pairs with non-decreasing
 * indices < count; out[0..count) becomes the rank-order sum of all ranks' pairs (zeros elsewhere),
 * identical on every rank. Two collectives: allgather_u64 of the pair counts, then one allgatherv
 * in the compressor's wire format (gain field 0). f16: values travel as binary16 (rounded to
 * nearest even, saturated to +-65504). Received indices are checked (SD_ERR_FORMAT). threads:
 * for the scatter (<= 0: all online cores). *bytes_sent (may be NULL): this rank's wire bytes. */
sd_status sd_sparse_allgather_sum(sd_comm *comm, int threads, const uint32_t *idx, const float *val, size_t npairs,
                                  bool f16, float *out, size_t count, uint64_t *bytes_sent);

/* IEEE binary16: sd_f32_to_f16 / sd_f16_to_f32 / sd_f16_wire come from base/f16.h (included above). */

#ifdef __cplusplus
}
#endif

#endif
