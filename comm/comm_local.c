/* comm_local.c: the local collective backend (comm_local.h): N devices as threads of one process.
 *
 * Every collective is one or two synchronisation points of a reusable barrier (mutex, condition
 * variable, generation counter). At the first point each rank posts what it brings (buffer
 * pointers, counts, root) into a slot; once all have arrived every rank checks that the posts
 * match and does its share of the work directly on the other ranks' buffers; a second point
 * (for collectives that read other ranks' buffers) keeps those buffers alive until all are done.
 * Slots are double-buffered by generation parity, so a rank racing ahead into the next collective
 * never overwrites a post another rank is still reading.
 *
 * allreduce: rank k owns chunk k of the buffer (chunks aligned to 64 bytes) and computes, for each
 * element of it, x_0 + x_1 + ... + x_{n-1} in that order in float, then writes the sum into every
 * rank's buffer. The order per element is fixed, so the result is the same bitwise whoever
 * computes it and whenever. */
#include "comm/comm_local.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What one rank brings to a synchronisation point. */
typedef struct post {
    sd_coll op;
    uint64_t seq;       /* this rank's collective number, from 1 */
    size_t n;           /* allreduce: floats; allgatherv: send bytes; broadcast: bytes */
    int root;           /* broadcast */
    const void *src;    /* allgatherv send buffer */
    void *dst;          /* allreduce / broadcast buffer, allgatherv receive buffer */
    const size_t *recv_bytes, *displs; /* allgatherv; alltoallv: the receive side */
    const size_t *send_bytes, *send_displs; /* alltoallv */
    int ival;           /* vote */
    uint64_t u64;       /* allgather_u64 */
} post;

struct sd_comm_local_group {
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* ---- guarded by mu ---- */
    uint64_t gen;          /* completed synchronisation points */
    int arrived;           /* ranks waiting at the current one */
    unsigned char *here;   /* [n] arrived at the current one */
    post *posts[2];        /* [2][n] by generation parity */
    sd_coll *last_op;      /* [n] the collective each rank last entered (for messages) */
    uint64_t *last_seq;    /* [n] its number; 0: none yet */
    unsigned char *left;   /* [n] destroyed its communicator */
    int failed;            /* sticky: a timeout, an abort or a rank leaving */
    char reason[1024];
    double timeout_s;
    /* ---- per rank, touched only by that rank's thread ---- */
    uint64_t *seq;         /* [n] */
    sd_comm *comms;        /* [n] */
};

static const sd_comm_ops local_ops;

/* ---- synchronisation -------------------------------------------------------------------------- */
static sd_status poisoned(sd_comm_local_group *g, int rank, const post *mine) {
    /* mu held */
    return SD_FAIL(SD_ERR_RUNTIME, "rank %d: %s #%llu failed: %s", rank, sd_coll_name(mine->op),
                   (unsigned long long)mine->seq, g->reason);
}


/* The ranks missing at the current point (mu held) into g->reason. */
static void describe_timeout(sd_comm_local_group *g, int rank, const post *mine) {
    g->reason[0] = '\0';
    int missing = 0;
    for (int j = 0; j < g->n; j++)
        if (!g->here[j]) missing++;
    sd_appendf(g->reason, sizeof g->reason, "timed out after %g s waiting for %s ", g->timeout_s,
            missing == 1 ? "rank" : "ranks");
    int k = 0;
    for (int j = 0; j < g->n; j++) {
        if (g->here[j]) continue;
        sd_appendf(g->reason, sizeof g->reason, "%s%d (", k++ ? ", " : "", j);
        if (g->left[j]) sd_appendf(g->reason, sizeof g->reason, "left the group");
        else if (g->last_seq[j] == 0) sd_appendf(g->reason, sizeof g->reason, "never called a collective");
        else
            sd_appendf(g->reason, sizeof g->reason, "last entered %s #%llu", sd_coll_name(g->last_op[j]),
                    (unsigned long long)g->last_seq[j]);
        sd_appendf(g->reason, sizeof g->reason, ")");
    }
    sd_appendf(g->reason, sizeof g->reason, " to reach %s #%llu (noticed by rank %d); the group is unusable. If that "
            "rank was only slow (an evaluation on a loaded machine), raise the timeout (experiment field comm_timeout_s)",
            sd_coll_name(mine->op), (unsigned long long)mine->seq, rank);
}

static struct timespec deadline_after(double seconds) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double whole = (double)(long long)seconds;
    t.tv_sec += (time_t)whole;
    t.tv_nsec += (long)((seconds - whole) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Arrives at the group's next synchronisation point with `mine` posted; on success *all points
 * at every rank's post for this point (valid until this rank's next synchronisation point). */
