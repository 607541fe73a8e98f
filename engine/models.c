/* models.c: model definitions over the layer graph. Names match the PyTorch definitions in
 * tests/golden/models.py, so checkpoints and parameter counts can be compared one to one. */
#include "engine/models.h"

#include <stdio.h>
#include <string.h>

const char *sd_model_names(void) {
    return "fmnist_cnn resnet20 resnet32 resnet44 resnet56 resnet110 resnet18 resnet34 resnet50 resnet101 resnet152 "
           "vgg11 vgg13 vgg16 vgg19";
}

static int scaled(int ch, float width) {
    int c = (int)(ch * width + 0.5f);
    return c < 1 ? 1 : c;
}

static void build_cnn(sd_net *net, const sd_model_spec *s) {
    int x = sd_net_input(net);
    x = sd_net_conv2d(net, x, "conv1", scaled(16, s->width), 5, 1, 2, true);
    x = sd_net_relu(net, x);
    x = sd_net_maxpool2d(net, x, 2, 2, 0);
    x = sd_net_conv2d(net, x, "conv2", scaled(32, s->width), 5, 1, 2, true);
    x = sd_net_relu(net, x);
    x = sd_net_maxpool2d(net, x, 2, 2, 0);
    x = sd_net_flatten(net, x);
    sd_net_linear(net, x, "fc", s->classes, true);
}

/* relu(y + shortcut(x)): the identity, or a 1x1 conv + BN projection ("<prefix>.shortcut.0/1")
 * where the block changes the shape. */
static int residual_join(sd_net *net, int x, int y, const char *prefix, int in_ch, int out_ch, int stride) {
    int sc = x;
    if (stride != 1 || in_ch != out_ch) {
        char name[SD_NAME_MAX];
        snprintf(name, sizeof name, "%s.shortcut.0", prefix);
        sc = sd_net_conv2d(net, x, name, out_ch, 1, stride, 0, false);
        snprintf(name, sizeof name, "%s.shortcut.1", prefix);
        sc = sd_net_batchnorm2d(net, sc, name);
    }
    return sd_net_relu(net, sd_net_add(net, y, sc));
}

/* conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) - ReLU, named like torchvision's BasicBlock. */
static int basic_block(sd_net *net, int x, const char *prefix, int in_ch, int out_ch, int stride) {
    char name[SD_NAME_MAX];
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", prefix, suffix), name)
    int y = sd_net_conv2d(net, x, NAME("conv1"), out_ch, 3, stride, 1, false);
    y = sd_net_batchnorm2d(net, y, NAME("bn1"));
    y = sd_net_relu(net, y);
    y = sd_net_conv2d(net, y, NAME("conv2"), out_ch, 3, 1, 1, false);
    y = sd_net_batchnorm2d(net, y, NAME("bn2"));
#undef NAME
    return residual_join(net, x, y, prefix, in_ch, out_ch, stride);
}

static void build_cifar_resnet(sd_net *net, const sd_model_spec *s, int depth) {
    int blocks = (depth - 2) / 6;
    int x = sd_net_input(net);
    int ch = scaled(16, s->width);
    x = sd_net_conv2d(net, x, "conv1", ch, 3, 1, 1, false);
    x = sd_net_batchnorm2d(net, x, "bn1");
    x = sd_net_relu(net, x);
    for (int stage = 0; stage < 3; stage++) {
        int out = scaled(16 << stage, s->width);
        for (int b = 0; b < blocks; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", stage + 1, b);
            x = basic_block(net, x, prefix, ch, out, (b == 0 && stage > 0) ? 2 : 1);
            ch = out;
        }
    }
    x = sd_net_global_avgpool(net, x);
    sd_net_linear(net, x, "fc", s->classes, true);
}

/* Bottleneck (1x1 - 3x3 - 1x1 x4) for ResNet-50/101/152, torchvision's names. */
static int bottleneck(sd_net *net, int x, const char *prefix, int in_ch, int planes, int stride) {
    char name[SD_NAME_MAX];
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", prefix, suffix), name)
    int out_ch = planes * 4;
    int y = sd_net_conv2d(net, x, NAME("conv1"), planes, 1, 1, 0, false);
    y = sd_net_relu(net, sd_net_batchnorm2d(net, y, NAME("bn1")));
    y = sd_net_conv2d(net, y, NAME("conv2"), planes, 3, stride, 1, false);
    y = sd_net_relu(net, sd_net_batchnorm2d(net, y, NAME("bn2")));
    y = sd_net_conv2d(net, y, NAME("conv3"), out_ch, 1, 1, 0, false);
    y = sd_net_batchnorm2d(net, y, NAME("bn3"));
#undef NAME
    return residual_join(net, x, y, prefix, in_ch, out_ch, stride);
}

/* ImageNet-depth ResNets in their CIFAR form: 3x3 stem with 64 channels and no max-pool, four
 * stages (64/128/256/512 planes, strides 1/2/2/2), global average pool, linear. */
