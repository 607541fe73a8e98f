/* inject.c: the accounted injection pool declared in inject.h: per-class ring buckets of
 * (dataset index, label, contributing device), draws for one device's batch, and the counters
 * that account for every sample moving between devices. */
#include "stream/inject.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CEIL_SLACK 1e-9

typedef struct inject_entry {
    int64_t index; /* dataset index */
    int32_t label;
    int32_t device; /* who contributed it */
} inject_entry;

typedef struct inject_bucket {
    inject_entry *e; /* capacity entries, a ring */
    int64_t head;    /* oldest entry */
    int64_t size;
} inject_bucket;

struct sd_inject_pool {
    const sd_dataset *d;
    int devices, classes;
    int64_t capacity;
    inject_bucket *bucket;  /* classes */
    inject_entry *entries;  /* classes x capacity */
    uint8_t *own;           /* devices x classes: the device contributed this class */
    sd_inject_stats *stats; /* devices */
    uint64_t *flow;         /* devices x devices: flow[from * devices + to] */
    int *eligible;          /* scratch: classes */
    int64_t *cand;          /* scratch: capacity */
};

void sd_inject_pool_destroy(sd_inject_pool *p) {
    if (!p) return;
    free(p->bucket);
    free(p->entries);
    free(p->own);
    free(p->stats);
    free(p->flow);
    free(p->eligible);
    free(p->cand);
    free(p);
}

sd_status sd_inject_pool_create(const sd_dataset *d, int devices, int64_t capacity_per_class, sd_inject_pool **out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_create needs an output pointer");
    *out = NULL;
    if (!d || d->classes < 1 || (d->n > 0 && !d->labels))
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_create needs a loaded dataset with at least one class");
    if (devices < 1 || devices > SD_INJECT_MAX_DEVICES)
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_create: devices = %d is outside the allowed range [1, %d]",
                       devices, SD_INJECT_MAX_DEVICES);
    if (capacity_per_class < 1 || capacity_per_class > SD_INJECT_MAX_ENTRIES / d->classes)
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_create: capacity_per_class = %lld is outside the allowed range "
                       "[1, %lld] (%d classes, at most %lld entries in all)", (long long)capacity_per_class,
                       (long long)(SD_INJECT_MAX_ENTRIES / d->classes), d->classes, (long long)SD_INJECT_MAX_ENTRIES);
    sd_inject_pool *p = calloc(1, sizeof *p);
    if (!p) return SD_FAIL(SD_ERR_OOM, "injection pool");
    p->d = d;
    p->devices = devices;
    p->classes = d->classes;
    p->capacity = capacity_per_class;
    size_t C = (size_t)d->classes, D = (size_t)devices;
    p->bucket = calloc(C, sizeof *p->bucket);
    p->entries = malloc(C * (size_t)capacity_per_class * sizeof *p->entries);
    p->own = calloc(D * C, 1);
    p->stats = calloc(D, sizeof *p->stats);
    p->flow = calloc(D * D, sizeof *p->flow);
    p->eligible = malloc(C * sizeof *p->eligible);
    p->cand = malloc((size_t)capacity_per_class * sizeof *p->cand);
    if (!p->bucket || !p->entries || !p->own || !p->stats || !p->flow || !p->eligible || !p->cand) {
        sd_inject_pool_destroy(p);
        return SD_FAIL(SD_ERR_OOM, "injection pool of %zu classes x %lld entries for %d devices", C,
                       (long long)capacity_per_class, devices);
    }
    for (size_t c = 0; c < C; c++) p->bucket[c].e = p->entries + c * (size_t)capacity_per_class;
    *out = p;
    return SD_OK;
}

static sd_status check_device(const sd_inject_pool *p, int device, const char *fn) {
    if (!p) return SD_FAIL(SD_ERR_INVALID, "%s needs a pool", fn);
    if (device < 0 || device >= p->devices)
        return SD_FAIL(SD_ERR_INVALID, "%s: device %d is outside [0, %d)", fn, device, p->devices);
    return SD_OK;
}

/* ---- contributing --------------------------------------------------------------------------- */

sd_status sd_inject_pool_contribute(sd_inject_pool *p, int device, const int64_t *dataset_indices, int64_t n) {
    TRY(check_device(p, device, "sd_inject_pool_contribute"));
    if (n < 0) return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute: n = %lld is negative", (long long)n);
    if (n > 0 && !dataset_indices)
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute: %lld samples but no index array", (long long)n);
    const sd_dataset *d = p->d;
    for (int64_t t = 0; t < n; t++) {
        int64_t s = dataset_indices[t];
        if (s < 0 || s >= d->n)
            return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute: dataset_indices[%lld] = %lld is outside [0, %lld) "
                           "of '%s'", (long long)t, (long long)s, (long long)d->n, d->name);
        if (d->labels[s] < 0 || d->labels[s] >= p->classes)
            return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute: sample %lld of '%s' has label %d outside [0, %d)",
                           (long long)s, d->name, d->labels[s], p->classes);
    }
    sd_inject_stats *me = &p->stats[device];
    for (int64_t t = 0; t < n; t++) {
        int64_t s = dataset_indices[t];
        int32_t c = d->labels[s];
        inject_bucket *b = &p->bucket[c];
        inject_entry e = {s, c, device};
        if (b->size < p->capacity) {
            b->e[(b->head + b->size) % p->capacity] = e;
            b->size++;
        } else { /* full: the oldest entry of this class makes room */
            sd_inject_stats *old = &p->stats[b->e[b->head].device];
            old->evicted++;
            old->held--;
            b->e[b->head] = e;
            b->head = (b->head + 1) % p->capacity;
        }
        me->shared++;
        me->held++;
        p->own[(size_t)device * (size_t)p->classes + (size_t)c] = 1;
    }
    return SD_OK;
}

