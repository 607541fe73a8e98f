/* loglimit.c: the rate-limited log of the broker sources (see loglimit.h). */
#include "base/clock.h"
#include "base/loglimit.h"

#include <stdio.h>
#include <string.h>


void sd_loglimit_init(sd_loglimit *l) {
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    l->t0 = -1e9;
}

static void report_suppressed(sd_loglimit *l, double now) {
    if (l->suppressed)
        fprintf(stderr, "scadles: %s: %llu similar lines suppressed in the last %.0f s\n", l->who,
                (unsigned long long)l->suppressed, now - l->t0 < 10.0 ? now - l->t0 : 10.0);
    l->suppressed = 0;
}

void sd_loglimit_destroy(sd_loglimit *l) {
    pthread_mutex_lock(&l->mu);
    report_suppressed(l, sd_clock_now());
    pthread_mutex_unlock(&l->mu);
    pthread_mutex_destroy(&l->mu);
}

void sd_loglimit_note(sd_loglimit *l, bool quiet, bool remember, const char *who, const char *line) {
    pthread_mutex_lock(&l->mu);
    if (remember) snprintf(l->last, sizeof l->last, "%s", line);
    if (!quiet && !l->hold) {
        double now = sd_clock_now();
        if (now - l->t0 >= 10.0) {
            report_suppressed(l, now);
            l->t0 = now;
            l->n = 0;
        }
        snprintf(l->who, sizeof l->who, "%s", who);
        if (l->n < 10) {
            l->n++;
            fprintf(stderr, "scadles: %s: %s\n", who, line);
        } else {
            l->suppressed++;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

void sd_loglimit_hold(sd_loglimit *l, bool hold) {
    pthread_mutex_lock(&l->mu);
    l->hold = hold;
    pthread_mutex_unlock(&l->mu);
}

void sd_loglimit_last(sd_loglimit *l, char *out, size_t cap, const char *none) {
    pthread_mutex_lock(&l->mu);
    snprintf(out, cap, "%s", l->last[0] ? l->last : none);
    pthread_mutex_unlock(&l->mu);
}
