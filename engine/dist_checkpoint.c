/* dist_checkpoint.c: the pieces of a distributed run's checkpoint (dist_checkpoint.h): identity and
 * checksum, scalars as 0-dim tensors, and the state of each component (net and optimizer, ring
 * buffer and sink, the stream source's position, injection pool counters, compressor) to and from safetensors. */
#include "engine/dist_checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#define MAX_SUMMARIES (SD_EXP_MAX_MODES * SD_EXP_MAX_SEEDS)

/* ---- identity and checksum ------------------------------------------------------------------- */
sd_status sd_dist_ckpt_experiment_json(const sd_experiment *e, char **out) {
    sd_experiment *c = malloc(sizeof *c);
    if (!c) return SD_FAIL(SD_ERR_OOM, "checkpoint: experiment copy");
    *c = *e;
    c->threads = 0; /* a resume may use another count of kernel threads; the run goes on, but not bitwise
                       as it would have (CPU reductions split by thread count; docs/checkpoints.md) */
    sd_status s = sd_experiment_to_json(c, out);
    free(c);
    return s;
}

sd_status sd_dist_ckpt_mkdir(const char *dir) {
    char buf[1100];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return SD_FAIL(SD_ERR_INVALID, "checkpoint directory path longer than %zu characters", sizeof buf - 1);
    for (char *p = buf + 1;; p++) {
        if (*p && *p != '/') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return SD_FAIL(SD_ERR_IO, "cannot create checkpoint directory %s: %s", buf, strerror(errno));
        *p = c;
        if (!c) break;
    }
    return SD_OK;
}

void sd_dist_ckpt_path(const char *dir, int rank, char *out, size_t cap) {
    if (rank < 0) snprintf(out, cap, "%s/%s", dir, SD_DIST_CKPT_RUN_FILE);
    else snprintf(out, cap, "%s/rank%d.safetensors", dir, rank);
}

/* The checksum: one 64-bit hash per tensor of (name, 0xff, dtype, bytes), and per metadata pair of
 * (key, 0xff, SD_ST_DTYPE_COUNT, value), summed, so it does not depend on the order the writer lays
 * them out in. The hash is XXH3-64 (libxxhash, seed 0) since version 2, which says so in
 * checksum_algo; version 1 files hashed with FNV-1a, byte at a time, about 20 times slower
 * (scadles-bench_checkpoint). */
typedef enum { HASH_FNV1A, HASH_XXH3 } hash_algo;

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* xs: a state from XXH3_createState (only for HASH_XXH3). */
static uint64_t tensor_hash(hash_algo a, XXH3_state_t *xs, const char *name, sd_st_dtype dtype, const void *data,
                            size_t nbytes) {
    const unsigned char tag[2] = {0xffu, (unsigned char)dtype};
    if (a == HASH_FNV1A) return fnv1a(fnv1a(fnv1a(1469598103934665603ull, name, strlen(name)), tag, 2), data, nbytes);
    (void)XXH3_64bits_reset(xs);
    (void)XXH3_64bits_update(xs, name, strlen(name));
    (void)XXH3_64bits_update(xs, tag, sizeof tag);
    (void)XXH3_64bits_update(xs, data, nbytes);
    return XXH3_64bits_digest(xs);
}

/* The same over one metadata pair (every pair but "checksum" counts). */
static uint64_t meta_hash(hash_algo a, XXH3_state_t *xs, const char *key, const char *value) {
    return tensor_hash(a, xs, key, SD_ST_DTYPE_COUNT, value, strlen(value));
}

static size_t numel_of(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

static const char *mode_str(sd_exp_mode m) { return m == SD_EXP_MODE_DDP ? "ddp" : "scadles"; }

sd_status sd_dist_ckpt_writer_begin(sd_dist_ckpt_writer *cw, const sd_dist_ckpt_id *id, int rank, const char *reason) {
    memset(cw, 0, sizeof *cw);
    cw->hash = XXH3_createState();
    if (!cw->hash) return SD_FAIL(SD_ERR_OOM, "checkpoint: no memory for the checksum state");
    sd_status s = sd_st_writer_create(&cw->w);
    if (s != SD_OK) {
        sd_dist_ckpt_writer_abort(cw);
        TRY(s);
    }
    char num[32];
#define META(k, v) \
    if (s == SD_OK && (s = sd_st_writer_add_metadata(cw->w, (k), (v))) == SD_OK) cw->sum += meta_hash(HASH_XXH3, cw->hash, (k), (v))
    META("format", SD_DIST_CKPT_FORMAT);
    META("version", SD_DIST_CKPT_VERSION);
    META("checksum_algo", SD_DIST_CKPT_CHECKSUM_XXH3);
    META("experiment", id->experiment);
    snprintf(num, sizeof num, "%d", id->devices);
    META("devices", num);
    snprintf(num, sizeof num, "%d", id->run_index);
    META("run_index", num);
    META("mode", mode_str(id->mode));
    snprintf(num, sizeof num, "%llu", (unsigned long long)id->seed);
    META("seed", num);
    snprintf(num, sizeof num, "%lld", (long long)id->step);
    META("step", num);
    snprintf(num, sizeof num, "%d", rank);
    META("rank", num);
    META("reason", reason && reason[0] ? reason : "stop");
#undef META
    if (s != SD_OK) {
        sd_dist_ckpt_writer_abort(cw);
        TRY(s);
    }
    return SD_OK;
}

void sd_dist_ckpt_writer_abort(sd_dist_ckpt_writer *cw) {
    sd_st_writer_destroy(cw->w);
    cw->w = NULL;
    XXH3_freeState(cw->hash);
    cw->hash = NULL;
}

sd_status sd_dist_ckpt_writer_finish(sd_dist_ckpt_writer *cw, const char *path) {
    char sum[32];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)cw->sum);
    sd_status s = sd_st_writer_add_metadata(cw->w, "checksum", sum);
    if (s == SD_OK) s = sd_st_writer_write(cw->w, path);
    sd_dist_ckpt_writer_abort(cw);
    TRY(s);
    return SD_OK;
}