static int64_t ceil_count(double x) { return (int64_t)ceil(x - CEIL_SLACK); }

sd_status sd_inject_pool_contribute_share(sd_inject_pool *p, int device, const int64_t *indices, int64_t n,
                                          double share, sd_rng *rng) {
    TRY(check_device(p, device, "sd_inject_pool_contribute_share"));
    if (!(share >= 0.0 && share <= 1.0))
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute_share: share = %g is outside the allowed range [0, 1]",
                       share);
    if (n < 0 || (n > 0 && !indices))
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute_share: %lld samples%s", (long long)n,
                       n < 0 ? " is negative" : " but no index array");
    int64_t take = ceil_count(share * (double)n);
    if (take < 0) take = 0;
    if (take > n) take = n;
    if (take == 0) return SD_OK;
    if (!rng) return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_contribute_share needs an rng");
    int64_t *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return SD_FAIL(SD_ERR_OOM, "copy of %lld indices", (long long)n);
    memcpy(copy, indices, (size_t)n * sizeof *copy);
    for (int64_t t = 0; t < take; t++) {
        int64_t j = t + (int64_t)sd_rng_below(rng, (uint64_t)(n - t));
        int64_t tmp = copy[t];
        copy[t] = copy[j];
        copy[j] = tmp;
    }
    sd_status st = sd_inject_pool_contribute(p, device, copy, take);
    free(copy);
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return st;
}

/* ---- drawing -------------------------------------------------------------------------------- */

static bool in_unit(double x) { return x >= 0.0 && x <= 1.0; }

int64_t sd_inject_draw_max(int local_batch_n, double alpha, double beta, int devices_total) {
    if (!in_unit(alpha) || !in_unit(beta) || local_batch_n < 0 || devices_total < 1) return -1;
    int64_t k = ceil_count(alpha * devices_total), m = ceil_count(beta * local_batch_n);
    if (k < 0) k = 0;
    if (m < 0) m = 0;
    return k * m;
}

sd_status sd_inject_draw(sd_inject_pool *p, int device, int local_batch_n, double alpha, double beta,
                         int devices_total, sd_rng *rng, int64_t *out_indices, int max_out, int *n_out) {
    if (n_out) *n_out = 0;
    TRY(check_device(p, device, "sd_inject_draw"));
    if (!in_unit(alpha))
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw: alpha = %g is outside the allowed range [0, 1] (the share of "
                       "devices whose count of classes is injected)", alpha);
    if (!in_unit(beta))
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw: beta = %g is outside the allowed range [0, 1] (the share of "
                       "the local batch drawn from each injected class)", beta);
    if (local_batch_n < 0)
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw: local_batch_n = %d is negative", local_batch_n);
    if (devices_total < 1)
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw: devices_total = %d is outside the allowed range [1, %d]",
                       devices_total, INT_MAX);
    if (!n_out) return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw needs n_out");
    const int64_t most = sd_inject_draw_max(local_batch_n, alpha, beta, devices_total);
    const int64_t k = ceil_count(alpha * devices_total), m = ceil_count(beta * local_batch_n);
    if (most > max_out)
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw: max_out = %d is less than ceil(alpha x devices) x ceil(beta x "
                       "batch) = %lld x %lld = %lld; size the output with sd_inject_draw_max", max_out, (long long)k,
                       (long long)m, (long long)most);
    if (most > 0 && (!out_indices || !rng))
        return SD_FAIL(SD_ERR_INVALID, "sd_inject_draw needs an output array and an rng");

    sd_inject_stats *me = &p->stats[device];
    me->draws++;
    if (most == 0) return SD_OK;

    /* 1. eligible classes: not the device's own, holding samples of other devices */
    const uint8_t *own = p->own + (size_t)device * (size_t)p->classes;
    int ne = 0;
    for (int c = 0; c < p->classes; c++) {
        if (own[c]) continue;
        const inject_bucket *b = &p->bucket[c];
        for (int64_t t = 0; t < b->size; t++)
            if (b->e[(b->head + t) % p->capacity].device != device) {
                p->eligible[ne++] = c;
                break;
            }
    }
    /* 2. k' classes, partial Fisher-Yates */
    int kk = (int)(k < ne ? k : ne);
    for (int t = 0; t < kk; t++) {
        int j = t + (int)sd_rng_below(rng, (uint64_t)(ne - t));
        int tmp = p->eligible[t];
        p->eligible[t] = p->eligible[j];
        p->eligible[j] = tmp;
    }
    /* 3. m' distinct entries of other devices from each chosen class */
    int got = 0;
    for (int t = 0; t < kk; t++) {
        const inject_bucket *b = &p->bucket[p->eligible[t]];
        int64_t nc = 0; /* (the bucket of a class the drawer never contributed holds none of its
                         * samples; the device test restates "never its own samples" directly) */
        for (int64_t q = 0; q < b->size; q++) {
            int64_t pos = (b->head + q) % p->capacity;
            if (b->e[pos].device != device) p->cand[nc++] = pos;
        }
        int64_t mm = m < nc ? m : nc;
        for (int64_t q = 0; q < mm; q++) {
            int64_t j = q + (int64_t)sd_rng_below(rng, (uint64_t)(nc - q));
            int64_t tmp = p->cand[q];
            p->cand[q] = p->cand[j];
            p->cand[j] = tmp;
            const inject_entry *e = &b->e[p->cand[q]];
            out_indices[got++] = e->index;
            p->stats[e->device].drawn_by_others++;
            p->flow[(size_t)e->device * (size_t)p->devices + (size_t)device]++;
        }
    }
    me->received += (uint64_t)got;
    if (got < most) me->short_draws++;
    *n_out = got;
    return SD_OK;
}

