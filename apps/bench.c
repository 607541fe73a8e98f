/* bench.c: scadles-bench, CPU training throughput and per-op speed, with the ratios that say how
 * good the numbers are: against PyTorch run on the same machine with the same thread count (the
 * peer, when python3-torch is installed) and against OpenBLAS's own sgemm measured in this run
 * (the bound). Every timed path is validated first (finite loss, finite gradients). */
#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "base/rng.h"
#include "engine/models.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

#ifndef SD_SOURCE_DIR
#define SD_SOURCE_DIR "."
#endif

typedef struct bench_opts {
    int threads, batch, iters, warmup;
    const char *models;
    bool peer, ops;
    const char *python;
} bench_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-bench [--threads N] [--batch B] [--iters K] [--warmup W] [--models a,b]\n"
            "                     [--no-peer] [--no-ops] [--python PATH]\n"
            "  CPU training throughput (forward + backward + SGD update) of each model at batch B,\n"
            "  the ratio to PyTorch (same model, batch and threads; needs python3-torch) and to\n"
            "  OpenBLAS sgemm peak measured in the same run, then GFLOP/s or GB/s per op.\n"
            "  defaults: --threads 2 --batch 64 --iters 20 --warmup 3 --models fmnist_cnn,resnet20\n");
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

/* ---- PyTorch peer ------------------------------------------------------------------------ */
static double torch_peer(const bench_opts *o, const char *model) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s/tests/bench/torch_peer.py --model %s --threads %d --batch %d --iters %d 2>&1",
             o->python, SD_SOURCE_DIR, model, o->threads, o->batch, o->iters);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    double sps = -1;
    while (fgets(line, sizeof line, p)) {
        const char *s = strstr(line, "samples_per_s=");
        if (s) sps = atof(s + strlen("samples_per_s="));
    }
    int rc = pclose(p);
    return rc == 0 ? sps : -1;
}

/* ---- model throughput -------------------------------------------------------------------- */
static int bench_model(sd_backend *be, const bench_opts *o, const char *model, double peak) {
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
        if (it == o->warmup) t_start = sd_clock_now();
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
    double sps = o->batch / dt;
    printf("%-11s %8zu params  loss %.3f -> %.3f  %8.1f samples/s  (%.2f ms/step)", model, np, first_loss, loss, sps,
           dt * 1e3);
    if (o->peer) {
        double peer = torch_peer(o, model);
        if (peer > 0) printf("  torch %8.1f samples/s  ratio %.2fx", peer, sps / peer);
        else printf("  torch: unavailable (install python3-torch or pass --python)");
    }
    printf("\n");
    (void)peak;
    rc = 0;
done:
    free(x);
    free(labels);
    free(mom);
    sd_net_destroy(net);
    return rc;
}

/* ---- per-op speed ------------------------------------------------------------------------ */
typedef struct conv_case { const char *label; int n, c, h, k, kh, s, p; bool dx; } conv_case;

static void bench_ops(sd_backend *be, const bench_opts *o, double peak) {
    const conv_case cases[] = {
        {"cnn conv1 1->16 5x5 @28", o->batch, 1, 28, 16, 5, 1, 2, false},
        {"cnn conv2 16->32 5x5 @14", o->batch, 16, 14, 32, 5, 1, 2, true},
        {"r20 stem 3->16 3x3 @32", o->batch, 3, 32, 16, 3, 1, 1, false},
        {"r20 16->16 3x3 @32", o->batch, 16, 32, 16, 3, 1, 1, true},
        {"r20 32->32 3x3 @16", o->batch, 32, 16, 32, 3, 1, 1, true},
        {"r20 64->64 3x3 @8", o->batch, 64, 8, 64, 3, 1, 1, true},
        {"r20 16->32 3x3 s2 @32", o->batch, 16, 32, 32, 3, 2, 1, true},
    };
    printf("\nper-op (batch %d, %d threads; GFLOP/s, and %% of the sgemm bound %.0f GFLOP/s)\n", o->batch, o->threads, peak);
    sd_kctx *k = be->ctx;
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
            double flops = 2.0 * ys * p.c * p.kh * p.kw;
            double best_f = 1e30, best_b = 1e30;
            for (int r = 0; r < 2 + o->iters / 4; r++) {
                double t0 = sd_clock_now();
                be->ops->conv2d_fwd(k, &p, x, w, NULL, y);
                double t1 = sd_clock_now();
                be->ops->conv2d_bwd(k, &p, x, w, y, cc->dx ? dx : NULL, dw, NULL);
                double t2 = sd_clock_now();
                if (r > 0) {
                    if (t1 - t0 < best_f) best_f = t1 - t0;
                    if (t2 - t1 < best_b) best_b = t2 - t1;
                }
            }
            double bflops = flops * (cc->dx ? 2 : 1);
            printf("  conv %-26s fwd %6.1f GFLOP/s (%3.0f%%)  bwd %6.1f GFLOP/s (%3.0f%%)\n", cc->label,
                   flops / best_f / 1e9, 100 * flops / best_f / 1e9 / peak, bflops / best_b / 1e9,
                   100 * bflops / best_b / 1e9 / peak);
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

int main(int argc, char **argv) {
    bench_opts o = {.threads = 2, .batch = 64, .iters = 20, .warmup = 3, .models = "fmnist_cnn,resnet20",
                    .peer = true, .ops = true, .python = "/usr/bin/python3"};
    static const sd_cli_option options[] = {
        {"--threads", true, NULL}, {"--batch", true, NULL}, {"--iters", true, NULL}, {"--warmup", true, NULL},
        {"--models", true, "a list like fmnist_cnn,resnet20"}, {"--python", true, NULL}, {"--no-peer", false, NULL},
        {"--no-ops", false, NULL}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench", usage, options, argc, argv);
    for (int i = 0; i < cli.n; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        int bad = 0;
        if (!strcmp(a, "--threads")) bad = parse_int(a, v, 1, 1024, &o.threads);
        else if (!strcmp(a, "--batch")) bad = parse_int(a, v, 1, 65536, &o.batch);
        else if (!strcmp(a, "--iters")) bad = parse_int(a, v, 1, 100000, &o.iters);
        else if (!strcmp(a, "--warmup")) bad = parse_int(a, v, 0, 100000, &o.warmup);
        else if (!strcmp(a, "--models")) o.models = v;
        else if (!strcmp(a, "--python")) o.python = v;
        else if (!strcmp(a, "--no-peer")) o.peer = false;
        else if (!strcmp(a, "--no-ops")) o.ops = false;
        if (bad) {
            sd_cli_free(&cli);
            return 2;
        }
    }
    sd_cli_free(&cli);
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
    sd_backend be;
    if (sd_backend_cpu_create(&be, o.threads) != SD_OK) {
        fprintf(stderr, "scadles-bench: %s\n", sd_last_error());
        return 1;
    }
    double peak = sgemm_peak_isolated(1536, o.threads);
    printf("scadles-bench: cpu backend, %d threads, batch %d, %d timed steps after %d warm-up\n", o.threads, o.batch,
           o.iters, o.warmup);
    printf("bound: OpenBLAS sgemm 1536^3, %d threads = %.1f GFLOP/s (OpenBLAS core '%s'; OPENBLAS_CORETYPE=%s)\n", o.threads, peak,
           openblas_get_corename(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
    char list[256];
    snprintf(list, sizeof list, "%s", o.models);
    int rc = 0;
    for (char *save = NULL, *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
        if (bench_model(&be, &o, m, peak) != 0) rc = 1;
    if (o.ops) bench_ops(&be, &o, peak);
    sd_backend_destroy(&be);
    return rc;
}
