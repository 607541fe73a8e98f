/* distributed.c: the ScaDLES / DDP device loop under the virtual clock, and the experiment runner
 * (modes x seeds, local threads or MPI ranks, comparison table, summary.json, plot).
 *
 * Every rank runs the same loop. Per step: cut the batch (ddp: when the slowest device has b
 * samples; scadles: at the end of the window), exchange a small record per device (allgather) so
 * that every rank derives the same global quantities (batch sizes, times), train on the local
 * batch with the gradient scaled by 1 / sum(b) (which is the equal-weight average in ddp and the
 * b_i / sum(b) weighting in scadles), sum the gradients (allreduce, rank order on the local
 * backend), and take the SGD step with the mode's learning-rate scale. Virtual time advances by
 * the slowest device's modelled compute plus the ring-allreduce time over the slowest link. */
#include "engine/distributed.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/rng.h"
#include "comm/comm_local.h"
#include "comm/compress.h"
#include "comm/cost.h"
#include "comm/shaper.h"
#include "engine/checkpoint.h"
#include "engine/dist_checkpoint.h"
#include "engine/models.h"
#include "engine/optim.h"
#include "engine/profile.h"
#include "engine/signals.h"
#include "engine/train.h"
#include "stream/augment.h"
#include "stream/ingest.h"
#include "stream/inject.h"
#include "stream/kafka.h"
#include "stream/mqtt.h"
#include "stream/rate.h"
#include "stream/replay.h"
#include "stream/ring.h"
#ifdef SCADLES_HAVE_NCCL
#include "comm/comm_mpi.h"
#include "comm/comm_nccl.h"
#endif
#ifdef SCADLES_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

/* Share of its partition each device contributes to the injection pool, and the pool's bound per
 * class (docs/distributed.md). */
#define SD_INJECT_SHARE 0.1
#define SD_INJECT_POOL_PER_CLASS 4096

/* Prequential (test-then-train) accuracy: every incoming stream sample is scored by the current
 * model (the training forward's logits, before the update) and counted over a sliding window of
 * the last SD_PREQ_WINDOW steps, per device and overall. */
#define SD_PREQ_WINDOW 20

typedef struct preq_window {
    float correct[SD_PREQ_WINDOW][SD_MAX_DEVICES];
    float seen[SD_PREQ_WINDOW][SD_MAX_DEVICES];
} preq_window;

/* Stream samples (the first n of the batch) whose label has the highest logit (ties: the label
 * loses only to a strictly higher logit, as in sd_evaluate). */
static int count_correct(const float *logits, const int32_t *labels, int n, int classes) {
    int c = 0;
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * classes;
        int above = 0;
        for (int j = 0; j < classes; j++) above += l[j] > l[labels[i]];
        c += above == 0;
    }
    return c;
}

/* The record every device contributes to the per-step allgather. */
typedef struct step_info {
    double t_ready;       /* ddp: when this device's buffer holds b samples (INFINITY: never);
                             real clock: this device's clock reading when its batch was cut */
    double next_arrival;  /* the device's next arrival after the cut */
    int32_t batch;        /* samples trained on this step: stream + injected */
    int32_t stream_batch; /* of them, from the device's own stream */
    int32_t buffered;     /* buffer occupancy after the take */
    int32_t stop;         /* a stop request seen on this device (the signal's number), 0: none;
                             STOP_STREAM_DEAD: this device's broker stream ended or failed */
    uint64_t dropped;     /* all drops so far (policy, truncation, decode) */
    uint64_t high_water;
} step_info;

#define STOP_STREAM_DEAD (-1)

static double max_d(double a, double b) { return a > b ? a : b; }

/* Compression with momentum correction (docs/compression.md): the optimizer's momentum and weight
 * decay move into the compressor, applied per device before Top-k. */
static bool momentum_corrected(const sd_experiment *e) {
    return e->compression.policy != SD_COMPRESS_OFF && e->compression.momentum_correction;
}

/* JSON has no NaN/Inf: a non-finite value is written as null. */
static void json_num(char *buf, size_t n, double v) {
    if (isfinite(v)) snprintf(buf, n, "%.6f", v);
    else snprintf(buf, n, "null");
}

static uint64_t ring_drops(const sd_ring_stats *s) {
    uint64_t d = s->truncated;
    for (int r = 1; r < SD_DROP_COUNT; r++) d += s->dropped[r];
    return d;
}

static sd_status allgather_info(sd_comm *c, const step_info *mine, step_info *all) {
    size_t sizes[SD_MAX_DEVICES], displs[SD_MAX_DEVICES];
    for (int j = 0; j < c->size; j++) {
        sizes[j] = sizeof(step_info);
        displs[j] = (size_t)j * sizeof(step_info);
    }
    return sd_comm_allgatherv(c, mine, sizeof *mine, all, sizes, displs);
}

static sd_ring_policy ring_policy(sd_exp_buffer_policy p) {
    return p == SD_EXP_BUF_TRUNCATION ? SD_RING_TRUNCATE : p == SD_EXP_BUF_DROP_OLDEST ? SD_RING_DROP_OLDEST : SD_RING_PERSIST;
}

typedef struct device {
    sd_backend be;
    sd_net *net;
    sd_optimizer opt;
    sd_ring *ring;
    bool ring_pinned; /* CUDA builds: whether the ring's storage came from cudaMallocHost */
    sd_replay *replay;
    sd_sink sink;
    sd_msg_expect expect;
    sd_ingest *ingest;    /* real clock: the thread feeding the ring from the replay or the broker */
    sd_kafka *kafka;      /* stream.source kafka: this device's consumer of <topic_prefix><rank> */
    sd_mqtt *mqtt;        /* stream.source mqtt: this device's subscriber */
    char src_name[400];   /* the broker source for messages: "kafka(trainer-1) at host:9092" */
    sd_inject_pool *pool;
    sd_compressor *compressor; /* Top-k + error feedback (compression.policy != off) */
    sd_rng inject_rng;
    float *hx, *dx;
    int32_t *hy, *dy;
    int64_t *inj_idx;
    int max_batch;
    bool cuda;         /* compute_backend cuda: batches, gradients and BN buffers live on a GPU */
    int gpu;           /* cuda: the device index */
    sd_comm *gcomm;    /* collectives nccl: sums gradients and BN buffers in GPU memory; NULL: host views */
    bool hx_pinned, hy_pinned, hstage_pinned;
    float *hstage;     /* cuda: host copy of the gradient or BN buffers for the collectives (pinned) */
} device;

/* Host buffers the GPU copies from and to: pinned (sd_cuda_host_alloc, with a logged pageable
 * fallback) when the device computes on CUDA, malloc otherwise. */
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

/* A host view of `count` floats of backend memory, for the collectives and host-side checks: the
 * block itself on the CPU backend (no copy, so CPU runs are unchanged); on CUDA a copy in the
 * staging buffer, which host_view_back puts back after the collective changed it. */
static sd_status host_view(device *d, float *dev, size_t count, float **view) {
    if (!d->cuda) {
        *view = dev;
        return SD_OK;
    }
    TRY(d->be.ops->download(d->be.ctx, d->hstage, dev, count * sizeof(float)));
    *view = d->hstage;
    return SD_OK;
}

static sd_status host_view_back(device *d, float *dev, const float *view, size_t count) {
    if (!d->cuda) return SD_OK;
    return d->be.ops->upload(d->be.ctx, dev, view, count * sizeof(float));
}

/* collectives nccl: an NCCL group over the same ranks as `comm` (an MPI communicator), on this
 * device's GPU and its compute stream, so that the sums follow the backward pass without a host
 * wait. Collective: every rank calls it after its backend exists. */
static sd_status grad_comm_create(const sd_experiment *e, sd_comm *comm, device *d) {
    if (e->collectives != SD_EXP_COLL_NCCL) return SD_OK;
#ifdef SCADLES_HAVE_NCCL
    MPI_Comm mc = sd_comm_mpi_handle(comm);
    if (mc == MPI_COMM_NULL)
        return SD_FAIL(SD_ERR_INVALID, "collectives nccl: the run's communicator is not an MPI one (%s); set backend "
                       "to mpi and start the run with mpirun", comm->ops->name);
    sd_comm_nccl_options o = sd_comm_nccl_default_options();
    o.device = d->gpu;
    o.stream = sd_cuda_stream(d->be.ctx);
    o.timeout_s = e->comm_timeout_s;
    TRY(sd_comm_nccl_create(mc, &o, &d->gcomm));
    return SD_OK;
#else
    (void)comm;
    (void)d;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "collectives nccl: this build has no NCCL communicator (it needs NCCL, MPI and "
                   "CUDA at configure time: docs/cuda.md); set collectives to host");
#endif
}

/* In place: `count` floats of backend memory become their sum over all devices. With collectives
 * nccl summed in GPU memory on the backend's compute stream; otherwise over `comm` on a host view
 * (the block itself on the CPU backend, a pinned staging copy on CUDA). */
