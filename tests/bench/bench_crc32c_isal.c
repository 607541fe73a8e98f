/* bench_crc32c_isal.c: our CRC-32C (stream/crc32c.c, the checksum of every stream message) against
 * ISA-L's crc32_iscsi at message-like sizes (docs/performance.md). ISA-L's function neither inverts
 * its initial value nor its result, so sd_crc32c(c, p, n) == ~crc32_iscsi(p, n, ~c); that equality
 * is checked on random buffers, lengths and alignments before anything is timed. Repetitions
 * alternate ours and ISA-L; prints GB/s medians and ranges. Not a ctest test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/crc.h>

#include "base/clock.h"
#include "stream/crc32c.h"
#include "tests/bench/bench_stats.h"

static uint32_t isal_crc(uint32_t crc, const uint8_t *p, size_t n) {
    return ~crc32_iscsi((unsigned char *)p, (int)n, ~crc);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void validate(uint8_t *buf, size_t cap) {
    if (sd_crc32c(0, "123456789", 9) != 0xE3069283u || isal_crc(0, (const uint8_t *)"123456789", 9) != 0xE3069283u)
        bs_die("check value of \"123456789\" is not 0xE3069283 (ours %08x, ISA-L %08x)", sd_crc32c(0, "123456789", 9),
               isal_crc(0, (const uint8_t *)"123456789", 9));
    for (int t = 0; t < 4000; t++) {
        size_t n = t < 2000 ? (size_t)t : (size_t)(next() % (cap - 64)), off = next() % 64;
        uint32_t seed = t % 3 ? (uint32_t)next() : 0;
        if (sd_crc32c(seed, buf + off, n) != isal_crc(seed, buf + off, n))
            bs_die("CRC mismatch at length %zu offset %zu seed %08x", n, off, seed);
    }
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    if (reps < 1 || reps > 1000) bs_die("usage: %s [repetitions 1..1000] (got '%s')", argv[0], argv[1]);
    const size_t sizes[] = {48, 784, 3072, 65536, 1048576};
    const size_t cap = (1u << 20) + 128;
    uint8_t *buf = malloc(cap);
    if (!buf) bs_die("out of memory");
    for (size_t i = 0; i < cap; i++) buf[i] = (uint8_t)next();
    validate(buf, cap);
    printf("crc32c: ours (level %d: 2 = VPCLMULQDQ fold, 1 = 3-stream crc32, 0 = tables) vs ISA-L crc32_iscsi; "
           "equal on 4000 random buffers\n", sd_crc32c_hw());
    printf("load before %.2f\n", bs_load1());
    printf("%-9s %-30s %-30s %s\n", "bytes", "ours GB/s median [min-max]", "ISA-L GB/s median [min-max]", "ours/ISA-L");
    volatile uint32_t sink = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si], iters = (32u << 20) / n;
        double g[2][1000];
        for (int r = 0; r < reps; r++) {
            for (int w = 0; w < 2; w++) {
                int which = (r + w) % 2; /* alternate which goes first */
                uint32_t c = 0;
                double t0 = sd_clock_now();
                for (size_t i = 0; i < iters; i++)
                    c ^= which ? isal_crc(0, buf + (i & 7), n) : sd_crc32c(0, buf + (i & 7), n);
                double t1 = sd_clock_now();
                sink ^= c;
                g[which][r] = (double)n * iters / (t1 - t0) / 1e9;
            }
        }
        bs_summary o = bs_summarize(g[0], reps), p = bs_summarize(g[1], reps);
        printf("%-9zu %6.2f [%6.2f-%6.2f]         %6.2f [%6.2f-%6.2f]         %.2fx\n", n, o.median, o.min, o.max,
               p.median, p.min, p.max, o.median / p.median);
    }
    printf("load after %.2f\n", bs_load1());
    free(buf);
    return sink == 0x12345678u ? 0 : 0;
}
