/* dataset.c: the dataset readers declared in dataset.h: IDX through zlib (which reads gzipped
 * and raw files alike), the CIFAR-10/100 binary batches through stdio, opening by name, subsets. */
#include "stream/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define SD_PATH_MAX 4096

static void dataset_clear(sd_dataset *d) { memset(d, 0, sizeof *d); }

void sd_dataset_free(sd_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    dataset_clear(d);
}

static void set_name(sd_dataset *d, const char *name) { snprintf(d->name, sizeof d->name, "%s", name); }

/* dir + "/" + file into buf (no doubled slash). */
static sd_status join_path(char *buf, size_t cap, const char *dir, const char *file) {
    size_t len = strlen(dir);
    const char *sep = (len > 0 && dir[len - 1] == '/') ? "" : "/";
    int w = snprintf(buf, cap, "%s%s%s", dir, sep, file);
    if (w < 0 || (size_t)w >= cap)
        return SD_FAIL(SD_ERR_INVALID, "path '%s%s%s' is longer than %zu bytes; use a shorter dataset root", dir,
                       sep, file, cap - 1);
    return SD_OK;
}

static bool file_exists(const char *path) { return access(path, F_OK) == 0; }

/* ---- IDX ------------------------------------------------------------------------------------ */

#define IDX_MAGIC_IMAGES 0x00000803u /* u8 data, 3 dimensions */
#define IDX_MAGIC_LABELS 0x00000801u /* u8 data, 1 dimension */
#define IDX_CHUNK (1u << 30)

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static sd_status idx_open(const char *path, gzFile *out) {
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return SD_FAIL(SD_ERR_IO, "cannot open IDX file '%s': %s", path,
                       errno ? strerror(errno) : "zlib could not allocate its state");
    gzbuffer(f, 1u << 18);
    *out = f;
    return SD_OK;
}

/* Reads up to `want` bytes; *got < want only at the end of the data. A corrupt gzip stream is
 * SD_ERR_FORMAT, a failing read SD_ERR_IO. */
static sd_status idx_read(gzFile f, const char *path, uint8_t *buf, size_t want, size_t *got) {
    size_t total = 0;
    while (total < want) {
        size_t chunk = want - total < IDX_CHUNK ? want - total : IDX_CHUNK;
        int r = gzread(f, buf + total, (unsigned)chunk);
        if (r < 0) {
            int err = 0;
            const char *msg = gzerror(f, &err);
            if (err == Z_ERRNO)
                return SD_FAIL(SD_ERR_IO, "reading IDX file '%s' failed: %s", path, strerror(errno));
            return SD_FAIL(SD_ERR_FORMAT, "IDX file '%s' is not a valid gzip stream: %s", path, msg);
        }
        if (r == 0) break;
        total += (size_t)r;
    }
    *got = total;
    return SD_OK;
}

/* zlib's note on a short read ("unexpected end of file" for a cut gzip stream), or "". */
static const char *idx_note(gzFile f) {
    int err = 0;
    const char *msg = gzerror(f, &err);
    return err != Z_OK && msg && *msg ? msg : "";
}

/* Reads exactly `want` payload bytes after a header of `header` bytes and checks that nothing
 * follows. The buffer starts at 64 KiB and doubles as data arrives, so a header that lies about
 * its size costs at most about twice what the file holds. `what` describes the payload. */
static sd_status idx_payload(gzFile f, const char *path, const char *what, int header, size_t want,
                             uint8_t **out) {
    size_t cap = want < ((size_t)64 << 10) ? want : ((size_t)64 << 10);
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return SD_FAIL(SD_ERR_OOM, "cannot allocate %zu bytes for '%s'", cap, path);
    size_t got = 0;
    for (;;) {
        size_t r = 0;
        sd_status s = idx_read(f, path, buf + got, cap - got, &r);
        if (s != SD_OK) {
            free(buf);
            return s;
        }
        got += r;
        if (got < cap || cap == want) break;
        size_t ncap = cap * 2 < want ? cap * 2 : want;
        uint8_t *nb = realloc(buf, ncap);
        if (!nb) {
            free(buf);
            return SD_FAIL(SD_ERR_OOM, "cannot allocate %zu bytes for '%s' (%s)", ncap, path, what);
        }
        buf = nb;
        cap = ncap;
    }
    if (got < want) {
        const char *note = idx_note(f);
        free(buf);
        return SD_FAIL(SD_ERR_FORMAT,
                       "IDX file '%s' is truncated: its header declares %s, so %zu bytes should follow the "
                       "%d-byte header, but only %zu do%s%s; download the file again",
                       path, what, want, header, got, *note ? "; zlib: " : "", note);
    }
    uint8_t extra;
    size_t r = 0;
    sd_status s = idx_read(f, path, &extra, 1, &r);
    if (s != SD_OK || r != 0) {
        free(buf);
        if (s != SD_OK) return s;
        return SD_FAIL(SD_ERR_FORMAT,
                       "IDX file '%s' is longer than its header declares (%s: %zu bytes after the %d-byte "
                       "header, then more data); is the header from another file?",
                       path, what, want, header);
    }
    *out = buf;
    return SD_OK;
}

