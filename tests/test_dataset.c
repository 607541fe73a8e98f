/* test_dataset.c: the dataset layer (stream/dataset.h, stream/augment.h). Writes small IDX files
 * (raw and gzipped) and CIFAR-10/100 binary files in the official formats to a temporary folder
 * and reads them back exactly; feeds corrupt files and checks status and message; checks
 * normalisation, crop and flip pixel by pixel, batch determinism by seed and the shuffle; loads the
 * real Fashion-MNIST when /usr/share/datasets/fashion-mnist is installed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base/status.h"
#include "stream/augment.h"
#include "stream/dataset.h"
#include "tests/harness.h"

/* ---- temporary files ------------------------------------------------------------------------ */

static char g_tmp[256];
static char g_made[128][512]; /* files and folders created, removed in reverse order */
static int g_nmade;

static const char *remember(const char *path) {
    if (g_nmade < 128) snprintf(g_made[g_nmade++], sizeof g_made[0], "%s", path);
    return path;
}

/* g_tmp/rel into buf. */
static char *tpath(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", g_tmp, rel);
    return buf;
}

static void make_dir(const char *rel) {
    char p[512];
    tpath(p, sizeof p, rel);
    if (mkdir(p, 0700) == 0) remember(p);
}

/* Writes bytes to g_tmp/rel (gzipped when gz) and puts the full path in path. */
static void write_file(const char *rel, const void *data, size_t len, int gz, char *path, size_t cap) {
    tpath(path, cap, rel);
    int ok = 0;
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (f) {
            ok = len == 0 || gzwrite(f, data, (unsigned)len) == (int)len;
            ok = (gzclose(f) == Z_OK) && ok;
        }
    } else {
        FILE *f = fopen(path, "wb");
        if (f) {
            ok = fwrite(data, 1, len, f) == len;
            ok = (fclose(f) == 0) && ok;
        }
    }
    EXPECT(ok, "could not write test file %s", path);
    remember(path);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* IDX image file bytes: magic, n, rows, cols, pixels (caller frees). */
static uint8_t *idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, const uint8_t *px,
                           size_t *len) {
    *len = 16 + (size_t)n * rows * cols;
    uint8_t *b = malloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    memcpy(b + 16, px, (size_t)n * rows * cols);
    return b;
}

static uint8_t *idx_labels(uint32_t magic, uint32_t n, const uint8_t *lab, size_t *len) {
    *len = 8 + (size_t)n;
    uint8_t *b = malloc(*len);
    put_be32(b, magic);
    put_be32(b + 4, n);
    memcpy(b + 8, lab, n);
    return b;
}

/* ---- IDX ------------------------------------------------------------------------------------ */

enum { IN = 5, IR = 3, IC = 4 };
static uint8_t g_px[IN * IR * IC];
static const uint8_t g_lab[IN] = {0, 4, 2, 4, 1};

static void expect_toy(const sd_dataset *d, const char *name, int classes) {
    EXPECT(strcmp(d->name, name) == 0, "name '%s', wanted '%s'", d->name, name);
    EXPECT(d->n == IN && d->c == 1 && d->h == IR && d->w == IC, "shape n %lld c %d h %d w %d", (long long)d->n, d->c,
           d->h, d->w);
    EXPECT(d->classes == classes, "classes %d, wanted %d", d->classes, classes);
    if (d->n != IN || !d->images || !d->labels) return;
    EXPECT(memcmp(d->images, g_px, sizeof g_px) == 0, "pixels of %s differ from what was written", name);
    int bad = 0;
    for (int i = 0; i < IN; i++) bad += d->labels[i] != g_lab[i];
    EXPECT(bad == 0, "%d labels differ", bad);
}

