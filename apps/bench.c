/* bench.c: scadles-bench, CPU training throughput and per-op speed, with the ratios that say how
 * good the numbers are: against PyTorch run on the same machine with the same thread count (the
 * peer, when python3-torch is installed) and against OpenBLAS's own sgemm measured in this run
 * (the bound); and with --profile, the device profile files of the virtual clock: the seconds of
 * one training step per batch size, with K copies training at once (engine/profile.h reads them).
 * Every timed path is validated first (finite loss, finite gradients). */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "base/rng.h"
#include "engine/models.h"
#include "engine/optim.h"
#include "engine/profile.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

#ifndef SD_SOURCE_DIR
#define SD_SOURCE_DIR "."
#endif

typedef struct bench_opts {
    int threads, batch, iters, warmup, reps;
    const char *models;
    bool peer, ops;
    bool peer_thp; /* --peer-thp: the peer's glibc malloc advises huge pages too */
    bool layers;   /* --layers (with --one): the per-layer time table */
    const char *python;
} bench_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-bench [--threads N] [--batch B] [--iters K] [--warmup W] [--reps R] [--models a,b]\n"
            "                     [--no-peer] [--peer-thp] [--no-ops] [--python PATH]\n"
            "  CPU training throughput (forward + backward + SGD update) of each model at batch B: R\n"
            "  repetitions, each a fresh process, ours and PyTorch's taking turns (same model, batch and\n"
            "  threads; needs python3-torch); medians and ranges of samples/s, their ratio, the step's\n"
            "  GFLOP/s against OpenBLAS's sgemm measured in the same run, peak resident memory of both;\n"
            "  then GFLOP/s or GB/s per op. --peer-thp runs the peer with GLIBC_TUNABLES=glibc.malloc.hugetlb=1\n"
            "  (its allocations on transparent huge pages, as ours are: kernels/cpu/context.c).\n"
            "  defaults: --threads 2 --batch 64 --iters 20 --warmup 3 --reps 3\n"
            "            --models fmnist_cnn,resnet20,resnet18,vgg11\n"
            "  scadles-bench --one MODEL [--threads N] [--batch B] [--iters K] [--warmup W] [--layers]: one\n"
            "  repetition of ours in this process, one line of key=value pairs (what the repetitions run);\n"
            "  --layers first prints each layer's forward and backward milliseconds per step, and per kind of layer\n"
            "\n"
            "       scadles-bench --profile --out FILE.json [--models a,b] [--batches 1,8,16,32,64,128,256]\n"
            "                     [--threads T] [--concurrency K] [--iters R] [--warmup W] [--width X] [--note TEXT]\n"
            "  A device profile for the virtual clock (docs/experiments.md, \"Device profile files\"): per model\n"
            "  and batch size, the median seconds of one training step (upload, forward, loss, backward, SGD\n"
            "  update), with min and max, and a fitted overhead + per-sample cost. K copies of the model train\n"
            "  in lockstep, each with its own CPU context of T kernel threads, as K devices of a synchronous\n"
            "  run sharing this machine do: a step lasts from their common start until the last copy is done\n"
            "  (R timed steps after W warm-up, the batch sizes taking turns). --note goes into the file\n"
            "  (say what else ran).\n"
            "  defaults: --threads 1 --concurrency 1 --iters 10 --warmup 2 --width 1 --batches 1,8,16,32,64,128,256\n");
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "scadles-bench: %s needs an integer in [%d, %d], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

/* ---- OpenBLAS sgemm peak (the bound), with the benchmark's thread count ------------------- */
static double sgemm_peak(int n, int threads) {
    openblas_set_num_threads(threads); /* the engine keeps OpenBLAS at 1 thread; the bound uses all */
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n),
          *c = malloc(sizeof(float) * (size_t)n * n);
    if (!a || !b || !c) {
        free(a); free(b); free(c);
        return 0;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    double best = 1e30;
    for (int r = 0; r < 6; r++) {
        double t0 = sd_clock_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = sd_clock_now() - t0;
        if (r > 0 && t < best) best = t;
    }
    free(a); free(b); free(c);
    openblas_set_num_threads(1);
    return 2.0 * n * (double)n * n / best / 1e9;
}

/* The bound is measured in a child process: OpenBLAS's threads spin for a while after a
 * multi-threaded call and would steal the cores from the engine's OpenMP threads timed next. */
static double sgemm_peak_isolated(int n, int threads) {
    int fd[2];
    if (pipe(fd) != 0) return sgemm_peak(n, threads);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return sgemm_peak(n, threads);
    }
    if (pid == 0) {
        close(fd[0]);
        double v = sgemm_peak(n, threads);
        ssize_t w = write(fd[1], &v, sizeof v);
        _exit(w == (ssize_t)sizeof v ? 0 : 1);
    }
    close(fd[1]);
    double v = 0;
    ssize_t r = read(fd[0], &v, sizeof v);
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return r == (ssize_t)sizeof v ? v : 0;
}

/* ---- model throughput: interleaved repetitions of ours and the peer --------------------------
 * Every repetition is a fresh process, ours (`scadles-bench --one MODEL`) and PyTorch's
 * (tests/bench/torch_peer.py) alike, taking turns: ours, peer, ours, peer, ... Each prints one line
 * of key=value pairs: samples/s over the timed steps, and its peak resident memory (VmHWM) with
 * the resident memory it had before the model was built (base), so a noisy run of one side cannot
 * decide a ratio and memory is compared process against process. */
typedef struct rep_result {
    double sps, step_ms, loss0, loss, train_flop;
    long peak_kb, base_kb;
    size_t params;
} rep_result;

static long proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            v = atol(line + n + 1);
            break;
        }
    fclose(f);
    return v;
}

/* --layers: per layer, milliseconds per step forward and backward (sd_net_layer_times), then per
 * kind with its share of the step; what the rows do not cover (loss, SGD update) is the rest. */
static void print_layers(const sd_net *net, const char *model, int iters, double step_s) {
    sd_layer_time t[256];
    const int n = sd_net_layer_times(net, t, 256);
    double kf[16] = {0}, kb[16] = {0}, total = 0;
    printf("%s: per-layer time, ms per step (mean of %d steps)\n  node kind         output          forward  backward\n",
           model, iters);
    for (int i = 0; i < n; i++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", t[i].c, t[i].h, t[i].w);
        if (t[i].fused_into) {
            printf("  %4d %-12s %-14s   (in node %d's pass)\n", t[i].node, sd_layer_kind_name(t[i].kind), shape,
                   t[i].fused_into);
            continue;
        }
        printf("  %4d %-12s %-14s %8.3f  %8.3f\n", t[i].node, sd_layer_kind_name(t[i].kind), shape,
               1e3 * t[i].fwd_s / iters, 1e3 * t[i].bwd_s / iters);
        const int k = (int)t[i].kind & 15;
        kf[k] += t[i].fwd_s, kb[k] += t[i].bwd_s;
        total += t[i].fwd_s + t[i].bwd_s;
    }
    printf("  by kind (ms per step, share of the %.2f ms step):\n", 1e3 * step_s);
    for (int k = 0; k < 16; k++)
        if (kf[k] + kb[k] > 0)
            printf("    %-12s forward %8.3f  backward %8.3f  %5.1f%%\n", sd_layer_kind_name((sd_layer_kind)k),
                   1e3 * kf[k] / iters, 1e3 * kb[k] / iters, 100 * (kf[k] + kb[k]) / iters / step_s);
    printf("    %-12s %.3f ms per step (loss, SGD update, between layers)\n", "rest", 1e3 * (step_s - total / iters));
}

