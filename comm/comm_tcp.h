/* comm_tcp.h: the TCP collective backend: one process per device, host (CPU) buffers, started the
 * way PyTorch's torchrun starts DDP workers. Every process knows its RANK, the WORLD_SIZE and where
 * rank 0 is (MASTER_ADDR, MASTER_PORT); no MPI is needed (docs/comm.md, "TCP backend").
 *
 * Rendezvous: rank 0 listens on MASTER_ADDR:port; every other rank connects (retrying until the
 * connect timeout: rank 0 may start later), says who it is (rank, world size, a job tag, the
 * address of a listening socket of its own) and receives the table of every rank's address; then
 * every pair of ranks connects (a full mesh: rank i connects to ranks 1..i-1, rank 0's links are the
 * rendezvous connections) and rank 0 says go once every rank has its links. Mismatches (world size,
 * job tag, a rank twice, a second rank 0) and failures (a rank that never comes, cannot reach a
 * peer, or dies) fail the rendezvous on every rank that got as far as rank 0, with a message naming
 * the rank, the address and the fix.
 *
 * Collectives move data directly between the two ranks concerned (every rank sends one frame to
 * each peer per phase, non-blocking sockets progressed with poll). allreduce_sum is the rank-ordered
 * reduction of the local and MPI backends: rank k receives chunk k of every rank (chunks of
 * count/p elements, the first count%p one longer), sums it x_0 + x_1 + ... + x_{p-1} in float, and
 * every rank gathers the sums: bitwise identical to the local backend, on every rank. Wire bytes
 * are those of a ring allreduce (2(p-1)/p x B per rank); allgatherv, broadcast (from the root to
 * each rank) and alltoallv send each block straight to its destination.
 *
 * Failures: every frame carries the collective, its number and its sizes, so a rank in another
 * collective or with other counts fails the call on the ranks that see it (SD_ERR_INVALID). Every
 * wait is bounded by timeout_s without progress (then SD_ERR_RUNTIME naming the ranks still
 * awaited); a closed connection names the peer that went away. Any failure poisons the
 * communicator (later calls fail fast with the same reason) and tells every peer (an abort frame
 * with the reason), so all ranks fail within about one timeout, never hang. Unlike the local
 * backend a mismatch also poisons the group (the byte streams are no longer in step). */
#ifndef SD_COMM_COMM_TCP_H
#define SD_COMM_COMM_TCP_H

#include <stdbool.h>
#include <stdint.h>

#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_COMM_TCP_DEFAULT_TIMEOUT_S 60.0
#define SD_COMM_TCP_DEFAULT_CONNECT_TIMEOUT_S 300.0
#define SD_COMM_TCP_MAX_RANKS 512 /* a full mesh: each rank holds WORLD_SIZE - 1 sockets */
#define SD_COMM_TCP_ADDR_LEN 256

typedef struct sd_comm_tcp_options {
    char master_addr[SD_COMM_TCP_ADDR_LEN]; /* rank 0's host: a name or an IPv4/IPv6 literal */
    int master_port;          /* the rendezvous port, 1..65535 */
    int rank, world_size;     /* 0 <= rank < world_size <= SD_COMM_TCP_MAX_RANKS */
    int local_rank;           /* this process's index among its host's ranks (LOCAL_RANK): the GPU hint; -1: unknown */
    double timeout_s;         /* a collective fails after this long without progress; <= 0: waits forever */
    double connect_timeout_s; /* the rendezvous fails after this long (> 0) */
    uint64_t job_tag;         /* every rank must bring the same value (e.g. a hash of the experiment); 0: unchecked */
} sd_comm_tcp_options;

/* Zeroes, local_rank -1, SD_COMM_TCP_DEFAULT_TIMEOUT_S, SD_COMM_TCP_DEFAULT_CONNECT_TIMEOUT_S. */
sd_comm_tcp_options sd_comm_tcp_default_options(void);

/* Reads the torchrun-style variables into *o (over the defaults): WORLD_SIZE, RANK, MASTER_ADDR,
 * MASTER_PORT, LOCAL_RANK (optional), SCADLES_CONNECT_TIMEOUT_S (optional, seconds). The
 * rendezvous port is SCADLES_MASTER_PORT when set; else MASTER_PORT, or MASTER_PORT + 1 under
 * torchrun's static rendezvous (TORCHELASTIC_USE_AGENT_STORE=True), whose agent keeps MASTER_PORT
 * for its own store. *found is false (and *o the defaults) when neither WORLD_SIZE nor RANK is set;
 * when one is, all four must be valid, else SD_ERR_INVALID naming the variable and the fix. */
sd_status sd_comm_tcp_env(sd_comm_tcp_options *o, bool *found);

/* The rendezvous (collective over all world_size processes) and the communicator. */
sd_status sd_comm_tcp_create(const sd_comm_tcp_options *o, sd_comm **out);

/* The options' local_rank of a TCP communicator; -1 for any other communicator. */
int sd_comm_tcp_local_rank(const sd_comm *c);

/* "127.0.0.1:40123 (host edge-3)": where rank `rank` of a TCP communicator is ("?" otherwise). */
const char *sd_comm_tcp_peer(const sd_comm *c, int rank);

/* Fails every later collective with "rank <me> aborted the group: <reason>" and sends that to every
 * peer, whose current or next collective fails with it; then closes the connections, waiting up
 * to a second for the peers to close theirs (so the reason arrives before the connection
 * resets). For an app that stops on an error of its own; no-op on other communicators. */
void sd_comm_tcp_abort(sd_comm *c, const char *reason);

#ifdef __cplusplus
}
#endif

#endif
