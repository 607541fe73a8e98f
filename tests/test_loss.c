/* test_loss.c: the CPU softmax cross-entropy against the naive reference (batch 1, odd class
 * counts, large logits, the threaded path), dlogits against finite differences of the loss, a
 * hand-computed case, and the errors: out-of-range labels and NULL pointers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tests/harness.h"
#include "tests/ref/ref_misc.h"

/* The kernel takes exp in float and sums in double; the reference works in double throughout. */
#define XENT_PROBS_NMSE 1e-12
#define XENT_LOSS_REL 1e-6
#define XENT_GRAD_NMSE 1e-12
#define XENT_GRAD_TOL 2e-2

static sd_kctx *k;

static void parity(int n, int classes, float spread, uint64_t seed) {
    sd_xent_params p;
    EXPECT_OK(sd_xent_params_make(&p, n, classes));
    const size_t cnt = (size_t)n * classes;
    sd_test_rng r = {seed};
    float *z = malloc(cnt * sizeof(float));
    int32_t *lab = malloc((size_t)n * sizeof(int32_t));
    sd_test_fill(&r, z, cnt, -spread, spread);
    for (int i = 0; i < n; i++) lab[i] = (int32_t)(sd_test_next(&r) % (uint64_t)classes);

    float *pr = sd_guard_alloc(cnt), *prr = malloc(cnt * sizeof(float));
    float *loss = sd_guard_alloc(1), lossr = 0;
    EXPECT_OK(sd_cpu_xent_fwd(k, &p, z, lab, pr, loss));
    EXPECT_OK(ref_xent_fwd(&p, z, lab, prr, &lossr));
    const double e = sd_nmse(pr, prr, cnt);
    EXPECT(e <= XENT_PROBS_NMSE && sd_all_finite(pr, cnt) && sd_guard_ok(pr, cnt),
           "xent probs n=%d classes=%d spread=%g: nmse %.3g", n, classes, spread, e);
    EXPECT(fabs(*loss - lossr) <= XENT_LOSS_REL * fabs(lossr) + 1e-7 && sd_guard_ok(loss, 1),
           "xent loss n=%d classes=%d spread=%g: %.9g vs %.9g", n, classes, spread, *loss, lossr);

    const float scale = 1.0f / (float)n;
    float *d = sd_guard_alloc(cnt), *dr = malloc(cnt * sizeof(float));
    EXPECT_OK(sd_cpu_xent_bwd(k, &p, prr, lab, scale, d));
    EXPECT_OK(ref_xent_bwd(&p, prr, lab, scale, dr));
    const double eb = sd_nmse(d, dr, cnt);
    EXPECT(eb <= XENT_GRAD_NMSE && sd_all_finite(d, cnt) && sd_guard_ok(d, cnt),
           "xent dlogits n=%d classes=%d: nmse %.3g", n, classes, eb);
    /* In place: dlogits == probs. */
    float *inplace = sd_guard_alloc(cnt);
    memcpy(inplace, prr, cnt * sizeof(float));
    EXPECT_OK(sd_cpu_xent_bwd(k, &p, inplace, lab, scale, inplace));
    EXPECT(memcmp(inplace, d, cnt * sizeof(float)) == 0 && sd_guard_ok(inplace, cnt),
           "xent bwd in place differs n=%d classes=%d", n, classes);
    free(z); free(lab); free(prr); free(dr);
    sd_guard_free(pr); sd_guard_free(loss); sd_guard_free(d); sd_guard_free(inplace);
}

typedef struct xent_fd {
    sd_xent_params p;
    const float *z;
    const int32_t *lab;
    float *probs;
} xent_fd;

static double xent_f(void *ctx, const float *unused) {
    (void)unused;
    xent_fd *c = ctx;
    float loss;
    if (sd_cpu_xent_fwd(k, &c->p, c->z, c->lab, c->probs, &loss) != SD_OK) return NAN;
    return loss;
}

/* dlogits with scale 1/n is the gradient of the mean loss. */
static void gradcheck(int n, int classes, uint64_t seed) {
    sd_xent_params p;
    EXPECT_OK(sd_xent_params_make(&p, n, classes));
    const size_t cnt = (size_t)n * classes;
    sd_test_rng r = {seed};
    float *z = malloc(cnt * sizeof(float)), *pr = malloc(cnt * sizeof(float)), *d = malloc(cnt * sizeof(float));
    int32_t *lab = malloc((size_t)n * sizeof(int32_t));
    sd_test_fill(&r, z, cnt, -2, 2);
    for (int i = 0; i < n; i++) lab[i] = (int32_t)(sd_test_next(&r) % (uint64_t)classes);
    float loss;
    EXPECT_OK(sd_cpu_xent_fwd(k, &p, z, lab, pr, &loss));
    EXPECT_OK(sd_cpu_xent_bwd(k, &p, pr, lab, 1.0f / (float)n, d));
    xent_fd ctx = {p, z, lab, pr};
    const double e = sd_gradcheck(xent_f, &ctx, z, cnt, d, 1e-2f, cnt, 1e-3, &r);
    EXPECT(e <= XENT_GRAD_TOL, "xent gradcheck n=%d classes=%d: %.3g", n, classes, e);
    free(z); free(pr); free(d); free(lab);
}

