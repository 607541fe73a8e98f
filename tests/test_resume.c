/* test_resume.c: exact resume of distributed runs (local backend, virtual clock, real
 * Fashion-MNIST). A run stopped at step k (--stop-at, or a SIGINT raised in this process while it
 * trains) and resumed from its checkpoint must finish with metrics.jsonl, eval.jsonl, eval.dat,
 * buffer.dat and the final weights (model.safetensors) byte for byte those of an uninterrupted run:
 * scadles with the paper's compression vote, injection and a persistence buffer on a non-IID
 * partition; ddp with Top-k always and a drop-oldest buffer; a two-mode experiment stopped in its
 * second run. A checkpoint of another configuration or device count, or a damaged one, is refused
 * with a message naming what differs; one written before checksum_algo (version 1, FNV-1a) still
 * resumes. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/distributed.h"
#include "engine/experiment.h"
#include "engine/safetensors.h"
#include "engine/signals.h"
#include "tests/harness.h"

#include <xxhash.h>

/* scadles + compression (paper vote) + injection + persistence, 4 devices streaming 2 classes each */
static const char *const SCADLES[] = {"modes=scadles", "compression.policy=paper", "injection.alpha=0.5",
                                      "injection.beta=0.5", "partition.kind=slices",
                                      "partition.classes_per_device=2", "buffer.policy=persistence"};
/* ddp + Top-k every step + a small drop-oldest buffer (drops happen) + the virtual clock's link bucket:
 * its tokens are part of the state (a 5 kbit/s link: each step's 6 KB take 9-10 s of it, 5.3 s between
 * steps refill only part, so the 16,000-byte bucket still holds some at step 4 and runs dry at step 5) */
static const char *const DDP[] = {"modes=ddp", "compression.policy=always", "buffer.policy=drop-oldest",
                                  "buffer.capacity=100", "eval_every_s=10", "link_emulation=token_bucket",
                                  "link_burst_bytes=16000", "devices.link.bandwidth_mbps=0.005"};

static void setup(sd_experiment *e, const char *out, const char *const *extra, int nextra, const char *more) {
    sd_experiment_defaults(e);
    /* a quarter-width CNN keeps the test short under the sanitizers; the math is the same code */
    const char *sets[] = {"devices.rates=40,25,12,30", "max_steps=12", "eval_limit=200", "eval_every_s=3",
                          "target_accuracy=0.99", "threads=1", "width=0.25"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) EXPECT_OK(sd_experiment_set(e, sets[i]));
    char buf[600];
    snprintf(buf, sizeof buf, "out_dir=%s", out);
    EXPECT_OK(sd_experiment_set(e, buf));
    for (int i = 0; i < nextra; i++) EXPECT_OK(sd_experiment_set(e, extra[i]));
    if (more) EXPECT_OK(sd_experiment_set(e, more));
    EXPECT_OK(sd_experiment_resolve(e));
}

/* Every output of run `run` is byte-identical in the two experiment directories. */
static void same_outputs(const char *a, const char *b, const char *run, const char *what) {
    const char *files[] = {"metrics.jsonl", "eval.jsonl", "eval.dat", "buffer.dat", "model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p1[800], p2[800];
        size_t la = 0, lb = 0;
        snprintf(p1, sizeof p1, "%s/%s/%s", a, run, files[i]);
        snprintf(p2, sizeof p2, "%s/%s/%s", b, run, files[i]);
        char *x = sd_test_slurp(p1, &la), *y = sd_test_slurp(p2, &lb);
        EXPECT(x && y && la > 0 && la == lb && !memcmp(x, y, la), "%s: %s/%s differs from the uninterrupted run's "
               "(%zu vs %zu bytes)", what, run, files[i], la, lb);
        free(x);
        free(y);
    }
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* Raises SIGINT in this process once the run's metrics.jsonl has `after` lines (a line per step). */
typedef struct raiser {
    char path[800];
    int after;
    atomic_int done; /* set by the main thread, read by the raiser */
    int raised;      /* read by the main thread after the join */
} raiser;

static void *raise_later(void *arg) {
    raiser *r = arg;
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 120000 && !atomic_load(&r->done); i++) { /* at most about two minutes */
        if (count_lines(r->path) >= r->after) {
            raise(SIGINT);
            r->raised = 1;
            return NULL;
        }
        nanosleep(&ms, NULL);
    }
    return NULL;
}

