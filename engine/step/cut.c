/* cut.c: stage "cut the batch". The clock decides when this step's batch is due (ddp: once the
 * slowest device holds b samples; scadles: at the end of the window) and takes it from the ring
 * into the batch buffers, normalised; the stream wait goes on the timeline. */
#include <string.h>

#include "base/clock.h"
#include "engine/step/clock.h"

sd_status stage_cut(sd_pipe *p, sd_step *s) {
    memset(s, 0, sizeof *s);
    s->w_iter = sd_clock_now();
    p->rb.x = p->d.hx;
    p->rb.labels = p->d.hy;
    TRY(p->clock->ops->cut(p, s));
    if (s->end) return SD_OK;
    s->w_cut = sd_clock_now();
    p->clock->ops->trace_wait(p, s);
    return SD_OK;
}