static sd_status sum_over_devices(device *d, sd_comm *comm, float *buf, size_t count) {
    if (d->gcomm) return sd_comm_allreduce_sum(d->gcomm, buf, count);
    float *view = NULL;
    TRY(host_view(d, buf, count, &view));
    TRY(sd_comm_allreduce_sum(comm, view, count));
    return host_view_back(d, buf, view, count);
}

/* What this device put on the wire so far, over both communicators (comm.h's ring accounting). */
static uint64_t wire_bytes(const sd_comm *comm, const device *d) {
    return sd_comm_wire_bytes(comm) + (d->gcomm ? sd_comm_wire_bytes(d->gcomm) : 0);
}

static void device_free(device *d) {
    sd_comm_destroy(d->gcomm); /* before the backend: it runs on the backend's compute stream */
    if (d->ingest) sd_ingest_stop(d->ingest);
    sd_kafka_destroy(d->kafka);
    sd_mqtt_destroy(d->mqtt);
    if (d->be.ops) {
        if (d->dx) d->be.ops->free(d->be.ctx, d->dx);
        if (d->dy) d->be.ops->free(d->be.ctx, d->dy);
    }
    host_free(d->cuda, d->hx, d->hx_pinned);
    host_free(d->cuda, d->hy, d->hy_pinned);
    host_free(d->cuda, d->hstage, d->hstage_pinned);
    free(d->inj_idx);
    sd_optim_free(&d->opt);
    sd_net_destroy(d->net);
    sd_replay_destroy(d->replay);
    sd_ring_destroy(d->ring);
    sd_inject_pool_destroy(d->pool);
    sd_compressor_destroy(d->compressor);
    if (d->be.ops) sd_backend_destroy(&d->be);
}

#ifdef SCADLES_HAVE_CUDA
/* With CUDA the ring's storage is pinned host memory (cudaMallocHost), so batches copy to the
 * GPU by DMA; without a GPU sd_cuda_host_alloc falls back to aligned pageable memory, logged. */
static void *ring_pinned_alloc(size_t bytes, void *ctx) {
    void *p = NULL;
    return sd_cuda_host_alloc(bytes, &p, (bool *)ctx) == SD_OK ? p : NULL;
}
static void ring_pinned_free(void *p, void *ctx) { sd_cuda_host_free(p, *(bool *)ctx); }
#endif

/* ---- broker sources (stream.source kafka | mqtt; docs/distributed.md, "Training from a broker") ---- */
/* The first line of a password file, without its line end. */
static sd_status read_password(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f)
        return SD_FAIL(SD_ERR_IO, "stream.mqtt.password_file: cannot open %s: %s; give a readable file whose first line is "
                       "the password", path, strerror(errno));
    out[0] = '\0';
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (!ok || !out[0])
        return SD_FAIL(SD_ERR_INVALID, "stream.mqtt.password_file: %s is empty; its first line must be the password", path);
    return SD_OK;
}

/* Creates this device's broker source for topic <topic_prefix><rank> (nothing connects yet). */
static sd_status broker_create(const sd_experiment *e, int rank, device *d) {
    const sd_stream_config *st = &e->stream;
    char topic[SD_EXP_NAME_LEN + 16];
    snprintf(topic, sizeof topic, "%s%d", st->topic_prefix, rank);
    if (st->source == SD_SOURCE_KIND_KAFKA) {
        const char *conf[SD_STREAM_MAX_CONF];
        for (int i = 0; i < st->kafka.n_conf; i++) conf[i] = st->kafka.conf[i];
        char group[SD_EXP_NAME_LEN + 16];
        snprintf(group, sizeof group, "%s-%d", st->kafka.group_id, rank);
        sd_kafka_config kc = {.conn = {.bootstrap = st->kafka.bootstrap[0] ? st->kafka.bootstrap : NULL, .conf = conf,
                                       .n_conf = (size_t)st->kafka.n_conf, .connect_timeout_s = st->connect_timeout_s},
                              .topic = topic, .group_id = st->kafka.group_id[0] ? group : NULL, .ring = d->ring,
                              .commit = SD_KAFKA_COMMIT_CONSUMED};
        snprintf(d->src_name, sizeof d->src_name, "kafka(%s) from the brokers at %s", topic,
                 st->kafka.bootstrap[0] ? st->kafka.bootstrap : "(bootstrap.servers in stream.kafka.conf)");
        TRY(sd_kafka_create(&kc, &d->kafka));
        return SD_OK;
    }
    char password[512] = "";
    if (st->mqtt.password_file[0]) TRY(read_password(st->mqtt.password_file, password, sizeof password));
    sd_mqtt_config mc = {.conn = {.host = st->mqtt.host, .port = st->mqtt.port,
                                  .username = st->mqtt.username[0] ? st->mqtt.username : NULL,
                                  .password = password[0] ? password : NULL,
                                  .cafile = st->mqtt.cafile[0] ? st->mqtt.cafile : NULL,
                                  .connect_timeout_s = st->connect_timeout_s},
                         .topic = topic, .qos = st->mqtt.qos, .ring = d->ring};
    snprintf(d->src_name, sizeof d->src_name, "mqtt(%s) from the broker at %s:%d", topic, st->mqtt.host,
             st->mqtt.port ? st->mqtt.port : st->mqtt.cafile[0] ? 8883 : 1883);
    sd_status s = sd_mqtt_create(&mc, &d->mqtt);
    memset(password, 0, sizeof password);
    TRY(s);
    return SD_OK;
}

/* Real clock with a broker source: starts the ingest thread; resuming, messages numbered up to the
 * last one the checkpoint's ring received are dropped as duplicates (counted). */
static sd_status broker_start(const sd_experiment *e, int rank, device *d) {
    sd_ingest_config ic = {.source = d->kafka ? sd_kafka_source(d->kafka) : sd_mqtt_source(d->mqtt), .ring = d->ring,
                           .expect = d->expect, .resume = d->sink.seq.any, .resume_after_seq = d->sink.seq.last};
    sd_status s = sd_ingest_start(&ic, &d->ingest);
    if (s != SD_OK)
        return SD_FAIL(s, "device %d could not start its stream %s (stream.source %s): %s", rank, d->src_name,
                       sd_exp_source_name(e->stream.source), sd_last_error_brief());
    return SD_OK;
}

/* The experiment's "compression" section as the compressor's configuration. */
static void compress_config(const sd_experiment *e, sd_compress_config *c) {
    sd_compress_config_default(c);
    c->policy = e->compression.policy;
    c->ratio = e->compression.ratio;
    c->delta = e->compression.delta;
    c->per_layer = e->compression.per_layer;
    c->min_ratio = e->compression.min_ratio;
    c->max_ratio = e->compression.max_ratio;
    c->epsilon = e->compression.epsilon;
    c->f16_values = e->compression.f16_values;
    c->momentum = e->compression.momentum_correction && e->compression.policy != SD_COMPRESS_OFF
                      ? e->optimizer.momentum : 0.0;
}

/* A compressor whose layers are the network's trainable tensors. */
static sd_status compressor_create(const sd_compress_config *c, const sd_net *net, int threads, sd_compressor **out) {
    const int nl = sd_net_trainable_layout(net, NULL, NULL, 0);
    size_t *off = malloc(sizeof(size_t) * (size_t)(nl > 0 ? nl : 1)), *cnt = malloc(sizeof(size_t) * (size_t)(nl > 0 ? nl : 1));
    sd_status s = off && cnt ? SD_OK : SD_FAIL(SD_ERR_OOM, "compressor: %d tensors", nl);
    if (s == SD_OK) {
        sd_net_trainable_layout(net, off, cnt, nl);
        s = sd_compressor_create(c, sd_net_param_count(net), nl, off, cnt, threads, out);
    }
    free(off);
    free(cnt);
    return s;
}

