/* train.c: the single-device training loop, evaluation, metrics files and training-state
 * checkpoints. Randomness is a function of (seed, epoch) for the sample order and (seed, step)
 * for augmentation, so a run resumed from a checkpoint continues exactly as it would have. */
#include "engine/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/clock.h"
#include "base/rng.h"
#include "engine/checkpoint.h"
#include "engine/models.h"
#include "engine/safetensors.h"
#ifdef SCADLES_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h" /* sd_cuda_host_alloc: pinned staging buffers */
#endif

void sd_train_config_defaults(sd_train_config *c) {
    memset(c, 0, sizeof *c);
    c->model = "fmnist_cnn";
    c->width = 1.0f;
    c->dataset = "fashion-mnist";
    c->epochs = 5;
    c->batch = 64;
    c->eval_batch = 500;
    c->lr = 0.02f;          /* with cosine decay: the Fashion-MNIST CNN's 91% in 5 epochs (docs/training.md) */
    c->schedule = "cosine";
    c->optim = (sd_optim_config){.momentum = 0.9f, .dampening = 0.0f, .weight_decay = 5e-4f, .nesterov = false};
    c->augment = true;
    c->seed = 1;
    c->threads = 0;
    c->out_dir = "runs/train";
    c->progress = true;
    c->backend = "cpu";
    c->device = 0;
}

/* ---- evaluation -------------------------------------------------------------------------- */

sd_status sd_evaluate(sd_net *net, const sd_dataset *d, const sd_augment *aug, int batch, sd_eval_result *out) {
    if (!net || !d || !aug || !out || batch <= 0) return SD_FAIL(SD_ERR_INVALID, "evaluate: bad arguments");
    memset(out, 0, sizeof *out);
    sd_backend *be = sd_net_backend(net);
    int classes = sd_net_classes(net);
    if (d->classes > classes)
        return SD_FAIL(SD_ERR_SHAPE, "evaluate: dataset %s has %d classes but the model outputs %d", d->name, d->classes, classes);
    size_t img = (size_t)d->c * d->h * d->w;
    float *hx = malloc((size_t)batch * img * sizeof(float));
    int32_t *hy = malloc((size_t)batch * sizeof(int32_t));
    float *hlogits = malloc((size_t)batch * classes * sizeof(float));
    int64_t *idx = malloc((size_t)batch * sizeof(int64_t));
    float *dx = NULL;
    int32_t *dy = NULL;
    sd_status st = SD_OK;
    if (!hx || !hy || !hlogits || !idx) { st = SD_FAIL(SD_ERR_OOM, "evaluate: host buffers"); goto done; }
    if ((st = be->ops->alloc(be->ctx, (size_t)batch * img * sizeof(float), (void **)&dx)) != SD_OK) goto done;
    if ((st = be->ops->alloc(be->ctx, (size_t)batch * sizeof(int32_t), (void **)&dy)) != SD_OK) goto done;
    double loss_sum = 0;
    int64_t c1 = 0, c5 = 0;
    for (int64_t start = 0; start < d->n; start += batch) {
        int n = (int)((d->n - start) < batch ? (d->n - start) : batch);
        for (int i = 0; i < n; i++) idx[i] = start + i;
        sd_augment_draw none = {0};
        for (int i = 0; i < n; i++) {
            if ((st = sd_augment_image(d, idx[i], aug, &none, hx + (size_t)i * img)) != SD_OK) goto done;
            hy[i] = d->labels[idx[i]];
        }
        float loss = 0;
        if ((st = be->ops->upload(be->ctx, dx, hx, (size_t)n * img * sizeof(float))) != SD_OK ||
            (st = be->ops->upload(be->ctx, dy, hy, (size_t)n * sizeof(int32_t))) != SD_OK ||
            (st = sd_net_forward(net, dx, n, false)) != SD_OK ||
            (st = sd_net_loss(net, dy, 0.0f, &loss)) != SD_OK ||
            (st = be->ops->download(be->ctx, hlogits, sd_net_output(net), (size_t)n * classes * sizeof(float))) != SD_OK)
            goto done;
        loss_sum += (double)loss * n;
        for (int i = 0; i < n; i++) {
            const float *l = hlogits + (size_t)i * classes;
            float target = l[hy[i]];
            int above = 0; /* classes scoring strictly higher than the label (ties favour the label) */
            for (int j = 0; j < classes; j++) above += l[j] > target;
            c1 += above == 0;
            c5 += above < 5;
        }
    }
    out->samples = d->n;
    out->loss = loss_sum / (double)d->n;
    out->top1 = (double)c1 / (double)d->n;
    out->top5 = (double)c5 / (double)d->n;
done:
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    if (dx) be->ops->free(be->ctx, dx);
    if (dy) be->ops->free(be->ctx, dy);
    free(hx); free(hy); free(hlogits); free(idx);
    return st;
}

