/* bench_topk.c: scadles-bench_topk, the CPU Top-k kernel (sd_cpu_topk, the production kernel)
 * on gradient-like data (normal * 1e-3) of 1M, 10M and 25M floats at ratios 0.01 and 0.1, against
 *  - the bound: one streaming read of the input at memory bandwidth, measured in the same run as
 *    a plain sum over the array with the same threads (GB/s, and Top-k time / read time);
 *  - PyTorch's torch.topk on the same machine and thread count (tests/bench/torch_topk.py run with
 *    /usr/bin/python3: selection alone on a precomputed |x|, sorted=False, and the whole job).
 * Every result is validated before it is timed (exactly k entries, ascending indices, values
 * equal to x at them, no unselected entry larger, ties to the lowest index: an exact O(n) check).
 * Times are medians over --reps calls after warm-up calls, data warm (1M floats fit in the L3).
 * Then the bytes per step at ratio 0.1 against dense for ResNet-20's gradient (272,474 floats,
 * Top-k per layer), as one device's message and as the wire bytes of the busiest device measured
 * on the local backend with 2..25 devices (sd_compress_exchange's counters) for the dense ring
 * allreduce, the sparse all-gather and the sparse allreduce, with their 10 Mbit/s link times. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "comm/comm_local.h"
#include "comm/compress.h"
#include "engine/models.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

typedef struct bench_opts {
    int threads;
    size_t sizes[8];
    int nsizes;
    double ratios[8];
    int nratios;
    int reps, warmup;
    int peer;
    const char *python;
    int devices[8];
    int ndevices;
} bench_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-bench_topk [--threads T] [--sizes 1M,10M,25M] [--ratios 0.01,0.1] [--reps R]\n"
            "                          [--warmup W] [--devices 2,4,8,16,25] [--no-peer] [--python PATH]\n"
            "  Times sd_cpu_topk against a streaming read of the input (the bound) and PyTorch's torch.topk\n"
            "  (tests/bench/torch_topk.py with --python, default /usr/bin/python3) at the same thread count\n"
            "  (default: all cores), then prints the bytes per step at ratio 0.1 against dense for\n"
            "  ResNet-20 (per-layer Top-k) on the local backend with --devices devices (dense, sparse all-gather,\n"
            "  sparse allreduce). Sizes take K and M\n"
            "  suffixes (powers of 1024).\n");
}

static int parse_size(const char *v, size_t *out) {
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v) return -1;
    if (*end == 'K' || *end == 'k') x <<= 10, end++;
    else if (*end == 'M' || *end == 'm') x <<= 20, end++;
    if (*end && *end != ',') return -1;
    if (x == 0) return -1; /* a Top-k of nothing measures nothing */
    *out = (size_t)x;
    return 0;
}

/* ---- data and validation --------------------------------------------------------------------- */
static uint64_t splitmix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Normal(0, 1e-3) by Box-Muller from a counter-based generator (same data for any thread count). */
static void fill(float *x, size_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t h = splitmix(i * 2 + 12345), h2 = splitmix(i * 2 + 12346);
        double u1 = ((double)(h >> 11) + 1.0) * 0x1p-53, u2 = (double)(h2 >> 11) * 0x1p-53;
        x[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2) * 1e-3);
    }
}

static uint32_t key_of(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    u &= 0x7fffffffu;
    return u > 0x7f800000u ? 0x7f800001u : u;
}