static sd_status idx_check_magic(const char *path, uint32_t magic, uint32_t want, const char *kind);

/* Reads a header of `bytes` bytes; the magic number is checked first, so a wrong file that is also
 * short is reported as the wrong file. */
static sd_status idx_header(gzFile f, const char *path, uint8_t *hdr, int bytes, uint32_t magic,
                            const char *kind) {
    size_t got = 0;
    TRY(idx_read(f, path, hdr, (size_t)bytes, &got));
    if (got >= 4) TRY(idx_check_magic(path, be32(hdr), magic, kind));
    if (got < (size_t)bytes)
        return SD_FAIL(SD_ERR_FORMAT, "IDX %s file '%s' is truncated: expected a %d-byte header, found %zu bytes",
                       kind, path, bytes, got);
    return SD_OK;
}

static sd_status idx_check_magic(const char *path, uint32_t magic, uint32_t want, const char *kind) {
    if (magic == want) return SD_OK;
    const char *hint = "";
    if (want == IDX_MAGIC_IMAGES && magic == IDX_MAGIC_LABELS) hint = "; it looks like a label file: swap the paths";
    if (want == IDX_MAGIC_LABELS && magic == IDX_MAGIC_IMAGES) hint = "; it looks like an image file: swap the paths";
    return SD_FAIL(SD_ERR_FORMAT,
                   "'%s' is not an IDX %s file: its magic number is 0x%08x, expected 0x%08x (unsigned bytes, %d "
                   "dimension%s)%s",
                   path, kind, magic, want, want == IDX_MAGIC_IMAGES ? 3 : 1, want == IDX_MAGIC_IMAGES ? "s" : "",
                   hint);
}

static bool is_standard_idx(const char *name) {
    return strcmp(name, "mnist") == 0 || strcmp(name, "fashion-mnist") == 0;
}

/* Everything after opening both files; the caller closes them. */
static sd_status idx_load(gzFile fi, gzFile fl, const char *images_path, const char *labels_path,
                          const char *name, sd_dataset *out) {
    uint8_t hi[16], hl[8];
    TRY(idx_header(fi, images_path, hi, 16, IDX_MAGIC_IMAGES, "image"));
    TRY(idx_header(fl, labels_path, hl, 8, IDX_MAGIC_LABELS, "label"));

    uint32_t n = be32(hi + 4), rows = be32(hi + 8), cols = be32(hi + 12), nl = be32(hl + 4);
    if (n == 0 || n > SD_IDX_MAX_N)
        return SD_FAIL(SD_ERR_FORMAT, "IDX image file '%s' declares %u images; expected 1 to %d", images_path, n,
                       SD_IDX_MAX_N);
    if (rows == 0 || cols == 0 || rows > SD_IDX_MAX_DIM || cols > SD_IDX_MAX_DIM)
        return SD_FAIL(SD_ERR_FORMAT, "IDX image file '%s' declares images of %ux%u; expected 1 to %d per side",
                       images_path, rows, cols, SD_IDX_MAX_DIM);
    if (nl != n)
        return SD_FAIL(SD_ERR_FORMAT,
                       "label count mismatch: '%s' holds %u images but '%s' holds %u labels; are they from the "
                       "same set (train vs t10k)?",
                       images_path, n, labels_path, nl);

    if ((uint64_t)n * rows * cols > SIZE_MAX)
        return SD_FAIL(SD_ERR_OOM, "IDX image file '%s' declares %u images of %ux%u, more than this machine addresses",
                       images_path, n, rows, cols);
    char what[96];
    snprintf(what, sizeof what, "%u labels", n);
    uint8_t *lab = NULL;
    TRY(idx_payload(fl, labels_path, what, 8, n, &lab));

    bool standard = is_standard_idx(name);
    int classes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (standard && lab[i] >= 10) {
            sd_status s = SD_FAIL(SD_ERR_FORMAT, "label %u of item %u in '%s' is outside [0, 10) of %s", lab[i], i,
                                  labels_path, name);
            free(lab);
            return s;
        }
        if (lab[i] + 1 > classes) classes = lab[i] + 1;
    }
    if (standard) classes = 10;

    int32_t *labels = malloc((size_t)n * sizeof *labels);
    if (!labels) {
        free(lab);
        return SD_FAIL(SD_ERR_OOM, "cannot allocate %u labels for '%s'", n, labels_path);
    }
    for (uint32_t i = 0; i < n; i++) labels[i] = lab[i];
    free(lab);

    snprintf(what, sizeof what, "%u images of %ux%u", n, rows, cols);
    uint8_t *images = NULL;
    sd_status s = idx_payload(fi, images_path, what, 16, (size_t)n * rows * cols, &images);
    if (s != SD_OK) {
        free(labels);
        TRY(s);
    }
    out->n = n;
    out->c = 1;
    out->h = (int)rows;
    out->w = (int)cols;
    out->classes = classes;
    out->images = images;
    out->labels = labels;
    set_name(out, name);
    return SD_OK;
}

