/* test_comm_mpi.c: the MPI collective backend, run by ctest under mpiexec (tests/mpi/run_mpi.sh,
 * 4 ranks). The same exactly checkable inputs as test_comm_local for each mode (ordered reduction
 * with a timeout, ordered with blocking calls, MPI_Allreduce): allreduce of small integers,
 * a non-integer allreduce that must equal the sequential rank-order sum bitwise (ordered modes)
 * and, on rank 0, the local backend's result for the same inputs computed in-process with as
 * many threads as there are MPI ranks; allgatherv with different sizes (zero included; packed,
 * gapped, in place), allgather_u64, broadcast from every root, barrier, vote, the ring byte
 * counters summed across ranks, alltoallv (sizes by sender and receiver, gaps, its counter), the
 * compressor's sparse allreduce bitwise equal to the local backend's, the INT_MAX refusal, and the timeout path (one rank stays away,
 * the others fail within the timeout). Each rank counts its failures; rank 0 prints the sums.
 *
 * Other modes: `--probe` (init and finalize only: can mpiexec start us here?), `--dead-peer`
 * and `--hung-peer` (3 ranks: rank 2 exits without MPI_Finalize, or stays alive but never
 * calls; the others report and MPI_Abort; tests/mpi/run_dead_peer.sh checks the job ends). */
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/comm_mpi.h"
#include "comm/compress.h"
#include "tests/harness.h"

static int g_rank, g_size;

/* ---- inputs shared with the local comparison -------------------------------------------------- */
static const size_t counts[] = {0, 1, 7, 16, 1000, 100003};
#define NCOUNTS (int)(sizeof counts / sizeof counts[0])
enum { BITWISE_COUNT = 100003 };

static void fill_rank(float *x, size_t count, int rank) {
    sd_test_rng r = {0x5eedull * 1000003u + (uint64_t)rank};
    sd_test_fill(&r, x, count, -1.0f, 1.0f);
    for (size_t i = 0; i < count; i += 97) x[i] *= 1e4f; /* mixed magnitudes: order matters */
}

static size_t gather_size(int r) { return (size_t)((r * 37) % 5) * 3; } /* rank 0: 0 bytes */
static unsigned char gather_byte(int r, size_t k) { return (unsigned char)(r * 31 + (int)k * 7 + 1); }

