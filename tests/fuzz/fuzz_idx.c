/* fuzz_idx.c: libFuzzer target for the IDX reader (sd_dataset_load_idx, stream/dataset.h).
 *
 * Input: byte 0 selects the dataset name (& 3: 0 "mnist", 1 "fashion-mnist" (both: 10 classes,
 * labels >= 10 refused), 2 NULL (= "idx"), 3 "custom" (classes = max label + 1)); bytes 1-2 are a
 * little-endian u16 L; the next L bytes are the label file, the rest the image file. Either file
 * may be raw or gzipped (the reader goes through zlib). Both live in memfds and are opened by
 * their /proc/self/fd paths. On success the dataset is checked (shape within the reader's
 * limits, labels within [0, classes), every image byte readable), a subset is taken, and both are
 * freed. Inputs over 256 KiB are skipped: gzip expands up to ~1000x, and the reader legitimately
 * holds everything the header declares. */
#include "tests/fuzz/fuzz_util.h"

#include "stream/dataset.h"

#define FZ_IDX_MAX ((size_t)256 << 10)

static int fd_images = -1, fd_labels = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > FZ_IDX_MAX) return 0;
    static const char *const names[4] = {"mnist", "fashion-mnist", NULL, "custom"};
    const char *name = names[data[0] & 3];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    size_t lab_len = fz_take16(&p, &n);
    if (lab_len > n) lab_len = n;

    int fl = fz_memfd(&fd_labels, "labels"), fi = fz_memfd(&fd_images, "images");
    fz_fill(fl, p, lab_len);
    fz_fill(fi, p + lab_len, n - lab_len);
    char lpath[64], ipath[64];
    fz_fd_path(fl, lpath, sizeof lpath);
    fz_fd_path(fi, ipath, sizeof ipath);

    sd_dataset d;
    memset(&d, 0x5a, sizeof d);
    sd_status s = sd_dataset_load_idx(ipath, lpath, name, &d);
    fz_report("sd_dataset_load_idx", s);
    if (s != SD_OK) {
        FZ_CHECK(d.images == NULL && d.labels == NULL && d.n == 0, "a failed load (%s) left data behind",
                 sd_status_str(s));
        sd_dataset_free(&d);
        return 0;
    }
    FZ_CHECK(d.n >= 1 && d.n <= SD_IDX_MAX_N && d.c == 1 && d.h >= 1 && d.h <= SD_IDX_MAX_DIM && d.w >= 1 &&
                 d.w <= SD_IDX_MAX_DIM,
             "loaded %lld images of %dx%dx%d", (long long)d.n, d.c, d.h, d.w);
    FZ_CHECK(d.classes >= 1 && d.classes <= 256, "%d classes", d.classes);
    FZ_CHECK(strcmp(d.name, name ? name : "idx") == 0, "name '%s'", d.name);
    if (name && (!strcmp(name, "mnist") || !strcmp(name, "fashion-mnist")))
        FZ_CHECK(d.classes == 10, "%s with %d classes", name, d.classes);
    for (int64_t i = 0; i < d.n; i++)
        FZ_CHECK(d.labels[i] >= 0 && d.labels[i] < d.classes, "label %d of item %lld outside [0, %d)",
                 (int)d.labels[i], (long long)i, d.classes);
    size_t img = (size_t)d.c * (size_t)d.h * (size_t)d.w;
    (void)fz_touch(d.images, (size_t)d.n * img);

    /* a subset: the last, the first and the last again */
    int64_t idx[3] = {d.n - 1, 0, d.n - 1};
    sd_dataset sub;
    FZ_CHECK(sd_dataset_subset(&d, idx, 3, &sub) == SD_OK, "subset of a loaded dataset failed");
    FZ_CHECK(sub.n == 3 && memcmp(sub.images, d.images + (size_t)(d.n - 1) * img, img) == 0 &&
                 memcmp(sub.images + img, d.images, img) == 0 && sub.labels[1] == d.labels[0],
             "subset copied the wrong images");
    sd_dataset_free(&sub);
    sd_dataset_free(&d);
    return 0;
}
