/* checkpoint.c: model checkpoints (checkpoint.h) over the safetensors reader and writer. */
#include "engine/checkpoint.h"

#include <stdio.h>
#include <string.h>

#define NBT_SUFFIX ".num_batches_tracked"
#define MEAN_SUFFIX ".running_mean"
#define LIST_MAX 5 /* names listed in a missing/unexpected message */

/* The BN prefix of a buffer named "<prefix>.running_mean" (length in *len), or NULL. */
static const char *bn_prefix(const sd_param *p, size_t *len) {
    size_t n = strlen(p->name), s = strlen(MEAN_SUFFIX);
    if (p->trainable || n <= s || strcmp(p->name + n - s, MEAN_SUFFIX) != 0) return NULL;
    *len = n - s;
    return p->name;
}

static void nbt_name(char *out, size_t cap, const char *prefix, size_t len) {
    snprintf(out, cap, "%.*s%s", (int)len, prefix, NBT_SUFFIX);
}

/* True when name is "<bn>.num_batches_tracked" for a BN layer <bn> of the net. */
static bool is_nbt_of_net(const sd_net *net, const char *name) {
    size_t n = strlen(name), s = strlen(NBT_SUFFIX);
    if (n <= s || strcmp(name + n - s, NBT_SUFFIX) != 0 || n - s + sizeof MEAN_SUFFIX > SD_NAME_MAX) return false;
    char mean[SD_NAME_MAX];
    snprintf(mean, sizeof mean, "%.*s%s", (int)(n - s), name, MEAN_SUFFIX);
    const sd_param *p = sd_net_find(net, mean);
    return p && !p->trainable;
}

static void fmt_shape(char *out, size_t cap, int ndim, const int64_t *shape) {
    size_t len = 0;
    len += (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < cap) snprintf(out + len, cap - len, "]");
}

static sd_status check_net(sd_net *net, const char *path, const char *what) {
    if (!net || !path || !path[0])
        return SD_FAIL(SD_ERR_INVALID, "checkpoint: %s needs a net and a non-empty path", what);
    const sd_backend *be = sd_net_backend(net);
    if (!be || !be->ops || (sd_net_param_count(net) > 0 && !sd_net_params(net)) ||
        (sd_net_buffer_count(net) > 0 && !sd_net_buffers(net)))
        return SD_FAIL(SD_ERR_INVALID, "checkpoint: %s '%.400s': the net is not finalised; call sd_net_finalize first",
                       what, path);
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * save
 * ------------------------------------------------------------------------------------------- */

static sd_status save_into(sd_net *net, sd_st_writer *w, const char *path, const sd_ckpt_meta *meta) {
    sd_backend *be = sd_net_backend(net);
    bool has_format = false;
    if (meta) {
        if (meta->count < 0 || (meta->count > 0 && !meta->items))
            return SD_FAIL(SD_ERR_INVALID, "checkpoint: save '%.400s': metadata of %d items without an array", path,
                           meta->count);
        for (int i = 0; i < meta->count; i++) {
            TRY(sd_st_writer_add_metadata(w, meta->items[i].key, meta->items[i].value));
            if (!strcmp(meta->items[i].key, "format")) has_format = true;
        }
    }
    if (!has_format) TRY(sd_st_writer_add_metadata(w, "format", "pt"));

    TRY(be->ops->synchronize(be->ctx));
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        const sd_param *p = sd_net_tensor(net, i);
        int64_t shape[SD_MAX_NDIM];
        for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
        void *host = NULL;
        TRY(sd_st_writer_add_buffer(w, p->name, SD_ST_F32, p->ndim, shape, &host));
        TRY(be->ops->download(be->ctx, host, sd_net_tensor_data(net, p), p->count * sizeof(float)));
    }
    int64_t tracked = sd_net_batches_tracked(net);
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        size_t len;
        const char *prefix = bn_prefix(sd_net_tensor(net, i), &len);
        if (!prefix) continue;
        char name[SD_NAME_MAX + sizeof NBT_SUFFIX];
        nbt_name(name, sizeof name, prefix, len);
        TRY(sd_st_writer_add(w, name, SD_ST_I64, 0, NULL, &tracked));
    }
    TRY(sd_st_writer_write(w, path));
    return SD_OK;
}

