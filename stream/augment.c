/* augment.c: normalisation, random crop and flip of dataset images into float batches, and the
 * epoch shuffle (declared in augment.h). */
#include "stream/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct aug_preset {
    const char *name;
    int c;
    float mean[3], std[3];
    bool augment_train; /* crop_pad 4 + hflip when training */
} aug_preset;

static const aug_preset aug_presets[] = {
    {"fashion-mnist", 1, {0.2860f}, {0.3530f}, false},
    {"mnist", 1, {0.1307f}, {0.3081f}, false},
    {"cifar10", 3, {0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}, true},
    {"cifar100", 3, {0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}, true},
};

sd_status sd_augment_default(const sd_dataset *d, bool train, sd_augment *out) {
    if (!d || !out) return SD_FAIL(SD_ERR_INVALID, "sd_augment_default needs a dataset and an output");
    memset(out, 0, sizeof *out);
    if (d->c <= 0 || d->c > SD_AUGMENT_MAX_CHANNELS)
        return SD_FAIL(SD_ERR_INVALID, "dataset '%s' has %d channels; augmentation handles 1 to %d", d->name, d->c,
                       SD_AUGMENT_MAX_CHANNELS);
    for (int ch = 0; ch < SD_AUGMENT_MAX_CHANNELS; ch++) out->std[ch] = 1.0f;
    for (size_t k = 0; k < sizeof aug_presets / sizeof aug_presets[0]; k++) {
        const aug_preset *p = &aug_presets[k];
        if (strcmp(d->name, p->name) != 0) continue;
        if (p->c != d->c)
            return SD_FAIL(SD_ERR_INVALID, "dataset '%s' has %d channels but %s images have %d", d->name, d->c,
                           p->name, p->c);
        for (int ch = 0; ch < p->c; ch++) {
            out->mean[ch] = p->mean[ch];
            out->std[ch] = p->std[ch];
        }
        if (train && p->augment_train) {
            out->crop_pad = 4;
            out->hflip = true;
        }
        return SD_OK;
    }
    return SD_OK; /* unknown name: x = u8/255, no augmentation */
}

void sd_augment_draw_next(const sd_augment *a, sd_rng *rng, sd_augment_draw *t) {
    t->dy = t->dx = 0;
    t->flip = false;
    if (a->crop_pad > 0) {
        uint64_t span = 2 * (uint64_t)a->crop_pad + 1;
        t->dy = (int)sd_rng_below(rng, span);
        t->dx = (int)sd_rng_below(rng, span);
    }
    if (a->hflip) t->flip = sd_rng_float(rng) < 0.5f;
}

static bool draws_nothing(const sd_augment *a) { return a->crop_pad == 0 && !a->hflip; }

static sd_status check_inputs(const sd_dataset *d, const sd_augment *a, const char *fn) {
    if (!d || !a) return SD_FAIL(SD_ERR_INVALID, "%s needs a dataset and an augmentation", fn);
    if (d->c <= 0 || d->c > SD_AUGMENT_MAX_CHANNELS || d->h <= 0 || d->w <= 0)
        return SD_FAIL(SD_ERR_INVALID,
                       "%s: dataset '%s' has images %dx%dx%d; expected 1 to %d channels and positive sides", fn,
                       d->name, d->c, d->h, d->w, SD_AUGMENT_MAX_CHANNELS);
    if (d->n > 0 && (!d->images || !d->labels))
        return SD_FAIL(SD_ERR_INVALID, "%s: dataset '%s' is not loaded (no images)", fn, d->name);
    if (a->crop_pad < 0 || a->crop_pad > SD_AUGMENT_MAX_PAD)
        return SD_FAIL(SD_ERR_INVALID, "%s: crop_pad %d must lie in [0, %d]", fn, a->crop_pad, SD_AUGMENT_MAX_PAD);
    for (int ch = 0; ch < d->c; ch++)
        if (!(a->std[ch] > 0.0f) || !isfinite(a->std[ch]) || !isfinite(a->mean[ch]))
            return SD_FAIL(SD_ERR_INVALID, "%s: channel %d has mean %g, std %g; std must be positive and both finite",
                           fn, ch, (double)a->mean[ch], (double)a->std[ch]);
    return SD_OK;
}

/* lut[ch*256 + v] = (v/255 - mean[ch]) / std[ch]. */
static void make_lut(const sd_augment *a, int c, float *lut) {
    for (int ch = 0; ch < c; ch++)
        for (int v = 0; v < 256; v++) lut[ch * 256 + v] = ((float)v / 255.0f - a->mean[ch]) / a->std[ch];
}

static void transform(const sd_dataset *d, int64_t index, int pad, const sd_augment_draw *t, const float *lut,
                      float *x) {
    const int c = d->c, h = d->h, w = d->w;
    const uint8_t *img = d->images + (size_t)index * c * h * w;
    const int oy = t->dy - pad, ox = t->dx - pad; /* source = output + offset */
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *src = img + (size_t)ch * h * w;
        const float *l = lut + ch * 256;
        float *dst = x + (size_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            int sy = y + oy;
            float *row = dst + (size_t)y * w;
            if (sy < 0 || sy >= h) {
                for (int xx = 0; xx < w; xx++) row[xx] = l[0];
                continue;
            }
            const uint8_t *srow = src + (size_t)sy * w;
            for (int xx = 0; xx < w; xx++) {
                int sx = (t->flip ? w - 1 - xx : xx) + ox;
                row[xx] = (sx < 0 || sx >= w) ? l[0] : l[srow[sx]];
            }
        }
    }
}

