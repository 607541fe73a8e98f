/* clock.c: the monotonic wall clock and an absolute sleep on it (clock.h). */
#include "base/clock.h"

#include <errno.h>
#include <math.h>
#include <time.h>

double sd_clock_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void sd_clock_sleep_until(double t) {
    if (!(t > sd_clock_now())) return;
    double s = floor(t);
    struct timespec ts = {(time_t)s, (long)((t - s) * 1e9)};
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}