static sd_status sync_point(sd_comm_local_group *g, int rank, const post *mine, const post **all) {
    pthread_mutex_lock(&g->mu);
    if (g->failed) {
        sd_status s = poisoned(g, rank, mine);
        pthread_mutex_unlock(&g->mu);
        return s;
    }
    uint64_t gen = g->gen;
    post *slots = g->posts[gen & 1];
    slots[rank] = *mine;
    g->last_op[rank] = mine->op;
    g->last_seq[rank] = mine->seq;
    g->here[rank] = 1;
    if (++g->arrived == g->n) {
        g->arrived = 0;
        memset(g->here, 0, (size_t)g->n);
        g->gen++;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        *all = slots;
        return SD_OK;
    }
    double timeout = g->timeout_s;
    struct timespec deadline = deadline_after(timeout > 0 ? timeout : 0);
    while (g->gen == gen && !g->failed) {
        int rc = timeout > 0 ? pthread_cond_timedwait(&g->cv, &g->mu, &deadline) : pthread_cond_wait(&g->cv, &g->mu);
        if (rc == ETIMEDOUT && g->gen == gen && !g->failed) {
            describe_timeout(g, rank, mine);
            g->failed = 1;
            pthread_cond_broadcast(&g->cv);
        }
    }
    if (g->gen != gen) { /* completed, even if the group failed just after */
        pthread_mutex_unlock(&g->mu);
        *all = slots;
        return SD_OK;
    }
    sd_status s = poisoned(g, rank, mine);
    pthread_mutex_unlock(&g->mu);
    return s;
}

/* Every rank sees the same posts, so every rank reaches the same verdict: a mismatch fails the
 * collective everywhere at its first point and the group stays in step. */
static sd_status check_match(const sd_comm_local_group *g, int rank, const post *all) {
    const post *p0 = &all[0];
    for (int j = 1; j < g->n; j++)
        if (all[j].op != p0->op)
            return SD_FAIL(SD_ERR_INVALID, "rank %d: collective mismatch: rank 0 called %s #%llu but rank %d called %s #%llu",
                           rank, sd_coll_name(p0->op), (unsigned long long)p0->seq, j, sd_coll_name(all[j].op),
                           (unsigned long long)all[j].seq);
    switch (p0->op) {
    case SD_COLL_ALLREDUCE:
        for (int j = 1; j < g->n; j++) {
            if (all[j].n != p0->n)
                return SD_FAIL(SD_ERR_INVALID, "rank %d: allreduce count mismatch: rank 0 has %zu floats, rank %d has %zu",
                               rank, p0->n, j, all[j].n);
            for (int i = 0; i < j && p0->n; i++)
                if (all[i].dst == all[j].dst)
                    return SD_FAIL(SD_ERR_INVALID, "rank %d: allreduce: ranks %d and %d passed the same buffer", rank, i, j);
        }
        break;
    case SD_COLL_BROADCAST:
        for (int j = 1; j < g->n; j++)
            if (all[j].n != p0->n || all[j].root != p0->root)
                return SD_FAIL(SD_ERR_INVALID,
                               "rank %d: broadcast mismatch: rank 0 has %zu bytes from root %d, rank %d has %zu bytes from root %d",
                               rank, p0->n, p0->root, j, all[j].n, all[j].root);
        break;
    case SD_COLL_ALLGATHERV:
        for (int i = 0; i < g->n; i++)
            for (int j = 0; j < g->n; j++)
                if (all[i].recv_bytes[j] != all[j].n)
                    return SD_FAIL(SD_ERR_INVALID,
                                   "rank %d: allgatherv size mismatch: rank %d expects %zu bytes from rank %d, which sends %zu",
                                   rank, i, all[i].recv_bytes[j], j, all[j].n);
        break;
    case SD_COLL_ALLTOALLV:
        for (int i = 0; i < g->n; i++)
            for (int j = 0; j < g->n; j++)
                if (all[j].recv_bytes[i] != all[i].send_bytes[j])
                    return SD_FAIL(SD_ERR_INVALID,
                                   "rank %d: alltoallv size mismatch: rank %d expects %zu bytes from rank %d, which sends %zu",
                                   rank, j, all[j].recv_bytes[i], i, all[i].send_bytes[j]);
        break;
    default: break;
    }
    return SD_OK;
}