/* One repetition in this process (--one): build, validate, time, print the key=value line. */
static int bench_one(sd_backend *be, const bench_opts *o, const char *model) {
    long base_kb = proc_status_kb("VmRSS");
    sd_model_spec spec = {.name = model, .classes = 10, .width = 1.0f};
    if (!strcmp(model, "fmnist_cnn")) { spec.in_c = 1; spec.in_h = spec.in_w = 28; }
    else { spec.in_c = 3; spec.in_h = spec.in_w = 32; }
    sd_net *net = NULL;
    if (sd_model_build(be, &spec, 1, &net) != SD_OK) {
        fprintf(stderr, "scadles-bench: %s\n", sd_last_error());
        return -1;
    }
    size_t in_count = (size_t)o->batch * spec.in_c * spec.in_h * spec.in_w;
    float *x = malloc(in_count * sizeof(float));
    int32_t *labels = malloc((size_t)o->batch * sizeof(int32_t));
    size_t np = sd_net_param_count(net);
    float *mom = malloc(np * sizeof(float));
    int rc = -1;
    if (!x || !labels || !mom) goto done;
    sd_rng rng;
    sd_rng_seed(&rng, 7);
    for (size_t i = 0; i < in_count; i++) x[i] = (float)sd_rng_normal(&rng);
    for (int i = 0; i < o->batch; i++) labels[i] = (int32_t)sd_rng_below(&rng, 10);
    memset(mom, 0, np * sizeof(float));

    float loss = 0, first_loss = 0;
    double t_start = 0;
    for (int it = 0; it < o->warmup + o->iters; it++) {
        if (it == o->warmup) {
            t_start = sd_clock_now();
            if (o->layers) sd_net_set_profile(net, true);
        }
        sd_sgd_params sp;
        if (sd_net_forward(net, x, o->batch, true) != SD_OK ||
            sd_net_loss(net, labels, 1.0f / (float)o->batch, &loss) != SD_OK || sd_net_backward(net) != SD_OK ||
            sd_sgd_params_make(&sp, np, 0.01f, 0.9f, 0.0f, 5e-4f, 0, it == 0) != SD_OK ||
            be->ops->sgd_update(be->ctx, &sp, sd_net_params(net), sd_net_grads(net), mom) != SD_OK) {
            fprintf(stderr, "scadles-bench: %s step %d: %s\n", model, it, sd_last_error());
            goto done;
        }
        if (it == 0) {
            /* validate before timing: finite loss and gradients */
            first_loss = loss;
            const float *g = sd_net_grads(net);
            for (size_t i = 0; i < np; i++)
                if (!isfinite(g[i])) {
                    fprintf(stderr, "scadles-bench: %s: non-finite gradient at %zu\n", model, i);
                    goto done;
                }
        }
        if (!isfinite(loss)) {
            fprintf(stderr, "scadles-bench: %s: non-finite loss at step %d\n", model, it);
            goto done;
        }
    }
    double dt = (sd_clock_now() - t_start) / o->iters;
    if (o->layers) print_layers(net, model, o->iters, dt);
    double train_flop = 0;
    sd_net_flops(net, NULL, &train_flop);
    printf("samples_per_s=%.1f step_ms=%.3f peak_rss_kb=%ld base_rss_kb=%ld params=%zu loss0=%.4f loss=%.4f "
           "train_flop=%.0f\n",
           o->batch / dt, dt * 1e3, proc_status_kb("VmHWM"), base_kb, np, first_loss, loss, train_flop);
    rc = 0;
done:
    free(x);
    free(labels);
    free(mom);
    sd_net_destroy(net);
    return rc;
}

/* Runs one repetition's command and reads its key=value line; false when it failed (its output,
 * which says why, is passed on to stderr). */
