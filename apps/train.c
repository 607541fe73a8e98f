/* train.c: scadles-train, the main job. Two uses:
 *   scadles-train --config EXPERIMENT.json [--set key=value ...] [--resume DIR] [--stop-at STEP]
 *       a distributed ScaDLES experiment (every listed mode and seed, comparison table,
 *       summary.json, plot); under mpirun with "backend": "mpi", one rank per device; started
 *       torchrun-style (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT set, not under mpirun), one
 *       rank per device over the TCP backend (docs/comm.md). SIGINT, SIGTERM or SIGUSR1 (what
 *       mpirun forwards) stop it after the current step with a checkpoint, and it says how to
 *       resume (docs/checkpoints.md).
 *   scadles-train [--model ... --dataset ...]
 *       one device training a model on a dataset with SGD and a schedule: a one-device
 *       experiment (engine/train.h, docs/training.md), with the same outputs and checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "apps/cli/cli.h"
#include "comm/comm_tcp.h"
#include "engine/dist_checkpoint.h"
#include "engine/distributed.h"
#include "engine/experiment.h"
#include "engine/models.h"
#include "engine/report.h"
#include "engine/signals.h"
#include "engine/train.h"
#ifdef SCADLES_HAVE_MPI
#include <mpi.h>

#include "comm/comm_mpi.h"
#endif

/* Appends one shell word to buf, quoted when it needs to be. */
static void shell_word(char *buf, size_t cap, const char *w) {
    size_t len = strlen(buf);
    bool plain = *w != '\0';
    for (const char *p = w; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=,:@+%", *p)) plain = false;
    if (plain) {
        snprintf(buf + len, cap - len, "%s%s", len ? " " : "", w);
        return;
    }
    len += (size_t)snprintf(buf + len, cap - len, "%s'", len ? " " : "");
    for (const char *p = w; *p && len + 5 < cap; p++) {
        if (*p == '\'') len += (size_t)snprintf(buf + len, cap - len, "'\\''");
        else buf[len++] = *p, buf[len] = '\0';
    }
    if (len + 1 < cap) snprintf(buf + len, cap - len, "'");
}

/* The stop message: where the checkpoint is and the command that continues the run. */
static void print_stopped(const sd_experiment *e, const sd_run_control *ctl, const char *argv0, const char *path,
                          const char **sets, int nsets) {
    char cmd[4096] = "";
    if (e->backend == SD_EXP_BACKEND_MPI) {
        char np[32];
        snprintf(np, sizeof np, "%d", e->devices.count);
        shell_word(cmd, sizeof cmd, "mpirun");
        shell_word(cmd, sizeof cmd, "-np");
        shell_word(cmd, sizeof cmd, np);
    }
    shell_word(cmd, sizeof cmd, argv0);
    shell_word(cmd, sizeof cmd, "--config");
    shell_word(cmd, sizeof cmd, path);
    for (int i = 0; i < nsets; i++) {
        shell_word(cmd, sizeof cmd, "--set");
        shell_word(cmd, sizeof cmd, sets[i]);
    }
    shell_word(cmd, sizeof cmd, "--resume");
    shell_word(cmd, sizeof cmd, ctl->checkpoint_dir);
    char why[64];
    if (ctl->stop_signal) snprintf(why, sizeof why, "%s", sd_signals_name(ctl->stop_signal));
    else snprintf(why, sizeof why, "--stop-at %lld", (long long)ctl->stop_at);
    printf("\nstopped (%s): %s seed %llu after step %lld; every device stopped after the same step.\n"
           "checkpoint: %s (one file per rank + %s)\n"
           "resume with:\n  %s\n%s",
           why, sd_exp_mode_name(ctl->stopped_mode), (unsigned long long)ctl->stopped_seed,
           (long long)ctl->stopped_step, ctl->checkpoint_dir, "run.safetensors", cmd,
           e->backend == SD_EXP_BACKEND_TCP ? "in every rank, started as before (the same WORLD_SIZE, RANK, MASTER_ADDR "
                                              "and MASTER_PORT, e.g. by torchrun)\n" : "");
    fflush(stdout);
}

/* Started by mpirun (or another MPI launcher), from the variables it sets. */
static bool under_mpi_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("MPI_LOCALNRANKS");
}

