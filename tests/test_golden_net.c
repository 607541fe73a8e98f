/* test_golden_net.c: one training step of the Fashion-MNIST CNN against PyTorch: the engine's
 * model (engine/models.c) loaded with PyTorch's initial weights (tests/data/golden_ops.bin, the cnn records)
 * must reproduce PyTorch's logits, loss, every parameter gradient and the weights after one SGD
 * step (momentum 0.9, weight decay 5e-4) through the CPU backend table. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/models.h"
#include "tests/harness.h"
#include "tests/ref/golden_file.h"

/* float32 end to end on both sides with different summation orders: NMSE bounds. */
#define NMSE_FWD 1e-10
#define NMSE_GRAD 1e-8

int main(void) {
    char path[4096];
    sd_test_data_path("golden_ops.bin", path, sizeof path);
    sd_golden *g = NULL;
    EXPECT_OK(sd_golden_load(path, &g));
    if (!g) return sd_test_finish("test_golden_net");
    sd_backend be;
    EXPECT_OK(sd_backend_cpu_create(&be, 2));

    const int32_t *meta = NULL, *labels = NULL;
    EXPECT_OK(sd_golden_get_i32(g, "cnn/meta", 5, &meta));
    const float *hp = sd_golden_expect_f32(g, "cnn/hparams", 4);
    if (!meta || !hp) goto out;
    int n = meta[0], classes = meta[4];
    sd_model_spec spec = {.name = "fmnist_cnn", .in_c = meta[1], .in_h = meta[2], .in_w = meta[3],
                          .classes = classes, .width = 1.0f};
    sd_net *net = NULL;
    EXPECT_OK(sd_model_build(&be, &spec, 99, &net));
    EXPECT_OK(sd_golden_get_i32(g, "cnn/labels", (size_t)n, &labels));
    const float *x = sd_golden_expect_f32(g, "cnn/x", (size_t)n * meta[1] * meta[2] * meta[3]);
    if (!net || !labels || !x) goto out;

    /* PyTorch's initial weights, by state_dict name */
    char name[160];
    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        snprintf(name, sizeof name, "cnn/%s", p->name);
        const float *w = sd_golden_expect_f32(g, name, p->count);
        if (w) EXPECT_OK(be.ops->upload(be.ctx, sd_net_tensor_data(net, p), w, p->count * sizeof(float)));
    }

    float loss = 0;
    EXPECT_OK(sd_net_forward(net, x, n, true));
    EXPECT_OK(sd_net_loss(net, labels, 1.0f / (float)n, &loss));
    EXPECT_OK(sd_net_backward(net));
    const float *logits = sd_golden_expect_f32(g, "cnn/logits", (size_t)n * classes), *want_loss = sd_golden_expect_f32(g, "cnn/loss", 1);
    if (logits) {
        double e = sd_nmse(sd_net_output(net), logits, (size_t)n * classes);
        EXPECT(e <= NMSE_FWD, "logits NMSE %g > %g", e, NMSE_FWD);
    }
    if (want_loss) EXPECT(fabsf(loss - want_loss[0]) <= 1e-5f * fabsf(want_loss[0]) + 1e-6f, "loss %.7g, PyTorch %.7g", (double)loss, (double)want_loss[0]);

    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        snprintf(name, sizeof name, "cnn/grad/%s", p->name);
        const float *want = sd_golden_expect_f32(g, name, p->count);
        if (!want) continue;
        double e = sd_nmse(sd_net_grads(net) + p->offset, want, p->count);
        EXPECT(e <= NMSE_GRAD, "gradient of %s: NMSE %g > %g", p->name, e, NMSE_GRAD);
    }

    /* one SGD step over the fused parameter block, as the trainer does it */
    size_t np = sd_net_param_count(net);
    float *mom = NULL;
    EXPECT_OK(be.ops->alloc(be.ctx, np * sizeof(float), (void **)&mom));
    sd_sgd_params sp;
    EXPECT_OK(sd_sgd_params_make(&sp, np, hp[0], hp[1], hp[2], hp[3], 0, 1));
    if (mom) EXPECT_OK(be.ops->sgd_update(be.ctx, &sp, sd_net_params(net), sd_net_grads(net), mom));
    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        snprintf(name, sizeof name, "cnn/step1/%s", p->name);
        const float *want = sd_golden_expect_f32(g, name, p->count);
        if (!want) continue;
        double e = sd_nmse(sd_net_tensor_data(net, p), want, p->count);
        EXPECT(e <= NMSE_FWD, "%s after one step: NMSE %g > %g", p->name, e, NMSE_FWD);
    }
    be.ops->free(be.ctx, mom);
    sd_net_destroy(net);
out:
    sd_backend_destroy(&be);
    sd_golden_free(g);
    return sd_test_finish("test_golden_net");
}
