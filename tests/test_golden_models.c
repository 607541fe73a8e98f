/* test_golden_models.c: one training step of ResNet-20 and VGG-11 (CIFAR forms) against PyTorch
 * (tests/data/golden_models.bin from tests/golden/gen_golden_models.py). Both sides start from
 * the same formula-built weights (documented in the generator), train one step (SGD lr 0.1,
 * momentum 0.9, weight decay 5e-4, train-mode BN) and compare logits, loss and, for every
 * tensor after the step, its sum, sum of squares and 64 sampled values. With our convolutions
 * and, where the build has oneDNN, with oneDNN's, whose logits and weights after the step must
 * also agree with ours (NMSE below 1e-9, the bound against PyTorch: float sums in other orders). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models.h"
#include "engine/optim.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/golden_file.h"

static int fan_in_of(sd_net *net, const sd_param *p) {
    char name[SD_NAME_MAX + 8];
    snprintf(name, sizeof name, "%.*s.weight", (int)(strrchr(p->name, '.') - p->name), p->name);
    const sd_param *w = sd_net_find(net, name);
    return w && w->shape[0] > 0 ? (int)(w->count / (size_t)w->shape[0]) : 1;
}

static bool is_bn(sd_net *net, const sd_param *p) {
    char name[SD_NAME_MAX + 16];
    snprintf(name, sizeof name, "%.*s.running_mean", (int)(strrchr(p->name, '.') - p->name), p->name);
    return sd_net_find(net, name) != NULL;
}

static void formula_init(sd_backend *be, sd_net *net) {
    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        float *h = malloc(p->count * sizeof(float));
        const char *leaf = strrchr(p->name, '.') + 1;
        bool bn = is_bn(net, p);
        double b = 1.0 / sqrt((double)fan_in_of(net, p));
        for (size_t i = 0; i < p->count; i++) {
            double di = (double)i, a;
            if (bn && !strcmp(leaf, "weight")) a = 1 + 0.1 * sin(0.7 * di + 1.3 * t);
            else if (bn && !strcmp(leaf, "bias")) a = 0.1 * cos(0.7 * di + 1.3 * t);
            else if (!strcmp(leaf, "running_mean")) a = 0.1 * sin(0.3 * di + t);
            else if (!strcmp(leaf, "running_var")) a = 1 + 0.2 * fabs(sin(0.5 * di + t));
            else a = sin(0.7 * di + 1.3 * t) * b;
            h[i] = (float)a;
        }
        EXPECT_OK(be->ops->upload(be->ctx, sd_net_tensor_data(net, p), h, p->count * sizeof(float)));
        free(h);
    }
}

/* One model's step on backend be; its logits and the parameters after the step are copied to a
 * new out[0] and out[1] (counts in counts[0..1]; NULL when they could not be made). */
