/* golden_file.c: reader of the golden-value files (format in docs/golden-format.md). The file is
 * read whole, every size is checked against the bytes that remain before anything is allocated
 * from it, and data is copied into aligned host-endian buffers. */
#include "tests/harness.h"
#include "tests/ref/golden_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sd_golden {
    char *path;
    size_t count;
    sd_golden_record *recs;
};

/* ---- byte decoding ---------------------------------------------------------------------------- */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int host_is_little(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Copies n little-endian 4-byte words into dst in host order. */
static void copy_le_words(void *dst, const unsigned char *src, size_t n) {
    if (host_is_little()) {
        memcpy(dst, src, n * 4);
        return;
    }
    uint32_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = le32(src + 4 * i);
}

/* ---- whole-file read ------------------------------------------------------------------------- */

static sd_status read_all(const char *path, unsigned char **buf_out, size_t *len_out) {
    *buf_out = NULL;
    *len_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return SD_FAIL(SD_ERR_IO, "golden file %s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return SD_FAIL(SD_ERR_OOM, "golden file %s: read buffer of %zu bytes", path, cap);
    }
    for (;;) {
        if (len == cap) {
            unsigned char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                return SD_FAIL(SD_ERR_OOM, "golden file %s: read buffer past %zu bytes", path, cap);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return SD_FAIL(SD_ERR_IO, "golden file %s: read error after %zu bytes", path, len);
    }
    *buf_out = buf;
    *len_out = len;
    return SD_OK;
}

/* ---- parsing --------------------------------------------------------------------------------- */

typedef struct cursor {
    const unsigned char *buf;
    size_t len, pos;
} cursor;

static int take_u32(cursor *c, uint32_t *v) {
    if (c->len - c->pos < 4) return 0;
    *v = le32(c->buf + c->pos);
    c->pos += 4;
    return 1;
}

/* The smallest record: name length, a 1-byte name, dtype, ndim (a rank-1 empty tensor). */
#define SD_GOLDEN_MIN_RECORD 13u
#define SD_GOLDEN_HEADER 16u

static const char *rec_label(const sd_golden_record *r) { return r->name[0] ? r->name : "?"; }

static sd_status parse_record(const char *path, cursor *c, size_t idx, size_t count, sd_golden_record *r) {
    uint32_t name_len, dtype, ndim;
    if (!take_u32(c, &name_len))
        return SD_FAIL(SD_ERR_FORMAT,
                       "golden file %s: record %zu of %zu: truncated before its name length (offset %zu of %zu bytes)",
                       path, idx, count, c->pos, c->len);
    if (name_len == 0 || name_len > SD_GOLDEN_MAX_NAME)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu of %zu: name length %u outside [1, %d]", path, idx,
                       count, name_len, SD_GOLDEN_MAX_NAME);
    if (c->len - c->pos < name_len)
        return SD_FAIL(SD_ERR_FORMAT,
                       "golden file %s: record %zu of %zu: truncated inside its %u-byte name (offset %zu of %zu bytes)",
                       path, idx, count, name_len, c->pos, c->len);
    if (memchr(c->buf + c->pos, '\0', name_len))
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu of %zu: name contains a NUL byte", path, idx, count);
    memcpy(r->name, c->buf + c->pos, name_len);
    r->name[name_len] = '\0';
    c->pos += name_len;

    if (!take_u32(c, &dtype) || !take_u32(c, &ndim))
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu of %zu (\"%s\"): truncated inside its header", path,
                       idx, count, rec_label(r));
    if (dtype != SD_GOLDEN_F32 && dtype != SD_GOLDEN_I32)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu of %zu (\"%s\"): unknown dtype %u (0 = f32, 1 = i32)",
                       path, idx, count, rec_label(r), dtype);
    if (ndim > SD_GOLDEN_MAX_NDIM)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu of %zu (\"%s\"): %u dimensions, at most %d", path,
                       idx, count, rec_label(r), ndim, SD_GOLDEN_MAX_NDIM);
    r->dtype = (sd_golden_dtype)dtype;
    r->ndim = (int)ndim;
    size_t numel = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (!take_u32(c, &r->dims[i]))
            return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu of %zu (\"%s\"): truncated inside its dims", path,
                           idx, count, rec_label(r));
        /* numel * dim stays below the file's word count, so the product cannot overflow */
        if (r->dims[i] != 0 && numel > (c->len / 4) / r->dims[i])
            return SD_FAIL(SD_ERR_FORMAT,
                           "golden file %s: record %zu of %zu (\"%s\"): dims claim more data than the %zu-byte file holds",
                           path, idx, count, rec_label(r), c->len);
        numel *= r->dims[i];
    }
    size_t bytes = numel * 4, left = c->len - c->pos;
    if (bytes > left)
        return SD_FAIL(SD_ERR_FORMAT,
                       "golden file %s: record %zu of %zu (\"%s\"): truncated: %zu data bytes needed, %zu left", path,
                       idx, count, rec_label(r), bytes, left);
    size_t alloc = (bytes + 63) & ~(size_t)63;
    r->data = aligned_alloc(64, alloc ? alloc : 64);
    if (!r->data)
        return SD_FAIL(SD_ERR_OOM, "golden file %s: record \"%s\": %zu bytes", path, rec_label(r), bytes);
    copy_le_words(r->data, c->buf + c->pos, numel);
    r->numel = numel;
    c->pos += bytes;
    return SD_OK;
}