static sd_status device_setup(const sd_dist_inputs *in, int rank, int n, device *d) {
    const sd_experiment *e = in->e;
    const sd_dataset *tr = in->train;
    if (e->compute_backend == SD_EXP_COMPUTE_CUDA) {
        /* one GPU per device, round robin over the GPUs this process sees (with mpirun, give each
         * host's ranks CUDA_VISIBLE_DEVICES or as many GPUs as ranks) */
#ifdef SCADLES_HAVE_CUDA
        int gpus = 0;
        sd_status s = sd_cuda_device_count(&gpus);
        if (s == SD_OK) s = sd_backend_cuda_create(&d->be, d->gpu = rank % gpus);
#else
        sd_status s = SD_FAIL(SD_ERR_UNSUPPORTED, "this build has no CUDA backend (nvcc, cuBLAS and cuDNN were not found "
                              "at configure time)");
#endif
        if (s != SD_OK)
            return SD_FAIL(s, "compute_backend cuda: %s; set compute_backend to cpu on a machine without a usable GPU",
                           sd_last_error_brief());
        d->cuda = true;
    } else {
        TRY(sd_backend_cpu_create(&d->be, in->threads_per_device));
    }
    sd_model_spec spec = {.name = e->model, .in_c = tr->c, .in_h = tr->h, .in_w = tr->w, .classes = tr->classes,
                          .width = (float)e->width};
    TRY(sd_model_build(&d->be, &spec, in->seed, &d->net)); /* same seed: identical weights on every device */
    sd_lr_schedule sched;
    TRY(sd_lr_schedule_parse(e->optimizer.schedule, (float)e->optimizer.lr, e->max_steps > 0 ? e->max_steps : 1000000,
                             &sched));
    sched.warmup_steps = e->optimizer.warmup_steps;
    sd_optim_config oc = {.momentum = (float)e->optimizer.momentum, .weight_decay = (float)e->optimizer.weight_decay,
                          .nesterov = e->optimizer.nesterov};
    if (momentum_corrected(e)) {
        /* the momentum and the weight decay live in each device's compressor (DGC momentum
         * correction, docs/compression.md): the global update is plain SGD on the summed result */
        if (e->optimizer.nesterov)
            return SD_FAIL(SD_ERR_UNSUPPORTED, "compression.momentum_correction does not do Nesterov momentum; set "
                           "optimizer.nesterov to false or compression.momentum_correction to false");
        oc.momentum = 0;
        oc.weight_decay = 0;
    }
    TRY(sd_optim_init(&d->opt, d->net, &oc, &sched));

    size_t img = (size_t)tr->c * tr->h * tr->w;
    sd_ring_config rc = {.max_samples = (size_t)e->buffer.capacity, .max_sample_bytes = img,
                         .policy = ring_policy(e->buffer.policy),
                         .when_full = e->buffer.full == SD_EXP_FULL_BACKPRESSURE ? SD_RING_FULL_BLOCK : SD_RING_FULL_DROP_NEWEST,
                         .block_timeout_s = 0};
#ifdef SCADLES_HAVE_CUDA
    sd_ring_allocator pinned = {.alloc = ring_pinned_alloc, .free = ring_pinned_free, .ctx = &d->ring_pinned,
                                .name = "cudaMallocHost"};
    rc.allocator = &pinned; /* copied by sd_ring_create; ctx must outlive the ring (it is in *d) */
#endif
    TRY(sd_ring_create(&rc, &d->ring));
    sd_replay_config pc = {.data = tr, .indices = in->part->index[rank], .n_indices = in->part->count[rank],
                           .rate = sd_rate_fixed(e->devices.dev[rank].rate,
                                                 e->devices.arrival == SD_EXP_ARRIVAL_POISSON ? SD_ARRIVAL_POISSON : SD_ARRIVAL_CONSTANT),
                           .seed = in->seed, .device = (uint32_t)rank, .dtype = SD_MSG_U8};
    TRY(sd_replay_create(&pc, &d->replay));
    sd_msg_expect ex = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {(uint32_t)tr->c, (uint32_t)tr->h, (uint32_t)tr->w},
                        .classes = tr->classes, .check_device = true, .device = (uint32_t)rank};
    TRY(sd_sink_init(&d->sink, d->ring, &ex));
    d->expect = ex;
    if (e->stream.source != SD_SOURCE_KIND_REPLAY) {
        if (e->clock != SD_EXP_CLOCK_REAL)
            return SD_FAIL(SD_ERR_INVALID, "stream.source %s needs clock \"real\"", sd_exp_source_name(e->stream.source));
        TRY(broker_create(e, rank, d));
        if (!in->resume_dir) TRY(broker_start(e, rank, d)); /* resumed: once the ring is restored */
    } else if (e->clock == SD_EXP_CLOCK_REAL && !in->resume_dir) {
        /* The replay paced by the wall clock, delivered by an ingest thread (its time 0 is now; a
         * resumed run starts it once the stream's state is restored) */
        sd_ingest_config ic = {.source = sd_replay_source(d->replay), .ring = d->ring, .expect = ex};
        TRY(sd_ingest_start(&ic, &d->ingest));
    }

    int inject_max = 0;
    bool inject = e->injection.alpha > 0 && e->injection.beta > 0;
    int stream_max = in->mode == SD_EXP_MODE_DDP ? e->batch : e->cap;
    if (inject) {
        /* Every device holds the same replica of the pool: contributions are a deterministic
         * function of the partition and the seed, so no device reads another's data except
         * through what the pool was given (counted). */
        TRY(sd_inject_pool_create(tr, n, SD_INJECT_POOL_PER_CLASS, &d->pool));
        for (int j = 0; j < n; j++) {
            sd_rng r;
            sd_rng_seed(&r, in->seed * 0x9E3779B97F4A7C15ull + 0x1000 + (uint64_t)j);
            TRY(sd_inject_pool_contribute_share(d->pool, j, in->part->index[j], in->part->count[j], SD_INJECT_SHARE, &r));
        }
        sd_rng_seed(&d->inject_rng, in->seed * 31 + 0x2000 + (uint64_t)rank);
        int64_t m = sd_inject_draw_max(stream_max, e->injection.alpha, e->injection.beta, n);
        if (m < 0) return SD_FAIL(SD_ERR_INVALID, "injection: alpha %g / beta %g out of range", e->injection.alpha, e->injection.beta);
        inject_max = (int)m;
    }
    d->max_batch = stream_max + inject_max;
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
    if (e->compression.policy != SD_COMPRESS_OFF) {
        sd_compress_config cc;
        compress_config(e, &cc);
        TRY(compressor_create(&cc, d->net, in->threads_per_device, &d->compressor));
    }
    return SD_OK;
}

static sd_status advance_to(device *d, double t) {
    uint64_t delivered = 0;
    return sd_replay_advance_to(d->replay, t, &d->sink, &delivered);
}

/* ddp: the time this device's buffer first holds b samples, delivering arrivals up to it. */
static sd_status ready_time(device *d, double now, int b, double *t_ready) {
    TRY(advance_to(d, now));
    double t = now;
    while (sd_ring_size(d->ring) < (size_t)b) {
        double next = sd_replay_next_time(d->replay);
        if (!isfinite(next)) {
            *t_ready = INFINITY;
            return SD_OK;
        }
        TRY(advance_to(d, next));
        t = next;
    }
    *t_ready = t;
    return SD_OK;
}

/* Opens an output of the run for writing: afresh (resume_bytes < 0), or, resuming, cut back to
 * the size it had when the checkpoint was taken and appended to, so the finished file is the one
 * an uninterrupted run writes. */
static sd_status open_out(const char *dir, const char *name, int64_t resume_bytes, FILE **f) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (resume_bytes >= 0) {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return SD_FAIL(SD_ERR_IO, "resume: cannot find %s (%s); it holds the run's output up to the checkpoint; "
                           "resume with the out_dir the checkpoint was written in", path, strerror(errno));
        if ((int64_t)sb.st_size < resume_bytes)
            return SD_FAIL(SD_ERR_INVALID, "resume: %s has %lld bytes, fewer than the %lld it had at the checkpoint; "
                           "the run directory was changed since", path, (long long)sb.st_size, (long long)resume_bytes);
        if (truncate(path, (off_t)resume_bytes) != 0)
            return SD_FAIL(SD_ERR_IO, "resume: cannot cut %s back to %lld bytes: %s", path, (long long)resume_bytes,
                           strerror(errno));
    }
    *f = fopen(path, resume_bytes >= 0 ? "a" : "w");
    if (!*f) return SD_FAIL(SD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return SD_OK;
}

/* ---- checkpoints (docs/checkpoints.md, "Distributed runs") ------------------------------------- */
/* The loop's state between two steps, besides the device's components and the summary so far. */
typedef struct loop_state {
    double T, last_cut, next_eval, last_top1;
    int64_t step;
    uint64_t wire_bytes;      /* this rank's wire bytes since the run began */
    int64_t out_bytes[4];     /* rank 0: sizes of the outputs below at the checkpoint (-1: write afresh) */
} loop_state;

static const char *const OUT_NAMES[4] = {"metrics.jsonl", "eval.jsonl", "eval.dat", "buffer.dat"};

/* Summary fields the loop accumulates (F64 and U64 tensors "summary.f64", "summary.u64"). */
#define SUMMARY_F64 4
#define SUMMARY_U64 5

