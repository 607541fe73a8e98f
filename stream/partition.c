/* partition.c: the IID, label-slice and Dirichlet partitioners, the gamma sampler and the
 * histogram/print helpers declared in partition.h. Every partitioner first decides an owner per
 * sample (a device, or -1 for none) and then builds the per-device index lists from it in one
 * allocation, so every sample lands on at most one device by construction. */
#include "stream/partition.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stream/augment.h"

/* ---- checks --------------------------------------------------------------------------------- */

static sd_status check_dataset(const sd_dataset *d, const char *fn) {
    if (!d) return SD_FAIL(SD_ERR_INVALID, "%s needs a dataset", fn);
    if (d->n < 1 || !d->labels)
        return SD_FAIL(SD_ERR_INVALID, "%s: dataset '%s' holds %lld samples%s; a partition needs at least one", fn,
                       d->name, (long long)d->n, d->labels ? "" : " and no labels");
    if (d->n > INT64_MAX / 16)
        return SD_FAIL(SD_ERR_INVALID, "%s: dataset '%s' holds %lld samples, too many to partition", fn, d->name,
                       (long long)d->n);
    if (d->classes < 1)
        return SD_FAIL(SD_ERR_INVALID, "%s: dataset '%s' has %d classes; expected at least 1", fn, d->name,
                       d->classes);
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] < 0 || d->labels[i] >= d->classes)
            return SD_FAIL(SD_ERR_INVALID, "%s: dataset '%s' sample %lld has label %d outside [0, %d)", fn, d->name,
                           (long long)i, d->labels[i], d->classes);
    return SD_OK;
}

static sd_status check_devices(const sd_dataset *d, int devices, const char *fn) {
    if (devices < 1 || (int64_t)devices > d->n)
        return SD_FAIL(SD_ERR_INVALID, "%s: devices = %d is outside the allowed range [1, %lld] (at least one device, "
                       "at most one per sample of '%s')", fn, devices, (long long)d->n, d->name);
    return SD_OK;
}

static void partition_clear(sd_partition *p) { memset(p, 0, sizeof *p); }

void sd_partition_free(sd_partition *p) {
    if (!p) return;
    free(p->mem_);
    partition_clear(p);
}

/* ---- building the lists from an owner per sample --------------------------------------------- */

/* owner[s] in [-1, devices): builds out (one allocation: count, index pointers, storage). */
static sd_status build_from_owner(const sd_dataset *d, const int32_t *owner, int devices, sd_partition *out) {
    int64_t *count = calloc((size_t)devices, sizeof *count);
    if (!count) return SD_FAIL(SD_ERR_OOM, "partition counts for %d devices", devices);
    int64_t assigned = 0;
    for (int64_t s = 0; s < d->n; s++)
        if (owner[s] >= 0) {
            count[owner[s]]++;
            assigned++;
        }
    size_t bytes = (size_t)devices * (sizeof(int64_t *) + sizeof(int64_t)) + (size_t)assigned * sizeof(int64_t);
    void *mem = malloc(bytes);
    if (!mem) {
        free(count);
        return SD_FAIL(SD_ERR_OOM, "partition of %lld samples over %d devices (%zu bytes)", (long long)assigned,
                       devices, bytes);
    }
    int64_t **index = mem; /* pointers first, then int64 arrays: everything stays 8-byte aligned */
    int64_t *cnt = (int64_t *)(index + devices);
    int64_t *store = cnt + devices;
    int64_t off = 0;
    for (int i = 0; i < devices; i++) {
        index[i] = store + off;
        off += count[i];
        cnt[i] = 0;
    }
    for (int64_t s = 0; s < d->n; s++) /* ascending dataset order within each device */
        if (owner[s] >= 0) index[owner[s]][cnt[owner[s]]++] = s;
    free(count);
    out->devices = devices;
    out->classes = d->classes;
    out->dataset_n = d->n;
    out->assigned = assigned;
    out->count = cnt;
    out->index = index;
    out->mem_ = mem;
    return SD_OK;
}

