/* comm_tcp.c: the TCP collective backend (comm_tcp.h): one process per device over a full mesh of
 * TCP connections, set up by a rendezvous at rank 0 (MASTER_ADDR:MASTER_PORT, torchrun's variables).
 *
 * Wire format (little-endian integers; float payloads in the hosts' own byte order, which the
 * rendezvous checks is the same everywhere):
 *  - rendezvous: HELLO (rank -> rank 0), REPLY (rank 0 -> rank: the table of every rank's
 *    listening address, or an error), MESH (rank i -> rank j < i when connecting), READY
 *    (rank -> rank 0: my links are up, or why not), GO (rank 0 -> rank: everyone's are, or why not);
 *  - collectives: one FRAME per peer and phase, a 40-byte header (magic, type, collective, phase,
 *    root, collective number, payload length, the call's size) and the payload; an ABORT frame
 *    carries a failure's reason instead.
 * Sockets are non-blocking; a phase posts one send and one receive per peer and polls them all
 * until done, so two ranks sending each other large blocks never deadlock. */
#include "comm/comm_tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/clock.h"

#define RDV_MAGIC 0x315644524344535ull /* HELLO, REPLY, READY, GO */
#define MESH_MAGIC 0x3148534d4344535ull
#define FRAME_MAGIC 0x43544453u
#define PROTO_VERSION 1u
#define ORDER_PROBE 0x01020304u
#define NAME_LEN 64
#define MSG_MAX 1024
#define HELLO_LEN 172 /* magic 8, version 4, order 4, world 4, rank 4, local rank 4, pid 4, tag 8, port 4, addr 64, host 64 */
#define STATUS_LEN 16 /* magic 8, status 4, message length 4 (then the message) */
#define ENTRY_LEN 136 /* port 4, pid 4, addr 64, host 64 */
#define MESH_LEN 24   /* magic 8, nonce 8, rank 4, world 4 */
#define FRAME_HDR 40
#define FR_DATA 1
#define FR_ABORT 2

/* One peer: where it is, its connection, and this phase's transfer each way. */
typedef struct peer {
    int fd;
    int port, pid;
    char addr[NAME_LEN], host[NAME_LEN];
    char where[200]; /* "127.0.0.1:40123 on host h, pid 12" */
    /* send: the header then the payload */
    int tx_on;
    unsigned char thdr[FRAME_HDR];
    const unsigned char *tbuf;
    size_t tlen, tdone;
    /* receive: the header (checked against what this rank expects), then the payload into rbuf */
    int rx_on;
    unsigned char rhdr[FRAME_HDR];
    unsigned char *rbuf;
    size_t rlen, rdone;
    uint64_t raux;
    uint32_t rarg;
} peer;

typedef struct tcp_ctx {
    sd_comm_tcp_options opt;
    peer *peers;   /* [size]; peers[rank] describes this rank */
    int listen_fd; /* rank 0: the rendezvous socket, held until destroy so no second rank 0 takes the port */
    uint64_t seq;  /* collectives entered */
    sd_coll op;    /* the current one */
    int phase;
    float *scratch;
    size_t scratch_cap;
    struct pollfd *pfd;
    int *pidx;
    int32_t *votes;
    int broken;
    char reason[MSG_MAX + 256]; /* what peers are told is cut to MSG_MAX */
} tcp_ctx;

static const sd_comm_ops tcp_ops;

/* ---- encoding --------------------------------------------------------------------------------- */
static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void put_name(unsigned char *p, const char *s) {
    memset(p, 0, NAME_LEN);
    size_t n = strlen(s);
    memcpy(p, s, n < NAME_LEN - 1 ? n : NAME_LEN - 1);
}
static void get_name(const unsigned char *p, char *s) {
    memcpy(s, p, NAME_LEN);
    s[NAME_LEN - 1] = '\0';
    for (char *c = s; *c; c++)
        if ((unsigned char)*c < 32 || (unsigned char)*c > 126) *c = '?'; /* it goes into messages */
}

/* ---- small helpers ---------------------------------------------------------------------------- */
static void host_name(char *out) {
    char h[256] = "?";
    if (gethostname(h, sizeof h - 1) != 0) snprintf(h, sizeof h, "?");
    h[sizeof h - 1] = '\0';
    snprintf(out, NAME_LEN, "%.*s", NAME_LEN - 1, h);
}

static void set_where(peer *q) {
    if (q->port > 0) snprintf(q->where, sizeof q->where, "%s:%d on host %s, pid %d", q->addr, q->port, q->host, q->pid);
    else snprintf(q->where, sizeof q->where, "host %s, pid %d", q->host, q->pid);
}

/* "host:port", brackets around IPv6 literals. */
static void host_port(char *out, size_t n, const char *host, int port) {
    if (strchr(host, ':')) snprintf(out, n, "[%s]:%d", host, port);
    else snprintf(out, n, "%s:%d", host, port);
}

static void sleep_s(double s) {
    if (s <= 0) return;
    sd_clock_sleep_until(sd_clock_now() + s);
}

static int ms_until(double deadline) {
    if (isinf(deadline)) return 1000;
    double left = deadline - sd_clock_now();
    if (left <= 0) return 0;
    return left > 1.0 ? 1000 : (int)(left * 1000) + 1;
}

/* ---- sockets ---------------------------------------------------------------------------------- */
static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void tune(int fd) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static void numeric_name(const struct sockaddr *sa, socklen_t len, char *host, size_t hn, int *port) {
    char serv[32] = "0";
    if (getnameinfo(sa, len, host, (socklen_t)hn, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(host, hn, "?");
    if (port) *port = atoi(serv);
}

/* 1: ready, 0: the deadline passed, -1: poll failed (errno). */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        int ms = ms_until(deadline);
        if (ms == 0) return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n > 0) return 1;
    }
}

enum { IO_OK = 0, IO_TIMEOUT, IO_EOF, IO_ERR };

/* Reads or writes all n bytes of a non-blocking socket by the deadline. */
static int io_full(int fd, void *buf, size_t n, int writing, double deadline, int *err) {
    size_t done = 0;
    *err = 0;
    while (done < n) {
        ssize_t k = writing ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL) : recv(fd, (char *)buf + done, n - done, 0);
        if (k > 0) {
            done += (size_t)k;
            continue;
        }
        if (k == 0 && !writing) return IO_EOF;
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(fd, writing ? POLLOUT : POLLIN, deadline);
            if (w == 0) return IO_TIMEOUT;
            if (w < 0) {
                *err = errno;
                return IO_ERR;
            }
            continue;
        }
        *err = k < 0 ? errno : EIO;
        return IO_ERR;
    }
    return IO_OK;
}

static const char *io_what(int r, int err) {
    return r == IO_TIMEOUT ? "timed out" : r == IO_EOF ? "the connection was closed" : strerror(err);
}

/* A connected non-blocking socket to host:port, or -1 with why[] (the connect error) and the
 * address tried (resolved[]). One try per resolved address, each bounded by the deadline. */
static int connect_once(const char *host, int port, double deadline, char *why, size_t wn, char *resolved, size_t rn) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0) {
        snprintf(why, wn, "%s does not resolve: %s", host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        char ah[NAME_LEN];
        int ap = 0;
        numeric_name(a->ai_addr, a->ai_addrlen, ah, sizeof ah, &ap);
        host_port(resolved, rn, ah, ap);
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(why, wn, "socket: %s", strerror(errno));
            continue;
        }
        if (set_nonblock(fd) != 0) {
            snprintf(why, wn, "fcntl: %s", strerror(errno));
            close_fd(&fd);
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, deadline);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (w <= 0) soerr = w == 0 ? ETIMEDOUT : errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc != 0) {
            snprintf(why, wn, "%s", strerror(errno));
            close_fd(&fd);
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) tune(fd);
    return fd;
}

/* connect_once until it works or the deadline passes (the peer may not listen yet). */
static int connect_retry(const char *host, int port, double deadline, char *why, size_t wn, char *resolved, size_t rn) {
    double pause = 0.02;
    char first[256] = ""; /* the last real refusal: a try cut short by the deadline says less */
    for (;;) {
        double t = sd_clock_now() + 5.0;
        int fd = connect_once(host, port, t < deadline ? t : deadline, why, wn, resolved, rn);
        if (fd < 0 && strcmp(why, strerror(ETIMEDOUT))) snprintf(first, sizeof first, "%s", why);
        if (fd < 0 && sd_clock_now() >= deadline && first[0]) snprintf(why, wn, "%s", first);
        if (fd >= 0 || sd_clock_now() >= deadline) return fd;
        double left = deadline - sd_clock_now();
        sleep_s(pause < left ? pause : left);
        pause = pause * 2 < 1.0 ? pause * 2 : 1.0;
    }
}

