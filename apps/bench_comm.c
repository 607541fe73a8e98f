/* bench_comm.c: scadles-bench_comm, time and bus bandwidth of the collectives (allreduce and
 * allgatherv) over message sizes, on the local backend with 2, 4 and 8 device threads, on
 * the MPI backend when started under mpirun, or on the TCP backend when started torchrun-style
 * (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT: comm/comm_tcp.h). Definitions as nccl-tests: size is the buffer of
 * one rank (allreduce) or the gathered output of one rank (allgather, each rank sending
 * size/n); algbw = size / time; busbw = algbw * 2(n-1)/n (allreduce), algbw * (n-1)/n
 * (allgather); time is the slowest rank's mean per call. Every size is validated with exactly
 * checkable inputs (small integers in floats, byte patterns) before it is timed; wrong elements
 * are counted over all ranks and printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "apps/cli/cli.h"
#include "base/clock.h"
#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/comm_mpi.h"
#include "comm/comm_tcp.h"

typedef struct bench_opts {
    int threads[16], nthreads;
    size_t min_bytes, max_bytes;
    int factor;
    double target_s; /* time spent per size (sets the iteration count) */
    int warmup;
    int do_allreduce, do_allgather;
    int mpi;                 /* run on MPI (default when launched by mpirun) */
    int reduce_modes;        /* MPI: bit 0 ordered, bit 1 native */
    double timeout_s;        /* MPI: collective timeout, 0 = blocking calls */
} bench_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: scadles-bench_comm [--threads 2,4,8] [--min 1K] [--max 64M] [--factor 4] [--time S]\n"
            "                          [--warmup W] [--ops allreduce,allgatherv] [--mpi]\n"
            "                          [--reduce ordered|native|both] [--timeout S]\n"
            "  Local backend: for each thread count, allreduce and allgatherv from --min to --max bytes\n"
            "  (multiplying by --factor), each size validated then timed for about --time seconds\n"
            "  (default 0.25). Under mpirun (or with --mpi) the MPI backend over MPI_COMM_WORLD instead:\n"
            "  --reduce picks the allreduce (default both), --timeout the collective timeout (default 60,\n"
            "  0: blocking MPI calls). Sizes take K, M, G suffixes (powers of 1024).\n"
            "  e.g.  scadles-bench_comm --threads 2,4,8\n"
            "        mpirun -np 4 scadles-bench_comm --max 16M\n"
            "  Started torchrun-style (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT set in each process, not under\n"
            "  mpirun), the TCP backend over those ranks, --timeout as for MPI:\n"
            "        torchrun --nproc-per-node=4 --no-python scadles-bench_comm --max 16M\n");
}

static int parse_size(const char *v, size_t *out) {
    char *end = NULL;
    unsigned long long x = v ? strtoull(v, &end, 10) : 0;
    if (!v || end == v) return -1;
    if (*end == 'K' || *end == 'k') x <<= 10, end++;
    else if (*end == 'M' || *end == 'm') x <<= 20, end++;
    else if (*end == 'G' || *end == 'g') x <<= 30, end++;
    if (*end) return -1;
    *out = (size_t)x;
    return 0;
}

static int launched_by_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("MPI_LOCALNRANKS");
}

/* ---- one rank's benchmark --------------------------------------------------------------------- */
typedef struct rank_bufs { float *red; unsigned char *gsend, *grecv; size_t *sizes; } rank_bufs;

/* Rank 0 decides, everyone follows (so all ranks loop the same number of times). */
static sd_status agree_int(sd_comm *c, int *v) {
    TRY(sd_comm_broadcast(c, v, sizeof *v, 0));
    return SD_OK;
}

/* The slowest rank's seconds. */
static sd_status slowest(sd_comm *c, double secs, double *out) {
    uint64_t mine = (uint64_t)(secs * 1e9), all[1024];
    if (c->size > 1024) return SD_FAIL(SD_ERR_INVALID, "bench: at most 1024 ranks");
    TRY(sd_comm_allgather_u64(c, mine, all));
    uint64_t m = 0;
    for (int j = 0; j < c->size; j++) m = all[j] > m ? all[j] : m;
    *out = (double)m * 1e-9;
    return SD_OK;
}

typedef sd_status (*op_fn)(sd_comm *c, rank_bufs *b, size_t bytes);

static sd_status op_allreduce(sd_comm *c, rank_bufs *b, size_t bytes) {
    TRY(sd_comm_allreduce_sum(c, b->red, bytes / sizeof(float)));
    return SD_OK;
}

static sd_status op_allgather(sd_comm *c, rank_bufs *b, size_t bytes) {
    size_t per = bytes / (size_t)c->size;
    for (int j = 0; j < c->size; j++) b->sizes[j] = per;
    TRY(sd_comm_allgatherv(c, b->gsend, per, b->grecv, b->sizes, NULL));
    return SD_OK;
}