static void test_idx(void) {
    for (size_t i = 0; i < sizeof g_px; i++) g_px[i] = (uint8_t)(i * 37 + 11);
    size_t li, ll;
    uint8_t *bi = idx_images(0x803, IN, IR, IC, g_px, &li);
    uint8_t *bl = idx_labels(0x801, IN, g_lab, &ll);
    char ri[512], rl[512], gi[512], gl[512], p1[512], p2[512];
    write_file("img.idx", bi, li, 0, ri, sizeof ri);
    write_file("lab.idx", bl, ll, 0, rl, sizeof rl);
    write_file("img.idx.gz", bi, li, 1, gi, sizeof gi);
    write_file("lab.idx.gz", bl, ll, 1, gl, sizeof gl);

    sd_dataset d;
    EXPECT_OK(sd_dataset_load_idx(ri, rl, "fashion-mnist", &d));
    expect_toy(&d, "fashion-mnist", 10); /* standard set: 10 classes even though max label is 4 */
    sd_dataset_free(&d);
    EXPECT(d.images == NULL && d.n == 0, "free leaves the dataset zeroed");
    sd_dataset_free(&d); /* twice is fine */
    EXPECT_OK(sd_dataset_load_idx(gi, gl, "toy", &d));
    expect_toy(&d, "toy", 5); /* other names: max label + 1 */
    sd_dataset_free(&d);
    EXPECT_OK(sd_dataset_load_idx(gi, rl, NULL, &d));
    expect_toy(&d, "idx", 5);
    sd_dataset_free(&d);

    /* wrong magic; swapped files */
    uint8_t *bad = idx_images(0x802, IN, IR, IC, g_px, &li);
    write_file("badmagic.idx", bad, li, 0, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, "0x00000802");
    EXPECT(d.images == NULL && d.labels == NULL && d.n == 0, "a failed load leaves out empty");
    EXPECT_FAIL(sd_dataset_load_idx(rl, ri, "mnist", &d), SD_ERR_FORMAT, "label file");
    free(bad);

    /* truncated images: raw, gzipped, and a gzip stream cut short */
    write_file("trunc.idx", bi, li - 7, 0, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, "truncated");
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT,
                "60 bytes should follow the 16-byte header, but only 53");
    write_file("trunc.idx.gz", bi, li - 7, 1, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, p1);
    write_file("hdr.idx", bi, 10, 0, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, "16-byte header, found 10");
    {
        /* cut the compressed bytes of a gzip file of a larger, incompressible image set */
        enum { BN = 40, BR = 28, BC = 28 };
        uint8_t *px = malloc(BN * BR * BC);
        sd_test_rng r = {7};
        for (size_t i = 0; i < BN * BR * BC; i++) px[i] = (uint8_t)sd_test_next(&r);
        uint8_t lab[BN] = {0};
        size_t lb, ln;
        uint8_t *big = idx_images(0x803, BN, BR, BC, px, &lb);
        uint8_t *bigl = idx_labels(0x801, BN, lab, &ln);
        char gzfull[512], lp[512];
        write_file("big.idx.gz", big, lb, 1, gzfull, sizeof gzfull);
        write_file("big-lab.idx", bigl, ln, 0, lp, sizeof lp);
        EXPECT_OK(sd_dataset_load_idx(gzfull, lp, "mnist", &d));
        EXPECT(d.n == BN && d.images && memcmp(d.images, px, BN * BR * BC) == 0, "gzipped 40x28x28 read back");
        sd_dataset_free(&d);
        FILE *f = fopen(gzfull, "rb");
        uint8_t *z = malloc(lb + 1024);
        size_t zn = f ? fread(z, 1, lb + 1024, f) : 0;
        if (f) fclose(f);
        write_file("cut.idx.gz", z, zn / 2, 0, p1, sizeof p1);
        EXPECT_FAIL(sd_dataset_load_idx(p1, lp, "mnist", &d), SD_ERR_FORMAT, p1);
        free(z);
        free(big);
        free(bigl);
        free(px);
    }

    /* longer than declared */
    uint8_t *longer = malloc(li + 3);
    memcpy(longer, bi, li);
    memset(longer + li, 1, 3);
    write_file("long.idx", longer, li + 3, 0, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, "longer than its header");
    free(longer);

    /* label count mismatch */
    uint8_t *fewer = idx_labels(0x801, IN - 1, g_lab, &ll);
    write_file("fewer.idx", fewer, ll, 0, p2, sizeof p2);
    EXPECT_FAIL(sd_dataset_load_idx(ri, p2, "mnist", &d), SD_ERR_FORMAT, "label count mismatch");
    EXPECT_FAIL(sd_dataset_load_idx(ri, p2, "mnist", &d), SD_ERR_FORMAT, p2);
    free(fewer);

    /* label out of range for a standard set (fine for another name) */
    uint8_t lab10[IN] = {0, 1, 10, 3, 4};
    uint8_t *l10 = idx_labels(0x801, IN, lab10, &ll);
    write_file("lab10.idx", l10, ll, 0, p2, sizeof p2);
    EXPECT_FAIL(sd_dataset_load_idx(ri, p2, "fashion-mnist", &d), SD_ERR_FORMAT, p2);
    EXPECT_FAIL(sd_dataset_load_idx(ri, p2, "fashion-mnist", &d), SD_ERR_FORMAT, "label 10 of item 2");
    EXPECT_OK(sd_dataset_load_idx(ri, p2, "eleven", &d));
    EXPECT(d.classes == 11, "classes %d, wanted 11", d.classes);
    sd_dataset_free(&d);
    free(l10);

    /* dimensions and counts beyond the limits */
    uint8_t hdr[16];
    put_be32(hdr, 0x803);
    put_be32(hdr + 4, 2);
    put_be32(hdr + 8, 5000);
    put_be32(hdr + 12, 4);
    write_file("wide.idx", hdr, 16, 0, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, "5000x4");
    put_be32(hdr + 4, 20000000);
    put_be32(hdr + 8, 28);
    put_be32(hdr + 12, 28);
    write_file("many.idx", hdr, 16, 0, p1, sizeof p1);
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_FORMAT, "20000000 images");

    /* missing file */
    tpath(p1, sizeof p1, "no-such-file.idx.gz");
    EXPECT_FAIL(sd_dataset_load_idx(p1, rl, "mnist", &d), SD_ERR_IO, p1);
    EXPECT_FAIL(sd_dataset_load_idx(ri, p1, "mnist", &d), SD_ERR_IO, p1);
    EXPECT_FAIL(sd_dataset_load_idx(NULL, rl, "mnist", &d), SD_ERR_INVALID, "path");

    /* by name from a root folder: .gz preferred, raw accepted */
    make_dir("mnist");
    write_file("mnist/t10k-images-idx3-ubyte.gz", bi, li, 1, p1, sizeof p1);
    write_file("mnist/t10k-labels-idx1-ubyte", bl, IN + 8, 0, p1, sizeof p1);
    tpath(p2, sizeof p2, "mnist");
    EXPECT_OK(sd_dataset_open("mnist", p2, false, &d));
    expect_toy(&d, "mnist", 10);
    sd_dataset_free(&d);
    EXPECT_FAIL(sd_dataset_open("mnist", p2, true, &d), SD_ERR_IO, "train-images-idx3-ubyte.gz");
    EXPECT_FAIL(sd_dataset_open("fashion-mnist", p2, true, &d), SD_ERR_IO, "dataset-fashion-mnist");
    EXPECT_FAIL(sd_dataset_open("imagenet", NULL, true, &d), SD_ERR_INVALID,
                "fashion-mnist, mnist, cifar10, cifar100");
    EXPECT_FAIL(sd_dataset_open(NULL, NULL, true, &d), SD_ERR_INVALID, "unknown dataset");
    free(bi);
    free(bl);
}

