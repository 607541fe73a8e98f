/* runner.c: runs an experiment: every mode x seed, each on the local backend (one thread per
 * device) or on the MPI or TCP backend (this process is one rank), then the comparison table,
 * summary.json, the resolved config and a gnuplot plot (accuracy against time per mode, buffer
 * occupancy; drawn by engine/plot.h, gnuplot's messages in gnuplot.log) under the experiment's
 * out_dir. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "comm/comm_local.h"
#include "engine/dist_checkpoint.h"
#include "engine/distributed.h"
#include "engine/plot.h"
#include "engine/report.h"
#include "engine/trace.h"

static sd_status mkdirs(const char *path) {
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return SD_FAIL(SD_ERR_INVALID, "output path longer than %zu characters", sizeof buf - 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return SD_FAIL(SD_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return SD_FAIL(SD_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
    return SD_OK;
}

static const char *mode_name(sd_exp_mode m) { return m == SD_EXP_MODE_DDP ? "ddp" : "scadles"; }

/* ---- local backend: one thread per device --------------------------------------------------- */
typedef struct local_job {
    const sd_dist_inputs *in;
    sd_comm_local_group *group;
    int rank;
    sd_status st;
    char err[2048];
    sd_run_summary sum;
} local_job;

static void *local_thread(void *arg) {
    local_job *j = arg;
    j->st = sd_dist_device_run(j->in, sd_comm_local_get(j->group, j->rank), &j->sum);
    if (j->st != SD_OK) {
        snprintf(j->err, sizeof j->err, "%s", sd_last_error_brief());
        sd_comm_local_abort(j->group, j->rank, j->err);
    }
    return NULL;
}

static sd_status run_local(const sd_dist_inputs *in, sd_run_summary *out) {
    int n = in->e->devices.count;
    sd_comm_local_group *g = NULL;
    TRY(sd_comm_local_group_create(n, &g));
    sd_comm_local_set_timeout(g, in->e->comm_timeout_s);
    local_job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    sd_status st = SD_OK;
    if (!jobs || !th) {
        st = SD_FAIL(SD_ERR_OOM, "device threads");
        goto done;
    }
    int started = 0;
    for (int r = 0; r < n; r++) {
        jobs[r] = (local_job){.in = in, .group = g, .rank = r};
        if (pthread_create(&th[r], NULL, local_thread, &jobs[r]) != 0) {
            sd_comm_local_abort(g, r, "thread creation failed");
            st = SD_FAIL(SD_ERR_RUNTIME, "cannot start the thread of device %d", r);
            break;
        }
        started++;
    }
    for (int r = 0; r < started; r++) pthread_join(th[r], NULL);
    if (st == SD_OK) {
        /* the first failure is the cause; the others are usually "device k aborted" */
        for (int r = 0; r < n; r++)
            if (jobs[r].st != SD_OK) {
                st = SD_FAIL(jobs[r].st, "device %d: %s", r, jobs[r].err);
                break;
            }
    }
    if (st == SD_OK) *out = jobs[0].sum;
done:
    free(jobs);
    free(th);
    sd_comm_local_group_destroy(g);
    return st;
}

/* ---- outputs ------------------------------------------------------------------------------- */
/* The numbers of summary.json keep the text they always had (integers exact, fixed decimals), so
 * they go in as raw JSON; cJSON does the rest (keys, strings, layout). NULL item: no memory. */
static bool add(cJSON *obj, const char *key, cJSON *item) {
    if (item && (key ? cJSON_AddItemToObject(obj, key, item) : cJSON_AddItemToArray(obj, item))) return true;
    cJSON_Delete(item);
    return false;
}

