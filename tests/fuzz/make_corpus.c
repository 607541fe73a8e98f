/* make_corpus.c: writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/): small
 * valid inputs made with the library's own writers (sd_msg_encode, sd_experiment_to_json,
 * sd_st_writer, sd_checkpoint_save, zlib for gzipped IDX files) and near-valid ones, each a step
 * away from a check. Deterministic: running it again gives the same bytes. The corpora are
 * committed; run this after changing a format, then review the diff:
 *     build/tests/fuzz/fuzz_make_corpus tests/fuzz/corpus .
 * Arguments: the corpus root (its five subdirectories are created) and the source root (for
 * apps/experiments/ *.json). The input framing of each target is described in its fuzz_*.c. */
#include "tests/fuzz/fuzz_util.h"

#include <dirent.h>
#include <math.h>
#include <sys/stat.h>
#include <zlib.h>

#include "engine/checkpoint.h"
#include "engine/experiment.h"
#include "engine/safetensors.h"
#include "stream/crc32c.h"
#include "stream/message.h"

static const char *root;
static int failures;

static void fail(const char *what) {
    fprintf(stderr, "make_corpus: %s: %s\n", what, sd_last_error());
    failures++;
}

static void write_file(const char *target, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_corpus: cannot write %s: %s\n", path, strerror(errno));
        failures++;
        return;
    }
    printf("%s (%zu bytes)\n", path, n);
}

/* A growing byte buffer for assembling framed inputs. */
typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put16(buf *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}
static void put32be(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 4);
}
static void put64le(buf *b, uint64_t v) {
    for (int i = 0; i < 8; i++) put8(b, (uint8_t)(v >> (8 * i)));
}
static void emit(const char *target, const char *name, buf *b) {
    write_file(target, name, b->p, b->n);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- message ---------------------------------------------------------------------------------- */
/* flags, the 15-byte expectation (when flags & 2), then the message */
typedef struct fz_expect {
    uint8_t dtype, ndim;
    uint16_t dims[4];
    uint8_t classes, check_device, device;
    uint16_t max_payload16;
} fz_expect;

static size_t encode(uint8_t *out, size_t cap, sd_msg_dtype dt, int ndim, const uint32_t *dims, int32_t label,
                     uint32_t device, uint64_t seq) {
    sd_msg_meta m = {.dtype = dt, .ndim = ndim, .label = label, .device = device, .seq = seq};
    size_t elems = 1;
    for (int i = 0; i < ndim; i++) elems *= (m.dims[i] = dims[i]);
    size_t bytes = elems * sd_msg_dtype_size(dt);
    uint8_t *payload = malloc(bytes);
    if (dt == SD_MSG_F32) {
        float *f = (float *)payload;
        for (size_t i = 0; i < elems; i++) f[i] = (float)i * -0.25f + 0.5f; /* exact: the same bytes with or without FMA */
        if (elems > 4) f[3] = INFINITY, f[4] = NAN;
    } else {
        for (size_t i = 0; i < bytes; i++) payload[i] = (uint8_t)(11 + i * 7);
    }
    size_t len = 0;
    if (sd_msg_encode(&m, payload, bytes, out, cap, &len) != SD_OK) fail("sd_msg_encode");
    free(payload);
    return len;
}

static void msg_seed(const char *name, uint8_t flags, const fz_expect *e, const uint8_t *msg, size_t len) {
    buf b = {0};
    put8(&b, flags);
    if (flags & 2) {
        put8(&b, e->dtype);
        put8(&b, e->ndim);
        for (int i = 0; i < 4; i++) put16(&b, e->dims[i]);
        put8(&b, e->classes);
        put8(&b, e->check_device);
        put8(&b, e->device);
        put16(&b, e->max_payload16);
    }
    put(&b, msg, len);
    emit("message", name, &b);
}

static void make_message(void) {
    uint8_t m[2048], t[2048];
    const uint32_t chw[3] = {3, 8, 10}, d4[4] = {2, 3, 4, 5}, d1[1] = {6};
    const fz_expect img = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {3, 8, 10}, .classes = 10, .check_device = 1,
                           .device = 5, .max_payload16 = 64};
    size_t len = encode(m, sizeof m, SD_MSG_U8, 3, chw, 7, 5, 1);
    msg_seed("u8_chw_any", 0, NULL, m, len);
    msg_seed("u8_chw_expected", 2, &img, m, len);
    memcpy(t, m, len);
    memset(t + len, 0xab, 3);
    msg_seed("u8_chw_trailing_resealed", 1, NULL, t, len + 3); /* 3 bytes after the payload */
    msg_seed("u8_chw_truncated", 0, NULL, m, 60);
    memcpy(t, m, len);
    t[100] ^= 0x40;
    msg_seed("u8_chw_bad_crc", 0, NULL, t, len);
    memcpy(t, m, len);
    t[3] = '2'; /* "SDM2" */
    msg_seed("u8_bad_magic", 0, NULL, t, len);
    const fz_expect small = {.max_payload16 = 1}; /* 16-byte limit */
    msg_seed("u8_oversized_for_expect", 2, &small, m, len);

    len = encode(m, sizeof m, SD_MSG_U8, 3, chw, 12, 5, 2); /* label 12 of 10 classes */
    memset(m + 44, 0, 4);
    msg_seed("u8_label_out_of_range_resealed", 3, &img, m, len);
    len = encode(m, sizeof m, SD_MSG_U8, 3, chw, 1, 6, 3); /* device 6, expected 5 */
    msg_seed("u8_wrong_device", 2, &img, m, len);

    len = encode(m, sizeof m, SD_MSG_F32, 4, d4, 0, 0, 0xfffffffffffffffeull);
    msg_seed("f32_4d_any", 0, NULL, m, len);
    const fz_expect vec = {.dtype = SD_MSG_F32, .ndim = 1, .dims = {6}, .classes = 2};
    len = encode(m, sizeof m, SD_MSG_F32, 1, d1, 1, 9, 42);
    msg_seed("f32_1d_expected", 2, &vec, m, len);
    m[6] = SD_MSG_U8; /* dtype u8 with 24 payload bytes for 6 elements: bad length */
    msg_seed("f32_1d_as_u8_resealed", 1, NULL, m, len);
    msg_seed("empty", 0, NULL, m, 0);
}

