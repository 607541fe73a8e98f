/* signals.h: SIGINT, SIGTERM, SIGUSR1 and SIGHUP (a closed terminal, as SIGTERM) as a request to stop a long run cleanly. An app installs
 * the handlers and hands sd_signals_flag() to the library (sd_run_control.stop_flag); the device
 * loop reads the flag once per step, every rank contributes it to the step's allgather, and all
 * devices stop after the same step and write a checkpoint (docs/checkpoints.md). The handler only
 * sets a lock-free atomic int and writes one line to stderr (both async-signal-safe); a second
 * signal of the same kind while the first is being honoured restores the default action and
 * re-raises it, so pressing Ctrl-C twice still ends the process at once. SIGUSR1 is there for
 * mpirun, which forwards SIGUSR1 to every rank but answers SIGINT/SIGTERM by killing the job. */
#ifndef SD_ENGINE_SIGNALS_H
#define SD_ENGINE_SIGNALS_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "base/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the handlers (idempotent). SD_ERR_RUNTIME naming the signal when sigaction fails. */
sd_status sd_signals_install(void);
/* Puts back the actions that were there before sd_signals_install. */
void sd_signals_restore(void);
/* The flag the handlers set: 0, or the number of the first signal received. */
const atomic_int *sd_signals_flag(void);
/* The first signal received (0: none) and its name ("SIGINT", ...; "" for none). */
int sd_signals_received(void);
const char *sd_signals_name(int sig);
/* Sets the flag as a signal would (tests, and apps that stop for reasons of their own); 0 clears it. */
void sd_signals_set(int sig);

#ifdef __cplusplus
}
#endif

#endif