/* FNV-1a of the checkpoint identity (the resolved experiment, kernel threads left out): ranks
 * started with different experiments fail at the rendezvous instead of training apart. */
static uint64_t experiment_tag(const sd_experiment *e) {
    char *json = NULL;
    uint64_t h = 0xcbf29ce484222325ull;
    if (sd_dist_ckpt_experiment_json(e, &json) != SD_OK) {
        sd_clear_error();
        return 0;
    }
    for (const char *p = json; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    free(json);
    return h ? h : 1;
}

/* A torchrun-style launch: this process is rank o->rank of the experiment over the TCP backend.
 * Exit codes as run_experiment's; a stop by a signal is 0, as under mpirun (torchrun calls any
 * other status a failure and stops the other ranks, which may still be writing their checkpoint). */
static int run_tcp(const sd_experiment *e, sd_comm_tcp_options *o, sd_run_control *ctl, const char *argv0,
                   const char *path, const char **sets, int nsets) {
    sd_status st = sd_experiment_check_ranks(e, o->world_size);
    if (st != SD_OK) {
        fprintf(stderr, "scadles-train: rank %d: %s\n", o->rank, sd_last_error_brief());
        return 2;
    }
    o->timeout_s = e->comm_timeout_s;
    if (!getenv("SCADLES_CONNECT_TIMEOUT_S")) o->connect_timeout_s = e->comm_timeout_s;
    o->job_tag = experiment_tag(e);
    sd_comm *comm = NULL;
    st = sd_comm_tcp_create(o, &comm);
    if (st != SD_OK) {
        fprintf(stderr, "scadles-train: %s\n", sd_last_error_brief());
        return 1;
    }
    if (comm->rank == 0)
        printf("backend tcp: rank 0 of %d, rendezvous at %s:%d (torchrun-style launch)\n", comm->size, o->master_addr,
               o->master_port);
    st = sd_signals_install();
    if (st == SD_OK) st = sd_experiment_run_ctl(e, comm, comm->rank == 0 ? stdout : NULL, ctl);
    int rc = 0;
    if (st != SD_OK) {
        char why[2048], me[32];
        snprintf(why, sizeof why, "%s", sd_last_error_brief());
        snprintf(me, sizeof me, "rank %d: ", comm->rank);
        fprintf(stderr, "scadles-train: %s%s\n", strncmp(why, me, strlen(me)) ? me : "", why);
        sd_comm_tcp_abort(comm, why); /* the others stop at their next collective, with this reason */
        rc = 1;
    } else if (ctl->stopped && comm->rank == 0) {
        print_stopped(e, ctl, argv0, path, sets, nsets);
    }
    sd_comm_destroy(comm);
    return rc;
}

/* --config: load, override, resolve, run. Returns the exit code: 0 done (or stopped by --stop-at,
 * or by a signal under MPI or torchrun), 128 + the signal when a signal stopped a local run
 * (checkpointed, as a shell expects of an interrupted program), 1 failed, 2 bad usage. */
static int run_experiment(const char *argv0, const char *path, const char **sets, int nsets, const char *resume,
                          int64_t stop_at) {
    sd_experiment *e = malloc(sizeof *e);
    if (!e) return 1;
    int rc = 1;
    sd_run_control ctl = {.resume_dir = resume, .stop_at = stop_at, .stop_flag = sd_signals_flag()};
    sd_status st = sd_experiment_load_file(path, e);
    for (int i = 0; st == SD_OK && i < nsets; i++) st = sd_experiment_set(e, sets[i]);
    /* the launch decides: torchrun's variables (outside an MPI job that asks for backend mpi) make
     * this process one rank over TCP, whatever the file says */
    sd_comm_tcp_options tcp = sd_comm_tcp_default_options();
    bool torchrun = false;
    const bool mpi_job = st == SD_OK && e->backend == SD_EXP_BACKEND_MPI && under_mpi_launcher();
    if (st == SD_OK && !mpi_job) st = sd_comm_tcp_env(&tcp, &torchrun);
    if (st == SD_OK && torchrun) {
        if (e->backend == SD_EXP_BACKEND_MPI && tcp.rank == 0)
            fprintf(stderr, "note: %s says backend mpi, but this process was started torchrun-style (WORLD_SIZE, RANK) "
                            "outside mpirun: running on the TCP backend\n", path);
        st = sd_experiment_set(e, "backend=tcp");
    } else if (st == SD_OK && e->backend == SD_EXP_BACKEND_TCP) {
        st = SD_FAIL(SD_ERR_INVALID, "%s: backend tcp needs a torchrun-style launch: WORLD_SIZE, RANK, MASTER_ADDR and "
                     "MASTER_PORT set in every process (torchrun sets them; docs/comm.md, \"TCP backend\"); for one "
                     "process use backend local, under mpirun backend mpi", path);
    }
    if (st == SD_OK) st = sd_experiment_resolve(e);
    if (st != SD_OK) {
        fprintf(stderr, "scadles-train: %s\n", sd_last_error_brief());
        free(e);
        return 2;
    }
    if (e->backend == SD_EXP_BACKEND_TCP) {
        rc = run_tcp(e, &tcp, &ctl, argv0, path, sets, nsets);
    } else if (e->backend == SD_EXP_BACKEND_MPI) {
#ifdef SCADLES_HAVE_MPI
        int provided = 0, ranks = 0;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        MPI_Comm_size(MPI_COMM_WORLD, &ranks);
        sd_comm *comm = NULL;
        st = sd_experiment_check_ranks(e, ranks);
        if (st == SD_OK) st = sd_comm_mpi_create(MPI_COMM_WORLD, &comm);
        if (st == SD_OK) st = sd_signals_install();
        if (st == SD_OK) st = sd_experiment_run_ctl(e, comm, comm->rank == 0 ? stdout : NULL, &ctl);
        if (st != SD_OK) {
            fprintf(stderr, "scadles-train: %s\n", sd_last_error_brief());
            if (comm) sd_comm_destroy(comm);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (ctl.stopped && comm->rank == 0) print_stopped(e, &ctl, argv0, path, sets, nsets);
        sd_comm_destroy(comm);
        MPI_Finalize();
        rc = 0; /* stopped by a signal too: mpirun would call any other exit status a failure and abort the job */
#else
        fprintf(stderr, "scadles-train: %s asks for \"backend\": \"mpi\" but this build has no MPI; install "
                        "libopenmpi-dev and reconfigure, or use --set backend=local\n", path);
        rc = 2;
#endif
    } else {
        st = sd_signals_install();
        if (st == SD_OK) st = sd_experiment_run_ctl(e, NULL, stdout, &ctl);
        if (st != SD_OK) fprintf(stderr, "scadles-train: %s\n", sd_last_error_brief());
        if (st == SD_OK && ctl.stopped) print_stopped(e, &ctl, argv0, path, sets, nsets);
        rc = st != SD_OK ? 1 : ctl.stopped && ctl.stop_signal ? 128 + ctl.stop_signal : 0;
    }
    sd_signals_restore();
    free(e);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-train --config EXPERIMENT.json [--set key=value ...]   (docs/experiments.md)\n"
            "                     [--resume CHECKPOINT_DIR] [--stop-at STEP]       (docs/checkpoints.md)\n"
            "       scadles-train --report DIR                                       (report.html of an experiment's out_dir)\n"
            "       scadles-train [options]                                          (one device, docs/training.md)\n"
            "  --model NAME        %s (default fmnist_cnn)\n"
            "  --width W           channel multiplier (default 1)\n"
            "  --dataset NAME      fashion-mnist | mnist | cifar10 | cifar100 (default fashion-mnist)\n"
            "  --data-root DIR     where the dataset files are (default: the dataset's usual place)\n"
            "  --epochs E          (default 5)            --steps S     optimizer steps instead of epochs\n"
            "  --batch B           (default 64)           --eval-batch B (default 500)\n"
            "  --lr LR             (default 0.02)         --schedule cosine (default)|constant|multistep:S1,S2[@gamma]\n"
            "  --warmup STEPS      linear warm-up         --momentum M (0.9)  --weight-decay WD (5e-4)\n"
            "  --nesterov          --no-augment           --train-limit N  --eval-limit N\n"
            "  --eval-every STEPS  (default: each epoch)  --checkpoint-every STEPS (default: only when stopped)\n"
            "  --seed S            (default 1)            --threads T (default: all cores)\n"
            "  --backend cpu|cuda  (default cpu; the GPU: CUDA_VISIBLE_DEVICES)\n"
            "  --out DIR           run directory (default runs/train)\n"
            "  --resume DIR        continue the run whose --out was DIR (its config.json and checkpoint/)\n"
            "  --stop-at STEP      end this invocation after STEP (checkpointed; resume later)\n"
            "  --quiet             no live progress line\n"
            "Every option sets a key of a one-device experiment (docs/training.md lists them); Ctrl-C, SIGTERM\n"
            "or SIGHUP stop after the current step with a checkpoint.\n",
            sd_model_names());
}

/* The single-device trainer's options and the experiment keys they set (docs/training.md). */
static const struct {
    const char *flag, *key, *fixed; /* fixed: the value of a flag that takes none */
} FLAGS[] = {
    {"--model", "model", NULL}, {"--width", "width", NULL}, {"--dataset", "dataset", NULL},
    {"--data-root", "data_root", NULL}, {"--epochs", "epochs", NULL}, {"--steps", "max_steps", NULL},
    {"--batch", "batch", NULL}, {"--eval-batch", "eval_batch", NULL}, {"--lr", "optimizer.lr", NULL},
    {"--schedule", "optimizer.schedule", NULL}, {"--warmup", "optimizer.warmup_steps", NULL},
    {"--momentum", "optimizer.momentum", NULL}, {"--weight-decay", "optimizer.weight_decay", NULL},
    {"--nesterov", "optimizer.nesterov", "true"}, {"--no-augment", "augment", "false"},
    {"--train-limit", "train_limit", NULL}, {"--eval-limit", "eval_limit", NULL},
    {"--eval-every", "eval_every_steps", NULL}, {"--checkpoint-every", "checkpoint_every_steps", NULL},
    {"--seed", "seeds", NULL}, {"--threads", "threads", NULL}, {"--backend", "compute_backend", NULL},
    {"--out", "out_dir", NULL},
};
#define NFLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

static int num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end = NULL;
    double x = v ? strtod(v, &end) : 0;
    if (!v || !*v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "scadles-train: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, v ? v : "(nothing)");
        return -1;
    }
    *out = x;
    return 0;
}

