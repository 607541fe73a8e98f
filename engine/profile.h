/* profile.h: the compute model of the virtual clock. A device profile is a fixed per-step cost plus
 * samples / throughput, and the device's link (bandwidth, latency) that comm/cost.h turns into the
 * time of a collective. (Stream arrival times live in stream/rate.h.) The training math is real
 * under both clocks; only time is modelled. */
#ifndef SD_ENGINE_PROFILE_H
#define SD_ENGINE_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

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

#ifdef __cplusplus
}
#endif

#endif