static void by_hand(void) {
    /* Logits (0, ln 2, ln 3) give probs 1/6, 2/6, 3/6; label 2 costs -ln(1/2), label 0 -ln(1/6).
     * A huge shared offset must not overflow (stable log-sum-exp). */
    const float z[6] = {0.0f, 0.69314718f, 1.09861229f, 1000.0f, 1000.69314718f, 1001.09861229f};
    const int32_t lab[2] = {2, 0};
    sd_xent_params p;
    EXPECT_OK(sd_xent_params_make(&p, 2, 3));
    float pr[6], loss, d[6];
    EXPECT_OK(sd_cpu_xent_fwd(k, &p, z, lab, pr, &loss));
    const double want = 0.5 * (log(2.0) + log(6.0));
    EXPECT(fabs(loss - want) < 1e-4, "xent loss %.7g, want %.7g", loss, want);
    EXPECT(fabsf(pr[0] - 1.0f / 6) < 1e-6f && fabsf(pr[1] - 2.0f / 6) < 1e-6f && fabsf(pr[2] - 0.5f) < 1e-6f,
           "probs %g %g %g", pr[0], pr[1], pr[2]);
    EXPECT(fabsf(pr[3] - 1.0f / 6) < 1e-4f && fabsf(pr[5] - 0.5f) < 1e-4f, "offset probs %g %g", pr[3], pr[5]);
    EXPECT_OK(sd_cpu_xent_bwd(k, &p, pr, lab, 0.5f, d));
    EXPECT(fabsf(d[2] - (0.5f - 1) * 0.5f) < 1e-6f && fabsf(d[0] - 0.5f / 6) < 1e-6f &&
               fabsf(d[3] - (1.0f / 6 - 1) * 0.5f) < 1e-4f,
           "dlogits %g %g %g", d[0], d[2], d[3]);
}

static void errors(void) {
    sd_xent_params p;
    EXPECT_OK(sd_xent_params_make(&p, 3, 4));
    float z[12] = {0}, pr[12], loss = 0, d[12];
    int32_t lab[3] = {0, 7, 1};
    EXPECT_FAIL(sd_cpu_xent_fwd(k, &p, z, lab, pr, &loss), SD_ERR_INVALID, "label 7 at index 1");
    EXPECT_FAIL(sd_cpu_xent_bwd(k, &p, pr, lab, 1.0f, d), SD_ERR_INVALID, "label 7 at index 1");
    lab[1] = -1;
    EXPECT_FAIL(sd_cpu_xent_fwd(k, &p, z, lab, pr, &loss), SD_ERR_INVALID, "label -1");
    lab[1] = 4;
    EXPECT_FAIL(sd_cpu_xent_fwd(k, &p, z, lab, pr, &loss), SD_ERR_INVALID, "label 4");
    lab[1] = 3;
    EXPECT_OK(sd_cpu_xent_fwd(k, &p, z, lab, pr, &loss));
    EXPECT(fabsf(loss - logf(4.0f)) < 1e-6f, "uniform logits: loss %g, want ln 4", loss);
    EXPECT_FAIL(sd_cpu_xent_fwd(k, &p, NULL, lab, pr, &loss), SD_ERR_INVALID, "softmax_xent");
    EXPECT_FAIL(sd_cpu_xent_fwd(k, &p, z, NULL, pr, &loss), SD_ERR_INVALID, "softmax_xent");
    EXPECT_FAIL(sd_cpu_xent_fwd(k, &p, z, lab, pr, NULL), SD_ERR_INVALID, "softmax_xent");
    EXPECT_FAIL(sd_cpu_xent_fwd(NULL, &p, z, lab, pr, &loss), SD_ERR_INVALID, "softmax_xent");
    EXPECT_FAIL(sd_cpu_xent_bwd(k, &p, pr, lab, 1.0f, NULL), SD_ERR_INVALID, "softmax_xent");
    EXPECT_FAIL(sd_cpu_xent_bwd(k, NULL, pr, lab, 1.0f, d), SD_ERR_INVALID, "softmax_xent");
}

int main(void) {
    if (sd_cpu_kctx_create(2, &k) != SD_OK) return sd_test_skip("test_loss", sd_last_error());
    parity(1, 10, 3.0f, 1);     /* batch 1 */
    parity(7, 3, 3.0f, 2);
    parity(128, 10, 5.0f, 3);   /* the CIFAR-10 head */
    parity(33, 1, 1.0f, 4);     /* one class: loss 0 */
    parity(16, 17, 40.0f, 5);   /* large logits */
    parity(64, 1000, 8.0f, 6);  /* threaded path */
    gradcheck(4, 5, 7);
    gradcheck(1, 10, 8);
    by_hand();
    errors();
    sd_cpu_kctx_destroy(k);
    return sd_test_finish("test_loss");
}
