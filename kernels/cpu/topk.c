/* topk.c: Top-k by magnitude for gradient compression: the kk entries of x with the largest |x|,
 * selected without sorting (a sampled threshold, one streaming pass that keeps the candidates at
 * or above it, then an exact two-level radix select among the candidates). Contract and ordering
 * rules are in cpu_kernels.h (section "topk.c").
 *
 * Keys. An entry's key is the bit pattern of |x| as an unsigned integer, which orders non-negative
 * floats exactly; -0 and +0 share key 0 and every NaN gets key 0x7f800001 (one above +inf), so NaN
 * counts as the largest magnitude and all NaNs tie. Ties are broken by the lowest index.
 *
 * Algorithm (n >= TK_SAMPLE_MIN):
 *  1. Threshold T_low: from a sample (runs of 16 contiguous entries spread evenly over x; the key
 *     bin of rank kk*s/n plus a few standard deviations), or, exactly, from a histogram of the top
 *     15 key bits over all of x (used when the sample is not applicable or turns out wrong).
 *  2. Collect (parallel over contiguous segments, AVX-512 compress when available): every entry
 *     with key >= T_low goes, with its index, to the segment's candidate list (index order kept).
 *  3. Exact select among the m candidates: a histogram of key >> 16 finds the bin of the kk-th
 *     largest key, a 16-bit histogram of the entries in that bin finds the key T itself.
 *  4. Compact (parallel): every candidate with key > T, plus the first (lowest-index) ties with
 *     key == T until exactly kk are taken, written in ascending index order.
 * Traffic: one read of x (plus the 1-3% sample) and a few passes over the ~kk candidates.
 * n < TK_SAMPLE_MIN: one thread, an MSD radix select on the keys (11, 10 and 10 bits), then the
 * same compaction over x (a per-layer gradient tensor is usually this small). */
#include <math.h>
#include <omp.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_kernels.h"

#define TK_KEY_NAN 0x7f800001u        /* the key of every NaN: above +inf (0x7f800000) */
#define TK_ABITS 15                   /* level A: key >> 16 (keys are < 2^31) */
#define TK_ABINS (1u << TK_ABITS)
#define TK_BBINS (1u << 16)           /* level B: the low 16 bits */
#define TK_SEG_MIN ((size_t)1 << 16)  /* entries per parallel segment, at least */
#define TK_MAX_SEG 64                 /* segments (threads) at most */
#define TK_SAMPLE_MIN ((size_t)1 << 17) /* sample the threshold from this size up */
#define TK_SAMPLE_MAX 32768           /* sampled entries at most */
#define TK_RUN 16                     /* sampled entries per run (one cache line) */

static inline uint32_t tk_key(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u &= 0x7fffffffu;
    return u > 0x7f800000u ? TK_KEY_NAN : u;
}

/* The bin b such that the entries in bins > b are fewer than `want` and those in bins >= b are
 * at least `want` (want >= 1, at most the total). *above = entries in bins > b. */
static uint32_t tk_find_bin(const uint32_t *h, uint32_t nbins, size_t want, size_t *above) {
    size_t cum = 0;
    for (uint32_t b = nbins; b-- > 0;) {
        if (cum + h[b] >= want) {
            *above = cum;
            return b;
        }
        cum += h[b];
    }
    *above = cum; /* unreachable when want <= total */
    return 0;
}

/* ---- inputs below TK_SAMPLE_MIN: one thread, MSD radix select ------------------------------ */
#define TK_M0 2048u /* digit 0: key bits 30..20 (exponent and 3 mantissa bits) */
#define TK_M1 1024u /* digits 1 and 2: bits 19..10 and 9..0 */

