/* test_comm_local.c: the local collective backend (N devices as threads) with exactly checkable
 * inputs for 1, 2, 3 and 8 ranks: allreduce (small integers in floats; a non-integer input whose
 * rank-order sum must be bitwise equal to a sequential rank-order sum and identical across
 * repeated runs), allgatherv with different sizes per rank (zero included, packed, gapped and in
 * place), allgather_u64, broadcast from every root, barrier, vote, the byte counters against the
 * ring formulas, and the failure paths: a rank that never calls (the others fail within the
 * timeout naming it), abort, a rank leaving, mismatched calls. Wrong elements are counted per
 * rank and summed across ranks. Device threads never touch the harness counters: they report
 * into per-rank records that the main thread checks after joining them. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "comm/comm.h"
#include "comm/comm_local.h"
#include "tests/harness.h"

/* ---- running a function on every rank --------------------------------------------------------- */
typedef struct rank_out {
    long wrong;        /* wrong elements / values seen by this rank */
    int bad_status;    /* collectives that failed when they should not */
    sd_status st;      /* the status a failure test looked at */
    char msg[2048];    /* its message */
    double elapsed;    /* seconds, for timeout tests */
    sd_comm_counters counters;
} rank_out;

typedef struct run_ctx run_ctx;
typedef void (*rank_fn)(run_ctx *rc, sd_comm *c, rank_out *out);
struct run_ctx {
    sd_comm_local_group *g;
    rank_fn fn;
    void *arg;
    rank_out *outs;
    int rank;
};

static void *thread_main(void *p) {
    run_ctx *rc = p;
    rc->fn(rc, sd_comm_local_get(rc->g, rc->rank), &rc->outs[rc->rank]);
    return NULL;
}

/* Runs fn on n threads (one per rank) over a fresh group; outs[n] receives what each saw. */
static void run_group(int n, double timeout, rank_fn fn, void *arg, rank_out *outs) {
    sd_comm_local_group *g = NULL;
    if (sd_comm_local_group_create(n, &g) != SD_OK) {
        fprintf(stderr, "%s\n", sd_last_error());
        for (int r = 0; r < n; r++) outs[r].bad_status++;
        return;
    }
    sd_comm_local_set_timeout(g, timeout);
    memset(outs, 0, sizeof(rank_out) * (size_t)n);
    pthread_t *th = malloc(sizeof(pthread_t) * (size_t)n);
    run_ctx *rc = malloc(sizeof(run_ctx) * (size_t)n);
    for (int r = 0; r < n; r++) {
        rc[r] = (run_ctx){g, fn, arg, outs, r};
        pthread_create(&th[r], NULL, thread_main, &rc[r]);
    }
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
    free(th);
    free(rc);
    sd_comm_local_group_destroy(g);
}