/* A listening socket on addr (a numeric host, or NULL: the wildcard) and port (0: any); -1 with
 * *err set. */
static int listen_on(int family, const struct sockaddr *sa, socklen_t len, int backlog, int *err) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int one = 1, zero = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, sa, len) != 0 || listen(fd, backlog) != 0 || set_nonblock(fd) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- rendezvous messages ---------------------------------------------------------------------- */
static int send_status(int fd, uint64_t magic, int ok, const char *msg, double deadline) {
    unsigned char b[STATUS_LEN + MSG_MAX];
    size_t n = ok || !msg ? 0 : strlen(msg);
    if (n > MSG_MAX) n = MSG_MAX;
    put64(b, magic);
    put32(b + 8, ok ? 0u : 1u);
    put32(b + 12, (uint32_t)n);
    if (n) memcpy(b + STATUS_LEN, msg, n);
    int err = 0;
    return io_full(fd, b, STATUS_LEN + n, 1, deadline, &err);
}

/* Reads a status header and its message; *ok, msg (NUL-terminated, MSG_MAX + 1 bytes). Returns an
 * IO_* code, or -1 when the bytes are not a rendezvous message. */
static int recv_status(int fd, int *ok, char *msg, double deadline, int *err) {
    unsigned char h[STATUS_LEN];
    int r = io_full(fd, h, sizeof h, 0, deadline, err);
    if (r != IO_OK) return r;
    if (get64(h) != RDV_MAGIC) return -1;
    uint32_t n = get32(h + 12);
    *ok = get32(h + 8) == 0;
    msg[0] = '\0';
    if (n > MSG_MAX) return -1;
    if (n) {
        r = io_full(fd, msg, n, 0, deadline, err);
        if (r != IO_OK) return r;
        msg[n] = '\0';
    }
    return IO_OK;
}

static void encode_hello(const sd_comm_tcp_options *o, const peer *me, unsigned char *b) {
    memset(b, 0, HELLO_LEN);
    put64(b, RDV_MAGIC);
    put32(b + 8, PROTO_VERSION);
    uint32_t probe = ORDER_PROBE;
    memcpy(b + 12, &probe, 4); /* the host's own byte order: rank 0 compares */
    put32(b + 16, (uint32_t)o->world_size);
    put32(b + 20, (uint32_t)o->rank);
    put32(b + 24, (uint32_t)o->local_rank);
    put32(b + 28, (uint32_t)me->pid);
    put64(b + 32, o->job_tag);
    put32(b + 40, (uint32_t)me->port);
    put_name(b + 44, me->addr);
    put_name(b + 108, me->host);
}

/* ---- rank 0 ----------------------------------------------------------------------------------- */
/* Tells every rank that connected so far why the rendezvous failed, closes them, and returns the
 * failure (status s) with the same words. */
static sd_status rdv_fail_all(tcp_ctx *x, int extra_fd, sd_status s, const char *msg) {
    double t = sd_clock_now() + 1.0;
    for (int j = 1; j < x->opt.world_size; j++)
        if (x->peers[j].fd >= 0) {
            (void)send_status(x->peers[j].fd, RDV_MAGIC, 0, msg, t);
            close_fd(&x->peers[j].fd);
        }
    if (extra_fd >= 0) {
        (void)send_status(extra_fd, RDV_MAGIC, 0, msg, t);
        close(extra_fd);
    }
    char where[SD_COMM_TCP_ADDR_LEN + 16];
    host_port(where, sizeof where, x->opt.master_addr, x->opt.master_port);
    return SD_FAIL(s, "rank 0: the rendezvous at %s failed: %s", where, msg);
}

/* Another process holds MASTER_ADDR:port. If it is a scadles rank 0 it answers a HELLO of rank 0
 * (and fails its own rendezvous: its job has a duplicate rank); otherwise it is someone else. */
static sd_status second_rank0(tcp_ctx *x, const char *where) {
    char why[256] = "", resolved[128] = "", msg[MSG_MAX + 1] = "";
    int fd = connect_once(x->opt.master_addr, x->opt.master_port, sd_clock_now() + 2.0, why, sizeof why, resolved,
                          sizeof resolved);
    int ours = 0;
    if (fd >= 0) {
        unsigned char b[HELLO_LEN];
        encode_hello(&x->opt, &x->peers[0], b);
        int err = 0, ok = 0;
        if (io_full(fd, b, sizeof b, 1, sd_clock_now() + 2.0, &err) == IO_OK)
            ours = recv_status(fd, &ok, msg, sd_clock_now() + 3.0, &err) == IO_OK;
        close(fd);
    }
    if (ours)
        return SD_FAIL(SD_ERR_INVALID,
                       "rank 0: %s is already the rendezvous of another process with RANK=0 (it answered: %s). Exactly "
                       "one process of a job may have RANK=0: give each process its own RANK in [0, %d), or give this "
                       "job its own MASTER_PORT", where, msg, x->opt.world_size);
    return SD_FAIL(SD_ERR_IO,
                   "rank 0: cannot listen on %s: the address is in use by another program (or by a job past its "
                   "rendezvous). Choose a free MASTER_PORT (or SCADLES_MASTER_PORT); under torchrun's static "
                   "rendezvous MASTER_PORT is torchrun's own store and scadles uses MASTER_PORT + 1", where);
}

/* The rendezvous socket: on MASTER_ADDR when it is an address of this host, else on every
 * interface (MASTER_ADDR may be a name that routes here, e.g. a Kubernetes service). */
static sd_status rdv_listen(tcp_ctx *x) {
    const sd_comm_tcp_options *o = &x->opt;
    char where[SD_COMM_TCP_ADDR_LEN + 16], ps[16];
    host_port(where, sizeof where, o->master_addr, o->master_port);
    snprintf(ps, sizeof ps, "%d", o->master_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    int g = getaddrinfo(o->master_addr, ps, &hints, &res);
    if (g != 0)
        return SD_FAIL(SD_ERR_INVALID, "rank 0: MASTER_ADDR=%s does not resolve (%s): set MASTER_ADDR to the name or "
                       "address of the host of the RANK=0 process, the same in every process", o->master_addr,
                       gai_strerror(g));
    int backlog = o->world_size < 4096 ? o->world_size + 8 : 4096, err = 0, in_use = 0, not_here = 0, other = 0;
    for (struct addrinfo *a = res; a && x->listen_fd < 0; a = a->ai_next) {
        x->listen_fd = listen_on(a->ai_family, a->ai_addr, a->ai_addrlen, backlog, &err);
        if (x->listen_fd < 0 && err == EADDRINUSE) in_use = 1;
        else if (x->listen_fd < 0 && err == EADDRNOTAVAIL) not_here = 1;
        else if (x->listen_fd < 0) other = err;
    }
    freeaddrinfo(res);
    if (x->listen_fd < 0 && !in_use && not_here && !other) {
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)o->master_port),
                                  .sin6_addr = in6addr_any};
        x->listen_fd = listen_on(AF_INET6, (struct sockaddr *)&a6, sizeof a6, backlog, &err);
        if (x->listen_fd < 0 && err != EADDRINUSE) {
            struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->master_port)};
            a4.sin_addr.s_addr = htonl(INADDR_ANY);
            x->listen_fd = listen_on(AF_INET, (struct sockaddr *)&a4, sizeof a4, backlog, &err);
        }
        if (x->listen_fd < 0 && err == EADDRINUSE) in_use = 1;
        else if (x->listen_fd < 0) other = err;
    }
    if (x->listen_fd >= 0) return SD_OK;
    if (in_use) return second_rank0(x, where);
    return SD_FAIL(SD_ERR_IO, "rank 0: cannot listen on %s: %s; choose another MASTER_PORT (above 1023 unless root)",
                   where, strerror(other));
}

/* Reads and checks one HELLO on a fresh connection; registers the rank or fails the rendezvous.
 * *fatal is set when the rendezvous failed (the returned status says why). */