/* ---- CIFAR ---------------------------------------------------------------------------------- */

static uint8_t cifar_px(int64_t img, int k) { return (uint8_t)(img * 131 + k * 7 + (k >> 10) * 50); }

/* Writes `records` records (global numbers first, first+1, ...) to g_tmp/rel, fine labels from
 * fine[], then extra_bytes zero bytes. */
static void write_cifar(const char *rel, int which, int64_t first, int records, const uint8_t *fine, int extra_bytes) {
    int rec = (which == 10 ? 1 : 2) + 3072;
    size_t len = (size_t)records * rec + extra_bytes;
    uint8_t *b = calloc(len ? len : 1, 1);
    for (int r = 0; r < records; r++) {
        uint8_t *p = b + (size_t)r * rec;
        int64_t g = first + r;
        if (which == 100) *p++ = (uint8_t)(fine[g] / 5); /* coarse */
        *p++ = fine[g];
        for (int k = 0; k < 3072; k++) p[k] = cifar_px(g, k);
    }
    char path[512];
    write_file(rel, b, len, 0, path, sizeof path);
    free(b);
}

static void expect_cifar(const sd_dataset *d, const char *name, int64_t n, int classes, const uint8_t *fine,
                         int64_t first) {
    EXPECT(strcmp(d->name, name) == 0, "name '%s', wanted '%s'", d->name, name);
    EXPECT(d->n == n && d->c == 3 && d->h == 32 && d->w == 32 && d->classes == classes,
           "n %lld c %d h %d w %d classes %d", (long long)d->n, d->c, d->h, d->w, d->classes);
    if (d->n != n || !d->images) return;
    int64_t badpx = 0, badlab = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < 3072; k++) badpx += d->images[i * 3072 + k] != cifar_px(first + i, k);
        badlab += d->labels[i] != fine[first + i];
    }
    EXPECT(badpx == 0 && badlab == 0, "%s: %lld pixels and %lld labels differ", name, (long long)badpx,
           (long long)badlab);
}