/* The exact answer, checked in O(n): returns NULL when the output is the Top-k, else why not. */
static const char *validate(const float *x, size_t n, size_t kk, const uint32_t *idx, const float *val) {
    static char why[256];
    unsigned char *sel = calloc((n + 7) / 8, 1);
    if (!sel) return "out of memory";
    uint32_t t = 0xffffffffu;
    size_t last_tie = 0;
    for (size_t j = 0; j < kk; j++) {
        if (idx[j] >= n || (j && idx[j] <= idx[j - 1])) {
            snprintf(why, sizeof why, "index %zu (%u) out of range or not ascending", j, idx[j]);
            free(sel);
            return why;
        }
        if (memcmp(&val[j], &x[idx[j]], 4) != 0) {
            snprintf(why, sizeof why, "value %zu is not x[%u]", j, idx[j]);
            free(sel);
            return why;
        }
        sel[idx[j] / 8] |= (unsigned char)(1u << (idx[j] % 8));
        uint32_t k = key_of(val[j]);
        if (k < t) t = k;
    }
    for (size_t j = 0; j < kk; j++)
        if (key_of(val[j]) == t) last_tie = idx[j];
    const char *res = NULL;
    for (size_t i = 0; i < n && !res; i++) {
        if (sel[i / 8] & (1u << (i % 8))) continue;
        uint32_t k = key_of(x[i]);
        if (k > t || (k == t && i < last_tie)) {
            snprintf(why, sizeof why, "unselected x[%zu] = %g outranks the selection's smallest", i, (double)x[i]);
            res = why;
        }
    }
    free(sel);
    return res;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts t; the median (t[0] is then the best). */
static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The bound: one streaming read (a sum, so the compiler cannot drop it). */
static volatile float sink;
static double time_read(const float *x, size_t n, const bench_opts *o, double *best) {
    double t[64];
    for (int r = 0; r < o->warmup + o->reps; r++) {
        double t0 = sd_clock_now();
        float s = 0;
#pragma omp parallel for simd num_threads(o->threads) schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += x[i];
        sink = s;
        if (r >= o->warmup) t[r - o->warmup] = sd_clock_now() - t0;
    }
    double m = median(t, o->reps);
    *best = t[0];
    return m;
}

/* ---- the PyTorch peer ------------------------------------------------------------------------ */
typedef struct peer_row { size_t n; double ratio, topk_ms, best_ms, full_ms; } peer_row;

static int run_peer(const bench_opts *o, peer_row *rows, int max) {
    char cmd[2048], sizes[256] = "", ratios[128] = "";
    for (int i = 0; i < o->nsizes; i++)
        snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), "%s%zu", i ? "," : "", o->sizes[i]);
    for (int i = 0; i < o->nratios; i++)
        snprintf(ratios + strlen(ratios), sizeof ratios - strlen(ratios), "%s%g", i ? "," : "", o->ratios[i]);
    snprintf(cmd, sizeof cmd, "%s %s/tests/bench/torch_topk.py --sizes %s --ratios %s --threads %d --reps %d 2>&1",
             o->python, SD_SOURCE_DIR, sizes, ratios, o->threads, o->reps < 5 ? o->reps : 5);
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    char line[1024];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        peer_row r;
        if (got < max && sscanf(line, "n=%zu ratio=%lf k=%*u topk_ms=%lf topk_best_ms=%lf full_ms=%lf", &r.n, &r.ratio,
                                &r.topk_ms, &r.best_ms, &r.full_ms) == 5)
            rows[got++] = r;
        else if (!strstr(line, "n=")) fprintf(stderr, "  torch: %s", line);
    }
    pclose(p);
    return got;
}

/* ---- bytes per step: ResNet-20 on the local backend ------------------------------------------ */
typedef struct bytes_arg {
    sd_compress_config cfg;
    size_t count;
    int nl;
    size_t *off, *cnt;
    sd_comm_local_group *g;
    sd_compress_step st[64];
    int bad;
} bytes_arg;
typedef struct bytes_thr { bytes_arg *a; int rank; } bytes_thr;

static void *bytes_rank(void *p) {
    bytes_thr *t = p;
    bytes_arg *a = t->a;
    sd_comm *c = sd_comm_local_get(a->g, t->rank);
    sd_compressor *z = NULL;
    float *g = malloc(a->count * sizeof *g);
    if (!g || sd_compressor_create(&a->cfg, a->count, a->nl, a->off, a->cnt, 1, &z) != SD_OK) {
        a->bad++;
        sd_comm_local_abort(a->g, t->rank, "setup failed");
        free(g);
        return NULL;
    }
    for (size_t i = 0; i < a->count; i++) {
        uint64_t h = splitmix(i * 131 + (uint64_t)t->rank);
        g[i] = (float)((double)(h >> 11) * 0x1p-53 - 0.5);
    }
    if (sd_compress_exchange(z, c, g, &a->st[t->rank]) != SD_OK) {
        a->bad++;
        fprintf(stderr, "rank %d: %s\n", t->rank, sd_last_error());
    }
    sd_compressor_destroy(z);
    free(g);
    return NULL;
}

