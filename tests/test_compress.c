/* test_compress.c: Top-k compression with error feedback (comm/compress.h) on the local backend
 * (N device threads):
 *  - the sparse allgather on its own with exactly checkable inputs (small integers in floats),
 *    N = 1, 2, 3, 4 and a different number of pairs per rank (zero included), f32 and f16, with
 *    the wire bytes against the ring formula;
 *  - the compressor against a serial model of the documented rules (Top-k by sort per layer or
 *    whole, residual, paper vote and majority, dense steps that flush the residual, gain ladder),
 *    bitwise, step by step, on every rank, with its stats and exact byte counts;
 *  - error feedback conserves mass: sent + residual == sum of gradients after every step, per
 *    layer and whole, f32 and f16, including dense steps (exact with integers; within rounding
 *    with random floats);
 *  - policy switching: paper votes and the >= half majority for even and odd N, the relative norm
 *    loss of a known gradient; gain: the ratio walks down the ladder, clamps, and steps back up;
 *  - determinism: two runs and two thread counts give bitwise equal results on every rank;
 *  - binary16: all 65536 halves round trip, rounding against F16C hardware, error bounds;
 *  - ResNet-20's layout (272,474 parameters) through sd_net_trainable_layout: >= 4.5x fewer bytes;
 *  - argument errors.
 * Device threads never touch the harness counters: they record into per-rank slots that the
 * main thread checks after joining them. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/compress.h"
#include "engine/models.h"
#include "kernels/backend.h"
#include "tests/harness.h"
#include "tests/ref/ref_topk.h"

#define MAXR 4
#define MAXL 8
#define MAXSTEPS 48

static uint64_t mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    sd_test_rng r = {a * 0x9E3779B97F4A7C15ull ^ (b + 0x51ull) * 0xBF58476D1CE4E5B9ull ^ (c + 7) * 0x94D049BB133111EBull ^ d};
    sd_test_next(&r);
    return sd_test_next(&r);
}

/* ---- binary16 -------------------------------------------------------------------------------- */
static void test_f16(void) {
    /* every half round-trips (NaN stays NaN) */
    long bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sd_f16_to_f32((uint16_t)h);
        uint16_t back = sd_f32_to_f16(f);
        int is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (is_nan ? !isnan(f) || (back & 0x7c00) != 0x7c00 || !(back & 0x3ff) : back != h) bad++;
    }
    EXPECT(bad == 0, "%ld halves do not round trip", bad);
    /* known values */
    EXPECT(sd_f32_to_f16(1.0f) == 0x3c00 && sd_f32_to_f16(-2.0f) == 0xc000 && sd_f32_to_f16(65504.0f) == 0x7bff,
           "1, -2, 65504 encode wrongly");
    EXPECT(sd_f32_to_f16(65519.0f) == 0x7bff && sd_f32_to_f16(65520.0f) == 0x7c00 && sd_f32_to_f16(1e9f) == 0x7c00,
           "overflow: 65519 -> max, 65520 -> inf");
    EXPECT(sd_f32_to_f16(0x1p-24f) == 0x0001 && sd_f32_to_f16(0x1p-25f) == 0x0000 && sd_f32_to_f16(0x1.8p-25f) == 0x0001,
           "subnormal rounding at 2^-24");
    EXPECT(sd_f32_to_f16(-0.0f) == 0x8000 && isnan(sd_f16_to_f32(sd_f32_to_f16(NAN))), "-0 and NaN");
    EXPECT(sd_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && sd_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02,
           "ties to even at 1 + 2^-11 and 1 + 3*2^-11");
    /* error bounds on random floats over the whole range, and F16C when the CPU has it */
    sd_test_rng r = {77};
    long over = 0, hw = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)sd_test_next(&r);
        if (i % 2) u = (u & 0x80000000u) | (0x33000000u + u % (0x47800000u - 0x33000000u)); /* 2^-25 .. 65536 */
        float x;
        memcpy(&x, &u, 4);
        uint16_t h = sd_f32_to_f16(x);
        float y = sd_f16_to_f32(h);
        double ax = fabs((double)x);
        if (!isnan(x) && ax <= 65504.0) {
            double err = fabs((double)y - (double)x);
            double bound = ax >= 0x1p-14 ? ax * 0x1p-11 : 0x1p-25; /* half an ulp */
            if (err > bound) over++;
        }
#if defined(__F16C__)
        uint16_t ref = (uint16_t)_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT);
        if (isnan(x) ? !isnan(sd_f16_to_f32(ref)) || !isnan(y) : ref != h) hw++;
#endif
    }
    EXPECT(over == 0, "%ld conversions beyond half an ulp", over);
    EXPECT(hw == 0, "%ld conversions differ from F16C", hw);
}

/* ---- running ranks --------------------------------------------------------------------------- */
typedef void (*rank_fn)(void *arg, sd_comm_local_group *g, sd_comm *c);
typedef struct targ { void *arg; sd_comm_local_group *g; int rank; rank_fn fn; } targ;

static void *thread_main(void *p) {
    targ *t = p;
    t->fn(t->arg, t->g, sd_comm_local_get(t->g, t->rank));
    return NULL;
}

static int run_group(int n, rank_fn fn, void *arg) {
    sd_comm_local_group *g = NULL;
    if (sd_comm_local_group_create(n, &g) != SD_OK) return -1;
    sd_comm_local_set_timeout(g, 60);
    pthread_t th[MAXR];
    targ ta[MAXR];
    for (int r = 0; r < n; r++) {
        ta[r] = (targ){arg, g, r, fn};
        pthread_create(&th[r], NULL, thread_main, &ta[r]);
    }
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
    sd_comm_local_group_destroy(g);
    return 0;
}

