/* test_inject.c: the accounted injection pool of stream/inject.h over a label-slice partition
 * (10 devices, device i owns class i): draws come only from other devices' classes and never
 * from the drawer's own contributions, k = ceil(alpha x D) classes and m = ceil(beta x b) samples
 * per class as in the reference, the counters agree with an independent tally of every drawn
 * sample, draws are deterministic by seed, the ring buckets evict the oldest, an empty pool
 * injects nothing without error, and bad arguments are rejected without side effects. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stream/inject.h"
#include "stream/partition.h"
#include "tests/harness.h"

enum { C = 10, PER_CLASS = 60, N = C * PER_CLASS, D = 10 };

static int32_t g_labels[N];
static uint8_t g_px[N];
static sd_dataset g_d;

static void make_dataset(void) {
    sd_test_rng r = {77};
    for (int i = 0; i < N; i++) g_labels[i] = i % C;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(sd_test_next(&r) % (uint64_t)(i + 1));
        int32_t t = g_labels[i];
        g_labels[i] = g_labels[j];
        g_labels[j] = t;
    }
    memset(&g_d, 0, sizeof g_d);
    snprintf(g_d.name, sizeof g_d.name, "synthetic");
    g_d.n = N;
    g_d.c = g_d.h = g_d.w = 1;
    g_d.classes = C;
    g_d.images = g_px;
    g_d.labels = g_labels;
}

/* A pool where every device contributed `share` of its slice; contributor[s] = device + 1 of
 * whoever contributed sample s (0: nobody). */
static sd_inject_pool *make_pool(const sd_partition *p, double share, int64_t capacity, uint64_t seed,
                                 int *contributor) {
    sd_inject_pool *pool = NULL;
    EXPECT_OK(sd_inject_pool_create(&g_d, D, capacity, &pool));
    if (!pool) return NULL;
    sd_rng r;
    sd_rng_seed(&r, seed);
    for (int i = 0; i < D; i++) {
        int64_t before[C];
        for (int c = 0; c < C; c++) before[c] = sd_inject_pool_held(pool, c);
        EXPECT_OK(sd_inject_pool_contribute_share(pool, i, p->index[i], p->count[i], share, &r));
        if (contributor) { /* the device's own class bucket grew by what it contributed */
            int64_t added = sd_inject_pool_held(pool, i) - before[i];
            EXPECT(added == (int64_t)ceil(share * (double)p->count[i] - 1e-9), "device %d added %lld", i,
                   (long long)added);
        }
    }
    return pool;
}

/* ---- the main property test ----------------------------------------------------------------- */

