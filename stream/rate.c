/* rate.c: rate models, arrival generators, and trace CSV parsing (rate.h).
 * Arrivals invert the expected count: with Lambda(t) = integral of rate(s) ds from 0 to t, the
 * k-th arrival is at Lambda^-1(level_k), where level_k = k for evenly spaced arrivals and a sum of
 * k unit exponentials for Poisson (time rescaling, exact also for a time-varying trace). Levels
 * are kept as absolute values, so long runs do not accumulate rounding from adding intervals. */
#include "stream/rate.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- models ------------------------------------------------------------------------------------ */
sd_rate_model sd_rate_fixed(double rate, sd_arrival_kind arrival) {
    return (sd_rate_model){.kind = SD_RATE_FIXED, .arrival = arrival, .rate = rate};
}

sd_rate_model sd_rate_uniform(double lo, double hi, sd_arrival_kind arrival) {
    return (sd_rate_model){.kind = SD_RATE_UNIFORM, .arrival = arrival, .lo = lo, .hi = hi};
}

sd_rate_model sd_rate_normal(double mu, double sigma, double lo, double hi, sd_arrival_kind arrival) {
    return (sd_rate_model){.kind = SD_RATE_NORMAL, .arrival = arrival, .mu = mu, .sigma = sigma, .lo = lo, .hi = hi};
}

sd_rate_model sd_rate_traced(const sd_rate_trace *trace, sd_arrival_kind arrival) {
    return (sd_rate_model){.kind = SD_RATE_TRACE, .arrival = arrival, .trace = trace};
}

static bool rate_ok(double r) { return r >= 0 && r <= SD_RATE_MAX; } /* false for NaN */

/* P(lo <= X <= hi) for X ~ normal(mu, sigma), accurate in either tail. */
static double normal_mass(double mu, double sigma, double lo, double hi) {
    double a = (lo - mu) / (sigma * sqrt(2.0)), b = (hi - mu) / (sigma * sqrt(2.0));
    if (a >= 0) return 0.5 * (erfc(a) - erfc(b));
    if (b <= 0) return 0.5 * (erfc(-b) - erfc(-a));
    return 1.0 - 0.5 * erfc(-a) - 0.5 * erfc(b);
}

#define NORMAL_MIN_MASS 1e-4 /* rejection sampling then needs 1e4 tries on average at worst */

sd_status sd_rate_model_check(const sd_rate_model *m) {
    if (!m) return SD_FAIL(SD_ERR_INVALID, "no rate model given");
    if (m->arrival != SD_ARRIVAL_CONSTANT && m->arrival != SD_ARRIVAL_POISSON)
        return SD_FAIL(SD_ERR_INVALID, "rate model arrival kind %d is unknown; use constant or poisson",
                       (int)m->arrival);
    switch (m->kind) {
    case SD_RATE_FIXED:
        if (!rate_ok(m->rate))
            return SD_FAIL(SD_ERR_INVALID, "fixed rate %g samples/s must lie in [0, %g]", m->rate, SD_RATE_MAX);
        return SD_OK;
    case SD_RATE_UNIFORM:
        if (!rate_ok(m->lo) || !rate_ok(m->hi) || m->lo > m->hi)
            return SD_FAIL(SD_ERR_INVALID, "uniform rate range [%g, %g] must satisfy 0 <= lo <= hi <= %g", m->lo,
                           m->hi, SD_RATE_MAX);
        return SD_OK;
    case SD_RATE_NORMAL:
        if (!isfinite(m->mu) || !(m->sigma > 0) || !isfinite(m->sigma))
            return SD_FAIL(SD_ERR_INVALID, "normal rate needs a finite mu and a positive finite sigma, got mu %g sigma %g",
                           m->mu, m->sigma);
        if (!(m->lo >= 0) || !(m->hi > m->lo) || !isfinite(m->lo))
            return SD_FAIL(SD_ERR_INVALID,
                           "normal rate truncation [%g, %g] must satisfy 0 <= lo < hi (hi may be INFINITY)", m->lo,
                           m->hi);
        if (normal_mass(m->mu, m->sigma, m->lo, fmin(m->hi, SD_RATE_MAX)) < NORMAL_MIN_MASS)
            return SD_FAIL(SD_ERR_INVALID,
                           "normal(%g, %g) puts less than %g of its mass in [%g, %g]; widen the truncation", m->mu,
                           m->sigma, NORMAL_MIN_MASS, m->lo, m->hi);
        return SD_OK;
    case SD_RATE_TRACE:
        if (!m->trace || m->trace->n == 0 || !m->trace->time || !m->trace->rate || !m->trace->cum)
            return SD_FAIL(SD_ERR_INVALID, "trace rate model has no trace loaded (sd_rate_trace_load)");
        return SD_OK;
    }
    return SD_FAIL(SD_ERR_INVALID, "rate model kind %d is unknown; use fixed, uniform, normal or trace", (int)m->kind);
}

