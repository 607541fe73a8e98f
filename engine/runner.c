/* runner.c: runs an experiment: every mode x seed, each on the local backend (one thread per
 * device) or on the MPI backend (this process is one rank), then the comparison table,
 * summary.json, the resolved config and a gnuplot plot (accuracy against time per mode, buffer
 * occupancy) under the experiment's out_dir. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../comm/comm_local.h"
#include "distributed.h"
#include "report.h"
#include "trace.h"

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
static void write_summary(const sd_experiment *e, const sd_run_summary *runs, int nruns, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "{\"experiment\": \"%s\", \"target_accuracy\": %g, \"devices\": %d, \"runs\": [\n", e->name,
            e->target_accuracy, e->devices.count);
    for (int i = 0; i < nruns; i++) {
        const sd_run_summary *r = &runs[i];
        fprintf(f, "  {\"mode\": \"%s\", \"seed\": %llu, \"time_to_target_s\": ", mode_name(r->mode),
                (unsigned long long)r->seed);
        if (r->time_to_target_s >= 0) fprintf(f, "%.3f", r->time_to_target_s);
        else fprintf(f, "null");
        fprintf(f, ", \"final_accuracy\": %.6f, \"best_accuracy\": %.6f, \"samples_trained\": %llu, "
                   "\"samples_injected\": %llu, \"samples_dropped\": %llu, \"peak_buffer\": %llu, \"bytes_sent\": %llu, "
                   "\"steps\": %lld, \"skipped_steps\": %lld, \"bn_identical\": %s, \"clock_s\": %.3f, \"wall_s\": %.3f, \"speedup_vs_ddp\": ",
                r->final_accuracy, r->best_accuracy, (unsigned long long)r->samples_trained,
                (unsigned long long)r->samples_injected, (unsigned long long)r->samples_dropped,
                (unsigned long long)r->peak_buffer, (unsigned long long)r->bytes_sent, (long long)r->steps,
                (long long)r->skipped_steps, r->bn_identical ? "true" : "false", r->clock_s,
                r->wall_s);
        if (r->speedup_vs_ddp > 0) fprintf(f, "%.3f", r->speedup_vs_ddp);
        else fprintf(f, "null");
        fprintf(f, ", \"shared_per_device\": [");
        for (int j = 0; j < r->devices && j < 64; j++) fprintf(f, "%s%llu", j ? ", " : "", (unsigned long long)r->shared[j]);
        fprintf(f, "]}%s\n", i + 1 < nruns ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
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
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", path);
        if (system(cmd) != 0) fprintf(stderr, "note: gnuplot failed on %s\n", path);
    } else {
        fprintf(stderr, "note: gnuplot not installed (apt-get install gnuplot-nox); plot script left in %s\n", path);
    }
}

/* ---- the runner ---------------------------------------------------------------------------- */
sd_status sd_experiment_run(const sd_experiment *e, sd_comm *mpi_comm, FILE *table) {
    int rank = mpi_comm ? mpi_comm->rank : 0;
    if (mpi_comm && mpi_comm->size != e->devices.count)
        return SD_FAIL(SD_ERR_INVALID, "mpirun started %d ranks but devices.count is %d; run with -np %d", mpi_comm->size,
                       e->devices.count, e->devices.count);
    sd_dataset train = {0}, test = {0};
    sd_partition part = {0};
    int nruns = e->n_modes * e->n_seeds;
    sd_run_summary *runs = calloc((size_t)nruns, sizeof *runs);
    sd_status st = SD_OK;
    sd_trace *trace = NULL;
#define CHECK(x) do { if ((st = (x)) != SD_OK) goto done; } while (0)
    if (!runs) { st = SD_FAIL(SD_ERR_OOM, "run summaries"); goto done; }
    const char *root = e->data_root[0] ? e->data_root : NULL;
    CHECK(sd_dataset_open(e->dataset, root, true, &train));
    CHECK(sd_dataset_open(e->dataset, root, false, &test));
    if (e->eval_limit > 0 && e->eval_limit < test.n) {
        int64_t *ix = malloc((size_t)e->eval_limit * sizeof(int64_t));
        sd_dataset sub = {0};
        if (!ix) { st = SD_FAIL(SD_ERR_OOM, "eval subset"); goto done; }
        for (int64_t i = 0; i < e->eval_limit; i++) ix[i] = i;
        st = sd_dataset_subset(&test, ix, e->eval_limit, &sub);
        free(ix);
        if (st != SD_OK) goto done;
        sd_dataset_free(&test);
        test = sub;
    }
    if (rank == 0) CHECK(mkdirs(e->out_dir));
    if (rank == 0) {
        char path[1024];
        snprintf(path, sizeof path, "%s/config.json", e->out_dir);
        CHECK(sd_experiment_write_json(e, path));
    }
    if (mpi_comm) CHECK(sd_comm_barrier(mpi_comm)); /* out_dir exists before any rank opens its trace */
    {
        char path[1024]; /* one trace per process: the local backend's device threads share one */
        if (mpi_comm) snprintf(path, sizeof path, "%s/trace-rank%d.json", e->out_dir, rank);
        else snprintf(path, sizeof path, "%s/trace.json", e->out_dir);
        CHECK(sd_trace_open(path, &trace));
        (void)sd_trace_info(trace, "clock", e->clock == SD_EXP_CLOCK_REAL ? "real" : "virtual");
        (void)sd_trace_info(trace, "experiment", e->name);
    }
    int n = e->devices.count;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int total = e->threads > 0 ? e->threads : (int)(cores > 0 ? cores : 1);
    int per_device = mpi_comm ? total : (total / n > 0 ? total / n : 1);
    int k = 0;
    for (int si = 0; si < e->n_seeds; si++) {
        uint64_t seed = e->seeds[si];
        sd_partition_free(&part);
        if (e->partition.kind == SD_EXP_PART_SLICES)
            CHECK(sd_partition_slices(&train, n, e->partition.classes_per_device, seed, &part));
        else if (e->partition.kind == SD_EXP_PART_DIRICHLET)
            CHECK(sd_partition_dirichlet(&train, n, e->partition.alpha, seed, &part));
        else
            CHECK(sd_partition_iid(&train, n, seed, &part));
        if (rank == 0 && table) {
            fprintf(table, "seed %llu: class histogram per device (%s partition)\n", (unsigned long long)seed,
                    e->partition.kind == SD_EXP_PART_SLICES ? "slices" : e->partition.kind == SD_EXP_PART_DIRICHLET ? "dirichlet" : "iid");
            sd_partition_print(&part, &train, table);
            fflush(table);
        }
        for (int mi = 0; mi < e->n_modes; mi++, k++) {
            char dir[1024];
            snprintf(dir, sizeof dir, "%s/%s-seed%llu", e->out_dir, mode_name(e->modes[mi]), (unsigned long long)seed);
            if (rank == 0) CHECK(mkdirs(dir));
            if (mpi_comm) CHECK(sd_comm_barrier(mpi_comm));
            sd_dist_inputs in = {.e = e, .mode = e->modes[mi], .seed = seed, .train = &train, .test = &test,
                                 .part = &part, .run_dir = dir, .threads_per_device = per_device,
                                 .quiet = rank != 0 || !isatty(STDERR_FILENO), .trace = trace, .trace_pid = k + 1};
            {
                char pname[64];
                snprintf(pname, sizeof pname, "%s seed %llu", mode_name(e->modes[mi]), (unsigned long long)seed);
                (void)sd_trace_meta(trace, k + 1, -1, pname);
            }
            if (rank == 0 && table) {
                fprintf(table, "run %s seed %llu: %d devices, %d kernel thread(s) each\n", mode_name(e->modes[mi]),
                        (unsigned long long)seed, n, per_device);
                fflush(table);
            }
            if (mpi_comm) CHECK(sd_dist_device_run(&in, mpi_comm, &runs[k]));
            else CHECK(run_local(&in, &runs[k]));
        }
    }
    if (sd_trace_close(trace) != SD_OK) fprintf(stderr, "note: %s\n", sd_last_error_brief());
    trace = NULL;
    /* speedups: each seed's scadles time against the same seed's ddp time */
    for (int i = 0; i < nruns; i++) {
        for (int j = 0; j < nruns; j++)
            if (runs[j].mode == SD_EXP_MODE_DDP && runs[j].seed == runs[i].seed && runs[j].time_to_target_s > 0 &&
                runs[i].time_to_target_s > 0)
                runs[i].speedup_vs_ddp = runs[j].time_to_target_s / runs[i].time_to_target_s;
    }
    if (rank == 0) {
        char path[1024];
        snprintf(path, sizeof path, "%s/summary.json", e->out_dir);
        write_summary(e, runs, nruns, path);
        if (table) print_table(runs, nruns, e->target_accuracy, table);
        write_plot(e, runs, nruns);
        if (sd_report_generate(e->out_dir) != SD_OK) fprintf(stderr, "note: report: %s\n", sd_last_error_brief());
        else if (table) fprintf(table, "report: %s/report.html; timeline: %s/trace%s.json\n", e->out_dir, e->out_dir,
                                mpi_comm ? "-rank*" : "");
        if (table) fprintf(table, "outputs: %s/summary.json, %s/accuracy.png, per-run metrics.jsonl and eval.jsonl\n",
                           e->out_dir, e->out_dir);
    }
#undef CHECK
done:
    sd_trace_close_quietly(trace); /* a failed run still leaves a complete trace of what happened */
    if (st != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    free(runs);
    sd_partition_free(&part);
    sd_dataset_free(&train);
    sd_dataset_free(&test);
    return st;
}