/* Writes <checkpoint_dir>/rank<r>.safetensors: everything this device needs to continue. */
static sd_status save_rank(const sd_dist_inputs *in, int rank, int n, device *d, const loop_state *ls,
                           const sd_run_summary *out, const preq_window *preq, const char *reason) {
    sd_dist_ckpt_id id = {.experiment = in->experiment_json, .devices = n, .run_index = in->run_index,
                          .mode = in->mode, .seed = in->seed, .step = ls->step};
    sd_dist_ckpt_writer cw;
    TRY(sd_dist_ckpt_writer_begin(&cw, &id, rank, reason));
    double clock[4] = {ls->T, ls->last_cut, ls->next_eval, ls->last_top1};
    double sf[SUMMARY_F64] = {out->time_to_target_s, out->final_accuracy, out->best_accuracy, out->wall_s};
    uint64_t su[SUMMARY_U64] = {(uint64_t)out->skipped_steps, out->samples_trained, out->samples_injected,
                                out->samples_dropped, out->peak_buffer};
    const int64_t pshape[2] = {SD_PREQ_WINDOW, SD_MAX_DEVICES};
    sd_status s = SD_OK;
#define PUT(x) if (s == SD_OK) s = (x)
    PUT(sd_dist_ckpt_put_net(&cw, d->net, &d->opt));
    PUT(sd_dist_ckpt_put_ring(&cw, d->ring, &d->sink));
    PUT(sd_dist_ckpt_put_replay(&cw, d->replay));
    if (d->pool) {
        PUT(sd_dist_ckpt_put_pool(&cw, d->pool, n));
        PUT(sd_dist_ckpt_put_rng(&cw, "inject.rng", &d->inject_rng));
    }
    if (d->compressor) PUT(sd_dist_ckpt_put_compressor(&cw, d->compressor));
    PUT(sd_dist_ckpt_put(&cw, "loop.clock", SD_ST_F64, 1, (int64_t[]){4}, clock));
    PUT(sd_dist_ckpt_put_i64(&cw, "loop.step", ls->step));
    PUT(sd_dist_ckpt_put_u64(&cw, "loop.wire_bytes", ls->wire_bytes));
    PUT(sd_dist_ckpt_put(&cw, "loop.outputs", SD_ST_I64, 1, (int64_t[]){4}, ls->out_bytes));
    PUT(sd_dist_ckpt_put(&cw, "preq.correct", SD_ST_F32, 2, pshape, preq->correct));
    PUT(sd_dist_ckpt_put(&cw, "preq.seen", SD_ST_F32, 2, pshape, preq->seen));
    PUT(sd_dist_ckpt_put(&cw, "summary.f64", SD_ST_F64, 1, (int64_t[]){SUMMARY_F64}, sf));
    PUT(sd_dist_ckpt_put(&cw, "summary.u64", SD_ST_U64, 1, (int64_t[]){SUMMARY_U64}, su));
#undef PUT
    if (s != SD_OK) {
        sd_dist_ckpt_writer_abort(&cw);
        TRY(s);
    }
    char path[1100];
    sd_dist_ckpt_path(in->checkpoint_dir, rank, path, sizeof path);
    s = sd_dist_ckpt_mkdir(in->checkpoint_dir);
    if (s != SD_OK) {
        sd_dist_ckpt_writer_abort(&cw);
        TRY(s);
    }
    TRY(sd_dist_ckpt_writer_finish(&cw, path));
    return SD_OK;
}

/* Reads <resume_dir>/rank<r>.safetensors back into a freshly set-up device and the loop state. */
static sd_status load_rank(const sd_dist_inputs *in, int rank, int n, device *d, loop_state *ls, sd_run_summary *out,
                           preq_window *preq) {
    char path[1100];
    sd_dist_ckpt_path(in->resume_dir, rank, path, sizeof path);
    sd_dist_ckpt_id want = {.experiment = in->experiment_json, .devices = n}, got;
    sd_st_file *f = NULL;
    TRY(sd_dist_ckpt_open(path, &want, rank, &f, &got));
    sd_status s = SD_OK;
    const sd_st_tensor *t = NULL;
#define GET(x) if (s == SD_OK) s = (x)
    if (got.run_index != in->run_index || got.step != in->resume_step)
        s = SD_FAIL(SD_ERR_INVALID, "%s holds step %lld of run %d but %s/%s says step %lld of run %d: the checkpoint "
                    "was interrupted while it was being written; resume from a complete copy or start again", path,
                    (long long)got.step, got.run_index, in->resume_dir, SD_DIST_CKPT_RUN_FILE,
                    (long long)in->resume_step, in->run_index);
    GET(sd_dist_ckpt_get_net(f, d->net, &d->opt));
    GET(sd_dist_ckpt_get_ring(f, d->ring, &d->sink));
    GET(sd_dist_ckpt_get_replay(f, d->replay));
    if (d->pool) {
        GET(sd_dist_ckpt_get_pool(f, d->pool, n));
        GET(sd_dist_ckpt_get_rng(f, "inject.rng", &d->inject_rng));
    }
    if (d->compressor) GET(sd_dist_ckpt_get_compressor(f, d->compressor));
    GET(sd_dist_ckpt_get(f, "loop.clock", SD_ST_F64, 4, &t));
    if (s == SD_OK) {
        double c[4];
        memcpy(c, t->data, sizeof c);
        ls->T = c[0];
        ls->last_cut = c[1];
        ls->next_eval = c[2];
        ls->last_top1 = c[3];
    }
    GET(sd_dist_ckpt_get_i64(f, "loop.step", &ls->step));
    GET(sd_dist_ckpt_get_u64(f, "loop.wire_bytes", &ls->wire_bytes));
    GET(sd_dist_ckpt_get(f, "loop.outputs", SD_ST_I64, 4, &t));
    if (s == SD_OK) memcpy(ls->out_bytes, t->data, sizeof ls->out_bytes);
    GET(sd_dist_ckpt_get(f, "preq.correct", SD_ST_F32, (size_t)SD_PREQ_WINDOW * SD_MAX_DEVICES, &t));
    if (s == SD_OK) memcpy(preq->correct, t->data, sizeof preq->correct);
    GET(sd_dist_ckpt_get(f, "preq.seen", SD_ST_F32, (size_t)SD_PREQ_WINDOW * SD_MAX_DEVICES, &t));
    if (s == SD_OK) memcpy(preq->seen, t->data, sizeof preq->seen);
    GET(sd_dist_ckpt_get(f, "summary.f64", SD_ST_F64, SUMMARY_F64, &t));
    if (s == SD_OK) {
        double v[SUMMARY_F64];
        memcpy(v, t->data, sizeof v);
        out->time_to_target_s = v[0];
        out->final_accuracy = v[1];
        out->best_accuracy = v[2];
        out->wall_s = v[3];
    }
    GET(sd_dist_ckpt_get(f, "summary.u64", SD_ST_U64, SUMMARY_U64, &t));
    if (s == SD_OK) {
        uint64_t v[SUMMARY_U64];
        memcpy(v, t->data, sizeof v);
        out->skipped_steps = (int64_t)v[0];
        out->samples_trained = v[1];
        out->samples_injected = v[2];
        out->samples_dropped = v[3];
        out->peak_buffer = v[4];
    }
    if (s == SD_OK && ls->step != got.step)
        s = SD_FAIL(SD_ERR_FORMAT, "%s: loop.step %lld disagrees with the metadata's step %lld; the file is damaged",
                    path, (long long)ls->step, (long long)got.step);
#undef GET
    sd_st_close(f);
    TRY(s);
    return SD_OK;
}

/* One phase slice on this device's track (trace.h; a NULL trace records nothing). */
static void trace_phase(const sd_dist_inputs *in, int tid, sd_trace_phase p, double t0, double dur) {
    (void)sd_trace_complete(in->trace, in->trace_pid, tid, sd_trace_phase_name(p), "step", t0, dur > 0 ? dur : 0);
}

/* Device j's broker stream ended or failed: every rank stops with device j's message (broadcast
 * from j), naming the device, the topic and the broker. */
static sd_status stream_dead(sd_comm *comm, device *d, int j, int64_t step) {
    char msg[1024];
    memset(msg, 0, sizeof msg);
    if (comm->rank == j) {
        sd_ingest_stats is;
        sd_ingest_get_stats(d->ingest, &is);
        const char *why = sd_ingest_error(d->ingest);
        if (is.failed)
            snprintf(msg, sizeof msg, "device %d's stream %s failed after step %lld: %s; check that the broker is up and "
                     "reachable from this host (stream.kafka.bootstrap / stream.mqtt.host, port, TLS and credentials)",
                     j, d->src_name, (long long)step, why[0] ? why : "(no message)");
        else
            snprintf(msg, sizeof msg, "device %d's stream %s ended after step %lld (the source reported the end of "
                     "its stream); a broker stream has no end: check the broker and the publisher", j, d->src_name,
                     (long long)step);
    }
    sd_status s = sd_comm_broadcast(comm, msg, sizeof msg, j);
    if (s != SD_OK) return s;
    msg[sizeof msg - 1] = '\0';
    return SD_FAIL(SD_ERR_IO, "%s", msg);
}