static void test_cifar(void) {
    /* CIFAR-10: five training batches of 2,3,1,2,2 records and a test batch of 3 */
    const uint8_t lab10[13] = {3, 9, 0, 1, 5, 7, 2, 8, 4, 6, 9, 0, 1};
    make_dir("c10");
    const int sizes[5] = {2, 3, 1, 2, 2};
    int64_t at = 0;
    for (int k = 0; k < 5; k++) {
        char rel[64];
        snprintf(rel, sizeof rel, "c10/data_batch_%d.bin", k + 1);
        write_cifar(rel, 10, at, sizes[k], lab10, 0);
        at += sizes[k];
    }
    write_cifar("c10/test_batch.bin", 10, 10, 3, lab10, 0);
    char dir[512], p[512];
    tpath(dir, sizeof dir, "c10");
    sd_dataset d;
    EXPECT_OK(sd_dataset_load_cifar(dir, 10, true, &d));
    expect_cifar(&d, "cifar10", 10, 10, lab10, 0);
    /* channel-major: pixel (ch 1, y 2, x 5) of image 4 sits at 1024 + 2*32 + 5 */
    if (d.images) EXPECT(d.images[4 * 3072 + 1024 + 69] == cifar_px(4, 1024 + 69), "NCHW layout");
    sd_dataset_free(&d);
    EXPECT_OK(sd_dataset_open("cifar10", dir, false, &d));
    expect_cifar(&d, "cifar10", 3, 10, lab10, 10);
    sd_dataset_free(&d);
    strcat(dir, "/"); /* a trailing slash is fine */
    EXPECT_OK(sd_dataset_load_cifar(dir, 10, false, &d));
    sd_dataset_free(&d);

    /* CIFAR-100: fine labels used */
    const uint8_t lab100[6] = {99, 0, 42, 17, 63, 5};
    make_dir("c100");
    write_cifar("c100/train.bin", 100, 0, 4, lab100, 0);
    write_cifar("c100/test.bin", 100, 4, 2, lab100, 0);
    tpath(dir, sizeof dir, "c100");
    EXPECT_OK(sd_dataset_open("cifar100", dir, true, &d));
    expect_cifar(&d, "cifar100", 4, 100, lab100, 0);
    sd_dataset_free(&d);
    EXPECT_OK(sd_dataset_load_cifar(dir, 100, false, &d));
    expect_cifar(&d, "cifar100", 2, 100, lab100, 4);
    sd_dataset_free(&d);

    /* size not a multiple of the record */
    make_dir("c10bad");
    write_cifar("c10bad/test_batch.bin", 10, 0, 2, lab10, 5);
    tpath(dir, sizeof dir, "c10bad");
    tpath(p, sizeof p, "c10bad/test_batch.bin");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 10, false, &d), SD_ERR_FORMAT, p);
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 10, false, &d), SD_ERR_FORMAT, "3073-byte record");
    EXPECT(d.images == NULL && d.n == 0, "a failed load leaves out empty");
    make_dir("c100bad");
    write_cifar("c100bad/test.bin", 100, 0, 1, lab100, 3073); /* a CIFAR-10-sized record too many */
    tpath(dir, sizeof dir, "c100bad");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 100, false, &d), SD_ERR_FORMAT, "3074-byte record");

    /* missing file: batches 1-4 only */
    make_dir("c10part");
    for (int k = 0; k < 4; k++) {
        char rel[64];
        snprintf(rel, sizeof rel, "c10part/data_batch_%d.bin", k + 1);
        write_cifar(rel, 10, 0, 1, lab10, 0);
    }
    tpath(dir, sizeof dir, "c10part");
    tpath(p, sizeof p, "c10part/data_batch_5.bin");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 10, true, &d), SD_ERR_IO, p);
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 10, true, &d), SD_ERR_IO, "data/cifar-10-batches-bin");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 100, true, &d), SD_ERR_IO, "cifar-100-binary");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 20, true, &d), SD_ERR_INVALID, "10 or 100");

    /* labels out of range */
    const uint8_t wrong10[1] = {10}, wrong100[1] = {100};
    make_dir("c10lab");
    write_cifar("c10lab/test_batch.bin", 10, 0, 1, wrong10, 0);
    tpath(dir, sizeof dir, "c10lab");
    tpath(p, sizeof p, "c10lab/test_batch.bin");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 10, false, &d), SD_ERR_FORMAT, p);
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 10, false, &d), SD_ERR_FORMAT, "label 10 of record 0");
    make_dir("c100lab");
    write_cifar("c100lab/test.bin", 100, 0, 1, wrong100, 0);
    tpath(dir, sizeof dir, "c100lab");
    EXPECT_FAIL(sd_dataset_load_cifar(dir, 100, false, &d), SD_ERR_FORMAT, "outside [0, 20)"); /* coarse 20 */
}

/* ---- subsets -------------------------------------------------------------------------------- */

