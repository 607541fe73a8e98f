/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (sd_st_open, engine/safetensors.h)
 * and, on the same bytes, the checkpoint loader (sd_checkpoint_load, engine/checkpoint.h).
 *
 * Input: the file itself, written to a memfd and opened by its /proc/self/fd path. After a
 * successful open every tensor and metadata pair is checked against what the header promises:
 * known dtype, numel x element size = nbytes = end - begin, data inside the file (every byte is
 * read, so ASan checks it), names unique and found by sd_st_find, metadata found by
 * sd_st_metadata. Then the file is loaded as a checkpoint, strict and not, into a tiny network
 * (fz_tiny_net, made once); a failed load must leave the network's values unchanged.
 * Inputs over 4 MiB are skipped. */
#include "tests/fuzz/fuzz_util.h"

#include "engine/checkpoint.h"
#include "engine/safetensors.h"

#define FZ_ST_MAX ((size_t)4 << 20)

static int fd_file = -1;
static sd_backend be;
static sd_net *net;
static float *snap_a, *snap_b;
static size_t snap_n;

static void net_init(void) {
    if (net) return;
    FZ_CHECK(sd_backend_cpu_create(&be, 1) == SD_OK, "CPU backend");
    FZ_CHECK(fz_tiny_net(&be, &net) == SD_OK, "tiny net");
    snap_n = sd_net_param_count(net) + sd_net_buffer_count(net);
    snap_a = malloc(snap_n * sizeof(float));
    snap_b = malloc(snap_n * sizeof(float));
    FZ_CHECK(snap_a && snap_b, "out of memory");
}

/* The net's parameters then buffers, into out. */
static void snapshot(float *out) {
    size_t np = sd_net_param_count(net), nb = sd_net_buffer_count(net);
    be.ops->download(be.ctx, out, sd_net_params(net), np * sizeof(float));
    if (nb) be.ops->download(be.ctx, out + np, sd_net_buffers(net), nb * sizeof(float));
}

static void check_file(const sd_st_file *f, size_t size) {
    int count = sd_st_count(f);
    FZ_CHECK(count >= 0, "%d tensors", count);
    for (int i = 0; i < count; i++) {
        const sd_st_tensor *t = sd_st_tensor_at(f, i);
        FZ_CHECK(t && t->name, "tensor %d missing", i);
        size_t es = sd_st_dtype_size(t->dtype);
        FZ_CHECK(es > 0, "tensor '%s': dtype %d", t->name, (int)t->dtype);
        FZ_CHECK(t->ndim >= 0 && t->ndim <= SD_ST_MAX_NDIM, "tensor '%s': ndim %d", t->name, t->ndim);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FZ_CHECK(t->shape[d] >= 0, "tensor '%s': dim %d = %lld", t->name, d, (long long)t->shape[d]);
            numel *= (size_t)t->shape[d];
        }
        FZ_CHECK(numel == t->numel && t->numel * es == t->nbytes && t->end - t->begin == t->nbytes &&
                     t->begin <= t->end && t->end <= size,
                 "tensor '%s': numel %zu (shape says %zu), nbytes %zu, offsets [%llu, %llu], file %zu", t->name,
                 t->numel, numel, t->nbytes, (unsigned long long)t->begin, (unsigned long long)t->end, size);
        if (t->nbytes) FZ_CHECK(t->data != NULL, "tensor '%s': no data", t->name);
        (void)fz_touch(t->data, t->nbytes);
        const sd_st_tensor *g = sd_st_find(f, t->name);
        FZ_CHECK(g && !strcmp(g->name, t->name), "sd_st_find('%s') misses it", t->name);
        FZ_CHECK(sd_st_dtype_name(t->dtype)[0] != '?', "tensor '%s': dtype has no name", t->name);
    }
    FZ_CHECK(sd_st_tensor_at(f, count) == NULL && sd_st_tensor_at(f, -1) == NULL, "tensor_at out of range");
    int nm = sd_st_metadata_count(f);
    for (int i = 0; i < nm; i++) {
        const char *k = NULL, *v = NULL;
        FZ_CHECK(sd_st_metadata_at(f, i, &k, &v) && k && v, "metadata %d missing", i);
        const char *w = sd_st_metadata(f, k);
        FZ_CHECK(w && !strcmp(w, v), "sd_st_metadata('%s') gives '%s', not '%s'", k, w ? w : "(null)", v);
    }
    FZ_CHECK(!sd_st_metadata_at(f, nm, NULL, NULL), "metadata_at out of range");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FZ_ST_MAX) return 0;
    int fd = fz_memfd(&fd_file, "safetensors");
    fz_fill(fd, data, size);
    char path[64];
    fz_fd_path(fd, path, sizeof path);

    sd_st_file *f = (sd_st_file *)(uintptr_t)1; /* must be reset to NULL on failure */
    sd_status s = sd_st_open(path, &f);
    fz_report("sd_st_open", s);
    if (s != SD_OK) {
        FZ_CHECK(f == NULL, "a failed open (%s) left *out set", sd_status_str(s));
        return 0;
    }
    FZ_CHECK(f != NULL, "open succeeded without a file");
    FZ_CHECK(!strcmp(sd_st_path(f), path), "path '%s'", sd_st_path(f));
    check_file(f, size);
    sd_st_close(f);

    /* the same bytes as a checkpoint of the tiny net */
    net_init();
    for (int strict = 0; strict < 2; strict++) {
        snapshot(snap_a);
        s = sd_checkpoint_load(net, path, strict);
        fz_report(strict ? "sd_checkpoint_load strict" : "sd_checkpoint_load", s);
        if (s != SD_OK) {
            snapshot(snap_b);
            FZ_CHECK(memcmp(snap_a, snap_b, snap_n * sizeof(float)) == 0,
                     "a failed checkpoint load (strict %d, %s) changed the net", strict, sd_status_str(s));
        }
    }
    return 0;
}
