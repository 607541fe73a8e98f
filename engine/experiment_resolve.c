/* experiment_resolve.c: the defaults of an experiment and its resolution (experiment.h): every
 * stored value checked against the schema's field tables (experiment_schema.h), per-device values
 * filled in from the rate preset, array or seeded distribution and the device defaults, out_dir,
 * the cross-field rules, and the check of the job's ranks against the devices. */
#include "engine/experiment_schema.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "engine/optim.h"

/* ---- defaults ---------------------------------------------------------------------------------- */
void sd_experiment_defaults(sd_experiment *e) {
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "experiment");
    snprintf(e->model, sizeof e->model, "fmnist_cnn");
    e->width = 1.0;
    snprintf(e->dataset, sizeof e->dataset, "fashion-mnist");
    e->partition.kind = SD_EXP_PART_IID;
    e->partition.classes_per_device = 1;
    e->partition.alpha = 0.5;
    e->devices.count = 0;
    e->devices.rates.kind = SD_EXP_RATES_PRESET;
    snprintf(e->devices.rates.preset, sizeof e->devices.rates.preset, "uniform_s1");
    e->devices.rate_seed = 1;
    e->devices.arrival = SD_EXP_ARRIVAL_CONSTANT;
    e->devices.profile = sd_device_profile_default();
    e->n_modes = 2;
    e->modes[0] = SD_EXP_MODE_DDP;
    e->modes[1] = SD_EXP_MODE_SCADLES;
    e->backend = SD_EXP_BACKEND_LOCAL;
    e->clock = SD_EXP_CLOCK_VIRTUAL;
    e->batch = 64;
    e->window_s = 1.0;
    e->cap = 256;
    e->buffer.policy = SD_EXP_BUF_PERSISTENCE;
    e->buffer.capacity = 4096;
    e->buffer.full = SD_EXP_FULL_DROP_NEWEST;
    e->ddp_timeout_s = 30.0;
    e->optimizer.lr = 0.05;
    e->optimizer.momentum = 0.9;
    e->optimizer.weight_decay = 5e-4;
    e->optimizer.nesterov = false;
    snprintf(e->optimizer.schedule, sizeof e->optimizer.schedule, "constant");
    e->optimizer.warmup_steps = 0;
    e->optimizer.lr_scale_max = 0;
    e->compression.policy = SD_COMPRESS_OFF;
    e->compression.ratio = 0.1;
    e->compression.delta = 0.3;
    e->compression.per_layer = true;
    e->compression.min_ratio = 0.001;
    e->compression.max_ratio = 0.1;
    e->compression.epsilon = 0.9;
    e->compression.f16_values = false;
    e->compression.momentum_correction = true;
    e->compression.exchange = SD_EXCHANGE_AUTO;
    e->bn = SD_EXP_BN_AVERAGE;
    e->n_seeds = 1;
    e->seeds[0] = 1;
    e->target_accuracy = 0.85;
    e->eval_every_s = 10.0;
    e->eval_limit = 0;
    e->eval_batch = 500;
    e->time_budget_s = 600.0;
    e->link_burst_bytes = 65536.0;
    e->comm_timeout_s = 600.0;
    e->stream.source = SD_SOURCE_KIND_REPLAY;
    snprintf(e->stream.topic_prefix, sizeof e->stream.topic_prefix, "trainer-");
    e->stream.connect_timeout_s = 10.0;
    e->stream.mqtt.qos = 1;
    e->max_steps = 0;
    e->threads = 0;
}

