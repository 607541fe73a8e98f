/* crc32c.c: CRC-32C (declared in crc32c.h), three implementations chosen at run time from what the
 * CPU has (x86-64 with GCC or Clang; elsewhere only the first):
 *   0. slicing-by-8 over tables built once;
 *   1. the SSE4.2 crc32 instruction on three independent streams over 3 x 256-byte blocks (its
 *      latency is 3 cycles, its throughput 1), the partial CRCs joined with "shift by n zero bytes"
 *      tables, which follow from linearity: R(r, A||B) = R(r, 0^|B|) ^ R(0, B);
 *   2. AVX-512 VPCLMULQDQ folding for inputs of 319 bytes or more (the method of Intel's "Fast CRC
 *      computation for generic polynomials using PCLMULQDQ"): a 16-byte chunk X followed by L bits
 *      is replaced by X * x^L mod P, computed as two carry-less products with the constants
 *      x^(L+63) mod P and x^(L-1) mod P (bit-reflected; the -1 absorbs the one-bit shift of a
 *      reflected product), until one chunk is left, whose CRC the crc32 instruction finishes.
 *      The constants are derived from the polynomial at start-up.
 * Each works on the CRC register (no pre/post inversion); the public functions invert. */
#include "stream/crc32c.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SD_CRC_X86 1
#define TARGET_CRC __attribute__((target("sse4.2")))
#define TARGET_FOLD __attribute__((target("sse4.2,pclmul,avx512f,avx512vl,vpclmulqdq")))
#else
#define SD_CRC_X86 0
#endif

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */
#define BLOCK 256        /* bytes per stream in the three-stream loop */
#define FOLD_MIN 319     /* the folding path takes inputs of at least 256 + 63 bytes */

typedef uint32_t (*crc_fn)(uint32_t reg, const uint8_t *p, size_t n);
typedef uint32_t (*crc_copy_fn)(uint32_t reg, uint8_t *q, const uint8_t *p, size_t n);

static uint32_t t8[8][256];     /* slicing-by-8 tables */
static uint32_t shift1[4][256]; /* R(x, 0^BLOCK) by byte lane of x */
static uint32_t shift2[4][256]; /* R(x, 0^(2*BLOCK)) */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int level_detected;
static int level_now;
static crc_fn impl;
static crc_copy_fn impl_copy;

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian host: the bytes in stream order, low byte first */
}

static inline void store64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* ---- 0: tables ------------------------------------------------------------------------------------ */
static uint32_t sw_reg(uint32_t r, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= r;
        r = t8[7][lo & 0xff] ^ t8[6][(lo >> 8) & 0xff] ^ t8[5][(lo >> 16) & 0xff] ^ t8[4][lo >> 24] ^
            t8[3][hi & 0xff] ^ t8[2][(hi >> 8) & 0xff] ^ t8[1][(hi >> 16) & 0xff] ^ t8[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    for (size_t i = 0; i < n; i++) r = (r >> 8) ^ t8[0][(r ^ p[i]) & 0xff];
    return r;
}

static uint32_t sw_copy(uint32_t r, uint8_t *q, const uint8_t *p, size_t n) {
    memcpy(q, p, n);
    return sw_reg(r, q, n);
}

/* Tables of x -> R(x, 0^n) split by byte lane: the map is linear in x, so it is the xor of the
 * images of x's set bits. */
static void make_shift(uint32_t tab[4][256], size_t n) {
    uint32_t basis[32];
    for (int b = 0; b < 32; b++) {
        uint32_t r = 1u << b;
        for (size_t i = 0; i < n; i++) r = (r >> 8) ^ t8[0][r & 0xff];
        basis[b] = r;
    }
    for (int lane = 0; lane < 4; lane++)
        for (int v = 0; v < 256; v++) {
            uint32_t x = 0;
            for (int bit = 0; bit < 8; bit++)
                if (v & (1 << bit)) x ^= basis[lane * 8 + bit];
            tab[lane][v] = x;
        }
}

static inline uint32_t shift_by(const uint32_t tab[4][256], uint32_t x) {
    return tab[0][x & 0xff] ^ tab[1][(x >> 8) & 0xff] ^ tab[2][(x >> 16) & 0xff] ^ tab[3][x >> 24];
}

#if SD_CRC_X86
/* ---- 1: the crc32 instruction, three streams ---------------------------------------------------- */
TARGET_CRC static inline uint32_t tail_reg(uint64_t r, const uint8_t *p, size_t n) {
    for (; n >= 8; n -= 8, p += 8) r = _mm_crc32_u64(r, load64(p));
    uint32_t r32 = (uint32_t)r;
    if (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        r32 = _mm_crc32_u32(r32, w);
        p += 4;
        n -= 4;
    }
    while (n--) r32 = _mm_crc32_u8(r32, *p++);
    return r32;
}

TARGET_CRC static uint32_t hw_reg(uint32_t reg, const uint8_t *p, size_t n) {
    uint64_t r = reg;
    for (; n >= 3 * BLOCK; n -= 3 * BLOCK, p += 3 * BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < BLOCK; i += 8) {
            r = _mm_crc32_u64(r, load64(p + i));
            c1 = _mm_crc32_u64(c1, load64(p + BLOCK + i));
            c2 = _mm_crc32_u64(c2, load64(p + 2 * BLOCK + i));
        }
        r = shift_by(shift2, (uint32_t)r) ^ shift_by(shift1, (uint32_t)c1) ^ (uint32_t)c2;
    }
    return tail_reg(r, p, n);
}

