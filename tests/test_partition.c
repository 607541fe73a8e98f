/* test_partition.c: the partitioners of stream/partition.h on synthetic label-only datasets
 * (1x1x1 images): IID (every index exactly once, shares within one, near-uniform histograms),
 * label slices (each device holds exactly its slice, shared classes split evenly, the CIFAR-10
 * one-class-each case and the 8-device wrap-around case, unused classes), Dirichlet (everything
 * assigned once, no empty device even at tiny alpha, skew grows as alpha shrinks, determinism),
 * the gamma sampler's moments, printing, and the parameter errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stream/partition.h"
#include "tests/harness.h"

/* ---- synthetic datasets --------------------------------------------------------------------- */

typedef struct synth {
    sd_dataset d;
    uint8_t *px;
    int32_t *lab;
} synth;

/* n samples over `classes` labels; class_size(c) samples of class c when sizes != NULL (n is
 * then their sum), else labels drawn at random; the order is scrambled either way. */
static synth synth_make(int classes, const int64_t *sizes, int64_t n, uint64_t seed) {
    synth s;
    memset(&s, 0, sizeof s);
    if (sizes) {
        n = 0;
        for (int c = 0; c < classes; c++) n += sizes[c];
    }
    s.px = calloc((size_t)n, 1);
    s.lab = malloc((size_t)n * sizeof *s.lab);
    sd_test_rng r = {seed};
    if (sizes) {
        int64_t pos = 0;
        for (int c = 0; c < classes; c++)
            for (int64_t t = 0; t < sizes[c]; t++) s.lab[pos++] = c;
        for (int64_t i = n - 1; i > 0; i--) { /* scramble so classes are not contiguous */
            int64_t j = (int64_t)(sd_test_next(&r) % (uint64_t)(i + 1));
            int32_t t = s.lab[i];
            s.lab[i] = s.lab[j];
            s.lab[j] = t;
        }
    } else {
        for (int64_t i = 0; i < n; i++) s.lab[i] = (int32_t)(sd_test_next(&r) % (uint64_t)classes);
    }
    snprintf(s.d.name, sizeof s.d.name, "synthetic");
    s.d.n = n;
    s.d.c = s.d.h = s.d.w = 1;
    s.d.classes = classes;
    s.d.images = s.px;
    s.d.labels = s.lab;
    return s;
}

static void synth_free(synth *s) {
    free(s->px);
    free(s->lab);
}

/* Every list ascending and in range, no index on two devices, counts add up. Returns how many
 * dataset samples are assigned. */
static int64_t check_structure(const sd_partition *p, const sd_dataset *d, const char *what) {
    char *seen = calloc((size_t)d->n, 1);
    int64_t sum = 0, bad_range = 0, dup = 0, unsorted = 0;
    for (int i = 0; i < p->devices; i++) {
        sum += p->count[i];
        for (int64_t t = 0; t < p->count[i]; t++) {
            int64_t s = p->index[i][t];
            if (s < 0 || s >= d->n) {
                bad_range++;
                continue;
            }
            if (seen[s]) dup++;
            seen[s] = 1;
            if (t > 0 && p->index[i][t - 1] >= s) unsorted++;
        }
    }
    EXPECT(bad_range == 0 && dup == 0 && unsorted == 0, "%s: %lld out of range, %lld on two devices, %lld unsorted",
           what, (long long)bad_range, (long long)dup, (long long)unsorted);
    EXPECT(sum == p->assigned, "%s: counts sum to %lld, assigned %lld", what, (long long)sum, (long long)p->assigned);
    EXPECT(p->dataset_n == d->n && p->classes == d->classes, "%s: partition records its dataset", what);
    free(seen);
    return sum;
}

/* ---- IID ------------------------------------------------------------------------------------ */

