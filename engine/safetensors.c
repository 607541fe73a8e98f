/* safetensors.c: the safetensors reader and writer declared in safetensors.h. */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/json_string.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors.c assumes a little-endian host");

/* JSON numbers are doubles: integers above 2^53 cannot be represented exactly. */
#define ST_MAX_JSON_INT ((uint64_t)1 << 53)

/* ---------------------------------------------------------------------------------------------
 * dtypes
 * ------------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[SD_ST_DTYPE_COUNT] = {
    [SD_ST_BOOL] = {"BOOL", 1}, [SD_ST_U8] = {"U8", 1},   [SD_ST_I8] = {"I8", 1},     [SD_ST_I16] = {"I16", 2},
    [SD_ST_U16] = {"U16", 2},   [SD_ST_F16] = {"F16", 2}, [SD_ST_BF16] = {"BF16", 2}, [SD_ST_I32] = {"I32", 4},
    [SD_ST_U32] = {"U32", 4},   [SD_ST_F32] = {"F32", 4}, [SD_ST_F64] = {"F64", 8},   [SD_ST_I64] = {"I64", 8},
    [SD_ST_U64] = {"U64", 8},
};

size_t sd_st_dtype_size(sd_st_dtype t) { return (t >= 0 && t < SD_ST_DTYPE_COUNT) ? st_dtypes[t].size : 0; }

const char *sd_st_dtype_name(sd_st_dtype t) { return (t >= 0 && t < SD_ST_DTYPE_COUNT) ? st_dtypes[t].name : "?"; }

sd_status sd_st_dtype_parse(const char *name, sd_st_dtype *out) {
    for (int i = 0; i < SD_ST_DTYPE_COUNT; i++)
        if (name && !strcmp(name, st_dtypes[i].name)) {
            *out = (sd_st_dtype)i;
            return SD_OK;
        }
    return SD_FAIL(SD_ERR_FORMAT,
                   "safetensors: unknown dtype \"%.40s\" (known: BOOL U8 I8 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64)",
                   name ? name : "(null)");
}

/* numel and byte size of a shape; false on a negative dim or overflow. */
static bool st_sizes(int ndim, const int64_t *shape, size_t elem, size_t *numel, size_t *nbytes) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX) return false;
        if (__builtin_mul_overflow(n, (size_t)shape[i], &n)) return false;
    }
    size_t b;
    if (__builtin_mul_overflow(n, elem, &b)) return false;
    *numel = n;
    *nbytes = b;
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * writer
 * ------------------------------------------------------------------------------------------- */

typedef struct st_wtensor {
    char *name;
    sd_st_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_NDIM];
    size_t nbytes;
    void *data;
} st_wtensor;

struct sd_st_writer {
    st_wtensor *t;
    int n, cap;
    char **keys, **vals;
    int nm, mcap;
};

sd_status sd_st_writer_create(sd_st_writer **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "safetensors: NULL output pointer for the writer");
    *out = calloc(1, sizeof **out);
    if (!*out) return SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate a writer");
    return SD_OK;
}

void sd_st_writer_destroy(sd_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    for (int i = 0; i < w->nm; i++) {
        free(w->keys[i]);
        free(w->vals[i]);
    }
    free(w->t);
    free(w->keys);
    free(w->vals);
    free(w);
}

static char *st_strdup(const char *s) {
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d) memcpy(d, s, len);
    return d;
}

