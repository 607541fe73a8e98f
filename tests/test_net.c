/* test_net.c: the layer graph end to end: a finite-difference gradient check of a small network
 * using every layer kind (conv, BN, ReLU, max/avg/global pool, residual add, flatten, dropout,
 * linear), batch sizes that change between steps without reallocation, builder errors, and the
 * model zoo's parameter counts against PyTorch's (tests/golden/models.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models.h"
#include "engine/net.h"
#include "tests/harness.h"

static sd_backend be;

/* A small net over [2, 6, 6] inputs touching every layer kind, with a residual join. */
static sd_net *small_net(uint64_t seed) {
    sd_net *net = NULL;
    if (sd_net_create(&be, 2, 6, 6, &net) != SD_OK) return NULL;
    int x = sd_net_input(net);
    int a = sd_net_conv2d(net, x, "c1", 4, 3, 1, 1, true);
    a = sd_net_batchnorm2d(net, a, "bn1");
    a = sd_net_relu(net, a);
    int b = sd_net_conv2d(net, a, "c2", 4, 3, 1, 1, false);
    b = sd_net_batchnorm2d(net, b, "bn2");
    int s = sd_net_add(net, b, a); /* a feeds c2 and the add: two consumers */
    s = sd_net_relu(net, s);
    int m = sd_net_maxpool2d(net, s, 2, 2, 0);        /* 3x3 */
    int v = sd_net_avgpool2d(net, m, 3, 1, 1);        /* 3x3 */
    int c = sd_net_conv2d(net, v, "c3", 5, 1, 1, 0, true);
    int g = sd_net_global_avgpool(net, c);
    int f = sd_net_flatten(net, m);
    int l1 = sd_net_linear(net, f, "fc1", 5, true);
    int j = sd_net_add(net, l1, sd_net_flatten(net, g));
    j = sd_net_dropout(net, j, 0.0f);
    sd_net_linear(net, j, "fc2", 3, true);
    if (sd_net_finalize(net, seed) != SD_OK) {
        fprintf(stderr, "%s\n", sd_last_error());
        sd_net_destroy(net);
        return NULL;
    }
    return net;
}

typedef struct fd_ctx { sd_net *net; const float *x; const int32_t *y; int n; } fd_ctx;

static double loss_of_params(void *vctx, const float *params) {
    fd_ctx *c = vctx;
    (void)params; /* the net reads its own parameter block, which sd_gradcheck perturbs in place */
    float loss = 0;
    if (sd_net_forward(c->net, c->x, c->n, true) != SD_OK || sd_net_loss(c->net, c->y, 1.0f / c->n, &loss) != SD_OK)
        return NAN;
    return loss;
}

static void test_gradcheck(void) {
    sd_net *net = small_net(3);
    EXPECT(net != NULL, "small net builds");
    if (!net) return;
    enum { N = 4 };
    float x[N * 2 * 6 * 6];
    int32_t y[N] = {0, 2, 1, 2};
    sd_test_rng r = {11};
    sd_test_fill(&r, x, sizeof x / sizeof x[0], -1.0f, 1.0f);
    float loss = 0;
    EXPECT_OK(sd_net_forward(net, x, N, true));
    EXPECT_OK(sd_net_loss(net, y, 1.0f / N, &loss));
    EXPECT_OK(sd_net_backward(net));
    EXPECT(isfinite(loss) && loss > 0, "loss %g", (double)loss);
    size_t np = sd_net_param_count(net);
    float *grad = malloc(np * sizeof(float));
    memcpy(grad, sd_net_grads(net), np * sizeof(float));
    EXPECT(sd_all_finite(grad, np), "finite gradients");
    fd_ctx c = {net, x, y, N};
    /* Float forward; central differences with eps 3e-4: rounding of the ~1e0 loss gives ~2e-4
     * absolute noise per entry, far below each tensor's gradient norm, and at 1e-3 this network
     * already crosses ReLU/max-pool kinks (seen: 5% off on conv weights, converging to the
     * analytic value as eps shrinks). Compared tensor by tensor in relative L2. */
    double *num = malloc(np * sizeof(double));
    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        if (!p->trainable) continue;
        sd_numgrad(loss_of_params, &c, sd_net_params(net) + p->offset, p->count, 3e-4f, num + p->offset);
        double err = sd_rel_l2(num + p->offset, grad + p->offset, p->count);
        /* Conv biases ahead of BN have a true gradient of zero: there both sides must be at the
         * noise level (absolute 1e-3) instead. */
        double scale = 0, num_max = 0;
        for (size_t i = 0; i < p->count; i++) {
            scale = fmax(scale, fabs(grad[p->offset + i]));
            num_max = fmax(num_max, fabs(num[p->offset + i]));
        }
        if (scale < 1e-5) err = num_max < 1e-3 ? 0 : num_max;
        if (getenv("SD_DEBUG_GRAD"))
            for (size_t i = 0; i < p->count; i++)
                fprintf(stderr, "%s[%zu] num %.6g ana %.6g\n", p->name, i, num[p->offset + i], (double)grad[p->offset + i]);
        EXPECT(err < 1e-2, "gradient check of %s: relative L2 error %g over %zu values", p->name, err, p->count);
    }
    free(num);
    /* Every named parameter got a gradient signal. */
    for (int t = 0; t < sd_net_num_tensors(net); t++) {
        const sd_param *p = sd_net_tensor(net, t);
        if (!p->trainable) continue;
        double s = 0;
        for (size_t i = 0; i < p->count; i++) s += fabs(grad[p->offset + i]);
        EXPECT(s > 0, "parameter %s has a zero gradient", p->name);
    }
    free(grad);
    sd_net_destroy(net);
}