/* ---- resolution and validation ----------------------------------------------------------------- */
static sd_status check_modes(const sd_experiment *e, const char *origin) {
    if (e->n_modes < 1 || e->n_modes > SD_EXP_MAX_MODES)
        return BAD(origin, "modes", "has %d entries; allowed: one or both of ddp, scadles (an array, no duplicates)", e->n_modes);
    char p[PATH_MAX_LEN];
    for (int i = 0; i < e->n_modes; i++) {
        sd_exp_index_path(p, "modes", i);
        if ((unsigned)e->modes[i] >= SD_EXP_MAX_MODES) return BAD(origin, p, "mode %d is unknown; allowed: ddp, scadles", (int)e->modes[i]);
        for (int k = 0; k < i; k++)
            if (e->modes[k] == e->modes[i])
                return BAD(origin, p, "'%s' appears twice; allowed: each of ddp, scadles at most once", sd_exp_mode_names[e->modes[i]]);
    }
    return SD_OK;
}

static sd_status validate_kv(const sd_exp_kafka *k, const char *path) {
    if (k->n_conf < 0 || k->n_conf > SD_STREAM_MAX_CONF)
        return BAD(NULL, path, "has %d settings; allowed: at most %d", k->n_conf, SD_STREAM_MAX_CONF);
    char p[PATH_MAX_LEN];
    for (int i = 0; i < k->n_conf; i++) {
        sd_exp_index_path(p, path, i);
        if (!memchr(k->conf[i], 0, sizeof k->conf[i])) return BAD(NULL, p, "is not NUL-terminated within %d bytes", SD_STREAM_CONF_LEN);
        TRY(sd_exp_check_kv_pair(k->conf[i], NULL, p));
    }
    return SD_OK;
}

/* Checks every stored value of a table against the schema (what code may have set directly). */
static sd_status validate_table(const sd_exp_field *t, const char *base, const char *path) {
    char p[PATH_MAX_LEN];
    for (const sd_exp_field *f = t; f->key; f++) {
        if (f->flags & ALIAS) continue;
        sd_exp_child_path(p, path, f->key);
        const void *src = base + f->off;
        switch (f->type) {
        case F_STR:
            if (!memchr(src, 0, f->size)) return BAD(NULL, p, "is not NUL-terminated within %zu bytes", f->size);
            if (f->check) TRY(f->check((const char *)src, NULL, p));
            break;
        case F_NUM: TRY(sd_exp_check_number(f, *(const double *)src / f->scale, NULL, p)); break;
        case F_INT: TRY(sd_exp_check_number(f, *(const int *)src, NULL, p)); break;
        case F_I64: TRY(sd_exp_check_number(f, (double)*(const int64_t *)src, NULL, p)); break;
        case F_U64: TRY(sd_exp_check_number(f, (double)*(const uint64_t *)src, NULL, p)); break;
        case F_BOOL: break;
        case F_ENUM: {
            int v = *(const int *)src;
            if (v < 0 || v >= sd_exp_name_count(f->names)) {
                char list[300];
                sd_exp_join_names(f->names, list, sizeof list);
                return BAD(NULL, p, "value %d is not allowed; allowed: %s", v, list);
            }
            break;
        }
        case F_OBJ: TRY(validate_table(f->sub, (const char *)src, p)); break;
        case F_LIST: {
            const sd_exp_devices *dv = (const sd_exp_devices *)base;
            if (dv->list_len < 0 || dv->list_len > SD_MAX_DEVICES)
                return BAD(NULL, p, "has %d entries; allowed: at most %d", dv->list_len, SD_MAX_DEVICES);
            break;
        }
        case F_RATES: TRY(sd_exp_check_rates((const sd_exp_rates *)src, NULL, p)); break;
        case F_MODES: TRY(check_modes((const sd_experiment *)base, NULL)); break;
        case F_SEEDS: TRY(sd_exp_check_seeds((const sd_experiment *)base, NULL)); break;
        case F_KV: TRY(validate_kv((const sd_exp_kafka *)base, p)); break;
        }
    }
    return SD_OK;
}

