/* test_checkpoint.c: safetensors reader/writer and model checkpoints. Round trips of fmnist_cnn
 * and resnet20 (bitwise-equal tensors and identical logits after loading into a differently seeded
 * net), every dtype and metadata through the generic writer, and corrupt or mismatched files, each
 * rejected with the right status and a message naming the entry. PyTorch interop lives in
 * tests/interop/checkpoint_interop.py. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "engine/models.h"
#include "engine/safetensors.h"
#include "tests/harness.h"

static sd_backend be;
static char dir[] = "/tmp/sd_ckpt_XXXXXX";

/* Files are created under the mkdtemp directory and removed at the end. */
#define MAX_FILES 64
static char files[MAX_FILES][256];
static int nfiles;

static const char *tmp_path(const char *name) {
    if (nfiles == MAX_FILES) return "/nonexistent/too-many-files";
    snprintf(files[nfiles], sizeof files[0], "%s/%s", dir, name);
    return files[nfiles++];
}

static sd_net *build(const char *model, uint64_t seed, float width) {
    sd_model_spec spec = {.name = model, .classes = 10, .width = width};
    if (!strcmp(model, "fmnist_cnn")) spec.in_c = 1, spec.in_h = spec.in_w = 28;
    else spec.in_c = 3, spec.in_h = spec.in_w = 32;
    sd_net *net = NULL;
    if (sd_model_build(&be, &spec, seed, &net) != SD_OK) {
        fprintf(stderr, "building %s: %s\n", model, sd_last_error());
        return NULL;
    }
    return net;
}

static size_t input_floats(const char *model, int n) { return (size_t)n * (!strcmp(model, "fmnist_cnn") ? 784 : 3072); }

/* The net's parameters then buffers, downloaded into one host array (caller frees). */
static float *snapshot(sd_net *net) {
    size_t np = sd_net_param_count(net), nb = sd_net_buffer_count(net);
    float *h = malloc((np + nb + 1) * sizeof(float));
    if (!h) return NULL;
    be.ops->download(be.ctx, h, sd_net_params(net), np * sizeof(float));
    if (nb) be.ops->download(be.ctx, h + np, sd_net_buffers(net), nb * sizeof(float));
    return h;
}

static size_t snapshot_floats(const sd_net *net) { return sd_net_param_count(net) + sd_net_buffer_count(net); }

/* ---------------------------------------------------------------------------------------------
 * round trips
 * ------------------------------------------------------------------------------------------- */

