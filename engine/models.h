/* models.h: the model zoo, built on the layer graph (net.h) with PyTorch state_dict names.
 *   fmnist_cnn  conv5x5(16)-relu-maxpool2-conv5x5(32)-relu-maxpool2-linear (the Fashion-MNIST CNN)
 *   resnet20/32/44/56/110  CIFAR ResNets of He et al. 2016 (3 stages of basic blocks, 16/32/64
 *               channels); the shortcut where the shape changes is a 1x1 conv + BN projection
 *               (the paper's option B).
 *   resnet18/34 (basic blocks), resnet50/101/152 (bottlenecks) in their CIFAR form: 3x3 stem
 *               without max-pool, stages of 64/128/256/512 planes, global average pool, linear.
 *   vgg11/13/16/19 with batch norm in their CIFAR form: 3x3 conv-BN-ReLU stacks and max-pools,
 *               global average pool, one linear 512 -> classes. */
#ifndef SD_ENGINE_MODELS_H
#define SD_ENGINE_MODELS_H

#include <stdint.h>

#include "engine/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_model_spec {
    const char *name;  /* see above */
    int in_c, in_h, in_w;
    int classes;
    float width;       /* channel multiplier (1.0 = the published widths) */
    bool no_fusion;    /* every layer apart (sd_net_set_fusion false): the reference of the fused graph */
} sd_model_spec;

/* Builds and finalises the model (parameters initialised from seed). Unknown names and shapes a
 * model cannot take are SD_ERR_INVALID naming the model and the supported choices. */
sd_status sd_model_build(sd_backend *be, const sd_model_spec *spec, uint64_t seed, sd_net **out);
/* Space-separated list of model names, for help texts. */
const char *sd_model_names(void);

#ifdef __cplusplus
}
#endif

#endif
