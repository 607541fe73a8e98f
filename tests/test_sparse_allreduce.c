/* test_sparse_allreduce.c: the compressor's sparse allreduce (exchange "allreduce",
 * comm/compress_allreduce.c) and the alltoallv it is built on, on the local backend:
 *  - alltoallv: every block lands where it should for N = 1..5 with empty blocks, the wire bytes
 *    are every block but the own one, a size mismatch fails on every rank without a hang;
 *  - the exchange against a serial model of its documented rules (Top-k per layer or whole, f32
 *    and f16 values, N = 1, 2, 3, 5, 8, several steps so the residual carries over): the summed
 *    gradient and every rank's residual bitwise, identical on every rank;
 *  - the bytes: the comm counters equal the model's exact per-rank bytes (row all-gather +
 *    alltoallv + owners' all-gather), the modelled time equals the formula, and the bytes per rank
 *    stay under 2 x (k pairs) + headers whatever N is;
 *  - conservation: applied + residuals == sum of gradients (within rounding) after every step;
 *  - auto: the all-gather at 2 devices, the allreduce at 8 and 16 for ResNet-20's layout, where it
 *    sends >= 4.5x fewer bytes than dense. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/compress.h"
#include "comm/cost.h"
#include "engine/models.h"
#include "kernels/backend.h"
#include "tests/harness.h"
#include "tests/ref/ref_topk.h"

#define MAXR 16
#define NSTEPS 5

/* ---- running ranks --------------------------------------------------------------------------- */
typedef void (*rank_fn)(void *arg, sd_comm *c);
typedef struct targ { void *arg; sd_comm *c; rank_fn fn; } targ;

static void *thread_main(void *p) {
    targ *t = p;
    t->fn(t->arg, t->c);
    return NULL;
}

static void run_group(int n, rank_fn fn, void *arg) {
    sd_comm_local_group *g = NULL;
    if (sd_comm_local_group_create(n, &g) != SD_OK) {
        EXPECT(0, "local group of %d: %s", n, sd_last_error());
        return;
    }
    sd_comm_local_set_timeout(g, 60);
    pthread_t th[MAXR];
    targ ta[MAXR];
    for (int r = 0; r < n; r++) {
        ta[r] = (targ){arg, sd_comm_local_get(g, r), fn};
        pthread_create(&th[r], NULL, thread_main, &ta[r]);
    }
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
    sd_comm_local_group_destroy(g);
}

static uint64_t splitmix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- alltoallv ------------------------------------------------------------------------------- */
static size_t a2a_len(int from, int to) { return (size_t)((from * 7 + to * 3) % 5); } /* 0..4 bytes, zeros too */
static unsigned char a2a_byte(int from, int to, size_t i) { return (unsigned char)(from * 40 + to * 5 + (int)i); }

typedef struct a2a_arg { int n, bad[MAXR], failed[MAXR]; uint64_t wire[MAXR]; int mismatch; } a2a_arg;

static void fn_a2a(void *argp, sd_comm *c) {
    a2a_arg *a = argp;
    const int n = c->size, me = c->rank;
    size_t sb[MAXR] = {0}, rb[MAXR] = {0}, sd[MAXR] = {0}, rd[MAXR] = {0}, so = 0, ro = 0;
    unsigned char send[MAXR * 5] = {0}, recv[MAXR * 6 + 16];
    memset(recv, 0xee, sizeof recv);
    for (int j = 0; j < n; j++) {
        sb[j] = a2a_len(me, j);
        rb[j] = a2a_len(j, me);
        if (a->mismatch && me == 1 && j == 0) rb[j] += 1; /* rank 1 expects a byte more from rank 0 */
        sd[j] = so;
        rd[j] = ro + 1; /* a gap before each block: displacements are honoured */
        for (size_t i = 0; i < sb[j]; i++) send[so + i] = a2a_byte(me, j, i);
        so += sb[j];
        ro += rb[j] + 1;
    }
    sd_status s = sd_comm_alltoallv(c, send, sb, sd, recv, rb, rd);
    if (s != SD_OK) {
        a->failed[me] = 1;
        return;
    }
    for (int j = 0; j < n; j++) {
        if (recv[rd[j] - 1] != 0xee) a->bad[me]++;
        for (size_t i = 0; i < rb[j]; i++)
            if (recv[rd[j] + i] != a2a_byte(j, me, i)) a->bad[me]++;
    }
    a->wire[me] = c->counters.wire_bytes[SD_COLL_ALLTOALLV];
}

