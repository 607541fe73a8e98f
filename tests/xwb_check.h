/* xwb_check.h: the shared checks of the ops of the form y = f(x, w, b) (convolution, linear)
 * against their double-precision references: parity of forward, backward with dx and backward
 * without dx (gradients overwritten, not accumulated; guards and finiteness checked), and
 * finite-difference checks of dx, dw and db. A test describes its op by an sd_xwb_op (sizes,
 * the kernel and reference entry points through a context, a shape string for messages). */
#ifndef SD_TESTS_XWB_CHECK_H
#define SD_TESTS_XWB_CHECK_H

#include <stddef.h>

#include "base/status.h"
#include "tests/harness.h"

typedef struct sd_xwb_op {
    const char *name;           /* "conv2d", "linear": prefixes every message */
    const char *shape;          /* the shape, for messages */
    size_t xn, wn, yn, bn;      /* element counts of x, w, y and b */
    int bias;                   /* whether b (and db) take part */
    void *ctx;                  /* handed to every entry below */
    /* The kernel and the reference: b / db are NULL without bias, dx NULL for "no dx". */
    sd_status (*fwd)(void *ctx, const float *x, const float *w, const float *b, float *y);
    sd_status (*bwd)(void *ctx, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db);
    sd_status (*ref_fwd)(void *ctx, const float *x, const float *w, const float *b, float *y);
    sd_status (*ref_bwd)(void *ctx, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db);
} sd_xwb_op;

/* Forward, backward and backward without dx against the reference on inputs in [-1, 1]: NMSE
 * below tol; *worst keeps the largest NMSE seen. */
void sd_xwb_parity(const sd_xwb_op *op, double tol, sd_test_rng *rng, double *worst);

/* Central differences of f = sum(y * r), which is linear in each of x, w and b (no truncation
 * error at any step): eps 5e-2, denominator floor 0.1, bound 5e-3 relative; *worst keeps the
 * largest error seen. */
void sd_xwb_gradcheck(const sd_xwb_op *op, sd_test_rng *rng, double *worst);

#endif