sd_status sd_st_writer_add_buffer(sd_st_writer *w, const char *name, sd_st_dtype dtype, int ndim,
                                  const int64_t *shape, void **data) {
    if (!w || !data) return SD_FAIL(SD_ERR_INVALID, "safetensors: NULL writer or data pointer");
    *data = NULL;
    if (!name || !name[0] || !strcmp(name, "__metadata__"))
        return SD_FAIL(SD_ERR_INVALID, "safetensors: tensor name \"%s\" is reserved or empty; choose another",
                       name ? name : "(null)");
    if (sd_st_dtype_size(dtype) == 0)
        return SD_FAIL(SD_ERR_INVALID, "safetensors: tensor '%.200s': unknown dtype value %d", name, (int)dtype);
    if (ndim < 0 || ndim > SD_ST_MAX_NDIM || (ndim > 0 && !shape))
        return SD_FAIL(SD_ERR_INVALID, "safetensors: tensor '%.200s': %d dims (0..%d supported, shape needed)", name,
                       ndim, SD_ST_MAX_NDIM);
    size_t numel, nbytes;
    if (!st_sizes(ndim, shape, sd_st_dtype_size(dtype), &numel, &nbytes) || nbytes > ST_MAX_JSON_INT)
        return SD_FAIL(SD_ERR_INVALID, "safetensors: tensor '%.200s': a dim is negative or the size overflows", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return SD_FAIL(SD_ERR_INVALID, "safetensors: two tensors named '%.200s'; names must be unique", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 32;
        st_wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return SD_FAIL(SD_ERR_OOM, "safetensors: cannot grow the tensor list to %d", cap);
        w->t = t;
        w->cap = cap;
    }
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = st_strdup(name);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate %zu bytes for tensor '%.200s'", nbytes, name);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    w->n++;
    *data = t->data;
    return SD_OK;
}

sd_status sd_st_writer_add(sd_st_writer *w, const char *name, sd_st_dtype dtype, int ndim, const int64_t *shape,
                           const void *data) {
    void *dst = NULL;
    TRY(sd_st_writer_add_buffer(w, name, dtype, ndim, shape, &dst));
    size_t nbytes = w->t[w->n - 1].nbytes;
    if (nbytes > 0) {
        if (!data) {
            free(w->t[w->n - 1].name);
            free(w->t[w->n - 1].data);
            w->n--;
            return SD_FAIL(SD_ERR_INVALID, "safetensors: tensor '%.200s': NULL data for %zu bytes", name, nbytes);
        }
        memcpy(dst, data, nbytes);
    }
    return SD_OK;
}

sd_status sd_st_writer_add_metadata(sd_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !key[0] || !value)
        return SD_FAIL(SD_ERR_INVALID, "safetensors: metadata needs a writer, a non-empty key and a value");
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->keys[i], key))
            return SD_FAIL(SD_ERR_INVALID, "safetensors: metadata key '%.200s' given twice", key);
    if (w->nm == w->mcap) {
        int cap = w->mcap ? 2 * w->mcap : 8;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (!k) return SD_FAIL(SD_ERR_OOM, "safetensors: cannot grow the metadata list");
        w->keys = k;
        char **v = realloc(w->vals, (size_t)cap * sizeof *v);
        if (!v) return SD_FAIL(SD_ERR_OOM, "safetensors: cannot grow the metadata list");
        w->vals = v;
        w->mcap = cap;
    }
    char *k = st_strdup(key), *v = st_strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return SD_FAIL(SD_ERR_OOM, "safetensors: cannot copy metadata '%.200s'", key);
    }
    w->keys[w->nm] = k;
    w->vals[w->nm] = v;
    w->nm++;
    return SD_OK;
}

/* A growing string for the JSON header. */
typedef struct st_buf {
    char *p;
    size_t len, cap;
    bool oom;
} st_buf;

static void buf_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_put_fn(void *b, const char *s, size_t n) { buf_put(b, s, n); }

/* A JSON string literal (engine/json_string.h). */
static void buf_json_string(st_buf *b, const char *s) { sd_json_put_string(s, buf_put_fn, b); }

/* Layout order: larger elements first, then insertion order, so each tensor is aligned to its
 * element size once the header is padded to 8 bytes. (Sort keys carry everything the comparators
 * need: no global state, so threads may save concurrently.) */
typedef struct st_key {
    uint64_t a, b; /* layout: element size, index; reader: begin, end */
    const char *name;
    int idx;
} st_key;