static void test_alltoallv(void) {
    for (int n = 1; n <= 5; n++) {
        a2a_arg a;
        memset(&a, 0, sizeof a);
        a.n = n;
        run_group(n, fn_a2a, &a);
        for (int r = 0; r < n; r++) {
            uint64_t want = 0;
            for (int j = 0; j < n; j++)
                if (j != r) want += a2a_len(r, j);
            EXPECT(!a.failed[r] && a.bad[r] == 0, "n %d rank %d: alltoallv failed or misplaced %d bytes", n, r, a.bad[r]);
            EXPECT(a.wire[r] == want, "n %d rank %d: %llu wire bytes, want %llu", n, r, (unsigned long long)a.wire[r],
                   (unsigned long long)want);
        }
    }
    a2a_arg a;
    memset(&a, 0, sizeof a);
    a.mismatch = 1;
    run_group(3, fn_a2a, &a); /* returning at all is the no-hang check */
    EXPECT(a.failed[0] && a.failed[1] && a.failed[2], "a size mismatch did not fail every rank: %d %d %d", a.failed[0],
           a.failed[1], a.failed[2]);
}

/* ---- the serial model ------------------------------------------------------------------------ */
typedef struct layout {
    size_t count;
    int nl;
    size_t off[128], cnt[128];
} layout;

/* Calls the selection per segment: the layers' parts of [lo, hi) (per_layer) or [lo, hi) itself. */
static size_t ref_select_range(const layout *L, bool per_layer, size_t lo, size_t hi, double ratio, const float *x,
                               unsigned char *sel) {
    size_t q = 0;
    for (int l = 0; l < (per_layer ? L->nl : 1); l++) {
        const size_t o = per_layer ? L->off[l] : 0, e = per_layer ? L->off[l] + L->cnt[l] : L->count;
        const size_t a = o > lo ? o : lo, b = e < hi ? e : hi;
        if (a >= b) continue;
        const size_t kk = ref_topk_k(ratio, b - a);
        if (sel) ref_topk_select(x, a, b - a, kk, sel);
        q += kk;
    }
    return q;
}

static float wire(float v, bool f16) { return f16 ? sd_f16_wire(v) : v; }
static size_t msgb(size_t np, bool f16) { return 8 + np * (f16 ? 6 : 8); }

typedef struct model {
    int n;
    layout L;
    bool per_layer, f16;
    double ratio;
    float *res[MAXR]; /* residuals */
    float *out;       /* the step's summed result */
    uint64_t bytes[MAXR];
    double time;      /* modelled seconds on 10 Mbit/s, 2 ms */
} model;

