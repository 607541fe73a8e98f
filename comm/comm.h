/* comm.h: the collective interface every device trains through. A communicator (sd_comm) is a
 * table of function pointers (sd_comm_ops) plus a backend context, the caller's rank and the
 * group size, and per-communicator counters of calls and bytes. Backends: local (N devices as
 * threads of one process, comm_local.h), MPI (one process per device, comm_mpi.h), NCCL (one
 * process per GPU, GPU buffers, bootstrapped over MPI, comm_nccl.h).
 *
 * Callers use the sd_comm_* wrappers below, not the table: the wrappers validate arguments the
 * same way for every backend and keep the counters, so backends only move data.
 *
 * Semantics shared by all backends (docs/comm.md has the details):
 *  - Collectives are called by every rank of the group in the same order with matching
 *    arguments (count, root, sizes); a rank that does not arrive makes the others fail after the
 *    backend's timeout with a message naming it (local; MPI names no rank, see docs/comm.md).
 *  - allreduce_sum is deterministic by default in every backend: element i of the result is
 *    ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{p-1}[i] in float, i.e. summed in rank order, so the
 *    local and MPI backends give bitwise identical results on every rank.
 *    The NCCL backend is the exception: NCCL picks its own order (comm_nccl.h).
 *  - A failed collective leaves the group unusable (a timeout or abort poisons it): later calls
 *    fail fast with the same reason. Recreate the group to go on. */
#ifndef SD_COMM_COMM_H
#define SD_COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_comm sd_comm;

/* The collectives, indexing the counters. */
typedef enum sd_coll {
    SD_COLL_ALLREDUCE = 0,
    SD_COLL_ALLGATHERV,
    SD_COLL_ALLGATHER_U64,
    SD_COLL_BROADCAST,
    SD_COLL_BARRIER,
    SD_COLL_VOTE,
    SD_COLL_ALLTOALLV,
    SD_COLL_COUNT
} sd_coll;

const char *sd_coll_name(sd_coll k);

/* Per-communicator counters, updated by the wrappers after each successful call.
 * payload_bytes: the size of the caller's own data (allreduce: count * 4; allgatherv: this rank's
 *   send_bytes; allgather_u64: 8; broadcast: bytes, on every rank; vote: sizeof(int); barrier: 0;
 *   alltoallv: the sum of this rank's send blocks, its own included).
 * wire_bytes: the bytes this rank would send with the textbook ring algorithm of each collective,
 *   exactly, whatever the backend really does (docs/comm.md, "Byte accounting"):
 *   allreduce (reduce-scatter + allgather over p chunks c_0..c_{p-1} of the buffer, sizes differing
 *     by at most one element): 2*B - c_{(r+1)%p} - c_{(r+2)%p}, about 2(p-1)/p * B;
 *   allgatherv / allgather_u64: every block but the next rank's: total - size_{(r+1)%p};
 *   broadcast (pipelined chain root -> root+1 -> ...): B, except 0 on rank (root-1)%p;
 *   barrier: 0; vote: as an allreduce of one int;
 *   alltoallv (pairwise: each block goes straight to its rank): every block but this rank's own.
 *   Summed over ranks this gives 2(p-1)B (allreduce), (p-1)*total (allgather), (p-1)B (broadcast). */
typedef struct sd_comm_counters {
    uint64_t calls[SD_COLL_COUNT];
    uint64_t payload_bytes[SD_COLL_COUNT];
    uint64_t wire_bytes[SD_COLL_COUNT];
} sd_comm_counters;

/* The backend table. Every entry is required except allgather_u64 (NULL: the wrapper does it
 * with allgatherv). Entries receive arguments already validated by the wrappers. */