/* Kafka and checkpoints (docs/checkpoints.md): once every rank file is written, rank 0 completes the
 * checkpoint with run.safetensors (the runner writes the same file again), and only then does
 * each device mark what its ring held as done and commit its offsets synchronously, so the group's
 * committed offsets never run ahead of a complete checkpoint. A failed commit is a note: the
 * resumed run drops the redelivered samples as duplicates (sink.seq), so nothing trains twice. */
static sd_status commit_with_checkpoint(const sd_dist_inputs *in, sd_comm *comm, device *d, int sig, int64_t step) {
    uint64_t oks[SD_MAX_DEVICES];
    TRY(sd_comm_allgather_u64(comm, (uint64_t)SD_OK, oks)); /* every rank file is written */
    uint64_t run_ok = SD_OK;
    char why[600] = "";
    if (comm->rank == 0 && in->done_runs) {
        sd_dist_ckpt_id id = {.experiment = in->experiment_json, .devices = comm->size, .run_index = in->run_index,
                              .mode = in->mode, .seed = in->seed, .step = step};
        char rs[64]; /* as the runner words it */
        if (sig) snprintf(rs, sizeof rs, "signal %d", sig);
        else snprintf(rs, sizeof rs, "stop_at %lld", (long long)in->stop_at);
        run_ok = (uint64_t)sd_dist_ckpt_write_run(in->checkpoint_dir, &id, in->done_runs, rs);
        if (run_ok != SD_OK) snprintf(why, sizeof why, "%s", sd_last_error_brief());
    }
    TRY(sd_comm_broadcast(comm, &run_ok, sizeof run_ok, 0));
    if (run_ok != SD_OK) {
        if (comm->rank == 0) return SD_FAIL((sd_status)run_ok, "%s", why);
        return SD_FAIL((sd_status)run_ok, "rank 0 could not complete the checkpoint in %s (its message says why); the "
                       "Kafka offsets were not committed", in->checkpoint_dir);
    }
    if (d->sink.seq.any) TRY(sd_kafka_checkpointed(d->kafka, d->sink.seq.last));
    if (sd_kafka_commit_now(d->kafka, 10.0) != SD_OK)
        fprintf(stderr, "note: device %d: %s: the offsets were not committed with the checkpoint (%s); a resume drops "
                "what the brokers deliver again up to sequence number %llu as duplicates\n", comm->rank, d->src_name,
                sd_last_error_brief(), (unsigned long long)d->sink.seq.last);
    return SD_OK;
}

