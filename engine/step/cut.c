/* cut.c: stage "cut the batch". The clock decides when this step's batch is due (ddp: once the
 * slowest device holds b samples; scadles: at the end of the window) and takes it from the ring
 * into the batch buffers, normalised; with augment, the dataset's training crop and flip follow,
 * drawn from (seed, device, step); the stream wait goes on the timeline. */
#include <string.h>

#include "base/clock.h"
#include "base/rng.h"
#include "engine/step/clock.h"

sd_status stage_cut(sd_pipe *p, sd_step *s) {
    memset(s, 0, sizeof *s);
    s->w_iter = sd_clock_now();
    p->rb.x = p->d.hx;
    p->rb.labels = p->d.hy;
    TRY(p->clock->ops->cut(p, s));
    if (s->end) return SD_OK;
    if (p->e->augment && s->taken > 0) {
        const sd_dataset *tr = p->in->train;
        sd_rng r;
        sd_rng_seed(&r, p->in->seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)p->rank << 48) ^ (uint64_t)p->ls.step ^
                            0xa5a5a5a5ull);
        TRY(sd_augment_floats(&p->aug, (int)s->taken, tr->c, tr->h, tr->w, &r, p->d.hx));
    }
    s->w_cut = sd_clock_now();
    p->clock->ops->trace_wait(p, s);
    return SD_OK;
}