TARGET_CRC static uint32_t hw_copy(uint32_t reg, uint8_t *q, const uint8_t *p, size_t n) {
    uint64_t r = reg;
    for (; n >= 3 * BLOCK; n -= 3 * BLOCK, p += 3 * BLOCK, q += 3 * BLOCK) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < BLOCK; i += 8) {
            uint64_t a = load64(p + i), b = load64(p + BLOCK + i), c = load64(p + 2 * BLOCK + i);
            store64(q + i, a);
            store64(q + BLOCK + i, b);
            store64(q + 2 * BLOCK + i, c);
            r = _mm_crc32_u64(r, a);
            c1 = _mm_crc32_u64(c1, b);
            c2 = _mm_crc32_u64(c2, c);
        }
        r = shift_by(shift2, (uint32_t)r) ^ shift_by(shift1, (uint32_t)c1) ^ (uint32_t)c2;
    }
    for (; n >= 8; n -= 8, p += 8, q += 8) {
        uint64_t a = load64(p);
        store64(q, a);
        r = _mm_crc32_u64(r, a);
    }
    memcpy(q, p, n);
    return tail_reg(r, q, n); /* under 8 bytes left */
}

/* ---- 2: carry-less multiply folding --------------------------------------------------------------- */
/* Per 128-bit lane {lo, hi}: the constants folding a chunk forward by L bits. */
static uint64_t kfold[6][2]; /* L = 2048, 1024, 512, 384, 256, 128 */

/* x^e mod P, P = x^32 + 0x1EDC6F41 (normal bit order). */
static uint64_t xpow_mod(unsigned e) {
    uint64_t r = 1;
    while (e--) {
        r <<= 1;
        if (r >> 32) r ^= 0x11EDC6F41ull;
    }
    return r;
}

static uint64_t rev64(uint64_t x) {
    uint64_t y = 0;
    for (int i = 0; i < 64; i++) y |= ((x >> i) & 1) << (63 - i);
    return y;
}

static void make_fold_consts(void) {
    static const unsigned L[6] = {2048, 1024, 512, 384, 256, 128};
    for (int i = 0; i < 6; i++) {
        kfold[i][0] = rev64(xpow_mod(L[i] + 63));
        kfold[i][1] = rev64(xpow_mod(L[i] - 1));
    }
}

TARGET_FOLD static inline __m128i kconst(int i) { return _mm_loadu_si128((const __m128i *)kfold[i]); }

TARGET_FOLD static inline __m512i fold512(__m512i x, __m512i k, __m512i data) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11),
                                     data, 0x96);
}

