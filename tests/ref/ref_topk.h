/* ref_topk.h: the Top-k selection written the plain way (sort by |x|, ties to the lower index), as
 * the compressor's tests model it (test_compress, test_sparse_allreduce). */
#ifndef SD_TESTS_REF_TOPK_H
#define SD_TESTS_REF_TOPK_H

#include <stddef.h>
#include <stdint.h>

/* The order key of |v| (NaN above every number, as the kernel ranks it). */
uint32_t ref_topk_mag_key(float v);
/* ceil(ratio * n) clamped to [1, n] (0 for n = 0), tolerant of ratio * n a rounding above an integer. */
size_t ref_topk_k(double ratio, size_t n);
/* sel[lo + i] = 1 for the kk largest |x| of x[lo, lo + n). */
void ref_topk_select(const float *x, size_t lo, size_t n, size_t kk, unsigned char *sel);

#endif