static sd_status rdv_hello(tcp_ctx *x, int fd, double deadline, int *have, int *fatal) {
    const int p = x->opt.world_size;
    unsigned char b[HELLO_LEN];
    int err = 0;
    double t = sd_clock_now() + 5.0;
    int r = io_full(fd, b, sizeof b, 0, t < deadline ? t : deadline, &err);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char from[NAME_LEN] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) numeric_name((struct sockaddr *)&ss, sl, from, sizeof from, NULL);
    if (r != IO_OK || get64(b) != RDV_MAGIC) {
        fprintf(stderr, "note: rank 0: ignored a connection from %s to the rendezvous that is not a scadles rank (%s)\n",
                from, r != IO_OK ? io_what(r, err) : "it sent something else");
        close(fd);
        return SD_OK;
    }
    char msg[MSG_MAX];
    uint32_t probe = 0;
    memcpy(&probe, b + 12, 4);
    peer q = {.fd = fd, .port = (int)get32(b + 40), .pid = (int)get32(b + 28)};
    get_name(b + 44, q.addr);
    get_name(b + 108, q.host);
    set_where(&q);
    uint32_t world = get32(b + 16), rank = get32(b + 20);
    uint64_t tag = get64(b + 32);
    *fatal = 1;
    if (get32(b + 8) != PROTO_VERSION) {
        snprintf(msg, sizeof msg, "rank %u (%s) speaks rendezvous version %u, rank 0 version %u: run the same scadles "
                 "build in every process", rank, q.where, get32(b + 8), PROTO_VERSION);
    } else if (probe != ORDER_PROBE) {
        snprintf(msg, sizeof msg, "rank %u (%s) has another byte order than rank 0: every host must have the same "
                 "byte order (float payloads are sent as they are in memory)", rank, q.where);
    } else if ((int)world != p) {
        snprintf(msg, sizeof msg, "rank %u (%s) was started with WORLD_SIZE=%u but rank 0 with WORLD_SIZE=%d: start "
                 "every process with the same WORLD_SIZE", rank, q.where, world, p);
    } else if (rank == 0) {
        snprintf(msg, sizeof msg, "a second process with RANK=0 (host %s, pid %d) came to the rendezvous of rank 0 "
                 "(host %s, pid %d): exactly one process may have RANK=0; give each process its own RANK in [0, %d)",
                 q.host, q.pid, x->peers[0].host, x->peers[0].pid, p);
    } else if ((int)rank >= p) {
        snprintf(msg, sizeof msg, "a process (%s) has RANK=%u, outside [0, WORLD_SIZE=%d): give each process its own "
                 "RANK in [0, %d)", q.where, rank, p, p);
    } else if (x->peers[rank].fd >= 0) {
        snprintf(msg, sizeof msg, "two processes have RANK=%u (%s, and %s): give each process its own RANK in [0, %d)",
                 rank, x->peers[rank].where, q.where, p);
    } else if (tag != x->opt.job_tag) {
        snprintf(msg, sizeof msg, "rank %u (%s) brings job tag %016llx but rank 0 %016llx: it runs a different job "
                 "(for scadles-train: the resolved experiment differs, another --config, --set or file); start every "
                 "rank with the same one", rank, q.where, (unsigned long long)tag, (unsigned long long)x->opt.job_tag);
    } else {
        *fatal = 0;
        x->peers[rank] = q;
        (*have)++;
        return SD_OK;
    }
    return rdv_fail_all(x, fd, SD_ERR_INVALID, msg);
}

/* Names the ranks that have not come: "ranks 2, 3". */
static void missing_ranks(const tcp_ctx *x, char *out, size_t n) {
    out[0] = '\0';
    int k = 0, total = 0;
    for (int j = 1; j < x->opt.world_size; j++) total += x->peers[j].fd < 0;
    sd_appendf(out, n, "%s ", total == 1 ? "rank" : "ranks");
    for (int j = 1; j < x->opt.world_size; j++)
        if (x->peers[j].fd < 0) {
            if (k == 16) {
                sd_appendf(out, n, ", ...");
                break;
            }
            sd_appendf(out, n, "%s%d", k++ ? ", " : "", j);
        }
}

static sd_status rank0_rendezvous(tcp_ctx *x, double deadline) {
    const int p = x->opt.world_size;
    char where[SD_COMM_TCP_ADDR_LEN + 16], msg[MSG_MAX + 8], gone[MSG_MAX + 1];
    host_port(where, sizeof where, x->opt.master_addr, x->opt.master_port);
    TRY(rdv_listen(x));
    /* 1. every rank says hello (a rank that disconnects before the table goes out may come back) */
    int have = 0;
    while (have < p - 1) {
        int n = 0;
        x->pfd[n++] = (struct pollfd){.fd = x->listen_fd, .events = POLLIN};
        for (int j = 1; j < p; j++)
            if (x->peers[j].fd >= 0) {
                x->pidx[n] = j;
                x->pfd[n++] = (struct pollfd){.fd = x->peers[j].fd, .events = POLLIN};
            }
        int ms = ms_until(deadline);
        if (ms == 0) {
            char miss[512];
            missing_ranks(x, miss, sizeof miss);
            snprintf(msg, sizeof msg, "%s never connected within %g s (connect timeout; SCADLES_CONNECT_TIMEOUT_S): "
                     "start all WORLD_SIZE=%d processes with MASTER_ADDR and MASTER_PORT reaching rank 0 at %s", miss,
                     x->opt.connect_timeout_s, p, where);
            return rdv_fail_all(x, -1, SD_ERR_RUNTIME, msg);
        }
        int k = poll(x->pfd, (nfds_t)n, ms);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return rdv_fail_all(x, -1, SD_ERR_IO, strerror(errno));
        for (int i = 1; i < n; i++) /* a registered rank that sends before the table: it went away */
            if (x->pfd[i].revents) {
                int j = x->pidx[i];
                fprintf(stderr, "note: rank 0: rank %d (%s) left the rendezvous; waiting for it to come back\n", j,
                        x->peers[j].where);
                close_fd(&x->peers[j].fd);
                have--;
            }
        if (x->pfd[0].revents & POLLIN) {
            int fd = accept(x->listen_fd, NULL, NULL);
            if (fd < 0) continue;
            int fatal = 0;
            if (set_nonblock(fd) != 0) {
                close(fd);
                continue;
            }
            tune(fd);
            sd_status s = rdv_hello(x, fd, deadline, &have, &fatal);
            if (s != SD_OK) return s;
        }
    }
    /* 2. the table: every rank's listening address, and a nonce that marks this job's mesh */
    uint64_t nonce = (uint64_t)getpid() << 32 ^ (uint64_t)(sd_clock_now() * 1e9) ^ (uint64_t)(uintptr_t)x;
    size_t len = STATUS_LEN + 12 + (size_t)p * ENTRY_LEN;
    unsigned char *b = calloc(1, len);
    if (!b) return rdv_fail_all(x, -1, SD_ERR_OOM, "rank 0 ran out of memory for the rendezvous table");
    put64(b, RDV_MAGIC);
    put64(b + STATUS_LEN, nonce);
    put32(b + STATUS_LEN + 8, (uint32_t)p);
    for (int j = 0; j < p; j++) {
        unsigned char *e = b + STATUS_LEN + 12 + (size_t)j * ENTRY_LEN;
        put32(e, (uint32_t)x->peers[j].port);
        put32(e + 4, (uint32_t)x->peers[j].pid);
        put_name(e + 8, x->peers[j].addr);
        put_name(e + 72, x->peers[j].host);
    }
    double t = sd_clock_now() + x->opt.connect_timeout_s;
    for (int j = 1; j < p; j++) {
        int err = 0, r = io_full(x->peers[j].fd, b, len, 1, t, &err);
        if (r != IO_OK) {
            free(b);
            snprintf(msg, sizeof msg, "rank %d (%s) did not take the rendezvous table: %s", j, x->peers[j].where,
                     io_what(r, err));
            return rdv_fail_all(x, -1, SD_ERR_RUNTIME, msg);
        }
    }
    free(b);
    /* 3. every rank connects to the others and says READY (or why not: the first failure is told
     * to all at once, while the ranks that wait for the failed one still wait); rank 0 says GO */
    for (int j = 0; j < p; j++) x->peers[j].rx_on = j > 0;
    for (int ready = 0; ready < p - 1;) {
        nfds_t n = 0;
        for (int j = 1; j < p; j++)
            if (x->peers[j].rx_on) {
                x->pidx[n] = j;
                x->pfd[n++] = (struct pollfd){.fd = x->peers[j].fd, .events = POLLIN};
            }
        int ms = ms_until(t);
        if (ms == 0) {
            snprintf(msg, sizeof msg, "not every rank connected to all the others within %g s:", x->opt.connect_timeout_s);
            for (int j = 1; j < p; j++)
                if (x->peers[j].rx_on) sd_appendf(msg, sizeof msg, " rank %d (%s)", j, x->peers[j].where);
            return rdv_fail_all(x, -1, SD_ERR_RUNTIME, msg);
        }
        int k = poll(x->pfd, n, ms);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return rdv_fail_all(x, -1, SD_ERR_IO, strerror(errno));
        for (nfds_t i = 0; k > 0 && i < n; i++) {
            if (!x->pfd[i].revents) continue;
            const int j = x->pidx[i];
            int ok = 0, err = 0, r = recv_status(x->peers[j].fd, &ok, gone, sd_clock_now() + 5.0, &err);
            if (r == IO_OK && ok) {
                x->peers[j].rx_on = 0;
                ready++;
                continue;
            }
            if (r == IO_OK) snprintf(msg, sizeof msg, "%s", gone);
            else
                snprintf(msg, sizeof msg, "rank %d (%s) %s while connecting to the other ranks (see its output)", j,
                         x->peers[j].where, r == IO_EOF ? "exited" : "answered nonsense");
            return rdv_fail_all(x, -1, SD_ERR_RUNTIME, msg);
        }
    }
    for (int j = 1; j < p; j++) {
        int r = send_status(x->peers[j].fd, RDV_MAGIC, 1, NULL, t);
        if (r != IO_OK) {
            snprintf(msg, sizeof msg, "rank %d (%s) went away before the start", j, x->peers[j].where);
            return rdv_fail_all(x, -1, SD_ERR_RUNTIME, msg);
        }
    }
    return SD_OK;
}

