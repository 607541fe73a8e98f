/* test_comm_tcp.c: the TCP collective backend (comm/comm_tcp.h) on 127.0.0.1, ranks as threads of
 * this process (and, for a killed peer, as forked processes).
 *
 * Equality with the local backend: one script of collectives (allreduce of exact integers and of
 * mixed-magnitude floats at counts 0..100003 and 2^21 + 3, allgatherv packed / gapped with
 * sentinels / in place, allgather_u64, broadcast from every root, barrier, vote, alltoallv with
 * sizes by sender and receiver, the compressor's sparse allreduce, and the byte counters) runs
 * on N = 1, 2, 3, 4 ranks over TCP and over the local backend; every rank's outputs must be
 * bitwise the same, and the float allreduce must also equal a sequential rank-order sum computed
 * here. Failures, each on every rank that takes part: count and collective mismatches, a hung
 * rank (the others time out naming it), a rank that leaves, one that aborts with a reason, one
 * that is SIGKILLed mid-run (forked processes), and the rendezvous's refusals (WORLD_SIZE
 * mismatch, a rank twice, a second rank 0, a job tag mismatch, no rank 0, a missing rank); and the
 * torchrun-style environment (sd_comm_tcp_env). Rank threads record results; only the main
 * thread checks them (the harness counters are not atomic). */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/comm_tcp.h"
#include "comm/compress.h"
#include "tests/harness.h"

#define MAXR 8

/* A port that was free a moment ago on 127.0.0.1. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static sd_comm_tcp_options tcp_opts(int port, int rank, int world, double timeout) {
    sd_comm_tcp_options o = sd_comm_tcp_default_options();
    snprintf(o.master_addr, sizeof o.master_addr, "127.0.0.1");
    o.master_port = port;
    o.rank = rank;
    o.world_size = world;
    o.timeout_s = timeout;
    o.connect_timeout_s = 20;
    return o;
}

/* ---- a growing log of every output of a rank -------------------------------------------------- */
typedef struct blog { unsigned char *p; size_t n, cap; int oom; } blog;

static void log_put(blog *b, const void *x, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = (b->n + n) * 2 + 1024;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, x, n);
    b->n += n;
}

/* ---- the script: the same collectives on any backend ------------------------------------------ */
static const size_t counts[] = {0, 1, 7, 16, 1000, 100003, (1u << 21) + 3};
#define NCOUNTS (int)(sizeof counts / sizeof counts[0])

static void fill_rank(float *x, size_t count, int rank) {
    sd_test_rng r = {0x5eedull * 1000003u + (uint64_t)rank};
    sd_test_fill(&r, x, count, -1.0f, 1.0f);
    for (size_t i = 0; i < count; i += 97) x[i] *= 1e4f; /* mixed magnitudes: order matters */
}
static size_t gather_size(int r) { return (size_t)((r * 37) % 5) * 3; } /* rank 0: 0 bytes */
static unsigned char gather_byte(int r, size_t k) { return (unsigned char)(r * 31 + (int)k * 7 + 1); }
static size_t a2a_size(int from, int to) { return (size_t)((from * 3 + to * 5) % 7) * 3; }

enum { SA_COUNT = 5003, SA_STEPS = 3 };
static const size_t sa_layers[] = {1000, 3, 2000, 17, 1983};

static sd_status script_sparse(sd_comm *c, blog *b) {
    sd_compress_config cc;
    sd_compress_config_default(&cc);
    cc.policy = SD_COMPRESS_ALWAYS;
    cc.ratio = 0.05;
    cc.f16_values = true;
    cc.exchange = SD_EXCHANGE_ALLREDUCE;
    size_t off[5], at = 0;
    for (int l = 0; l < 5; l++) {
        off[l] = at;
        at += sa_layers[l];
    }
    sd_compressor *z = NULL;
    TRY(sd_compressor_create(&cc, SA_COUNT, 5, off, sa_layers, 1, &z));
    float *g = malloc(sizeof(float) * SA_COUNT);
    sd_status s = g ? SD_OK : SD_FAIL(SD_ERR_OOM, "sparse gradient");
    for (int t = 0; t < SA_STEPS && s == SD_OK; t++) {
        sd_test_rng r = {0xabcdull + (uint64_t)c->rank * 7919u + (uint64_t)t * 104729u};
        sd_test_fill(&r, g, SA_COUNT, -1.0f, 1.0f);
        s = sd_compress_exchange(z, c, g, NULL);
        if (s == SD_OK) log_put(b, g, sizeof(float) * SA_COUNT);
    }
    free(g);
    sd_compressor_destroy(z);
    return s;
}

