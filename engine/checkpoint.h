/* checkpoint.h: model checkpoints as safetensors files with PyTorch's state_dict names and layouts
 * (docs/checkpoints.md), so `model.load_state_dict(state, strict=True)` takes our weights and we
 * take PyTorch's.
 *
 * A checkpoint holds every named tensor of the net (trainable parameters and BN running
 * statistics) as F32 with its PyTorch name and shape, plus "<bn>.num_batches_tracked" (I64, shape
 * []) for every BN layer "<bn>" (a layer with "<bn>.running_mean"), and optional metadata strings.
 * Optimizer and stream state are not part of this file; the trainer writes them with
 * engine/safetensors.h. */
#ifndef SD_ENGINE_CHECKPOINT_H
#define SD_ENGINE_CHECKPOINT_H

#include <stdbool.h>

#include "engine/net.h"
#include "engine/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One metadata pair (both strings are copied into the file). */
typedef struct sd_ckpt_kv {
    const char *key;
    const char *value;
} sd_ckpt_kv;

/* Metadata for a checkpoint, e.g. {"model", "resnet20"}, {"step", "1200"}. "format" defaults to
 * "pt" (what safetensors.torch writes) unless given here. */
typedef struct sd_ckpt_meta {
    const sd_ckpt_kv *items;
    int count;
} sd_ckpt_meta;

/* Saves the net's weights (meta may be NULL). The net must be finalised. The file is written
 * atomically (PATH.tmp, fsync, rename); SD_ERR_IO names the path when that fails. */
sd_status sd_checkpoint_save(sd_net *net, const char *path, const sd_ckpt_meta *meta);

/* Loads weights by name into a finalised net. Everything is checked before anything is copied,
 * so on failure the net is unchanged:
 *   - a tensor of the file that is not F32 -> SD_ERR_FORMAT naming it and its dtype;
 *   - a shape that differs from the net's -> SD_ERR_SHAPE naming the tensor and both shapes;
 *   - strict: a net tensor the file lacks -> SD_ERR_FORMAT naming it (non-strict: left as is);
 *   - strict: file tensors the net does not have -> SD_ERR_FORMAT listing the first few.
 * "<bn>.num_batches_tracked" must be I64 of shape [] when present; it may be absent (as PyTorch
 * allows). The net keeps one counter for all BN layers and no setter yet, so the value is
 * validated but not applied (it only matters for BN with momentum=None, which we do not use). */
sd_status sd_checkpoint_load(sd_net *net, const char *path, bool strict);

#ifdef __cplusplus
}
#endif

#endif