/* Enters a collective: numbers it, posts, waits for all and checks the posts agree. */
static sd_status enter(sd_comm *c, post *mine, const post **all) {
    sd_comm_local_group *g = c->ctx;
    mine->seq = ++g->seq[c->rank];
    TRY(sync_point(g, c->rank, mine, all));
    TRY(check_match(g, c->rank, *all));
    return SD_OK;
}

/* The closing point of collectives that read other ranks' buffers. */
static sd_status leave_point(sd_comm *c, const post *mine) {
    const post *all;
    TRY(sync_point(c->ctx, c->rank, mine, &all));
    return SD_OK;
}

/* ---- collectives ------------------------------------------------------------------------------ */
/* Elements [lo, hi) of every rank's buffer become the rank-order sum. */
static void reduce_range(const post *all, int n, size_t lo, size_t hi) {
    enum { BLOCK = 1024 };
    float acc[BLOCK];
    for (size_t i = lo; i < hi; i += BLOCK) {
        size_t len = hi - i < BLOCK ? hi - i : BLOCK;
        memcpy(acc, (const float *)all[0].dst + i, len * sizeof(float));
        for (int r = 1; r < n; r++) {
            const float *x = (const float *)all[r].dst + i;
            for (size_t j = 0; j < len; j++) acc[j] += x[j];
        }
        for (int r = 0; r < n; r++) memcpy((float *)all[r].dst + i, acc, len * sizeof(float));
    }
}

static sd_status local_allreduce(sd_comm *c, float *buf, size_t count) {
    post mine = {.op = SD_COLL_ALLREDUCE, .n = count, .dst = buf};
    const post *all;
    TRY(enter(c, &mine, &all));
    int n = c->size;
    if (n > 1 && count) {
        /* Chunk of this rank, in units of 16 floats so no two ranks write one cache line. */
        size_t units = (count + 15) / 16;
        size_t lo = units * (size_t)c->rank / (size_t)n * 16, hi = units * (size_t)(c->rank + 1) / (size_t)n * 16;
        if (hi > count) hi = count;
        if (lo < hi) reduce_range(all, n, lo, hi);
    }
    TRY(leave_point(c, &mine));
    return SD_OK;
}

static sd_status local_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                                  const size_t *displs) {
    post mine = {.op = SD_COLL_ALLGATHERV, .n = send_bytes, .src = send, .dst = recv, .recv_bytes = recv_bytes, .displs = displs};
    const post *all;
    TRY(enter(c, &mine, &all));
    for (int j = 0; j < c->size; j++) {
        if (!all[j].n) continue;
        char *to = (char *)recv + displs[j];
        if (j == c->rank && (const void *)to == send) continue; /* in place */
        memcpy(to, all[j].src, all[j].n);
    }
    TRY(leave_point(c, &mine));
    return SD_OK;
}

/* Every rank pulls its block from each rank's send buffer (the sizes were checked to match). */
static sd_status local_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                                 void *recv, const size_t *recv_bytes, const size_t *recv_displs) {
    post mine = {.op = SD_COLL_ALLTOALLV, .src = send, .dst = recv, .send_bytes = send_bytes,
                 .send_displs = send_displs, .recv_bytes = recv_bytes, .displs = recv_displs};
    const post *all;
    TRY(enter(c, &mine, &all));
    const int me = c->rank;
    for (int i = 0; i < c->size; i++)
        if (recv_bytes[i])
            memcpy((char *)recv + recv_displs[i], (const char *)all[i].src + all[i].send_displs[me], recv_bytes[i]);
    TRY(leave_point(c, &mine));
    return SD_OK;
}

static sd_status local_allgather_u64(sd_comm *c, uint64_t v, uint64_t *out) {
    post mine = {.op = SD_COLL_ALLGATHER_U64, .u64 = v};
    const post *all;
    TRY(enter(c, &mine, &all));
    for (int j = 0; j < c->size; j++) out[j] = all[j].u64;
    return SD_OK;
}

static sd_status local_broadcast(sd_comm *c, void *buf, size_t bytes, int root) {
    post mine = {.op = SD_COLL_BROADCAST, .n = bytes, .root = root, .dst = buf};
    const post *all;
    TRY(enter(c, &mine, &all));
    if (c->rank != root && bytes) memcpy(buf, all[root].dst, bytes);
    TRY(leave_point(c, &mine));
    return SD_OK;
}

static sd_status local_barrier(sd_comm *c) {
    post mine = {.op = SD_COLL_BARRIER};
    const post *all;
    TRY(enter(c, &mine, &all));
    return SD_OK;
}