sd_status sd_dist_ckpt_put(sd_dist_ckpt_writer *cw, const char *name, sd_st_dtype dtype, int ndim, const int64_t *shape,
                           const void *data) {
    TRY(sd_st_writer_add(cw->w, name, dtype, ndim, shape, data));
    cw->sum += tensor_hash(HASH_XXH3, cw->hash, name, dtype, data, numel_of(ndim, shape) * sd_st_dtype_size(dtype));
    return SD_OK;
}

sd_status sd_dist_ckpt_put_f64(sd_dist_ckpt_writer *cw, const char *name, double v) {
    return sd_dist_ckpt_put(cw, name, SD_ST_F64, 0, NULL, &v);
}
sd_status sd_dist_ckpt_put_i64(sd_dist_ckpt_writer *cw, const char *name, int64_t v) {
    return sd_dist_ckpt_put(cw, name, SD_ST_I64, 0, NULL, &v);
}
sd_status sd_dist_ckpt_put_u64(sd_dist_ckpt_writer *cw, const char *name, uint64_t v) {
    return sd_dist_ckpt_put(cw, name, SD_ST_U64, 0, NULL, &v);
}
sd_status sd_dist_ckpt_put_rng(sd_dist_ckpt_writer *cw, const char *name, const sd_rng *rng) {
    return sd_dist_ckpt_put(cw, name, SD_ST_U64, 1, (int64_t[]){4}, rng->s);
}

/* ---- opening and checking ---------------------------------------------------------------------- */
sd_status sd_dist_ckpt_checksum(const sd_st_file *f, const char *algo, uint64_t *sum) {
    *sum = 0;
    hash_algo a;
    if (algo && !strcmp(algo, SD_DIST_CKPT_CHECKSUM_XXH3)) a = HASH_XXH3;
    else if (algo && !strcmp(algo, SD_DIST_CKPT_CHECKSUM_FNV1A)) a = HASH_FNV1A;
    else
        return SD_FAIL(SD_ERR_FORMAT, "checksum_algo '%.60s' is not one this build reads (%s, or none for %s)",
                       algo ? algo : "(null)", SD_DIST_CKPT_CHECKSUM_XXH3, SD_DIST_CKPT_CHECKSUM_FNV1A);
    XXH3_state_t *xs = a == HASH_XXH3 ? XXH3_createState() : NULL;
    if (a == HASH_XXH3 && !xs) return SD_FAIL(SD_ERR_OOM, "checkpoint: no memory for the checksum state");
    uint64_t h = 0;
    for (int i = 0; i < sd_st_count(f); i++) {
        const sd_st_tensor *t = sd_st_tensor_at(f, i);
        h += tensor_hash(a, xs, t->name, t->dtype, t->data, t->nbytes);
    }
    for (int i = 0; i < sd_st_metadata_count(f); i++) {
        const char *k = NULL, *v = NULL;
        if (sd_st_metadata_at(f, i, &k, &v) && strcmp(k, "checksum") != 0) h += meta_hash(a, xs, k, v);
    }
    XXH3_freeState(xs);
    *sum = h;
    return SD_OK;
}

/* The first line where two texts differ, for the message (trimmed). */
static void first_difference(const char *a, const char *b, int *line, char *la, char *lb, size_t cap) {
    *line = 1;
    const char *sa = a, *sb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            (*line)++;
            sa = a + 1;
            sb = b + 1;
        }
        a++;
        b++;
    }
    const char *ea = strchr(sa, '\n'), *eb = strchr(sb, '\n');
    size_t na = ea ? (size_t)(ea - sa) : strlen(sa), nb = eb ? (size_t)(eb - sb) : strlen(sb);
    while (na && (*sa == ' ' || *sa == '\t')) { sa++; na--; }
    while (nb && (*sb == ' ' || *sb == '\t')) { sb++; nb--; }
    snprintf(la, cap, "%.*s", (int)(na < 200 ? na : 200), sa);
    snprintf(lb, cap, "%.*s", (int)(nb < 200 ? nb : 200), sb);
}

static bool parse_i64(const char *s, int64_t *v) {
    if (!s || !*s) return false;
    char *end = NULL;
    long long x = strtoll(s, &end, 10);
    if (*end) return false;
    *v = x;
    return true;
}