static int st_cmp_layout(const void *x, const void *y) {
    const st_key *p = x, *q = y;
    if (p->a != q->a) return p->a > q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

static sd_status st_build_header(const sd_st_writer *w, const int *order, st_buf *b) {
    char num[64];
    buf_str(b, "{");
    bool first = true;
    if (w->nm > 0) {
        buf_str(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nm; i++) {
            if (i) buf_str(b, ",");
            buf_json_string(b, w->keys[i]);
            buf_str(b, ":");
            buf_json_string(b, w->vals[i]);
        }
        buf_str(b, "}");
        first = false;
    }
    uint64_t off = 0;
    for (int k = 0; k < w->n; k++) {
        const st_wtensor *t = &w->t[order[k]];
        if (!first) buf_str(b, ",");
        first = false;
        buf_json_string(b, t->name);
        buf_str(b, ":{\"dtype\":\"");
        buf_str(b, sd_st_dtype_name(t->dtype));
        buf_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            buf_str(b, num);
        }
        if (off + t->nbytes > ST_MAX_JSON_INT)
            return SD_FAIL(SD_ERR_INVALID, "safetensors: data section passes 2^53 bytes at tensor '%.200s'", t->name);
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + t->nbytes));
        buf_str(b, num);
        off += t->nbytes;
    }
    buf_str(b, "}");
    while (b->len % 8 != 0) buf_str(b, " ");
    if (b->oom) return SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate the header");
    if (b->len > SD_ST_MAX_HEADER)
        return SD_FAIL(SD_ERR_INVALID, "safetensors: header of %zu bytes passes the %llu-byte limit", b->len,
                       (unsigned long long)SD_ST_MAX_HEADER);
    return SD_OK;
}

/* fsync of the directory holding path, so the rename itself is durable (best effort). */
static void st_sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        size_t len = (size_t)(slash - path);
        if (len >= sizeof dir) return;
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

static sd_status st_write_file(const char *path, const char *tmp, const sd_st_writer *w, const int *order,
                               const st_buf *hdr) {
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return SD_FAIL(SD_ERR_IO, "safetensors: cannot write '%.400s' (creating '%.400s': %s); check that the "
                                  "directory exists and is writable", path, tmp, strerror(errno));
    uint8_t len8[8];
    uint64_t hlen = hdr->len;
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hlen >> (8 * i));
    bool ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr->p, 1, hdr->len, fp) == hdr->len;
    for (int k = 0; ok && k < w->n; k++) {
        const st_wtensor *t = &w->t[order[k]];
        if (t->nbytes) ok = fwrite(t->data, 1, t->nbytes, fp) == t->nbytes;
    }
    int err = ok ? 0 : errno;
    if (ok && fflush(fp) != 0) ok = false, err = errno;
    if (ok && fsync(fileno(fp)) != 0) ok = false, err = errno;
    if (fclose(fp) != 0 && ok) ok = false, err = errno;
    if (!ok) {
        remove(tmp);
        return SD_FAIL(SD_ERR_IO, "safetensors: writing '%.400s' failed: %s (disk full?)", tmp,
                       err ? strerror(err) : "short write");
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        return SD_FAIL(SD_ERR_IO, "safetensors: cannot rename '%.400s' to '%.400s': %s", tmp, path, strerror(err));
    }
    st_sync_dir(path);
    return SD_OK;
}

