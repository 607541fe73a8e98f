/* dataset.h: in-memory image datasets and their readers: IDX (MNIST, Fashion-MNIST; raw or gzipped)
 * and the CIFAR-10/100 binary versions. A dataset holds every image as u8 NCHW and every label as
 * int32; batches are made from it by stream/augment.h. Formats and locations: docs/datasets.md. */
#ifndef SD_STREAM_DATASET_H
#define SD_STREAM_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_dataset {
    char name[32];   /* "fashion-mnist", "mnist", "cifar10", "cifar100" or the caller's name */
    int64_t n;       /* number of images */
    int c, h, w;     /* channels, rows, columns of every image */
    int classes;     /* labels lie in [0, classes) */
    uint8_t *images; /* n*c*h*w, NCHW u8 */
    int32_t *labels; /* n */
} sd_dataset;

/* Limits of the IDX reader (a header beyond them is reported as malformed). */
#define SD_IDX_MAX_N 10000000
#define SD_IDX_MAX_DIM 4096

/* Reads an IDX image file (magic 0x00000803: u8, dims n x rows x cols) and an IDX label file
 * (magic 0x00000801: u8, dim n). Either may be gzipped (read through zlib) or raw. The counts
 * must agree and each file must hold exactly the bytes its header declares. `name` (NULL: "idx")
 * becomes out->name; for the standard sets "mnist" and "fashion-mnist" classes = 10 and a label
 * >= 10 is SD_ERR_FORMAT, otherwise classes = max label + 1. On failure *out is left empty. */
sd_status sd_dataset_load_idx(const char *images_path, const char *labels_path, const char *name,
                              sd_dataset *out);

/* Reads the CIFAR binary version from `dir`: which = 10: data_batch_1..5.bin (train) or
 * test_batch.bin (test), records of 1 label byte + 3072 pixel bytes; which = 100: train.bin or
 * test.bin, records of a coarse label byte, a fine label byte and 3072 pixel bytes (the fine label
 * is used, 100 classes). Pixels are 3x32x32 channel-major (R, G, B planes of 32 rows of 32), so
 * records copy straight to NCHW. A missing file is SD_ERR_IO naming the path and where the files
 * belong; a size that is not a multiple of the record, or a label out of range, SD_ERR_FORMAT. */
sd_status sd_dataset_load_cifar(const char *dir, int which, bool train, sd_dataset *out);

/* Opens a dataset by name: "fashion-mnist" (default root /usr/share/datasets/fashion-mnist, the
 * Debian package dataset-fashion-mnist), "mnist" (default root data/mnist), both with the files
 * {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (the same names without .gz are accepted too),
 * "cifar10" (default root data/cifar-10-batches-bin), "cifar100" (default root
 * data/cifar-100-binary). root NULL = the default. Unknown name: SD_ERR_INVALID listing the names. */
sd_status sd_dataset_open(const char *name, const char *root, bool train, sd_dataset *out);

/* Copies the images idx[0..n) of d, in that order, into a new dataset (same name, shape and
 * classes). An index outside [0, d->n) is SD_ERR_INVALID naming it. n = 0 gives an empty set. */
sd_status sd_dataset_subset(const sd_dataset *d, const int64_t *idx, int64_t n, sd_dataset *out);

/* Frees what a loader allocated and zeroes *d; safe on a zeroed or already freed dataset. */
void sd_dataset_free(sd_dataset *d);

#ifdef __cplusplus
}
#endif

#endif