static void test_subset(void) {
    uint8_t px[4 * 2 * 2 * 3];
    int32_t lab[4] = {7, 1, 5, 3};
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)i;
    sd_dataset d = {.name = "toy", .n = 4, .c = 2, .h = 2, .w = 3, .classes = 8, .images = px, .labels = lab};
    const int64_t idx[3] = {3, 0, 3};
    sd_dataset s;
    EXPECT_OK(sd_dataset_subset(&d, idx, 3, &s));
    EXPECT(s.n == 3 && s.c == 2 && s.h == 2 && s.w == 3 && s.classes == 8 && strcmp(s.name, "toy") == 0,
           "subset shape");
    if (s.images) {
        EXPECT(memcmp(s.images, px + 36, 12) == 0 && memcmp(s.images + 12, px, 12) == 0 &&
                   memcmp(s.images + 24, px + 36, 12) == 0,
               "subset pixels");
        EXPECT(s.labels[0] == 3 && s.labels[1] == 7 && s.labels[2] == 3, "subset labels");
    }
    sd_dataset_free(&s);
    EXPECT_OK(sd_dataset_subset(&d, NULL, 0, &s));
    EXPECT(s.n == 0 && s.images == NULL, "empty subset");
    sd_dataset_free(&s);
    const int64_t badidx[2] = {1, 4};
    EXPECT_FAIL(sd_dataset_subset(&d, badidx, 2, &s), SD_ERR_INVALID, "idx[1] = 4");
}

/* ---- augmentation --------------------------------------------------------------------------- */

static void test_augment_defaults(void) {
    sd_dataset d = {.name = "fashion-mnist", .c = 1, .h = 28, .w = 28};
    sd_augment a;
    EXPECT_OK(sd_augment_default(&d, true, &a));
    EXPECT(a.mean[0] == 0.2860f && a.std[0] == 0.3530f && a.crop_pad == 0 && !a.hflip, "fashion-mnist train");
    snprintf(d.name, sizeof d.name, "mnist");
    EXPECT_OK(sd_augment_default(&d, false, &a));
    EXPECT(a.mean[0] == 0.1307f && a.std[0] == 0.3081f, "mnist");
    sd_dataset c = {.name = "cifar10", .c = 3, .h = 32, .w = 32};
    EXPECT_OK(sd_augment_default(&c, true, &a));
    EXPECT(a.crop_pad == 4 && a.hflip && a.mean[2] == 0.4465f && a.std[1] == 0.2435f, "cifar10 train");
    EXPECT_OK(sd_augment_default(&c, false, &a));
    EXPECT(a.crop_pad == 0 && !a.hflip && a.mean[0] == 0.4914f, "cifar10 test");
    snprintf(c.name, sizeof c.name, "cifar100");
    EXPECT_OK(sd_augment_default(&c, true, &a));
    EXPECT(a.crop_pad == 4 && a.hflip && a.mean[0] == 0.5071f && a.std[2] == 0.2762f, "cifar100 train");
    snprintf(c.name, sizeof c.name, "other");
    EXPECT_OK(sd_augment_default(&c, true, &a));
    EXPECT(a.mean[1] == 0.0f && a.std[1] == 1.0f && a.crop_pad == 0 && !a.hflip, "unknown name: u8/255");
    snprintf(c.name, sizeof c.name, "cifar10");
    c.c = 1;
    EXPECT_FAIL(sd_augment_default(&c, true, &a), SD_ERR_INVALID, "channels");
    c.c = 5;
    EXPECT_FAIL(sd_augment_default(&c, true, &a), SD_ERR_INVALID, "channels");
}

static void test_normalise(void) {
    uint8_t px[3] = {0, 128, 255};
    int32_t lab[3] = {0, 1, 2};
    sd_dataset d = {
        .name = "fashion-mnist", .n = 3, .c = 1, .h = 1, .w = 1, .classes = 10, .images = px, .labels = lab};
    sd_augment a;
    EXPECT_OK(sd_augment_default(&d, true, &a));
    float x[3];
    int32_t y[3] = {-1, -1, -1};
    const int64_t idx[3] = {0, 1, 2};
    EXPECT_OK(sd_augment_batch(&d, idx, 3, &a, NULL, x, y)); /* no draws: rng may be NULL */
    for (int i = 0; i < 3; i++) {
        double want = (px[i] / 255.0 - 0.2860) / 0.3530;
        EXPECT(fabs(x[i] - want) < 1e-6, "pixel %u normalises to %.7f, wanted %.7f", px[i], (double)x[i], want);
        EXPECT(y[i] == lab[i], "label %d", y[i]);
    }
    EXPECT(fabs(x[0] + 0.810198) < 1e-5 && fabs(x[2] - 2.022663) < 1e-5, "0 -> %f, 255 -> %f", (double)x[0],
           (double)x[2]);
    a.std[0] = 0.0f;
    EXPECT_FAIL(sd_augment_batch(&d, idx, 3, &a, NULL, x, y), SD_ERR_INVALID, "std");
}