static int bytes_section(const bench_opts *o) {
    sd_backend be;
    if (sd_backend_cpu_create(&be, 1) != SD_OK) return 1;
    sd_model_spec spec = {.name = "resnet20", .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    sd_net *net = NULL;
    if (sd_model_build(&be, &spec, 1, &net) != SD_OK) {
        fprintf(stderr, "resnet20: %s\n", sd_last_error());
        sd_backend_destroy(&be);
        return 1;
    }
    const int nt = sd_net_num_tensors(net);
    size_t *off = malloc(sizeof(size_t) * (size_t)nt), *cnt = malloc(sizeof(size_t) * (size_t)nt);
    int nl = 0;
    for (int i = 0; i < nt; i++) {
        const sd_param *p = sd_net_tensor(net, i);
        if (p->trainable) {
            off[nl] = p->offset;
            cnt[nl] = p->count;
            nl++;
        }
    }
    const size_t count = sd_net_param_count(net);
    const uint64_t dense = 4 * (uint64_t)count;
    printf("\nbytes per step: ResNet-20, %zu floats in %d tensors, Top-k per layer\n", count, nl);
    printf("  one device's message (what it puts on its link once):\n");
    const double rs[] = {0.1, 0.01};
    int fail = 0;
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 2; i++) {
            sd_compress_config c;
            sd_compress_config_default(&c);
            c.policy = SD_COMPRESS_ALWAYS;
            c.ratio = rs[i];
            c.f16_values = f;
            sd_compressor *z = NULL;
            if (sd_compressor_create(&c, count, nl, off, cnt, 1, &z) != SD_OK) {
                fail = 1;
                continue;
            }
            uint64_t m = sd_compressor_message_bytes(z, rs[i]);
            printf("    ratio %-5g %s: %7zu pairs, %8llu bytes vs %llu dense: %.2fx fewer%s\n", rs[i],
                   f ? "f16" : "f32", sd_compressor_pairs(z, rs[i]), (unsigned long long)m, (unsigned long long)dense,
                   (double)dense / (double)m, !f && i == 0 ? (double)dense / (double)m >= 4.5 ? "  (goal >= 4.5x: met)" : "  (goal >= 4.5x: MISSED)" : "");
            if (!f && i == 0 && (double)dense / (double)m < 4.5) fail = 1;
            sd_compressor_destroy(z);
        }
    printf("  wire bytes per device per step, ratio 0.1 f32, measured by the comm counters on the local backend\n"
           "  (the busiest device; dense = ring allreduce, allgather = ring all-gather of every device's pairs,\n"
           "  allreduce = the sparse allreduce of docs/compression.md); modelled time on 10 Mbit/s, 1 ms links:\n");
    for (int d = 0; d < o->ndevices; d++) {
        const int n = o->devices[d];
        if (n < 1 || n > 64) continue;
        uint64_t worst[2] = {0, 0};
        double tm[2] = {0, 0};
        for (int x = 0; x < 2; x++) {
            bytes_arg a;
            memset(&a, 0, sizeof a);
            sd_compress_config_default(&a.cfg);
            a.cfg.policy = SD_COMPRESS_ALWAYS;
            a.cfg.exchange = x ? SD_EXCHANGE_ALLREDUCE : SD_EXCHANGE_ALLGATHER;
            a.count = count;
            a.nl = nl;
            a.off = off;
            a.cnt = cnt;
            if (sd_comm_local_group_create(n, &a.g) != SD_OK) {
                fail = 1;
                continue;
            }
            pthread_t th[64];
            bytes_thr bt[64];
            for (int r = 0; r < n; r++) {
                bt[r] = (bytes_thr){&a, r};
                pthread_create(&th[r], NULL, bytes_rank, &bt[r]);
            }
            for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
            sd_comm_local_group_destroy(a.g);
            if (a.bad) {
                fail = 1;
                continue;
            }
            for (int r = 0; r < n; r++)
                if (a.st[r].bytes_sent > worst[x]) worst[x] = a.st[r].bytes_sent;
            tm[x] = sd_compress_step_time(&a.st[0], n, 10e6, 1e-3);
        }
        const uint64_t dw = sd_comm_ring_allreduce_bytes(count, 4, 0, n);
        sd_compress_step dstep;
        memset(&dstep, 0, sizeof dstep);
        dstep.dense_bytes = dense;
        const double ratio_ag = worst[0] ? (double)dw / (double)worst[0] : 0, ratio_ar = worst[1] ? (double)dw / (double)worst[1] : 0;
        const bool goal = n < 8 || ratio_ar >= 4.5;
        printf("    %2d devices: dense %9llu, allgather %9llu (%5.2fx fewer), allreduce %9llu (%5.2fx fewer)%s;"
               " %6.1f / %6.1f / %6.1f ms\n", n, (unsigned long long)dw, (unsigned long long)worst[0], ratio_ag,
               (unsigned long long)worst[1], ratio_ar, n >= 8 ? goal ? " goal >= 4.5x: met" : " goal >= 4.5x: MISSED" : "",
               1e3 * sd_compress_step_time(&dstep, n, 10e6, 1e-3), 1e3 * tm[0], 1e3 * tm[1]);
        if (!goal) fail = 1;
    }
    /* the compressor's own cost per step: one device (no link), Top-k + residual + norms + scatter */
    sd_comm_local_group *g1 = NULL;
    if (sd_comm_local_group_create(1, &g1) == SD_OK) {
        sd_comm *c1 = sd_comm_local_get(g1, 0);
        float *g = malloc(count * sizeof *g);
        for (int pl = 1; pl >= 0; pl--) {
            sd_compress_config c;
            sd_compress_config_default(&c);
            c.policy = SD_COMPRESS_PAPER;
            c.per_layer = pl;
            sd_compressor *z = NULL;
            if (!g || sd_compressor_create(&c, count, nl, off, cnt, o->threads, &z) != SD_OK) {
                fail = 1;
                break;
            }
            double ts[64];
            for (int r = 0; r < o->warmup + o->reps; r++) {
                for (size_t i = 0; i < count; i++) g[i] = (float)((double)(splitmix(i + (uint64_t)r * count) >> 11) * 0x1p-53 - 0.5);
                double t0 = sd_clock_now();
                if (sd_compress_exchange(z, c1, g, NULL) != SD_OK) fail = 1;
                if (r >= o->warmup) ts[r - o->warmup] = sd_clock_now() - t0;
            }
            printf("  compressor cost per step, 1 device (policy paper, ratio 0.1, %s): %.3f ms median\n",
                   pl ? "per layer" : "whole gradient", 1e3 * median(ts, o->reps));
            sd_compressor_destroy(z);
        }
        free(g);
        sd_comm_local_group_destroy(g1);
    }
    free(off);
    free(cnt);
    sd_net_destroy(net);
    sd_backend_destroy(&be);
    return fail;
}