static sd_status check_draw(const sd_augment *a, const sd_augment_draw *t) {
    int hi = a->crop_pad > 0 ? 2 * a->crop_pad : 0;
    if (t->dy < 0 || t->dy > hi || t->dx < 0 || t->dx > hi)
        return SD_FAIL(SD_ERR_INVALID, "crop offsets (dy %d, dx %d) must lie in [0, %d] for crop_pad %d", t->dy, t->dx,
                       hi, a->crop_pad);
    return SD_OK;
}

sd_status sd_augment_image(const sd_dataset *d, int64_t index, const sd_augment *a, const sd_augment_draw *t,
                           float *x_out) {
    TRY(check_inputs(d, a, "sd_augment_image"));
    if (!t || !x_out) return SD_FAIL(SD_ERR_INVALID, "sd_augment_image needs the draw and an output buffer");
    if (index < 0 || index >= d->n)
        return SD_FAIL(SD_ERR_INVALID, "image index %lld is outside [0, %lld) of dataset '%s'", (long long)index,
                       (long long)d->n, d->name);
    TRY(check_draw(a, t));
    float lut[SD_AUGMENT_MAX_CHANNELS * 256];
    make_lut(a, d->c, lut);
    transform(d, index, a->crop_pad, t, lut, x_out);
    return SD_OK;
}

sd_status sd_augment_batch(const sd_dataset *d, const int64_t *indices, int n, const sd_augment *a, sd_rng *rng,
                           float *x_out, int32_t *y_out) {
    TRY(check_inputs(d, a, "sd_augment_batch"));
    if (n < 0) return SD_FAIL(SD_ERR_INVALID, "sd_augment_batch: batch size %d is negative", n);
    if (n == 0) return SD_OK;
    if (!indices || !x_out)
        return SD_FAIL(SD_ERR_INVALID, "sd_augment_batch needs indices and an output buffer for %d images", n);
    if (!rng && !draws_nothing(a))
        return SD_FAIL(SD_ERR_INVALID, "sd_augment_batch needs an rng for crop_pad %d / hflip %d", a->crop_pad,
                       (int)a->hflip);
    for (int i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= d->n)
            return SD_FAIL(SD_ERR_INVALID, "batch index indices[%d] = %lld is outside [0, %lld) of dataset '%s'", i,
                           (long long)indices[i], (long long)d->n, d->name);
    float lut[SD_AUGMENT_MAX_CHANNELS * 256];
    make_lut(a, d->c, lut);
    const size_t img = (size_t)d->c * d->h * d->w;
    for (int i = 0; i < n; i++) {
        sd_augment_draw t = {0, 0, false};
        if (!draws_nothing(a)) sd_augment_draw_next(a, rng, &t);
        transform(d, indices[i], a->crop_pad, &t, lut, x_out + (size_t)i * img);
        if (y_out) y_out[i] = d->labels[indices[i]];
    }
    return SD_OK;
}

sd_status sd_augment_floats(const sd_augment *a, int n, int c, int h, int w, sd_rng *rng, float *x) {
    if (!a || n < 0 || c <= 0 || c > SD_AUGMENT_MAX_CHANNELS || h <= 0 || w <= 0 || (n > 0 && !x))
        return SD_FAIL(SD_ERR_INVALID, "sd_augment_floats: bad arguments (%d images of %d x %d x %d)", n, c, h, w);
    if (n == 0 || draws_nothing(a)) return SD_OK;
    if (!rng) return SD_FAIL(SD_ERR_INVALID, "sd_augment_floats needs an rng for crop_pad %d / hflip %d", a->crop_pad,
                             (int)a->hflip);
    const size_t plane = (size_t)h * w, img = (size_t)c * plane;
    float *src = malloc(img * sizeof *src);
    if (!src) return SD_FAIL(SD_ERR_OOM, "sd_augment_floats: one image of %zu floats", img);
    for (int i = 0; i < n; i++) {
        sd_augment_draw t = {0, 0, false};
        sd_augment_draw_next(a, rng, &t);
        const int pad = a->crop_pad > 0 ? a->crop_pad : 0, oy = t.dy - pad, ox = t.dx - pad;
        float *xi = x + (size_t)i * img;
        memcpy(src, xi, img * sizeof *src);
        for (int ch = 0; ch < c; ch++) {
            const float fill = -a->mean[ch] / a->std[ch];
            for (int y = 0; y < h; y++) {
                const int sy = y + oy;
                float *row = xi + ch * plane + (size_t)y * w;
                if (sy < 0 || sy >= h) {
                    for (int xx = 0; xx < w; xx++) row[xx] = fill;
                    continue;
                }
                const float *srow = src + ch * plane + (size_t)sy * w;
                for (int xx = 0; xx < w; xx++) {
                    const int sx = (t.flip ? w - 1 - xx : xx) + ox;
                    row[xx] = (sx < 0 || sx >= w) ? fill : srow[sx];
                }
            }
        }
    }
    free(src);
    return SD_OK;
}

sd_status sd_shuffle(int64_t *idx, int64_t n, sd_rng *rng) {
    if (n < 0) return SD_FAIL(SD_ERR_INVALID, "sd_shuffle: length %lld is negative", (long long)n);
    if (n > 1 && (!idx || !rng))
        return SD_FAIL(SD_ERR_INVALID, "sd_shuffle of %lld items needs the array and an rng", (long long)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)sd_rng_below(rng, (uint64_t)i + 1);
        int64_t tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
    }
    return SD_OK;
}
