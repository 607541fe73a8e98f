/* cost.c: ring-collective cost formulas (cost.h). */
#include "comm/cost.h"

double sd_ring_allreduce_bytes(int n, double bytes) { return n <= 1 ? 0.0 : 2.0 * (n - 1) / n * bytes; }

double sd_ring_allreduce_time(int n, double bytes, double bandwidth_bps, double latency_s) {
    if (n <= 1) return 0.0;
    return sd_ring_allreduce_bytes(n, bytes) * 8.0 / bandwidth_bps + 2.0 * (n - 1) * latency_s;
}

double sd_ring_allgather_time(int n, double total_bytes, double bandwidth_bps, double latency_s) {
    if (n <= 1) return 0.0;
    return (double)(n - 1) / n * total_bytes * 8.0 / bandwidth_bps + (double)(n - 1) * latency_s;
}

double sd_alltoallv_time(int n, double max_send_bytes, double bandwidth_bps, double latency_s) {
    if (n <= 1) return 0.0;
    return max_send_bytes * 8.0 / bandwidth_bps + (double)(n - 1) * latency_s;
}