static void build_resnet(sd_net *net, const sd_model_spec *s, const int blocks[4], bool bottlenecks) {
    int x = sd_net_input(net);
    int ch = scaled(64, s->width);
    x = sd_net_conv2d(net, x, "conv1", ch, 3, 1, 1, false);
    x = sd_net_relu(net, sd_net_batchnorm2d(net, x, "bn1"));
    for (int stage = 0; stage < 4; stage++) {
        int planes = scaled(64 << stage, s->width);
        for (int b = 0; b < blocks[stage]; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", stage + 1, b);
            int stride = (b == 0 && stage > 0) ? 2 : 1;
            if (bottlenecks) {
                x = bottleneck(net, x, prefix, ch, planes, stride);
                ch = planes * 4;
            } else {
                x = basic_block(net, x, prefix, ch, planes, stride);
                ch = planes;
            }
        }
    }
    x = sd_net_global_avgpool(net, x);
    sd_net_linear(net, x, "fc", s->classes, true);
}

/* VGG with batch norm in its CIFAR form: "features.<i>" numbered like PyTorch's nn.Sequential
 * (conv, bn, relu per layer; max-pool as 'M'), global average pool, then "classifier" 512->classes. */
static void build_vgg(sd_net *net, const sd_model_spec *s, const int *cfg) {
    int x = sd_net_input(net);
    int idx = 0, ch = 0;
    char name[SD_NAME_MAX];
    for (const int *c = cfg; *c; c++) {
        if (*c < 0) {
            x = sd_net_maxpool2d(net, x, 2, 2, 0);
            idx++;
            continue;
        }
        ch = scaled(*c, s->width);
        snprintf(name, sizeof name, "features.%d", idx);
        x = sd_net_conv2d(net, x, name, ch, 3, 1, 1, true);
        snprintf(name, sizeof name, "features.%d", idx + 1);
        x = sd_net_relu(net, sd_net_batchnorm2d(net, x, name));
        idx += 3;
    }
    x = sd_net_global_avgpool(net, x);
    sd_net_linear(net, x, "classifier", s->classes, true);
}

#define M -1
static const int vgg11[] = {64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M, 0};
static const int vgg13[] = {64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M, 0};
static const int vgg16[] = {64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M, 0};
static const int vgg19[] = {64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M,
                            512, 512, 512, 512, M, 0};
#undef M

sd_status sd_model_build(sd_backend *be, const sd_model_spec *s, uint64_t seed, sd_net **out) {
    if (!s || !s->name || !out) return SD_FAIL(SD_ERR_INVALID, "model: NULL spec or output");
    if (s->classes < 1 || !(s->width > 0.0f && s->width <= 16.0f))
        return SD_FAIL(SD_ERR_INVALID, "model %s: classes %d must be >= 1 and width %g in (0, 16]", s->name, s->classes,
                       (double)s->width);
    static const int r18[4] = {2, 2, 2, 2}, r34[4] = {3, 4, 6, 3}, r101[4] = {3, 4, 23, 3}, r152[4] = {3, 8, 36, 3};
    const char *nm = s->name;
    int depth = 0;
    char tail = 0;
    enum { CNN, CIFAR_RESNET, RESNET, VGG } family;
    if (!strcmp(nm, "fmnist_cnn")) family = CNN;
    else if (sscanf(nm, "resnet%d%c", &depth, &tail) == 1 &&
             (depth == 20 || depth == 32 || depth == 44 || depth == 56 || depth == 110))
        family = CIFAR_RESNET;
    else if (sscanf(nm, "resnet%d%c", &depth, &tail) == 1 &&
             (depth == 18 || depth == 34 || depth == 50 || depth == 101 || depth == 152))
        family = RESNET;
    else if (sscanf(nm, "vgg%d%c", &depth, &tail) == 1 && (depth == 11 || depth == 13 || depth == 16 || depth == 19))
        family = VGG;
    else
        return SD_FAIL(SD_ERR_INVALID, "model '%s' is unknown; choose one of: %s", nm, sd_model_names());
    sd_net *net = NULL;
    TRY(sd_net_create(be, s->in_c, s->in_h, s->in_w, &net));
    switch (family) {
    case CNN: build_cnn(net, s); break;
    case CIFAR_RESNET: build_cifar_resnet(net, s, depth); break;
    case RESNET:
        build_resnet(net, s, depth == 18 ? r18 : depth == 34 || depth == 50 ? r34 : depth == 101 ? r101 : r152, depth >= 50);
        break;
    case VGG:
        build_vgg(net, s, depth == 11 ? vgg11 : depth == 13 ? vgg13 : depth == 16 ? vgg16 : vgg19);
        break;
    }
    sd_status st = s->no_fusion ? sd_net_set_fusion(net, false) : SD_OK;
    if (st == SD_OK) st = sd_net_finalize(net, seed);
    if (st != SD_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sd_last_error_brief());
        sd_net_destroy(net);
        if (st == SD_ERR_SHAPE)
            return SD_FAIL(st, "model '%s' cannot take %dx%dx%d inputs (%s)%s", nm, s->in_c, s->in_h, s->in_w, why,
                           family == VGG ? "; VGG's five 2x2 max-pools need images of at least 32x32" : "");
        return SD_FAIL(st, "model '%s': %s", nm, why);
    }
    *out = net;
    return SD_OK;
}