/* ---- the sparse allgather on its own ----------------------------------------------------------- */
#define SG_COUNT 1000
static size_t sg_pairs(int r) { return r == 1 ? 0 : (size_t)(r * 37 + 11) % 97 + 3; } /* rank 1 sends nothing */
static uint32_t sg_index(int r, size_t p) { return (uint32_t)((p * (size_t)(r + 3) * 7 + (size_t)r) % SG_COUNT); }
static float sg_value(int r, size_t p) { return (float)((int)((p + (size_t)r) % 9) - 4) * (float)(r + 1); }

typedef struct sg_arg { bool f16; long wrong[MAXR]; int bad[MAXR]; uint64_t bytes[MAXR]; } sg_arg;

static int cmp_pair(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    return *x < *y ? -1 : *x > *y;
}

/* Rank r's pairs sorted by index (duplicate indices allowed: they add up). */
static void sg_make(int r, uint32_t *idx, float *val) {
    size_t np = sg_pairs(r);
    uint64_t *pv = malloc((np ? np : 1) * sizeof *pv);
    for (size_t p = 0; p < np; p++) pv[p] = ((uint64_t)sg_index(r, p) << 32) | (uint64_t)p;
    qsort(pv, np, sizeof *pv, cmp_pair);
    for (size_t p = 0; p < np; p++) {
        idx[p] = (uint32_t)(pv[p] >> 32);
        val[p] = sg_value(r, (size_t)(uint32_t)pv[p]);
    }
    free(pv);
}

static void fn_sparse(void *argp, sd_comm_local_group *g, sd_comm *c) {
    sg_arg *a = argp;
    (void)g;
    const int r = c->rank;
    uint32_t idx[128];
    float val[128], out[SG_COUNT], ref[SG_COUNT];
    sg_make(r, idx, val);
    sd_status s = sd_sparse_allgather_sum(c, 2, idx, val, sg_pairs(r), a->f16, out, SG_COUNT, &a->bytes[r]);
    if (s != SD_OK) {
        a->bad[r]++;
        fprintf(stderr, "rank %d: %s\n", r, sd_last_error());
        return;
    }
    memset(ref, 0, sizeof ref);
    for (int j = 0; j < c->size; j++) {
        uint32_t ij[128];
        float vj[128];
        sg_make(j, ij, vj);
        for (size_t p = 0; p < sg_pairs(j); p++) ref[ij[p]] += vj[p];
    }
    for (size_t i = 0; i < SG_COUNT; i++)
        if (out[i] != ref[i]) a->wrong[r]++;
}

static void test_sparse_allgather(void) {
    for (int f = 0; f < 2; f++)
        for (int n = 1; n <= 4; n++) {
            sg_arg a;
            memset(&a, 0, sizeof a);
            a.f16 = f;
            run_group(n, fn_sparse, &a);
            long wrong = 0;
            int bad = 0;
            size_t sizes[MAXR];
            for (int r = 0; r < n; r++) {
                wrong += a.wrong[r];
                bad += a.bad[r];
                sizes[r] = SD_COMPRESS_HEADER_BYTES + sg_pairs(r) * (f ? 6 : 8);
            }
            EXPECT(bad == 0 && wrong == 0, "sparse allgather n=%d %s: %d failed, %ld wrong elements across ranks", n,
                   f ? "f16" : "f32", bad, wrong);
            for (int r = 0; r < n; r++) {
                uint64_t want = sd_comm_ring_allgather_bytes(sizes, r, n) + (uint64_t)(n - 1) * 8;
                EXPECT(a.bytes[r] == want, "sparse allgather n=%d rank %d: %llu bytes, ring formula %llu", n, r,
                       (unsigned long long)a.bytes[r], (unsigned long long)want);
            }
        }
}

/* ---- scenarios: N ranks with compressors, and a serial model of the rules -------------------- */
typedef enum { G_INT, G_FLOAT, G_SCHED } gen_kind;
typedef enum { K_INT, K_CONC, K_DIFF, K_SPIKY, K_UNIF } sched_kind;

typedef struct scen {
    const char *name;
    sd_compress_config cfg;
    size_t count;
    int nlayers;
    size_t off[MAXL], cnt[MAXL];
    int n, steps, threads;
    gen_kind gen;
    uint64_t seed;
    unsigned char sched[MAXR][MAXSTEPS];
    /* results per rank */
    float *out[MAXR], *res[MAXR];  /* steps x count: the exchanged sum and the residual after each step */
    sd_compress_step st[MAXR][MAXSTEPS];
    uint64_t comm_wire[MAXR];
    int bad[MAXR];
} scen;

static void scen_layers(scen *sc, int nl, const size_t *cnt) {
    sc->nlayers = nl;
    size_t off = 0;
    for (int l = 0; l < nl; l++) {
        sc->off[l] = off;
        sc->cnt[l] = cnt[l];
        off += cnt[l];
    }
    sc->count = off;
}

static void gen(const scen *sc, int r, int t, float *g) {
    sched_kind kind = sc->gen == G_SCHED ? (sched_kind)sc->sched[r][t] : K_INT;
    for (size_t i = 0; i < sc->count; i++) {
        uint64_t h = mix(sc->seed, (uint64_t)r, (uint64_t)t, i);
        float sign = (h >> 40) & 1 ? -1.0f : 1.0f;
        if (sc->gen == G_FLOAT) {
            g[i] = ((float)(h >> 11) * 0x1p-53f * 2.0f - 1.0f) * ((h & 7) == 0 ? 10.0f : 0.1f);
            continue;
        }
        switch (kind) {
        case K_INT: g[i] = (float)((int)(h % 17) - 8); break;
        case K_CONC: g[i] = (float)((int)(h % 3) - 1); break; /* spikes below */
        case K_DIFF: g[i] = 8.0f * sign; break;
        case K_SPIKY: g[i] = (i % 40 == 0) ? 10000.0f * (float)(1 + i % 7) * sign : sign; break;
        case K_UNIF: g[i] = sign; break;
        }
    }
    if (kind == K_CONC) /* one big entry per layer */
        for (int l = 0; l < sc->nlayers; l++) g[sc->off[l] + ((size_t)t * 7 + (size_t)r) % sc->cnt[l]] = 1000.0f;
}