#define CHECK_OK(expr)                                                                                      \
    do {                                                                                                    \
        sd_status s_ = (expr);                                                                              \
        EXPECT(s_ == SD_OK, "rank %d: %s returned %s: %s", g_rank, #expr, sd_status_str(s_), sd_last_error()); \
    } while (0)

/* ---- the local backend's answer, on rank 0 ------------------------------------------------------ */
typedef struct local_job { sd_comm_local_group *g; int rank; float *out; sd_status st; } local_job;

static void *local_thread(void *p) {
    local_job *j = p;
    float *x = malloc(sizeof(float) * BITWISE_COUNT);
    fill_rank(x, BITWISE_COUNT, j->rank);
    j->st = sd_comm_allreduce_sum(sd_comm_local_get(j->g, j->rank), x, BITWISE_COUNT);
    if (j->rank == 0) memcpy(j->out, x, sizeof(float) * BITWISE_COUNT);
    free(x);
    return NULL;
}

/* The local backend with g_size threads on the bitwise input; rank 0's result into out. */
static sd_status local_reference(float *out) {
    sd_comm_local_group *g = NULL;
    TRY(sd_comm_local_group_create(g_size, &g));
    pthread_t th[64];
    local_job jobs[64];
    int n = g_size < 64 ? g_size : 64;
    for (int r = 0; r < n; r++) {
        jobs[r] = (local_job){g, r, out, SD_OK};
        pthread_create(&th[r], NULL, local_thread, &jobs[r]);
    }
    sd_status s = SD_OK;
    for (int r = 0; r < n; r++) {
        pthread_join(th[r], NULL);
        if (jobs[r].st != SD_OK) s = jobs[r].st;
    }
    sd_comm_local_group_destroy(g);
    return s;
}

/* ---- checks for one communicator ---------------------------------------------------------------- */
static void check_allreduce(sd_comm *c, int bitwise_expected, const char *mode) {
    float tri = (float)(g_size * (g_size + 1) / 2);
    for (int k = 0; k < NCOUNTS; k++) {
        size_t count = counts[k];
        float *x = malloc(sizeof(float) * (count ? count : 1));
        for (size_t i = 0; i < count; i++) x[i] = (float)((g_rank + 1) * (int)(i % 13 + 1));
        CHECK_OK(sd_comm_allreduce_sum(c, x, count));
        long wrong = 0;
        for (size_t i = 0; i < count; i++) wrong += x[i] != (float)(i % 13 + 1) * tri;
        EXPECT(wrong == 0, "%s rank %d: allreduce of %zu exact integers: %ld wrong", mode, g_rank, count, wrong);
        free(x);
    }
    /* Non-integer input: the sequential rank-order sum, computed here from every rank's input. */
    float *x = malloc(sizeof(float) * BITWISE_COUNT), *ref = malloc(sizeof(float) * BITWISE_COUNT),
          *tmp = malloc(sizeof(float) * BITWISE_COUNT);
    for (int r = 0; r < g_size; r++) {
        fill_rank(tmp, BITWISE_COUNT, r);
        for (size_t i = 0; i < BITWISE_COUNT; i++) ref[i] = r == 0 ? tmp[i] : ref[i] + tmp[i];
    }
    fill_rank(x, BITWISE_COUNT, g_rank);
    CHECK_OK(sd_comm_allreduce_sum(c, x, BITWISE_COUNT));
    long differ = 0;
    double worst = 0;
    for (size_t i = 0; i < BITWISE_COUNT; i++) {
        differ += memcmp(&x[i], &ref[i], sizeof(float)) != 0;
        double d = (double)x[i] - (double)ref[i];
        if (d < 0) d = -d;
        if (d > worst) worst = d;
    }
    if (bitwise_expected)
        EXPECT(differ == 0, "%s rank %d: %ld of %d elements differ bitwise from the rank-order sum", mode, g_rank, differ,
               BITWISE_COUNT);
    else /* MPI's own order: close, not necessarily equal (inputs up to 1e4 in size) */
        EXPECT(worst <= 1e-2, "%s rank %d: MPI_Allreduce off by %g from the rank-order sum", mode, g_rank, worst);
    if (g_rank == 0 && !bitwise_expected)
        printf("%s: %ld of %d elements differ bitwise from the rank-order sum (max |diff| %g)\n", mode, differ,
               BITWISE_COUNT, worst);
    /* Identical on every rank: rank 0's result broadcast and compared. */
    memcpy(tmp, x, sizeof(float) * BITWISE_COUNT);
    MPI_Bcast(tmp, BITWISE_COUNT, MPI_FLOAT, 0, MPI_COMM_WORLD);
    EXPECT(memcmp(tmp, x, sizeof(float) * BITWISE_COUNT) == 0, "%s rank %d: result differs from rank 0's", mode, g_rank);
    /* Rank 0: the local backend with as many threads, same inputs. */
    if (g_rank == 0 && bitwise_expected) {
        sd_status s = local_reference(tmp);
        EXPECT(s == SD_OK, "local reference: %s", sd_last_error());
        long d2 = 0;
        for (size_t i = 0; i < BITWISE_COUNT; i++) d2 += memcmp(&x[i], &tmp[i], sizeof(float)) != 0;
        EXPECT(s == SD_OK && d2 == 0, "%s: %ld of %d elements differ bitwise from the local backend with %d threads", mode,
               d2, BITWISE_COUNT, g_size);
    }
    free(x);
    free(ref);
    free(tmp);
}

static void check_allgatherv(sd_comm *c, const char *mode) {
    int n = g_size;
    size_t *rb = malloc(sizeof(size_t) * (size_t)n), *dp = malloc(sizeof(size_t) * (size_t)n);
    size_t total = 0;
    for (int j = 0; j < n; j++) total += (rb[j] = gather_size(j));
    for (int variant = 0; variant < 3; variant++) { /* packed, gapped (reverse order), in place */
        size_t cap = variant == 1 ? total + 5 * (size_t)(n + 1) : total, off = variant == 1 ? 5 : 0;
        for (int jj = 0; jj < n; jj++) {
            int j = variant == 1 ? n - 1 - jj : jj;
            dp[j] = off;
            off += rb[j] + (variant == 1 ? 5 : 0);
        }
        unsigned char *recv = malloc(cap + 1), *send = malloc(rb[g_rank] + 1);
        memset(recv, 0xEE, cap + 1);
        for (size_t k = 0; k < rb[g_rank]; k++) send[k] = gather_byte(g_rank, k);
        if (variant == 2) {
            memcpy(recv + dp[g_rank], send, rb[g_rank]);
            CHECK_OK(sd_comm_allgatherv(c, recv + dp[g_rank], rb[g_rank], recv, rb, dp));
        } else {
            CHECK_OK(sd_comm_allgatherv(c, send, rb[g_rank], recv, rb, variant == 0 ? NULL : dp));
        }
        long wrong = 0;
        unsigned char *mark = calloc(cap + 1, 1);
        for (int j = 0; j < n; j++)
            for (size_t k = 0; k < rb[j]; k++) {
                wrong += recv[dp[j] + k] != gather_byte(j, k);
                mark[dp[j] + k] = 1;
            }
        for (size_t k = 0; k <= cap; k++) wrong += !mark[k] && recv[k] != 0xEE;
        EXPECT(wrong == 0, "%s rank %d: allgatherv variant %d: %ld wrong bytes", mode, g_rank, variant, wrong);
        free(mark);
        free(recv);
        free(send);
    }
    /* Blocks beyond INT_MAX bytes are refused on every rank before any traffic. */
    size_t big[64];
    for (int j = 0; j < n; j++) big[j] = j == n - 1 ? (size_t)INT32_MAX + 1 : 1;
    unsigned char dummy[8];
    EXPECT_FAIL(sd_comm_allgatherv(c, dummy, big[g_rank], dummy, big, NULL), SD_ERR_UNSUPPORTED, "INT_MAX");
    free(rb);
    free(dp);
}

static void check_small(sd_comm *c, const char *mode) {
    unsigned char buf[4099];
    for (int root = 0; root < g_size; root++) {
        for (size_t k = 0; k < sizeof buf; k++) buf[k] = g_rank == root ? (unsigned char)(root * 13 + k) : 0xEE;
        CHECK_OK(sd_comm_broadcast(c, buf, sizeof buf, root));
        long wrong = 0;
        for (size_t k = 0; k < sizeof buf; k++) wrong += buf[k] != (unsigned char)(root * 13 + k);
        EXPECT(wrong == 0, "%s rank %d: broadcast from %d: %ld wrong bytes", mode, g_rank, root, wrong);
    }
    uint64_t all[64];
    CHECK_OK(sd_comm_allgather_u64(c, 1000 + (uint64_t)(g_rank * g_rank), all));
    for (int j = 0; j < g_size && j < 64; j++)
        EXPECT(all[j] == 1000 + (uint64_t)(j * j), "%s rank %d: allgather_u64[%d] = %llu", mode, g_rank, j,
               (unsigned long long)all[j]);
    CHECK_OK(sd_comm_barrier(c));
    int sum = -1;
    CHECK_OK(sd_comm_vote(c, g_rank % 2, &sum));
    EXPECT(sum == g_size / 2, "%s rank %d: vote %d", mode, g_rank, sum);
    CHECK_OK(sd_comm_vote(c, 1, &sum));
    EXPECT(sum == g_size, "%s rank %d: vote %d", mode, g_rank, sum);
}

/* alltoallv: block sizes by sender and receiver (zeros included), gapped receive layout, counters. */
static size_t a2a_size(int from, int to) { return (size_t)((from * 5 + to * 3) % 4) * 7; }
static unsigned char a2a_byte(int from, int to, size_t k) { return (unsigned char)(from * 50 + to * 9 + (int)k); }

static void check_alltoallv(sd_comm *c, const char *mode) {
    const int n = g_size;
    size_t sb[64], sd[64], rb[64], rd[64], so = 0, ro = 0;
    for (int j = 0; j < n; j++) {
        sb[j] = a2a_size(g_rank, j);
        sd[j] = so;
        so += sb[j];
        rb[j] = a2a_size(j, g_rank);
        rd[j] = ro + 3; /* gaps */
        ro += rb[j] + 3;
    }
    unsigned char *send = malloc(so + 1), *recv = malloc(ro + 1);
    for (int j = 0; j < n; j++)
        for (size_t k = 0; k < sb[j]; k++) send[sd[j] + k] = a2a_byte(g_rank, j, k);
    memset(recv, 0xEE, ro + 1);
    const uint64_t w0 = c->counters.wire_bytes[SD_COLL_ALLTOALLV];
    CHECK_OK(sd_comm_alltoallv(c, send, sb, sd, recv, rb, rd));
    long wrong = 0;
    uint64_t want = 0;
    for (int j = 0; j < n; j++) {
        for (size_t k = 0; k < rb[j]; k++) wrong += recv[rd[j] + k] != a2a_byte(j, g_rank, k);
        wrong += recv[rd[j] - 1] != 0xEE;
        if (j != g_rank) want += sb[j];
    }
    EXPECT(wrong == 0, "%s rank %d: alltoallv: %ld wrong bytes", mode, g_rank, wrong);
    EXPECT(c->counters.wire_bytes[SD_COLL_ALLTOALLV] - w0 == want, "%s rank %d: alltoallv counted %llu bytes, want %llu",
           mode, g_rank, (unsigned long long)(c->counters.wire_bytes[SD_COLL_ALLTOALLV] - w0), (unsigned long long)want);
    free(send);
    free(recv);
}

/* The compressor's sparse allreduce over MPI: bitwise the local backend's result (computed here
 * with g_size threads), three steps so the residual carries over. */
enum { SA_COUNT = 5003, SA_STEPS = 3 };
static const size_t sa_layers[] = {1000, 3, 2000, 17, 1983};
static void sa_config(sd_compress_config *cc) {
    sd_compress_config_default(cc);
    cc->policy = SD_COMPRESS_ALWAYS;
    cc->ratio = 0.05;
    cc->f16_values = true;
    cc->exchange = SD_EXCHANGE_ALLREDUCE;
}
static void sa_grad(float *g, int rank, int step) {
    sd_test_rng r = {0xabcdull + (uint64_t)rank * 7919u + (uint64_t)step * 104729u};
    sd_test_fill(&r, g, SA_COUNT, -1.0f, 1.0f);
}
/* out: SA_STEPS x SA_COUNT floats of this rank's results */
static sd_status sa_run(sd_comm *c, float *out) {
    sd_compress_config cc;
    sa_config(&cc);
    size_t off[5], at = 0;
    for (int l = 0; l < 5; l++) {
        off[l] = at;
        at += sa_layers[l];
    }
    sd_compressor *z = NULL;
    TRY(sd_compressor_create(&cc, SA_COUNT, 5, off, sa_layers, 1, &z));
    sd_status s = SD_OK;
    for (int t = 0; t < SA_STEPS && s == SD_OK; t++) {
        float *g = out + (size_t)t * SA_COUNT;
        sa_grad(g, c->rank, t);
        s = sd_compress_exchange(z, c, g, NULL);
    }
    sd_compressor_destroy(z);
    return s;
}
typedef struct sa_job { sd_comm_local_group *g; int rank; float *out; sd_status st; } sa_job;
static void *sa_thread(void *p) {
    sa_job *j = p;
    j->st = sa_run(sd_comm_local_get(j->g, j->rank), j->out);
    return NULL;
}
static void check_sparse_allreduce(sd_comm *c, const char *mode) {
    float *mine = malloc(sizeof(float) * SA_COUNT * SA_STEPS), *ref = malloc(sizeof(float) * SA_COUNT * SA_STEPS * 64);
    CHECK_OK(sa_run(c, mine));
    sd_comm_local_group *g = NULL;
    CHECK_OK(sd_comm_local_group_create(g_size, &g));
    if (g) {
        pthread_t th[64];
        sa_job jobs[64];
        for (int r = 0; r < g_size; r++) {
            jobs[r] = (sa_job){g, r, ref + (size_t)r * SA_COUNT * SA_STEPS, SD_OK};
            pthread_create(&th[r], NULL, sa_thread, &jobs[r]);
        }
        for (int r = 0; r < g_size; r++) pthread_join(th[r], NULL);
        sd_comm_local_group_destroy(g);
        EXPECT(memcmp(mine, ref + (size_t)g_rank * SA_COUNT * SA_STEPS, sizeof(float) * SA_COUNT * SA_STEPS) == 0,
               "%s rank %d: the sparse allreduce over MPI differs from the local backend's", mode, g_rank);
    }
    free(mine);
    free(ref);
}

/* Ring accounting summed over ranks, against the closed forms. */
static void check_counters(sd_comm *c, const char *mode) {
    sd_comm_counters_reset(c);
    float x[1000] = {0};
    CHECK_OK(sd_comm_allreduce_sum(c, x, 1000));
    unsigned char b[100] = {0};
    CHECK_OK(sd_comm_broadcast(c, b, 100, g_size - 1));
    size_t rb[64], total = 0;
    for (int j = 0; j < g_size; j++) total += (rb[j] = gather_size(j));
    unsigned char *recv = malloc(total + 1), send[16] = {0};
    CHECK_OK(sd_comm_allgatherv(c, send, rb[g_rank], recv, rb, NULL));
    free(recv);
    unsigned long long mine[3] = {c->counters.wire_bytes[SD_COLL_ALLREDUCE], c->counters.wire_bytes[SD_COLL_BROADCAST],
                                  c->counters.wire_bytes[SD_COLL_ALLGATHERV]},
                       sum[3];
    MPI_Allreduce(mine, sum, 3, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    unsigned long long p1 = (unsigned long long)(g_size - 1);
    EXPECT(sum[0] == 2 * p1 * 4000 && sum[1] == p1 * 100 && sum[2] == p1 * total,
           "%s: ring bytes over ranks: allreduce %llu (want %llu), broadcast %llu (want %llu), allgatherv %llu (want %llu)",
           mode, sum[0], 2 * p1 * 4000, sum[1], p1 * 100, sum[2], p1 * (unsigned long long)total);
    EXPECT(c->counters.payload_bytes[SD_COLL_ALLREDUCE] == 4000 && c->counters.calls[SD_COLL_ALLREDUCE] == 1,
           "%s rank %d: allreduce payload counter", mode, g_rank);
}

static void check_mode(const sd_comm_mpi_options *opt, const char *mode) {
    sd_comm *c = NULL;
    CHECK_OK(sd_comm_mpi_create_ex(MPI_COMM_WORLD, opt, &c));
    if (!c) return;
    EXPECT(c->rank == g_rank && c->size == g_size && strcmp(c->ops->name, "mpi") == 0, "%s: rank/size/name", mode);
    check_allreduce(c, opt->reduce == SD_COMM_MPI_REDUCE_ORDERED, mode);
    check_allgatherv(c, mode);
    check_small(c, mode);
    check_alltoallv(c, mode);
    check_sparse_allreduce(c, mode);
    check_counters(c, mode);
    sd_comm_destroy(c);
}

/* One rank stays away from a barrier; the others fail within the timeout; then the late rank
 * completes the pending barrier so nothing is left in flight at MPI_Finalize. */
static void check_timeout(void) {
    int late = g_size - 1;
    if (g_size < 2) return;
    sd_comm_mpi_options opt = sd_comm_mpi_default_options();
    opt.timeout_s = g_rank == late ? 30.0 : 0.5;
    sd_comm *c = NULL;
    CHECK_OK(sd_comm_mpi_create_ex(MPI_COMM_WORLD, &opt, &c));
    if (!c) return;
    MPI_Comm ctl;
    MPI_Comm_dup(MPI_COMM_WORLD, &ctl);
    if (g_rank != late) {
        double t0 = MPI_Wtime();
        EXPECT_FAIL(sd_comm_barrier(c), SD_ERR_RUNTIME, "did not complete within 0.5 s");
        double el = MPI_Wtime() - t0;
        EXPECT(el >= 0.45 && el < 10.0, "rank %d: timed out after %.3f s, wanted ~0.5 s", g_rank, el);
        if (g_rank == 0) printf("MPI timeout message on rank 0: %s\n", sd_last_error());
        EXPECT_FAIL(sd_comm_barrier(c), SD_ERR_RUNTIME, "unusable after an earlier failure");
        MPI_Barrier(ctl); /* everyone but the late rank has given up */
        MPI_Barrier(ctl); /* progresses our pending barrier while the late rank completes it */
    } else {
        MPI_Barrier(ctl);
        CHECK_OK(sd_comm_barrier(c)); /* matches the others' abandoned barrier */
        MPI_Barrier(ctl);
    }
    MPI_Comm_free(&ctl);
    sd_comm_destroy(c);
}

/* ---- dead and hung peers (3 ranks) ------------------------------------------------------------ */
static int run_peer_failure(int hung) {
    sd_comm_mpi_options opt = sd_comm_mpi_default_options();
    opt.timeout_s = 5.0;
    sd_comm *c = NULL;
    if (sd_comm_mpi_create_ex(MPI_COMM_WORLD, &opt, &c) != SD_OK) {
        fprintf(stderr, "rank %d: %s\n", g_rank, sd_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (sd_comm_barrier(c) != SD_OK) MPI_Abort(MPI_COMM_WORLD, 2);
    if (g_rank == 2) {
        if (hung) {
            fprintf(stderr, "rank 2: staying alive without calling collectives\n");
            sleep(120);
        }
        fprintf(stderr, "rank 2: exiting without MPI_Finalize\n");
        _exit(3);
    }
    float x[1024] = {0};
    for (int step = 0;; step++) {
        sd_status s = sd_comm_allreduce_sum(c, x, 1024);
        if (s != SD_OK) {
            fprintf(stderr, "rank %d: step %d: %s\n", g_rank, step, sd_last_error());
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
}

int main(int argc, char **argv) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (argc > 1 && strcmp(argv[1], "--probe") == 0) {
        if (g_rank == 0) printf("sd-mpi-probe: MPI started (%d ranks)\n", g_size);
        MPI_Finalize();
        return 0;
    }
    if (argc > 1 && (strcmp(argv[1], "--dead-peer") == 0 || strcmp(argv[1], "--hung-peer") == 0)) {
        if (g_size != 3) {
            if (g_rank == 0) fprintf(stderr, "%s needs exactly 3 ranks\n", argv[1]);
            MPI_Finalize();
            return 1;
        }
        return run_peer_failure(strcmp(argv[1], "--hung-peer") == 0);
    }
    if (g_size > 64) {
        if (g_rank == 0) fprintf(stderr, "test_comm_mpi: at most 64 ranks\n");
        MPI_Finalize();
        return 1;
    }
    if (g_rank == 0) printf("test_comm_mpi: %d ranks\n", g_size);

    EXPECT_FAIL(sd_comm_mpi_create(MPI_COMM_WORLD, NULL), SD_ERR_INVALID, "NULL output");
    sd_comm_mpi_options ordered = sd_comm_mpi_default_options(), blocking = ordered, native = ordered;
    blocking.timeout_s = 0;
    native.reduce = SD_COMM_MPI_REDUCE_NATIVE;
    check_mode(&ordered, "ordered+timeout");
    check_mode(&blocking, "ordered+blocking");
    check_mode(&native, "native MPI_Allreduce");
    check_timeout();

    int local[2] = {sd_test_passed, sd_test_failed}, total[2] = {0, 0};
    MPI_Allreduce(local, total, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int rc = 0;
    if (g_rank == 0) {
        sd_test_passed = total[0];
        sd_test_failed = total[1];
        rc = sd_test_finish("test_comm_mpi");
    } else {
        rc = total[1] == 0 && total[0] > 0 ? 0 : 1;
    }
    MPI_Finalize();
    return rc;
}
