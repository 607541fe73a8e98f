/* broker_harness.c: the shared pieces of the broker tests (broker_harness.h). */
#include "tests/broker_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "tests/harness.h"

size_t sd_bh_make_msg(uint8_t *buf, size_t cap, uint32_t dev, uint64_t seq) {
    sd_msg_meta m = {.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SD_BH_SIDE, SD_BH_SIDE},
                     .label = (int32_t)(seq % SD_BH_CLASSES), .device = dev, .seq = seq};
    uint8_t px[SD_BH_PIX];
    for (int i = 0; i < SD_BH_PIX; i++) px[i] = (uint8_t)(seq * 7 + (uint64_t)i);
    size_t len = 0;
    sd_status s = sd_msg_encode(&m, px, SD_BH_PIX, buf, cap, &len);
    EXPECT(s == SD_OK, "encode: %s", sd_last_error());
    return len;
}

sd_msg_expect sd_bh_expect(uint32_t dev) {
    return (sd_msg_expect){.dtype = SD_MSG_U8, .ndim = 3, .dims = {1, SD_BH_SIDE, SD_BH_SIDE},
                           .classes = SD_BH_CLASSES, .check_device = true, .device = dev, .max_payload = 32};
}

sd_ring *sd_bh_ring(size_t n) {
    sd_ring_config c = {.max_samples = n, .max_sample_bytes = 64, .policy = SD_RING_PERSIST,
                        .when_full = SD_RING_FULL_DROP_NEWEST};
    sd_ring *r = NULL;
    sd_status s = sd_ring_create(&c, &r);
    EXPECT(s == SD_OK, "ring: %s", sd_last_error());
    return r;
}

void sd_bh_publish(sd_bh_send_fn send, void *ctx, uint32_t dev, uint64_t from, uint64_t to) {
    uint8_t buf[128];
    for (uint64_t s = from; s < to; s++) {
        size_t len = sd_bh_make_msg(buf, sizeof buf, dev, s);
        EXPECT_OK(send(ctx, (int32_t)(s % SD_BH_CLASSES), buf, len));
    }
}

bool sd_bh_wait_received(sd_ring *r, uint64_t n, double timeout_s) {
    double t0 = sd_clock_now();
    sd_ring_stats st;
    do {
        sd_ring_get_stats(r, &st);
        if (st.received >= n) return true;
        sd_clock_sleep_until(sd_clock_now() + 0.005);
    } while (sd_clock_now() - t0 < timeout_s);
    return false;
}

size_t sd_bh_take(sd_ring *r, size_t max_n, uint64_t *seqs) {
    int32_t labels[8192];
    if (max_n > 8192) max_n = 8192;
    size_t got = 0;
    sd_ring_batch b = {.labels = labels, .seqs = seqs};
    EXPECT_OK(sd_ring_take_upto(r, max_n, &b, &got));
    for (size_t i = 0; i < got; i++)
        EXPECT(labels[i] == (int32_t)(seqs[i] % SD_BH_CLASSES), "label of seq %llu", (unsigned long long)seqs[i]);
    return got;
}

bool sd_bh_seqs_are(const uint64_t *s, size_t n, uint64_t from, uint64_t to) {
    if (n != to - from) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] != from + i) return false;
    return true;
}

bool sd_bh_drain_exact(sd_ring *r, uint64_t received, uint64_t from, uint64_t to, double timeout_s, const char *what) {
    static uint64_t seqs[8192];
    bool all = sd_bh_wait_received(r, received, timeout_s);
    size_t got = sd_bh_take(r, 8192, seqs);
    bool exact = all && sd_bh_seqs_are(seqs, got, from, to);
    EXPECT(exact, "%s: exactly %llu..%llu in order (received all: %d; took %zu, first %llu, last %llu)", what,
           (unsigned long long)from, (unsigned long long)(to - 1), all, got, got ? (unsigned long long)seqs[0] : 0ull,
           got ? (unsigned long long)seqs[got - 1] : 0ull);
    return exact;
}

void sd_bh_check_ring(sd_ring *r, const char *where) {
    sd_ring_stats st;
    sd_ring_get_stats(r, &st);
    char why[256];
    EXPECT(sd_ring_stats_consistent(&st, why, sizeof why), "%s: %s", where, why);
}

int sd_bh_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t n = sizeof a;
    int port = -1;
    if (!bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &n)) port = ntohs(a.sin_port);
    close(fd);
    return port;
}

bool sd_bh_port_open(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

bool sd_bh_app_path(const char *name, char *out, size_t cap) {
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return false;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return false;
    *slash = 0;
    snprintf(out, cap, "%s/../apps/%s", self, name);
    return access(out, X_OK) == 0;
}

int sd_bh_run_capture(char *const argv[], char *out, size_t cap, double timeout_s) {
    int pfd[2];
    if (pipe(pfd)) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    size_t used = 0;
    int st = 0;
    double t0 = sd_clock_now();
    bool done = false;
    while (sd_clock_now() - t0 < timeout_s) {
        ssize_t r = read(pfd[0], out + used, cap - 1 - used);
        if (r > 0) used += (size_t)r;
        if (!done && waitpid(pid, &st, WNOHANG) == pid) done = true;
        if (done && r <= 0) break;
        if (r <= 0) sd_clock_sleep_until(sd_clock_now() + 0.005);
    }
    out[used] = 0;
    close(pfd[0]);
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
