/* test_trace.c: the Chrome-trace writer (engine/trace.h). Several device threads write slices
 * and counters into one trace at once; after the close the file parses with cJSON, every event
 * is well formed, timestamps and durations are the given seconds in microseconds, per-thread
 * order is kept, names (with quotes, backslashes, newlines, UTF-8) come back as given, counters
 * and track names are present. Also: a NULL trace records nothing, refused calls write nothing
 * and are reported by the close, a failing disk is reported, an unwritable path names itself. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/trace.h"
#include "tests/harness.h"

#define THREADS 4
#define STEPS 1500 /* slices per thread: more than one 1 MiB buffer of events in all */
#define PID 2

static const char *const weird = "say \"hi\"\\ back\nslash \xc3\xa9t\xc3\xa9 \x01";

typedef struct job {
    sd_trace *t;
    int tid;
    int fails;
} job;

static double ts_of(int tid, int i) { return tid * 100.0 + i * 0.0125; }

static void *device(void *arg) {
    job *j = arg;
    char name[32];
    snprintf(name, sizeof name, "Device %d", j->tid);
    if (sd_trace_meta(j->t, PID, j->tid, name) != SD_OK) j->fails++;
    char counter[32];
    snprintf(counter, sizeof counter, "buffer device %d", j->tid);
    for (int i = 0; i < STEPS; i++) {
        sd_trace_arg args[2] = {{"i", i}, {"batch", 3.5 * j->tid}};
        sd_trace_phase p = (sd_trace_phase)(i % SD_TRACE_PHASE_COUNT);
        if (sd_trace_complete_args(j->t, PID, j->tid, sd_trace_phase_name(p), "step", ts_of(j->tid, i), 0.004 + 1e-6 * i,
                                   args, 2) != SD_OK)
            j->fails++;
        if (sd_trace_counter(j->t, PID, counter, ts_of(j->tid, i), "samples", i) != SD_OK) j->fails++;
    }
    return NULL;
}

