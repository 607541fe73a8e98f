/* test_status.c: op parameter validation and error messages (bad input never reaches a kernel). */
#include "kernels/ops.h"
#include "tests/harness.h"

int main(void) {
    sd_conv2d_params c;
    EXPECT_OK(sd_conv2d_params_make(&c, 2, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 0));
    EXPECT(c.oh == 32 && c.ow == 32, "conv output %dx%d", c.oh, c.ow);
    EXPECT_OK(sd_conv2d_params_make(&c, 1, 1, 28, 28, 16, 5, 5, 2, 2, 2, 2, 1));
    EXPECT(c.oh == 14 && c.ow == 14, "strided conv output %dx%d", c.oh, c.ow);
    EXPECT_FAIL(sd_conv2d_params_make(&c, 0, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 0), SD_ERR_SHAPE, "conv2d");
    EXPECT_FAIL(sd_conv2d_params_make(&c, 1, 3, 2, 2, 16, 5, 5, 1, 1, 0, 0, 0), SD_ERR_SHAPE, "larger than padded");
    EXPECT_FAIL(sd_conv2d_params_make(&c, 1, 3, 8, 8, 16, 3, 3, 0, 1, 0, 0, 0), SD_ERR_INVALID, "stride");
    EXPECT_FAIL(sd_conv2d_params_make(&c, 1, -3, 8, 8, 16, 3, 3, 1, 1, 0, 0, 0), SD_ERR_SHAPE, "[1,-3,8,8]");

    sd_pool2d_params p;
    EXPECT_OK(sd_pool2d_params_make(&p, 2, 4, 7, 7, 2, 2, 2, 2, 0, 0));
    EXPECT(p.oh == 3 && p.ow == 3, "pool floor mode %dx%d", p.oh, p.ow);
    EXPECT_FAIL(sd_pool2d_params_make(&p, 2, 4, 7, 7, 2, 2, 2, 2, 2, 2), SD_ERR_INVALID, "half the kernel");

    sd_bn_params b;
    EXPECT_FAIL(sd_bn_params_make(&b, 2, 4, 3, 3, 0.0f, 0.1f), SD_ERR_INVALID, "eps");
    EXPECT_FAIL(sd_bn_params_make(&b, 2, 4, 3, 3, 1e-5f, 1.5f), SD_ERR_INVALID, "momentum");
    sd_linear_params l;
    EXPECT_FAIL(sd_linear_params_make(&l, 4, 0, 10, 1), SD_ERR_SHAPE, "linear");
    sd_xent_params x;
    EXPECT_FAIL(sd_xent_params_make(&x, 4, 0), SD_ERR_SHAPE, "classes");
    sd_dropout_params d;
    EXPECT_FAIL(sd_dropout_params_make(&d, 10, 1.0f, 1, 0), SD_ERR_INVALID, "dropout");
    sd_sgd_params s;
    EXPECT_FAIL(sd_sgd_params_make(&s, 10, 0.1f, 0.0f, 0.0f, 0.0f, 1, 0), SD_ERR_INVALID, "Nesterov");
    EXPECT_FAIL(sd_sgd_params_make(&s, 10, -0.1f, 0.9f, 0.0f, 0.0f, 0, 0), SD_ERR_INVALID, "learning rate");
    return sd_test_finish("test_status");
}
