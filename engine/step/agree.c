/* agree.c: stage "agree on the step". Every device contributes a small record (its batch, stream
 * samples, buffer occupancy, drops, next arrival, a stop request) to one allgather, so every rank
 * derives the same global quantities: the global batch B, the slowest modelled compute, whether a
 * stop was asked for. While the records travel, the batch goes up to the device (CUDA: on the copy
 * stream). Also the record exchange itself and the message of a dead stream. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "engine/profile.h"
#include "engine/step/clock.h"

static double max_d(double a, double b) { return a > b ? a : b; }

uint64_t sd_ring_drops(const sd_ring_stats *s) {
    uint64_t d = s->truncated;
    for (int r = 1; r < SD_DROP_COUNT; r++) d += s->dropped[r];
    return d;
}

sd_status sd_share_records(sd_pipe *p, const step_info *mine) {
    sd_comm *c = p->comm;
    size_t sizes[SD_MAX_DEVICES], displs[SD_MAX_DEVICES];
    for (int j = 0; j < c->size; j++) {
        sizes[j] = sizeof(step_info);
        displs[j] = (size_t)j * sizeof(step_info);
    }
    return sd_comm_allgatherv(c, mine, sizeof *mine, p->all, sizes, displs);
}

sd_status stage_agree(sd_pipe *p, sd_step *s) {
    sd_dev *d = &p->d;
    sd_ring_end_step(d->ring);
    sd_ring_stats rs;
    sd_ring_get_stats(d->ring, &rs);
    step_info *mine = &s->mine;
    mine->stop = p->in->stop_flag ? (int32_t)atomic_load_explicit(p->in->stop_flag, memory_order_relaxed) : 0;
    if (mine->stop < 0) mine->stop = 0; /* (signal numbers are positive) */
    mine->buffered = (int32_t)rs.samples;
    mine->dropped = sd_ring_drops(&rs);
    mine->high_water = (uint32_t)rs.hw_samples;
    uint64_t refused = d->sink.seq.refused;
    if (d->ingest) {
        sd_ingest_stats is;
        sd_ingest_get_stats(d->ingest, &is);
        refused = is.seq_refused;
    }
    mine->seq_refused = refused > UINT32_MAX ? UINT32_MAX : (uint32_t)refused;
    /* the batch goes to the device while the ranks exchange their step records (CUDA: on the copy
     * stream; hx/hy stay untouched until the upload_wait of the train stage) */
    s->async_up = d->be.ops->upload_async && d->be.ops->upload_wait && mine->batch > 0;
    if (s->async_up) {
        TRY(d->be.ops->upload_async(d->be.ctx, d->dx, d->hx, (size_t)mine->batch * p->img * sizeof(float)));
        TRY(d->be.ops->upload_async(d->be.ctx, d->dy, d->hy, (size_t)mine->batch * sizeof(int32_t)));
    }
    TRY(sd_share_records(p, mine));
    s->next_any = INFINITY;
    for (int j = 0; j < p->n && !p->stop_requested; j++)
        if (p->all[j].stop) { /* the lowest rank's signal names the stop */
            p->stop_requested = true;
            p->stop_signal = p->all[j].stop;
        }
    for (int j = 0; j < p->n; j++) {
        s->B += p->all[j].batch;
        s->Bstream += p->all[j].stream_batch;
        s->modelled_compute = max_d(s->modelled_compute, sd_compute_time(&p->compute[j], p->all[j].batch));
        if (p->all[j].next_arrival < s->next_any) s->next_any = p->all[j].next_arrival;
    }
    if (s->B == 0) { /* nothing arrived anywhere: no step; the clock moves on */
        s->idle = true;
        p->clock->ops->idle(p, s);
    }
    return SD_OK;
}

/* Device j's live stream ended or failed: every rank stops with device j's message (broadcast
 * from j), naming the device, the topic and the broker. */
sd_status sd_stream_dead(sd_pipe *p, int j) {
    char msg[1024];
    memset(msg, 0, sizeof msg);
    if (p->rank == j) {
        sd_ingest_stats is;
        sd_ingest_get_stats(p->d.ingest, &is);
        const char *why = sd_ingest_error(p->d.ingest);
        if (is.failed)
            snprintf(msg, sizeof msg, "device %d's stream %s failed after step %lld: %s; check that the broker is up and "
                     "reachable from this host (stream.kafka.bootstrap / stream.mqtt.host, port, TLS and credentials)",
                     j, p->d.src_name, (long long)p->ls.step, why[0] ? why : "(no message)");
        else
            snprintf(msg, sizeof msg, "device %d's stream %s ended after step %lld (the source reported the end of "
                     "its stream); a broker stream has no end: check the broker and the publisher", j, p->d.src_name,
                     (long long)p->ls.step);
    }
    sd_status s = sd_comm_broadcast(p->comm, msg, sizeof msg, 0 + j);
    if (s != SD_OK) return s;
    msg[sizeof msg - 1] = '\0';
    return SD_FAIL(SD_ERR_IO, "%s", msg);
}