sd_status sd_st_writer_write(const sd_st_writer *w, const char *path) {
    if (!w || !path || !path[0]) return SD_FAIL(SD_ERR_INVALID, "safetensors: NULL writer or empty path");
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    int *order = malloc((size_t)(w->n ? w->n : 1) * sizeof *order);
    st_key *keys = malloc((size_t)(w->n ? w->n : 1) * sizeof *keys);
    st_buf hdr = {0};
    sd_status s = SD_OK;
    if (!tmp || !order || !keys) {
        s = SD_FAIL(SD_ERR_OOM, "safetensors: out of memory writing '%.400s'", path);
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    for (int i = 0; i < w->n; i++) keys[i] = (st_key){sd_st_dtype_size(w->t[i].dtype), (uint64_t)i, NULL, i};
    qsort(keys, (size_t)w->n, sizeof *keys, st_cmp_layout);
    for (int i = 0; i < w->n; i++) order[i] = keys[i].idx;
    s = st_build_header(w, order, &hdr);
    if (s == SD_OK) s = st_write_file(path, tmp, w, order, &hdr);
    if (s != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
done:
    free(hdr.p);
    free(keys);
    free(order);
    free(tmp);
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * reader
 * ------------------------------------------------------------------------------------------- */

struct sd_st_file {
    char *path;
    uint8_t *buf;
    size_t size;
    sd_st_tensor *t;
    int n;
    int *by_name; /* indices sorted by name, for lookups */
    char **keys, **vals;
    int nm;
};

void sd_st_close(sd_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (int i = 0; i < f->nm; i++) {
        free(f->keys[i]);
        free(f->vals[i]);
    }
    free(f->t);
    free(f->by_name);
    free(f->keys);
    free(f->vals);
    free(f->buf);
    free(f->path);
    free(f);
}

static sd_status st_read_all(sd_st_file *f) {
    FILE *fp = fopen(f->path, "rb");
    if (!fp) return SD_FAIL(SD_ERR_IO, "safetensors: cannot open '%.400s': %s", f->path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        int err = errno;
        fclose(fp);
        return SD_FAIL(SD_ERR_IO, "safetensors: cannot stat '%.400s': %s", f->path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(fp);
        return SD_FAIL(SD_ERR_IO, "safetensors: '%.400s' is not a regular file (a directory?)", f->path);
    }
    f->size = (size_t)st.st_size;
    f->buf = malloc(f->size ? f->size : 1);
    if (!f->buf) {
        fclose(fp);
        return SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate %zu bytes to read '%.400s'", f->size, f->path);
    }
    size_t got = fread(f->buf, 1, f->size, fp);
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    if (got != f->size)
        return SD_FAIL(SD_ERR_IO, "safetensors: reading '%.400s' stopped after %zu of %zu bytes%s%s", f->path, got,
                       f->size, err ? ": " : "", err ? strerror(err) : "");
    return SD_OK;
}

/* A JSON number that is an integer in [0, 2^53]. */
static bool st_json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!isfinite(v) || v < 0 || v > (double)ST_MAX_JSON_INT || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

#define ENTRY_FAIL(...) SD_FAIL(SD_ERR_FORMAT, __VA_ARGS__)

static sd_status st_parse_entry(sd_st_file *f, const cJSON *e, uint64_t data_size, sd_st_tensor *t) {
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s' is not an object with dtype, shape and data_offsets",
                          f->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt || !sh || !of)
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s' lacks \"%s\"", f->path, name,
                          !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    if (!cJSON_IsString(dt))
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': dtype is not a string", f->path, name);
    if (sd_st_dtype_parse(dt->valuestring, &t->dtype) != SD_OK)
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': unknown dtype \"%.40s\" (known: BOOL U8 I8 I16 "
                          "U16 F16 BF16 I32 U32 F32 F64 I64 U64)", f->path, name, dt->valuestring);
    if (!cJSON_IsArray(sh))
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': shape is not an array", f->path, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > SD_ST_MAX_NDIM)
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': %d dims (at most %d supported)", f->path, name, nd,
                          SD_ST_MAX_NDIM);
    t->ndim = nd;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!st_json_uint(x, &v))
            return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': shape dim %d is not a non-negative integer",
                              f->path, name, d);
        t->shape[d] = (int64_t)v;
    }
    if (!st_sizes(nd, t->shape, sd_st_dtype_size(t->dtype), &t->numel, &t->nbytes))
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': the shape's byte size overflows", f->path, name);
    uint64_t b, en;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !st_json_uint(of->child, &b) ||
        !st_json_uint(of->child->next, &en))
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': data_offsets is not [begin, end] of non-negative "
                          "integers", f->path, name);
    if (b > en || en > data_size)
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': data_offsets [%llu, %llu] out of range (data "
                          "section holds %llu bytes)", f->path, name, (unsigned long long)b, (unsigned long long)en,
                          (unsigned long long)data_size);
    if (en - b != t->nbytes)
        return ENTRY_FAIL("safetensors: '%.400s': entry '%.200s': data_offsets [%llu, %llu] hold %llu bytes but %s "
                          "with %zu elements needs %zu", f->path, name, (unsigned long long)b, (unsigned long long)en,
                          (unsigned long long)(en - b), sd_st_dtype_name(t->dtype), t->numel, t->nbytes);
    t->begin = b;
    t->end = en;
    return SD_OK;
}