/* Counting sort of the indices by label: order[start[c] .. start[c+1]) are class c's samples,
 * ascending. start has classes + 1 entries. */
static sd_status class_order(const sd_dataset *d, int64_t **order_out, int64_t **start_out) {
    int64_t *order = malloc((size_t)d->n * sizeof *order);
    int64_t *start = calloc((size_t)d->classes + 1, sizeof *start);
    if (!order || !start) {
        free(order);
        free(start);
        return SD_FAIL(SD_ERR_OOM, "class lists of %lld samples", (long long)d->n);
    }
    for (int64_t s = 0; s < d->n; s++) start[d->labels[s] + 1]++;
    for (int c = 0; c < d->classes; c++) start[c + 1] += start[c];
    int64_t *fill = malloc((size_t)d->classes * sizeof *fill);
    if (!fill) {
        free(order);
        free(start);
        return SD_FAIL(SD_ERR_OOM, "class lists of %lld samples", (long long)d->n);
    }
    memcpy(fill, start, (size_t)d->classes * sizeof *fill);
    for (int64_t s = 0; s < d->n; s++) order[fill[d->labels[s]]++] = s;
    free(fill);
    *order_out = order;
    *start_out = start;
    return SD_OK;
}

static int32_t *owners_alloc(const sd_dataset *d) {
    int32_t *owner = malloc((size_t)d->n * sizeof *owner);
    if (owner)
        for (int64_t s = 0; s < d->n; s++) owner[s] = -1;
    return owner;
}

/* ---- IID ------------------------------------------------------------------------------------ */

sd_status sd_partition_iid(const sd_dataset *d, int devices, uint64_t seed, sd_partition *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_partition_iid needs an output partition");
    partition_clear(out);
    TRY(check_dataset(d, "sd_partition_iid"));
    TRY(check_devices(d, devices, "sd_partition_iid"));
    int64_t *perm = malloc((size_t)d->n * sizeof *perm);
    int32_t *owner = owners_alloc(d);
    if (!perm || !owner) {
        free(perm);
        free(owner);
        return SD_FAIL(SD_ERR_OOM, "IID partition of %lld samples", (long long)d->n);
    }
    for (int64_t s = 0; s < d->n; s++) perm[s] = s;
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    sd_status st = sd_shuffle(perm, d->n, &rng);
    if (st == SD_OK) {
        int64_t base = d->n / devices, extra = d->n % devices, pos = 0;
        for (int i = 0; i < devices; i++) {
            int64_t share = base + (i < extra);
            for (int64_t k = 0; k < share; k++) owner[perm[pos++]] = i;
        }
        st = build_from_owner(d, owner, devices, out);
    }
    free(perm);
    free(owner);
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return st;
}

/* ---- label slices --------------------------------------------------------------------------- */

