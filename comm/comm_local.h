/* comm_local.h: the local collective backend: N devices as threads of one process. Create a
 * group, hand sd_comm_local_get(g, r) to the thread of device r, and every device thread calls
 * the sd_comm_* collectives on its own communicator. Sums are done in rank order, elementwise,
 * so results are bitwise reproducible and identical on every rank whatever the thread timing.
 *
 * A rank that stops participating does not hang the others: each wait at a synchronisation
 * point is bounded by the group's timeout (default SD_COMM_LOCAL_DEFAULT_TIMEOUT_S), after which
 * every waiting rank fails with SD_ERR_RUNTIME and a message naming the missing rank(s).
 * sd_comm_local_abort wakes everyone at once with an error naming the aborting rank; a rank that
 * destroys its communicator leaves the group and the others fail at their next collective. Any of
 * these poisons the group: every later collective fails fast with the same reason. Mismatched
 * calls (different collectives, counts, roots or sizes across ranks) fail on every rank with
 * SD_ERR_INVALID and leave the group usable. */
#ifndef SD_COMM_COMM_LOCAL_H
#define SD_COMM_COMM_LOCAL_H

#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_COMM_LOCAL_DEFAULT_TIMEOUT_S 60.0

typedef struct sd_comm_local_group sd_comm_local_group;

/* A group of n >= 1 ranks. */
sd_status sd_comm_local_group_create(int n, sd_comm_local_group **g);
/* Rank r's communicator, owned by the group (sd_comm_destroy on it only means "rank r leaves":
 * the others fail at their next collective). NULL when r is out of range. */
sd_comm *sd_comm_local_get(sd_comm_local_group *g, int rank);
int sd_comm_local_size(const sd_comm_local_group *g);
/* Bound on every wait inside a collective, in seconds; <= 0 waits forever. Takes effect for
 * waits that start after the call. */
void sd_comm_local_set_timeout(sd_comm_local_group *g, double seconds);
/* Fails every current and later collective of the group on every rank with
 * "rank <rank> aborted the group: <reason>". Callable from any thread; the first abort wins. */
void sd_comm_local_abort(sd_comm_local_group *g, int rank, const char *reason);
/* Frees the group and every rank's communicator. Call it after the device threads are done
 * (joined); sd_comm_destroy on a local communicator before that is allowed and means "leave". */
void sd_comm_local_group_destroy(sd_comm_local_group *g);

#ifdef __cplusplus
}
#endif

#endif
