/* inject.c: stage "inject" (ScaDLES data injection, docs/partition-injection.md). A device with a
 * non-empty batch draws ceil(alpha x devices) other classes from the shared pool, beta x batch
 * samples each, and appends them to its batch; the learning rate scales with the stream samples
 * only, so injected copies add diversity, not step size. */
#include "engine/step/pipeline.h"

sd_status stage_inject(sd_pipe *p, sd_step *s) {
    sd_dev *d = &p->d;
    const sd_experiment *e = p->e;
    const sd_dataset *tr = p->in->train;
    int b = (int)s->taken, inj = 0;
    if (d->pool && b > 0) {
        TRY(sd_inject_draw(d->pool, p->rank, b, e->injection.alpha, e->injection.beta, p->n, &d->inject_rng, d->inj_idx,
                           d->max_batch - b, &inj));
        sd_augment_draw none = {0};
        for (int i = 0; i < inj; i++) {
            TRY(sd_augment_image(tr, d->inj_idx[i], &p->norm, &none, d->hx + (size_t)(b + i) * p->img));
            d->hy[b + i] = tr->labels[d->inj_idx[i]];
        }
    }
    s->mine.batch = b + inj;
    s->mine.stream_batch = b;
    return SD_OK;
}