/* ---- traces ------------------------------------------------------------------------------------ */
void sd_rate_trace_free(sd_rate_trace *t) {
    if (!t) return;
    free(t->time);
    free(t->rate);
    free(t->cum);
    memset(t, 0, sizeof *t);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
    return s;
}

/* Parses a whole field as a finite double. */
static bool parse_num(char *s, double *v) {
    s = trim(s);
    if (!*s) return false;
    char *end = NULL;
    errno = 0;
    *v = strtod(s, &end);
    return *end == '\0' && errno == 0 && isfinite(*v);
}

static bool looks_like_header(const char *s) {
    for (; *s; s++)
        if (isalpha((unsigned char)*s)) return true;
    return false;
}

static sd_status push_point(sd_rate_trace *t, size_t *cap, double time, double rate) {
    if (t->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        double *a = realloc(t->time, nc * sizeof *a);
        if (a) t->time = a;
        double *b = a ? realloc(t->rate, nc * sizeof *b) : NULL;
        if (b) t->rate = b;
        if (!a || !b) return SD_FAIL(SD_ERR_OOM, "out of memory reading a trace of %zu rows", t->n);
        *cap = nc;
    }
    t->time[t->n] = time;
    t->rate[t->n] = rate;
    t->n++;
    return SD_OK;
}

static sd_status parse_into(const char *text, size_t len, const char *name, sd_rate_trace *t) {
    size_t cap = 0, lineno = 0, pos = 0;
    bool seen_content = false;
    char line[SD_RATE_TRACE_MAX_LINE + 2];
    while (pos < len) {
        lineno++;
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        size_t n = end - pos;
        if (n > 0 && text[pos + n - 1] == '\r') n--;
        if (n > SD_RATE_TRACE_MAX_LINE)
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: line of %zu characters exceeds the limit of %d", name, lineno, n,
                           SD_RATE_TRACE_MAX_LINE);
        if (memchr(text + pos, '\0', n))
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: line contains a NUL byte; a trace is text", name, lineno);
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos = end + 1;
        char *s = trim(line);
        if (*s == '\0' || *s == '#') continue;
        char *comma = strchr(s, ',');
        if (!comma || strchr(comma + 1, ','))
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: expected two fields \"time,rate\", got \"%s\"", name, lineno, s);
        *comma = '\0';
        double time = 0, rate = 0;
        bool ok_t = parse_num(s, &time), ok_r = parse_num(comma + 1, &rate);
        if (!seen_content && !ok_t && !ok_r && looks_like_header(s)) {
            seen_content = true; /* a header line such as "time,rate" */
            continue;
        }
        seen_content = true;
        if (!ok_t)
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: time \"%s\" is not a finite number", name, lineno, trim(s));
        if (!ok_r)
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: rate \"%s\" is not a finite number", name, lineno,
                           trim(comma + 1));
        if (time < 0 || time > SD_RATE_TRACE_MAX_TIME)
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: time %g must lie in [0, %g] seconds", name, lineno, time,
                           SD_RATE_TRACE_MAX_TIME);
        if (!rate_ok(rate))
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: rate %g must lie in [0, %g] samples/s", name, lineno, rate,
                           SD_RATE_MAX);
        if (t->n > 0 && !(time > t->time[t->n - 1]))
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: time %g is not after the previous time %g; times must increase",
                           name, lineno, time, t->time[t->n - 1]);
        if (t->n >= SD_RATE_TRACE_MAX_POINTS)
            return SD_FAIL(SD_ERR_FORMAT, "%s:%zu: more than %d rows; a trace holds at most that many", name, lineno,
                           SD_RATE_TRACE_MAX_POINTS);
        TRY(push_point(t, &cap, time, rate));
    }
    if (t->n == 0) return SD_FAIL(SD_ERR_FORMAT, "%s: no \"time,rate\" rows found", name);
    t->cum = malloc(t->n * sizeof *t->cum);
    if (!t->cum) return SD_FAIL(SD_ERR_OOM, "out of memory for a trace of %zu rows", t->n);
    t->cum[0] = 0;
    for (size_t i = 1; i < t->n; i++) t->cum[i] = t->cum[i - 1] + t->rate[i - 1] * (t->time[i] - t->time[i - 1]);
    return SD_OK;
}

