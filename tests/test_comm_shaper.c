/* test_comm_shaper.c: the token-bucket link emulation (comm/shaper.h) on the local backend with
 * a fake clock per rank, so every delay is checked exactly and nothing here depends on timing:
 * results pass through unchanged (sums bitwise equal to the unshaped backend's), a call pays
 * wire bytes / rate for the tokens it lacks plus latency per ring hop, an idle gap refills the
 * bucket up to its depth and no further, a burst within the bucket costs only latency, counters
 * match the inner communicator's, and bad configurations are refused with a message. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/shaper.h"
#include "tests/harness.h"

typedef struct fake_clock {
    double t;
} fake_clock;

static double fake_now(void *ctx) { return ((fake_clock *)ctx)->t; }

static void fake_sleep_until(void *ctx, double t) {
    fake_clock *c = ctx;
    if (t > c->t) c->t = t;
}

#define NR 3
#define COUNT 300000 /* floats */

typedef struct rank_job {
    sd_comm_local_group *g;
    int rank;
    /* results, checked by the main thread */
    int failed;
    long wrong;
    double t_after[6]; /* fake clock after each phase */
    double delay;
    uint64_t wire_inner, wire_outer;
} rank_job;

static void *rank_main(void *arg) {
    rank_job *j = arg;
    sd_comm *inner = sd_comm_local_get(j->g, j->rank);
    fake_clock clk = {0};
    sd_shaper_config cfg = {.bandwidth_bps = 8e6, /* 1 MB/s */
                            .latency_s = 0.001,
                            .burst_bytes = 100000,
                            .now = fake_now,
                            .sleep_until = fake_sleep_until,
                            .clock_ctx = &clk};
    sd_comm *c = NULL;
    if (sd_comm_shaped_create(inner, &cfg, &c) != SD_OK) {
        j->failed = 1;
        return NULL;
    }
    float *buf = malloc(COUNT * sizeof(float));
    for (int i = 0; i < COUNT; i++) buf[i] = (float)((i % 7) + j->rank);
    /* 1: a large allreduce: the bucket (100 kB) covers part, the rest waits at 1 MB/s */
    if (sd_comm_allreduce_sum(c, buf, COUNT) != SD_OK) j->failed = 1;
    for (int i = 0; i < COUNT; i++) /* sum over ranks r of (i % 7 + r) */
        if (buf[i] != (float)(NR * (i % 7) + NR * (NR - 1) / 2)) j->wrong++;
    j->t_after[0] = clk.t;
    /* 2: a vote right away: the bucket is empty, 4 bytes' worth of ring traffic must wait */
    int sum = 0;
    if (sd_comm_vote(c, 1, &sum) != SD_OK || sum != NR) j->failed = 1;
    j->t_after[1] = clk.t;
    /* 3: idle for 10 s (refills to the 100 kB depth, not 10 MB), then an allgather of 40 kB each */
    clk.t += 10.0;
    char mine[40000], all[NR * 40000];
    memset(mine, j->rank + 1, sizeof mine);
    size_t sizes[NR];
    for (int r = 0; r < NR; r++) sizes[r] = sizeof mine;
    if (sd_comm_allgatherv(c, mine, sizeof mine, all, sizes, NULL) != SD_OK) j->failed = 1;
    for (int r = 0; r < NR; r++)
        for (size_t i = 0; i < sizeof mine; i++)
            if (all[(size_t)r * sizeof mine + i] != (char)(r + 1)) j->wrong++;
    j->t_after[2] = clk.t;
    /* 4: a barrier: no bytes, latency only */
    if (sd_comm_barrier(c) != SD_OK) j->failed = 1;
    j->t_after[3] = clk.t;
    j->delay = sd_comm_shaped_delay_s(c);
    j->wire_inner = sd_comm_wire_bytes(inner);
    j->wire_outer = sd_comm_wire_bytes(c);
    sd_comm_destroy(c); /* frees only the wrapper */
    free(buf);
    return NULL;
}