static sd_status parse(const char *path, const unsigned char *buf, size_t len, sd_golden *g) {
    cursor c = {buf, len, 0};
    if (len < SD_GOLDEN_HEADER)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: %zu bytes, shorter than the %u-byte header", path, len,
                       SD_GOLDEN_HEADER);
    if (memcmp(buf, SD_GOLDEN_MAGIC, 8) != 0)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: bad magic (not an SDGOLD file)", path);
    c.pos = 8;
    uint32_t version, count;
    take_u32(&c, &version);
    take_u32(&c, &count);
    if (version != SD_GOLDEN_VERSION)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: version %u, this reader knows version %u", path, version,
                       SD_GOLDEN_VERSION);
    if (count > (len - SD_GOLDEN_HEADER) / SD_GOLDEN_MIN_RECORD)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: %u records cannot fit in %zu bytes", path, count, len);
    g->recs = calloc(count ? count : 1, sizeof *g->recs);
    if (!g->recs) return SD_FAIL(SD_ERR_OOM, "golden file %s: table of %u records", path, count);
    for (size_t i = 0; i < count; i++) {
        g->count = i + 1; /* so sd_golden_free releases what parse_record allocated */
        TRY(parse_record(path, &c, i, count, &g->recs[i]));
        for (size_t j = 0; j < i; j++)
            if (strcmp(g->recs[j].name, g->recs[i].name) == 0)
                return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record %zu (\"%s\") repeats record %zu's name", path, i,
                               g->recs[i].name, j);
    }
    if (c.pos != len)
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: %zu bytes after the last of %u records", path, len - c.pos,
                       count);
    return SD_OK;
}

/* ---- public ---------------------------------------------------------------------------------- */

sd_status sd_golden_load(const char *path, sd_golden **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "golden file: output pointer is NULL");
    *out = NULL;
    if (!path) return SD_FAIL(SD_ERR_INVALID, "golden file: path is NULL");
    sd_golden *g = calloc(1, sizeof *g);
    size_t plen = strlen(path);
    if (!g || !(g->path = malloc(plen + 1))) {
        free(g);
        return SD_FAIL(SD_ERR_OOM, "golden file %s: allocation failed", path);
    }
    memcpy(g->path, path, plen + 1);
    unsigned char *buf;
    size_t len;
    sd_status s = read_all(path, &buf, &len);
    if (s == SD_OK) {
        s = parse(path, buf, len, g);
        free(buf);
    }
    if (s != SD_OK) {
        sd_golden_free(g);
        return s;
    }
    *out = g;
    return SD_OK;
}

