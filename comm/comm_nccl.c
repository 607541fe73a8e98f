/* comm_nccl.c: the NCCL collective backend (comm_nccl.h): one process per GPU, bootstrapped over
 * MPI. Compiled only when CMake found NCCL, MPI and CUDA (SCADLES_HAVE_NCCL); otherwise this file is
 * empty. Collectives run on one CUDA stream and are waited for (polling, with a timeout) before
 * they return; host buffers are staged through a device buffer; allgatherv is one ncclAllGather
 * when every rank sends the same number of bytes into consecutive blocks (the compressor's sparse
 * step), a group of broadcasts otherwise (NCCL has no allgatherv); alltoallv is one group of
 * ncclSend / ncclRecv pairs. */
#include "base/clock.h"
#include "comm/comm_nccl.h"

#ifdef SCADLES_HAVE_NCCL

#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm_mpi.h" /* MPI_CHECK */

typedef struct nccl_ctx {
    MPI_Comm comm; /* our duplicate */
    ncclComm_t nccl;
    cudaStream_t stream;
    int own_stream;
    int device, local_rank;
    sd_comm_nccl_options opt;
    void *stage; /* device staging: host buffers, votes, u64 gathers */
    size_t stage_cap;
    int broken; /* sticky after any failure */
    char reason[1024];
} nccl_ctx;

/* ---- errors ----------------------------------------------------------------------------------- */
static const char *host_name(void) {
    static _Thread_local char host[256];
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    return host;
}

static void where(char *buf, size_t n) {
    int rank = -1, inited = 0, fin = 0, dev = -1;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (cudaGetDevice(&dev) != cudaSuccess) {
        dev = -1;
        (void)cudaGetLastError();
    }
    snprintf(buf, n, "[world rank %d, host %s, device %d]", rank, host_name(), dev);
}

const char *sd_nccl_error_string(ncclResult_t r) {
    static _Thread_local char out[1024];
    char w[320];
    where(w, sizeof w);
    const char *last = ncclGetLastError(NULL);
    snprintf(out, sizeof out, "NCCL error %d: %s%s%s %s", (int)r, ncclGetErrorString(r),
             last && *last ? "; last NCCL error: " : "", last && *last ? last : "", w);
    return out;
}

const char *sd_nccl_cuda_error_string(cudaError_t e) {
    static _Thread_local char out[640];
    char w[320];
    where(w, sizeof w);
    snprintf(out, sizeof out, "%s: %s %s", cudaGetErrorName(e), cudaGetErrorString(e), w);
    return out;
}

static sd_status check_usable(sd_comm *c, const char *what) {
    nccl_ctx *x = c->ctx;
    if (x->broken)
        return SD_FAIL(SD_ERR_RUNTIME, "rank %d: %s on an NCCL communicator unusable after an earlier failure: %s",
                       c->rank, what, x->reason);
    return SD_OK;
}

/* Records the first failure: later collectives fail fast with it. */
static sd_status sticky(sd_comm *c, sd_status s) {
    nccl_ctx *x = c->ctx;
    if (s != SD_OK && !x->broken) {
        x->broken = 1;
        snprintf(x->reason, sizeof x->reason, "%s", sd_last_error());
    }
    return s;
}

/* ---- waiting ---------------------------------------------------------------------------------- */
/* Until the stream is idle; an asynchronous NCCL error or the timeout aborts the communicator. */
static sd_status finish(sd_comm *c, const char *what) {
    nccl_ctx *x = c->ctx;
    const double t0 = sd_clock_now();
    for (unsigned spins = 0;; spins++) {
        cudaError_t e = cudaStreamQuery(x->stream);
        if (e == cudaSuccess) return SD_OK;
        if (e != cudaErrorNotReady) {
            (void)cudaGetLastError();
            return SD_FAIL(SD_ERR_RUNTIME, "rank %d of %d on host %s (device %d): %s failed on the GPU: %s", c->rank,
                           c->size, host_name(), x->device, what, sd_nccl_cuda_error_string(e));
        }
        ncclResult_t ar = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(x->nccl, &ar));
        if (ar != ncclSuccess && ar != ncclInProgress) {
            const char *msg = sd_nccl_error_string(ar);
            char copy[1024];
            snprintf(copy, sizeof copy, "%s", msg);
            ncclCommAbort(x->nccl);
            x->nccl = NULL;
            return SD_FAIL(SD_ERR_RUNTIME,
                           "rank %d of %d on host %s (device %d): %s failed asynchronously: %s; the communicator "
                           "was aborted",
                           c->rank, c->size, host_name(), x->device, what, copy);
        }
        if (spins < 64) continue;
        if (x->opt.timeout_s > 0 && sd_clock_now() - t0 > x->opt.timeout_s) {
            ncclCommAbort(x->nccl);
            x->nccl = NULL;
            return SD_FAIL(SD_ERR_RUNTIME,
                           "rank %d of %d on host %s (device %d): %s did not complete within %g s: a peer is dead, "
                           "hung or in a different collective (NCCL does not say which); the communicator was "
                           "aborted, report and MPI_Abort",
                           c->rank, c->size, host_name(), x->device, what, x->opt.timeout_s);
        }
        sched_yield();
    }
}

