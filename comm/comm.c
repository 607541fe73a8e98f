/* comm.c: the backend-independent half of the collective interface: argument checks shared by
 * every backend, the per-communicator counters and the ring byte accounting (comm.h). */
#include "comm/comm.h"

#include <stdlib.h>
#include <string.h>

const char *sd_coll_name(sd_coll k) {
    switch (k) {
    case SD_COLL_ALLREDUCE: return "allreduce";
    case SD_COLL_ALLGATHERV: return "allgatherv";
    case SD_COLL_ALLGATHER_U64: return "allgather_u64";
    case SD_COLL_BROADCAST: return "broadcast";
    case SD_COLL_BARRIER: return "barrier";
    case SD_COLL_VOTE: return "vote";
    case SD_COLL_ALLTOALLV: return "alltoallv";
    case SD_COLL_COUNT: break;
    }
    return "unknown collective";
}

/* ---- ring byte accounting --------------------------------------------------------------------- */
/* Chunk k of `count` elements split over p ranks: count/p, plus one for the first count%p. */
static uint64_t chunk_elems(size_t count, int k, int p) {
    return (uint64_t)(count / (size_t)p) + ((size_t)k < count % (size_t)p ? 1u : 0u);
}

uint64_t sd_comm_ring_allreduce_bytes(size_t count, size_t elem_size, int rank, int size) {
    if (size <= 1) return 0;
    /* Reduce-scatter: rank r sends every chunk but (r+1)%p; allgather: every chunk but (r+2)%p. */
    uint64_t total = (uint64_t)count * elem_size;
    return 2 * total - (chunk_elems(count, (rank + 1) % size, size) + chunk_elems(count, (rank + 2) % size, size)) * elem_size;
}

uint64_t sd_comm_ring_allgather_bytes(const size_t *sizes, int rank, int size) {
    if (size <= 1) return 0;
    uint64_t total = 0;
    for (int j = 0; j < size; j++) total += sizes[j];
    return total - sizes[(rank + 1) % size]; /* the next rank's own block is never sent to it */
}

uint64_t sd_comm_ring_broadcast_bytes(size_t bytes, int root, int rank, int size) {
    if (size <= 1) return 0;
    return rank == (root + size - 1) % size ? 0 : (uint64_t)bytes; /* the chain's last rank */
}

uint64_t sd_comm_alltoallv_bytes(const size_t *send_bytes, int rank, int size) {
    uint64_t total = 0;
    for (int j = 0; j < size; j++)
        if (j != rank) total += send_bytes[j];
    return total;
}

static void count_call(sd_comm *c, sd_coll k, uint64_t payload, uint64_t wire) {
    c->counters.calls[k]++;
    c->counters.payload_bytes[k] += payload;
    c->counters.wire_bytes[k] += wire;
}

uint64_t sd_comm_wire_bytes(const sd_comm *c) {
    uint64_t s = 0;
    for (int k = 0; k < SD_COLL_COUNT; k++) s += c->counters.wire_bytes[k];
    return s;
}

uint64_t sd_comm_payload_bytes(const sd_comm *c) {
    uint64_t s = 0;
    for (int k = 0; k < SD_COLL_COUNT; k++) s += c->counters.payload_bytes[k];
    return s;
}

void sd_comm_counters_reset(sd_comm *c) { memset(&c->counters, 0, sizeof c->counters); }

void sd_comm_counters_diff(const sd_comm_counters *a, const sd_comm_counters *b, sd_comm_counters *out) {
    for (int k = 0; k < SD_COLL_COUNT; k++) {
        out->calls[k] = a->calls[k] - b->calls[k];
        out->payload_bytes[k] = a->payload_bytes[k] - b->payload_bytes[k];
        out->wire_bytes[k] = a->wire_bytes[k] - b->wire_bytes[k];
    }
}

/* ---- the wrappers ----------------------------------------------------------------------------- */
static sd_status check_comm(const sd_comm *c, const char *what) {
    if (!c || !c->ops) return SD_FAIL(SD_ERR_INVALID, "%s on a NULL or destroyed communicator", what);
    return SD_OK;
}