static void test_draws_and_counters(void) {
    sd_partition p;
    EXPECT_OK(sd_partition_slices(&g_d, D, 1, 3, &p));
    /* contributions, tracked independently by replaying the same choices */
    static int contributor[N];
    memset(contributor, 0, sizeof contributor);
    sd_inject_pool *pool = make_pool(&p, 0.5, 64, 21, contributor);
    {
        sd_rng r;
        sd_rng_seed(&r, 21);
        for (int i = 0; i < D; i++) { /* the documented partial Fisher-Yates, redone here */
            int64_t n = p.count[i], take = (int64_t)ceil(0.5 * (double)n - 1e-9);
            int64_t *copy = malloc((size_t)n * sizeof *copy);
            memcpy(copy, p.index[i], (size_t)n * sizeof *copy);
            for (int64_t t = 0; t < take; t++) {
                int64_t j = t + (int64_t)sd_rng_below(&r, (uint64_t)(n - t));
                int64_t tmp = copy[t];
                copy[t] = copy[j];
                copy[j] = tmp;
                contributor[copy[t]] = i + 1;
            }
            free(copy);
        }
    }
    for (int i = 0; i < D; i++) {
        EXPECT(sd_inject_pool_owns(pool, i, i), "device %d owns its class", i);
        EXPECT(!sd_inject_pool_owns(pool, i, (i + 1) % C), "device %d does not own class %d", i, (i + 1) % C);
    }

    const double alpha = 0.5, beta = 0.5;
    const int batch = 8, k = 5, m = 4; /* ceil(0.5 x 10), ceil(0.5 x 8) */
    EXPECT(sd_inject_draw_max(batch, alpha, beta, D) == k * m, "draw max %lld", (long long)sd_inject_draw_max(batch, alpha, beta, D));
    static uint64_t given[D], recv[D], flow[D][D];
    memset(given, 0, sizeof given);
    memset(recv, 0, sizeof recv);
    memset(flow, 0, sizeof flow);
    int64_t out[128];
    int wrong_n = 0, wrong_class_count = 0, own_class = 0, own_sample = 0, not_contributed = 0, dup = 0;
    int class_hits[D][C];
    memset(class_hits, 0, sizeof class_hits);
    static char picked[D][N]; /* picked[dev][s]: device dev received sample s at least once */
    memset(picked, 0, sizeof picked);
    sd_rng r;
    sd_rng_seed(&r, 5);
    for (int round = 0; round < 60; round++)
        for (int dev = 0; dev < D; dev++) {
            int n = -1;
            EXPECT_OK(sd_inject_draw(pool, dev, batch, alpha, beta, D, &r, out, 64, &n));
            if (n != k * m) wrong_n++;
            int per[C] = {0}, distinct = 0;
            for (int t = 0; t < n; t++) {
                int64_t s = out[t];
                int c = g_labels[s];
                if (per[c]++ == 0) distinct++;
                class_hits[dev][c]++;
                picked[dev][s] = 1;
                if (c == dev) own_class++;
                if (contributor[s] == 0) not_contributed++;
                else if (contributor[s] - 1 == dev) own_sample++;
                else {
                    given[contributor[s] - 1]++;
                    flow[contributor[s] - 1][dev]++;
                }
                recv[dev]++;
                for (int u = 0; u < t; u++) dup += out[u] == s;
            }
            if (distinct != k) wrong_class_count++;
            for (int c = 0; c < C; c++)
                if (per[c] != 0 && per[c] != m) wrong_class_count++;
        }
    EXPECT(wrong_n == 0, "%d draws did not return k x m = %d samples", wrong_n, k * m);
    EXPECT(wrong_class_count == 0, "%d draws without exactly %d classes of %d samples each", wrong_class_count, k, m);
    EXPECT(own_class == 0 && own_sample == 0, "draws gave a device its own class %d times, its own sample %d times",
           own_class, own_sample);
    EXPECT(not_contributed == 0, "%d drawn samples were never contributed: data moved outside the pool",
           not_contributed);
    EXPECT(dup == 0, "%d repeated samples within one draw", dup);
    /* every other class is drawn, about uniformly: 60 rounds x 5 of 9 classes x 4 = 133 each */
    int rare = 0;
    for (int dev = 0; dev < D; dev++)
        for (int c = 0; c < C; c++)
            if (c != dev && (class_hits[dev][c] < 60 || class_hits[dev][c] > 220)) rare++;
    EXPECT(rare == 0, "%d device/class pairs drawn far from uniformly", rare);
    /* and within a class every held sample turns up: ~33 draws of 4 from 30 held cover nearly all */
    int narrow = 0;
    for (int dev = 0; dev < D; dev++) {
        int distinct_of[C] = {0};
        for (int s = 0; s < N; s++) distinct_of[g_labels[s]] += picked[dev][s];
        for (int c = 0; c < C; c++)
            if (c != dev && distinct_of[c] < 25) narrow++;
    }
    EXPECT(narrow == 0, "%d device/class pairs drew from only part of the class's %d held samples", narrow,
           PER_CLASS / 2);

    /* the pool's counters agree with the independent tally */
    uint64_t sum_given = 0, sum_recv = 0, total = 60ull * D * k * m;
    int bad_dev = 0, bad_flow = 0;
    for (int i = 0; i < D; i++) {
        sd_inject_stats st;
        EXPECT_OK(sd_inject_pool_stats(pool, i, &st));
        uint64_t row = 0, col = 0;
        for (int j = 0; j < D; j++) {
            row += sd_inject_pool_flow(pool, i, j);
            col += sd_inject_pool_flow(pool, j, i);
            bad_flow += sd_inject_pool_flow(pool, i, j) != flow[i][j];
        }
        bad_dev += st.shared != (uint64_t)PER_CLASS / 2 || st.held != st.shared || st.evicted != 0 ||
                   st.drawn_by_others != given[i] || st.received != recv[i] || row != given[i] || col != recv[i] ||
                   st.draws != 60 || st.short_draws != 0 || sd_inject_pool_flow(pool, i, i) != 0;
        sum_given += st.drawn_by_others;
        sum_recv += st.received;
    }
    EXPECT(bad_dev == 0, "%d devices whose counters disagree with the tally", bad_dev);
    EXPECT(bad_flow == 0, "%d flow entries disagree with the tally", bad_flow);
    EXPECT(sum_given == total && sum_recv == total, "sum drawn_by_others %llu = sum received %llu = drawn %llu",
           (unsigned long long)sum_given, (unsigned long long)sum_recv, (unsigned long long)total);

    /* alpha = 1: k = 10 but only 9 classes are eligible: a short draw of 9 classes */
    {
        int n = 0;
        sd_inject_stats before, after;
        sd_inject_pool_stats(pool, 3, &before);
        EXPECT_OK(sd_inject_draw(pool, 3, batch, 1.0, beta, D, &r, out, 64, &n));
        sd_inject_pool_stats(pool, 3, &after);
        int per[C] = {0}, distinct = 0;
        for (int t = 0; t < n; t++) distinct += per[g_labels[out[t]]]++ == 0;
        EXPECT(n == 9 * m && distinct == 9 && per[3] == 0, "alpha 1: %d samples from %d classes", n, distinct);
        EXPECT(after.short_draws == before.short_draws + 1, "a draw below k x m counts as short");
    }
    /* exact ceilings: 0.28 x 25 is 7 classes and 0.07 x 100 is 7 samples each, although floating
     * point gives 7.000000000000001 for both; ceil(0.25 x 10) = 3 */
    {
        int n = 0;
        EXPECT(sd_inject_draw_max(100, 0.28, 0.07, 25) == 49, "draw max %lld for alpha 0.28 of 25, beta 0.07 of 100",
               (long long)sd_inject_draw_max(100, 0.28, 0.07, 25));
        EXPECT(sd_inject_draw_max(10, 0.28, 0.25, 25) == 21, "draw max for beta 0.25 of 10");
        EXPECT_OK(sd_inject_draw(pool, 0, 100, 0.28, 0.07, 25, &r, out, 49, &n));
        int per[C] = {0}, distinct = 0, uneven = 0;
        for (int t = 0; t < n; t++) distinct += per[g_labels[out[t]]]++ == 0;
        for (int c = 0; c < C; c++) uneven += per[c] != 0 && per[c] != 7;
        EXPECT(n == 49 && distinct == 7 && uneven == 0, "alpha 0.28, beta 0.07: %d samples from %d classes", n,
               distinct);
    }
    /* zero alpha, beta or batch: nothing, and no rng use */
    {
        int n = 7;
        sd_rng before = r;
        EXPECT_OK(sd_inject_draw(pool, 0, 10, 0.0, 0.5, D, &r, out, 64, &n));
        EXPECT(n == 0, "alpha 0 injects nothing");
        EXPECT_OK(sd_inject_draw(pool, 0, 10, 0.5, 0.0, D, &r, out, 64, &n));
        EXPECT_OK(sd_inject_draw(pool, 0, 0, 0.5, 0.5, D, &r, NULL, 0, &n));
        EXPECT(n == 0 && memcmp(&before, &r, sizeof r) == 0, "nothing drawn, rng untouched");
    }

    /* a device that contributes a sample of another class owns that class from then on */
    {
        int64_t s5 = p.index[5][p.count[5] - 1];
        EXPECT_OK(sd_inject_pool_contribute(pool, 0, &s5, 1));
        EXPECT(sd_inject_pool_owns(pool, 0, 5), "contributing class 5 makes it device 0's own");
        int hits5 = 0, n = 0;
        for (int t = 0; t < 40; t++) {
            EXPECT_OK(sd_inject_draw(pool, 0, batch, 1.0, beta, D, &r, out, 64, &n));
            for (int u = 0; u < n; u++) hits5 += g_labels[out[u]] == 5 || g_labels[out[u]] == 0;
        }
        EXPECT(hits5 == 0, "device 0 drew its own classes %d times", hits5);
        /* and device 5 never receives the sample device 0 put into its class: it owns class 5 */
        for (int t = 0; t < 40; t++) {
            EXPECT_OK(sd_inject_draw(pool, 5, batch, 1.0, 1.0, D, &r, out, 128, &n));
            for (int u = 0; u < n; u++) hits5 += out[u] == s5;
        }
        EXPECT(hits5 == 0, "a device's own class is never injected into it");
    }
    sd_inject_pool_destroy(pool);
    sd_partition_free(&p);
}