typedef struct sd_comm_ops {
    const char *name;
    /* In place: buf (count floats) becomes the elementwise rank-order sum over all ranks. */
    sd_status (*allreduce_sum)(sd_comm *c, float *buf, size_t count);
    /* Rank j's send_bytes land at recv + displs[j] on every rank; recv_bytes[j] must equal rank
     * j's send_bytes (zero allowed). In place is allowed: send == recv + displs[rank]. */
    sd_status (*allgatherv)(sd_comm *c, const void *send, size_t send_bytes, void *recv,
                            const size_t *recv_bytes, const size_t *displs);
    /* Optional: all[j] = rank j's `mine` (all has size entries). */
    sd_status (*allgather_u64)(sd_comm *c, uint64_t mine, uint64_t *all);
    /* root's bytes land in buf on every rank. */
    sd_status (*broadcast)(sd_comm *c, void *buf, size_t bytes, int root);
    sd_status (*barrier)(sd_comm *c);
    /* *sum = sum over ranks of `mine` (a small integer allreduce: the compression vote). */
    sd_status (*vote)(sd_comm *c, int mine, int *sum);
    /* Personalised exchange: this rank's block j (send_bytes[j] at send + send_displs[j]) lands at
     * recv + recv_displs[me] on rank j; recv_bytes[i] must equal rank i's send_bytes[me] (zero
     * allowed); the own block is copied locally. Send and receive regions must not overlap. */
    sd_status (*alltoallv)(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                           void *recv, const size_t *recv_bytes, const size_t *recv_displs);
    /* Releases this rank's communicator (and the backend context when it owns it). */
    void (*destroy)(sd_comm *c);
} sd_comm_ops;

struct sd_comm {
    const sd_comm_ops *ops;
    void *ctx;       /* backend context */
    int rank, size;  /* this device's rank in [0, size) */
    sd_comm_counters counters; /* written only by the thread that owns this rank */
};

/* ---- the collectives (validate, call the backend, count) ------------------------------------ */
sd_status sd_comm_allreduce_sum(sd_comm *c, float *buf, size_t count);
/* displs may be NULL: blocks packed in rank order (displs[j] = sum of recv_bytes[0..j-1]). */
sd_status sd_comm_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv,
                             const size_t *recv_bytes, const size_t *displs);
sd_status sd_comm_allgather_u64(sd_comm *c, uint64_t mine, uint64_t *all);
sd_status sd_comm_broadcast(sd_comm *c, void *buf, size_t bytes, int root);
sd_status sd_comm_barrier(sd_comm *c);
sd_status sd_comm_vote(sd_comm *c, int mine, int *sum);
/* send_displs / recv_displs may be NULL: blocks packed in rank order. */
sd_status sd_comm_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                            void *recv, const size_t *recv_bytes, const size_t *recv_displs);
/* NULL is allowed. */
void sd_comm_destroy(sd_comm *c);

/* ---- counters -------------------------------------------------------------------------------- */
/* Totals over all collectives. */
uint64_t sd_comm_wire_bytes(const sd_comm *c);
uint64_t sd_comm_payload_bytes(const sd_comm *c);
void sd_comm_counters_reset(sd_comm *c);
/* out = a - b, per entry (bytes sent during a step: snapshot before, subtract after). */
void sd_comm_counters_diff(const sd_comm_counters *a, const sd_comm_counters *b, sd_comm_counters *out);

/* The ring accounting above as functions (used by the wrappers, the virtual clock and tests).
 * sizes: per-rank block sizes in bytes (allgather). */
uint64_t sd_comm_ring_allreduce_bytes(size_t count, size_t elem_size, int rank, int size);
uint64_t sd_comm_ring_allgather_bytes(const size_t *sizes, int rank, int size);
uint64_t sd_comm_ring_broadcast_bytes(size_t bytes, int root, int rank, int size);
/* Pairwise alltoallv: the sum of send_bytes[j] over j != rank. */
uint64_t sd_comm_alltoallv_bytes(const size_t *send_bytes, int rank, int size);

#ifdef __cplusplus
}
#endif

#endif