/* The keys of src[0..n) whose digit (key >> shift) & mask is b, to dst (dst may be src: in place). */
static size_t tk_filter(const uint32_t *src, size_t n, int shift, uint32_t mask, uint32_t b, uint32_t *dst) {
    size_t o = 0, j = 0;
#if defined(__AVX512F__)
    const __m512i mv = _mm512_set1_epi32((int)mask), bv = _mm512_set1_epi32((int)b);
    for (; j + 16 <= n; j += 16) {
        __m512i k = _mm512_loadu_si512(src + j);
        __mmask16 m = _mm512_cmpeq_epu32_mask(_mm512_and_si512(_mm512_srli_epi32(k, (unsigned)shift), mv), bv);
        unsigned pop = (unsigned)__builtin_popcount((unsigned)m);
        _mm512_mask_storeu_epi32(dst + o, (__mmask16)((1u << pop) - 1u), _mm512_maskz_compress_epi32(m, k));
        o += pop;
    }
#endif
    for (; j < n; j++)
        if (((src[j] >> shift) & mask) == b) dst[o++] = src[j];
    return o;
}

/* keys, tmp: n entries of scratch each. Finds the kk-th largest key T one digit at a time, keeping
 * only the entries that share the digits so far, then writes the entries with key > T and the
 * first ties in index order (tk_compact over x itself). */
static void tk_compact(const uint32_t *ci, const float *cv, size_t cnt, uint32_t t, size_t take, uint32_t *io,
                       float *vo);
static void tk_mid(const float *x, size_t n, size_t kk, uint32_t *keys, uint32_t *tmp, uint32_t *idx_out,
                   float *val_out) {
    static const int shift[3] = {20, 10, 0};
    static const uint32_t mask[3] = {TK_M0 - 1u, TK_M1 - 1u, TK_M1 - 1u};
    uint32_t h[2][TK_M0]; /* two copies for level 0 (breaks the chains of increments to one bin) */
    memset(h, 0, sizeof h);
    for (size_t i = 0; i < n; i++) keys[i] = tk_key(x[i]);
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        h[0][keys[i] >> 20]++;
        h[1][keys[i + 1] >> 20]++;
    }
    if (i < n) h[0][keys[i] >> 20]++;
    for (uint32_t b = 0; b < TK_M0; b++) h[0][b] += h[1][b];
    const uint32_t *src = keys;
    size_t nsrc = n, want = kk;
    uint32_t prefix = 0;
    for (int lv = 0;; lv++) {
        if (lv > 0) {
            memset(h[0], 0, TK_M1 * sizeof(uint32_t));
            for (size_t j = 0; j < nsrc; j++) h[0][(src[j] >> shift[lv]) & mask[lv]]++;
        }
        size_t above = 0;
        const uint32_t b = tk_find_bin(h[0], mask[lv] + 1u, want, &above);
        want -= above;
        prefix |= b << shift[lv];
        if (lv == 2) break;
        nsrc = tk_filter(src, nsrc, shift[lv], mask[lv], b, tmp);
        src = tmp;
    }
    uint32_t *iota = tmp; /* the indices, for tk_compact (tmp is free again) */
    for (size_t j = 0; j < n; j++) iota[j] = (uint32_t)j;
    tk_compact(iota, x, n, prefix, want, idx_out, val_out);
}

/* ---- the large path -------------------------------------------------------------------------- */
typedef struct tk_seg {
    size_t lo, hi;     /* the segment of x */
    size_t base, cap;  /* its candidate list: [base, base + cap) of the candidate arrays */
    size_t cnt;        /* candidates collected */
    int overflow;      /* more than cap entries were at or above T_low */
    size_t gt, eq;     /* candidates with key > T, == T */
    size_t sbase;      /* its part of the level-B list */
    size_t take, out;  /* ties it takes, where its output starts */
} tk_seg;

/* Level-A histogram (key >> 16) of x[lo, hi). */
static void tk_hist_x(const float *x, size_t lo, size_t hi, uint32_t *h) {
    memset(h, 0, TK_ABINS * sizeof *h);
    for (size_t i = lo; i < hi; i++) h[tk_key(x[i]) >> 16]++;
}

/* Entries of x[lo, hi) with key >= tlow appended (index order) to ci/cv; stops at cap and flags
 * overflow. Returns the number stored. */