static void fn_scen(void *argp, sd_comm_local_group *grp, sd_comm *c) {
    scen *sc = argp;
    const int r = c->rank;
    sd_compressor *z = NULL;
    float *g = malloc(sc->count * sizeof *g);
    if (sd_compressor_create(&sc->cfg, sc->count, sc->nlayers, sc->off, sc->cnt, sc->threads, &z) != SD_OK) {
        fprintf(stderr, "%s rank %d: %s\n", sc->name, r, sd_last_error());
        sc->bad[r]++;
        sd_comm_local_abort(grp, r, "compressor create failed");
        free(g);
        return;
    }
    for (int t = 0; t < sc->steps; t++) {
        gen(sc, r, t, g);
        if (sd_compress_exchange(z, c, g, &sc->st[r][t]) != SD_OK) {
            fprintf(stderr, "%s rank %d step %d: %s\n", sc->name, r, t, sd_last_error());
            sc->bad[r]++;
            sd_comm_local_abort(grp, r, "exchange failed");
            break;
        }
        memcpy(sc->out[r] + (size_t)t * sc->count, g, sc->count * sizeof *g);
        memcpy(sc->res[r] + (size_t)t * sc->count, sd_compressor_residual(z), sc->count * sizeof *g);
    }
    sc->comm_wire[r] = sd_comm_wire_bytes(c);
    sd_compressor_destroy(z);
    free(g);
}

static void scen_run(scen *sc) {
    for (int r = 0; r < sc->n; r++) {
        sc->out[r] = calloc((size_t)sc->steps * sc->count, sizeof(float));
        sc->res[r] = calloc((size_t)sc->steps * sc->count, sizeof(float));
        sc->bad[r] = 0;
    }
    run_group(sc->n, fn_scen, sc);
}

static void scen_free(scen *sc) {
    for (int r = 0; r < sc->n; r++) {
        free(sc->out[r]);
        free(sc->res[r]);
        sc->out[r] = sc->res[r] = NULL;
    }
}

static int scen_bad(const scen *sc) {
    int b = 0;
    for (int r = 0; r < sc->n; r++) b += sc->bad[r];
    return b;
}

/* The model: the documented rules written the plain way (sort-based Top-k, naive norms). */
static float wire_value(float v, bool f16) {
    if (!f16) return v;
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    return sd_f16_to_f32(sd_f32_to_f16(v));
}

typedef struct model {
    float *res[MAXR];
    double loss_sum[MAXR];
    float *u[MAXR]; /* momentum correction: the velocity */
    uint64_t steps;
    int level, wsteps;
    double wsum;
} model;