sd_status sd_dist_ckpt_open(const char *path, const sd_dist_ckpt_id *want, int rank, sd_st_file **out,
                            sd_dist_ckpt_id *got) {
    *out = NULL;
    sd_st_file *f = NULL;
    sd_status s = sd_st_open(path, &f);
    if (s != SD_OK) {
        if (s == SD_ERR_IO)
            return SD_FAIL(SD_ERR_IO, "cannot read checkpoint file %s: %s; --resume takes the checkpoint directory a "
                           "stopped run printed (<out_dir>/checkpoint)", path, sd_last_error_brief());
        return SD_FAIL(SD_ERR_FORMAT, "checkpoint file %s is damaged: %s", path, sd_last_error_brief());
    }
    const char *fmt = sd_st_metadata(f, "format"), *ver = sd_st_metadata(f, "version");
    const char *exp = sd_st_metadata(f, "experiment"), *sum = sd_st_metadata(f, "checksum");
    int64_t devices = 0, run_index = -1, step = -1, frank = -1, seed = 0;
    const char *mode = sd_st_metadata(f, "mode");
    if (!fmt || strcmp(fmt, SD_DIST_CKPT_FORMAT) != 0) {
        s = SD_FAIL(SD_ERR_FORMAT, "%s is not a distributed ScaDLES checkpoint (format '%s'); --resume takes the "
                    "checkpoint directory a stopped --config run printed", path, fmt ? fmt : "none");
        goto fail;
    }
    if (!ver || (strcmp(ver, SD_DIST_CKPT_VERSION) != 0 && strcmp(ver, "1") != 0)) {
        s = SD_FAIL(SD_ERR_FORMAT, "%s is checkpoint version %s; this build reads versions 1 and %s (resume with the "
                    "build that wrote it)", path, ver ? ver : "?", SD_DIST_CKPT_VERSION);
        goto fail;
    }
    if (!exp || !sum || !mode || !parse_i64(sd_st_metadata(f, "devices"), &devices) ||
        !parse_i64(sd_st_metadata(f, "run_index"), &run_index) || !parse_i64(sd_st_metadata(f, "step"), &step) ||
        !parse_i64(sd_st_metadata(f, "rank"), &frank) || !parse_i64(sd_st_metadata(f, "seed"), &seed) ||
        run_index < 0 || run_index >= MAX_SUMMARIES || step < 0) {
        s = SD_FAIL(SD_ERR_FORMAT, "%s: the checkpoint's identity (metadata experiment, devices, run_index, mode, "
                    "seed, step, rank, checksum) is missing or malformed; the file is damaged", path);
        goto fail;
    }
    /* version 1 files (FNV-1a) name no checksum_algo */
    const char *algo = sd_st_metadata(f, "checksum_algo");
    uint64_t h = 0;
    s = sd_dist_ckpt_checksum(f, algo ? algo : SD_DIST_CKPT_CHECKSUM_FNV1A, &h);
    if (s == SD_ERR_FORMAT) {
        s = SD_FAIL(SD_ERR_FORMAT, "%s: %s; resume with the build that wrote it", path, sd_last_error_brief());
        goto fail;
    }
    if (s != SD_OK) goto fail;
    char hs[32];
    snprintf(hs, sizeof hs, "%016llx", (unsigned long long)h);
    if (strcmp(hs, sum) != 0) {
        s = SD_FAIL(SD_ERR_FORMAT, "%s is damaged: its checksum is %s (%s) but the file says %s; resume from an "
                    "intact copy or start the run again", path, hs, algo ? algo : SD_DIST_CKPT_CHECKSUM_FNV1A, sum);
        goto fail;
    }
    if (devices != want->devices) {
        s = SD_FAIL(SD_ERR_INVALID, "%s was written by a run of %lld devices but this run has %d (devices.count); "
                    "resume with the experiment that wrote it (under mpirun: -np %lld)", path, (long long)devices, want->devices,
                    (long long)devices);
        goto fail;
    }
    if (strcmp(exp, want->experiment) != 0) {
        int line;
        char la[256], lb[256];
        first_difference(exp, want->experiment, &line, la, lb, sizeof la);
        s = SD_FAIL(SD_ERR_INVALID, "%s was written for another experiment configuration: at line %d of the resolved "
                    "config the checkpoint has `%s` but this run has `%s`; resume with the same --config and --set "
                    "options (only threads may differ)", path, line, la, lb);
        goto fail;
    }
    if (rank >= 0 && frank != rank) {
        s = SD_FAIL(SD_ERR_FORMAT, "%s holds the state of rank %lld, not rank %d; do not rename checkpoint files", path,
                    (long long)frank, rank);
        goto fail;
    }
    if (got) {
        memset(got, 0, sizeof *got);
        got->devices = (int)devices;
        got->run_index = (int)run_index;
        got->mode = strcmp(mode, "ddp") == 0 ? SD_EXP_MODE_DDP : SD_EXP_MODE_SCADLES;
        got->seed = (uint64_t)seed;
        got->step = step;
    }
    *out = f;
    return SD_OK;
fail:
    sd_st_close(f);
    return s;
}

sd_status sd_dist_ckpt_get(const sd_st_file *f, const char *name, sd_st_dtype dtype, size_t numel,
                           const sd_st_tensor **t) {
    const sd_st_tensor *x = sd_st_find(f, name);
    if (!x || x->dtype != dtype || x->numel != numel)
        return SD_FAIL(SD_ERR_FORMAT, "%s: tensor '%s' is %s; expected %s with %zu elements (the checkpoint is damaged "
                       "or belongs to another configuration)", sd_st_path(f), name,
                       x ? sd_st_dtype_name(x->dtype) : "missing", sd_st_dtype_name(dtype), numel);
    *t = x;
    return SD_OK;
}

/* One 8-byte scalar of the given dtype into *out. */
static sd_status get_scalar8(const sd_st_file *f, const char *name, sd_st_dtype dtype, void *out) {
    const sd_st_tensor *t = NULL;
    TRY(sd_dist_ckpt_get(f, name, dtype, 1, &t));
    memcpy(out, t->data, 8);
    return SD_OK;
}
sd_status sd_dist_ckpt_get_f64(const sd_st_file *f, const char *name, double *v) { return get_scalar8(f, name, SD_ST_F64, v); }
sd_status sd_dist_ckpt_get_i64(const sd_st_file *f, const char *name, int64_t *v) { return get_scalar8(f, name, SD_ST_I64, v); }
sd_status sd_dist_ckpt_get_u64(const sd_st_file *f, const char *name, uint64_t *v) { return get_scalar8(f, name, SD_ST_U64, v); }
sd_status sd_dist_ckpt_get_rng(const sd_st_file *f, const char *name, sd_rng *rng) {
    const sd_st_tensor *t = NULL;
    TRY(sd_dist_ckpt_get(f, name, SD_ST_U64, 4, &t));
    sd_rng r;
    memcpy(r.s, t->data, sizeof r.s);
    if (!(r.s[0] | r.s[1] | r.s[2] | r.s[3]))
        return SD_FAIL(SD_ERR_FORMAT, "%s: random state '%s' is all zeros (xoshiro cannot run from it); the checkpoint "
                       "is damaged", sd_st_path(f), name);
    *rng = r;
    return SD_OK;
}

