/* profile.c: device profiles (profile.h). */
#include "engine/profile.h"

sd_device_profile sd_device_profile_default(void) {
    return (sd_device_profile){.samples_per_s = 2000.0, .step_overhead_s = 0.005, .bandwidth_bps = 100e6,
                               .latency_s = 0.001};
}

double sd_compute_time(const sd_device_profile *p, int batch) {
    if (batch <= 0) return 0.0;
    return p->step_overhead_s + (double)batch / p->samples_per_s;
}