/* ---- experiment ------------------------------------------------------------------------------- */
static void exp_text(const char *name, const char *text, size_t len) { write_file("experiment", name, text, len); }
#define EXP_LIT(name, lit) exp_text(name, lit, sizeof(lit) - 1)

static void exp_resolved(const char *name, const char *json) {
    sd_experiment *e = malloc(sizeof *e);
    char *out = NULL;
    if (!e || sd_experiment_load_string(json, name, e) != SD_OK || sd_experiment_resolve(e) != SD_OK ||
        sd_experiment_to_json(e, &out) != SD_OK) {
        fail(name);
    } else {
        exp_text(name, out, strlen(out));
    }
    free(out);
    free(e);
}

static void make_experiment(const char *src) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/apps/experiments", src);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "make_corpus: cannot open %s: %s\n", dir, strerror(errno));
        failures++;
    } else {
        struct dirent *ent;
        while ((ent = readdir(d))) {
            size_t l = strlen(ent->d_name);
            if (l < 6 || strcmp(ent->d_name + l - 5, ".json")) continue;
            char path[2048], name[300];
            snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
            FILE *f = fopen(path, "rb");
            char text[16384];
            size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
            if (f) fclose(f);
            text[n] = '\0';
            snprintf(name, sizeof name, "app_%s", ent->d_name);
            exp_text(name, text, n);
        }
        closedir(d);
    }
    exp_resolved("defaults_resolved.json", "{}");
    exp_resolved("list_poisson_resolved.json",
                 "{\"devices\": {\"rates\": [50, 38, 12], \"arrival\": \"poisson\", \"list\": [{\"rate\": 7, "
                 "\"bandwidth_mbps\": 10}, {}, {\"latency_ms\": 20, \"samples_per_s\": 500}]}, \"backend\": \"mpi\"}");
    EXP_LIT("uniform_dist.json",
            "{\"name\": \"u\", \"devices\": {\"count\": 4, \"rates\": {\"uniform\": [10, 100]}, \"rate_seed\": 7},"
            " \"partition\": {\"kind\": \"dirichlet\", \"alpha\": 0.3}, \"seeds\": [1, 2, 9007199254740992]}");
    EXP_LIT("normal_dist_slices.json",
            "{\"devices\": {\"count\": 3, \"rates\": {\"normal\": [50, 10]}, \"compute\": {\"samples_per_s\": 900}},"
            " \"partition\": {\"kind\": \"slices\", \"classes_per_device\": 3}, \"modes\": [\"scadles\"],"
            " \"buffer\": {\"policy\": \"drop-oldest\", \"capacity\": 128, \"full\": \"backpressure\"}}");
    EXP_LIT("compression_gain.json",
            "{\"compression\": {\"policy\": \"gain\", \"min_ratio\": 0.01, \"max_ratio\": 0.5, \"epsilon\": 0.8,"
            " \"f16_values\": true, \"per_layer\": false}, \"optimizer\": {\"schedule\": \"multistep:100,200@0.5\","
            " \"nesterov\": true, \"warmup_steps\": 10}, \"nonfinite\": \"skip\", \"bn\": \"local\","
            " \"clock\": \"real\", \"threads\": 2, \"max_steps\": 500, \"eval_limit\": 1000}");
    /* JSON, then NUL-separated --set assignments */
    EXP_LIT("with_sets.json", "{\"name\": \"s\"}\0optimizer.lr=0.1\0devices.list[3].rate=50\0modes=ddp\0"
                              "seeds=1,2,3\0devices.rates={\"uniform\": [10, 100]}\0devices.count=5\0"
                              "devices.list[2]={\"latency_ms\": 20}\0injection={\"alpha\": 0.5, \"beta\": 0.5}");
    EXP_LIT("bad_value.json", "{\"name\": \"a b\", \"batch\": -1}");
    EXP_LIT("bad_rate.json", "{\"devices\": {\"list\": [{\"rate\": 0}]}}");
    EXP_LIT("bad_json.json", "{\"name\": \"x\",\n \"model\": [1, }");
    EXP_LIT("nul_escape.json", "{\"description\": \"a\\u0000b\"}");
    EXP_LIT("unknown_key.json", "{\"devices\": {\"ratez\": \"uniform_s1\"}}");
    EXP_LIT("cosine_needs_steps.json", "{\"optimizer\": {\"schedule\": \"cosine\"}}");
}