static bool run_rep(const char *cmd, rep_result *r) {
    memset(r, 0, sizeof *r);
    r->sps = -1;
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        if (!strstr(line, "samples_per_s=")) {
            fputs(line, stderr);
            continue;
        }
        for (char *save = NULL, *t = strtok_r(line, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
            char *eq = strchr(t, '=');
            if (!eq) continue;
            *eq++ = '\0';
            if (!strcmp(t, "samples_per_s")) r->sps = atof(eq);
            else if (!strcmp(t, "step_ms")) r->step_ms = atof(eq);
            else if (!strcmp(t, "peak_rss_kb")) r->peak_kb = atol(eq);
            else if (!strcmp(t, "base_rss_kb")) r->base_kb = atol(eq);
            else if (!strcmp(t, "params")) r->params = (size_t)atoll(eq);
            else if (!strcmp(t, "loss0")) r->loss0 = atof(eq);
            else if (!strcmp(t, "loss")) r->loss = atof(eq);
            else if (!strcmp(t, "train_flop")) r->train_flop = atof(eq);
        }
    }
    return pclose(p) == 0 && r->sps > 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
/* median (mean of the middle two for an even count), min and max of v[0..n) */
static void med_range(const double *v, int n, double *med, double *lo, double *hi) {
    double s[64];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    *med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    *lo = s[0];
    *hi = s[n - 1];
}

static int bench_model(const bench_opts *o, const char *self, const char *model, double peak) {
    char ours_cmd[4400], peer_cmd[4400];
    snprintf(ours_cmd, sizeof ours_cmd, "'%s' --one %s --threads %d --batch %d --iters %d --warmup %d", self, model,
             o->threads, o->batch, o->iters, o->warmup);
    snprintf(peer_cmd, sizeof peer_cmd,
             "%s'%s' '%s/tests/bench/torch_peer.py' --model %s --threads %d --batch %d --iters %d --warmup %d 2>&1",
             o->peer_thp ? "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 " : "", o->python, SD_SOURCE_DIR, model, o->threads, o->batch, o->iters, o->warmup);
    double ours[64], theirs[64], ratio[64];
    rep_result first = {0}, r, pr = {0};
    long ours_peak = 0, peer_peak = 0, ours_base = 0, peer_base = 0;
    int n = 0, np = 0;
    bool peer = o->peer;
    for (int rep = 0; rep < o->reps; rep++) {
        if (!run_rep(ours_cmd, &r)) {
            fprintf(stderr, "scadles-bench: %s: repetition %d of ours failed (%s)\n", model, rep + 1, ours_cmd);
            return -1;
        }
        if (n == 0) first = r;
        ours[n++] = r.sps;
        if (r.peak_kb > ours_peak) ours_peak = r.peak_kb, ours_base = r.base_kb;
        if (!peer) continue;
        if (!run_rep(peer_cmd, &pr)) {
            fprintf(stderr, "scadles-bench: %s: the PyTorch peer failed or is missing (install python3-torch or pass "
                            "--python; --no-peer skips it)\n", model);
            peer = false;
            continue;
        }
        ratio[np] = r.sps / pr.sps;
        theirs[np++] = pr.sps;
        if (pr.peak_kb > peer_peak) peer_peak = pr.peak_kb, peer_base = pr.base_kb;
    }
    double med, lo, hi;
    med_range(ours, n, &med, &lo, &hi);
    double gflops = med * first.train_flop / 1e9;
    printf("%-11s %9zu params  %6.1f MFLOP/sample per training step  loss %.3f -> %.3f\n", model, first.params,
           first.train_flop / 1e6, first.loss0, first.loss);
    printf("  ours   %8.1f samples/s [%.1f-%.1f]  %6.1f GFLOP/s = %4.1f%% of the sgemm bound  peak RSS %6.1f MB "
           "(%.1f MB above its base)\n",
           med, lo, hi, gflops, 100 * gflops / peak, ours_peak / 1024.0, (ours_peak - ours_base) / 1024.0);
    if (np > 0) {
        double pmed, plo, phi, rmed, rlo, rhi;
        med_range(theirs, np, &pmed, &plo, &phi);
        med_range(ratio, np, &rmed, &rlo, &rhi);
        printf("  torch  %8.1f samples/s [%.1f-%.1f]  %6.1f GFLOP/s = %4.1f%% of the sgemm bound  peak RSS %6.1f MB "
               "(%.1f MB above its base)\n",
               pmed, plo, phi, pmed * first.train_flop / 1e9, 100 * pmed * first.train_flop / 1e9 / peak,
               peer_peak / 1024.0, (peer_peak - peer_base) / 1024.0);
        printf("  ratio  %.2fx on the medians (each repetition's pair: median %.2fx [%.2f-%.2f]); peak RSS %.2fx of "
               "torch's\n",
               med / pmed, rmed, rlo, rhi, (double)ours_peak / (double)peer_peak);
    }
    return 0;
}

/* ---- per-op speed ------------------------------------------------------------------------ */
typedef struct conv_case { const char *label; int n, c, h, k, kh, s, p; bool dx; } conv_case;

/* Best-of seconds of one forward and one backward (with dx when cc->dx) of shape p. */
static void time_conv(sd_backend *be, const bench_opts *o, const sd_conv2d_params *p, bool want_dx, float *x, float *w,
                      float *y, float *dx, float *dw, double *best_f, double *best_b) {
    sd_kctx *k = be->ctx;
    *best_f = *best_b = 1e30;
    for (int r = 0; r < 2 + o->iters / 4; r++) {
        double t0 = sd_clock_now();
        be->ops->conv2d_fwd(k, p, x, w, NULL, y);
        double t1 = sd_clock_now();
        be->ops->conv2d_bwd(k, p, x, w, y, want_dx ? dx : NULL, dw, NULL);
        double t2 = sd_clock_now();
        if (r > 0) {
            if (t1 - t0 < *best_f) *best_f = t1 - t0;
            if (t2 - t1 < *best_b) *best_b = t2 - t1;
        }
    }
}

static void bench_ops(sd_backend *be, const bench_opts *o, double peak) {
    const conv_case cases[] = {
        {"cnn conv1 1->16 5x5 @28", o->batch, 1, 28, 16, 5, 1, 2, false},
        {"cnn conv2 16->32 5x5 @14", o->batch, 16, 14, 32, 5, 1, 2, true},
        {"r20 stem 3->16 3x3 @32", o->batch, 3, 32, 16, 3, 1, 1, false},
        {"r20 16->16 3x3 @32", o->batch, 16, 32, 16, 3, 1, 1, true},
        {"r20 32->32 3x3 @16", o->batch, 32, 16, 32, 3, 1, 1, true},
        {"r20 64->64 3x3 @8", o->batch, 64, 8, 64, 3, 1, 1, true},
        {"r20 16->32 3x3 s2 @32", o->batch, 16, 32, 32, 3, 2, 1, true},
        {"r18 64->64 3x3 @32", o->batch, 64, 32, 64, 3, 1, 1, true},
        {"r18 256->256 3x3 @8", o->batch, 256, 8, 256, 3, 1, 1, true},
        {"r18 512->512 3x3 @4", o->batch, 512, 4, 512, 3, 1, 1, true},
        {"vgg 512->512 3x3 @2", o->batch, 512, 2, 512, 3, 1, 1, true},
    };
    sd_kctx *k = be->ctx;
    const bool dnnl = k->conv == SD_CPU_CONV_DNNL;
    const sd_cpu_winograd mode = k->winograd;
    printf("\nper-op (batch %d, %d threads; GFLOP/s of the direct sum's FLOPs, and %% of the sgemm bound %.0f GFLOP/s)\n",
           o->batch, o->threads, peak);
    if (dnnl)
        printf("  3x3 stride-1 shapes: direct | Winograd (SCADLES_WINOGRAD=%s runs the one marked *); the forward of\n"
               "  those with <= 16 channels runs our kernels (conv.c) in both columns\n",
               sd_cpu_winograd_name(mode));
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci];
        sd_conv2d_params p;
        if (sd_conv2d_params_make(&p, cc->n, cc->c, cc->h, cc->h, cc->k, cc->kh, cc->kh, cc->s, cc->s, cc->p, cc->p, 0) != SD_OK)
            continue;
        size_t xs = (size_t)p.n * p.c * p.h * p.w, ws = (size_t)p.k * p.c * p.kh * p.kw, ys = (size_t)p.n * p.k * p.oh * p.ow;
        float *x = calloc(xs, 4), *w = calloc(ws, 4), *y = calloc(ys, 4), *dx = calloc(xs, 4), *dw = calloc(ws, 4);
        if (x && w && y && dx && dw) {
            for (size_t i = 0; i < xs; i++) x[i] = (float)(i % 17) * 0.01f;
            for (size_t i = 0; i < ws; i++) w[i] = (float)(i % 13) * 0.01f;
            const double flops = 2.0 * ys * p.c * p.kh * p.kw, bflops = flops * (cc->dx ? 2 : 1);
            const bool both = dnnl && cc->kh == 3 && cc->s == 1;
            double f[2], b[2];
            sd_cpu_kctx_set_winograd(k, both ? SD_CPU_WINO_OFF : mode);
            time_conv(be, o, &p, cc->dx, x, w, y, dx, dw, &f[0], &b[0]);
            printf("  conv %-26s fwd %6.1f GFLOP/s (%3.0f%%)  bwd %6.1f GFLOP/s (%3.0f%%)", cc->label, flops / f[0] / 1e9,
                   100 * flops / f[0] / 1e9 / peak, bflops / b[0] / 1e9, 100 * bflops / b[0] / 1e9 / peak);
            if (both) {
                sd_cpu_kctx_set_winograd(k, SD_CPU_WINO_ON);
                time_conv(be, o, &p, cc->dx, x, w, y, dx, dw, &f[1], &b[1]);
                sd_cpu_kctx_set_winograd(k, mode);
                const bool used = sd_cpu_conv_wants_winograd(k, &p);
                printf(" %s| %s fwd %6.1f (%3.0f%%) bwd %6.1f (%3.0f%%)", used ? " " : "*", used ? "*" : " ",
                       flops / f[1] / 1e9, 100 * flops / f[1] / 1e9 / peak, bflops / b[1] / 1e9,
                       100 * bflops / b[1] / 1e9 / peak);
            }
            printf("\n");
            sd_cpu_kctx_set_winograd(k, mode);
        }
        free(x); free(w); free(y); free(dx); free(dw);
    }
    /* memory-bound ops: GB/s of the bytes they must move */
    int n = o->batch, c = 16, h = 32;
    size_t cnt = (size_t)n * c * h * h;
    float *x = calloc(cnt, 4), *y = calloc(cnt, 4), *dy = calloc(cnt, 4), *dx = calloc(cnt, 4);
    float *g = calloc(c, 4), *b = calloc(c, 4), *rm = calloc(c, 4), *rv = calloc(c, 4), *sm = calloc(c, 4), *si = calloc(c, 4);
    float *dg = calloc(c, 4), *db = calloc(c, 4);
    if (x && y && dy && dx && g && b && rm && rv && sm && si && dg && db) {
        for (size_t i = 0; i < cnt; i++) { x[i] = (float)(i % 19) * 0.1f - 0.9f; dy[i] = (float)(i % 7) * 0.1f; }
        for (int i = 0; i < c; i++) { g[i] = 1; rv[i] = 1; }
        sd_bn_params bp;
        sd_bn_params_make(&bp, n, c, h, h, 1e-5f, 0.1f);
        double bf = 1e30, bb = 1e30, rf = 1e30, rb = 1e30;
        for (int r = 0; r < 2 + o->iters / 4; r++) {
            double t0 = sd_clock_now();
            be->ops->bn_fwd_train(k, &bp, x, g, b, y, rm, rv, sm, si);
            double t1 = sd_clock_now();
            be->ops->bn_bwd(k, &bp, x, g, sm, si, dy, dx, dg, db);
            double t2 = sd_clock_now();
            be->ops->relu_fwd(k, cnt, x, y);
            double t3 = sd_clock_now();
            be->ops->relu_bwd(k, cnt, y, dy, dx);
            double t4 = sd_clock_now();
            if (r > 0) {
                if (t1 - t0 < bf) bf = t1 - t0;
                if (t2 - t1 < bb) bb = t2 - t1;
                if (t3 - t2 < rf) rf = t3 - t2;
                if (t4 - t3 < rb) rb = t4 - t3;
            }
        }
        double mb = cnt * 4.0 / 1e9;
        printf("  batchnorm [%d,%d,%d,%d]   fwd %6.1f GB/s  bwd %6.1f GB/s (bytes of x,y / x,dy,dx)\n", n, c, h, h,
               2 * mb / bf, 3 * mb / bb);
        printf("  relu      [%d,%d,%d,%d]   fwd %6.1f GB/s  bwd %6.1f GB/s\n", n, c, h, h, 2 * mb / rf, 3 * mb / rb);
    }
    free(x); free(y); free(dy); free(dx); free(g); free(b); free(rm); free(rv); free(sm); free(si); free(dg); free(db);
}

