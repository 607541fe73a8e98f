/* signals.c: the stop-request signal handlers declared in signals.h. */
#include "engine/signals.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* 0, or the first signal's number. A lock-free atomic (checked below): the handler writes it and
 * device threads read it, so a plain sig_atomic_t would be a data race between threads. */
static atomic_int g_stop;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "signal flag needs a lock-free atomic int");
static const int g_sigs[] = {SIGINT, SIGTERM, SIGUSR1, SIGHUP}; /* SIGHUP: the terminal went away */
#define NSIGS ((int)(sizeof g_sigs / sizeof g_sigs[0]))
static struct sigaction g_old[NSIGS];
static bool g_installed;

static void say(const char *s) {
    ssize_t r = write(STDERR_FILENO, s, strlen(s)); /* strlen and write are async-signal-safe */
    (void)r;
}

static void on_signal(int sig) {
    int saved = errno;
    const int cur = atomic_load_explicit(&g_stop, memory_order_relaxed);
    if (cur == sig) { /* the same signal again: the user insists, let it act as it normally would */
        signal(sig, SIG_DFL);
        raise(sig);
        errno = saved;
        return;
    }
    if (cur == 0) {
        atomic_store_explicit(&g_stop, sig, memory_order_relaxed);
        say("\nscadles: stop requested: finishing the current step, then writing a checkpoint "
            "(send the signal again to end at once)\n");
    }
    errno = saved;
}

const char *sd_signals_name(int sig) {
    switch (sig) {
    case 0: return "";
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
    }
}

sd_status sd_signals_install(void) {
    if (g_installed) return SD_OK;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* a read or a wait in progress goes on; the loop looks at the flag per step */
    for (int i = 0; i < NSIGS; i++)
        if (sigaction(g_sigs[i], &sa, &g_old[i]) != 0) {
            int err = errno;
            for (int j = 0; j < i; j++) sigaction(g_sigs[j], &g_old[j], NULL);
            return SD_FAIL(SD_ERR_RUNTIME, "cannot install the %s handler: %s", sd_signals_name(g_sigs[i]),
                           strerror(err));
        }
    g_installed = true;
    return SD_OK;
}

void sd_signals_restore(void) {
    if (!g_installed) return;
    for (int i = 0; i < NSIGS; i++) sigaction(g_sigs[i], &g_old[i], NULL);
    g_installed = false;
}

const atomic_int *sd_signals_flag(void) { return &g_stop; }
int sd_signals_received(void) { return atomic_load_explicit(&g_stop, memory_order_relaxed); }
void sd_signals_set(int sig) { atomic_store_explicit(&g_stop, sig, memory_order_relaxed); }
