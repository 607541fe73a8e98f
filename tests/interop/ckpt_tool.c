/* ckpt_tool.c: the C side of tests/interop/checkpoint_interop.py. Builds a model, optionally saves
 * or loads a checkpoint, and writes the evaluation-mode logits of a raw float32 input:
 *   ckpt_tool save MODEL SEED OUT.safetensors IN.bin LOGITS.bin [WARM]
 *       builds MODEL from SEED, runs WARM (default 0) training-mode forwards on the input (only the
 *       BN running statistics and counters change), saves, then writes the logits;
 *   ckpt_tool load MODEL IN.safetensors IN.bin LOGITS.bin
 *       builds MODEL (seed 0), loads the checkpoint strictly, then writes the logits.
 * IN.bin is raw little-endian float32 [n, c, h, w] (n from the file size; c, h, w from the model:
 * 1x28x28 for fmnist*, else 3x32x32); LOGITS.bin receives raw float32 [n, classes]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/checkpoint.h"
#include "engine/models.h"

static int usage(void) {
    fprintf(stderr, "usage: ckpt_tool save MODEL SEED OUT.safetensors IN.bin LOGITS.bin [WARM]\n"
                    "       ckpt_tool load MODEL IN.safetensors IN.bin LOGITS.bin\n");
    return 2;
}

static int fail(const char *what) {
    fprintf(stderr, "ckpt_tool: %s: %s\n", what, sd_last_error());
    return 1;
}

/* Reads IN.bin whole; *n is the number of samples of `per` floats. */
static float *read_input(const char *path, size_t per, int *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        perror(path);
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size <= 0 || (size_t)size % (per * sizeof(float)) != 0) {
        fprintf(stderr, "ckpt_tool: %s: %ld bytes is not a whole number of %zu-float samples\n", path, size, per);
        fclose(fp);
        return NULL;
    }
    float *x = malloc((size_t)size);
    if (!x || fread(x, 1, (size_t)size, fp) != (size_t)size) {
        fprintf(stderr, "ckpt_tool: cannot read %s\n", path);
        free(x);
        x = NULL;
    }
    fclose(fp);
    *n = (int)((size_t)size / (per * sizeof(float)));
    return x;
}

int main(int argc, char **argv) {
    bool save;
    if (argc >= 7 && argc <= 8 && !strcmp(argv[1], "save")) save = true;
    else if (argc == 6 && !strcmp(argv[1], "load")) save = false;
    else return usage();
    const char *model = argv[2];
    uint64_t seed = save ? strtoull(argv[3], NULL, 10) : 0;
    const char *ckpt = argv[save ? 4 : 3], *in = argv[save ? 5 : 4], *out = argv[save ? 6 : 5];
    int warm = (save && argc == 8) ? atoi(argv[7]) : 0;

    sd_model_spec spec = {.name = model, .classes = 10, .width = 1.0f};
    if (!strncmp(model, "fmnist", 6)) spec.in_c = 1, spec.in_h = spec.in_w = 28;
    else spec.in_c = 3, spec.in_h = spec.in_w = 32;
    int n = 0;
    float *x = read_input(in, (size_t)spec.in_c * spec.in_h * spec.in_w, &n);
    if (!x) return 1;

    sd_backend be;
    if (sd_backend_cpu_create(&be, 0) != SD_OK) return fail("cpu backend");
    sd_net *net = NULL;
    int rc = 0;
    float *dx = NULL, *logits = NULL;
    size_t xbytes = (size_t)n * spec.in_c * spec.in_h * spec.in_w * sizeof(float);
    if (sd_model_build(&be, &spec, seed, &net) != SD_OK) { rc = fail(model); goto out; }
    if (be.ops->alloc(be.ctx, xbytes, (void **)&dx) != SD_OK || be.ops->upload(be.ctx, dx, x, xbytes) != SD_OK) {
        rc = fail("input");
        goto out;
    }
    if (save) {
        for (int i = 0; i < warm; i++)
            if (sd_net_forward(net, dx, n, true) != SD_OK) { rc = fail("training forward"); goto out; }
        char seed_s[32];
        snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)seed);
        sd_ckpt_kv kv[] = {{"model", model}, {"seed", seed_s}};
        sd_ckpt_meta meta = {kv, 2};
        if (sd_checkpoint_save(net, ckpt, &meta) != SD_OK) { rc = fail("save"); goto out; }
    } else if (sd_checkpoint_load(net, ckpt, true) != SD_OK) {
        rc = fail("load");
        goto out;
    }
    if (sd_net_forward(net, dx, n, false) != SD_OK) { rc = fail("forward"); goto out; }
    size_t nl = (size_t)n * sd_net_classes(net);
    logits = malloc(nl * sizeof(float));
    if (!logits || be.ops->download(be.ctx, logits, sd_net_output(net), nl * sizeof(float)) != SD_OK) {
        rc = fail("logits");
        goto out;
    }
    FILE *fp = fopen(out, "wb");
    if (!fp || fwrite(logits, sizeof(float), nl, fp) != nl) {
        perror(out);
        rc = 1;
    }
    if (fp && fclose(fp) != 0) rc = 1;
out:
    free(logits);
    if (dx) be.ops->free(be.ctx, dx);
    sd_net_destroy(net);
    sd_backend_destroy(&be);
    free(x);
    return rc;
}