/* scadles-train [options]: one device. Exit codes as run_experiment's. */
static int train_one_device(const char *argv0, const sd_cli *cli) {
    sd_train_option *opts = calloc(cli->n > 0 ? (size_t)cli->n : 1, sizeof *opts);
    sd_train_request rq = {.opts = opts, .stop_flag = sd_signals_flag(), .log = stdout};
    if (!opts) return 1;
    int rc = 2;
    for (int i = 0; i < cli->n; i++) {
        const char *a = cli->args[i].flag, *v = cli->args[i].value;
        double x = 0;
        if (!strcmp(a, "--quiet")) { rq.quiet = true; continue; }
        if (!strcmp(a, "--stop-at")) {
            if (num(a, v, 1, 1e15, &x)) goto out;
            rq.stop_at = (int64_t)x;
            continue;
        }
        if (!strcmp(a, "--resume")) { rq.resume = v; continue; }
        int f = 0;
        while (f < NFLAGS && strcmp(a, FLAGS[f].flag)) f++;
        if (f == NFLAGS) {
            fprintf(stderr, "scadles-train: unknown option '%s' (see --help)\n", a);
            goto out;
        }
        opts[rq.nopts++] = (sd_train_option){FLAGS[f].flag, FLAGS[f].key, FLAGS[f].fixed ? FLAGS[f].fixed : v};
    }
    sd_experiment *e = malloc(sizeof *e);
    sd_run_control ctl;
    sd_status st = e ? sd_train_experiment(&rq, e) : SD_FAIL(SD_ERR_OOM, "experiment");
    if (st != SD_OK) {
        fprintf(stderr, "scadles-train: %s\n", sd_last_error_brief());
        free(e);
        goto out;
    }
    st = sd_signals_install();
    if (st == SD_OK) st = sd_train_run(&rq, e, &ctl);
    sd_signals_restore();
    if (st != SD_OK) {
        fprintf(stderr, "\nscadles-train: %s\n", sd_last_error_brief());
        rc = 1;
    } else if (ctl.stopped) {
        printf("\nstopped (%s) after step %lld; checkpoint: %s\nresume with:\n  %s --resume %s\n",
               ctl.stop_signal ? sd_signals_name(ctl.stop_signal) : "--stop-at", (long long)ctl.stopped_step,
               ctl.checkpoint_dir, argv0, e->out_dir);
        rc = ctl.stop_signal ? 128 + ctl.stop_signal : 0;
    } else {
        printf("final: top-1 %.2f%%  top-5 %.2f%%  test loss %.4f  (%lld steps; outputs in %s)\n",
               100 * ctl.last.final_accuracy, 100 * ctl.last.final_top5, ctl.last.final_loss,
               (long long)ctl.last.steps, e->out_dir);
        rc = 0;
    }
    free(e);
out:
    free(opts);
    return rc;
}