sd_status sd_rate_trace_parse(const char *text, size_t len, const char *name, sd_rate_trace *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_rate_trace_parse needs an output");
    memset(out, 0, sizeof *out);
    if (!text && len) return SD_FAIL(SD_ERR_INVALID, "sd_rate_trace_parse: no text given");
    sd_status s = parse_into(text ? text : "", len, name ? name : "trace", out);
    if (s != SD_OK) sd_rate_trace_free(out);
    return s;
}

sd_status sd_rate_trace_load(const char *path, sd_rate_trace *out) {
    if (!path || !out) return SD_FAIL(SD_ERR_INVALID, "sd_rate_trace_load needs a path and an output");
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return SD_FAIL(SD_ERR_IO, "cannot open trace file %s: %s", path, strerror(errno));
    const size_t limit = (size_t)SD_RATE_TRACE_MAX_POINTS * 64;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len == cap) {
            if (cap >= limit) break;
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    bool err = ferror(f) != 0;
    fclose(f);
    if (!buf) return SD_FAIL(SD_ERR_OOM, "out of memory reading trace file %s", path);
    if (err) {
        free(buf);
        return SD_FAIL(SD_ERR_IO, "error reading trace file %s", path);
    }
    if (len == cap && cap >= limit) {
        free(buf);
        return SD_FAIL(SD_ERR_FORMAT, "trace file %s is larger than %zu bytes; a trace holds at most %d rows", path,
                       limit, SD_RATE_TRACE_MAX_POINTS);
    }
    sd_status s = sd_rate_trace_parse(buf, len, path, out);
    free(buf);
    return s;
}

double sd_rate_trace_at(const sd_rate_trace *t, double time) {
    if (!t || t->n == 0 || time < t->time[0]) return 0;
    size_t lo = 0, hi = t->n; /* last i with time[i] <= time */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (t->time[mid] <= time) lo = mid;
        else hi = mid;
    }
    return t->rate[lo];
}

/* ---- arrivals ---------------------------------------------------------------------------------- */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

sd_status sd_arrivals_init(sd_arrivals *g, const sd_rate_model *m, uint64_t seed, uint32_t device) {
    if (!g) return SD_FAIL(SD_ERR_INVALID, "sd_arrivals_init needs a generator");
    TRY(sd_rate_model_check(m));
    memset(g, 0, sizeof *g);
    g->model = *m;
    sd_rng_seed(&g->rng, mix64(seed) ^ mix64(0x5ca1ab1eull + device));
    switch (m->kind) {
    case SD_RATE_FIXED: g->rate = m->rate; break;
    case SD_RATE_UNIFORM: g->rate = m->lo + (m->hi - m->lo) * sd_rng_double(&g->rng); break;
    case SD_RATE_NORMAL: {
        double hi = fmin(m->hi, SD_RATE_MAX), x = m->lo;
        /* rejection; the model check guarantees an acceptance probability >= 1e-4, so the cap is
         * never reached in practice (probability < e^-1000) */
        for (long tries = 0; tries < 10000000L; tries++) {
            double y = m->mu + m->sigma * sd_rng_normal(&g->rng);
            if (y >= m->lo && y <= hi) {
                x = y;
                break;
            }
        }
        g->rate = x;
        break;
    }
    case SD_RATE_TRACE: g->rate = 0; break;
    }
    return SD_OK;
}

double sd_arrivals_next(sd_arrivals *g) {
    if (g->model.arrival == SD_ARRIVAL_POISSON) g->target += -log1p(-sd_rng_double(&g->rng)); /* Exp(1) */
    else g->target = (double)(g->count + 1);
    g->count++;
    if (g->model.kind != SD_RATE_TRACE) return g->rate > 0 ? g->target / g->rate : INFINITY;
    const sd_rate_trace *t = g->model.trace;
    /* the first time the expected count reaches the level: inf { t : Lambda(t) >= target } */
    while (g->seg + 1 < t->n && t->cum[g->seg + 1] < g->target) g->seg++;
    double r = t->rate[g->seg];
    if (g->target <= t->cum[g->seg]) return t->time[g->seg];
    if (!(r > 0)) return INFINITY; /* only the last segment can be empty here */
    return t->time[g->seg] + (g->target - t->cum[g->seg]) / r;
}
