/* optim.h: SGD (momentum, Nesterov, weight decay) over the net's fused parameter block, and
 * learning-rate schedules: constant, multistep, cosine, each with an optional linear warm-up.
 * The per-step `lr_scale` of sd_optim_step is the hook ScaDLES uses to scale the learning rate by
 * the global batch (lr = schedule(step) x lr_scale). */
#ifndef SD_ENGINE_OPTIM_H
#define SD_ENGINE_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_sched_kind { SD_SCHED_CONSTANT, SD_SCHED_MULTISTEP, SD_SCHED_COSINE } sd_sched_kind;

#define SD_MAX_MILESTONES 16

typedef struct sd_lr_schedule {
    sd_sched_kind kind;
    float base_lr;
    int64_t warmup_steps;       /* linear ramp from base_lr * warmup_start to base_lr */
    float warmup_start;         /* factor at step 0 of the warm-up (default 0.1) */
    int64_t milestones[SD_MAX_MILESTONES]; /* multistep: steps at which lr *= gamma */
    int num_milestones;
    float gamma;
    int64_t total_steps;        /* cosine: decays to min_lr at total_steps */
    float min_lr;
} sd_lr_schedule;

/* Parses "constant", "multistep:M1,M2,...[@gamma]", "cosine"; milestones in steps. */
sd_status sd_lr_schedule_parse(const char *text, float base_lr, int64_t total_steps, sd_lr_schedule *out);
sd_status sd_lr_schedule_check(const sd_lr_schedule *s);
float sd_lr_at(const sd_lr_schedule *s, int64_t step);

typedef struct sd_optim_config {
    float momentum;     /* 0.9 */
    float dampening;    /* 0 */
    float weight_decay; /* 5e-4 */
    bool nesterov;
} sd_optim_config;

typedef struct sd_optimizer {
    sd_backend *be;
    sd_optim_config cfg;
    sd_lr_schedule sched;
    float *momentum_buf; /* backend memory, same layout as the parameter block */
    size_t count;
    int64_t step;        /* updates applied so far */
    float last_lr;
} sd_optimizer;

sd_status sd_optim_init(sd_optimizer *o, sd_net *net, const sd_optim_config *cfg, const sd_lr_schedule *sched);
/* One update with lr = sd_lr_at(sched, step) * lr_scale. */
sd_status sd_optim_step(sd_optimizer *o, sd_net *net, float lr_scale);
void sd_optim_free(sd_optimizer *o);

#ifdef __cplusplus
}
#endif

#endif
