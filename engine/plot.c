/* plot.c: the gnuplot runner declared in plot.h. The parent opens the log (append), forks; the
 * child enters the folder, points stdin at /dev/null and stdout/stderr at the log, and execs
 * gnuplot SCRIPT. A close-on-exec pipe tells the parent whether the child got as far as exec
 * (nothing arrives) or which step failed with which errno, so "not installed" is told apart
 * from "ran and failed". */
#include "engine/plot.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

enum { STEP_CHDIR = 1, STEP_EXEC = 2 }; /* where a child that never reached gnuplot stopped */

/* "gnuplot failed on ..." names the script as the user would find it. */
static void script_where(const sd_plot_job *job, char *out, size_t cap) {
    if (job->dir && *job->dir && job->script[0] != '/') snprintf(out, cap, "%s/%s", job->dir, job->script);
    else snprintf(out, cap, "%s", job->script);
}

/* The child: only async-signal-safe calls until exec; on failure the step and errno go up the
 * pipe and the child exits 127. */
static void child(const sd_plot_job *job, const char *prog, int logfd, int report_fd) {
    int msg[2] = {STEP_CHDIR, 0};
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* gnuplot gets the default signal state */
    signal(SIGPIPE, SIG_DFL);
    if (job->dir && *job->dir && chdir(job->dir) != 0) {
        msg[1] = errno;
    } else {
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0 && nul != 0) {
            dup2(nul, 0);
            close(nul);
        }
        dup2(logfd, 1);
        dup2(logfd, 2);
        char *const argv[] = {(char *)prog, (char *)job->script, NULL};
        execvp(prog, argv);
        msg[0] = STEP_EXEC;
        msg[1] = errno;
    }
    ssize_t wr = write(report_fd, msg, sizeof msg);
    (void)wr;
    _exit(127);
}

/* Forks and waits for the child. *step is 0 when gnuplot was started (then *wstatus is its
 * wait status), else the step that failed with errno *err. */
static sd_status spawn(const sd_plot_job *job, const char *prog, int logfd, int *step, int *err, int *wstatus) {
    int pfd[2];
    if (pipe(pfd) != 0) return SD_FAIL(SD_ERR_IO, "cannot run %s: pipe: %s", prog, strerror(errno));
    fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
    fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        return SD_FAIL(SD_ERR_IO, "cannot run %s: fork: %s", prog, strerror(e));
    }
    if (pid == 0) child(job, prog, logfd, pfd[1]);
    close(pfd[1]);
    int msg[2] = {0, 0};
    ssize_t got;
    do got = read(pfd[0], msg, sizeof msg);
    while (got < 0 && errno == EINTR);
    close(pfd[0]);
    pid_t w;
    do w = waitpid(pid, wstatus, 0);
    while (w < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof msg) {
        *step = msg[0];
        *err = msg[1];
        return SD_OK;
    }
    *step = 0;
    *err = 0;
    if (w < 0) return SD_FAIL(SD_PLOT_FAILED, "cannot wait for %s on %s: %s", prog, job->script, strerror(errno));
    return SD_OK;
}

sd_status sd_plot_run(const sd_plot_job *job) {
    if (!job || !job->script || !*job->script || !job->log || !*job->log)
        return SD_FAIL(SD_ERR_INVALID, "plot: a gnuplot job needs a script and a log file");
    const char *prog = job->gnuplot && *job->gnuplot ? job->gnuplot : "gnuplot";
    int logfd = open(job->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) return SD_FAIL(SD_ERR_IO, "cannot write the gnuplot log %s: %s", job->log, strerror(errno));
    char where[4200];
    script_where(job, where, sizeof where);
    dprintf(logfd, "# %s %s (in %s)\n", prog, job->script, job->dir && *job->dir ? job->dir : ".");
    int step = 0, err = 0, ws = 0;
    sd_status st = spawn(job, prog, logfd, &step, &err, &ws);
    close(logfd);
    TRY(st);
    if (step == STEP_CHDIR)
        return SD_FAIL(SD_ERR_IO, "cannot run gnuplot in %s: %s", job->dir, strerror(err));
    if (step == STEP_EXEC && (err == ENOENT || err == ENOTDIR)) {
        if (strcmp(prog, "gnuplot") == 0) return SD_FAIL(SD_PLOT_NOT_FOUND, "gnuplot not found (apt-get install gnuplot-nox)");
        return SD_FAIL(SD_PLOT_NOT_FOUND, "gnuplot not found (no program '%s'; apt-get install gnuplot-nox)", prog);
    }
    if (step == STEP_EXEC) return SD_FAIL(SD_PLOT_FAILED, "cannot run gnuplot '%s': %s", prog, strerror(err));
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) return SD_OK;
    if (WIFEXITED(ws))
        return SD_FAIL(SD_PLOT_FAILED, "gnuplot failed on %s (exit status %d), see %s", where, WEXITSTATUS(ws), job->log);
    if (WIFSIGNALED(ws))
        return SD_FAIL(SD_PLOT_FAILED, "gnuplot failed on %s (killed by signal %d), see %s", where, WTERMSIG(ws), job->log);
    return SD_FAIL(SD_PLOT_FAILED, "gnuplot failed on %s, see %s", where, job->log);
}

sd_status sd_plot_log_reset(const char *log) {
    if (!log || !*log) return SD_FAIL(SD_ERR_INVALID, "plot: no gnuplot log named");
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0) return SD_FAIL(SD_ERR_IO, "cannot write the gnuplot log %s: %s", log, strerror(errno));
    return SD_OK;
}