sd_status sd_partition_slices(const sd_dataset *d, int devices, int classes_per_device, uint64_t seed,
                              sd_partition *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_partition_slices needs an output partition");
    partition_clear(out);
    TRY(check_dataset(d, "sd_partition_slices"));
    TRY(check_devices(d, devices, "sd_partition_slices"));
    const int C = d->classes, k = classes_per_device;
    if (k < 1 || k > C)
        return SD_FAIL(SD_ERR_INVALID, "sd_partition_slices: classes_per_device = %d is outside the allowed range "
                       "[1, %d] (the classes of '%s')", k, C, d->name);

    /* slot t = i*k + j gives device i = t / k the class t % C; walking t upwards lists every
     * class's holders in ascending device order: hlist[hstart[c] .. hstart[c+1]) */
    const int64_t slots = (int64_t)devices * k;
    int64_t *order = NULL, *start = NULL;
    TRY(class_order(d, &order, &start));
    int32_t *owner = owners_alloc(d);
    int *hlist = malloc((size_t)slots * sizeof *hlist);
    int64_t *hstart = calloc((size_t)C + 1, sizeof *hstart);
    int64_t *hfill = malloc((size_t)C * sizeof *hfill);
    int64_t *count = calloc((size_t)devices, sizeof *count);
    sd_status st = SD_OK;
    if (!owner || !hlist || !hstart || !hfill || !count) {
        st = SD_FAIL(SD_ERR_OOM, "slice partition of %lld samples over %d devices", (long long)d->n, devices);
        goto done;
    }
    for (int64_t t = 0; t < slots; t++) hstart[t % C + 1]++;
    for (int c = 0; c < C; c++) hstart[c + 1] += hstart[c];
    memcpy(hfill, hstart, (size_t)C * sizeof *hfill);
    for (int64_t t = 0; t < slots; t++) hlist[hfill[t % C]++] = (int)(t / k);

    sd_rng rng;
    sd_rng_seed(&rng, seed);
    for (int c = 0; c < C; c++) {
        int64_t nc = start[c + 1] - start[c], m = hstart[c + 1] - hstart[c];
        st = sd_shuffle(order + start[c], nc, &rng);
        if (st != SD_OK) goto done;
        if (m == 0) continue; /* a class no device holds: unused */
        int64_t base = nc / m, extra = nc % m, pos = start[c];
        for (int64_t h = 0; h < m; h++) {
            int dev = hlist[hstart[c] + h];
            int64_t share = base + (h < extra);
            for (int64_t t = 0; t < share; t++) owner[order[pos++]] = dev;
            count[dev] += share;
        }
    }
    for (int i = 0; i < devices; i++)
        if (count[i] == 0) {
            int first = (int)(((int64_t)i * k) % C);
            st = SD_FAIL(SD_ERR_INVALID, "sd_partition_slices: device %d would get no samples: its classes %d..%d "
                         "(mod %d) hold too few samples in '%s' for the devices sharing them; use fewer devices or a "
                         "larger classes_per_device", i, first, first + k - 1, C, d->name);
            goto done;
        }
    st = build_from_owner(d, owner, devices, out);
done:
    free(order);
    free(start);
    free(owner);
    free(hlist);
    free(hstart);
    free(hfill);
    free(count);
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return st;
}

/* ---- the gamma sampler ---------------------------------------------------------------------- */