/* ---- buffers ---------------------------------------------------------------------------------- */
/* Whether p is memory the GPU can use directly (device or managed memory of our device). */
static sd_status is_device_ptr(sd_comm *c, const void *p, int *dev) {
    nccl_ctx *x = c->ctx;
    struct cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) { /* older runtimes: unregistered host memory is an error */
        (void)cudaGetLastError();
        *dev = 0;
        return SD_OK;
    }
    *dev = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    if (a.type == cudaMemoryTypeDevice && a.device != x->device)
        return SD_FAIL(SD_ERR_INVALID, "rank %d: buffer %p lives on device %d but this NCCL communicator uses device %d",
                       c->rank, p, a.device, x->device);
    return SD_OK;
}

static sd_status stage_reserve(sd_comm *c, size_t bytes) {
    nccl_ctx *x = c->ctx;
    if (bytes <= x->stage_cap) return SD_OK;
    if (x->stage) {
        NCCL_CUDA_CHECK(cudaStreamSynchronize(x->stream));
        NCCL_CUDA_CHECK(cudaFree(x->stage));
        x->stage = NULL;
        x->stage_cap = 0;
    }
    const size_t grown = bytes < 256 ? 256 : (bytes + 255) / 256 * 256;
    cudaError_t e = cudaMalloc(&x->stage, grown);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        x->stage = NULL;
        return SD_FAIL(SD_ERR_OOM, "rank %d: NCCL staging buffer of %zu bytes: %s; pass device buffers instead",
                       c->rank, grown, sd_nccl_cuda_error_string(e));
    }
    x->stage_cap = grown;
    return SD_OK;
}

/* ---- the collectives -------------------------------------------------------------------------- */
static sd_status allreduce_impl(sd_comm *c, float *buf, size_t count) {
    nccl_ctx *x = c->ctx;
    if (count == 0) return SD_OK;
    int dev = 0;
    TRY(is_device_ptr(c, buf, &dev));
    float *d = buf;
    const size_t bytes = count * sizeof(float);
    if (!dev) {
        TRY(stage_reserve(c, bytes));
        d = x->stage;
        NCCL_CUDA_CHECK(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, x->stream));
    }
    NCCL_CHECK(ncclAllReduce(d, d, count, ncclFloat, ncclSum, x->nccl, x->stream));
    if (!dev) NCCL_CUDA_CHECK(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, x->stream));
    TRY(finish(c, "allreduce"));
    return SD_OK;
}

static sd_status nccl_allreduce(sd_comm *c, float *buf, size_t count) {
    TRY(check_usable(c, "allreduce"));
    TRY(sticky(c, allreduce_impl(c, buf, count)));
    return SD_OK;
}

/* allgatherv as a group of broadcasts, block j from rank j (device buffers). */
static sd_status broadcast_group(sd_comm *c, const char *dsend, char *drecv, const size_t *recv_bytes,
                                 const size_t *displs) {
    nccl_ctx *x = c->ctx;
    NCCL_CHECK(ncclGroupStart());
    for (int j = 0; j < c->size; j++) {
        if (!recv_bytes[j]) continue;
        const void *sb = j == c->rank ? (const void *)dsend : (const void *)(drecv + displs[j]);
        ncclResult_t r = ncclBroadcast(sb, drecv + displs[j], recv_bytes[j], ncclUint8, j, x->nccl, x->stream);
        if (r != ncclSuccess) {
            (void)ncclGroupEnd();
            NCCL_CHECK(r);
        }
    }
    NCCL_CHECK(ncclGroupEnd());
    return SD_OK;
}