static sd_status script(sd_comm *c, blog *b) {
    const int n = c->size, me = c->rank;
    float *x = malloc(sizeof(float) * counts[NCOUNTS - 1]);
    if (!x) return SD_FAIL(SD_ERR_OOM, "script buffer");
    sd_status s = SD_OK;
    for (int k = 0; k < NCOUNTS && s == SD_OK; k++) { /* exact integers, then mixed floats */
        for (size_t i = 0; i < counts[k]; i++) x[i] = (float)((me + 1) * (int)(i % 13 + 1));
        s = sd_comm_allreduce_sum(c, x, counts[k]);
        if (s == SD_OK) log_put(b, x, counts[k] * sizeof(float));
        fill_rank(x, counts[k], me);
        if (s == SD_OK) s = sd_comm_allreduce_sum(c, x, counts[k]);
        if (s == SD_OK) log_put(b, x, counts[k] * sizeof(float));
    }
    free(x);
    TRY(s);
    /* allgatherv: packed, gapped in reverse order with sentinels, in place */
    size_t rb[MAXR], dp[MAXR], total = 0;
    for (int j = 0; j < n; j++) total += (rb[j] = gather_size(j));
    unsigned char recv[512], send[64];
    for (int variant = 0; variant < 3; variant++) {
        size_t off = variant == 1 ? 5 : 0;
        for (int jj = 0; jj < n; jj++) {
            int j = variant == 1 ? n - 1 - jj : jj;
            dp[j] = off;
            off += rb[j] + (variant == 1 ? 5 : 0);
        }
        memset(recv, 0xEE, sizeof recv);
        for (size_t k = 0; k < rb[me]; k++) send[k] = gather_byte(me, k);
        if (variant == 2) {
            memcpy(recv + dp[me], send, rb[me]);
            TRY(sd_comm_allgatherv(c, recv + dp[me], rb[me], recv, rb, dp));
        } else {
            TRY(sd_comm_allgatherv(c, send, rb[me], recv, rb, variant == 0 ? NULL : dp));
        }
        log_put(b, recv, total + 5 * (size_t)(n + 1));
    }
    uint64_t all[MAXR];
    TRY(sd_comm_allgather_u64(c, 1000 + (uint64_t)(me * me), all));
    log_put(b, all, sizeof(uint64_t) * (size_t)n);
    unsigned char buf[4099];
    for (int root = 0; root < n; root++) {
        for (size_t k = 0; k < sizeof buf; k++) buf[k] = me == root ? (unsigned char)(root * 13 + k) : 0xEE;
        TRY(sd_comm_broadcast(c, buf, sizeof buf, root));
        log_put(b, buf, sizeof buf);
    }
    TRY(sd_comm_barrier(c));
    int sum = -1;
    TRY(sd_comm_vote(c, me % 2 + 3 * me, &sum));
    log_put(b, &sum, sizeof sum);
    /* alltoallv: block (me -> j) of a2a_size(me, j) bytes, gaps of 3 on the receive side */
    size_t sb[MAXR], sdp[MAXR], rbb[MAXR], rdp[MAXR], so = 0, ro = 3;
    unsigned char a2s[256], a2r[256];
    for (int j = 0; j < n; j++) {
        sb[j] = a2a_size(me, j);
        sdp[j] = so;
        for (size_t k = 0; k < sb[j]; k++) a2s[so + k] = (unsigned char)(me * 40 + j * 7 + (int)k);
        so += sb[j];
        rbb[j] = a2a_size(j, me);
        rdp[j] = ro;
        ro += rbb[j] + 3;
    }
    memset(a2r, 0xEE, sizeof a2r);
    TRY(sd_comm_alltoallv(c, a2s, sb, sdp, a2r, rbb, rdp));
    log_put(b, a2r, ro);
    TRY(script_sparse(c, b));
    log_put(b, &c->counters, sizeof c->counters);
    return b->oom ? SD_FAIL(SD_ERR_OOM, "log") : SD_OK;
}