static size_t tk_collect_run(const float *x, size_t lo, size_t hi, uint32_t tlow, uint32_t *ci, float *cv, size_t cap,
                             int *overflow) {
    size_t cnt = 0, i = lo;
#if defined(__AVX512F__)
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), nank = _mm512_set1_epi32((int)TK_KEY_NAN);
    const __m512i tl = _mm512_set1_epi32((int)tlow), sixteen = _mm512_set1_epi32(16);
    __m512i iv = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)lo),
                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    for (; i + 16 <= hi; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512i key = _mm512_min_epu32(_mm512_and_si512(_mm512_castps_si512(v), absmask), nank);
        __mmask16 m = _mm512_cmpge_epu32_mask(key, tl);
        unsigned pop = (unsigned)__builtin_popcount((unsigned)m);
        if (cnt + pop > cap) {
            *overflow = 1;
            return cnt;
        }
        /* compress in registers, then a masked store (the memory form of compress is slow on AMD) */
        __mmask16 w = (__mmask16)((1u << pop) - 1u);
        _mm512_mask_storeu_epi32(ci + cnt, w, _mm512_maskz_compress_epi32(m, iv));
        _mm512_mask_storeu_ps(cv + cnt, w, _mm512_maskz_compress_ps(m, v));
        cnt += pop;
        iv = _mm512_add_epi32(iv, sixteen);
    }
#endif
    for (; i < hi; i++) {
        if (tk_key(x[i]) >= tlow) {
            if (cnt == cap) {
                *overflow = 1;
                return cnt;
            }
            ci[cnt] = (uint32_t)i;
            cv[cnt] = x[i];
            cnt++;
        }
    }
    return cnt;
}

/* tk_collect_run in blocks of TK_BLOCK entries, each block's new candidates added to the level-A
 * histogram h (key >> 16) while they are still in L1. */
#define TK_BLOCK 8192
static size_t tk_collect(const float *x, size_t lo, size_t hi, uint32_t tlow, uint32_t *ci, float *cv, size_t cap,
                         int *overflow, uint32_t *h) {
    size_t cnt = 0;
    memset(h, 0, TK_ABINS * sizeof *h);
    for (size_t b = lo; b < hi && !*overflow; b += TK_BLOCK) {
        const size_t e = hi - b > TK_BLOCK ? b + TK_BLOCK : hi;
        const size_t got = tk_collect_run(x, b, e, tlow, ci + cnt, cv + cnt, cap - cnt, overflow);
        for (size_t j = cnt; j < cnt + got; j++) h[tk_key(cv[j]) >> 16]++;
        cnt += got;
    }
    return cnt;
}

/* The keys of cv[0..cnt) whose level-A bin is c, appended to lb; returns how many. */
static size_t tk_extract(const float *cv, size_t cnt, uint32_t c, uint32_t *lb) {
    size_t o = 0, j = 0;
#if defined(__AVX512F__)
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), nank = _mm512_set1_epi32((int)TK_KEY_NAN);
    const __m512i cv16 = _mm512_set1_epi32((int)c);
    for (; j + 16 <= cnt; j += 16) {
        __m512i key = _mm512_min_epu32(_mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(cv + j)), absmask), nank);
        __mmask16 m = _mm512_cmpeq_epu32_mask(_mm512_srli_epi32(key, 16), cv16);
        if (m) {
            unsigned pop = (unsigned)__builtin_popcount((unsigned)m);
            _mm512_mask_storeu_epi32(lb + o, (__mmask16)((1u << pop) - 1u), _mm512_maskz_compress_epi32(m, key));
            o += pop;
        }
    }
#endif
    for (; j < cnt; j++) {
        uint32_t key = tk_key(cv[j]);
        if ((key >> 16) == c) lb[o++] = key;
    }
    return o;
}

