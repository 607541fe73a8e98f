/* device.c: one device of a run, set up and torn down: the backend (CPU or a GPU), the model and
 * optimizer, the ring buffer and its sink, the stream source (opened by kind through
 * stream/source.h), the injection pool, the compressor, the batch buffers, and for collectives
 * nccl the NCCL group. Also the two things every stage asks of it: a host view of backend memory
 * and the sum of a block over all devices. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models.h"
#include "engine/step/pipeline.h"
#include "stream/replay.h"
#ifdef SCADLES_HAVE_NCCL
#include "comm/comm_mpi.h"
#include "comm/comm_nccl.h"
#endif
#ifdef SCADLES_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

/* Compression with momentum correction (docs/compression.md): the optimizer's momentum and weight
 * decay move into the compressor, applied per device before Top-k. */
bool sd_momentum_corrected(const sd_experiment *e) {
    return e->compression.policy != SD_COMPRESS_OFF && e->compression.momentum_correction;
}

/* ---- host memory the GPU copies from and to ----------------------------------------------------- */
/* Pinned (sd_cuda_host_alloc, with a logged pageable fallback) when the device computes on CUDA,
 * malloc otherwise (a CPU run of a CUDA build never asks the CUDA driver for anything). */
static void *host_alloc(bool cuda, size_t bytes, bool *pinned) {
    *pinned = false;
#ifdef SCADLES_HAVE_CUDA
    if (cuda) {
        void *p = NULL;
        return sd_cuda_host_alloc(bytes, &p, pinned) == SD_OK ? p : NULL;
    }
#else
    (void)cuda;
#endif
    return malloc(bytes);
}

static void host_free(bool cuda, void *p, bool pinned) {
#ifdef SCADLES_HAVE_CUDA
    if (cuda) {
        if (p) sd_cuda_host_free(p, pinned);
        return;
    }
#else
    (void)cuda;
#endif
    (void)pinned;
    free(p);
}

#ifdef SCADLES_HAVE_CUDA
/* compute_backend cuda: the ring's storage is pinned host memory (cudaMallocHost), so batches copy
 * to the GPU by DMA; without a usable GPU sd_cuda_host_alloc falls back to pageable memory, logged. */
static void *ring_pinned_alloc(size_t bytes, void *ctx) {
    void *p = NULL;
    return sd_cuda_host_alloc(bytes, &p, (bool *)ctx) == SD_OK ? p : NULL;
}
static void ring_pinned_free(void *p, void *ctx) { sd_cuda_host_free(p, *(bool *)ctx); }
#endif

/* ---- views and sums --------------------------------------------------------------------------------- */
/* A host view of `count` floats of backend memory, for the collectives and host-side checks: the
 * block itself on the CPU backend (no copy, so CPU runs are unchanged); on CUDA a copy in the
 * staging buffer, which sd_dev_host_view_back puts back after the collective changed it. */
sd_status sd_dev_host_view(sd_dev *d, float *dev, size_t count, float **view) {
    if (!d->cuda) {
        *view = dev;
        return SD_OK;
    }
    TRY(d->be.ops->download(d->be.ctx, d->hstage, dev, count * sizeof(float)));
    *view = d->hstage;
    return SD_OK;
}

sd_status sd_dev_host_view_back(sd_dev *d, float *dev, const float *view, size_t count) {
    if (!d->cuda) return SD_OK;
    return d->be.ops->upload(d->be.ctx, dev, view, count * sizeof(float));
}

/* In place: `count` floats of backend memory become their sum over all devices. With collectives
 * nccl summed in GPU memory on the backend's compute stream; otherwise over `comm` on a host view
 * (the block itself on the CPU backend, a pinned staging copy on CUDA). */
sd_status sd_dev_sum(sd_dev *d, sd_comm *comm, float *buf, size_t count) {
    if (d->gcomm) return sd_comm_allreduce_sum(d->gcomm, buf, count);
    float *view = NULL;
    TRY(sd_dev_host_view(d, buf, count, &view));
    TRY(sd_comm_allreduce_sum(comm, view, count));
    return sd_dev_host_view_back(d, buf, view, count);
}

/* What this device put on the wire so far, over both communicators (comm.h's ring accounting). */
uint64_t sd_dev_wire_bytes(const sd_comm *comm, const sd_dev *d) {
    return sd_comm_wire_bytes(comm) + (d->gcomm ? sd_comm_wire_bytes(d->gcomm) : 0);
}