/* ---- rings, shortages, determinism ---------------------------------------------------------- */

static void test_ring_and_shortage(void) {
    sd_inject_pool *pool = NULL;
    EXPECT_OK(sd_inject_pool_create(&g_d, D, 4, &pool));
    if (!pool) return;
    int64_t cls2[6], cls1[2];
    int n2 = 0, n1 = 0;
    for (int s = 0; s < N && (n2 < 6 || n1 < 2); s++) {
        if (g_labels[s] == 2 && n2 < 6) cls2[n2++] = s;
        if (g_labels[s] == 1 && n1 < 2) cls1[n1++] = s;
    }
    EXPECT_OK(sd_inject_pool_contribute(pool, 2, cls2, 6));
    EXPECT_OK(sd_inject_pool_contribute(pool, 1, cls1, 2));
    sd_inject_stats st;
    sd_inject_pool_stats(pool, 2, &st);
    EXPECT(sd_inject_pool_held(pool, 2) == 4 && st.shared == 6 && st.evicted == 2 && st.held == 4,
           "a full bucket of 4 keeps 4 of 6: held %lld, shared %llu, evicted %llu", (long long)sd_inject_pool_held(pool, 2),
           (unsigned long long)st.shared, (unsigned long long)st.evicted);
    sd_rng r;
    sd_rng_seed(&r, 8);
    int64_t out[128];
    int n = 0, newest = 0, c2 = 0, c1 = 0;
    /* alpha 0.2 x 10 = 2 classes, beta 1 x 10 = 10 per class: class 2 gives its 4, class 1 its 2 */
    EXPECT_OK(sd_inject_draw(pool, 0, 10, 0.2, 1.0, D, &r, out, 64, &n));
    for (int t = 0; t < n; t++) {
        for (int u = 2; u < 6; u++) newest += out[t] == cls2[u];
        c2 += g_labels[out[t]] == 2;
        c1 += g_labels[out[t]] == 1;
    }
    EXPECT(n == 6 && c2 == 4 && c1 == 2 && newest == 4, "short buckets give what they hold, the newest 4 of class 2: "
           "n %d, class 2 %d (newest %d), class 1 %d", n, c2, newest, c1);
    sd_inject_pool_stats(pool, 0, &st);
    EXPECT(st.short_draws == 1 && st.received == 6, "short draw counted, received %llu", (unsigned long long)st.received);
    /* ring order: 2 more contributions evict the two oldest survivors */
    int64_t more[2] = {cls2[0], cls2[1]};
    EXPECT_OK(sd_inject_pool_contribute(pool, 3, more, 2));
    sd_inject_pool_stats(pool, 2, &st);
    EXPECT(st.evicted == 4 && st.held == 2, "device 2: evicted %llu, held %llu", (unsigned long long)st.evicted,
           (unsigned long long)st.held);
    EXPECT(sd_inject_pool_owns(pool, 3, 2), "device 3 now owns class 2");
    /* device 2 draws: class 2 is its own, so only class 1 and nothing of its own */
    EXPECT_OK(sd_inject_draw(pool, 2, 10, 1.0, 1.0, D, &r, out, 100, &n));
    EXPECT(n == 2 && g_labels[out[0]] == 1 && g_labels[out[1]] == 1, "device 2 gets only class 1: n %d", n);
    /* device 5 draws class 2: the entries of devices 2 and 3 alike */
    EXPECT_OK(sd_inject_draw(pool, 5, 10, 1.0, 1.0, D, &r, out, 100, &n));
    EXPECT(n == 6 && sd_inject_pool_flow(pool, 3, 5) == 2 && sd_inject_pool_flow(pool, 2, 5) == 2 &&
               sd_inject_pool_flow(pool, 1, 5) == 2,
           "device 5 gets 2 + 2 + 2 from devices 1, 2, 3: n %d", n);
    sd_inject_pool_destroy(pool);
}