/* Validation: exact inputs, one call, count wrong elements on this rank. */
static sd_status validate(sd_comm *c, rank_bufs *b, int is_allreduce, size_t bytes, long *wrong) {
    *wrong = 0;
    if (is_allreduce) {
        size_t count = bytes / sizeof(float);
        for (size_t i = 0; i < count; i++) b->red[i] = (float)((c->rank + 1) * (int)(i % 13 + 1));
        TRY(op_allreduce(c, b, bytes));
        float tri = (float)(c->size * (c->size + 1) / 2);
        for (size_t i = 0; i < count; i++) *wrong += b->red[i] != (float)(i % 13 + 1) * tri;
        memset(b->red, 0, count * sizeof(float)); /* timed calls then add zeros: no growth to inf */
    } else {
        size_t per = bytes / (size_t)c->size;
        for (size_t k = 0; k < per; k++) b->gsend[k] = (unsigned char)(c->rank * 31 + (int)k * 7 + 1);
        memset(b->grecv, 0, per * (size_t)c->size);
        TRY(op_allgather(c, b, bytes));
        for (int j = 0; j < c->size; j++)
            for (size_t k = 0; k < per; k++) *wrong += b->grecv[(size_t)j * per + k] != (unsigned char)(j * 31 + (int)k * 7 + 1);
    }
    return SD_OK;
}

static sd_status bench_rank(sd_comm *c, const bench_opts *o, const char *label) {
    int n = c->size;
    rank_bufs b = {0};
    b.red = malloc(o->max_bytes + 64);
    b.grecv = malloc(o->max_bytes + 64);
    b.gsend = malloc(o->max_bytes / (size_t)n + 64);
    b.sizes = malloc(sizeof(size_t) * (size_t)n);
    sd_status s = SD_OK;
    if (!b.red || !b.grecv || !b.gsend || !b.sizes) {
        s = SD_FAIL(SD_ERR_OOM, "bench: buffers of %zu bytes", o->max_bytes);
        goto done;
    }
    for (int which = 0; which < 2; which++) {
        int is_ar = which == 0;
        if ((is_ar && !o->do_allreduce) || (!is_ar && !o->do_allgather)) continue;
        if (c->rank == 0) {
            printf("\n# %s, %d ranks: %s\n", label, n, is_ar ? "allreduce (sum, float)" : "allgatherv (equal blocks, bytes)");
            printf("# %12s %12s %7s %12s %12s %12s %8s\n", "size(B)", is_ar ? "count(f)" : "per rank(B)", "iters", "time(us)",
                   "algbw(GB/s)", "busbw(GB/s)", "#wrong");
        }
        for (size_t bytes = o->min_bytes; bytes <= o->max_bytes; bytes *= (size_t)o->factor) {
            size_t sz = is_ar ? bytes / sizeof(float) * sizeof(float) : bytes / (size_t)n * (size_t)n;
            op_fn op = is_ar ? op_allreduce : op_allgather;
            long wrong = 0;
            if ((s = validate(c, &b, is_ar, sz, &wrong)) != SD_OK) goto done;
            int wrong_all = 0;
            if ((s = sd_comm_vote(c, wrong > (1L << 24) ? (1 << 24) : (int)wrong, &wrong_all)) != SD_OK) goto done;
            for (int w = 0; w < o->warmup; w++)
                if ((s = op(c, &b, sz)) != SD_OK) goto done;
            /* Iterations: one timed call on rank 0 sets how many fit in target_s. */
            double t0 = sd_clock_now();
            if ((s = op(c, &b, sz)) != SD_OK) goto done;
            double one = sd_clock_now() - t0;
            int iters = (int)(o->target_s / (one > 1e-7 ? one : 1e-7));
            iters = iters < 3 ? 3 : iters > 10000 ? 10000 : iters;
            if ((s = agree_int(c, &iters)) != SD_OK || (s = sd_comm_barrier(c)) != SD_OK) goto done;
            t0 = sd_clock_now();
            for (int it = 0; it < iters; it++)
                if ((s = op(c, &b, sz)) != SD_OK) goto done;
            double el = 0;
            if ((s = slowest(c, sd_clock_now() - t0, &el)) != SD_OK) goto done;
            double t = el / iters, algbw = (double)sz / t * 1e-9;
            double busbw = algbw * (is_ar ? 2.0 * (n - 1) / n : (double)(n - 1) / n);
            if (c->rank == 0)
                printf("  %12zu %12zu %7d %12.2f %12.3f %12.3f %8d\n", sz, is_ar ? sz / sizeof(float) : sz / (size_t)n, iters,
                       t * 1e6, algbw, busbw, wrong_all);
            if (wrong_all) s = SD_FAIL(SD_ERR_NUMERIC, "bench: %d wrong elements at %zu bytes", wrong_all, sz);
            if (s != SD_OK) goto done;
            if (bytes > o->max_bytes / (size_t)o->factor) break;
        }
    }
done:
    free(b.red);
    free(b.grecv);
    free(b.gsend);
    free(b.sizes);
    return s;
}