/* ---- net and optimizer ------------------------------------------------------------------------- */
/* Backend memory -> a checkpoint tensor through a host copy. */
static sd_status put_backend_f32(sd_dist_ckpt_writer *cw, sd_backend *be, const char *name, const float *dev,
                                 size_t count) {
    float *h = malloc((count ? count : 1) * sizeof *h);
    if (!h) return SD_FAIL(SD_ERR_OOM, "checkpoint: host copy of '%s' (%zu floats)", name, count);
    sd_status s = count ? be->ops->download(be->ctx, h, dev, count * sizeof(float)) : SD_OK;
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, name, SD_ST_F32, 1, (int64_t[]){(int64_t)count}, h);
    free(h);
    TRY(s);
    return SD_OK;
}

sd_status sd_dist_ckpt_put_net(sd_dist_ckpt_writer *cw, sd_net *net, const sd_optimizer *opt) {
    sd_backend *be = sd_net_backend(net);
    TRY(be->ops->synchronize(be->ctx));
    TRY(put_backend_f32(cw, be, "net.params", sd_net_params(net), sd_net_param_count(net)));
    TRY(put_backend_f32(cw, be, "net.buffers", sd_net_buffers(net), sd_net_buffer_count(net)));
    TRY(sd_dist_ckpt_put_i64(cw, "net.batches_tracked", sd_net_batches_tracked(net)));
    TRY(put_backend_f32(cw, opt->be, "optim.momentum", opt->momentum_buf, opt->count));
    TRY(sd_dist_ckpt_put_i64(cw, "optim.step", opt->step));
    TRY(sd_dist_ckpt_put(cw, "optim.last_lr", SD_ST_F32, 0, NULL, &opt->last_lr));
    return SD_OK;
}

sd_status sd_dist_ckpt_check_finite(const sd_st_file *f) {
    static const struct {
        const char *name, *what;
    } parts[] = {{"net.params", "the model's parameters"},
                 {"net.buffers", "the batch-norm running statistics"},
                 {"optim.momentum", "the optimizer's momentum"}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        const sd_st_tensor *t = sd_st_find(f, parts[i].name);
        if (!t || t->dtype != SD_ST_F32) continue; /* (sd_dist_ckpt_get_net names a missing one) */
        const unsigned char *b = t->data;
        for (size_t k = 0; k < t->numel; k++) {
            float v;
            memcpy(&v, b + 4 * k, sizeof v); /* the file's data need not be aligned */
            if (!isfinite(v))
                return SD_FAIL(SD_ERR_FORMAT, "%s: %s hold NaN or Inf (element %zu of %s): the run that wrote it had "
                               "diverged, or the file was altered; resume from an earlier checkpoint, or start again with "
                               "a lower optimizer.lr", sd_st_path(f), parts[i].what, k, parts[i].name);
        }
    }
    return SD_OK;
}

sd_status sd_dist_ckpt_get_net(const sd_st_file *f, sd_net *net, sd_optimizer *opt) {
    const sd_st_tensor *p = NULL, *b = NULL, *m = NULL, *lr = NULL;
    size_t np = sd_net_param_count(net), nb = sd_net_buffer_count(net);
    TRY(sd_dist_ckpt_get(f, "net.params", SD_ST_F32, np, &p));
    TRY(sd_dist_ckpt_get(f, "net.buffers", SD_ST_F32, nb, &b));
    TRY(sd_dist_ckpt_get(f, "optim.momentum", SD_ST_F32, opt->count, &m));
    TRY(sd_dist_ckpt_get(f, "optim.last_lr", SD_ST_F32, 1, &lr));
    int64_t tracked, ostep;
    TRY(sd_dist_ckpt_get_i64(f, "net.batches_tracked", &tracked));
    TRY(sd_dist_ckpt_get_i64(f, "optim.step", &ostep));
    sd_backend *be = sd_net_backend(net);
    if (np) TRY(be->ops->upload(be->ctx, sd_net_params(net), p->data, np * sizeof(float)));
    if (nb) TRY(be->ops->upload(be->ctx, sd_net_buffers(net), b->data, nb * sizeof(float)));
    if (opt->count) TRY(opt->be->ops->upload(opt->be->ctx, opt->momentum_buf, m->data, opt->count * sizeof(float)));
    sd_net_set_batches_tracked(net, tracked);
    opt->step = ostep;
    memcpy(&opt->last_lr, lr->data, sizeof opt->last_lr);
    return SD_OK;
}

/* ---- ring buffer and sink ---------------------------------------------------------------------- */
/* Counters in a fixed order (ring.stats): received, accepted, rejected, dropped[0, SD_DROP_SEQ_JUMP),
 * consumed, truncated, bytes_accepted, bytes_consumed, samples, bytes, hw_samples, hw_bytes, then the
 * reasons added since (dropped[SD_DROP_SEQ_JUMP, SD_DROP_COUNT)). Checkpoints written before those
 * reasons existed hold RING_STATS_N_OLD counters; they read as zero. */
#define RING_STATS_N_OLD (3 + SD_DROP_SEQ_JUMP + 8)
#define RING_STATS_N (RING_STATS_N_OLD + SD_DROP_COUNT - SD_DROP_SEQ_JUMP)
/* The sink's sequence state (sink.seq): any, last, gaps, then restarts, resyncs (absent before). */
#define SINK_SEQ_N_OLD 3
#define SINK_SEQ_N 5
/* Per sample (ring.meta): dtype, ndim, dims[0..3], label, device. */
#define RING_META_N (2 + SD_MSG_MAX_NDIM + 2)

static void ring_stats_pack(const sd_ring_stats *s, uint64_t *v) {
    int k = 0;
    v[k++] = s->received;
    v[k++] = s->accepted;
    v[k++] = s->rejected;
    for (int i = 0; i < SD_DROP_SEQ_JUMP; i++) v[k++] = s->dropped[i];
    v[k++] = s->consumed;
    v[k++] = s->truncated;
    v[k++] = s->bytes_accepted;
    v[k++] = s->bytes_consumed;
    v[k++] = s->samples;
    v[k++] = s->bytes;
    v[k++] = s->hw_samples;
    v[k++] = s->hw_bytes;
    for (int i = SD_DROP_SEQ_JUMP; i < SD_DROP_COUNT; i++) v[k++] = s->dropped[i];
}