/* ---- rank threads ------------------------------------------------------------------------------- */
typedef enum { JOB_SCRIPT, JOB_FAULT } job_kind;

typedef struct job {
    job_kind kind;
    int fault;                 /* JOB_FAULT: which case */
    sd_comm_local_group *g;    /* local backend; NULL: TCP with opt */
    sd_comm_tcp_options opt;
    int rank;
    blog log;
    sd_status st, st2;         /* the script or the fault's first and second collective */
    char err[2048], err2[2048];
    double t_fail;             /* seconds from the start to the failure */
} job;

enum { F_COUNT, F_COLL, F_HUNG, F_LEAVE, F_ABORT, F_CREATE };

/* The fault cases: every rank runs this; `rank` picks the odd one out. */
static void run_fault(job *j, sd_comm *c) {
    const double t0 = sd_clock_now();
    const int me = c->rank;
    float x[11] = {0};
    switch (j->fault) {
    case F_COUNT: j->st = sd_comm_allreduce_sum(c, x, me == 0 ? 10 : 11); break;
    case F_COLL: j->st = me == 1 ? sd_comm_broadcast(c, x, sizeof x, 0) : sd_comm_barrier(c); break;
    case F_HUNG:
        if (me == 2) sd_clock_sleep_until(t0 + 1.5);
        j->st = sd_comm_barrier(c);
        break;
    case F_LEAVE:
        if (me == 2) {
            j->st = SD_OK;
            sd_comm_destroy(c);
            return;
        }
        sd_clock_sleep_until(t0 + 0.2);
        j->st = sd_comm_barrier(c);
        break;
    case F_ABORT:
        if (me == 1) {
            sd_comm_tcp_abort(c, "disk full (test)");
            j->st = SD_OK;
        } else {
            j->st = sd_comm_barrier(c);
        }
        break;
    default: j->st = SD_OK;
    }
    j->t_fail = sd_clock_now() - t0;
    if (j->st != SD_OK) snprintf(j->err, sizeof j->err, "%s", sd_last_error());
    j->st2 = sd_comm_barrier(c); /* a poisoned group fails fast */
    if (j->st2 != SD_OK) snprintf(j->err2, sizeof j->err2, "%s", sd_last_error());
    sd_comm_destroy(c);
}

static void *job_thread(void *arg) {
    job *j = arg;
    sd_comm *c = NULL;
    if (j->g) {
        c = sd_comm_local_get(j->g, j->rank);
    } else {
        const double t0 = sd_clock_now();
        j->st = sd_comm_tcp_create(&j->opt, &c);
        if (j->st != SD_OK) {
            j->t_fail = sd_clock_now() - t0;
            snprintf(j->err, sizeof j->err, "%s", sd_last_error());
            return NULL;
        }
    }
    if (j->kind == JOB_FAULT) {
        run_fault(j, c);
        return NULL;
    }
    j->st = script(c, &j->log);
    if (j->st != SD_OK) {
        snprintf(j->err, sizeof j->err, "%s", sd_last_error());
        if (j->g) sd_comm_local_abort(j->g, j->rank, j->err);
        else sd_comm_tcp_abort(c, j->err);
    }
    if (!j->g) sd_comm_destroy(c);
    return NULL;
}

static void run_jobs(job *jobs, int n) {
    pthread_t th[MAXR];
    for (int r = 0; r < n; r++) pthread_create(&th[r], NULL, job_thread, &jobs[r]);
    for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
}