/* One step of the documented rules on gradients g[r]. */
static void model_step(model *m, float *const *g) {
    const int n = m->n;
    const size_t P = m->L.count;
    uint32_t bounds[MAXR + 1];
    for (int j = 0; j <= n; j++) bounds[j] = (uint32_t)((uint64_t)P * (uint64_t)j / (uint64_t)n);
    float *a[MAXR], *val[MAXR];
    unsigned char *sel[MAXR];
    size_t cnt[MAXR][MAXR] = {{0}};
    for (int r = 0; r < n; r++) {
        a[r] = malloc(P * sizeof(float));
        val[r] = calloc(P, sizeof(float));
        sel[r] = calloc(P, 1);
        for (size_t i = 0; i < P; i++) a[r][i] = g[r][i] + m->res[r][i];
        ref_select_range(&m->L, m->per_layer, 0, P, m->ratio, a[r], sel[r]);
        for (size_t i = 0; i < P; i++) {
            if (!sel[r][i]) continue;
            val[r][i] = wire(a[r][i], m->f16);
            const float d = a[r][i] - val[r][i];
            m->res[r][i] = isnan(d) ? 0.0f : d;
            int j = 0;
            while (!(i >= bounds[j] && i < bounds[j + 1])) j++;
            cnt[r][j]++;
        }
        for (size_t i = 0; i < P; i++)
            if (!sel[r][i]) m->res[r][i] = a[r][i];
    }
    /* owners: sums in rank order, re-selection, f16 excess */
    float *sum = calloc(P, sizeof(float));
    unsigned char *keep = calloc(P, 1);
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < P; i++)
            if (sel[r][i]) sum[i] += val[r][i];
    size_t kq[MAXR], gathered = 0;
    for (int j = 0; j < n; j++) {
        kq[j] = ref_select_range(&m->L, m->per_layer, bounds[j], bounds[j + 1], m->ratio, sum, keep);
        gathered += msgb(kq[j], m->f16);
    }
    memset(m->out, 0, P * sizeof(float));
    for (size_t i = 0; i < P; i++) {
        if (!keep[i]) continue;
        const float w = wire(sum[i], m->f16);
        int j = 0;
        while (!(i >= bounds[j] && i < bounds[j + 1])) j++;
        if (m->f16 && w != 0.0f && isfinite(sum[i] - w)) m->res[j][i] += sum[i] - w;
        m->out[i] = 0.0f + w;
    }
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < P; i++)
            if (sel[r][i] && m->out[i] == 0.0f && !isnan(val[r][i])) m->res[r][i] += val[r][i];
    /* the exact bytes per rank and the modelled time */
    size_t rows[MAXR], gb[MAXR];
    uint64_t a2a_max = 0;
    for (int r = 0; r < n; r++) {
        rows[r] = (size_t)(n + 1) * 4;
        gb[r] = msgb(kq[r], m->f16);
    }
    for (int r = 0; r < n; r++) {
        uint64_t s = 0;
        for (int j = 0; j < n; j++)
            if (j != r) s += msgb(cnt[r][j], m->f16);
        if (s > a2a_max) a2a_max = s;
        m->bytes[r] = sd_comm_ring_allgather_bytes(rows, r, n) + s + sd_comm_ring_allgather_bytes(gb, r, n);
    }
    m->time = sd_ring_allgather_time(n, (double)n * (double)(n + 1) * 4, 10e6, 2e-3) +
              sd_alltoallv_time(n, (double)a2a_max, 10e6, 2e-3) + sd_ring_allgather_time(n, (double)gathered, 10e6, 2e-3);
    for (int r = 0; r < n; r++) {
        free(a[r]);
        free(val[r]);
        free(sel[r]);
    }
    free(sum);
    free(keep);
}

/* ---- the exchange against the model ---------------------------------------------------------- */
typedef struct xarg {
    layout L;
    sd_compress_config cfg;
    int threads;
    float *out[MAXR][NSTEPS], *res[MAXR][NSTEPS];
    sd_compress_step st[MAXR][NSTEPS];
    uint64_t wire[MAXR][NSTEPS];
    int failed[MAXR];
} xarg;

static float grad_value(int r, int t, size_t i) {
    const uint64_t h = splitmix(((uint64_t)t * 131 + (uint64_t)r) * 1000003u + i);
    const double u = (double)(h >> 11) * 0x1p-53 - 0.5;
    return (float)(u * (i % 7 == 0 ? 8.0 : 1.0)); /* some larger entries, as real gradients have */
}

static void fn_x(void *argp, sd_comm *c) {
    xarg *a = argp;
    const int me = c->rank;
    sd_compressor *z = NULL;
    float *g = malloc(a->L.count * sizeof(float));
    if (!g || sd_compressor_create(&a->cfg, a->L.count, a->L.nl, a->L.off, a->L.cnt, a->threads, &z) != SD_OK) {
        a->failed[me] = 1;
        free(g);
        return;
    }
    for (int t = 0; t < NSTEPS; t++) {
        for (size_t i = 0; i < a->L.count; i++) g[i] = grad_value(me, t, i);
        const uint64_t w0 = sd_comm_wire_bytes(c);
        if (sd_compress_exchange(z, c, g, &a->st[me][t]) != SD_OK) {
            fprintf(stderr, "rank %d step %d: %s\n", me, t, sd_last_error());
            a->failed[me] = 1;
            break;
        }
        a->wire[me][t] = sd_comm_wire_bytes(c) - w0;
        a->out[me][t] = malloc(a->L.count * sizeof(float));
        a->res[me][t] = malloc(a->L.count * sizeof(float));
        memcpy(a->out[me][t], g, a->L.count * sizeof(float));
        memcpy(a->res[me][t], sd_compressor_residual(z), a->L.count * sizeof(float));
    }
    sd_compressor_destroy(z);
    free(g);
}