sd_status sd_dataset_load_idx(const char *images_path, const char *labels_path, const char *name,
                              sd_dataset *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_dataset_load_idx needs an output dataset (out is NULL)");
    dataset_clear(out);
    if (!images_path || !labels_path)
        return SD_FAIL(SD_ERR_INVALID, "sd_dataset_load_idx needs both an image and a label path (got %s, %s)",
                       images_path ? images_path : "NULL", labels_path ? labels_path : "NULL");
    if (!name) name = "idx";
    gzFile fi = NULL, fl = NULL;
    TRY(idx_open(images_path, &fi));
    sd_status s = idx_open(labels_path, &fl);
    if (s == SD_OK) s = idx_load(fi, fl, images_path, labels_path, name, out);
    gzclose(fi);
    if (fl) gzclose(fl);
    TRY(s);
    return SD_OK;
}

/* ---- CIFAR binary --------------------------------------------------------------------------- */

#define CIFAR_PIXELS 3072
#define CIFAR_MAX_FILES 5

static const char *const cifar10_train[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                            "data_batch_4.bin", "data_batch_5.bin"};
static const char *const cifar10_test[] = {"test_batch.bin"};
static const char *const cifar100_train[] = {"train.bin"};
static const char *const cifar100_test[] = {"test.bin"};

static sd_status cifar_missing(const char *path, int which, const char *why) {
    return SD_FAIL(SD_ERR_IO,
                   "cannot open CIFAR-%d file '%s': %s; download the \"CIFAR-%d binary version\" (%s from "
                   "https://www.cs.toronto.edu/~kriz/cifar.html) and extract it (tar xzf %s -C data/ gives %s/) "
                   "or pass the directory that holds the .bin files as the root",
                   which, path, why, which, which == 10 ? "cifar-10-binary.tar.gz" : "cifar-100-binary.tar.gz",
                   which == 10 ? "cifar-10-binary.tar.gz" : "cifar-100-binary.tar.gz",
                   which == 10 ? "data/cifar-10-batches-bin" : "data/cifar-100-binary");
}

/* Reads the records of one opened file into out at position *at. */
static sd_status cifar_read(FILE *f, const char *path, int which, int64_t records, sd_dataset *out, int64_t *at) {
    int lab_bytes = which == 10 ? 1 : 2;
    for (int64_t r = 0; r < records; r++) {
        uint8_t lab[2];
        int64_t i = *at + r;
        if (fread(lab, 1, (size_t)lab_bytes, f) != (size_t)lab_bytes ||
            fread(out->images + (size_t)i * CIFAR_PIXELS, 1, CIFAR_PIXELS, f) != CIFAR_PIXELS)
            return SD_FAIL(SD_ERR_IO, "reading record %lld of CIFAR-%d file '%s' failed: %s", (long long)r, which,
                           path, ferror(f) ? strerror(errno) : "the file shrank while being read");
        int label = lab[lab_bytes - 1];
        if (which == 100 && lab[0] >= 20)
            return SD_FAIL(SD_ERR_FORMAT, "coarse label %u of record %lld in CIFAR-100 file '%s' is outside [0, 20)",
                           lab[0], (long long)r, path);
        if (label >= which)
            return SD_FAIL(SD_ERR_FORMAT,
                           "label %d of record %lld in CIFAR-%d file '%s' is outside [0, %d); is it a CIFAR-%d file?",
                           label, (long long)r, which, path, which, which == 10 ? 100 : 10);
        out->labels[i] = label;
    }
    *at += records;
    return SD_OK;
}

