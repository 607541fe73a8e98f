/* test_summary.c: summary.json as the runner writes it (sd_run_summaries_write, engine/runner.c),
 * without training anything. Checks: the keys in their documented order; the numbers with the text
 * they always had (integers exact up to 2^64 - 1, which a double cannot hold; fixed decimals);
 * null for a target not reached, no speedup, or a non-finite value; a name with quotes, a
 * backslash and control characters comes back intact; the report reads the file; and a file that
 * cannot be created or written (a missing folder, a folder in its place, a full disk: /dev/full)
 * is SD_ERR_IO naming the path. */
#define _GNU_SOURCE
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/distributed.h"
#include "engine/report.h"
#include "tests/harness.h"

static const char *const top_keys[] = {"experiment", "target_accuracy", "devices", "runs"};
static const char *const run_keys[] = {"mode", "seed", "time_to_target_s", "final_accuracy", "best_accuracy",
                                       "samples_trained", "samples_injected", "samples_dropped", "stalled_devices",
                                       "peak_buffer", "bytes_sent", "steps", "skipped_steps", "bn_identical",
                                       "clock_s", "wall_s", "speedup_vs_ddp", "shared_per_device"};

static void write_file(const char *dir, const char *name, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    EXPECT(f != NULL, "cannot write %s", p);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* The keys of object o, in order, are exactly keys[0..n). */
static bool keys_are(const cJSON *o, const char *const *keys, int n) {
    int i = 0;
    for (const cJSON *c = o ? o->child : NULL; c; c = c->next, i++)
        if (i >= n || !c->string || strcmp(c->string, keys[i]) != 0) return false;
    return i == n;
}

/* The value text of the k-th "key" of a JSON text (k from 0), up to the next ',', '}' or line end. */
static void value_text(const char *json, const char *key, int k, char *out, size_t cap) {
    const char *p = json;
    for (int i = 0; p && i <= k; i++) p = sd_test_json_after(p, key);
    size_t n = p ? strcspn(p, ",}\n") : 0;
    snprintf(out, cap, "%.*s", (int)n, p ? p : "");
}

static void expect_value(const char *json, const char *key, int k, const char *want) {
    char got[128];
    value_text(json, key, k, got, sizeof got);
    EXPECT(!strcmp(got, want), "run %d: \"%s\" is '%s', want '%s'", k, key, got, want);
}

int main(void) {
    char root[] = "/tmp/sd_summary_XXXXXX";
    if (!mkdtemp(root)) return sd_test_skip("test_summary", "mkdtemp failed");
    sd_experiment *e = calloc(1, sizeof *e);
    sd_run_summary *runs = calloc(2, sizeof *runs);
    EXPECT(e && runs, "calloc");
    if (!e || !runs) return sd_test_finish("test_summary");
    sd_experiment_defaults(e);
    /* names are [A-Za-z0-9_.-]+ once resolved; the writer escapes whatever it is given */
    const char *name = "odd \"name\" \\ tab\t nl\n bell\x07 caf\xc3\xa9";
    snprintf(e->name, sizeof e->name, "%s", name);
    e->target_accuracy = 0.85;
    e->devices.count = 3;
    runs[0] = (sd_run_summary){.mode = SD_EXP_MODE_DDP, .seed = 1, .time_to_target_s = -1, .final_accuracy = 0.7912345678,
                               .best_accuracy = 0.8, .samples_trained = 960, .samples_injected = 0, .samples_dropped = 4321,
                               .stalled_devices = 1, .peak_buffer = 80, .bytes_sent = 123456789, .steps = 20,
                               .skipped_steps = 0, .bn_identical = true, .clock_s = 106.0, .wall_s = 3.25,
                               .speedup_vs_ddp = 0, .devices = 3, .shared = {0, 0, 0}};
    runs[1] = (sd_run_summary){.mode = SD_EXP_MODE_SCADLES, .seed = 7, .time_to_target_s = 24.12345,
                               .final_accuracy = NAN, .best_accuracy = 0.86, .samples_trained = 1000,
                               .samples_injected = 77, .samples_dropped = 0, .peak_buffer = 7,
                               .bytes_sent = (1ull << 53) + 1, .steps = 30, .skipped_steps = 2, .bn_identical = false,
                               .clock_s = 30.0004, .wall_s = 2.0, .speedup_vs_ddp = 2.5, .devices = 3,
                               .shared = {1, 2, 18446744073709551615ull}};
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", root);
    EXPECT_OK(sd_run_summaries_write(e, runs, 2, path));
    char *text = sd_test_slurp(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    EXPECT(j != NULL, "summary.json parses: %s", text ? text : "(unreadable)");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "runs");
    EXPECT(keys_are(j, top_keys, 4), "top-level keys in order");
    EXPECT(cJSON_GetArraySize(list) == 2 && keys_are(cJSON_GetArrayItem(list, 0), run_keys, 18) &&
               keys_are(cJSON_GetArrayItem(list, 1), run_keys, 18), "each run's keys in order");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(j, "experiment");
    EXPECT(cJSON_IsString(nm) && !strcmp(nm->valuestring, name), "the name comes back intact: '%s'",
           cJSON_IsString(nm) ? nm->valuestring : "(not a string)");
    if (text) {
        expect_value(text, "target_accuracy", 0, "0.85");
        expect_value(text, "devices", 0, "3");
        expect_value(text, "mode", 0, "\"ddp\"");
        expect_value(text, "mode", 1, "\"scadles\"");
        expect_value(text, "seed", 0, "1");
        expect_value(text, "seed", 1, "7");
        expect_value(text, "time_to_target_s", 0, "null");
        expect_value(text, "time_to_target_s", 1, "24.123");
        expect_value(text, "final_accuracy", 0, "0.791235");
        expect_value(text, "final_accuracy", 1, "null"); /* NaN: null, not an invalid "nan" */
        expect_value(text, "best_accuracy", 1, "0.860000");
        expect_value(text, "samples_dropped", 0, "4321");
        expect_value(text, "stalled_devices", 0, "1");
        expect_value(text, "bytes_sent", 0, "123456789");
        expect_value(text, "bytes_sent", 1, "9007199254740993");
        expect_value(text, "skipped_steps", 1, "2");
        expect_value(text, "bn_identical", 0, "true");
        expect_value(text, "bn_identical", 1, "false");
        expect_value(text, "clock_s", 0, "106.000");
        expect_value(text, "clock_s", 1, "30.000");
        expect_value(text, "wall_s", 0, "3.250");
        expect_value(text, "speedup_vs_ddp", 0, "null");
        expect_value(text, "speedup_vs_ddp", 1, "2.500");
        const char *sh = strstr(text, "18446744073709551615]");
        EXPECT(sh != NULL, "shared_per_device ends with 2^64 - 1 exactly");
    }
    cJSON_Delete(j);
    free(text);

    /* the report reads it (each run needs its metrics.jsonl and eval.jsonl) */
    const char *stems[] = {"ddp-seed1", "scadles-seed7"};
    for (int i = 0; i < 2; i++) {
        char d[800];
        snprintf(d, sizeof d, "%s/%s", root, stems[i]);
        EXPECT(mkdir(d, 0755) == 0, "mkdir %s", d);
        write_file(d, "metrics.jsonl", "{\"time\": 1, \"step\": 1}\n");
        write_file(d, "eval.jsonl", "{\"time\": 1, \"top1\": 0.5}\n");
    }
    FILE *notes = fopen("/dev/null", "w");
    sd_report_options ro = {.notes = notes}; /* (gnuplot fails on these one-line runs: notes only) */
    EXPECT_OK(sd_report_generate_ex(root, &ro));
    if (notes) fclose(notes);
    char html_path[700];
    snprintf(html_path, sizeof html_path, "%s/report.html", root);
    char *html = sd_test_slurp(html_path, NULL);
    EXPECT(html && strstr(html, "24.1") && strstr(html, "2.50x") && strstr(html, "not reached"),
           "the report's table shows the times and the speedup");
    free(html);

    /* files that cannot be written: each an SD_ERR_IO naming the path */
    snprintf(path, sizeof path, "%s/no/such/folder/summary.json", root);
    EXPECT_FAIL(sd_run_summaries_write(e, runs, 2, path), SD_ERR_IO, path);
    snprintf(path, sizeof path, "%s/a_folder", root);
    EXPECT(mkdir(path, 0755) == 0, "mkdir %s", path);
    EXPECT_FAIL(sd_run_summaries_write(e, runs, 2, path), SD_ERR_IO, path);
    if (access("/dev/full", W_OK) == 0) {
        EXPECT_FAIL(sd_run_summaries_write(e, runs, 2, "/dev/full"), SD_ERR_IO, "cannot write /dev/full");
        EXPECT(strstr(sd_last_error(), "No space left") != NULL, "says why: %s", sd_last_error());
    } else {
        printf("test_summary: /dev/full not writable here; the full-disk case is not run\n");
    }

    free(e);
    free(runs);
    if (sd_test_failed == 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) printf("test_summary: could not remove %s\n", root);
    } else {
        printf("test_summary: files kept in %s\n", root);
    }
    return sd_test_finish("test_summary");
}
