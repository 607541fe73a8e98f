/* trace.c: the Chrome-trace writer declared in trace.h. One FILE with a large buffer, one mutex
 * around every event; the header is written at open and the closing bracket (with otherData) at
 * close, so a trace closed after a run is one JSON object. */
#include "engine/trace.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_string.h"

#define SD_TRACE_BUF (1u << 20) /* stdio buffer: events reach the disk in 1 MiB writes */
#define SD_TRACE_INFO_MAX 16

struct sd_trace {
    pthread_mutex_t mu;
    FILE *f;
    char *buf;
    char *path;
    long long events;
    long long refused;     /* calls refused for bad arguments */
    sd_status err;         /* first failure (sticky), reported again by sd_trace_close */
    char errmsg[512];
    int ninfo;
    char *info_key[SD_TRACE_INFO_MAX], *info_val[SD_TRACE_INFO_MAX];
};

static const char *const phase_names[SD_TRACE_PHASE_COUNT] = {
    "stream_wait", "batch_assembly", "forward", "backward", "compression", "communication", "optimizer", "evaluation"};

const char *sd_trace_phase_name(sd_trace_phase p) {
    return (int)p >= 0 && p < SD_TRACE_PHASE_COUNT ? phase_names[p] : "unknown";
}

/* ---- helpers (called with the mutex held) --------------------------------------------------- */
static void put_bytes(void *f, const char *b, size_t n) { fwrite(b, 1, n, f); }

/* A JSON string literal (engine/json_string.h); a failed write shows in ferror (check_io). */
static void put_str(FILE *f, const char *s) { sd_json_put_string(s, put_bytes, f); }

/* The separator before every event but the first. */
static void begin_event(sd_trace *t) {
    if (t->events++ > 0) fputs(",\n", t->f);
}

/* Records the first failure; returns s. */
static sd_status remember(sd_trace *t, sd_status s) {
    if (s != SD_OK && t->err == SD_OK) {
        t->err = s;
        snprintf(t->errmsg, sizeof t->errmsg, "%s", sd_last_error_brief());
    }
    return s;
}

static sd_status check_io(sd_trace *t) {
    if (ferror(t->f)) return remember(t, SD_FAIL(SD_ERR_IO, "trace %s: write failed: %s", t->path, strerror(errno)));
    return SD_OK;
}