static sd_status local_vote(sd_comm *c, int v, int *sum) {
    post mine = {.op = SD_COLL_VOTE, .ival = v};
    const post *all;
    TRY(enter(c, &mine, &all));
    long long s = 0;
    for (int j = 0; j < c->size; j++) s += all[j].ival;
    if (s > INT_MAX || s < INT_MIN)
        return SD_FAIL(SD_ERR_INVALID, "rank %d: vote sum %lld overflows int", c->rank, s);
    *sum = (int)s;
    return SD_OK;
}

/* sd_comm_destroy on a local communicator: the rank leaves; the group itself is freed by
 * sd_comm_local_group_destroy. */
static void local_leave(sd_comm *c) {
    sd_comm_local_group *g = c->ctx;
    pthread_mutex_lock(&g->mu);
    if (!g->left[c->rank]) {
        g->left[c->rank] = 1;
        if (!g->failed) {
            g->failed = 1;
            snprintf(g->reason, sizeof g->reason, "rank %d left the group (its communicator was destroyed)", c->rank);
        }
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    c->ops = NULL;
}

static const sd_comm_ops local_ops = {
    .name = "local",
    .allreduce_sum = local_allreduce,
    .allgatherv = local_allgatherv,
    .allgather_u64 = local_allgather_u64,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .vote = local_vote,
    .alltoallv = local_alltoallv,
    .destroy = local_leave,
};

/* ---- the group -------------------------------------------------------------------------------- */
sd_status sd_comm_local_group_create(int n, sd_comm_local_group **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "local group: NULL output pointer");
    *out = NULL;
    if (n < 1 || n > 65536) return SD_FAIL(SD_ERR_INVALID, "local group of %d ranks: need 1..65536", n);
    sd_comm_local_group *g = calloc(1, sizeof *g);
    if (!g) return SD_FAIL(SD_ERR_OOM, "local group of %d ranks", n);
    size_t un = (size_t)n;
    g->n = n;
    g->timeout_s = SD_COMM_LOCAL_DEFAULT_TIMEOUT_S;
    g->here = calloc(un, 1);
    g->left = calloc(un, 1);
    g->posts[0] = calloc(2 * un, sizeof(post));
    g->last_op = calloc(un, sizeof(sd_coll));
    g->last_seq = calloc(un, sizeof(uint64_t));
    g->seq = calloc(un, sizeof(uint64_t));
    g->comms = calloc(un, sizeof(sd_comm));
    int mu_ok = pthread_mutex_init(&g->mu, NULL) == 0, cv_ok = 0;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) == 0) {
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&g->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!g->here || !g->left || !g->posts[0] || !g->last_op || !g->last_seq || !g->seq || !g->comms || !mu_ok || !cv_ok) {
        if (mu_ok) pthread_mutex_destroy(&g->mu);
        if (cv_ok) pthread_cond_destroy(&g->cv);
        free(g->here); free(g->left); free(g->posts[0]); free(g->last_op); free(g->last_seq); free(g->seq); free(g->comms);
        free(g);
        return SD_FAIL(SD_ERR_OOM, "local group of %d ranks: allocation or pthread initialisation failed", n);
    }
    g->posts[1] = g->posts[0] + un;
    for (int r = 0; r < n; r++) g->comms[r] = (sd_comm){.ops = &local_ops, .ctx = g, .rank = r, .size = n};
    *out = g;
    return SD_OK;
}

sd_comm *sd_comm_local_get(sd_comm_local_group *g, int rank) {
    if (!g || rank < 0 || rank >= g->n) return NULL;
    return &g->comms[rank];
}

int sd_comm_local_size(const sd_comm_local_group *g) { return g ? g->n : 0; }

void sd_comm_local_set_timeout(sd_comm_local_group *g, double seconds) {
    if (!g) return;
    if (seconds > 1e9) seconds = 1e9; /* keeps the deadline arithmetic in range */
    pthread_mutex_lock(&g->mu);
    g->timeout_s = seconds;
    pthread_mutex_unlock(&g->mu);
}

void sd_comm_local_abort(sd_comm_local_group *g, int rank, const char *reason) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    if (!g->failed) {
        g->failed = 1;
        snprintf(g->reason, sizeof g->reason, "rank %d aborted the group: %s", rank, reason ? reason : "(no reason given)");
    }
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void sd_comm_local_group_destroy(sd_comm_local_group *g) {
    if (!g) return;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->here);
    free(g->left);
    free(g->posts[0]);
    free(g->last_op);
    free(g->last_seq);
    free(g->seq);
    free(g->comms);
    free(g);
}