static void test_iid(void) {
    synth s = synth_make(10, NULL, 10007, 1);
    enum { D = 10 };
    sd_partition p;
    EXPECT_OK(sd_partition_iid(&s.d, D, 42, &p));
    EXPECT(p.devices == D, "devices %d", p.devices);
    EXPECT(check_structure(&p, &s.d, "iid") == s.d.n, "IID assigns every index exactly once");
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < D; i++) {
        if (p.count[i] < lo) lo = p.count[i];
        if (p.count[i] > hi) hi = p.count[i];
    }
    EXPECT(hi - lo <= 1 && lo == 1000 && hi == 1001, "IID shares %lld..%lld", (long long)lo, (long long)hi);
    EXPECT(p.count[0] == 1001 && p.count[7] == 1000, "the first n %% D devices carry the extra sample");
    /* each device's class counts near its share of the class: within 5 standard deviations */
    int64_t total[10] = {0}, h[10];
    for (int64_t i = 0; i < s.d.n; i++) total[s.lab[i]]++;
    int off = 0;
    for (int i = 0; i < D; i++) {
        EXPECT_OK(sd_partition_histogram(&p, &s.d, i, h));
        for (int c = 0; c < 10; c++) {
            double want = (double)total[c] * (double)p.count[i] / (double)s.d.n;
            if (fabs((double)h[c] - want) > 5.0 * sqrt(want)) off++;
        }
    }
    EXPECT(off == 0, "%d IID device/class counts far from uniform", off);

    /* determinism */
    sd_partition q, r;
    EXPECT_OK(sd_partition_iid(&s.d, D, 42, &q));
    EXPECT_OK(sd_partition_iid(&s.d, D, 43, &r));
    EXPECT(memcmp(p.index[0], q.index[0], (size_t)s.d.n * sizeof(int64_t)) == 0, "same seed, same IID partition");
    EXPECT(memcmp(p.index[0], r.index[0], (size_t)p.count[0] * sizeof(int64_t)) != 0, "another seed, another one");
    sd_partition_free(&p);
    sd_partition_free(&q);
    sd_partition_free(&r);

    /* D = n: one sample each */
    synth t = synth_make(3, NULL, 7, 2);
    EXPECT_OK(sd_partition_iid(&t.d, 7, 1, &p));
    int ones = 0;
    for (int i = 0; i < 7; i++) ones += p.count[i] == 1;
    EXPECT(ones == 7 && check_structure(&p, &t.d, "iid D=n") == 7, "D = n gives one sample per device");
    sd_partition_free(&p);
    synth_free(&t);
    synth_free(&s);
}

/* ---- slices --------------------------------------------------------------------------------- */

/* Device i's non-zero classes are exactly {(i*k + j) mod C}, and each class's holders split it
 * within one. */
static void check_slices(const sd_partition *p, const sd_dataset *d, int k, const char *what) {
    const int C = d->classes, D = p->devices;
    int64_t *h = malloc((size_t)C * sizeof *h);
    int64_t *total = calloc((size_t)C, sizeof *total);
    int64_t *minc = malloc((size_t)C * sizeof *minc), *maxc = calloc((size_t)C, sizeof *maxc);
    int *holders = calloc((size_t)C, sizeof *holders);
    for (int c = 0; c < C; c++) minc[c] = INT64_MAX;
    for (int64_t i = 0; i < d->n; i++) total[d->labels[i]]++;
    int wrong = 0;
    for (int i = 0; i < D; i++) {
        sd_partition_histogram(p, d, i, h);
        char mine[256] = {0};
        for (int j = 0; j < k; j++) mine[(i * k + j) % C] = 1;
        for (int c = 0; c < C; c++) {
            if ((h[c] > 0) != (mine[c] != 0) && !(mine[c] && total[c] == 0)) wrong++;
            if (mine[c]) {
                holders[c]++;
                if (h[c] < minc[c]) minc[c] = h[c];
                if (h[c] > maxc[c]) maxc[c] = h[c];
            }
        }
    }
    EXPECT(wrong == 0, "%s: %d device/class pairs outside the slices", what, wrong);
    int uneven = 0;
    int64_t used = 0;
    for (int c = 0; c < C; c++) {
        if (!holders[c]) continue;
        used += total[c];
        if (maxc[c] - minc[c] > 1) uneven++;
    }
    EXPECT(uneven == 0, "%s: %d shared classes split unevenly", what, uneven);
    EXPECT(p->assigned == used, "%s: assigned %lld, samples of held classes %lld", what, (long long)p->assigned,
           (long long)used);
    free(h);
    free(total);
    free(minc);
    free(maxc);
    free(holders);
}