/* A device's values, whatever their source, against the device schema: those of its form. */
static sd_status validate_device(const sd_exp_device *d, int i) {
    char path[PATH_MAX_LEN], p[PATH_MAX_LEN];
    sd_exp_index_path(path, "devices.list", i);
    for (const sd_exp_field *f = sd_exp_device_fields; f->key; f++) {
        if ((f->flags & ALIAS) || !(d->set & f->bit)) continue;
        sd_exp_child_path(p, path, f->key);
        const char *src = (const char *)d + f->off;
        if (f->type == F_STR) {
            if (!memchr(src, 0, f->size)) return BAD(NULL, p, "is not NUL-terminated within %zu bytes", f->size);
            if (f->check) TRY(f->check(src, NULL, p));
        } else {
            TRY(sd_exp_check_number(f, *(const double *)src, NULL, p));
        }
    }
    return SD_OK;
}

/* Device i's compute form, from its own keys or else the defaults (devices.compute): measured
 * when it names a profile file. Fills in the form's values, clears the other form's. */
static sd_status resolve_compute(const sd_exp_devices *dv, sd_exp_device *d, int i) {
    const unsigned modelled_bits = SD_EXP_DEV_SAMPLES_PER_S | SD_EXP_DEV_STEP_OVERHEAD;
    if ((d->set & modelled_bits) && (d->set & SD_EXP_DEV_PROFILE) && d->profile.profile[0]) {
        char p[PATH_MAX_LEN];
        sd_exp_index_path(p, "devices.list", i);
        return BAD(NULL, p, "names the profile '%.120s' and gives samples_per_s or step_overhead_s; allowed: one of the "
                   "two forms of a device's compute", d->profile.profile);
    }
    bool measured = (d->set & modelled_bits) ? false : (d->set & SD_EXP_DEV_PROFILE) ? d->profile.profile[0] != '\0'
                                                                                     : dv->profile.profile[0] != '\0';
    if (measured) {
        if (!(d->set & SD_EXP_DEV_PROFILE)) memcpy(d->profile.profile, dv->profile.profile, sizeof d->profile.profile);
        d->profile.samples_per_s = 0;
        d->profile.step_overhead_s = 0;
    } else {
        memset(d->profile.profile, 0, sizeof d->profile.profile);
        if (!(d->set & SD_EXP_DEV_SAMPLES_PER_S)) d->profile.samples_per_s = dv->profile.samples_per_s;
        if (!(d->set & SD_EXP_DEV_STEP_OVERHEAD)) d->profile.step_overhead_s = dv->profile.step_overhead_s;
    }
    if (!(d->set & SD_EXP_DEV_SLOWDOWN)) d->profile.slowdown = dv->profile.slowdown;
    d->set = (d->set & (SD_EXP_DEV_RATE | SD_EXP_DEV_BANDWIDTH | SD_EXP_DEV_LATENCY)) |
             (measured ? SD_EXP_DEV_RESOLVED_MEASURED : SD_EXP_DEV_RESOLVED_MODELLED);
    return SD_OK;
}

/* Every profile file the devices name is read now, for the experiment's model and width, so a
 * missing file, a model it did not measure or a malformed table stops the run before it starts,
 * naming the key that named the file (each file is read once). */
static sd_status check_profiles(const sd_exp_devices *dv, const unsigned *given, const char *model, double width) {
    for (int i = 0; i < dv->count; i++) {
        const char *path = dv->dev[i].profile.profile;
        if (!path[0]) continue;
        bool seen = false;
        for (int k = 0; k < i && !seen; k++) seen = !strcmp(dv->dev[k].profile.profile, path);
        if (seen) continue;
        sd_compute_table t;
        if (sd_compute_table_load(path, model, width, &t) != SD_OK) {
            char why[1100], p[PATH_MAX_LEN], entry[PATH_MAX_LEN];
            sd_exp_inner_reason(why, sizeof why);
            sd_exp_index_path(entry, "devices.list", i);
            if (given[i] & SD_EXP_DEV_PROFILE) sd_exp_child_path(p, entry, "profile");
            else snprintf(p, sizeof p, "devices.compute.profile");
            return BAD(NULL, p, "%s", why);
        }
    }
    return SD_OK;
}