static bool add_num(cJSON *obj, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool add_num(cJSON *obj, const char *key, const char *fmt, ...) {
    char b[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    return add(obj, key, cJSON_CreateRaw(b));
}

/* A double in this format; null when it is not `present` (a target not reached) or not finite. */
static bool add_real(cJSON *obj, const char *key, const char *fmt, double v, bool present) {
    if (!present || !isfinite(v)) return add(obj, key, cJSON_CreateNull());
    char b[64];
    snprintf(b, sizeof b, fmt, v);
    return add(obj, key, cJSON_CreateRaw(b));
}

static cJSON *summary_run(const sd_run_summary *r) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add(o, "mode", cJSON_CreateString(mode_name(r->mode))) &&
              add_num(o, "seed", "%llu", (unsigned long long)r->seed) &&
              add_real(o, "time_to_target_s", "%.3f", r->time_to_target_s, r->time_to_target_s >= 0) &&
              add_real(o, "final_accuracy", "%.6f", r->final_accuracy, true) &&
              add_real(o, "best_accuracy", "%.6f", r->best_accuracy, true) &&
              add_num(o, "samples_trained", "%llu", (unsigned long long)r->samples_trained) &&
              add_num(o, "samples_injected", "%llu", (unsigned long long)r->samples_injected) &&
              add_num(o, "samples_dropped", "%llu", (unsigned long long)r->samples_dropped) &&
              add_num(o, "stalled_devices", "%d", r->stalled_devices) &&
              add_num(o, "peak_buffer", "%llu", (unsigned long long)r->peak_buffer) &&
              add_num(o, "bytes_sent", "%llu", (unsigned long long)r->bytes_sent) &&
              add_num(o, "steps", "%lld", (long long)r->steps) &&
              add_num(o, "skipped_steps", "%lld", (long long)r->skipped_steps) &&
              add(o, "bn_identical", cJSON_CreateBool(r->bn_identical)) &&
              add_real(o, "clock_s", "%.3f", r->clock_s, true) && add_real(o, "wall_s", "%.3f", r->wall_s, true) &&
              add_real(o, "speedup_vs_ddp", "%.3f", r->speedup_vs_ddp, r->speedup_vs_ddp > 0);
    cJSON *shared = ok ? cJSON_CreateArray() : NULL;
    ok = ok && add(o, "shared_per_device", shared);
    for (int j = 0; ok && j < r->devices && j < 64; j++) ok = add_num(shared, NULL, "%llu", (unsigned long long)r->shared[j]);
    if (ok) return o;
    cJSON_Delete(o);
    return NULL;
}

/* Where each device's compute cost came from, when a device profile file gave some of it (the
 * summaries of experiments without one keep the text they always had). */
static bool summary_compute(cJSON *root, const sd_experiment *e) {
    bool measured = false;
    for (int j = 0; j < e->devices.count; j++) measured |= e->devices.dev[j].profile.profile[0] != '\0';
    if (!measured) return true;
    cJSON *list = cJSON_CreateArray();
    bool ok = add(root, "compute", list);
    for (int j = 0; ok && j < e->devices.count; j++) {
        const sd_device_profile *p = &e->devices.dev[j].profile;
        cJSON *o = cJSON_CreateObject();
        ok = add(list, NULL, o) && add_num(o, "device", "%d", j);
        if (ok && p->profile[0])
            ok = add(o, "profile", cJSON_CreateString(p->profile)) && add(o, "model", cJSON_CreateString(e->model));
        else if (ok)
            ok = add_num(o, "samples_per_s", "%.17g", p->samples_per_s) && add_num(o, "step_overhead_s", "%.17g", p->step_overhead_s);
        ok = ok && add_num(o, "slowdown", "%.17g", p->slowdown);
    }
    return ok;
}

sd_status sd_run_summaries_write(const sd_experiment *e, const sd_run_summary *runs, int nruns, const char *path) {
    cJSON *root = cJSON_CreateObject(), *list = NULL;
    bool ok = root && add(root, "experiment", cJSON_CreateString(e->name)) &&
              add_num(root, "target_accuracy", "%g", e->target_accuracy) && add_num(root, "devices", "%d", e->devices.count) &&
              summary_compute(root, e) && add(root, "runs", list = cJSON_CreateArray());
    for (int i = 0; ok && i < nruns; i++) ok = add(list, NULL, summary_run(&runs[i]));
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return SD_FAIL(SD_ERR_OOM, "no memory to write %s", path);
    FILE *f = fopen(path, "w");
    if (!f) {
        sd_status s = SD_FAIL(SD_ERR_IO, "cannot create %s: %s; out_dir must be a writable folder", path, strerror(errno));
        cJSON_free(text);
        return s;
    }
    size_t n = strlen(text);
    errno = 0;
    bool written = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    int err = errno;
    if (fclose(f) != 0 && written) written = false, err = errno; /* the buffered bytes go out here */
    cJSON_free(text);
    if (!written)
        return SD_FAIL(SD_ERR_IO, "cannot write %s: %s (is the disk full?)", path, err ? strerror(err) : "short write");
    return SD_OK;
}

static void print_table(const sd_run_summary *runs, int nruns, double target, FILE *t) {
    fprintf(t, "\n%-8s %5s %12s %8s %9s %10s %9s %8s %8s %12s\n", "mode", "seed", "t_target(s)", "speedup", "final_acc",
            "trained", "injected", "dropped", "peak_buf", "bytes_sent");
    for (int i = 0; i < nruns; i++) {
        const sd_run_summary *r = &runs[i];
        char tt[32], sp[32];
        if (r->time_to_target_s >= 0) snprintf(tt, sizeof tt, "%.1f", r->time_to_target_s);
        else snprintf(tt, sizeof tt, "not reached");
        if (r->speedup_vs_ddp > 0) snprintf(sp, sizeof sp, "%.2fx", r->speedup_vs_ddp);
        else snprintf(sp, sizeof sp, "-");
        fprintf(t, "%-8s %5llu %12s %8s %8.2f%% %10llu %9llu %8llu %8llu %12llu\n", mode_name(r->mode),
                (unsigned long long)r->seed, tt, sp, 100 * r->final_accuracy, (unsigned long long)r->samples_trained,
                (unsigned long long)r->samples_injected, (unsigned long long)r->samples_dropped,
                (unsigned long long)r->peak_buffer, (unsigned long long)r->bytes_sent);
    }
    fprintf(t, "(target top-1 %.1f%%; times in clock seconds)\n", 100 * target);
}

static void write_plot(const sd_experiment *e, const sd_run_summary *runs, int nruns) {
    char path[1024];
    snprintf(path, sizeof path, "%s/plot.gp", e->out_dir);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "set terminal pngcairo size 1200,500\nset output '%s/accuracy.png'\nset multiplot layout 1,2\n"
               "set xlabel 'time (s)'\nset ylabel 'test top-1'\nset key bottom right\nset grid\n"
               "set title 'accuracy against time (target %.0f%%)'\nplot ", e->out_dir, 100 * e->target_accuracy);
    for (int i = 0; i < nruns; i++)
        fprintf(f, "%s'%s/%s-seed%llu/eval.dat' using 1:2 with linespoints title '%s seed %llu'", i ? ", " : "",
                e->out_dir, mode_name(runs[i].mode), (unsigned long long)runs[i].seed, mode_name(runs[i].mode),
                (unsigned long long)runs[i].seed);
    fprintf(f, ", %g with lines dashtype 2 title 'target'\n", e->target_accuracy);
    fprintf(f, "set ylabel 'samples buffered (all devices)'\nset title 'buffer occupancy'\nset key top left\nplot ");
    for (int i = 0; i < nruns; i++)
        fprintf(f, "%s'%s/%s-seed%llu/buffer.dat' using 1:2 with lines title '%s seed %llu'", i ? ", " : "", e->out_dir,
                mode_name(runs[i].mode), (unsigned long long)runs[i].seed, mode_name(runs[i].mode),
                (unsigned long long)runs[i].seed);
    fprintf(f, "\nunset multiplot\n");
    fclose(f);
    /* the script names out_dir as given (maybe relative), so gnuplot runs in the current folder */
    char log[1024];
    snprintf(log, sizeof log, "%s/gnuplot.log", e->out_dir);
    sd_plot_job job = {.script = path, .log = log};
    sd_status st = sd_plot_log_reset(log);
    if (st == SD_OK) st = sd_plot_run(&job);
    if (st == SD_PLOT_NOT_FOUND) fprintf(stderr, "note: %s; plot script left in %s\n", sd_last_error_brief(), path);
    else if (st != SD_OK) fprintf(stderr, "note: %s\n", sd_last_error_brief());
    sd_clear_error(); /* no plot is a note, not a failure of the experiment */
}