TARGET_FOLD static inline __m128i fold128(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* The register after n bytes (n >= 256, a multiple of 64) from register r; copies them to dst when
 * copy is set. */
TARGET_FOLD static inline uint32_t fold_bytes(uint32_t r, uint8_t *dst, const uint8_t *src, size_t n, bool copy) {
    const __m512i k2048 = _mm512_broadcast_i32x4(kconst(0)), k1024 = _mm512_broadcast_i32x4(kconst(1)),
                  k512 = _mm512_broadcast_i32x4(kconst(2));
    __m512i x0 = _mm512_loadu_si512(src), x1 = _mm512_loadu_si512(src + 64), x2 = _mm512_loadu_si512(src + 128),
            x3 = _mm512_loadu_si512(src + 192);
    if (copy) {
        _mm512_storeu_si512(dst, x0);
        _mm512_storeu_si512(dst + 64, x1);
        _mm512_storeu_si512(dst + 128, x2);
        _mm512_storeu_si512(dst + 192, x3);
        dst += 256;
    }
    x0 = _mm512_xor_si512(x0, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)r))); /* the register enters as data */
    src += 256;
    n -= 256;
    for (; n >= 256; n -= 256, src += 256) {
        __m512i y0 = _mm512_loadu_si512(src), y1 = _mm512_loadu_si512(src + 64), y2 = _mm512_loadu_si512(src + 128),
                y3 = _mm512_loadu_si512(src + 192);
        if (copy) {
            _mm512_storeu_si512(dst, y0);
            _mm512_storeu_si512(dst + 64, y1);
            _mm512_storeu_si512(dst + 128, y2);
            _mm512_storeu_si512(dst + 192, y3);
            dst += 256;
        }
        x0 = fold512(x0, k2048, y0);
        x1 = fold512(x1, k2048, y1);
        x2 = fold512(x2, k2048, y2);
        x3 = fold512(x3, k2048, y3);
    }
    for (; n >= 64; n -= 64, src += 64) { /* one 64-byte block at a time: rotate the four */
        __m512i y = _mm512_loadu_si512(src);
        if (copy) {
            _mm512_storeu_si512(dst, y);
            dst += 64;
        }
        __m512i f = fold512(x0, k2048, y);
        x0 = x1;
        x1 = x2;
        x2 = x3;
        x3 = f;
    }
    /* four consecutive 64-byte blocks -> one: x0 and x1 forward by 128 bytes, then x2 by 64 */
    x2 = fold512(x0, k1024, x2);
    x3 = fold512(x1, k1024, x3);
    x3 = fold512(x2, k512, x3);
    /* four 16-byte lanes -> the last one, whose CRC the crc32 instruction takes */
    __m128i l0 = _mm512_extracti32x4_epi32(x3, 0), l1 = _mm512_extracti32x4_epi32(x3, 1),
            l2 = _mm512_extracti32x4_epi32(x3, 2), l3 = _mm512_extracti32x4_epi32(x3, 3);
    __m128i v = _mm_ternarylogic_epi64(fold128(l0, kconst(3)), fold128(l1, kconst(4)), fold128(l2, kconst(5)), 0x96);
    v = _mm_xor_si128(v, l3);
    uint64_t reg = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(v));
    return (uint32_t)_mm_crc32_u64(reg, (uint64_t)_mm_extract_epi64(v, 1));
}

TARGET_FOLD static uint32_t fold_reg(uint32_t reg, const uint8_t *p, size_t n) {
    if (n < FOLD_MIN) return hw_reg(reg, p, n);
    size_t head = n & 63; /* the crc32 instruction takes the head, folding the 64-byte blocks */
    reg = tail_reg(reg, p, head);
    return fold_bytes(reg, NULL, p + head, n - head, false);
}

TARGET_FOLD static uint32_t fold_copy(uint32_t reg, uint8_t *q, const uint8_t *p, size_t n) {
    if (n < FOLD_MIN) return hw_copy(reg, q, p, n);
    size_t head = n & 63;
    memcpy(q, p, head);
    reg = tail_reg(reg, q, head);
    return fold_bytes(reg, q + head, p + head, n - head, true);
}
#endif

/* ---- selection ---------------------------------------------------------------------------------- */
static void set_level(int level) {
    level_now = level;
#if SD_CRC_X86
    if (level == 2) {
        impl = fold_reg;
        impl_copy = fold_copy;
        return;
    }
    if (level == 1) {
        impl = hw_reg;
        impl_copy = hw_copy;
        return;
    }
#endif
    impl = sw_reg;
    impl_copy = sw_copy;
}

static void init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        t8[0][i] = c;
    }
    for (int s = 1; s < 8; s++)
        for (int i = 0; i < 256; i++) t8[s][i] = (t8[s - 1][i] >> 8) ^ t8[0][t8[s - 1][i] & 0xff];
    make_shift(shift1, BLOCK);
    make_shift(shift2, 2 * BLOCK);
    level_detected = 0;
#if SD_CRC_X86
    make_fold_consts();
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) level_detected = 1;
    if (level_detected && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq"))
        level_detected = 2;
#endif
    set_level(level_detected);
}

uint32_t sd_crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&once, init);
    return ~impl(~crc, data, n);
}

uint32_t sd_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t n) {
    pthread_once(&once, init);
    return ~impl_copy(~crc, dst, src, n);
}

uint32_t sd_crc32c_sw(uint32_t crc, const void *data, size_t n) {
    pthread_once(&once, init);
    return ~sw_reg(~crc, data, n);
}

int sd_crc32c_hw(void) {
    pthread_once(&once, init);
    return level_now;
}

int sd_crc32c_select(int level) {
    pthread_once(&once, init);
    set_level(level < 0 || level > level_detected ? level_detected : level);
    return level_now;
}
