/* harness.h: the tiny test harness every C test uses: expectations that count, the closing
 * "N passed, N failed" line, skips (exit code 77, which ctest reports as skipped), and the
 * numerical helpers of the op checks (random fills, NMSE, guarded buffers, finite checks). */
#ifndef SD_TESTS_HARNESS_H
#define SD_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SD_TEST_SKIP_CODE 77

extern int sd_test_passed, sd_test_failed;

/* One expectation; prints the location and message on failure and keeps going. */
#define EXPECT(cond, ...)                                                           \
    do {                                                                            \
        if (cond) {                                                                 \
            sd_test_passed++;                                                       \
        } else {                                                                    \
            sd_test_failed++;                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
        }                                                                           \
    } while (0)

/* Expect a call to return SD_OK; print sd_last_error() otherwise. */
#define EXPECT_OK(expr)                                                                        \
    do {                                                                                       \
        sd_status sd_e_s_ = (expr);                                                            \
        EXPECT(sd_e_s_ == SD_OK, "%s returned %s: %s", #expr, sd_status_str(sd_e_s_), sd_last_error()); \
    } while (0)

/* Expect a specific failure status and a message that mentions `needle`. */
#define EXPECT_FAIL(expr, status, needle) sd_expect_fail_((expr), (status), (needle), #expr, __FILE__, __LINE__)
void sd_expect_fail_(int got, int want, const char *needle, const char *expr, const char *file, int line);

/* Expect a specific failure status and a message that holds every one of the needles (strings). */
#define EXPECT_MSG(expr, status, ...) sd_expect_msg_((expr), (status), #expr, __LINE__, __VA_ARGS__, (const char *)NULL)
void sd_expect_msg_(int got, int want, const char *expr, int line, ...);

/* Prints "<name>: N passed, N failed" and returns the process exit code. */
int sd_test_finish(const char *name);
/* Prints the reason and returns SD_TEST_SKIP_CODE (ctest: SKIP_RETURN_CODE 77). */
int sd_test_skip(const char *name, const char *why);

/* Path of a committed test data file: $SD_TEST_DATA/name (ctest sets it), else
 * $SD_SOURCE_DIR/tests/data/name, else tests/data/name relative to the working directory. */
void sd_test_data_path(const char *name, char *out, size_t size);

/* The whole file as a NUL-terminated string (malloc'd; the caller frees it), its length in *len
 * when len is not NULL; NULL when it cannot be read. */
char *sd_test_slurp(const char *path, size_t *len);
/* The value of the first "key" in a JSON text (NULL allowed), whatever white space the writer put
 * around the colon: a pointer to its first character, NULL when the key is absent. For reading one
 * number or word of summary.json or drops.json: atof(sd_test_json_after(text, "steps")). */
const char *sd_test_json_after(const char *json, const char *key);

/* ---- numerics ---- */
/* Deterministic generator for test data (splitmix64). */
typedef struct sd_test_rng { uint64_t s; } sd_test_rng;
uint64_t sd_test_next(sd_test_rng *r);
float sd_test_uniform(sd_test_rng *r, float lo, float hi);
void sd_test_fill(sd_test_rng *r, float *x, size_t n, float lo, float hi);

/* Normalised mean squared error sum((a-b)^2) / sum(b^2) (b is the reference). */
double sd_nmse(const float *a, const float *ref, size_t n);
double sd_max_abs_diff(const float *a, const float *b, size_t n);
int sd_all_finite(const float *x, size_t n);

/* A buffer of n floats with sentinel guards on both sides: sd_guard_ok() fails when a kernel
 * wrote outside [0, n). */
float *sd_guard_alloc(size_t n);
int sd_guard_ok(const float *buf, size_t n);
void sd_guard_free(float *buf);

/* Finite-difference gradient check. f(ctx, x) is a scalar function of x (typically
 * sum(forward(x) * r) for a fixed random r, so its gradient is the op's backward applied to r).
 * Central differences with step eps on `samples` coordinates of x chosen by rng (all of them when
 * samples >= n) are compared with `grad`; returns the largest error
 * |num - ana| / max(|num| + |ana|, floor). x is restored before return. */
typedef double (*sd_scalar_fn)(void *ctx, const float *x);
double sd_gradcheck(sd_scalar_fn f, void *ctx, float *x, size_t n, const float *grad, float eps,
                    size_t samples, double floor, sd_test_rng *rng);

/* Central-difference gradient of f at x (all n coordinates) into out; x is restored. For
 * network-level checks compare the whole vector (sd_rel_l2) rather than element by element, so
 * float rounding on near-zero entries does not dominate. */
void sd_numgrad(sd_scalar_fn f, void *ctx, float *x, size_t n, float eps, double *out);
/* ||a - ref|| / ||ref|| over n values (a in double, ref in float). */
double sd_rel_l2(const double *a, const float *ref, size_t n);

#endif
