/* test_comm_nccl.c: the NCCL communicator (comm/comm_nccl.c) under mpiexec, with exactly checkable
 * inputs (small integers in floats, so any summation order gives the exact sum) and wrong elements
 * counted on every rank and summed over ranks:
 *  - allreduce_sum of device buffers (counts 1 .. 4M) and of a host buffer (the staged path);
 *    a non-integer input must give the same bits on every rank (NCCL's order is not the rank
 *    order, so it is compared across ranks, and its distance to the rank-order sum is printed);
 *  - allgatherv with different block sizes per rank (zero included), packed and gapped in reverse
 *    order with sentinels in the gaps, in place, device and host buffers;
 *  - broadcast from every root (device and host), allgather_u64, vote, barrier.
 * Each rank counts failures; rank 0 prints "test_comm_nccl: N passed, N failed" and every rank exits
 * with the same code. Run through tests/mpi/run_mpi.sh (its `--probe` mode only starts MPI).
 *
 * Skips (exit 77 on every rank, with the reason) without a GPU for every rank on its host, and in
 * builds without NCCL/MPI/CUDA; SD_CUDA_REQUIRE=1 turns a missing GPU into a failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/harness.h"

#ifdef SCADLES_HAVE_NCCL
#include "comm/comm_nccl.h"

static int g_rank, g_size;
static sd_comm *g_c;

/* Input of rank r at element i: small integers, so every order of summation is exact. */
static float input(int r, size_t i) { return (float)((int)((i * 7u + (size_t)r * 13u) % 17u) - 8); }

static float *dev_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 4) != cudaSuccess) {
        (void)cudaGetLastError();
        EXPECT(0, "rank %d: cudaMalloc of %zu bytes", g_rank, bytes);
        return NULL;
    }
    return p;
}

static void h2d(void *d, const void *h, size_t bytes) {
    EXPECT(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) == cudaSuccess, "rank %d: cudaMemcpy H2D", g_rank);
}
static void d2h(void *h, const void *d, size_t bytes) {
    EXPECT(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) == cudaSuccess, "rank %d: cudaMemcpy D2H", g_rank);
}