/* ---- local backend ---------------------------------------------------------------------------- */
typedef struct local_job { sd_comm_local_group *g; sd_comm *c; const bench_opts *o; sd_status st; char err[2048]; } local_job;

static void *local_thread(void *p) {
    local_job *j = p;
    char label[64];
    snprintf(label, sizeof label, "backend local (device threads)");
    j->st = bench_rank(j->c, j->o, label);
    if (j->st != SD_OK) {
        snprintf(j->err, sizeof j->err, "%s", sd_last_error());
        sd_comm_local_abort(j->g, j->c->rank, "its benchmark failed"); /* the others stop at once */
    }
    return NULL;
}

static int run_local(const bench_opts *o) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("# scadles-bench_comm: local backend, %ld cores online; busbw here is memory traffic between threads of one\n"
           "# process (rank-order sums), not a network\n",
           cores);
    int rc = 0;
    for (int t = 0; t < o->nthreads; t++) {
        int n = o->threads[t];
        sd_comm_local_group *g = NULL;
        if (sd_comm_local_group_create(n, &g) != SD_OK) {
            fprintf(stderr, "scadles-bench_comm: %s\n", sd_last_error());
            return 1;
        }
        local_job *jobs = calloc((size_t)n, sizeof *jobs);
        pthread_t *th = calloc((size_t)n, sizeof *th);
        for (int r = 0; r < n; r++) {
            jobs[r] = (local_job){.g = g, .c = sd_comm_local_get(g, r), .o = o, .st = SD_OK};
            pthread_create(&th[r], NULL, local_thread, &jobs[r]);
        }
        for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < n; r++)
            if (jobs[r].st != SD_OK) {
                fprintf(stderr, "scadles-bench_comm: rank %d: %s\n", r, jobs[r].err);
                rc = 1;
            }
        free(jobs);
        free(th);
        sd_comm_local_group_destroy(g);
        if (rc) break;
    }
    return rc;
}

/* ---- TCP backend ------------------------------------------------------------------------------ */
static int run_tcp(const bench_opts *o, sd_comm_tcp_options *t) {
    t->timeout_s = o->timeout_s;
    sd_comm *c = NULL;
    sd_status s = sd_comm_tcp_create(t, &c);
    if (s == SD_OK && c->rank == 0)
        printf("# scadles-bench_comm: TCP backend, %d ranks, rendezvous at %s:%d; timeout %g s\n", c->size, t->master_addr,
               t->master_port, o->timeout_s);
    if (s == SD_OK) s = bench_rank(c, o, "backend tcp, rank-ordered allreduce (reduce-scatter + allgather, direct)");
    if (s != SD_OK) {
        fprintf(stderr, "scadles-bench_comm: rank %d: %s\n", t->rank, sd_last_error_brief());
        sd_comm_tcp_abort(c, "its benchmark failed");
    }
    sd_comm_destroy(c);
    return s == SD_OK ? 0 : 1;
}