/* Deletes the numbers of "wall_s" (wall-clock seconds differ between any two runs). */
static void strip_wall(char *s) {
    for (char *v; (v = (char *)sd_test_json_after(s, "wall_s")) != NULL; s = v) {
        size_t k = strspn(v, "0123456789.");
        memmove(v, v + k, strlen(v + k) + 1);
    }
}

static void flip_last_byte(const char *path) {
    FILE *f = fopen(path, "r+b");
    EXPECT(f != NULL, "open %s", path);
    if (!f) return;
    fseek(f, -1, SEEK_END);
    int c = fgetc(f);
    fseek(f, -1, SEEK_END);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

/* XXH3-64 of one tensor as the checkpoint's checksum counts it (docs/checkpoints.md): name, 0xff,
 * dtype, bytes, hashed here in one piece (the engine streams them). The file's checksum is the sum
 * over its tensors and metadata pairs. */
static uint64_t tensor_xxh3(const char *name, unsigned dtype, const unsigned char *b, size_t n) {
    size_t ln = strlen(name);
    unsigned char *m = malloc(ln + 2 + n);
    EXPECT(m != NULL, "malloc");
    if (!m) return 0;
    memcpy(m, name, ln);
    m[ln] = 0xff;
    m[ln + 1] = (unsigned char)dtype;
    memcpy(m + ln + 2, b, n);
    uint64_t h = XXH3_64bits(m, ln + 2 + n);
    free(m);
    return h;
}

/* The same with FNV-1a, byte at a time: the checksum of version-1 checkpoints (no checksum_algo). */
static uint64_t tensor_fnv(const char *name, unsigned dtype, const unsigned char *b, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;
    h = (h ^ dtype) * 1099511628211ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Writes `value` into the first float of tensor `name` of a checkpoint file and mends its checksum,
 * as a run that diverged would have written it: the file is valid, its weights are not. */
static void poison_tensor(const char *path, const char *name, float value) {
    size_t len = 0;
    char *f = sd_test_slurp(path, &len);
    EXPECT(f && len > 8, "read %s", path);
    if (!f || len <= 8) return;
    uint64_t hl = 0;
    memcpy(&hl, f, 8);
    char key[128];
    snprintf(key, sizeof key, "\"%s\":", name);
    char *t = strstr(f + 8, key), *off = t ? strstr(t, "\"data_offsets\":[") : NULL, *sum = strstr(f + 8, "\"checksum\":\"");
    EXPECT(t && off && sum && (size_t)(off - f) < 8 + hl, "%s has %s and a checksum", path, name);
    if (!t || !off || !sum) {
        free(f);
        return;
    }
    unsigned long long b0 = 0, b1 = 0;
    EXPECT(sscanf(off, "\"data_offsets\":[%llu,%llu]", &b0, &b1) == 2 && b1 > b0 + 4 && 8 + hl + b1 <= len, "offsets");
    unsigned char *data = (unsigned char *)f + 8 + hl + b0;
    uint64_t want = strtoull(sum + 12, NULL, 16);
    EXPECT(strstr(f + 8, "\"checksum_algo\":\"xxh3-64-sum\"") != NULL, "%s sums XXH3-64 hashes", path);
    want -= tensor_xxh3(name, SD_ST_F32, data, b1 - b0);
    memcpy(data, &value, sizeof value);
    want += tensor_xxh3(name, SD_ST_F32, data, b1 - b0);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)want);
    memcpy(sum + 12, hex, 16);
    FILE *o = fopen(path, "wb");
    EXPECT(o && fwrite(f, 1, len, o) == len, "write %s", path);
    if (o) fclose(o);
    free(f);
}

/* Rewrites a checkpoint file as a build before checksum_algo wrote it: the same tensors and metadata
 * but version "1", no checksum_algo, and the checksum summed here over FNV-1a hashes. With `algo`,
 * the file keeps its version and checksum but says checksum_algo = algo. */