/* ch0 = 1..12, ch1 = 101..112 in a 3x4 image; expected outputs as u8 grids (0 = padding). */
static const uint8_t hand_src[2][12] = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
                                        {101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112}};

static void expect_grid(const float *x, const uint8_t want0[12], const char *what) {
    int bad = 0;
    for (int ch = 0; ch < 2; ch++)
        for (int k = 0; k < 12; k++) {
            uint8_t v = want0[k] == 0 ? 0 : (uint8_t)(want0[k] + 100 * ch);
            bad += x[ch * 12 + k] != (float)v / 255.0f;
        }
    EXPECT(bad == 0, "%s: %d pixels differ", what, bad);
}

static void test_crop_flip(void) {
    uint8_t px[24];
    memcpy(px, hand_src, 24);
    int32_t lab[1] = {0};
    sd_dataset d = {.name = "hand", .n = 1, .c = 2, .h = 3, .w = 4, .classes = 1, .images = px, .labels = lab};
    sd_augment a = {.mean = {0, 0}, .std = {1, 1}, .crop_pad = 1, .hflip = true};
    float x[24];
    static const struct {
        sd_augment_draw t;
        uint8_t want[12];
        const char *what;
    } cases[] = {
        {{1, 1, false}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "centre crop = identity"},
        {{0, 0, false}, {0, 0, 0, 0, 0, 1, 2, 3, 0, 5, 6, 7}, "crop at the top-left corner"},
        {{2, 2, false}, {6, 7, 8, 0, 10, 11, 12, 0, 0, 0, 0, 0}, "crop at the bottom-right corner"},
        {{1, 0, false}, {0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11}, "shift right"},
        {{1, 1, true}, {4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9}, "flip"},
        {{0, 2, true}, {0, 0, 0, 0, 0, 4, 3, 2, 0, 8, 7, 6}, "crop top-right then flip"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        EXPECT_OK(sd_augment_image(&d, 0, &a, &cases[k].t, x));
        expect_grid(x, cases[k].want, cases[k].what);
    }
    sd_augment_draw off = {3, 0, false};
    EXPECT_FAIL(sd_augment_image(&d, 0, &a, &off, x), SD_ERR_INVALID, "crop offsets");
    EXPECT_FAIL(sd_augment_image(&d, 1, &a, &cases[0].t, x), SD_ERR_INVALID, "index 1");

    /* padding is a u8 zero normalised like any pixel: -mean/std */
    sd_augment m = {.mean = {0.5f, 0.25f}, .std = {0.25f, 0.5f}, .crop_pad = 1};
    sd_augment_draw corner = {0, 0, false};
    EXPECT_OK(sd_augment_image(&d, 0, &m, &corner, x));
    EXPECT(x[0] == -2.0f && x[12] == -0.5f, "padding normalises to -mean/std: %g %g", (double)x[0], (double)x[12]);
}

static void test_batch_determinism(void) {
    enum { N = 6, C = 3, H = 5, W = 7, B = 8 };
    uint8_t px[N * C * H * W];
    int32_t lab[N];
    sd_test_rng tr = {42};
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)sd_test_next(&tr);
    for (int i = 0; i < N; i++) lab[i] = i % 3;
    sd_dataset d = {.name = "cifar10", .n = N, .c = C, .h = H, .w = W, .classes = 3, .images = px, .labels = lab};
    sd_augment a;
    EXPECT_OK(sd_augment_default(&d, true, &a));
    a.crop_pad = 2;
    const int64_t idx[B] = {5, 0, 3, 3, 1, 2, 4, 0};
    static float x1[B * C * H * W], x2[B * C * H * W], x3[B * C * H * W], ref[B * C * H * W];
    int32_t y1[B];
    sd_rng r1, r2, r3, rr;
    sd_rng_seed(&r1, 1234);
    sd_rng_seed(&r2, 1234);
    sd_rng_seed(&r3, 1235);
    sd_rng_seed(&rr, 1234);
    EXPECT_OK(sd_augment_batch(&d, idx, B, &a, &r1, x1, y1));
    EXPECT_OK(sd_augment_batch(&d, idx, B, &a, &r2, x2, NULL));
    EXPECT_OK(sd_augment_batch(&d, idx, B, &a, &r3, x3, NULL));
    EXPECT(memcmp(x1, x2, sizeof x1) == 0, "same seed, same batch");
    EXPECT(memcmp(x1, x3, sizeof x1) != 0, "another seed, another batch");
    /* the documented draw order, image by image */
    const size_t img = C * H * W;
    int flips = 0, shifted = 0;
    for (int i = 0; i < B; i++) {
        sd_augment_draw t;
        sd_augment_draw_next(&a, &rr, &t);
        flips += t.flip;
        shifted += t.dy != 2 || t.dx != 2;
        EXPECT_OK(sd_augment_image(&d, idx[i], &a, &t, ref + i * img));
        EXPECT(y1[i] == lab[idx[i]], "label of batch item %d", i);
    }
    EXPECT(memcmp(x1, ref, sizeof x1) == 0, "batch = per-image transforms drawn in the documented order");
    EXPECT(memcmp(&r1, &rr, sizeof r1) == 0, "the batch drew exactly the documented numbers");
    EXPECT(flips > 0 && flips < B && shifted > 0, "seed 1234 mixes flips (%d) and shifts (%d)", flips, shifted);

    /* the same augmentation in float space (what a streamed batch gets after the take): normalise
     * without draws, then sd_augment_floats; bit-equal to sd_augment_batch, padding included */
    {
        static float fl[B * C * H * W];
        sd_augment plain = a;
        plain.crop_pad = 0;
        plain.hflip = false;
        sd_rng rf;
        sd_rng_seed(&rf, 1234);
        EXPECT_OK(sd_augment_batch(&d, idx, B, &plain, NULL, fl, NULL));
        EXPECT_OK(sd_augment_floats(&a, B, C, H, W, &rf, fl));
        EXPECT(memcmp(fl, x1, sizeof fl) == 0, "sd_augment_floats on normalised images = sd_augment_batch");
        EXPECT(memcmp(&rf, &r2, sizeof rf) == 0, "and draws the same numbers");
        EXPECT_FAIL(sd_augment_floats(&a, B, C, H, W, NULL, fl), SD_ERR_INVALID, "rng");
        EXPECT_FAIL(sd_augment_floats(&a, B, 5, H, W, &rf, fl), SD_ERR_INVALID, "bad arguments");
        EXPECT_OK(sd_augment_floats(&plain, B, C, H, W, NULL, fl)); /* nothing to draw: no rng needed */
    }

    /* a bad index is reported before any draw */
    const int64_t bad[3] = {0, 1, 6};
    sd_rng before = r1;
    EXPECT_FAIL(sd_augment_batch(&d, bad, 3, &a, &r1, x1, y1), SD_ERR_INVALID, "indices[2] = 6");
    EXPECT(memcmp(&before, &r1, sizeof r1) == 0, "a rejected batch leaves the rng untouched");
    EXPECT_FAIL(sd_augment_batch(&d, idx, B, &a, NULL, x1, y1), SD_ERR_INVALID, "rng");

    /* draw statistics: every offset in [0, 8] appears; flips about half */
    sd_augment c = {.crop_pad = 4, .hflip = true};
    int seen[9][9] = {{0}}, nflip = 0;
    sd_rng r;
    sd_rng_seed(&r, 7);
    for (int i = 0; i < 20000; i++) {
        sd_augment_draw t;
        sd_augment_draw_next(&c, &r, &t);
        seen[t.dy][t.dx]++;
        nflip += t.flip;
    }
    int missing = 0;
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 9; x++) missing += seen[y][x] == 0;
    EXPECT(missing == 0, "%d crop offsets never drawn", missing);
    EXPECT(nflip > 9500 && nflip < 10500, "%d flips in 20000", nflip);
}