/* ---- device profiles (--profile): seconds of one training step per batch size ------------------
 * K model copies train in lockstep, each in its own thread with its own CPU context of T kernel
 * threads, as K devices of a synchronous run share this machine (the local backend's device
 * threads, or K ranks of an mpirun): every repetition starts all K steps together (a barrier: the
 * previous step's allreduce) and lasts until the last copy has finished (the next barrier), so
 * the time charged is what each device waits before its gradients can be summed while the others
 * train beside it. The file (docs/experiments.md, "Device profile files") is what
 * engine/profile.h reads. */
#define PROF_MAX_BATCHES SD_PROFILE_MAX_POINTS

typedef struct prof_opts {
    int threads, concurrency, warmup, iters;
    double width;
    int batches[PROF_MAX_BATCHES], nb;
    const char *out, *note;
    char command[1024]; /* the command line, for the file */
} prof_opts;

typedef struct prof_shared {
    const prof_opts *o;
    sd_model_spec spec;
    pthread_barrier_t barrier; /* every step of every copy starts together */
    atomic_int failed;
} prof_shared;

typedef struct prof_worker {
    prof_shared *sh;
    int id;
    double *t0, *t1;    /* [batch index][repetition]: when this copy's timed steps started and ended */
    size_t params;
    float first_loss, last_loss;
    char err[600];
} prof_worker;

typedef struct prof_copy {
    sd_backend be;
    sd_net *net;
    sd_optimizer opt;
    float *hx, *dx;
    int32_t *hy, *dy;
    bool have_be, have_opt;
} prof_copy;

static void prof_copy_free(prof_copy *c) {
    if (c->have_be) {
        if (c->dx) c->be.ops->free(c->be.ctx, c->dx);
        if (c->dy) c->be.ops->free(c->be.ctx, c->dy);
    }
    if (c->have_opt) sd_optim_free(&c->opt);
    sd_net_destroy(c->net);
    if (c->have_be) sd_backend_destroy(&c->be);
    free(c->hx);
    free(c->hy);
}

/* One copy as a device of the trainer has it: the model, SGD with momentum, a batch of random
 * images on the backend. */