sd_status sd_comm_allreduce_sum(sd_comm *c, float *buf, size_t count) {
    TRY(check_comm(c, "allreduce"));
    if (count > SIZE_MAX / sizeof(float))
        return SD_FAIL(SD_ERR_INVALID, "rank %d: allreduce of %zu floats overflows size_t", c->rank, count);
    if (count && !buf) return SD_FAIL(SD_ERR_INVALID, "rank %d: allreduce of %zu floats from a NULL buffer", c->rank, count);
    TRY(c->ops->allreduce_sum(c, buf, count));
    count_call(c, SD_COLL_ALLREDUCE, (uint64_t)count * sizeof(float),
               sd_comm_ring_allreduce_bytes(count, sizeof(float), c->rank, c->size));
    return SD_OK;
}

sd_status sd_comm_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                             const size_t *displs) {
    TRY(check_comm(c, "allgatherv"));
    if (!recv_bytes) return SD_FAIL(SD_ERR_INVALID, "rank %d: allgatherv needs recv_bytes (one size per rank)", c->rank);
    if (recv_bytes[c->rank] != send_bytes)
        return SD_FAIL(SD_ERR_INVALID, "rank %d: allgatherv sends %zu bytes but recv_bytes[%d] says %zu", c->rank,
                       send_bytes, c->rank, recv_bytes[c->rank]);
    if (send_bytes && !send) return SD_FAIL(SD_ERR_INVALID, "rank %d: allgatherv sends %zu bytes from NULL", c->rank, send_bytes);
    size_t total = 0;
    for (int j = 0; j < c->size; j++) {
        if (recv_bytes[j] > SIZE_MAX - total)
            return SD_FAIL(SD_ERR_INVALID, "rank %d: allgatherv receive sizes overflow size_t", c->rank);
        total += recv_bytes[j];
    }
    if (total && !recv) return SD_FAIL(SD_ERR_INVALID, "rank %d: allgatherv receives %zu bytes into NULL", c->rank, total);
    size_t *packed = NULL;
    if (!displs) {
        packed = malloc(sizeof(size_t) * (size_t)c->size);
        if (!packed) return SD_FAIL(SD_ERR_OOM, "rank %d: allgatherv displacements for %d ranks", c->rank, c->size);
        size_t off = 0;
        for (int j = 0; j < c->size; j++) {
            packed[j] = off;
            off += recv_bytes[j];
        }
        displs = packed;
    }
    sd_status s = c->ops->allgatherv(c, send, send_bytes, recv, recv_bytes, displs);
    free(packed);
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        return s;
    }
    count_call(c, SD_COLL_ALLGATHERV, send_bytes, sd_comm_ring_allgather_bytes(recv_bytes, c->rank, c->size));
    return SD_OK;
}

sd_status sd_comm_allgather_u64(sd_comm *c, uint64_t mine, uint64_t *all) {
    TRY(check_comm(c, "allgather_u64"));
    if (!all) return SD_FAIL(SD_ERR_INVALID, "rank %d: allgather_u64 into NULL", c->rank);
    if (c->ops->allgather_u64) {
        TRY(c->ops->allgather_u64(c, mine, all));
    } else {
        size_t *sizes = malloc(2 * sizeof(size_t) * (size_t)c->size);
        if (!sizes) return SD_FAIL(SD_ERR_OOM, "rank %d: allgather_u64 sizes for %d ranks", c->rank, c->size);
        for (int j = 0; j < c->size; j++) {
            sizes[j] = sizeof(uint64_t);
            sizes[c->size + j] = (size_t)j * sizeof(uint64_t);
        }
        sd_status s = c->ops->allgatherv(c, &mine, sizeof mine, all, sizes, sizes + c->size);
        free(sizes);
        TRY(s);
    }
    uint64_t wire = c->size > 1 ? (uint64_t)(c->size - 1) * sizeof(uint64_t) : 0;
    count_call(c, SD_COLL_ALLGATHER_U64, sizeof(uint64_t), wire);
    return SD_OK;
}

sd_status sd_comm_broadcast(sd_comm *c, void *buf, size_t bytes, int root) {
    TRY(check_comm(c, "broadcast"));
    if (root < 0 || root >= c->size)
        return SD_FAIL(SD_ERR_INVALID, "rank %d: broadcast root %d is outside [0, %d)", c->rank, root, c->size);
    if (bytes && !buf) return SD_FAIL(SD_ERR_INVALID, "rank %d: broadcast of %zu bytes with a NULL buffer", c->rank, bytes);
    TRY(c->ops->broadcast(c, buf, bytes, root));
    count_call(c, SD_COLL_BROADCAST, bytes, sd_comm_ring_broadcast_bytes(bytes, root, c->rank, c->size));
    return SD_OK;
}