/* ---- equality with the local backend --------------------------------------------------------------- */
static void test_equal_to_local(int n) {
    job loc[MAXR], tcp[MAXR];
    sd_comm_local_group *g = NULL;
    EXPECT_OK(sd_comm_local_group_create(n, &g));
    if (!g) return;
    int port = free_port();
    memset(loc, 0, sizeof loc);
    memset(tcp, 0, sizeof tcp);
    for (int r = 0; r < n; r++) {
        loc[r] = (job){.kind = JOB_SCRIPT, .g = g, .rank = r};
        tcp[r] = (job){.kind = JOB_SCRIPT, .opt = tcp_opts(port, r, n, 30), .rank = r};
    }
    const double t0 = sd_clock_now();
    run_jobs(loc, n);
    const double t1 = sd_clock_now();
    run_jobs(tcp, n);
    const double t2 = sd_clock_now();
    sd_comm_local_group_destroy(g);
    printf("N=%d: script %.2f s on the local backend, %.2f s over TCP (%zu bytes of outputs per rank)\n", n, t1 - t0,
           t2 - t1, tcp[0].log.n);
    for (int r = 0; r < n; r++) {
        EXPECT(loc[r].st == SD_OK, "N=%d local rank %d: %s", n, r, loc[r].err);
        EXPECT(tcp[r].st == SD_OK, "N=%d TCP rank %d: %s", n, r, tcp[r].err);
        EXPECT(tcp[r].log.n == loc[r].log.n && tcp[r].log.n > 0 && memcmp(tcp[r].log.p, loc[r].log.p, loc[r].log.n) == 0,
               "N=%d rank %d: TCP outputs (%zu bytes) differ from the local backend's (%zu bytes)", n, r, tcp[r].log.n,
               loc[r].log.n);
    }
    /* independent checks on rank n-1's log: exact integers and the sequential rank-order sum */
    const unsigned char *p = tcp[n - 1].log.p;
    if (tcp[n - 1].st == SD_OK && p) {
        const float tri = (float)(n * (n + 1) / 2);
        float *ref = malloc(sizeof(float) * counts[NCOUNTS - 1]), *tmp = malloc(sizeof(float) * counts[NCOUNTS - 1]);
        size_t at = 0;
        for (int k = 0; k < NCOUNTS && ref && tmp; k++) {
            long wrong = 0, differ = 0;
            const float *xi = (const float *)(p + at);
            for (size_t i = 0; i < counts[k]; i++) wrong += xi[i] != (float)(i % 13 + 1) * tri;
            at += counts[k] * sizeof(float);
            for (int r = 0; r < n; r++) {
                fill_rank(tmp, counts[k], r);
                for (size_t i = 0; i < counts[k]; i++) ref[i] = r == 0 ? tmp[i] : ref[i] + tmp[i];
            }
            const float *xf = (const float *)(p + at);
            for (size_t i = 0; i < counts[k]; i++) differ += memcmp(&xf[i], &ref[i], sizeof(float)) != 0;
            at += counts[k] * sizeof(float);
            EXPECT(wrong == 0 && differ == 0, "N=%d allreduce of %zu: %ld wrong integers, %ld floats differ from the "
                   "rank-order sum", n, counts[k], wrong, differ);
        }
        free(ref);
        free(tmp);
        /* the counters are the last thing logged: the script's calls, counted */
        sd_comm_counters cn;
        memcpy(&cn, p + tcp[n - 1].log.n - sizeof cn, sizeof cn);
        EXPECT(cn.calls[SD_COLL_ALLREDUCE] >= 2 * NCOUNTS && cn.calls[SD_COLL_BROADCAST] >= (uint64_t)n &&
                   cn.calls[SD_COLL_ALLTOALLV] >= 1,
               "N=%d counters: %llu allreduce, %llu broadcast calls", n, (unsigned long long)cn.calls[SD_COLL_ALLREDUCE],
               (unsigned long long)cn.calls[SD_COLL_BROADCAST]);
    }
    for (int r = 0; r < n; r++) {
        free(loc[r].log.p);
        free(tcp[r].log.p);
    }
}

/* ---- faults during collectives -------------------------------------------------------------------- */
/* Prints what a rank was told (the messages are the product here). */
static void show(const char *what, const job *j) {
    printf("  %s: %s\n", what, j->st != SD_OK ? j->err : "(no failure)");
}

static void run_fault_case(int fault, int n, double timeout, job *jobs) {
    int port = free_port();
    memset(jobs, 0, sizeof(job) * (size_t)n);
    for (int r = 0; r < n; r++) jobs[r] = (job){.kind = JOB_FAULT, .fault = fault, .opt = tcp_opts(port, r, n, timeout), .rank = r};
    run_jobs(jobs, n);
    static const char *names[] = {"count mismatch", "collective mismatch", "hung rank 2", "rank 2 left", "rank 1 aborted"};
    show(names[fault], &jobs[0]);
}