static sd_status allgatherv_impl(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                                 const size_t *displs) {
    nccl_ctx *x = c->ctx;
    size_t end = 0; /* the extent of the receive region */
    for (int j = 0; j < c->size; j++)
        if (recv_bytes[j] && displs[j] + recv_bytes[j] > end) end = displs[j] + recv_bytes[j];
    if (end == 0) return SD_OK; /* every block is empty, identically on every rank */
    int rdev = 0, sdev = 1;
    TRY(is_device_ptr(c, recv, &rdev));
    if (send_bytes) TRY(is_device_ptr(c, send, &sdev));
    const int in_place = send_bytes && (const char *)recv + displs[c->rank] == (const char *)send;
    char *drecv = recv;
    const char *dsend = send;
    if (!rdev || !sdev) { /* stage: [receive region | send block] */
        TRY(stage_reserve(c, end + send_bytes));
        if (!rdev) drecv = x->stage;
        if (in_place) {
            dsend = drecv + displs[c->rank];
            if (!rdev && send_bytes)
                NCCL_CUDA_CHECK(cudaMemcpyAsync((char *)dsend, send, send_bytes, cudaMemcpyHostToDevice, x->stream));
        } else if (!sdev) {
            dsend = (char *)x->stage + end;
            NCCL_CUDA_CHECK(cudaMemcpyAsync((char *)dsend, send, send_bytes, cudaMemcpyHostToDevice, x->stream));
        }
    }
    /* every block the same size, back to back (decided alike on every rank: recv_bytes is common) */
    bool uniform = send_bytes > 0;
    for (int j = 0; j < c->size && uniform; j++) uniform = recv_bytes[j] == send_bytes && displs[j] == (size_t)j * send_bytes;
    if (uniform) NCCL_CHECK(ncclAllGather(dsend, drecv, send_bytes, ncclUint8, x->nccl, x->stream)); /* one ring */
    else TRY(broadcast_group(c, dsend, drecv, recv_bytes, displs));
    if (!rdev)
        for (int j = 0; j < c->size; j++) /* only the blocks: gaps in the caller's buffer stay untouched */
            if (recv_bytes[j])
                NCCL_CUDA_CHECK(cudaMemcpyAsync((char *)recv + displs[j], drecv + displs[j], recv_bytes[j],
                                                cudaMemcpyDeviceToHost, x->stream));
    TRY(finish(c, "allgatherv"));
    return SD_OK;
}

static sd_status nccl_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                                 const size_t *displs) {
    TRY(check_usable(c, "allgatherv"));
    TRY(sticky(c, allgatherv_impl(c, send, send_bytes, recv, recv_bytes, displs)));
    return SD_OK;
}

/* alltoallv as one group of point-to-point sends and receives (NCCL 2.7+); host buffers are
 * staged through the device buffer: [receive extent | send extent]. */
static size_t extent_of(const size_t *bytes, const size_t *displs, int n) {
    size_t end = 0;
    for (int j = 0; j < n; j++)
        if (bytes[j] && displs[j] + bytes[j] > end) end = displs[j] + bytes[j];
    return end;
}

static sd_status alltoallv_impl(sd_comm *c, const void *send, const size_t *sb, const size_t *sd, void *recv,
                                const size_t *rb, const size_t *rd) {
    nccl_ctx *x = c->ctx;
    const size_t rext = extent_of(rb, rd, c->size), sext = extent_of(sb, sd, c->size);
    if (rext == 0 && sext == 0) return SD_OK;
    int rdev = 1, sdev = 1;
    if (rext) TRY(is_device_ptr(c, recv, &rdev));
    if (sext) TRY(is_device_ptr(c, send, &sdev));
    char *drecv = recv;
    const char *dsend = send;
    if (!rdev || !sdev) {
        TRY(stage_reserve(c, rext + sext));
        if (!rdev) drecv = x->stage;
        if (!sdev) {
            dsend = (char *)x->stage + rext;
            NCCL_CUDA_CHECK(cudaMemcpyAsync((char *)dsend, send, sext, cudaMemcpyHostToDevice, x->stream));
        }
    }
    NCCL_CHECK(ncclGroupStart());
    for (int j = 0; j < c->size; j++) {
        ncclResult_t r = ncclSuccess;
        if (sb[j]) r = ncclSend(dsend + sd[j], sb[j], ncclUint8, j, x->nccl, x->stream);
        if (r == ncclSuccess && rb[j]) r = ncclRecv(drecv + rd[j], rb[j], ncclUint8, j, x->nccl, x->stream);
        if (r != ncclSuccess) {
            (void)ncclGroupEnd();
            NCCL_CHECK(r);
        }
    }
    NCCL_CHECK(ncclGroupEnd());
    if (!rdev)
        for (int j = 0; j < c->size; j++)
            if (rb[j])
                NCCL_CUDA_CHECK(cudaMemcpyAsync((char *)recv + rd[j], drecv + rd[j], rb[j], cudaMemcpyDeviceToHost,
                                                x->stream));
    TRY(finish(c, "alltoallv"));
    return SD_OK;
}