static void test_round_trip(const char *model) {
    enum { N = 3 };
    sd_net *a = build(model, 1, 1.0f), *b = build(model, 2, 1.0f);
    EXPECT(a && b, "%s builds", model);
    if (!a || !b) goto out;
    size_t nin = input_floats(model, N);
    float *x = malloc(nin * sizeof(float));
    sd_test_rng r = {42};
    sd_test_fill(&r, x, nin, -1.0f, 1.0f);
    /* Two training-mode forwards move the BN running statistics away from their initial 0 and 1. */
    EXPECT_OK(sd_net_forward(a, x, N, true));
    EXPECT_OK(sd_net_forward(a, x, N, true));

    const char *path = tmp_path(model);
    sd_ckpt_kv kv[] = {{"model", model}, {"step", "17"}};
    sd_ckpt_meta meta = {kv, 2};
    EXPECT_OK(sd_checkpoint_save(a, path, &meta));
    EXPECT(access(path, F_OK) == 0, "%s exists after save", path);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    EXPECT(access(tmp, F_OK) != 0, "the temporary file %s was renamed away", tmp);

    size_t n = snapshot_floats(a);
    float *sa = snapshot(a), *sb0 = snapshot(b);
    EXPECT(memcmp(sa, sb0, sd_net_param_count(a) * sizeof(float)) != 0, "%s: seeds 1 and 2 differ", model);
    EXPECT_OK(sd_checkpoint_load(b, path, true));
    float *sb = snapshot(b);
    EXPECT(memcmp(sa, sb, n * sizeof(float)) == 0, "%s: parameters and buffers bitwise equal after load", model);
    if (sd_net_buffer_count(a) > 0)
        EXPECT(sd_net_batches_tracked(b) == sd_net_batches_tracked(a), "%s: num_batches_tracked %lld after load, saved %lld",
               model, (long long)sd_net_batches_tracked(b), (long long)sd_net_batches_tracked(a));
    if (sd_net_buffer_count(a) > 0) {
        /* the buffers really moved (otherwise the comparison above says little about them) */
        size_t np = sd_net_param_count(a);
        bool moved = false;
        for (size_t i = 0; i < sd_net_buffer_count(a); i++) moved |= sa[np + i] != 0.0f && sa[np + i] != 1.0f;
        EXPECT(moved, "%s: running statistics moved before saving", model);
    }

    EXPECT_OK(sd_net_forward(a, x, N, false));
    EXPECT_OK(sd_net_forward(b, x, N, false));
    size_t nl = (size_t)N * 10;
    float la[N * 10], lb[N * 10];
    be.ops->download(be.ctx, la, sd_net_output(a), nl * sizeof(float));
    be.ops->download(be.ctx, lb, sd_net_output(b), nl * sizeof(float));
    EXPECT(memcmp(la, lb, sizeof la) == 0 && sd_all_finite(la, nl), "%s: logits identical after load", model);

    /* The file itself: metadata, every tensor, counters for BN layers. */
    sd_st_file *f = NULL;
    EXPECT_OK(sd_st_open(path, &f));
    if (f) {
        const char *m = sd_st_metadata(f, "model"), *fmt = sd_st_metadata(f, "format");
        EXPECT(m && !strcmp(m, model), "metadata model = %s", m ? m : "(none)");
        EXPECT(fmt && !strcmp(fmt, "pt"), "metadata format = %s", fmt ? fmt : "(none)");
        EXPECT(sd_st_metadata_count(f) == 3, "%d metadata pairs", sd_st_metadata_count(f));
        int bn = 0;
        for (int i = 0; i < sd_net_num_tensors(a); i++) {
            const sd_param *p = sd_net_tensor(a, i);
            const sd_st_tensor *t = sd_st_find(f, p->name);
            EXPECT(t && t->dtype == SD_ST_F32 && t->ndim == p->ndim && t->numel == p->count, "%s stored as F32 %d-d",
                   p->name, p->ndim);
            if (!p->trainable && strstr(p->name, ".running_mean")) {
                bn++;
                char name[160];
                snprintf(name, sizeof name, "%.*s.num_batches_tracked",
                         (int)(strlen(p->name) - strlen(".running_mean")), p->name);
                const sd_st_tensor *c = sd_st_find(f, name);
                int64_t v = -1;
                if (c && c->dtype == SD_ST_I64 && c->ndim == 0) memcpy(&v, c->data, 8);
                EXPECT(v == 2, "%s = %lld (two training forwards)", name, (long long)v);
            }
        }
        EXPECT(sd_st_count(f) == sd_net_num_tensors(a) + bn, "%d tensors in the file, want %d + %d", sd_st_count(f),
               sd_net_num_tensors(a), bn);
        if (!strcmp(model, "resnet20")) EXPECT(bn == 21, "resnet20 has %d BN layers, want 21", bn);
        sd_st_close(f);
    }
    free(x);
    free(sa);
    free(sb0);
    free(sb);
out:
    sd_net_destroy(a);
    sd_net_destroy(b);
}

/* ---------------------------------------------------------------------------------------------
 * the generic writer and reader
 * ------------------------------------------------------------------------------------------- */