static void test_faults(void) {
    job j[MAXR];
    run_fault_case(F_COUNT, 3, 10, j);
    for (int r = 0; r < 3; r++) {
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "count mismatch"), "count mismatch rank %d: %s", r, j[r].err);
        EXPECT(j[r].st2 != SD_OK && strstr(j[r].err2, "unusable"), "count mismatch rank %d, next call: %s", r, j[r].err2);
    }
    run_fault_case(F_COLL, 3, 10, j);
    for (int r = 0; r < 3; r++)
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "collective mismatch"), "collective mismatch rank %d: %s", r, j[r].err);
    /* rank 2 comes 1.5 s late to a barrier with a 0.4 s timeout */
    run_fault_case(F_HUNG, 3, 0.4, j);
    for (int r = 0; r < 2; r++)
        EXPECT(j[r].st == SD_ERR_RUNTIME && strstr(j[r].err, "rank 2") && j[r].t_fail < 1.4,
               "hung rank 2, rank %d after %.2f s: %s", r, j[r].t_fail, j[r].err);
    EXPECT(j[0].st != SD_OK && strstr(j[0].err, "timed out after 0.4 s") && strstr(j[0].err, "comm_timeout_s"),
           "the timeout message names the time and the fix: %s", j[0].err);
    /* the late rank may still complete that barrier (every frame it needed had come); its next
     * call reads the others' reason */
    EXPECT(j[2].st2 != SD_OK && strstr(j[2].err2, "timed out"), "the late rank learns why: %s | %s", j[2].err, j[2].err2);
    run_fault_case(F_LEAVE, 3, 10, j);
    for (int r = 0; r < 2; r++)
        EXPECT(j[r].st == SD_ERR_RUNTIME && strstr(j[r].err, "rank 2") && j[r].t_fail < 5,
               "rank 2 left, rank %d after %.2f s: %s", r, j[r].t_fail, j[r].err);
    EXPECT(strstr(j[0].err, "lost the connection to rank 2") || strstr(j[1].err, "lost the connection to rank 2"),
           "a closed connection names the peer: %s | %s", j[0].err, j[1].err);
    run_fault_case(F_ABORT, 3, 10, j);
    for (int r = 0; r < 3; r += 2)
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "rank 1 aborted the group: disk full (test)"),
               "abort, rank %d: %s", r, j[r].err);
    EXPECT(j[1].st2 != SD_OK && strstr(j[1].err2, "aborted"), "the aborting rank's next call fails: %s", j[1].err2);
}

/* ---- a SIGKILLed rank (processes) --------------------------------------------------------------- */
static void test_killed_peer(void) {
    enum { N = 3, VICTIM = 1 };
    int port = free_port(), fds[N][2];
    pid_t pid[N];
    for (int r = 0; r < N; r++) {
        if (pipe(fds[r]) != 0) return;
        pid[r] = fork();
        if (pid[r] == 0) {
            close(fds[r][0]);
            sd_comm_tcp_options o = tcp_opts(port, r, N, 20);
            sd_comm *c = NULL;
            sd_status s = sd_comm_tcp_create(&o, &c);
            float x[1000];
            for (int it = 0; s == SD_OK && it < 100000; it++) {
                for (int i = 0; i < 1000; i++) x[i] = (float)i;
                if (r == VICTIM && it == 20) raise(SIGKILL);
                s = sd_comm_allreduce_sum(c, x, 1000);
            }
            const char *e = s == SD_OK ? "no failure" : sd_last_error();
            ssize_t w = write(fds[r][1], e, strlen(e));
            (void)w;
            _exit(s == SD_OK ? 0 : 3); /* no LeakSanitizer pass in the child */
        }
        close(fds[r][1]);
    }
    const double t0 = sd_clock_now();
    int status[N], done = 0;
    memset(status, -1, sizeof status);
    while (done < N && sd_clock_now() - t0 < 30) {
        for (int r = 0; r < N; r++)
            if (status[r] == -1 && waitpid(pid[r], &status[r], WNOHANG) == pid[r]) done++;
        sd_clock_sleep_until(sd_clock_now() + 0.02);
    }
    const double t = sd_clock_now() - t0;
    for (int r = 0; r < N; r++)
        if (status[r] == -1) {
            kill(pid[r], SIGKILL);
            waitpid(pid[r], &status[r], 0);
        }
    for (int r = 0; r < N; r++) {
        char msg[2048] = "";
        ssize_t k = read(fds[r][0], msg, sizeof msg - 1);
        msg[k > 0 ? k : 0] = '\0';
        close(fds[r][0]);
        if (r == VICTIM) {
            EXPECT(WIFSIGNALED(status[r]) && WTERMSIG(status[r]) == SIGKILL, "the victim was killed (status %d)", status[r]);
            continue;
        }
        EXPECT(WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 3 && strstr(msg, "rank 1") && strstr(msg, "127.0.0.1"),
               "rank %d after rank 1 was killed (%.2f s): status %d, %s", r, t, status[r], msg);
    }
    EXPECT(t < 10, "the survivors ended within %.2f s, well inside the 20 s timeout", t);
}