static sd_status resolve_devices(sd_exp_devices *dv, const char *model, double width) {
    const sd_exp_rates *r = &dv->rates;
    int n_src = 0;
    char src_name[96];
    if (r->kind == SD_EXP_RATES_PRESET) {
        n_src = sd_exp_find_preset(r->preset)->n;
        snprintf(src_name, sizeof src_name, "preset '%s'", r->preset);
    } else if (r->kind == SD_EXP_RATES_LIST) {
        n_src = r->n;
        snprintf(src_name, sizeof src_name, "array");
    }
    if (dv->count == 0) {
        dv->count = n_src;
        if (dv->count == 0)
            return BAD(NULL, "devices.count", "is needed when devices.rates is a distribution; allowed: 1..%d", SD_MAX_DEVICES);
    } else if (n_src && dv->count != n_src) {
        return BAD(NULL, "devices.count", "is %d but devices.rates (%s) has %d rates; allowed: devices.count = %d (or leave it "
                   "out), or devices.rates with %d values or a distribution", dv->count, src_name, n_src, n_src, dv->count);
    }
    if (dv->list_len > dv->count)
        return BAD(NULL, "devices.list", "has %d entries but devices.count is %d; allowed: at most devices.count entries",
                   dv->list_len, dv->count);

    double rates[SD_MAX_DEVICES];
    if (r->kind == SD_EXP_RATES_PRESET) {
        memcpy(rates, sd_exp_find_preset(r->preset)->rates, sizeof rates);
    } else if (r->kind == SD_EXP_RATES_LIST) {
        memcpy(rates, r->values, sizeof rates);
    } else {
        /* one draw per device in device order, every device drawn (an override does not shift the others) */
        sd_rng g;
        sd_rng_seed(&g, dv->rate_seed);
        for (int i = 0; i < dv->count; i++) {
            double v = 0;
            int tries = 0;
            do {
                if (++tries > 10000)
                    return BAD(NULL, "devices.rates", "the distribution gave no rate in (0, 1e9] in 10000 draws; allowed: %s",
                               sd_exp_rates_allowed);
                v = r->kind == SD_EXP_RATES_UNIFORM ? r->a + (r->b - r->a) * sd_rng_double(&g) : r->a + r->b * sd_rng_normal(&g);
            } while (!(v > 0 && v <= RATE_MAX));
            rates[i] = v;
        }
    }
    unsigned given[SD_MAX_DEVICES];
    for (int i = 0; i < dv->count; i++) {
        sd_exp_device *d = &dv->dev[i];
        given[i] = d->set;
        if (!(d->set & SD_EXP_DEV_RATE)) d->rate = rates[i];
        if (!(d->set & SD_EXP_DEV_BANDWIDTH)) d->profile.bandwidth_bps = dv->profile.bandwidth_bps;
        if (!(d->set & SD_EXP_DEV_LATENCY)) d->profile.latency_s = dv->profile.latency_s;
        d->set |= SD_EXP_DEV_RATE | SD_EXP_DEV_BANDWIDTH | SD_EXP_DEV_LATENCY;
        TRY(resolve_compute(dv, d, i));
        TRY(validate_device(d, i));
    }
    for (int i = dv->count; i < SD_MAX_DEVICES; i++) memset(&dv->dev[i], 0, sizeof dv->dev[i]);
    dv->list_len = dv->count;
    return check_profiles(dv, given, model, width);
}