static void xarg_free(xarg *a, int n) {
    for (int r = 0; r < n; r++)
        for (int t = 0; t < NSTEPS; t++) {
            free(a->out[r][t]);
            free(a->res[r][t]);
        }
}

static const size_t layers_a[] = {300, 17, 1000, 3, 250, 64}; /* 1634 floats */

static void check_case(int n, bool per_layer, bool f16, int threads) {
    static xarg a;
    memset(&a, 0, sizeof a);
    a.L.nl = 6;
    for (int l = 0; l < a.L.nl; l++) {
        a.L.off[l] = a.L.count;
        a.L.cnt[l] = layers_a[l];
        a.L.count += layers_a[l];
    }
    sd_compress_config_default(&a.cfg);
    a.cfg.policy = SD_COMPRESS_ALWAYS;
    a.cfg.ratio = 0.1;
    a.cfg.per_layer = per_layer;
    a.cfg.f16_values = f16;
    a.cfg.exchange = SD_EXCHANGE_ALLREDUCE;
    a.threads = threads;
    run_group(n, fn_x, &a);
    model m = {.n = n, .L = a.L, .per_layer = per_layer, .f16 = f16, .ratio = 0.1};
    const size_t P = a.L.count;
    m.out = malloc(P * sizeof(float));
    for (int r = 0; r < n; r++) m.res[r] = calloc(P, sizeof(float));
    long bad_out = 0, bad_res = 0, bad_bytes = 0, bad_time = 0, over = 0, bad_mass = 0, failed = 0;
    double *cum_g = calloc(P, sizeof(double)), *cum_out = calloc(P, sizeof(double));
    const size_t k = ref_select_range(&a.L, per_layer, 0, P, 0.1, NULL, NULL);
    for (int r = 0; r < n; r++) failed += a.failed[r];
    for (int t = 0; t < NSTEPS && !failed; t++) {
        float *g[MAXR];
        for (int r = 0; r < n; r++) {
            g[r] = malloc(P * sizeof(float));
            for (size_t i = 0; i < P; i++) {
                g[r][i] = grad_value(r, t, i);
                cum_g[i] += g[r][i];
            }
        }
        model_step(&m, g);
        for (size_t i = 0; i < P; i++) cum_out[i] += m.out[i];
        for (int r = 0; r < n; r++) {
            if (memcmp(a.out[r][t], m.out, P * sizeof(float))) bad_out++;
            if (memcmp(a.res[r][t], m.res[r], P * sizeof(float))) bad_res++;
            if (a.wire[r][t] != m.bytes[r] || a.st[r][t].bytes_sent != m.bytes[r]) bad_bytes++;
            if (fabs(sd_compress_step_time(&a.st[r][t], n, 10e6, 2e-3) - m.time) > 1e-12 * (1 + m.time)) bad_time++;
            if (n > 1 && a.st[r][t].exchange != SD_EXCHANGE_ALLREDUCE) bad_bytes++;
            /* the bound: rows + (n - 1) headers + k pairs + the owners' pairs (<= k + one per segment) */
            const double bound = (double)(n - 1) * (n + 1) * 4 + (double)(n - 1) * 8 * 2 +
                                 (double)(2 * k + (size_t)(a.L.nl + n)) * (f16 ? 6 : 8);
            if ((double)a.wire[r][t] > bound) over++;
            free(g[r]);
        }
        /* conservation: sum of gradients == applied so far + residuals */
        for (size_t i = 0; i < P; i++) {
            double rs = 0;
            for (int r = 0; r < n; r++) rs += m.res[r][i];
            if (fabs(cum_g[i] - (cum_out[i] + rs)) > 1e-4 * (1 + fabs(cum_g[i]))) bad_mass++;
        }
    }
    EXPECT(!failed, "n %d: %ld ranks failed", n, failed);
    EXPECT(bad_out == 0 && bad_res == 0, "n %d per_layer %d f16 %d threads %d: %ld results and %ld residuals differ "
           "from the model", n, per_layer, f16, threads, bad_out, bad_res);
    EXPECT(bad_bytes == 0 && bad_time == 0, "n %d per_layer %d f16 %d: %ld byte counts, %ld modelled times differ",
           n, per_layer, f16, bad_bytes, bad_time);
    EXPECT(over == 0, "n %d: %ld steps above the 2k-pairs bound", n, over);
    EXPECT(bad_mass == 0, "n %d per_layer %d f16 %d: %ld entries do not conserve mass", n, per_layer, f16, bad_mass);
    free(cum_g);
    free(cum_out);
    free(m.out);
    for (int r = 0; r < n; r++) free(m.res[r]);
    xarg_free(&a, n);
}

