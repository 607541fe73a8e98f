/* profile.h: the time model of the virtual clock. Compute time comes from a device profile (a
 * fixed per-step cost plus samples / throughput) and communication time from the bytes sent with
 * the standard ring-collective cost formulas over the slowest link. (Stream arrival times and the
 * clock kinds live in stream/rate.h.) The training math is real under both clocks. */
#ifndef SD_ENGINE_PROFILE_H
#define SD_ENGINE_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sd_device_profile {
    double samples_per_s;   /* training throughput (forward + backward) of the device */
    double step_overhead_s; /* fixed cost per step (kernel launches, batch assembly) */
    double bandwidth_bps;   /* link bandwidth, bits per second */
    double latency_s;       /* link latency per message */
} sd_device_profile;

/* The documented default profile (docs/distributed.md): 2000 samples/s, 5 ms per step,
 * 100 Mbit/s, 1 ms. */
sd_device_profile sd_device_profile_default(void);

/* Modelled compute time of one step on `batch` samples (0 samples: no step, 0 s). */
double sd_compute_time(const sd_device_profile *p, int batch);

/* Ring allreduce of `bytes` per rank over n ranks: 2(n-1)/n * bytes / bw + 2(n-1) * latency. */
double sd_ring_allreduce_time(int n, double bytes, double bandwidth_bps, double latency_s);
/* Ring allgather where the gathered total is `total_bytes`: (n-1)/n * total / bw + (n-1) * latency. */
double sd_ring_allgather_time(int n, double total_bytes, double bandwidth_bps, double latency_s);
/* Bytes each rank sends in a ring allreduce of `bytes`: 2(n-1)/n * bytes. */
double sd_ring_allreduce_bytes(int n, double bytes);

#endif
