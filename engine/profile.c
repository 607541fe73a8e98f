/* profile.c: device profiles and ring-collective cost formulas. */
#include "profile.h"

sd_device_profile sd_device_profile_default(void) {
    return (sd_device_profile){.samples_per_s = 2000.0, .step_overhead_s = 0.005, .bandwidth_bps = 100e6,
                               .latency_s = 0.001};
}

double sd_compute_time(const sd_device_profile *p, int batch) {
    if (batch <= 0) return 0.0;
    return p->step_overhead_s + (double)batch / p->samples_per_s;
}

double sd_ring_allreduce_bytes(int n, double bytes) { return n <= 1 ? 0.0 : 2.0 * (n - 1) / n * bytes; }

double sd_ring_allreduce_time(int n, double bytes, double bandwidth_bps, double latency_s) {
    if (n <= 1) return 0.0;
    return sd_ring_allreduce_bytes(n, bytes) * 8.0 / bandwidth_bps + 2.0 * (n - 1) * latency_s;
}

double sd_ring_allgather_time(int n, double total_bytes, double bandwidth_bps, double latency_s) {
    if (n <= 1) return 0.0;
    return (double)(n - 1) / n * total_bytes * 8.0 / bandwidth_bps + (double)(n - 1) * latency_s;
}