/* Checks scenario results against the model, step by step; returns the number of mismatches. */
static long scen_check(scen *sc) {
    const size_t count = sc->count;
    const int n = sc->n;
    const sd_compress_config *cfg = &sc->cfg;
    model m;
    memset(&m, 0, sizeof m);
    float *a[MAXR], *sent[MAXR], *out = malloc(count * sizeof *out);
    unsigned char *sel[MAXR];
    for (int r = 0; r < n; r++) {
        m.res[r] = calloc(count, sizeof(float));
        m.u[r] = calloc(count, sizeof(float));
        a[r] = malloc(count * sizeof(float));
        sent[r] = malloc(count * sizeof(float));
        sel[r] = malloc(count);
    }
    const double gf = cfg->gain_factor > 0 ? cfg->gain_factor : SD_COMPRESS_GAIN_FACTOR;
    const int gw = cfg->gain_window > 0 ? cfg->gain_window : SD_COMPRESS_GAIN_WINDOW;
    int nlev = 1;
    while (nlev < 64 && fmax(cfg->min_ratio, cfg->max_ratio / pow(gf, nlev - 1)) > cfg->min_ratio) nlev++;
    long wrong = 0;
    for (int t = 0; t < sc->steps; t++) {
        double ratio = cfg->policy == SD_COMPRESS_GAIN ? fmax(cfg->min_ratio, cfg->max_ratio / pow(gf, m.level))
                       : cfg->policy == SD_COMPRESS_OFF ? 0 : cfg->ratio;
        int votes = 0, vote[MAXR];
        double gain[MAXR];
        size_t np = 0;
        for (int r = 0; r < n; r++) {
            gen(sc, r, t, a[r]);
            if (cfg->momentum > 0) /* u = momentum x u + g; a = u + residual */
                for (size_t i = 0; i < count; i++) {
                    m.u[r][i] = (float)cfg->momentum * m.u[r][i] + a[r][i];
                    a[r][i] = m.u[r][i];
                }
            for (size_t i = 0; i < count; i++) a[r][i] += m.res[r][i];
            memset(sel[r], 0, count);
            memset(sent[r], 0, count * sizeof(float));
            np = 0;
            if (cfg->policy != SD_COMPRESS_OFF) {
                if (cfg->per_layer) {
                    for (int l = 0; l < sc->nlayers; l++) {
                        size_t kk = ref_topk_k(ratio, sc->cnt[l]);
                        ref_topk_select(a[r], sc->off[l], sc->cnt[l], kk, sel[r]);
                        np += kk;
                    }
                } else {
                    np = ref_topk_k(ratio, count);
                    ref_topk_select(a[r], 0, count, np, sel[r]);
                }
            }
            double na2 = 0, nc2 = 0;
            for (size_t i = 0; i < count; i++) {
                na2 += (double)a[r][i] * a[r][i];
                if (sel[r][i]) {
                    sent[r][i] = wire_value(a[r][i], cfg->f16_values);
                    nc2 += (double)sent[r][i] * sent[r][i];
                }
            }
            double na = sqrt(na2), nc = sqrt(nc2);
            gain[r] = na > 0 ? nc / na : 1.0;
            double loss = na > 0 ? fabs(na - nc) / na : 0;
            m.loss_sum[r] += loss;
            vote[r] = m.loss_sum[r] / (double)(m.steps + 1) <= cfg->delta;
            votes += vote[r];
            /* the stats this rank reports */
            const sd_compress_step *s = &sc->st[r][t];
            if (cfg->policy != SD_COMPRESS_OFF &&
                (fabs(s->rel_loss - loss) > 1e-12 || fabs(s->gain - gain[r]) > 1e-12 || fabs(s->norm - na) > 1e-9 * na)) {
                if (wrong < 5)
                    fprintf(stderr, "%s step %d rank %d: loss %.9g gain %.9g norm %.9g, model %.9g %.9g %.9g\n", sc->name,
                            t, r, s->rel_loss, s->gain, s->norm, loss, gain[r], na);
                wrong++;
            }
        }
        bool sparse = cfg->policy == SD_COMPRESS_ALWAYS || cfg->policy == SD_COMPRESS_GAIN ||
                      (cfg->policy == SD_COMPRESS_PAPER && 2 * votes >= n);
        if (sparse) {
            memset(out, 0, count * sizeof *out);
            for (int r = 0; r < n; r++)
                for (size_t i = 0; i < count; i++)
                    if (sel[r][i]) {
                        out[i] += sent[r][i];
                        m.res[r][i] = a[r][i] - sent[r][i];
                        m.u[r][i] = 0.0f; /* masking */
                    } else {
                        m.res[r][i] = a[r][i];
                    }
        } else {
            for (size_t i = 0; i < count; i++) {
                out[i] = a[0][i];
                for (int r = 1; r < n; r++) out[i] += a[r][i];
            }
            for (int r = 0; r < n; r++) memset(m.res[r], 0, count * sizeof(float));
        }
        m.steps++;
        const size_t mb = SD_COMPRESS_HEADER_BYTES + np * (cfg->f16_values ? 6 : 8);
        for (int r = 0; r < n; r++) {
            const sd_compress_step *s = &sc->st[r][t];
            size_t diff = 0;
            for (size_t i = 0; i < count; i++) {
                diff += memcmp(&sc->out[r][(size_t)t * count + i], &out[i], sizeof(float)) != 0;
                diff += memcmp(&sc->res[r][(size_t)t * count + i], &m.res[r][i], sizeof(float)) != 0;
            }
            bool voted = cfg->policy == SD_COMPRESS_PAPER;
            uint64_t bytes = (voted ? sd_comm_ring_allreduce_bytes(1, sizeof(int), r, n) : 0) +
                             (sparse ? (uint64_t)(n - 1) * mb : sd_comm_ring_allreduce_bytes(count, 4, r, n));
            bool stats_ok = s->compressed == sparse && s->voted == voted && s->bytes_sent == bytes &&
                            s->dense_bytes == count * 4 && s->payload_bytes == (sparse ? mb : count * 4) &&
                            s->pairs == (sparse ? np : 0) && s->gathered_bytes == (sparse ? mb * (size_t)n : count * 4) &&
                            fabs(s->ratio - ratio) < 1e-15;
            if (cfg->policy == SD_COMPRESS_PAPER) stats_ok = stats_ok && s->vote == vote[r] && s->votes == votes;
            if (diff || !stats_ok) {
                if (wrong < 5)
                    fprintf(stderr,
                            "%s step %d rank %d: %zu values differ from the model; compressed %d (model %d), votes %d "
                            "(model %d), bytes %llu (model %llu), pairs %llu (model %zu), ratio %g (model %g)\n",
                            sc->name, t, r, diff, s->compressed, sparse, s->votes, votes,
                            (unsigned long long)s->bytes_sent, (unsigned long long)bytes, (unsigned long long)s->pairs,
                            sparse ? np : 0, s->ratio, ratio);
                wrong++;
            }
        }
        if (cfg->policy == SD_COMPRESS_GAIN) {
            double gs = 0;
            for (int r = 0; r < n; r++) gs += (double)(float)gain[r];
            m.wsum += gs / n;
            if (++m.wsteps >= gw) {
                double w = m.wsum / m.wsteps;
                if (w >= cfg->epsilon) {
                    if (m.level < nlev - 1) m.level++;
                } else if (m.level > 0) {
                    m.level--;
                }
                m.wsteps = 0;
                m.wsum = 0;
            }
        }
    }
    for (int r = 0; r < n; r++) {
        free(m.res[r]);
        free(m.u[r]);
        free(a[r]);
        free(sent[r]);
        free(sel[r]);
    }
    free(out);
    return wrong;
}

static sd_compress_config cfg_of(sd_compress_policy p, double ratio, bool per_layer, bool f16) {
    sd_compress_config c;
    sd_compress_config_default(&c);
    c.policy = p;
    c.ratio = ratio;
    c.per_layer = per_layer;
    c.f16_values = f16;
    return c;
}

static const size_t layers_a[] = {300, 17, 1000, 3, 250, 64}; /* 1634 floats */

/* Exact checks against the model: always and paper, per layer and whole, f32 and f16, N = 1..4,
 * small integers (exact sums), plus the byte counters of the communicator. */