void sd_golden_free(sd_golden *g) {
    if (!g) return;
    for (size_t i = 0; i < g->count && g->recs; i++) free(g->recs[i].data);
    free(g->recs);
    free(g->path);
    free(g);
}

const char *sd_golden_path(const sd_golden *g) { return g ? g->path : ""; }
size_t sd_golden_count(const sd_golden *g) { return g ? g->count : 0; }
const sd_golden_record *sd_golden_at(const sd_golden *g, size_t i) {
    return g && i < g->count ? &g->recs[i] : NULL;
}

sd_status sd_golden_find(const sd_golden *g, const char *name, const sd_golden_record **out) {
    if (out) *out = NULL;
    if (!g || !name || !out)
        return SD_FAIL(SD_ERR_INVALID, "golden find: NULL argument (record \"%s\")", name ? name : "?");
    for (size_t i = 0; i < g->count; i++)
        if (strcmp(g->recs[i].name, name) == 0) {
            *out = &g->recs[i];
            return SD_OK;
        }
    return SD_FAIL(SD_ERR_INVALID, "golden file %s: no record \"%s\" (%zu records; regenerate with scripts/golden.sh?)",
                   g->path, name, g->count);
}

size_t sd_golden_numel(const sd_golden_record *r) { return r ? r->numel : 0; }
int sd_golden_ndim(const sd_golden_record *r) { return r ? r->ndim : 0; }
uint32_t sd_golden_dim(const sd_golden_record *r, int i) { return r && i >= 0 && i < r->ndim ? r->dims[i] : 0; }
const float *sd_golden_f32(const sd_golden_record *r) { return r && r->dtype == SD_GOLDEN_F32 ? r->data : NULL; }
const int32_t *sd_golden_i32(const sd_golden_record *r) { return r && r->dtype == SD_GOLDEN_I32 ? r->data : NULL; }

static sd_status get_typed(const sd_golden *g, const char *name, sd_golden_dtype dtype, size_t expect_numel,
                           const sd_golden_record **out) {
    TRY(sd_golden_find(g, name, out));
    const sd_golden_record *r = *out;
    if (r->dtype != dtype) {
        *out = NULL;
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record \"%s\" is %s, expected %s", g->path, name,
                       r->dtype == SD_GOLDEN_F32 ? "f32" : "i32", dtype == SD_GOLDEN_F32 ? "f32" : "i32");
    }
    if (expect_numel && r->numel != expect_numel) {
        *out = NULL;
        return SD_FAIL(SD_ERR_FORMAT, "golden file %s: record \"%s\" has %zu elements, expected %zu", g->path, name,
                       r->numel, expect_numel);
    }
    return SD_OK;
}

sd_status sd_golden_get_f32(const sd_golden *g, const char *name, size_t expect_numel, const float **out) {
    const sd_golden_record *r = NULL;
    if (out) *out = NULL;
    if (!out) return SD_FAIL(SD_ERR_INVALID, "golden get: output pointer is NULL (record \"%s\")", name ? name : "?");
    TRY(get_typed(g, name, SD_GOLDEN_F32, expect_numel, &r));
    *out = r->data;
    return SD_OK;
}

sd_status sd_golden_get_i32(const sd_golden *g, const char *name, size_t expect_numel, const int32_t **out) {
    const sd_golden_record *r = NULL;
    if (out) *out = NULL;
    if (!out) return SD_FAIL(SD_ERR_INVALID, "golden get: output pointer is NULL (record \"%s\")", name ? name : "?");
    TRY(get_typed(g, name, SD_GOLDEN_I32, expect_numel, &r));
    *out = r->data;
    return SD_OK;
}

const float *sd_golden_expect_f32(const sd_golden *g, const char *name, size_t numel) {
    const float *p = NULL;
    sd_status st = sd_golden_get_f32(g, name, numel, &p);
    EXPECT(st == SD_OK, "golden record %s: %s", name, sd_last_error());
    return st == SD_OK ? p : NULL;
}