static sd_status prof_copy_make(const prof_shared *sh, int id, prof_copy *c) {
    const sd_model_spec *sp = &sh->spec;
    const int bmax = sh->o->batches[sh->o->nb - 1];
    const size_t img = (size_t)sp->in_c * sp->in_h * sp->in_w;
    TRY(sd_backend_cpu_create(&c->be, sh->o->threads));
    c->have_be = true;
    TRY(sd_model_build(&c->be, sp, 1, &c->net));
    sd_lr_schedule sched;
    TRY(sd_lr_schedule_parse("constant", 0.05f, 1000000, &sched));
    sd_optim_config oc = {.momentum = 0.9f, .weight_decay = 5e-4f};
    TRY(sd_optim_init(&c->opt, c->net, &oc, &sched));
    c->have_opt = true;
    c->hx = malloc((size_t)bmax * img * sizeof(float));
    c->hy = malloc((size_t)bmax * sizeof(int32_t));
    if (!c->hx || !c->hy) return SD_FAIL(SD_ERR_OOM, "%s: a batch of %d", sp->name, bmax);
    TRY(c->be.ops->alloc(c->be.ctx, (size_t)bmax * img * sizeof(float), (void **)&c->dx));
    TRY(c->be.ops->alloc(c->be.ctx, (size_t)bmax * sizeof(int32_t), (void **)&c->dy));
    sd_rng rng;
    sd_rng_seed(&rng, 7 + (uint64_t)id);
    for (size_t i = 0; i < (size_t)bmax * img; i++) c->hx[i] = (float)sd_rng_normal(&rng);
    for (int i = 0; i < bmax; i++) c->hy[i] = (int32_t)sd_rng_below(&rng, (uint64_t)sp->classes);
    return SD_OK;
}

/* One training step as engine/step/ runs it on the CPU backend: the batch up, forward, loss,
 * backward, the SGD update. */
static sd_status prof_step(prof_copy *c, const sd_model_spec *sp, int b, float *loss) {
    const size_t img = (size_t)sp->in_c * sp->in_h * sp->in_w;
    TRY(c->be.ops->upload(c->be.ctx, c->dx, c->hx, (size_t)b * img * sizeof(float)));
    TRY(c->be.ops->upload(c->be.ctx, c->dy, c->hy, (size_t)b * sizeof(int32_t)));
    TRY(sd_net_forward(c->net, c->dx, b, true));
    TRY(sd_net_loss(c->net, c->dy, 1.0f / (float)b, loss));
    TRY(sd_net_backward(c->net));
    return sd_optim_step(&c->opt, c->net, 1.0f);
}

/* Validates before timing: a finite loss and finite gradients. */
static sd_status prof_validate(prof_copy *c, const sd_model_spec *sp, float loss) {
    if (!isfinite(loss)) return SD_FAIL(SD_ERR_NUMERIC, "%s: non-finite loss on the first step", sp->name);
    const float *g = sd_net_grads(c->net);
    for (size_t i = 0; i < sd_net_param_count(c->net); i++)
        if (!isfinite(g[i])) return SD_FAIL(SD_ERR_NUMERIC, "%s: non-finite gradient %zu on the first step", sp->name, i);
    return SD_OK;
}

static void *prof_worker_main(void *arg) {
    prof_worker *w = arg;
    prof_shared *sh = w->sh;
    const prof_opts *o = sh->o;
    prof_copy c;
    memset(&c, 0, sizeof c);
    sd_status st = prof_copy_make(sh, w->id, &c);
    if (st == SD_OK) w->params = sd_net_param_count(c.net);
    /* the batch sizes take turns, one step each, so that a burst of other work on the machine falls
     * on every size alike instead of on all the repetitions of one (the table stays monotone) */
    float loss = 0;
    for (int it = 0; it < o->warmup + o->iters; it++) {
        for (int bi = 0; bi < o->nb; bi++) {
            const int b = o->batches[bi];
            if (st != SD_OK && !atomic_exchange(&sh->failed, 1)) snprintf(w->err, sizeof w->err, "%s", sd_last_error_brief());
            /* every copy passes every barrier, failed or not (the others wait for K) */
            pthread_barrier_wait(&sh->barrier);
            if (st != SD_OK || atomic_load(&sh->failed)) continue;
            double t0 = sd_clock_now();
            st = prof_step(&c, &sh->spec, b, &loss);
            double t1 = sd_clock_now();
            if (st == SD_OK && bi == 0 && it == 0) {
                st = prof_validate(&c, &sh->spec, loss);
                w->first_loss = loss;
            }
            if (st == SD_OK && !isfinite(loss)) st = SD_FAIL(SD_ERR_NUMERIC, "%s: non-finite loss at batch %d", sh->spec.name, b);
            if (it >= o->warmup) {
                w->t0[(size_t)bi * o->iters + (it - o->warmup)] = t0;
                w->t1[(size_t)bi * o->iters + (it - o->warmup)] = t1;
            }
        }
    }
    w->last_loss = loss;
    if (st != SD_OK && !atomic_exchange(&sh->failed, 1)) snprintf(w->err, sizeof w->err, "%s", sd_last_error_brief());
    prof_copy_free(&c);
    return NULL;
}

typedef struct prof_point { double batch, median, min, max, copy_median; int n; } prof_point;

/* Least squares of seconds = overhead + per_sample x batch over the medians. */
static void prof_fit(const prof_point *p, int n, double *overhead, double *per_sample) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) sx += p[i].batch, sy += p[i].median, sxx += p[i].batch * p[i].batch, sxy += p[i].batch * p[i].median;
    double d = n * sxx - sx * sx;
    *per_sample = n > 1 && d > 0 ? (n * sxy - sx * sy) / d : (n == 1 ? p[0].median / p[0].batch : 0);
    *overhead = n > 1 && d > 0 ? (sy - *per_sample * sx) / n : 0;
    if (*per_sample < 0) { /* times that do not grow with the batch (refused by the reader anyway) */
        *per_sample = 0;
        *overhead = sy / n;
    }
}

