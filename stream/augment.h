/* augment.h: batch assembly from a u8 dataset to float NCHW: per-channel normalisation, random crop
 * with zero padding, horizontal flip, and the Fisher-Yates shuffle of epoch order. Every random
 * choice comes from an sd_rng in a fixed order, so a seed gives the same batch. See docs/datasets.md. */
#ifndef SD_STREAM_AUGMENT_H
#define SD_STREAM_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/rng.h"
#include "base/status.h"
#include "stream/dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_AUGMENT_MAX_CHANNELS 4
#define SD_AUGMENT_MAX_PAD 4096

typedef struct sd_augment {
    float mean[SD_AUGMENT_MAX_CHANNELS], std[SD_AUGMENT_MAX_CHANNELS]; /* x = (u8/255 - mean) / std */
    int crop_pad; /* > 0: pad by this many zero pixels on each side, then crop h x w at random */
    bool hflip;   /* mirror left-right with probability 0.5 */
} sd_augment;

/* The defaults for d (chosen by d->name): per-channel mean/std of the training set
 * (fashion-mnist 0.2860/0.3530, mnist 0.1307/0.3081, cifar10 (0.4914,0.4822,0.4465)/
 * (0.2470,0.2435,0.2616), cifar100 (0.5071,0.4865,0.4409)/(0.2673,0.2564,0.2762)); when train,
 * CIFAR also gets crop_pad 4 and hflip (the MNIST sets get none); test: none. Any other name
 * gets mean 0, std 1 (x = u8/255) and no augmentation. A known name whose channel count differs
 * from d->c, or d->c > 4, is SD_ERR_INVALID. */
sd_status sd_augment_default(const sd_dataset *d, bool train, sd_augment *out);

/* The random choices for one image. dy, dx: top-left corner of the h x w crop window in the image
 * padded by crop_pad on every side, each in [0, 2*crop_pad] (crop_pad, crop_pad = no shift). */
typedef struct sd_augment_draw {
    int dy, dx;
    bool flip;
} sd_augment_draw;

/* Draws one image's choices from rng, in this order: dy = sd_rng_below(rng, 2p+1) then
 * dx = sd_rng_below(rng, 2p+1) when p = crop_pad > 0 (else dy = dx = 0), then
 * flip = sd_rng_float(rng) < 0.5 when hflip (else false). Nothing else is drawn. */
void sd_augment_draw_next(const sd_augment *a, sd_rng *rng, sd_augment_draw *t);

/* Writes image `index` of d, transformed by the given choices, to x_out (c*h*w floats). As in
 * torchvision's RandomCrop(padding=p) + RandomHorizontalFlip + Normalize, the padding is u8 zero
 * pixels that are then normalised like any pixel, so they become -mean/std (not 0); the flip is
 * applied to the cropped image. out[ch][y][x] = norm(src[ch][y+dy-p][x'+dx-p]) with x' = w-1-x when
 * flipped (x otherwise) and src = 0 outside the image. */
sd_status sd_augment_image(const sd_dataset *d, int64_t index, const sd_augment *a, const sd_augment_draw *t,
                           float *x_out);

/* Assembles a batch: for i = 0..n-1, draws image i's choices (sd_augment_draw_next) and writes
 * image indices[i] to x_out + i*c*h*w and its label to y_out[i] (y_out may be NULL). rng may be
 * NULL only when a draws nothing (crop_pad 0 and no hflip). All indices are checked before any
 * draw: one outside [0, d->n) is SD_ERR_INVALID naming it, and rng is left untouched. */
sd_status sd_augment_batch(const sd_dataset *d, const int64_t *indices, int n, const sd_augment *a, sd_rng *rng,
                           float *x_out, int32_t *y_out);

/* The same crop and flip on n images already normalised (float NCHW, c x h x w each, c <= 4), in
 * place: what a stream delivers is normalised as it is taken from the ring, so its augmentation
 * happens in float space, with -mean/std (a normalised zero pixel) as the padding. Draws as
 * sd_augment_batch does, one image after the other; equals sd_augment_batch on the u8 images. */
sd_status sd_augment_floats(const sd_augment *a, int n, int c, int h, int w, sd_rng *rng, float *x);

/* Shuffles idx[0..n) in place (Fisher-Yates: for i = n-1 down to 1, swap idx[i] with
 * idx[sd_rng_below(rng, i+1)]). */
sd_status sd_shuffle(int64_t *idx, int64_t n, sd_rng *rng);

#ifdef __cplusplus
}
#endif

#endif
