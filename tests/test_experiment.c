/* test_experiment.c: experiment files (engine/experiment.h): the defaults validate, presets and
 * explicit arrays give the documented rates, seeded distributions draw reproducibly within their
 * bounds, --set reaches nested keys, arrays, booleans, numbers and strings, the resolved config
 * written as JSON loads back byte for byte, every bad input is refused with the key path in the
 * message, and every file in apps/experiments/ loads and resolves. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/experiment.h"
#include "tests/harness.h"


static sd_status load(const char *json, sd_experiment *e) { return sd_experiment_load_string(json, "test.json", e); }

/* load + resolve; the status of whichever failed */
static sd_status load_resolve(const char *json, sd_experiment *e) {
    sd_status s = load(json, e);
    return s != SD_OK ? s : sd_experiment_resolve(e);
}

static bool same(const sd_experiment *a, const sd_experiment *b) { return memcmp(a, b, sizeof *a) == 0; }

static void dump_diff(const sd_experiment *a, const sd_experiment *b) {
    char *ja = NULL, *jb = NULL;
    if (sd_experiment_to_json(a, &ja) == SD_OK && sd_experiment_to_json(b, &jb) == SD_OK && strcmp(ja, jb))
        fprintf(stderr, "--- first\n%s--- second\n%s", ja, jb);
    free(ja);
    free(jb);
}

/* JSON text -> struct -> JSON text -> struct: equal bytes. */
static void expect_round_trip(const sd_experiment *e, const char *what) {
    char *text = NULL;
    EXPECT_OK(sd_experiment_to_json(e, &text));
    sd_experiment back;
    memset(&back, 0xa5, sizeof back);
    EXPECT_OK(sd_experiment_load_string(text ? text : "", "round-trip", &back));
    bool eq = same(e, &back);
    EXPECT(eq, "%s: load(write(e)) differs from e", what);
    if (!eq) dump_diff(e, &back);
    free(text);
}

/* ---- defaults and presets ---------------------------------------------------------------------- */
static const double uniform_s1[] = {50, 38, 12, 36, 34, 13, 82, 40};
static const double uniform_s2[] = {270, 218, 300, 246, 232, 284, 284, 236, 274, 228};
static const double normal_s1[] = {92, 38, 62, 42, 48, 88, 90, 22, 44, 28};

static void test_defaults(void) {
    sd_experiment e;
    sd_experiment_defaults(&e);
    EXPECT(e.optimizer.lr == 0.05 && e.optimizer.momentum == 0.9 && e.optimizer.weight_decay == 5e-4 && e.batch == 64 &&
               e.cap == 256 && e.window_s == 1.0 && e.buffer.capacity == 4096 && e.ddp_timeout_s == 30 &&
               e.target_accuracy == 0.85 && e.eval_every_s == 10 && e.time_budget_s == 600 && e.n_seeds == 1 &&
               e.seeds[0] == 1 && e.bn == SD_EXP_BN_AVERAGE && e.compression.ratio == 0.1 && e.compression.delta == 0.3,
           "documented defaults");
    expect_round_trip(&e, "unresolved defaults");
    EXPECT_OK(sd_experiment_resolve(&e));
    EXPECT(e.devices.count == 8 && !strcmp(e.out_dir, "runs/experiment"), "defaults resolve to 8 devices in runs/experiment: %d %s",
           e.devices.count, e.out_dir);
    for (int i = 0; i < e.devices.count; i++) {
        const sd_exp_device *d = &e.devices.dev[i];
        EXPECT(d->rate == uniform_s1[i] && d->profile.samples_per_s == 2000 && d->profile.step_overhead_s == 0.005 &&
                   d->profile.bandwidth_bps == 100e6 && d->profile.latency_s == 0.001 && d->profile.slowdown == 1 &&
                   !d->profile.profile[0] && d->set == SD_EXP_DEV_RESOLVED_MODELLED,
               "device %d: rate %g, profile %g %g %g %g", i, d->rate, d->profile.samples_per_s, d->profile.step_overhead_s,
               d->profile.bandwidth_bps, d->profile.latency_s);
    }
    EXPECT(e.devices.dev[8].rate == 0 && e.devices.dev[8].set == 0, "devices past count stay empty");
    expect_round_trip(&e, "resolved defaults");
    sd_experiment again = e;
    EXPECT_OK(sd_experiment_resolve(&again));
    EXPECT(same(&e, &again), "resolve is idempotent");
}

static void test_presets(void) {
    struct { const char *name; const double *rates; int n; } want[] = {
        {"uniform_s1", uniform_s1, 8}, {"uniform_s2", uniform_s2, 10}, {"normal_s1", normal_s1, 10}};
    EXPECT(!strcmp(sd_experiment_presets(), "uniform_s1 uniform_s2 normal_s1"), "preset names: %s", sd_experiment_presets());
    for (int k = 0; k < 3; k++) {
        sd_experiment e;
        sd_experiment_defaults(&e);
        char set[64];
        snprintf(set, sizeof set, "devices.rates=%s", want[k].name);
        EXPECT_OK(sd_experiment_set(&e, set));
        EXPECT_OK(sd_experiment_resolve(&e));
        EXPECT(e.devices.count == want[k].n, "%s: %d devices, want %d", want[k].name, e.devices.count, want[k].n);
        bool ok = true;
        for (int i = 0; i < want[k].n; i++) ok &= e.devices.dev[i].rate == want[k].rates[i];
        EXPECT(ok, "%s resolves to the documented rates", want[k].name);
        double r[SD_MAX_DEVICES];
        EXPECT(sd_experiment_preset_rates(want[k].name, r) == want[k].n && r[0] == want[k].rates[0], "preset_rates %s", want[k].name);
        /* a matching count is fine */
        sd_experiment_defaults(&e);
        snprintf(set, sizeof set, "{\"devices\": {\"count\": %d, \"rates\": \"%s\"}}", want[k].n, want[k].name);
        EXPECT_OK(load_resolve(set, &e));
    }
    EXPECT(sd_experiment_preset_rates("uniform_s3", NULL) == 0, "unknown preset has 0 rates");
}

