/* comm_mpi.c: the MPI collective backend (comm_mpi.h): one process per device. Compiled only
 * when CMake found MPI (SCADLES_HAVE_MPI); otherwise this file is empty.
 *
 * Every collective runs on a private duplicate of the caller's communicator with
 * MPI_ERRORS_RETURN. With a timeout it is started non-blocking and polled (MPI_Test, yielding
 * the core between polls) until done or the deadline. The default allreduce is the rank-ordered
 * one (MPI_Alltoallv of chunks, sum in rank order, MPI_Allgatherv), bitwise equal to the local
 * backend. MPI counts are int: buffers are processed in segments where that is exact (allreduce,
 * broadcast); allgatherv refuses blocks or displacements beyond INT_MAX bytes. */
#include "comm/comm_mpi.h"

#ifdef SCADLES_HAVE_MPI

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Segment sizes below INT_MAX elements so counts and displacements fit an int. */
#define SD_MPI_FLOAT_SEGMENT ((size_t)1 << 28) /* floats: 1 GiB */
#define SD_MPI_BYTE_SEGMENT ((size_t)1 << 30)  /* bytes */

typedef struct mpi_ctx {
    MPI_Comm comm; /* our duplicate */
    sd_comm_mpi_options opt;
    float *scratch; /* ordered allreduce: this rank's chunk from every rank */
    size_t scratch_cap;
    int *ibuf; /* 4 * size ints: counts and displacements */
    int broken; /* sticky after any failure */
    char reason[1024];
} mpi_ctx;

/* ---- errors ----------------------------------------------------------------------------------- */
const char *sd_mpi_error_string(int code) {
    static _Thread_local char out[MPI_MAX_ERROR_STRING + 320];
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "unknown MPI error");
    int rank = -1, inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char host[256] = "?";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    snprintf(out, sizeof out, "%s (MPI error %d; world rank %d on host %s)", msg, code, rank, host);
    return out;
}

static const char *host_name(void) {
    static _Thread_local char host[256];
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    return host;
}

/* ---- waiting ---------------------------------------------------------------------------------- */
static sd_status wait_req(sd_comm *c, MPI_Request *req, const char *what) {
    mpi_ctx *x = c->ctx;
    double t0 = MPI_Wtime();
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done) return SD_OK;
        if (spins < 64) continue; /* short operations: poll tightly first */
        if (MPI_Wtime() - t0 > x->opt.timeout_s)
            return SD_FAIL(SD_ERR_RUNTIME,
                           "rank %d of %d on host %s: %s did not complete within %g s: a peer is dead, hung or in a "
                           "different collective (MPI does not say which); the communicator is unusable, report and "
                           "MPI_Abort",
                           c->rank, c->size, host_name(), what, x->opt.timeout_s);
        sched_yield(); /* let an oversubscribed peer run */
    }
}

/* Runs one MPI collective: non-blocking + polled with a timeout, or the blocking call. */
#define RUN_COLL(c, what, blocking, nonblocking_with_rq)                      \
    do {                                                                     \
        if (((mpi_ctx *)(c)->ctx)->opt.timeout_s > 0) {                      \
            MPI_Request rq = MPI_REQUEST_NULL;                               \
            MPI_CHECK(nonblocking_with_rq);                                  \
            TRY(wait_req((c), &rq, (what)));                                 \
        } else {                                                             \
            MPI_CHECK(blocking);                                             \
        }                                                                    \
    } while (0)

static sd_status check_usable(sd_comm *c, const char *what) {
    mpi_ctx *x = c->ctx;
    if (x->broken)
        return SD_FAIL(SD_ERR_RUNTIME, "rank %d: %s on an MPI communicator unusable after an earlier failure: %s", c->rank,
                       what, x->reason);
    return SD_OK;
}

/* Records the first failure: later collectives fail fast with it. */
static sd_status sticky(sd_comm *c, sd_status s) {
    mpi_ctx *x = c->ctx;
    if (s != SD_OK && !x->broken) {
        x->broken = 1;
        snprintf(x->reason, sizeof x->reason, "%s", sd_last_error());
    }
    return s;
}

/* ---- allreduce -------------------------------------------------------------------------------- */
static size_t chunk_len(size_t count, int k, int p) {
    return count / (size_t)p + ((size_t)k < count % (size_t)p ? 1u : 0u);
}

/* count <= SD_MPI_FLOAT_SEGMENT. Rank r receives chunk r of every rank, sums it in rank order and
 * everyone gathers the sums. */
