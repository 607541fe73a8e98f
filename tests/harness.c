/* harness.c: implementation of the test harness declared in harness.h. */
#include "tests/harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int sd_test_passed, sd_test_failed;

void sd_expect_fail_(int got, int want, const char *needle, const char *expr, const char *file, int line) {
    extern const char *sd_last_error(void);
    const char *msg = sd_last_error();
    if (got == want && (!needle || strstr(msg, needle))) {
        sd_test_passed++;
        return;
    }
    sd_test_failed++;
    fprintf(stderr, "FAIL %s:%d: %s: wanted status %d with a message containing \"%s\", got %d: %s\n", file,
            line, expr, want, needle ? needle : "", got, msg);
}

void sd_expect_msg_(int got, int want, const char *expr, int line, ...) {
    extern const char *sd_last_error(void);
    const char *msg = sd_last_error();
    bool ok = got == want;
    va_list ap;
    va_start(ap, line);
    for (const char *n = va_arg(ap, const char *); n; n = va_arg(ap, const char *))
        if (!strstr(msg, n)) {
            ok = false;
            fprintf(stderr, "  missing \"%s\"\n", n);
        }
    va_end(ap);
    EXPECT(ok, "line %d: %s: wanted status %d, got %d: %s", line, expr, want, got, msg);
}

int sd_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, sd_test_passed, sd_test_failed);
    return sd_test_failed == 0 && sd_test_passed > 0 ? 0 : 1;
}

int sd_test_skip(const char *name, const char *why) {
    printf("%s: skipped: %s\n", name, why);
    return SD_TEST_SKIP_CODE;
}

void sd_test_data_path(const char *name, char *out, size_t size) {
    const char *data = getenv("SD_TEST_DATA"), *src = getenv("SD_SOURCE_DIR");
    if (data && *data) snprintf(out, size, "%s/%s", data, name);
    else if (src && *src) snprintf(out, size, "%s/tests/data/%s", src, name);
    else snprintf(out, size, "tests/data/%s", name);
}

char *sd_test_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        b = malloc((size_t)n + 1);
        if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        if (b) b[n] = '\0';
    }
    fclose(f);
    if (b && len) *len = (size_t)n;
    return b;
}

const char *sd_test_json_after(const char *json, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

uint64_t sd_test_next(sd_test_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float sd_test_uniform(sd_test_rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((sd_test_next(r) >> 40) * (1.0 / 16777216.0));
}

void sd_test_fill(sd_test_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = sd_test_uniform(r, lo, hi);
}

double sd_nmse(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return num / den;
}

double sd_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

int sd_all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

#define SD_GUARD 16
static const uint32_t sd_guard_bits = 0x7fc0dead; /* a NaN payload no kernel writes */

float *sd_guard_alloc(size_t n) {
    float *raw = malloc((n + 2 * SD_GUARD) * sizeof(float));
    if (!raw) return NULL;
    for (size_t i = 0; i < n + 2 * SD_GUARD; i++) memcpy(&raw[i], &sd_guard_bits, 4);
    return raw + SD_GUARD;
}

int sd_guard_ok(const float *buf, size_t n) {
    const float *raw = buf - SD_GUARD;
    for (size_t i = 0; i < SD_GUARD; i++) {
        if (memcmp(&raw[i], &sd_guard_bits, 4) != 0) return 0;
        if (memcmp(&raw[SD_GUARD + n + i], &sd_guard_bits, 4) != 0) return 0;
    }
    return 1;
}

void sd_guard_free(float *buf) {
    if (buf) free(buf - SD_GUARD);
}

/* Central difference of f along coordinate i; x[i] is restored. */
static double central_diff(sd_scalar_fn f, void *ctx, float *x, size_t i, float eps) {
    float keep = x[i];
    x[i] = keep + eps;
    double fp = f(ctx, x);
    x[i] = keep - eps;
    double fm = f(ctx, x);
    x[i] = keep;
    return (fp - fm) / (2.0 * (double)eps);
}

double sd_gradcheck(sd_scalar_fn f, void *ctx, float *x, size_t n, const float *grad, float eps,
                    size_t samples, double floor, sd_test_rng *rng) {
    double worst = 0;
    size_t count = samples >= n ? n : samples;
    for (size_t s = 0; s < count; s++) {
        size_t i = samples >= n ? s : (size_t)(sd_test_next(rng) % n);
        double num = central_diff(f, ctx, x, i, eps);
        double ana = grad[i];
        double den = fabs(num) + fabs(ana);
        if (den < floor) den = floor;
        double err = fabs(num - ana) / den;
        if (!(err <= worst)) worst = err;
    }
    return worst;
}

void sd_numgrad(sd_scalar_fn f, void *ctx, float *x, size_t n, float eps, double *out) {
    for (size_t i = 0; i < n; i++) out[i] = central_diff(f, ctx, x, i, eps);
}

double sd_rel_l2(const double *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}