/* ---- resume ---------------------------------------------------------------------------------- */
/* Rank 0 reads run.safetensors (checked against this experiment) and tells every rank which run
 * and step it holds; runs[0..run_index) get the finished runs' summaries. */
static sd_status read_resume(const char *dir, const char *exp_json, int devices, sd_comm *mpi_comm, int rank,
                             sd_run_summary *runs, int nruns, sd_dist_ckpt_id *got) {
    sd_dist_ckpt_id want = {.experiment = exp_json, .devices = devices};
    int64_t info[4] = {SD_OK, 0, 0, 0};
    sd_status s = SD_OK;
    if (rank == 0) {
        /* a kill while a checkpoint was replaced leaves the complete one beside dir: put it back */
        char recovered[1100];
        s = sd_dist_ckpt_recover(dir, recovered, sizeof recovered);
        if (s == SD_OK && recovered[0])
            fprintf(stderr, "note: %s was incomplete (a checkpoint was being replaced when the run died); resuming from "
                    "the complete one in %s, now moved to %s\n", dir, recovered, dir);
        if (s == SD_OK) s = sd_dist_ckpt_read_run(dir, &want, got, runs);
        if (s == SD_OK && got->run_index >= nruns)
            s = SD_FAIL(SD_ERR_FORMAT, "%s/%s: run %d is beyond the experiment's %d runs; the file is damaged", dir,
                        SD_DIST_CKPT_RUN_FILE, got->run_index, nruns);
        info[0] = s;
        if (s == SD_OK) {
            info[1] = got->run_index;
            info[2] = got->step;
            info[3] = (int64_t)got->seed;
        }
    }
    if (mpi_comm) TRY(sd_comm_broadcast(mpi_comm, info, sizeof info, 0));
    if (info[0] != SD_OK) {
        if (rank == 0) TRY(s);
        return SD_FAIL((sd_status)info[0], "rank 0 refused the checkpoint %s (its message says why)", dir);
    }
    got->run_index = (int)info[1];
    got->step = info[2];
    got->seed = (uint64_t)info[3];
    /* every rank file (local: all of them here; MPI: each rank its own) is intact, of this
     * experiment and of the same run and step, before any output is touched */
    int first = mpi_comm ? rank : 0, last = mpi_comm ? rank : devices - 1;
    s = SD_OK;
    for (int r = first; r <= last && s == SD_OK; r++) {
        char path[1100];
        sd_dist_ckpt_path(dir, r, path, sizeof path);
        sd_st_file *f = NULL;
        sd_dist_ckpt_id fid;
        s = sd_dist_ckpt_open(path, &want, r, &f, &fid);
        if (s == SD_OK) s = sd_dist_ckpt_check_finite(f);
        if (s == SD_OK && (fid.run_index != got->run_index || fid.step != got->step))
            s = SD_FAIL(SD_ERR_INVALID, "%s holds step %lld of run %d but %s/%s says step %lld of run %d: the "
                        "checkpoint was interrupted while it was being written; resume from a complete copy or start "
                        "again", path, (long long)fid.step, fid.run_index, dir, SD_DIST_CKPT_RUN_FILE,
                        (long long)got->step, got->run_index);
        sd_st_close(f);
    }
    if (mpi_comm) {
        uint64_t all[SD_MAX_DEVICES];
        sd_status ms = sd_comm_allgather_u64(mpi_comm, (uint64_t)s, all);
        TRY(s);
        TRY(ms);
        for (int j = 0; j < mpi_comm->size; j++)
            if (all[j] != SD_OK)
                return SD_FAIL((sd_status)all[j], "rank %d refused its file of the checkpoint %s (its message says why)",
                               j, dir);
    }
    TRY(s);
    return SD_OK;
}