/* ---- ranks 1.. -------------------------------------------------------------------------------- */
/* Reads and checks one MESH greeting from a rank above this one. 1: registered, 0: ignored. */
static int mesh_accept(tcp_ctx *x, int fd, uint64_t nonce, double deadline) {
    const int p = x->opt.world_size, me = x->opt.rank;
    unsigned char b[MESH_LEN];
    int err = 0;
    double t = sd_clock_now() + 5.0;
    if (set_nonblock(fd) != 0 || io_full(fd, b, sizeof b, 0, t < deadline ? t : deadline, &err) != IO_OK ||
        get64(b) != MESH_MAGIC || get64(b + 8) != nonce || (int)get32(b + 20) != p) {
        close(fd);
        return 0;
    }
    int j = (int)get32(b + 16);
    if (j <= me || j >= p || x->peers[j].fd >= 0) {
        close(fd);
        return 0;
    }
    tune(fd);
    x->peers[j].fd = fd;
    return 1;
}

static sd_status peer_rendezvous(tcp_ctx *x, double deadline) {
    const sd_comm_tcp_options *o = &x->opt;
    const int p = o->world_size, me = o->rank;
    char where[SD_COMM_TCP_ADDR_LEN + 16], why[MSG_MAX] = "", resolved[128] = "?", msg[MSG_MAX + 1];
    host_port(where, sizeof where, o->master_addr, o->master_port);
    /* 1. rank 0 (retrying: it may start later), then a listening socket on the address that reached it */
    int fd0 = connect_retry(o->master_addr, o->master_port, deadline, why, sizeof why, resolved, sizeof resolved);
    if (fd0 < 0)
        return SD_FAIL(SD_ERR_RUNTIME, "rank %d: could not connect to rank 0 at %s (%s) within %g s: %s. Is the RANK=0 "
                       "process running, and do all processes have the same MASTER_ADDR and MASTER_PORT? (connect "
                       "timeout: SCADLES_CONNECT_TIMEOUT_S)", me, where, resolved, o->connect_timeout_s, why);
    x->peers[0].fd = fd0;
    const double connected = sd_clock_now();
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int err = 0;
    if (getsockname(fd0, (struct sockaddr *)&ss, &sl) != 0)
        return SD_FAIL(SD_ERR_IO, "rank %d: getsockname: %s", me, strerror(errno));
    if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = 0;
    else ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
    int lfd = listen_on(ss.ss_family, (struct sockaddr *)&ss, sl, p + 8, &err);
    if (lfd < 0) return SD_FAIL(SD_ERR_IO, "rank %d: cannot listen for the other ranks: %s", me, strerror(err));
    sl = sizeof ss;
    (void)getsockname(lfd, (struct sockaddr *)&ss, &sl);
    peer *self = &x->peers[me];
    numeric_name((struct sockaddr *)&ss, sl, self->addr, sizeof self->addr, &self->port);
    set_where(self);
    /* 2. HELLO, then the table (or rank 0's reason to fail) */
    unsigned char hb[HELLO_LEN];
    encode_hello(o, self, hb);
    int r = io_full(fd0, hb, sizeof hb, 1, deadline, &err);
    unsigned char h[STATUS_LEN];
    /* rank 0 gives up at most connect_timeout_s after it started, which was before it accepted us */
    const double answer_by = connected + o->connect_timeout_s + 5.0;
    if (r == IO_OK) r = io_full(fd0, h, sizeof h, 0, answer_by, &err);
    sd_status fail = SD_OK;
    if (r != IO_OK) {
        fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: rank 0 at %s %s during the rendezvous%s", me, where,
                       r == IO_TIMEOUT ? "did not answer" : r == IO_EOF ? "closed the connection" : io_what(r, err),
                       r == IO_EOF ? ": it failed or exited (see its output)" : "");
        goto out;
    }
    if (get64(h) != RDV_MAGIC) {
        fail = SD_FAIL(SD_ERR_INVALID, "rank %d: %s answered, but not as a scadles rank 0: MASTER_PORT belongs to another "
                       "program (under torchrun, to its store: use SCADLES_MASTER_PORT)", me, where);
        goto out;
    }
    uint32_t n = get32(h + 12);
    if (get32(h + 8) != 0) {
        if (n > MSG_MAX) n = MSG_MAX;
        msg[0] = '\0';
        if (n && io_full(fd0, msg, n, 0, answer_by, &err) == IO_OK) msg[n] = '\0';
        else snprintf(msg, sizeof msg, "(its message was lost)");
        fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: the rendezvous at %s failed: %s", me, where, msg);
        goto out;
    }
    size_t len = 12 + (size_t)p * ENTRY_LEN;
    unsigned char *b = malloc(len);
    if (!b) {
        fail = SD_FAIL(SD_ERR_OOM, "rank %d: rendezvous table", me);
        goto out;
    }
    r = io_full(fd0, b, len, 0, answer_by, &err);
    if (r != IO_OK || (int)get32(b + 8) != p) {
        free(b);
        fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: the rendezvous table from rank 0 at %s: %s", me, where,
                       r != IO_OK ? io_what(r, err) : "wrong size");
        goto out;
    }
    for (int j = 0; j < p; j++) {
        if (j == me) continue;
        const unsigned char *e = b + 12 + (size_t)j * ENTRY_LEN;
        peer *q = &x->peers[j];
        q->port = (int)get32(e);
        q->pid = (int)get32(e + 4);
        get_name(e + 8, q->addr);
        get_name(e + 72, q->host);
        if (j == 0) {
            snprintf(q->addr, sizeof q->addr, "%s", o->master_addr);
            q->port = o->master_port;
        }
        set_where(q);
    }
    const uint64_t nonce = get64(b);
    free(b);
    /* 3. connect to ranks 1..me-1 (their sockets listen already), accept ranks me+1.. */
    why[0] = '\0';
    const double mesh_by = sd_clock_now() + o->connect_timeout_s;
    for (int j = 1; j < me && !why[0]; j++) {
        peer *q = &x->peers[j];
        char cw[256] = "";
        q->fd = connect_retry(q->addr, q->port, mesh_by, cw, sizeof cw, resolved, sizeof resolved);
        unsigned char m[MESH_LEN];
        put64(m, MESH_MAGIC);
        put64(m + 8, nonce);
        put32(m + 16, (uint32_t)me);
        put32(m + 20, (uint32_t)p);
        if (q->fd >= 0) {
            cw[0] = '\0'; /* it connected: earlier tries' errors do not count */
            if ((r = io_full(q->fd, m, sizeof m, 1, mesh_by, &err)) != IO_OK) snprintf(cw, sizeof cw, "%s", io_what(r, err));
        }
        if (q->fd < 0 || cw[0])
            snprintf(why, sizeof why, "rank %d could not connect to rank %d at %.200s: %.200s; every host must reach "
                     "every other on the ports the ranks listen on (a firewall?)", me, j, q->where, cw);
    }
    int need = 0;
    for (int j = me + 1; j < p; j++) need++;
    while (need > 0 && !why[0]) {
        struct pollfd pf[2] = {{.fd = lfd, .events = POLLIN}, {.fd = fd0, .events = POLLIN}};
        int ms = ms_until(mesh_by);
        if (ms == 0) {
            snprintf(why, sizeof why, "rank %d: ranks above it did not all connect within %g s:", me, o->connect_timeout_s);
            for (int j = me + 1; j < p; j++)
                if (x->peers[j].fd < 0) sd_appendf(why, sizeof why, " %d (%s)", j, x->peers[j].where);
            break;
        }
        int k = poll(pf, 2, ms);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            snprintf(why, sizeof why, "rank %d: poll: %s", me, strerror(errno));
            break;
        }
        if (pf[1].revents) break; /* rank 0 speaks first: the rendezvous failed elsewhere (read below) */
        if (pf[0].revents & POLLIN) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) need -= mesh_accept(x, fd, nonce, mesh_by);
        }
    }
    /* 4. READY (or why not), then GO */
    const int ok_here = !why[0] && need == 0;
    if (!ok_here || send_status(fd0, RDV_MAGIC, 1, NULL, mesh_by) == IO_OK) {
        if (!ok_here && why[0]) (void)send_status(fd0, RDV_MAGIC, 0, why, sd_clock_now() + 1.0);
        int ok = 0;
        r = recv_status(fd0, &ok, msg, mesh_by + o->connect_timeout_s + 5.0, &err);
        if (r == IO_OK && ok && ok_here) goto out;
        if (r == IO_OK && !ok)
            fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: the rendezvous at %s failed: %s", me, where, msg);
        else if (why[0])
            fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: the rendezvous at %s failed: %s", me, where, why);
        else
            fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: rank 0 at %s %s before the start", me, where,
                           r == IO_EOF ? "closed the connection (it failed: see its output)" : io_what(r, err));
    } else {
        fail = SD_FAIL(SD_ERR_RUNTIME, "rank %d: rank 0 at %s went away during the rendezvous (see its output)", me, where);
    }