static sd_status nccl_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                                void *recv, const size_t *recv_bytes, const size_t *recv_displs) {
    TRY(check_usable(c, "alltoallv"));
    TRY(sticky(c, alltoallv_impl(c, send, send_bytes, send_displs, recv, recv_bytes, recv_displs)));
    return SD_OK;
}

static sd_status allgather_u64_impl(sd_comm *c, uint64_t v, uint64_t *out) {
    nccl_ctx *x = c->ctx;
    const size_t bytes = (size_t)c->size * sizeof(uint64_t);
    TRY(stage_reserve(c, bytes));
    uint64_t *d = x->stage;
    NCCL_CUDA_CHECK(cudaMemcpyAsync(d + c->rank, &v, sizeof v, cudaMemcpyHostToDevice, x->stream));
    NCCL_CHECK(ncclAllGather(d + c->rank, d, 1, ncclUint64, x->nccl, x->stream)); /* in place */
    NCCL_CUDA_CHECK(cudaMemcpyAsync(out, d, bytes, cudaMemcpyDeviceToHost, x->stream));
    TRY(finish(c, "allgather_u64"));
    return SD_OK;
}

static sd_status nccl_allgather_u64(sd_comm *c, uint64_t v, uint64_t *out) {
    TRY(check_usable(c, "allgather_u64"));
    TRY(sticky(c, allgather_u64_impl(c, v, out)));
    return SD_OK;
}

static sd_status broadcast_impl(sd_comm *c, void *buf, size_t bytes, int root) {
    nccl_ctx *x = c->ctx;
    if (bytes == 0) return SD_OK;
    int dev = 0;
    TRY(is_device_ptr(c, buf, &dev));
    void *d = buf;
    if (!dev) {
        TRY(stage_reserve(c, bytes));
        d = x->stage;
        if (c->rank == root) NCCL_CUDA_CHECK(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, x->stream));
    }
    NCCL_CHECK(ncclBroadcast(d, d, bytes, ncclUint8, root, x->nccl, x->stream));
    if (!dev && c->rank != root) NCCL_CUDA_CHECK(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, x->stream));
    TRY(finish(c, "broadcast"));
    return SD_OK;
}

static sd_status nccl_broadcast(sd_comm *c, void *buf, size_t bytes, int root) {
    TRY(check_usable(c, "broadcast"));
    TRY(sticky(c, broadcast_impl(c, buf, bytes, root)));
    return SD_OK;
}

/* An int32 sum of one value per rank on the staging buffer (vote; barrier with v = 0). */
static sd_status int_sum(sd_comm *c, int v, int *sum, const char *what) {
    nccl_ctx *x = c->ctx;
    TRY(stage_reserve(c, sizeof(int)));
    int32_t hv = (int32_t)v, hs = 0;
    NCCL_CUDA_CHECK(cudaMemcpyAsync(x->stage, &hv, sizeof hv, cudaMemcpyHostToDevice, x->stream));
    NCCL_CHECK(ncclAllReduce(x->stage, x->stage, 1, ncclInt32, ncclSum, x->nccl, x->stream));
    NCCL_CUDA_CHECK(cudaMemcpyAsync(&hs, x->stage, sizeof hs, cudaMemcpyDeviceToHost, x->stream));
    TRY(finish(c, what));
    if (sum) *sum = (int)hs;
    return SD_OK;
}

static sd_status nccl_barrier(sd_comm *c) {
    TRY(check_usable(c, "barrier"));
    TRY(sticky(c, int_sum(c, 0, NULL, "barrier")));
    return SD_OK;
}

static sd_status nccl_vote(sd_comm *c, int v, int *sum) {
    TRY(check_usable(c, "vote"));
    TRY(sticky(c, int_sum(c, v, sum, "vote")));
    return SD_OK;
}

