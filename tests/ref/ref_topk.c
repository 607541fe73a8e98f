/* ref_topk.c: the plain Top-k reference (ref_topk.h). */
#include "tests/ref/ref_topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_ent {
    uint32_t key, idx;
} ref_ent;

uint32_t ref_topk_mag_key(float v) {
    float a = fabsf(v);
    uint32_t u;
    memcpy(&u, &a, 4);
    return isnan(v) ? 0x7f800001u : u;
}

static int cmp_ent(const void *pa, const void *pb) { /* |x| descending, ties to the lower index */
    const ref_ent *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

size_t ref_topk_k(double ratio, size_t n) {
    double t = ratio * (double)n;
    size_t k = (size_t)ceil(t - 1e-9 * t);
    return k < 1 ? 1 : k > n ? n : k;
}

void ref_topk_select(const float *x, size_t lo, size_t n, size_t kk, unsigned char *sel) {
    ref_ent *e = malloc((n ? n : 1) * sizeof *e);
    if (!e) abort();
    for (size_t i = 0; i < n; i++) e[i] = (ref_ent){ref_topk_mag_key(x[lo + i]), (uint32_t)i};
    qsort(e, n, sizeof *e, cmp_ent);
    for (size_t j = 0; j < kk; j++) sel[lo + e[j].idx] = 1;
    free(e);
}