out:
    close(lfd);
    return fail;
}

/* ---- collectives: the progress engine ------------------------------------------------------------ */
static void frame_header(unsigned char *h, int type, sd_coll op, int phase, uint32_t arg, uint64_t seq, uint64_t len,
                         uint64_t aux) {
    memset(h, 0, FRAME_HDR);
    put32(h, FRAME_MAGIC);
    h[4] = (unsigned char)type;
    h[5] = (unsigned char)op;
    h[6] = (unsigned char)phase;
    put32(h + 8, arg);
    put64(h + 16, seq);
    put64(h + 24, len);
    put64(h + 32, aux);
}

/* This phase sends buf (len bytes) to peer j; aux is the call's size and arg the root (checked by
 * the receiver). */
static void post_send(tcp_ctx *x, int j, const void *buf, size_t len, uint64_t aux, uint32_t arg) {
    peer *q = &x->peers[j];
    frame_header(q->thdr, FR_DATA, x->op, x->phase, arg, x->seq, len, aux);
    q->tbuf = buf;
    q->tlen = len;
    q->tdone = 0;
    q->tx_on = 1;
}

/* This phase receives len bytes from peer j into buf, with the call's size aux and root arg. */
static void post_recv(tcp_ctx *x, int j, void *buf, size_t len, uint64_t aux, uint32_t arg) {
    peer *q = &x->peers[j];
    q->rbuf = buf;
    q->rlen = len;
    q->raux = aux;
    q->rarg = arg;
    q->rdone = 0;
    q->rx_on = 1;
}

/* Tells every peer why this rank gives up (an ABORT frame where no frame is half sent) and shuts
 * the sending side, so each peer's current or next collective fails with the reason. */
static void abort_peers(tcp_ctx *x, int me) {
    const double t = sd_clock_now() + 0.5;
    size_t n = strlen(x->reason);
    if (n > MSG_MAX) n = MSG_MAX;
    for (int j = 0; j < x->opt.world_size; j++) {
        peer *q = &x->peers[j];
        if (j == me || q->fd < 0) continue;
        if (!(q->tx_on && q->tdone > 0)) {
            unsigned char b[FRAME_HDR + MSG_MAX];
            frame_header(b, FR_ABORT, x->op, 0, 0, x->seq, n, 0);
            memcpy(b + FRAME_HDR, x->reason, n);
            int err = 0;
            (void)io_full(q->fd, b, FRAME_HDR + n, 1, t, &err);
        }
        (void)shutdown(q->fd, SHUT_WR);
        q->tx_on = q->rx_on = 0;
    }
}

/* Fails the current collective: "rank R: <op> #N failed: <detail>", poisons the group and tells
 * every peer. */