static void nccl_destroy(sd_comm *c) {
    nccl_ctx *x = c->ctx;
    if (x->device >= 0 && cudaSetDevice(x->device) != cudaSuccess) (void)cudaGetLastError();
    if (x->stream && cudaStreamSynchronize(x->stream) != cudaSuccess) (void)cudaGetLastError();
    if (x->nccl) {
        if (x->broken) ncclCommAbort(x->nccl);
        else ncclCommDestroy(x->nccl);
    }
    if (x->stage) cudaFree(x->stage);
    if (x->own_stream && x->stream) cudaStreamDestroy(x->stream);
    (void)cudaGetLastError();
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && x->comm != MPI_COMM_NULL) MPI_Comm_free(&x->comm);
    free(x);
    free(c);
}

static const sd_comm_ops nccl_ops = {
    .name = "nccl",
    .allreduce_sum = nccl_allreduce,
    .allgatherv = nccl_allgatherv,
    .allgather_u64 = nccl_allgather_u64,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .vote = nccl_vote,
    .alltoallv = nccl_alltoallv,
    .destroy = nccl_destroy,
};

/* ---- creation --------------------------------------------------------------------------------- */
sd_comm_nccl_options sd_comm_nccl_default_options(void) {
    return (sd_comm_nccl_options){.device = -1, .stream = NULL, .timeout_s = SD_COMM_NCCL_DEFAULT_TIMEOUT_S};
}

int sd_comm_nccl_device(const sd_comm *c) {
    return c && c->ops == &nccl_ops ? ((const nccl_ctx *)c->ctx)->device : -1;
}

void *sd_comm_nccl_stream(const sd_comm *c) {
    return c && c->ops == &nccl_ops ? (void *)((const nccl_ctx *)c->ctx)->stream : NULL;
}

/* This rank's GPU check, agreed by every rank (so that nobody enters ncclCommInitRank alone). */
static sd_status agree_on_devices(sd_comm *c, nccl_ctx *x) {
    int count = 0, ok = 1;
    char why[512] = "";
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        ok = 0;
        snprintf(why, sizeof why, "cudaGetDeviceCount returned %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    } else if (x->device >= count) {
        ok = 0;
        snprintf(why, sizeof why, "it needs device %d (local rank %d) but host %s has %d GPU(s); run at most %d rank(s) "
                 "per host or set the device explicitly", x->device, x->local_rank, host_name(), count, count);
    }
    int all_ok = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, x->comm));
    if (!ok)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "rank %d of %d on host %s: no CUDA device for NCCL: %s", c->rank, c->size,
                       host_name(), why);
    if (!all_ok)
        return SD_FAIL(SD_ERR_UNSUPPORTED,
                       "rank %d of %d: another rank has no usable CUDA device (it printed why); NCCL communicator not "
                       "created",
                       c->rank, c->size);
    return SD_OK;
}

/* What both starts share once the device is chosen: select it, take or make the stream, and create
 * the NCCL communicator from rank 0's unique id. `send_id` carries rank 0's {ok, id} to every rank
 * (MPI_Bcast, or the bootstrap communicator's broadcast). */
typedef struct nccl_boot_id {
    int ok;
    ncclUniqueId id;
} nccl_boot_id;
typedef sd_status (*nccl_send_id_fn)(void *ctx, nccl_boot_id *id);

static sd_status start_nccl(sd_comm *c, nccl_ctx *x, nccl_send_id_fn send_id, void *ctx) {
    NCCL_CUDA_CHECK(cudaSetDevice(x->device));
    if (x->opt.stream) {
        x->stream = (cudaStream_t)x->opt.stream;
    } else {
        NCCL_CUDA_CHECK(cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking));
        x->own_stream = 1;
    }
    /* rank 0 makes the id and says whether it could; every rank learns both from one broadcast */
    nccl_boot_id boot;
    memset(&boot, 0, sizeof boot);
    char why[1024] = "";
    if (c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess;
        if (!boot.ok) snprintf(why, sizeof why, "%s", sd_nccl_error_string(r));
    }
    TRY(send_id(ctx, &boot));
    if (!boot.ok)
        return SD_FAIL(SD_ERR_RUNTIME, "rank %d: ncclGetUniqueId failed on rank 0%s%s", c->rank, c->rank == 0 ? ": " : "",
                       why);
    NCCL_CHECK(ncclCommInitRank(&x->nccl, c->size, boot.id, c->rank));
    return SD_OK;
}

static sd_status send_id_mpi(void *ctx, nccl_boot_id *id) {
    MPI_CHECK(MPI_Bcast(id, (int)sizeof *id, MPI_BYTE, 0, *(MPI_Comm *)ctx));
    return SD_OK;
}