static void ring_stats_unpack(const uint64_t *v, size_t n, sd_ring_stats *s) {
    int k = 0;
    memset(s, 0, sizeof *s);
    s->received = v[k++];
    s->accepted = v[k++];
    s->rejected = v[k++];
    for (int i = 0; i < SD_DROP_SEQ_JUMP; i++) s->dropped[i] = v[k++];
    s->consumed = v[k++];
    s->truncated = v[k++];
    s->bytes_accepted = v[k++];
    s->bytes_consumed = v[k++];
    s->samples = (size_t)v[k++];
    s->bytes = (size_t)v[k++];
    s->hw_samples = (size_t)v[k++];
    s->hw_bytes = (size_t)v[k++];
    for (int i = SD_DROP_SEQ_JUMP; i < SD_DROP_COUNT && (size_t)k < n; i++) s->dropped[i] = v[k++];
}

sd_status sd_dist_ckpt_put_ring(sd_dist_ckpt_writer *cw, sd_ring *ring, const sd_sink *sink) {
    size_t held = sd_ring_size(ring), n = 0;
    sd_ring_sample *views = calloc(held ? held : 1, sizeof *views);
    if (!views) return SD_FAIL(SD_ERR_OOM, "checkpoint: views of %zu buffered samples", held);
    sd_status s = sd_ring_acquire(ring, held, views, &n);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += views[i].nbytes;
    uint8_t *payload = malloc(bytes ? bytes : 1);
    uint64_t *nbytes = malloc((n ? n : 1) * sizeof *nbytes), *seq = malloc((n ? n : 1) * sizeof *seq);
    int32_t *meta = malloc((n ? n : 1) * RING_META_N * sizeof *meta);
    if (s == SD_OK && (!payload || !nbytes || !seq || !meta))
        s = SD_FAIL(SD_ERR_OOM, "checkpoint: copy of %zu buffered samples (%zu bytes)", n, bytes);
    if (s == SD_OK) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            const sd_msg_meta *m = &views[i].meta;
            memcpy(payload + off, views[i].data, views[i].nbytes);
            off += views[i].nbytes;
            nbytes[i] = views[i].nbytes;
            seq[i] = m->seq;
            int32_t *r = meta + i * RING_META_N;
            r[0] = (int32_t)m->dtype;
            r[1] = m->ndim;
            for (int d = 0; d < SD_MSG_MAX_NDIM; d++) r[2 + d] = (int32_t)m->dims[d];
            r[2 + SD_MSG_MAX_NDIM] = m->label;
            r[3 + SD_MSG_MAX_NDIM] = (int32_t)m->device;
        }
    }
    if (n) (void)sd_ring_release(ring, 0); /* hand them back untouched */
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, "ring.payload", SD_ST_U8, 1, (int64_t[]){(int64_t)bytes}, payload);
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, "ring.nbytes", SD_ST_U64, 1, (int64_t[]){(int64_t)n}, nbytes);
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, "ring.seq", SD_ST_U64, 1, (int64_t[]){(int64_t)n}, seq);
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, "ring.meta", SD_ST_I32, 2, (int64_t[]){(int64_t)n, RING_META_N}, meta);
    if (s == SD_OK) {
        sd_ring_stats st;
        sd_ring_get_stats(ring, &st);
        uint64_t v[RING_STATS_N];
        ring_stats_pack(&st, v);
        s = sd_dist_ckpt_put(cw, "ring.stats", SD_ST_U64, 1, (int64_t[]){RING_STATS_N}, v);
        if (s == SD_OK) s = sd_dist_ckpt_put_f64(cw, "ring.blocked_s", st.blocked_s);
    }
    if (s == SD_OK) {
        uint64_t q[SINK_SEQ_N] = {sink->seq.any ? 1u : 0u, sink->seq.last, sink->seq.gaps, sink->seq.restarts,
                                  sink->seq.resyncs};
        s = sd_dist_ckpt_put(cw, "sink.seq", SD_ST_U64, 1, (int64_t[]){SINK_SEQ_N}, q);
    }
    free(views);
    free(payload);
    free(nbytes);
    free(seq);
    free(meta);
    TRY(s);
    return SD_OK;
}