/* ---- run directory ----------------------------------------------------------------------- */

static sd_status make_dirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return SD_FAIL(SD_ERR_INVALID, "output directory path is longer than %zu characters", sizeof buf - 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return SD_FAIL(SD_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return SD_FAIL(SD_ERR_IO, "cannot create output directory %s: %s", buf, strerror(errno));
    return SD_OK;
}

static FILE *open_in(const char *dir, const char *name, const char *mode, sd_status *st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) *st = SD_FAIL(SD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    return f;
}

static sd_status write_config(const sd_train_config *c, const char *dir) {
    sd_status st = SD_OK;
    FILE *f = open_in(dir, "config.json", "w", &st);
    if (!f) return st;
    fprintf(f,
            "{\"model\": \"%s\", \"width\": %g, \"dataset\": \"%s\", \"data_root\": \"%s\", \"epochs\": %d, "
            "\"steps\": %lld, \"batch\": %d, \"eval_batch\": %d, \"lr\": %g, \"schedule\": \"%s\", "
            "\"warmup_steps\": %lld, \"momentum\": %g, \"dampening\": %g, \"weight_decay\": %g, \"nesterov\": %s, "
            "\"augment\": %s, \"train_limit\": %lld, \"eval_limit\": %lld, \"eval_every\": %lld, "
            "\"checkpoint_every\": %lld, \"stop_at\": %lld, \"seed\": %llu, \"threads\": %d}\n",
            c->model, (double)c->width, c->dataset, c->data_root ? c->data_root : "", c->epochs, (long long)c->steps,
            c->batch, c->eval_batch, (double)c->lr, c->schedule, (long long)c->warmup_steps, (double)c->optim.momentum,
            (double)c->optim.dampening, (double)c->optim.weight_decay, c->optim.nesterov ? "true" : "false",
            c->augment ? "true" : "false", (long long)c->train_limit, (long long)c->eval_limit,
            (long long)c->eval_every, (long long)c->checkpoint_every, (long long)c->stop_at, (unsigned long long)c->seed,
            c->threads);
    if (fclose(f) != 0) return SD_FAIL(SD_ERR_IO, "writing %s/config.json failed", dir);
    return SD_OK;
}

/* Training state beside the weights: the momentum buffer and the step, for exact resume. */
static sd_status save_state(sd_net *net, const sd_optimizer *o, const sd_train_config *c, int64_t step) {
    char path[4096], num[32];
    snprintf(path, sizeof path, "%s/model.safetensors", c->out_dir);
    snprintf(num, sizeof num, "%lld", (long long)step);
    sd_ckpt_kv kv[] = {{"model", c->model}, {"dataset", c->dataset}, {"step", num}};
    sd_ckpt_meta meta = {kv, 3};
    TRY(sd_checkpoint_save(net, path, &meta));
    sd_st_writer *w = NULL;
    TRY(sd_st_writer_create(&w));
    void *buf = NULL;
    int64_t shape[1] = {(int64_t)o->count};
    sd_status st = sd_st_writer_add_buffer(w, "optimizer.momentum", SD_ST_F32, 1, shape, &buf);
    if (st == SD_OK) st = o->be->ops->download(o->be->ctx, buf, o->momentum_buf, o->count * sizeof(float));
    if (st == SD_OK) st = sd_st_writer_add_metadata(w, "step", num);
    if (st == SD_OK) st = sd_st_writer_add_metadata(w, "model", c->model);
    snprintf(path, sizeof path, "%s/train_state.safetensors", c->out_dir);
    if (st == SD_OK) st = sd_st_writer_write(w, path);
    sd_st_writer_destroy(w);
    TRY(st);
    return SD_OK;
}

static sd_status load_state(sd_net *net, sd_optimizer *o, const sd_train_config *c, int64_t *step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", c->resume);
    TRY(sd_checkpoint_load(net, path, true));
    snprintf(path, sizeof path, "%s/train_state.safetensors", c->resume);
    sd_st_file *f = NULL;
    TRY(sd_st_open(path, &f));
    sd_status st = SD_OK;
    const sd_st_tensor *m = sd_st_find(f, "optimizer.momentum");
    const char *s = sd_st_metadata(f, "step"), *model = sd_st_metadata(f, "model");
    char *end = NULL;
    long long v = s ? strtoll(s, &end, 10) : -1;
    if (!m || m->dtype != SD_ST_F32 || m->numel != o->count)
        st = SD_FAIL(SD_ERR_FORMAT, "%s: 'optimizer.momentum' missing or not %zu float32 values", path, o->count);
    else if (!s || *end || v < 0)
        st = SD_FAIL(SD_ERR_FORMAT, "%s: metadata 'step' missing or not a step number", path);
    else if (!model || strcmp(model, c->model))
        st = SD_FAIL(SD_ERR_INVALID, "%s was written for model '%s', not '%s'", path, model ? model : "?", c->model);
    else
        st = o->be->ops->upload(o->be->ctx, o->momentum_buf, m->data, o->count * sizeof(float));
    sd_st_close(f);
    TRY(st);
    *step = v;
    o->step = v;
    return SD_OK;
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void fmt_eta(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

/* Keeps only the first `limit` samples of d (limit <= 0 or >= d->n: all). */
static sd_status keep_first(sd_dataset *d, int64_t limit) {
    if (limit <= 0 || limit >= d->n) return SD_OK;
    int64_t *ix = malloc((size_t)limit * sizeof(int64_t));
    if (!ix) return SD_FAIL(SD_ERR_OOM, "train: index of %lld samples", (long long)limit);
    for (int64_t i = 0; i < limit; i++) ix[i] = i;
    sd_dataset sub = {0};
    sd_status st = sd_dataset_subset(d, ix, limit, &sub);
    free(ix);
    TRY(st);
    sd_dataset_free(d);
    *d = sub;
    return SD_OK;
}

static uint64_t mix(uint64_t a, uint64_t b) {
    sd_rng r;
    sd_rng_seed(&r, a ^ (b * 0x9E3779B97F4A7C15ull));
    return sd_rng_u64(&r);
}

/* ---- input batches ------------------------------------------------------------------------ */

/* Host staging memory: pinned (cudaMallocHost, with its logged pageable fallback) for the CUDA
 * backend, so uploads are DMA from it; plain malloc otherwise. */
static sd_status host_alloc(bool pin, size_t bytes, void **p, bool *pinned) {
    *pinned = false;
#ifdef SCADLES_HAVE_CUDA
    if (pin) return sd_cuda_host_alloc(bytes, p, pinned);
#else
    (void)pin;
#endif
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return SD_FAIL(SD_ERR_OOM, "train: host staging buffer of %zu bytes", bytes);
    return SD_OK;
}

static void host_free(void *p, bool pinned) {
#ifdef SCADLES_HAVE_CUDA
    if (pinned) {
        sd_cuda_host_free(p, true);
        return;
    }
#endif
    (void)pinned;
    free(p);
}

/* What assembling a batch needs; the sample order of `epoch_loaded` lives in order. */
typedef struct batch_maker {
    const sd_train_config *c;
    const sd_dataset *train;
    const sd_augment *aug;
    int64_t per_epoch;
    int64_t *order;
    int64_t epoch_loaded;
} batch_maker;

/* Step `step`'s batch into hx/hy: the epoch's order (reshuffled when the epoch changes, from
 * (seed, epoch)) and the step's augmentation (from (seed, step)). */
static sd_status make_batch(batch_maker *m, int64_t step, float *hx, int32_t *hy) {
    const sd_train_config *c = m->c;
    int64_t epoch = step / m->per_epoch, pos = step % m->per_epoch;
    if (epoch != m->epoch_loaded) {
        for (int64_t i = 0; i < m->train->n; i++) m->order[i] = i;
        sd_rng er;
        sd_rng_seed(&er, mix(c->seed, 0x0e90c4 + (uint64_t)epoch));
        TRY(sd_shuffle(m->order, m->train->n, &er));
        m->epoch_loaded = epoch;
    }
    sd_rng ar;
    sd_rng_seed(&ar, mix(c->seed ^ 0xa5a5, (uint64_t)step));
    TRY(sd_augment_batch(m->train, m->order + pos * c->batch, c->batch, m->aug, &ar, hx, hy));
    return SD_OK;
}

/* Assembles step's batch into staging slot `slot` and starts its upload into device slot `slot`. */
static sd_status prefetch(sd_backend *be, batch_maker *m, int64_t step, int slot, float **hx, int32_t **hy,
                          float **dx, int32_t **dy, size_t img) {
    const int b = m->c->batch;
    TRY(make_batch(m, step, hx[slot], hy[slot]));
    TRY(be->ops->upload_async(be->ctx, dx[slot], hx[slot], (size_t)b * img * sizeof(float)));
    TRY(be->ops->upload_async(be->ctx, dy[slot], hy[slot], (size_t)b * sizeof(int32_t)));
    return SD_OK;
}

sd_status sd_train_run(const sd_train_config *c, sd_eval_result *final_eval) {
    if (!c || !c->out_dir) return SD_FAIL(SD_ERR_INVALID, "train: no configuration or output directory");
    if (c->batch <= 0 || c->eval_batch <= 0 || (c->steps <= 0 && c->epochs <= 0))
        return SD_FAIL(SD_ERR_INVALID, "train: batch %d, eval batch %d and epochs %d / steps %lld must be positive",
                       c->batch, c->eval_batch, c->epochs, (long long)c->steps);
    sd_status st = SD_OK;
    sd_dataset train = {0}, test = {0};
    sd_backend be = {0};
    sd_net *net = NULL;
    sd_optimizer opt = {0};
    FILE *metrics = NULL, *evalf = NULL;
    float *hx[2] = {NULL, NULL}, *dx[2] = {NULL, NULL};
    int32_t *hy[2] = {NULL, NULL}, *dy[2] = {NULL, NULL};
    bool hx_pinned[2] = {false, false}, hy_pinned[2] = {false, false};
    int64_t *order = NULL;

#define CHECK(expr) do { if ((st = (expr)) != SD_OK) goto done; } while (0)
    CHECK(sd_dataset_open(c->dataset, c->data_root, true, &train));
    CHECK(sd_dataset_open(c->dataset, c->data_root, false, &test));
    CHECK(keep_first(&train, c->train_limit));
    CHECK(keep_first(&test, c->eval_limit));
    const bool cuda = c->backend && !strcmp(c->backend, "cuda");
    if (c->backend && !cuda && strcmp(c->backend, "cpu")) {
        st = SD_FAIL(SD_ERR_INVALID, "train: backend '%s' is unknown; use \"cpu\" or \"cuda\"", c->backend);
        goto done;
    }
    if (cuda) CHECK(sd_backend_cuda_create(&be, c->device));
    else CHECK(sd_backend_cpu_create(&be, c->threads));
    sd_model_spec spec = {.name = c->model, .in_c = train.c, .in_h = train.h, .in_w = train.w,
                          .classes = train.classes, .width = c->width};
    CHECK(sd_model_build(&be, &spec, c->seed, &net));
    int64_t per_epoch = train.n / c->batch; /* drop the last partial batch, as DataLoader(drop_last=True) */
    if (per_epoch <= 0) { st = SD_FAIL(SD_ERR_INVALID, "train: %lld training samples are fewer than one batch of %d", (long long)train.n, c->batch); goto done; }
    int64_t total = c->steps > 0 ? c->steps : per_epoch * c->epochs;
    sd_lr_schedule sched;
    CHECK(sd_lr_schedule_parse(c->schedule, c->lr, total, &sched));
    sched.warmup_steps = c->warmup_steps;
    CHECK(sd_optim_init(&opt, net, &c->optim, &sched));
    CHECK(make_dirs(c->out_dir));
    CHECK(write_config(c, c->out_dir));
    int64_t step = 0;
    if (c->resume) CHECK(load_state(net, &opt, c, &step));
    const char *mode = step > 0 ? "a" : "w";
    if (!(metrics = open_in(c->out_dir, "metrics.jsonl", mode, &st))) goto done;
    if (!(evalf = open_in(c->out_dir, "eval.jsonl", mode, &st))) goto done;

    sd_augment aug_train, aug_test;
    CHECK(sd_augment_default(&train, c->augment, &aug_train));
    CHECK(sd_augment_default(&test, false, &aug_test));
    size_t img = (size_t)train.c * train.h * train.w;
    /* Two staging and two device slots when the backend uploads asynchronously (batch s + 1 goes up
     * while step s computes), one otherwise. */
    const bool async = be.ops->upload_async && be.ops->upload_wait;
    const int slots = async ? 2 : 1;
    order = malloc((size_t)train.n * sizeof(int64_t));
    if (!order) { st = SD_FAIL(SD_ERR_OOM, "train: host buffers"); goto done; }
    for (int sl = 0; sl < slots; sl++) {
        CHECK(host_alloc(cuda, (size_t)c->batch * img * sizeof(float), (void **)&hx[sl], &hx_pinned[sl]));
        CHECK(host_alloc(cuda, (size_t)c->batch * sizeof(int32_t), (void **)&hy[sl], &hy_pinned[sl]));
        CHECK(be.ops->alloc(be.ctx, (size_t)c->batch * img * sizeof(float), (void **)&dx[sl]));
        CHECK(be.ops->alloc(be.ctx, (size_t)c->batch * sizeof(int32_t), (void **)&dy[sl]));
    }
    batch_maker bm = {.c = c, .train = &train, .aug = &aug_train, .per_epoch = per_epoch, .order = order,
                      .epoch_loaded = -1};

    printf("train: %s (%zu parameters) on %s: %lld train / %lld test samples, batch %d, %lld steps (%lld per epoch), "
           "lr %g %s, threads %d (0 = all cores)\n", c->model, sd_net_param_count(net), train.name, (long long)train.n, (long long)test.n,
           c->batch, (long long)total, (long long)per_epoch, (double)c->lr, c->schedule, c->threads);
    double t0 = sd_clock_now(), last_print = 0, epoch_t0 = t0, loss_acc = 0;
    int64_t loss_n = 0;
    int64_t last = c->stop_at > 0 && c->stop_at < total ? c->stop_at : total;
    if (async && step < last) CHECK(prefetch(&be, &bm, step, (int)(step & 1), hx, hy, dx, dy, img));
    while (step < last) {
        int64_t epoch = step / per_epoch;
        const int cur = async ? (int)(step & 1) : 0;
        if (async) {
            CHECK(be.ops->upload_wait(be.ctx)); /* this step's batch is on the device */
        } else {
            CHECK(make_batch(&bm, step, hx[0], hy[0]));
            CHECK(be.ops->upload(be.ctx, dx[0], hx[0], (size_t)c->batch * img * sizeof(float)));
            CHECK(be.ops->upload(be.ctx, dy[0], hy[0], (size_t)c->batch * sizeof(int32_t)));
        }
        float loss = 0;
        CHECK(sd_net_forward(net, dx[cur], c->batch, true));
        /* the next batch: assembled on the host while the device runs this step's forward, then
         * copied (copy stream) into the other slot while the step goes on */
        if (async && step + 1 < last) CHECK(prefetch(&be, &bm, step + 1, cur ^ 1, hx, hy, dx, dy, img));
        CHECK(sd_net_loss(net, dy[cur], 1.0f / (float)c->batch, &loss));
        if (!isfinite(loss)) { st = SD_FAIL(SD_ERR_NUMERIC, "train: loss is %g at step %lld; lower the learning rate", (double)loss, (long long)step); goto done; }
        CHECK(sd_net_backward(net));
        CHECK(sd_optim_step(&opt, net, 1.0f));
        step++;
        loss_acc += loss;
        loss_n++;
        double t = sd_clock_now() - t0;
        fprintf(metrics, "{\"step\": %lld, \"epoch\": %lld, \"time\": %.4f, \"loss\": %.6f, \"lr\": %.6g, \"batch\": %d}\n",
                (long long)step, (long long)epoch, t, (double)loss, (double)opt.last_lr, c->batch);
        if (c->progress && (t - last_print > 0.5 || step == total)) {
            double rate = (double)loss_n * c->batch / (sd_clock_now() - epoch_t0 + 1e-9);
            char eta[32];
            fmt_eta((double)(total - step) * c->batch / rate, eta, sizeof eta);
            fprintf(stderr, "\r  epoch %lld  step %lld/%lld  loss %.4f  %.0f samples/s  ETA %s   ", (long long)epoch + 1,
                    (long long)step, (long long)total, loss_acc / (double)loss_n, rate, eta);
            last_print = t;
        }
        bool epoch_end = step % per_epoch == 0;
        bool do_eval = (c->eval_every > 0 ? step % c->eval_every == 0 : epoch_end) || step == last;
        if (do_eval) {
            fflush(metrics);
            sd_eval_result r;
            double te = sd_clock_now();
            CHECK(sd_evaluate(net, &test, &aug_test, c->eval_batch, &r));
            double epoch_time = te - epoch_t0;
            if (c->progress) fprintf(stderr, "\n");
            printf("epoch %6.2f  step %lld  train loss %.4f  test loss %.4f  top-1 %.2f%%  top-5 %.2f%%  "
                   "train time %.1f s (%.0f samples/s)  eval %.1f s\n",
                   (double)step / (double)per_epoch, (long long)step, loss_acc / (double)(loss_n ? loss_n : 1), r.loss,
                   100 * r.top1, 100 * r.top5, epoch_time, (double)loss_n * c->batch / epoch_time, sd_clock_now() - te);
            fflush(stdout);
            fprintf(evalf, "{\"step\": %lld, \"epoch\": %.4f, \"time\": %.4f, \"train_loss\": %.6f, \"test_loss\": %.6f, "
                           "\"top1\": %.6f, \"top5\": %.6f, \"samples\": %lld}\n",
                    (long long)step, (double)step / (double)per_epoch, sd_clock_now() - t0,
                    loss_acc / (double)(loss_n ? loss_n : 1), r.loss, r.top1, r.top5, (long long)r.samples);
            fflush(evalf);
            if (final_eval) *final_eval = r;
            loss_acc = 0;
            loss_n = 0;
            epoch_t0 = sd_clock_now();
        }
        if ((c->checkpoint_every > 0 && step % c->checkpoint_every == 0) || step == last)
            CHECK(save_state(net, &opt, c, step));
    }
#undef CHECK
done:
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    if (metrics) fclose(metrics);
    if (evalf) fclose(evalf);
    if (be.ops && be.ops->upload_wait && be.ops->upload_async) (void)be.ops->upload_wait(be.ctx); /* no copy in flight */
    for (int sl = 0; sl < 2; sl++) {
        if (dx[sl]) be.ops->free(be.ctx, dx[sl]);
        if (dy[sl]) be.ops->free(be.ctx, dy[sl]);
        if (hx[sl]) host_free(hx[sl], hx_pinned[sl]);
        if (hy[sl]) host_free(hy[sl], hy_pinned[sl]);
    }
    free(order);
    sd_optim_free(&opt);
    sd_net_destroy(net);
    if (be.ops) sd_backend_destroy(&be);
    sd_dataset_free(&train);
    sd_dataset_free(&test);
    return st;
}