static void test_model_exact(void) {
    static scen sc;
    for (int pol = 0; pol < 3; pol++)
        for (int pl = 0; pl < 2; pl++)
            for (int f = 0; f < 2; f++)
                for (int n = 1; n <= 4; n++) {
                    memset(&sc, 0, sizeof sc);
                    sd_compress_policy p = pol == 0 ? SD_COMPRESS_ALWAYS : pol == 1 ? SD_COMPRESS_PAPER
                                                                                             : SD_COMPRESS_OFF;
                    sc.cfg = cfg_of(p, pol == 1 ? 0.05 : 0.1, pl, f);
                    sc.name = "model";
                    scen_layers(&sc, 6, layers_a);
                    sc.n = n;
                    sc.steps = 12;
                    sc.threads = 1 + (n % 2);
                    sc.seed = 100 + (uint64_t)(pol * 16 + pl * 8 + f * 4 + n);
                    sc.gen = G_INT;
                    scen_run(&sc);
                    long w = scen_check(&sc);
                    EXPECT(scen_bad(&sc) == 0 && w == 0, "policy %d per_layer %d f16 %d n=%d: %d failures, %ld mismatches",
                           (int)p, pl, f, n, scen_bad(&sc), w);
                    uint64_t sum = 0;
                    for (int t = 0; t < sc.steps; t++) sum += sc.st[0][t].bytes_sent;
                    EXPECT(sum == sc.comm_wire[0], "bytes_sent over the steps %llu, communicator counted %llu",
                           (unsigned long long)sum, (unsigned long long)sc.comm_wire[0]);
                    scen_free(&sc);
                }
}

/* The paper schedule for N ranks: phases of concentrated and diffuse gradients so that the
 * running mean crosses delta both ways. */
static const char *mix_sched = "CCCDDDDDDDCCCCCCCCCCCCDDDDDDDDDDCCCCCCCCCCCC";

/* Momentum correction (DGC) against the model: always and paper (a schedule that switches dense
 * and sparse), per layer and whole, f32 and f16, N = 1..3, momentum 0.5 on small integers (every
 * value dyadic, so exact); the velocity survives dense steps and is cleared where sent. */
static void test_momentum_correction(void) {
    static scen sc;
    for (int pol = 0; pol < 2; pol++)
        for (int pl = 0; pl < 2; pl++)
            for (int f = 0; f < 2; f++)
                for (int n = 1; n <= 3; n++) {
                    memset(&sc, 0, sizeof sc);
                    sc.name = "momentum";
                    sc.cfg = cfg_of(pol ? SD_COMPRESS_PAPER : SD_COMPRESS_ALWAYS, 0.1, pl, f);
                    sc.cfg.momentum = 0.5;
                    scen_layers(&sc, 6, layers_a);
                    sc.n = n;
                    const char *ms = "DDDDCCCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"; /* dense first, then both */
                    sc.steps = pol ? (int)strlen(ms) : 12;
                    sc.threads = 2;
                    sc.seed = 900 + (uint64_t)(pol * 16 + pl * 8 + f * 4 + n);
                    sc.gen = pol ? G_SCHED : G_INT;
                    for (int r = 0; r < n; r++)
                        for (int t = 0; t < sc.steps; t++) sc.sched[r][t] = ms[t] == 'C' ? K_CONC : K_DIFF;
                    scen_run(&sc);
                    long w = scen_check(&sc);
                    int dense = 0, sparse = 0;
                    for (int t = 0; t < sc.steps; t++) {
                        dense += !sc.st[0][t].compressed;
                        sparse += sc.st[0][t].compressed;
                    }
                    EXPECT(scen_bad(&sc) == 0 && w == 0, "momentum policy %d per_layer %d f16 %d n=%d: %d failures, "
                           "%ld mismatches with the model", pol, pl, f, n, scen_bad(&sc), w);
                    EXPECT(sparse > 0 && (pol == 0 || dense > 0), "momentum policy %d: dense %d sparse %d steps", pol,
                           dense, sparse);
                    scen_free(&sc);
                }
    /* the velocity for checkpoints: present only with momentum correction, shape checked */
    sd_compress_config c = cfg_of(SD_COMPRESS_ALWAYS, 0.1, true, false);
    size_t off = 0, cnt = 100;
    sd_compressor *z = NULL;
    float v[100] = {0};
    EXPECT_OK(sd_compressor_create(&c, 100, 1, &off, &cnt, 1, &z));
    EXPECT(sd_compressor_velocity(z) == NULL, "no velocity without momentum correction");
    EXPECT_FAIL(sd_compressor_set_velocity(z, v, 100), SD_ERR_INVALID, "momentum_correction");
    sd_compressor_destroy(z);
    c.momentum = 0.9;
    EXPECT_OK(sd_compressor_create(&c, 100, 1, &off, &cnt, 1, &z));
    EXPECT(sd_compressor_velocity(z) != NULL, "a velocity with momentum correction");
    EXPECT_FAIL(sd_compressor_set_velocity(z, v, 99), SD_ERR_SHAPE, "velocity");
    v[7] = 3.0f;
    EXPECT_OK(sd_compressor_set_velocity(z, v, 100));
    EXPECT(sd_compressor_velocity(z)[7] == 3.0f, "velocity restored");
    sd_compressor_destroy(z);
    c.momentum = 1.0;
    EXPECT_FAIL(sd_compressor_create(&c, 100, 1, &off, &cnt, 1, &z), SD_ERR_INVALID, "momentum");
}

/* Paper with time awareness: a gradient whose Top-k keeps nearly all its norm votes to compress
 * unless the caller says compressing cannot pay (set_eligible false), and again once it can. */
static void test_eligible(void) {
    sd_comm_local_group *g = NULL;
    EXPECT_OK(sd_comm_local_group_create(1, &g));
    sd_comm *c = sd_comm_local_get(g, 0);
    sd_compress_config cfg = cfg_of(SD_COMPRESS_PAPER, 0.1, true, false);
    size_t off = 0, cnt = 1000;
    sd_compressor *z = NULL;
    EXPECT_OK(sd_compressor_create(&cfg, cnt, 1, &off, &cnt, 1, &z));
    float x[1000];
    const bool eligible[4] = {false, true, false, true};
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 1000; i++) x[i] = i % 100 == 7 ? 100.0f : 0.001f; /* 10 spikes: Top-100 keeps them */
        sd_compressor_set_eligible(z, eligible[t]);
        sd_compress_step s;
        EXPECT_OK(sd_compress_exchange(z, c, x, &s));
        EXPECT(s.rel_loss < 0.01 && s.vote == (int)eligible[t] && s.compressed == eligible[t],
               "step %d eligible %d: loss %g vote %d compressed %d", t, eligible[t], s.rel_loss, s.vote, s.compressed);
    }
    sd_compressor_set_eligible(NULL, true); /* NULL is ignored */
    sd_compressor_destroy(z);
    sd_comm_local_group_destroy(g);
}