/* ---- inspection ----------------------------------------------------------------------------- */

sd_status sd_inject_pool_stats(const sd_inject_pool *p, int device, sd_inject_stats *out) {
    TRY(check_device(p, device, "sd_inject_pool_stats"));
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_stats needs an output");
    *out = p->stats[device];
    return SD_OK;
}

uint64_t sd_inject_pool_flow(const sd_inject_pool *p, int from, int to) {
    if (!p || from < 0 || to < 0 || from >= p->devices || to >= p->devices) return 0;
    return p->flow[(size_t)from * (size_t)p->devices + (size_t)to];
}

int64_t sd_inject_pool_held(const sd_inject_pool *p, int cls) {
    if (!p || cls < 0 || cls >= p->classes) return -1;
    return p->bucket[cls].size;
}

bool sd_inject_pool_owns(const sd_inject_pool *p, int device, int cls) {
    if (!p || device < 0 || device >= p->devices || cls < 0 || cls >= p->classes) return false;
    return p->own[(size_t)device * (size_t)p->classes + (size_t)cls] != 0;
}

sd_status sd_inject_pool_print(const sd_inject_pool *p, FILE *f) {
    if (!p || !f) return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_print needs a pool and a stream");
    fprintf(f, "injection pool over '%s': %d devices, %d classes x %lld entries\n", p->d->name, p->devices, p->classes,
            (long long)p->capacity);
    for (int i = 0; i < p->devices; i++) {
        const sd_inject_stats *s = &p->stats[i];
        fprintf(f, "device %d: shared %llu (evicted %llu, held %llu), drawn by others %llu, received %llu in %llu draws\n",
                i, (unsigned long long)s->shared, (unsigned long long)s->evicted, (unsigned long long)s->held,
                (unsigned long long)s->drawn_by_others, (unsigned long long)s->received,
                (unsigned long long)s->draws);
    }
    if (ferror(f)) return SD_FAIL(SD_ERR_IO, "sd_inject_pool_print: writing failed");
    return SD_OK;
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

sd_status sd_inject_pool_restore_counters(sd_inject_pool *p, const sd_inject_stats *stats, const uint64_t *flow) {
    if (!p || !stats || !flow) return SD_FAIL(SD_ERR_INVALID, "sd_inject_pool_restore_counters needs a pool, counters and flows");
    size_t D = (size_t)p->devices;
    for (size_t i = 0; i < D; i++) {
        const sd_inject_stats *s = &stats[i], *now = &p->stats[i];
        if (s->shared != now->shared || s->evicted != now->evicted || s->held != now->held)
            return SD_FAIL(SD_ERR_INVALID, "injection pool restore: device %zu shared/evicted/held %llu/%llu/%llu in the "
                           "checkpoint but %llu/%llu/%llu here; the checkpoint belongs to another partition or seed", i,
                           (unsigned long long)s->shared, (unsigned long long)s->evicted, (unsigned long long)s->held,
                           (unsigned long long)now->shared, (unsigned long long)now->evicted,
                           (unsigned long long)now->held);
        uint64_t out = 0, in = 0;
        for (size_t j = 0; j < D; j++) {
            out += flow[i * D + j];
            in += flow[j * D + i];
        }
        if (out != s->drawn_by_others || in != s->received || flow[i * D + i] != 0)
            return SD_FAIL(SD_ERR_INVALID, "injection pool restore: device %zu's flows (out %llu, in %llu) do not match "
                           "its counters (drawn by others %llu, received %llu); the checkpoint is damaged", i,
                           (unsigned long long)out, (unsigned long long)in, (unsigned long long)s->drawn_by_others,
                           (unsigned long long)s->received);
    }
    memcpy(p->stats, stats, D * sizeof *stats);
    memcpy(p->flow, flow, D * D * sizeof *flow);
    return SD_OK;
}
