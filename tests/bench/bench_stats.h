/* bench_stats.h: the small helpers the peer benchmarks of tests/bench share: a median with its
 * range over interleaved repetitions, the machine's load average, and a fatal-error exit (these are
 * programs, not library code). */
#ifndef SD_TESTS_BENCH_STATS_H
#define SD_TESTS_BENCH_STATS_H

#include <stddef.h>

typedef struct bs_summary { double median, min, max; } bs_summary;

/* Median, min and max of v[0..n) (sorts v in place; n >= 1). */
bs_summary bs_summarize(double *v, size_t n);
/* The 1-minute load average from /proc/loadavg, or -1 when it cannot be read. */
double bs_load1(void);
/* Prints "bench: <msg>" to stderr and exits 1. */
void bs_die(const char *fmt, ...);

#endif