/* ---- the runner ---------------------------------------------------------------------------- */

/* Keeps only the first `limit` samples of d (limit <= 0 or >= d->n: all of them). */
static sd_status keep_first(sd_dataset *d, int64_t limit, const char *what) {
    if (limit <= 0 || limit >= d->n) return SD_OK;
    int64_t *ix = malloc((size_t)limit * sizeof(int64_t));
    if (!ix) return SD_FAIL(SD_ERR_OOM, "%s: index of %lld samples", what, (long long)limit);
    for (int64_t i = 0; i < limit; i++) ix[i] = i;
    sd_dataset sub = {0};
    sd_status st = sd_dataset_subset(d, ix, limit, &sub);
    free(ix);
    TRY(st);
    sd_dataset_free(d);
    *d = sub;
    return SD_OK;
}

/* What every run of one invocation shares. */
typedef struct runner {
    const sd_experiment *e;
    sd_comm *mpi;             /* NULL: local backend */
    int rank;
    FILE *table;
    sd_run_control *ctl;      /* NULL: no resume, stop or checkpoints */
    sd_dataset train, test;
    sd_partition part;
    sd_trace *trace;
    sd_run_summary *runs;     /* room for every run an experiment may have */
    int nruns, per_device;
    char *exp_json;
    const char *resume;
    sd_dist_ckpt_id resume_at;
    char ckpt_dir[SD_EXP_PATH_LEN + 16];
    bool stopped;
    sd_compute_model *compute; /* every device's, read once (the device threads share it) */
} runner;