/* In a device thread: a collective that must succeed. */
#define MUST(out, expr)                                                                          \
    do {                                                                                         \
        sd_status s_ = (expr);                                                                   \
        if (s_ != SD_OK) {                                                                       \
            (out)->bad_status++;                                                                 \
            fprintf(stderr, "rank thread: %s returned %s: %s\n", #expr, sd_status_str(s_), sd_last_error()); \
        }                                                                                        \
    } while (0)

static long sum_wrong(const rank_out *o, int n) {
    long w = 0;
    for (int r = 0; r < n; r++) w += o[r].wrong;
    return w;
}
static int sum_bad(const rank_out *o, int n) {
    int b = 0;
    for (int r = 0; r < n; r++) b += o[r].bad_status;
    return b;
}

static const int sizes_n[] = {1, 2, 3, 8};
#define NSIZES (int)(sizeof sizes_n / sizeof sizes_n[0])
static const size_t counts[] = {0, 1, 7, 16, 1000, 100003};
#define NCOUNTS (int)(sizeof counts / sizeof counts[0])

/* ---- allreduce: exact integers ---------------------------------------------------------------- */
/* x_r[i] = (r + 1) * (i % 13 + 1): the sum is (i % 13 + 1) * n(n+1)/2, exact in float. */
static void fn_allreduce_exact(run_ctx *rc, sd_comm *c, rank_out *out) {
    (void)rc;
    for (int k = 0; k < NCOUNTS; k++) {
        size_t count = counts[k];
        float *x = malloc(sizeof(float) * (count ? count : 1));
        for (size_t i = 0; i < count; i++) x[i] = (float)((c->rank + 1) * (int)(i % 13 + 1));
        MUST(out, sd_comm_allreduce_sum(c, x, count));
        float tri = (float)(c->size * (c->size + 1) / 2);
        for (size_t i = 0; i < count; i++)
            if (x[i] != (float)(i % 13 + 1) * tri) out->wrong++;
        free(x);
    }
    out->counters = c->counters;
}

static void test_allreduce_exact(void) {
    for (int t = 0; t < NSIZES; t++) {
        int n = sizes_n[t];
        rank_out o[8];
        run_group(n, 60, fn_allreduce_exact, NULL, o);
        EXPECT(sum_bad(o, n) == 0 && sum_wrong(o, n) == 0, "allreduce n=%d: %d failed calls, %ld wrong elements across ranks",
               n, sum_bad(o, n), sum_wrong(o, n));
        /* Counters: calls, payload, and the ring formula summed over ranks = 2(n-1) * bytes. */
        uint64_t payload = 0, wire_sum = 0;
        for (int k = 0; k < NCOUNTS; k++) payload += counts[k] * sizeof(float);
        for (int r = 0; r < n; r++) {
            EXPECT(o[r].counters.calls[SD_COLL_ALLREDUCE] == NCOUNTS && o[r].counters.payload_bytes[SD_COLL_ALLREDUCE] == payload,
                   "n=%d rank %d: %llu calls, %llu payload bytes", n, r,
                   (unsigned long long)o[r].counters.calls[SD_COLL_ALLREDUCE],
                   (unsigned long long)o[r].counters.payload_bytes[SD_COLL_ALLREDUCE]);
            wire_sum += o[r].counters.wire_bytes[SD_COLL_ALLREDUCE];
        }
        EXPECT(wire_sum == 2 * (uint64_t)(n - 1) * payload, "n=%d: ring allreduce bytes over ranks %llu, want 2(n-1)*%llu",
               n, (unsigned long long)wire_sum, (unsigned long long)payload);
    }
}

/* ---- allreduce: bitwise rank-order sums ------------------------------------------------------- */
enum { BITWISE_COUNT = 100003, BITWISE_RUNS = 4 };

static void fill_rank(float *x, size_t count, int rank) {
    sd_test_rng r = {0x5eedull * 1000003u + (uint64_t)rank};
    sd_test_fill(&r, x, count, -1.0f, 1.0f);
    for (size_t i = 0; i < count; i += 97) x[i] *= 1e4f; /* mixed magnitudes: order matters */
}

typedef struct bitwise_arg { const float *ref; } bitwise_arg;

static void fn_allreduce_bitwise(run_ctx *rc, sd_comm *c, rank_out *out) {
    const bitwise_arg *a = rc->arg;
    float *x = malloc(sizeof(float) * BITWISE_COUNT);
    fill_rank(x, BITWISE_COUNT, c->rank);
    MUST(out, sd_comm_allreduce_sum(c, x, BITWISE_COUNT));
    for (size_t i = 0; i < BITWISE_COUNT; i++)
        if (memcmp(&x[i], &a->ref[i], sizeof(float)) != 0) out->wrong++;
    free(x);
}

static void test_allreduce_bitwise(void) {
    float *tmp = malloc(sizeof(float) * BITWISE_COUNT), *ref = malloc(sizeof(float) * BITWISE_COUNT),
          *rev = malloc(sizeof(float) * BITWISE_COUNT);
    for (int t = 0; t < NSIZES; t++) {
        int n = sizes_n[t];
        /* The sequential rank-order sum, and the reverse order to show the order matters. */
        for (int r = 0; r < n; r++) {
            fill_rank(tmp, BITWISE_COUNT, r);
            for (size_t i = 0; i < BITWISE_COUNT; i++) ref[i] = r == 0 ? tmp[i] : ref[i] + tmp[i];
        }
        for (int r = n - 1; r >= 0; r--) {
            fill_rank(tmp, BITWISE_COUNT, r);
            for (size_t i = 0; i < BITWISE_COUNT; i++) rev[i] = r == n - 1 ? tmp[i] : rev[i] + tmp[i];
        }
        size_t differ = 0;
        for (size_t i = 0; i < BITWISE_COUNT; i++) differ += memcmp(&ref[i], &rev[i], sizeof(float)) != 0;
        if (n >= 3) EXPECT(differ > 0, "n=%d: reverse-order sum equals rank-order sum everywhere: the input does not test order", n);
        bitwise_arg a = {ref};
        for (int run = 0; run < BITWISE_RUNS; run++) {
            rank_out o[8];
            run_group(n, 60, fn_allreduce_bitwise, &a, o);
            EXPECT(sum_bad(o, n) == 0 && sum_wrong(o, n) == 0,
                   "bitwise allreduce n=%d run %d: %ld elements differ from the sequential rank-order sum across ranks "
                   "(%zu of them differ between rank and reverse order)",
                   n, run, sum_wrong(o, n), differ);
        }
    }
    free(tmp);
    free(ref);
    free(rev);
}

/* ---- allgatherv ------------------------------------------------------------------------------- */
static size_t gather_size(int r) { return (size_t)((r * 37) % 5) * 3; } /* rank 0: 0 bytes */
static unsigned char gather_byte(int r, size_t k) { return (unsigned char)(r * 31 + (int)k * 7 + 1); }

typedef enum { GATHER_PACKED, GATHER_GAPPED, GATHER_IN_PLACE } gather_mode;

static void fn_allgatherv(run_ctx *rc, sd_comm *c, rank_out *out) {
    gather_mode mode = *(const gather_mode *)rc->arg;
    int n = c->size;
    size_t *rb = malloc(sizeof(size_t) * (size_t)n), *dp = malloc(sizeof(size_t) * (size_t)n);
    size_t total = 0;
    for (int j = 0; j < n; j++) {
        rb[j] = gather_size(j);
        total += rb[j];
    }
    /* Gapped: blocks in reverse rank order with 5 sentinel bytes around each. */
    size_t cap = mode == GATHER_GAPPED ? total + 5 * (size_t)(n + 1) : total;
    size_t off = 5;
    for (int j = n - 1; j >= 0; j--) {
        dp[j] = off;
        off += rb[j] + 5;
    }
    if (mode != GATHER_GAPPED) {
        off = 0;
        for (int j = 0; j < n; j++) {
            dp[j] = off;
            off += rb[j];
        }
    }
    unsigned char *recv = malloc(cap + 1), *send = malloc(gather_size(c->rank) + 1);
    memset(recv, 0xEE, cap + 1);
    for (size_t k = 0; k < gather_size(c->rank); k++) send[k] = gather_byte(c->rank, k);
    if (mode == GATHER_IN_PLACE) {
        memcpy(recv + dp[c->rank], send, gather_size(c->rank));
        MUST(out, sd_comm_allgatherv(c, recv + dp[c->rank], rb[c->rank], recv, rb, dp));
    } else {
        MUST(out, sd_comm_allgatherv(c, send, rb[c->rank], recv, rb, mode == GATHER_PACKED ? NULL : dp));
    }
    for (int j = 0; j < n; j++)
        for (size_t k = 0; k < rb[j]; k++)
            if (recv[dp[j] + k] != gather_byte(j, k)) out->wrong++;
    if (mode == GATHER_GAPPED) { /* sentinels untouched */
        unsigned char *mark = calloc(cap, 1);
        for (int j = 0; j < n; j++) memset(mark + dp[j], 1, rb[j]);
        for (size_t k = 0; k < cap; k++)
            if (!mark[k] && recv[k] != 0xEE) out->wrong++;
        free(mark);
    }
    out->counters = c->counters;
    free(rb);
    free(dp);
    free(recv);
    free(send);
}

static void test_allgatherv(void) {
    const char *names[] = {"packed", "gapped", "in place"};
    for (int m = GATHER_PACKED; m <= GATHER_IN_PLACE; m++) {
        gather_mode mode = (gather_mode)m;
        for (int t = 0; t < NSIZES; t++) {
            int n = sizes_n[t];
            rank_out o[8];
            run_group(n, 60, fn_allgatherv, &mode, o);
            EXPECT(sum_bad(o, n) == 0 && sum_wrong(o, n) == 0, "allgatherv (%s) n=%d: %d failed calls, %ld wrong bytes",
                   names[m], n, sum_bad(o, n), sum_wrong(o, n));
            uint64_t total = 0, wire = 0;
            for (int j = 0; j < n; j++) total += gather_size(j);
            for (int r = 0; r < n; r++) {
                wire += o[r].counters.wire_bytes[SD_COLL_ALLGATHERV];
                EXPECT(o[r].counters.payload_bytes[SD_COLL_ALLGATHERV] == gather_size(r), "allgatherv payload of rank %d", r);
                EXPECT(o[r].counters.wire_bytes[SD_COLL_ALLGATHERV] == total - gather_size((r + 1) % n) || n == 1,
                       "allgatherv ring bytes of rank %d: %llu", r,
                       (unsigned long long)o[r].counters.wire_bytes[SD_COLL_ALLGATHERV]);
            }
            EXPECT(wire == (uint64_t)(n - 1) * total, "n=%d: allgatherv ring bytes over ranks %llu, want (n-1)*%llu", n,
                   (unsigned long long)wire, (unsigned long long)total);
        }
    }
}

/* ---- broadcast, allgather_u64, barrier, vote -------------------------------------------------- */
enum { BCAST_BYTES = 4099 };

static void fn_small_collectives(run_ctx *rc, sd_comm *c, rank_out *out) {
    atomic_int *arrivals = rc->arg;
    int n = c->size, r = c->rank;
    /* broadcast from every root */
    unsigned char *buf = malloc(BCAST_BYTES);
    for (int root = 0; root < n; root++) {
        for (size_t k = 0; k < BCAST_BYTES; k++) buf[k] = r == root ? (unsigned char)(root * 13 + k) : 0xEE;
        MUST(out, sd_comm_broadcast(c, buf, BCAST_BYTES, root));
        for (size_t k = 0; k < BCAST_BYTES; k++)
            if (buf[k] != (unsigned char)(root * 13 + k)) out->wrong++;
    }
    free(buf);
    /* allgather_u64 */
    uint64_t all[8];
    MUST(out, sd_comm_allgather_u64(c, 1000 + (uint64_t)(r * r), all));
    for (int j = 0; j < n; j++)
        if (all[j] != 1000 + (uint64_t)(j * j)) out->wrong++;
    /* barrier: nobody leaves round k before everyone has arrived in it */
    for (int round = 0; round < 50; round++) {
        atomic_fetch_add(arrivals, 1);
        MUST(out, sd_comm_barrier(c));
        if (atomic_load(arrivals) < n * (round + 1)) out->wrong++;
        MUST(out, sd_comm_barrier(c)); /* keeps the next round's increments after this check */
    }
    /* vote: odd ranks vote yes; then everyone */
    int sum = -1;
    MUST(out, sd_comm_vote(c, r % 2, &sum));
    if (sum != n / 2) out->wrong++;
    MUST(out, sd_comm_vote(c, 1, &sum));
    if (sum != n) out->wrong++;
    out->counters = c->counters;
}

static void test_small_collectives(void) {
    for (int t = 0; t < NSIZES; t++) {
        int n = sizes_n[t];
        rank_out o[8];
        atomic_int arrivals = 0;
        run_group(n, 60, fn_small_collectives, &arrivals, o);
        EXPECT(sum_bad(o, n) == 0 && sum_wrong(o, n) == 0,
               "broadcast/allgather_u64/barrier/vote n=%d: %d failed calls, %ld wrong values", n, sum_bad(o, n),
               sum_wrong(o, n));
        uint64_t bwire = 0;
        for (int r = 0; r < n; r++) {
            const sd_comm_counters *k = &o[r].counters;
            bwire += k->wire_bytes[SD_COLL_BROADCAST];
            EXPECT(k->calls[SD_COLL_BROADCAST] == (uint64_t)n && k->payload_bytes[SD_COLL_BROADCAST] == (uint64_t)n * BCAST_BYTES &&
                       k->calls[SD_COLL_BARRIER] == 100 && k->calls[SD_COLL_VOTE] == 2 && k->calls[SD_COLL_ALLGATHER_U64] == 1 &&
                       k->wire_bytes[SD_COLL_BARRIER] == 0 &&
                       k->wire_bytes[SD_COLL_ALLGATHER_U64] == (uint64_t)(n - 1) * 8,
                   "n=%d rank %d: counters (broadcast %llu calls %llu bytes, barrier %llu, vote %llu)", n, r,
                   (unsigned long long)k->calls[SD_COLL_BROADCAST], (unsigned long long)k->payload_bytes[SD_COLL_BROADCAST],
                   (unsigned long long)k->calls[SD_COLL_BARRIER], (unsigned long long)k->calls[SD_COLL_VOTE]);
        }
        /* n broadcasts of B bytes, each (n-1)B over all ranks. */
        EXPECT(bwire == (uint64_t)n * (uint64_t)(n - 1) * BCAST_BYTES, "n=%d: broadcast ring bytes over ranks %llu", n,
               (unsigned long long)bwire);
    }
}

/* ---- ring formulas by hand -------------------------------------------------------------------- */
static void test_ring_formulas(void) {
    /* 1000 floats over 4 ranks: chunks of 250; every rank sends 6 chunks = 6000 bytes = 2*3/4 * 4000. */
    for (int r = 0; r < 4; r++) EXPECT(sd_comm_ring_allreduce_bytes(1000, 4, r, 4) == 6000, "allreduce rank %d", r);
    /* 10 floats over 4 ranks: chunks 3 3 2 2 (floats); rank r skips chunks r+1 and r+2. */
    const uint64_t want[4] = {80 - 4 * (3 + 2), 80 - 4 * (2 + 2), 80 - 4 * (2 + 3), 80 - 4 * (3 + 3)};
    for (int r = 0; r < 4; r++)
        EXPECT(sd_comm_ring_allreduce_bytes(10, 4, r, 4) == want[r], "uneven allreduce rank %d: %llu", r,
               (unsigned long long)sd_comm_ring_allreduce_bytes(10, 4, r, 4));
    EXPECT(sd_comm_ring_allreduce_bytes(1000, 4, 0, 1) == 0, "one rank sends nothing");
    EXPECT(sd_comm_ring_allreduce_bytes(1000, 4, 0, 2) == 4000, "two ranks: 2(p-1)/p = 1");
    size_t sz[3] = {10, 0, 7};
    EXPECT(sd_comm_ring_allgather_bytes(sz, 0, 3) == 17 && sd_comm_ring_allgather_bytes(sz, 1, 3) == 10 &&
               sd_comm_ring_allgather_bytes(sz, 2, 3) == 7,
           "allgather ring bytes");
    EXPECT(sd_comm_ring_broadcast_bytes(100, 1, 0, 3) == 0 && sd_comm_ring_broadcast_bytes(100, 1, 1, 3) == 100 &&
               sd_comm_ring_broadcast_bytes(100, 1, 2, 3) == 100,
           "broadcast chain bytes");
}

/* ---- failures --------------------------------------------------------------------------------- */
typedef struct fail_arg {
    int absent;          /* the rank that does not call (timeout test) */
    atomic_int gave_up;  /* ranks whose collective has failed */
} fail_arg;

/* Every rank but `absent` calls allreduce; `absent` waits until all the others have given up,
 * then calls too and must fail at once (the group is poisoned). */
static void fn_timeout(run_ctx *rc, sd_comm *c, rank_out *out) {
    fail_arg *a = rc->arg;
    float x[33] = {0};
    if (c->rank == a->absent) {
        double t0 = sd_clock_now();
        while (atomic_load(&a->gave_up) < c->size - 1 && sd_clock_now() - t0 < 30) {
            struct timespec d = {0, 5 * 1000 * 1000};
            nanosleep(&d, NULL);
        }
        t0 = sd_clock_now();
        out->st = sd_comm_allreduce_sum(c, x, 33);
        out->elapsed = sd_clock_now() - t0;
        snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
        return;
    }
    double t0 = sd_clock_now();
    out->st = sd_comm_allreduce_sum(c, x, 33);
    out->elapsed = sd_clock_now() - t0;
    snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
    atomic_fetch_add(&a->gave_up, 1);
    t0 = sd_clock_now();
    if (sd_comm_barrier(c) == SD_OK) out->bad_status++; /* later calls fail fast */
    if (sd_clock_now() - t0 > 2.0) out->wrong++;
}

static void test_timeout(void) {
    const int ns[] = {3, 8};
    for (int t = 0; t < 2; t++) {
        int n = ns[t];
        fail_arg a = {.absent = n - 1};
        atomic_init(&a.gave_up, 0);
        rank_out o[8];
        double t0 = sd_clock_now();
        run_group(n, 0.3, fn_timeout, &a, o);
        double total = sd_clock_now() - t0;
        for (int r = 0; r < n; r++) {
            char want[32];
            snprintf(want, sizeof want, "rank %d (", n - 1);
            if (r == n - 1) {
                EXPECT(o[r].st == SD_ERR_RUNTIME && strstr(o[r].msg, "timed out") && o[r].elapsed < 2.0,
                       "n=%d: the late rank fails at once with the group's reason (%s after %.3f s): %s", n,
                       sd_status_str(o[r].st), o[r].elapsed, o[r].msg);
                continue;
            }
            /* 0.3 s timeout; the upper bound only proves there is no hang (loaded CI machines). */
            EXPECT(o[r].st == SD_ERR_RUNTIME && strstr(o[r].msg, want) && strstr(o[r].msg, "never called") &&
                       o[r].elapsed >= 0.25 && o[r].elapsed < 10.0,
                   "n=%d rank %d: wanted a timeout naming rank %d within ~0.3 s, got %s after %.3f s: %s", n, r, n - 1,
                   sd_status_str(o[r].st), o[r].elapsed, o[r].msg);
            EXPECT(o[r].bad_status == 0 && o[r].wrong == 0, "n=%d rank %d: later barrier must fail fast", n, r);
        }
        EXPECT(total < 20.0, "n=%d: the timeout test took %.2f s", n, total);
        if (n == 8) printf("timeout message seen by rank 0: %s\n", o[0].msg);
    }
}

/* A rank that took part once and then stops: the message says what it last did. */
static void fn_stops(run_ctx *rc, sd_comm *c, rank_out *out) {
    (void)rc;
    if (sd_comm_barrier(c) != SD_OK) out->bad_status++;
    if (c->rank == 1) return; /* walks away */
    int sum = 0;
    out->st = sd_comm_vote(c, 1, &sum);
    snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
}

static void test_timeout_names_last_collective(void) {
    rank_out o[3];
    run_group(3, 0.2, fn_stops, NULL, o);
    for (int r = 0; r < 3; r += 2)
        EXPECT(o[r].bad_status == 0 && o[r].st == SD_ERR_RUNTIME && strstr(o[r].msg, "rank 1 (last entered barrier #1)") &&
                   strstr(o[r].msg, "vote #2"),
               "rank %d: %s", r, o[r].msg);
}

/* Abort: ranks 0..n-2 wait in a barrier with a long timeout; rank n-1 aborts. */
static void fn_abort(run_ctx *rc, sd_comm *c, rank_out *out) {
    if (c->rank == c->size - 1) {
        struct timespec d = {0, 50 * 1000 * 1000};
        nanosleep(&d, NULL);
        sd_comm_local_abort(rc->g, c->rank, "stream closed");
        out->st = sd_comm_barrier(c); /* after the abort: fails too */
        snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
        return;
    }
    double t0 = sd_clock_now();
    out->st = sd_comm_barrier(c);
    out->elapsed = sd_clock_now() - t0;
    snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
}

static void test_abort(void) {
    for (int t = 1; t < NSIZES; t++) {
        int n = sizes_n[t];
        rank_out o[8];
        double t0 = sd_clock_now();
        run_group(n, 60, fn_abort, NULL, o);
        char want[64];
        snprintf(want, sizeof want, "rank %d aborted the group: stream closed", n - 1);
        for (int r = 0; r < n; r++)
            EXPECT(o[r].st == SD_ERR_RUNTIME && strstr(o[r].msg, want) && o[r].elapsed < 10.0,
                   "n=%d rank %d: wanted '%s' quickly, got %s after %.3f s: %s", n, r, want, sd_status_str(o[r].st),
                   o[r].elapsed, o[r].msg);
        EXPECT(sd_clock_now() - t0 < 20.0, "n=%d: abort did not wake everyone promptly (%.2f s)", n, sd_clock_now() - t0);
    }
}

/* Leaving: rank 1 destroys its communicator; the others fail at once naming it. */
static void fn_leave(run_ctx *rc, sd_comm *c, rank_out *out) {
    (void)rc;
    if (sd_comm_barrier(c) != SD_OK) out->bad_status++;
    if (c->rank == 1) {
        sd_comm_destroy(c);
        float x = 1;
        out->st = sd_comm_allreduce_sum(sd_comm_local_get(rc->g, 1), &x, 1); /* destroyed: refused */
        snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
        return;
    }
    double t0 = sd_clock_now();
    out->st = sd_comm_barrier(c);
    out->elapsed = sd_clock_now() - t0;
    snprintf(out->msg, sizeof out->msg, "%s", sd_last_error());
}

static void test_leave(void) {
    rank_out o[3];
    run_group(3, 60, fn_leave, NULL, o);
    EXPECT(sum_bad(o, 3) == 0, "first barrier");
    EXPECT(o[1].st == SD_ERR_INVALID && strstr(o[1].msg, "destroyed"), "call on a destroyed communicator: %s", o[1].msg);
    for (int r = 0; r < 3; r += 2)
        EXPECT(o[r].st == SD_ERR_RUNTIME && strstr(o[r].msg, "rank 1 left the group") && o[r].elapsed < 10.0,
               "rank %d: %s after %.3f s", r, o[r].msg, o[r].elapsed);
}

/* Mismatched calls fail on every rank with SD_ERR_INVALID and the group goes on. */
static void fn_mismatch(run_ctx *rc, sd_comm *c, rank_out *out) {
    (void)rc;
    float x[11] = {0};
    sd_status s = sd_comm_allreduce_sum(c, x, c->rank == 0 ? 10 : 11); /* counts differ */
    if (s != SD_ERR_INVALID || !strstr(sd_last_error(), "count mismatch")) out->wrong++;
    int sum = 0;
    s = c->rank == 0 ? sd_comm_barrier(c) : sd_comm_vote(c, 1, &sum); /* collectives differ */
    if (s != SD_ERR_INVALID || !strstr(sd_last_error(), "collective mismatch")) out->wrong++;
    unsigned char b[8] = {0};
    s = sd_comm_broadcast(c, b, 8, c->rank); /* roots differ */
    if (s != SD_ERR_INVALID || !strstr(sd_last_error(), "broadcast mismatch")) out->wrong++;
    size_t rb[2] = {4, (size_t)(c->rank == 0 ? 4 : 8)}; /* rank 0 expects 4 bytes from rank 1, which sends 8 */
    unsigned char recv[16];
    s = sd_comm_allgatherv(c, b, rb[c->rank], recv, rb, NULL);
    if (s != SD_ERR_INVALID || !strstr(sd_last_error(), "allgatherv size mismatch")) out->wrong++;
    MUST(out, sd_comm_barrier(c)); /* still in step */
    x[0] = (float)c->rank + 1;
    MUST(out, sd_comm_allreduce_sum(c, x, 11));
    if (x[0] != 3) out->wrong++;
    if (c->counters.calls[SD_COLL_ALLREDUCE] != 1) out->wrong++; /* failed calls are not counted */
}

static void test_mismatch(void) {
    rank_out o[2];
    run_group(2, 10, fn_mismatch, NULL, o);
    EXPECT(sum_bad(o, 2) == 0 && sum_wrong(o, 2) == 0, "mismatch detection: %d failed calls, %ld wrong outcomes",
           sum_bad(o, 2), sum_wrong(o, 2));
}

/* Argument checks of the wrappers (one rank: nothing waits). */
static void test_arguments(void) {
    sd_comm_local_group *g = NULL;
    EXPECT_FAIL(sd_comm_local_group_create(0, &g), SD_ERR_INVALID, "0 ranks");
    EXPECT_OK(sd_comm_local_group_create(1, &g));
    if (!g) return;
    EXPECT(sd_comm_local_get(g, 1) == NULL && sd_comm_local_get(g, -1) == NULL, "out-of-range rank gives NULL");
    sd_comm *c = sd_comm_local_get(g, 0);
    EXPECT(c && c->size == 1 && c->rank == 0 && strcmp(c->ops->name, "local") == 0, "rank 0 of 1");
    char b[4] = {0};
    EXPECT_FAIL(sd_comm_broadcast(c, b, 4, 1), SD_ERR_INVALID, "root 1 is outside [0, 1)");
    EXPECT_FAIL(sd_comm_allreduce_sum(c, NULL, 3), SD_ERR_INVALID, "NULL buffer");
    size_t rb[1] = {3};
    EXPECT_FAIL(sd_comm_allgatherv(c, b, 4, b, rb, NULL), SD_ERR_INVALID, "recv_bytes[0] says 3");
    EXPECT_FAIL(sd_comm_vote(c, 1, NULL), SD_ERR_INVALID, "NULL");
    EXPECT_FAIL(sd_comm_allreduce_sum(NULL, NULL, 0), SD_ERR_INVALID, "NULL or destroyed");
    int sum = 0;
    EXPECT_OK(sd_comm_vote(c, 5, &sum));
    EXPECT(sum == 5, "vote of one rank");
    EXPECT(sd_comm_wire_bytes(c) == 0 && sd_comm_payload_bytes(c) == sizeof(int), "one rank sends nothing on the wire");
    sd_comm_counters before = c->counters, d;
    float x[4] = {1, 2, 3, 4};
    EXPECT_OK(sd_comm_allreduce_sum(c, x, 4));
    sd_comm_counters_diff(&c->counters, &before, &d);
    EXPECT(d.calls[SD_COLL_ALLREDUCE] == 1 && d.payload_bytes[SD_COLL_ALLREDUCE] == 16 && d.calls[SD_COLL_VOTE] == 0,
           "counters diff");
    sd_comm_counters_reset(c);
    EXPECT(sd_comm_payload_bytes(c) == 0, "reset");
    sd_comm_local_group_destroy(g);
}

int main(void) {
    test_ring_formulas();
    test_arguments();
    test_allreduce_exact();
    test_allreduce_bitwise();
    test_allgatherv();
    test_small_collectives();
    test_timeout();
    test_timeout_names_last_collective();
    test_abort();
    test_leave();
    test_mismatch();
    return sd_test_finish("test_comm_local");
}
