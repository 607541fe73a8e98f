/* fuzz_experiment.c: libFuzzer target for the experiment JSON loader (engine/experiment.h).
 *
 * Input: the JSON text, optionally followed by NUL-separated `--set` assignments
 * ("{...}\0optimizer.lr=0.1\0devices.list[3].rate=50"; at most 8 are applied). The text goes to
 * sd_experiment_load_string (which stops at the first NUL, as a C string does), each assignment
 * to sd_experiment_set, then sd_experiment_resolve and sd_experiment_check_ranks.
 * Oracles (all promised by experiment.h): a failed load, set or resolve leaves the struct
 * unchanged; resolve is idempotent; a resolved experiment written with sd_experiment_to_json loads
 * back byte for byte and resolves to itself. Inputs over the 1 MiB file limit are skipped. */
#include "tests/fuzz/fuzz_util.h"

#include "engine/experiment.h"

#define FZ_MAX_SETS 8

static void dump_pair(const sd_experiment *a, const sd_experiment *b) {
    char *ja = NULL, *jb = NULL;
    if (sd_experiment_to_json(a, &ja) == SD_OK && sd_experiment_to_json(b, &jb) == SD_OK)
        fprintf(stderr, "--- first\n%s\n--- second\n%s\n", ja, jb);
    free(ja);
    free(jb);
}

static bool same(const sd_experiment *a, const sd_experiment *b) { return memcmp(a, b, sizeof *a) == 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > SD_EXP_FILE_MAX + 1024) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    text[size] = '\0';

    /* sd_experiment is large (devices.dev[64]): keep it off the stack */
    sd_experiment *e = malloc(sizeof *e), *before = malloc(sizeof *e), *back = malloc(sizeof *e);
    FZ_CHECK(e && before && back, "out of memory");
    memset(e, 0x5a, sizeof *e);
    memcpy(before, e, sizeof *e);

    sd_status s = sd_experiment_load_string(text, "fuzz.json", e);
    fz_report("load", s);
    if (s != SD_OK) {
        FZ_CHECK(same(e, before), "a failed load (%s) changed the struct", sd_status_str(s));
        goto done;
    }

    /* the --set assignments after the JSON text */
    size_t at = strlen(text) + 1;
    for (int k = 0; k < FZ_MAX_SETS && at < size; k++) {
        const char *assign = text + at;
        at += strlen(assign) + 1;
        memcpy(before, e, sizeof *e);
        s = sd_experiment_set(e, assign);
        fz_report("set", s);
        if (s != SD_OK)
            FZ_CHECK(same(e, before), "a failed set of '%.200s' changed the struct", assign);
    }

    memcpy(before, e, sizeof *e);
    s = sd_experiment_resolve(e);
    fz_report("resolve", s);
    if (s != SD_OK) {
        FZ_CHECK(same(e, before), "a failed resolve changed the struct");
        goto done;
    }
    FZ_CHECK(e->devices.count >= 1 && e->devices.count <= SD_MAX_DEVICES, "resolved with %d devices",
             e->devices.count);
    (void)sd_experiment_check_ranks(e, 1);
    (void)sd_experiment_check_ranks(e, e->devices.count);

    /* resolve is idempotent */
    memcpy(back, e, sizeof *e);
    s = sd_experiment_resolve(back);
    FZ_CHECK(s == SD_OK, "resolving a resolved experiment failed");
    if (!same(e, back)) dump_pair(e, back);
    FZ_CHECK(same(e, back), "resolve is not idempotent");

    /* written as JSON, it loads back byte for byte and still resolves to itself */
    char *json = NULL;
    s = sd_experiment_to_json(e, &json);
    FZ_CHECK(s == SD_OK && json, "to_json of a resolved experiment failed");
    memset(back, 0xa5, sizeof *back);
    s = sd_experiment_load_string(json, "round-trip", back);
    if (s != SD_OK) fprintf(stderr, "--- written\n%s\n", json);
    FZ_CHECK(s == SD_OK, "the written JSON does not load");
    if (!same(e, back)) dump_pair(e, back);
    FZ_CHECK(same(e, back), "load(to_json(e)) differs from e");
    s = sd_experiment_resolve(back);
    FZ_CHECK(s == SD_OK && same(e, back), "the reloaded experiment does not resolve to itself");
    free(json);

done:
    free(back);
    free(before);
    free(e);
    free(text);
    return 0;
}