sd_status sd_experiment_resolve(sd_experiment *e) {
    if (!e) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    TRY(validate_table(sd_exp_top_fields, (const char *)e, ""));
    for (int i = 0; i < e->devices.list_len; i++)
        if (e->devices.dev[i].set & ~SD_EXP_DEV_ALL) {
            char p[PATH_MAX_LEN];
            sd_exp_index_path(p, "devices.list", i);
            return BAD(NULL, p, "internal flags 0x%x are not SD_EXP_DEV_* bits", e->devices.dev[i].set);
        }

    sd_experiment *r = malloc(sizeof *r);
    if (!r) return SD_FAIL(SD_ERR_OOM, "resolve: no memory");
    memcpy(r, e, sizeof *r);
    sd_status s = resolve_devices(&r->devices, r->model, r->width);
    if (s != SD_OK) {
        free(r);
        return s;
    }

    /* out_dir */
    if (!r->out_dir[0]) {
        char buf[SD_EXP_PATH_LEN + 16];
        snprintf(buf, sizeof buf, "runs/%s", r->name);
        if (strlen(buf) >= sizeof r->out_dir) {
            free(r);
            return BAD(NULL, "out_dir", "runs/<name> is too long; allowed: at most %zu characters", sizeof r->out_dir - 1);
        }
        memset(r->out_dir, 0, sizeof r->out_dir);
        memcpy(r->out_dir, buf, strlen(buf));
    }

    /* cross-field rules */
    int classes = sd_exp_dataset_classes[sd_exp_name_index(sd_exp_dataset_names, r->dataset)];
    if (r->partition.kind == SD_EXP_PART_SLICES && r->partition.classes_per_device > classes)
        s = BAD(NULL, "partition.classes_per_device", "is %d but %s has %d classes; allowed: 1..%d", r->partition.classes_per_device,
                r->dataset, classes, classes);
    bool ddp = false;
    for (int i = 0; i < r->n_modes; i++) ddp |= r->modes[i] == SD_EXP_MODE_DDP;
    if (s == SD_OK && ddp && r->buffer.capacity < r->batch)
        s = BAD(NULL, "buffer.capacity", "is %" PRId64 " samples, smaller than batch %d: ddp could never gather a batch; "
                "allowed: buffer.capacity >= batch", r->buffer.capacity, r->batch);
    if (s == SD_OK && r->compression.policy == SD_COMPRESS_GAIN && r->compression.min_ratio > r->compression.max_ratio)
        s = BAD(NULL, "compression.min_ratio", "%g is above compression.max_ratio %g; allowed: min_ratio <= max_ratio",
                r->compression.min_ratio, r->compression.max_ratio);
    if (s == SD_OK && r->collectives == SD_EXP_COLL_NCCL && r->compute_backend != SD_EXP_COMPUTE_CUDA)
        s = BAD(NULL, "collectives", "nccl sums gradients in GPU memory, but compute_backend is cpu; allowed: host, or "
                "set compute_backend to cuda");
    else if (s == SD_OK && r->collectives == SD_EXP_COLL_NCCL && r->backend == SD_EXP_BACKEND_LOCAL)
        s = BAD(NULL, "collectives", "nccl needs one process per GPU (under mpirun, or torchrun-style); allowed: host, or "
                "set backend to mpi and start the run with mpirun -n <devices>, or start it with torchrun (backend tcp)");
    else if (s == SD_OK && r->collectives == SD_EXP_COLL_NCCL && r->link_emulation != SD_EXP_LINK_OFF)
        s = BAD(NULL, "collectives", "nccl cannot be shaped by link_emulation (NCCL moves the data itself); allowed: "
                "host with link_emulation token_bucket, or nccl with link_emulation off");
    if (s == SD_OK && r->stream.source != SD_SOURCE_KIND_REPLAY) {
        const char *src = sd_exp_source_names[r->stream.source];
        bool conf_bootstrap = false;
        for (int i = 0; i < r->stream.kafka.n_conf; i++) conf_bootstrap |= !strncmp(r->stream.kafka.conf[i], "bootstrap.servers=", 18);
        if (r->clock != SD_EXP_CLOCK_REAL)
            s = BAD(NULL, "stream.source", "%s needs clock \"real\": the virtual clock models every arrival itself from "
                    "devices.rates, while a broker delivers samples when they are published; allowed: stream.source replay "
                    "with either clock, or clock real with kafka or mqtt", src);
        else if (r->stream.source == SD_SOURCE_KIND_KAFKA && !r->stream.kafka.bootstrap[0] && !conf_bootstrap)
            s = BAD(NULL, "stream.kafka.bootstrap", "is empty but stream.source is kafka; allowed: the brokers as "
                    "host:port[,host:port...], e.g. \"localhost:9092\" (or a bootstrap.servers pair in stream.kafka.conf)");
        else if (r->stream.source == SD_SOURCE_KIND_MQTT && !r->stream.mqtt.host[0])
            s = BAD(NULL, "stream.mqtt.host", "is empty but stream.source is mqtt; allowed: the broker's host name or "
                    "address, e.g. \"127.0.0.1\" (port in stream.mqtt.port, default 1883)");
        else if (r->checkpoint_every_steps > 0)
            s = BAD(NULL, "checkpoint_every_steps", "is %" PRId64 " but stream.source is %s: a broker stream keeps "
                    "delivering while a checkpoint is written, so only a stop (a signal or --stop-at) checkpoints it; "
                    "allowed: 0 with kafka or mqtt, or stream.source replay", r->checkpoint_every_steps, src);
        else if (r->stream.source == SD_SOURCE_KIND_MQTT && r->stream.mqtt.password_file[0] && !r->stream.mqtt.username[0])
            s = BAD(NULL, "stream.mqtt.password_file", "is set without stream.mqtt.username; allowed: both, or neither "
                    "(anonymous)");
    }
    if (s == SD_OK && (r->injection.alpha > 0) != (r->injection.beta > 0))
        s = BAD(NULL, r->injection.alpha > 0 ? "injection.beta" : "injection.alpha",
                "is 0 while the other is not; allowed: both in (0, 1] (injection on) or both 0 (off)");
    if (s == SD_OK) {
        sd_lr_schedule sch;
        if (!strcmp(r->optimizer.schedule, "cosine") && r->max_steps <= 0) {
            s = BAD(NULL, "optimizer.schedule", "cosine needs the number of steps: set max_steps > 0; allowed: %s",
                    sd_exp_schedule_allowed);
        } else if (sd_lr_schedule_parse(r->optimizer.schedule, (float)r->optimizer.lr, r->max_steps, &sch) != SD_OK) {
            char why[512];
            sd_exp_inner_reason(why, sizeof why);
            s = BAD(NULL, "optimizer.schedule", "%s; allowed: %s", why, sd_exp_schedule_allowed);
        }
    }
    if (s == SD_OK) memcpy(e, r, sizeof *e);
    free(r);
    return s;
}

