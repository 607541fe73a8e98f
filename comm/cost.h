/* cost.h: what a collective costs on a link, by the textbook ring algorithms whose bytes comm.h
 * counts: bytes each rank sends and the time over n ranks on the slowest link (bandwidth in bits
 * per second, a latency per message). The virtual clock charges these (engine/profile.h holds the
 * devices' compute model); the compressor uses them for a step's modelled time. */
#ifndef SD_COMM_COST_H
#define SD_COMM_COST_H

#ifdef __cplusplus
extern "C" {
#endif

/* Ring allreduce of `bytes` per rank over n ranks: 2(n-1)/n * bytes / bw + 2(n-1) * latency. */
double sd_ring_allreduce_time(int n, double bytes, double bandwidth_bps, double latency_s);
/* Ring allgather where the gathered total is `total_bytes`: (n-1)/n * total / bw + (n-1) * latency. */
double sd_ring_allgather_time(int n, double total_bytes, double bandwidth_bps, double latency_s);
/* Pairwise alltoallv (n - 1 rounds, one block to each other rank) where the busiest rank sends
 * `max_send_bytes` in all: max_send_bytes / bw + (n-1) * latency. */
double sd_alltoallv_time(int n, double max_send_bytes, double bandwidth_bps, double latency_s);
/* Bytes each rank sends in a ring allreduce of `bytes`: 2(n-1)/n * bytes. */
double sd_ring_allreduce_bytes(int n, double bytes);

#ifdef __cplusplus
}
#endif

#endif