/* ---- the rendezvous's refusals --------------------------------------------------------------------- */
static void test_rendezvous(void) {
    job j[MAXR];
    int port = free_port();
    memset(j, 0, sizeof j);
    /* WORLD_SIZE mismatch: rank 0 says 2, rank 1 says 3 */
    j[0] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, 0, 2, 5), .rank = 0};
    j[1] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, 1, 3, 5), .rank = 1};
    run_jobs(j, 2);
    show("world size mismatch, rank 1", &j[1]);
    for (int r = 0; r < 2; r++)
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "WORLD_SIZE=3") && strstr(j[r].err, "same WORLD_SIZE"),
               "world size mismatch, rank %d: %s", r, j[r].err);
    /* a rank twice */
    port = free_port();
    memset(j, 0, sizeof j);
    for (int r = 0; r < 3; r++)
        j[r] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, r == 2 ? 1 : r, 3, 5), .rank = r};
    run_jobs(j, 3);
    show("RANK=1 twice, rank 0", &j[0]);
    for (int r = 0; r < 3; r++)
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "two processes have RANK=1"), "rank twice, job %d: %s", r, j[r].err);
    /* a second rank 0 */
    port = free_port();
    memset(j, 0, sizeof j);
    for (int r = 0; r < 2; r++) j[r] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, 0, 2, 5), .rank = 0};
    run_jobs(j, 2);
    show("two rank 0s", &j[0]);
    EXPECT(j[0].st != SD_OK && j[1].st != SD_OK, "two rank 0s both fail: %s | %s", j[0].err, j[1].err);
    EXPECT((strstr(j[0].err, "another process with RANK=0") && strstr(j[1].err, "a second process with RANK=0")) ||
               (strstr(j[1].err, "another process with RANK=0") && strstr(j[0].err, "a second process with RANK=0")),
           "two rank 0s: %s | %s", j[0].err, j[1].err);
    /* job tag mismatch */
    port = free_port();
    memset(j, 0, sizeof j);
    for (int r = 0; r < 2; r++) {
        j[r] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, r, 2, 5), .rank = r};
        j[r].opt.job_tag = 100 + (uint64_t)r;
    }
    run_jobs(j, 2);
    show("job tag mismatch, rank 1", &j[1]);
    for (int r = 0; r < 2; r++)
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "job tag"), "job tag mismatch, rank %d: %s", r, j[r].err);
    /* no rank 0: rank 1 gives up after its connect timeout */
    port = free_port();
    memset(j, 0, sizeof j);
    j[0] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, 1, 2, 5), .rank = 1};
    j[0].opt.connect_timeout_s = 0.5;
    run_jobs(j, 1);
    show("no rank 0", &j[0]);
    EXPECT(j[0].st != SD_OK && strstr(j[0].err, "could not connect to rank 0 at 127.0.0.1") &&
               strstr(j[0].err, "MASTER_ADDR") && j[0].t_fail < 3,
           "no rank 0 (%.2f s): %s", j[0].t_fail, j[0].err);
    /* rank 2 of 3 never comes */
    port = free_port();
    memset(j, 0, sizeof j);
    for (int r = 0; r < 2; r++) {
        j[r] = (job){.kind = JOB_FAULT, .fault = F_CREATE, .opt = tcp_opts(port, r, 3, 5), .rank = r};
        j[r].opt.connect_timeout_s = 0.6;
    }
    run_jobs(j, 2);
    show("rank 2 never comes, rank 0", &j[0]);
    for (int r = 0; r < 2; r++)
        EXPECT(j[r].st != SD_OK && strstr(j[r].err, "rank 2 never connected") && j[r].t_fail < 4,
               "missing rank 2, rank %d (%.2f s): %s", r, j[r].t_fail, j[r].err);
    /* the options are checked */
    sd_comm *c = NULL;
    sd_comm_tcp_options o = tcp_opts(1, 3, 2, 5);
    EXPECT_FAIL(sd_comm_tcp_create(&o, &c), SD_ERR_INVALID, "rank 3 outside [0, 2)");
    o = tcp_opts(0, 0, 2, 5);
    EXPECT_FAIL(sd_comm_tcp_create(&o, &c), SD_ERR_INVALID, "master port 0");
    EXPECT(sd_comm_tcp_local_rank(NULL) == -1, "local_rank of NULL");
}