static void test_arrays(void) {
    sd_experiment e;
    EXPECT_OK(load_resolve("{\"devices\": {\"rates\": [1.5, 2, 300.25]}}", &e));
    EXPECT(e.devices.count == 3 && e.devices.dev[0].rate == 1.5 && e.devices.dev[1].rate == 2 && e.devices.dev[2].rate == 300.25,
           "explicit array: %d devices, %g %g %g", e.devices.count, e.devices.dev[0].rate, e.devices.dev[1].rate,
           e.devices.dev[2].rate);
    expect_round_trip(&e, "explicit array");

    /* per-device overrides, both units for the link */
    EXPECT_OK(load_resolve("{\"devices\": {\"rates\": \"normal_s1\", \"compute\": {\"samples_per_s\": 500},"
                           " \"link\": {\"bandwidth_mbps\": 10, \"latency_ms\": 2},"
                           " \"list\": [{\"rate\": 50, \"bandwidth_mbps\": 1}, {}, {\"latency_s\": 0.5, \"step_overhead_s\": 0}]}}",
                           &e));
    EXPECT(e.devices.count == 10, "count from the preset: %d", e.devices.count);
    EXPECT(e.devices.dev[0].rate == 50 && e.devices.dev[0].profile.bandwidth_bps == 1e6 && e.devices.dev[0].profile.latency_s == 0.002,
           "device 0 overrides: %g %g %g", e.devices.dev[0].rate, e.devices.dev[0].profile.bandwidth_bps,
           e.devices.dev[0].profile.latency_s);
    EXPECT(e.devices.dev[1].rate == 38 && e.devices.dev[1].profile.bandwidth_bps == 1e7 && e.devices.dev[1].profile.samples_per_s == 500,
           "device 1 takes the defaults");
    EXPECT(e.devices.dev[2].profile.latency_s == 0.5 && e.devices.dev[2].profile.step_overhead_s == 0 && e.devices.dev[2].rate == 62,
           "device 2 overrides latency and overhead");
    expect_round_trip(&e, "overrides");
}

static void test_distributions(void) {
    sd_experiment a, b, c;
    const char *uni = "{\"devices\": {\"count\": 64, \"rate_seed\": 7, \"rates\": {\"uniform\": [10, 100]}}}";
    EXPECT_OK(load_resolve(uni, &a));
    EXPECT_OK(load_resolve(uni, &b));
    EXPECT(same(&a, &b), "uniform draws are reproducible");
    double lo = 1e9, hi = 0;
    for (int i = 0; i < 64; i++) {
        lo = fmin(lo, a.devices.dev[i].rate);
        hi = fmax(hi, a.devices.dev[i].rate);
    }
    EXPECT(lo >= 10 && hi <= 100 && hi - lo > 50, "uniform[10, 100] draws span [%g, %g]", lo, hi);
    EXPECT(a.devices.rates.kind == SD_EXP_RATES_UNIFORM && a.devices.rates.a == 10 && a.devices.rates.b == 100,
           "the source stays recorded");
    expect_round_trip(&a, "uniform draws");
    EXPECT_OK(sd_experiment_set(&b, "devices.rate_seed=8"));
    EXPECT_OK(sd_experiment_resolve(&b));
    EXPECT(b.devices.dev[0].rate == a.devices.dev[0].rate, "a resolved config keeps its drawn values (listed per device)");
    EXPECT_OK(load_resolve("{\"devices\": {\"count\": 64, \"rate_seed\": 8, \"rates\": {\"uniform\": [10, 100]}}}", &c));
    EXPECT(c.devices.dev[0].rate != a.devices.dev[0].rate, "another seed draws other rates");

    /* an override does not shift the other devices' draws */
    EXPECT_OK(load_resolve("{\"devices\": {\"count\": 64, \"rate_seed\": 7, \"rates\": {\"uniform\": [10, 100]},"
                           " \"list\": [{}, {}, {\"rate\": 5}]}}", &c));
    EXPECT(c.devices.dev[2].rate == 5 && c.devices.dev[3].rate == a.devices.dev[3].rate && c.devices.dev[1].rate == a.devices.dev[1].rate,
           "override of device 2 only");

    /* normal, truncated to > 0: mu 20, sigma 30 puts a quarter of the mass below 0 */
    EXPECT_OK(load_resolve("{\"devices\": {\"count\": 64, \"rates\": {\"normal\": [20, 30]}}}", &a));
    double sum = 0;
    bool pos = true;
    for (int i = 0; i < 64; i++) {
        pos &= a.devices.dev[i].rate > 0;
        sum += a.devices.dev[i].rate;
    }
    EXPECT(pos, "truncated normal draws are all > 0");
    EXPECT(sum / 64 > 15 && sum / 64 < 60, "truncated normal(20, 30) mean %g", sum / 64);
    expect_round_trip(&a, "normal draws");
    EXPECT_OK(load_resolve("{\"devices\": {\"count\": 3, \"rates\": {\"normal\": [40, 0]}}}", &a));
    EXPECT(a.devices.dev[0].rate == 40 && a.devices.dev[2].rate == 40, "sigma 0 gives mu");

    /* the resolved file, written and loaded, is the same experiment */
    char dir[] = "/tmp/sd_exp_XXXXXX", path[256];
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/resolved.json", dir);
    EXPECT_OK(load_resolve(uni, &a));
    EXPECT_OK(sd_experiment_write_json(&a, path));
    memset(&b, 0x5a, sizeof b);
    EXPECT_OK(sd_experiment_load_file(path, &b));
    EXPECT(same(&a, &b), "write_json -> load_file gives the same struct");
    EXPECT_OK(sd_experiment_resolve(&b));
    EXPECT(same(&a, &b), "and it resolves to itself");
    remove(path);
    rmdir(dir);
}

