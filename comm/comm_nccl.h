/* comm_nccl.h: the NCCL collective backend: one process per GPU, GPU buffers reduced by NCCL,
 * bootstrapped over MPI. Declared only when the library was built with NCCL, MPI and CUDA
 * (SCADLES_HAVE_NCCL, set by CMake when all three were found). The caller owns MPI_Init and
 * MPI_Finalize; destroy every NCCL communicator before MPI_Finalize.
 *
 * Bootstrap: rank 0 calls ncclGetUniqueId, MPI_Bcast hands the id to every rank, each calls
 * ncclCommInitRank. Device: one GPU per process, by default the process's rank among the ranks of
 * its host (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)); every rank first checks that its GPU exists
 * and all ranks agree (MPI_Allreduce) before NCCL starts, so a host with fewer GPUs than ranks fails
 * cleanly on every rank instead of hanging in ncclCommInitRank.
 *
 * Buffers: device memory of the communicator's GPU is used in place; host memory (anything
 * cudaPointerGetAttributes does not report as device or managed memory) is staged through a device
 * buffer the communicator owns (grown to the largest size seen), so the table is a drop-in for the
 * host-gradient trainer too, at the cost of two copies. Every collective waits for completion
 * before it returns (results are in the buffer, as with the other backends), polling
 * cudaStreamQuery and ncclCommGetAsyncError until the timeout; then the communicator is aborted
 * (ncclCommAbort) and unusable, like the MPI backend's.
 *
 * Semantics that differ from the local and MPI backends (docs/comm.md):
 *  - allreduce_sum is ncclAllReduce(ncclFloat, ncclSum): NCCL chooses ring or tree algorithms and
 *    chunking by size and topology, so the summation order is NOT the rank order
 *    ((x_0 + x_1) + x_2) + ...: results can differ from the local/MPI backends in the last bits
 *    (exact for small integers in floats). Every rank still receives the same result for a given
 *    call (the reduced chunks are broadcast), but NCCL does not promise run-to-run identical
 *    algorithm choice across versions or topologies.
 *  - allgatherv: NCCL has no allgatherv. It is done as one ncclBroadcast per rank with a
 *    non-empty block (root j sends its block to recv + displs[j] on every rank), all inside one
 *    ncclGroupStart/ncclGroupEnd: exact sizes, no padding, the blocks land at arbitrary
 *    displacements and in place works (root's sendbuff == recvbuff). The alternative, padding every
 *    block to the largest and one ncclAllGather, wastes (max - mean) x ranks bytes when sizes
 *    differ, which they do for Top-k pairs with per-rank counts.
 *  - allgather_u64 and vote are tiny ncclAllGather / ncclAllReduce(ncclInt32) on device staging;
 *    barrier is an ncclAllReduce of one int (returns once every rank has entered it).
 *  - broadcast: ncclBroadcast of bytes. */
#ifndef SD_COMM_COMM_NCCL_H
#define SD_COMM_COMM_NCCL_H

#include "comm/comm.h"

#ifdef SCADLES_HAVE_NCCL
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SD_COMM_NCCL_DEFAULT_TIMEOUT_S 60.0

typedef struct sd_comm_nccl_options {
    int device;       /* CUDA device of this rank; < 0: the local rank on this host (the default) */
    void *stream;     /* a cudaStream_t to run the collectives on (e.g. the CUDA backend's compute
                         stream, sd_cuda_stream), so they follow the work queued there; NULL: the
                         communicator creates its own */
    double timeout_s; /* per collective; <= 0: wait forever */
} sd_comm_nccl_options;

/* The defaults: device = local rank, own stream, SD_COMM_NCCL_DEFAULT_TIMEOUT_S. */
sd_comm_nccl_options sd_comm_nccl_default_options(void);

/* A communicator over `comm` (duplicated; MPI_Init must have been called); opt NULL: defaults.
 * Collective over comm: every rank must call it. */
sd_status sd_comm_nccl_create(MPI_Comm comm, const sd_comm_nccl_options *opt, sd_comm **out);

/* The same bootstrapped over another host communicator instead of MPI (the TCP backend of a
 * torchrun-style launch): rank 0's ncclUniqueId goes out with sd_comm_broadcast and the GPU check
 * is agreed with sd_comm_vote, so every rank of boot must call it. The device is opt->device, or
 * (< 0) boot's rank; MPI need not be initialised. boot must outlive only the call. */
sd_status sd_comm_nccl_create_over(sd_comm *boot, const sd_comm_nccl_options *opt, sd_comm **out);

/* The CUDA device and the cudaStream_t (as void *) the communicator runs on; -1 / NULL for a
 * communicator that is not an NCCL one. */
int sd_comm_nccl_device(const sd_comm *c);
void *sd_comm_nccl_stream(const sd_comm *c);

/* "<ncclResult name>: <text>; last NCCL error: <ncclGetLastError> [world rank R, host H, device D]"
 * in a per-thread buffer valid until the next call. */
const char *sd_nccl_error_string(ncclResult_t r);
/* The same for a CUDA runtime error (C code cannot use the C++ CUDA_CHECK of kernels/cuda). */
const char *sd_nccl_cuda_error_string(cudaError_t e);

/* Checks inside a function returning sd_status (built on CHECK_GEN, STYLE #3): on failure the
 * message names the expression, the library's error, world rank, host and device, and the
 * function and file:line; the function returns SD_ERR_RUNTIME. */
#define NCCL_CHECK(expr) CHECK_GEN((expr), ncclSuccess, sd_nccl_error_string, SD_ERR_RUNTIME)
#define NCCL_CUDA_CHECK(expr) CHECK_GEN((expr), cudaSuccess, sd_nccl_cuda_error_string, SD_ERR_RUNTIME)

#ifdef __cplusplus
}
#endif

#endif /* SCADLES_HAVE_NCCL */
#endif