sd_status sd_dist_ckpt_get_ring(const sd_st_file *f, sd_ring *ring, sd_sink *sink) {
    const sd_st_tensor *nb = NULL, *pay = NULL, *sq = NULL, *mt = NULL, *stt = NULL, *sk = NULL;
    const sd_st_tensor *t = sd_st_find(f, "ring.nbytes");
    size_t n = t ? t->numel : 0;
    TRY(sd_dist_ckpt_get(f, "ring.nbytes", SD_ST_U64, n, &nb));
    TRY(sd_dist_ckpt_get(f, "ring.seq", SD_ST_U64, n, &sq));
    TRY(sd_dist_ckpt_get(f, "ring.meta", SD_ST_I32, n * RING_META_N, &mt));
    const sd_st_tensor *st0 = sd_st_find(f, "ring.stats"), *sk0 = sd_st_find(f, "sink.seq");
    TRY(sd_dist_ckpt_get(f, "ring.stats", SD_ST_U64, st0 && st0->numel == RING_STATS_N_OLD ? RING_STATS_N_OLD : RING_STATS_N,
                         &stt));
    TRY(sd_dist_ckpt_get(f, "sink.seq", SD_ST_U64, sk0 && sk0->numel == SINK_SEQ_N_OLD ? SINK_SEQ_N_OLD : SINK_SEQ_N, &sk));
    const sd_st_tensor *pt = sd_st_find(f, "ring.payload");
    TRY(sd_dist_ckpt_get(f, "ring.payload", SD_ST_U8, pt ? pt->numel : 0, &pay));
    double blocked;
    TRY(sd_dist_ckpt_get_f64(f, "ring.blocked_s", &blocked));
    /* copies: the reader's data need not be aligned */
    uint64_t *nbytes = malloc((n ? n : 1) * sizeof *nbytes), *seq = malloc((n ? n : 1) * sizeof *seq);
    int32_t *meta = malloc((n ? n : 1) * RING_META_N * sizeof *meta);
    sd_ring_sample *views = calloc(n ? n : 1, sizeof *views);
    sd_status s = SD_OK;
    if (!nbytes || !seq || !meta || !views) s = SD_FAIL(SD_ERR_OOM, "checkpoint: %zu buffered samples", n);
    if (s == SD_OK) {
        memcpy(nbytes, nb->data, n * sizeof *nbytes);
        memcpy(seq, sq->data, n * sizeof *seq);
        memcpy(meta, mt->data, n * RING_META_N * sizeof *meta);
        size_t off = 0;
        for (size_t i = 0; i < n && s == SD_OK; i++) {
            if (nbytes[i] > pay->nbytes - off) {
                s = SD_FAIL(SD_ERR_FORMAT, "%s: buffered sample %zu runs past ring.payload; the checkpoint is damaged",
                            sd_st_path(f), i);
                break;
            }
            const int32_t *r = meta + i * RING_META_N;
            sd_msg_meta *m = &views[i].meta;
            m->dtype = (sd_msg_dtype)r[0];
            m->ndim = r[1];
            for (int d = 0; d < SD_MSG_MAX_NDIM; d++) m->dims[d] = (uint32_t)r[2 + d];
            m->label = r[2 + SD_MSG_MAX_NDIM];
            m->device = (uint32_t)r[3 + SD_MSG_MAX_NDIM];
            m->seq = seq[i];
            views[i].data = (const uint8_t *)pay->data + off;
            views[i].nbytes = (size_t)nbytes[i];
            off += nbytes[i];
        }
        if (s == SD_OK && off != pay->nbytes)
            s = SD_FAIL(SD_ERR_FORMAT, "%s: ring.payload has %zu bytes but the samples add up to %zu; the checkpoint "
                        "is damaged", sd_st_path(f), pay->nbytes, off);
    }
    if (s == SD_OK) {
        uint64_t v[RING_STATS_N];
        memcpy(v, stt->data, stt->numel * sizeof *v);
        sd_ring_stats st;
        ring_stats_unpack(v, stt->numel, &st);
        st.blocked_s = blocked;
        s = sd_ring_restore(ring, views, n, &st);
    }
    if (s == SD_OK) {
        uint64_t q[SINK_SEQ_N] = {0};
        memcpy(q, sk->data, sk->numel * sizeof *q);
        sink->seq = (sd_msg_seq){.any = q[0] != 0, .last = q[1], .gaps = q[2], .restarts = q[3], .resyncs = q[4]};
    }
    free(nbytes);
    free(seq);
    free(meta);
    free(views);
    TRY(s);
    return SD_OK;
}

/* ---- a component's own state through base/archive.h (the stream source's position) ----------- */
static sd_st_dtype st_dtype(sd_arc_dtype d) {
    switch (d) {
    case SD_ARC_F32: return SD_ST_F32;
    case SD_ARC_F64: return SD_ST_F64;
    case SD_ARC_I32: return SD_ST_I32;
    case SD_ARC_I64: return SD_ST_I64;
    case SD_ARC_U8: return SD_ST_U8;
    case SD_ARC_U64: return SD_ST_U64;
    }
    return SD_ST_U8;
}

static sd_status arc_put(void *ctx, const char *name, sd_arc_dtype dtype, int ndim, const int64_t *shape, const void *data) {
    return sd_dist_ckpt_put(ctx, name, st_dtype(dtype), ndim, shape, data);
}
static sd_status arc_put_get(void *ctx, const char *name, sd_arc_dtype dtype, size_t numel, const void **data, size_t *got) {
    (void)ctx, (void)dtype, (void)numel, (void)data, (void)got;
    return SD_FAIL(SD_ERR_INVALID, "checkpoint: '%s' read from an archive being written", name);
}
static const char *arc_put_where(void *ctx) {
    (void)ctx;
    return "the checkpoint being written";
}
static const sd_archive_ops writer_archive = {.put = arc_put, .get = arc_put_get, .where = arc_put_where};

static sd_status arc_get_put(void *ctx, const char *name, sd_arc_dtype dtype, int ndim, const int64_t *shape, const void *data) {
    (void)dtype, (void)ndim, (void)shape, (void)data;
    return SD_FAIL(SD_ERR_INVALID, "%s: '%s' written to a checkpoint opened for reading", sd_st_path(ctx), name);
}
static sd_status arc_get(void *ctx, const char *name, sd_arc_dtype dtype, size_t numel, const void **data, size_t *got) {
    const sd_st_file *f = ctx;
    const sd_st_tensor *t = sd_st_find(f, name);
    if (numel == 0 && t && t->dtype == st_dtype(dtype)) numel = t->numel; /* any count */
    TRY(sd_dist_ckpt_get(f, name, st_dtype(dtype), numel, &t));
    *data = t->data;
    if (got) *got = t->numel;
    return SD_OK;
}
static const char *arc_get_where(void *ctx) { return sd_st_path(ctx); }
static const sd_archive_ops reader_archive = {.put = arc_get_put, .get = arc_get, .where = arc_get_where};

sd_status sd_dist_ckpt_put_source(sd_dist_ckpt_writer *cw, const sd_source *src) {
    if (!src->ops || !src->ops->save) return SD_OK;
    sd_archive a = {&writer_archive, cw};
    return src->ops->save(src->ctx, &a);
}

sd_status sd_dist_ckpt_get_source(const sd_st_file *f, const sd_source *src) {
    if (!src->ops || !src->ops->load) return SD_OK;
    sd_archive a = {&reader_archive, (void *)f};
    return src->ops->load(src->ctx, &a);
}

/* ---- injection pool ---------------------------------------------------------------------------- */
#define POOL_STATS_N 7 /* shared, evicted, held, drawn_by_others, received, draws, short_draws */