static void test_generic(void) {
    sd_st_writer *w = NULL;
    EXPECT_OK(sd_st_writer_create(&w));
    if (!w) return;
    int32_t i32[6] = {1, -2, 3, -4, 5, 2147483647};
    uint8_t u8[3] = {0, 7, 255};
    uint16_t f16[2] = {0x3c00, 0xc000}, bf16[4] = {0x3f80, 0, 1, 0xffff};
    int64_t i64 = -1234567890123ll;
    float f32[2][2] = {{1.5f, -2.0f}, {0.0f, 3.25f}};
    int64_t s23[] = {2, 3}, s3[] = {3}, s2[] = {2}, s4[] = {1, 2, 2}, s22[] = {2, 2}, s0[] = {4, 0};
    EXPECT_OK(sd_st_writer_add(w, "u8", SD_ST_U8, 1, s3, u8)); /* odd sizes first: the layout must realign */
    EXPECT_OK(sd_st_writer_add(w, "a.i32", SD_ST_I32, 2, s23, i32));
    EXPECT_OK(sd_st_writer_add(w, "f16", SD_ST_F16, 1, s2, f16));
    EXPECT_OK(sd_st_writer_add(w, "bf16", SD_ST_BF16, 3, s4, bf16));
    EXPECT_OK(sd_st_writer_add(w, "scalar", SD_ST_I64, 0, NULL, &i64));
    EXPECT_OK(sd_st_writer_add(w, "empty", SD_ST_F32, 2, s0, NULL));
    EXPECT_OK(sd_st_writer_add(w, "w \"quoted\"\n\\", SD_ST_F32, 2, s22, f32));
    EXPECT_OK(sd_st_writer_add_metadata(w, "note", "a \"quote\", a tab\t and ünïcode"));
    EXPECT_FAIL(sd_st_writer_add(w, "u8", SD_ST_U8, 1, s3, u8), SD_ERR_INVALID, "'u8'");
    EXPECT_FAIL(sd_st_writer_add(w, "__metadata__", SD_ST_U8, 1, s3, u8), SD_ERR_INVALID, "__metadata__");
    int64_t neg[] = {-1};
    EXPECT_FAIL(sd_st_writer_add(w, "neg", SD_ST_U8, 1, neg, u8), SD_ERR_INVALID, "'neg'");
    EXPECT_FAIL(sd_st_writer_add(w, "nodata", SD_ST_U8, 1, s3, NULL), SD_ERR_INVALID, "'nodata'");
    EXPECT_FAIL(sd_st_writer_add_metadata(w, "note", "again"), SD_ERR_INVALID, "'note'");
    const char *path = tmp_path("generic.safetensors");
    EXPECT_OK(sd_st_writer_write(w, path));
    sd_st_writer_destroy(w);

    sd_st_file *f = NULL;
    EXPECT_OK(sd_st_open(path, &f));
    if (!f) return;
    EXPECT(sd_st_count(f) == 7, "%d tensors", sd_st_count(f));
    const sd_st_tensor *t;
    t = sd_st_find(f, "a.i32");
    EXPECT(t && t->dtype == SD_ST_I32 && t->ndim == 2 && t->shape[1] == 3 && !memcmp(t->data, i32, sizeof i32), "i32");
    t = sd_st_find(f, "u8");
    EXPECT(t && t->dtype == SD_ST_U8 && t->numel == 3 && !memcmp(t->data, u8, 3), "u8");
    t = sd_st_find(f, "f16");
    EXPECT(t && t->dtype == SD_ST_F16 && !memcmp(t->data, f16, 4), "f16");
    t = sd_st_find(f, "bf16");
    EXPECT(t && t->dtype == SD_ST_BF16 && t->ndim == 3 && !memcmp(t->data, bf16, 8), "bf16");
    t = sd_st_find(f, "scalar");
    EXPECT(t && t->dtype == SD_ST_I64 && t->ndim == 0 && t->numel == 1 && !memcmp(t->data, &i64, 8), "i64 scalar");
    t = sd_st_find(f, "empty");
    EXPECT(t && t->numel == 0 && t->nbytes == 0 && t->shape[0] == 4, "empty tensor");
    t = sd_st_find(f, "w \"quoted\"\n\\");
    EXPECT(t && !memcmp(t->data, f32, sizeof f32), "escaped name");
    EXPECT(sd_st_find(f, "nope") == NULL, "absent name");
    const char *note = sd_st_metadata(f, "note");
    EXPECT(note && !strcmp(note, "a \"quote\", a tab\t and ünïcode"), "metadata round trip: %s", note ? note : "");
    /* Layout: contiguous, each tensor aligned to its element size, header padded to 8. */
    uint64_t total = 0;
    for (int i = 0; i < sd_st_count(f); i++) {
        t = sd_st_tensor_at(f, i);
        total += t->nbytes;
        EXPECT(t->begin % sd_st_dtype_size(t->dtype) == 0, "%s at offset %llu is aligned", t->name,
               (unsigned long long)t->begin);
        const sd_st_tensor *first = sd_st_find(f, "scalar"); /* the only 8-byte tensor: laid out first */
        EXPECT(first && first->begin == 0 &&
                   ((uintptr_t)t->data - (uintptr_t)first->data) % sd_st_dtype_size(t->dtype) == 0,
               "%s aligned in memory relative to the data section", t->name);
    }
    FILE *fp = fopen(path, "rb");
    uint64_t hlen = 0;
    long size = 0;
    if (fp) {
        if (fread(&hlen, 8, 1, fp) != 1) hlen = 1;
        fseek(fp, 0, SEEK_END);
        size = ftell(fp);
        fclose(fp);
    }
    EXPECT(hlen % 8 == 0 && (uint64_t)size == 8 + hlen + total, "header %llu bytes, file %ld bytes, data %llu",
           (unsigned long long)hlen, size, (unsigned long long)total);
    sd_st_close(f);
}