static sd_status st_parse_metadata(sd_st_file *f, const cJSON *m) {
    if (f->keys)
        return ENTRY_FAIL("safetensors: '%.400s': \"__metadata__\" appears twice", f->path);
    if (!cJSON_IsObject(m))
        return ENTRY_FAIL("safetensors: '%.400s': \"__metadata__\" is not an object of strings", f->path);
    int n = cJSON_GetArraySize(m);
    f->keys = calloc((size_t)n + 1, sizeof *f->keys);
    f->vals = calloc((size_t)n + 1, sizeof *f->vals);
    if (!f->keys || !f->vals) return SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate metadata of '%.400s'", f->path);
    for (const cJSON *x = m->child; x; x = x->next) {
        if (!cJSON_IsString(x))
            return ENTRY_FAIL("safetensors: '%.400s': metadata '%.200s' is not a string", f->path, x->string);
        for (int i = 0; i < f->nm; i++)
            if (!strcmp(f->keys[i], x->string))
                return ENTRY_FAIL("safetensors: '%.400s': metadata key '%.200s' appears twice", f->path, x->string);
        f->keys[f->nm] = st_strdup(x->string);
        f->vals[f->nm] = st_strdup(x->valuestring);
        f->nm++;
        if (!f->keys[f->nm - 1] || !f->vals[f->nm - 1])
            return SD_FAIL(SD_ERR_OOM, "safetensors: cannot copy metadata of '%.400s'", f->path);
    }
    return SD_OK;
}