/* collectives nccl: an NCCL group over the same ranks as `comm` (bootstrapped over MPI when it is
 * an MPI communicator, else over comm itself: the TCP backend), on this device's GPU and its
 * compute stream, so that the sums follow the backward pass without a host wait. Collective:
 * every rank calls it after its backend exists. */
sd_status sd_dev_grad_comm(const sd_experiment *e, sd_comm *comm, sd_dev *d) {
    if (e->collectives != SD_EXP_COLL_NCCL) return SD_OK;
#ifdef SCADLES_HAVE_NCCL
    MPI_Comm mc = sd_comm_mpi_handle(comm);
    sd_comm_nccl_options o = sd_comm_nccl_default_options();
    o.device = d->gpu;
    o.stream = sd_cuda_stream(d->be.ctx);
    o.timeout_s = e->comm_timeout_s;
    if (mc != MPI_COMM_NULL) TRY(sd_comm_nccl_create(mc, &o, &d->gcomm));
    else TRY(sd_comm_nccl_create_over(comm, &o, &d->gcomm));
    return SD_OK;
#else
    (void)comm;
    (void)d;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "collectives nccl: this build has no NCCL communicator (it needs NCCL, MPI and "
                   "CUDA at configure time: docs/cuda.md); set collectives to host");
#endif
}

/* ---- the stream ------------------------------------------------------------------------------------ */
static sd_ring_policy ring_policy(sd_exp_buffer_policy p) {
    return p == SD_EXP_BUF_TRUNCATION ? SD_RING_TRUNCATE : p == SD_EXP_BUF_DROP_OLDEST ? SD_RING_DROP_OLDEST : SD_RING_PERSIST;
}

/* The ring, its sink and the source: this device's partition replayed at its rate, or its topic. */
static sd_status stream_setup(const sd_dist_inputs *in, int rank, sd_dev *d) {
    const sd_experiment *e = in->e;
    const sd_dataset *tr = in->train;
    size_t img = (size_t)tr->c * tr->h * tr->w;
    sd_ring_config rc = {.max_samples = (size_t)e->buffer.capacity, .max_sample_bytes = img,
                         .policy = ring_policy(e->buffer.policy),
                         .when_full = e->buffer.full == SD_EXP_FULL_BACKPRESSURE ? SD_RING_FULL_BLOCK : SD_RING_FULL_DROP_NEWEST,
                         .block_timeout_s = 0};
#ifdef SCADLES_HAVE_CUDA
    sd_ring_allocator pinned = {.alloc = ring_pinned_alloc, .free = ring_pinned_free, .ctx = &d->ring_pinned,
                                .name = "cudaMallocHost"};
    if (d->cuda) rc.allocator = &pinned; /* copied by sd_ring_create; ctx must outlive the ring (it is in *d) */
#endif
    TRY(sd_ring_create(&rc, &d->ring));
    sd_replay_config pc = {.data = tr, .indices = in->part->index[rank], .n_indices = in->part->count[rank],
                           .rate = sd_rate_fixed(e->devices.dev[rank].rate,
                                                 e->devices.arrival == SD_EXP_ARRIVAL_POISSON ? SD_ARRIVAL_POISSON : SD_ARRIVAL_CONSTANT),
                           .seed = in->seed, .device = (uint32_t)rank, .dtype = SD_MSG_U8};
    sd_msg_expect ex = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {(uint32_t)tr->c, (uint32_t)tr->h, (uint32_t)tr->w},
                        .classes = tr->classes, .check_device = true, .device = (uint32_t)rank};
    TRY(sd_sink_init(&d->sink, d->ring, &ex));
    d->expect = ex;
    sd_source_request req = {.stream = &e->stream, .device = rank, .replay = &pc, .ring = d->ring};
    TRY(sd_source_open(&req, &d->src, d->src_name, sizeof d->src_name));
    return SD_OK;
}

/* Real clock: the ingest thread that feeds the ring from the source (after any restore). A source
 * that keeps no position of its own (a broker) redelivers what a checkpoint already holds: messages
 * numbered up to the last one the restored ring received are dropped as duplicates (counted). */
