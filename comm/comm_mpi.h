/* comm_mpi.h: the MPI collective backend: one process per device, on one host or many (mpirun).
 * Declared only when the library was built with MPI (SCADLES_HAVE_MPI, set by CMake when
 * find_package(MPI) found it). The caller owns MPI_Init/MPI_Finalize; destroy every MPI
 * communicator before MPI_Finalize.
 *
 * The backend works on a duplicate of the caller's communicator with MPI_ERRORS_RETURN set, so
 * MPI failures come back as SD_ERR_RUNTIME with the MPI error string, world rank and host name
 * (MPI_CHECK) instead of aborting the job, and our traffic never matches the caller's messages.
 *
 * allreduce_sum modes:
 *  - SD_COMM_MPI_REDUCE_ORDERED (default): a reduce-scatter by MPI_Alltoallv of chunk k of every
 *    rank to rank k, which sums its chunk in rank order (x_0 + x_1 + ... in float), then an
 *    MPI_Allgatherv of the reduced chunks. Bitwise identical to the local backend with the same
 *    number of devices and identical on every rank; the same bytes on the wire as a ring
 *    allreduce, more latency for tiny buffers than a tuned MPI_Allreduce.
 *  - SD_COMM_MPI_REDUCE_NATIVE: MPI_Allreduce(MPI_SUM); the library picks the algorithm and thus
 *    the summation order (it may differ from the local backend in the last bits).
 *
 * Timeouts: with timeout_s > 0 (default SD_COMM_MPI_DEFAULT_TIMEOUT_S) every collective is started
 * non-blocking (MPI_I*) and polled with MPI_Test until done or the deadline; on timeout it fails
 * with a message saying which collective and how long, and the communicator is unusable from then
 * on (an MPI collective cannot be cancelled: the app should report and MPI_Abort). MPI does not
 * say which peer is missing. With timeout_s <= 0 the blocking calls are used. */
#ifndef SD_COMM_COMM_MPI_H
#define SD_COMM_COMM_MPI_H

#include "comm/comm.h"

#ifdef SCADLES_HAVE_MPI
#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SD_COMM_MPI_DEFAULT_TIMEOUT_S 60.0

typedef enum sd_comm_mpi_reduce {
    SD_COMM_MPI_REDUCE_ORDERED = 0, /* bitwise equal to the local backend (default) */
    SD_COMM_MPI_REDUCE_NATIVE = 1   /* MPI_Allreduce(MPI_SUM) */
} sd_comm_mpi_reduce;

typedef struct sd_comm_mpi_options {
    sd_comm_mpi_reduce reduce;
    double timeout_s; /* <= 0: blocking calls, no timeout */
} sd_comm_mpi_options;

/* The defaults: ordered reduction, SD_COMM_MPI_DEFAULT_TIMEOUT_S. */
sd_comm_mpi_options sd_comm_mpi_default_options(void);

/* A communicator over `comm` (duplicated; MPI_Init must have been called). */
sd_status sd_comm_mpi_create(MPI_Comm comm, sd_comm **out);
/* opt NULL: the defaults. */
sd_status sd_comm_mpi_create_ex(MPI_Comm comm, const sd_comm_mpi_options *opt, sd_comm **out);

/* The MPI communicator (our duplicate) under an MPI sd_comm, e.g. to bootstrap an NCCL group over
 * the same ranks (comm_nccl.h); MPI_COMM_NULL for any other communicator. */
MPI_Comm sd_comm_mpi_handle(const sd_comm *c);

/* The MPI error string of `code` with the world rank and host name, e.g.
 * "MPI_ERR_TRUNCATE: message truncated (MPI error 15; world rank 2 on host edge-3)". The string
 * lives in a per-thread buffer until the next call. */
const char *sd_mpi_error_string(int code);

/* Checks an MPI call inside a function returning sd_status (built on CHECK_GEN, STYLE #3):
 * on failure records "<expr> failed: <MPI error, rank, host>" with function and file:line and
 * returns SD_ERR_RUNTIME. */
#define MPI_CHECK(expr) CHECK_GEN((expr), MPI_SUCCESS, sd_mpi_error_string, SD_ERR_RUNTIME)

#ifdef __cplusplus
}
#endif

#endif /* SCADLES_HAVE_MPI */
#endif