sd_status sd_experiment_check_ranks(const sd_experiment *e, int ranks) {
    if (!e) return SD_FAIL(SD_ERR_INVALID, "experiment: NULL argument");
    if (e->backend == SD_EXP_BACKEND_LOCAL) {
        if (ranks != 1)
            return BAD(NULL, "backend", "is local (devices as threads of one process) but the job has %d processes; allowed: "
                       "backend mpi for multi-process jobs, or run one process", ranks);
        return SD_OK;
    }
    if (e->devices.count < 1)
        return BAD(NULL, "devices.count", "is not resolved yet (0); call sd_experiment_resolve first");
    if (ranks != e->devices.count && e->backend == SD_EXP_BACKEND_TCP)
        return BAD(NULL, "devices.count", "is %d but WORLD_SIZE is %d (one process per device); allowed: WORLD_SIZE = "
                   "devices.count (torchrun --nproc-per-node, or WORLD_SIZE=%d), or --set devices.count=%d with rates "
                   "for %d devices", e->devices.count, ranks, e->devices.count, ranks, ranks);
    if (ranks != e->devices.count)
        return BAD(NULL, "devices.count", "is %d but the MPI job has %d ranks; allowed: devices.count = the number of ranks "
                   "(mpirun -n %d, or --set devices.count=%d with rates for %d devices)", e->devices.count, ranks,
                   e->devices.count, ranks, ranks);
    return SD_OK;
}