static void test_slices(void) {
    /* CIFAR-10-like: 10 classes of uneven sizes */
    int64_t sizes[10];
    for (int c = 0; c < 10; c++) sizes[c] = 500 + 7 * c;
    synth s = synth_make(10, sizes, 0, 3);
    sd_partition p;

    /* 10 devices, one class each: device i holds all of class i */
    EXPECT_OK(sd_partition_slices(&s.d, 10, 1, 5, &p));
    EXPECT(check_structure(&p, &s.d, "slices 10x1") == s.d.n, "10 devices x 1 class cover every sample");
    check_slices(&p, &s.d, 1, "slices 10x1");
    int exact = 0;
    for (int i = 0; i < 10; i++) {
        int64_t h[10];
        sd_partition_histogram(&p, &s.d, i, h);
        exact += h[i] == sizes[i] && p.count[i] == sizes[i];
    }
    EXPECT(exact == 10, "device i holds exactly class i (%d of 10)", exact);
    sd_partition_free(&p);

    /* 8 devices x 2 classes: devices 5, 6, 7 wrap onto {0,1}, {2,3}, {4,5}; 6..9 stay whole */
    EXPECT_OK(sd_partition_slices(&s.d, 8, 2, 5, &p));
    EXPECT(check_structure(&p, &s.d, "slices 8x2") == s.d.n, "8 devices x 2 classes cover every sample");
    check_slices(&p, &s.d, 2, "slices 8x2");
    {
        int64_t h0[10], h5[10], h3[10];
        sd_partition_histogram(&p, &s.d, 0, h0);
        sd_partition_histogram(&p, &s.d, 5, h5);
        sd_partition_histogram(&p, &s.d, 3, h3);
        EXPECT(h0[0] + h5[0] == sizes[0] && h0[0] == 250 && h5[0] == 250, "class 0 split 250/250: %lld/%lld",
               (long long)h0[0], (long long)h5[0]);
        EXPECT(h0[1] == 254 && h5[1] == 253, "class 1 (507) split 254/253, the first holder gets the extra: %lld/%lld",
               (long long)h0[1], (long long)h5[1]);
        EXPECT(h3[6] == sizes[6] && h3[7] == sizes[7], "device 3 holds classes 6 and 7 whole");
        EXPECT(p.count[7] == sizes[4] / 2 + sizes[5] / 2, "device 7 holds half of classes 4 and 5: %lld",
               (long long)p.count[7]);
    }
    sd_partition_free(&p);

    /* 3 devices x 2 classes: classes 6..9 unused */
    EXPECT_OK(sd_partition_slices(&s.d, 3, 2, 5, &p));
    int64_t used = 0;
    for (int c = 0; c < 6; c++) used += sizes[c];
    EXPECT(check_structure(&p, &s.d, "slices 3x2") == used && p.assigned == used, "unused classes go nowhere: %lld",
           (long long)p.assigned);
    check_slices(&p, &s.d, 2, "slices 3x2");
    sd_partition_free(&p);

    /* 25 devices x 3 classes on 10 classes: many wraps, each class held by 7 or 8 devices */
    EXPECT_OK(sd_partition_slices(&s.d, 25, 3, 9, &p));
    EXPECT(check_structure(&p, &s.d, "slices 25x3") == s.d.n, "25x3 covers everything");
    check_slices(&p, &s.d, 3, "slices 25x3");
    sd_partition q;
    EXPECT_OK(sd_partition_slices(&s.d, 25, 3, 9, &q));
    EXPECT(memcmp(p.index[0], q.index[0], (size_t)p.assigned * sizeof(int64_t)) == 0 &&
               memcmp(p.count, q.count, 25 * sizeof(int64_t)) == 0,
           "same seed, same slices");
    sd_partition_free(&q);
    EXPECT_OK(sd_partition_slices(&s.d, 25, 3, 10, &q));
    EXPECT(memcmp(p.index[0], q.index[0], (size_t)p.count[0] * sizeof(int64_t)) != 0,
           "another seed splits shared classes differently");
    sd_partition_free(&q);
    sd_partition_free(&p);

    /* k = C: every device holds every class (a stratified IID split) */
    EXPECT_OK(sd_partition_slices(&s.d, 4, 10, 1, &p));
    check_slices(&p, &s.d, 10, "slices 4x10");
    sd_partition_free(&p);

    /* a device whose slice is empty is an error that names it */
    int64_t gaps[4] = {5, 0, 5, 5};
    synth g = synth_make(4, gaps, 0, 4);
    EXPECT_FAIL(sd_partition_slices(&g.d, 4, 1, 1, &p), SD_ERR_INVALID, "device 1 would get no samples");
    EXPECT(p.mem_ == NULL && p.devices == 0, "a failed partition is left empty");
    synth_free(&g);
    synth_free(&s);
}

/* ---- Dirichlet ------------------------------------------------------------------------------ */

static double mean_max_share(const sd_partition *p, const sd_dataset *d) {
    int64_t h[64];
    double sum = 0;
    for (int i = 0; i < p->devices; i++) {
        sd_partition_histogram(p, d, i, h);
        int64_t mx = 0;
        for (int c = 0; c < d->classes; c++)
            if (h[c] > mx) mx = h[c];
        sum += (double)mx / (double)p->count[i];
    }
    return sum / p->devices;
}