static void check_model(sd_backend *be, const sd_golden *g, const char *model, float **out, size_t *counts) {
    char name[256];
    const int32_t *meta = NULL;
    snprintf(name, sizeof name, "%s/meta", model);
    EXPECT_OK(sd_golden_get_i32(g, name, 6, &meta));
    if (!meta) return;
    int n = meta[0], classes = meta[4], picks = meta[5];
    sd_model_spec spec = {.name = model, .in_c = meta[1], .in_h = meta[2], .in_w = meta[3], .classes = classes, .width = 1.0f};
    sd_net *net = NULL;
    EXPECT_OK(sd_model_build(be, &spec, 5, &net));
    if (!net) return;
    formula_init(be, net);
    size_t xn = (size_t)n * meta[1] * meta[2] * meta[3];
    float *x = malloc(xn * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    for (size_t j = 0; j < xn; j++) x[j] = (float)(sin(0.01 * (double)j) + 0.5 * cos(0.003 * (double)j));
    for (int k = 0; k < n; k++) y[k] = (3 * k + 1) % 10;

    sd_optimizer opt;
    sd_lr_schedule sched;
    sd_optim_config oc = {.momentum = 0.9f, .weight_decay = 5e-4f};
    EXPECT_OK(sd_lr_schedule_parse("constant", 0.1f, 1, &sched));
    EXPECT_OK(sd_optim_init(&opt, net, &oc, &sched));
    float loss = 0;
    EXPECT_OK(sd_net_forward(net, x, n, true));
    EXPECT_OK(sd_net_loss(net, y, 1.0f / (float)n, &loss));
    snprintf(name, sizeof name, "%s/logits", model);
    const float *want = sd_golden_expect_f32(g, name, (size_t)n * classes);
    if (want) {
        double e = sd_nmse(sd_net_output(net), want, (size_t)n * classes);
        EXPECT(e <= 1e-9, "%s logits NMSE %g > 1e-9", model, e);
    }
    snprintf(name, sizeof name, "%s/loss", model);
    if ((want = sd_golden_expect_f32(g, name, 1)))
        EXPECT(fabsf(loss - want[0]) <= 1e-5f * fabsf(want[0]), "%s loss %.7g, PyTorch %.7g", model, (double)loss, (double)want[0]);
    EXPECT_OK(sd_net_backward(net));
    EXPECT_OK(sd_optim_step(&opt, net, 1.0f));
    counts[0] = (size_t)n * classes;
    counts[1] = sd_net_param_count(net);
    if ((out[0] = malloc(counts[0] * sizeof(float))) != NULL) memcpy(out[0], sd_net_output(net), counts[0] * sizeof(float));
    if ((out[1] = malloc(counts[1] * sizeof(float))) != NULL) memcpy(out[1], sd_net_params(net), counts[1] * sizeof(float));

    int checked = 0;
    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        const float *d = sd_net_tensor_data(net, p);
        double s = 0, ss = 0;
        for (size_t i = 0; i < p->count; i++) {
            s += d[i];
            ss += (double)d[i] * d[i];
        }
        const float *ws, *wss, *wp;
        snprintf(name, sizeof name, "%s/sum/%s", model, p->name);
        ws = sd_golden_expect_f32(g, name, 1);
        snprintf(name, sizeof name, "%s/sumsq/%s", model, p->name);
        wss = sd_golden_expect_f32(g, name, 1);
        snprintf(name, sizeof name, "%s/pick/%s", model, p->name);
        wp = sd_golden_expect_f32(g, name, (size_t)picks);
        if (!ws || !wss || !wp) continue;
        /* float32 on both sides with different summation orders: the sum may cancel, so its error
         * is measured against the tensor's L2 norm times sqrt(count). */
        double scale = sqrt(ss * (double)p->count) + 1e-12;
        EXPECT(fabs(s - ws[0]) <= 1e-5 * scale, "%s %s: sum %.8g, PyTorch %.8g", model, p->name, s, (double)ws[0]);
        EXPECT(fabs(ss - wss[0]) <= 1e-5 * fabs(wss[0]) + 1e-12, "%s %s: sum of squares %.8g, PyTorch %.8g", model,
               p->name, ss, (double)wss[0]);
        float got[256];
        for (int k = 0; k < picks && k < 256; k++) got[k] = d[((size_t)k * 7919) % p->count];
        double e = sd_nmse(got, wp, (size_t)(picks < 256 ? picks : 256));
        EXPECT(e <= 1e-9, "%s %s: sampled values NMSE %g > 1e-9", model, p->name, e);
        checked++;
    }
    printf("%s: %d tensors compared after one step (loss %.5f)\n", model, checked, (double)loss);
    sd_optim_free(&opt);
    free(x);
    free(y);
    sd_net_destroy(net);
}

int main(void) {
    char path[4096];
    sd_test_data_path("golden_models.bin", path, sizeof path);
    sd_golden *g = NULL;
    EXPECT_OK(sd_golden_load(path, &g));
    if (!g) return sd_test_finish("test_golden_models");
    static const char *const models[2] = {"resnet20", "vgg11"};
    static const sd_cpu_conv_impl impls[2] = {SD_CPU_CONV_OURS, SD_CPU_CONV_DNNL};
    const int nimpl = sd_cpu_conv_dnnl_available() ? 2 : 1;
    float *res[2][2][2] = {{{0}}}; /* [impl][model][logits, params] */
    size_t cnt[2][2][2] = {{{0}}};
    for (int i = 0; i < nimpl; i++) {
        printf("convolutions: %s\n", sd_cpu_conv_impl_name(impls[i]));
        sd_backend be;
        EXPECT_OK(sd_backend_cpu_create(&be, 2));
        if (!be.ops) break;
        EXPECT_OK(sd_cpu_kctx_set_conv(be.ctx, impls[i]));
        for (int m = 0; m < 2; m++) check_model(&be, g, models[m], res[i][m], cnt[i][m]);
        sd_backend_destroy(&be);
    }
    if (nimpl == 1) printf("convolutions: dnnl not checked (this build has no oneDNN)\n");
    for (int m = 0; nimpl == 2 && m < 2; m++)
        for (int j = 0; j < 2; j++) {
            const char *what = j ? "parameters after the step" : "logits";
            EXPECT(res[0][m][j] && res[1][m][j] && cnt[0][m][j] == cnt[1][m][j], "%s %s of both runs", models[m], what);
            if (!res[0][m][j] || !res[1][m][j] || cnt[0][m][j] != cnt[1][m][j]) continue;
            double e = sd_nmse(res[1][m][j], res[0][m][j], cnt[0][m][j]);
            printf("%s ours vs dnnl: %s NMSE %.3g (bound 1e-9)\n", models[m], what, e);
            EXPECT(e <= 1e-9, "%s %s, dnnl against ours: NMSE %g > 1e-9", models[m], what, e);
        }
    for (int i = 0; i < 2; i++)
        for (int m = 0; m < 2; m++) free(res[i][m][0]), free(res[i][m][1]);
    sd_golden_free(g);
    return sd_test_finish("test_golden_models");
}