static void rewrite_checkpoint(const char *path, const char *algo) {
    sd_st_file *f = NULL;
    sd_st_writer *w = NULL;
    EXPECT_OK(sd_st_open(path, &f));
    EXPECT_OK(sd_st_writer_create(&w));
    if (!f || !w) {
        sd_st_close(f);
        sd_st_writer_destroy(w);
        return;
    }
    uint64_t sum = 0;
    for (int i = 0; i < sd_st_count(f); i++) {
        const sd_st_tensor *t = sd_st_tensor_at(f, i);
        EXPECT_OK(sd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data));
        sum += tensor_fnv(t->name, t->dtype, t->data, t->nbytes);
    }
    for (int i = 0; i < sd_st_metadata_count(f); i++) {
        const char *k = NULL, *v = NULL;
        if (!sd_st_metadata_at(f, i, &k, &v) || !strcmp(k, "checksum")) continue;
        if (!strcmp(k, "checksum_algo")) {
            if (algo) EXPECT_OK(sd_st_writer_add_metadata(w, k, algo));
            continue;
        }
        if (!strcmp(k, "version") && !algo) v = "1";
        EXPECT_OK(sd_st_writer_add_metadata(w, k, v));
        sum += tensor_fnv(k, SD_ST_DTYPE_COUNT, (const unsigned char *)v, strlen(v));
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
    EXPECT_OK(sd_st_writer_add_metadata(w, "checksum", algo ? sd_st_metadata(f, "checksum") : hex));
    EXPECT_OK(sd_st_writer_write(w, path));
    sd_st_writer_destroy(w);
    sd_st_close(f);
}

static void copy_file(const char *from, const char *to) {
    size_t n = 0;
    char *d = sd_test_slurp(from, &n);
    FILE *f = fopen(to, "wb");
    EXPECT(d && f && fwrite(d, 1, n, f) == n, "copy %s to %s", from, to);
    if (f) fclose(f);
    free(d);
}

