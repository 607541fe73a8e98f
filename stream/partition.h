/* partition.h: splitting a dataset's sample indices among D devices: IID (a seeded shuffle into
 * near-equal shares), the paper's label slices (device i holds a contiguous block of classes) and
 * the Dirichlet(alpha) label skew used across the federated-learning literature. A partition is a
 * set of dataset indices per device (ascending, one allocation); the order in which a device
 * streams them is the source's business (stream/replay.h reshuffles every pass). Exact
 * definitions, the empty-device fix and the rng draw order: docs/partition-injection.md. */
#ifndef SD_STREAM_PARTITION_H
#define SD_STREAM_PARTITION_H

#include <stdint.h>
#include <stdio.h>

#include "base/rng.h"
#include "base/status.h"
#include "stream/dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_partition {
    int devices;       /* D */
    int classes;       /* classes of the dataset it was made from */
    int64_t dataset_n; /* samples in that dataset */
    int64_t assigned;  /* sum of count[]; dataset_n - assigned samples belong to no device */
    int64_t *count;    /* count[i]: samples on device i */
    int64_t **index;   /* index[i][0..count[i]): device i's dataset indices, ascending */
    void *mem_;        /* the one allocation holding count, index and the index storage */
} sd_partition;

/* IID: the indices 0..n-1 are shuffled (sd_shuffle, one rng seeded with `seed`) and cut into D
 * consecutive shares; device i gets n/D samples plus one when i < n % D. */
sd_status sd_partition_iid(const sd_dataset *d, int devices, uint64_t seed, sd_partition *out);

/* Label slices (the paper's non-IID setting). With k = classes_per_device and C = d->classes,
 * device i holds the classes (i*k + j) mod C for j = 0..k-1: contiguous blocks handed out
 * round-robin, wrapping past C (CIFAR-10 over 10 devices with k = 1: device i holds class i; 8
 * devices with k = 2: devices 0..4 hold {0,1}..{8,9}, devices 5, 6, 7 hold {0,1}, {2,3}, {4,5}
 * again). Each class's samples are shuffled (seeded) and split evenly among the devices holding it
 * in ascending device order (shares differ by at most one; the first n_c % m holders get the extra
 * one). Classes no device holds (D*k < C) are unused: their samples go to no device, and
 * `assigned` < n. A device whose classes hold no sample at all is SD_ERR_INVALID. */
sd_status sd_partition_slices(const sd_dataset *d, int devices, int classes_per_device, uint64_t seed,
                              sd_partition *out);

/* Dirichlet(alpha) label skew: for every class c in order, its samples are shuffled, proportions
 * p ~ Dirichlet(alpha, ..., alpha) over the D devices are drawn (D gamma draws, normalised), and
 * device j gets the shuffled samples [floor(n_c * P_j), floor(n_c * P_{j+1})) with P_j = p_0 + ...
 * + p_{j-1} (the last boundary is n_c). Every sample is assigned. alpha > 0; small alpha gives
 * one or two classes per device, large alpha approaches IID. No device ends up empty: after the
 * split, each empty device (ascending id) receives one sample drawn uniformly from the device then
 * holding the most samples (ties: lowest id); this is always possible because D <= n. */
sd_status sd_partition_dirichlet(const sd_dataset *d, int devices, double alpha, uint64_t seed, sd_partition *out);

/* Frees the partition and zeroes it; safe on a zeroed or already freed partition. */
void sd_partition_free(sd_partition *p);

/* counts_per_class[0..d->classes) = how many of device's samples carry each label. d must be the
 * dataset the partition was made from (same n and classes). */
sd_status sd_partition_histogram(const sd_partition *p, const sd_dataset *d, int device, int64_t *counts_per_class);

/* Prints a header line and one line per device: its sample count, how many classes it holds and
 * its non-zero class counts as label:count, e.g. "device 3: 5000 samples, 1 class {3:5000}". */
sd_status sd_partition_print(const sd_partition *p, const sd_dataset *d, FILE *f);

/* ---- the gamma sampler behind the Dirichlet split --------------------------------------------- */

/* One Gamma(shape, 1) draw (shape > 0). shape >= 1: Marsaglia and Tsang (2000), with
 * x = sd_rng_normal and a uniform u in (0, 1) per attempt; shape < 1: Gamma(shape + 1) * u^(1/shape).
 * Returns NAN for shape <= 0 or non-finite. */
double sd_gamma_draw(sd_rng *r, double shape);
/* The same draw as its natural logarithm (same rng consumption), which stays finite where a tiny
 * shape makes u^(1/shape) underflow to 0; the Dirichlet split normalises in log space with it. */
double sd_gamma_log_draw(sd_rng *r, double shape);

#ifdef __cplusplus
}
#endif

#endif