static int st_cmp_name(const void *x, const void *y) {
    return strcmp(((const st_key *)x)->name, ((const st_key *)y)->name);
}
static int st_cmp_offset(const void *x, const void *y) {
    const st_key *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

static sd_status st_parse(sd_st_file *f) {
    if (f->size < 8)
        return ENTRY_FAIL("safetensors: '%.400s' is %zu bytes, shorter than the 8-byte header length (truncated?)",
                          f->path, f->size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)f->buf[i] << (8 * i);
    if (hlen > SD_ST_MAX_HEADER)
        return ENTRY_FAIL("safetensors: '%.400s': header length %llu passes the %llu-byte limit (not a safetensors "
                          "file?)", f->path, (unsigned long long)hlen, (unsigned long long)SD_ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return ENTRY_FAIL("safetensors: '%.400s': header length %llu runs past the end of the %zu-byte file "
                          "(truncated?)", f->path, (unsigned long long)hlen, f->size);
    const char *json = (const char *)f->buf + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - json) : 0;
        return ENTRY_FAIL("safetensors: '%.400s': the header is not valid JSON (error near byte %zu of %llu)",
                          f->path, at, (unsigned long long)hlen);
    }
    sd_status s = SD_OK;
    for (const char *c = end; c < json + hlen; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
            s = ENTRY_FAIL("safetensors: '%.400s': bytes after the JSON header at byte %zu (only padding spaces may "
                           "follow)", f->path, (size_t)(c - json));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        s = ENTRY_FAIL("safetensors: '%.400s': the header is not a JSON object", f->path);
        goto out;
    }
    uint64_t data_size = f->size - 8 - hlen;
    const uint8_t *data = f->buf + 8 + hlen;
    int entries = cJSON_GetArraySize(root);
    f->t = calloc((size_t)entries + 1, sizeof *f->t);
    if (!f->t) {
        s = SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate %d entries of '%.400s'", entries, f->path);
        goto out;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            s = st_parse_metadata(f, e);
            if (s != SD_OK) goto out;
            continue;
        }
        sd_st_tensor *t = &f->t[f->n];
        t->name = st_strdup(e->string);
        if (!t->name) {
            s = SD_FAIL(SD_ERR_OOM, "safetensors: cannot copy names of '%.400s'", f->path);
            goto out;
        }
        f->n++;
        s = st_parse_entry(f, e, data_size, t);
        if (s != SD_OK) goto out;
        t->data = data + t->begin;
    }
    /* unique names (and the lookup index), then non-overlapping data ranges */
    f->by_name = malloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
    st_key *keys = malloc((size_t)(f->n ? f->n : 1) * sizeof *keys);
    if (!f->by_name || !keys) {
        free(keys);
        s = SD_FAIL(SD_ERR_OOM, "safetensors: cannot index '%.400s'", f->path);
        goto out;
    }
    for (int i = 0; i < f->n; i++) keys[i] = (st_key){f->t[i].begin, f->t[i].end, f->t[i].name, i};
    qsort(keys, (size_t)f->n, sizeof *keys, st_cmp_name);
    for (int i = 0; i < f->n; i++) f->by_name[i] = keys[i].idx;
    for (int i = 1; i < f->n && s == SD_OK; i++)
        if (!strcmp(keys[i].name, keys[i - 1].name))
            s = ENTRY_FAIL("safetensors: '%.400s': entry '%.200s' appears twice", f->path, keys[i].name);
    qsort(keys, (size_t)f->n, sizeof *keys, st_cmp_offset);
    for (int i = 1; i < f->n && s == SD_OK; i++) {
        const st_key *a = &keys[i - 1], *b = &keys[i];
        if (b->a < a->b)
            s = ENTRY_FAIL("safetensors: '%.400s': entry '%.200s' (bytes %llu..%llu) overlaps entry '%.200s' (bytes "
                           "%llu..%llu)", f->path, b->name, (unsigned long long)b->a, (unsigned long long)b->b,
                           a->name, (unsigned long long)a->a, (unsigned long long)a->b);
    }
    free(keys);
out:
    cJSON_Delete(root);
    return s;
}

sd_status sd_st_open(const char *path, sd_st_file **out) {
    if (!out || !path) return SD_FAIL(SD_ERR_INVALID, "safetensors: NULL path or output pointer");
    *out = NULL;
    sd_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = st_strdup(path))) {
        free(f);
        return SD_FAIL(SD_ERR_OOM, "safetensors: cannot allocate a reader for '%.400s'", path);
    }
    sd_status s = st_read_all(f);
    if (s == SD_OK) s = st_parse(f);
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        sd_st_close(f);
        return s;
    }
    *out = f;
    return SD_OK;
}

const char *sd_st_path(const sd_st_file *f) { return f ? f->path : NULL; }
int sd_st_count(const sd_st_file *f) { return f ? f->n : 0; }

const sd_st_tensor *sd_st_tensor_at(const sd_st_file *f, int i) {
    return (f && i >= 0 && i < f->n) ? &f->t[i] : NULL;
}

const sd_st_tensor *sd_st_find(const sd_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return &f->t[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *sd_st_metadata(const sd_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nm; i++)
        if (!strcmp(f->keys[i], key)) return f->vals[i];
    return NULL;
}

int sd_st_metadata_count(const sd_st_file *f) { return f ? f->nm : 0; }

bool sd_st_metadata_at(const sd_st_file *f, int i, const char **key, const char **value) {
    if (!f || i < 0 || i >= f->nm) return false;
    if (key) *key = f->keys[i];
    if (value) *value = f->vals[i];
    return true;
}