int main(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        return sd_test_skip("test_resume", "Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)");
    char dir[] = "/tmp/sd_resume_XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char full[600], part[600], ck[700], p1[800], p2[800];
    sd_experiment *e = malloc(sizeof *e);
    FILE *quiet = fopen("/dev/null", "w");
    const int ns = (int)(sizeof SCADLES / sizeof SCADLES[0]), nd = (int)(sizeof DDP / sizeof DDP[0]);

    /* 1. scadles: uninterrupted, and stopped at step 5 then resumed */
    snprintf(full, sizeof full, "%s/scadles_full", dir);
    snprintf(part, sizeof part, "%s/scadles_part", dir);
    snprintf(ck, sizeof ck, "%s/checkpoint", part);
    setup(e, full, SCADLES, ns, NULL);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    setup(e, part, SCADLES, ns, NULL);
    sd_run_control ctl = {.stop_at = 5};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &ctl));
    EXPECT(ctl.stopped && ctl.stopped_step == 5 && ctl.stop_signal == 0 && !strcmp(ctl.checkpoint_dir, ck),
           "stop_at 5: stopped %d at step %lld in %s", ctl.stopped, (long long)ctl.stopped_step, ctl.checkpoint_dir);
    snprintf(p1, sizeof p1, "%s/scadles-seed1/metrics.jsonl", part);
    EXPECT(count_lines(p1) == 5, "metrics.jsonl holds the 5 steps done (%d lines)", count_lines(p1));
    snprintf(p2, sizeof p2, "%s/summary.json", part);
    EXPECT(access(p2, F_OK) != 0, "no summary.json before the experiment finishes");
    /* a line written after the checkpoint (a crash later on) is cut away on resume */
    FILE *g = fopen(p1, "a");
    if (g) {
        fputs("{\"step\": 999}\n", g);
        fclose(g);
    }
    sd_run_control rc = {.resume_dir = ck};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &rc));
    EXPECT(!rc.stopped, "the resumed run finishes");
    same_outputs(full, part, "scadles-seed1", "scadles stop_at 5 + resume");
    snprintf(p1, sizeof p1, "%s/summary.json", full);
    char *sa = sd_test_slurp(p1, NULL), *sb = sd_test_slurp(p2, NULL);
    const char *ia = sd_test_json_after(sa, "samples_injected"), *ib = sd_test_json_after(sb, "samples_injected");
    EXPECT(ia && ib && atoi(ia) > 0 && atoi(ia) == atoi(ib), "injection ran and the totals agree");
    const char *ca = sd_test_json_after(sa, "bytes_sent"), *cb = sd_test_json_after(sb, "bytes_sent");
    EXPECT(ca && cb && atol(ca) == atol(cb), "bytes_sent agrees after resume");
    free(sa);
    free(sb);
    snprintf(p1, sizeof p1, "%s/scadles-seed1/metrics.jsonl", full);
    sa = sd_test_slurp(p1, NULL);
    EXPECT(sa && strstr(sa, "\"compression\": true") && strstr(sa, "\"compression\": false"),
           "the paper vote switched compression on and off during the run");
    free(sa);

    /* 1b. checkpoint_every_steps=4: the run writes its checkpoint after steps 4 and 8 and goes on;
     * its outputs are 1's. Resuming from the last one (step 8) finishes the same run again; so does
     * a resume after a kill between the two renames of a switch (only checkpoint.new is left), and
     * after a kill that left an incomplete folder beside a complete checkpoint.old. */
    {
        char every[600], ckn[720], cko[720];
        snprintf(every, sizeof every, "%s/scadles_every", dir);
        snprintf(ck, sizeof ck, "%s/checkpoint", every);
        snprintf(ckn, sizeof ckn, "%s.new", ck);
        snprintf(cko, sizeof cko, "%s.old", ck);
        setup(e, every, SCADLES, ns, "checkpoint_every_steps=4");
        sd_run_control ec = {0};
        EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &ec));
        EXPECT(!ec.stopped, "periodic checkpoints do not stop the run");
        same_outputs(full, every, "scadles-seed1", "scadles with checkpoints every 4 steps");
        snprintf(p1, sizeof p1, "%s/run.safetensors", ck);
        EXPECT(access(p1, F_OK) == 0 && access(ckn, F_OK) != 0 && access(cko, F_OK) != 0,
               "one complete checkpoint folder, nothing beside it");
        sd_run_control er = {.resume_dir = ck};
        EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &er));
        same_outputs(full, every, "scadles-seed1", "resumed from the periodic checkpoint of step 8");
        EXPECT(rename(ck, ckn) == 0, "kill between the renames: only %s is left", ckn);
        EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &er));
        EXPECT(access(p1, F_OK) == 0 && access(ckn, F_OK) != 0, "the complete .new became the checkpoint again");
        same_outputs(full, every, "scadles-seed1", "resumed from a recovered checkpoint.new");
        EXPECT(rename(ck, cko) == 0 && mkdir(ck, 0755) == 0, "an incomplete folder beside checkpoint.old");
        snprintf(p2, sizeof p2, "%s/rank0.safetensors", cko);
        snprintf(p1, sizeof p1, "%s/rank0.safetensors", ck);
        copy_file(p2, p1);
        EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &er));
        snprintf(p1, sizeof p1, "%s/run.safetensors", ck);
        EXPECT(access(p1, F_OK) == 0 && access(cko, F_OK) != 0, "the complete .old became the checkpoint again");
        same_outputs(full, every, "scadles-seed1", "resumed from a recovered checkpoint.old");
        snprintf(ck, sizeof ck, "%s/checkpoint", part); /* 2 works on 1's checkpoint */
    }

    /* 1c. a checkpoint of a build before checksum_algo (version 1, FNV-1a checksums) is still read:
     * 1's checkpoint (step 5) rewritten that way resumes to 1's outputs. A damaged one is refused
     * naming the checksum, and so is a checksum_algo this build does not know. The files are put
     * back for 2. */
    {
        static const char *const names[5] = {"rank0", "rank1", "rank2", "rank3", "run"};
        char files[5][800], keep[5][800];
        for (int i = 0; i < 5; i++) {
            snprintf(files[i], sizeof files[i], "%s/%s.safetensors", ck, names[i]);
            snprintf(keep[i], sizeof keep[i], "%s/%s.v2", ck, names[i]);
            copy_file(files[i], keep[i]);
            rewrite_checkpoint(files[i], NULL);
        }
        char *v1 = sd_test_slurp(files[1], NULL);
        EXPECT(v1 && strstr(v1 + 8, "\"version\":\"1\"") && !strstr(v1 + 8, "checksum_algo"), "rank1 is a version-1 file");
        free(v1);
        setup(e, part, SCADLES, ns, NULL);
        sd_run_control vr = {.resume_dir = ck};
        EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &vr));
        EXPECT(!vr.stopped, "the run resumed from a version-1 checkpoint finishes");
        same_outputs(full, part, "scadles-seed1", "resumed from a version-1 (FNV-1a) checkpoint");
        flip_last_byte(files[1]);
        EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &vr), SD_ERR_FORMAT, "fnv1a-64-sum");
        EXPECT(strstr(sd_last_error(), "rank1.safetensors is damaged") != NULL, "names the file: %s", sd_last_error());
        copy_file(keep[1], files[1]);
        rewrite_checkpoint(files[1], "md5-sum");
        EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &vr), SD_ERR_FORMAT, "checksum_algo 'md5-sum' is not one");
        EXPECT(strstr(sd_last_error(), "rank1.safetensors") && strstr(sd_last_error(), "xxh3-64-sum"),
               "names the file and what this build reads: %s", sd_last_error());
        for (int i = 0; i < 5; i++) {
            copy_file(keep[i], files[i]);
            remove(keep[i]);
        }
    }

    /* 2. refusals, on the checkpoint of 1 (still there after the resume); a refused resume touches
     * no file of the run (config.json, trace.json, metrics.jsonl are compared after the refusals) */
    char cfg_path[800], trace_path[800], met_path[800];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", part);
    snprintf(trace_path, sizeof trace_path, "%s/trace.json", part);
    snprintf(met_path, sizeof met_path, "%s/scadles-seed1/metrics.jsonl", part);
    char *cfg0 = sd_test_slurp(cfg_path, NULL), *trace0 = sd_test_slurp(trace_path, NULL), *met0 = sd_test_slurp(met_path, NULL);
    setup(e, part, SCADLES, ns, "optimizer.lr=0.07");
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_INVALID, "another experiment configuration");
    EXPECT(strstr(sd_last_error(), "lr") != NULL, "the message shows the differing key: %s", sd_last_error());
    setup(e, part, SCADLES, ns, "devices.rates=40,25,12");
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_INVALID, "4 devices but this run has 3");
    snprintf(p1, sizeof p1, "%s/rank2.safetensors", ck);
    snprintf(p2, sizeof p2, "%s/rank2.good", ck);
    copy_file(p1, p2);
    flip_last_byte(p1);
    setup(e, part, SCADLES, ns, NULL);
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_FORMAT, "checksum");
    EXPECT(strstr(sd_last_error(), "rank2.safetensors") != NULL, "names the damaged file: %s", sd_last_error());
    EXPECT(truncate(p1, 100) == 0, "truncate");
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_FORMAT, "damaged");
    copy_file(p2, p1);
    /* #20 item 6: weights that are not finite, in a file whose checksum is valid, are refused where
     * they are loaded, naming the file (not a step later as "lower the learning rate") */
    poison_tensor(p1, "net.params", NAN);
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_FORMAT, "the model's parameters hold NaN or Inf");
    EXPECT(strstr(sd_last_error(), "rank2.safetensors") != NULL, "names the file: %s", sd_last_error());
    copy_file(p2, p1);
    poison_tensor(p1, "optim.momentum", INFINITY);
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_FORMAT, "momentum hold NaN or Inf");
    copy_file(p2, p1);
    snprintf(p1, sizeof p1, "%s/run.safetensors", ck);
    flip_last_byte(p1);
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &rc), SD_ERR_FORMAT, "run.safetensors");
    sd_run_control missing = {.resume_dir = dir};
    EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &missing), SD_ERR_IO, "--resume takes the checkpoint directory");
    {
        char *cfg1 = sd_test_slurp(cfg_path, NULL), *trace1 = sd_test_slurp(trace_path, NULL);
        char *met1 = sd_test_slurp(met_path, NULL);
        EXPECT(cfg0 && cfg1 && !strcmp(cfg0, cfg1) && trace0 && trace1 && !strcmp(trace0, trace1) && met0 && met1 &&
                   !strcmp(met0, met1), "refused resumes left config.json, trace.json and metrics.jsonl as they were");
        free(cfg1), free(trace1), free(met1);
    }
    free(cfg0), free(trace0), free(met0);

    /* 2b. #20 item 6: finite but huge loaded weights (a valid checkpoint) make the first step after
     * the resume non-finite: the message blames the loaded weights, not the learning rate */
    {
        char huge[600], hck[700], hr[800];
        snprintf(huge, sizeof huge, "%s/huge", dir);
        snprintf(hck, sizeof hck, "%s/checkpoint", huge);
        setup(e, huge, SCADLES, ns, NULL);
        sd_run_control hs = {.stop_at = 2};
        EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &hs));
        for (int r = 0; r < 4; r++) {
            snprintf(hr, sizeof hr, "%s/rank%d.safetensors", hck, r);
            poison_tensor(hr, "net.params", 3e38f);
        }
        sd_run_control hc = {.resume_dir = hck};
        EXPECT_FAIL(sd_experiment_run_ctl(e, NULL, quiet, &hc), SD_ERR_NUMERIC, "the first after resuming from");
        EXPECT(strstr(sd_last_error(), "step 3") && strstr(sd_last_error(), "loaded weights"),
               "names metrics.jsonl's step and the loaded weights: %s", sd_last_error());
    }

    /* 3. the signal path: SIGINT raised in this process while the devices train (after step 3);
     * every device finishes its step, they agree on one, checkpoint; the resume matches 1's run */
    EXPECT_OK(sd_signals_install());
    snprintf(part, sizeof part, "%s/scadles_sig", dir);
    snprintf(ck, sizeof ck, "%s/checkpoint", part);
    setup(e, part, SCADLES, ns, NULL);
    raiser r = {.after = 3};
    snprintf(r.path, sizeof r.path, "%s/scadles-seed1/metrics.jsonl", part);
    pthread_t th;
    EXPECT(pthread_create(&th, NULL, raise_later, &r) == 0, "raiser thread");
    sd_run_control sc = {.stop_flag = sd_signals_flag()};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &sc));
    atomic_store(&r.done, 1);
    pthread_join(th, NULL);
    EXPECT(r.raised && sc.stopped && sc.stop_signal == SIGINT && sc.stopped_step >= 3 && sc.stopped_step < 12,
           "SIGINT after step 3: stopped %d by signal %d at step %lld", sc.stopped, sc.stop_signal,
           (long long)sc.stopped_step);
    sd_signals_set(0);
    sd_run_control sr = {.resume_dir = ck, .stop_flag = sd_signals_flag()};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &sr));
    EXPECT(!sr.stopped, "the resumed run finishes");
    same_outputs(full, part, "scadles-seed1", "scadles SIGINT + resume");
    sd_signals_restore();

    /* 4. ddp: stopped twice (steps 4 and 9), resumed each time */
    snprintf(full, sizeof full, "%s/ddp_full", dir);
    snprintf(part, sizeof part, "%s/ddp_part", dir);
    snprintf(ck, sizeof ck, "%s/checkpoint", part);
    setup(e, full, DDP, nd, NULL);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    setup(e, part, DDP, nd, NULL);
    sd_run_control d1 = {.stop_at = 4};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &d1));
    sd_run_control d2 = {.stop_at = 9, .resume_dir = ck};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &d2));
    EXPECT(d1.stopped && d1.stopped_step == 4 && d2.stopped && d2.stopped_step == 9, "ddp stopped at 4 (%lld) and 9 (%lld)",
           (long long)d1.stopped_step, (long long)d2.stopped_step);
    sd_run_control d3 = {.resume_dir = ck};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &d3));
    same_outputs(full, part, "ddp-seed1", "ddp stop_at 4, 9 + resume");

    /* 5. two runs (ddp, then scadles): stopped in the second; the first's summary survives */
    const char *both[] = {"modes=ddp,scadles", "max_steps=6"};
    snprintf(full, sizeof full, "%s/both_full", dir);
    snprintf(part, sizeof part, "%s/both_part", dir);
    snprintf(ck, sizeof ck, "%s/checkpoint", part);
    setup(e, full, both, 2, NULL);
    EXPECT_OK(sd_experiment_run(e, NULL, quiet));
    setup(e, part, both, 2, NULL);
    sd_run_control b2 = {.stop_at = 3};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &b2)); /* ddp stops at 3 */
    sd_run_control b3 = {.stop_at = 3, .resume_dir = ck};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &b3)); /* ddp finishes, scadles stops at 3 */
    EXPECT(b2.stopped && b2.stopped_mode == SD_EXP_MODE_DDP && b3.stopped && b3.stopped_mode == SD_EXP_MODE_SCADLES &&
           b3.stopped_step == 3, "stopped in ddp, then in scadles at step 3");
    sd_run_control b4 = {.resume_dir = ck};
    EXPECT_OK(sd_experiment_run_ctl(e, NULL, quiet, &b4));
    same_outputs(full, part, "ddp-seed1", "two runs: ddp");
    same_outputs(full, part, "scadles-seed1", "two runs: scadles");
    snprintf(p1, sizeof p1, "%s/summary.json", full);
    snprintf(p2, sizeof p2, "%s/summary.json", part);
    sa = sd_test_slurp(p1, NULL);
    sb = sd_test_slurp(p2, NULL);
    strip_wall(sa); /* equal but for the wall-clock seconds */
    strip_wall(sb);
    EXPECT(sa && sb && !strcmp(sa, sb), "summary.json of the resumed experiment equals the uninterrupted one's");
    free(sa);
    free(sb);

    fclose(quiet);
    free(e);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    EXPECT(system(cmd) == 0, "cleanup");
    return sd_test_finish("test_resume");
}
