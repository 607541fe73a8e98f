/* train.c: stage "train locally". The batch on the device (waiting for the asynchronous upload, or
 * uploading now), forward, the loss scaled by 1 / B (which makes the summed gradients the
 * equal-weight average in ddp and the b_i / B weighting of ScaDLES), backward. A device with an
 * empty batch contributes a zero gradient. The clock then charges the compute. */
#include "base/clock.h"
#include "engine/step/clock.h"

sd_status stage_train(sd_pipe *p, sd_step *s) {
    sd_dev *d = &p->d;
    const int b = s->mine.batch;
    s->loss = 0;
    s->w_train0 = s->w_up = s->w_fwd = sd_clock_now();
    if (b > 0) {
        if (s->async_up) {
            TRY(d->be.ops->upload_wait(d->be.ctx));
        } else {
            TRY(d->be.ops->upload(d->be.ctx, d->dx, d->hx, (size_t)b * p->img * sizeof(float)));
            TRY(d->be.ops->upload(d->be.ctx, d->dy, d->hy, (size_t)b * sizeof(int32_t)));
        }
        s->w_up = sd_clock_now();
        TRY(sd_net_forward(d->net, d->dx, b, true));
        s->w_fwd = sd_clock_now();
        TRY(sd_net_loss(d->net, d->dy, 1.0f / (float)s->B, &s->loss));
        TRY(sd_net_backward(d->net));
    } else {
        TRY(d->be.ops->zero(d->be.ctx, sd_net_grads(d->net), p->np * sizeof(float)));
    }
    s->w_train1 = sd_clock_now();
    return p->clock->ops->charge_compute(p, s);
}