/* sum over steps of what was sent + residual == sum of gradients, after every step. With n = 1
 * the exchanged sum is exactly what the device sent; with n > 1 the sums run over ranks too. */
static long mass_check(const scen *sc, double tol, bool *saw_dense, bool *saw_sparse) {
    const size_t count = sc->count;
    double *sent = calloc(count, sizeof(double)), *gs = calloc(count, sizeof(double));
    float *g = malloc(count * sizeof *g);
    long bad = 0;
    for (int t = 0; t < sc->steps; t++) {
        for (int r = 0; r < sc->n; r++) {
            gen(sc, r, t, g);
            for (size_t i = 0; i < count; i++) gs[i] += g[i];
        }
        for (size_t i = 0; i < count; i++) sent[i] += sc->out[0][(size_t)t * count + i];
        double scale = 0;
        for (size_t i = 0; i < count; i++) scale = fmax(scale, fabs(gs[i]));
        for (size_t i = 0; i < count; i++) {
            double res = 0;
            for (int r = 0; r < sc->n; r++) res += sc->res[r][(size_t)t * count + i];
            if (fabs(sent[i] + res - gs[i]) > tol * (scale + 1)) bad++;
        }
        if (sc->st[0][t].compressed) *saw_sparse = true;
        else {
            *saw_dense = true;
            for (int r = 0; r < sc->n; r++) /* a dense step flushes the residual */
                for (size_t i = 0; i < count; i++)
                    if (sc->res[r][(size_t)t * count + i] != 0.0f) bad++;
        }
    }
    free(sent);
    free(gs);
    free(g);
    return bad;
}


static void test_mass(void) {
    static scen sc;
    for (int pl = 0; pl < 2; pl++)
        for (int f = 0; f < 2; f++)
            for (int fl = 0; fl < 2; fl++)
                for (int n = 1; n <= 3; n += 2) {
                    memset(&sc, 0, sizeof sc);
                    sc.name = "mass";
                    sc.cfg = cfg_of(SD_COMPRESS_PAPER, 0.1, pl, f);
                    scen_layers(&sc, 6, layers_a);
                    sc.n = n;
                    sc.steps = (int)strlen(mix_sched);
                    sc.threads = 2;
                    sc.seed = 500 + (uint64_t)(pl * 8 + f * 4 + fl * 2 + n);
                    sc.gen = fl ? G_FLOAT : G_SCHED;
                    if (fl) sc.cfg.policy = SD_COMPRESS_ALWAYS; /* random floats: no schedule */
                    for (int r = 0; r < n; r++)
                        for (int t = 0; t < sc.steps; t++) sc.sched[r][t] = mix_sched[t] == 'C' ? K_CONC : K_DIFF;
                    scen_run(&sc);
                    bool dense = false, sparse = false;
                    long bad = mass_check(&sc, fl ? 1e-5 : 0.0, &dense, &sparse);
                    EXPECT(scen_bad(&sc) == 0 && bad == 0,
                           "mass per_layer %d f16 %d floats %d n=%d: %ld elements where sent + residual != sum of "
                           "gradients (or a dense step left a residual)", pl, f, fl, n, bad);
                    if (!fl) {
                        EXPECT(dense && sparse, "mass per_layer %d f16 %d n=%d: the schedule gave dense %d sparse %d "
                               "(both needed)", pl, f, n, dense, sparse);
                        long w = scen_check(&sc);
                        EXPECT(w == 0, "mass schedule per_layer %d f16 %d n=%d: %ld mismatches with the model", pl, f, n, w);
                    }
                    scen_free(&sc);
                }
}

/* Paper: votes and the >= half majority, one step. conc: which ranks get a concentrated gradient. */
static void vote_case(int n, unsigned conc, bool want_sparse) {
    static scen sc;
    memset(&sc, 0, sizeof sc);
    sc.name = "vote";
    sc.cfg = cfg_of(SD_COMPRESS_PAPER, 0.1, true, false);
    scen_layers(&sc, 6, layers_a);
    sc.n = n;
    sc.steps = 1;
    sc.threads = 1;
    sc.gen = G_SCHED;
    sc.seed = 9;
    int nv = 0;
    for (int r = 0; r < n; r++) {
        sc.sched[r][0] = (conc >> r) & 1 ? K_CONC : K_DIFF;
        nv += (conc >> r) & 1;
    }
    scen_run(&sc);
    EXPECT(scen_bad(&sc) == 0, "vote n=%d: failures", n);
    /* diffuse: every |a| equal, so ||C(a)|| / ||a|| = sqrt(K / count) exactly */
    double K = 0;
    for (int l = 0; l < 6; l++) K += (double)ref_topk_k(0.1, layers_a[l]);
    const double loss_diffuse = 1.0 - sqrt(K / (double)sc.count);
    for (int r = 0; r < n; r++) {
        const sd_compress_step *s = &sc.st[r][0];
        bool c = (conc >> r) & 1;
        EXPECT(s->vote == (int)c && s->votes == nv && s->compressed == want_sparse && s->voted,
               "vote n=%d rank %d: vote %d votes %d compressed %d, want %d %d %d", n, r, s->vote, s->votes, s->compressed,
               c, nv, want_sparse);
        if (c) EXPECT(s->rel_loss < 0.01, "concentrated gradient: relative loss %g", s->rel_loss);
        else EXPECT(fabs(s->rel_loss - loss_diffuse) < 1e-12 && s->mean_loss == s->rel_loss,
                    "diffuse gradient: relative loss %.12g, want 1 - sqrt(%g/%zu) = %.12g", s->rel_loss, K, sc.count,
                    loss_diffuse);
    }
    EXPECT(scen_check(&sc) == 0, "vote n=%d: mismatch with the model", n);
    scen_free(&sc);
}