/* Batches of different sizes reuse the activation block and give the same per-sample results as
 * a net that only ever saw that size (evaluation mode, so BN uses running statistics). */
static void test_variable_batch(void) {
    sd_net *net = small_net(5), *ref = small_net(5);
    EXPECT(net && ref, "nets build");
    if (!net || !ref) return;
    enum { NMAX = 9 };
    float x[NMAX * 72];
    sd_test_rng r = {12};
    sd_test_fill(&r, x, sizeof x / sizeof x[0], -1.0f, 1.0f);
    EXPECT_OK(sd_net_reserve(net, NMAX));
    size_t bytes = sd_net_activation_bytes(net);
    unsigned grows = sd_net_activation_grows(net);
    int sizes[] = {9, 3, 1, 7, 9, 2};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int n = sizes[i];
        EXPECT_OK(sd_net_forward(net, x, n, false));
        EXPECT_OK(sd_net_forward(ref, x, n, false));
        EXPECT(sd_max_abs_diff(sd_net_output(net), sd_net_output(ref), (size_t)n * 3) == 0,
               "batch %d: output differs from a net that saw only this size", n);
    }
    EXPECT(sd_net_activation_bytes(net) == bytes && sd_net_activation_grows(net) == grows,
           "no reallocation below the high-water mark (%zu -> %zu bytes, %u -> %u grows)", bytes,
           sd_net_activation_bytes(net), grows, sd_net_activation_grows(net));
    EXPECT_OK(sd_net_forward(net, x, NMAX, true)); /* training at the mark: still no growth */
    EXPECT(sd_net_activation_grows(net) == grows, "training step at the high-water mark reallocated");
    sd_net_destroy(net);
    sd_net_destroy(ref);
}