/* Wrong elements over all ranks. */
static long long all_wrong(long long mine) {
    long long s = 0;
    MPI_Allreduce(&mine, &s, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    return s;
}

static void test_allreduce(size_t count, int on_device) {
    float *h = malloc((count ? count : 1) * sizeof *h);
    float *d = on_device ? dev_alloc(count * sizeof(float)) : NULL;
    if (!h || (on_device && !d)) {
        EXPECT(0, "allreduce buffers");
        free(h);
        return;
    }
    for (size_t i = 0; i < count; i++) h[i] = input(g_rank, i);
    if (on_device) h2d(d, h, count * sizeof(float));
    sd_status st = sd_comm_allreduce_sum(g_c, on_device ? d : h, count);
    EXPECT(st == SD_OK, "rank %d: allreduce of %zu floats: %s", g_rank, count, sd_last_error());
    if (on_device) d2h(h, d, count * sizeof(float));
    long long wrong = 0;
    for (size_t i = 0; i < count; i++) {
        float want = 0;
        for (int r = 0; r < g_size; r++) want += input(r, i);
        wrong += h[i] != want;
    }
    const long long tot = all_wrong(wrong);
    EXPECT(tot == 0, "allreduce %zu floats (%s): %lld wrong elements over all ranks", count,
           on_device ? "device" : "host", tot);
    if (g_rank == 0)
        printf("  allreduce %9zu floats %-6s #wrong %lld\n", count, on_device ? "device" : "host", tot);
    if (d) cudaFree(d);
    free(h);
}

/* Non-integer data: identical bits on every rank; the distance to the rank-order sum is reported. */
static void test_allreduce_same_everywhere(void) {
    const size_t count = 100003;
    float *h = malloc(count * sizeof *h), *d = dev_alloc(count * sizeof(float));
    if (!h || !d) {
        free(h);
        if (d) cudaFree(d);
        return;
    }
    sd_test_rng r = {777u + (uint64_t)g_rank};
    for (size_t i = 0; i < count; i++) h[i] = sd_test_uniform(&r, -1, 1) * powf(10.0f, (float)(i % 9) - 4.0f);
    h2d(d, h, count * sizeof(float));
    EXPECT_OK(sd_comm_allreduce_sum(g_c, d, count));
    float *res = malloc(count * sizeof *res);
    d2h(res, d, count * sizeof(float));
    /* a hash of the result bits: min == max over ranks when all ranks agree */
    uint64_t hsh = 1469598103934665603ull;
    for (size_t i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, &res[i], 4);
        hsh = (hsh ^ u) * 1099511628211ull;
    }
    uint64_t lo = 0, hi = 0;
    MPI_Allreduce(&hsh, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&hsh, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    EXPECT(lo == hi, "allreduce of non-integer data: ranks hold different results");
    /* rank-order sum for comparison (informational: NCCL's order differs) */
    float *all = malloc(count * (size_t)g_size * sizeof *all);
    MPI_Allgather(h, (int)count, MPI_FLOAT, all, (int)count, MPI_FLOAT, MPI_COMM_WORLD);
    size_t differ = 0;
    for (size_t i = 0; i < count; i++) {
        float s = all[i];
        for (int q = 1; q < g_size; q++) s += all[(size_t)q * count + i];
        differ += memcmp(&s, &res[i], 4) != 0;
    }
    if (g_rank == 0)
        printf("  allreduce non-integer: identical on all ranks: %s; %zu of %zu elements differ from the rank-order "
               "sum (allowed: NCCL's order)\n", lo == hi ? "yes" : "NO", differ, count);
    free(all), free(res), free(h);
    cudaFree(d);
}

/* Rank j sends size_of(j) bytes; layout packed or gapped (reverse order with 3-byte gaps). */
static size_t size_of(int j) { return (size_t)((j * 3) % 5) * 4 + (size_t)(j % 2); } /* 0, 13, 4, 17, ... */

static void test_allgatherv(int gapped, int in_place, int on_device) {
    size_t *sz = malloc(2 * sizeof(size_t) * (size_t)g_size), *dp = sz + g_size;
    size_t total = 0;
    for (int j = 0; j < g_size; j++) sz[j] = size_of(j);
    if (gapped) {
        size_t off = 3;
        for (int j = g_size - 1; j >= 0; j--) {
            dp[j] = off;
            off += sz[j] + 3;
        }
        total = off;
    } else {
        for (int j = 0; j < g_size; j++) {
            dp[j] = total;
            total += sz[j];
        }
    }
    unsigned char *h = malloc(total + 1), *mine = malloc(sz[g_rank] + 1);
    memset(h, 0xEE, total + 1);
    for (size_t b = 0; b < sz[g_rank]; b++) mine[b] = (unsigned char)(g_rank * 31 + (int)b);
    if (in_place) memcpy(h + dp[g_rank], mine, sz[g_rank]);
    unsigned char *d = NULL, *dsend = NULL;
    if (on_device) {
        d = (unsigned char *)dev_alloc(total + 1);
        dsend = (unsigned char *)dev_alloc(sz[g_rank] + 1);
        if (!d || !dsend) goto out;
        h2d(d, h, total + 1);
        h2d(dsend, mine, sz[g_rank]);
    }
    const void *send = in_place ? (on_device ? (void *)(d + dp[g_rank]) : (void *)(h + dp[g_rank]))
                                : (on_device ? (void *)dsend : (void *)mine);
    sd_status st = sd_comm_allgatherv(g_c, send, sz[g_rank], on_device ? (void *)d : (void *)h, sz, dp);
    EXPECT(st == SD_OK, "rank %d: allgatherv: %s", g_rank, sd_last_error());
    if (on_device) d2h(h, d, total + 1);
    long long wrong = 0;
    unsigned char *want = malloc(total + 1);
    memset(want, 0xEE, total + 1);
    for (int j = 0; j < g_size; j++)
        for (size_t b = 0; b < sz[j]; b++) want[dp[j] + b] = (unsigned char)(j * 31 + (int)b);
    for (size_t b = 0; b <= total; b++) wrong += h[b] != want[b];
    free(want);
    const long long tot = all_wrong(wrong);
    EXPECT(tot == 0, "allgatherv (%s, %s, %s): %lld wrong bytes over all ranks", gapped ? "gapped" : "packed",
           in_place ? "in place" : "separate", on_device ? "device" : "host", tot);
    if (g_rank == 0)
        printf("  allgatherv %-6s %-8s %-6s #wrong %lld\n", gapped ? "gapped" : "packed", in_place ? "in-place" : "separate",
               on_device ? "device" : "host", tot);
out:
    if (d) cudaFree(d);
    if (dsend) cudaFree(dsend);
    free(h), free(mine), free(sz);
}

static void test_broadcast(int on_device) {
    const size_t n = 100001;
    unsigned char *h = malloc(n), *d = on_device ? (unsigned char *)dev_alloc(n) : NULL;
    long long wrong = 0;
    for (int root = 0; root < g_size; root++) {
        for (size_t b = 0; b < n; b++) h[b] = (unsigned char)(g_rank == root ? (b * 3 + (size_t)root) : 0x55);
        if (d) h2d(d, h, n);
        EXPECT_OK(sd_comm_broadcast(g_c, d ? (void *)d : (void *)h, n, root));
        if (d) d2h(h, d, n);
        for (size_t b = 0; b < n; b++) wrong += h[b] != (unsigned char)(b * 3 + (size_t)root);
    }
    const long long tot = all_wrong(wrong);
    EXPECT(tot == 0, "broadcast (%s): %lld wrong bytes over all ranks and roots", on_device ? "device" : "host", tot);
    if (g_rank == 0) printf("  broadcast from every root %-6s #wrong %lld\n", on_device ? "device" : "host", tot);
    if (d) cudaFree(d);
    free(h);
}

static void test_small(void) {
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)g_size);
    EXPECT_OK(sd_comm_allgather_u64(g_c, 1000003ull * (uint64_t)g_rank + 7u, all));
    long long wrong = 0;
    for (int j = 0; j < g_size; j++) wrong += all[j] != 1000003ull * (uint64_t)j + 7u;
    EXPECT(all_wrong(wrong) == 0, "allgather_u64 wrong");
    int sum = -1;
    EXPECT_OK(sd_comm_vote(g_c, g_rank % 2, &sum));
    EXPECT(sum == g_size / 2, "vote: %d, want %d", sum, g_size / 2);
    EXPECT_OK(sd_comm_barrier(g_c));
    EXPECT(g_c->counters.calls[SD_COLL_BARRIER] == 1, "barrier counted %llu times",
           (unsigned long long)g_c->counters.calls[SD_COLL_BARRIER]);
    if (g_rank == 0) printf("  allgather_u64, vote (%d), barrier\n", sum);
    free(all);
}