sd_status sd_dataset_load_cifar(const char *dir, int which, bool train, sd_dataset *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_dataset_load_cifar needs an output dataset (out is NULL)");
    dataset_clear(out);
    if (which != 10 && which != 100)
        return SD_FAIL(SD_ERR_INVALID, "CIFAR variant %d is unknown; use 10 or 100", which);
    if (!dir) return SD_FAIL(SD_ERR_INVALID, "sd_dataset_load_cifar needs a directory (dir is NULL)");

    const char *const *names = which == 10 ? (train ? cifar10_train : cifar10_test)
                                           : (train ? cifar100_train : cifar100_test);
    int nfiles = which == 10 && train ? 5 : 1;
    int64_t record = (which == 10 ? 1 : 2) + CIFAR_PIXELS;

    char paths[CIFAR_MAX_FILES][SD_PATH_MAX];
    FILE *files[CIFAR_MAX_FILES] = {0};
    int64_t counts[CIFAR_MAX_FILES] = {0};
    int64_t total = 0;
    sd_status s = SD_OK;
    for (int k = 0; k < nfiles && s == SD_OK; k++) {
        s = join_path(paths[k], sizeof paths[k], dir, names[k]);
        if (s != SD_OK) break;
        files[k] = fopen(paths[k], "rb");
        if (!files[k]) {
            s = cifar_missing(paths[k], which, strerror(errno));
            break;
        }
        struct stat st;
        if (fstat(fileno(files[k]), &st) != 0) {
            s = SD_FAIL(SD_ERR_IO, "cannot stat CIFAR-%d file '%s': %s", which, paths[k], strerror(errno));
            break;
        }
        if (!S_ISREG(st.st_mode)) {
            s = cifar_missing(paths[k], which, "not a regular file");
            break;
        }
        if (st.st_size == 0 || st.st_size % record != 0) {
            s = SD_FAIL(SD_ERR_FORMAT,
                        "CIFAR-%d file '%s' has %lld bytes, which is not a positive multiple of the %lld-byte "
                        "record (%s + 3072 pixels); is it the binary version, complete?",
                        which, paths[k], (long long)st.st_size, (long long)record,
                        which == 10 ? "1 label byte" : "coarse and fine label bytes");
            break;
        }
        counts[k] = st.st_size / record;
        total += counts[k];
    }
    if (s == SD_OK) {
        out->images = malloc((size_t)total * CIFAR_PIXELS);
        out->labels = malloc((size_t)total * sizeof *out->labels);
        if (!out->images || !out->labels)
            s = SD_FAIL(SD_ERR_OOM, "cannot allocate %lld CIFAR-%d images (%lld bytes)", (long long)total, which,
                        (long long)total * CIFAR_PIXELS);
    }
    int64_t at = 0;
    for (int k = 0; k < nfiles && s == SD_OK; k++) s = cifar_read(files[k], paths[k], which, counts[k], out, &at);
    for (int k = 0; k < nfiles; k++)
        if (files[k]) fclose(files[k]);
    if (s != SD_OK) {
        sd_dataset_free(out);
        TRY(s);
    }
    out->n = total;
    out->c = 3;
    out->h = 32;
    out->w = 32;
    out->classes = which;
    set_name(out, which == 10 ? "cifar10" : "cifar100");
    return SD_OK;
}

/* ---- by name -------------------------------------------------------------------------------- */