static bool add_rawf(cJSON *o, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool add_rawf(cJSON *o, const char *key, const char *fmt, ...) {
    char b[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    cJSON *x = cJSON_CreateRaw(b);
    if (x && (key ? cJSON_AddItemToObject(o, key, x) : cJSON_AddItemToArray(o, x))) return true;
    cJSON_Delete(x);
    return false;
}

static bool add_str(cJSON *o, const char *key, const char *v) {
    cJSON *x = cJSON_CreateString(v);
    if (x && cJSON_AddItemToObject(o, key, x)) return true;
    cJSON_Delete(x);
    return false;
}

/* Measures one model; adds its entry to `models`. */
static int prof_model(const prof_opts *o, const char *model, cJSON *models) {
    prof_shared sh;
    memset(&sh, 0, sizeof sh);
    sh.o = o;
    sh.spec = (sd_model_spec){.name = model, .classes = 10, .width = (float)o->width};
    if (!strcmp(model, "fmnist_cnn")) sh.spec.in_c = 1, sh.spec.in_h = sh.spec.in_w = 28;
    else sh.spec.in_c = 3, sh.spec.in_h = sh.spec.in_w = 32;
    const int K = o->concurrency;
    prof_worker *w = calloc((size_t)K, sizeof *w);
    pthread_t *th = calloc((size_t)K, sizeof *th);
    double *all = malloc(sizeof(double) * (size_t)K * o->iters), *span = malloc(sizeof(double) * (size_t)o->iters);
    if (!w || !th || !all || !span || pthread_barrier_init(&sh.barrier, NULL, (unsigned)K) != 0) {
        fprintf(stderr, "scadles-bench: %s: no memory for %d copies\n", model, K);
        free(w), free(th), free(all), free(span);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < K; i++) {
        w[i] = (prof_worker){.sh = &sh, .id = i, .t0 = calloc((size_t)o->nb * o->iters, sizeof(double)),
                             .t1 = calloc((size_t)o->nb * o->iters, sizeof(double))};
        if (!w[i].t0 || !w[i].t1) rc = 1;
    }
    if (rc) {
        fprintf(stderr, "scadles-bench: %s: no memory for the step times\n", model);
        exit(1); /* (an app: nothing to clean up that the exit does not) */
    }
    for (int i = 0; i < K; i++)
        if (pthread_create(&th[i], NULL, prof_worker_main, &w[i]) != 0) {
            /* the copies that started wait for K at the barrier: nothing to do but leave */
            fprintf(stderr, "scadles-bench: %s: cannot start copy %d of %d (threads); lower --concurrency\n", model, i, K);
            exit(1);
        }
    for (int i = 0; i < K; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&sh.barrier);
    for (int i = 0; i < K && rc == 0; i++)
        if (w[i].err[0]) {
            fprintf(stderr, "scadles-bench: %s (copy %d): %s\n", model, i, w[i].err);
            rc = 1;
        }
    if (rc == 0 && atomic_load(&sh.failed)) rc = 1;
    prof_point pts[PROF_MAX_BATCHES];
    cJSON *m = rc == 0 ? cJSON_CreateObject() : NULL, *tab = NULL, *fit = NULL;
    bool ok = m != NULL;
    if (ok) {
        printf("%-11s %8zu params, %d cop%s x %d kernel thread(s) in lockstep, %d timed steps after %d warm-up; loss %.3f -> "
               "%.3f\n", model, w[0].params, K, K == 1 ? "y" : "ies", o->threads, o->iters, o->warmup, w[0].first_loss,
               w[0].last_loss);
        printf("  %7s %12s %12s %12s %14s %12s\n", "batch", "median ms", "min ms", "max ms", "one copy ms", "samples/s");
        for (int bi = 0; bi < o->nb; bi++) {
            /* a repetition lasts from the first copy's start to the last copy's end */
            int n = 0;
            for (int r = 0; r < o->iters; r++) {
                double a = INFINITY, z = -INFINITY;
                for (int i = 0; i < K; i++) {
                    const size_t at = (size_t)bi * o->iters + r;
                    if (w[i].t0[at] < a) a = w[i].t0[at];
                    if (w[i].t1[at] > z) z = w[i].t1[at];
                    all[n++] = w[i].t1[at] - w[i].t0[at];
                }
                span[r] = z - a;
            }
            qsort(all, (size_t)n, sizeof *all, cmp_double);
            qsort(span, (size_t)o->iters, sizeof *span, cmp_double);
            const int R = o->iters;
            double med = R % 2 ? span[R / 2] : 0.5 * (span[R / 2 - 1] + span[R / 2]);
            double cmed = n % 2 ? all[n / 2] : 0.5 * (all[n / 2 - 1] + all[n / 2]);
            pts[bi] = (prof_point){.batch = o->batches[bi], .median = med, .min = span[0], .max = span[R - 1], .copy_median = cmed,
                                   .n = R};
            printf("  %7d %12.3f %12.3f %12.3f %14.3f %12.1f\n", o->batches[bi], med * 1e3, span[0] * 1e3, span[R - 1] * 1e3,
                   cmed * 1e3, o->batches[bi] / med);
        }
        double ov, ps;
        prof_fit(pts, o->nb, &ov, &ps);
        printf("  fit: %.3f ms + %.4f ms per sample (%.1f samples/s)\n", ov * 1e3, ps * 1e3, ps > 0 ? 1 / ps : 0);
        ok = cJSON_AddItemToObject(models, model, m);
        if (!ok) cJSON_Delete(m);
        ok = ok && add_rawf(m, "width", "%.17g", o->width) && add_rawf(m, "params", "%zu", w[0].params);
        cJSON *in = ok ? cJSON_CreateArray() : NULL;
        ok = ok && in && cJSON_AddItemToObject(m, "input", in);
        ok = ok && add_rawf(in, NULL, "%d", sh.spec.in_c) && add_rawf(in, NULL, "%d", sh.spec.in_h) &&
             add_rawf(in, NULL, "%d", sh.spec.in_w) && add_rawf(m, "classes", "%d", sh.spec.classes);
        ok = ok && (tab = cJSON_CreateArray()) && cJSON_AddItemToObject(m, "table", tab);
        for (int bi = 0; ok && bi < o->nb; bi++) {
            cJSON *pt = cJSON_CreateObject();
            ok = pt && cJSON_AddItemToArray(tab, pt);
            ok = ok && add_rawf(pt, "batch", "%d", o->batches[bi]) && add_rawf(pt, "seconds", "%.6e", pts[bi].median) &&
                 add_rawf(pt, "min_s", "%.6e", pts[bi].min) && add_rawf(pt, "max_s", "%.6e", pts[bi].max) &&
                 add_rawf(pt, "copy_median_s", "%.6e", pts[bi].copy_median) && add_rawf(pt, "steps", "%d", pts[bi].n);
        }
        ok = ok && (fit = cJSON_CreateObject()) && cJSON_AddItemToObject(m, "fit", fit);
        ok = ok && add_rawf(fit, "overhead_s", "%.6e", ov) && add_rawf(fit, "per_sample_s", "%.6e", ps) &&
             add_rawf(fit, "samples_per_s", "%.1f", ps > 0 ? 1 / ps : 0);
        if (!ok) {
            fprintf(stderr, "scadles-bench: %s: no memory for the profile\n", model);
            rc = 1;
        }
        for (int bi = 1; rc == 0 && bi < o->nb; bi++)
            if (pts[bi].median < pts[bi - 1].median) {
                fprintf(stderr, "scadles-bench: %s: the median at batch %d (%.3f ms) is below the one at batch %d (%.3f ms): the "
                        "machine was too noisy for this table (scadles-train refuses a table whose times decrease); rerun "
                        "with more --iters, or on a quieter machine\n", model, o->batches[bi], pts[bi].median * 1e3,
                        o->batches[bi - 1], pts[bi - 1].median * 1e3);
                rc = 3;
            }
    }
    for (int i = 0; i < K; i++) free(w[i].t0), free(w[i].t1);
    free(w), free(th), free(all), free(span);
    return rc;
}

/* What the file says of the machine it was measured on. */
static void read_first_line(const char *path, const char *prefix, char *out, size_t n) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (prefix && strncmp(line, prefix, strlen(prefix))) continue;
        const char *v = line;
        if (prefix) {
            v = strchr(line, ':');
            v = v ? v + 1 : line;
            while (*v == ' ' || *v == '\t') v++;
        }
        size_t k = strcspn(v, "\n");
        if (k >= n) k = n - 1;
        memcpy(out, v, k);
        out[k] = '\0';
        break;
    }
    fclose(f);
}