static void test_empty_pool(void) {
    sd_inject_pool *pool = NULL;
    EXPECT_OK(sd_inject_pool_create(&g_d, D, 16, &pool));
    if (!pool) return;
    int64_t out[128];
    int n = 5;
    sd_rng r;
    sd_rng_seed(&r, 1);
    EXPECT_OK(sd_inject_draw(pool, 4, 8, 0.5, 0.5, D, &r, out, 64, &n));
    EXPECT(n == 0, "an empty pool injects nothing (%d)", n);
    sd_inject_stats st;
    sd_inject_pool_stats(pool, 4, &st);
    EXPECT(st.draws == 1 && st.short_draws == 1 && st.received == 0, "empty draw counted");
    /* only the drawer's own samples in the pool: still nothing */
    int64_t mine[3] = {0, 1, 2};
    EXPECT_OK(sd_inject_pool_contribute(pool, 4, mine, 3));
    EXPECT_OK(sd_inject_draw(pool, 4, 8, 1.0, 1.0, D, &r, out, 100, &n));
    EXPECT(n == 0, "a pool of only its own samples gives a device nothing (%d)", n);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    EXPECT_OK(sd_inject_pool_print(pool, f));
    fclose(f);
    EXPECT(strstr(buf, "device 4: shared 3 (evicted 0, held 3), drawn by others 0, received 0 in 2 draws") != NULL,
           "print:\n%s", buf);
    free(buf);
    sd_inject_pool_destroy(pool);
}