static cJSON *parse_file(const char *path) {
    char *text = sd_test_slurp(path, NULL);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static const cJSON *item(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static bool is_str(const cJSON *o, const char *k, const char *want) {
    const cJSON *it = item(o, k);
    return cJSON_IsString(it) && (!want || strcmp(it->valuestring, want) == 0);
}
static bool is_num(const cJSON *o, const char *k) { return cJSON_IsNumber(item(o, k)); }
static double num(const cJSON *o, const char *k) { return cJSON_IsNumber(item(o, k)) ? item(o, k)->valuedouble : NAN; }

static void test_threads(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/trace.json", dir);
    sd_trace *t = NULL;
    EXPECT_OK(sd_trace_open(path, &t));
    if (!t) return;
    EXPECT_OK(sd_trace_meta(t, PID, -1, "scadles seed 1"));
    EXPECT_OK(sd_trace_info(t, "clock", "virtual"));
    EXPECT_OK(sd_trace_info(t, "experiment", "first"));
    EXPECT_OK(sd_trace_info(t, "experiment", weird)); /* a key set twice keeps the last value */
    job jobs[THREADS];
    pthread_t th[THREADS];
    for (int k = 0; k < THREADS; k++) {
        jobs[k] = (job){.t = t, .tid = k};
        pthread_create(&th[k], NULL, device, &jobs[k]);
    }
    /* the main thread writes too, while the devices run: the evaluation track and a flush */
    EXPECT_OK(sd_trace_meta(t, PID, THREADS, "Evaluation (device 0)"));
    EXPECT_OK(sd_trace_complete(t, PID, THREADS, weird, NULL, 12.5, 0.25));
    EXPECT_OK(sd_trace_counter(t, PID, "compression", 12.5, "on", 1));
    EXPECT_OK(sd_trace_flush(t));
    for (int k = 0; k < THREADS; k++) {
        pthread_join(th[k], NULL);
        EXPECT(jobs[k].fails == 0, "thread %d: %d calls failed", k, jobs[k].fails);
    }
    EXPECT_OK(sd_trace_close(t));

    cJSON *root = parse_file(path);
    EXPECT(root != NULL, "%s does not parse as JSON", path);
    if (!root) return;
    const cJSON *ev = item(root, "traceEvents");
    EXPECT(cJSON_IsArray(ev), "no traceEvents array");
    EXPECT(is_str(root, "displayTimeUnit", "ms"), "displayTimeUnit");
    const cJSON *other = item(root, "otherData");
    EXPECT(is_str(other, "clock", "virtual") && is_str(other, "experiment", weird) && is_str(other, "generator", "scadles"),
           "otherData holds the info entries");

    int slices[THREADS + 1] = {0}, counters[THREADS] = {0}, meta = 0, bad = 0, order = 0, ts_bad = 0, comp = 0;
    int phase_seen[SD_TRACE_PHASE_COUNT] = {0};
    double last_ts[THREADS];
    for (int k = 0; k < THREADS; k++) last_ts[k] = -1;
    bool weird_seen = false, proc_name = false, thread_names[THREADS + 1] = {false};
    const cJSON *e;
    cJSON_ArrayForEach(e, ev) {
        if (!cJSON_IsObject(e) || !is_str(e, "ph", NULL) || !is_str(e, "name", NULL) || !is_num(e, "pid") ||
            !is_num(e, "tid") || num(e, "pid") != PID) {
            bad++;
            continue;
        }
        const char *ph = item(e, "ph")->valuestring, *name = item(e, "name")->valuestring;
        int tid = (int)num(e, "tid");
        if (!strcmp(ph, "X")) {
            if (!is_num(e, "ts") || !is_num(e, "dur") || num(e, "dur") < 0 || tid < 0 || tid > THREADS) {
                bad++;
                continue;
            }
            slices[tid]++;
            if (tid == THREADS) {
                weird_seen = !strcmp(name, weird) && !item(e, "cat") && fabs(num(e, "ts") - 12.5e6) < 1e-3 &&
                             fabs(num(e, "dur") - 0.25e6) < 1e-3;
                continue;
            }
            const cJSON *args = item(e, "args");
            int i = (int)num(args, "i");
            if (!is_num(args, "i") || num(args, "batch") != 3.5 * tid || !is_str(e, "cat", "step") || i < 0 || i >= STEPS ||
                strcmp(name, sd_trace_phase_name((sd_trace_phase)(i % SD_TRACE_PHASE_COUNT)))) {
                bad++;
                continue;
            }
            phase_seen[i % SD_TRACE_PHASE_COUNT]++;
            /* seconds in, microseconds out (written with 3 decimals: nanoseconds) */
            if (fabs(num(e, "ts") - ts_of(tid, i) * 1e6) > 2e-3 || fabs(num(e, "dur") - (0.004 + 1e-6 * i) * 1e6) > 2e-3)
                ts_bad++;
            if (num(e, "ts") <= last_ts[tid]) order++;
            last_ts[tid] = num(e, "ts");
        } else if (!strcmp(ph, "C")) {
            const cJSON *args = item(e, "args");
            if (!strcmp(name, "compression")) {
                comp += num(args, "on") == 1 && fabs(num(e, "ts") - 12.5e6) < 1e-3;
                continue;
            }
            int k = -1;
            if (sscanf(name, "buffer device %d", &k) != 1 || k < 0 || k >= THREADS || !is_num(args, "samples") ||
                !is_num(e, "ts")) {
                bad++;
                continue;
            }
            counters[k]++;
        } else if (!strcmp(ph, "M")) {
            meta++;
            const cJSON *args = item(e, "args");
            if (!strcmp(name, "process_name")) proc_name = is_str(args, "name", "scadles seed 1");
            if (!strcmp(name, "thread_name") && tid >= 0 && tid <= THREADS) {
                char want[40];
                if (tid < THREADS) snprintf(want, sizeof want, "Device %d", tid);
                else snprintf(want, sizeof want, "Evaluation (device 0)");
                thread_names[tid] = is_str(args, "name", want);
            }
            if (!strcmp(name, "thread_sort_index") && num(args, "sort_index") != tid) bad++;
        } else {
            bad++;
        }
    }
    EXPECT(bad == 0, "%d malformed events", bad);
    EXPECT(ts_bad == 0, "%d slices with ts/dur not the given seconds in microseconds", ts_bad);
    EXPECT(order == 0, "%d slices out of their thread's order", order);
    for (int k = 0; k < THREADS; k++) {
        EXPECT(slices[k] == STEPS, "thread %d: %d slices, want %d", k, slices[k], STEPS);
        EXPECT(counters[k] == STEPS, "thread %d: %d counter samples, want %d", k, counters[k], STEPS);
        EXPECT(thread_names[k], "thread %d's name", k);
    }
    EXPECT(thread_names[THREADS] && slices[THREADS] == 1, "the evaluation track");
    EXPECT(weird_seen, "a name with quotes, backslashes, a newline and UTF-8 comes back as given");
    EXPECT(comp == 1, "the compression counter");
    EXPECT(proc_name, "the process name");
    EXPECT(meta == 2 * (THREADS + 2), "%d metadata events, want %d (name + sort index per track)", meta, 2 * (THREADS + 2));
    for (int p = 0; p < SD_TRACE_PHASE_COUNT; p++) EXPECT(phase_seen[p] > 0, "phase %s never seen", sd_trace_phase_name((sd_trace_phase)p));
    cJSON_Delete(root);
}

static void test_names(void) {
    static const char *const want[] = {"stream_wait", "batch_assembly", "forward", "backward", "compression",
                                       "communication", "optimizer", "evaluation"};
    for (int p = 0; p < SD_TRACE_PHASE_COUNT; p++)
        EXPECT(!strcmp(sd_trace_phase_name((sd_trace_phase)p), want[p]), "phase %d is %s", p,
               sd_trace_phase_name((sd_trace_phase)p));
    EXPECT(!strcmp(sd_trace_phase_name((sd_trace_phase)99), "unknown"), "out of range");
}

/* NULL trace: every call is a no-op that succeeds (tracing off). */
static void test_null(void) {
    EXPECT_OK(sd_trace_meta(NULL, 0, 0, "x"));
    EXPECT_OK(sd_trace_complete(NULL, 0, 0, "forward", "step", 0, 1));
    EXPECT_OK(sd_trace_counter(NULL, 0, "b", 0, "k", 1));
    EXPECT_OK(sd_trace_info(NULL, "k", "v"));
    EXPECT_OK(sd_trace_flush(NULL));
    EXPECT_OK(sd_trace_close(NULL));
}

/* Refused calls write nothing; the file is still complete JSON and the close names the first. */
static void test_refused(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/refused.json", dir);
    sd_trace *t = NULL;
    EXPECT_OK(sd_trace_open(path, &t));
    EXPECT_OK(sd_trace_complete(t, 0, 0, "forward", "step", 1.0, 0.5));
    EXPECT_FAIL(sd_trace_complete(t, 0, 0, "backward", "step", 1.0, -0.5), SD_ERR_INVALID, "dur");
    EXPECT_FAIL(sd_trace_complete(t, 0, 0, "backward", "step", NAN, 0.5), SD_ERR_INVALID, "finite");
    EXPECT_FAIL(sd_trace_complete(t, 0, 0, NULL, "step", 1, 0.5), SD_ERR_INVALID, "NULL name");
    EXPECT_FAIL(sd_trace_counter(t, 0, "buffer", 1.0, "samples", INFINITY), SD_ERR_INVALID, "finite");
    sd_trace_arg a = {"x", NAN};
    EXPECT_FAIL(sd_trace_complete_args(t, 0, 0, "forward", "step", 1, 1, &a, 1), SD_ERR_INVALID, "non-finite");
    EXPECT_FAIL(sd_trace_close(t), SD_ERR_INVALID, "5 call(s) refused");
    cJSON *root = parse_file(path);
    EXPECT(root != NULL, "a trace with refused calls still parses");
    EXPECT(root && cJSON_GetArraySize(item(root, "traceEvents")) == 1, "only the valid event was written");
    cJSON_Delete(root);
}

/* Back-to-back slices with awkward durations (thirds, sevenths; virtual times of hours) abut
 * exactly in the file: each starts where the previous one ends, to the nanosecond. */
static void test_abut(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/abut.json", dir);
    sd_trace *t = NULL;
    EXPECT_OK(sd_trace_open(path, &t));
    double t0 = 12345.678901234;
    for (int i = 0; i < 200; i++) {
        double d = (i % 3 + 1) / 3.0 * 1e-3 + (i % 7) / 7.0 * 1e-6;
        EXPECT_OK(sd_trace_complete(t, 1, 0, sd_trace_phase_name((sd_trace_phase)(i % 7)), "step", t0, d));
        t0 += d;
    }
    EXPECT_OK(sd_trace_complete(t, 1, 0, "negative time", "step", -2.5, 0.5)); /* allowed: the caller's clock */
    EXPECT_FAIL(sd_trace_complete(t, 1, 0, "too late", "step", 1e10, 0), SD_ERR_INVALID, "9e9");
    sd_trace_close_quietly(t); /* the refused call is not reported, the file is complete */
    cJSON *root = parse_file(path);
    const cJSON *ev = item(root, "traceEvents");
    EXPECT(cJSON_GetArraySize(ev) == 201, "%d events", cJSON_GetArraySize(ev));
    long long prev_end = -1;
    int gaps = 0;
    for (int i = 0; i < 200; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev, i);
        long long ts = llround(num(e, "ts") * 1000), dur = llround(num(e, "dur") * 1000);
        if (prev_end >= 0 && ts != prev_end) gaps++;
        prev_end = ts + dur;
    }
    EXPECT(gaps == 0, "%d of 199 slice boundaries overlap or leave a gap", gaps);
    const cJSON *neg = cJSON_GetArrayItem(ev, 200);
    EXPECT(fabs(num(neg, "ts") + 2.5e6) < 1e-6 && fabs(num(neg, "dur") - 0.5e6) < 1e-6, "negative ts written as given");
    cJSON_Delete(root);
    remove(path);
}

static void test_io(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir/trace.json", dir);
    sd_trace *t = (sd_trace *)&t;
    EXPECT_FAIL(sd_trace_open(path, &t), SD_ERR_IO, path);
    EXPECT(t == NULL, "no trace on failure");
    /* a full disk: the events fit the buffer, the close's flush fails and says so */
    if (access("/dev/full", W_OK) == 0) {
        EXPECT_OK(sd_trace_open("/dev/full", &t));
        EXPECT_OK(sd_trace_complete(t, 0, 0, "forward", "step", 0, 1));
        EXPECT_FAIL(sd_trace_close(t), SD_ERR_IO, "/dev/full");
    } else {
        printf("test_trace: note: /dev/full not writable here; the full-disk check is skipped\n");
    }
}

int main(void) {
    char dir[] = "/tmp/sd_trace_XXXXXX";
    if (!mkdtemp(dir)) return sd_test_skip("test_trace", "mkdtemp failed");
    test_names();
    test_null();
    test_threads(dir);
    test_refused(dir);
    test_abut(dir);
    test_io(dir);
    char p[600];
    snprintf(p, sizeof p, "%s/trace.json", dir);
    remove(p);
    snprintf(p, sizeof p, "%s/refused.json", dir);
    remove(p);
    rmdir(dir);
    return sd_test_finish("test_trace");
}