static sd_status fail_coll(sd_comm *c, sd_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static sd_status fail_coll(sd_comm *c, sd_status s, const char *fmt, ...) {
    tcp_ctx *x = c->ctx;
    char detail[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(x->reason, sizeof x->reason, "rank %d: %s #%llu failed: %s", c->rank, sd_coll_name(x->op),
             (unsigned long long)x->seq, detail);
    if (!x->broken) {
        x->broken = 1;
        abort_peers(x, c->rank);
    }
    return SD_FAIL(s, "%s", x->reason);
}

/* Peer j's ABORT frame (its header read): the reason it sent, as this rank's failure. */
static sd_status peer_gave_up(sd_comm *c, int j, uint64_t len) {
    peer *q = &((tcp_ctx *)c->ctx)->peers[j];
    char why[MSG_MAX + 1] = "";
    size_t n = len < MSG_MAX ? (size_t)len : MSG_MAX;
    int err = 0;
    if (io_full(q->fd, why, n, 0, sd_clock_now() + 2.0, &err) != IO_OK) snprintf(why, sizeof why, "(reason lost)");
    else why[n] = '\0';
    return fail_coll(c, SD_ERR_RUNTIME, "rank %d (%s) gave up: %s", j, q->where, why);
}

/* A header from peer j: the frame this rank expects in this phase, or a failure saying how not. */
static sd_status check_header(sd_comm *c, int j) {
    tcp_ctx *x = c->ctx;
    peer *q = &x->peers[j];
    const unsigned char *h = q->rhdr;
    const sd_coll op = (sd_coll)h[5];
    const uint64_t seq = get64(h + 16), len = get64(h + 24), aux = get64(h + 32);
    const uint32_t arg = get32(h + 8);
    if (get32(h) != FRAME_MAGIC || (h[4] != FR_DATA && h[4] != FR_ABORT))
        return fail_coll(c, SD_ERR_FORMAT, "rank %d (%s) sent bytes that are not a frame: the connection is out of step",
                         j, q->where);
    if (h[4] == FR_ABORT) return peer_gave_up(c, j, len);
    const char *me = sd_coll_name(x->op), *its = op < SD_COLL_COUNT ? sd_coll_name(op) : "an unknown collective";
    if (op != x->op || seq != x->seq)
        return fail_coll(c, SD_ERR_INVALID, "collective mismatch: this rank called %s #%llu but rank %d sent %s #%llu: "
                         "every rank must call the same collectives in the same order", me, (unsigned long long)x->seq, j,
                         its, (unsigned long long)seq);
    if (h[6] != x->phase)
        return fail_coll(c, SD_ERR_FORMAT, "rank %d sent phase %d of %s, this rank is in phase %d", j, h[6], me, x->phase);
    if (arg != q->rarg)
        return fail_coll(c, SD_ERR_INVALID, "broadcast mismatch: rank %d broadcasts from root %u but this rank expects "
                         "root %u", j, arg, q->rarg);
    if (aux != q->raux || len != q->rlen) {
        switch (x->op) {
        case SD_COLL_ALLREDUCE:
            return fail_coll(c, SD_ERR_INVALID, "allreduce count mismatch: rank %d has %llu floats, this rank %llu", j,
                             (unsigned long long)aux, (unsigned long long)q->raux);
        case SD_COLL_BROADCAST:
            return fail_coll(c, SD_ERR_INVALID, "broadcast mismatch: rank %d (the root) sends %llu bytes but this rank "
                             "expects %llu", j, (unsigned long long)aux, (unsigned long long)q->raux);
        case SD_COLL_ALLGATHERV:
            return fail_coll(c, SD_ERR_INVALID, "allgatherv size mismatch: rank %d sends %llu bytes but this rank expects "
                             "%zu from it (recv_bytes[%d])", j, (unsigned long long)len, q->rlen, j);
        case SD_COLL_ALLTOALLV:
            return fail_coll(c, SD_ERR_INVALID, "alltoallv size mismatch: rank %d sends %llu bytes to this rank but "
                             "recv_bytes[%d] is %zu", j, (unsigned long long)len, j, q->rlen);
        default:
            return fail_coll(c, SD_ERR_INVALID, "size mismatch: rank %d sends %llu bytes, this rank expects %zu", j,
                             (unsigned long long)len, q->rlen);
        }
    }
    return SD_OK;
}

static sd_status lost(sd_comm *c, int j, int err) {
    tcp_ctx *x = c->ctx;
    peer *q = &x->peers[j];
    if (!q->rx_on || q->rdone == 0) { /* at a frame boundary: the peer may have said why before it closed */
        unsigned char h[FRAME_HDR];
        if (recv(q->fd, h, FRAME_HDR, MSG_PEEK | MSG_DONTWAIT) == FRAME_HDR && get32(h) == FRAME_MAGIC &&
            h[4] == FR_ABORT && recv(q->fd, h, FRAME_HDR, MSG_DONTWAIT) == FRAME_HDR)
            return peer_gave_up(c, j, get64(h + 24));
    }
    return fail_coll(c, SD_ERR_RUNTIME, "lost the connection to rank %d (%s): %s: that process exited, was killed or "
                     "failed (see its output); the group is unusable", j, x->peers[j].where,
                     err ? strerror(err) : "closed by the peer");
}

/* Receives what peer j has for this phase; *moved when bytes came. */
static sd_status do_recv(sd_comm *c, int j, int *moved) {
    peer *q = &((tcp_ctx *)c->ctx)->peers[j];
    while (q->rx_on) {
        ssize_t k;
        if (q->rdone < FRAME_HDR) k = recv(q->fd, q->rhdr + q->rdone, FRAME_HDR - q->rdone, 0);
        else if (q->rdone - FRAME_HDR < q->rlen)
            k = recv(q->fd, q->rbuf + (q->rdone - FRAME_HDR), q->rlen - (q->rdone - FRAME_HDR), 0);
        else {
            q->rx_on = 0;
            break;
        }
        if (k == 0) return lost(c, j, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return SD_OK;
            return lost(c, j, errno);
        }
        *moved = 1;
        const int had_header = q->rdone >= FRAME_HDR;
        q->rdone += (size_t)k;
        if (!had_header && q->rdone == FRAME_HDR) TRY(check_header(c, j));
        if (q->rdone >= FRAME_HDR && q->rdone - FRAME_HDR == q->rlen) q->rx_on = 0;
    }
    return SD_OK;
}

/* Sends what is left of this phase's frame to peer j; *moved when bytes went. */
static sd_status do_send(sd_comm *c, int j, int *moved) {
    peer *q = &((tcp_ctx *)c->ctx)->peers[j];
    while (q->tx_on) {
        struct iovec iov[2];
        int n = 0;
        if (q->tdone < FRAME_HDR) {
            iov[n++] = (struct iovec){.iov_base = q->thdr + q->tdone, .iov_len = FRAME_HDR - q->tdone};
            if (q->tlen) iov[n++] = (struct iovec){.iov_base = (void *)q->tbuf, .iov_len = q->tlen};
        } else {
            size_t off = q->tdone - FRAME_HDR;
            iov[n++] = (struct iovec){.iov_base = (void *)(q->tbuf + off), .iov_len = q->tlen - off};
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(q->fd, &m, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return SD_OK;
            return lost(c, j, errno);
        }
        *moved = 1;
        q->tdone += (size_t)k;
        if (q->tdone == FRAME_HDR + q->tlen) q->tx_on = 0;
    }
    return SD_OK;
}

/* The ranks this phase still waits for, for the timeout message. */
static sd_status timed_out(sd_comm *c) {
    tcp_ctx *x = c->ctx;
    char who[MSG_MAX / 2] = "";
    int k = 0;
    for (int j = 0; j < c->size; j++) {
        peer *q = &x->peers[j];
        if (j == c->rank || !(q->rx_on || q->tx_on)) continue;
        if (k == 8) {
            sd_appendf(who, sizeof who, ", ...");
            break;
        }
        sd_appendf(who, sizeof who, "%srank %d (%s: %s)", k++ ? ", " : "", j, q->where,
                q->rx_on && q->rdone == 0 ? "sent nothing of this call" : q->rx_on ? "stopped sending" : "is not reading");
    }
    return fail_coll(c, SD_ERR_RUNTIME, "timed out after %g s without progress waiting for %s; it is dead, hung, slow or "
                     "in a different collective; the group is unusable. If that rank was only slow (an evaluation on "
                     "a loaded machine), raise the timeout (experiment field comm_timeout_s)", x->opt.timeout_s, who);
}

/* Runs the posted sends and receives of this phase to completion. */
static sd_status run_phase(sd_comm *c) {
    tcp_ctx *x = c->ctx;
    const double timeout = x->opt.timeout_s;
    double last = sd_clock_now();
    int moved = 0;
    for (int j = 0; j < c->size; j++) /* eagerly: sockets are mostly writable, small frames go at once */
        if (j != c->rank && x->peers[j].tx_on) TRY(do_send(c, j, &moved));
    for (;;) {
        nfds_t n = 0;
        for (int j = 0; j < c->size; j++) {
            peer *q = &x->peers[j];
            if (j == c->rank || !(q->tx_on || q->rx_on)) continue;
            x->pidx[n] = j;
            x->pfd[n++] = (struct pollfd){.fd = q->fd, .events = (short)((q->rx_on ? POLLIN : 0) | (q->tx_on ? POLLOUT : 0))};
        }
        if (n == 0) return SD_OK;
        int ms = timeout > 0 ? ms_until(last + timeout) : 1000;
        int k = ms == 0 ? 0 : poll(x->pfd, n, ms);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return fail_coll(c, SD_ERR_IO, "poll: %s", strerror(errno));
        moved = 0;
        for (nfds_t i = 0; i < n; i++) {
            const short ev = x->pfd[i].revents;
            const int j = x->pidx[i];
            if (!ev) continue;
            if (ev & POLLNVAL) return fail_coll(c, SD_ERR_RUNTIME, "the connection to rank %d is closed", j);
            if (ev & (POLLIN | POLLHUP | POLLERR)) TRY(do_recv(c, j, &moved));
            if (ev & (POLLOUT | POLLHUP | POLLERR)) TRY(do_send(c, j, &moved));
        }
        const double now = sd_clock_now();
        if (moved) last = now;
        else if (timeout > 0 && now - last >= timeout) return timed_out(c);
    }
}

/* Enters collective op: numbered, refused fast on a poisoned group. */
static sd_status enter(sd_comm *c, sd_coll op) {
    tcp_ctx *x = c->ctx;
    x->seq++;
    x->op = op;
    x->phase = 0;
    if (x->broken)
        return SD_FAIL(SD_ERR_RUNTIME, "rank %d: %s #%llu failed: the group is unusable after an earlier failure: %s",
                       c->rank, sd_coll_name(op), (unsigned long long)x->seq, x->reason);
    return SD_OK;
}

/* ---- the collectives ---------------------------------------------------------------------------- */
static size_t chunk_len(size_t count, int k, int p) {
    return count / (size_t)p + ((size_t)k < count % (size_t)p ? 1u : 0u);
}
static size_t chunk_off(size_t count, int k, int p) {
    size_t extra = count % (size_t)p;
    return count / (size_t)p * (size_t)k + ((size_t)k < extra ? (size_t)k : extra);
}

static sd_status tcp_allreduce(sd_comm *c, float *buf, size_t count) {
    TRY(enter(c, SD_COLL_ALLREDUCE));
    tcp_ctx *x = c->ctx;
    const int p = c->size, r = c->rank;
    if (p == 1) return SD_OK;
    const size_t mine = chunk_len(count, r, p), moff = chunk_off(count, r, p);
    if (mine * (size_t)p > x->scratch_cap) {
        float *s = realloc(x->scratch, mine * (size_t)p * sizeof(float));
        if (!s) return fail_coll(c, SD_ERR_OOM, "scratch of %zu floats", mine * (size_t)p);
        x->scratch = s;
        x->scratch_cap = mine * (size_t)p;
    }
    /* reduce-scatter: chunk j of this rank to rank j; chunk r of rank j into scratch slot j */
    for (int j = 0; j < p; j++) {
        if (j == r) continue;
        post_send(x, j, buf + chunk_off(count, j, p), chunk_len(count, j, p) * sizeof(float), count, 0);
        post_recv(x, j, x->scratch + (size_t)j * mine, mine * sizeof(float), count, 0);
    }
    TRY(run_phase(c));
    /* the local and MPI backends' order: acc = x_0; acc += x_1; ... (float) */
    float *out = buf + moff;
    if (mine) memcpy(x->scratch + (size_t)r * mine, out, mine * sizeof(float));
    if (mine) memcpy(out, x->scratch, mine * sizeof(float));
    for (int j = 1; j < p; j++) {
        const float *xj = x->scratch + (size_t)j * mine;
        for (size_t i = 0; i < mine; i++) out[i] += xj[i];
    }
    /* allgather of the sums */
    x->phase = 1;
    for (int j = 0; j < p; j++) {
        if (j == r) continue;
        post_send(x, j, out, mine * sizeof(float), count, 0);
        post_recv(x, j, buf + chunk_off(count, j, p), chunk_len(count, j, p) * sizeof(float), count, 0);
    }
    TRY(run_phase(c));
    return SD_OK;
}

static sd_status tcp_allgatherv(sd_comm *c, const void *send, size_t send_bytes, void *recv, const size_t *recv_bytes,
                                const size_t *displs) {
    TRY(enter(c, SD_COLL_ALLGATHERV));
    tcp_ctx *x = c->ctx;
    for (int j = 0; j < c->size; j++) {
        if (j == c->rank) continue;
        post_send(x, j, send, send_bytes, 0, 0);
        post_recv(x, j, (char *)recv + displs[j], recv_bytes[j], 0, 0);
    }
    TRY(run_phase(c));
    char *own = (char *)recv + displs[c->rank];
    if (send_bytes && own != (const char *)send) memcpy(own, send, send_bytes);
    return SD_OK;
}

static sd_status tcp_allgather_u64(sd_comm *c, uint64_t v, uint64_t *out) {
    TRY(enter(c, SD_COLL_ALLGATHER_U64));
    tcp_ctx *x = c->ctx;
    uint64_t mine = v;
    for (int j = 0; j < c->size; j++) {
        if (j == c->rank) continue;
        post_send(x, j, &mine, sizeof mine, 0, 0);
        post_recv(x, j, &out[j], sizeof out[j], 0, 0);
    }
    TRY(run_phase(c));
    out[c->rank] = v;
    return SD_OK;
}

static sd_status tcp_broadcast(sd_comm *c, void *buf, size_t bytes, int root) {
    TRY(enter(c, SD_COLL_BROADCAST));
    tcp_ctx *x = c->ctx;
    if (c->rank == root) {
        for (int j = 0; j < c->size; j++)
            if (j != root) post_send(x, j, buf, bytes, bytes, (uint32_t)root);
    } else {
        post_recv(x, root, buf, bytes, bytes, (uint32_t)root);
    }
    TRY(run_phase(c));
    return SD_OK;
}

static sd_status tcp_barrier(sd_comm *c) {
    TRY(enter(c, SD_COLL_BARRIER));
    tcp_ctx *x = c->ctx;
    for (int j = 0; j < c->size; j++) {
        if (j == c->rank) continue;
        post_send(x, j, NULL, 0, 0, 0);
        post_recv(x, j, NULL, 0, 0, 0);
    }
    TRY(run_phase(c));
    return SD_OK;
}

static sd_status tcp_vote(sd_comm *c, int v, int *sum) {
    TRY(enter(c, SD_COLL_VOTE));
    tcp_ctx *x = c->ctx;
    int32_t *all = x->votes;
    all[c->rank] = v;
    for (int j = 0; j < c->size; j++) {
        if (j == c->rank) continue;
        post_send(x, j, &all[c->rank], sizeof(int32_t), 0, 0);
        post_recv(x, j, &all[j], sizeof(int32_t), 0, 0);
    }
    TRY(run_phase(c));
    long long s = 0;
    for (int j = 0; j < c->size; j++) s += all[j];
    if (s > INT_MAX || s < INT_MIN) return SD_FAIL(SD_ERR_INVALID, "rank %d: vote sum %lld overflows int", c->rank, s);
    *sum = (int)s;
    return SD_OK;
}

static sd_status tcp_alltoallv(sd_comm *c, const void *send, const size_t *send_bytes, const size_t *send_displs,
                               void *recv, const size_t *recv_bytes, const size_t *recv_displs) {
    TRY(enter(c, SD_COLL_ALLTOALLV));
    tcp_ctx *x = c->ctx;
    const int me = c->rank;
    for (int j = 0; j < c->size; j++) {
        if (j == me) continue;
        post_send(x, j, (const char *)send + send_displs[j], send_bytes[j], 0, 0);
        post_recv(x, j, (char *)recv + recv_displs[j], recv_bytes[j], 0, 0);
    }
    TRY(run_phase(c));
    if (send_bytes[me])
        memcpy((char *)recv + recv_displs[me], (const char *)send + send_displs[me], send_bytes[me]);
    return SD_OK;
}

/* ---- teardown ----------------------------------------------------------------------------------- */
/* Reads and drops what the peers still send until each closes (at most `seconds`), so that
 * closing here sends FIN, not a reset that could destroy an ABORT frame not yet read there. */
static void drain(tcp_ctx *x, int me, double seconds) {
    const double until = sd_clock_now() + seconds;
    for (;;) {
        nfds_t n = 0;
        for (int j = 0; j < x->opt.world_size; j++)
            if (j != me && x->peers[j].fd >= 0) {
                x->pidx[n] = j;
                x->pfd[n++] = (struct pollfd){.fd = x->peers[j].fd, .events = POLLIN};
            }
        int ms = ms_until(until);
        if (n == 0 || ms == 0) return;
        int k = poll(x->pfd, n, ms);
        if (k < 0 && errno != EINTR) return;
        for (nfds_t i = 0; k > 0 && i < n; i++) {
            if (!x->pfd[i].revents) continue;
            char sink[4096];
            ssize_t got = recv(x->pfd[i].fd, sink, sizeof sink, 0);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                close_fd(&x->peers[x->pidx[i]].fd);
        }
    }
}

static void free_ctx(tcp_ctx *x) {
    if (!x) return;
    if (x->peers)
        for (int j = 0; j < x->opt.world_size; j++) close_fd(&x->peers[j].fd);
    close_fd(&x->listen_fd);
    free(x->peers);
    free(x->pfd);
    free(x->pidx);
    free(x->votes);
    free(x->scratch);
    free(x);
}

static void tcp_destroy(sd_comm *c) {
    free_ctx(c->ctx);
    free(c);
}

void sd_comm_tcp_abort(sd_comm *c, const char *reason) {
    if (!c || c->ops != &tcp_ops) return;
    tcp_ctx *x = c->ctx;
    if (!x->broken) {
        snprintf(x->reason, sizeof x->reason, "rank %d aborted the group: %s", c->rank, reason ? reason : "(no reason given)");
        x->broken = 1;
        abort_peers(x, c->rank);
    }
    drain(x, c->rank, 1.0);
}

static const sd_comm_ops tcp_ops = {
    .name = "tcp",
    .allreduce_sum = tcp_allreduce,
    .allgatherv = tcp_allgatherv,
    .allgather_u64 = tcp_allgather_u64,
    .broadcast = tcp_broadcast,
    .barrier = tcp_barrier,
    .vote = tcp_vote,
    .alltoallv = tcp_alltoallv,
    .destroy = tcp_destroy,
};

/* ---- creation ----------------------------------------------------------------------------------- */
sd_comm_tcp_options sd_comm_tcp_default_options(void) {
    sd_comm_tcp_options o;
    memset(&o, 0, sizeof o);
    o.local_rank = -1;
    o.timeout_s = SD_COMM_TCP_DEFAULT_TIMEOUT_S;
    o.connect_timeout_s = SD_COMM_TCP_DEFAULT_CONNECT_TIMEOUT_S;
    return o;
}

static sd_status check_options(const sd_comm_tcp_options *o) {
    if (o->world_size < 1 || o->world_size > SD_COMM_TCP_MAX_RANKS)
        return SD_FAIL(SD_ERR_INVALID, "TCP communicator: world size %d outside 1..%d", o->world_size, SD_COMM_TCP_MAX_RANKS);
    if (o->rank < 0 || o->rank >= o->world_size)
        return SD_FAIL(SD_ERR_INVALID, "TCP communicator: rank %d outside [0, %d)", o->rank, o->world_size);
    if (o->world_size > 1 && (!o->master_addr[0] || memchr(o->master_addr, '\0', sizeof o->master_addr) == NULL))
        return SD_FAIL(SD_ERR_INVALID, "TCP communicator: rank %d: no master address (MASTER_ADDR)", o->rank);
    if (o->world_size > 1 && (o->master_port < 1 || o->master_port > 65535))
        return SD_FAIL(SD_ERR_INVALID, "TCP communicator: rank %d: master port %d outside 1..65535", o->rank, o->master_port);
    if (!(o->connect_timeout_s > 0) || o->connect_timeout_s > 1e7)
        return SD_FAIL(SD_ERR_INVALID, "TCP communicator: rank %d: connect timeout %g s outside (0, 1e7]", o->rank,
                       o->connect_timeout_s);
    if (o->timeout_s > 1e9 || isnan(o->timeout_s))
        return SD_FAIL(SD_ERR_INVALID, "TCP communicator: rank %d: timeout %g s beyond 1e9", o->rank, o->timeout_s);
    return SD_OK;
}

sd_status sd_comm_tcp_create(const sd_comm_tcp_options *o, sd_comm **out) {
    if (!out || !o) return SD_FAIL(SD_ERR_INVALID, "TCP communicator: NULL argument");
    *out = NULL;
    TRY(check_options(o));
    const int p = o->world_size;
    sd_comm *c = calloc(1, sizeof *c);
    tcp_ctx *x = calloc(1, sizeof *x);
    if (x) {
        x->listen_fd = -1;
        x->opt = *o;
        x->peers = calloc((size_t)p, sizeof *x->peers);
        x->pfd = calloc((size_t)p + 1, sizeof *x->pfd);
        x->pidx = calloc((size_t)p + 1, sizeof *x->pidx);
        x->votes = calloc((size_t)p, sizeof *x->votes);
    }
    if (!c || !x || !x->peers || !x->pfd || !x->pidx || !x->votes) {
        free(c);
        if (x && !x->peers) x->opt.world_size = 0;
        free_ctx(x);
        return SD_FAIL(SD_ERR_OOM, "TCP communicator of %d ranks", p);
    }
    for (int j = 0; j < p; j++) x->peers[j].fd = -1;
    peer *self = &x->peers[o->rank];
    host_name(self->host);
    self->pid = (int)getpid();
    if (o->rank == 0) {
        snprintf(self->addr, sizeof self->addr, "%.*s", NAME_LEN - 1, o->master_addr);
        self->port = o->master_port;
    }
    set_where(self);
    c->ops = &tcp_ops;
    c->ctx = x;
    c->rank = o->rank;
    c->size = p;
    sd_status s = SD_OK;
    if (p > 1) {
        const double deadline = sd_clock_now() + o->connect_timeout_s;
        s = o->rank == 0 ? rank0_rendezvous(x, deadline) : peer_rendezvous(x, deadline);
        for (int j = 0; s == SD_OK && j < p; j++)
            if (j != o->rank && set_nonblock(x->peers[j].fd) != 0)
                s = SD_FAIL(SD_ERR_IO, "rank %d: fcntl: %s", o->rank, strerror(errno));
    }
    if (s != SD_OK) {
        sd_add_context(__func__, __FILE__, __LINE__);
        tcp_destroy(c);
        return s;
    }
    *out = c;
    return SD_OK;
}

int sd_comm_tcp_local_rank(const sd_comm *c) {
    return c && c->ops == &tcp_ops ? ((const tcp_ctx *)c->ctx)->opt.local_rank : -1;
}

const char *sd_comm_tcp_peer(const sd_comm *c, int rank) {
    if (!c || c->ops != &tcp_ops || rank < 0 || rank >= c->size) return "?";
    return ((const tcp_ctx *)c->ctx)->peers[rank].where;
}

/* ---- the torchrun-style environment ------------------------------------------------------------- */
static int env_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

sd_status sd_comm_tcp_env(sd_comm_tcp_options *o, bool *found) {
    if (!o || !found) return SD_FAIL(SD_ERR_INVALID, "sd_comm_tcp_env: NULL argument");
    *o = sd_comm_tcp_default_options();
    *found = false;
    const char *ws = getenv("WORLD_SIZE"), *rk = getenv("RANK"), *ma = getenv("MASTER_ADDR"), *mp = getenv("MASTER_PORT");
    if (!ws && !rk) return SD_OK;
    *found = true;
    char miss[128] = "";
    int nmiss = 0;
    const char *names[4] = {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"}, *vals[4] = {ws, rk, ma, mp};
    for (int i = 0; i < 4; i++)
        if (!vals[i] || !*vals[i]) sd_appendf(miss, sizeof miss, "%s%s", nmiss++ ? ", " : "", names[i]);
    if (nmiss)
        return SD_FAIL(SD_ERR_INVALID, "a torchrun-style launch needs WORLD_SIZE, RANK, MASTER_ADDR and MASTER_PORT in "
                       "every process, but %s %s not set: set them (torchrun and the Kubernetes PyTorch operator do), or "
                       "unset WORLD_SIZE and RANK to run without them", miss, nmiss == 1 ? "is" : "are");
    long world = 0, rank = 0, port = 0, lr = -1;
    if (env_long(ws, 1, SD_COMM_TCP_MAX_RANKS, &world))
        return SD_FAIL(SD_ERR_INVALID, "WORLD_SIZE=%s is not a number of processes in 1..%d", ws, SD_COMM_TCP_MAX_RANKS);
    if (env_long(rk, 0, world - 1, &rank))
        return SD_FAIL(SD_ERR_INVALID, "RANK=%s is not in [0, WORLD_SIZE=%ld): give each process its own RANK 0..%ld", rk,
                       world, world - 1);
    if (env_long(mp, 1, 65535, &port))
        return SD_FAIL(SD_ERR_INVALID, "MASTER_PORT=%s is not a TCP port in 1..65535", mp);
    if (strlen(ma) >= sizeof o->master_addr)
        return SD_FAIL(SD_ERR_INVALID, "MASTER_ADDR is longer than %zu characters", sizeof o->master_addr - 1);
    const char *lrs = getenv("LOCAL_RANK"), *sp = getenv("SCADLES_MASTER_PORT"), *ct = getenv("SCADLES_CONNECT_TIMEOUT_S");
    const char *agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    if (lrs && env_long(lrs, 0, 1 << 20, &lr))
        return SD_FAIL(SD_ERR_INVALID, "LOCAL_RANK=%s is not a process index on this host (0, 1, ...)", lrs);
    if (sp) {
        if (env_long(sp, 1, 65535, &port))
            return SD_FAIL(SD_ERR_INVALID, "SCADLES_MASTER_PORT=%s is not a TCP port in 1..65535", sp);
    } else if (agent && !strcmp(agent, "True")) {
        if (port == 65535)
            return SD_FAIL(SD_ERR_INVALID, "MASTER_PORT=65535 under torchrun's static rendezvous: scadles listens on "
                           "MASTER_PORT + 1; set SCADLES_MASTER_PORT to a free port");
        port++; /* torchrun's agent holds MASTER_PORT for its own store */
    }
    if (ct) {
        char *end = NULL;
        double v = strtod(ct, &end);
        if (!*ct || *end || !(v > 0 && v <= 1e6))
            return SD_FAIL(SD_ERR_INVALID, "SCADLES_CONNECT_TIMEOUT_S=%s is not a number of seconds in (0, 1e6]", ct);
        o->connect_timeout_s = v;
    }
    snprintf(o->master_addr, sizeof o->master_addr, "%s", ma);
    o->master_port = (int)port;
    o->world_size = (int)world;
    o->rank = (int)rank;
    o->local_rank = (int)lr;
    return SD_OK;
}