/* /proc/loadavg's first three fields: the 1, 5 and 15 minute load averages */
static void load_three(char *s) {
    char *p = s;
    for (int k = 0; k < 3 && p; k++) p = strchr(p + (k > 0), ' ');
    if (p) *p = '\0';
}

static cJSON *prof_machine(void) {
    cJSON *m = cJSON_CreateObject();
    if (!m) return NULL;
    char cpu[256], load[128], os[300];
    read_first_line("/proc/cpuinfo", "model name", cpu, sizeof cpu);
    read_first_line("/proc/loadavg", NULL, load, sizeof load);
    load_three(load);
    struct utsname u;
    if (uname(&u) == 0) snprintf(os, sizeof os, "%s %s %s", u.sysname, u.release, u.machine);
    else snprintf(os, sizeof os, "unknown");
    long cores = sysconf(_SC_NPROCESSORS_ONLN), pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    bool ok = add_str(m, "cpu", cpu[0] ? cpu : "unknown") && add_rawf(m, "cores_online", "%ld", cores) &&
              add_rawf(m, "memory_gib", "%.1f", pages > 0 && psz > 0 ? (double)pages * psz / (1 << 30) : 0) &&
              add_str(m, "os", os) && add_str(m, "openblas_core", openblas_get_corename()) &&
              add_str(m, "loadavg_before", load);
    if (ok) return m;
    cJSON_Delete(m);
    return NULL;
}

static int run_profile(const prof_opts *o, const char *models_list) {
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", o->out) >= (int)sizeof tmp) {
        fprintf(stderr, "scadles-bench: --out: the path is too long\n");
        return 2;
    }
    FILE *f = fopen(tmp, "w"); /* before measuring: a path that cannot be written fails now */
    if (!f) {
        fprintf(stderr, "scadles-bench: --out %s: cannot create %s: %s; give a writable path\n", o->out, tmp, strerror(errno));
        return 2;
    }
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON *root = cJSON_CreateObject(), *models = NULL, *machine = prof_machine();
    bool ok = root && machine && cJSON_AddItemToObject(root, "format", cJSON_CreateString(SD_PROFILE_FORMAT)) &&
              add_rawf(root, "version", "%d", SD_PROFILE_VERSION) &&
              add_str(root, "what", "seconds of one training step (batch upload, forward, loss, backward, SGD update with "
                      "momentum 0.9 and weight decay 5e-4) on the CPU backend, per batch size, with `concurrency` copies "
                      "of the model stepping in lockstep (each step starts together), the batch sizes taking turns one "
                      "step each: seconds, min_s, max_s: the median, "
                      "fastest and slowest over the timed steps of the time from the first copy's start to the last "
                      "copy's end; copy_median_s: the median of each copy's own step time; fit: least squares of seconds "
                      "against the batch") &&
              add_str(root, "measured_at", when) && add_str(root, "command", o->command) &&
              add_str(root, "note", o->note ? o->note : "");
    if (ok) ok = cJSON_AddItemToObject(root, "machine", machine);
    else cJSON_Delete(machine);
    ok = ok && add_rawf(root, "threads", "%d", o->threads) && add_rawf(root, "concurrency", "%d", o->concurrency) &&
         add_rawf(root, "warmup", "%d", o->warmup) && add_rawf(root, "iters", "%d", o->iters) &&
         (models = cJSON_CreateObject()) && cJSON_AddItemToObject(root, "models", models);
    if (!ok) {
        fprintf(stderr, "scadles-bench: no memory for the profile\n");
        cJSON_Delete(root);
        fclose(f);
        remove(tmp);
        return 1;
    }
    printf("scadles-bench --profile: %d cop%s of each model training in lockstep, %d kernel thread(s) each, batches", o->concurrency,
           o->concurrency == 1 ? "y" : "ies", o->threads);
    for (int i = 0; i < o->nb; i++) printf("%s%d", i ? "," : " ", o->batches[i]);
    printf("\n");
    fflush(stdout);
    char list[256];
    snprintf(list, sizeof list, "%s", models_list);
    int rc = 0;
    for (char *save = NULL, *m = strtok_r(list, ",", &save); m && rc != 1; m = strtok_r(NULL, ",", &save)) {
        int r = prof_model(o, m, models);
        if (r > rc) rc = r;
        fflush(stdout);
    }
    char load[128];
    read_first_line("/proc/loadavg", NULL, load, sizeof load);
    load_three(load);
    add_str(cJSON_GetObjectItem(root, "machine"), "loadavg_after", load);
    char *text = rc != 1 ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    bool written = text && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    free(text);
    if (fclose(f) != 0) written = false;
    if (rc == 1 || !written || rename(tmp, o->out) != 0) {
        if (rc != 1) fprintf(stderr, "scadles-bench: cannot write %s: %s\n", o->out, strerror(errno));
        remove(tmp);
        return 1;
    }
    printf("wrote %s%s\n", o->out, rc ? " (but see the message above: scadles-train will refuse it)" : "");
    return rc;
}