static sd_status ordered_segment(sd_comm *c, float *buf, size_t count) {
    mpi_ctx *x = c->ctx;
    int p = c->size, r = c->rank;
    int *sc = x->ibuf, *sd = sc + p, *rc = sd + p, *rd = rc + p;
    size_t off = 0;
    for (int k = 0; k < p; k++) {
        sc[k] = (int)chunk_len(count, k, p);
        sd[k] = (int)off;
        off += (size_t)sc[k];
    }
    size_t mine = (size_t)sc[r];
    for (int j = 0; j < p; j++) {
        rc[j] = (int)mine;
        rd[j] = (int)(mine * (size_t)j);
    }
    if (mine * (size_t)p > x->scratch_cap) {
        float *s = realloc(x->scratch, mine * (size_t)p * sizeof(float));
        if (!s) return SD_FAIL(SD_ERR_OOM, "rank %d: allreduce scratch of %zu floats", r, mine * (size_t)p);
        x->scratch = s;
        x->scratch_cap = mine * (size_t)p;
    }
    float *in = x->scratch;
    RUN_COLL(c, "allreduce (alltoallv phase)",
             MPI_Alltoallv(buf, sc, sd, MPI_FLOAT, in, rc, rd, MPI_FLOAT, x->comm),
             MPI_Ialltoallv(buf, sc, sd, MPI_FLOAT, in, rc, rd, MPI_FLOAT, x->comm, &rq));
    /* The same loop order as the local backend: acc = x_0; acc += x_1; ... (float). */
    float *out = buf + sd[r];
    if (mine) memcpy(out, in, mine * sizeof(float));
    for (int j = 1; j < p; j++) {
        const float *xj = in + (size_t)j * mine;
        for (size_t i = 0; i < mine; i++) out[i] += xj[i];
    }
    RUN_COLL(c, "allreduce (allgatherv phase)",
             MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, sc, sd, MPI_FLOAT, x->comm),
             MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, sc, sd, MPI_FLOAT, x->comm, &rq));
    return SD_OK;
}

static sd_status allreduce_impl(sd_comm *c, float *buf, size_t count) {
    mpi_ctx *x = c->ctx;
    if (c->size == 1) return SD_OK;
    for (size_t off = 0; off < count; off += SD_MPI_FLOAT_SEGMENT) {
        size_t len = count - off < SD_MPI_FLOAT_SEGMENT ? count - off : SD_MPI_FLOAT_SEGMENT;
        if (x->opt.reduce == SD_COMM_MPI_REDUCE_NATIVE) {
            RUN_COLL(c, "allreduce",
                     MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)len, MPI_FLOAT, MPI_SUM, x->comm),
                     MPI_Iallreduce(MPI_IN_PLACE, buf + off, (int)len, MPI_FLOAT, MPI_SUM, x->comm, &rq));
        } else {
            TRY(ordered_segment(c, buf + off, len));
        }
    }
    return SD_OK;
}

static sd_status mpi_allreduce(sd_comm *c, float *buf, size_t count) {
    TRY(check_usable(c, "allreduce"));
    TRY(sticky(c, allreduce_impl(c, buf, count)));
    return SD_OK;
}

/* ---- the other collectives -------------------------------------------------------------------- */
/* Refused before any communication, identically on every rank (all see the same sizes), so the
 * communicator stays usable. */
static sd_status allgatherv_fits_int(sd_comm *c, const size_t *recv_bytes, const size_t *displs) {
    for (int j = 0; j < c->size; j++)
        if (recv_bytes[j] > (size_t)INT_MAX || displs[j] > (size_t)INT_MAX)
            return SD_FAIL(SD_ERR_UNSUPPORTED,
                           "rank %d: allgatherv block of rank %d is %zu bytes at displacement %zu; MPI counts are int, so "
                           "blocks and displacements must stay within INT_MAX (%d) bytes: split the exchange",
                           c->rank, j, recv_bytes[j], displs[j], INT_MAX);
    return SD_OK;
}