/* Uniform in the open interval (0, 1): 53 random bits plus one half. */
static double open_uniform(sd_rng *r) { return ((double)(sd_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* log of a Gamma(a, 1) draw for a >= 1 (Marsaglia & Tsang 2000, "A simple method for generating
 * gamma variables"): d = a - 1/3, c = 1/sqrt(9d); repeat x ~ N(0,1), v = (1 + c x)^3 until v > 0
 * and (u < 1 - 0.0331 x^4 or log u < x^2/2 + d (1 - v + log v)); the draw is d v. */
static double log_gamma_mt(sd_rng *r, double a) {
    const double dd = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * dd);
    for (;;) {
        double x = sd_rng_normal(r);
        double v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = open_uniform(r);
        double x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2 || log(u) < 0.5 * x2 + dd * (1.0 - v + log(v))) return log(dd) + log(v);
    }
}

double sd_gamma_log_draw(sd_rng *r, double shape) {
    if (!(shape > 0.0) || !isfinite(shape)) return NAN;
    if (shape >= 1.0) return log_gamma_mt(r, shape);
    /* boost: Gamma(a) = Gamma(a + 1) * U^(1/a) */
    double lg = log_gamma_mt(r, shape + 1.0);
    return lg + log(open_uniform(r)) / shape;
}

double sd_gamma_draw(sd_rng *r, double shape) { return exp(sd_gamma_log_draw(r, shape)); }

/* ---- Dirichlet ------------------------------------------------------------------------------ */

/* A max-heap of devices by (count desc, id asc): the donors of the empty-device fix. */
typedef struct donor_heap {
    int *dev;
    int n;
    const int64_t *count;
} donor_heap;

static int heap_before(const donor_heap *h, int a, int b) {
    return h->count[a] > h->count[b] || (h->count[a] == h->count[b] && a < b);
}

static void heap_sift_down(donor_heap *h, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, best = i;
        if (l < h->n && heap_before(h, h->dev[l], h->dev[best])) best = l;
        if (r < h->n && heap_before(h, h->dev[r], h->dev[best])) best = r;
        if (best == i) return;
        int t = h->dev[i];
        h->dev[i] = h->dev[best];
        h->dev[best] = t;
        i = best;
    }
}

/* Gives every empty device one sample from the then-largest device (see partition.h). owner and
 * count are updated. */
static sd_status fix_empty_devices(const sd_dataset *d, int devices, int32_t *owner, int64_t *count, sd_rng *rng) {
    int empties = 0;
    for (int i = 0; i < devices; i++) empties += count[i] == 0;
    if (empties == 0) return SD_OK;
    /* per-device lists of samples (CSR by owner), shrunk by swap-remove as samples are given away */
    int64_t *list = malloc((size_t)d->n * sizeof *list);
    int64_t *begin = malloc((size_t)devices * sizeof *begin);
    int64_t *len = calloc((size_t)devices, sizeof *len);
    int *heapdev = malloc((size_t)devices * sizeof *heapdev);
    sd_status st = SD_OK;
    if (!list || !begin || !len || !heapdev) {
        st = SD_FAIL(SD_ERR_OOM, "empty-device fix over %d devices", devices);
        goto done;
    }
    int64_t off = 0;
    for (int i = 0; i < devices; i++) {
        begin[i] = off;
        off += count[i];
    }
    for (int64_t s = 0; s < d->n; s++) {
        int o = owner[s];
        list[begin[o] + len[o]++] = s;
    }
    donor_heap h = {heapdev, 0, count};
    for (int i = 0; i < devices; i++)
        if (count[i] > 0) h.dev[h.n++] = i;
    for (int i = h.n / 2 - 1; i >= 0; i--) heap_sift_down(&h, i);
    for (int e = 0; e < devices; e++) {
        if (count[e] != 0) continue;
        int donor = h.dev[0]; /* holds >= 2 samples: n >= D (see partition.h) */
        int64_t pick = (int64_t)sd_rng_below(rng, (uint64_t)len[donor]);
        int64_t s = list[begin[donor] + pick];
        list[begin[donor] + pick] = list[begin[donor] + len[donor] - 1];
        len[donor]--;
        count[donor]--;
        owner[s] = e;
        count[e] = 1; /* the recipient is not a donor: it is not in the heap */
        heap_sift_down(&h, 0);
    }
done:
    free(list);
    free(begin);
    free(len);
    free(heapdev);
    return st;
}

sd_status sd_partition_dirichlet(const sd_dataset *d, int devices, double alpha, uint64_t seed, sd_partition *out) {
    if (!out) return SD_FAIL(SD_ERR_INVALID, "sd_partition_dirichlet needs an output partition");
    partition_clear(out);
    TRY(check_dataset(d, "sd_partition_dirichlet"));
    TRY(check_devices(d, devices, "sd_partition_dirichlet"));
    if (!(alpha > 0.0) || !isfinite(alpha))
        return SD_FAIL(SD_ERR_INVALID, "sd_partition_dirichlet: alpha = %g is outside the allowed range (0, inf): the "
                       "Dirichlet concentration must be positive and finite", alpha);

    int64_t *order = NULL, *start = NULL;
    TRY(class_order(d, &order, &start));
    int32_t *owner = owners_alloc(d);
    double *lp = malloc((size_t)devices * sizeof *lp);
    int64_t *count = calloc((size_t)devices, sizeof *count);
    sd_status st = SD_OK;
    if (!owner || !lp || !count) {
        st = SD_FAIL(SD_ERR_OOM, "Dirichlet partition of %lld samples over %d devices", (long long)d->n, devices);
        goto done;
    }
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    for (int c = 0; c < d->classes; c++) {
        int64_t nc = start[c + 1] - start[c];
        st = sd_shuffle(order + start[c], nc, &rng);
        if (st != SD_OK) goto done;
        /* p_j = G_j / sum G, G_j ~ Gamma(alpha), normalised in log space */
        double mx = -INFINITY;
        for (int j = 0; j < devices; j++) {
            lp[j] = sd_gamma_log_draw(&rng, alpha);
            if (lp[j] > mx) mx = lp[j];
        }
        double sum = 0.0;
        for (int j = 0; j < devices; j++) {
            lp[j] = exp(lp[j] - mx);
            sum += lp[j];
        }
        double cum = 0.0;
        int64_t lo = 0;
        for (int j = 0; j < devices; j++) {
            cum += lp[j] / sum;
            int64_t hi = j == devices - 1 ? nc : (int64_t)floor((double)nc * cum);
            if (hi > nc) hi = nc;
            if (hi < lo) hi = lo;
            for (int64_t t = lo; t < hi; t++) owner[order[start[c] + t]] = j;
            count[j] += hi - lo;
            lo = hi;
        }
    }
    st = fix_empty_devices(d, devices, owner, count, &rng);
    if (st == SD_OK) st = build_from_owner(d, owner, devices, out);
done:
    free(order);
    free(start);
    free(owner);
    free(lp);
    free(count);
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return st;
}

/* ---- inspection ----------------------------------------------------------------------------- */

static sd_status check_matches(const sd_partition *p, const sd_dataset *d, const char *fn) {
    if (!p || !d) return SD_FAIL(SD_ERR_INVALID, "%s needs a partition and its dataset", fn);
    if (!p->mem_) return SD_FAIL(SD_ERR_INVALID, "%s: the partition is empty (freed or never made)", fn);
    if (p->dataset_n != d->n || p->classes != d->classes || !d->labels)
        return SD_FAIL(SD_ERR_INVALID, "%s: the partition was made from a dataset of %lld samples and %d classes, "
                       "not '%s' (%lld samples, %d classes)", fn, (long long)p->dataset_n, p->classes, d->name,
                       (long long)d->n, d->classes);
    return SD_OK;
}

sd_status sd_partition_histogram(const sd_partition *p, const sd_dataset *d, int device, int64_t *counts_per_class) {
    TRY(check_matches(p, d, "sd_partition_histogram"));
    if (device < 0 || device >= p->devices)
        return SD_FAIL(SD_ERR_INVALID, "sd_partition_histogram: device %d is outside [0, %d)", device, p->devices);
    if (!counts_per_class) return SD_FAIL(SD_ERR_INVALID, "sd_partition_histogram needs an output array");
    memset(counts_per_class, 0, (size_t)d->classes * sizeof *counts_per_class);
    for (int64_t t = 0; t < p->count[device]; t++) counts_per_class[d->labels[p->index[device][t]]]++;
    return SD_OK;
}

sd_status sd_partition_print(const sd_partition *p, const sd_dataset *d, FILE *f) {
    TRY(check_matches(p, d, "sd_partition_print"));
    if (!f) return SD_FAIL(SD_ERR_INVALID, "sd_partition_print needs a stream");
    int64_t *h = malloc((size_t)d->classes * sizeof *h);
    if (!h) return SD_FAIL(SD_ERR_OOM, "histogram of %d classes", d->classes);
    fprintf(f, "partition of '%s' (%lld samples, %d classes) over %d devices: %lld assigned, %lld unused\n", d->name,
            (long long)d->n, d->classes, p->devices, (long long)p->assigned, (long long)(d->n - p->assigned));
    for (int i = 0; i < p->devices; i++) {
        sd_partition_histogram(p, d, i, h);
        int held = 0;
        for (int c = 0; c < d->classes; c++) held += h[c] > 0;
        fprintf(f, "device %d: %lld samples, %d class%s {", i, (long long)p->count[i], held, held == 1 ? "" : "es");
        const char *sep = "";
        for (int c = 0; c < d->classes; c++)
            if (h[c] > 0) {
                fprintf(f, "%s%d:%lld", sep, c, (long long)h[c]);
                sep = " ";
            }
        fputs("}\n", f);
    }
    free(h);
    if (ferror(f)) return SD_FAIL(SD_ERR_IO, "sd_partition_print: writing the partition failed");
    return SD_OK;
}