/* ---- --set ------------------------------------------------------------------------------------- */
static void test_set(void) {
    sd_experiment e;
    sd_experiment_defaults(&e);
    EXPECT_OK(sd_experiment_set(&e, "optimizer.lr=0.1"));
    EXPECT_OK(sd_experiment_set(&e, " optimizer.momentum = 0.5 "));
    EXPECT_OK(sd_experiment_set(&e, "optimizer.nesterov=true"));
    EXPECT_OK(sd_experiment_set(&e, "compression.per_layer=false"));
    EXPECT_OK(sd_experiment_set(&e, "compression.policy=paper"));
    EXPECT_OK(sd_experiment_set(&e, "modes=scadles"));
    EXPECT_OK(sd_experiment_set(&e, "seeds=3,1,2"));
    EXPECT_OK(sd_experiment_set(&e, "name=run-7"));
    EXPECT_OK(sd_experiment_set(&e, "optimizer.schedule=multistep:100,200@0.5"));
    EXPECT_OK(sd_experiment_set(&e, "devices.rates={\"uniform\": [20, 40]}"));
    EXPECT_OK(sd_experiment_set(&e, "devices.count=4"));
    EXPECT_OK(sd_experiment_set(&e, "devices.link.bandwidth_mbps=10"));
    EXPECT_OK(sd_experiment_set(&e, "devices.list[3].rate=50"));
    EXPECT_OK(sd_experiment_set(&e, "devices.list[2]={\"latency_ms\": 20}"));
    EXPECT_OK(sd_experiment_set(&e, "buffer.full=backpressure"));
    EXPECT_OK(sd_experiment_set(&e, "injection={\"alpha\": 0.25, \"beta\": 0.5}"));
    EXPECT_OK(sd_experiment_set(&e, "description=a [bracketed] note"));
    EXPECT(e.optimizer.lr == 0.1 && e.optimizer.momentum == 0.5 && e.optimizer.nesterov && !e.compression.per_layer &&
               e.compression.policy == SD_COMPRESS_PAPER, "nested numbers, booleans, enums");
    EXPECT(e.n_modes == 1 && e.modes[0] == SD_EXP_MODE_SCADLES && e.n_seeds == 3 && e.seeds[0] == 3 && e.seeds[2] == 2,
           "arrays: %d modes, %d seeds", e.n_modes, e.n_seeds);
    EXPECT(!strcmp(e.name, "run-7") && !strcmp(e.optimizer.schedule, "multistep:100,200@0.5") &&
               !strcmp(e.description, "a [bracketed] note"), "strings");
    EXPECT(e.devices.list_len == 4 && e.devices.dev[3].set == SD_EXP_DEV_RATE && e.devices.dev[2].set == SD_EXP_DEV_LATENCY &&
               e.devices.dev[0].set == 0, "list entries: len %d", e.devices.list_len);
    EXPECT(e.injection.alpha == 0.25 && e.injection.beta == 0.5 && e.buffer.full == SD_EXP_FULL_BACKPRESSURE, "object value");
    expect_round_trip(&e, "after --set, unresolved");
    EXPECT_OK(sd_experiment_resolve(&e));
    EXPECT(e.devices.count == 4 && e.devices.dev[3].rate == 50 && e.devices.dev[0].rate >= 20 && e.devices.dev[0].rate <= 40 &&
               e.devices.dev[1].profile.bandwidth_bps == 1e7 && e.devices.dev[2].profile.latency_s == 0.02 &&
               !strcmp(e.out_dir, "runs/run-7"), "resolved after --set");
    expect_round_trip(&e, "after --set, resolved");

    sd_experiment_defaults(&e);
    EXPECT_OK(sd_experiment_set(&e, "devices.rates=50,38,12"));
    EXPECT_OK(sd_experiment_set(&e, "modes=ddp, scadles"));
    EXPECT_OK(sd_experiment_resolve(&e));
    EXPECT(e.devices.count == 3 && e.devices.dev[2].rate == 12 && e.n_modes == 2, "rates as a comma list");
    sd_experiment_defaults(&e);
    EXPECT_OK(sd_experiment_set(&e, "devices.rates=normal_s1"));
    EXPECT_OK(sd_experiment_set(&e, "optimizer.schedule=cosine"));
    EXPECT_OK(sd_experiment_set(&e, "max_steps=1000"));
    EXPECT_OK(sd_experiment_resolve(&e));
    EXPECT(e.devices.count == 10 && e.devices.dev[0].rate == 92, "devices.rates=normal_s1");

    /* failures leave the experiment as it was */
    sd_experiment before = e;
    EXPECT_MSG(sd_experiment_set(&e, "optimizer.lr=fast"), SD_ERR_INVALID, "--set", "optimizer.lr", "a number in (0, 100]", "fast");
    EXPECT_MSG(sd_experiment_set(&e, "optimizer.lrr=0.1"), SD_ERR_INVALID, "optimizer.lrr", "unknown key", "did you mean 'lr'?");
    EXPECT_MSG(sd_experiment_set(&e, "optimizer..lr=0.1"), SD_ERR_INVALID, "optimizer..lr", "empty part");
    EXPECT_MSG(sd_experiment_set(&e, ".batch=4"), SD_ERR_INVALID, "empty part");
    EXPECT_MSG(sd_experiment_set(&e, "seeds=1,9007199254740993"), SD_ERR_INVALID, "9007199254740993", "2^53");
    {
        sd_experiment big;
        sd_experiment_defaults(&big);
        EXPECT_OK(sd_experiment_set(&big, "seeds=9007199254740992"));
        EXPECT(big.seeds[0] == 9007199254740992ull, "2^53 itself is a seed");
        /* #20 item 10: in a file too (cJSON reads numbers as doubles, which round above 2^53) */
        EXPECT_OK(load("{\"seeds\": [9007199254740992]}", &big));
        EXPECT(big.seeds[0] == 9007199254740992ull, "2^53 in a file");
        EXPECT_MSG(load("{\"seeds\": [1,\n 9007199254740993]}", &big), SD_ERR_INVALID, "test.json:2:2", "9007199254740993",
                   "2^53");
        EXPECT_MSG(load("{\"devices\": {\"rate_seed\": 123456789012345678901}}", &big), SD_ERR_INVALID,
                   "123456789012345678901", "2^53");
        EXPECT_OK(load("{\"name\": \"run99999999999999999999\", \"link_burst_bytes\": 1.0e11}", &big)); /* strings, reals */
    }
    EXPECT_MSG(sd_experiment_set(&e, "optimiser.lr=0.1"), SD_ERR_INVALID, "optimiser", "did you mean 'optimizer'?");
    EXPECT_MSG(sd_experiment_set(&e, "optimizer.lr"), SD_ERR_INVALID, "key=value");
    EXPECT_MSG(sd_experiment_set(&e, "=3"), SD_ERR_INVALID, "key=value");
    EXPECT_MSG(sd_experiment_set(&e, "optimizer.lr.x=3"), SD_ERR_INVALID, "optimizer.lr", "no key 'x'");
    EXPECT_MSG(sd_experiment_set(&e, "cap[2]=3"), SD_ERR_INVALID, "cap", "devices.list only");
    EXPECT_MSG(sd_experiment_set(&e, "devices.list[64].rate=3"), SD_ERR_INVALID, "devices.list", "0..63");
    EXPECT_MSG(sd_experiment_set(&e, "devices.list[x].rate=3"), SD_ERR_INVALID, "devices.list", "malformed index");
    EXPECT_MSG(sd_experiment_set(&e, "devices.list[1].rate=-2"), SD_ERR_INVALID, "devices.list[1].rate", "(0, 1e+09]");
    EXPECT_MSG(sd_experiment_set(&e, "optimizer.nesterov=yes"), SD_ERR_INVALID, "optimizer.nesterov", "true or false");
    EXPECT_MSG(sd_experiment_set(&e, "compression.policy=sometimes"), SD_ERR_INVALID, "compression.policy", "off, always, paper, gain");
    EXPECT_MSG(sd_experiment_set(&e, "modes="), SD_ERR_INVALID, "modes", "empty");
    EXPECT_MSG(sd_experiment_set(&e, "modes=ddp,ddp"), SD_ERR_INVALID, "modes[1]", "twice");
    EXPECT_MSG(sd_experiment_set(&e, "devices.rates=normal_s2"), SD_ERR_INVALID, "devices.rates", "did you mean 'normal_s1'?");
    EXPECT_MSG(sd_experiment_set(&e, "devices.rates={\"uniform\": [1,"), SD_ERR_FORMAT, "devices.rates", "not valid JSON");
    EXPECT_MSG(sd_experiment_set(&e, "cap=0"), SD_ERR_INVALID, "cap", "1..65536");
    EXPECT_MSG(sd_experiment_set(&e, "cap=2.5"), SD_ERR_INVALID, "cap", "an integer");
    EXPECT_MSG(sd_experiment_set(&e, "injection={\"alpha\": 0.5, \"beta\": 2}"), SD_ERR_INVALID, "injection.beta", "[0, 1]");
    EXPECT(same(&e, &before), "failed --set calls changed nothing");
}