/* ---- idx -------------------------------------------------------------------------------------- */
/* the gzip form of data (deflate with a gzip wrapper; mtime 0, so deterministic) */
static void gzip_into(buf *out, const uint8_t *data, size_t n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    uint8_t *tmp = malloc(cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = tmp;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
    put(out, tmp, z.total_out);
    deflateEnd(&z);
    free(tmp);
}

static void idx_files(buf *labels, buf *images, uint32_t n, uint32_t rows, uint32_t cols, const uint8_t *labs,
                      uint32_t n_images_written) {
    put32be(labels, 0x00000801u);
    put32be(labels, n);
    put(labels, labs, n);
    put32be(images, 0x00000803u);
    put32be(images, n);
    put32be(images, rows);
    put32be(images, cols);
    for (uint32_t i = 0; i < n_images_written * rows * cols; i++) put8(images, (uint8_t)(i * 13 + 5));
}

/* name selector, u16 label-file length, label file, image file (either gzipped on request) */
static void idx_seed(const char *name, uint8_t sel, buf *labels, buf *images, int gz_labels, int gz_images) {
    buf l = {0}, i = {0}, b = {0};
    if (gz_labels) gzip_into(&l, labels->p, labels->n);
    else put(&l, labels->p, labels->n);
    if (gz_images) gzip_into(&i, images->p, images->n);
    else put(&i, images->p, images->n);
    put8(&b, sel);
    put16(&b, (uint16_t)l.n);
    put(&b, l.p, l.n);
    put(&b, i.p, i.n);
    emit("idx", name, &b);
    free(l.p);
    free(i.p);
    free(labels->p);
    free(images->p);
    memset(labels, 0, sizeof *labels);
    memset(images, 0, sizeof *images);
}

static void make_idx(void) {
    buf l = {0}, i = {0};
    const uint8_t labs[8] = {0, 9, 3, 200, 1, 2, 5, 7};
    idx_files(&l, &i, 3, 4, 5, labs, 3);
    idx_seed("mnist_raw_3x4x5", 0, &l, &i, 0, 0);
    idx_files(&l, &i, 2, 6, 6, labs, 2);
    idx_seed("fashion_gz_2x6x6", 1, &l, &i, 1, 1);
    idx_files(&l, &i, 2, 3, 3, labs + 2, 2); /* labels 3, 200: 201 classes */
    idx_seed("custom_raw_label200", 3, &l, &i, 0, 0);
    idx_files(&l, &i, 3, 2, 2, labs, 3);
    idx_seed("unnamed_gz_labels_raw_images", 2, &l, &i, 1, 0);
    idx_files(&l, &i, 3, 4, 4, labs, 2); /* header says 3 images, 2 follow */
    idx_seed("mnist_images_truncated", 0, &l, &i, 0, 0);
    idx_files(&l, &i, 2, 2, 2, labs, 2);
    put8(&i, 0xee); /* a byte after the declared images */
    idx_seed("mnist_images_too_long", 0, &l, &i, 0, 1);
    idx_files(&l, &i, 2, 2, 2, labs + 2, 2); /* label 200 in a standard set */
    idx_seed("mnist_label_out_of_range", 0, &l, &i, 0, 0);
    idx_files(&i, &l, 2, 2, 2, labs, 2); /* the two files swapped */
    idx_seed("mnist_files_swapped", 0, &l, &i, 0, 0);
    idx_files(&l, &i, 5, 3, 3, labs, 5); /* 4 labels declared... */
    l.p[7] = 4;                          /* ...as 4 of 5 images: count mismatch */
    l.n--;
    idx_seed("mnist_count_mismatch", 0, &l, &i, 0, 0);
}

/* ---- cifar ------------------------------------------------------------------------------------ */
static void cifar_records(buf *b, int which, int n, int label0) {
    for (int r = 0; r < n; r++) {
        if (which == 100) put8(b, (uint8_t)((label0 + r) % 20));
        put8(b, (uint8_t)((label0 + r) % which));
        for (int p = 0; p < 3072; p++) put8(b, (uint8_t)(p * 7 + r * 31));
    }
}

static void make_cifar(void) {
    buf b = {0}, f = {0};
    put8(&b, 0); /* CIFAR-10 test: one file */
    cifar_records(&b, 10, 2, 8);
    emit("cifar", "c10_test_2", &b);
    put8(&b, 2); /* CIFAR-10 train: five files of one record */
    for (int k = 0; k < 5; k++) {
        cifar_records(&f, 10, 1, k * 3);
        if (k < 4) put16(&b, (uint16_t)f.n);
        put(&b, f.p, f.n);
        free(f.p);
        memset(&f, 0, sizeof f);
    }
    emit("cifar", "c10_train_5x1", &b);
    put8(&b, 1); /* CIFAR-100 test */
    cifar_records(&b, 100, 1, 99);
    emit("cifar", "c100_test_1", &b);
    put8(&b, 3); /* CIFAR-100 train */
    cifar_records(&b, 100, 2, 18);
    emit("cifar", "c100_train_2", &b);
    put8(&b, 0);
    cifar_records(&b, 10, 1, 0);
    b.p[1] = 10; /* label 10 in CIFAR-10 */
    emit("cifar", "c10_label_out_of_range", &b);
    put8(&b, 1);
    cifar_records(&b, 100, 1, 5);
    b.p[1] = 20; /* coarse label 20 */
    emit("cifar", "c100_coarse_out_of_range", &b);
    put8(&b, 0);
    cifar_records(&b, 10, 1, 4);
    b.n -= 1; /* not a multiple of the record */
    emit("cifar", "c10_short_record", &b);
    put8(&b, 2); /* CIFAR-10 train with files 2..5 empty */
    put16(&b, 3073);
    cifar_records(&b, 10, 1, 1);
    for (int k = 0; k < 3; k++) put16(&b, 0);
    emit("cifar", "c10_train_empty_files", &b);
}

/* ---- safetensors ------------------------------------------------------------------------------ */
static void st_path(char *path, size_t cap, const char *name) { snprintf(path, cap, "%s/safetensors/%s", root, name); }

/* 8-byte length, the JSON header as given (no padding), then data */
static void st_raw(const char *name, const char *json, const void *data, size_t n) {
    buf b = {0};
    put64le(&b, strlen(json));
    put(&b, json, strlen(json));
    put(&b, data, n);
    emit("safetensors", name, &b);
}

static void make_safetensors(void) {
    char path[1024];
    /* every dtype, a scalar, an empty tensor, an escaped name and metadata */
    sd_st_writer *w = NULL;
    if (sd_st_writer_create(&w) != SD_OK) {
        fail("writer");
        return;
    }
    const int64_t s3[1] = {3}, s23[2] = {2, 3}, s2[1] = {2}, s4[3] = {1, 2, 2}, s0[2] = {0, 4}, s22[2] = {2, 2};
    const uint8_t u8[3] = {1, 2, 255};
    const int32_t i32[6] = {-1, 2, -3, 4, -5, 6};
    const uint16_t f16[2] = {0x3c00, 0xc000}, bf16[4] = {0x3f80, 0x4000, 0xbf80, 0x7fc0};
    const int64_t i64 = -42;
    const float f32[4] = {1.5f, -2.25f, 0.0f, 1e-30f};
    const double f64[2] = {1.0 / 3.0, -0.0};
    if (sd_st_writer_add(w, "u8", SD_ST_U8, 1, s3, u8) != SD_OK ||
        sd_st_writer_add(w, "a.i32", SD_ST_I32, 2, s23, i32) != SD_OK ||
        sd_st_writer_add(w, "f16", SD_ST_F16, 1, s2, f16) != SD_OK ||
        sd_st_writer_add(w, "bf16", SD_ST_BF16, 3, s4, bf16) != SD_OK ||
        sd_st_writer_add(w, "scalar", SD_ST_I64, 0, NULL, &i64) != SD_OK ||
        sd_st_writer_add(w, "empty", SD_ST_F32, 2, s0, NULL) != SD_OK ||
        sd_st_writer_add(w, "w \"quoted\"\n\\", SD_ST_F32, 2, s22, f32) != SD_OK ||
        sd_st_writer_add(w, "f64", SD_ST_F64, 1, s2, f64) != SD_OK ||
        sd_st_writer_add(w, "bool", SD_ST_BOOL, 1, s3, u8) != SD_OK ||
        sd_st_writer_add_metadata(w, "note", "a \"quote\", a tab\t and \xc3\xbcn\xc3\xaf" "code") != SD_OK ||
        sd_st_writer_add_metadata(w, "format", "pt") != SD_OK)
        fail("writer add");
    st_path(path, sizeof path, "all_dtypes.safetensors");
    if (sd_st_writer_write(w, path) != SD_OK) fail("writer write");
    else printf("%s\n", path);
    sd_st_writer_destroy(w);

    /* checkpoints of the tiny net the target loads into: exact, and a step off in several ways */
    sd_backend be;
    sd_net *net = NULL;
    if (sd_backend_cpu_create(&be, 1) != SD_OK || fz_tiny_net(&be, &net) != SD_OK) {
        fail("tiny net");
        return;
    }
    const sd_ckpt_kv kv[2] = {{"model", "fuzz_tiny"}, {"step", "7"}};
    const sd_ckpt_meta meta = {kv, 2};
    st_path(path, sizeof path, "tiny_checkpoint.safetensors");
    if (sd_checkpoint_save(net, path, &meta) != SD_OK) fail("checkpoint save");
    else printf("%s\n", path);
    /* the same tensors through the generic writer: no num_batches_tracked; one F64, one extra, one
     * reshaped in the variants */
    for (int variant = 0; variant < 4; variant++) {
        if (sd_st_writer_create(&w) != SD_OK) {
        fail("writer");
        return;
    }
        for (int i = 0; i < sd_net_num_tensors(net); i++) {
            const sd_param *p = sd_net_tensor(net, i);
            int64_t shape[8];
            for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
            float *h = calloc(p->count + 8, sizeof(float)); /* + 8: room for the reshaped variant */
            for (size_t k = 0; k < p->count + 8; k++) h[k] = (float)k * 0.125f - 1.0f;
            if (variant == 1 && i == 0) {
                double *dd = calloc(p->count, sizeof(double));
                sd_st_writer_add(w, p->name, SD_ST_F64, p->ndim, shape, dd);
                free(dd);
            } else {
                if (variant == 3 && i == sd_net_num_tensors(net) - 1) shape[p->ndim - 1] += 1;
                sd_st_writer_add(w, p->name, SD_ST_F32, p->ndim, shape, h);
            }
            free(h);
        }
        if (variant == 2) {
            const int64_t one[1] = {1};
            const float z = 0;
            sd_st_writer_add(w, "extra.weight", SD_ST_F32, 1, one, &z);
            const int64_t nbt = 3;
            sd_st_writer_add(w, "bn.num_batches_tracked", SD_ST_I64, 0, NULL, &nbt);
        }
        static const char *const names[4] = {"tiny_no_counter.safetensors", "tiny_f64_weight.safetensors",
                                             "tiny_extra_tensor.safetensors", "tiny_wrong_shape.safetensors"};
        st_path(path, sizeof path, names[variant]);
        if (sd_st_writer_write(w, path) != SD_OK) fail("writer write");
        else printf("%s\n", path);
        sd_st_writer_destroy(w);
    }
    sd_net_destroy(net);
    sd_backend_destroy(&be);

    /* hand-made headers */
    const uint8_t d16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    st_raw("empty_object", "{}      ", NULL, 0);
    st_raw("metadata_only", "{\"__metadata__\":{\"a\":\"b\",\"c\":\"\"}}", NULL, 0);
    st_raw("odd_header_length", "{\"x\":{\"dtype\":\"I16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", d16, 8);
    st_raw("two_tensors", "{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[12,16]},"
                          "\"a\":{\"dtype\":\"U32\",\"shape\":[3],\"data_offsets\":[0,12]}}", d16, 16);
    st_raw("overlap", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", d16, 16);
    st_raw("offsets_past_end", "{\"a\":{\"dtype\":\"U64\",\"shape\":[3],\"data_offsets\":[0,24]}}", d16, 16);
    st_raw("duplicate_name", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", d16, 2);
    st_raw("bad_metadata", "{\"__metadata__\":{\"k\":1}}", NULL, 0);
    st_raw("trailing_garbage", "{} x", NULL, 0);
    buf b = {0};
    put64le(&b, 1000); /* header length past the end */
    put(&b, "{}", 2);
    emit("safetensors", "header_past_end", &b);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CORPUS_ROOT SOURCE_ROOT\n", argv[0]);
        return 2;
    }
    root = argv[1];
    static const char *const targets[] = {"message", "experiment", "idx", "cifar", "safetensors"};
    mkdir(root, 0777);
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", root, targets[i]);
        mkdir(path, 0777);
    }
    make_message();
    make_experiment(argv[2]);
    make_idx();
    make_cifar();
    make_safetensors();
    if (failures) fprintf(stderr, "make_corpus: %d failure%s\n", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