static sd_status send_id_over(void *ctx, nccl_boot_id *id) {
    return sd_comm_broadcast((sd_comm *)ctx, id, sizeof *id, 0); /* over the TCP rendezvous's links */
}

static sd_status create_impl(MPI_Comm comm, const sd_comm_nccl_options *opt, sd_comm *c, nccl_ctx *x) {
    MPI_CHECK(MPI_Comm_dup(comm, &x->comm));
    MPI_CHECK(MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(x->comm, &c->rank));
    MPI_CHECK(MPI_Comm_size(x->comm, &c->size));
    x->opt = opt ? *opt : sd_comm_nccl_default_options();
    MPI_Comm local = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(x->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
    int lr = 0;
    int me = MPI_Comm_rank(local, &lr);
    MPI_Comm_free(&local);
    MPI_CHECK(me);
    x->local_rank = lr;
    x->device = x->opt.device >= 0 ? x->opt.device : lr;
    TRY(agree_on_devices(c, x));
    return start_nccl(c, x, send_id_mpi, &x->comm);
}

/* The communicator's shell around one way of starting it (MPI or another bootstrap communicator):
 * allocates it, runs `init` and frees everything when that fails. */
typedef sd_status (*nccl_init_fn)(void *boot, const sd_comm_nccl_options *opt, sd_comm *c, nccl_ctx *x);

static sd_status nccl_new(nccl_init_fn init, void *boot, const sd_comm_nccl_options *opt, sd_comm **out) {
    sd_comm *c = calloc(1, sizeof *c);
    nccl_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        return SD_FAIL(SD_ERR_OOM, "NCCL communicator");
    }
    x->comm = MPI_COMM_NULL;
    x->device = -1;
    c->ops = &nccl_ops;
    c->ctx = x;
    sd_status s = init(boot, opt, c, x);
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        x->broken = 1;
        nccl_destroy(c);
        return s;
    }
    *out = c;
    return SD_OK;
}

static sd_status init_mpi(void *boot, const sd_comm_nccl_options *opt, sd_comm *c, nccl_ctx *x) {
    return create_impl(*(MPI_Comm *)boot, opt, c, x);
}

sd_status sd_comm_nccl_create(MPI_Comm comm, const sd_comm_nccl_options *opt, sd_comm **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "NCCL communicator: NULL output pointer");
    *out = NULL;
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (!inited || fin)
        return SD_FAIL(SD_ERR_INVALID, "NCCL communicator: call MPI_Init first (and not after MPI_Finalize)");
    return nccl_new(init_mpi, &comm, opt, out);
}

static sd_status create_over_impl(sd_comm *boot, const sd_comm_nccl_options *opt, sd_comm *c, nccl_ctx *x) {
    c->rank = boot->rank;
    c->size = boot->size;
    x->opt = opt ? *opt : sd_comm_nccl_default_options();
    x->local_rank = x->opt.device >= 0 ? x->opt.device : boot->rank;
    x->device = x->local_rank;
    int count = 0, ok = 1, all_ok = 0;
    char why[512] = "";
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        ok = 0;
        snprintf(why, sizeof why, "cudaGetDeviceCount returned %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    } else if (x->device >= count) {
        ok = 0;
        snprintf(why, sizeof why, "it needs device %d but host %s has %d GPU(s); run at most %d rank(s) per host (check "
                 "LOCAL_RANK) or set the device explicitly", x->device, host_name(), count, count);
    }
    TRY(sd_comm_vote(boot, ok, &all_ok));
    if (!ok)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "rank %d of %d on host %s: no CUDA device for NCCL: %s", c->rank, c->size,
                       host_name(), why);
    if (all_ok != c->size)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "rank %d of %d: %d other rank(s) have no usable CUDA device (they printed "
                       "why); NCCL communicator not created", c->rank, c->size, c->size - all_ok);
    return start_nccl(c, x, send_id_over, boot);
}

static sd_status init_over(void *boot, const sd_comm_nccl_options *opt, sd_comm *c, nccl_ctx *x) {
    return create_over_impl((sd_comm *)boot, opt, c, x);
}

sd_status sd_comm_nccl_create_over(sd_comm *boot, const sd_comm_nccl_options *opt, sd_comm **out) {
    if (!out || !boot) return SD_FAIL(SD_ERR_INVALID, "NCCL communicator: NULL argument");
    *out = NULL;
    return nccl_new(init_over, boot, opt, out);
}

#else
typedef int sd_comm_nccl_unused; /* ISO C wants at least one declaration per file */
#endif /* SCADLES_HAVE_NCCL */