static void test_votes(void) {
    vote_case(4, 0x3, true);  /* 2 of 4: at least half */
    vote_case(4, 0x1, false); /* 1 of 4 */
    vote_case(3, 0x5, true);  /* 2 of 3 */
    vote_case(3, 0x4, false); /* 1 of 3: less than half */
    vote_case(2, 0x2, true);  /* 1 of 2 */
    vote_case(1, 0x0, false);
    vote_case(1, 0x1, true);
}

/* Gain: ratio ladder 0.1, 0.05, 0.025 (min), window 3, epsilon 0.9. */
static void gain_case(const char *name, const char *kinds, const double *want_ratio) {
    static scen sc;
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    sc.cfg = cfg_of(SD_COMPRESS_GAIN, 0.1, false, false);
    sc.cfg.min_ratio = 0.025;
    sc.cfg.max_ratio = 0.1;
    sc.cfg.epsilon = 0.9;
    sc.cfg.gain_window = 3;
    const size_t one[] = {4000};
    scen_layers(&sc, 1, one);
    sc.n = 2;
    sc.steps = (int)strlen(kinds);
    sc.threads = 2;
    sc.gen = G_SCHED;
    sc.seed = 31;
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < sc.steps; t++) sc.sched[r][t] = kinds[t] == 'S' ? K_SPIKY : K_UNIF;
    scen_run(&sc);
    EXPECT(scen_bad(&sc) == 0, "%s: failures", name);
    int off = 0;
    for (int t = 0; t < sc.steps; t++)
        if (sc.st[0][t].ratio != want_ratio[t] || sc.st[1][t].ratio != want_ratio[t]) off++;
    EXPECT(off == 0, "%s: %d steps used another ratio than the ladder rule gives", name, off);
    for (int t = 0; t + 1 < sc.steps; t++)
        EXPECT(sc.st[0][t].next_ratio == sc.st[0][t + 1].ratio, "%s step %d: next_ratio %g but the next step used %g",
               name, t, sc.st[0][t].next_ratio, sc.st[0][t + 1].ratio);
    long w = scen_check(&sc);
    EXPECT(w == 0, "%s: %ld mismatches with the model", name, w);
    scen_free(&sc);
}

static void test_gain(void) {
    /* spiky: the Top-k keeps almost all the norm at every level: walk down, clamp at min */
    const double down[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025};
    gain_case("gain spiky", "SSSSSSSSSSSS", down);
    /* uniform: the gain stays ~ sqrt(ratio) < epsilon: clamp at max */
    const double stay[] = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
    gain_case("gain uniform", "UUUUUUUUU", stay);
    /* spiky then uniform: down twice, then back up twice */
    const double back[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.05, 0.05, 0.05, 0.1, 0.1, 0.1};
    gain_case("gain down and up", "SSSSSSUUUUUUUUU", back);
}

/* Two runs, and two thread counts, bitwise equal; every rank holds the same sum. */
static void test_determinism(void) {
    static scen a, b;
    const sd_compress_policy pols[] = {SD_COMPRESS_ALWAYS, SD_COMPRESS_PAPER, SD_COMPRESS_GAIN};
    for (int p = 0; p < 3; p++) {
        memset(&a, 0, sizeof a);
        a.name = "determinism";
        a.cfg = cfg_of(pols[p], 0.1, p != 1, p == 2);
        a.cfg.delta = 0.7;
        a.cfg.gain_window = 2;
        a.cfg.epsilon = 0.5;
        scen_layers(&a, 6, layers_a);
        a.n = 3;
        a.steps = 10;
        a.threads = 1;
        a.gen = G_FLOAT;
        a.seed = 4242;
        b = a;
        b.threads = 2;
        scen_run(&a);
        scen_run(&b);
        size_t differ = 0, ranks = 0;
        for (int r = 0; r < 3; r++) {
            differ += (size_t)memcmp(a.out[r], b.out[r], (size_t)a.steps * a.count * sizeof(float)) != 0;
            differ += (size_t)memcmp(a.res[r], b.res[r], (size_t)a.steps * a.count * sizeof(float)) != 0;
            ranks += (size_t)memcmp(a.out[r], a.out[0], (size_t)a.steps * a.count * sizeof(float)) != 0;
        }
        EXPECT(scen_bad(&a) + scen_bad(&b) == 0 && differ == 0 && ranks == 0,
               "policy %d: %zu rank results differ between runs, %zu ranks hold another sum than rank 0", (int)pols[p],
               differ, ranks);
        scen_free(&a);
        scen_free(&b);
        /* a third run with the same threads */
        a.threads = 1;
        memset(a.out, 0, sizeof a.out);
        scen_run(&a);
        static scen c;
        c = a;
        memset(c.out, 0, sizeof c.out);
        memset(c.res, 0, sizeof c.res);
        scen_run(&c);
        differ = 0;
        for (int r = 0; r < 3; r++)
            differ += (size_t)memcmp(a.out[r], c.out[r], (size_t)a.steps * a.count * sizeof(float)) != 0;
        EXPECT(differ == 0, "policy %d: two runs differ", (int)pols[p]);
        scen_free(&a);
        scen_free(&c);
    }
}

