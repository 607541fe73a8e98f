/* bench_checkpoint.c: scadles-bench_checkpoint, the cost of a distributed checkpoint's checksum
 * (docs/checkpoints.md) with the production code (sd_dist_ckpt_checksum): XXH3-64, what this build
 * writes, against FNV-1a byte at a time, what version-1 checkpoints hold. It reads every file of a
 * checkpoint directory (one a run left: scadles-train --config ... --stop-at N), checks first that
 * each file's stored checksum is what its checksum_algo gives, then times one checksum of every
 * file with each algorithm, interleaved (xxh3, fnv1a, xxh3, ...) after a warm-up pass of each, and
 * prints per algorithm the median, min and max milliseconds over the repetitions, GB/s over the
 * bytes hashed, and the ratio of the medians. The files are in memory: reading them is not timed.
 *   scadles-bench_checkpoint --dir CHECKPOINT_DIR [--reps N] */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "engine/dist_checkpoint.h"
#include "engine/safetensors.h"

#define MAX_FILES 1100 /* SD_MAX_DEVICES rank files and run.safetensors, with room */

static void usage(FILE *f) {
    fprintf(f, "usage: scadles-bench_checkpoint --dir CHECKPOINT_DIR [--reps N]\n"
               "  Times the checksum of every file of a checkpoint directory (<out_dir>/checkpoint of a run\n"
               "  stopped with --stop-at) with XXH3-64 and with FNV-1a, interleaved, N repetitions (default 21):\n"
               "  median, min and max ms, GB/s, and the ratio.\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One pass over every file; the sums are folded into *sink so no pass can be skipped. */
static int pass(sd_st_file **files, int n, const char *algo, uint64_t *sink) {
    for (int i = 0; i < n; i++) {
        uint64_t h = 0;
        if (sd_dist_ckpt_checksum(files[i], algo, &h) != SD_OK) {
            fprintf(stderr, "scadles-bench_checkpoint: %s\n", sd_last_error_brief());
            return -1;
        }
        *sink += h;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int reps = 21;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            char *end = NULL;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 10000) {
                fprintf(stderr, "scadles-bench_checkpoint: --reps '%s' is not a count in 1..10000\n", argv[i]);
                return 2;
            }
            reps = (int)v;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "scadles-bench_checkpoint: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "scadles-bench_checkpoint: --dir CHECKPOINT_DIR is required\n");
        usage(stderr);
        return 2;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "scadles-bench_checkpoint: cannot open the checkpoint directory %s\n", dir);
        return 2;
    }
    sd_st_file **files = calloc(MAX_FILES, sizeof *files);
    int n = 0, rc = 1;
    size_t bytes = 0;
    if (!files) {
        closedir(d);
        fprintf(stderr, "scadles-bench_checkpoint: no memory\n");
        return 1;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t len = strlen(de->d_name);
        if (len < 12 || strcmp(de->d_name + len - 12, ".safetensors") != 0) continue;
        if (n == MAX_FILES) {
            fprintf(stderr, "scadles-bench_checkpoint: more than %d files in %s\n", MAX_FILES, dir);
            goto done;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (sd_st_open(path, &files[n]) != SD_OK) {
            fprintf(stderr, "scadles-bench_checkpoint: %s\n", sd_last_error_brief());
            goto done;
        }
        /* validate before timing: the file's own checksum, with the algorithm it names */
        const sd_st_file *f = files[n];
        const char *algo = sd_st_metadata(f, "checksum_algo"), *sum = sd_st_metadata(f, "checksum");
        uint64_t h = 0;
        char hs[32];
        if (!sum || sd_dist_ckpt_checksum(f, algo ? algo : SD_DIST_CKPT_CHECKSUM_FNV1A, &h) != SD_OK ||
            (snprintf(hs, sizeof hs, "%016llx", (unsigned long long)h), strcmp(hs, sum) != 0)) {
            fprintf(stderr, "scadles-bench_checkpoint: %s is not an intact checkpoint file (checksum %s)\n", path,
                    sum ? sum : "missing");
            n++;
            goto done;
        }
        for (int i = 0; i < sd_st_count(f); i++) bytes += sd_st_tensor_at(f, i)->nbytes + strlen(sd_st_tensor_at(f, i)->name) + 2;
        for (int i = 0; i < sd_st_metadata_count(f); i++) {
            const char *k = NULL, *v = NULL;
            if (sd_st_metadata_at(f, i, &k, &v)) bytes += strlen(k) + strlen(v) + 2;
        }
        n++;
    }
    if (n == 0) {
        fprintf(stderr, "scadles-bench_checkpoint: %s holds no .safetensors file; pass <out_dir>/checkpoint of a stopped run\n",
                dir);
        rc = 2;
        goto done;
    }
    static const char *const algos[2] = {SD_DIST_CKPT_CHECKSUM_XXH3, SD_DIST_CKPT_CHECKSUM_FNV1A};
    double *t = malloc(sizeof *t * 2 * (size_t)reps);
    if (!t) goto done;
    uint64_t sink = 0;
    for (int a = 0; a < 2; a++)
        if (pass(files, n, algos[a], &sink) != 0) goto done_t; /* warm-up */
    for (int r = 0; r < reps; r++)
        for (int a = 0; a < 2; a++) {
            double t0 = sd_clock_now();
            if (pass(files, n, algos[a], &sink) != 0) goto done_t;
            t[a * reps + r] = sd_clock_now() - t0;
        }
    printf("checkpoint %s: %d files, %.1f MB hashed per pass, %d interleaved repetitions (sink %016llx)\n", dir, n,
           bytes / 1e6, reps, (unsigned long long)sink);
    printf("%-14s %10s %10s %10s %8s\n", "algorithm", "median_ms", "min_ms", "max_ms", "GB/s");
    double med[2];
    for (int a = 0; a < 2; a++) {
        double *x = t + a * reps;
        qsort(x, (size_t)reps, sizeof *x, cmp_double);
        med[a] = x[reps / 2];
        printf("%-14s %10.2f %10.2f %10.2f %8.2f\n", algos[a], 1e3 * med[a], 1e3 * x[0], 1e3 * x[reps - 1],
               bytes / med[a] / 1e9);
    }
    printf("fnv1a / xxh3 (medians): %.1fx\n", med[1] / med[0]);
    rc = 0;
done_t:
    free(t);
done:
    for (int i = 0; i < n; i++) sd_st_close(files[i]);
    free(files);
    closedir(d);
    return rc;
}