static void test_dirichlet(void) {
    int64_t sizes[10];
    for (int c = 0; c < 10; c++) sizes[c] = 400;
    synth s = synth_make(10, sizes, 0, 7);
    const double alphas[] = {0.001, 0.1, 1.0, 100.0};
    double share[4];
    for (int a = 0; a < 4; a++) {
        sd_partition p;
        char what[64];
        snprintf(what, sizeof what, "dirichlet alpha %g", alphas[a]);
        EXPECT_OK(sd_partition_dirichlet(&s.d, 20, alphas[a], 11, &p));
        EXPECT(check_structure(&p, &s.d, what) == s.d.n && p.assigned == s.d.n, "%s: every index assigned once",
               what);
        int empty = 0;
        for (int i = 0; i < 20; i++) empty += p.count[i] == 0;
        EXPECT(empty == 0, "%s: %d empty devices", what, empty);
        share[a] = mean_max_share(&p, &s.d);
        sd_partition_free(&p);
    }
    EXPECT(share[1] > 0.6 && share[3] < 0.25 && share[1] > share[2] && share[2] > share[3],
           "mean largest-class share grows as alpha shrinks: %.3f (0.1) %.3f (1) %.3f (100)", share[1], share[2],
           share[3]);
    /* alpha 0.001 over 20 devices and 10 classes: the classes land on at most 10 devices, so the
     * fix must have handed single samples to the others */
    {
        sd_partition p;
        EXPECT_OK(sd_partition_dirichlet(&s.d, 20, 0.001, 11, &p));
        int singles = 0;
        for (int i = 0; i < 20; i++) singles += p.count[i] == 1;
        EXPECT(singles >= 10, "tiny alpha: %d devices rescued with one sample", singles);
        EXPECT(share[0] > 0.5, "tiny alpha is extremely skewed: %.3f", share[0]);
        sd_partition_free(&p);
    }
    /* as many devices as samples with tiny alpha: everyone ends with exactly one */
    {
        synth t = synth_make(3, NULL, 30, 8);
        sd_partition p;
        EXPECT_OK(sd_partition_dirichlet(&t.d, 30, 0.01, 2, &p));
        int ones = 0;
        for (int i = 0; i < 30; i++) ones += p.count[i] == 1;
        EXPECT(ones == 30 && check_structure(&p, &t.d, "dirichlet D=n") == 30, "D = n: one sample each (%d)", ones);
        sd_partition_free(&p);
        synth_free(&t);
    }
    /* determinism */
    sd_partition p, q, r;
    EXPECT_OK(sd_partition_dirichlet(&s.d, 10, 0.5, 99, &p));
    EXPECT_OK(sd_partition_dirichlet(&s.d, 10, 0.5, 99, &q));
    EXPECT_OK(sd_partition_dirichlet(&s.d, 10, 0.5, 100, &r));
    EXPECT(memcmp(p.count, q.count, 10 * sizeof(int64_t)) == 0 &&
               memcmp(p.index[0], q.index[0], (size_t)s.d.n * sizeof(int64_t)) == 0,
           "same seed, same Dirichlet partition");
    EXPECT(memcmp(p.count, r.count, 10 * sizeof(int64_t)) != 0, "another seed, another one");
    sd_partition_free(&p);
    sd_partition_free(&q);
    sd_partition_free(&r);
    synth_free(&s);
}

static void test_gamma(void) {
    const double shapes[] = {0.05, 0.5, 1.0, 3.5, 40.0};
    sd_rng r;
    sd_rng_seed(&r, 17);
    enum { N = 40000 };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        double a = shapes[k], s = 0, s2 = 0;
        int bad = 0;
        for (int i = 0; i < N; i++) {
            double x = sd_gamma_draw(&r, a);
            if (!(x >= 0) || !isfinite(x)) bad++;
            s += x;
            s2 += x * x;
        }
        double mean = s / N, var = s2 / N - mean * mean;
        /* Gamma(a, 1): mean a, variance a; the sample mean's sd is sqrt(a / N) */
        EXPECT(bad == 0, "gamma(%g): %d draws not finite and >= 0", a, bad);
        EXPECT(fabs(mean - a) < 5 * sqrt(a / N), "gamma(%g) mean %.4f", a, mean);
        EXPECT(fabs(var - a) < 0.1 * a + 0.02, "gamma(%g) variance %.4f", a, var);
    }
    sd_rng r1, r2;
    sd_rng_seed(&r1, 5);
    sd_rng_seed(&r2, 5);
    double lx = sd_gamma_log_draw(&r1, 1e-4);
    double x = sd_gamma_draw(&r2, 1e-4);
    EXPECT(isfinite(lx) && memcmp(&r1, &r2, sizeof r1) == 0, "log draw finite (%g) with the same rng use", lx);
    EXPECT(fabs(exp(lx) - x) <= 1e-12 * (x + 1e-300), "exp(log draw) = draw");
    EXPECT(isnan(sd_gamma_draw(&r1, 0.0)) && isnan(sd_gamma_draw(&r1, -1.0)), "shape <= 0 gives NaN");
}

