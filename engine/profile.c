/* clock.c: virtual and real clocks, device profiles and ring-collective cost formulas. */
#include "clock.h"

#include <time.h>

double sd_wall_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void sd_clock_init(sd_clock *c, sd_clock_kind kind) {
    c->kind = kind;
    c->now = 0.0;
    c->start_wall = sd_wall_seconds();
}

double sd_clock_now(const sd_clock *c) {
    return c->kind == SD_CLOCK_VIRTUAL ? c->now : sd_wall_seconds() - c->start_wall;
}

void sd_clock_advance_to(sd_clock *c, double t) {
    if (c->kind == SD_CLOCK_VIRTUAL && t > c->now) c->now = t;
}

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