static sd_status allgatherv_impl(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                                 const size_t *displs) {
    mpi_ctx *x = c->ctx;
    int p = c->size, *counts = x->ibuf, *offs = x->ibuf + p;
    for (int j = 0; j < p; j++) {
        counts[j] = (int)recv_bytes[j];
        offs[j] = (int)displs[j];
    }
    int in_place = send_bytes && (const char *)recv + displs[c->rank] == (const char *)send;
    const void *sbuf = in_place ? MPI_IN_PLACE : send;
    MPI_Datatype stype = in_place ? MPI_DATATYPE_NULL : MPI_BYTE;
    int scount = in_place ? 0 : (int)send_bytes;
    RUN_COLL(c, "allgatherv", MPI_Allgatherv(sbuf, scount, stype, recv, counts, offs, MPI_BYTE, x->comm),
             MPI_Iallgatherv(sbuf, scount, stype, recv, counts, offs, MPI_BYTE, x->comm, &rq));
    return SD_OK;
}

static sd_status mpi_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                                const size_t *displs) {
    TRY(check_usable(c, "allgatherv"));
    TRY(allgatherv_fits_int(c, recv_bytes, displs));
    TRY(sticky(c, allgatherv_impl(c, send, send_bytes, recv, recv_bytes, displs)));
    return SD_OK;
}

static sd_status allgather_u64_impl(sd_comm *c, uint64_t v, uint64_t *out) {
    mpi_ctx *x = c->ctx;
    RUN_COLL(c, "allgather_u64", MPI_Allgather(&v, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, x->comm),
             MPI_Iallgather(&v, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, x->comm, &rq));
    return SD_OK;
}

static sd_status mpi_allgather_u64(sd_comm *c, uint64_t v, uint64_t *out) {
    TRY(check_usable(c, "allgather_u64"));
    TRY(sticky(c, allgather_u64_impl(c, v, out)));
    return SD_OK;
}

static sd_status broadcast_impl(sd_comm *c, void *buf, size_t bytes, int root) {
    mpi_ctx *x = c->ctx;
    for (size_t off = 0; off < bytes; off += SD_MPI_BYTE_SEGMENT) {
        int len = (int)(bytes - off < SD_MPI_BYTE_SEGMENT ? bytes - off : SD_MPI_BYTE_SEGMENT);
        char *at = (char *)buf + off;
        RUN_COLL(c, "broadcast", MPI_Bcast(at, len, MPI_BYTE, root, x->comm),
                 MPI_Ibcast(at, len, MPI_BYTE, root, x->comm, &rq));
    }
    return SD_OK;
}

static sd_status mpi_broadcast(sd_comm *c, void *buf, size_t bytes, int root) {
    TRY(check_usable(c, "broadcast"));
    TRY(sticky(c, broadcast_impl(c, buf, bytes, root)));
    return SD_OK;
}

static sd_status barrier_impl(sd_comm *c) {
    mpi_ctx *x = c->ctx;
    RUN_COLL(c, "barrier", MPI_Barrier(x->comm), MPI_Ibarrier(x->comm, &rq));
    return SD_OK;
}

static sd_status mpi_barrier(sd_comm *c) {
    TRY(check_usable(c, "barrier"));
    TRY(sticky(c, barrier_impl(c)));
    return SD_OK;
}

static sd_status vote_impl(sd_comm *c, int v, int *sum) {
    mpi_ctx *x = c->ctx;
    RUN_COLL(c, "vote", MPI_Allreduce(&v, sum, 1, MPI_INT, MPI_SUM, x->comm),
             MPI_Iallreduce(&v, sum, 1, MPI_INT, MPI_SUM, x->comm, &rq));
    return SD_OK;
}

static sd_status mpi_vote(sd_comm *c, int v, int *sum) {
    TRY(check_usable(c, "vote"));
    TRY(sticky(c, vote_impl(c, v, sum)));
    return SD_OK;
}

/* Refused before any communication when a block or displacement is beyond an int (this rank's
 * view: its own send and receive sides; a peer with the same sizes refuses alike). */
static sd_status alltoallv_fits_int(sd_comm *c, const size_t *sb, const size_t *sd, const size_t *rb, const size_t *rd) {
    for (int j = 0; j < c->size; j++)
        if (sb[j] > (size_t)INT_MAX || sd[j] > (size_t)INT_MAX || rb[j] > (size_t)INT_MAX || rd[j] > (size_t)INT_MAX)
            return SD_FAIL(SD_ERR_UNSUPPORTED,
                           "rank %d: alltoallv block for or from rank %d is beyond INT_MAX (%d) bytes or displacement; "
                           "MPI counts are int: split the exchange", c->rank, j, INT_MAX);
    return SD_OK;
}

