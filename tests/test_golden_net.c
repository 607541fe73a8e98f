/* test_golden_net.c: one training step of the Fashion-MNIST CNN against PyTorch: the engine's
 * model (engine/models.c) loaded with PyTorch's initial weights (tests/data/golden_ops.bin, the cnn records)
 * must reproduce PyTorch's logits, loss, every parameter gradient and the weights after one SGD
 * step (momentum 0.9, weight decay 5e-4) through the CPU backend table: with our convolutions and,
 * where the build has oneDNN, with oneDNN's, whose gradients must also agree with ours (NMSE below
 * NMSE_GRAD: float sums of the same terms in other orders). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/golden_file.h"

/* float32 end to end on both sides with different summation orders: NMSE bounds. */
#define NMSE_FWD 1e-10
#define NMSE_GRAD 1e-8

/* One step on a CPU backend with convolutions `impl`; the gradients (the fused block of all
 * parameters) are copied to a new *grads_out of *np_out floats (NULL when it could not be made). */
static void check_net(const sd_golden *g, sd_cpu_conv_impl impl, float **grads_out, size_t *np_out) {
    printf("convolutions: %s\n", sd_cpu_conv_impl_name(impl));
    sd_backend be;
    EXPECT_OK(sd_backend_cpu_create(&be, 2));
    if (!be.ops) return;
    EXPECT_OK(sd_cpu_kctx_set_conv(be.ctx, impl));

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
    *np_out = np;
    if ((*grads_out = malloc(np * sizeof(float))) != NULL) memcpy(*grads_out, sd_net_grads(net), np * sizeof(float));
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
}

int main(void) {
    char path[4096];
    sd_test_data_path("golden_ops.bin", path, sizeof path);
    sd_golden *g = NULL;
    EXPECT_OK(sd_golden_load(path, &g));
    if (!g) return sd_test_finish("test_golden_net");
    float *go = NULL, *gd = NULL;
    size_t no = 0, nd = 0;
    check_net(g, SD_CPU_CONV_OURS, &go, &no);
    if (sd_cpu_conv_dnnl_available()) {
        check_net(g, SD_CPU_CONV_DNNL, &gd, &nd);
        EXPECT(go && gd && no == nd, "gradients of both runs (%zu and %zu parameters)", no, nd);
        if (go && gd && no == nd) {
            double e = sd_nmse(gd, go, no);
            printf("ours vs dnnl: gradient NMSE %.3g (bound %g)\n", e, NMSE_GRAD);
            EXPECT(e <= NMSE_GRAD, "gradients, dnnl against ours: NMSE %g > %g", e, NMSE_GRAD);
        }
    } else {
        printf("convolutions: dnnl not checked (this build has no oneDNN)\n");
    }
    free(go);
    free(gd);
    sd_golden_free(g);
    return sd_test_finish("test_golden_net");
}