sd_status sd_comm_barrier(sd_comm *c) {
    TRY(check_comm(c, "barrier"));
    TRY(c->ops->barrier(c));
    count_call(c, SD_COLL_BARRIER, 0, 0);
    return SD_OK;
}

sd_status sd_comm_vote(sd_comm *c, int mine, int *sum) {
    TRY(check_comm(c, "vote"));
    if (!sum) return SD_FAIL(SD_ERR_INVALID, "rank %d: vote result pointer is NULL", c->rank);
    TRY(c->ops->vote(c, mine, sum));
    count_call(c, SD_COLL_VOTE, sizeof(int), sd_comm_ring_allreduce_bytes(1, sizeof(int), c->rank, c->size));
    return SD_OK;
}

/* Sizes summed without overflow, and the packed displacements when the caller gave none. */
static sd_status a2a_layout(const sd_comm *c, const char *side, const size_t *bytes, const size_t *displs,
                            size_t *packed, const size_t **use, size_t *extent) {
    size_t total = 0, end = 0;
    for (int j = 0; j < c->size; j++) {
        if (bytes[j] > SIZE_MAX - total)
            return SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv %s sizes overflow size_t", c->rank, side);
        packed[j] = total;
        total += bytes[j];
        if (displs && bytes[j]) {
            if (displs[j] > SIZE_MAX - bytes[j])
                return SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv %s block %d overflows size_t", c->rank, side, j);
            if (displs[j] + bytes[j] > end) end = displs[j] + bytes[j];
        }
    }
    *use = displs ? displs : packed;
    *extent = displs ? end : total;
    return SD_OK;
}

sd_status sd_comm_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                            void *recv, const size_t *recv_bytes, const size_t *recv_displs) {
    TRY(check_comm(c, "alltoallv"));
    if (!send_bytes || !recv_bytes)
        return SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv needs send_bytes and recv_bytes (one size per rank)", c->rank);
    if (!c->ops->alltoallv)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "rank %d: the %s backend has no alltoallv", c->rank, c->ops->name);
    if (send_bytes[c->rank] != recv_bytes[c->rank])
        return SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv sends itself %zu bytes but expects %zu", c->rank,
                       send_bytes[c->rank], recv_bytes[c->rank]);
    size_t *packed = malloc(2 * sizeof(size_t) * (size_t)c->size);
    if (!packed) return SD_FAIL(SD_ERR_OOM, "rank %d: alltoallv layout for %d ranks", c->rank, c->size);
    const size_t *sd = NULL, *rd = NULL;
    size_t sext = 0, rext = 0;
    sd_status s = a2a_layout(c, "send", send_bytes, send_displs, packed, &sd, &sext);
    if (s == SD_OK) s = a2a_layout(c, "receive", recv_bytes, recv_displs, packed + c->size, &rd, &rext);
    if (s == SD_OK && sext && !send)
        s = SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv sends %zu bytes from NULL", c->rank, sext);
    if (s == SD_OK && rext && !recv)
        s = SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv receives %zu bytes into NULL", c->rank, rext);
    if (s == SD_OK && sext && rext && (const char *)send < (const char *)recv + rext &&
        (const char *)recv < (const char *)send + sext)
        s = SD_FAIL(SD_ERR_INVALID, "rank %d: alltoallv send and receive regions overlap", c->rank);
    if (s == SD_OK) s = c->ops->alltoallv(c, send, send_bytes, sd, recv, recv_bytes, rd);
    uint64_t payload = 0;
    for (int j = 0; j < c->size; j++) payload += send_bytes[j];
    free(packed);
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        return s;
    }
    count_call(c, SD_COLL_ALLTOALLV, payload, sd_comm_alltoallv_bytes(send_bytes, c->rank, c->size));
    return SD_OK;
}

void sd_comm_destroy(sd_comm *c) {
    if (c && c->ops && c->ops->destroy) c->ops->destroy(c);
}
