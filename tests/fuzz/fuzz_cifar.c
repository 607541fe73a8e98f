/* fuzz_cifar.c: libFuzzer target for the CIFAR-10/100 binary reader (sd_dataset_load_cifar,
 * stream/dataset.h).
 *
 * Input: byte 0 = flags (bit 0: CIFAR-100 instead of CIFAR-10; bit 1: the training set), then the
 * files the variant reads: CIFAR-10 train reads data_batch_1..5.bin, every other variant one file
 * (test_batch.bin, train.bin, test.bin). Every file but the last is a little-endian u16 length
 * and that many bytes; the last file takes the rest. The files live in memfds; a private temporary
 * directory (made once, removed at exit) holds symlinks with the reader's file names pointing at
 * /proc/self/fd/N. On success the dataset is checked (3x32x32, n = bytes / record, labels within
 * [0, classes), every image byte readable) and freed. Inputs over 4 MiB are skipped. */
#include "tests/fuzz/fuzz_util.h"

#include <stdbool.h>
#include <sys/stat.h>

#include "stream/dataset.h"

#define FZ_CIFAR_MAX ((size_t)4 << 20)
#define FZ_FILES 5

static int fds[FZ_FILES] = {-1, -1, -1, -1, -1};
static char dir[256];

/* Every name the reader opens, and the memfd slot it points at. */
static const struct {
    const char *name;
    int slot;
} links[] = {{"data_batch_1.bin", 0}, {"data_batch_2.bin", 1}, {"data_batch_3.bin", 2}, {"data_batch_4.bin", 3},
             {"data_batch_5.bin", 4}, {"test_batch.bin", 0},   {"train.bin", 0},        {"test.bin", 0}};
#define FZ_LINKS (sizeof links / sizeof links[0])

static void cleanup(void) {
    char path[512];
    for (size_t i = 0; i < FZ_LINKS; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, links[i].name);
        unlink(path);
    }
    rmdir(dir);
}

static void setup(void) {
    if (dir[0]) return;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sd_fuzz_cifar_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "fuzz_cifar: mkdtemp(%s) failed: %s\n", dir, strerror(errno));
        abort();
    }
    atexit(cleanup);
    static const char *const fd_names[FZ_FILES] = {"cifar1", "cifar2", "cifar3", "cifar4", "cifar5"};
    for (int k = 0; k < FZ_FILES; k++) fz_memfd(&fds[k], fd_names[k]);
    for (size_t i = 0; i < FZ_LINKS; i++) {
        char target[64], path[512];
        fz_fd_path(fds[links[i].slot], target, sizeof target);
        snprintf(path, sizeof path, "%s/%s", dir, links[i].name);
        if (symlink(target, path) != 0) {
            fprintf(stderr, "fuzz_cifar: symlink(%s, %s) failed: %s\n", target, path, strerror(errno));
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > FZ_CIFAR_MAX) return 0;
    setup();
    int which = (data[0] & 1) ? 100 : 10;
    bool train = (data[0] & 2) != 0;
    int nfiles = which == 10 && train ? 5 : 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1, total = 0;
    const uint8_t *first = NULL; /* the bytes of the first file */
    for (int k = 0; k < nfiles; k++) {
        size_t len = k < nfiles - 1 ? fz_take16(&p, &n) : n;
        if (len > n) len = n;
        if (k == 0) first = p;
        fz_fill(fds[k], p, len);
        p += len;
        n -= len;
        total += len;
    }

    sd_dataset d;
    memset(&d, 0x5a, sizeof d);
    sd_status s = sd_dataset_load_cifar(dir, which, train, &d);
    fz_report("sd_dataset_load_cifar", s);
    if (s != SD_OK) {
        FZ_CHECK(d.images == NULL && d.labels == NULL && d.n == 0, "a failed load (%s) left data behind",
                 sd_status_str(s));
        sd_dataset_free(&d);
        return 0;
    }
    size_t record = (which == 10 ? 1 : 2) + 3072;
    FZ_CHECK(d.c == 3 && d.h == 32 && d.w == 32 && d.classes == which, "loaded %dx%dx%d, %d classes", d.c, d.h,
             d.w, d.classes);
    FZ_CHECK(d.n >= nfiles && (size_t)d.n * record == total, "%lld records from %zu bytes", (long long)d.n, total);
    FZ_CHECK(strcmp(d.name, which == 10 ? "cifar10" : "cifar100") == 0, "name '%s'", d.name);
    for (int64_t i = 0; i < d.n; i++)
        FZ_CHECK(d.labels[i] >= 0 && d.labels[i] < which, "label %d of record %lld", (int)d.labels[i], (long long)i);
    (void)fz_touch(d.images, (size_t)d.n * 3072);
    FZ_CHECK(d.labels[0] == first[record - 3073] && memcmp(d.images, first + record - 3072, 3072) == 0,
             "the first record was not copied as stored");
    sd_dataset_free(&d);
    return 0;
}
