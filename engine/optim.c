/* optim.c: the SGD optimizer and learning-rate schedules. */
#include "engine/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sd_status sd_lr_schedule_check(const sd_lr_schedule *s) {
    if (!(s->base_lr > 0.0f) || !isfinite(s->base_lr))
        return SD_FAIL(SD_ERR_INVALID, "learning rate %g must be positive and finite", (double)s->base_lr);
    if (s->warmup_steps < 0) return SD_FAIL(SD_ERR_INVALID, "warm-up steps %lld must be >= 0", (long long)s->warmup_steps);
    if (!(s->warmup_start > 0.0f && s->warmup_start <= 1.0f))
        return SD_FAIL(SD_ERR_INVALID, "warm-up start factor %g must be in (0, 1]", (double)s->warmup_start);
    if (s->kind == SD_SCHED_MULTISTEP) {
        if (!(s->gamma > 0.0f && s->gamma <= 1.0f))
            return SD_FAIL(SD_ERR_INVALID, "multistep gamma %g must be in (0, 1]", (double)s->gamma);
        for (int i = 0; i < s->num_milestones; i++)
            if (s->milestones[i] <= 0 || (i && s->milestones[i] <= s->milestones[i - 1]))
                return SD_FAIL(SD_ERR_INVALID, "multistep milestones must be positive and increasing (milestone %d is %lld)",
                               i, (long long)s->milestones[i]);
    }
    if (s->kind == SD_SCHED_COSINE && s->total_steps <= 0)
        return SD_FAIL(SD_ERR_INVALID, "cosine schedule needs the total number of steps (got %lld)", (long long)s->total_steps);
    return SD_OK;
}

sd_status sd_lr_schedule_parse(const char *text, float base_lr, int64_t total_steps, sd_lr_schedule *out) {
    memset(out, 0, sizeof *out);
    out->base_lr = base_lr;
    out->warmup_start = 0.1f;
    out->gamma = 0.1f;
    out->total_steps = total_steps;
    if (!text || !strcmp(text, "constant")) {
        out->kind = SD_SCHED_CONSTANT;
    } else if (!strcmp(text, "cosine")) {
        out->kind = SD_SCHED_COSINE;
    } else if (!strncmp(text, "multistep:", 10)) {
        out->kind = SD_SCHED_MULTISTEP;
        const char *p = text + 10;
        while (*p && *p != '@') {
            char *end = NULL;
            long long v = strtoll(p, &end, 10);
            if (end == p || out->num_milestones >= SD_MAX_MILESTONES)
                return SD_FAIL(SD_ERR_INVALID, "schedule '%s': expected up to %d comma-separated step numbers after 'multistep:'",
                               text, SD_MAX_MILESTONES);
            out->milestones[out->num_milestones++] = v;
            p = end;
            if (*p == ',') p++;
        }
        if (*p == '@') {
            char *end = NULL;
            out->gamma = strtof(p + 1, &end);
            if (end == p + 1 || *end) return SD_FAIL(SD_ERR_INVALID, "schedule '%s': gamma after '@' is not a number", text);
        }
        if (out->num_milestones == 0) return SD_FAIL(SD_ERR_INVALID, "schedule '%s' lists no milestones", text);
    } else {
        return SD_FAIL(SD_ERR_INVALID, "schedule '%s' is unknown; use constant, cosine or multistep:S1,S2[@gamma]", text);
    }
    return sd_lr_schedule_check(out);
}

float sd_lr_at(const sd_lr_schedule *s, int64_t step) {
    double lr = s->base_lr;
    switch (s->kind) {
    case SD_SCHED_CONSTANT: break;
    case SD_SCHED_MULTISTEP:
        for (int i = 0; i < s->num_milestones; i++)
            if (step >= s->milestones[i]) lr *= s->gamma;
        break;
    case SD_SCHED_COSINE: {
        double t = s->total_steps > 0 ? (double)step / (double)s->total_steps : 1.0;
        if (t > 1.0) t = 1.0;
        lr = s->min_lr + 0.5 * (s->base_lr - s->min_lr) * (1.0 + cos(3.14159265358979323846 * t));
        break;
    }
    }
    if (step < s->warmup_steps) {
        double f = s->warmup_start + (1.0 - s->warmup_start) * (double)step / (double)s->warmup_steps;
        lr *= f;
    }
    return (float)lr;
}

sd_status sd_optim_init(sd_optimizer *o, sd_net *net, const sd_optim_config *cfg, const sd_lr_schedule *sched) {
    if (!o || !net || !cfg || !sched) return SD_FAIL(SD_ERR_INVALID, "optimizer: NULL argument");
    memset(o, 0, sizeof *o);
    TRY(sd_lr_schedule_check(sched));
    sd_sgd_params probe;
    TRY(sd_sgd_params_make(&probe, 1, sched->base_lr, cfg->momentum, cfg->dampening, cfg->weight_decay, cfg->nesterov, 1));
    o->be = sd_net_backend(net);
    o->cfg = *cfg;
    o->sched = *sched;
    o->count = sd_net_param_count(net);
    TRY(o->be->ops->alloc(o->be->ctx, o->count * sizeof(float), (void **)&o->momentum_buf));
    TRY(o->be->ops->zero(o->be->ctx, o->momentum_buf, o->count * sizeof(float)));
    return SD_OK;
}

sd_status sd_optim_step(sd_optimizer *o, sd_net *net, float lr_scale) {
    if (!isfinite(lr_scale) || lr_scale < 0.0f)
        return SD_FAIL(SD_ERR_INVALID, "optimizer: learning-rate scale %g must be finite and >= 0", (double)lr_scale);
    float lr = sd_lr_at(&o->sched, o->step) * lr_scale;
    sd_sgd_params p;
    TRY(sd_sgd_params_make(&p, o->count, lr, o->cfg.momentum, o->cfg.dampening, o->cfg.weight_decay, o->cfg.nesterov,
                           o->step == 0));
    TRY(o->be->ops->sgd_update(o->be->ctx, &p, sd_net_params(net), sd_net_grads(net), o->momentum_buf));
    o->step++;
    o->last_lr = lr;
    return SD_OK;
}

void sd_optim_free(sd_optimizer *o) {
    if (o && o->momentum_buf) o->be->ops->free(o->be->ctx, o->momentum_buf);
    if (o) o->momentum_buf = NULL;
}