static sd_status device_run(const sd_dist_inputs *in, sd_comm *comm, sd_run_summary *out) {
    const sd_experiment *e = in->e;
    const int rank = comm->rank, n = comm->size;
    if (n != e->devices.count)
        return SD_FAIL(SD_ERR_INVALID, "the run has %d ranks but the experiment lists %d devices (devices.count)", n,
                       e->devices.count);
    device d;
    memset(&d, 0, sizeof d);
    FILE *metrics = NULL, *evalf = NULL, *evaldat = NULL, *bufdat = NULL;
    step_info *all = calloc((size_t)n, sizeof *all);
    preq_window *preq = calloc(1, sizeof *preq);
    float *red = calloc((size_t)n + 1, sizeof *red); /* [weighted loss, correct per device] */
    float *hlogits = NULL;
    sd_status st = SD_OK;
#define CHECK(x) do { if ((st = (x)) != SD_OK) goto done; } while (0)
    if (!all || !preq || !red) { st = SD_FAIL(SD_ERR_OOM, "step records"); goto done; }
    CHECK(device_setup(in, rank, n, &d));
    CHECK(grad_comm_create(e, comm, &d));
    {
        char tname[48];
        snprintf(tname, sizeof tname, "Device %d", rank);
        (void)sd_trace_meta(in->trace, in->trace_pid, rank, tname);
        if (rank == 0 && e->clock != SD_EXP_CLOCK_REAL)
            (void)sd_trace_meta(in->trace, in->trace_pid, n, "Evaluation (wall seconds, off the virtual clock)");
    }
    const int classes = sd_net_classes(d.net);
    hlogits = malloc((size_t)d.max_batch * classes * sizeof(float));
    if (!hlogits) { st = SD_FAIL(SD_ERR_OOM, "logits"); goto done; }
    loop_state ls = {.T = 0, .last_cut = -INFINITY, .next_eval = e->eval_every_s, .last_top1 = -1, .step = 0,
                     .out_bytes = {-1, -1, -1, -1}};
    memset(out, 0, sizeof *out);
    out->time_to_target_s = -1;
    if (in->resume_dir) { /* every device restores its state before any output is touched */
        sd_status ls_st = load_rank(in, rank, n, &d, &ls, out, preq);
        uint64_t oks[SD_MAX_DEVICES];
        CHECK(sd_comm_allgather_u64(comm, (uint64_t)ls_st, oks));
        CHECK(ls_st);
        for (int j = 0; j < n; j++)
            if (oks[j] != SD_OK) {
                st = SD_FAIL((sd_status)oks[j], "device %d could not restore its state from %s (its message says why)",
                             j, in->resume_dir);
                goto done;
            }
    }
    const int64_t step0 = ls.step;
    const double wall_before = out->wall_s; /* wall seconds of earlier invocations of this run */
    if (rank == 0) {
        CHECK(open_out(in->run_dir, OUT_NAMES[0], ls.out_bytes[0], &metrics));
        CHECK(open_out(in->run_dir, OUT_NAMES[1], ls.out_bytes[1], &evalf));
        CHECK(open_out(in->run_dir, OUT_NAMES[2], ls.out_bytes[2], &evaldat)); /* gnuplot: time top1 */
        CHECK(open_out(in->run_dir, OUT_NAMES[3], ls.out_bytes[3], &bufdat));  /* gnuplot: time total max global_batch */
    }
    const bool broker = e->stream.source != SD_SOURCE_KIND_REPLAY;
    if (broker && in->resume_dir) CHECK(broker_start(e, rank, &d));
    if (!broker && e->clock == SD_EXP_CLOCK_REAL && in->resume_dir) {
        /* resumed: the stream's time goes on from where the checkpoint paused it */
        sd_ingest_config ic = {.source = sd_replay_source(d.replay), .ring = d.ring, .expect = d.expect};
        CHECK(sd_ingest_start(&ic, &d.ingest));
    }
    const sd_dataset *tr = in->train;
    size_t img = (size_t)tr->c * tr->h * tr->w;
    sd_augment norm;
    CHECK(sd_augment_default(tr, false, &norm));
    sd_ring_batch rb = {.sample_elems = img, .norm = &norm};
    const bool ddp = in->mode == SD_EXP_MODE_DDP;
    const bool real = e->clock == SD_EXP_CLOCK_REAL;
    const size_t np = sd_net_param_count(d.net);
    double min_bw = INFINITY, max_lat = 0;
    for (int j = 0; j < n; j++) {
        if (e->devices.dev[j].profile.bandwidth_bps < min_bw) min_bw = e->devices.dev[j].profile.bandwidth_bps;
        max_lat = max_d(max_lat, e->devices.dev[j].profile.latency_s);
    }
    const double comm_time = sd_ring_allreduce_time(n, (double)np * sizeof(float), min_bw, max_lat);

    double T = ls.T, last_cut = ls.last_cut, next_eval = ls.next_eval;
    const double inv0 = sd_clock_now(), wall0 = inv0 - (real ? T : 0); /* real clock: time goes on from T */
    double last_print = -1, last_top1 = ls.last_top1;
    int64_t step = ls.step;
    out->mode = in->mode;
    out->seed = in->seed;
    out->devices = n;
    uint64_t wire0 = wire_bytes(comm, &d) - ls.wire_bytes; /* (mod 2^64: differences stay right) */
    bool stop = false, stop_requested = false;
    int stop_signal = 0;
    while (!stop) {
        /* ---- stop here with a checkpoint? Every rank decides alike: stop_at is common, and the stop
         * requests travelled in the last step's allgather ---- */
        if (in->experiment_json && (stop_requested || (in->stop_at > 0 && step >= in->stop_at && step0 < in->stop_at))) {
            if (d.ingest && broker) {
                /* a broker stream stops delivering; the source stays connected until the checkpoint
                 * is written (its offsets are committed after it); the last sequence number stored
                 * is saved with the ring, so a resume drops anything redelivered up to it */
                CHECK(sd_ingest_halt(d.ingest));
                sd_ingest_sink_seq(d.ingest, &d.sink.seq);
            } else if (d.ingest) { /* real clock: the stream pauses; what it delivered stays in the ring */
                sd_status si = sd_ingest_stop(d.ingest);
                d.ingest = NULL;
                CHECK(si);
            }
            ls.T = T;
            ls.last_cut = last_cut;
            ls.next_eval = next_eval;
            ls.last_top1 = last_top1;
            ls.step = step;
            ls.wire_bytes = wire_bytes(comm, &d) - wire0;
            if (rank == 0) {
                FILE *fs[4] = {metrics, evalf, evaldat, bufdat};
                for (int i = 0; i < 4; i++) {
                    long pos = fflush(fs[i]) == 0 ? ftell(fs[i]) : -1;
                    if (pos < 0) {
                        st = SD_FAIL(SD_ERR_IO, "checkpoint: cannot flush %s/%s: %s", in->run_dir, OUT_NAMES[i],
                                     strerror(errno));
                        goto done;
                    }
                    ls.out_bytes[i] = pos;
                }
            }
            out->wall_s = wall_before + (sd_clock_now() - inv0);
            char reason[64];
            if (stop_requested) snprintf(reason, sizeof reason, "%s", sd_signals_name(stop_signal));
            else snprintf(reason, sizeof reason, "stop_at %lld", (long long)in->stop_at);
            CHECK(save_rank(in, rank, n, &d, &ls, out, preq, reason));
            if (d.kafka) CHECK(commit_with_checkpoint(in, comm, &d, stop_requested ? stop_signal : 0, step));
            if (d.ingest) {
                sd_status si = sd_ingest_stop(d.ingest);
                d.ingest = NULL;
                CHECK(si);
            }
            out->steps = step;
            out->clock_s = T;
            out->stopped = true;
            out->stop_signal = stop_requested ? stop_signal : 0;
            break;
        }
        /* ---- cut the batch ---- */
        step_info mine;
        memset(&mine, 0, sizeof mine);
        const double w_iter = sd_clock_now() - wall0; /* real clock: this step's stream wait begins */
        double T_cut;
        size_t taken = 0;
        rb.x = d.hx;
        rb.labels = d.hy;
        if (real) {
            /* Real clock: ddp waits (up to its timeout) for exactly b; scadles sleeps to the end
             * of the window and takes what arrived. Time is the wall clock; the ranks agree on
             * the latest reading. */
            if (ddp) {
                CHECK(sd_ring_take_exactly(d.ring, (size_t)e->batch, e->ddp_timeout_s, &rb, &taken));
            } else {
                sd_clock_sleep_until(wall0 + max_d(T, last_cut + e->window_s));
                CHECK(sd_ring_take_upto(d.ring, (size_t)e->cap, &rb, &taken));
            }
            mine.t_ready = sd_clock_now() - wall0;
            mine.batch = (int32_t)taken;
            if (broker && d.ingest) {
                sd_ingest_stats is;
                sd_ingest_get_stats(d.ingest, &is);
                if (is.failed || is.ended || !is.running) mine.stop = STOP_STREAM_DEAD;
            }
            CHECK(allgather_info(comm, &mine, all));
            for (int j = 0; j < n; j++)
                if (all[j].stop == STOP_STREAM_DEAD) {
                    st = stream_dead(comm, &d, j, step);
                    goto done;
                }
            T_cut = T;
            for (int j = 0; j < n; j++) T_cut = max_d(T_cut, all[j].t_ready);
            if (ddp)
                for (int j = 0; j < n; j++)
                    if (all[j].batch < e->batch) {
                        st = SD_FAIL(SD_ERR_RUNTIME, "ddp: device %d's stream stalled: fewer than %d samples arrived "
                                     "within ddp_timeout_s %.1f; check the device's stream", j, e->batch, e->ddp_timeout_s);
                        goto done;
                    }
            if (T_cut > e->time_budget_s) break;
            last_cut = T_cut;
        } else {
            if (ddp) {
                CHECK(ready_time(&d, T, e->batch, &mine.t_ready));
                CHECK(allgather_info(comm, &mine, all));
                T_cut = T;
                int slowest = 0;
                for (int j = 0; j < n; j++)
                    if (all[j].t_ready > T_cut) { T_cut = all[j].t_ready; slowest = j; }
                if (T_cut - T > e->ddp_timeout_s) {
                    st = SD_FAIL(SD_ERR_RUNTIME, "ddp: device %d's stream stalled: its batch of %d would be ready at %.1f s, "
                                 "%.1f s after the step began (ddp_timeout_s %.1f); check the device's stream rate",
                                 slowest, e->batch, all[slowest].t_ready, all[slowest].t_ready - T, e->ddp_timeout_s);
                    goto done;
                }
            } else {
                T_cut = max_d(T, last_cut + e->window_s);
            }
            if (T_cut > e->time_budget_s) break;
            CHECK(advance_to(&d, T_cut));
            last_cut = T_cut;
            CHECK(sd_ring_take_upto(d.ring, ddp ? (size_t)e->batch : (size_t)e->cap, &rb, &taken));
        }
        const double wa0 = sd_clock_now() - wall0;
        if (real) trace_phase(in, rank, SD_TRACE_STREAM_WAIT, w_iter, wa0 - w_iter);
        else trace_phase(in, rank, SD_TRACE_STREAM_WAIT, T, T_cut - T);
        int b = (int)taken, inj = 0;
        if (d.pool && b > 0) {
            CHECK(sd_inject_draw(d.pool, rank, b, e->injection.alpha, e->injection.beta, n, &d.inject_rng, d.inj_idx,
                                 d.max_batch - b, &inj));
            sd_augment_draw none = {0};
            for (int i = 0; i < inj; i++) {
                CHECK(sd_augment_image(tr, d.inj_idx[i], &norm, &none, d.hx + (size_t)(b + i) * img));
                d.hy[b + i] = tr->labels[d.inj_idx[i]];
            }
        }
        sd_ring_end_step(d.ring);
        sd_ring_stats rs;
        sd_ring_get_stats(d.ring, &rs);
        mine.batch = b + inj;
        mine.stream_batch = b;
        mine.stop = in->stop_flag ? (int32_t)atomic_load_explicit(in->stop_flag, memory_order_relaxed) : 0;
        if (mine.stop < 0) mine.stop = 0; /* (signal numbers are positive) */
        mine.buffered = (int32_t)rs.samples;
        mine.dropped = ring_drops(&rs);
        mine.high_water = rs.hw_samples;
        mine.next_arrival = real ? 0.0 : sd_replay_next_time(d.replay); /* real: the ingest thread owns the replay */
        /* the batch goes to the device while the ranks exchange their step records (CUDA: on the
         * copy stream; hx/hy stay untouched until the upload_wait below) */
        const bool async_up = d.be.ops->upload_async && d.be.ops->upload_wait && mine.batch > 0;
        if (async_up) {
            CHECK(d.be.ops->upload_async(d.be.ctx, d.dx, d.hx, (size_t)mine.batch * img * sizeof(float)));
            CHECK(d.be.ops->upload_async(d.be.ctx, d.dy, d.hy, (size_t)mine.batch * sizeof(int32_t)));
        }
        CHECK(allgather_info(comm, &mine, all));
        int64_t B = 0, Bstream = 0;
        double compute = 0, next_any = INFINITY, step_comm = comm_time;
        for (int j = 0; j < n && !stop_requested; j++)
            if (all[j].stop) { /* the lowest rank's signal names the stop */
                stop_requested = true;
                stop_signal = all[j].stop;
            }
        for (int j = 0; j < n; j++) {
            B += all[j].batch;
            Bstream += all[j].stream_batch;
            compute = max_d(compute, sd_compute_time(&e->devices.dev[j].profile, all[j].batch));
            if (all[j].next_arrival < next_any) next_any = all[j].next_arrival;
        }
        if (B == 0) { /* nothing arrived anywhere: move to the next arrival (real clock: the next window) */
            if (real) {
                T = T_cut;
                continue;
            }
            if (!isfinite(next_any)) break;
            T = max_d(T_cut, next_any);
            continue;
        }

        /* ---- train: gradient of (1/B) x the sum of this device's losses ---- */
        float loss = 0;
        double tc0 = sd_clock_now(), wa1 = tc0, wf1 = tc0;
        if (mine.batch > 0) {
            if (async_up) {
                CHECK(d.be.ops->upload_wait(d.be.ctx));
            } else {
                CHECK(d.be.ops->upload(d.be.ctx, d.dx, d.hx, (size_t)mine.batch * img * sizeof(float)));
                CHECK(d.be.ops->upload(d.be.ctx, d.dy, d.hy, (size_t)mine.batch * sizeof(int32_t)));
            }
            wa1 = sd_clock_now();
            CHECK(sd_net_forward(d.net, d.dx, mine.batch, true));
            wf1 = sd_clock_now();
            CHECK(sd_net_loss(d.net, d.dy, 1.0f / (float)B, &loss));
            CHECK(sd_net_backward(d.net));
        } else {
            CHECK(d.be.ops->zero(d.be.ctx, sd_net_grads(d.net), np * sizeof(float)));
        }
        if (real && d.cuda) CHECK(d.be.ops->synchronize(d.be.ctx)); /* measured compute ends with the backward */
        double tc1 = sd_clock_now();
        sd_compress_step cs;
        memset(&cs, 0, sizeof cs);
        uint64_t wire_before = wire_bytes(comm, &d);
        if (d.compressor) {
            /* Top-k + error feedback, switched by the policy; the sum of what every rank sent */
            if (momentum_corrected(e) && e->optimizer.weight_decay != 0 && mine.batch > 0) {
                /* this device's share b_i / B of the weight decay joins its gradient (and the
                 * velocity): the shares sum to weight_decay x w, as the optimizer would add */
                const float wd = (float)(e->optimizer.weight_decay * (double)mine.batch / (double)B);
                CHECK(d.be.ops->axpy(d.be.ctx, np, wd, sd_net_params(d.net), sd_net_grads(d.net)));
            }
            if (e->compression.time_aware) /* compressing pays only if a dense step would overrun its window;
                                             * compute is the modelled max over devices: the same on every rank */
                sd_compressor_set_eligible(d.compressor, ddp || compute + comm_time > e->window_s);
            float *hg = NULL; /* the compressor is host code: it works on a host view of the gradient */
            CHECK(host_view(&d, sd_net_grads(d.net), np, &hg));
            CHECK(sd_compress_exchange(d.compressor, comm, hg, &cs));
            CHECK(host_view_back(&d, sd_net_grads(d.net), hg, np));
            step_comm = sd_compress_step_time(&cs, n, min_bw, max_lat);
        } else {
            CHECK(sum_over_devices(&d, comm, sd_net_grads(d.net), np));
        }
        uint64_t step_bytes = wire_bytes(comm, &d) - wire_before;
        double tc2 = sd_clock_now();
        if (real) { /* measured on this rank instead of modelled */
            compute = tc1 - tc0;
            step_comm = tc2 - tc1;
        }
        int correct = 0;
        if (mine.stream_batch > 0) {
            CHECK(d.be.ops->download(d.be.ctx, hlogits, sd_net_output(d.net),
                                     (size_t)mine.stream_batch * classes * sizeof(float)));
            correct = count_correct(hlogits, d.hy, mine.stream_batch, classes);
        }
        memset(red, 0, ((size_t)n + 1) * sizeof *red);
        red[0] = loss * (float)mine.batch / (float)B;
        red[1 + rank] = (float)correct;
        CHECK(sd_comm_allreduce_sum(comm, red, (size_t)n + 1));
        const double wc2 = sd_clock_now();
        float *wl = red;
        int slot = (int)(step % SD_PREQ_WINDOW);
        for (int j = 0; j < n; j++) {
            preq->correct[slot][j] = red[1 + j];
            preq->seen[slot][j] = (float)all[j].stream_batch;
        }
        /* lr scales with the samples that streamed in; injected copies raise the batch's
         * diversity, not the step size */
        float lr_scale = ddp ? 1.0f : (float)((double)Bstream / ((double)n * e->batch));
        /* NaN/Inf: every rank holds the same summed gradient and loss, so all decide alike */
        bool finite = isfinite(wl[0]);
        if (finite) CHECK(d.be.ops->all_finite(d.be.ctx, np, sd_net_grads(d.net), &finite)); /* where the sum lives */
        if (!finite && e->nonfinite == SD_EXP_NONFINITE_STOP) {
            st = SD_FAIL(SD_ERR_NUMERIC, "step %lld: the loss (%g) or the summed gradient is not finite; lower "
                         "optimizer.lr (%g) or set nonfinite to \"skip\"", (long long)step + 1, (double)wl[0],
                         e->optimizer.lr);
            goto done;
        }
        if (finite) CHECK(sd_optim_step(&d.opt, d.net, lr_scale));
        else out->skipped_steps++;
        const double wo1 = sd_clock_now();
        step++;
        double T_end = real ? sd_clock_now() - wall0 : T_cut + compute + step_comm;
        if (real) { /* measured: agree on the latest clock reading */
            double tt[1] = {T_end};
            CHECK(sd_comm_broadcast(comm, tt, sizeof tt, 0));
            T_end = tt[0];
        }
        double wait = T_cut - T;
        if (in->trace) {
            if (real) { /* measured on this device, seconds since the run began */
                trace_phase(in, rank, SD_TRACE_BATCH_ASSEMBLY, wa0, wa1 - wall0 - wa0);
                trace_phase(in, rank, SD_TRACE_FORWARD, wa1 - wall0, wf1 - wa1);
                trace_phase(in, rank, SD_TRACE_BACKWARD, wf1 - wall0, tc1 - wf1);
                trace_phase(in, rank, SD_TRACE_COMMUNICATION, tc1 - wall0, wc2 - tc1);
                trace_phase(in, rank, SD_TRACE_OPTIMIZER, wc2 - wall0, wo1 - wc2);
            } else { /* this device's modelled compute, split by the measured shares of its phases */
                double w_asm = wa1 - (wa0 + wall0), w_fwd = wf1 - wa1, w_bwd = tc1 - wf1, w_opt = wo1 - wc2;
                double w_all = w_asm + w_fwd + w_bwd + w_opt;
                double c = sd_compute_time(&e->devices.dev[rank].profile, mine.batch);
                double k = w_all > 0 ? c / w_all : 0, opt = w_opt * k, t0 = T_cut;
                if (w_all <= 0) { w_asm = 1; k = c; } /* nothing measured: all of it is assembly */
                trace_phase(in, rank, SD_TRACE_BATCH_ASSEMBLY, t0, w_asm * k);
                t0 += w_asm * k;
                trace_phase(in, rank, SD_TRACE_FORWARD, t0, w_fwd * k);
                t0 += w_fwd * k;
                trace_phase(in, rank, SD_TRACE_BACKWARD, t0, w_bwd * k);
                trace_phase(in, rank, SD_TRACE_COMMUNICATION, T_cut + compute - opt, step_comm);
                trace_phase(in, rank, SD_TRACE_OPTIMIZER, T_end - opt, opt);
            }
            if (rank == 0) { /* counters belong to the run; rank 0 holds every device's record */
                int64_t tot = 0;
                char cn[48];
                (void)sd_trace_counter(in->trace, in->trace_pid, "global batch", T_cut, "samples", (double)B);
                for (int j = 0; j < n; j++) {
                    tot += all[j].buffered;
                    snprintf(cn, sizeof cn, "batch device %d", j);
                    (void)sd_trace_counter(in->trace, in->trace_pid, cn, T_cut, "samples", all[j].batch);
                    snprintf(cn, sizeof cn, "buffer device %d", j);
                    (void)sd_trace_counter(in->trace, in->trace_pid, cn, T_end, "samples", all[j].buffered);
                }
                (void)sd_trace_counter(in->trace, in->trace_pid, "buffer total", T_end, "samples", (double)tot);
                (void)sd_trace_counter(in->trace, in->trace_pid, "bytes sent (device 0)", T_end, "bytes",
                                       (double)(wire_bytes(comm, &d) - wire0));
                (void)sd_trace_counter(in->trace, in->trace_pid, "compression", T_cut, "on", cs.compressed ? 1 : 0);
            }
        }
        T = T_end;
        uint64_t dropped = 0, peak = 0;
        for (int j = 0; j < n; j++) {
            dropped += all[j].dropped;
            if (all[j].high_water > peak) peak = all[j].high_water;
        }
        out->samples_trained += (uint64_t)Bstream;
        out->samples_injected += (uint64_t)(B - Bstream);
        out->samples_dropped = dropped;
        out->peak_buffer = peak;
        if (metrics) {
            char lossbuf[32];
            json_num(lossbuf, sizeof lossbuf, wl[0]);
            fprintf(metrics, "{\"step\": %lld, \"time\": %.6f, \"wait\": %.6f, \"compute\": %.6f, \"comm\": %.6f, "
                             "\"global_batch\": %lld, \"loss\": %s, \"lr\": %.6g, \"dropped\": %llu, "
                             "\"bytes\": %llu, \"step_bytes\": %llu, \"compression\": %s, \"ratio\": %.6g, "
                             "\"votes\": %d, \"rel_loss\": %.6g, \"mean_loss\": %.6g, \"gain\": %.6g, \"batches\": [",
                    (long long)step, T, wait, compute, step_comm, (long long)B, lossbuf, (double)d.opt.last_lr,
                    (unsigned long long)dropped, (unsigned long long)(wire_bytes(comm, &d) - wire0),
                    (unsigned long long)step_bytes, cs.compressed ? "true" : "false", cs.ratio, cs.votes, cs.rel_loss, cs.mean_loss, cs.gain);
            for (int j = 0; j < n; j++) fprintf(metrics, "%s%d", j ? ", " : "", all[j].batch);
            fprintf(metrics, "], \"buffer\": [");
            for (int j = 0; j < n; j++) fprintf(metrics, "%s%d", j ? ", " : "", all[j].buffered);
            fprintf(metrics, "]}\n");
            int64_t tot = 0, mx = 0;
            for (int j = 0; j < n; j++) {
                tot += all[j].buffered;
                if (all[j].buffered > mx) mx = all[j].buffered;
            }
            fprintf(bufdat, "%.6f %lld %lld %lld\n", T, (long long)tot, (long long)mx, (long long)B);
            fflush(metrics); /* a line per step, visible as it happens (tail -f) */
        }

        /* ---- evaluate ---- */
        bool last = (e->max_steps > 0 && step >= e->max_steps) || T >= e->time_budget_s;
        if (T >= next_eval || last) {
            const double we0 = sd_clock_now();
            while (next_eval <= T) next_eval += e->eval_every_s;
            if (e->bn == SD_EXP_BN_AVERAGE && sd_net_buffer_count(d.net) > 0) {
                size_t nb = sd_net_buffer_count(d.net);
                CHECK(sum_over_devices(&d, comm, sd_net_buffers(d.net), nb));
                CHECK(d.be.ops->scale(d.be.ctx, nb, 1.0f / (float)n, sd_net_buffers(d.net)));
            }
            double acc[2] = {0, 0};
            if (rank == 0) {
                sd_eval_result r;
                sd_augment ta;
                CHECK(sd_augment_default(in->test, false, &ta));
                CHECK(sd_evaluate(d.net, in->test, &ta, 500, &r));
                acc[0] = r.top1;
                acc[1] = r.loss;
                double pc = 0, ps = 0;
                char tl[32];
                json_num(tl, sizeof tl, r.loss);
                fprintf(evalf, "{\"step\": %lld, \"time\": %.6f, \"top1\": %.6f, \"top5\": %.6f, \"test_loss\": %s, "
                               "\"samples_trained\": %llu, \"prequential_dev\": [",
                        (long long)step, T, r.top1, r.top5, tl, (unsigned long long)out->samples_trained);
                for (int j = 0; j < n; j++) {
                    double c = 0, sn = 0;
                    for (int w = 0; w < SD_PREQ_WINDOW; w++) {
                        c += preq->correct[w][j];
                        sn += preq->seen[w][j];
                    }
                    pc += c;
                    ps += sn;
                    fprintf(evalf, "%s%.6f", j ? ", " : "", sn > 0 ? c / sn : 0.0);
                }
                fprintf(evalf, "], \"prequential\": %.6f, \"prequential_window_steps\": %d}\n", ps > 0 ? pc / ps : 0.0,
                        SD_PREQ_WINDOW);
                fprintf(evaldat, "%.6f %.6f\n", T, r.top1);
                fflush(evalf);
                fflush(evaldat);
                fflush(metrics);
                last_top1 = r.top1;
            }
            CHECK(sd_comm_broadcast(comm, acc, sizeof acc, 0));
            const double we1 = sd_clock_now();
            if (real) {
                trace_phase(in, rank, SD_TRACE_EVALUATION, we0 - wall0, we1 - we0);
            } else if (rank == 0) { /* the virtual clock does not charge evaluation: its own track, wall seconds */
                sd_trace_arg ea[2] = {{"top1", acc[0]}, {"wall_s", we1 - we0}};
                (void)sd_trace_complete_args(in->trace, in->trace_pid, n, sd_trace_phase_name(SD_TRACE_EVALUATION), "eval",
                                             T, we1 - we0, ea, 2);
            }
            out->final_accuracy = acc[0];
            if (acc[0] > out->best_accuracy) out->best_accuracy = acc[0];
            if (acc[0] >= e->target_accuracy && out->time_to_target_s < 0) {
                out->time_to_target_s = T;
                stop = true; /* the comparison is time to target: stop there */
            }
        }
        if (last) stop = true;
        /* the live progress line (rank 0, on a terminal): elapsed and clock time, step, global
         * batch, loss, accuracy, samples/s, buffers, drops, ETA to the time budget */
        double wall = sd_clock_now() - wall0;
        if (rank == 0 && !in->quiet && (wall - last_print >= 0.5 || stop)) {
            uint64_t buffered = 0;
            for (int j = 0; j < n; j++) buffered += (uint64_t)all[j].buffered;
            double eta = T > 0 ? (e->time_budget_s - T) * wall / T : 0;
            if (e->max_steps > 0 && step > 0) {
                double eta_steps = (double)(e->max_steps - step) * wall / (double)step;
                if (eta_steps < eta) eta = eta_steps;
            }
            char acc[24];
            if (last_top1 >= 0) snprintf(acc, sizeof acc, "%.2f%%", 100 * last_top1);
            else snprintf(acc, sizeof acc, "-");
            fprintf(stderr, "\r  %s seed %llu | %5.1fs wall, clock %7.1fs | step %lld | batch %lld | loss %.4f | top-1 %s | "
                            "%.0f samples/s | buffered %llu | dropped %llu | ETA %.0fs   ",
                    ddp ? "ddp" : "scadles", (unsigned long long)in->seed, wall, T, (long long)step, (long long)B,
                    (double)wl[0], acc, (double)out->samples_trained / (wall > 0 ? wall : 1), (unsigned long long)buffered,
                    (unsigned long long)out->samples_dropped, eta > 0 ? eta : 0);
            last_print = wall;
        }
    }
    if (out->stopped) goto done; /* the checkpoint holds the rest; the run's totals come when it finishes */
    /* BN statistics: the same on every device iff the last evaluation averaged them (bn average) */
    {
        uint64_t h = 1469598103934665603ull, hs[SD_MAX_DEVICES];
        float *hb = NULL;
        if (sd_net_buffer_count(d.net) > 0) CHECK(host_view(&d, sd_net_buffers(d.net), sd_net_buffer_count(d.net), &hb));
        const unsigned char *b = (const unsigned char *)hb;
        for (size_t i = 0; b && i < sd_net_buffer_count(d.net) * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
        CHECK(sd_comm_allgather_u64(comm, h, hs));
        out->bn_identical = true;
        for (int j = 0; j < n; j++) out->bn_identical &= hs[j] == hs[0];
    }
    /* totals across devices */
    uint64_t mine_bytes = wire_bytes(comm, &d) - wire0, all_bytes[SD_MAX_DEVICES];
    CHECK(sd_comm_allgather_u64(comm, mine_bytes, all_bytes));
    for (int j = 0; j < n; j++) out->bytes_sent += all_bytes[j];
    if (d.pool)
        for (int j = 0; j < n && j < 64; j++) {
            sd_inject_stats s;
            if (sd_inject_pool_stats(d.pool, j, &s) == SD_OK) out->shared[j] = s.shared;
        }
    out->steps = step;
    out->clock_s = T;
    out->wall_s = wall_before + (sd_clock_now() - inv0);
    if (rank == 0 && !in->quiet) fprintf(stderr, "\n");
    if (rank == 0) { /* the final weights, loadable by PyTorch (docs/checkpoints.md) */
        char path[1100], num[32];
        snprintf(path, sizeof path, "%s/model.safetensors", in->run_dir);
        snprintf(num, sizeof num, "%lld", (long long)step);
        sd_ckpt_kv kv[] = {{"model", e->model}, {"dataset", e->dataset}, {"mode", ddp ? "ddp" : "scadles"}, {"step", num}};
        CHECK(sd_checkpoint_save(d.net, path, &(sd_ckpt_meta){kv, 4}));
    }
#undef CHECK
done:
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    if (metrics) fclose(metrics);
    if (evalf) fclose(evalf);
    if (evaldat) fclose(evaldat);
    if (bufdat) fclose(bufdat);
    free(all);
    free(preq);
    free(red);
    free(hlogits);
    device_free(&d);
    return st;
}

/* With link_emulation (real clock), this device's collectives run through a token-bucket link of
 * its own bandwidth and latency (comm/shaper.h); otherwise on comm as given. */
sd_status sd_dist_device_run(const sd_dist_inputs *in, sd_comm *comm, sd_run_summary *out) {
    const sd_experiment *e = in->e;
    if (e->link_emulation == SD_EXP_LINK_OFF) return device_run(in, comm, out);
    if (e->clock != SD_EXP_CLOCK_REAL)
        return SD_FAIL(SD_ERR_INVALID, "link_emulation token_bucket needs clock \"real\"; set link_emulation to off");
    if (comm->rank < 0 || comm->rank >= e->devices.count)
        return SD_FAIL(SD_ERR_INVALID, "rank %d outside the experiment's %d devices", comm->rank, e->devices.count);
    const sd_device_profile *p = &e->devices.dev[comm->rank].profile;
    sd_shaper_config sc = {.bandwidth_bps = p->bandwidth_bps, .latency_s = p->latency_s,
                           .burst_bytes = e->link_burst_bytes};
    sd_comm *shaped = NULL;
    TRY(sd_comm_shaped_create(comm, &sc, &shaped));
    sd_status st = device_run(in, shaped, out);
    sd_comm_destroy(shaped);
    return st;
}