static int run(void) {
    const char *req = getenv("SD_CUDA_REQUIRE");
    const int required = req && !strcmp(req, "1");
    sd_status st = sd_comm_nccl_create(MPI_COMM_WORLD, NULL, &g_c);
    if (st == SD_ERR_UNSUPPORTED && !required) { /* every rank sees it (the GPU check is agreed) */
        if (g_rank == 0) printf("test_comm_nccl: skipped: %s\n", sd_last_error_brief());
        return SD_TEST_SKIP_CODE;
    }
    EXPECT(st == SD_OK, "rank %d: sd_comm_nccl_create: %s", g_rank, sd_last_error());
    if (st != SD_OK) return 1;
    if (g_rank == 0)
        printf("test_comm_nccl: %d ranks, rank 0 on device %d\n", g_size, sd_comm_nccl_device(g_c));
    EXPECT(!strcmp(g_c->ops->name, "nccl"), "backend name %s", g_c->ops->name);
    const size_t counts[] = {1, 7, 1000, 100003, (size_t)4 << 20};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) test_allreduce(counts[i], 1);
    test_allreduce(100003, 0);
    test_allreduce_same_everywhere();
    for (int dev = 0; dev < 2; dev++)
        for (int gapped = 0; gapped < 2; gapped++)
            for (int in_place = 0; in_place < 2; in_place++) test_allgatherv(gapped, in_place, dev);
    test_broadcast(1);
    test_broadcast(0);
    test_small();
    sd_comm_destroy(g_c);
    long long f = sd_test_failed, p = sd_test_passed, tf = 0, tp = 0;
    MPI_Allreduce(&f, &tf, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&p, &tp, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0) printf("test_comm_nccl: %lld passed, %lld failed (over %d ranks)\n", tp, tf, g_size);
    return tf ? 1 : 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (argc > 1 && strcmp(argv[1], "--probe") == 0) {
        if (g_rank == 0) printf("sd-mpi-probe: MPI started (%d ranks)\n", g_size);
        MPI_Finalize();
        return 0;
    }
    const int rc = run();
    MPI_Finalize();
    return rc;
}

#else /* no NCCL in this build */
int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("test_comm_nccl: skipped: built without NCCL (needs NCCL, MPI and CUDA at configure time)\n");
    return SD_TEST_SKIP_CODE;
}
#endif