static void test_builder_errors(void) {
    sd_net *net = NULL;
    EXPECT_OK(sd_net_create(&be, 3, 8, 8, &net));
    int x = sd_net_input(net);
    int a = sd_net_conv2d(net, x, "a", 4, 3, 2, 1, false); /* 4x4 */
    int b = sd_net_conv2d(net, x, "b", 4, 3, 1, 1, false); /* 8x8 */
    EXPECT(sd_net_add(net, a, b) == -1, "add of different shapes is refused");
    sd_net_linear(net, b, "fc", 2, true);
    EXPECT_FAIL(sd_net_finalize(net, 1), SD_ERR_SHAPE, "add of [4,4,4]");
    sd_net_destroy(net);

    EXPECT_OK(sd_net_create(&be, 1, 4, 4, &net));
    EXPECT(sd_net_conv2d(net, sd_net_input(net), "big", 2, 7, 1, 0, false) == -1, "kernel larger than input refused");
    EXPECT_FAIL(sd_net_finalize(net, 1), SD_ERR_SHAPE, "big");
    sd_net_destroy(net);

    EXPECT_OK(sd_net_create(&be, 1, 4, 4, &net));
    int c = sd_net_conv2d(net, sd_net_input(net), "dup", 2, 3, 1, 1, false);
    sd_net_conv2d(net, c, "dup", 2, 3, 1, 1, false);
    EXPECT_FAIL(sd_net_finalize(net, 1), SD_ERR_INVALID, "two tensors named 'dup.weight'");
    sd_net_destroy(net);

    EXPECT_OK(sd_net_create(&be, 1, 4, 4, &net));
    sd_net_conv2d(net, sd_net_input(net), "c", 2, 3, 1, 1, false);
    EXPECT_FAIL(sd_net_finalize(net, 1), SD_ERR_SHAPE, "end with linear");
    sd_net_destroy(net);

    EXPECT_FAIL(sd_net_create(&be, 0, 4, 4, &net), SD_ERR_SHAPE, "input shape");

    sd_net *m = NULL;
    sd_model_spec spec = {.name = "resnet21", .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    EXPECT_FAIL(sd_model_build(&be, &spec, 1, &m), SD_ERR_INVALID, "resnet20 resnet32");
    spec.name = "vgg11"; /* an image size the model cannot take */
    spec.in_c = 1;
    spec.in_h = spec.in_w = 28;
    EXPECT_FAIL(sd_model_build(&be, &spec, 1, &m), SD_ERR_SHAPE, "cannot take 1x28x28 inputs");
    spec.in_c = 3;
    spec.in_h = spec.in_w = 32;
    spec.name = "resnet20";
    spec.classes = 0;
    EXPECT_FAIL(sd_model_build(&be, &spec, 1, &m), SD_ERR_INVALID, "classes 0");
}

static void test_param_counts(void) {
    /* Counts printed by PyTorch for the definitions in tests/golden/models.py. */
    struct { const char *name; int c, hw; size_t params, buffers; } want[] = {
        {"fmnist_cnn", 1, 28, 28938, 0},       {"resnet20", 3, 32, 272474, 1568},
        {"resnet32", 3, 32, 466906, 2464},     {"resnet44", 3, 32, 661338, 3360},
        {"resnet56", 3, 32, 855770, 4256},     {"resnet110", 3, 32, 1730714, 8288},
        {"resnet18", 3, 32, 11173962, 9600},   {"resnet34", 3, 32, 21282122, 17024},
        {"resnet50", 3, 32, 23520842, 53120},  {"resnet101", 3, 32, 42512970, 105344},
        {"resnet152", 3, 32, 58156618, 151424}, {"vgg11", 3, 32, 9231114, 5504},
        {"vgg13", 3, 32, 9416010, 5888},       {"vgg16", 3, 32, 14728266, 8448},
        {"vgg19", 3, 32, 20040522, 11008},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        sd_model_spec spec = {.name = want[i].name, .in_c = want[i].c, .in_h = want[i].hw, .in_w = want[i].hw,
                              .classes = 10, .width = 1.0f};
        sd_net *net = NULL;
        EXPECT_OK(sd_model_build(&be, &spec, 1, &net));
        if (!net) continue;
        EXPECT(sd_net_param_count(net) == want[i].params, "%s: %zu parameters, PyTorch has %zu", want[i].name,
               sd_net_param_count(net), want[i].params);
        EXPECT(sd_net_buffer_count(net) == want[i].buffers, "%s: %zu buffer floats, PyTorch has %zu", want[i].name,
               sd_net_buffer_count(net), want[i].buffers);
        sd_net_destroy(net);
    }
}

/* The fused graph (BN + ReLU and add + ReLU in one pass, the default) against every layer apart: the same
 * logits, loss, gradients and running statistics to the bit, in training and evaluation, with
 * less activation memory; fusion cannot be switched after finalize. */
static void test_fusion(void) {
    /* ResNet-20: the stem's and 9 blocks' BN + ReLU, the 9 blocks' add + ReLU (projection
     * shortcuts among them); VGG-11: 8 BN + ReLU */
    const struct { const char *name; int fused; } models[] = {{"resnet20", 19}, {"vgg11", 8}};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        sd_model_spec spec = {.name = models[m].name, .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
        sd_net *net[2] = {NULL, NULL};
        for (int f = 0; f < 2; f++) {
            EXPECT_OK(sd_model_build(&be, &spec, 7, &net[f]));
            if (!net[f]) return;
        }
        /* sd_model_build finalizes: rebuild the reference by hand with fusion off */
        EXPECT_FAIL(sd_net_set_fusion(net[1], false), SD_ERR_INVALID, "set it before");
        EXPECT(sd_net_fused_count(net[0]) == models[m].fused, "%s: %d layers fused, want %d", models[m].name,
               sd_net_fused_count(net[0]), models[m].fused);
        sd_net_destroy(net[1]);
        net[1] = NULL;
        sd_model_spec ref = spec;
        ref.no_fusion = true;
        EXPECT_OK(sd_model_build(&be, &ref, 7, &net[1]));
        if (!net[1]) break;
        EXPECT(sd_net_fused_count(net[1]) == 0, "%s: the reference fuses nothing", models[m].name);
        enum { N = 3 };
        static float x[N * 3 * 32 * 32];
        int32_t y[N] = {1, 7, 3};
        sd_test_rng r = {5};
        sd_test_fill(&r, x, sizeof x / sizeof x[0], -2.0f, 2.0f);
        float loss[2] = {0, 0};
        for (int step = 0; step < 2; step++) /* the second step runs on updated running statistics */
            for (int f = 0; f < 2; f++) {
                EXPECT_OK(sd_net_forward(net[f], x, N, true));
                EXPECT_OK(sd_net_loss(net[f], y, 1.0f / N, &loss[f]));
                EXPECT_OK(sd_net_backward(net[f]));
            }
        const size_t np = sd_net_param_count(net[0]), nb = sd_net_buffer_count(net[0]);
        EXPECT(memcmp(&loss[0], &loss[1], sizeof(float)) == 0 &&
                   !memcmp(sd_net_output(net[0]), sd_net_output(net[1]), N * 10 * sizeof(float)) &&
                   !memcmp(sd_net_grads(net[0]), sd_net_grads(net[1]), np * sizeof(float)) &&
                   !memcmp(sd_net_buffers(net[0]), sd_net_buffers(net[1]), nb * sizeof(float)),
               "%s: fused and apart agree bitwise (loss %.9g / %.9g)", models[m].name, (double)loss[0], (double)loss[1]);
        for (int f = 0; f < 2; f++) EXPECT_OK(sd_net_forward(net[f], x, N, false));
        EXPECT(!memcmp(sd_net_output(net[0]), sd_net_output(net[1]), N * 10 * sizeof(float)),
               "%s: evaluation logits bitwise equal", models[m].name);
        EXPECT(sd_net_activation_bytes(net[0]) < sd_net_activation_bytes(net[1]), "%s: fused %zu activation bytes < %zu",
               models[m].name, sd_net_activation_bytes(net[0]), sd_net_activation_bytes(net[1]));
        sd_net_destroy(net[0]);
        sd_net_destroy(net[1]);
    }
}

/* sd_net_flops against counts by hand: ResNet-20 (CIFAR, 1x1 projection shortcuts) is 40,813,184
 * multiply-adds a sample forward: conv1 32x32x16x27 = 442,368; stage 1, six 3x3 16->16 convs at
 * 32x32, 2,359,296 each; stages 2 and 3 a strided conv (1,179,648), five 3x3 convs (2,359,296) and
 * a 1x1 shortcut (131,072) each; the linear layer 64 x 10. */
static void test_flops(void) {
    sd_model_spec spec = {.name = "resnet20", .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    sd_net *net = NULL;
    EXPECT_OK(sd_model_build(&be, &spec, 1, &net));
    if (!net) return;
    const double macs = 442368.0 + 6 * 2359296.0 + 2 * (1179648.0 + 5 * 2359296.0 + 131072.0) + 640.0;
    double fwd = 0, train = 0;
    sd_net_flops(net, &fwd, &train);
    EXPECT(macs == 40813184.0 && fwd == 2 * macs && train == 6 * macs - 2 * 442368.0,
           "resnet20: %.0f FLOP forward (want %.0f), %.0f a training step (want %.0f)", fwd, 2 * macs, train,
           6 * macs - 2 * 442368.0);
    sd_net_destroy(net);
}

int main(void) {
    if (sd_backend_cpu_create(&be, 2) != SD_OK) {
        fprintf(stderr, "%s\n", sd_last_error());
        return 1;
    }
    test_gradcheck();
    test_variable_batch();
    test_builder_errors();
    test_param_counts();
    test_flops();
    test_fusion();
    sd_backend_destroy(&be);
    return sd_test_finish("test_net");
}