/* Rank 0: where each device's compute cost comes from, when a device profile file gives it. */
static void print_compute(const runner *r) {
    const sd_experiment *e = r->e;
    for (int j = 0; j < e->devices.count; j++) {
        const sd_compute_model *m = &r->compute[j];
        if (!m->measured) continue;
        int k = j + 1; /* devices j..k-1: the same file and slowdown */
        while (k < e->devices.count && r->compute[k].measured && r->compute[k].slowdown == m->slowdown &&
               !strcmp(e->devices.dev[k].profile.profile, e->devices.dev[j].profile.profile))
            k++;
        char who[32];
        if (k - j > 1) snprintf(who, sizeof who, "devices %d-%d", j, k - 1);
        else snprintf(who, sizeof who, "device %d", j);
        fprintf(r->table, "compute of %s: measured, %s table %s (%d kernel thread(s), %d training at once; batches "
                "%g..%g), slowdown %g\n", who, e->model, e->devices.dev[j].profile.profile, m->table.threads,
                m->table.concurrency, m->table.batch[0], m->table.batch[m->table.n - 1], m->slowdown);
        j = k - 1;
    }
}

/* The datasets (with train_limit and eval_limit applied), out_dir, config.json and the trace. */
static sd_status open_run(runner *r) {
    const sd_experiment *e = r->e;
    const char *root = e->data_root[0] ? e->data_root : NULL;
    TRY(sd_dataset_open(e->dataset, root, true, &r->train));
    TRY(sd_dataset_open(e->dataset, root, false, &r->test));
    TRY(keep_first(&r->train, e->train_limit, "train_limit"));
    TRY(keep_first(&r->test, e->eval_limit, "eval_limit"));
    if (r->rank == 0) {
        char path[1024];
        TRY(mkdirs(e->out_dir));
        snprintf(path, sizeof path, "%s/config.json", e->out_dir);
        TRY(sd_experiment_write_json(e, path));
    }
    if (r->mpi) TRY(sd_comm_barrier(r->mpi)); /* out_dir exists before any rank opens its trace */
    char path[1024]; /* one trace per process: the local backend's device threads share one */
    if (r->mpi) snprintf(path, sizeof path, "%s/trace-rank%d.json", e->out_dir, r->rank);
    else snprintf(path, sizeof path, "%s/trace.json", e->out_dir);
    TRY(sd_trace_open(path, &r->trace));
    (void)sd_trace_info(r->trace, "clock", e->clock == SD_EXP_CLOCK_REAL ? "real" : "virtual");
    (void)sd_trace_info(r->trace, "experiment", e->name);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int total = e->threads > 0 ? e->threads : (int)(cores > 0 ? cores : 1), n = e->devices.count;
    r->per_device = r->mpi ? total : (total / n > 0 ? total / n : 1);
    r->compute = calloc((size_t)n, sizeof *r->compute);
    if (!r->compute) return SD_FAIL(SD_ERR_OOM, "compute models of %d devices", n);
    TRY(sd_dist_compute_models(e, r->compute));
    if (r->rank == 0 && r->table) print_compute(r);
    return SD_OK;
}

/* This seed's partition of the training set; rank 0 prints its class histogram. */
static sd_status partition_seed(runner *r, uint64_t seed) {
    const sd_experiment *e = r->e;
    int n = e->devices.count;
    sd_partition_free(&r->part);
    if (e->partition.kind == SD_EXP_PART_SLICES)
        TRY(sd_partition_slices(&r->train, n, e->partition.classes_per_device, seed, &r->part));
    else if (e->partition.kind == SD_EXP_PART_DIRICHLET)
        TRY(sd_partition_dirichlet(&r->train, n, e->partition.alpha, seed, &r->part));
    else
        TRY(sd_partition_iid(&r->train, n, seed, &r->part));
    if (r->rank == 0 && r->table) {
        fprintf(r->table, "seed %llu: class histogram per device (%s partition)\n", (unsigned long long)seed,
                e->partition.kind == SD_EXP_PART_SLICES ? "slices"
                : e->partition.kind == SD_EXP_PART_DIRICHLET ? "dirichlet" : "iid");
        sd_partition_print(&r->part, &r->train, r->table);
        fflush(r->table);
    }
    return SD_OK;
}