/* ---------------------------------------------------------------------------------------------
 * corrupt files
 * ------------------------------------------------------------------------------------------- */

/* A file of: the length `hlen`, the JSON text, `data` zero bytes. */
static const char *raw_file(const char *name, uint64_t hlen, const char *json, size_t data) {
    const char *path = tmp_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return path;
    fwrite(&hlen, 8, 1, fp);
    fwrite(json, 1, strlen(json), fp);
    for (size_t i = 0; i < data; i++) fputc(0, fp);
    fclose(fp);
    return path;
}

static const char *json_file(const char *name, const char *json, size_t data) {
    return raw_file(name, strlen(json), json, data);
}

static void expect_open_fails(const char *path, sd_status want, const char *needle) {
    sd_st_file *f = NULL;
    EXPECT_FAIL(sd_st_open(path, &f), want, needle);
    EXPECT(f == NULL, "no file handle after a failed open of %s", path);
    sd_st_close(f);
}

static void test_corrupt(void) {
    const char *ok = json_file("ok.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    sd_st_file *f = NULL;
    EXPECT_OK(sd_st_open(ok, &f));
    sd_st_close(f);

    expect_open_fails(tmp_path("absent.safetensors"), SD_ERR_IO, "absent.safetensors");
    expect_open_fails(dir, SD_ERR_IO, "not a regular file");
    expect_open_fails(raw_file("empty.safetensors", 0, "", 0), SD_ERR_FORMAT, "not valid JSON");
    {
        const char *p = tmp_path("four.safetensors");
        FILE *fp = fopen(p, "wb");
        if (fp) fwrite("abcd", 1, 4, fp), fclose(fp);
        expect_open_fails(p, SD_ERR_FORMAT, "four.safetensors' is 4 bytes, shorter than the 8-byte header");
    }
    expect_open_fails(raw_file("pastend.safetensors", 500, "{}", 0), SD_ERR_FORMAT, "runs past the end");
    expect_open_fails(raw_file("huge.safetensors", (uint64_t)1 << 40, "{}", 0), SD_ERR_FORMAT, "passes the");
    expect_open_fails(json_file("badjson.safetensors", "{\"w\":{\"dtype\":\"F32\",", 0), SD_ERR_FORMAT,
                      "not valid JSON");
    expect_open_fails(json_file("array.safetensors", "[1,2]", 0), SD_ERR_FORMAT, "not a JSON object");
    expect_open_fails(json_file("trailing.safetensors", "{}  x", 0), SD_ERR_FORMAT, "after the JSON");
    expect_open_fails(json_file("range.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4),
                      SD_ERR_FORMAT, "entry 'w': data_offsets [0, 8] out of range");
    expect_open_fails(json_file("backwards.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': data_offsets [8, 4] out of range");
    expect_open_fails(json_file("overlap.safetensors",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12),
                      SD_ERR_FORMAT, "entry 'b' (bytes 4..12) overlaps entry 'a'");
    expect_open_fails(json_file("size.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': data_offsets [0, 8] hold 8 bytes but F32 with 3 elements needs 12");
    expect_open_fails(json_file("dtype.safetensors",
                                "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': unknown dtype \"F33\"");
    expect_open_fails(json_file("noshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w' lacks \"shape\"");
    expect_open_fails(json_file("nooffsets.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
                      SD_ERR_FORMAT, "entry 'w' lacks \"data_offsets\"");
    expect_open_fails(json_file("negdim.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': shape dim 0 is not a non-negative integer");
    expect_open_fails(json_file("fracdim.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': shape dim 0");
    expect_open_fails(json_file("overflow.safetensors",
                                "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],"
                                "\"data_offsets\":[0,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': the shape's byte size overflows");
    expect_open_fails(json_file("badoffsets.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8),
                      SD_ERR_FORMAT, "entry 'w': data_offsets is not");
    expect_open_fails(json_file("notobj.safetensors", "{\"w\":3}", 0), SD_ERR_FORMAT, "entry 'w' is not an object");
    expect_open_fails(json_file("dup.safetensors",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8),
                      SD_ERR_FORMAT, "entry 'w' appears twice");
    expect_open_fails(json_file("meta.safetensors", "{\"__metadata__\":{\"k\":3}}", 0), SD_ERR_FORMAT,
                      "metadata 'k' is not a string");

    /* A truncated real checkpoint: the entry whose data ran past the new end is named. */
    sd_net *net = build("fmnist_cnn", 1, 1.0f);
    if (!net) return;
    const char *full = tmp_path("full.safetensors");
    EXPECT_OK(sd_checkpoint_save(net, full, NULL));
    EXPECT_OK(sd_st_open(full, &f));
    const char *last = "?";
    char last_name[128] = "?";
    if (f) {
        uint64_t end = 0;
        for (int i = 0; i < sd_st_count(f); i++)
            if (sd_st_tensor_at(f, i)->end > end) end = sd_st_tensor_at(f, i)->end, last = sd_st_tensor_at(f, i)->name;
        snprintf(last_name, sizeof last_name, "'%s'", last);
        sd_st_close(f);
    }
    FILE *fp = fopen(full, "rb");
    long size = 0;
    if (fp) fseek(fp, 0, SEEK_END), size = ftell(fp), fclose(fp);
    if (truncate(full, size - 4) != 0) perror("truncate");
    expect_open_fails(full, SD_ERR_FORMAT, last_name);
    EXPECT(strstr(sd_last_error(), "out of range") != NULL, "truncation reported as out of range: %s", sd_last_error());
    EXPECT_FAIL(sd_checkpoint_load(net, full, true), SD_ERR_FORMAT, last_name);
    if (truncate(full, 6) != 0) perror("truncate");
    EXPECT_FAIL(sd_checkpoint_load(net, full, false), SD_ERR_FORMAT, "shorter than the 8-byte");
    sd_net_destroy(net);
}

/* ---------------------------------------------------------------------------------------------
 * checkpoints that do not fit the model
 * ------------------------------------------------------------------------------------------- */

typedef struct variant {
    const char *skip;        /* tensor left out */
    const char *extra;       /* additional tensor */
    const char *as_f64;      /* tensor stored as F64 */
    const char *nbt_as_f32;  /* a num_batches_tracked stored as F32 */
} variant;

/* A checkpoint of `net` written through the generic writer with one change. */
static const char *write_variant(sd_net *net, const char *name, const variant *v) {
    const char *path = tmp_path(name);
    sd_st_writer *w = NULL;
    if (sd_st_writer_create(&w) != SD_OK) return path;
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        const sd_param *p = sd_net_tensor(net, i);
        if (v->skip && !strcmp(p->name, v->skip)) continue;
        int64_t shape[SD_MAX_NDIM];
        for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
        float *h = malloc(p->count * sizeof(float));
        be.ops->download(be.ctx, h, sd_net_tensor_data(net, p), p->count * sizeof(float));
        if (v->as_f64 && !strcmp(p->name, v->as_f64)) {
            double *d = malloc(p->count * sizeof(double));
            for (size_t j = 0; j < p->count; j++) d[j] = h[j];
            sd_st_writer_add(w, p->name, SD_ST_F64, p->ndim, shape, d);
            free(d);
        } else {
            sd_st_writer_add(w, p->name, SD_ST_F32, p->ndim, shape, h);
        }
        free(h);
    }
    if (v->extra) {
        float z[3] = {0};
        int64_t s3[] = {3};
        sd_st_writer_add(w, v->extra, SD_ST_F32, 1, s3, z);
    }
    if (v->nbt_as_f32) {
        float z = 1;
        sd_st_writer_add(w, v->nbt_as_f32, SD_ST_F32, 0, NULL, &z);
    }
    if (sd_st_writer_write(w, path) != SD_OK) fprintf(stderr, "%s\n", sd_last_error());
    sd_st_writer_destroy(w);
    return path;
}

static void test_mismatch(void) {
    sd_net *src = build("resnet20", 3, 1.0f), *dst = build("resnet20", 4, 1.0f), *half = build("resnet20", 5, 0.5f);
    sd_net *cnn = build("fmnist_cnn", 6, 1.0f);
    EXPECT(src && dst && half && cnn, "models build");
    if (!src || !dst || !half || !cnn) goto out;
    size_t n = snapshot_floats(dst);
    float *before = snapshot(dst);

    /* The net is untouched by every failed load below. */
#define UNCHANGED()                                                                              \
    do {                                                                                         \
        float *now_ = snapshot(dst);                                                             \
        EXPECT(memcmp(now_, before, n * sizeof(float)) == 0, "the net changed on a failed load"); \
        free(now_);                                                                              \
    } while (0)

    const char *p = write_variant(src, "f64.safetensors", &(variant){.as_f64 = "layer2.0.conv1.weight"});
    EXPECT_FAIL(sd_checkpoint_load(dst, p, true), SD_ERR_FORMAT, "'layer2.0.conv1.weight' is F64");
    EXPECT_FAIL(sd_checkpoint_load(dst, p, false), SD_ERR_FORMAT, "'layer2.0.conv1.weight' is F64");
    UNCHANGED();

    const char *hp = tmp_path("half.safetensors");
    EXPECT_OK(sd_checkpoint_save(half, hp, NULL));
    EXPECT_FAIL(sd_checkpoint_load(dst, hp, true), SD_ERR_SHAPE,
                "tensor 'conv1.weight' has shape [8, 3, 3, 3] but the model has [16, 3, 3, 3]");
    EXPECT_FAIL(sd_checkpoint_load(dst, hp, false), SD_ERR_SHAPE, "'conv1.weight'");
    UNCHANGED();

    const char *cp = tmp_path("cnn.safetensors");
    EXPECT_OK(sd_checkpoint_save(cnn, cp, NULL));
    EXPECT_FAIL(sd_checkpoint_load(dst, cp, true), SD_ERR_SHAPE, "'conv1.weight' has shape [16, 1, 5, 5]");
    UNCHANGED();

    p = write_variant(src, "missing.safetensors", &(variant){.skip = "layer3.2.bn2.running_var"});
    EXPECT_FAIL(sd_checkpoint_load(dst, p, true), SD_ERR_FORMAT,
                "lacks 1 tensor of the model: 'layer3.2.bn2.running_var'");
    UNCHANGED();
    /* Non-strict: everything else is loaded, the missing tensor keeps the model's values. */
    EXPECT_OK(sd_checkpoint_load(dst, p, false));
    {
        float *s = snapshot(src), *d = snapshot(dst);
        const sd_param *mv = sd_net_find(dst, "layer3.2.bn2.running_var");
        size_t off = sd_net_param_count(dst) + mv->offset;
        EXPECT(memcmp(d + off, before + off, mv->count * sizeof(float)) == 0, "missing tensor kept");
        EXPECT(memcmp(d, s, off * sizeof(float)) == 0 &&
                   memcmp(d + off + mv->count, s + off + mv->count, (n - off - mv->count) * sizeof(float)) == 0,
               "all other tensors loaded");
        free(s);
        free(d);
    }
    sd_net_destroy(dst);
    dst = build("resnet20", 4, 1.0f);
    if (!dst) goto out;

    p = write_variant(src, "extra.safetensors", &(variant){.extra = "head.extra.weight"});
    EXPECT_FAIL(sd_checkpoint_load(dst, p, true), SD_ERR_FORMAT, "1 tensor the model lacks: 'head.extra.weight'");
    UNCHANGED();
    EXPECT_OK(sd_checkpoint_load(dst, p, false));
    {
        float *s = snapshot(src), *d = snapshot(dst);
        EXPECT(memcmp(s, d, n * sizeof(float)) == 0, "non-strict load with an extra tensor loads the rest");
        free(s);
        free(d);
    }
    sd_net_destroy(dst);
    dst = build("resnet20", 4, 1.0f);
    if (!dst) goto out;

    /* A checkpoint without num_batches_tracked loads (PyTorch allows it too); a malformed one does not. */
    p = write_variant(src, "nonbt.safetensors", &(variant){0});
    EXPECT_OK(sd_checkpoint_load(dst, p, true));
    p = write_variant(src, "nbtf32.safetensors", &(variant){.nbt_as_f32 = "layer1.1.bn1.num_batches_tracked"});
    EXPECT_FAIL(sd_checkpoint_load(dst, p, true), SD_ERR_FORMAT, "'layer1.1.bn1.num_batches_tracked' is F32");
    /* ...and a counter for a layer the model lacks is an extra tensor. */
    p = write_variant(src, "nbtextra.safetensors", &(variant){.extra = "layer9.bn.num_batches_tracked"});
    EXPECT_FAIL(sd_checkpoint_load(dst, p, true), SD_ERR_FORMAT, "'layer9.bn.num_batches_tracked'");

    /* Many extras: the first few are listed and the rest counted. */
    EXPECT_FAIL(sd_checkpoint_load(cnn, tmp_path("r.safetensors"), true), SD_ERR_IO, "r.safetensors");
    const char *rp = tmp_path("resnet_src.safetensors");
    EXPECT_OK(sd_checkpoint_save(src, rp, NULL));
    EXPECT_FAIL(sd_checkpoint_load(cnn, rp, false), SD_ERR_SHAPE, "'conv1.weight' has shape [16, 3, 3, 3]");
    float *c0 = snapshot(cnn);
    const char *cnn_plus = tmp_path("cnn_plus.safetensors");
    {
        /* the CNN's own tensors plus all of resnet20's (renamed so none collide) */
        sd_st_writer *w = NULL;
        EXPECT_OK(sd_st_writer_create(&w));
        for (int i = 0; w && i < sd_net_num_tensors(cnn); i++) {
            const sd_param *q = sd_net_tensor(cnn, i);
            int64_t shape[SD_MAX_NDIM];
            for (int d = 0; d < q->ndim; d++) shape[d] = q->shape[d];
            sd_st_writer_add(w, q->name, SD_ST_F32, q->ndim, shape, sd_net_tensor_data(cnn, q));
        }
        for (int i = 0; w && i < 10; i++) {
            char name[32];
            float z = 0;
            snprintf(name, sizeof name, "other.%d", i);
            sd_st_writer_add(w, name, SD_ST_F32, 0, NULL, &z);
        }
        if (w) EXPECT_OK(sd_st_writer_write(w, cnn_plus));
        sd_st_writer_destroy(w);
    }
    EXPECT_FAIL(sd_checkpoint_load(cnn, cnn_plus, true), SD_ERR_FORMAT,
                "has 10 tensors the model lacks: 'other.0', 'other.1', 'other.2', 'other.3', 'other.4' and 5 more");
    EXPECT_OK(sd_checkpoint_load(cnn, cnn_plus, false));
    float *c1 = snapshot(cnn);
    EXPECT(memcmp(c0, c1, snapshot_floats(cnn) * sizeof(float)) == 0, "reloading its own weights changes nothing");
    free(c0);
    free(c1);
#undef UNCHANGED
    free(before);
out:
    sd_net_destroy(src);
    sd_net_destroy(dst);
    sd_net_destroy(half);
    sd_net_destroy(cnn);
}

/* Random byte flips in the header and random truncations of a valid file: every open either
 * succeeds or fails with SD_ERR_FORMAT (never a crash; ASan and UBSan watch the sanitizer build). */
static void test_mutations(void) {
    const char *src = tmp_path("generic.safetensors"); /* written by test_generic */
    FILE *fp = fopen(src, "rb");
    if (!fp) {
        EXPECT(0, "cannot read %s", src);
        return;
    }
    unsigned char buf[4096];
    size_t size = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    uint64_t hlen = 0;
    memcpy(&hlen, buf, 8);
    const char *path = tmp_path("mutant.safetensors");
    sd_test_rng r = {7};
    int ok = 0, format = 0, other = 0;
    for (int it = 0; it < 400; it++) {
        unsigned char m[4096];
        memcpy(m, buf, size);
        size_t len = size;
        if (it % 4 == 3) {
            len = (size_t)(sd_test_next(&r) % size);
        } else {
            for (int k = 0; k < 1 + it % 3; k++) {
                size_t at = 8 + (size_t)(sd_test_next(&r) % hlen);
                const char *pool = "{}[]\":,0123456789-.eE \"\\xF";
                m[at] = (it & 1) ? (unsigned char)pool[sd_test_next(&r) % strlen(pool)]
                                 : (unsigned char)sd_test_next(&r);
            }
        }
        FILE *o = fopen(path, "wb");
        if (!o) break;
        fwrite(m, 1, len, o);
        fclose(o);
        sd_st_file *f = NULL;
        sd_status s = sd_st_open(path, &f);
        if (s == SD_OK) {
            ok++;
            for (int i = 0; i < sd_st_count(f); i++) { /* whatever it holds lies inside the file */
                const sd_st_tensor *t = sd_st_tensor_at(f, i);
                volatile unsigned char sink = 0;
                for (size_t b = 0; b < t->nbytes; b++) sink ^= ((const unsigned char *)t->data)[b];
                (void)sink;
            }
        } else if (s == SD_ERR_FORMAT && strstr(sd_last_error(), "mutant.safetensors")) {
            format++;
        } else {
            other++;
            fprintf(stderr, "mutation %d: %s\n", it, sd_last_error());
        }
        sd_st_close(f);
    }
    EXPECT(other == 0 && format > 100, "mutations: %d opened, %d rejected as malformed naming the file, %d otherwise",
           ok, format, other);
}

static void test_io_errors(void) {
    sd_net *net = build("fmnist_cnn", 1, 1.0f);
    if (!net) return;
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/model.safetensors", dir);
    EXPECT_FAIL(sd_checkpoint_save(net, bad, NULL), SD_ERR_IO, bad);
    EXPECT_FAIL(sd_checkpoint_load(net, bad, true), SD_ERR_IO, bad);
    /* Saving over an existing checkpoint replaces it. */
    const char *p = tmp_path("again.safetensors");
    EXPECT_OK(sd_checkpoint_save(net, p, NULL));
    sd_ckpt_kv kv = {"format", "scadles"};
    sd_ckpt_meta meta = {&kv, 1};
    EXPECT_OK(sd_checkpoint_save(net, p, &meta));
    sd_st_file *f = NULL;
    EXPECT_OK(sd_st_open(p, &f));
    const char *fmt = f ? sd_st_metadata(f, "format") : NULL;
    EXPECT(fmt && !strcmp(fmt, "scadles") && sd_st_metadata_count(f) == 1, "the second save replaced the first");
    sd_st_close(f);
    sd_ckpt_kv dup[2] = {{"k", "1"}, {"k", "2"}};
    sd_ckpt_meta dmeta = {dup, 2};
    EXPECT_FAIL(sd_checkpoint_save(net, p, &dmeta), SD_ERR_INVALID, "'k'");
    sd_net_destroy(net);
}

int main(void) {
    if (sd_backend_cpu_create(&be, 2) != SD_OK) {
        fprintf(stderr, "%s\n", sd_last_error());
        return 1;
    }
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip("fmnist_cnn");
    test_round_trip("resnet20");
    test_generic();
    test_corrupt();
    test_mutations();
    test_mismatch();
    test_io_errors();
    for (int i = 0; i < nfiles; i++) remove(files[i]);
    if (rmdir(dir) != 0) perror(dir);
    sd_backend_destroy(&be);
    return sd_test_finish("test_checkpoint");
}
