/* fuzz_util.h: helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c) and the corpus generator:
 * in-memory files (memfd) that file-reading loaders open through /proc/self/fd/N, a little-endian
 * reader for the targets' framing bytes, an oracle check that aborts (so libFuzzer and the replay
 * runner both report it), and the tiny network the checkpoint part of the safetensors target
 * loads into. Every target is a single translation unit, so the helpers are static inline. */
#ifndef SD_FUZZ_UTIL_H
#define SD_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/status.h"
#include "engine/net.h"
#include "kernels/backend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle failed: print why and abort (libFuzzer saves the input as crash-*, replay exits
 * non-zero). Used only for properties the headers promise, never for ordinary rejections. */
#define FZ_CHECK(cond, ...)                                                               \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz oracle failed at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fprintf(stderr, "\n  last library error: %s\n", sd_last_error());             \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* SD_FUZZ_VERBOSE=1 in the environment: each target prints what the library said about the input
 * (to see which check a seed reaches). Read once. */
static inline int fz_verbose(void) {
    static int v = -1;
    if (v < 0) v = getenv("SD_FUZZ_VERBOSE") != NULL;
    return v;
}

static inline void fz_report(const char *what, sd_status s) {
    if (fz_verbose()) fprintf(stderr, "  %s: %s\n", what, s == SD_OK ? "ok" : sd_last_error_brief());
}

/* A memfd created on first use and kept for the life of the process (one per slot, so a target
 * that needs several files gets several). Aborts when the kernel refuses: nothing to fuzz then. */
static inline int fz_memfd(int *slot, const char *name) {
    if (*slot > 0) return *slot;
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "fuzz: memfd_create(%s) failed: %s\n", name, strerror(errno));
        abort();
    }
    *slot = fd;
    return fd;
}

/* Replaces the memfd's contents with data[0..n). */
static inline void fz_fill(int fd, const uint8_t *data, size_t n) {
    if (ftruncate(fd, 0) != 0) abort();
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, data + done, n - done, (off_t)done);
        if (w <= 0) {
            fprintf(stderr, "fuzz: pwrite to memfd failed: %s\n", strerror(errno));
            abort();
        }
        done += (size_t)w;
    }
}

/* The path that reopens fd from the start (a fresh open file description). */
static inline void fz_fd_path(int fd, char *buf, size_t cap) { snprintf(buf, cap, "/proc/self/fd/%d", fd); }

/* Consumes a little-endian u16 (0 when fewer than 2 bytes are left). */
static inline uint16_t fz_take16(const uint8_t **p, size_t *n) {
    if (*n < 2) {
        *p += *n;
        *n = 0;
        return 0;
    }
    uint16_t v = (uint16_t)((*p)[0] | (*p)[1] << 8);
    *p += 2;
    *n -= 2;
    return v;
}

/* FNV-1a over a buffer: reading every byte lets ASan check that the buffer is as long as claimed. */
static inline uint64_t fz_touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* The network the safetensors target loads checkpoints into (and make_corpus saves one of):
 * input 1x4x4, "conv" 2 channels 3x3 pad 1, "bn", relu, flatten, "fc" 3 classes. Its state_dict:
 * conv.weight [2,1,3,3], conv.bias [2], bn.weight/bias/running_mean/running_var [2],
 * fc.weight [3,32], fc.bias [3] (and bn.num_batches_tracked, I64 [], in saved files). */
static inline sd_status fz_tiny_net(sd_backend *be, sd_net **out) {
    sd_net *net = NULL;
    TRY(sd_net_create(be, 1, 4, 4, &net));
    int x = sd_net_input(net);
    x = sd_net_conv2d(net, x, "conv", 2, 3, 1, 1, true);
    x = sd_net_batchnorm2d(net, x, "bn");
    x = sd_net_relu(net, x);
    x = sd_net_flatten(net, x);
    sd_net_linear(net, x, "fc", 3, true);
    sd_status s = sd_net_finalize(net, 1);
    if (s != SD_OK) {
        sd_net_destroy(net);
        return s;
    }
    *out = net;
    return SD_OK;
}

#endif