static sd_status alltoallv_impl(sd_comm *c, const void *send, const size_t *sb, const size_t *sd, void *recv,
                                const size_t *rb, const size_t *rd) {
    mpi_ctx *x = c->ctx;
    const int p = c->size;
    int *sc = x->ibuf, *so = x->ibuf + p, *rc = x->ibuf + 2 * p, *ro = x->ibuf + 3 * p;
    for (int j = 0; j < p; j++) {
        sc[j] = (int)sb[j];
        so[j] = (int)sd[j];
        rc[j] = (int)rb[j];
        ro[j] = (int)rd[j];
    }
    RUN_COLL(c, "alltoallv", MPI_Alltoallv(send, sc, so, MPI_BYTE, recv, rc, ro, MPI_BYTE, x->comm),
             MPI_Ialltoallv(send, sc, so, MPI_BYTE, recv, rc, ro, MPI_BYTE, x->comm, &rq));
    return SD_OK;
}

static sd_status mpi_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                               void *recv, const size_t *recv_bytes, const size_t *recv_displs) {
    TRY(check_usable(c, "alltoallv"));
    TRY(alltoallv_fits_int(c, send_bytes, send_displs, recv_bytes, recv_displs));
    TRY(sticky(c, alltoallv_impl(c, send, send_bytes, send_displs, recv, recv_bytes, recv_displs)));
    return SD_OK;
}

static void mpi_destroy(sd_comm *c) {
    mpi_ctx *x = c->ctx;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
    free(x->scratch);
    free(x->ibuf);
    free(x);
    free(c);
}

static const sd_comm_ops mpi_ops = {
    .name = "mpi",
    .allreduce_sum = mpi_allreduce,
    .allgatherv = mpi_allgatherv,
    .allgather_u64 = mpi_allgather_u64,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .vote = mpi_vote,
    .alltoallv = mpi_alltoallv,
    .destroy = mpi_destroy,
};

/* ---- creation --------------------------------------------------------------------------------- */
sd_comm_mpi_options sd_comm_mpi_default_options(void) {
    return (sd_comm_mpi_options){.reduce = SD_COMM_MPI_REDUCE_ORDERED, .timeout_s = SD_COMM_MPI_DEFAULT_TIMEOUT_S};
}

static sd_status create_impl(MPI_Comm comm, const sd_comm_mpi_options *opt, sd_comm *c, mpi_ctx *x) {
    MPI_CHECK(MPI_Comm_dup(comm, &x->comm));
    MPI_CHECK(MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(x->comm, &c->rank));
    MPI_CHECK(MPI_Comm_size(x->comm, &c->size));
    x->opt = opt ? *opt : sd_comm_mpi_default_options();
    if (x->opt.reduce != SD_COMM_MPI_REDUCE_ORDERED && x->opt.reduce != SD_COMM_MPI_REDUCE_NATIVE)
        return SD_FAIL(SD_ERR_INVALID, "MPI communicator: unknown reduce mode %d", (int)x->opt.reduce);
    x->ibuf = malloc(4 * sizeof(int) * (size_t)c->size);
    if (!x->ibuf) return SD_FAIL(SD_ERR_OOM, "MPI communicator of %d ranks", c->size);
    return SD_OK;
}

sd_status sd_comm_mpi_create_ex(MPI_Comm comm, const sd_comm_mpi_options *opt, sd_comm **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "MPI communicator: NULL output pointer");
    *out = NULL;
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (!inited || fin) return SD_FAIL(SD_ERR_INVALID, "MPI communicator: call MPI_Init first (and not after MPI_Finalize)");
    sd_comm *c = calloc(1, sizeof *c);
    mpi_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        return SD_FAIL(SD_ERR_OOM, "MPI communicator");
    }
    x->comm = MPI_COMM_NULL;
    c->ops = &mpi_ops;
    c->ctx = x;
    sd_status s = create_impl(comm, opt, c, x);
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        mpi_destroy(c);
        return s;
    }
    *out = c;
    return SD_OK;
}

MPI_Comm sd_comm_mpi_handle(const sd_comm *c) {
    return c && c->ops == &mpi_ops ? ((const mpi_ctx *)c->ctx)->comm : MPI_COMM_NULL;
}

sd_status sd_comm_mpi_create(MPI_Comm comm, sd_comm **out) {
    TRY(sd_comm_mpi_create_ex(comm, NULL, out));
    return SD_OK;
}

#else
typedef int sd_comm_mpi_unused; /* ISO C wants at least one declaration per file */
#endif /* SCADLES_HAVE_MPI */
