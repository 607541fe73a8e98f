/* clock.h: the wall clock every layer reads: monotonic seconds and a sleep until a given reading.
 * (The trainer's notion of time, virtual or real, is the sd_clock interface in engine/clock.h;
 * both of its implementations, and the sources, the shaper and the benchmarks, read time here.) */
#ifndef SD_BASE_CLOCK_H
#define SD_BASE_CLOCK_H

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic wall time in seconds (CLOCK_MONOTONIC). */
double sd_clock_now(void);
/* Sleeps until sd_clock_now() >= t (returns at once when t has passed). */
void sd_clock_sleep_until(double t);

#ifdef __cplusplus
}
#endif

#endif