/* ---- main ------------------------------------------------------------------------------------ */
int main(int argc, char **argv) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bench_opts o = {.threads = ncpu > 0 ? (int)ncpu : 1, .nsizes = 3, .sizes = {1u << 20, 10u << 20, 25u << 20},
                    .nratios = 2, .ratios = {0.01, 0.1}, .reps = 11, .warmup = 2, .peer = 1,
                    .python = "/usr/bin/python3", .ndevices = 5, .devices = {2, 4, 8, 16, 25}};
    static const sd_cli_option options[] = {
        {"--threads", true, NULL}, {"--sizes", true, "a list like 1M,10M"}, {"--ratios", true, "a list like 0.01,0.1"},
        {"--reps", true, NULL}, {"--warmup", true, NULL}, {"--devices", true, "a list like 2,4,8"},
        {"--no-peer", false, NULL}, {"--python", true, NULL}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench_topk", usage, options, argc, argv);
    for (int i = 0; i < cli.n; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else if (!strcmp(a, "--reps")) o.reps = atoi(v);
        else if (!strcmp(a, "--warmup")) o.warmup = atoi(v);
        else if (!strcmp(a, "--python")) o.python = v;
        else if (!strcmp(a, "--no-peer")) o.peer = 0;
        else if (!strcmp(a, "--sizes")) {
            o.nsizes = 0;
            for (const char *p = v; *p && o.nsizes < 8;) {
                if (parse_size(p, &o.sizes[o.nsizes++]) != 0) {
                    fprintf(stderr, "scadles-bench_topk: --sizes: '%s' is not a list of sizes >= 1 (e.g. 4K,1M)\n", v);
                    sd_cli_free(&cli);
                    return 2;
                }
                const char *c = strchr(p, ',');
                p = c ? c + 1 : p + strlen(p);
            }
        } else if (!strcmp(a, "--ratios")) {
            o.nratios = 0;
            for (const char *p = v; *p && o.nratios < 8;) {
                o.ratios[o.nratios++] = atof(p);
                const char *c = strchr(p, ',');
                p = c ? c + 1 : p + strlen(p);
            }
        } else if (!strcmp(a, "--devices")) {
            o.ndevices = 0;
            for (const char *p = v; *p && o.ndevices < 8;) {
                o.devices[o.ndevices++] = atoi(p);
                const char *c = strchr(p, ',');
                p = c ? c + 1 : p + strlen(p);
            }
        }
    }
    sd_cli_free(&cli);
    if (o.threads < 1 || o.reps < 1 || o.reps > 64 || o.warmup < 0) {
        usage(stderr);
        return 2;
    }
    for (int r = 0; r < o.nratios; r++)
        if (!(o.ratios[r] > 0 && o.ratios[r] <= 1)) {
            fprintf(stderr, "ratios must be in (0, 1]\n");
            return 2;
        }
    sd_kctx *k = NULL;
    if (sd_cpu_kctx_create(o.threads, &k) != SD_OK) {
        fprintf(stderr, "%s\n", sd_last_error());
        return 1;
    }
    printf("scadles-bench_topk: %d threads, median of %d after %d warm-up, normal(0, 1e-3) data\n", o.threads, o.reps,
           o.warmup);
    peer_row peer[64];
    int npeer = 0;
    if (o.peer) {
        npeer = run_peer(&o, peer, 64);
        if (!npeer) printf("  torch: unavailable (%s with torch; --python PATH or --no-peer)\n", o.python);
    }
    printf("%10s %6s %8s | %7s %6s %6s | %7s %6s %6s %7s | %8s %8s %8s %8s\n", "n", "ratio", "k", "read ms", "best",
           "GB/s", "topk ms", "best", "GB/s", "x bound", "torch ms", "best", "whole ms", "speedup");
    int fail = 0;
    for (int si = 0; si < o.nsizes; si++) {
        const size_t n = o.sizes[si];
        float *x = NULL, *val = NULL;
        uint32_t *idx = NULL;
        if (sd_cpu_alloc(n * sizeof(float), (void **)&x) != SD_OK || sd_cpu_alloc(n * sizeof(float), (void **)&val) != SD_OK ||
            sd_cpu_alloc(n * sizeof(uint32_t), (void **)&idx) != SD_OK) {
            fprintf(stderr, "%s\n", sd_last_error());
            return 1;
        }
        fill(x, n, o.threads);
        double b_read = 0;
        const double t_read = time_read(x, n, &o, &b_read);
        for (int ri = 0; ri < o.nratios; ri++) {
            const double t = o.ratios[ri] * (double)n;
            size_t kk = (size_t)ceil(t - 1e-9 * t);
            if (kk < 1) kk = 1;
            if (kk > n) kk = n;
            if (sd_cpu_topk(k, x, n, kk, idx, val) != SD_OK) {
                fprintf(stderr, "topk: %s\n", sd_last_error());
                return 1;
            }
            const char *why = validate(x, n, kk, idx, val);
            if (why) {
                printf("%10zu %6g %9zu | INVALID: %s\n", n, o.ratios[ri], kk, why);
                fail = 1;
                continue;
            }
            double ts[64];
            for (int r = 0; r < o.warmup + o.reps; r++) {
                double t0 = sd_clock_now();
                sd_cpu_topk(k, x, n, kk, idx, val);
                if (r >= o.warmup) ts[r - o.warmup] = sd_clock_now() - t0;
            }
            const double t_topk = median(ts, o.reps), b_topk = ts[0];
            const peer_row *pr = NULL;
            for (int j = 0; j < npeer; j++)
                if (peer[j].n == n && fabs(peer[j].ratio - o.ratios[ri]) < 1e-12) pr = &peer[j];
            printf("%10zu %6g %8zu | %7.3f %6.3f %6.1f | %7.3f %6.3f %6.1f %7.2f |", n, o.ratios[ri], kk, t_read * 1e3,
                   b_read * 1e3, 4.0 * (double)n / t_read * 1e-9, t_topk * 1e3, b_topk * 1e3,
                   4.0 * (double)n / t_topk * 1e-9, t_topk / t_read);
            if (pr) printf(" %8.2f %8.2f %8.2f %7.1fx\n", pr->topk_ms, pr->best_ms, pr->full_ms, pr->topk_ms / (t_topk * 1e3));
            else printf(" %8s %8s %8s %8s\n", "-", "-", "-", "-");
        }
        free(x);
        free(val);
        free(idx);
    }
    printf("  medians (and best) in ms; read: one streaming pass (sum) over the n floats, GB/s = 4n / time;\n"
           "  x bound = topk median / read median; torch: torch.topk(|x|, k, sorted=False) with |x| precomputed;\n"
           "  whole: |x|, topk and the signed values; speedup = torch median / topk median (ours also returns the\n"
           "  indices in ascending order with the signed values).\n");
    fail |= bytes_section(&o);
    sd_cpu_kctx_destroy(k);
    return fail;
}