/* --config: the experiment file, then only --set, --resume and --stop-at. */
static int config_mode(const char *argv0, const sd_cli *cli) {
    const char *config = NULL, *resume = NULL;
    const char **sets = calloc(cli->n > 0 ? (size_t)cli->n : 1, sizeof *sets);
    int nsets = 0, rc = 2;
    double stop_at = 0;
    if (!sets) return 1;
    for (int i = 0; i < cli->n; i++) {
        const char *a = cli->args[i].flag, *v = cli->args[i].value;
        if (!strcmp(a, "--set")) {
            sets[nsets++] = v;
        } else if (!strcmp(a, "--resume")) {
            resume = v;
        } else if (!strcmp(a, "--config")) {
            if (config) {
                fprintf(stderr, "scadles-train: --config is given twice ('%s' and '%s'); one experiment file per run "
                        "(change fields with --set key=value)\n", config, v);
                goto out;
            }
            struct stat sb;
            if (stat(v, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                fprintf(stderr, "scadles-train: --config %s is a directory; give an experiment file (e.g. "
                        "apps/experiments/uniform_s1.json), or --resume %s/checkpoint to continue a run\n", v, v);
                goto out;
            }
            config = v;
        } else if (!strcmp(a, "--stop-at")) {
            if (num(a, v, 1, 1e15, &stop_at)) goto out;
        } else {
            fprintf(stderr, "scadles-train: with --config only --set key=value, --resume DIR and --stop-at STEP may "
                            "follow (got '%s'); see docs/experiments.md\n", a);
            goto out;
        }
    }
    if (resume && !resume[0]) {
        fprintf(stderr, "scadles-train: --resume needs the checkpoint directory a stopped run printed\n");
        goto out;
    }
    rc = run_experiment(argv0, config, sets, nsets, resume, (int64_t)stop_at);
out:
    free(sets);
    return rc;
}

/* --report DIR, alone (docs/observability.md). */
static int report_mode(const sd_cli *cli) {
    if (cli->n != 1) {
        fprintf(stderr, "usage: scadles-train --report DIR   (DIR: an experiment's out_dir, holding summary.json)\n");
        return 2;
    }
    const char *dir = cli->args[0].value;
    if (sd_report_generate(dir) != SD_OK) {
        fprintf(stderr, "scadles-train: %s\n", sd_last_error_brief());
        return 1;
    }
    printf("report: %s/report.html\n", dir);
    return 0;
}

int main(int argc, char **argv) {
    /* every option of every use; which may go together is checked below (sd_cli: --help, --version, syntax) */
    sd_cli_option options[NFLAGS + 7] = {
        {"--config", true, "an experiment file, e.g. apps/experiments/uniform_s1.json"},
        {"--set", true, "key=value"},
        {"--resume", true, "the directory a stopped run printed"},
        {"--stop-at", true, "a step"},
        {"--report", true, "an experiment's out_dir"},
        {"--quiet", false, NULL},
    };
    for (int f = 0; f < NFLAGS; f++) options[6 + f] = (sd_cli_option){FLAGS[f].flag, !FLAGS[f].fixed, NULL};
    sd_cli cli;
    sd_cli_parse(&cli, "train", usage, options, argc, argv);
    int rc;
    if (sd_cli_count(&cli, "--report")) {
        rc = report_mode(&cli);
    } else if (sd_cli_count(&cli, "--config")) {
        rc = config_mode(argv[0], &cli);
    } else if (sd_cli_count(&cli, "--set")) {
        fprintf(stderr, "scadles-train: --set needs --config (one-device runs take options; see --help)\n");
        rc = 2;
    } else {
        rc = train_one_device(argv[0], &cli);
    }
    sd_cli_free(&cli);
    return rc;
}