/* ---- bad inputs -------------------------------------------------------------------------------- */
static void test_bad_inputs(void) {
    sd_experiment e;
    /* wrong type */
    EXPECT_MSG(load("{\"optimizer\": {\"lr\": \"fast\"}}", &e), SD_ERR_INVALID, "test.json: optimizer.lr", "expected a number",
               "a string");
    EXPECT_MSG(load("{\"batch\": true}", &e), SD_ERR_INVALID, "batch", "an integer in 1..65536", "got true");
    EXPECT_MSG(load("{\"optimizer\": 3}", &e), SD_ERR_INVALID, "optimizer", "expected an object", "lr, momentum");
    EXPECT_MSG(load("{\"name\": 7}", &e), SD_ERR_INVALID, "name", "expected a string");
    EXPECT_MSG(load("{\"devices\": {\"list\": {\"rate\": 3}}}", &e), SD_ERR_INVALID, "devices.list", "expected an array");
    EXPECT_MSG(load("{\"devices\": {\"rates\": 40}}", &e), SD_ERR_INVALID, "devices.rates", "uniform_s1");
    EXPECT_MSG(load("[1, 2]", &e), SD_ERR_INVALID, "(top level)", "expected an object");
    /* unknown keys, with suggestions */
    EXPECT_MSG(load("{\"optimizer\": {\"moemntum\": 0.9}}", &e), SD_ERR_INVALID, "optimizer.moemntum", "unknown key",
               "did you mean 'momentum'?", "allowed keys here: lr, momentum");
    EXPECT_MSG(load("{\"devices\": {\"list\": [{}, {}, {}, {\"rat\": 5}]}}", &e), SD_ERR_INVALID, "devices.list[3].rat",
               "did you mean 'rate'?");
    EXPECT_MSG(load("{\"colour\": 1}", &e), SD_ERR_INVALID, "colour", "unknown key");
    EXPECT_MSG(load("{\"devices\": {\"rates\": {\"poisson\": [1, 2]}}}", &e), SD_ERR_INVALID, "devices.rates.poisson",
               "uniform", "normal");
    /* rates <= 0 */
    EXPECT_MSG(load("{\"devices\": {\"list\": [{}, {}, {}, {\"rate\": 0}]}}", &e), SD_ERR_INVALID, "devices.list[3].rate",
               "(0, 1e+09]");
    EXPECT_MSG(load("{\"devices\": {\"rates\": [50, -1]}}", &e), SD_ERR_INVALID, "devices.rates[1]", "(0, 1e9]");
    EXPECT_MSG(load("{\"devices\": {\"rates\": []}}", &e), SD_ERR_INVALID, "devices.rates", "0 rates");
    EXPECT_MSG(load("{\"devices\": {\"rates\": {\"uniform\": [100, 10]}}}", &e), SD_ERR_INVALID, "devices.rates.uniform", "lo <= hi");
    EXPECT_MSG(load("{\"devices\": {\"rates\": {\"normal\": [-5, 10]}}}", &e), SD_ERR_INVALID, "devices.rates.normal", "mu in (0");
    EXPECT_MSG(load("{\"devices\": {\"rates\": {\"normal\": [5]}}}", &e), SD_ERR_INVALID, "devices.rates.normal", "[mu, sigma]");
    EXPECT_MSG(load("{\"devices\": {\"compute\": {\"samples_per_s\": 0}}}", &e), SD_ERR_INVALID, "devices.compute.samples_per_s");
    EXPECT_MSG(load("{\"devices\": {\"link\": {\"latency_ms\": -1}}}", &e), SD_ERR_INVALID, "devices.link.latency_ms", "[0, ");
    EXPECT_MSG(load("{\"devices\": {\"link\": {\"bandwidth_mbps\": 10, \"bandwidth_bps\": 1e7}}}", &e), SD_ERR_INVALID,
               "devices.link.bandwidth_bps", "bandwidth_mbps", "one of them");
    /* cap < 1 */
    EXPECT_MSG(load("{\"cap\": 0}", &e), SD_ERR_INVALID, "cap", "1..65536");
    /* count vs preset, vs list, vs distribution */
    EXPECT_OK(load("{\"devices\": {\"count\": 4, \"rates\": \"uniform_s1\"}}", &e));
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "devices.count", "is 4", "preset 'uniform_s1'", "has 8 rates");
    EXPECT_MSG(load_resolve("{\"devices\": {\"count\": 2, \"rates\": [1, 2, 3]}}", &e), SD_ERR_INVALID, "devices.count", "has 3 rates");
    EXPECT_MSG(load_resolve("{\"devices\": {\"rates\": {\"uniform\": [1, 2]}}}", &e), SD_ERR_INVALID, "devices.count", "distribution");
    EXPECT_MSG(load_resolve("{\"devices\": {\"count\": 2, \"rates\": {\"uniform\": [1, 2]}, \"list\": [{}, {}, {}]}}", &e),
               SD_ERR_INVALID, "devices.list", "3 entries", "devices.count is 2");
    EXPECT_MSG(load("{\"devices\": {\"count\": 65}}", &e), SD_ERR_INVALID, "devices.count", "0..64");
    /* count vs MPI ranks */
    EXPECT_OK(load_resolve("{\"backend\": \"mpi\"}", &e));
    EXPECT_OK(sd_experiment_check_ranks(&e, 8));
    EXPECT_MSG(sd_experiment_check_ranks(&e, 4), SD_ERR_INVALID, "devices.count", "is 8", "4 ranks");
    EXPECT_OK(load_resolve("{}", &e));
    EXPECT_OK(sd_experiment_check_ranks(&e, 1));
    EXPECT_MSG(sd_experiment_check_ranks(&e, 2), SD_ERR_INVALID, "backend", "local", "2 processes");
    /* modes */
    EXPECT_MSG(load("{\"modes\": []}", &e), SD_ERR_INVALID, "modes", "empty", "ddp, scadles");
    EXPECT_MSG(load("{\"modes\": [\"ddp\", \"ddp\"]}", &e), SD_ERR_INVALID, "modes[1]", "twice");
    EXPECT_MSG(load("{\"modes\": [\"sgd\"]}", &e), SD_ERR_INVALID, "modes[0]", "'sgd'", "allowed: ddp, scadles");
    EXPECT_MSG(load("{\"modes\": \"ddp\"}", &e), SD_ERR_INVALID, "modes", "expected an array");
    /* policies and enums */
    EXPECT_MSG(load("{\"buffer\": {\"policy\": \"truncate\"}}", &e), SD_ERR_INVALID, "buffer.policy", "did you mean 'truncation'?",
               "persistence, truncation, drop-oldest");
    EXPECT_MSG(load("{\"buffer\": {\"full\": \"block\"}}", &e), SD_ERR_INVALID, "buffer.full", "drop-newest, backpressure");
    EXPECT_MSG(load("{\"compression\": {\"policy\": \"on\"}}", &e), SD_ERR_INVALID, "compression.policy", "off, always, paper, gain");
    EXPECT_MSG(load("{\"clock\": \"wall\"}", &e), SD_ERR_INVALID, "clock", "virtual, real");
    EXPECT_MSG(load("{\"backend\": \"nccl\"}", &e), SD_ERR_INVALID, "backend", "local, mpi");
    EXPECT_MSG(load("{\"bn\": \"sync\"}", &e), SD_ERR_INVALID, "bn", "local, average");
    EXPECT_MSG(load("{\"partition\": {\"kind\": \"non-iid\"}}", &e), SD_ERR_INVALID, "partition.kind", "iid, slices, dirichlet");
    EXPECT_MSG(load("{\"devices\": {\"arrival\": \"bursty\"}}", &e), SD_ERR_INVALID, "devices.arrival", "constant, poisson");
    /* optimizer */
    EXPECT_MSG(load("{\"optimizer\": {\"lr\": 0}}", &e), SD_ERR_INVALID, "optimizer.lr", "(0, 100]");
    EXPECT_MSG(load("{\"optimizer\": {\"lr\": -0.1}}", &e), SD_ERR_INVALID, "optimizer.lr", "-0.1");
    EXPECT_MSG(load("{\"optimizer\": {\"momentum\": 1}}", &e), SD_ERR_INVALID, "optimizer.momentum", "[0, 1)");
    EXPECT_MSG(load("{\"optimizer\": {\"schedule\": \"linear\"}}", &e), SD_ERR_INVALID, "optimizer.schedule", "multistep:");
    EXPECT_MSG(load_resolve("{\"optimizer\": {\"schedule\": \"cosine\"}}", &e), SD_ERR_INVALID, "optimizer.schedule", "max_steps");
    EXPECT_MSG(load("{\"optimizer\": {\"schedule\": \"multistep:20,10\"}}", &e), SD_ERR_INVALID, "optimizer.schedule", "increasing");
    /* injection */
    EXPECT_MSG(load("{\"injection\": {\"alpha\": 1.5}}", &e), SD_ERR_INVALID, "injection.alpha", "[0, 1]");
    EXPECT_MSG(load("{\"injection\": {\"beta\": -0.1}}", &e), SD_ERR_INVALID, "injection.beta", "[0, 1]");
    EXPECT_MSG(load_resolve("{\"injection\": {\"alpha\": 0.5}}", &e), SD_ERR_INVALID, "injection.beta", "both");
    /* paths */
    EXPECT_MSG(load("{\"out_dir\": \"runs/../../etc\"}", &e), SD_ERR_INVALID, "out_dir", "'..'");
    EXPECT_MSG(load("{\"out_dir\": \"..\"}", &e), SD_ERR_INVALID, "out_dir", "'..'");
    EXPECT_MSG(load("{\"data_root\": \"data/../..\"}", &e), SD_ERR_INVALID, "data_root", "'..'");
    EXPECT_OK(load("{\"out_dir\": \"runs/..x/a..b/.\"}", &e));
    EXPECT_MSG(load("{\"out_dir\": \"runs/a\\u0000/../x\"}", &e), SD_ERR_FORMAT, "test.json:1:", "NUL");
    EXPECT_MSG(load("{\"name\": \"a/b\"}", &e), SD_ERR_INVALID, "name", "'/'");
    /* model, dataset, partition */
    EXPECT_MSG(load("{\"model\": \"resnet7\"}", &e), SD_ERR_INVALID, "model", "resnet7", "fmnist_cnn");
    EXPECT_MSG(load("{\"dataset\": \"cifar-10\"}", &e), SD_ERR_INVALID, "dataset", "did you mean 'cifar10'?");
    EXPECT_MSG(load_resolve("{\"partition\": {\"kind\": \"slices\", \"classes_per_device\": 11}}", &e), SD_ERR_INVALID,
               "partition.classes_per_device", "10 classes");
    EXPECT_OK(load_resolve("{\"dataset\": \"cifar100\", \"partition\": {\"kind\": \"slices\", \"classes_per_device\": 11}}", &e));
    /* cross-field, seeds, duplicates */
    EXPECT_MSG(load_resolve("{\"buffer\": {\"capacity\": 32}}", &e), SD_ERR_INVALID, "buffer.capacity", "batch 64");
    EXPECT_OK(load_resolve("{\"buffer\": {\"capacity\": 32}, \"modes\": [\"scadles\"]}", &e));
    EXPECT_MSG(load_resolve("{\"compression\": {\"policy\": \"gain\", \"min_ratio\": 0.5, \"max_ratio\": 0.1}}", &e), SD_ERR_INVALID,
               "compression.min_ratio", "max_ratio");
    EXPECT_MSG(load("{\"seeds\": [1, 1]}", &e), SD_ERR_INVALID, "seeds[1]", "twice");
    EXPECT_MSG(load("{\"seeds\": [1.5]}", &e), SD_ERR_INVALID, "seeds[0]", "integer");
    EXPECT_MSG(load("{\"seeds\": []}", &e), SD_ERR_INVALID, "seeds", "1..32");
    EXPECT_MSG(load("{\"cap\": 1, \"cap\": 2}", &e), SD_ERR_INVALID, "cap", "given twice");
    EXPECT_MSG(load("{\"target_accuracy\": 1.2}", &e), SD_ERR_INVALID, "target_accuracy", "[0, 1]");
    EXPECT_MSG(load_resolve("{\"checkpoint_every_steps\": 50, \"clock\": \"real\", \"stream\": {\"source\": \"mqtt\", "
                    "\"mqtt\": {\"host\": \"h\"}}}", &e), SD_ERR_INVALID, "checkpoint_every_steps", "only a stop");
    EXPECT_MSG(load("{\"eval_batch\": 0}", &e), SD_ERR_INVALID, "eval_batch", "1");
    EXPECT_OK(load("{\"target_accuracy\": 0, \"eval_every_steps\": 5, \"train_limit\": 1000, \"augment\": true, "
                   "\"checkpoint_every_steps\": 10}", &e));
    EXPECT(e.target_accuracy == 0 && e.eval_every_steps == 5 && e.train_limit == 1000 && e.augment &&
           e.checkpoint_every_steps == 10 && e.eval_batch == 500, "the new fields load");
    EXPECT_MSG(load("{\"window_s\": 0}", &e), SD_ERR_INVALID, "window_s");
    EXPECT_MSG(load("{\"max_steps\": 1e400}", &e), SD_ERR_INVALID, "max_steps");
    /* malformed JSON: file, line and column */
    EXPECT_MSG(load("{\n  \"name\": \"x\",\n  \"cap\": ,\n}", &e), SD_ERR_FORMAT, "test.json:3:10", "malformed JSON", "near ',");
    EXPECT_MSG(load("{\"cap\": 3} trailing", &e), SD_ERR_FORMAT, "test.json:1:12");
    EXPECT_MSG(load("", &e), SD_ERR_FORMAT, "test.json:1:1");
    /* collectives nccl: GPU compute, mpirun, no token bucket (NCCL moves the data itself) */
    EXPECT_MSG(load("{\"collectives\": \"gloo\"}", &e), SD_ERR_INVALID, "collectives", "host");
    EXPECT_MSG(load_resolve("{\"collectives\": \"nccl\"}", &e), SD_ERR_INVALID, "collectives",
               "compute_backend is cpu", "set compute_backend to cuda");
    EXPECT_MSG(load_resolve("{\"collectives\": \"nccl\", \"compute_backend\": \"cuda\"}", &e), SD_ERR_INVALID,
               "collectives", "mpirun", "set backend to mpi");
    EXPECT_MSG(load_resolve("{\"collectives\": \"nccl\", \"compute_backend\": \"cuda\", \"backend\": \"mpi\", "
                            "\"clock\": \"real\", \"link_emulation\": \"token_bucket\"}", &e),
               SD_ERR_INVALID, "collectives", "link_emulation off");
    EXPECT_OK(load_resolve("{\"collectives\": \"nccl\", \"compute_backend\": \"cuda\", \"backend\": \"mpi\"}", &e));
    EXPECT(e.collectives == SD_EXP_COLL_NCCL, "collectives nccl was read as %d", (int)e.collectives);
    /* values set directly in the struct are caught by resolve */
    sd_experiment_defaults(&e);
    e.cap = 0;
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "cap", "1..65536");
    sd_experiment_defaults(&e);
    e.devices.dev[1].set = SD_EXP_DEV_RATE;
    e.devices.dev[1].rate = -3;
    e.devices.list_len = 2;
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "devices.list[1].rate", "-3");
    sd_experiment_defaults(&e);
    e.modes[1] = SD_EXP_MODE_DDP;
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "modes[1]", "twice");
    sd_experiment_defaults(&e);
    e.n_modes = 0;
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "modes", "one or both");
    sd_experiment_defaults(&e);
    e.optimizer.lr = 0;
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "optimizer.lr");
    sd_experiment_defaults(&e);
    snprintf(e.out_dir, sizeof e.out_dir, "a/../b");
    EXPECT_MSG(sd_experiment_resolve(&e), SD_ERR_INVALID, "out_dir", "'..'");
}