sd_status sd_dev_stream_start(sd_pipe *p) {
    sd_dev *d = &p->d;
    const bool redelivers = !d->src.ops->save;
    /* a replay under backpressure keeps its next sample while the ring is full (a broker has its own) */
    const bool hold = p->e->stream.source == SD_SOURCE_KIND_REPLAY && p->e->buffer.full == SD_EXP_FULL_BACKPRESSURE &&
                      p->e->buffer.policy != SD_EXP_BUF_DROP_OLDEST;
    sd_ingest_config ic = {.source = d->src, .ring = d->ring, .expect = d->expect, .hold_when_full = hold,
                           .resume = redelivers && d->sink.seq.any, .resume_after_seq = redelivers ? d->sink.seq.last : 0,
                           .counters = &d->sink.seq};
    sd_status s = sd_ingest_start(&ic, &d->ingest);
    if (s != SD_OK && redelivers)
        return SD_FAIL(s, "device %d could not start its stream %s (stream.source %s): %s", p->rank, d->src_name,
                       sd_source_kind_name(p->e->stream.source), sd_last_error_brief());
    return s;
}

/* ---- the rest ---------------------------------------------------------------------------------------- */
static sd_status backend_setup(const sd_dist_inputs *in, int rank, sd_dev *d) {
    if (in->e->compute_backend != SD_EXP_COMPUTE_CUDA) return sd_backend_cpu_create(&d->be, in->threads_per_device);
    /* one GPU per device, round robin over the GPUs this process sees (with mpirun, give each
     * host's ranks CUDA_VISIBLE_DEVICES or as many GPUs as ranks): d->gpu comes in as the slot,
     * the rank, or LOCAL_RANK under a torchrun-style launch (run.c) */
#ifdef SCADLES_HAVE_CUDA
    (void)rank;
    int gpus = 0;
    sd_status s = sd_cuda_device_count(&gpus);
    if (s == SD_OK) s = sd_backend_cuda_create(&d->be, d->gpu = d->gpu % gpus);
#else
    (void)rank;
    sd_status s = SD_FAIL(SD_ERR_UNSUPPORTED, "this build has no CUDA backend (nvcc, cuBLAS and cuDNN were not found at "
                          "configure time)");
#endif
    if (s != SD_OK)
        return SD_FAIL(s, "compute_backend cuda: %s; set compute_backend to cpu on a machine without a usable GPU",
                       sd_last_error_brief());
    d->cuda = true;
    return SD_OK;
}

static sd_status model_setup(const sd_dist_inputs *in, sd_dev *d) {
    const sd_experiment *e = in->e;
    const sd_dataset *tr = in->train;
    sd_model_spec spec = {.name = e->model, .in_c = tr->c, .in_h = tr->h, .in_w = tr->w, .classes = tr->classes,
                          .width = (float)e->width};
    TRY(sd_model_build(&d->be, &spec, in->seed, &d->net)); /* same seed: identical weights on every device */
    sd_lr_schedule sched;
    TRY(sd_lr_schedule_parse(e->optimizer.schedule, (float)e->optimizer.lr, e->max_steps > 0 ? e->max_steps : 1000000,
                             &sched));
    sched.warmup_steps = e->optimizer.warmup_steps;
    sd_optim_config oc = {.momentum = (float)e->optimizer.momentum, .weight_decay = (float)e->optimizer.weight_decay,
                          .nesterov = e->optimizer.nesterov};
    if (sd_momentum_corrected(e)) {
        /* the momentum and the weight decay live in each device's compressor (DGC momentum
         * correction, docs/compression.md): the global update is plain SGD on the summed result */
        if (e->optimizer.nesterov)
            return SD_FAIL(SD_ERR_UNSUPPORTED, "compression.momentum_correction does not do Nesterov momentum; set "
                           "optimizer.nesterov to false or compression.momentum_correction to false");
        oc.momentum = 0;
        oc.weight_decay = 0;
    }
    TRY(sd_optim_init(&d->opt, d->net, &oc, &sched));
    return SD_OK;
}

/* Every device holds the same replica of the pool: contributions are a deterministic function of
 * the partition and the seed, so no device reads another's data except through what the pool was
 * given (counted). Returns the most samples one draw may add (0: no injection). */