/* The candidates with key > t, and the first `take` with key == t, appended to io/vo. */
static void tk_compact(const uint32_t *ci, const float *cv, size_t cnt, uint32_t t, size_t take, uint32_t *io,
                       float *vo) {
    size_t o = 0, j = 0, taken = 0;
#if defined(__AVX512F__)
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), nank = _mm512_set1_epi32((int)TK_KEY_NAN);
    const __m512i tv = _mm512_set1_epi32((int)t);
    for (; j + 16 <= cnt; j += 16) {
        __m512 v = _mm512_loadu_ps(cv + j);
        __m512i key = _mm512_min_epu32(_mm512_and_si512(_mm512_castps_si512(v), absmask), nank);
        __mmask16 m = _mm512_cmpgt_epu32_mask(key, tv);
        __mmask16 e = _mm512_cmpeq_epu32_mask(key, tv);
        if (e) {
            unsigned em = (unsigned)e, keep = 0;
            while (em && taken < take) {
                unsigned low = em & (0u - em);
                keep |= low;
                em ^= low;
                taken++;
            }
            m = (__mmask16)((unsigned)m | keep);
        }
        unsigned pop = (unsigned)__builtin_popcount((unsigned)m);
        __mmask16 w = (__mmask16)((1u << pop) - 1u);
        _mm512_mask_storeu_epi32(io + o, w, _mm512_maskz_compress_epi32(m, _mm512_loadu_si512(ci + j)));
        _mm512_mask_storeu_ps(vo + o, w, _mm512_maskz_compress_ps(m, v));
        o += pop;
    }
#endif
    for (; j < cnt; j++) {
        uint32_t key = tk_key(cv[j]);
        if (key > t || (key == t && taken < take)) {
            if (key == t) taken++;
            io[o] = ci[j];
            vo[o] = cv[j];
            o++;
        }
    }
}

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

/* Threshold from a sample: key lower bound T_low (bin-aligned) and an estimate of how many
 * entries of x are at or above it. Returns 0 when sampling is not applicable. */
static int tk_sample(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t *tlow, size_t *est) {
    if (n < TK_SAMPLE_MIN) return 0;
    size_t s = n / 16;
    if (s > TK_SAMPLE_MAX) s = TK_SAMPLE_MAX;
    s -= s % TK_RUN;
    const size_t runs = s / TK_RUN;
    const double ks = (double)kk * (double)s / (double)n;
    /* 4 standard deviations of the binomial count, plus a floor for tiny kk */
    const double q = ks + 4.0 * sqrt(ks) + 16.0;
    if (q > 0.5 * (double)s) return 0;
    void *mem = NULL;
    if (sd_cpu_scratch(k, TK_ABINS * sizeof(uint32_t), &mem) != SD_OK) return 0;
    uint32_t *h = mem;
    memset(h, 0, TK_ABINS * sizeof *h);
    const size_t gap = (n - TK_RUN) / (runs - 1);
    for (size_t r = 0; r < runs; r++) {
        const float *p = x + r * gap;
        for (int j = 0; j < TK_RUN; j++) h[tk_key(p[j]) >> 16]++;
    }
    size_t above = 0;
    const uint32_t b = tk_find_bin(h, TK_ABINS, (size_t)q, &above);
    *tlow = b << 16;
    *est = (size_t)((double)(above + h[b]) * (double)n / (double)s);
    return 1;
}

/* Exact threshold: the level-A bin of the kk-th largest key over all of x; per-segment counts of
 * entries at or above it become the exact capacities. */
static sd_status tk_exact_threshold(sd_kctx *k, const float *x, size_t kk, tk_seg *seg, int nseg, uint32_t *tlow) {
    void *mem = NULL;
    TRY(sd_cpu_scratch(k, (size_t)(nseg + 1) * TK_ABINS * sizeof(uint32_t), &mem));
    uint32_t *h = mem, *tot = h + (size_t)nseg * TK_ABINS;
#pragma omp parallel for num_threads(nseg) schedule(static, 1) if (nseg > 1)
    for (int t = 0; t < nseg; t++) tk_hist_x(x, seg[t].lo, seg[t].hi, h + (size_t)t * TK_ABINS);
    memset(tot, 0, TK_ABINS * sizeof *tot);
    for (int t = 0; t < nseg; t++)
        for (uint32_t b = 0; b < TK_ABINS; b++) tot[b] += h[(size_t)t * TK_ABINS + b];
    size_t above = 0;
    const uint32_t c = tk_find_bin(tot, TK_ABINS, kk, &above);
    for (int t = 0; t < nseg; t++) {
        size_t cap = 0;
        for (uint32_t b = c; b < TK_ABINS; b++) cap += h[(size_t)t * TK_ABINS + b];
        seg[t].cap = cap;
    }
    *tlow = c << 16;
    return SD_OK;
}