static void test_files(void) {
    char dir[] = "/tmp/sd_exp_XXXXXX", path[256];
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    sd_experiment e, before;
    sd_experiment_defaults(&before);
    e = before;

    /* a missing file */
    snprintf(path, sizeof path, "%s/missing.json", dir);
    EXPECT_MSG(sd_experiment_load_file(path, &e), SD_ERR_IO, "missing.json");
    /* over 1 MiB (valid JSON padded with spaces) */
    snprintf(path, sizeof path, "%s/big.json", dir);
    FILE *f = fopen(path, "wb");
    EXPECT(f != NULL, "create %s", path);
    if (f) {
        fputs("{\"cap\": 3", f);
        for (int i = 0; i < (1 << 20); i++) fputc(' ', f);
        fputs("}", f);
        fclose(f);
    }
    EXPECT_MSG(sd_experiment_load_file(path, &e), SD_ERR_INVALID, "big.json", "1 MiB");
    /* exactly at the limit is fine */
    f = fopen(path, "wb");
    if (f) {
        fputs("{\"cap\": 3", f);
        for (int i = 0; i < (1 << 20) - 10; i++) fputc(' ', f);
        fputs("}", f);
        fclose(f);
    }
    EXPECT_OK(sd_experiment_load_file(path, &e));
    EXPECT(e.cap == 3, "1 MiB file loaded");
    /* malformed, with the file's name and the position */
    snprintf(path, sizeof path, "%s/bad.json", dir);
    f = fopen(path, "wb");
    if (f) {
        fputs("{\n  \"name\": \"x\"\n  \"cap\": 4\n}\n", f);
        fclose(f);
    }
    e = before;
    EXPECT_MSG(sd_experiment_load_file(path, &e), SD_ERR_FORMAT, "bad.json:3:3", "malformed JSON");
    EXPECT(same(&e, &before), "a failed load leaves the struct unchanged");
    /* a NUL byte in the file */
    f = fopen(path, "wb");
    if (f) {
        fwrite("{\"cap\":\0 3}", 1, 11, f);
        fclose(f);
    }
    EXPECT_MSG(sd_experiment_load_file(path, &e), SD_ERR_FORMAT, "bad.json:1:8", "NUL");
    /* schema errors name the file */
    f = fopen(path, "wb");
    if (f) {
        fputs("{\"devices\": {\"list\": [{\"rate\": -1}]}}", f);
        fclose(f);
    }
    EXPECT_MSG(sd_experiment_load_file(path, &e), SD_ERR_INVALID, "bad.json: devices.list[0].rate");
    /* writing into a missing directory */
    snprintf(path, sizeof path, "%s/no/such/dir.json", dir);
    EXPECT_MSG(sd_experiment_write_json(&before, path), SD_ERR_IO, "no/such");

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    EXPECT(system(cmd) == 0, "cleanup");
}