/* Run k (mode mi of seed): its directory, its devices, and, when it stopped with its checkpoint
 * written (engine/step/checkpoint.c), what the caller learns of that. */
static sd_status run_one(runner *r, int k, int mi, uint64_t seed) {
    const sd_experiment *e = r->e;
    const char *mname = mode_name(e->modes[mi]);
    if (k < r->resume_at.run_index) { /* finished before the checkpoint: its summary came with it */
        if (r->rank == 0 && r->table)
            fprintf(r->table, "run %s seed %llu: finished before the checkpoint\n", mname, (unsigned long long)seed);
        return SD_OK;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s-seed%llu", e->out_dir, mname, (unsigned long long)seed);
    if (r->rank == 0) TRY(mkdirs(dir));
    if (r->mpi) TRY(sd_comm_barrier(r->mpi));
    const bool here = k == r->resume_at.run_index;
    sd_run_control *ctl = r->ctl;
    sd_dist_inputs in = {.e = e, .mode = e->modes[mi], .seed = seed, .train = &r->train, .test = &r->test,
                         .part = &r->part, .run_dir = dir, .threads_per_device = r->per_device,
                         .quiet = r->rank != 0 || !isatty(STDERR_FILENO) || (ctl && ctl->quiet),
                         .eval_log = ctl && r->rank == 0 ? ctl->eval_log : NULL, .trace = r->trace, .trace_pid = k + 1,
                         .run_index = k, .experiment_json = r->exp_json, .checkpoint_dir = r->ckpt_dir,
                         .resume_dir = here ? r->resume : NULL, .resume_step = here ? r->resume_at.step : 0,
                         .stop_at = ctl ? ctl->stop_at : 0, .stop_flag = ctl ? ctl->stop_flag : NULL,
                         .done_runs = r->runs, .compute = r->compute};
    char pname[64];
    snprintf(pname, sizeof pname, "%s seed %llu", mname, (unsigned long long)seed);
    (void)sd_trace_meta(r->trace, k + 1, -1, pname);
    if (r->rank == 0 && r->table) {
        fprintf(r->table, "run %s seed %llu: %d devices, %d kernel thread(s) each%s\n", mname, (unsigned long long)seed,
                e->devices.count, r->per_device, in.resume_dir ? " (resumed from the checkpoint)" : "");
        fflush(r->table);
    }
    sd_run_summary *sum = &r->runs[k];
    if (r->mpi) TRY(sd_dist_device_run(&in, r->mpi, sum));
    else TRY(run_local(&in, sum));
    if (ctl) ctl->last = *sum;
    if (!sum->stopped || !ctl) return SD_OK;
    r->stopped = true;
    ctl->stopped = true;
    ctl->stop_signal = sum->stop_signal;
    ctl->stopped_step = sum->steps;
    ctl->stopped_mode = e->modes[mi];
    ctl->stopped_seed = seed;
    snprintf(ctl->checkpoint_dir, sizeof ctl->checkpoint_dir, "%s", r->ckpt_dir);
    if (r->rank == 0 && r->table) {
        fprintf(r->table, "run %s seed %llu stopped after step %lld; checkpoint in %s\n", mname,
                (unsigned long long)seed, (long long)sum->steps, r->ckpt_dir);
        fflush(r->table);
    }
    return SD_OK;
}

/* The experiment is finished: speedups, summary.json, the table, the plot and the report. A
 * summary.json that cannot be written fails the experiment (after the table, which has the results). */
static sd_status finish(runner *r) {
    const sd_experiment *e = r->e;
    sd_run_summary *runs = r->runs;
    /* speedups: each seed's scadles time against the same seed's ddp time */
    for (int i = 0; i < r->nruns; i++)
        for (int j = 0; j < r->nruns; j++)
            if (runs[j].mode == SD_EXP_MODE_DDP && runs[j].seed == runs[i].seed && runs[j].time_to_target_s > 0 &&
                runs[i].time_to_target_s > 0)
                runs[i].speedup_vs_ddp = runs[j].time_to_target_s / runs[i].time_to_target_s;
    if (r->rank != 0) return SD_OK;
    FILE *table = r->table;
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.json", e->out_dir);
    sd_status s = sd_run_summaries_write(e, runs, r->nruns, path);
    if (table) print_table(runs, r->nruns, e->target_accuracy, table);
    TRY(s);
    write_plot(e, runs, r->nruns);
    if (sd_report_generate(e->out_dir) != SD_OK) fprintf(stderr, "note: report: %s\n", sd_last_error_brief());
    else if (table)
        fprintf(table, "report: %s/report.html; timeline: %s/trace%s.json\n", e->out_dir, e->out_dir,
                r->mpi ? "-rank*" : "");
    if (table)
        fprintf(table, "outputs: %s/summary.json, %s/accuracy.png, per-run metrics.jsonl and eval.jsonl\n", e->out_dir,
                e->out_dir);
    return SD_OK;
}

static sd_status run_all(runner *r) {
    const sd_experiment *e = r->e;
    if (r->ctl) TRY(sd_dist_ckpt_experiment_json(e, &r->exp_json));
    /* a checkpoint of another experiment is refused before any data is loaded */
    if (r->resume)
        TRY(read_resume(r->resume, r->exp_json, e->devices.count, r->mpi, r->rank, r->runs, r->nruns, &r->resume_at));
    TRY(open_run(r));
    for (int si = 0, k = 0; si < e->n_seeds && !r->stopped; si++) {
        TRY(partition_seed(r, e->seeds[si]));
        for (int mi = 0; mi < e->n_modes && !r->stopped; mi++, k++) TRY(run_one(r, k, mi, e->seeds[si]));
    }
    sd_status tc = sd_trace_close(r->trace);
    r->trace = NULL;
    if (tc != SD_OK) fprintf(stderr, "note: %s\n", sd_last_error_brief());
    if (!r->stopped) TRY(finish(r)); /* a stopped invocation leaves summary.json and the plot to the one that finishes */
    return SD_OK;
}

sd_status sd_experiment_run(const sd_experiment *e, sd_comm *mpi_comm, FILE *table) {
    return sd_experiment_run_ctl(e, mpi_comm, table, NULL);
}

sd_status sd_experiment_run_ctl(const sd_experiment *e, sd_comm *mpi_comm, FILE *table, sd_run_control *ctl) {
    if (mpi_comm && mpi_comm->size != e->devices.count)
        return SD_FAIL(SD_ERR_INVALID, "the job has %d ranks (%s backend) but devices.count is %d; start %d (mpirun -np, "
                       "or WORLD_SIZE)", mpi_comm->size, mpi_comm->ops->name, e->devices.count, e->devices.count);
    if (ctl) {
        ctl->stopped = false;
        ctl->stop_signal = 0;
        ctl->stopped_step = 0;
        ctl->checkpoint_dir[0] = '\0';
    }
    runner r = {.e = e, .mpi = mpi_comm, .rank = mpi_comm ? mpi_comm->rank : 0, .table = table, .ctl = ctl,
                .nruns = e->n_modes * e->n_seeds, .resume_at = {.run_index = -1},
                .resume = ctl && ctl->resume_dir && ctl->resume_dir[0] ? ctl->resume_dir : NULL};
    snprintf(r.ckpt_dir, sizeof r.ckpt_dir, "%s/checkpoint", e->out_dir);
    /* a checkpoint's run file fills runs[0..run_index) */
    r.runs = calloc((size_t)SD_EXP_MAX_MODES * SD_EXP_MAX_SEEDS, sizeof *r.runs);
    sd_status st = r.runs ? run_all(&r) : SD_FAIL(SD_ERR_OOM, "run summaries");
    sd_trace_close_quietly(r.trace); /* a failed run still leaves a complete trace of what happened */
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    free(r.runs);
    free(r.compute);
    free(r.exp_json);
    sd_partition_free(&r.part);
    sd_dataset_free(&r.train);
    sd_dataset_free(&r.test);
    return st;
}