/* ---- shuffle -------------------------------------------------------------------------------- */

static void test_shuffle(void) {
    enum { N = 1000 };
    static int64_t a[N], b[N], c[N];
    for (int i = 0; i < N; i++) a[i] = b[i] = c[i] = i;
    sd_rng r1, r2, r3;
    sd_rng_seed(&r1, 99);
    sd_rng_seed(&r2, 99);
    sd_rng_seed(&r3, 100);
    EXPECT_OK(sd_shuffle(a, N, &r1));
    EXPECT_OK(sd_shuffle(b, N, &r2));
    EXPECT_OK(sd_shuffle(c, N, &r3));
    static char seen[N];
    int bad = 0, fixed = 0;
    for (int i = 0; i < N; i++) {
        if (a[i] < 0 || a[i] >= N || seen[a[i]]) bad++;
        else seen[a[i]] = 1;
        fixed += a[i] == i;
    }
    EXPECT(bad == 0, "shuffle is not a permutation (%d bad entries)", bad);
    EXPECT(fixed < 20, "%d fixed points in a shuffle of 1000", fixed);
    EXPECT(memcmp(a, b, sizeof a) == 0, "same seed, same order");
    EXPECT(memcmp(a, c, sizeof a) != 0, "another seed, another order");
    /* all 6 orders of 3 about equally often */
    int counts[6] = {0};
    sd_rng r;
    sd_rng_seed(&r, 5);
    for (int t = 0; t < 6000; t++) {
        int64_t v[3] = {0, 1, 2};
        sd_shuffle(v, 3, &r);
        counts[v[0] * 2 + (v[1] > v[2])]++;
    }
    int lo = 6000, hi = 0;
    for (int k = 0; k < 6; k++) {
        if (counts[k] < lo) lo = counts[k];
        if (counts[k] > hi) hi = counts[k];
    }
    EXPECT(lo > 850 && hi < 1150, "orders of 3 drawn %d to %d times of 6000", lo, hi);
    EXPECT_OK(sd_shuffle(NULL, 0, NULL));
    EXPECT_OK(sd_shuffle(a, 1, NULL));
    EXPECT_FAIL(sd_shuffle(a, -1, &r), SD_ERR_INVALID, "negative");
}