/* Every committed experiment loads, resolves and round-trips, from the source root (where their
 * relative paths, the device profiles under apps/experiments/profiles/ among them, are meant). */
static void test_committed_experiments(void) {
    const char *src = getenv("SD_SOURCE_DIR");
    char dir[512], cwd[1024];
    snprintf(dir, sizeof dir, "%s/apps/experiments", src ? src : ".");
    DIR *d = opendir(dir);
    EXPECT(d != NULL, "cannot open %s (set SD_SOURCE_DIR to the source tree)", dir);
    if (!d) return;
    EXPECT(getcwd(cwd, sizeof cwd) && chdir(src ? src : ".") == 0, "cannot go to the source root %s", src ? src : ".");
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        sd_experiment e;
        EXPECT_OK(sd_experiment_load_file(path, &e));
        EXPECT_OK(sd_experiment_resolve(&e));
        char stem[256];
        snprintf(stem, sizeof stem, "%.*s", (int)(len - 5), de->d_name);
        EXPECT(!strcmp(e.name, stem), "%s: name '%s' matches the file name", de->d_name, e.name);
        char want_dir[300];
        snprintf(want_dir, sizeof want_dir, "runs/%s", stem);
        EXPECT(!strcmp(e.out_dir, want_dir), "%s: out_dir %s", de->d_name, e.out_dir);
        expect_round_trip(&e, de->d_name);
        if (!strcmp(stem, "uniform_s1"))
            EXPECT(e.devices.count == 8 && e.devices.dev[6].rate == 82 && e.n_modes == 2 && e.batch == 64 && e.cap == 256 &&
                       e.window_s == 1 && e.buffer.policy == SD_EXP_BUF_PERSISTENCE && e.target_accuracy == 0.85 &&
                       e.partition.kind == SD_EXP_PART_IID && e.clock == SD_EXP_CLOCK_VIRTUAL &&
                       e.backend == SD_EXP_BACKEND_LOCAL && !strcmp(e.model, "fmnist_cnn"), "uniform_s1.json settings");
        if (!strcmp(stem, "normal_s1")) EXPECT(e.devices.count == 10 && e.devices.dev[0].rate == 92, "normal_s1.json devices");
        if (!strcmp(stem, "slices_injection"))
            EXPECT(e.partition.kind == SD_EXP_PART_SLICES && e.partition.classes_per_device == 2 && e.injection.alpha == 0.5 &&
                       e.injection.beta == 0.5, "slices_injection.json settings");
        if (!strcmp(stem, "compression")) {
            EXPECT(e.devices.dev[9].profile.bandwidth_bps == 10e6 && e.compression.policy == SD_COMPRESS_PAPER &&
                       e.n_modes == 1 && e.modes[0] == SD_EXP_MODE_SCADLES, "compression.json settings");
            /* the dense twin documented in docs/experiments.md: load again and --set; the resolved
             * devices do not depend on compression */
            sd_experiment off;
            EXPECT_OK(sd_experiment_load_file(path, &off));
            EXPECT_OK(sd_experiment_set(&off, "compression.policy=off"));
            EXPECT_OK(sd_experiment_set(&off, "name=compression_off"));
            EXPECT_OK(sd_experiment_resolve(&off));
            EXPECT(off.compression.policy == SD_COMPRESS_OFF && off.devices.dev[9].profile.bandwidth_bps == 10e6 &&
                       !strcmp(off.out_dir, "runs/compression_off"), "dense twin: %s", off.out_dir);
        }
        if (!strcmp(stem, "uniform_s1_profiled"))
            EXPECT(e.devices.count == 8 && e.devices.dev[6].rate == 82 && e.devices.dev[7].set == SD_EXP_DEV_RESOLVED_MEASURED &&
                       !strcmp(e.devices.dev[0].profile.profile, "apps/experiments/profiles/cpu_t1_c8.json") &&
                       e.devices.dev[0].profile.slowdown == 1 && !strcmp(e.model, "fmnist_cnn"),
                   "uniform_s1_profiled.json: the concurrency-8 profile on every device");
        n++;
    }
    closedir(d);
    EXPECT(chdir(cwd) == 0, "cannot go back to %s", cwd);
    EXPECT(n >= 4, "found %d experiment files in %s, want at least 4", n, dir);
}

int main(void) {
    test_defaults();
    test_presets();
    test_arrays();
    test_distributions();
    test_set();
    test_bad_inputs();
    test_files();
    test_committed_experiments();
    return sd_test_finish("test_experiment");
}
