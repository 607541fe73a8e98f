/* loglimit.h: the rate-limited log of the broker sources (stream/kafka_*.c, stream/mqtt_*.c): at
 * most 10 lines per 10 s per handle, then one line counting what was suppressed (printed with the
 * next line after the 10 s, or by sd_loglimit_destroy, so no suppression goes unsaid). It can also
 * remember the last problem (for the message of a later failure) and hold printing while a
 * connection is first attempted (the failure then says it). */
#ifndef SD_STREAM_LOGLIMIT_H
#define SD_STREAM_LOGLIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_loglimit {
    pthread_mutex_t mu;
    double t0;
    unsigned n;
    uint64_t suppressed;
    bool hold;      /* remember problems, print nothing */
    char last[512]; /* the last remembered problem */
    char who[128];  /* who wrote the suppressed lines */
} sd_loglimit;

void sd_loglimit_init(sd_loglimit *l);
/* Prints the count of lines suppressed since the last report, if any, then frees. */
void sd_loglimit_destroy(sd_loglimit *l);
/* Remembers `line` as the last problem when `remember`; prints "scadles: who: line" unless
 * quiet, held or over the limit. */
void sd_loglimit_note(sd_loglimit *l, bool quiet, bool remember, const char *who, const char *line);
void sd_loglimit_hold(sd_loglimit *l, bool hold);
/* The last remembered problem, or `none` when there was none. */
void sd_loglimit_last(sd_loglimit *l, char *out, size_t cap, const char *none);

#ifdef __cplusplus
}
#endif

#endif