/* ---- printing and errors -------------------------------------------------------------------- */

static void test_print(void) {
    int64_t sizes[4] = {3, 4, 5, 6};
    synth s = synth_make(4, sizes, 0, 9);
    sd_partition p;
    EXPECT_OK(sd_partition_slices(&s.d, 2, 2, 1, &p));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    EXPECT_OK(sd_partition_print(&p, &s.d, f));
    fclose(f);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    EXPECT(lines == 3, "print: a header and one line per device (%d lines):\n%s", lines, buf);
    EXPECT(strstr(buf, "device 0: 7 samples, 2 classes {0:3 1:4}") && strstr(buf, "device 1: 11 samples, 2 classes {2:5 3:6}"),
           "print shows each device's histogram:\n%s", buf);
    EXPECT(strstr(buf, "18 assigned, 0 unused") != NULL, "print header:\n%s", buf);
    free(buf);
    int64_t h[4];
    EXPECT_FAIL(sd_partition_histogram(&p, &s.d, 2, h), SD_ERR_INVALID, "device 2");
    synth other = synth_make(5, NULL, 18, 1);
    EXPECT_FAIL(sd_partition_histogram(&p, &other.d, 0, h), SD_ERR_INVALID, "5 classes");
    synth_free(&other);
    sd_partition_free(&p);
    sd_partition_free(&p); /* twice is fine */
    EXPECT_FAIL(sd_partition_print(&p, &s.d, stdout), SD_ERR_INVALID, "empty");
    synth_free(&s);
}

static void test_errors(void) {
    synth s = synth_make(10, NULL, 50, 3);
    sd_partition p;
    EXPECT_FAIL(sd_partition_iid(&s.d, 0, 1, &p), SD_ERR_INVALID, "devices = 0 is outside the allowed range [1, 50]");
    EXPECT_FAIL(sd_partition_iid(&s.d, 51, 1, &p), SD_ERR_INVALID, "devices = 51");
    EXPECT_FAIL(sd_partition_slices(&s.d, -2, 1, 1, &p), SD_ERR_INVALID, "devices = -2");
    EXPECT_FAIL(sd_partition_dirichlet(&s.d, 51, 1.0, 1, &p), SD_ERR_INVALID, "[1, 50]");
    EXPECT_FAIL(sd_partition_slices(&s.d, 5, 0, 1, &p), SD_ERR_INVALID,
                "classes_per_device = 0 is outside the allowed range [1, 10]");
    EXPECT_FAIL(sd_partition_slices(&s.d, 5, 11, 1, &p), SD_ERR_INVALID, "classes_per_device = 11");
    EXPECT_FAIL(sd_partition_dirichlet(&s.d, 5, 0.0, 1, &p), SD_ERR_INVALID, "alpha = 0 is outside the allowed range (0, inf)");
    EXPECT_FAIL(sd_partition_dirichlet(&s.d, 5, -1.0, 1, &p), SD_ERR_INVALID, "alpha = -1");
    EXPECT_FAIL(sd_partition_dirichlet(&s.d, 5, NAN, 1, &p), SD_ERR_INVALID, "alpha");
    EXPECT_FAIL(sd_partition_dirichlet(&s.d, 5, INFINITY, 1, &p), SD_ERR_INVALID, "alpha");
    EXPECT_FAIL(sd_partition_iid(NULL, 5, 1, &p), SD_ERR_INVALID, "dataset");
    EXPECT_FAIL(sd_partition_iid(&s.d, 5, 1, NULL), SD_ERR_INVALID, "output");
    s.lab[17] = 10;
    EXPECT_FAIL(sd_partition_slices(&s.d, 5, 1, 1, &p), SD_ERR_INVALID, "sample 17 has label 10");
    s.lab[17] = 0;
    sd_dataset empty = s.d;
    empty.n = 0;
    EXPECT_FAIL(sd_partition_iid(&empty, 1, 1, &p), SD_ERR_INVALID, "0 samples");
    EXPECT(p.mem_ == NULL, "failures leave the partition empty");
    sd_partition_free(&p);
    synth_free(&s);
}

int main(void) {
    test_iid();
    test_slices();
    test_dirichlet();
    test_gamma();
    test_print();
    test_errors();
    return sd_test_finish("test_partition");
}