static sd_status inject_setup(const sd_dist_inputs *in, int rank, int n, int stream_max, sd_dev *d, int *inject_max) {
    const sd_experiment *e = in->e;
    *inject_max = 0;
    if (!(e->injection.alpha > 0 && e->injection.beta > 0)) return SD_OK;
    TRY(sd_inject_pool_create(in->train, n, SD_INJECT_POOL_PER_CLASS, &d->pool));
    for (int j = 0; j < n; j++) {
        sd_rng r;
        sd_rng_seed(&r, in->seed * 0x9E3779B97F4A7C15ull + 0x1000 + (uint64_t)j);
        TRY(sd_inject_pool_contribute_share(d->pool, j, in->part->index[j], in->part->count[j], SD_INJECT_SHARE, &r));
    }
    sd_rng_seed(&d->inject_rng, in->seed * 31 + 0x2000 + (uint64_t)rank);
    int64_t m = sd_inject_draw_max(stream_max, e->injection.alpha, e->injection.beta, n);
    if (m < 0) return SD_FAIL(SD_ERR_INVALID, "injection: alpha %g / beta %g out of range", e->injection.alpha, e->injection.beta);
    *inject_max = (int)m;
    return SD_OK;
}

static sd_status buffers_setup(const sd_dist_inputs *in, int rank, int inject_max, sd_dev *d) {
    const sd_dataset *tr = in->train;
    size_t img = (size_t)tr->c * tr->h * tr->w;
    d->hx = host_alloc(d->cuda, (size_t)d->max_batch * img * sizeof(float), &d->hx_pinned);
    d->hy = host_alloc(d->cuda, (size_t)d->max_batch * sizeof(int32_t), &d->hy_pinned);
    d->inj_idx = malloc((size_t)(inject_max > 0 ? inject_max : 1) * sizeof(int64_t));
    if (!d->hx || !d->hy || !d->inj_idx) return SD_FAIL(SD_ERR_OOM, "device %d: batch buffers", rank);
    if (d->cuda) {
        size_t np = sd_net_param_count(d->net), nb = sd_net_buffer_count(d->net);
        d->hstage = host_alloc(true, (np > nb ? np : nb) * sizeof(float), &d->hstage_pinned);
        if (!d->hstage) return SD_FAIL(SD_ERR_OOM, "device %d: gradient staging buffer (%zu floats)", rank, np > nb ? np : nb);
    }
    TRY(d->be.ops->alloc(d->be.ctx, (size_t)d->max_batch * img * sizeof(float), (void **)&d->dx));
    TRY(d->be.ops->alloc(d->be.ctx, (size_t)d->max_batch * sizeof(int32_t), (void **)&d->dy));
    TRY(sd_net_reserve(d->net, d->max_batch));
    d->hlogits = malloc((size_t)d->max_batch * sd_net_classes(d->net) * sizeof(float));
    if (!d->hlogits) return SD_FAIL(SD_ERR_OOM, "logits");
    return SD_OK;
}

sd_status sd_dev_setup(const sd_dist_inputs *in, int rank, int n, sd_dev *d) {
    const sd_experiment *e = in->e;
    TRY(backend_setup(in, rank, d));
    TRY(model_setup(in, d));
    TRY(stream_setup(in, rank, d));
    int inject_max = 0, stream_max = in->mode == SD_EXP_MODE_DDP ? e->batch : e->cap;
    TRY(inject_setup(in, rank, n, stream_max, d, &inject_max));
    d->max_batch = stream_max + inject_max;
    TRY(buffers_setup(in, rank, inject_max, d));
    if (e->compression.policy != SD_COMPRESS_OFF)
        TRY(sd_compressor_for(e, d->net, d->cuda && e->collectives == SD_EXP_COLL_NCCL ? &d->be : NULL,
                              in->threads_per_device, &d->compressor));
    return SD_OK;
}

void sd_dev_free(sd_dev *d) {
    sd_comm_destroy(d->gcomm); /* before the backend: it runs on the backend's compute stream */
    if (d->ingest) sd_ingest_stop(d->ingest);
    sd_source_close(&d->src);
    if (d->be.ops) {
        if (d->dx) d->be.ops->free(d->be.ctx, d->dx);
        if (d->dy) d->be.ops->free(d->be.ctx, d->dy);
    }
    host_free(d->cuda, d->hx, d->hx_pinned);
    host_free(d->cuda, d->hy, d->hy_pinned);
    host_free(d->cuda, d->hstage, d->hstage_pinned);
    free(d->inj_idx);
    free(d->hlogits);
    sd_optim_free(&d->opt);
    sd_net_destroy(d->net);
    sd_ring_destroy(d->ring);
    sd_inject_pool_destroy(d->pool);
    sd_compressor_destroy(d->compressor);
    if (d->be.ops) sd_backend_destroy(&d->be);
}