static void test_against_model(void) {
    const int ns[] = {1, 2, 3, 5, 8};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int pl = 0; pl < 2; pl++)
            for (int f = 0; f < 2; f++) check_case(ns[i], pl, f, 1);
    check_case(5, true, true, 2); /* the thread count changes nothing */
}

/* ---- auto and the bytes on ResNet-20's layout ------------------------------------------------ */
static void test_auto_resnet20(void) {
    sd_backend be;
    if (sd_backend_cpu_create(&be, 1) != SD_OK) {
        EXPECT(0, "cpu backend: %s", sd_last_error());
        return;
    }
    sd_model_spec spec = {.name = "resnet20", .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    sd_net *net = NULL;
    EXPECT_OK(sd_model_build(&be, &spec, 1, &net));
    if (!net) {
        sd_backend_destroy(&be);
        return;
    }
    static xarg a;
    const int nt = sd_net_trainable_layout(net, NULL, NULL, 0);
    const int ns[] = {2, 8, 16};
    for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
        memset(&a, 0, sizeof a);
        a.L.count = sd_net_param_count(net);
        a.L.nl = nt;
        sd_net_trainable_layout(net, a.L.off, a.L.cnt, nt);
        sd_compress_config_default(&a.cfg);
        a.cfg.policy = SD_COMPRESS_ALWAYS;
        a.cfg.ratio = 0.1;
        a.cfg.exchange = SD_EXCHANGE_AUTO;
        a.threads = 1;
        const int n = ns[c];
        run_group(n, fn_x, &a);
        long failed = 0;
        for (int r = 0; r < n; r++) failed += a.failed[r];
        EXPECT(!failed, "resnet20 auto n %d: a rank failed", n);
        if (!failed) {
            const sd_compress_step *s = &a.st[0][0];
            const int want = n <= 2 ? SD_EXCHANGE_ALLGATHER : SD_EXCHANGE_ALLREDUCE;
            EXPECT(s->exchange == want, "n %d: auto chose exchange %d, want %d", n, s->exchange, want);
            const uint64_t dense = sd_comm_ring_allreduce_bytes(a.L.count, 4, 0, n);
            uint64_t worst = 0;
            for (int r = 0; r < n; r++)
                if (a.wire[r][0] > worst) worst = a.wire[r][0];
            if (n > 2)
                EXPECT((double)dense / (double)worst >= 4.5, "n %d: the sparse allreduce sends %llu bytes, dense %llu: "
                       "%.2fx fewer, want >= 4.5x", n, (unsigned long long)worst, (unsigned long long)dense,
                       (double)dense / (double)worst);
        }
        xarg_free(&a, n);
    }
    sd_net_destroy(net);
    sd_backend_destroy(&be);
}

int main(void) {
    test_alltoallv();
    test_against_model();
    test_auto_resnet20();
    return sd_test_finish("test_sparse_allreduce");
}