/* Steps 2-4 with T_low and the segment capacities set. Returns 1 in *retry when a capacity
 * overflowed or fewer than kk candidates were found (only possible with a sampled T_low). */
static sd_status tk_select(sd_kctx *k, const float *x, size_t kk, tk_seg *seg, int nseg, uint32_t tlow,
                           uint32_t *idx_out, float *val_out, int *retry) {
    size_t cap_total = 0;
    for (int t = 0; t < nseg; t++) {
        seg[t].base = cap_total;
        cap_total += seg[t].cap;
    }
    const size_t b_hist = al64((size_t)nseg * TK_ABINS * sizeof(uint32_t));
    const size_t b_tot = al64(TK_BBINS * sizeof(uint32_t));
    const size_t b_list = al64((cap_total ? cap_total : 1) * sizeof(uint32_t));
    void *mem = NULL;
    TRY(sd_cpu_scratch(k, b_hist + b_tot + 3 * b_list, &mem));
    char *p = mem;
    uint32_t *hist = (uint32_t *)p, *tot = (uint32_t *)(p + b_hist);
    uint32_t *ci = (uint32_t *)(p + b_hist + b_tot);
    float *cv = (float *)(p + b_hist + b_tot + b_list);
    uint32_t *lb = (uint32_t *)(p + b_hist + b_tot + 2 * b_list);

    /* 2. collect, with the level-A histogram of each segment's candidates */
#pragma omp parallel for num_threads(nseg) schedule(static, 1) if (nseg > 1)
    for (int t = 0; t < nseg; t++) {
        tk_seg *s = &seg[t];
        s->overflow = 0;
        s->cnt = tk_collect(x, s->lo, s->hi, tlow, ci + s->base, cv + s->base, s->cap, &s->overflow,
                            hist + (size_t)t * TK_ABINS);
    }
    size_t m = 0;
    for (int t = 0; t < nseg; t++) {
        if (seg[t].overflow) {
            *retry = 1;
            return SD_OK;
        }
        m += seg[t].cnt;
    }
    if (m < kk) {
        *retry = 1;
        return SD_OK;
    }
    *retry = 0;

    /* 3a. level A: the bin c of the kk-th largest key */
    memset(tot, 0, TK_ABINS * sizeof *tot);
    for (int t = 0; t < nseg; t++)
        for (uint32_t b = tlow >> 16; b < TK_ABINS; b++) tot[b] += hist[(size_t)t * TK_ABINS + b];
    size_t above = 0;
    const uint32_t c = tk_find_bin(tot, TK_ABINS, kk, &above);
    size_t rem = kk - above, lsize = 0;
    for (int t = 0; t < nseg; t++) {
        size_t gt = 0;
        for (uint32_t b = c + 1; b < TK_ABINS; b++) gt += hist[(size_t)t * TK_ABINS + b];
        seg[t].gt = gt;
        seg[t].sbase = lsize;
        lsize += hist[(size_t)t * TK_ABINS + c];
    }
    /* 3b. level B: the keys in bin c, then their low 16 bits */
#pragma omp parallel for num_threads(nseg) schedule(static, 1) if (nseg > 1 && m >= TK_SEG_MIN)
    for (int t = 0; t < nseg; t++) {
        const tk_seg *s = &seg[t];
        tk_extract(cv + s->base, s->cnt, c, lb + s->sbase);
    }
    memset(tot, 0, TK_BBINS * sizeof *tot);
    for (size_t j = 0; j < lsize; j++) tot[lb[j] & 0xffffu]++;
    size_t above_b = 0;
    const uint32_t d = tk_find_bin(tot, TK_BBINS, rem, &above_b);
    const uint32_t T = (c << 16) | d;
    size_t left = rem - above_b, out = 0; /* ties with key == T still to take, lowest index first */
    for (int t = 0; t < nseg; t++) {
        tk_seg *s = &seg[t];
        size_t gt = 0, eq = 0;
        const size_t end = t + 1 < nseg ? seg[t + 1].sbase : lsize;
        for (size_t j = s->sbase; j < end; j++) {
            gt += lb[j] > T;
            eq += lb[j] == T;
        }
        s->gt += gt;
        s->eq = eq;
        s->take = eq < left ? eq : left;
        left -= s->take;
        s->out = out;
        out += s->gt + s->take;
    }
    /* 4. compact in index order */
#pragma omp parallel for num_threads(nseg) schedule(static, 1) if (nseg > 1 && m >= TK_SEG_MIN)
    for (int t = 0; t < nseg; t++) {
        const tk_seg *s = &seg[t];
        tk_compact(ci + s->base, cv + s->base, s->cnt, T, s->take, idx_out + s->out, val_out + s->out);
    }
    if (out != kk || left != 0)
        return SD_FAIL(SD_ERR_RUNTIME, "topk: internal error: selected %zu of %zu entries", out, kk);
    return SD_OK;
}