sd_status sd_dist_ckpt_put_pool(sd_dist_ckpt_writer *cw, const sd_inject_pool *p, int devices) {
    size_t D = (size_t)devices;
    uint64_t *st = malloc(D * POOL_STATS_N * sizeof *st), *flow = malloc(D * D * sizeof *flow);
    sd_status s = SD_OK;
    if (!st || !flow) s = SD_FAIL(SD_ERR_OOM, "checkpoint: injection pool counters");
    for (size_t i = 0; i < D && s == SD_OK; i++) {
        sd_inject_stats x;
        s = sd_inject_pool_stats(p, (int)i, &x);
        uint64_t *r = st + i * POOL_STATS_N;
        r[0] = x.shared;
        r[1] = x.evicted;
        r[2] = x.held;
        r[3] = x.drawn_by_others;
        r[4] = x.received;
        r[5] = x.draws;
        r[6] = x.short_draws;
        for (size_t j = 0; j < D; j++) flow[i * D + j] = sd_inject_pool_flow(p, (int)i, (int)j);
    }
    if (s == SD_OK)
        s = sd_dist_ckpt_put(cw, "inject.stats", SD_ST_U64, 2, (int64_t[]){(int64_t)D, POOL_STATS_N}, st);
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, "inject.flow", SD_ST_U64, 2, (int64_t[]){(int64_t)D, (int64_t)D}, flow);
    free(st);
    free(flow);
    TRY(s);
    return SD_OK;
}

sd_status sd_dist_ckpt_get_pool(const sd_st_file *f, sd_inject_pool *p, int devices) {
    size_t D = (size_t)devices;
    const sd_st_tensor *ts = NULL, *tf = NULL;
    TRY(sd_dist_ckpt_get(f, "inject.stats", SD_ST_U64, D * POOL_STATS_N, &ts));
    TRY(sd_dist_ckpt_get(f, "inject.flow", SD_ST_U64, D * D, &tf));
    uint64_t *st = malloc(D * POOL_STATS_N * sizeof *st), *flow = malloc(D * D * sizeof *flow);
    sd_inject_stats *x = calloc(D, sizeof *x);
    sd_status s = SD_OK;
    if (!st || !flow || !x) s = SD_FAIL(SD_ERR_OOM, "checkpoint: injection pool counters");
    if (s == SD_OK) {
        memcpy(st, ts->data, D * POOL_STATS_N * sizeof *st);
        memcpy(flow, tf->data, D * D * sizeof *flow);
        for (size_t i = 0; i < D; i++) {
            const uint64_t *r = st + i * POOL_STATS_N;
            x[i] = (sd_inject_stats){.shared = r[0], .evicted = r[1], .held = r[2], .drawn_by_others = r[3],
                                     .received = r[4], .draws = r[5], .short_draws = r[6]};
        }
        s = sd_inject_pool_restore_counters(p, x, flow);
    }
    free(st);
    free(flow);
    free(x);
    TRY(s);
    return SD_OK;
}

/* ---- compressor -------------------------------------------------------------------------------- */
sd_status sd_dist_ckpt_put_compressor(sd_dist_ckpt_writer *cw, const sd_compressor *z) {
    size_t n = sd_compressor_count(z);
    float *h = malloc((n ? n : 1) * sizeof *h); /* host copies: the state may be in GPU memory */
    if (!h) return SD_FAIL(SD_ERR_OOM, "checkpoint: residual of %zu floats", n);
    sd_status s = sd_compressor_get_residual(z, h);
    if (s == SD_OK) s = sd_dist_ckpt_put(cw, "compress.residual", SD_ST_F32, 1, (int64_t[]){(int64_t)n}, h);
    if (s == SD_OK && sd_compressor_velocity(z)) { /* momentum correction */
        s = sd_compressor_get_velocity(z, h);
        if (s == SD_OK) s = sd_dist_ckpt_put(cw, "compress.velocity", SD_ST_F32, 1, (int64_t[]){(int64_t)n}, h);
    }
    free(h);
    TRY(s);
    sd_compress_state st;
    sd_compressor_get_state(z, &st);
    int64_t iv[3] = {(int64_t)st.steps, st.level, st.window_steps};
    double dv[3] = {st.loss_sum, st.window_gain_sum, st.last_window_gain};
    TRY(sd_dist_ckpt_put(cw, "compress.counts", SD_ST_I64, 1, (int64_t[]){3}, iv));
    TRY(sd_dist_ckpt_put(cw, "compress.sums", SD_ST_F64, 1, (int64_t[]){3}, dv));
    return SD_OK;
}

sd_status sd_dist_ckpt_get_compressor(const sd_st_file *f, sd_compressor *z) {
    size_t n = sd_compressor_count(z);
    const sd_st_tensor *r = NULL, *c = NULL, *sm = NULL;
    TRY(sd_dist_ckpt_get(f, "compress.residual", SD_ST_F32, n, &r));
    if (sd_compressor_velocity(z)) { /* momentum correction */
        const sd_st_tensor *v;
        TRY(sd_dist_ckpt_get(f, "compress.velocity", SD_ST_F32, n, &v));
        TRY(sd_compressor_set_velocity(z, (const float *)v->data, n));
    }
    TRY(sd_dist_ckpt_get(f, "compress.counts", SD_ST_I64, 3, &c));
    TRY(sd_dist_ckpt_get(f, "compress.sums", SD_ST_F64, 3, &sm));
    int64_t iv[3];
    double dv[3];
    memcpy(iv, c->data, sizeof iv);
    memcpy(dv, sm->data, sizeof dv);
    if (iv[0] < 0 || iv[1] < INT32_MIN || iv[1] > INT32_MAX || iv[2] < INT32_MIN || iv[2] > INT32_MAX)
        return SD_FAIL(SD_ERR_FORMAT, "%s: compressor counters out of range; the checkpoint is damaged", sd_st_path(f));
    sd_compress_state st = {.steps = (uint64_t)iv[0], .level = (int)iv[1], .window_steps = (int)iv[2],
                            .loss_sum = dv[0], .window_gain_sum = dv[1], .last_window_gain = dv[2]};
    TRY(sd_compressor_set_state(z, &st));
    /* A residual of all zero bits is what a fresh compressor holds: leave it so (setting it would
     * make the compressor add zeros that it otherwise skips). */
    const unsigned char *b = r->data;
    bool zero = true;
    for (size_t i = 0; i < r->nbytes && zero; i++) zero = b[i] == 0;
    if (!zero) {
        float *h = malloc(n * sizeof *h);
        if (!h) return SD_FAIL(SD_ERR_OOM, "checkpoint: residual of %zu floats", n);
        memcpy(h, r->data, n * sizeof *h);
        sd_status s = sd_compressor_set_residual(z, h, n);
        free(h);
        TRY(s);
    }
    return SD_OK;
}