/* A run of contributions and draws; returns a hash of every drawn index. */
static uint64_t run_hash(uint64_t seed) {
    sd_partition p;
    EXPECT_OK(sd_partition_slices(&g_d, D, 1, 3, &p));
    sd_inject_pool *pool = make_pool(&p, 0.5, 20, seed, NULL);
    uint64_t h = 1469598103934665603ull;
    sd_rng r;
    sd_rng_seed(&r, seed);
    int64_t out[64];
    for (int round = 0; round < 5; round++)
        for (int dev = 0; dev < D; dev++) {
            int n = 0;
            EXPECT_OK(sd_inject_draw(pool, dev, 8, 0.5, 0.5, D, &r, out, 64, &n));
            for (int t = 0; t < n; t++) h = (h ^ (uint64_t)out[t]) * 1099511628211ull;
        }
    sd_inject_pool_destroy(pool);
    sd_partition_free(&p);
    return h;
}

static void test_determinism(void) {
    uint64_t a = run_hash(123), b = run_hash(123), c = run_hash(124);
    EXPECT(a == b, "same seed, same injected samples");
    EXPECT(a != c, "another seed, other samples");
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(void) {
    sd_inject_pool *pool = NULL;
    EXPECT_FAIL(sd_inject_pool_create(&g_d, 0, 8, &pool), SD_ERR_INVALID, "devices = 0 is outside the allowed range");
    EXPECT_FAIL(sd_inject_pool_create(&g_d, D, 0, &pool), SD_ERR_INVALID, "capacity_per_class = 0");
    EXPECT_FAIL(sd_inject_pool_create(NULL, D, 8, &pool), SD_ERR_INVALID, "dataset");
    EXPECT(pool == NULL, "failed creates leave no pool");
    EXPECT_OK(sd_inject_pool_create(&g_d, D, 8, &pool));
    if (!pool) return;
    int64_t idx[3] = {0, N, 1};
    EXPECT_FAIL(sd_inject_pool_contribute(pool, 0, idx, 3), SD_ERR_INVALID, "dataset_indices[1] = 600");
    EXPECT(sd_inject_pool_held(pool, g_labels[0]) == 0, "a rejected contribution adds nothing");
    EXPECT_FAIL(sd_inject_pool_contribute(pool, D, idx, 1), SD_ERR_INVALID, "device 10");
    EXPECT_FAIL(sd_inject_pool_contribute(pool, 0, NULL, 2), SD_ERR_INVALID, "no index array");
    sd_rng r;
    sd_rng_seed(&r, 3);
    EXPECT_FAIL(sd_inject_pool_contribute_share(pool, 0, idx, 1, 1.5, &r), SD_ERR_INVALID,
                "share = 1.5 is outside the allowed range [0, 1]");
    idx[1] = 2;
    EXPECT_OK(sd_inject_pool_contribute(pool, 1, idx, 3));
    int64_t out[64];
    int n = 0;
    sd_rng before = r;
    const double bad[] = {-0.1, 1.5, NAN, INFINITY};
    for (int t = 0; t < 4; t++) {
        EXPECT_FAIL(sd_inject_draw(pool, 0, 8, bad[t], 0.5, D, &r, out, 64, &n), SD_ERR_INVALID,
                    "alpha = ");
        EXPECT_FAIL(sd_inject_draw(pool, 0, 8, 0.5, bad[t], D, &r, out, 64, &n), SD_ERR_INVALID,
                    "beta = ");
    }
    EXPECT(sd_inject_draw(pool, 0, 8, 1.0, 1.0, D, &r, out, 64, &n) == SD_ERR_INVALID, "max_out too small");
    EXPECT_FAIL(sd_inject_draw(pool, 0, 8, 1.0, 1.0, D, &r, out, 79, &n), SD_ERR_INVALID,
                "max_out = 79 is less than ceil(alpha x devices) x ceil(beta x batch) = 10 x 8 = 80");
    EXPECT_FAIL(sd_inject_draw(pool, 0, 8, 0.5, 0.5, 0, &r, out, 64, &n), SD_ERR_INVALID, "devices_total = 0");
    EXPECT_FAIL(sd_inject_draw(pool, 0, -1, 0.5, 0.5, D, &r, out, 64, &n), SD_ERR_INVALID, "local_batch_n = -1");
    EXPECT_FAIL(sd_inject_draw(pool, -1, 8, 0.5, 0.5, D, &r, out, 64, &n), SD_ERR_INVALID, "device -1");
    EXPECT_FAIL(sd_inject_draw(pool, 0, 8, 0.5, 0.5, D, NULL, out, 64, &n), SD_ERR_INVALID, "rng");
    EXPECT(sd_inject_draw_max(8, 1.5, 0.5, D) == -1 && sd_inject_draw_max(8, 0.5, -1, D) == -1, "draw max rejects too");
    sd_inject_stats st;
    sd_inject_pool_stats(pool, 0, &st);
    EXPECT(memcmp(&before, &r, sizeof r) == 0 && st.draws == 0 && st.received == 0,
           "rejected draws change nothing (draws %llu)", (unsigned long long)st.draws);
    EXPECT_FAIL(sd_inject_pool_stats(pool, D, &st), SD_ERR_INVALID, "device 10");
    EXPECT(sd_inject_pool_flow(pool, -1, 0) == 0 && sd_inject_pool_held(pool, C) == -1, "out of range queries");
    sd_inject_pool_destroy(pool);
    sd_inject_pool_destroy(NULL);
}

int main(void) {
    make_dataset();
    test_draws_and_counters();
    test_ring_and_shortage();
    test_empty_pool();
    test_determinism();
    test_errors();
    return sd_test_finish("test_inject");
}