/* "1,8,16": increasing integers in 1..65536, at most PROF_MAX_BATCHES. */
static int parse_batches(const char *v, prof_opts *o) {
    o->nb = 0;
    const char *p = v;
    while (p && *p) {
        char *end = NULL;
        long x = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || x < 1 || x > 65536 || o->nb == PROF_MAX_BATCHES ||
            (o->nb && x <= o->batches[o->nb - 1])) {
            fprintf(stderr, "scadles-bench: --batches needs up to %d increasing integers in 1..65536 separated by commas, "
                    "e.g. 1,8,16,32,64,128,256; got '%s'\n", PROF_MAX_BATCHES, v);
            return -1;
        }
        o->batches[o->nb++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (o->nb == 0) {
        fprintf(stderr, "scadles-bench: --batches is empty; e.g. 1,8,16,32,64,128,256\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_opts o = {.threads = 2, .batch = 64, .iters = 20, .warmup = 3, .reps = 3,
                    .models = "fmnist_cnn,resnet20,resnet18,vgg11",
                    .peer = true, .ops = true, .python = "/usr/bin/python3"};
    prof_opts po = {.threads = 1, .concurrency = 1, .warmup = 2, .iters = 10, .width = 1,
                    .batches = {1, 8, 16, 32, 64, 128, 256}, .nb = 7};
    static const sd_cli_option options[] = {
        {"--threads", true, NULL}, {"--batch", true, NULL}, {"--iters", true, NULL}, {"--warmup", true, NULL},
        {"--models", true, "a list like fmnist_cnn,resnet20"}, {"--python", true, NULL}, {"--no-peer", false, NULL},
        {"--peer-thp", false, NULL}, {"--layers", false, NULL},
        {"--no-ops", false, NULL}, {"--profile", false, NULL}, {"--out", true, "the device profile to write, e.g. profile.json"},
        {"--batches", true, "a list like 1,8,16,32,64,128,256"}, {"--concurrency", true, NULL}, {"--width", true, NULL},
        {"--note", true, "a text for the file, e.g. what else ran on the machine"}, {"--reps", true, NULL},
        {"--one", true, "a model name, e.g. resnet20"}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench", usage, options, argc, argv);
    const bool profile = sd_cli_count(&cli, "--profile") > 0;
    const char *one = NULL;
    for (int i = 0; i < cli.n; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        int bad = 0;
        const bool only_profile = !strcmp(a, "--out") || !strcmp(a, "--batches") || !strcmp(a, "--concurrency") ||
                                  !strcmp(a, "--width") || !strcmp(a, "--note");
        const bool only_speed = !strcmp(a, "--batch") || !strcmp(a, "--python") || !strcmp(a, "--no-peer") ||
                                !strcmp(a, "--peer-thp") || !strcmp(a, "--layers") || !strcmp(a, "--no-ops") || !strcmp(a, "--reps") || !strcmp(a, "--one");
        if ((only_profile && !profile) || (only_speed && profile)) {
            fprintf(stderr, "scadles-bench: %s %s; see --help\n", a,
                    profile ? "does not apply to --profile (it times every size of --batches)" : "applies to --profile only");
            bad = 1;
        }
        else if (!strcmp(a, "--threads")) bad = parse_int(a, v, 1, 1024, profile ? &po.threads : &o.threads);
        else if (!strcmp(a, "--batch")) bad = parse_int(a, v, 1, 65536, &o.batch);
        else if (!strcmp(a, "--iters")) bad = parse_int(a, v, 1, 100000, profile ? &po.iters : &o.iters);
        else if (!strcmp(a, "--warmup")) bad = parse_int(a, v, 0, 100000, profile ? &po.warmup : &o.warmup);
        else if (!strcmp(a, "--models")) o.models = v;
        else if (!strcmp(a, "--reps")) bad = parse_int(a, v, 1, 64, &o.reps);
        else if (!strcmp(a, "--one")) o.models = one = v;
        else if (!strcmp(a, "--python")) o.python = v;
        else if (!strcmp(a, "--no-peer")) o.peer = false;
        else if (!strcmp(a, "--peer-thp")) o.peer_thp = true;
        else if (!strcmp(a, "--layers")) o.layers = true;
        else if (!strcmp(a, "--no-ops")) o.ops = false;
        else if (!strcmp(a, "--out")) po.out = v;
        else if (!strcmp(a, "--note")) po.note = v;
        else if (!strcmp(a, "--batches")) bad = parse_batches(v, &po);
        else if (!strcmp(a, "--concurrency")) bad = parse_int(a, v, 1, 256, &po.concurrency);
        else if (!strcmp(a, "--width")) {
            char *end = NULL;
            po.width = strtod(v, &end);
            if (!*v || *end || !(po.width > 0 && po.width <= 16)) {
                fprintf(stderr, "scadles-bench: --width needs a number in (0, 16], got '%s'\n", v);
                bad = 1;
            }
        }
        if (bad) {
            sd_cli_free(&cli);
            return 2;
        }
    }
    sd_cli_free(&cli);
    for (int i = 0; i < argc; i++) { /* (only the program's name, not its folder; words with spaces quoted) */
        const char *a = i ? argv[i] : "scadles-bench";
        const bool q = strpbrk(a, " \t\"'") != NULL;
        sd_appendf(po.command, sizeof po.command, "%s%s%s%s", i ? " " : "", q ? "'" : "", a, q ? "'" : "");
    }
    if (profile && !po.out) {
        fprintf(stderr, "scadles-bench: --profile needs --out FILE.json (the device profile to write)\n");
        return 2;
    }
    { /* every model name is checked before anything is measured */
        char names[256];
        snprintf(names, sizeof names, "%s", o.models);
        const char *all = sd_model_names();
        for (char *save = NULL, *m = strtok_r(names, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
            size_t n = strlen(m);
            bool known = false;
            for (const char *q = all; !known && (q = strstr(q, m)); q += n)
                known = (q == all || q[-1] == ' ') && (q[n] == ' ' || q[n] == '\0');
            if (!known) {
                fprintf(stderr, "scadles-bench: --models: '%s' is unknown; choose from: %s\n", m, all);
                return 2;
            }
        }
    }
    if (profile) return run_profile(&po, o.models);
    if (o.layers && !one) {
        fprintf(stderr, "scadles-bench: --layers goes with --one MODEL (one repetition in this process)\n");
        return 2;
    }
    if (one && strchr(one, ',')) {
        fprintf(stderr, "scadles-bench: --one takes one model, got '%s'\n", one);
        return 2;
    }
    if (one) {
        sd_backend be;
        if (sd_backend_cpu_create(&be, o.threads) != SD_OK) {
            fprintf(stderr, "scadles-bench: %s\n", sd_last_error());
            return 1;
        }
        int r = bench_one(&be, &o, one);
        sd_backend_destroy(&be);
        return r == 0 ? 0 : 1;
    }
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        fprintf(stderr, "scadles-bench: cannot find its own executable (/proc/self/exe: %s)\n", strerror(errno));
        return 1;
    }
    self[sl] = '\0';
    double peak = sgemm_peak_isolated(1536, o.threads);
    printf("scadles-bench: cpu backend, %d threads, batch %d, %d timed steps after %d warm-up, %d interleaved "
           "repetitions (ours, torch, ours, ...), medians [min-max]\n",
           o.threads, o.batch, o.iters, o.warmup, o.reps);
    printf("bound: OpenBLAS sgemm 1536^3, %d threads = %.1f GFLOP/s (OpenBLAS core '%s'; OPENBLAS_CORETYPE=%s)\n", o.threads, peak,
           openblas_get_corename(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
    char list[256];
    snprintf(list, sizeof list, "%s", o.models);
    int rc = 0;
    for (char *save = NULL, *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
        if (bench_model(&o, self, m, peak) != 0) rc = 1;
    if (o.ops) {
        sd_backend be;
        if (sd_backend_cpu_create(&be, o.threads) != SD_OK) {
            fprintf(stderr, "scadles-bench: %s\n", sd_last_error());
            return 1;
        }
        bench_ops(&be, &o, peak);
        sd_backend_destroy(&be);
    }
    return rc;
}