/* ---- run.safetensors ----------------------------------------------------------------------------- */
/* Per finished run: F64 time_to_target_s, final_accuracy, best_accuracy, clock_s, wall_s; U64 mode,
 * seed, steps, skipped_steps, samples_trained, samples_injected, samples_dropped, peak_buffer,
 * bytes_sent, devices, bn_identical, shared[64]. */
#define SUM_F64 5
#define SUM_U64 (11 + 64)

sd_status sd_dist_ckpt_write_run(const char *dir, const sd_dist_ckpt_id *id, const sd_run_summary *done,
                                 const char *reason) {
    sd_dist_ckpt_writer cw;
    TRY(sd_dist_ckpt_writer_begin(&cw, id, -1, reason));
    int k = id->run_index;
    if (k > 0 && !done) {
        sd_dist_ckpt_writer_abort(&cw);
        return SD_FAIL(SD_ERR_INVALID, "checkpoint: run %d needs the summaries of the runs before it", k);
    }
    double *f = calloc((size_t)(k ? k : 1) * SUM_F64, sizeof *f);
    uint64_t *u = calloc((size_t)(k ? k : 1) * SUM_U64, sizeof *u);
    sd_status s = SD_OK;
    if (!f || !u) s = SD_FAIL(SD_ERR_OOM, "checkpoint: run summaries");
    for (int i = 0; i < k && s == SD_OK; i++) {
        const sd_run_summary *r = &done[i];
        double *fr = f + (size_t)i * SUM_F64;
        uint64_t *ur = u + (size_t)i * SUM_U64;
        fr[0] = r->time_to_target_s;
        fr[1] = r->final_accuracy;
        fr[2] = r->best_accuracy;
        fr[3] = r->clock_s;
        fr[4] = r->wall_s;
        ur[0] = (uint64_t)r->mode;
        ur[1] = r->seed;
        ur[2] = (uint64_t)r->steps;
        ur[3] = (uint64_t)r->skipped_steps;
        ur[4] = r->samples_trained;
        ur[5] = r->samples_injected;
        ur[6] = r->samples_dropped;
        ur[7] = r->peak_buffer;
        ur[8] = r->bytes_sent;
        ur[9] = (uint64_t)r->devices;
        ur[10] = r->bn_identical ? 1u : 0u;
        memcpy(ur + 11, r->shared, 64 * sizeof *ur);
    }
    if (s == SD_OK) s = sd_dist_ckpt_put(&cw, "runs.f64", SD_ST_F64, 2, (int64_t[]){k, SUM_F64}, f);
    if (s == SD_OK) s = sd_dist_ckpt_put(&cw, "runs.u64", SD_ST_U64, 2, (int64_t[]){k, SUM_U64}, u);
    free(f);
    free(u);
    if (s != SD_OK) {
        sd_dist_ckpt_writer_abort(&cw);
        TRY(s);
    }
    char path[1100];
    sd_dist_ckpt_path(dir, -1, path, sizeof path);
    TRY(sd_dist_ckpt_writer_finish(&cw, path));
    return SD_OK;
}

sd_status sd_dist_ckpt_read_run(const char *dir, const sd_dist_ckpt_id *want, sd_dist_ckpt_id *got,
                                sd_run_summary *done) {
    char path[1100];
    sd_dist_ckpt_path(dir, -1, path, sizeof path);
    sd_st_file *f = NULL;
    TRY(sd_dist_ckpt_open(path, want, -1, &f, got));
    int k = got->run_index;
    const sd_st_tensor *tf = NULL, *tu = NULL;
    sd_status s = sd_dist_ckpt_get(f, "runs.f64", SD_ST_F64, (size_t)k * SUM_F64, &tf);
    if (s == SD_OK) s = sd_dist_ckpt_get(f, "runs.u64", SD_ST_U64, (size_t)k * SUM_U64, &tu);
    for (int i = 0; i < k && s == SD_OK; i++) {
        double fr[SUM_F64];
        uint64_t ur[SUM_U64];
        memcpy(fr, (const char *)tf->data + (size_t)i * sizeof fr, sizeof fr);
        memcpy(ur, (const char *)tu->data + (size_t)i * sizeof ur, sizeof ur);
        sd_run_summary *r = &done[i];
        memset(r, 0, sizeof *r);
        r->time_to_target_s = fr[0];
        r->final_accuracy = fr[1];
        r->best_accuracy = fr[2];
        r->clock_s = fr[3];
        r->wall_s = fr[4];
        r->mode = ur[0] == SD_EXP_MODE_DDP ? SD_EXP_MODE_DDP : SD_EXP_MODE_SCADLES;
        r->seed = ur[1];
        r->steps = (int64_t)ur[2];
        r->skipped_steps = (int64_t)ur[3];
        r->samples_trained = ur[4];
        r->samples_injected = ur[5];
        r->samples_dropped = ur[6];
        r->peak_buffer = ur[7];
        r->bytes_sent = ur[8];
        r->devices = (int)ur[9];
        r->bn_identical = ur[10] != 0;
        memcpy(r->shared, ur + 11, 64 * sizeof *ur);
    }
    sd_st_close(f);
    TRY(s);
    return SD_OK;
}