static void test_delays(void) {
    sd_comm_local_group *g = NULL;
    EXPECT_OK(sd_comm_local_group_create(NR, &g));
    rank_job jobs[NR];
    pthread_t th[NR];
    memset(jobs, 0, sizeof jobs);
    for (int r = 0; r < NR; r++) {
        jobs[r].g = g;
        jobs[r].rank = r;
        pthread_create(&th[r], NULL, rank_main, &jobs[r]);
    }
    for (int r = 0; r < NR; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < NR; r++) {
        rank_job *j = &jobs[r];
        EXPECT(!j->failed, "rank %d: a call failed: %s", r, sd_last_error());
        EXPECT(j->wrong == 0, "rank %d: %ld wrong elements", r, j->wrong);
        EXPECT(j->wire_outer == j->wire_inner, "rank %d: wire bytes %llu (shaped) vs %llu (inner)", r, (unsigned long long)j->wire_outer, (unsigned long long)j->wire_inner);
        const double rate = 1e6, lat = 0.001, depth = 100000;
        /* 1: allreduce: ring bytes of this rank, hops 2(p-1) */
        double b1 = (double)sd_comm_ring_allreduce_bytes(COUNT, 4, r, NR);
        double t1 = (b1 - depth) / rate + 2 * (NR - 1) * lat;
        EXPECT(fabs((j->t_after[0]) - (t1)) < 1e-9, "rank %d: %.12f vs %.12f", r, j->t_after[0], (double)(t1));
        /* 2: vote: an allreduce of one int with an empty bucket, refilled for the latency time */
        double b2 = (double)sd_comm_ring_allreduce_bytes(1, sizeof(int), r, NR);
        double refill = 2 * (NR - 1) * lat * rate; /* tokens gained while the hops' latency passed */
        double t2 = t1 + fmax(0, b2 - refill) / rate + 2 * (NR - 1) * lat;
        EXPECT(fabs((j->t_after[1]) - (t2)) < 1e-9, "rank %d: %.12f vs %.12f", r, j->t_after[1], (double)(t2));
        /* 3: after 10 s idle the bucket is full (100 kB), the allgather's 80 kB fit: latency only */
        double t3 = t2 + 10.0 + (NR - 1) * lat;
        EXPECT(fabs((j->t_after[2]) - (t3)) < 1e-9, "rank %d: %.12f vs %.12f", r, j->t_after[2], (double)(t3));
        /* 4: barrier: latency only */
        EXPECT(fabs((j->t_after[3]) - (t3 + (NR - 1) * lat)) < 1e-9, "rank %d: %.12f vs %.12f", r, j->t_after[3], (double)(t3 + (NR - 1) * lat));
        EXPECT(fabs((j->delay) - (j->t_after[3] - 10.0)) < 1e-9, "rank %d: %.12f vs %.12f", r, j->delay, (double)(j->t_after[3] - 10.0));
    }
    sd_comm_local_group_destroy(g);
}

static void test_errors(void) {
    sd_comm_local_group *g = NULL;
    EXPECT_OK(sd_comm_local_group_create(1, &g));
    sd_comm *inner = sd_comm_local_get(g, 0), *c = NULL;
    sd_shaper_config cfg = {.bandwidth_bps = 0, .latency_s = 0, .burst_bytes = 0};
    EXPECT_FAIL(sd_comm_shaped_create(inner, &cfg, &c), SD_ERR_INVALID, "bandwidth_mbps");
    EXPECT(c == NULL, "no communicator on failure");
    cfg.bandwidth_bps = NAN;
    EXPECT_FAIL(sd_comm_shaped_create(inner, &cfg, &c), SD_ERR_INVALID, "bandwidth");
    cfg.bandwidth_bps = 1e6;
    cfg.latency_s = -1;
    EXPECT_FAIL(sd_comm_shaped_create(inner, &cfg, &c), SD_ERR_INVALID, "latency_ms");
    cfg.latency_s = 0;
    cfg.burst_bytes = INFINITY;
    EXPECT_FAIL(sd_comm_shaped_create(inner, &cfg, &c), SD_ERR_INVALID, "burst");
    cfg.burst_bytes = 0;
    cfg.now = fake_now;
    EXPECT_FAIL(sd_comm_shaped_create(inner, &cfg, &c), SD_ERR_INVALID, "sleep_until");
    cfg.now = NULL;
    EXPECT_FAIL(sd_comm_shaped_create(NULL, &cfg, &c), SD_ERR_INVALID, "NULL");
    /* one rank: no ring traffic, no hops: no delay on the real clock */
    EXPECT_OK(sd_comm_shaped_create(inner, &cfg, &c));
    float x[4] = {1, 2, 3, 4};
    EXPECT_OK(sd_comm_allreduce_sum(c, x, 4));
    EXPECT(x[3] == 4.0f, "one rank: sum %g", x[3]);
    EXPECT(sd_comm_shaped_delay_s(c) == 0.0, "one rank: no delay");
    EXPECT(sd_comm_shaped_delay_s(inner) == 0.0, "unshaped: 0");
    sd_comm_destroy(c);
    sd_comm_local_group_destroy(g);
}

int main(void) {
    test_delays();
    test_errors();
    return sd_test_finish("test_comm_shaper");
}