/* A refused call (bad arguments): recorded for sd_trace_close, nothing written. */
static sd_status refuse(sd_trace *t, sd_status s) {
    pthread_mutex_lock(&t->mu);
    remember(t, s);
    t->refused++;
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* Seconds on a nanosecond grid, written as microseconds with 3 decimals. A slice's end is rounded
 * to the grid, not its duration, so back-to-back slices (the next starts where one ends) neither
 * overlap nor leave a gap after rounding: viewers nest overlapping slices. */
static long long to_ns(double seconds) { return llround(seconds * 1e9); }
static void put_us(FILE *f, const char *key, long long ns) {
    unsigned long long a = ns < 0 ? 0ull - (unsigned long long)ns : (unsigned long long)ns;
    fprintf(f, "\"%s\": %s%llu.%03llu", key, ns < 0 ? "-" : "", a / 1000, a % 1000);
}

/* ---- API ------------------------------------------------------------------------------------ */
sd_status sd_trace_open(const char *path, sd_trace **out) {
    if (!path || !out) return SD_FAIL(SD_ERR_INVALID, "trace: NULL argument");
    *out = NULL;
    sd_trace *t = calloc(1, sizeof *t);
    if (!t) return SD_FAIL(SD_ERR_OOM, "trace: no memory");
    t->path = strdup(path);
    t->buf = malloc(SD_TRACE_BUF);
    if (!t->path || !t->buf) {
        free(t->path);
        free(t->buf);
        free(t);
        return SD_FAIL(SD_ERR_OOM, "trace: no memory");
    }
    t->f = fopen(path, "w");
    if (!t->f) {
        sd_status s = SD_FAIL(SD_ERR_IO, "cannot create trace %s: %s", path, strerror(errno));
        free(t->path);
        free(t->buf);
        free(t);
        return s;
    }
    setvbuf(t->f, t->buf, _IOFBF, SD_TRACE_BUF);
    pthread_mutex_init(&t->mu, NULL);
    fputs("{\"traceEvents\": [\n", t->f);
    *out = t;
    return SD_OK;
}

sd_status sd_trace_meta(sd_trace *t, int pid, int tid, const char *name) {
    if (!t) return SD_OK;
    if (!name || pid < 0) return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace meta: %s", name ? "pid < 0" : "NULL name"));
    pthread_mutex_lock(&t->mu);
    const char *what = tid < 0 ? "process" : "thread";
    int track = tid < 0 ? 0 : tid;
    begin_event(t);
    fprintf(t->f, "{\"ph\": \"M\", \"pid\": %d, \"tid\": %d, \"name\": \"%s_name\", \"args\": {\"name\": ", pid, track, what);
    put_str(t->f, name);
    fputs("}}", t->f);
    begin_event(t);
    fprintf(t->f, "{\"ph\": \"M\", \"pid\": %d, \"tid\": %d, \"name\": \"%s_sort_index\", \"args\": {\"sort_index\": %d}}",
            pid, track, what, tid < 0 ? pid : tid);
    sd_status s = check_io(t);
    pthread_mutex_unlock(&t->mu);
    return s;
}

sd_status sd_trace_complete_args(sd_trace *t, int pid, int tid, const char *name, const char *cat, double ts_s,
                                 double dur_s, const sd_trace_arg *args, int nargs) {
    if (!t) return SD_OK;
    if (!name || pid < 0 || tid < 0 || nargs < 0 || (nargs > 0 && !args))
        return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace slice '%s': NULL name, negative pid/tid or bad args",
                                 name ? name : "(null)"));
    if (!isfinite(ts_s) || !isfinite(dur_s) || dur_s < 0 || fabs(ts_s) + dur_s > 9e9)
        return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace slice '%s': ts %g s / dur %g s: both finite, dur >= 0, |ts| + dur <= 9e9 s",
                                 name, ts_s, dur_s));
    for (int i = 0; i < nargs; i++)
        if (!args[i].key || !isfinite(args[i].value))
            return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace slice '%s': argument %d has no key or a non-finite value",
                                     name, i));
    pthread_mutex_lock(&t->mu);
    begin_event(t);
    fprintf(t->f, "{\"ph\": \"X\", \"pid\": %d, \"tid\": %d, \"name\": ", pid, tid);
    put_str(t->f, name);
    if (cat) {
        fputs(", \"cat\": ", t->f);
        put_str(t->f, cat);
    }
    long long ts_ns = to_ns(ts_s), end_ns = to_ns(ts_s + dur_s);
    fputs(", ", t->f);
    put_us(t->f, "ts", ts_ns);
    fputs(", ", t->f);
    put_us(t->f, "dur", end_ns > ts_ns ? end_ns - ts_ns : 0);
    if (nargs > 0) {
        fputs(", \"args\": {", t->f);
        for (int i = 0; i < nargs; i++) {
            if (i) fputs(", ", t->f);
            put_str(t->f, args[i].key);
            fprintf(t->f, ": %.15g", args[i].value);
        }
        fputc('}', t->f);
    }
    fputc('}', t->f);
    sd_status s = check_io(t);
    pthread_mutex_unlock(&t->mu);
    return s;
}

sd_status sd_trace_complete(sd_trace *t, int pid, int tid, const char *name, const char *cat, double ts_s, double dur_s) {
    return sd_trace_complete_args(t, pid, tid, name, cat, ts_s, dur_s, NULL, 0);
}

