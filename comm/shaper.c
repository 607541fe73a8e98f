/* shaper.c: the token-bucket link emulation of shaper.h: a communicator whose every collective
 * runs on the inner communicator and then waits for the tokens its wire bytes cost and for the
 * latency of its ring hops. */
#include "base/clock.h"
#include "comm/shaper.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


typedef struct shaper {
    sd_comm self;
    sd_comm *inner;
    sd_shaper_config cfg;
    double tokens;  /* bytes available at t_last */
    double t_last;  /* when tokens was last brought up to date (NAN: never: the bucket is full) */
    double delayed; /* total seconds held back */
} shaper;

static double real_now(void *ctx) {
    (void)ctx;
    return sd_clock_now();
}

static void real_sleep_until(void *ctx, double t) {
    (void)ctx;
    sd_clock_sleep_until(t);
}

/* Ring hops of one call of collective k among p ranks (engine/profile.h's formulas). */
static double hops(sd_coll k, int p) {
    if (p <= 1) return 0;
    switch (k) {
    case SD_COLL_ALLREDUCE:
    case SD_COLL_VOTE: return 2.0 * (p - 1);
    case SD_COLL_ALLGATHERV:
    case SD_COLL_ALLGATHER_U64:
    case SD_COLL_BROADCAST:
    case SD_COLL_BARRIER:
    case SD_COLL_ALLTOALLV: return (double)(p - 1); /* pairwise: p - 1 rounds */
    case SD_COLL_COUNT: break;
    }
    return 0;
}

/* After a successful inner call: pay for what it sent. */
static void pay(shaper *s, const sd_comm_counters *before) {
    sd_comm_counters d;
    sd_comm_counters_diff(&s->inner->counters, before, &d);
    double bytes = 0, nhops = 0;
    for (int k = 0; k < SD_COLL_COUNT; k++) {
        bytes += (double)d.wire_bytes[k];
        nhops += (double)d.calls[k] * hops((sd_coll)k, s->inner->size);
    }
    const double rate = s->cfg.bandwidth_bps / 8.0; /* bytes per second */
    double now = s->cfg.now(s->cfg.clock_ctx);
    if (isnan(s->t_last)) s->tokens = s->cfg.burst_bytes;
    double wait = sd_token_bucket_take(&s->tokens, s->cfg.burst_bytes, rate, isnan(s->t_last) ? 0 : now - s->t_last, bytes);
    s->t_last = now + wait;
    wait += nhops * s->cfg.latency_s;
    if (wait > 0) {
        s->delayed += wait;
        s->cfg.sleep_until(s->cfg.clock_ctx, now + wait);
    }
}

#define SHAPED(c) ((shaper *)(c)->ctx)
#define RUN_AND_PAY(c, call)                                                                                           \
    do {                                                                                                               \
        shaper *s_ = SHAPED(c);                                                                                        \
        sd_comm_counters before_ = s_->inner->counters;                                                                \
        TRY(call);                                                                                                     \
        pay(s_, &before_);                                                                                             \
        return SD_OK;                                                                                                  \
    } while (0)

static sd_status sh_allreduce(sd_comm *c, float *buf, size_t count) {
    RUN_AND_PAY(c, sd_comm_allreduce_sum(SHAPED(c)->inner, buf, count));
}

static sd_status sh_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                               const size_t *displs) {
    RUN_AND_PAY(c, sd_comm_allgatherv(SHAPED(c)->inner, send, send_bytes, recv, recv_bytes, displs));
}

static sd_status sh_allgather_u64(sd_comm *c, uint64_t mine, uint64_t *all) {
    RUN_AND_PAY(c, sd_comm_allgather_u64(SHAPED(c)->inner, mine, all));
}

static sd_status sh_broadcast(sd_comm *c, void *buf, size_t bytes, int root) {
    RUN_AND_PAY(c, sd_comm_broadcast(SHAPED(c)->inner, buf, bytes, root));
}

static sd_status sh_barrier(sd_comm *c) { RUN_AND_PAY(c, sd_comm_barrier(SHAPED(c)->inner)); }

static sd_status sh_vote(sd_comm *c, int mine, int *sum) { RUN_AND_PAY(c, sd_comm_vote(SHAPED(c)->inner, mine, sum)); }

static sd_status sh_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                              void *recv, const size_t *recv_bytes, const size_t *recv_displs) {
    RUN_AND_PAY(c, sd_comm_alltoallv(SHAPED(c)->inner, send, send_bytes, send_displs, recv, recv_bytes, recv_displs));
}

static void sh_destroy(sd_comm *c) { free(SHAPED(c)); }

static const sd_comm_ops shaped_ops = {
    .name = "shaped",
    .allreduce_sum = sh_allreduce,
    .allgatherv = sh_allgatherv,
    .allgather_u64 = sh_allgather_u64,
    .broadcast = sh_broadcast,
    .barrier = sh_barrier,
    .vote = sh_vote,
    .alltoallv = sh_alltoallv,
    .destroy = sh_destroy,
};

sd_status sd_comm_shaped_create(sd_comm *inner, const sd_shaper_config *cfg, sd_comm **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_comm_shaped_create: out is NULL");
    *out = NULL;
    if (!inner || !inner->ops || !cfg)
        return SD_FAIL(SD_ERR_INVALID, "sd_comm_shaped_create: inner communicator or config is NULL");
    if (!(cfg->bandwidth_bps > 0) || !isfinite(cfg->bandwidth_bps))
        return SD_FAIL(SD_ERR_INVALID, "link emulation: bandwidth %g bit/s is not a positive finite number; set the "
                       "device's link bandwidth_mbps", cfg->bandwidth_bps);
    if (!(cfg->latency_s >= 0) || !isfinite(cfg->latency_s))
        return SD_FAIL(SD_ERR_INVALID, "link emulation: latency %g s must be finite and >= 0; set the device's link "
                       "latency_ms", cfg->latency_s);
    if (!(cfg->burst_bytes >= 0) || !isfinite(cfg->burst_bytes))
        return SD_FAIL(SD_ERR_INVALID, "link emulation: burst %g bytes must be finite and >= 0", cfg->burst_bytes);
    if ((cfg->now == NULL) != (cfg->sleep_until == NULL))
        return SD_FAIL(SD_ERR_INVALID, "link emulation: give both now and sleep_until, or neither");
    shaper *s = calloc(1, sizeof *s);
    if (!s) return SD_FAIL(SD_ERR_OOM, "link emulation: out of memory");
    s->inner = inner;
    s->cfg = *cfg;
    if (!s->cfg.now) {
        s->cfg.now = real_now;
        s->cfg.sleep_until = real_sleep_until;
    }
    s->t_last = NAN;
    s->self.ops = &shaped_ops;
    s->self.ctx = s;
    s->self.rank = inner->rank;
    s->self.size = inner->size;
    *out = &s->self;
    return SD_OK;
}

double sd_comm_shaped_delay_s(const sd_comm *c) {
    if (!c || c->ops != &shaped_ops) return 0;
    return ((const shaper *)c->ctx)->delayed;
}