/* ---- the torchrun-style environment -------------------------------------------------------------- */
static void env_set(const char *ws, const char *rk, const char *ma, const char *mp) {
    const char *names[4] = {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"}, *vals[4] = {ws, rk, ma, mp};
    for (int i = 0; i < 4; i++) {
        if (vals[i]) setenv(names[i], vals[i], 1);
        else unsetenv(names[i]);
    }
    unsetenv("LOCAL_RANK");
    unsetenv("SCADLES_MASTER_PORT");
    unsetenv("TORCHELASTIC_USE_AGENT_STORE");
    unsetenv("SCADLES_CONNECT_TIMEOUT_S");
}

static void test_env(void) {
    sd_comm_tcp_options o;
    bool found = true;
    env_set(NULL, NULL, "127.0.0.1", "29500");
    EXPECT_OK(sd_comm_tcp_env(&o, &found));
    EXPECT(!found, "no WORLD_SIZE and no RANK: not a torchrun-style launch");
    env_set("4", "2", "10.0.0.1", "29500");
    setenv("LOCAL_RANK", "1", 1);
    EXPECT_OK(sd_comm_tcp_env(&o, &found));
    EXPECT(found && o.world_size == 4 && o.rank == 2 && o.local_rank == 1 && o.master_port == 29500 &&
               !strcmp(o.master_addr, "10.0.0.1") && o.connect_timeout_s == SD_COMM_TCP_DEFAULT_CONNECT_TIMEOUT_S,
           "the four variables and LOCAL_RANK: %d %d %d %d %s", o.world_size, o.rank, o.local_rank, o.master_port,
           o.master_addr);
    setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
    EXPECT_OK(sd_comm_tcp_env(&o, &found));
    EXPECT(o.master_port == 29501, "under torchrun's agent store the rendezvous is MASTER_PORT + 1: %d", o.master_port);
    setenv("SCADLES_MASTER_PORT", "31000", 1);
    setenv("SCADLES_CONNECT_TIMEOUT_S", "12.5", 1);
    EXPECT_OK(sd_comm_tcp_env(&o, &found));
    EXPECT(o.master_port == 31000 && o.connect_timeout_s == 12.5, "SCADLES_MASTER_PORT wins: %d, %g", o.master_port,
           o.connect_timeout_s);
    env_set("4", NULL, NULL, "29500");
    EXPECT_FAIL(sd_comm_tcp_env(&o, &found), SD_ERR_INVALID, "RANK, MASTER_ADDR are not set");
    env_set("4", "4", "h", "29500");
    EXPECT_FAIL(sd_comm_tcp_env(&o, &found), SD_ERR_INVALID, "RANK=4 is not in [0, WORLD_SIZE=4)");
    env_set("zero", "0", "h", "29500");
    EXPECT_FAIL(sd_comm_tcp_env(&o, &found), SD_ERR_INVALID, "WORLD_SIZE=zero");
    env_set("2", "0", "h", "70000");
    EXPECT_FAIL(sd_comm_tcp_env(&o, &found), SD_ERR_INVALID, "MASTER_PORT=70000");
    env_set("2", "0", "h", "1");
    setenv("LOCAL_RANK", "-1", 1);
    EXPECT_FAIL(sd_comm_tcp_env(&o, &found), SD_ERR_INVALID, "LOCAL_RANK=-1");
    env_set(NULL, NULL, NULL, NULL);
}

int main(void) {
    test_killed_peer(); /* first: fork before any thread exists */
    test_env();
    for (int n = 1; n <= 4; n++) test_equal_to_local(n);
    test_faults();
    test_rendezvous();
    return sd_test_finish("test_comm_tcp");
}