/* ResNet-20's layout: parameters, layers and the bytes at ratio 0.1 (per layer). */
static void test_resnet20(void) {
    sd_backend be;
    if (sd_backend_cpu_create(&be, 1) != SD_OK) {
        EXPECT(0, "cpu backend: %s", sd_last_error());
        return;
    }
    sd_model_spec spec = {.name = "resnet20", .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    sd_net *net = NULL;
    EXPECT_OK(sd_model_build(&be, &spec, 1, &net));
    if (net) {
        EXPECT(sd_net_param_count(net) == 272474, "resnet20: %zu parameters", sd_net_param_count(net));
        sd_compress_config c = cfg_of(SD_COMPRESS_ALWAYS, 0.1, true, false);
        sd_compressor *z = NULL;
        size_t off[128], cnt[128];
        int nl = sd_net_trainable_layout(net, off, cnt, 128);
        EXPECT(nl > 0 && nl <= 128, "resnet20: %d trainable tensors", nl);
        if (nl > 0 && nl <= 128) EXPECT_OK(sd_compressor_create(&c, sd_net_param_count(net), nl, off, cnt, 1, &z));
        if (z) {
            size_t want = 0;
            for (int i = 0; i < sd_net_num_tensors(net); i++) {
                const sd_param *p = sd_net_tensor(net, i);
                if (p->trainable) want += ref_topk_k(0.1, p->count);
            }
            const uint64_t dense = 4 * (uint64_t)sd_net_param_count(net), msg = sd_compressor_message_bytes(z, 0.1);
            EXPECT(sd_compressor_pairs(z, 0.1) == want && msg == 8 + 8 * want, "resnet20 pairs %zu (want %zu), bytes %llu",
                   sd_compressor_pairs(z, 0.1), want, (unsigned long long)msg);
            EXPECT((double)dense / (double)msg >= 4.5, "resnet20 at 0.1: %llu bytes against %llu dense (%.2fx)",
                   (unsigned long long)msg, (unsigned long long)dense, (double)dense / (double)msg);
            sd_compressor_destroy(z);
        }
        sd_net_destroy(net);
    }
    sd_backend_destroy(&be);
}

static void test_errors(void) {
    sd_compress_config c = cfg_of(SD_COMPRESS_ALWAYS, 0.1, true, false);
    sd_compressor *z = NULL;
    size_t off[] = {0, 10}, cnt[] = {10, 5};
    EXPECT_OK(sd_compressor_create(&c, 15, 2, off, cnt, 1, &z));
    float r[16] = {0};
    EXPECT_FAIL(sd_compressor_set_residual(z, r, 16), SD_ERR_SHAPE, "residual");
    sd_compress_state st = {0};
    st.level = 3;
    EXPECT_FAIL(sd_compressor_set_state(z, &st), SD_ERR_INVALID, "level");
    sd_compressor_destroy(z);
    size_t gap_off[] = {0, 11};
    EXPECT_FAIL(sd_compressor_create(&c, 16, 2, gap_off, cnt, 1, &z), SD_ERR_INVALID, "tile");
    size_t ov_off[] = {0, 9};
    EXPECT_FAIL(sd_compressor_create(&c, 15, 2, ov_off, cnt, 1, &z), SD_ERR_INVALID, "tile");
    EXPECT_FAIL(sd_compressor_create(&c, 20, 2, off, cnt, 1, &z), SD_ERR_INVALID, "cover");
    c.ratio = 0;
    EXPECT_FAIL(sd_compressor_create(&c, 15, 2, off, cnt, 1, &z), SD_ERR_INVALID, "ratio");
    c = cfg_of(SD_COMPRESS_GAIN, 0.1, true, false);
    c.min_ratio = 0.5;
    c.max_ratio = 0.1;
    EXPECT_FAIL(sd_compressor_create(&c, 15, 2, off, cnt, 1, &z), SD_ERR_INVALID, "min_ratio");
    EXPECT(z == NULL, "failed create left a compressor");
}

/* Checkpoint: residual and state restored into a fresh compressor continue bitwise the same. */
typedef struct ck_arg { float out[2][1634]; int bad; } ck_arg;
static void fn_ckpt(void *argp, sd_comm_local_group *grp, sd_comm *c) {
    ck_arg *a = argp;
    (void)grp;
    scen sc;
    memset(&sc, 0, sizeof sc);
    scen_layers(&sc, 6, layers_a);
    sc.gen = G_FLOAT;
    sc.seed = 77;
    sd_compress_config cfg = cfg_of(SD_COMPRESS_GAIN, 0.1, true, false);
    cfg.gain_window = 2;
    cfg.epsilon = 0.3;
    sd_compressor *z1 = NULL, *z2 = NULL;
    float g[1634];
    sd_compress_state st;
    if (sd_compressor_create(&cfg, sc.count, 6, sc.off, sc.cnt, 1, &z1) != SD_OK ||
        sd_compressor_create(&cfg, sc.count, 6, sc.off, sc.cnt, 0, &z2) != SD_OK) {
        a->bad++;
        goto out;
    }
    for (int t = 0; t < 5; t++) {
        gen(&sc, 0, t, g);
        if (sd_compress_exchange(z1, c, g, NULL) != SD_OK) a->bad++;
    }
    sd_compressor_get_state(z1, &st);
    if (sd_compressor_set_state(z2, &st) != SD_OK || sd_compressor_set_residual(z2, sd_compressor_residual(z1), sc.count) != SD_OK)
        a->bad++;
    for (int k = 0; k < 2; k++) {
        gen(&sc, 0, 5, g);
        if (sd_compress_exchange(k ? z2 : z1, c, g, NULL) != SD_OK) a->bad++;
        memcpy(a->out[k], g, sizeof g);
    }
out:
    sd_compressor_destroy(z1);
    sd_compressor_destroy(z2);
}

static void test_checkpoint(void) {
    static ck_arg a;
    memset(&a, 0, sizeof a);
    run_group(1, fn_ckpt, &a);
    EXPECT(a.bad == 0 && memcmp(a.out[0], a.out[1], sizeof a.out[0]) == 0,
           "a compressor restored from residual and state does not continue identically");
}

int main(void) {
    test_f16();
    test_errors();
    test_sparse_allgather();
    test_model_exact();
    test_mass();
    test_momentum_correction();
    test_eligible();
    test_votes();
    test_gain();
    test_determinism();
    test_checkpoint();
    test_resnet20();
    return sd_test_finish("test_compress");
}