/* ---- the real Fashion-MNIST ----------------------------------------------------------------- */

static void test_real_fashion_mnist(void) {
    const char *root = "/usr/share/datasets/fashion-mnist";
    if (access(root, F_OK) != 0) {
        printf("test_dataset: real Fashion-MNIST part skipped: %s not found (Debian package "
               "dataset-fashion-mnist)\n",
               root);
        return;
    }
    sd_dataset tr, te;
    EXPECT_OK(sd_dataset_open("fashion-mnist", NULL, true, &tr));
    EXPECT_OK(sd_dataset_open("fashion-mnist", NULL, false, &te));
    EXPECT(tr.n == 60000 && te.n == 10000, "n %lld / %lld", (long long)tr.n, (long long)te.n);
    EXPECT(tr.c == 1 && tr.h == 28 && tr.w == 28 && tr.classes == 10, "train %dx%dx%d, %d classes", tr.c, tr.h, tr.w,
           tr.classes);
    EXPECT(te.c == 1 && te.h == 28 && te.w == 28 && te.classes == 10, "test %dx%dx%d, %d classes", te.c, te.h, te.w,
           te.classes);
    if (tr.n == 60000 && te.n == 10000) {
        int64_t ctr[10] = {0}, cte[10] = {0};
        for (int64_t i = 0; i < tr.n; i++) ctr[tr.labels[i]]++;
        for (int64_t i = 0; i < te.n; i++) cte[te.labels[i]]++;
        int bad = 0;
        for (int k = 0; k < 10; k++) bad += ctr[k] != 6000 || cte[k] != 1000;
        EXPECT(bad == 0, "%d classes without 6000 train / 1000 test images", bad);
        EXPECT(tr.labels[0] == 9 && te.labels[0] == 9, "first images are ankle boots (9): %d %d", tr.labels[0],
               te.labels[0]);
        /* the default normalisation matches the training set's statistics */
        double s = 0, s2 = 0;
        size_t np = (size_t)tr.n * 784;
        for (size_t i = 0; i < np; i++) {
            double v = tr.images[i] / 255.0;
            s += v;
            s2 += v * v;
        }
        double mean = s / np, sd = sqrt(s2 / np - mean * mean);
        EXPECT(fabs(mean - 0.2860) < 5e-4 && fabs(sd - 0.3530) < 5e-4, "pixel mean %.4f std %.4f", mean, sd);
        sd_augment a;
        EXPECT_OK(sd_augment_default(&tr, true, &a));
        static float x[64 * 784];
        int64_t idx[64];
        for (int i = 0; i < 64; i++) idx[i] = 59999 - i * 937;
        sd_rng r;
        sd_rng_seed(&r, 3);
        EXPECT_OK(sd_augment_batch(&tr, idx, 64, &a, &r, x, NULL));
        EXPECT(sd_all_finite(x, 64 * 784), "a real batch is finite");
    }
    sd_dataset_free(&tr);
    sd_dataset_free(&te);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/sd_dataset_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) return sd_test_skip("test_dataset", "cannot create a temporary folder");
    test_idx();
    test_cifar();
    test_subset();
    test_augment_defaults();
    test_normalise();
    test_crop_flip();
    test_batch_determinism();
    test_shuffle();
    test_real_fashion_mnist();
    for (int i = g_nmade - 1; i >= 0; i--) remove(g_made[i]);
    rmdir(g_tmp);
    return sd_test_finish("test_dataset");
}