/* ---- MPI backend ------------------------------------------------------------------------------ */
static int run_mpi(const bench_opts *o, int *argc, char ***argv) {
#ifdef SCADLES_HAVE_MPI
    MPI_Init(argc, argv);
    int rank = 0, size = 1, rc = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) {
        char ver[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = 0;
        MPI_Get_library_version(ver, &len);
        char *nl = strchr(ver, '\n');
        if (nl) *nl = '\0';
        printf("# scadles-bench_comm: MPI backend, %d ranks, %s; timeout %g s (%s calls)\n", size, ver, o->timeout_s,
               o->timeout_s > 0 ? "non-blocking, polled" : "blocking");
    }
    for (int m = 0; m < 2 && rc == 0; m++) {
        if (!(o->reduce_modes & (1 << m))) continue;
        sd_comm_mpi_options opt = sd_comm_mpi_default_options();
        opt.reduce = m == 0 ? SD_COMM_MPI_REDUCE_ORDERED : SD_COMM_MPI_REDUCE_NATIVE;
        opt.timeout_s = o->timeout_s;
        sd_comm *c = NULL;
        bench_opts oo = *o;
        if (m == 1) oo.do_allgather = 0; /* the reduce mode does not change allgatherv */
        sd_status s = sd_comm_mpi_create_ex(MPI_COMM_WORLD, &opt, &c);
        if (s == SD_OK)
            s = bench_rank(c, &oo, m == 0 ? "backend mpi, ordered allreduce (alltoallv + rank-order sum + allgatherv)"
                                          : "backend mpi, native MPI_Allreduce");
        if (s != SD_OK) {
            fprintf(stderr, "scadles-bench_comm: rank %d: %s\n", rank, sd_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        sd_comm_destroy(c);
    }
    MPI_Finalize();
    return rc;
#else
    (void)o;
    (void)argc;
    (void)argv;
    fprintf(stderr, "scadles-bench_comm: this build has no MPI backend (MPI was not found at configure time)\n");
    return 1;
#endif
}

int main(int argc, char **argv) {
    bench_opts o = {.threads = {2, 4, 8}, .nthreads = 3, .min_bytes = 1024, .max_bytes = 64u << 20, .factor = 4,
                    .target_s = 0.25, .warmup = 2, .do_allreduce = 1, .do_allgather = 1, .mpi = launched_by_mpirun(),
                    .reduce_modes = 3, .timeout_s = 60};
    static const sd_cli_option options[] = {
        {"--threads", true, "a list like 2,4,8"}, {"--min", true, NULL}, {"--max", true, NULL},
        {"--factor", true, NULL}, {"--time", true, NULL}, {"--warmup", true, NULL},
        {"--ops", true, "allreduce,allgatherv"}, {"--mpi", false, NULL}, {"--reduce", true, "ordered|native|both"},
        {"--timeout", true, NULL}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench_comm", usage, options, argc, argv);
    int bad = 0;
    for (int i = 0; i < cli.n && !bad; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        if (!strcmp(a, "--threads")) {
            o.nthreads = 0;
            for (const char *p = v; *p && o.nthreads < 16;) {
                char *end = NULL;
                long x = strtol(p, &end, 10);
                if (end == p || x < 1 || x > 256) {
                    fprintf(stderr, "scadles-bench_comm: --threads wants a list like 2,4,8 (each 1..256), got '%s'\n", v);
                    bad = 1;
                    break;
                }
                o.threads[o.nthreads++] = (int)x;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') {
                    fprintf(stderr, "scadles-bench_comm: --threads wants a list like 2,4,8, got '%s'\n", v);
                    bad = 1;
                    break;
                }
            }
        } else if (!strcmp(a, "--min") || !strcmp(a, "--max")) {
            size_t x = 0;
            if (parse_size(v, &x) || x < 4 || x > ((size_t)4 << 30)) {
                fprintf(stderr, "scadles-bench_comm: %s wants a size in [4, 4G] bytes (suffix K/M/G), got '%s'\n", a, v);
                bad = 1;
                continue;
            }
            *(!strcmp(a, "--min") ? &o.min_bytes : &o.max_bytes) = x;
        } else if (!strcmp(a, "--factor")) {
            o.factor = atoi(v);
            if (o.factor < 2) {
                fprintf(stderr, "scadles-bench_comm: --factor wants an integer >= 2\n");
                bad = 1;
                continue;
            }
        } else if (!strcmp(a, "--time")) {
            o.target_s = atof(v);
        } else if (!strcmp(a, "--warmup")) {
            o.warmup = atoi(v);
        } else if (!strcmp(a, "--ops")) {
            o.do_allreduce = strstr(v, "allreduce") != NULL;
            o.do_allgather = strstr(v, "allgather") != NULL;
        } else if (!strcmp(a, "--mpi")) {
            o.mpi = 1;
        } else if (!strcmp(a, "--reduce")) {
            o.reduce_modes = !strcmp(v, "ordered") ? 1 : !strcmp(v, "native") ? 2 : !strcmp(v, "both") ? 3 : 0;
            if (!o.reduce_modes) {
                fprintf(stderr, "scadles-bench_comm: --reduce wants ordered, native or both\n");
                bad = 1;
                continue;
            }
        } else if (!strcmp(a, "--timeout")) {
            o.timeout_s = atof(v);
        }
    }
    sd_cli_free(&cli);
    if (bad) return 2;
    if (o.min_bytes > o.max_bytes) {
        fprintf(stderr, "scadles-bench_comm: --min is above --max\n");
        return 2;
    }
    sd_comm_tcp_options tcp;
    bool torchrun = false;
    if (!o.mpi && sd_comm_tcp_env(&tcp, &torchrun) != SD_OK) {
        fprintf(stderr, "scadles-bench_comm: %s\n", sd_last_error_brief());
        return 2;
    }
    return o.mpi ? run_mpi(&o, &argc, &argv) : torchrun ? run_tcp(&o, &tcp) : run_local(&o);
}