sd_status sd_checkpoint_save(sd_net *net, const char *path, const sd_ckpt_meta *meta) {
    TRY(check_net(net, path, "save"));
    sd_st_writer *w = NULL;
    TRY(sd_st_writer_create(&w));
    sd_status s = save_into(net, w, path, meta);
    sd_st_writer_destroy(w);
    if (s != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * load
 * ------------------------------------------------------------------------------------------- */

/* Appends "name" to a comma-separated list of at most LIST_MAX names. */
static void list_add(char *list, size_t cap, int *count, const char *name) {
    if (*count < LIST_MAX) {
        size_t len = strlen(list);
        snprintf(list + len, cap - len, "%s'%.120s'", *count ? ", " : "", name);
    }
    (*count)++;
}

static void list_finish(char *list, size_t cap, int count) {
    if (count > LIST_MAX) {
        size_t len = strlen(list);
        snprintf(list + len, cap - len, " and %d more", count - LIST_MAX);
    }
}

/* The file's "<bn>.num_batches_tracked" when tensor i of the net is a BN layer's running_mean
 * (its name written to `name`), else NULL. */
static const sd_st_tensor *bn_counter(sd_net *net, const sd_st_file *f, int i, char *name, size_t size) {
    size_t len;
    const char *prefix = bn_prefix(sd_net_tensor(net, i), &len);
    if (!prefix) return NULL;
    nbt_name(name, size, prefix, len);
    return sd_st_find(f, name);
}

/* Every check, before any byte is copied into the net. */
static sd_status validate(sd_net *net, const sd_st_file *f, bool strict) {
    const char *path = sd_st_path(f);
    char list[800] = "";
    int missing = 0;
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        const sd_param *p = sd_net_tensor(net, i);
        const sd_st_tensor *t = sd_st_find(f, p->name);
        if (!t) {
            if (strict) list_add(list, sizeof list, &missing, p->name);
            continue;
        }
        if (t->dtype != SD_ST_F32)
            return SD_FAIL(SD_ERR_FORMAT, "checkpoint '%.400s': tensor '%.120s' is %s; the model needs F32 (convert "
                                          "it with .float() before saving)", path, p->name, sd_st_dtype_name(t->dtype));
        bool same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            int64_t want[SD_MAX_NDIM];
            for (int d = 0; d < p->ndim; d++) want[d] = p->shape[d];
            char a[160], b[160];
            fmt_shape(a, sizeof a, t->ndim, t->shape);
            fmt_shape(b, sizeof b, p->ndim, want);
            return SD_FAIL(SD_ERR_SHAPE, "checkpoint '%.400s': tensor '%.120s' has shape %s but the model has %s "
                                         "(a different model or width?)", path, p->name, a, b);
        }
    }
    if (missing) {
        list_finish(list, sizeof list, missing);
        return SD_FAIL(SD_ERR_FORMAT, "checkpoint '%.400s' lacks %d tensor%s of the model: %s (load with strict=false "
                                      "to keep the model's values)", path, missing, missing == 1 ? "" : "s", list);
    }
    /* BN counters: optional, but well-formed when present. */
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        char name[SD_NAME_MAX + sizeof NBT_SUFFIX];
        const sd_st_tensor *t = bn_counter(net, f, i, name, sizeof name);
        if (!t) continue;
        if (t->dtype != SD_ST_I64)
            return SD_FAIL(SD_ERR_FORMAT, "checkpoint '%.400s': tensor '%.120s' is %s; PyTorch writes I64", path, name,
                           sd_st_dtype_name(t->dtype));
        if (t->ndim != 0) {
            char a[160];
            fmt_shape(a, sizeof a, t->ndim, t->shape);
            return SD_FAIL(SD_ERR_SHAPE, "checkpoint '%.400s': tensor '%.120s' has shape %s but the model has []", path,
                           name, a);
        }
    }
    if (strict) {
        int extra = 0;
        list[0] = '\0';
        for (int i = 0; i < sd_st_count(f); i++) {
            const char *name = sd_st_tensor_at(f, i)->name;
            if (!sd_net_find(net, name) && !is_nbt_of_net(net, name)) list_add(list, sizeof list, &extra, name);
        }
        if (extra) {
            list_finish(list, sizeof list, extra);
            return SD_FAIL(SD_ERR_FORMAT, "checkpoint '%.400s' has %d tensor%s the model lacks: %s (a different "
                                          "model? load with strict=false to ignore them)", path, extra,
                           extra == 1 ? "" : "s", list);
        }
    }
    return SD_OK;
}

static sd_status load_from(sd_net *net, const sd_st_file *f, bool strict) {
    TRY(validate(net, f, strict));
    sd_backend *be = sd_net_backend(net);
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        const sd_param *p = sd_net_tensor(net, i);
        const sd_st_tensor *t = sd_st_find(f, p->name);
        if (!t) continue;
        TRY(be->ops->upload(be->ctx, sd_net_tensor_data(net, p), t->data, t->nbytes));
    }
    /* The net keeps one counter for all BN layers (they all see every training forward): take the
     * largest value the file holds (PyTorch's are equal unless layers were trained apart). */
    int64_t tracked = -1;
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        char name[SD_NAME_MAX + sizeof NBT_SUFFIX];
        const sd_st_tensor *t = bn_counter(net, f, i, name, sizeof name);
        if (!t) continue;
        int64_t v;
        memcpy(&v, t->data, sizeof v);
        if (v > tracked) tracked = v;
    }
    if (tracked >= 0) sd_net_set_batches_tracked(net, tracked);
    TRY(be->ops->synchronize(be->ctx));
    return SD_OK;
}

sd_status sd_checkpoint_load(sd_net *net, const char *path, bool strict) {
    TRY(check_net(net, path, "load"));
    sd_st_file *f = NULL;
    TRY(sd_st_open(path, &f));
    sd_status s = load_from(net, f, strict);
    sd_st_close(f);
    if (s != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return s;
}