/* root/base.gz when it exists, else root/base when that exists, else SD_ERR_IO naming both. */
static sd_status idx_find(const char *root, const char *base, const char *name, char *path, size_t cap) {
    char gz[SD_PATH_MAX];
    TRY(join_path(path, cap, root, base));
    int w = snprintf(gz, sizeof gz, "%s.gz", path);
    if (w < 0 || (size_t)w >= sizeof gz)
        return SD_FAIL(SD_ERR_INVALID, "path '%s.gz' is too long; use a shorter dataset root", path);
    if (file_exists(gz)) {
        snprintf(path, cap, "%s", gz);
        return SD_OK;
    }
    if (file_exists(path)) return SD_OK;
    if (strcmp(name, "fashion-mnist") == 0)
        return SD_FAIL(SD_ERR_IO,
                       "cannot find '%s' (nor '%s'); install the Debian package dataset-fashion-mnist (files in "
                       "/usr/share/datasets/fashion-mnist) or put the four Fashion-MNIST IDX files in '%s' or in "
                       "the directory given as root",
                       gz, path, root);
    return SD_FAIL(SD_ERR_IO,
                   "cannot find '%s' (nor '%s'); put the four MNIST IDX files (train-images-idx3-ubyte.gz, "
                   "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in '%s' or "
                   "in the directory given as root",
                   gz, path, root);
}

sd_status sd_dataset_open(const char *name, const char *root, bool train, sd_dataset *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_dataset_open needs an output dataset (out is NULL)");
    dataset_clear(out);
    if (!name) name = "";
    if (strcmp(name, "fashion-mnist") == 0 || strcmp(name, "mnist") == 0) {
        if (!root) root = strcmp(name, "mnist") == 0 ? "data/mnist" : "/usr/share/datasets/fashion-mnist";
        char ip[SD_PATH_MAX], lp[SD_PATH_MAX];
        TRY(idx_find(root, train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte", name, ip, sizeof ip));
        TRY(idx_find(root, train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte", name, lp, sizeof lp));
        TRY(sd_dataset_load_idx(ip, lp, name, out));
        return SD_OK;
    }
    if (strcmp(name, "cifar10") == 0) {
        TRY(sd_dataset_load_cifar(root ? root : "data/cifar-10-batches-bin", 10, train, out));
        return SD_OK;
    }
    if (strcmp(name, "cifar100") == 0) {
        TRY(sd_dataset_load_cifar(root ? root : "data/cifar-100-binary", 100, train, out));
        return SD_OK;
    }
    return SD_FAIL(SD_ERR_INVALID, "unknown dataset '%s'; the names are fashion-mnist, mnist, cifar10, cifar100",
                   name);
}

/* ---- subsets -------------------------------------------------------------------------------- */

sd_status sd_dataset_subset(const sd_dataset *d, const int64_t *idx, int64_t n, sd_dataset *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_dataset_subset needs an output dataset (out is NULL)");
    dataset_clear(out);
    if (!d || d->n < 0 || d->c <= 0 || d->h <= 0 || d->w <= 0 || (d->n > 0 && (!d->images || !d->labels)))
        return SD_FAIL(SD_ERR_INVALID, "sd_dataset_subset needs a loaded source dataset");
    if (n < 0 || (n > 0 && !idx))
        return SD_FAIL(SD_ERR_INVALID, "sd_dataset_subset of '%s' needs n >= 0 indices (got n = %lld%s)", d->name,
                       (long long)n, n > 0 ? " and no index array" : "");
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return SD_FAIL(SD_ERR_INVALID, "subset index idx[%lld] = %lld is outside [0, %lld) of dataset '%s'",
                           (long long)i, (long long)idx[i], (long long)d->n, d->name);
    size_t img = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    if (n > 0) {
        if ((uint64_t)n > SIZE_MAX / img)
            return SD_FAIL(SD_ERR_OOM, "a subset of %lld images of %zu bytes does not fit in memory", (long long)n,
                           img);
        out->images = malloc((size_t)n * img);
        out->labels = malloc((size_t)n * sizeof *out->labels);
        if (!out->images || !out->labels) {
            sd_dataset_free(out);
            return SD_FAIL(SD_ERR_OOM, "cannot allocate a subset of %lld images of '%s'", (long long)n, d->name);
        }
        for (int64_t i = 0; i < n; i++) {
            memcpy(out->images + (size_t)i * img, d->images + (size_t)idx[i] * img, img);
            out->labels[i] = d->labels[idx[i]];
        }
    }
    out->n = n;
    out->c = d->c;
    out->h = d->h;
    out->w = d->w;
    out->classes = d->classes;
    memcpy(out->name, d->name, sizeof out->name);
    return SD_OK;
}