sd_status sd_cpu_topk(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t *idx_out, float *val_out) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "topk: NULL kernel context");
    if (kk > n) return SD_FAIL(SD_ERR_INVALID, "topk: k = %zu exceeds n = %zu", kk, n);
    if (n > (size_t)UINT32_MAX)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "topk: n = %zu exceeds the 32-bit index range", n);
    if (kk == 0) return SD_OK;
    if (!x || !idx_out || !val_out)
        return SD_FAIL(SD_ERR_INVALID, "topk: NULL argument (x, idx_out and val_out are required for k > 0)");
    if (kk == n) { /* everything, in index order */
        for (size_t i = 0; i < n; i++) {
            idx_out[i] = (uint32_t)i;
            val_out[i] = x[i];
        }
        return SD_OK;
    }
    if (n < TK_SAMPLE_MIN) {
        void *mem = NULL;
        TRY(sd_cpu_scratch(k, 2 * n * sizeof(uint32_t), &mem));
        tk_mid(x, n, kk, mem, (uint32_t *)mem + n, idx_out, val_out);
        return SD_OK;
    }
    tk_seg seg[TK_MAX_SEG];
    size_t ns = n / TK_SEG_MIN;
    if (ns > (size_t)(k->threads > 0 ? k->threads : 1)) ns = (size_t)(k->threads > 0 ? k->threads : 1);
    if (ns > TK_MAX_SEG) ns = TK_MAX_SEG;
    if (ns < 1) ns = 1;
    const int nseg = (int)ns;
    for (int t = 0; t < nseg; t++) {
        seg[t].lo = n * (size_t)t / ns;
        seg[t].hi = n * (size_t)(t + 1) / ns;
    }
    uint32_t tlow = 0;
    size_t est = 0;
    if (tk_sample(k, x, n, kk, &tlow, &est)) {
        /* room for 25% more than the estimate, spread over the segments by length */
        const double cap = (double)est * 1.25 + 4096.0;
        for (int t = 0; t < nseg; t++) {
            double c = cap * (double)(seg[t].hi - seg[t].lo) / (double)n + 64.0;
            size_t len = seg[t].hi - seg[t].lo;
            seg[t].cap = c < (double)len ? (size_t)c : len;
        }
        int retry = 0;
        TRY(tk_select(k, x, kk, seg, nseg, tlow, idx_out, val_out, &retry));
        if (!retry) return SD_OK;
    }
    TRY(tk_exact_threshold(k, x, kk, seg, nseg, &tlow));
    int retry = 0;
    TRY(tk_select(k, x, kk, seg, nseg, tlow, idx_out, val_out, &retry));
    if (retry) return SD_FAIL(SD_ERR_RUNTIME, "topk: internal error: exact threshold lost candidates");
    return SD_OK;
}