sd_status sd_trace_counter(sd_trace *t, int pid, const char *name, double ts_s, const char *key, double value) {
    if (!t) return SD_OK;
    if (!name || !key || pid < 0) return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace counter: NULL name/key or pid < 0"));
    if (!isfinite(ts_s) || !isfinite(value) || fabs(ts_s) > 9e9)
        return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace counter '%s': ts %g s and value %g must be finite (|ts| <= 9e9 s)", name,
                                 ts_s, value));
    pthread_mutex_lock(&t->mu);
    begin_event(t);
    fprintf(t->f, "{\"ph\": \"C\", \"pid\": %d, \"tid\": 0, \"name\": ", pid);
    put_str(t->f, name);
    fputs(", ", t->f);
    put_us(t->f, "ts", to_ns(ts_s));
    fputs(", \"args\": {", t->f);
    put_str(t->f, key);
    fprintf(t->f, ": %.15g}}", value);
    sd_status s = check_io(t);
    pthread_mutex_unlock(&t->mu);
    return s;
}

sd_status sd_trace_info(sd_trace *t, const char *key, const char *value) {
    if (!t) return SD_OK;
    if (!key || !value) return refuse(t, SD_FAIL(SD_ERR_INVALID, "trace info: NULL key or value"));
    sd_status s = SD_OK;
    pthread_mutex_lock(&t->mu);
    int i = 0;
    while (i < t->ninfo && strcmp(t->info_key[i], key) != 0) i++;
    if (i == SD_TRACE_INFO_MAX) {
        s = remember(t, SD_FAIL(SD_ERR_INVALID, "trace info: more than %d keys (dropping '%s')", SD_TRACE_INFO_MAX, key));
        t->refused++;
    } else {
        char *v = strdup(value), *k = i < t->ninfo ? NULL : strdup(key);
        if (!v || (i == t->ninfo && !k)) {
            free(v);
            free(k);
            s = SD_FAIL(SD_ERR_OOM, "trace info: no memory");
        } else {
            if (i == t->ninfo) {
                t->info_key[i] = k;
                t->ninfo++;
            } else {
                free(t->info_val[i]);
            }
            t->info_val[i] = v;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return s;
}

sd_status sd_trace_flush(sd_trace *t) {
    if (!t) return SD_OK;
    pthread_mutex_lock(&t->mu);
    sd_status s = SD_OK;
    if (fflush(t->f) != 0) s = remember(t, SD_FAIL(SD_ERR_IO, "trace %s: flush failed: %s", t->path, strerror(errno)));
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* Finishes and frees t; reports failures (sets the thread's error) only when `report`. */
static sd_status finish(sd_trace *t, bool report) {
    if (!t) return SD_OK;
    pthread_mutex_lock(&t->mu);
    fputs("\n],\n\"displayTimeUnit\": \"ms\",\n\"otherData\": {\"generator\": \"scadles\"", t->f);
    for (int i = 0; i < t->ninfo; i++) {
        fputs(", ", t->f);
        put_str(t->f, t->info_key[i]);
        fputs(": ", t->f);
        put_str(t->f, t->info_val[i]);
    }
    fputs("}}\n", t->f);
    bool write_failed = ferror(t->f) != 0;
    int saved = write_failed ? errno : 0;
    bool close_failed = fclose(t->f) != 0; /* the last buffered bytes are written here */
    if (close_failed) saved = errno;
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_destroy(&t->mu);
    sd_status s = SD_OK;
    if (report) {
        if (t->err != SD_OK && t->refused > 0)
            s = SD_FAIL(t->err, "trace %s: %lld call(s) refused (not written; the file is complete); the first: %s",
                        t->path, t->refused, t->errmsg);
        else if (t->err != SD_OK)
            s = SD_FAIL(t->err, "%s", t->errmsg);
        else if (write_failed || close_failed)
            s = SD_FAIL(SD_ERR_IO, "trace %s: writing the file failed: %s", t->path,
                        saved ? strerror(saved) : "unknown error");
    }
    for (int i = 0; i < t->ninfo; i++) {
        free(t->info_key[i]);
        free(t->info_val[i]);
    }
    free(t->buf);
    free(t->path);
    free(t);
    return s;
}

sd_status sd_trace_close(sd_trace *t) { return finish(t, true); }

void sd_trace_close_quietly(sd_trace *t) { (void)finish(t, false); }
